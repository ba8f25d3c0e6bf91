//! The signaling client: one WebSocket to the gateway, typed events out, typed
//! commands in, and the two media connections driven from it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex as StdMutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, Stream, StreamExt};
use gatehouse_signaling::ErrorCode;
use gatehouse_signaling::protocol::{
    ActiveSpeaker, ChatMessage, ClientMessage, ConnectionMedia, ConnectionQuality, IceServer, LeaveReason, LobbyEntry,
    LobbyStatus, MediaConnectionState, MeetingId, MeetingSummary, PROTOCOL_VERSION, ParticipantId, ParticipantInfo,
    PeerRole, Quality, ServerMessage, TrackId, TrackInfo, TrackSource,
};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::{Instrument, debug, info_span, warn};
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::error::{Result, SdkError};
use crate::health::{ConnHealth, Flush, MediaHealth, Recovery, RecoveryAction, ReportPacer, conn_state};
use crate::media::{LocalTrack, MediaOptions, Publisher, RemoteTrack, RemoteTracks, Subscriber};
use crate::reconnect::{Reconnect, ReconnectPolicy, SocketEnd, Step};
use crate::tls::{TlsOptions, client_config, install_crypto_provider};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// How to reach the gateway and who we are.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The server: `https://host:port` (the socket is `wss://host:port/ws`), or a
    /// full `wss://` URL.
    pub url: String,
    /// A staff or guest token.
    pub token: String,
    /// The meeting to join; required with staff tokens, guests' tokens carry it.
    pub meeting_id: Option<String>,
    /// PEM certificate(s) to trust instead of the public roots (the dev CA).
    pub ca_pem: Option<String>,
    /// Accept any server certificate (development only).
    pub danger_accept_invalid_certs: bool,
    /// How media connections are built (addresses, codec, timeouts).
    pub media: MediaOptions,
    /// How long to wait for the socket and the `joined` answer.
    pub join_timeout: Duration,
    /// Whether and how the SDK reconnects by itself when the socket dies (on by
    /// default; [`ReconnectPolicy::never`] turns it off).
    pub reconnect: ReconnectPolicy,
    /// How often the SDK pings the server (a WebSocket ping) to find a socket that died
    /// without a word (a network that drops everything, no reset).
    pub heartbeat_interval: Duration,
    /// A socket from which nothing (not even a pong) has come for this long is taken for
    /// dead and reconnected.
    pub heartbeat_timeout: Duration,
}

impl ConnectOptions {
    /// Options with defaults for everything but the server and the token.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> ConnectOptions {
        ConnectOptions {
            url: url.into(),
            token: token.into(),
            meeting_id: None,
            ca_pem: None,
            danger_accept_invalid_certs: false,
            media: MediaOptions::default(),
            join_timeout: Duration::from_secs(10),
            reconnect: ReconnectPolicy::default(),
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(15),
        }
    }

    /// Sets the meeting to join (staff).
    pub fn meeting(mut self, meeting_id: impl Into<String>) -> ConnectOptions {
        self.meeting_id = Some(meeting_id.into());
        self
    }

    /// The TLS part of these options, for a [`RestClient`](crate::RestClient) to the same server.
    pub fn tls(&self) -> TlsOptions {
        TlsOptions {
            ca_pem: self.ca_pem.clone(),
            danger_accept_invalid_certs: self.danger_accept_invalid_certs,
        }
    }
}

/// The WebSocket URL for a server URL: `https://h:p` becomes `wss://h:p/ws`.
pub fn websocket_url(url: &str) -> Result<String> {
    let invalid = |reason: &str| SdkError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let mut parsed = url::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
    let scheme = match parsed.scheme() {
        "https" | "wss" => "wss",
        "http" | "ws" => "ws",
        _ => return Err(invalid("expected https:// or wss://")),
    };
    let had_ws_scheme = matches!(parsed.scheme(), "ws" | "wss");
    parsed
        .set_scheme(scheme)
        .map_err(|()| invalid("cannot change scheme"))?;
    if !had_ws_scheme || parsed.path() == "/" || parsed.path().is_empty() {
        let base = parsed.path().trim_end_matches('/').to_owned();
        if !base.ends_with("/ws") {
            parsed.set_path(&format!("{base}/ws"));
        }
    }
    Ok(parsed.to_string())
}

/// Everything the server tells a client, typed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// The server accepted the join (always the first event).
    Joined {
        /// Who we are.
        you: ParticipantInfo,
        /// The meeting.
        meeting: MeetingSummary,
    },
    /// We wait in the lobby (sent again when the status changes).
    Lobby {
        /// Waiting for a host or for admission.
        status: LobbyStatus,
        /// How long the lobby lets us wait.
        timeout_secs: u64,
    },
    /// We are in the call.
    Admitted {
        /// Everyone else in the call.
        participants: Vec<ParticipantInfo>,
        /// The tracks already published.
        tracks: Vec<TrackInfo>,
        /// ICE servers for media (the SDK uses them).
        ice_servers: Vec<IceServer>,
    },
    /// Staff: the lobby changed; the whole list.
    LobbyChanged {
        /// Who waits now.
        entries: Vec<LobbyEntry>,
    },
    /// Someone entered the call.
    ParticipantJoined(ParticipantInfo),
    /// Someone left the call.
    ParticipantLeft {
        /// Who.
        participant_id: ParticipantId,
        /// Why.
        reason: LeaveReason,
    },
    /// A track was published (ours included: the SDK then knows its server id).
    TrackPublished(TrackInfo),
    /// A track is gone.
    TrackUnpublished {
        /// Which track.
        track_id: TrackId,
        /// Whose.
        participant_id: ParticipantId,
    },
    /// A track was muted or unmuted.
    TrackMuted {
        /// Which track.
        track_id: TrackId,
        /// Whose.
        participant_id: ParticipantId,
        /// Now muted?
        muted: bool,
    },
    /// Media of a remote track started arriving on the subscriber connection.
    RemoteTrack(RemoteTrack),
    /// Who is speaking now (server-side detection from the audio-level header
    /// extension): the dominant speaker first, then the others loudest first; empty
    /// when nobody speaks. Sent when the speakers or the dominant one change, not
    /// for level changes alone (docs/PROTOCOL.md, `active_speakers`).
    ///
    /// ```no_run
    /// # async fn run(mut events: gatehouse_sdk::Events) {
    /// use gatehouse_sdk::Event;
    /// while let Some(event) = events.recv().await {
    ///     if let Event::ActiveSpeakers { speakers } = event {
    ///         match speakers.first() {
    ///             Some(s) => println!("{} has the floor (level {:.2})", s.participant_id, s.level),
    ///             None => println!("nobody speaks"),
    ///         }
    ///     }
    /// }
    /// # }
    /// ```
    ActiveSpeakers {
        /// Dominant first; our own microphone included when we speak.
        speakers: Vec<ActiveSpeaker>,
    },
    /// A participant's connection quality changed: ours, or (for staff) anyone's in the
    /// call. Until the first one about a participant, assume `Excellent` and no video
    /// reduced (docs/PROTOCOL.md, `connection_quality`).
    ///
    /// ```no_run
    /// # async fn run(mut events: gatehouse_sdk::Events, me: &str) {
    /// use gatehouse_sdk::{ConnectionQuality, Event};
    /// while let Some(event) = events.recv().await {
    ///     if let Event::ConnectionQuality { participant_id, quality, video_reduced } = event
    ///         && participant_id.as_str() == me
    ///         && quality <= ConnectionQuality::Poor
    ///     {
    ///         println!("our link is weak (video reduced: {video_reduced})");
    ///     }
    /// }
    /// # }
    /// ```
    ConnectionQuality {
        /// Whose connection.
        participant_id: ParticipantId,
        /// `Lost` < `Poor` < `Good` < `Excellent`.
        quality: ConnectionQuality,
        /// The video it receives is below what it asked for, for lack of bandwidth.
        video_reduced: bool,
    },
    /// The layer of a remote video track we receive changed (docs/PROTOCOL.md,
    /// `video_layer`): its rank among the publisher's layers, and whether our downlink's
    /// bandwidth estimate holds it below the quality we asked for ([`Client::set_quality`]).
    ///
    /// ```no_run
    /// # async fn run(mut events: gatehouse_sdk::Events) {
    /// use gatehouse_sdk::Event;
    /// while let Some(event) = events.recv().await {
    ///     if let Event::VideoLayer { track_id, layer, layers, reduced } = event {
    ///         println!("{track_id}: layer {} of {layers}{}", layer + 1, if reduced { ", reduced" } else { "" });
    ///     }
    /// }
    /// # }
    /// ```
    VideoLayer {
        /// The remote video track.
        track_id: TrackId,
        /// The rank of the layer forwarded: 0 the smallest, `layers - 1` the best.
        layer: u8,
        /// How many layers the publisher sends it as (1 without simulcast).
        layers: u8,
        /// Held below what we asked for, for lack of bandwidth.
        reduced: bool,
    },
    /// The gateway changed which layers of one of our simulcast video tracks anybody
    /// needs (docs/PROTOCOL.md, `publisher_layers`): the track's layers as they are now
    /// (the same as [`LocalTrack::layers`]). Stop sending the inactive ones; start an active
    /// one again with a keyframe. The SDK's synthetic sender does so by itself. Only said
    /// when something changed.
    PublisherLayers {
        /// Our track (the server's id, as in its `track_published`).
        track_id: TrackId,
        /// Every layer of the track, smallest first, with whether it is active now.
        layers: Vec<crate::media::TrackLayer>,
    },
    /// A chat message (our own included).
    Chat(ChatMessage),
    /// Answer to a ping.
    Pong {
        /// The nonce we sent.
        nonce: u64,
    },
    /// The server refused something we sent; the connection goes on.
    Error {
        /// Stable code.
        code: ErrorCode,
        /// Explanation.
        message: String,
    },
    /// Another participant's media connections changed, as their client reported
    /// them (also sent on entering the call for everyone who has reported): a
    /// staff application shows "no media" and why from this.
    ParticipantMedia {
        /// Whose.
        participant_id: ParticipantId,
        /// Their publisher connection (what they send).
        publisher: ConnectionMedia,
        /// Their subscriber connection (what they receive).
        subscriber: ConnectionMedia,
    },
    /// Our own media connections changed: a state, a path, a restart, or giving up
    /// ([`Client::media_health`] holds the latest). The server hears of it too, as
    /// `media_status`, so the others see it as [`Event::ParticipantMedia`].
    MediaHealth(MediaHealth),
    /// One of our connections is lost for good: every ICE restart failed (bounded at
    /// [`MAX_RESTARTS`](crate::health::MAX_RESTARTS) since it was last connected). No
    /// more automatic restarts: tell the user, try [`Client::restart_ice`] later, or
    /// [`Client::reconnect`].
    MediaLost {
        /// Which connection.
        role: PeerRole,
        /// How many restarts were tried.
        attempts: u32,
    },
    /// Negotiating one of our media connections failed.
    MediaFailed {
        /// Which connection.
        role: PeerRole,
        /// What went wrong.
        error: String,
    },
    /// We are out of the meeting; the server closes the socket next. Last event.
    Left {
        /// Why.
        reason: LeaveReason,
        /// What the server said.
        message: Option<String>,
    },
    /// The signaling socket died (a network error, a Close without `left`, silence past
    /// [`ConnectOptions::heartbeat_timeout`]) and the SDK is trying to come back with the
    /// same token: one event per attempt ([`ConnectOptions::reconnect`] bounds them).
    /// Media keeps flowing on the old connections meanwhile if the network lets it;
    /// frames the application sends fail with [`SdkError::Reconnecting`].
    Reconnecting {
        /// 1 for the first attempt after the drop.
        attempt: u32,
        /// What ended the socket, or why the previous attempt failed.
        reason: String,
    },
    /// Back on a new socket, with the same [`Client`] and this same event stream. Next
    /// comes [`Event::Admitted`] with the call as it is now (a guest whose seat was held
    /// goes straight back in, unseen by the others; staff come back as a new participant,
    /// `you`) or [`Event::Lobby`]. Media starts afresh on new connections: the SDK
    /// publishes the application's tracks again (same [`LocalTrack`] handles, mutes
    /// kept; the others see them as new tracks), re-applies paused subscriptions, and
    /// remote tracks arrive again as new [`Event::RemoteTrack`]s.
    Reconnected {
        /// Who we are on the new socket.
        you: ParticipantInfo,
    },
    /// The socket closed without a `left` and the SDK is not coming back: reconnecting
    /// is off, the attempts ran out, the server refused it (e.g. an expired token), or
    /// the application closed the client (`error` is `None` then). Last event.
    /// [`Client::reconnect`] can still try again with the same token.
    Disconnected {
        /// What ended the socket, or why reconnecting stopped.
        error: Option<String>,
    },
}

/// The stream of [`Event`]s of one client, across reconnects; ends after `Left` or `Disconnected`.
///
/// Unbounded: read it, or memory grows with the meeting's traffic.
pub struct Events {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl Events {
    /// The next event; `None` after the last one.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event for which `pick` returns `Some`, skipping others, within `timeout`.
    /// Handy in tests: `events.wait_for(t, |e| matches!(e, Event::Admitted { .. }).then_some(e))`.
    ///
    /// ```no_run
    /// # async fn run(mut events: gatehouse_sdk::Events) -> gatehouse_sdk::Result<()> {
    /// use gatehouse_sdk::Event;
    /// use std::time::Duration;
    /// let chat = events
    ///     .wait_for(Duration::from_secs(30), |e| match e {
    ///         Event::Chat(message) => Some(message),
    ///         _ => None,
    ///     })
    ///     .await?;
    /// println!("{}: {}", chat.display_name, chat.text);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn wait_for<T>(&mut self, timeout: Duration, mut pick: impl FnMut(Event) -> Option<T>) -> Result<T> {
        tokio::time::timeout(timeout, async {
            while let Some(event) = self.rx.recv().await {
                if let Some(found) = pick(event) {
                    return Ok(found);
                }
            }
            Err(SdkError::Closed)
        })
        .await
        .map_err(|_| SdkError::Timeout("event"))?
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("queued", &self.rx.len()).finish()
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("me", &self.me())
            .field("meeting", &self.meeting())
            .finish_non_exhaustive()
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

/// What the client knows about the call, updated by the reader.
#[derive(Default)]
struct CallState {
    /// A socket is up and joined (false while reconnecting).
    connected: bool,
    admitted: bool,
    ice_servers: Vec<IceServer>,
    tracks: HashMap<TrackId, TrackInfo>,
    left: bool,
    /// Our tracks from before a reconnect, published again on the next `admitted`.
    republish: Vec<LocalTrack>,
}

/// Who we are on the current socket (a staff member's id changes with a reconnect).
#[derive(Clone)]
struct Session {
    you: ParticipantInfo,
    meeting: MeetingSummary,
    /// Wall clock (µs since the UNIX epoch) when `join` went out: where join times start.
    join_sent_us: u64,
    /// The socket's local address.
    local_addr: Option<SocketAddr>,
}

/// The client's state across sockets: the supervisor task replaces the socket and
/// the media connections under it; the application's handle stays.
struct Inner {
    /// How this client connects (again, after a drop).
    options: ConnectOptions,
    /// Frames for the server; the writer of whichever socket is up takes them.
    out: mpsc::UnboundedSender<ClientMessage>,
    session: StdMutex<Session>,
    state: StdMutex<CallState>,
    /// The publisher connection of this socket, made on the first publish.
    publisher: StdMutex<Option<Arc<Publisher>>>,
    /// Held while the publisher connection is being made (one at a time).
    publisher_init: tokio::sync::Mutex<()>,
    /// The subscriber side: its connection is replaced on a reconnect, it stays.
    subscriber: Arc<Subscriber>,
    /// The application closed the client: the socket closes, no reconnect.
    shutdown: watch::Sender<bool>,
    /// Our media health as the health task last saw it.
    health: watch::Sender<MediaHealth>,
    /// Restarts asked for by the application, for the health task (empty: just look again).
    restarts: mpsc::UnboundedSender<Vec<PeerRole>>,
    /// Bumped at each new socket: the health task starts over with the new connections.
    generation: watch::Sender<u64>,
    /// Bumped at each `ice_servers` from the server (fresh TURN credentials).
    ice_refreshed: watch::Sender<u64>,
    /// Remote tracks the application paused (`set_subscription`): paused again after a reconnect.
    paused: StdMutex<HashSet<TrackId>>,
    /// Qualities the application asked for (`set_quality`): asked for again after a reconnect.
    qualities: StdMutex<HashMap<TrackId, Quality>>,
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, CallState> {
        self.state
            .lock()
            .expect("call state lock is never poisoned: no panics inside")
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session
            .lock()
            .expect("session lock is never poisoned: no panics inside")
    }

    fn publisher(&self) -> Option<Arc<Publisher>> {
        self.publisher
            .lock()
            .expect("publisher lock is never poisoned: no panics inside")
            .clone()
    }

    async fn close_media(&self) {
        let publisher = self
            .publisher
            .lock()
            .expect("publisher lock is never poisoned: no panics inside")
            .take();
        if let Some(publisher) = publisher {
            publisher.close().await;
        }
        self.subscriber.close().await;
    }

    /// The publisher connection, made now if there is none.
    async fn ensure_publisher(&self) -> Result<Arc<Publisher>> {
        let _init = self.publisher_init.lock().await;
        if let Some(publisher) = self.publisher() {
            return Ok(publisher);
        }
        let mut media = self.options.media.clone();
        media.stream_id = self.session().you.participant_id.to_string();
        media.ice_servers = self.state().ice_servers.clone();
        let publisher = Publisher::new(media, self.out.clone()).await?;
        *self
            .publisher
            .lock()
            .expect("publisher lock is never poisoned: no panics inside") = Some(publisher.clone());
        // The health task follows the publisher from now on.
        let _ = self.restarts.send(Vec::new());
        Ok(publisher)
    }

    /// Asks the server for fresh ICE servers (TURN credentials expire) and waits a
    /// moment for them: the reader applies them to both connections.
    async fn refresh_ice_servers(&self) {
        let mut refreshed = self.ice_refreshed.subscribe();
        refreshed.mark_unchanged();
        if self.out.send(ClientMessage::RefreshIceServers).is_err() {
            return;
        }
        if tokio::time::timeout(ICE_REFRESH_WAIT, refreshed.changed())
            .await
            .is_err()
        {
            debug!("no fresh ice_servers in time: restarting with the ones we have");
        }
    }
}

/// How long a publisher restart waits for fresh ICE servers before it goes on without.
const ICE_REFRESH_WAIT: Duration = Duration::from_secs(1);

/// Closes the socket when the last [`Client`] clone goes away.
struct CloseOnDrop(watch::Sender<bool>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

/// A connection to one meeting. Cheap to clone; dropping the last clone closes it.
///
/// It is a handle: a supervisor task owns the socket, and when the socket dies it
/// reconnects with the same token ([`ConnectOptions::reconnect`]), telling the
/// application with [`Event::Reconnecting`] and [`Event::Reconnected`] on the same
/// [`Events`] stream, and brings the media back (docs/PROTOCOL.md §11.6, "Lost socket").
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    _close_on_drop: Arc<CloseOnDrop>,
}

/// A socket that has joined, with what `joined` said.
struct Opened {
    socket: Socket,
    session: Session,
}

/// Opens the socket, joins, and waits for `joined`.
async fn open(options: &ConnectOptions) -> Result<Opened> {
    let ws_url = websocket_url(&options.url)?;
    let connector = client_config(&options.tls())?.map(|config| Connector::Rustls(Arc::new(config)));
    let timeout = options.join_timeout;
    let (mut socket, _) = tokio::time::timeout(
        timeout,
        tokio_tungstenite::connect_async_tls_with_config(ws_url.as_str(), None, true, connector),
    )
    .await
    .map_err(|_| SdkError::Timeout("websocket connect"))??;
    let local_addr = match socket.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp.local_addr().ok(),
        MaybeTlsStream::Rustls(tls) => tls.get_ref().0.local_addr().ok(),
        _ => None,
    };
    let join = ClientMessage::Join {
        protocol: PROTOCOL_VERSION,
        token: options.token.clone(),
        meeting_id: options.meeting_id.clone().map(MeetingId::from),
    };
    let join_sent_us = crate::now_us();
    socket.send(Message::text(serde_json::to_string(&join)?)).await?;
    let (you, meeting) = tokio::time::timeout(timeout, wait_joined(&mut socket))
        .await
        .map_err(|_| SdkError::Timeout("joined"))??;
    Ok(Opened {
        socket,
        session: Session {
            you,
            meeting,
            join_sent_us,
            local_addr,
        },
    })
}

impl Client {
    /// Opens the socket, joins, and waits for `joined`. Returns the client and
    /// its events (the first is [`Event::Joined`]; then `Lobby` or `Admitted`).
    ///
    /// Fails with [`SdkError::Server`] (e.g. `unauthorized`, `meeting_full`) or
    /// [`SdkError::Left`] if the server turns the join down. Once connected, a socket
    /// that dies is reconnected by the SDK itself ([`Event::Reconnecting`]).
    ///
    /// ```no_run
    /// # async fn run() -> gatehouse_sdk::Result<()> {
    /// use gatehouse_sdk::{Client, ConnectOptions, Event};
    /// let mut options = ConnectOptions::new("https://gatehouse.example.org", "guest-token");
    /// options.ca_pem = Some(std::fs::read_to_string("gatehouse-data/tls/ca.pem").expect("the dev CA"));
    /// let (client, mut events) = Client::connect(options).await?;
    /// println!("joined as {}", client.me().display_name);
    /// if let Some(Event::Lobby { status, .. }) = events.recv().await {
    ///     println!("waiting: {status:?}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(options: ConnectOptions) -> Result<(Client, Events)> {
        install_crypto_provider();
        let opened = open(&options).await?;
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (subscriber, remote_tracks) = Subscriber::new(options.media.clone(), out_tx.clone());
        let (shutdown, _) = watch::channel(false);
        let (restarts, restart_rx) = mpsc::unbounded_channel();
        let session = opened.session.clone();
        let inner = Arc::new(Inner {
            options,
            out: out_tx,
            session: StdMutex::new(opened.session),
            state: StdMutex::new(CallState {
                connected: true,
                ..CallState::default()
            }),
            publisher: StdMutex::new(None),
            publisher_init: tokio::sync::Mutex::new(()),
            subscriber,
            shutdown: shutdown.clone(),
            health: watch::channel(MediaHealth::default()).0,
            restarts,
            generation: watch::channel(0).0,
            ice_refreshed: watch::channel(0).0,
            paused: StdMutex::new(HashSet::new()),
            qualities: StdMutex::new(HashMap::new()),
        });
        let _ = events_tx.send(Event::Joined {
            you: session.you.clone(),
            meeting: session.meeting.clone(),
        });

        let span = info_span!("sdk", meeting_id = %session.meeting.meeting_id);
        let forwarder = tokio::spawn(
            forward_remote_tracks(inner.clone(), remote_tracks, events_tx.clone()).instrument(span.clone()),
        );
        let health = tokio::spawn(watch_media(inner.clone(), restart_rx, events_tx.clone()).instrument(span.clone()));
        let helpers = [forwarder.abort_handle(), health.abort_handle()];
        tokio::spawn(supervise(inner.clone(), opened.socket, out_rx, events_tx, helpers).instrument(span));

        Ok((
            Client {
                inner,
                _close_on_drop: Arc::new(CloseOnDrop(shutdown)),
            },
            Events { rx: events_rx },
        ))
    }

    /// When `join` was sent on the current socket (µs since the UNIX epoch, as
    /// [`now_us`](crate::now_us)), after the WebSocket and TLS handshakes: join times
    /// are measured from here.
    pub fn join_sent_us(&self) -> u64 {
        self.inner.session().join_sent_us
    }

    /// Who we are in this meeting (on the current socket: staff come back from a
    /// reconnect as a new participant).
    pub fn me(&self) -> ParticipantInfo {
        self.inner.session().you.clone()
    }

    /// The meeting as the latest `joined` described it.
    pub fn meeting(&self) -> MeetingSummary {
        self.inner.session().meeting.clone()
    }

    /// The local address of the signaling socket now (which connection is ours, in
    /// `ss` or a firewall log).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.session().local_addr
    }

    /// Whether `admitted` has arrived on the current socket (and no `left` since).
    /// False while reconnecting.
    pub fn is_admitted(&self) -> bool {
        let state = self.inner.state();
        state.connected && state.admitted && !state.left
    }

    /// The remote tracks announced so far (by `admitted` and `track_published`).
    pub fn remote_tracks(&self) -> Vec<TrackInfo> {
        self.inner.state().tracks.values().cloned().collect()
    }

    /// Sends any frame: the escape hatch for what has no method here.
    /// [`SdkError::Reconnecting`] while the socket is down.
    pub fn send(&self, message: ClientMessage) -> Result<()> {
        {
            let state = self.inner.state();
            if !state.connected {
                return Err(if *self.inner.shutdown.borrow() || state.left {
                    SdkError::Closed
                } else {
                    SdkError::Reconnecting
                });
            }
        }
        self.inner.out.send(message).map_err(|_| SdkError::Closed)
    }

    /// Staff: lets one lobby participant in.
    pub fn admit(&self, participant_id: impl Into<ParticipantId>) -> Result<()> {
        self.send(ClientMessage::Admit {
            participant_id: participant_id.into(),
        })
    }

    /// Staff: lets everyone in the lobby in.
    pub fn admit_all(&self) -> Result<()> {
        self.send(ClientMessage::AdmitAll)
    }

    /// Staff: turns a lobby participant away; they see `reason`.
    pub fn deny(&self, participant_id: impl Into<ParticipantId>, reason: Option<String>) -> Result<()> {
        self.send(ClientMessage::Deny {
            participant_id: participant_id.into(),
            reason,
        })
    }

    /// Staff: removes a participant from the call.
    pub fn remove(&self, participant_id: impl Into<ParticipantId>, reason: Option<String>) -> Result<()> {
        self.send(ClientMessage::Remove {
            participant_id: participant_id.into(),
            reason,
        })
    }

    /// Staff: ends the meeting for everyone.
    pub fn end_meeting(&self) -> Result<()> {
        self.send(ClientMessage::EndMeeting)
    }

    /// Sends a chat message to everyone in the call.
    pub fn chat(&self, text: impl Into<String>) -> Result<()> {
        self.send(ClientMessage::Chat { text: text.into() })
    }

    /// Keep-alive; the server answers with [`Event::Pong`]. (The SDK keeps the socket
    /// alive itself with WebSocket pings, [`ConnectOptions::heartbeat_interval`].)
    pub fn ping(&self, nonce: u64) -> Result<()> {
        self.send(ClientMessage::Ping { nonce })
    }

    /// Leaves the lobby or the call. The server answers `left` and closes; the
    /// events end with [`Event::Left`] and media connections close.
    pub fn leave(&self) -> Result<()> {
        self.send(ClientMessage::Leave)
    }

    /// Stops or resumes receiving a remote track. Remembered: after a reconnect the
    /// SDK pauses the track again on the new connection (while reconnecting it is
    /// only remembered).
    pub fn set_subscription(&self, track_id: impl Into<TrackId>, paused: bool) -> Result<()> {
        let track_id = track_id.into();
        match self.send(ClientMessage::SetSubscription {
            track_id: track_id.clone(),
            paused,
            quality: None,
        }) {
            // While reconnecting it is only remembered: it goes out after the reconnect.
            Ok(()) | Err(SdkError::Reconnecting) => {}
            Err(e) => return Err(e),
        }
        let mut set = self.inner.paused.lock().expect("paused lock is never poisoned");
        if paused {
            set.insert(track_id);
        } else {
            set.remove(&track_id);
        }
        Ok(())
    }

    /// Asks for a quality of a remote video track: the simulcast layer the server
    /// forwards (`High` the publisher's best, `Medium`, `Low` its smallest; a track
    /// without simulcast has one), or `Off` to stop it as a pause does (a tile nobody
    /// sees). A quality other than `Off` also resumes a paused track. The server moves
    /// to the new layer on its next keyframe, with no gap in the RTP stream.
    /// Remembered like a pause and asked for again after a reconnect.
    pub fn set_quality(&self, track_id: impl Into<TrackId>, quality: Quality) -> Result<()> {
        let track_id = track_id.into();
        match self.send(ClientMessage::SetSubscription {
            track_id: track_id.clone(),
            paused: false,
            quality: Some(quality),
        }) {
            Ok(()) | Err(SdkError::Reconnecting) => {}
            Err(e) => return Err(e),
        }
        self.inner
            .paused
            .lock()
            .expect("paused lock is never poisoned")
            .remove(&track_id);
        self.inner
            .qualities
            .lock()
            .expect("qualities lock is never poisoned")
            .insert(track_id, quality);
        Ok(())
    }

    /// Mutes or unmutes one of our tracks. Needs the server's id for it, which
    /// arrives with its `track_published` ([`SdkError::NotNegotiated`] before).
    /// Remembered with the track: every later offer says it, so an ICE restart or a
    /// reconnect (which publishes the track again) keeps the mute; while the SDK is
    /// reconnecting, the mute is only remembered and goes out with that offer.
    pub fn mute_track(&self, track: &LocalTrack, muted: bool) -> Result<()> {
        if track.is_rebinding() {
            track.set_muted(muted);
            return Ok(());
        }
        let track_id = track.server_track_id().ok_or(SdkError::NotNegotiated)?;
        match self.send(ClientMessage::MuteTrack { track_id, muted }) {
            Ok(()) | Err(SdkError::Reconnecting) => {
                track.set_muted(muted);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Publishes a track for `source` on the publisher connection (made on first
    /// use) and returns once the server has answered. Needs the call.
    ///
    /// The returned [`LocalTrack`] survives reconnects: the SDK publishes it again on
    /// the new connection, and writes meanwhile are dropped rather than failing.
    ///
    /// ```no_run
    /// # async fn run(client: gatehouse_sdk::Client, frames: Vec<bytes::Bytes>) -> gatehouse_sdk::Result<()> {
    /// use gatehouse_signaling::protocol::TrackSource;
    /// use std::time::Duration;
    /// let camera = client.publish(TrackSource::Camera).await?;
    /// camera.wait_connected(Duration::from_secs(10)).await?;
    /// // Encoded VP8 frames from your encoder, 30 a second.
    /// for frame in frames {
    ///     camera.write_sample(frame, Duration::from_millis(33)).await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn publish(&self, source: TrackSource) -> Result<LocalTrack> {
        if !self.is_admitted() {
            return Err(SdkError::NotInCall);
        }
        let publisher = self.inner.ensure_publisher().await?;
        publisher.publish(source).await
    }

    /// Our media connections: each one's state and, while connected, the path its
    /// media takes (`udp`, `tcp` or `relay`), with the ICE restarts tried since it was
    /// last connected. Changes come as [`Event::MediaHealth`].
    ///
    /// The SDK watches both connections: one that goes `disconnected` or `failed` gets
    /// an ICE restart (the publisher re-offers with new credentials; the subscriber
    /// asks the server for a fresh connection), again if a restart has not connected
    /// within 6 s, at most 3 times in a row ([`Event::MediaLost`] then). Each restart
    /// first takes fresh ICE servers from the server (TURN credentials expire). The
    /// server is told (`media_status`, coalesced over 200 ms and kept under its rate
    /// limit), so the others see us as [`Event::ParticipantMedia`].
    pub fn media_health(&self) -> MediaHealth {
        *self.inner.health.borrow()
    }

    /// Restarts ICE now on `role`'s connection, or on both with `None`, by the same
    /// path a lost connection takes (a forced restart also revives a connection the
    /// SDK gave up on). A connection not made yet is left alone. After a subscriber
    /// restart the remote tracks arrive again as new [`Event::RemoteTrack`]s on the
    /// fresh connection; the old handles end ([`RemoteTrack::recv_rtp`] says `None`).
    pub fn restart_ice(&self, role: Option<PeerRole>) -> Result<()> {
        if !self.is_admitted() {
            return Err(SdkError::NotInCall);
        }
        let roles = match role {
            Some(role) => vec![role],
            None => vec![PeerRole::Publisher, PeerRole::Subscriber],
        };
        self.inner.restarts.send(roles).map_err(|_| SdkError::Closed)
    }

    /// Test hook: the server's next `subscribe_offer` marked `restart` is dropped on
    /// arrival, as if lost on the way (what a lost restart does to negotiation).
    #[doc(hidden)]
    pub fn drop_next_restart_offer(&self) {
        self.inner.subscriber.drop_next_restart_offer();
    }

    /// Stops publishing a track (renegotiates the publisher connection).
    pub async fn unpublish(&self, track: &LocalTrack) -> Result<()> {
        match self.inner.publisher() {
            Some(publisher) => publisher.unpublish(track).await,
            None => Err(SdkError::NotInCall),
        }
    }

    /// Connects again with the same options as a new client, closing this one's
    /// socket and media first: for after [`Event::Disconnected`], when the SDK's own
    /// reconnecting ([`ConnectOptions::reconnect`]) has given up.
    ///
    /// The protocol lets a participant come back with the same token: a guest who
    /// was in the call within the seat hold (60 s by default) goes straight back into
    /// the call; otherwise the lobby rules apply as on a first join. Staff come back as
    /// a new participant id. Media does not carry over: publish again once
    /// [`Event::Admitted`] arrives. Tries `attempts` times, waiting `backoff`, then
    /// twice that, and so on, between tries; a refusal by the server (e.g. an expired
    /// token) ends the attempts at once.
    ///
    /// ```no_run
    /// # async fn run(client: gatehouse_sdk::Client, mut events: gatehouse_sdk::Events) -> gatehouse_sdk::Result<()> {
    /// use gatehouse_sdk::Event;
    /// use std::time::Duration;
    /// if let Some(Event::Disconnected { .. }) = events.recv().await {
    ///     let (client, events) = client.reconnect(5, Duration::from_millis(500)).await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn reconnect(&self, attempts: u32, backoff: Duration) -> Result<(Client, Events)> {
        self.close().await;
        let mut wait = backoff;
        let mut last = SdkError::Closed;
        for attempt in 0..attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
            match Client::connect(self.inner.options.clone()).await {
                Ok(connected) => return Ok(connected),
                Err(e) if crate::reconnect::is_refusal(&e) => return Err(e),
                Err(e) => {
                    tracing::info!(attempt, error = %e, "reconnect failed");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Closes the socket and the media connections, for good (no reconnect). Frames
    /// already queued (a [`leave`](Self::leave) just before) are sent first; without
    /// `leave` the server sees a dropped connection and holds an admitted guest's seat
    /// for the seat hold.
    pub async fn close(&self) {
        self.inner.shutdown.send_replace(true);
        self.inner.close_media().await;
    }
}

/// Reads frames until `joined`; `error` or `left` first means the join failed.
async fn wait_joined(socket: &mut Socket) -> Result<(ParticipantInfo, MeetingSummary)> {
    while let Some(frame) = socket.next().await {
        let Message::Text(text) = frame? else {
            continue;
        };
        match serde_json::from_str::<ServerMessage>(&text)? {
            ServerMessage::Joined { you, meeting, .. } => return Ok((you, meeting)),
            ServerMessage::Error { code, message } => {
                return Err(SdkError::Server { code, message });
            }
            ServerMessage::Left { reason, message } => {
                return Err(SdkError::Left { reason, message });
            }
            other => {
                return Err(SdkError::Protocol(format!("expected `joined`, got {other:?}")));
            }
        }
    }
    Err(SdkError::Closed)
}

/// A number in `[0, 1)` to spread reconnect waits.
fn jitter() -> f64 {
    rand::random::<f64>()
}

/// The supervisor: runs one socket after another until the client is done. A socket
/// that dies is replaced as [`Reconnect`] says; the events end with `Left` or
/// `Disconnected`, and everything the client started ends with them.
async fn supervise(
    inner: Arc<Inner>,
    socket: Socket,
    out_rx: mpsc::UnboundedReceiver<ClientMessage>,
    events: mpsc::UnboundedSender<Event>,
    helpers: [tokio::task::AbortHandle; 2],
) {
    let out_rx = Arc::new(tokio::sync::Mutex::new(out_rx));
    let mut shutdown = inner.shutdown.subscribe();
    let mut reconnect = Reconnect::new(inner.options.reconnect);
    let mut socket = Some(socket);
    let last_words = 'sockets: loop {
        let Some(current) = socket.take() else {
            break None;
        };
        let end = run_socket(&inner, current, &out_rx, &events).await;
        inner.state().connected = false;
        if let SocketEnd::Dropped { reason } = &end {
            warn!(%reason, "signaling socket lost");
        }
        let mut reason = match &end {
            SocketEnd::Dropped { reason } => reason.clone(),
            _ => String::new(),
        };
        let mut step = match end {
            SocketEnd::Closed => break Some(None),
            end => reconnect.on_end(&end, jitter()),
        };
        loop {
            match step {
                Step::Stop => break 'sockets None,
                Step::GiveUp { reason } => break 'sockets Some(Some(reason)),
                Step::Attempt { attempt, delay } => {
                    // Not admitted until the new socket says so: no media restarts,
                    // no media_status meanwhile.
                    inner.state().admitted = false;
                    let _ = events.send(Event::Reconnecting {
                        attempt,
                        reason: reason.clone(),
                    });
                    let closed = async {
                        let _ = shutdown.wait_for(|closed| *closed).await;
                    };
                    let opened = tokio::select! {
                        _ = closed => break 'sockets Some(None),
                        opened = async {
                            tokio::time::sleep(delay).await;
                            open(&inner.options).await
                        } => opened,
                    };
                    match opened {
                        Ok(opened) => {
                            reconnect.on_connected();
                            resume(&inner, opened.session, &out_rx).await;
                            let _ = events.send(Event::Reconnected {
                                you: inner.session().you.clone(),
                            });
                            socket = Some(opened.socket);
                            continue 'sockets;
                        }
                        Err(e) => {
                            tracing::info!(attempt, error = %e, "reconnect attempt failed");
                            reason = e.to_string();
                            step = reconnect.on_failed(&e, jitter());
                        }
                    }
                }
            }
        }
    };
    inner.state().connected = false;
    inner.shutdown.send_replace(true);
    inner.close_media().await;
    // The forwarder and the health task hold event senders too; the stream must end with us.
    for helper in helpers {
        helper.abort();
    }
    if let Some(error) = last_words {
        let _ = events.send(Event::Disconnected { error });
    }
}

/// A new socket has joined after a drop: the server drops the old socket's media
/// connections now, so ours close too, and the application's tracks wait to be
/// published again on the next `admitted`.
async fn resume(
    inner: &Arc<Inner>,
    session: Session,
    out_rx: &tokio::sync::Mutex<mpsc::UnboundedReceiver<ClientMessage>>,
) {
    let old = inner
        .publisher
        .lock()
        .expect("publisher lock is never poisoned: no panics inside")
        .take();
    let tracks = old.as_ref().map(|p| p.tracks()).unwrap_or_default();
    for track in &tracks {
        track.start_rebinding();
    }
    if let Some(old) = old {
        old.close().await;
    }
    inner.subscriber.reset().await;
    {
        let mut state = inner.state();
        state.admitted = false;
        state.tracks.clear();
        state.republish.extend(tracks);
    }
    *inner.session() = session;
    // Whatever was queued for the old socket (candidates, offers, reports about the old
    // connections) means nothing on the new one.
    let mut out = out_rx.lock().await;
    while out.try_recv().is_ok() {}
    drop(out);
    inner.state().connected = true;
    inner.generation.send_modify(|g| *g += 1);
    let _ = inner.restarts.send(Vec::new());
}

/// Runs one socket until it ends: a writer task takes the client's frames, this reads
/// the server's, and a heartbeat finds a socket that died silently.
async fn run_socket(
    inner: &Arc<Inner>,
    socket: Socket,
    out_rx: &Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<ClientMessage>>>,
    events: &mpsc::UnboundedSender<Event>,
) -> SocketEnd {
    let (sink, mut stream) = socket.split();
    let (stop_writer, stop_rx) = watch::channel(WriterStop::Run);
    let (pings_tx, pings_rx) = mpsc::unbounded_channel();
    let mut writer = tokio::spawn(write_frames(sink, out_rx.clone(), pings_rx, stop_rx).in_current_span());
    let mut shutdown = inner.shutdown.subscribe();
    let interval = inner.options.heartbeat_interval.max(Duration::from_millis(100));
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let mut last_heard = Instant::now();
    let end = loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            _ = heartbeat.tick() => {
                if last_heard.elapsed() >= inner.options.heartbeat_timeout {
                    break SocketEnd::Dropped {
                        reason: format!("nothing from the server for {:?}", last_heard.elapsed()),
                    };
                }
                let _ = pings_tx.send(());
                continue;
            }
            _ = shutdown.wait_for(|closed| *closed) => break SocketEnd::Closed,
            done = &mut writer => {
                // The writer ended first: the socket cannot be written any more.
                let _ = done;
                break SocketEnd::Dropped { reason: "socket write failed".to_owned() };
            }
        };
        last_heard = Instant::now();
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(close))) => {
                break SocketEnd::Dropped {
                    reason: match close {
                        Some(close) => format!("the server closed the socket ({}: {})", close.code, close.reason),
                        None => "the server closed the socket".to_owned(),
                    },
                };
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => break SocketEnd::Dropped { reason: e.to_string() },
            None => {
                break SocketEnd::Dropped {
                    reason: "the socket closed".to_owned(),
                };
            }
        };
        let message = match serde_json::from_str::<ServerMessage>(&text) {
            Ok(message) => message,
            Err(e) => {
                // A newer server may send frames we do not know: skip, do not die.
                warn!(error = %e, "skipping a server frame this SDK cannot read");
                continue;
            }
        };
        if let Some(event) = handle(inner, message, events).await {
            let last = matches!(event, Event::Left { .. });
            let _ = events.send(event);
            if last {
                break SocketEnd::Left;
            }
        }
    };
    // On `close` what is queued still goes out (`leave(); close()` leaves); a dead
    // socket takes nothing more.
    let stop = match end {
        SocketEnd::Closed => WriterStop::Flush,
        _ => WriterStop::Now,
    };
    stop_writer.send_replace(stop);
    if !writer.is_finished() && tokio::time::timeout(Duration::from_secs(2), &mut writer).await.is_err() {
        writer.abort();
    }
    end
}

/// What the writer is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriterStop {
    Run,
    /// Send what is queued, then close.
    Flush,
    /// Close at once.
    Now,
}

async fn write_frames(
    mut sink: futures_util::stream::SplitSink<Socket, Message>,
    out: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<ClientMessage>>>,
    mut pings: mpsc::UnboundedReceiver<()>,
    mut stop: watch::Receiver<WriterStop>,
) {
    let mut out = out.lock().await;
    loop {
        tokio::select! {
            message = out.recv() => {
                let Some(message) = message else { break };
                let text = match serde_json::to_string(&message) {
                    Ok(text) => text,
                    Err(e) => {
                        warn!(error = %e, "cannot serialise a client message");
                        continue;
                    }
                };
                if let Err(e) = sink.send(Message::text(text)).await {
                    debug!(error = %e, "socket write failed");
                    return;
                }
            }
            Some(()) = pings.recv() => {
                if let Err(e) = sink.send(Message::Ping(Default::default())).await {
                    debug!(error = %e, "socket write failed");
                    return;
                }
            }
            flush = async {
                stop.wait_for(|s| *s != WriterStop::Run)
                    .await
                    .is_ok_and(|s| *s == WriterStop::Flush)
            } => {
                if flush {
                    while let Ok(message) = out.try_recv() {
                        let Ok(text) = serde_json::to_string(&message) else { continue };
                        if sink.send(Message::text(text)).await.is_err() {
                            break;
                        }
                    }
                }
                break;
            }
        }
    }
    let _ = sink.close().await;
}

/// How often the selected path of a connected connection is read again (it can
/// change without a state change, e.g. after an ICE restart).
const PATH_REFRESH: Duration = Duration::from_secs(2);

const ROLES: [PeerRole; 2] = [PeerRole::Publisher, PeerRole::Subscriber];

fn role_index(role: PeerRole) -> usize {
    match role {
        PeerRole::Publisher => 0,
        PeerRole::Subscriber => 1,
    }
}

/// The health task: follows both connections' states, reads their paths, restarts
/// ICE when [`Recovery`] says so, asks again for a subscriber restart whose offer was
/// lost, and reports to the app ([`Event::MediaHealth`]) and to the server
/// (`media_status`, paced by [`ReportPacer`]). A new socket (a reconnect) brings new
/// connections: it starts over with them.
async fn watch_media(
    inner: Arc<Inner>,
    mut requests: mpsc::UnboundedReceiver<Vec<PeerRole>>,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut pacer = ReportPacer::new(Instant::now());
    let mut recovery = [Recovery::default(), Recovery::default()];
    let mut health = MediaHealth::default();
    let mut subscriber_state = inner.subscriber.watch_state();
    let mut publisher: Option<(Arc<Publisher>, watch::Receiver<RTCPeerConnectionState>)> = None;
    let mut generation = inner.generation.subscribe();
    let mut next_path_read = Instant::now() + PATH_REFRESH;
    loop {
        if generation.has_changed().unwrap_or(false) {
            generation.mark_unchanged();
            recovery = [Recovery::default(), Recovery::default()];
            health = MediaHealth::default();
        }
        let current = inner.publisher();
        let same = match (&publisher, &current) {
            (Some((tracked, _)), Some(current)) => Arc::ptr_eq(tracked, current),
            (None, None) => true,
            _ => false,
        };
        if !same {
            publisher = current.map(|p| {
                let mut state = p.watch_state();
                state.mark_changed();
                (p, state)
            });
            if publisher.is_none() {
                health.publisher = ConnHealth::NEW;
            }
        }
        let deadline = [
            pacer.deadline(),
            recovery[0].deadline(),
            recovery[1].deadline(),
            inner.subscriber.restart_deadline(),
            Some(next_path_read),
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("the path read is always scheduled");
        let mut changed = None;
        tokio::select! {
            request = requests.recv() => {
                let Some(roles) = request else { break };
                for role in roles {
                    let action = recovery[role_index(role)].request(Instant::now());
                    act(&inner, &events, role, action).await;
                }
            }
            result = subscriber_state.changed() => {
                if result.is_err() { break }
                changed = Some(PeerRole::Subscriber);
            }
            result = async { publisher.as_mut().expect("guarded by the condition").1.changed().await },
                if publisher.is_some() => {
                if result.is_err() {
                    // That connection is gone (a reconnect replaced it).
                    publisher = None;
                    health.publisher = ConnHealth::NEW;
                    continue;
                }
                changed = Some(PeerRole::Publisher);
            }
            _ = generation.changed() => {
                // A new socket: new connections, a fresh start.
                recovery = [Recovery::default(), Recovery::default()];
                health = MediaHealth::default();
                continue;
            }
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
        let now = Instant::now();
        if let Some(role) = changed {
            let state = match (role, publisher.as_mut()) {
                (PeerRole::Publisher, Some((_, state))) => *state.borrow_and_update(),
                _ => *subscriber_state.borrow_and_update(),
            };
            let state = conn_state(state);
            health.get_mut(role).state = state;
            if let Some(action) = recovery[role_index(role)].on_state(now, state) {
                act(&inner, &events, role, action).await;
            }
        }
        for role in ROLES {
            let state = health.get(role).state;
            if let Some(action) = recovery[role_index(role)].on_timer(now, state) {
                act(&inner, &events, role, action).await;
            }
        }
        if let Err(e) = inner.subscriber.on_timer(now).await {
            warn!(error = %e, "a subscriber restart got no offer: taking the server's offers again");
            let _ = events.send(Event::MediaFailed {
                role: PeerRole::Subscriber,
                error: e.to_string(),
            });
        }
        if changed.is_some() || now >= next_path_read {
            next_path_read = now + PATH_REFRESH;
            for role in ROLES {
                let connected = health.get(role).state == MediaConnectionState::Connected;
                health.get_mut(role).path = match role {
                    _ if !connected => None,
                    PeerRole::Publisher => match publisher.as_ref() {
                        Some((publisher, _)) => publisher.selected_path().await,
                        None => None,
                    },
                    PeerRole::Subscriber => inner.subscriber.selected_path().await,
                };
            }
        }
        for role in ROLES {
            let r = &recovery[role_index(role)];
            let h = health.get_mut(role);
            h.attempts = r.attempts();
            h.gave_up = r.gave_up();
        }
        if health != *inner.health.borrow() {
            inner.health.send_replace(health);
            pacer.changed(now);
            let _ = events.send(Event::MediaHealth(health));
        }
        let in_call = {
            let state = inner.state();
            state.connected && state.admitted
        };
        if in_call && let Flush::Send((publisher, subscriber)) = pacer.flush(Instant::now(), health.report()) {
            let _ = inner.out.send(ClientMessage::MediaStatus { publisher, subscriber });
        }
    }
}

/// Carries out one [`RecoveryAction`] on `role`'s connection.
async fn act(inner: &Arc<Inner>, events: &mpsc::UnboundedSender<Event>, role: PeerRole, action: RecoveryAction) {
    match action {
        RecoveryAction::GiveUp { attempts } => {
            warn!(?role, attempts, "media connection lost: every ICE restart failed");
            let _ = events.send(Event::MediaLost { role, attempts });
        }
        RecoveryAction::Restart { attempt } => {
            {
                let state = inner.state();
                if !(state.connected && state.admitted) {
                    return;
                }
            }
            tracing::info!(?role, attempt, "restarting ICE");
            let failed = move |error: SdkError| Event::MediaFailed {
                role,
                error: error.to_string(),
            };
            match role {
                PeerRole::Publisher => {
                    let Some(publisher) = inner.publisher() else {
                        return;
                    };
                    let (inner, events) = (inner.clone(), events.clone());
                    // It waits for fresh ICE servers and the server's answer: not on the health task.
                    tokio::spawn(
                        async move {
                            inner.refresh_ice_servers().await;
                            if let Err(e) = publisher.restart_ice().await {
                                let _ = events.send(failed(e));
                            }
                        }
                        .in_current_span(),
                    );
                }
                PeerRole::Subscriber => {
                    // The server answers with fresh ICE servers, then the restart offer.
                    if let Err(e) = inner.subscriber.request_restart().await {
                        let _ = events.send(failed(e));
                    }
                }
            }
        }
    }
}

async fn forward_remote_tracks(inner: Arc<Inner>, mut tracks: RemoteTracks, events: mpsc::UnboundedSender<Event>) {
    while let Some(mut track) = tracks.recv().await {
        let info = inner.state().tracks.get(track.track_id()).cloned();
        track.set_info(info);
        if events.send(Event::RemoteTrack(track)).is_err() {
            break;
        }
    }
}

/// Back in the call after a reconnect: publishes the application's tracks again on a
/// new publisher connection and pauses again what it had paused.
async fn restore_media(inner: Arc<Inner>, tracks: Vec<LocalTrack>, events: mpsc::UnboundedSender<Event>) {
    let present: HashSet<TrackId> = inner.state().tracks.keys().cloned().collect();
    let paused: Vec<TrackId> = {
        let mut paused = inner.paused.lock().expect("paused lock is never poisoned");
        // Tracks that ended meanwhile are forgotten.
        paused.retain(|t| present.contains(t));
        paused.iter().cloned().collect()
    };
    let qualities: Vec<(TrackId, Quality)> = {
        let mut qualities = inner.qualities.lock().expect("qualities lock is never poisoned");
        qualities.retain(|t, _| present.contains(t));
        qualities.iter().map(|(t, q)| (t.clone(), *q)).collect()
    };
    for (track_id, quality) in qualities {
        let _ = inner.out.send(ClientMessage::SetSubscription {
            paused: paused.contains(&track_id),
            track_id,
            quality: Some(quality),
        });
    }
    for track_id in paused {
        let _ = inner.out.send(ClientMessage::SetSubscription {
            track_id,
            paused: true,
            quality: None,
        });
    }
    if tracks.is_empty() {
        return;
    }
    let result = match inner.ensure_publisher().await {
        Ok(publisher) => publisher.republish(tracks).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        warn!(error = %e, "publishing our tracks again after the reconnect failed");
        let _ = events.send(Event::MediaFailed {
            role: PeerRole::Publisher,
            error: e.to_string(),
        });
    }
}

/// Applies one server frame to the client's state and media; returns the event for the app.
async fn handle(inner: &Arc<Inner>, message: ServerMessage, events: &mpsc::UnboundedSender<Event>) -> Option<Event> {
    let media_failed = |role, error: SdkError| {
        Some(Event::MediaFailed {
            role,
            error: error.to_string(),
        })
    };
    match message {
        ServerMessage::Joined { you, meeting, .. } => Some(Event::Joined { you, meeting }),
        ServerMessage::Lobby { status, timeout_secs } => Some(Event::Lobby { status, timeout_secs }),
        ServerMessage::Admitted {
            participants,
            tracks,
            ice_servers,
        } => {
            let republish = {
                let mut state = inner.state();
                state.admitted = true;
                state.ice_servers = ice_servers.clone();
                state.tracks = tracks.iter().map(|t| (t.track_id.clone(), t.clone())).collect();
                std::mem::take(&mut state.republish)
            };
            inner.subscriber.set_ice_servers(ice_servers.clone());
            let resumed = inner.generation.borrow().to_owned() > 0;
            if resumed {
                tokio::spawn(restore_media(inner.clone(), republish, events.clone()).in_current_span());
            }
            Some(Event::Admitted {
                participants,
                tracks,
                ice_servers,
            })
        }
        ServerMessage::IceServers { ice_servers } => {
            inner.state().ice_servers = ice_servers.clone();
            inner.subscriber.set_ice_servers(ice_servers.clone());
            if let Some(publisher) = inner.publisher()
                && let Err(e) = publisher.set_ice_servers(&ice_servers).await
            {
                warn!(error = %e, "cannot apply fresh ICE servers to the publisher connection");
            }
            inner.ice_refreshed.send_modify(|n| *n += 1);
            None
        }
        ServerMessage::LobbyUpdate { entries } => Some(Event::LobbyChanged { entries }),
        ServerMessage::ParticipantJoined { participant } => Some(Event::ParticipantJoined(participant)),
        ServerMessage::ParticipantLeft { participant_id, reason } => {
            inner.state().tracks.retain(|_, t| t.participant_id != participant_id);
            Some(Event::ParticipantLeft { participant_id, reason })
        }
        ServerMessage::Chat { message } => Some(Event::Chat(message)),
        ServerMessage::Left { reason, message } => {
            inner.state().left = true;
            Some(Event::Left { reason, message })
        }
        ServerMessage::Pong { nonce } => Some(Event::Pong { nonce }),
        ServerMessage::ActiveSpeakers { speakers } => Some(Event::ActiveSpeakers { speakers }),
        ServerMessage::ConnectionQuality {
            participant_id,
            quality,
            video_reduced,
        } => Some(Event::ConnectionQuality {
            participant_id,
            quality,
            video_reduced,
        }),
        ServerMessage::VideoLayer {
            track_id,
            layer,
            layers,
            reduced,
        } => Some(Event::VideoLayer {
            track_id,
            layer,
            layers,
            reduced,
        }),
        ServerMessage::Error { code, message } => Some(Event::Error { code, message }),
        // The staff queue is a subscription of its own (`subscribe_queue`), never sent on a
        // meeting's socket; a guest's place in the appointments queue is the web client's.
        ServerMessage::QueueSnapshot { .. }
        | ServerMessage::QueueMeeting { .. }
        | ServerMessage::QueueAppointment { .. }
        | ServerMessage::QueuePosition { .. } => None,
        // Dynacast: which layers of our simulcast camera anybody needs. The track's flags
        // change (a synthetic sender skips inactive layers); the application hears of it.
        ServerMessage::PublisherLayers { track_id, layers } => {
            let track = inner
                .publisher()?
                .tracks()
                .into_iter()
                .find(|t| t.server_track_id().as_ref() == Some(&track_id))?;
            track.apply_publisher_layers(&layers).then(|| Event::PublisherLayers {
                track_id,
                layers: track.layers(),
            })
        }
        ServerMessage::PublishAnswer { sdp } => {
            let taken = inner.publisher().is_some_and(|p| p.on_answer(sdp));
            if !taken {
                warn!("publish_answer without an offer in flight");
            }
            None
        }
        ServerMessage::SubscribeOffer { sdp, restart } => match inner.subscriber.on_server_offer(sdp, restart).await {
            Ok(()) => None,
            Err(e) => media_failed(PeerRole::Subscriber, e),
        },
        ServerMessage::IceCandidate { target, candidate } => {
            let result = match target {
                PeerRole::Subscriber => inner.subscriber.add_remote_candidate(candidate).await,
                PeerRole::Publisher => match inner.publisher() {
                    Some(publisher) => publisher.add_remote_candidate(candidate).await,
                    None => Ok(()),
                },
            };
            result.err().and_then(|e| media_failed(target, e))
        }
        ServerMessage::TrackPublished { track } => {
            if track.participant_id == inner.session().you.participant_id {
                if let Some(publisher) = inner.publisher() {
                    publisher.claim_track(&track);
                }
            } else {
                inner.state().tracks.insert(track.track_id.clone(), track.clone());
            }
            Some(Event::TrackPublished(track))
        }
        ServerMessage::TrackUnpublished {
            track_id,
            participant_id,
        } => {
            inner.state().tracks.remove(&track_id);
            Some(Event::TrackUnpublished {
                track_id,
                participant_id,
            })
        }
        ServerMessage::ParticipantMedia {
            participant_id,
            publisher,
            subscriber,
        } => Some(Event::ParticipantMedia {
            participant_id,
            publisher,
            subscriber,
        }),
        ServerMessage::TrackMuted {
            track_id,
            participant_id,
            muted,
        } => {
            if let Some(track) = inner.state().tracks.get_mut(&track_id) {
                track.muted = muted;
            }
            Some(Event::TrackMuted {
                track_id,
                participant_id,
                muted,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_url_from_server_url() {
        assert_eq!(
            websocket_url("https://127.0.0.1:8443").unwrap(),
            "wss://127.0.0.1:8443/ws"
        );
        assert_eq!(websocket_url("https://gw.example/").unwrap(), "wss://gw.example/ws");
        assert_eq!(
            websocket_url("https://gw.example/base").unwrap(),
            "wss://gw.example/base/ws"
        );
        assert_eq!(
            websocket_url("http://localhost:8080").unwrap(),
            "ws://localhost:8080/ws"
        );
        assert_eq!(
            websocket_url("wss://gw.example/custom").unwrap(),
            "wss://gw.example/custom"
        );
        assert_eq!(websocket_url("wss://gw.example").unwrap(), "wss://gw.example/ws");
        assert!(matches!(websocket_url("ftp://x"), Err(SdkError::InvalidUrl { .. })));
        assert!(matches!(websocket_url("not a url"), Err(SdkError::InvalidUrl { .. })));
    }
}
