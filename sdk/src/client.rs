//! The signaling client: one WebSocket to the gateway, typed events out, typed
//! commands in, and the two media connections driven from it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex as StdMutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, Stream, StreamExt};
use gatehouse_signaling::ErrorCode;
use gatehouse_signaling::protocol::{
    ChatMessage, ClientMessage, ConnectionMedia, IceServer, LeaveReason, LobbyEntry, LobbyStatus, MediaConnectionState,
    MeetingId, MeetingSummary, PROTOCOL_VERSION, ParticipantId, ParticipantInfo, PeerRole, ServerMessage, TrackId,
    TrackInfo, TrackSource,
};
use tokio::sync::{OnceCell, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::{Instrument, debug, info_span, warn};
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::error::{Result, SdkError};
use crate::health::{Flush, MediaHealth, Recovery, RecoveryAction, ReportPacer, conn_state};
use crate::media::{LocalTrack, MediaOptions, Publisher, RemoteTrack, RemoteTracks, Subscriber};
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
    /// The socket closed without a `left` (network, server restart). Last event.
    /// The server treats this as leaving: [`Client::reconnect`] comes back (guests
    /// who were in the call get their seat back within 60 s of the drop).
    Disconnected {
        /// What ended the socket, if known.
        error: Option<String>,
    },
}

/// The stream of [`Event`]s of one connection; ends after `Left` or `Disconnected`.
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
            .field("me", self.me())
            .field("meeting", self.meeting())
            .finish_non_exhaustive()
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

/// What the client knows about the call, updated by the reader task.
#[derive(Default)]
struct CallState {
    admitted: bool,
    ice_servers: Vec<IceServer>,
    tracks: HashMap<TrackId, TrackInfo>,
    left: bool,
}

struct Inner {
    /// How this client connected, to connect again after a drop.
    options: ConnectOptions,
    out: mpsc::UnboundedSender<ClientMessage>,
    you: ParticipantInfo,
    meeting: MeetingSummary,
    /// Wall clock (µs since the UNIX epoch) when `join` went out: where join times start.
    join_sent_us: u64,
    media: MediaOptions,
    state: StdMutex<CallState>,
    publisher: OnceCell<Arc<Publisher>>,
    subscriber: Arc<Subscriber>,
    /// Tells the writer to close the socket.
    shutdown: watch::Sender<bool>,
    /// Our media health as the health task last saw it.
    health: watch::Sender<MediaHealth>,
    /// Restarts asked for by the application, for the health task (empty: just look again).
    restarts: mpsc::UnboundedSender<Vec<PeerRole>>,
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, CallState> {
        self.state
            .lock()
            .expect("call state lock is never poisoned: no panics inside")
    }

    async fn close_media(&self) {
        if let Some(publisher) = self.publisher.get() {
            publisher.close().await;
        }
        self.subscriber.close().await;
    }
}

/// Closes the socket when the last [`Client`] clone goes away.
struct CloseOnDrop(watch::Sender<bool>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

/// A connection to one meeting. Cheap to clone; dropping the last clone closes it.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    _close_on_drop: Arc<CloseOnDrop>,
}

impl Client {
    /// Opens the socket, joins, and waits for `joined`. Returns the client and
    /// its events (the first is [`Event::Joined`]; then `Lobby` or `Admitted`).
    ///
    /// Fails with [`SdkError::Server`] (e.g. `unauthorized`, `meeting_full`) or
    /// [`SdkError::Left`] if the server turns the join down.
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
        let ws_url = websocket_url(&options.url)?;
        let connector = client_config(&options.tls())?.map(|config| Connector::Rustls(Arc::new(config)));
        let timeout = options.join_timeout;
        let (mut socket, _) = tokio::time::timeout(
            timeout,
            tokio_tungstenite::connect_async_tls_with_config(ws_url.as_str(), None, true, connector),
        )
        .await
        .map_err(|_| SdkError::Timeout("websocket connect"))??;

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

        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let mut media = options.media.clone();
        media.stream_id = you.participant_id.to_string();
        let (subscriber, remote_tracks) = Subscriber::new(media.clone(), out_tx.clone());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (restarts, restart_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            options: options.clone(),
            out: out_tx,
            you: you.clone(),
            meeting: meeting.clone(),
            join_sent_us,
            media,
            state: StdMutex::new(CallState::default()),
            publisher: OnceCell::new(),
            subscriber,
            shutdown: shutdown.clone(),
            health: watch::channel(MediaHealth::default()).0,
            restarts,
        });
        let _ = events_tx.send(Event::Joined {
            you: you.clone(),
            meeting: meeting.clone(),
        });

        let span = info_span!("sdk", meeting_id = %meeting.meeting_id, participant_id = %you.participant_id);
        let (sink, stream) = socket.split();
        tokio::spawn(write_frames(sink, out_rx, shutdown_rx).instrument(span.clone()));
        let forwarder = tokio::spawn(
            forward_remote_tracks(inner.clone(), remote_tracks, events_tx.clone()).instrument(span.clone()),
        );
        let health = tokio::spawn(watch_media(inner.clone(), restart_rx, events_tx.clone()).instrument(span.clone()));
        let helpers = [forwarder.abort_handle(), health.abort_handle()];
        tokio::spawn(read_frames(inner.clone(), stream, events_tx, helpers).instrument(span));

        Ok((
            Client {
                inner,
                _close_on_drop: Arc::new(CloseOnDrop(shutdown)),
            },
            Events { rx: events_rx },
        ))
    }

    /// When `join` was sent (µs since the UNIX epoch, as [`now_us`](crate::now_us)),
    /// after the WebSocket and TLS handshakes: join times are measured from here.
    pub fn join_sent_us(&self) -> u64 {
        self.inner.join_sent_us
    }

    /// Who we are in this meeting.
    pub fn me(&self) -> &ParticipantInfo {
        &self.inner.you
    }

    /// The meeting as `joined` described it.
    pub fn meeting(&self) -> &MeetingSummary {
        &self.inner.meeting
    }

    /// Whether `admitted` has arrived (and no `left` since).
    pub fn is_admitted(&self) -> bool {
        let state = self.inner.state();
        state.admitted && !state.left
    }

    /// The remote tracks announced so far (by `admitted` and `track_published`).
    pub fn remote_tracks(&self) -> Vec<TrackInfo> {
        self.inner.state().tracks.values().cloned().collect()
    }

    /// Sends any frame: the escape hatch for what has no method here.
    pub fn send(&self, message: ClientMessage) -> Result<()> {
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

    /// Keep-alive; the server answers with [`Event::Pong`].
    pub fn ping(&self, nonce: u64) -> Result<()> {
        self.send(ClientMessage::Ping { nonce })
    }

    /// Leaves the lobby or the call. The server answers `left` and closes; the
    /// events end with [`Event::Left`] and media connections close.
    pub fn leave(&self) -> Result<()> {
        self.send(ClientMessage::Leave)
    }

    /// Stops or resumes receiving a remote track.
    pub fn set_subscription(&self, track_id: impl Into<TrackId>, paused: bool) -> Result<()> {
        self.send(ClientMessage::SetSubscription {
            track_id: track_id.into(),
            paused,
        })
    }

    /// Mutes or unmutes one of our tracks. Needs the server's id for it, which
    /// arrives with its `track_published` ([`SdkError::NotNegotiated`] before).
    pub fn mute_track(&self, track: &LocalTrack, muted: bool) -> Result<()> {
        let track_id = track.server_track_id().ok_or(SdkError::NotNegotiated)?;
        self.send(ClientMessage::MuteTrack { track_id, muted })
    }

    /// Publishes a track for `source` on the publisher connection (made on first
    /// use) and returns once the server has answered. Needs the call.
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
        let publisher = self
            .inner
            .publisher
            .get_or_try_init(|| async {
                let mut media = self.inner.media.clone();
                media.ice_servers = self.inner.state().ice_servers.clone();
                Publisher::new(media, self.inner.out.clone()).await
            })
            .await?;
        let track = publisher.publish(source).await?;
        // The health task follows the publisher from now on.
        let _ = self.inner.restarts.send(Vec::new());
        Ok(track)
    }

    /// Our media connections: each one's state and, while connected, the path its
    /// media takes (`udp`, `tcp` or `relay`), with the ICE restarts tried since it was
    /// last connected. Changes come as [`Event::MediaHealth`].
    ///
    /// The SDK watches both connections: one that goes `disconnected` or `failed` gets
    /// an ICE restart (the publisher re-offers with new credentials; the subscriber
    /// asks the server for a fresh connection), again if a restart has not connected
    /// within 6 s, at most 3 times in a row ([`Event::MediaLost`] then). The server is
    /// told (`media_status`, coalesced over 200 ms and kept under its rate limit), so
    /// the others see us as [`Event::ParticipantMedia`].
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

    /// Stops publishing a track (renegotiates the publisher connection).
    pub async fn unpublish(&self, track: &LocalTrack) -> Result<()> {
        match self.inner.publisher.get() {
            Some(publisher) => publisher.unpublish(track).await,
            None => Err(SdkError::NotInCall),
        }
    }

    /// Connects again with the same options after a transient drop
    /// ([`Event::Disconnected`]), closing this client's media first.
    ///
    /// The protocol lets a participant come back with the same token: a guest who
    /// was in the call within the last 60 s goes straight back into the call (the
    /// server kept the seat); otherwise the lobby rules apply as on a first join.
    /// Staff come back as a new participant id. Media does not carry over: publish
    /// again once [`Event::Admitted`] arrives. Tries `attempts` times, waiting
    /// `backoff`, then twice that, and so on, between tries; a refusal by the server
    /// (e.g. an expired token) ends the attempts at once.
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
                Err(e @ (SdkError::Server { .. } | SdkError::Left { .. })) => return Err(e),
                Err(e) => {
                    tracing::info!(attempt, error = %e, "reconnect failed");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Closes the socket and the media connections. Frames already queued (a
    /// [`leave`](Self::leave) just before) are sent first; without `leave` the server
    /// sees a dropped connection and holds an admitted participant's seat for 60 s.
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

async fn write_frames(
    mut sink: futures_util::stream::SplitSink<Socket, Message>,
    mut out: mpsc::UnboundedReceiver<ClientMessage>,
    mut shutdown: watch::Receiver<bool>,
) {
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
                    break;
                }
            }
            _ = async { let _ = shutdown.wait_for(|closed| *closed).await; } => {
                // What was queued before `close` still goes out: `leave(); close()` leaves.
                while let Ok(message) = out.try_recv() {
                    let Ok(text) = serde_json::to_string(&message) else { continue };
                    if sink.send(Message::text(text)).await.is_err() {
                        break;
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
/// ICE when [`Recovery`] says so, and reports to the app ([`Event::MediaHealth`]) and
/// to the server (`media_status`, paced by [`ReportPacer`]).
async fn watch_media(
    inner: Arc<Inner>,
    mut requests: mpsc::UnboundedReceiver<Vec<PeerRole>>,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut pacer = ReportPacer::new(Instant::now());
    let mut recovery = [Recovery::default(), Recovery::default()];
    let mut health = MediaHealth::default();
    let mut subscriber_state = inner.subscriber.watch_state();
    let mut publisher_state: Option<watch::Receiver<RTCPeerConnectionState>> = None;
    let mut next_path_read = Instant::now() + PATH_REFRESH;
    loop {
        if publisher_state.is_none()
            && let Some(publisher) = inner.publisher.get()
        {
            let mut state = publisher.watch_state();
            state.mark_changed();
            publisher_state = Some(state);
        }
        let deadline = [
            pacer.deadline(),
            recovery[0].deadline(),
            recovery[1].deadline(),
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
            result = async { publisher_state.as_mut().expect("guarded by the condition").changed().await },
                if publisher_state.is_some() => {
                if result.is_err() { break }
                changed = Some(PeerRole::Publisher);
            }
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
        let now = Instant::now();
        if let Some(role) = changed {
            let state = match (role, publisher_state.as_mut()) {
                (PeerRole::Publisher, Some(state)) => *state.borrow_and_update(),
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
        if changed.is_some() || now >= next_path_read {
            next_path_read = now + PATH_REFRESH;
            for role in ROLES {
                let connected = health.get(role).state == MediaConnectionState::Connected;
                health.get_mut(role).path = match role {
                    _ if !connected => None,
                    PeerRole::Publisher => match inner.publisher.get() {
                        Some(publisher) => publisher.selected_path().await,
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
        if inner.state().admitted
            && let Flush::Send((publisher, subscriber)) = pacer.flush(Instant::now(), health.report())
        {
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
            if !inner.state().admitted {
                return;
            }
            tracing::info!(?role, attempt, "restarting ICE");
            let failed = move |error: SdkError| Event::MediaFailed {
                role,
                error: error.to_string(),
            };
            match role {
                PeerRole::Publisher => {
                    let Some(publisher) = inner.publisher.get().cloned() else {
                        return;
                    };
                    let events = events.clone();
                    // It waits for the server's answer: not on the health task.
                    tokio::spawn(
                        async move {
                            if let Err(e) = publisher.restart_ice().await {
                                let _ = events.send(failed(e));
                            }
                        }
                        .in_current_span(),
                    );
                }
                PeerRole::Subscriber => {
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

async fn read_frames(
    inner: Arc<Inner>,
    mut stream: futures_util::stream::SplitStream<Socket>,
    events: mpsc::UnboundedSender<Event>,
    helpers: [tokio::task::AbortHandle; 2],
) {
    let mut end_error = None;
    while let Some(frame) = stream.next().await {
        let text = match frame {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(_)) => break,
            Ok(_) => continue,
            Err(e) => {
                end_error = Some(e.to_string());
                break;
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
        if let Some(event) = handle(&inner, message).await {
            let last = matches!(event, Event::Left { .. });
            let _ = events.send(event);
            if last {
                break;
            }
        }
    }
    inner.shutdown.send_replace(true);
    inner.close_media().await;
    // The forwarder and the health task hold event senders too; the stream must end with us.
    for helper in helpers {
        helper.abort();
    }
    if !inner.state().left {
        let _ = events.send(Event::Disconnected { error: end_error });
    }
}

/// Applies one server frame to the client's state and media; returns the event for the app.
async fn handle(inner: &Inner, message: ServerMessage) -> Option<Event> {
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
            {
                let mut state = inner.state();
                state.admitted = true;
                state.ice_servers = ice_servers.clone();
                state.tracks = tracks.iter().map(|t| (t.track_id.clone(), t.clone())).collect();
            }
            inner.subscriber.set_ice_servers(ice_servers.clone());
            Some(Event::Admitted {
                participants,
                tracks,
                ice_servers,
            })
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
        ServerMessage::Error { code, message } => Some(Event::Error { code, message }),
        ServerMessage::PublishAnswer { sdp } => {
            let taken = inner.publisher.get().is_some_and(|p| p.on_answer(sdp));
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
                PeerRole::Publisher => match inner.publisher.get() {
                    Some(publisher) => publisher.add_remote_candidate(candidate).await,
                    None => Ok(()),
                },
            };
            result.err().and_then(|e| media_failed(target, e))
        }
        ServerMessage::TrackPublished { track } => {
            if track.participant_id == inner.you.participant_id {
                if let Some(publisher) = inner.publisher.get() {
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
