//! The signaling WebSocket: one per participant, authenticated by its first
//! frame (`join`), then a reader feeding the meeting task and a writer
//! draining the participant's outbox.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use gatehouse_signaling::admission::Attendee;
use gatehouse_signaling::lobby::ConnId;
use gatehouse_signaling::protocol::{
    ClientMessage, MAX_FRAME_BYTES, PROTOCOL_VERSION, ServerMessage, parse_client_message,
};
use gatehouse_signaling::ratelimit::TokenBucket;
use gatehouse_signaling::room::JoinRequest;
use gatehouse_signaling::token::Identity;
use gatehouse_signaling::{Error, ErrorCode};
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::outbox::Next;

use super::AppState;
use super::error::ApiError;
use super::live::Command;
use crate::ids::{new_id, now_ms};

/// How long a new socket may take to send `join`.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames larger than this end the connection: an `error` `frame_too_large`, then a close
/// with 1009 (those between [`MAX_FRAME_BYTES`] and this get the error frame and the
/// socket goes on). The socket library refuses them from their header, unread.
const HARD_FRAME_LIMIT: usize = 1024 * 1024;
/// Bytes read from a signaling socket at a time (`upgrade`).
const READ_BUFFER: usize = 8 * 1024;
/// Close codes (RFC 6455 §7.4.1).
const CLOSE_NORMAL: u16 = 1000;
/// Policy violation: a frame flood, or a client too slow to read its outbox.
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;
/// Per-connection frame pace: a burst, then a sustained rate.
const FRAME_BURST: u32 = 100;
const FRAMES_PER_SEC: f64 = 50.0;
/// Refused frames tolerated before a flooding connection is cut off.
const MAX_REFUSED: u32 = 50;
/// How long a socket the server closes keeps reading (and discarding) what the client
/// still sends, until its close frame or its end ([`linger`]).
const LINGER: Duration = Duration::from_secs(1);

pub async fn upgrade(
    ws: WebSocketUpgrade,
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
) -> Response {
    // Refused before the upgrade, with an HTTP error a client can read; the permit is
    // held for the connection's whole life and frees its place however it ends.
    let permit = match state.connections.acquire(peer.ip()) {
        Ok(permit) => permit,
        Err(e) => {
            tracing::info!(%peer, code = ?e.code, "signaling connection refused");
            return ApiError(e).into_response();
        }
    };
    let conn = state.next_conn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Signaling frames are small (an SDP is a few kilobytes): the socket library's 128 KiB
    // read buffer per connection (its default) was a tenth of a participant's memory. Larger
    // frames, up to the limit, still arrive whole: the buffer grows for them.
    ws.max_message_size(HARD_FRAME_LIMIT)
        .max_frame_size(HARD_FRAME_LIMIT)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| {
        let span = tracing::info_span!("conn", conn, %peer, meeting_id = tracing::field::Empty, participant_id = tracing::field::Empty);
        async move {
            serve(socket, state, conn).await;
            drop(permit);
        }
        .instrument(span)
    })
}

fn frame(msg: &ServerMessage) -> Message {
    // Serialising our own types cannot fail.
    let text = serde_json::to_string(msg).expect("server messages serialise");
    tracing::debug!(frame = frame_type(&text), "frame out");
    Message::Text(Utf8Bytes::from(text))
}

/// A frame's `type` (the serialised tag comes first), for the per-frame debug logs that
/// time a join end to end (docs/BENCHMARKS.md §4); never parsed beyond that.
fn frame_type(json: &str) -> &str {
    json.strip_prefix("{\"type\":\"")
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("?")
}

async fn serve(socket: WebSocket, state: Arc<AppState>, conn: ConnId) {
    state.metrics.signaling_connections.inc();
    // Liveness: the writer pings every third of the silence limit; the reader takes a
    // connection that has sent nothing (a frame, a pong) for the whole limit as dropped.
    let silence = Duration::from_secs(state.config.signaling_silence_secs());
    let (mut sink, mut stream) = socket.split();
    let (outbox, mut outbox_rx) = crate::outbox::outbox();
    let mut shutdown = state.shutdown.clone();
    // How the writer closes once the outbox ends, when the reader has a reason to give.
    let (close_with, close_rx) = tokio::sync::watch::channel(None::<CloseFrame>);

    // Writer: drains the outbox and pings; closes the socket after a `left` frame (1000), on
    // shutdown (1001), when the client is too slow (1008) or sent too much (1009).
    let mut writer = tokio::spawn(
        async move {
            let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + silence / 3, silence / 3);
            ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ping.tick() => {
                        if sink.send(Message::Ping(Default::default())).await.is_err() {
                            break;
                        }
                    }
                    next = outbox_rx.next() => {
                        let msg = match next {
                            Next::Message(msg) => msg,
                            Next::Closed => {
                                let close = close_rx.borrow().clone();
                                if let Some(close) = close {
                                    let _ = sink.send(Message::Close(Some(close))).await;
                                }
                                break;
                            }
                            Next::Overflowed => {
                                let close = CloseFrame { code: CLOSE_POLICY, reason: Utf8Bytes::from_static("too slow: outbox full") };
                                let _ = sink.send(Message::Close(Some(close))).await;
                                break;
                            }
                        };
                        let last = matches!(msg, ServerMessage::Left { .. });
                        if sink.send(frame(&msg)).await.is_err() {
                            break;
                        }
                        if last {
                            let close = CloseFrame { code: CLOSE_NORMAL, reason: Utf8Bytes::from_static("left") };
                            let _ = sink.send(Message::Close(Some(close))).await;
                            break;
                        }
                    }
                    _ = shutdown.changed() => {
                        let close = CloseFrame { code: 1001, reason: Utf8Bytes::from_static("server shutting down") };
                        let _ = sink.send(Message::Close(Some(close))).await;
                        break;
                    }
                }
            }
            let _ = sink.close().await;
        }
        .in_current_span(),
    );

    let joined = match tokio::time::timeout(JOIN_TIMEOUT, read_join(&mut stream)).await {
        Ok(Ok(First::Join(join))) => join_meeting(&state, conn, join, &outbox, false).await,
        Ok(Ok(First::Queue(sub))) => {
            // A staff queue subscription instead of a meeting (`subscribe_queue`).
            if let Err(e) = super::queue::serve_subscription(&state, sub, &outbox, &mut stream, silence).await {
                tracing::info!(code = ?e.code, "queue subscription ended");
                let _ = outbox.send(ServerMessage::error(e.code, e.message));
            }
            drop(outbox);
            if tokio::time::timeout(Duration::from_secs(2), &mut writer).await.is_err() {
                writer.abort();
            }
            state.metrics.signaling_connections.dec();
            return;
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::new(
            ErrorCode::NotJoined,
            "send `join` within 10 seconds of connecting",
        )),
    };
    let target = match joined {
        Ok(target) => target,
        Err(e) => {
            tracing::info!(code = ?e.code, "join refused");
            if e.code == ErrorCode::FrameTooLarge {
                close_with.send_replace(Some(too_big()));
            }
            let _ = outbox.send(ServerMessage::error(e.code, e.message));
            drop(outbox);
            let _ = writer.await;
            linger(&mut stream).await;
            state.metrics.signaling_connections.dec();
            return;
        }
    };

    // Reading stops when the client goes, or when the writer has closed the socket
    // (after `left`): a client that never answers the close must not pin the connection.
    let (ended, writer_done) = tokio::select! {
        ended = read_frames(&state, conn, &target, &mut stream, &outbox, &close_with, silence) => (ended, false),
        _ = &mut writer => (Ended::ServerClosed, true),
    };
    match target {
        Target::Local(meeting_id) => {
            state
                .live
                .send_if_live(&meeting_id, Command::Disconnected { conn })
                .await;
        }
        // Dropping the relay's sender hangs the session up: the owner hears `disconnected`.
        Target::Relayed(frames) => drop(frames),
    }
    drop(outbox);
    // Let the writer flush what is queued (it ends once the meeting drops its outbox too).
    if !writer_done && tokio::time::timeout(Duration::from_secs(2), &mut writer).await.is_err() {
        writer.abort();
    }
    if ended == Ended::ServerClosed {
        linger(&mut stream).await;
    }
    state.metrics.signaling_connections.dec();
    tracing::info!("connection closed");
}

/// Why reading a joined connection's frames ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ended {
    /// The client closed, dropped, or fell silent: nothing more will come from it.
    ClientGone,
    /// The server ends the connection (a flood, a frame too large, shutdown, the meeting
    /// or relay gone) while the client may still be sending.
    ServerClosed,
}

/// Reads and discards what a client still sends after the server's close, until its close
/// frame, its end or [`LINGER`]. Dropping a TCP socket with unread bytes in its receive
/// buffer resets the connection (RFC 1122 §4.2.2.13), and a reset can reach the client
/// before it has read the frames the server sent last: the error that says why it was cut
/// off. RFC 6455 §7.1.1 likewise has the server wait for the client's close.
async fn linger(stream: &mut futures_util::stream::SplitStream<WebSocket>) {
    let _ = tokio::time::timeout(LINGER, async {
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// What a connection's first frame asks for.
enum First {
    Join(Join),
    Queue(super::queue::Subscribe),
}

/// Where a joined socket's frames go.
enum Target {
    /// The meeting runs here (its id).
    Local(String),
    /// The meeting runs on another node: frames go through the signaling relay.
    Relayed(crate::cluster::RelayFrames),
}

/// The `join` frame: protocol version, token, and (for staff) the meeting.
struct Join {
    token: String,
    meeting_id: Option<gatehouse_signaling::protocol::MeetingId>,
}

async fn read_join(stream: &mut futures_util::stream::SplitStream<WebSocket>) -> Result<First, Error> {
    while let Some(msg) = stream.next().await {
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(_)) => break,
            Ok(Message::Binary(_)) => return Err(Error::new(ErrorCode::MalformedJson, "frames must be JSON text")),
            Ok(_) => continue,
            Err(e) if is_too_large(&e) => return Err(frame_too_large()),
            Err(_) => break,
        };
        tracing::debug!(frame = frame_type(&text), "frame in");
        let msg = parse_client_message(&text)?;
        if let Some(sub) = super::queue::Subscribe::from_frame(msg.clone())? {
            return Ok(First::Queue(sub));
        }
        return match msg {
            ClientMessage::Join {
                protocol,
                token,
                meeting_id,
            } => {
                if protocol != PROTOCOL_VERSION {
                    return Err(Error::new(
                        ErrorCode::UnsupportedProtocol,
                        format!("this server speaks protocol {PROTOCOL_VERSION}, not {protocol}"),
                    ));
                }
                Ok(First::Join(Join { token, meeting_id }))
            }
            _ => Err(Error::new(
                ErrorCode::NotJoined,
                "the first frame must be `join` (or `subscribe_queue`)",
            )),
        };
    }
    Err(Error::new(ErrorCode::NotJoined, "the connection closed before `join`"))
}

/// A socket of another node relayed here (`src/cluster/relay_shell.rs`): joins as a local
/// socket would, `conn` being a connection id of this node; never relayed on again.
#[cfg(feature = "cluster")]
pub(crate) async fn join_relayed(
    state: &Arc<AppState>,
    conn: ConnId,
    token: String,
    meeting_id: Option<String>,
    outbox: &super::live::Outbox,
) -> Result<String, Error> {
    let join = Join {
        token,
        meeting_id: meeting_id.map(Into::into),
    };
    match join_meeting(state, conn, join, outbox, true).await? {
        Target::Local(id) => Ok(id),
        Target::Relayed(_) => Err(Error::new(ErrorCode::Internal, "a relayed join was relayed again")),
    }
}

/// Verifies the token, loads the meeting and asks its task to let us in: here, or through
/// the signaling relay on the node that runs the meeting (unless `relayed_in`: the socket is
/// already relayed from another node, and a meeting elsewhere is refused).
async fn join_meeting(
    state: &Arc<AppState>,
    conn: ConnId,
    join: Join,
    outbox: &super::live::Outbox,
    relayed_in: bool,
) -> Result<Target, Error> {
    let now_secs = now_ms() / 1000;
    let identity = state.keys.verify(&join.token, now_secs)?;
    let meeting_id = match (&identity, join.meeting_id.clone()) {
        (Identity::Guest(g), Some(m)) if m != g.mtg => {
            return Err(Error::new(
                ErrorCode::WrongMeeting,
                "this guest token is for another meeting",
            ));
        }
        (Identity::Guest(g), _) => g.mtg.clone(),
        (Identity::Staff(_), Some(m)) => m.into_string(),
        (Identity::Staff(_), None) => {
            return Err(Error::new(
                ErrorCode::BadRequest,
                "staff must name the meeting in `join`",
            ));
        }
    };
    let meeting = {
        let meeting_id = meeting_id.clone();
        state.store.run(move |s| s.meeting(&meeting_id)).await?
    }
    .ok_or_else(|| Error::new(ErrorCode::NotFound, "no such meeting"))?;
    let req = match identity {
        Identity::Guest(g) => JoinRequest {
            conn,
            participant_id: g.sub.into(),
            display_name: g.name,
            attendee: Attendee::Guest { invited: g.invited },
        },
        Identity::Staff(s) => {
            if s.org != meeting.organization {
                return Err(Error::new(
                    ErrorCode::Forbidden,
                    "this meeting belongs to another organisation",
                ));
            }
            JoinRequest {
                conn,
                participant_id: new_id("p").into(),
                display_name: s.name,
                attendee: Attendee::Staff {
                    subject: s.sub,
                    organization: s.org,
                },
            }
        }
    };
    let span = tracing::Span::current();
    span.record("meeting_id", meeting_id.as_str());
    let services = state.services();
    match state.live.route(&services, &meeting_id).await? {
        crate::cluster::Route::Here => {}
        crate::cluster::Route::Elsewhere { node_id, public_url } if !relayed_in => {
            tracing::info!(owner = %node_id, "meeting runs on another node: relaying");
            let frames = state
                .router
                .relay_open(
                    &node_id,
                    &public_url,
                    conn,
                    join.token,
                    join.meeting_id.map(|m| m.into_string()),
                    outbox.clone(),
                )
                .await?;
            return Ok(Target::Relayed(frames));
        }
        crate::cluster::Route::Elsewhere { node_id, public_url } => {
            return Err(crate::cluster::Route::elsewhere_error(&node_id, &public_url));
        }
    }
    span.record("participant_id", req.participant_id.as_str());
    let (reply, answer) = oneshot::channel();
    state
        .live
        .send_here(
            &services,
            &meeting,
            Command::Join {
                req,
                outbox: outbox.clone(),
                reply,
            },
        )
        .await;
    answer
        .await
        .map_err(|_| Error::new(ErrorCode::Internal, "the meeting stopped"))??;
    Ok(Target::Local(meeting_id))
}

async fn read_frames(
    state: &Arc<AppState>,
    conn: ConnId,
    target: &Target,
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
    outbox: &super::live::Outbox,
    close_with: &tokio::sync::watch::Sender<Option<CloseFrame>>,
    silence: Duration,
) -> Ended {
    let mut pace = TokenBucket::new(FRAME_BURST, FRAMES_PER_SEC, now_ms());
    let mut refused = 0u32;
    let mut shutdown = state.shutdown.clone();
    // A relayed session that ended (the owner ended it, or the relay broke) ends the socket.
    let relay_over = async {
        match target {
            Target::Relayed(frames) => frames.closed().await,
            Target::Local(_) => std::future::pending().await,
        }
    };
    tokio::pin!(relay_over);
    loop {
        let msg = tokio::select! {
            () = &mut relay_over => return Ended::ServerClosed,
            msg = tokio::time::timeout(silence, stream.next()) => match msg {
                Ok(msg) => msg,
                Err(_) => {
                    tracing::info!(silence_secs = silence.as_secs(), "signaling connection silent (no frame, no pong): taken as dropped");
                    return Ended::ClientGone;
                }
            },
            _ = shutdown.changed() => return Ended::ServerClosed,
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(_))) => {
                let _ = outbox.send(ServerMessage::error(
                    ErrorCode::MalformedJson,
                    "frames must be JSON text",
                ));
                refused += 1;
                continue;
            }
            Some(Err(e)) if is_too_large(&e) => {
                tracing::info!("frame over the hard limit; closing");
                close_with.send_replace(Some(too_big()));
                let e = frame_too_large();
                let _ = outbox.send(ServerMessage::error(e.code, e.message));
                return Ended::ServerClosed;
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ended::ClientGone,
            Some(Ok(_)) => continue,
        };
        if !pace.try_take(now_ms()) {
            refused += 1;
            if refused > MAX_REFUSED {
                tracing::warn!("frame flood; cutting the connection off");
                close_with.send_replace(Some(CloseFrame {
                    code: CLOSE_POLICY,
                    reason: Utf8Bytes::from_static("too many frames"),
                }));
                let _ = outbox.send(ServerMessage::error(
                    ErrorCode::RateLimited,
                    "too many frames; disconnecting",
                ));
                return Ended::ServerClosed;
            }
            let _ = outbox.send(ServerMessage::error(
                ErrorCode::RateLimited,
                "too many frames; slow down",
            ));
            continue;
        }
        tracing::debug!(frame = frame_type(&text), "frame in");
        match parse_client_message(&text) {
            Ok(msg) => match target {
                Target::Local(meeting_id) => {
                    if !state.live.send_if_live(meeting_id, Command::Frame { conn, msg }).await {
                        return Ended::ServerClosed;
                    }
                }
                Target::Relayed(frames) => {
                    if frames.send(text.as_str().to_owned()).await.is_err() {
                        return Ended::ServerClosed;
                    }
                }
            },
            Err(e) => {
                let _ = outbox.send(ServerMessage::error(e.code, e.message));
            }
        }
    }
}

/// Whether a read failed on a frame over [`HARD_FRAME_LIMIT`]. The socket library's
/// capacity error is only reachable through its text ("Space limit exceeded: Message too
/// long: N > M"); `tests/http_hardening.rs` sends such a frame, so a change shows there.
fn is_too_large(e: &axum::Error) -> bool {
    e.to_string().starts_with("Space limit exceeded")
}

fn frame_too_large() -> Error {
    Error::new(
        ErrorCode::FrameTooLarge,
        format!("frames are limited to {HARD_FRAME_LIMIT} bytes; closing"),
    )
}

fn too_big() -> CloseFrame {
    CloseFrame {
        code: CLOSE_TOO_BIG,
        reason: Utf8Bytes::from_static("frame too large"),
    }
}

// The soft limit (error frame, socket goes on) must sit below the hard one (socket ends).
const _: () = assert!(MAX_FRAME_BYTES < HARD_FRAME_LIMIT);
