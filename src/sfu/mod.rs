//! The media plane: an SFU that drives webrtc-rs's sans-IO core (`rtc`) from
//! UDP sockets we own (see docs/ARCHITECTURE.md, "Media plane").
//!
//! [`Sfu`] is the async handle the signaling socket (`server::ws`) talks to. It
//! places each meeting's participants on shards ([`shard`]: a thread with its own
//! socket, timers and connections) and sends them commands; media leaves a shard
//! only for another shard holding part of the same meeting ([`relay`]). Each
//! participant has a publisher connection (client offers) and a subscriber
//! connection (server offers), see [`media_room`].
//!
//! Inside a shard: [`media_room`] is the pure media meaning of a meeting (inputs
//! in, effects out, unit-tested without sockets), [`peers`] the connections and
//! their socket (every `rtc` call guarded), [`shard`] the loop that joins them.
//! Nothing imports `shard` back.
//!
//! A shard thread that dies anyway (a panic outside the guards) is detected:
//! its meetings' placements are released, its connections leave the live
//! count, and new meetings go to the shards still running.
//!
//! Shards each bind their own port: shard `i` binds `bind.port() + i` (or an
//! ephemeral port each when the port is 0). A participant's connections live on
//! one shard, so a client only ever talks to that shard's port, which is the one
//! in the candidates it is given. No `SO_REUSEPORT`: the kernel's 4-tuple hashing
//! would spread one participant's connections across shards.
//!
//! A meeting lives on one shard until it has [`SfuConfig::split_at`] participants
//! there; then it spreads ([`placement`]): each shard holding part of it has its own
//! room, and the publishers' packets are relayed once per track to the others
//! ([`relay`], `media_room::mirror`), so one webinar uses every core.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use gatehouse_signaling::protocol::{MediaMessage, MeetingId, ParticipantId, ParticipantKind, TrackInfo};
use gatehouse_signaling::{Error, ErrorCode};
use tokio::sync::{mpsc, oneshot};

#[doc(hidden)]
pub mod benching;
pub mod bwe;
pub mod coalesce;
mod connection;
pub mod demux;
pub mod dynacast;
pub mod forward;
#[doc(hidden)]
pub mod fuzzing;
mod ice_lite;
mod idmap;
pub mod junk;
pub mod layer_rtx;
pub mod media_room;
pub mod nack;
pub mod own_inbound;
pub mod own_rtcp;
pub mod own_srtp;
mod peers;
pub mod placement;
pub mod probe;
pub mod quality;
mod reaper;
pub mod receipts;
pub mod relay;
pub mod remb;
pub mod retransmit;
#[doc(hidden)]
pub mod rtc_client;
pub mod rtcp;
pub mod rtcp_view;
pub mod rtp_parse;
pub mod sender_reports;
mod shard;
pub mod speaker;
pub mod srtp_gcm;
pub mod srtp_keys;
mod stamp;
pub mod stats;
mod tcp;
pub mod temporal;
mod timers;
pub mod twcc_feedback;
/// Batched socket I/O; public for the lean load tester's client side (`loadtest::lean`).
#[doc(hidden)]
pub mod udp;
pub mod vp8;

pub use crate::outbox::Outbox;
pub use stats::{Counters, CountersSnapshot};

use peers::Peers;
use shard::{Command, Shard};

/// The gateway's default log filter (`RUST_LOG` replaces it). `rtc` logs a WARN per
/// refused packet (SRTP replays and authentication failures, a check that fails
/// MESSAGE-INTEGRITY, a datagram its ICE agent cannot decode) and per DTLS
/// handshake: under load, or from a participant sending junk, that flood costs CPU
/// when it is scarcest and buries the log. The demultiplexer drops junk before `rtc`
/// sees it and counts and logs it at a bounded rate (see [`junk`]); what `rtc`
/// still refuses is only logged at ERROR.
pub const DEFAULT_LOG_FILTER: &str =
    "info,webrtc=warn,rtc=warn,rtc::peer_connection::handler=error,rtc_dtls=error,rtc_ice=error";

/// Commands queued per shard. A full queue makes the signaling side wait
/// (backpressure on the WebSocket readers), it never drops a command.
const SHARD_QUEUE: usize = 1024;

/// How the media plane binds and what it tells clients.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// The UDP address media uses, e.g. `0.0.0.0:3478` (tests: `127.0.0.1:0`).
    /// Shard `i` binds port `bind.port() + i`; with port 0 each shard gets an ephemeral port.
    pub bind: SocketAddr,
    /// The address advertised in our host candidate when behind 1:1 NAT. Needed
    /// whenever `bind` is a wildcard address (its IP is no use to a client).
    pub public_ip: Option<IpAddr>,
    /// The TCP address for ICE over TCP (one port for every shard), or `None` to
    /// offer UDP only. Port 0 takes an ephemeral port.
    pub tcp_bind: Option<SocketAddr>,
    /// Number of single-threaded shards (0 = one per core).
    pub shards: usize,
    /// Share of forwarded packets to drop on purpose, in [0, 1]. A test hook for
    /// loss measurements (the load tester); 0 in production.
    pub drop_probability: f64,
    /// Participants of one meeting a shard takes before the meeting spreads to other
    /// shards (`placement`; at least 1). Only matters with more than one shard.
    pub split_at: usize,
    /// The longest a shard pauses after a turn to let datagrams gather (`coalesce`); zero: never.
    pub coalesce: std::time::Duration,
}

/// [`SfuConfig::split_at`] by default: a meeting of up to this many participants stays on
/// one shard (one core forwards a few hundred thousand packets a second, BENCHMARKS §3).
pub const DEFAULT_SPLIT_AT: usize = 100;

impl SfuConfig {
    /// Loopback, ephemeral port, one shard: what tests want.
    pub fn loopback() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            tcp_bind: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            public_ip: None,
            shards: 1,
            drop_probability: 0.0,
            split_at: DEFAULT_SPLIT_AT,
            coalesce: coalesce::DEFAULT_WINDOW,
        }
    }
}

/// What the SFU needs to know about a participant entering the call.
#[derive(Debug, Clone)]
pub struct MediaParticipant {
    pub meeting_id: MeetingId,
    pub participant_id: ParticipantId,
    pub kind: ParticipantKind,
    /// Whether this participant may publish a `screen` track.
    pub may_present: bool,
}

/// What one shard hosts ([`Sfu::hosting`]; tests check nothing is left behind).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hosting {
    /// The meetings it has a room for, sorted.
    pub meetings: Vec<MeetingId>,
    /// Its rooms, and its meetings by their number on every shard (what relayed items find
    /// them by): as many as `meetings` each, unless one leaked.
    pub rooms: usize,
    pub keys: usize,
}

/// Handle to the running media plane. Cheap to clone. The shards stop when
/// the last clone is dropped (each closes all its connections first).
#[derive(Clone)]
pub struct Sfu {
    inner: Arc<Inner>,
}

struct ShardHandle {
    commands: mpsc::Sender<Command>,
    /// Set to false when the shard thread ends for any reason but a shutdown.
    alive: Arc<tokio::sync::watch::Sender<bool>>,
    /// This shard's counters and live connections (summed when read).
    counters: Arc<Counters>,
    live: Arc<AtomicUsize>,
    /// The address clients send media to (the advertised one).
    media_addr: SocketAddr,
    /// The address actually bound.
    bound: SocketAddr,
}

/// Where a meeting lives: who of it is in the call, on which shard (a participant added
/// twice, a reconnect, is counted once and stays on its shard). Usually one shard; a meeting
/// larger than [`SfuConfig::split_at`] spreads over several (`placement`, `relay`).
struct Placement {
    /// Its number on every shard (`relay::MeetingKey`).
    key: relay::MeetingKey,
    participants: HashMap<ParticipantId, usize>,
    counters: Arc<Counters>,
    /// Counts the changes of the set of shards holding the meeting (`relay::PeersVersion`):
    /// each `Command::Peers` carries the number of the set it tells.
    version: relay::PeersVersion,
}

impl Placement {
    /// The shards holding part of the meeting, in order.
    fn shards(&self) -> Vec<usize> {
        let mut shards: Vec<usize> = self.participants.values().copied().collect();
        shards.sort_unstable();
        shards.dedup();
        shards
    }
}

struct Inner {
    shards: Vec<ShardHandle>,
    /// Meeting to shard. One mutex, not a concurrent map: placing a new meeting reads the
    /// load of every placement and inserts in one step, which a sharded map cannot do
    /// atomically; it is taken once per join, leave and media frame, never per packet.
    placements: Mutex<HashMap<MeetingId, Placement>>,
    /// The bound ICE-TCP address, when on.
    tcp_bound: Option<SocketAddr>,
    /// See [`SfuConfig::split_at`].
    split_at: usize,
    /// The next meeting's [`Placement::key`].
    next_key: std::sync::atomic::AtomicU64,
    /// Who enters and leaves a meeting's call is changed under its stripe of these, held
    /// from the placement to the shards hearing which others hold the meeting: the shards
    /// hear the changes of one meeting's spread in the order they were made.
    membership: Vec<tokio::sync::Mutex<()>>,
}

/// Stripes of [`Inner::membership`] (meetings hashed onto them).
const MEMBERSHIP_STRIPES: usize = 64;

/// Marks a shard dead when its thread ends other than by a shutdown, panics included.
struct Lifeline {
    index: usize,
    alive: Arc<tokio::sync::watch::Sender<bool>>,
    live: Arc<AtomicUsize>,
    clean: bool,
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        if !self.clean {
            tracing::error!(
                shard = self.index,
                "media shard stopped unexpectedly; its meetings are released"
            );
            // Its connections are gone with it.
            self.live.store(0, Ordering::Relaxed);
            self.alive.send_replace(false);
        }
    }
}

/// Socket buffer size asked for (the kernel caps it at `net.core.rmem_max` /
/// `wmem_max`): a burst of joins or a stalled turn must not overflow the
/// default ~200 KB, which is a few hundred datagrams.
const MEDIA_SOCKET_BUFFER: usize = 4 << 20;

fn bind_media_socket(bind: SocketAddr) -> anyhow::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(MEDIA_SOCKET_BUFFER) {
        tracing::warn!(%bind, "cannot enlarge the media receive buffer: {e}");
    }
    if let Err(e) = socket.set_send_buffer_size(MEDIA_SOCKET_BUFFER) {
        tracing::warn!(%bind, "cannot enlarge the media send buffer: {e}");
    }
    socket
        .bind(&bind.into())
        .map_err(|e| anyhow::anyhow!("binding the media socket {bind}: {e}"))?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

fn shard_gone() -> Error {
    Error::new(ErrorCode::Internal, "the media plane has stopped")
}

impl Sfu {
    /// Binds the media socket(s) and starts the shard threads.
    pub fn start(config: SfuConfig) -> anyhow::Result<Sfu> {
        let shards = if config.shards == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            config.shards
        };
        if config.bind.ip().is_unspecified() && config.public_ip.is_none() {
            tracing::warn!(
                bind = %config.bind,
                "media bound to a wildcard address without a public_ip: clients are given an unusable candidate"
            );
        }
        // ICE-TCP: one listener, bound before any shard starts (a taken port fails start-up).
        let tcp_listener = config
            .tcp_bind
            .map(|bind| {
                let listener = std::net::TcpListener::bind(bind)
                    .map_err(|e| anyhow::anyhow!("binding the media TCP port {bind}: {e}"))?;
                listener.set_nonblocking(true)?;
                anyhow::Ok(listener)
            })
            .transpose()?;
        let tcp_bound = tcp_listener.as_ref().map(|l| l.local_addr()).transpose()?;
        let tcp_advertised =
            tcp_bound.map(|bound| SocketAddr::new(config.public_ip.unwrap_or(bound.ip()), bound.port()));
        let directory = tcp::Directory::default();
        // Every shard's inbound relay queue, made first: each shard gets a sender to all.
        let (relay_senders, relay_receivers): (Vec<_>, Vec<_>) =
            (0..shards).map(|_| mpsc::channel(relay::QUEUE)).unzip();
        let mut relay_receivers = relay_receivers.into_iter();
        let mut tcp_queues = Vec::with_capacity(shards);
        let mut handles = Vec::with_capacity(shards);
        for index in 0..shards {
            let mut bind = config.bind;
            if bind.port() != 0 {
                let port = bind
                    .port()
                    .checked_add(u16::try_from(index)?)
                    .ok_or_else(|| anyhow::anyhow!("media port range overflows at shard {index}"))?;
                bind.set_port(port);
            }
            let std_socket = bind_media_socket(bind)?;
            let bound = std_socket.local_addr()?;
            let media_addr = SocketAddr::new(config.public_ip.unwrap_or(bound.ip()), bound.port());
            let (tx, rx) = mpsc::channel(SHARD_QUEUE);
            let (tcp_tx, tcp_rx) = mpsc::channel(tcp::SHARD_TCP_QUEUE);
            let tcp_side = tcp_advertised.map(|advertised| peers::TcpSide {
                advertised,
                directory: directory.clone(),
                events: tcp_tx.clone(),
            });
            tcp_queues.push(tcp_tx);
            let alive = Arc::new(tokio::sync::watch::Sender::new(true));
            let counters = Arc::new(Counters::default());
            let live = Arc::new(AtomicUsize::new(0));
            let lifeline = Lifeline {
                index,
                alive: alive.clone(),
                live: live.clone(),
                clean: false,
            };
            let (shard_counters, shard_live, drop_probability, coalesce) =
                (counters.clone(), live.clone(), config.drop_probability, config.coalesce);
            let relay_out = relay::Outgoing::new(index, relay_senders.clone());
            let relay_in = relay_receivers.next().expect("one receiver per shard");
            std::thread::Builder::new()
                .name(format!("sfu-shard-{index}"))
                .spawn(move || {
                    // Moved whole (not just the field set below), so it drops with the thread.
                    let mut lifeline = lifeline;
                    // I/O and timers only: no signal or process driver to look at on every park.
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_io()
                        .enable_time()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(e) => {
                            tracing::error!(shard = index, "cannot start the shard runtime: {e}");
                            return;
                        }
                    };
                    runtime.block_on(async move {
                        let socket = match tokio::net::UdpSocket::from_std(std_socket) {
                            Ok(socket) => socket,
                            Err(e) => {
                                tracing::error!(shard = index, "cannot register the media socket: {e}");
                                return;
                            }
                        };
                        let mut peers =
                            match Peers::new(index, socket, media_addr, shard_counters, shard_live, tcp_side) {
                                Ok(peers) => peers,
                                Err(e) => {
                                    tracing::error!(shard = index, "cannot set up the media socket: {e}");
                                    return;
                                }
                            };
                        peers.dice.set_probability(drop_probability);
                        Shard::new(index, peers)
                            .with_relay(relay_out)
                            .with_coalescing(coalesce)
                            .run(rx, tcp_rx, relay_in)
                            .await;
                    });
                    lifeline.clean = true;
                })?;
            tracing::info!(shard = index, %bound, advertised = %media_addr, "media shard started");
            handles.push(ShardHandle {
                commands: tx,
                alive,
                counters,
                live,
                media_addr,
                bound,
            });
        }
        if let (Some(listener), Some(advertised)) = (tcp_listener, tcp_advertised) {
            std::thread::Builder::new().name("sfu-tcp".into()).spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        tracing::error!("cannot start the media TCP runtime: {e}");
                        return;
                    }
                };
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => tcp::accept_loop(listener, directory, tcp_queues).await,
                        Err(e) => tracing::error!("cannot register the media TCP listener: {e}"),
                    }
                });
            })?;
            tracing::info!(bound = ?tcp_bound, %advertised, "media TCP (ICE-TCP) listening");
        }
        Ok(Sfu {
            inner: Arc::new(Inner {
                shards: handles,
                placements: Mutex::new(HashMap::new()),
                tcp_bound,
                split_at: config.split_at.max(1),
                next_key: std::sync::atomic::AtomicU64::new(1),
                membership: (0..MEMBERSHIP_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            }),
        })
    }

    /// The bound media address of the first shard (after resolving port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.shards[0].bound
    }

    /// The bound ICE-TCP address (one for every shard), when ICE-TCP is on.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.inner.tcp_bound
    }

    /// Every shard's bound media address, in shard order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner.shards.iter().map(|s| s.bound).collect()
    }

    /// The addresses clients are told to send media to (public IP when configured).
    pub fn media_addrs(&self) -> Vec<SocketAddr> {
        self.inner.shards.iter().map(|s| s.media_addr).collect()
    }

    fn placements(&self) -> std::sync::MutexGuard<'_, HashMap<MeetingId, Placement>> {
        self.inner
            .placements
            .lock()
            .expect("placement lock is never poisoned: no panics inside")
    }

    /// A shard holding part of a meeting (the one with most of it). A placement on a shard
    /// that died is released here (with every other placement on it).
    fn placement(&self, meeting_id: &str) -> Option<usize> {
        let mut placements = self.placements();
        self.release_dead(&mut placements);
        let p = placements.get(meeting_id)?;
        let shards = p.shards();
        shards.iter().copied().max_by_key(|&s| {
            (
                p.participants.values().filter(|&&x| x == s).count(),
                std::cmp::Reverse(s),
            )
        })
    }

    /// The shard a participant in a meeting's call is on.
    fn participant_shard(&self, meeting_id: &str, participant_id: &str) -> Option<usize> {
        let mut placements = self.placements();
        self.release_dead(&mut placements);
        placements.get(meeting_id)?.participants.get(participant_id).copied()
    }

    /// The shard a participant entering a meeting's call goes to (`None`: no shard runs): the
    /// one it is on when it is in the call already (back on a new socket: where its media
    /// state is), else `placement::choose`'s.
    fn shard_for(
        &self,
        placements: &HashMap<MeetingId, Placement>,
        meeting_id: &str,
        participant_id: &str,
    ) -> Option<usize> {
        let placement = placements.get(meeting_id);
        if let Some(&shard) = placement.and_then(|p| p.participants.get(participant_id)) {
            return Some(shard);
        }
        let n = self.inner.shards.len();
        let mut total = vec![0usize; n];
        for p in placements.values() {
            for &s in p.participants.values() {
                total[s] += 1;
            }
        }
        let mut meeting = vec![0usize; n];
        for &s in placement.iter().flat_map(|p| p.participants.values()) {
            meeting[s] += 1;
        }
        let alive: Vec<bool> = (0..n).map(|i| self.shard_alive(i)).collect();
        placement::choose(placement::Loads {
            meeting: &meeting,
            total: &total,
            alive: &alive,
            split_at: self.inner.split_at,
        })
    }

    /// The lock under which a meeting's membership changes ([`Inner::membership`]).
    async fn membership(&self, meeting_id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        // Fixed keys: the same meeting always maps to the same stripe.
        let mut hasher = std::hash::DefaultHasher::new();
        meeting_id.hash(&mut hasher);
        let stripe = (hasher.finish() % MEMBERSHIP_STRIPES as u64) as usize;
        self.inner.membership[stripe].lock().await
    }

    /// Forgets every participant on a dead shard (and meetings left with none): those
    /// participants start afresh on a live shard. The shards still holding part of a meeting
    /// that was spread over the dead one forget its mirrors. This runs outside the meeting's
    /// membership lock, so what it tells may overtake the set of a change being told: the
    /// set's number (`Placement::version`) lets the shards keep the newer.
    fn release_dead(&self, placements: &mut HashMap<MeetingId, Placement>) {
        let shards = &self.inner.shards;
        for (meeting_id, p) in placements.iter_mut() {
            let before = p.participants.len();
            p.participants.retain(|_, s| *shards[*s].alive.borrow());
            if p.participants.len() == before || p.participants.is_empty() {
                continue;
            }
            p.version += 1;
            let holders = p.shards();
            for &shard in &holders {
                let command = Command::Peers {
                    meeting_id: meeting_id.as_str().to_owned(),
                    key: p.key,
                    peers: holders.clone(),
                    version: p.version,
                };
                match shards[shard].commands.try_send(command) {
                    Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                    // Not lost for a full queue, which would leave the dead shard's mirrors on
                    // this one: sent when there is room (numbered, so coming after a newer set
                    // does no harm; the key keeps it from a later room of the meeting).
                    Err(mpsc::error::TrySendError::Full(command)) => match tokio::runtime::Handle::try_current() {
                        Ok(runtime) => {
                            let commands = shards[shard].commands.clone();
                            runtime.spawn(async move {
                                let _ = commands.send(command).await;
                            });
                        }
                        Err(_) => {
                            tracing::warn!(shard, %meeting_id, "could not tell a shard that a dead shard left the meeting")
                        }
                    },
                }
            }
        }
        placements.retain(|_, p| !p.participants.is_empty());
    }

    /// Tells every shard holding part of a meeting (`key`) which others do (after a change;
    /// the set numbered `version`).
    async fn tell_peers(
        &self,
        meeting_id: &str,
        key: relay::MeetingKey,
        shards: &[usize],
        version: relay::PeersVersion,
    ) {
        for &shard in shards {
            let command = Command::Peers {
                meeting_id: meeting_id.to_owned(),
                key,
                peers: shards.to_vec(),
                version,
            };
            let _ = self.inner.shards[shard].commands.send(command).await;
        }
    }

    /// Whether shard `index` is running (false after it died; tests and the debug endpoint).
    pub fn shard_alive(&self, index: usize) -> bool {
        self.inner.shards.get(index).is_some_and(|s| *s.alive.borrow())
    }

    async fn ask<T>(&self, shard: usize, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.inner.shards[shard].commands.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    /// A participant entered the call. From now on the SFU sends it media
    /// messages (`subscribe_offer`, `publish_answer`, `ice_candidate`,
    /// `track_published`, ...) through `outbox`.
    pub async fn add_participant(&self, participant: MediaParticipant, outbox: Outbox) -> Result<(), Error> {
        self.enter(participant, outbox, None).await
    }

    /// A participant entered the call after being told `told` of the meeting's tracks (its
    /// `admitted`, from [`tracks`](Self::tracks)): as [`add_participant`](Self::add_participant),
    /// and first of all it hears how the tracks of the room it enters differ from `told`
    /// (published or unpublished meanwhile, a mute; `MediaRoom::tell_entering`). In a meeting
    /// spread over shards, `tracks` answers from one shard and the participant may enter
    /// another, whose mirrors lag or lead by a relay turn: its list still ends up as its room's.
    pub async fn enter_call(
        &self,
        participant: MediaParticipant,
        outbox: Outbox,
        told: Vec<TrackInfo>,
    ) -> Result<(), Error> {
        self.enter(participant, outbox, Some(told)).await
    }

    async fn enter(
        &self,
        participant: MediaParticipant,
        outbox: Outbox,
        told: Option<Vec<TrackInfo>>,
    ) -> Result<(), Error> {
        let _membership = self.membership(&participant.meeting_id).await;
        let (shard, counters, key, spread) = {
            let mut placements = self.placements();
            self.release_dead(&mut placements);
            let Some(shard) = self.shard_for(&placements, &participant.meeting_id, &participant.participant_id) else {
                return Err(shard_gone());
            };
            let placement = placements
                .entry(participant.meeting_id.clone())
                .or_insert_with(|| Placement {
                    key: self.inner.next_key.fetch_add(1, Ordering::Relaxed),
                    participants: HashMap::new(),
                    counters: Arc::default(),
                    version: 0,
                });
            let before = placement.shards();
            placement.participants.insert(participant.participant_id.clone(), shard);
            let after = placement.shards();
            let spread = (after != before).then(|| {
                placement.version += 1;
                (after, placement.version)
            });
            (shard, placement.counters.clone(), placement.key, spread)
        };
        let result = self
            .ask(shard, |reply| Command::Add {
                participant: participant.clone(),
                outbox,
                meeting_stats: counters,
                meeting_key: key,
                told,
                reply,
            })
            .await
            .unwrap_or_else(|| Err(shard_gone()));
        if result.is_err() {
            self.release(&participant.meeting_id, &participant.participant_id).await;
        } else if let Some((shards, version)) = spread
            && shards.len() > 1
        {
            tracing::info!(meeting_id = %participant.meeting_id, ?shards, "meeting spread over shards");
            self.tell_peers(&participant.meeting_id, key, &shards, version).await;
        }
        result
    }

    /// One participant fewer in a meeting; forgets the meeting at zero. The shards still
    /// holding it hear when one stops holding it.
    async fn release(&self, meeting_id: &str, participant_id: &str) {
        let left = {
            let mut placements = self.placements();
            let Some(p) = placements.get_mut(meeting_id) else {
                return;
            };
            let before = p.shards();
            p.participants.remove(participant_id);
            let after = p.shards();
            if p.participants.is_empty() {
                placements.remove(meeting_id);
                None
            } else {
                (after != before).then(|| {
                    p.version += 1;
                    (after, p.key, p.version)
                })
            }
        };
        if let Some((shards, key, version)) = left {
            self.tell_peers(meeting_id, key, &shards, version).await;
        }
    }

    /// The tracks published in a meeting as the room a participant would enter now sees them
    /// (for its `admitted`; then [`enter_call`](Self::enter_call)): in a meeting spread over
    /// shards, the room of the shard it would be placed on, whose mirrors may lag another
    /// shard's by a relay turn (none when that shard holds none of the meeting yet: the
    /// participant hears of every track as its room mirrors it).
    pub async fn tracks_for(&self, meeting_id: &str, participant_id: &str) -> Vec<TrackInfo> {
        let shard = {
            let mut placements = self.placements();
            self.release_dead(&mut placements);
            if !placements.contains_key(meeting_id) {
                return Vec::new();
            }
            self.shard_for(&placements, meeting_id, participant_id)
        };
        let Some(shard) = shard else {
            return Vec::new();
        };
        let meeting_id = meeting_id.to_owned();
        self.ask(shard, |reply| Command::Tracks { meeting_id, reply })
            .await
            .unwrap_or_default()
    }

    /// The tracks currently published in a meeting (as the shard holding most of it sees them).
    pub async fn tracks(&self, meeting_id: &str) -> Vec<TrackInfo> {
        let Some(shard) = self.placement(meeting_id) else {
            return Vec::new();
        };
        let meeting_id = meeting_id.to_owned();
        self.ask(shard, |reply| Command::Tracks { meeting_id, reply })
            .await
            .unwrap_or_default()
    }

    /// A media message from a participant in the call: `publish_offer`,
    /// `subscribe_answer`, `ice_candidate`, `mute_track`, `set_subscription`.
    ///
    /// Errors: `not_in_call` (unknown meeting or participant), `invalid_sdp`,
    /// `invalid_candidate`, `presenting_not_allowed`, `media_state_error` (an
    /// answer with no offer outstanding), `not_found` (unknown track),
    /// `bad_request` (not a media message).
    pub async fn handle(&self, meeting_id: &str, participant_id: &str, message: MediaMessage) -> Result<(), Error> {
        let Some(shard) = self.participant_shard(meeting_id, participant_id) else {
            return Err(Error::new(ErrorCode::NotInCall, "not in the call"));
        };
        let (meeting_id, participant_id) = (meeting_id.to_owned(), participant_id.to_owned());
        self.ask(shard, |reply| Command::Handle {
            meeting_id,
            participant_id,
            message,
            reply,
        })
        .await
        .unwrap_or_else(|| Err(shard_gone()))
    }

    /// The participant left the call: close its connections, unpublish its tracks.
    pub async fn remove_participant(&self, meeting_id: &str, participant_id: &str) {
        let _membership = self.membership(meeting_id).await;
        let Some(shard) = self.participant_shard(meeting_id, participant_id) else {
            return;
        };
        let (m, p) = (meeting_id.to_owned(), participant_id.to_owned());
        if self
            .ask(shard, |reply| Command::Remove {
                meeting_id: m,
                participant_id: p,
                reply,
            })
            .await
            .is_some()
        {
            self.release(meeting_id, participant_id).await;
        }
    }

    /// Live peer connections across all shards (tests check it returns to zero).
    pub fn live_connections(&self) -> usize {
        self.inner.shards.iter().map(|s| s.live.load(Ordering::Relaxed)).sum()
    }

    /// Latency histograms (ICE to DTLS, entering the call to first media), summed over shards.
    pub fn latencies(&self) -> stats::Latencies {
        stats::Latencies::sum(self.inner.shards.iter().map(|s| s.counters.as_ref()))
    }

    /// Process-wide counters: the sum over shards.
    pub fn stats(&self) -> CountersSnapshot {
        Counters::sum(self.inner.shards.iter().map(|s| s.counters.as_ref()))
    }

    /// Meetings with participants in the call (placed on shards).
    pub fn placed_meetings(&self) -> usize {
        self.placements().len()
    }

    /// What each shard hosts, in shard order (`None` for a shard that stopped): tests check
    /// that a meeting everyone left is gone from every shard, whatever the placement says.
    pub async fn hosting(&self) -> Vec<Option<Hosting>> {
        let mut all = Vec::with_capacity(self.inner.shards.len());
        for shard in 0..self.inner.shards.len() {
            all.push(self.ask(shard, |reply| Command::Hosting { reply }).await);
        }
        all
    }

    /// A meeting's counters, while it has participants in the call.
    pub fn meeting_stats(&self, meeting_id: &str) -> Option<CountersSnapshot> {
        self.placements().get(meeting_id).map(|p| p.counters.snapshot())
    }

    /// A JSON picture of a meeting's participants, connections and tracks, for
    /// a debug endpoint. `None` if the meeting has nobody in the call.
    ///
    /// A meeting spread over several shards: the snapshot of the shard holding most of it,
    /// with the other shards' snapshots in `"spread"` (each naming its `"shard"`).
    pub async fn debug_snapshot(&self, meeting_id: &str) -> Option<serde_json::Value> {
        let main = self.placement(meeting_id)?;
        let others: Vec<usize> = {
            let placements = self.placements();
            let p = placements.get(meeting_id)?;
            p.shards().into_iter().filter(|&s| s != main).collect()
        };
        let ask = |shard: usize| {
            let meeting_id = meeting_id.to_owned();
            async move {
                self.ask(shard, |reply| Command::Debug { meeting_id, reply })
                    .await
                    .flatten()
            }
        };
        let mut snapshot = ask(main).await?;
        if !others.is_empty() {
            let mut spread = Vec::new();
            for shard in others {
                spread.extend(ask(shard).await);
            }
            if let Some(object) = snapshot.as_object_mut() {
                object.insert("spread".into(), spread.into());
            }
        }
        Some(snapshot)
    }

    /// Closes every connection on every shard (each is `close()`d), frees all
    /// meetings and stops the shard threads. Afterwards every call fails with
    /// `internal` and `live_connections()` is 0. Dropping the last `Sfu` clone
    /// does the same without waiting.
    pub async fn shutdown(&self) {
        for shard in 0..self.inner.shards.len() {
            let _ = self.ask(shard, |reply| Command::Shutdown { reply }).await;
        }
        self.placements().clear();
    }

    /// Test hook: drop this share of forwarded packets from now on, on every
    /// shard (clamped to [0, 1]; 0 turns it off). Dropped packets are counted.
    pub fn set_drop_probability(&self, probability: f64) {
        for shard in &self.inner.shards {
            let _ = shard.commands.try_send(Command::SetDropProbability(probability));
        }
    }

    /// Test hook: lose this share of forwarded packets after their leg recorded them
    /// as sent (a lossy link toward subscribers, which NACKs can repair), on every
    /// shard (clamped to [0, 1]; 0 turns it off). Lost packets count as dropped.
    pub fn set_wire_loss(&self, probability: f64) {
        for shard in &self.inner.shards {
            let _ = shard.commands.try_send(Command::SetWireLoss(probability));
        }
    }

    /// Test hook: makes shard `index` panic outside every guard, as a bug in our
    /// own shard code would. Returns once the shard is known dead.
    #[doc(hidden)]
    pub async fn crash_shard(&self, index: usize) {
        let Some(shard) = self.inner.shards.get(index) else {
            return;
        };
        let mut alive = shard.alive.subscribe();
        let _ = shard.commands.send(Command::Crash).await;
        let _ = alive.wait_for(|alive| !*alive).await;
    }
}
