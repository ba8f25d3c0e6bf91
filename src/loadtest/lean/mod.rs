//! The lean engine (`gatehouse loadtest --engine lean`): participants whose media is driven
//! from `rtc`'s sans-IO core, many connections on one UDP socket per engine thread, as the
//! gateway's shards drive theirs ([`engine`]). Signaling is the real protocol over a
//! WebSocket per participant (join, admitted, publish offer and answer, subscribe offers
//! and answers; docs/PROTOCOL.md), here; ICE, DTLS and SRTP are `rtc`'s, on the engine
//! thread. A client core then costs about what the gateway spends on the same packets
//! (both run `rtc`; measured in docs/BENCHMARKS.md §3), about half of what the SDK engine
//! (async `webrtc` peers, a socket and tasks per connection) costs, which saturated its own
//! core before the gateway's; `--client-threads` adds cores.
//!
//! Each connection has its own loopback address on its engine's socket (the gateway tells
//! connections apart by address), so the lean engine loads a gateway on this machine.

pub mod engine;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use futures_util::{FutureExt, SinkExt, StreamExt};
use gatehouse_sdk::TlsOptions;
use gatehouse_sdk::synthetic::SyntheticConfig;
use gatehouse_sdk::tls::{client_config, install_crypto_provider};
use gatehouse_signaling::ErrorCode;
use gatehouse_signaling::protocol::{
    ClientMessage, MeetingId, PROTOCOL_VERSION, PublishedTrack, ServerMessage, TrackId, TrackKind, TrackSource,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tracing::{Instrument, debug, info_span};

use super::participant::{CLOSE_TIMEOUT, JOIN_TIMEOUT, Probe, stopped};
use super::scenario::{Role, Seat};
use engine::{Command, Member, Sent};

/// Connections each engine thread's addresses are spaced by (thread `k` hands out from
/// `k * ADDRESSES_PER_THREAD`), so no two threads give out the same address.
const ADDRESSES_PER_THREAD: u32 = 100_000;
/// Receive buffer asked for on each engine socket (the kernel caps it at `net.core.rmem_max`).
const RECV_BUFFER: usize = 8 << 20;

/// What every lean participant shares.
pub struct LeanSetup {
    /// The gateway, `https://host:port`.
    pub url: String,
    /// The staff token everyone joins with.
    pub token: String,
    /// Which certificates to trust.
    pub tls: TlsOptions,
    /// Audio each publisher sends.
    pub audio: Option<SyntheticConfig>,
    /// Video each publisher sends.
    pub video: Option<SyntheticConfig>,
}

/// The running engine threads.
pub struct LeanEngine {
    commands: Vec<mpsc::UnboundedSender<Command>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// The engine threads' kernel ids, for their CPU time in `/proc/self/task`.
    tids: Arc<Mutex<Vec<i32>>>,
    /// The engine sockets' ports, for their drops in `/proc/net/udp`.
    pub ports: Vec<u16>,
    /// The gateway's media addresses its datagrams came from.
    gateways: Arc<Mutex<std::collections::BTreeSet<std::net::SocketAddr>>>,
    next_member: AtomicU64,
}

impl LeanEngine {
    /// Starts `threads` engine threads, each with its socket on the wildcard address;
    /// `precise`: each frame leaves at its own time (`Options::precise_sends`).
    pub fn start(threads: usize, precise: bool) -> anyhow::Result<LeanEngine> {
        let tids = Arc::new(Mutex::new(Vec::new()));
        let mut engine = LeanEngine {
            commands: Vec::new(),
            threads: Vec::new(),
            tids: tids.clone(),
            ports: Vec::new(),
            gateways: Arc::default(),
            next_member: AtomicU64::new(0),
        };
        for k in 0..threads.max(1) {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
            let _ = socket.set_recv_buffer_size(RECV_BUFFER);
            let _ = socket.set_send_buffer_size(RECV_BUFFER);
            socket.set_nonblocking(true)?;
            socket
                .bind(&std::net::SocketAddr::from(([0, 0, 0, 0], 0)).into())
                .context("binding a lean engine socket")?;
            let socket: std::net::UdpSocket = socket.into();
            engine.ports.push(socket.local_addr()?.port());
            let (tx, rx) = mpsc::unbounded_channel();
            let tids = tids.clone();
            let gateways = engine.gateways.clone();
            let thread = std::thread::Builder::new()
                .name(format!("lean-engine-{k}"))
                .spawn(move || {
                    #[cfg(target_os = "linux")]
                    // SAFETY: gettid has no preconditions.
                    tids.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(unsafe { libc::gettid() });
                    engine::run(socket, rx, k as u32 * ADDRESSES_PER_THREAD, gateways, precise);
                })?;
            engine.commands.push(tx);
            engine.threads.push(thread);
        }
        Ok(engine)
    }

    /// The gateway's media ports seen so far (its sockets, on this machine).
    pub fn gateway_ports(&self) -> Vec<u16> {
        let gateways = self.gateways.lock().unwrap_or_else(|p| p.into_inner());
        let mut ports: Vec<u16> = gateways.iter().map(|a| a.port()).collect();
        ports.dedup();
        ports
    }

    /// The engine threads' kernel thread ids.
    pub fn thread_ids(&self) -> Vec<i32> {
        self.tids.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A new participant's key and the thread its connections live on.
    fn member(&self) -> (Member, mpsc::UnboundedSender<Command>) {
        let member = self.next_member.fetch_add(1, Ordering::Relaxed);
        let thread = (member as usize) % self.commands.len();
        (member, self.commands[thread].clone())
    }

    /// Stops the threads (their connections are closed) and waits for them.
    pub fn stop(mut self) {
        self.commands.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Runs one lean participant until `stop`: joins over the WebSocket, publishes through its
/// engine, answers the gateway's subscriber offers, then leaves. Once `quiet` turns true (an
/// idle run's steady phase) it stops sending and announces its tracks muted, and stays.
/// Returns the packets and bytes it sent; everything else is in its probe.
pub(crate) async fn run(
    setup: Arc<LeanSetup>,
    engine: Arc<LeanEngine>,
    seat: Seat,
    meeting_id: String,
    probe: Arc<Probe>,
    mut stop: watch::Receiver<bool>,
    quiet: watch::Receiver<bool>,
) -> (u64, u64) {
    let span = info_span!("loadtest", %meeting_id, slot = seat.slot, engine = "lean");
    async move {
        let (member, commands) = engine.member();
        let sent = Arc::new(Sent::default());
        let mut stop_call = stop.clone();
        let outcome = tokio::select! {
            r = in_call(&setup, &commands, member, seat, meeting_id, &probe, &sent, &mut stop_call, quiet) => r,
            () = stopped(&mut stop) => Ok(()),
        };
        // Its own failure first: once stopping, the probe takes errors as teardown's.
        if let Err(e) = outcome {
            probe.fail(e);
        }
        probe.stopping();
        let _ = commands.send(Command::Remove { member });
        (sent.packets.load(Ordering::Relaxed), sent.bytes.load(Ordering::Relaxed))
    }
    .instrument(span)
    .await
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send(socket: &mut Socket, message: &ClientMessage) -> Result<(), String> {
    let text = serde_json::to_string(message).map_err(|e| e.to_string())?;
    socket
        .send(Message::text(text))
        .await
        .map_err(|e| format!("signaling send failed: {e}"))
}

/// Asks the engine and waits for its reply.
async fn ask<T>(
    commands: &mpsc::UnboundedSender<Command>,
    make: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Command,
) -> Result<T, String> {
    let (reply, answer) = oneshot::channel();
    commands
        .send(make(reply))
        .map_err(|_| "the lean engine stopped".to_owned())?;
    answer.await.map_err(|_| "the lean engine stopped".to_owned())?
}

/// From the socket to the stop; `Err` is the participant's failure.
#[allow(clippy::too_many_arguments)]
async fn in_call(
    setup: &LeanSetup,
    commands: &mpsc::UnboundedSender<Command>,
    member: Member,
    seat: Seat,
    meeting_id: String,
    probe: &Arc<Probe>,
    sent: &Arc<Sent>,
    stop: &mut watch::Receiver<bool>,
    mut quiet: watch::Receiver<bool>,
) -> Result<(), String> {
    install_crypto_provider();
    let ws_url = gatehouse_sdk::websocket_url(&setup.url).map_err(|e| e.to_string())?;
    let connector = client_config(&setup.tls)
        .map_err(|e| e.to_string())?
        .map(|config| tokio_tungstenite::Connector::Rustls(Arc::new(config)));
    let connect = tokio_tungstenite::connect_async_tls_with_config(ws_url.as_str(), None, true, connector);
    let (mut socket, _) = tokio::time::timeout(JOIN_TIMEOUT, connect)
        .await
        .map_err(|_| "join failed: no WebSocket within 15 s".to_owned())?
        .map_err(|e| format!("join failed: {e}"))?;
    let join = ClientMessage::Join {
        protocol: PROTOCOL_VERSION,
        token: setup.token.clone(),
        meeting_id: Some(MeetingId::from(meeting_id)),
    };
    probe.join_sent(gatehouse_sdk::now_us());
    send(&mut socket, &join).await?;
    let mut me = None;
    let joined = async {
        while let Some(frame) = socket.next().await {
            let Ok(Message::Text(text)) = frame else { continue };
            match serde_json::from_str::<ServerMessage>(&text) {
                Ok(ServerMessage::Joined { you, .. }) => me = Some(you.participant_id),
                Ok(ServerMessage::Admitted { .. }) => return Ok(()),
                Ok(ServerMessage::Lobby { status, .. }) => {
                    return Err(format!(
                        "put in the lobby ({status:?}): the meeting's lobby bypass does not let this token's staff in"
                    ));
                }
                Ok(ServerMessage::Left { reason, message }) => {
                    return Err(format!(
                        "left before admission: {reason:?} {}",
                        message.unwrap_or_default()
                    ));
                }
                Ok(ServerMessage::Error { code, message }) => {
                    return Err(format!("join failed: {code:?}: {message}"));
                }
                _ => {}
            }
        }
        Err("disconnected before admission".to_owned())
    };
    tokio::time::timeout(JOIN_TIMEOUT, joined)
        .await
        .map_err(|_| "not admitted within 15 s".to_owned())??;
    probe.admitted();

    if seat.role == Role::Publisher {
        let (audio, video) = (setup.audio.clone(), setup.video.clone());
        let (sdp, mids) = ask(commands, |reply| Command::Publish {
            member,
            probe: probe.clone(),
            audio,
            video,
            sent: sent.clone(),
            reply,
        })
        .await
        .map_err(|e| format!("publishing failed: {e}"))?;
        let tracks = mids
            .into_iter()
            .map(|(kind, mid)| PublishedTrack {
                mid,
                source: if kind == TrackKind::Audio {
                    TrackSource::Microphone
                } else {
                    TrackSource::Camera
                },
                muted: false,
            })
            .collect();
        send(&mut socket, &ClientMessage::PublishOffer { sdp, tracks }).await?;
    }

    // Its own tracks, by the gateway's ids (for muting them once quiet).
    let mut own_tracks = Vec::new();
    let mut quieted = false;
    let result = loop {
        let frame = tokio::select! {
            f = socket.next() => f,
            () = stopped(stop) => break Ok(()),
            Ok(()) = quiet.wait_for(|q| *q).map(|r| r.map(|_| ())), if !quieted => {
                // An idle run: no more media from here on, as a client that stopped its
                // microphone and camera says so.
                quieted = true;
                let _ = commands.send(Command::Quiet { member });
                for track_id in &own_tracks {
                    let mute = ClientMessage::MuteTrack { track_id: TrackId::clone(track_id), muted: true };
                    send(&mut socket, &mute).await?;
                }
                continue;
            }
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => break Err("signaling disconnected".to_owned()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => break Err(format!("signaling disconnected: {e}")),
        };
        let Ok(message) = serde_json::from_str::<ServerMessage>(&text) else {
            continue;
        };
        match message {
            ServerMessage::TrackPublished { track } if me.as_ref() == Some(&track.participant_id) => {
                if quieted {
                    let mute = ClientMessage::MuteTrack {
                        track_id: track.track_id.clone(),
                        muted: true,
                    };
                    send(&mut socket, &mute).await?;
                }
                own_tracks.push(track.track_id);
            }
            ServerMessage::PublishAnswer { sdp } => {
                let _ = commands.send(Command::PublishAnswer { member, sdp });
            }
            ServerMessage::SubscribeOffer { sdp, .. } => {
                let answer = ask(commands, |reply| Command::SubscribeOffer {
                    member,
                    probe: probe.clone(),
                    sdp,
                    reply,
                })
                .await;
                match answer {
                    Ok(sdp) => send(&mut socket, &ClientMessage::SubscribeAnswer { sdp }).await?,
                    Err(e) => break Err(format!("answering a subscribe offer failed: {e}")),
                }
            }
            ServerMessage::Error { code, message } => {
                if code == ErrorCode::MediaStateError || code == ErrorCode::NotInCall {
                    break Err(format!("media refused by the gateway: {message}"));
                }
                debug!(?code, %message, "gateway error");
            }
            ServerMessage::Left { reason, message } => {
                break Err(format!(
                    "removed from the call: {reason:?} {}",
                    message.unwrap_or_default()
                ));
            }
            _ => {}
        }
    };
    // Leave politely either way (a closed socket ignores it).
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        let _ = send(&mut socket, &ClientMessage::Leave).await;
        let _ = socket.close(None).await;
    })
    .await;
    result
}
