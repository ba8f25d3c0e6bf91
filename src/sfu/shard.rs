//! One shard: a thread with a current-thread tokio runtime that owns one UDP
//! media socket and every connection of the meetings placed on it ([`Peers`]),
//! and one [`MediaRoom`] per meeting. The shard is the IO shell around the
//! rooms: it turns datagrams, timers and commands into room inputs and carries
//! out the [`Effect`]s the rooms return.
//!
//! Run to completion: a datagram is routed by the demultiplexer, handed to its
//! connection, and that connection is drained (writes, events, reads) at once;
//! an RTP packet read from a publisher is rewritten for and written into every
//! leg of its track in the same turn. Datagrams arrive in batches (`recvmmsg`) and
//! the ones a turn produces leave together when it ends (`sendmmsg`, GSO for runs to
//! one destination; see [`super::udp`]). Commands
//! from the async world arrive on a bounded channel and run between datagrams,
//! a bounded number per turn whatever the socket does. Nothing here is shared
//! across threads except atomics.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use gatehouse_signaling::protocol::{
    IceCandidate, MediaMessage, MeetingId, ParticipantId, PeerRole, PublishedTrack, ServerMessage, TrackInfo,
};
use gatehouse_signaling::{Error, ErrorCode};
use rtc::peer_connection::certificate::RTCCertificate;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::transport::RTCIceCandidateInit;
use tokio::sync::{mpsc, oneshot};

use super::connection::{self, Conn, RoomId};
use super::ice_lite;
use super::idmap::IdMap;
use super::media_room::{ConnId, Effect, MediaRoom, Offer};
use super::peers::Peers;
use super::relay::{self, MeetingKey, Outgoing, Spread};
use super::rtcp_view::{Feedback, Report, Visit};
use super::stats::{Counters, StatsPair};
use super::tcp::ShardTcp;
use super::{MediaParticipant, Outbox};

/// Receive calls (each up to [`super::udp::RECV_MSGS`] buffers) per wake-up before commands and
/// timers get a turn.
const RECV_ROUNDS: usize = 2;
/// TCP frames taken per wake-up.
const TCP_BATCH: usize = 64;
/// Commands taken per turn besides the one the select may pick: enough that joins and
/// offers never queue behind a saturated socket, few enough to keep a turn short.
const COMMAND_BATCH: usize = 16;
/// Time those commands may take in one turn (the first of them always runs). A join or a
/// leave costs a few hundred microseconds of the shard (its connections made or closed, the
/// room's renegotiation); sixteen of them in one turn held other meetings' packets for
/// 10-20 ms and overflowed the socket when a large meeting ended at once (BENCHMARKS §3,
/// "Joins and leaves off the forwarding turn").
const COMMAND_TIME: Duration = Duration::from_millis(2);
/// Batches from other shards (`relay`) taken per wake-up.
const RELAY_BATCH: usize = 64;

/// How often the shard asks its rooms who is speaking (each room's detector keeps its
/// own cadence, `speaker::Params::evaluate_every`; this is the wake-up that serves it).
const SPEAKER_TICK: Duration = Duration::from_millis(100);

/// A request from the async API to a shard.
pub enum Command {
    Add {
        participant: MediaParticipant,
        outbox: Outbox,
        meeting_stats: Arc<Counters>,
        /// The meeting's number on every shard (what relayed items name it by).
        meeting_key: MeetingKey,
        /// The tracks the participant was told of before it entered (`admitted`): it hears
        /// how the room differs (`MediaRoom::tell_entering`). `None`: nothing is told.
        told: Option<Vec<TrackInfo>>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Handle {
        meeting_id: String,
        participant_id: String,
        message: MediaMessage,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Remove {
        meeting_id: String,
        participant_id: String,
        reply: oneshot::Sender<()>,
    },
    Tracks {
        meeting_id: String,
        reply: oneshot::Sender<Vec<TrackInfo>>,
    },
    Debug {
        meeting_id: String,
        reply: oneshot::Sender<Option<serde_json::Value>>,
    },
    /// The other shards now holding part of a meeting this shard holds (see `relay`), the
    /// set numbered `version` (an older one arriving late is ignored, `relay::Spread::set`).
    /// For the meeting numbered `key` only: not for a room of it made after that placement ended.
    Peers {
        meeting_id: String,
        key: MeetingKey,
        peers: Vec<usize>,
        version: relay::PeersVersion,
    },
    /// What the shard hosts (tests: nothing is left behind).
    Hosting {
        reply: oneshot::Sender<super::Hosting>,
    },
    SetDropProbability(f64),
    /// Test hook: the share of forwarded packets lost after their leg recorded them.
    SetWireLoss(f64),
    /// Test hook: the shard thread panics outside every guard (see `Sfu::crash_shard`).
    Crash,
    /// Close every connection, free every meeting and stop the shard.
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// A meeting on this shard: its media room and where its participants' signaling goes.
struct Hosted {
    room: MediaRoom,
    outboxes: HashMap<ParticipantId, Outbox>,
    key: MeetingKey,
    /// The other shards holding part of the meeting: its local tracks' packets and view
    /// go to each (`relay`).
    spread: Spread,
    /// Whether its local tracks may have changed this turn (it is in `views_dirty`).
    view_dirty: bool,
}

impl Hosted {
    fn signal(&self, to: &str, message: ServerMessage) {
        if let Some(outbox) = self.outboxes.get(to) {
            // Full or closed: see `Outbox::send`.
            outbox.send(message);
        }
    }
}

/// Everything one shard thread owns.
pub struct Shard {
    index: usize,
    peers: Peers,
    /// By our own room ids: looked up for every forwarded packet, so not SipHash (`idmap`).
    rooms: IdMap<RoomId, Hosted>,
    room_ids: HashMap<MeetingId, RoomId>,
    next_room: RoomId,
    /// Scratch: effects of the room input being handled, offers of this turn.
    effects: Vec<Effect>,
    offers: Vec<Offer>,
    /// Some room may want subscriber offers: checked once per turn.
    negotiation_pending: bool,
    /// When the rooms' active speakers are next evaluated (while any room is hosted).
    speakers_due: Instant,
    /// Scratch: the connections whose timers are due this turn.
    due: Vec<ConnId>,
    /// Rooms probing a subscriber's path (`MediaRoom::send_probes` each turn while they do).
    probing: Vec<RoomId>,
    /// Meetings by their number on every shard, for what other shards relay.
    room_keys: HashMap<MeetingKey, RoomId>,
    /// What this turn relays to other shards.
    relay: Outgoing,
    /// Rooms with peers whose view may have changed this turn.
    views_dirty: Vec<RoomId>,
    /// The DTLS certificate every connection of the shard presents
    /// (`connection::dtls_certificate`); `None` if it could not be made.
    certificate: Option<RTCCertificate>,
    /// When to let datagrams gather before reading them (`coalesce`).
    coalescer: super::coalesce::Coalescer,
}

/// [`Shard::next_deadline`], from the parts of the shard it reads.
fn next_deadline(peers: &Peers, no_rooms: bool, speakers_due: Instant) -> Option<Instant> {
    let deadline = peers.next_deadline();
    if no_rooms {
        deadline
    } else {
        Some(deadline.map_or(speakers_due, |at| at.min(speakers_due)))
    }
}

fn err(code: ErrorCode, message: impl Into<String>) -> Error {
    Error::new(code, message)
}

/// Everything logged while a participant's command runs names the meeting and the
/// participant, as the signaling side's logs do (one grep follows one guest).
fn media_span(meeting_id: &str, participant_id: &str) -> tracing::span::EnteredSpan {
    tracing::info_span!("media", meeting_id = %meeting_id, participant_id = %participant_id).entered()
}

fn connection_failed() -> Error {
    err(
        ErrorCode::MediaStateError,
        "a media connection failed; leave and rejoin the call",
    )
}

impl Shard {
    pub fn new(index: usize, peers: Peers) -> Self {
        Self {
            index,
            peers,
            rooms: IdMap::default(),
            room_ids: HashMap::new(),
            next_room: 1,
            effects: Vec::new(),
            offers: Vec::new(),
            negotiation_pending: false,
            speakers_due: Instant::now(),
            due: Vec::new(),
            probing: Vec::new(),
            room_keys: HashMap::new(),
            relay: Outgoing::none(index),
            views_dirty: Vec::new(),
            certificate: connection::dtls_certificate()
                .inspect_err(|e| {
                    tracing::warn!(
                        shard = index,
                        "no DTLS certificate for the shard, one per connection then: {e}"
                    )
                })
                .ok(),
            coalescer: super::coalesce::Coalescer::new(Duration::ZERO),
        }
    }

    /// The queues to the other shards (`relay`), for meetings split across shards.
    pub fn with_relay(mut self, relay: Outgoing) -> Self {
        self.relay = relay;
        self
    }

    /// Receive coalescing with this window (`coalesce`; zero, the default: none).
    pub fn with_coalescing(mut self, window: Duration) -> Self {
        self.coalescer = super::coalesce::Coalescer::new(window);
        self
    }

    /// The shard's media socket (benches switch its sends off, see [`super::udp::UdpIo::set_discard`]).
    pub(super) fn udp_mut(&mut self) -> &mut super::udp::UdpIo {
        self.peers.udp_mut()
    }

    /// How forwarded packets go into `rtc` (benches switch each lever off to measure it).
    pub(super) fn levers_mut(&mut self) -> &mut super::peers::WriteLevers {
        &mut self.peers.levers
    }

    /// Test hook: the SSRCs the shard sends its publisher connections' receipts from
    /// (`own_rtcp::RtcpSealer`), one per connection that sends them that way.
    #[cfg(test)]
    pub(super) fn own_receipt_senders(&self) -> Vec<u32> {
        self.peers.own_receipt_senders()
    }

    /// Bench hook: see `Peers::set_settle_tick`.
    pub(super) fn set_settle_tick(&mut self, tick: Duration) {
        self.peers.set_settle_tick(tick);
    }

    /// The loop. Returns when the command channel closes (the `Sfu` was dropped)
    /// or on `Shutdown`.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut tcp: mpsc::Receiver<ShardTcp>,
        mut relayed: mpsc::Receiver<relay::Batch>,
    ) {
        // One timer for the loop's life, moved only when the deadline moves: deadlines sit on
        // the timer grid, so most turns leave it where it is (no timer-wheel work per turn).
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        // What the timer is set for (`None` inside: no deadline); `None`: to be set.
        let mut armed: Option<Option<Instant>> = None;
        // The last turn ended in a pause (`coalesce`): this turn's datagrams are what it gathered.
        let mut paused = false;
        loop {
            // On the timer grid (`super::timers`): one wake-up serves every connection due in a tick.
            let deadline = self.next_deadline();
            let mut backlog = false;
            let mut read = 0;
            if armed != Some(deadline) {
                let at = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
                sleep.as_mut().reset(tokio::time::Instant::from_std(at));
                armed = Some(deadline);
            }
            tokio::select! {
                biased;
                ready = self.peers.udp().readable() => {
                    match ready {
                        Ok(()) => (read, backlog) = self.receive_datagrams(),
                        Err(e) => tracing::debug!(shard = self.index, "media socket readiness: {e}"),
                    }
                }
                // The socket buffer was full at the last flush: go on when it has room.
                _ = self.peers.udp().writable(), if self.peers.udp().blocked() => {}
                Some(event) = tcp.recv() => {
                    self.on_tcp(Instant::now(), event);
                    for _ in 1..TCP_BATCH {
                        let Ok(event) = tcp.try_recv() else { break };
                        self.on_tcp(Instant::now(), event);
                    }
                }
                Some(batch) = relayed.recv() => {
                    let now = Instant::now();
                    self.on_relay(batch, now);
                    for _ in 1..RELAY_BATCH {
                        let Ok(batch) = relayed.try_recv() else { break };
                        self.on_relay(batch, now);
                    }
                }
                command = commands.recv() => {
                    match command {
                        Some(command) => {
                            if self.on_command(command) {
                                return;
                            }
                        }
                        None => break,
                    }
                }
                _ = &mut sleep => {
                    // Fired: set again next turn, even for the same deadline.
                    armed = None;
                }
            }
            // A saturated socket wins the biased select every turn; commands (joins,
            // offers, leaves) still get a bounded share of each turn: one while datagrams
            // are waiting (the socket filled the last batch), else up to COMMAND_BATCH
            // within COMMAND_TIME.
            let started = Instant::now();
            for _ in 0..if backlog { 1 } else { COMMAND_BATCH } {
                if started.elapsed() >= COMMAND_TIME {
                    break;
                }
                let Ok(command) = commands.try_recv() else { break };
                if self.on_command(command) {
                    return;
                }
            }
            let now = Instant::now();
            self.end_turn(now);
            if std::mem::take(&mut paused) {
                Counters::add(&self.peers.counters().coalesced_datagrams, read as u64);
            }
            // Under load, let the next turn's datagrams gather (`coalesce`). The shard's
            // thread runs nothing else: sleeping it is pausing the shard. (The turn's start
            // stands for its end: a pause may pass the next deadline by the turn's length,
            // well inside the timer grid's tick.)
            let (peers, rooms, speakers_due) = (&self.peers, &self.rooms, self.speakers_due);
            if let Some(pause) = self.coalescer.turn(
                now,
                read,
                backlog,
                || next_deadline(peers, rooms.is_empty(), speakers_due),
                super::coalesce::thread_sleeps,
            ) {
                Counters::add(&self.peers.counters().coalesce_pauses, 1);
                paused = true;
                std::thread::sleep(pause);
            }
        }
        self.shutdown();
    }

    /// When the shard's next timer is due: on the timer grid (`super::timers`), one wake-up
    /// serves every connection due in a tick.
    fn next_deadline(&self) -> Option<Instant> {
        next_deadline(&self.peers, self.rooms.is_empty(), self.speakers_due)
    }

    /// Timers, the end-of-turn drain, batched renegotiations, broken connections, and
    /// the datagrams of the turn out.
    pub(super) fn end_turn(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.due);
        self.peers.take_due(now, &mut due);
        for id in due.drain(..) {
            if self.peers.fire(id, now) {
                self.drive(id, now);
            }
        }
        self.due = due;
        if now >= self.speakers_due && !self.rooms.is_empty() {
            self.evaluate_speakers(now);
        }
        if !self.probing.is_empty() {
            self.send_probes(now);
        }
        self.drain_dirty(now);
        if self.negotiation_pending {
            self.run_negotiations(now);
            self.drain_dirty(now);
        }
        self.peers.settle_written(now);
        self.peers.pay_deferred(now);
        self.report_broken();
        self.peers.flush_io();
        self.flush_relay();
    }

    /// The views that changed this turn, then everything the turn relays, out to the other shards.
    fn flush_relay(&mut self) {
        for room_id in std::mem::take(&mut self.views_dirty) {
            let Some(hosted) = self.rooms.get_mut(&room_id) else {
                continue;
            };
            hosted.view_dirty = false;
            hosted
                .spread
                .tell(hosted.key, hosted.room.mirror_view(), &mut self.relay);
        }
        if self.relay.is_empty() {
            return;
        }
        let flushed = self.relay.flush();
        let counters = self.peers.counters();
        Counters::add(&counters.relayed_packets, flushed.packets);
        Counters::add(&counters.relay_drops, flushed.dropped);
    }

    /// Relays an item of room `room_id`'s meeting to shard `to`.
    fn relay_for(&mut self, room_id: RoomId, to: usize, item: impl FnOnce(MeetingKey) -> relay::Item) {
        if let Some(hosted) = self.rooms.get(&room_id) {
            self.relay.push(to, item(hosted.key));
        }
    }

    /// A room's local tracks may have changed: its view is compared at the end of the turn.
    fn view_may_change(&mut self, room_id: RoomId) {
        if let Some(hosted) = self.rooms.get_mut(&room_id)
            && !hosted.spread.is_empty()
            && !hosted.view_dirty
        {
            hosted.view_dirty = true;
            self.views_dirty.push(room_id);
        }
    }

    /// What another shard holding part of a meeting relayed this turn.
    fn on_relay(&mut self, batch: relay::Batch, now: Instant) {
        let from = batch.from;
        let conn = relay::mirror_conn(from);
        for item in batch.items {
            let meeting = match &item {
                relay::Item::Packet { meeting, .. }
                | relay::Item::View { meeting, .. }
                | relay::Item::Sync { meeting }
                | relay::Item::Keyframe { meeting, .. }
                | relay::Item::Need { meeting, .. }
                | relay::Item::Shares { meeting, .. } => *meeting,
            };
            // The meeting may have left this shard meanwhile.
            let Some(&room_id) = self.room_keys.get(&meeting) else {
                continue;
            };
            let Some(hosted) = self.rooms.get_mut(&room_id) else {
                continue;
            };
            match item {
                relay::Item::Packet { packet, .. } => {
                    hosted
                        .room
                        .forward(conn, &packet, now, &mut self.peers.sink(now), &mut self.effects);
                }
                relay::Item::View { view, .. } => {
                    if !hosted.spread.peers().contains(&from) {
                        // Not (or no longer) a peer here: its mirrors would never be forgotten.
                        continue;
                    }
                    hosted.room.apply_mirror(from, conn, &view, now, &mut self.effects);
                }
                relay::Item::Sync { .. } => {
                    let view = hosted.room.mirror_view();
                    self.relay.push(from, relay::Item::View { meeting, view });
                }
                relay::Item::Keyframe { ssrc, .. } => hosted.room.relay_keyframe(ssrc, now, &mut self.effects),
                relay::Item::Need { track_id, needed, .. } => hosted.room.remote_need(from, &track_id, needed),
                relay::Item::Shares { track_id, shares, .. } => hosted.room.remote_shares(from, &track_id, shares),
            }
            if !self.effects.is_empty() {
                self.apply(room_id, now);
            }
        }
    }

    /// The other shards holding part of a meeting changed: the mirrors of one that left are
    /// unpublished, one that came is sent this room's view and asked for its own.
    fn set_peers(
        &mut self,
        meeting_id: &str,
        key: MeetingKey,
        peers: Vec<usize>,
        version: relay::PeersVersion,
        now: Instant,
    ) {
        let Some(&room_id) = self.room_ids.get(meeting_id) else {
            return;
        };
        let Some(hosted) = self.rooms.get_mut(&room_id) else {
            return;
        };
        if hosted.key != key {
            return;
        }
        let peers: Vec<usize> = peers.into_iter().filter(|&p| p != self.index).collect();
        tracing::debug!(shard = self.index, meeting_id, ?peers, "shards holding the meeting");
        // Peers that came get the whole view; those that stay, this turn's change if any.
        let gone = hosted
            .spread
            .set(hosted.key, version, peers, hosted.room.mirror_view(), &mut self.relay);
        for gone in gone {
            hosted.room.forget_mirror(gone, now, &mut self.effects);
        }
        self.apply(room_id, now);
        self.flush_relay();
    }

    /// The padding the probing rooms' probes call for this turn (`MediaRoom::send_probes`);
    /// a room leaves the list when its probes are over.
    fn send_probes(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.probing.len() {
            if let Some(hosted) = self.rooms.get_mut(&self.probing[i]) {
                hosted.room.send_probes(now, &mut self.peers.sink(now));
                if hosted.room.probing() {
                    i += 1;
                    continue;
                }
            }
            self.probing.swap_remove(i);
        }
    }

    /// Every room's active speakers, on [`SPEAKER_TICK`]: a room evaluates when its
    /// detector is due and has audio levels (cheap otherwise); parked tracks past their
    /// grace are unpublished, and publishers told which simulcast layers are needed
    /// (`MediaRoom::evaluate_layers`), on the same tick.
    fn evaluate_speakers(&mut self, now: Instant) {
        // On the connections' timer grid, so it shares their wake-ups.
        self.speakers_due = self.peers.timer_slot(now + SPEAKER_TICK, now);
        let ids: Vec<RoomId> = self.rooms.keys().copied().collect();
        for room_id in ids {
            if let Some(hosted) = self.rooms.get_mut(&room_id) {
                hosted.room.evaluate_speakers(now, &mut self.effects);
                hosted.room.expire_parked(now, &mut self.effects);
                hosted.room.evaluate_layers(now, &mut self.effects);
                hosted.room.evaluate_publisher_limits(now, &mut self.effects);
                hosted.room.evaluate_quality(now, &mut self.effects);
            }
            if !self.effects.is_empty() {
                self.apply(room_id, now);
            }
        }
        // On the same tick: a second's reports are late by a tick at most.
        self.peers.send_sender_reports(now);
    }

    /// Up to [`RECV_ROUNDS`] batches from the media socket, each datagram routed and its
    /// connection drained as it comes. Returns the datagrams read, and whether the socket
    /// may hold more (the last batch was full).
    fn receive_datagrams(&mut self) -> (usize, bool) {
        let now = Instant::now();
        let mut more = false;
        let mut read = 0;
        for _ in 0..RECV_ROUNDS {
            more = false;
            match self.peers.udp_mut().receive() {
                Ok(true) => more = self.peers.udp().received_full(),
                Ok(false) => break,
                // ICMP errors surface here on some platforms: one peer's problem, not the shard's.
                Err(e) => {
                    tracing::debug!(shard = self.index, "receive: {e}");
                    break;
                }
            }
            while let Some((from, data)) = self.peers.udp_mut().next_datagram() {
                read += 1;
                self.on_datagram(now, from, data);
            }
        }
        (read, more)
    }

    /// ICE-TCP: a link handed over, a frame from one, or one closing.
    fn on_tcp(&mut self, now: Instant, event: ShardTcp) {
        let (driven, media) = match event {
            ShardTcp::Accepted { stream, peer, first } => (self.peers.accept_tcp(now, stream, peer, first), false),
            ShardTcp::Frame { link, data } => {
                let media = super::demux::classify(&data) == super::demux::Class::Rtp;
                (self.peers.receive_tcp(now, link, data), media)
            }
            ShardTcp::Closed { link } => {
                self.peers.link_closed(link);
                (None, false)
            }
        };
        if let Some(id) = driven {
            self.drive_fed(id, now, media);
        }
        self.forward_fast(now);
    }

    pub(super) fn on_datagram(&mut self, now: Instant, from: std::net::SocketAddr, data: BytesMut) {
        let media = super::demux::classify(&data) == super::demux::Class::Rtp;
        if let Some(id) = self.peers.receive(now, from, data) {
            self.drive_fed(id, now, media);
        }
        self.forward_fast(now);
    }

    /// Drains a connection: handles its events and application messages (forwarding RTP),
    /// then sends its datagrams and re-arms its timer (`Peers::settle`). Each `rtc` poll is a
    /// sweep of its whole pipeline, so a drive makes as few as it can (issue 13): the events,
    /// one read sweep and what it queued, and after events one more round (an event's
    /// handling may queue reads); reads raise no events, so a round without events ends it.
    fn drive(&mut self, id: ConnId, now: Instant) {
        self.drive_from(id, now, true, false);
    }

    /// [`drive`](Self::drive) right after a datagram (or TCP frame) was fed in: `rtc`'s
    /// `handle_read` sweeps its read pipeline to the end, so the first round takes what that
    /// queued without sweeping again (a later round, after events, sweeps as usual). After
    /// an SRTP or SRTCP datagram (`media`) that raised no event, the connection is settled
    /// as one that only moved media (`Peers::settle_media`).
    fn drive_fed(&mut self, id: ConnId, now: Instant, media: bool) {
        self.drive_from(id, now, false, media);
    }

    fn drive_from(&mut self, id: ConnId, now: Instant, sweep_first: bool, media: bool) {
        let mut sweep = sweep_first;
        let mut media_only = media;
        loop {
            let mut evented = false;
            while let Some(event) = self.peers.poll_event(id) {
                evented = true;
                media_only = false;
                self.on_event(id, event, now);
            }
            while let Some(message) = self.peers.poll_message(id, sweep) {
                sweep = false;
                self.on_message(id, message, now);
            }
            if !evented {
                break;
            }
            sweep = true;
        }
        if media_only {
            self.peers.settle_media(id, now, 0);
        } else {
            self.peers.settle(id, now);
        }
    }

    /// An application message a connection read: RTP to forward, RTCP for the room.
    fn on_message(&mut self, id: ConnId, message: RTCMessage, now: Instant) {
        match message {
            RTCMessage::RtpPacket(_, packet) => {
                // `rtc` found the stream's track: its next packets are opened by the shard.
                self.peers
                    .take_over(id, packet.header.ssrc, packet.header.sequence_number);
                self.forward_rtp(id, packet, now);
            }
            RTCMessage::RtcpPacket(_, packets) => self.on_rtcp(id, Feedback::Rtc(&packets), now),
            _ => {}
        }
    }

    /// RTCP a connection received that the room wants (`rtcp::tap`), read by `rtc` or opened
    /// by the shard (`own_rtcp`, `rtcp_view`).
    fn on_rtcp(&mut self, id: ConnId, feedback: Feedback<'_>, now: Instant) {
        let Some(room_id) = self.peers.get(id).map(|c| c.room) else {
            return;
        };
        let Some(hosted) = self.rooms.get_mut(&room_id) else {
            return;
        };
        // A subscriber heard again after an outage gets keyframes at once.
        hosted.room.subscriber_heard(id, now, &mut self.effects);
        let mut to_room = ToRoom {
            id,
            room: &mut hosted.room,
            peers: &mut self.peers,
            effects: &mut self.effects,
            now,
            // The wall clock, as the sender reports' NTP times are (round-trip times).
            ntp_now: super::quality::ntp_compact(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default(),
            ),
            twcc: false,
        };
        feedback.visit(&mut to_room);
        if to_room.twcc && hosted.room.probing() && !self.probing.contains(&room_id) {
            self.probing.push(room_id);
        }
        self.apply(room_id, now);
    }

    /// A publisher's RTP packet to its room's legs, and once to each other shard holding
    /// the meeting.
    /// Returns the packet unless it was relayed to another shard (its lists may be reused).
    fn forward_rtp(&mut self, id: ConnId, packet: rtc::rtp::Packet, now: Instant) -> Option<rtc::rtp::Packet> {
        let Some(room_id) = self.peers.get(id).map(|c| c.room) else {
            return Some(packet);
        };
        let Some(hosted) = self.rooms.get_mut(&room_id) else {
            return Some(packet);
        };
        hosted
            .room
            .forward(id, &packet, now, &mut self.peers.sink(now), &mut self.effects);
        // A meeting split across shards: each other shard gets the packet once.
        if let Some((&last, rest)) = hosted.spread.peers().split_last() {
            for &peer in rest {
                let packet = packet.clone();
                self.relay.push(
                    peer,
                    relay::Item::Packet {
                        meeting: hosted.key,
                        packet,
                    },
                );
            }
            self.relay.push(
                last,
                relay::Item::Packet {
                    meeting: hosted.key,
                    packet,
                },
            );
            if !self.effects.is_empty() {
                self.apply(room_id, now);
            }
            return None;
        }
        if !self.effects.is_empty() {
            self.apply(room_id, now);
        }
        Some(packet)
    }

    /// Forwards what the last datagram the shard opened itself came out as (`own_inbound`),
    /// or hands the room the RTCP it was (`own_rtcp`).
    fn forward_fast(&mut self, now: Instant) {
        if let Some((id, opened)) = self.peers.take_fast_rtcp() {
            self.on_rtcp(id, opened.feedback(), now);
            self.peers.give_back_rtcp(id, opened);
        }
        let Some((id, mut packets)) = self.peers.take_fast() else {
            return;
        };
        for packet in packets.drain(..) {
            if let Some(packet) = self.forward_rtp(id, packet, now) {
                self.peers.recycle(packet);
            }
        }
        self.peers.return_fast(packets);
    }

    fn drain_dirty(&mut self, now: Instant) {
        while let Some(id) = self.peers.take_dirty() {
            self.drive(id, now);
        }
    }

    fn on_event(&mut self, id: ConnId, event: RTCPeerConnectionEvent, now: Instant) {
        let Some(conn) = self.peers.get_mut(id) else {
            return;
        };
        let (room_id, participant, role) = (conn.room, conn.participant.clone(), conn.role);
        match event {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                tracing::debug!(shard = self.index, conn = id, meeting_id = %conn.meeting_id, participant_id = %participant, ?role, %state, "connection state");
                conn.state = state;
                let was = conn.connected;
                conn.connected = state == RTCPeerConnectionState::Connected;
                if conn.connected
                    && let Some(at) = conn.ice_connected_at.take()
                {
                    self.peers
                        .counters()
                        .ice_to_dtls
                        .observe(now.saturating_duration_since(at));
                }
                let Some(conn) = self.peers.get(id) else {
                    return;
                };
                let connected = conn.connected;
                if connected
                    && !was
                    && role == PeerRole::Subscriber
                    && let Some(hosted) = self.rooms.get_mut(&room_id)
                {
                    hosted.room.subscriber_connected(id, now, &mut self.effects);
                    self.apply(room_id, now);
                }
            }
            RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(RTCIceConnectionState::Connected)
                if conn.ice_connected_at.is_none() && !conn.connected =>
            {
                conn.ice_connected_at = Some(now);
                // We are the DTLS client on both connections (our answer says `active`; a
                // client answering our ICE-lite offer says `passive`). `rtc` 0.21.1 queues
                // the ClientHello when the pair is selected (`DtlsHandler::handle_event`,
                // `Endpoint::connect`) but hands it out only on the DTLS handler's next
                // read, write or timeout: the first retransmission timer, up to 200 ms
                // later. A timeout now sends it at once (nothing else is due yet).
                if let Some(Err(e)) = self.peers.guard(id, "handle_timeout", |pc| {
                    rtc::sansio::Protocol::handle_timeout(pc, now)
                }) {
                    tracing::debug!(shard = self.index, conn = id, "handle_timeout after ICE connected: {e}");
                }
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) if role == PeerRole::Publisher => {
                let replaces = init.rid.is_none();
                let stream = self
                    .peers
                    .guard(id, "track", |pc| {
                        connection::stream(pc, id, init.receiver_id, init.ssrc, replaces)
                    })
                    .flatten();
                if let Some(stream) = stream
                    && let Some(hosted) = self.rooms.get_mut(&room_id)
                {
                    hosted.room.stream_opened(&participant, stream, now, &mut self.effects);
                    self.apply(room_id, now);
                }
            }
            _ => {}
        }
    }

    /// Carries out the effects the room `room_id` pushed, in order.
    fn apply(&mut self, room_id: RoomId, now: Instant) {
        self.view_may_change(room_id);
        let mut effects = std::mem::take(&mut self.effects);
        for effect in effects.drain(..) {
            match effect {
                Effect::Signal { to, message } => {
                    if let Some(hosted) = self.rooms.get(&room_id) {
                        hosted.signal(&to, message);
                    }
                }
                Effect::AddSender {
                    subscriber,
                    leg,
                    track,
                    ssrc,
                } => {
                    self.negotiation_pending = true;
                    let conn = match self.connection(room_id, &subscriber, PeerRole::Subscriber, now) {
                        Ok(conn) => conn,
                        Err(e) => {
                            tracing::warn!(shard = self.index, participant_id = %subscriber, "no subscriber connection: {e}");
                            if let Some(hosted) = self.rooms.get_mut(&room_id) {
                                hosted.room.leg_failed(leg);
                            }
                            continue;
                        }
                    };
                    let added = self
                        .peers
                        .guard(conn, "add_track", |pc| connection::add_sender(pc, &track, ssrc));
                    let Some(hosted) = self.rooms.get_mut(&room_id) else {
                        continue;
                    };
                    match added {
                        Some(Ok(sender)) => hosted.room.leg_bound(leg, conn, sender),
                        Some(Err(e)) => {
                            tracing::warn!(shard = self.index, meeting_id = %hosted.room.meeting_id(), participant_id = %subscriber, track_id = %track.track_id, "add_track: {e}");
                            hosted.room.leg_failed(leg);
                        }
                        None => hosted.room.leg_failed(leg),
                    }
                }
                Effect::RemoveSender { conn, sender } => {
                    self.negotiation_pending = true;
                    if let Some(Err(e)) = self.peers.guard(conn, "remove_track", |pc| pc.remove_track(sender)) {
                        tracing::debug!(shard = self.index, conn, "remove_track: {e}");
                    }
                }
                Effect::RequestKeyframe { conn, ssrc, .. } if relay::mirror_source(conn).is_some() => {
                    // A mirror's publisher is on another shard: asked there.
                    if let Some(source) = relay::mirror_source(conn) {
                        self.relay_for(room_id, source, |meeting| relay::Item::Keyframe { meeting, ssrc });
                    }
                }
                Effect::RelayNeed {
                    source,
                    track_id,
                    needed,
                } => self.relay_for(room_id, source, |meeting| relay::Item::Need {
                    meeting,
                    track_id,
                    needed,
                }),
                Effect::RelayShares {
                    source,
                    track_id,
                    shares,
                } => self.relay_for(room_id, source, |meeting| relay::Item::Shares {
                    meeting,
                    track_id,
                    shares,
                }),
                Effect::RequestKeyframe { conn, receiver, ssrc } => {
                    match self
                        .peers
                        .guard(conn, "write_rtcp", |pc| connection::send_pli(pc, now, receiver, ssrc))
                    {
                        Some(Ok(())) => {
                            if let Some(hosted) = self.rooms.get(&room_id) {
                                hosted.room.stats().add(|c| &c.plis_sent, 1);
                            }
                        }
                        Some(Err(e)) => tracing::debug!(shard = self.index, conn, "PLI to publisher: {e}"),
                        None => {}
                    }
                    self.peers.flush_later(conn);
                }
                Effect::LimitPublisher {
                    conn,
                    receiver,
                    ssrc,
                    bps,
                } => {
                    match self.peers.guard(conn, "write_rtcp", |pc| {
                        connection::send_remb(pc, now, receiver, ssrc, bps)
                    }) {
                        Some(Ok(())) => {
                            if let Some(hosted) = self.rooms.get(&room_id) {
                                hosted.room.stats().add(|c| &c.rembs_sent, 1);
                            }
                        }
                        Some(Err(e)) => tracing::debug!(shard = self.index, conn, "REMB to publisher: {e}"),
                        None => {}
                    }
                    self.peers.flush_later(conn);
                }
                Effect::Close { conn } => self.peers.close(conn),
            }
        }
        // Keep the scratch buffer's capacity; effects pushed meanwhile come after.
        effects.append(&mut self.effects);
        self.effects = effects;
        if !self.effects.is_empty() {
            self.apply(room_id, now);
        }
    }

    /// A participant's connection of `role`, made (and given to the room) if it has none.
    fn connection(
        &mut self,
        room_id: RoomId,
        participant: &str,
        role: PeerRole,
        now: Instant,
    ) -> Result<ConnId, Error> {
        let hosted = self
            .rooms
            .get(&room_id)
            .ok_or_else(|| err(ErrorCode::Internal, "room vanished"))?;
        if let Some(conn) = hosted.room.connection(participant, role) {
            return Ok(conn);
        }
        let (mut ufrag, pwd) = connection::ice_credentials();
        while self.peers.ufrag_in_use(&ufrag) {
            ufrag = connection::ice_credentials().0;
        }
        let stats = StatsPair {
            meeting: hosted.room.stats().meeting.clone(),
            shard: self.peers.counters().clone(),
        };
        let layer_rtx = super::layer_rtx::SharedSettings::default();
        // A subscriber connection's forwarded copies are encrypted by the shard (`own_srtp`),
        // a publisher's media opened by it (`own_inbound`).
        let own = match role {
            PeerRole::Subscriber => self.peers.levers.own_srtp,
            PeerRole::Publisher => self.peers.levers.own_inbound,
        };
        let keys = own.then(super::srtp_keys::KeyCapture::new).and_then(Result::ok);
        // Either's RTCP is opened by the shard once its keys are known (`own_rtcp`).
        let rtcp_stats = keys.is_some().then(|| stats.clone());
        let (pc, chain) = connection::build(
            now,
            role,
            &ufrag,
            &pwd,
            self.peers.advertised(),
            self.peers.tcp_advertised(),
            stats,
            layer_rtx.clone(),
            keys.clone(),
            self.certificate.as_ref(),
        )
        .map_err(|e| err(ErrorCode::Internal, format!("could not create a peer connection: {e}")))?;
        let meeting_id = hosted.room.meeting_id().to_owned();
        let mut conn = Conn::new(pc, room_id, &meeting_id, participant, role, ufrag, pwd, now);
        conn.layer_rtx = layer_rtx;
        conn.keys = keys;
        conn.hosted = chain;
        conn.rtcp_stats = rtcp_stats;
        let id = self.peers.insert(conn);
        if let Some(hosted) = self.rooms.get_mut(&room_id) {
            hosted.room.set_connection(participant, role, Some(id));
        }
        Ok(id)
    }

    /// Sends a subscriber offer to everyone who needs one and has none outstanding.
    fn run_negotiations(&mut self, now: Instant) {
        self.negotiation_pending = false;
        let room_ids: Vec<RoomId> = self
            .rooms
            .iter()
            .filter(|(_, h)| h.room.wants_offers())
            .map(|(&id, _)| id)
            .collect();
        for room_id in room_ids {
            let mut offers = std::mem::take(&mut self.offers);
            if let Some(hosted) = self.rooms.get_mut(&room_id) {
                hosted.room.due_offers(&mut offers);
            }
            for Offer {
                participant,
                conn,
                restart,
            } in offers.drain(..)
            {
                let sdp = self
                    .peers
                    .guard(conn, "create_offer", |pc| connection::make_offer(pc, now));
                if let Some(Ok(sdp)) = &sdp
                    && let Some(pwd) = ice_lite::ice_pwd(sdp)
                    && let Some(c) = self.peers.get_mut(conn)
                {
                    c.local_pwd = pwd;
                }
                let Some(hosted) = self.rooms.get_mut(&room_id) else {
                    continue;
                };
                match sdp {
                    Some(Ok(sdp)) => hosted.signal(&participant, ServerMessage::SubscribeOffer { sdp, restart }),
                    Some(Err(e)) => {
                        tracing::warn!(shard = self.index, meeting_id = %hosted.room.meeting_id(), participant_id = %participant, "subscriber offer failed: {e}");
                        hosted.room.offer_failed(&participant);
                    }
                    None => hosted.room.offer_failed(&participant),
                }
                self.peers.flush_later(conn);
            }
            self.offers = offers;
        }
    }

    /// Tells the owners of connections that broke since the last turn.
    fn report_broken(&mut self) {
        for id in self.peers.take_broken() {
            let Some(conn) = self.peers.get(id) else {
                continue;
            };
            if let Some(hosted) = self.rooms.get(&conn.room) {
                hosted.signal(
                    &conn.participant,
                    ServerMessage::error(
                        ErrorCode::Internal,
                        "a media connection failed; leave and rejoin the call",
                    ),
                );
            }
        }
    }

    /// Carries out a command; `true` when it was `Shutdown` (done, the loop ends).
    pub(super) fn on_command(&mut self, command: Command) -> bool {
        let now = Instant::now();
        match command {
            Command::Add {
                participant,
                outbox,
                meeting_stats,
                meeting_key,
                told,
                reply,
            } => {
                let _span = media_span(&participant.meeting_id, &participant.participant_id);
                let _ = reply.send(self.add_participant(participant, outbox, meeting_stats, meeting_key, told, now));
            }
            Command::Peers {
                meeting_id,
                key,
                peers,
                version,
            } => self.set_peers(&meeting_id, key, peers, version, now),
            Command::Hosting { reply } => {
                let mut meetings: Vec<MeetingId> = self.room_ids.keys().cloned().collect();
                meetings.sort();
                let _ = reply.send(super::Hosting {
                    meetings,
                    rooms: self.rooms.len(),
                    keys: self.room_keys.len(),
                });
            }
            Command::Handle {
                meeting_id,
                participant_id,
                message,
                reply,
            } => {
                let _span = media_span(&meeting_id, &participant_id);
                let _ = reply.send(self.handle(&meeting_id, &participant_id, message, now));
            }
            Command::Remove {
                meeting_id,
                participant_id,
                reply,
            } => {
                let _span = media_span(&meeting_id, &participant_id);
                self.remove_participant(&meeting_id, &participant_id, now);
                let _ = reply.send(());
            }
            Command::Tracks { meeting_id, reply } => {
                let tracks = self
                    .hosted(&meeting_id)
                    .map(|(_, h)| h.room.tracks())
                    .unwrap_or_default();
                let _ = reply.send(tracks);
            }
            Command::Debug { meeting_id, reply } => {
                let _ = reply.send(self.debug_snapshot(&meeting_id));
            }
            Command::SetDropProbability(p) => self.peers.dice.set_probability(p),
            Command::SetWireLoss(p) => self.peers.wire_loss.set_probability(p),
            Command::Crash => panic!("shard {} crashed on request (test hook)", self.index),
            Command::Shutdown { reply } => {
                self.shutdown();
                let _ = reply.send(());
                return true;
            }
        }
        self.run_negotiations(now);
        self.drain_dirty(now);
        self.report_broken();
        self.peers.flush_io();
        false
    }

    fn hosted(&self, meeting_id: &str) -> Option<(RoomId, &Hosted)> {
        let id = *self.room_ids.get(meeting_id)?;
        Some((id, self.rooms.get(&id)?))
    }

    fn add_participant(
        &mut self,
        participant: MediaParticipant,
        outbox: Outbox,
        meeting_stats: Arc<Counters>,
        meeting_key: MeetingKey,
        told: Option<Vec<TrackInfo>>,
        now: Instant,
    ) -> Result<(), Error> {
        let room_id = match self.room_ids.get(participant.meeting_id.as_str()) {
            Some(&id) => id,
            None => {
                let id = self.next_room;
                self.next_room += 1;
                let stats = StatsPair {
                    meeting: meeting_stats,
                    shard: self.peers.counters().clone(),
                };
                self.rooms.insert(
                    id,
                    Hosted {
                        room: MediaRoom::new(participant.meeting_id.clone(), stats),
                        outboxes: HashMap::new(),
                        key: meeting_key,
                        spread: Spread::default(),
                        view_dirty: false,
                    },
                );
                self.room_ids.insert(participant.meeting_id.clone(), id);
                self.room_keys.insert(meeting_key, id);
                id
            }
        };
        let hosted = self.rooms.get_mut(&room_id).expect("room exists: just found or made");
        hosted.outboxes.insert(participant.participant_id.clone(), outbox);
        hosted.room.add_participant(
            &participant.participant_id,
            participant.kind,
            participant.may_present,
            now,
            &mut self.effects,
        );
        if let Some(told) = told {
            hosted
                .room
                .tell_entering(&participant.participant_id, &told, &mut self.effects);
        }
        self.apply(room_id, now);
        Ok(())
    }

    fn remove_participant(&mut self, meeting_id: &str, participant_id: &str, now: Instant) {
        let Some(&room_id) = self.room_ids.get(meeting_id) else {
            return;
        };
        let Some(hosted) = self.rooms.get_mut(&room_id) else {
            return;
        };
        hosted.room.remove_participant(participant_id, now, &mut self.effects);
        self.apply(room_id, now);
        let Some(hosted) = self.rooms.get_mut(&room_id) else {
            return;
        };
        hosted.outboxes.remove(participant_id);
        if hosted.room.is_empty() {
            // Its peers unpublish what it relayed (the `Sfu` tells them it left, too).
            hosted.spread.leave(hosted.key, &mut self.relay);
            if self.room_keys.get(&hosted.key) == Some(&room_id) {
                self.room_keys.remove(&hosted.key);
            }
            self.rooms.remove(&room_id);
            self.room_ids.remove(meeting_id);
            self.views_dirty.retain(|r| *r != room_id);
        }
    }

    fn handle(
        &mut self,
        meeting_id: &str,
        participant_id: &str,
        message: MediaMessage,
        now: Instant,
    ) -> Result<(), Error> {
        let (room_id, hosted) = self
            .hosted(meeting_id)
            .ok_or_else(|| err(ErrorCode::NotInCall, "not in the call"))?;
        if !hosted.room.contains(participant_id) {
            return Err(err(ErrorCode::NotInCall, "not in the call"));
        }
        if [PeerRole::Publisher, PeerRole::Subscriber]
            .into_iter()
            .filter_map(|role| hosted.room.connection(participant_id, role))
            .any(|id| self.peers.is_broken(id))
        {
            return Err(connection_failed());
        }
        let result = match message {
            MediaMessage::PublishOffer { sdp, tracks } => self.publish_offer(room_id, participant_id, sdp, tracks, now),
            MediaMessage::SubscribeAnswer { sdp } => self.subscribe_answer(room_id, participant_id, sdp, now),
            MediaMessage::IceCandidate { target, candidate } => {
                self.ice_candidate(room_id, participant_id, target, candidate)
            }
            MediaMessage::MuteTrack { track_id, muted } => {
                let hosted = self.rooms.get_mut(&room_id).expect("found above");
                hosted
                    .room
                    .mute_track(participant_id, &track_id, muted, &mut self.effects)
            }
            MediaMessage::SetSubscription {
                track_id,
                paused,
                quality,
            } => {
                let hosted = self.rooms.get_mut(&room_id).expect("found above");
                hosted
                    .room
                    .set_subscription(participant_id, &track_id, paused, quality, now, &mut self.effects)
            }
            MediaMessage::RestartIce => {
                let hosted = self.rooms.get_mut(&room_id).expect("found above");
                self.negotiation_pending = true;
                hosted.room.restart_subscriber(participant_id, &mut self.effects)
            }
        };
        self.apply(room_id, now);
        result
    }

    fn publish_offer(
        &mut self,
        room_id: RoomId,
        participant_id: &str,
        sdp: String,
        tracks: Vec<PublishedTrack>,
        now: Instant,
    ) -> Result<(), Error> {
        let hosted = self.rooms.get(&room_id).expect("checked by handle");
        hosted.room.check_publish(participant_id, &tracks)?;
        let client_pwd = ice_lite::ice_pwd(&sdp);
        let offer =
            RTCSessionDescription::offer(sdp).map_err(|e| err(ErrorCode::InvalidSdp, format!("invalid offer: {e}")))?;
        let existing = hosted.room.connection(participant_id, PeerRole::Publisher);
        let id = self.connection(room_id, participant_id, PeerRole::Publisher, now)?;
        let layer_rtx = self.peers.get(id).map(|c| c.layer_rtx.clone()).unwrap_or_default();
        let answer = match self
            .peers
            .guard(id, "answer", |pc| connection::answer_offer(pc, now, offer, &layer_rtx))
        {
            Some(Ok(sdp)) => sdp,
            failed => {
                if existing.is_none() {
                    // A connection that never negotiated is useless: do not keep it.
                    self.peers.close(id);
                    if let Some(hosted) = self.rooms.get_mut(&room_id) {
                        hosted.room.set_connection(participant_id, PeerRole::Publisher, None);
                    }
                }
                return Err(match failed {
                    Some(Err(e)) => err(ErrorCode::InvalidSdp, format!("could not apply the offer: {e}")),
                    _ => connection_failed(),
                });
            }
        };
        if let Some(conn) = self.peers.get_mut(id) {
            conn.has_remote = true;
            conn.client_pwd = client_pwd;
            if let Some(pwd) = ice_lite::ice_pwd(&answer) {
                conn.local_pwd = pwd;
            }
        }
        self.apply_held_candidates(room_id, participant_id, PeerRole::Publisher, id);
        self.peers.replay_early_checks(id, now);
        let hosted = self.rooms.get_mut(&room_id).expect("checked by handle");
        hosted.signal(participant_id, ServerMessage::PublishAnswer { sdp: answer });
        hosted.room.declare(participant_id, tracks, now, &mut self.effects);
        self.apply(room_id, now);
        // Streams that started before their mid was announced are published now.
        let streams = self
            .peers
            .guard(id, "transceivers", |pc| connection::arriving_streams(pc, id))
            .unwrap_or_default();
        if let Some(hosted) = self.rooms.get_mut(&room_id) {
            for stream in streams {
                if hosted.room.is_announced(participant_id, &stream.mid) {
                    hosted
                        .room
                        .stream_opened(participant_id, stream, now, &mut self.effects);
                }
            }
        }
        self.apply(room_id, now);
        self.drive(id, now);
        Ok(())
    }

    fn subscribe_answer(
        &mut self,
        room_id: RoomId,
        participant_id: &str,
        sdp: String,
        now: Instant,
    ) -> Result<(), Error> {
        let hosted = self.rooms.get(&room_id).expect("checked by handle");
        let id = hosted.room.expecting_answer(participant_id)?;
        let client_pwd = ice_lite::ice_pwd(&sdp);
        let answer = RTCSessionDescription::answer(sdp)
            .map_err(|e| err(ErrorCode::InvalidSdp, format!("invalid answer: {e}")))?;
        let negotiated = match self.peers.guard(id, "answer", |pc| {
            pc.set_remote_description(now, answer)
                .map(|()| connection::negotiated_senders(pc))
        }) {
            Some(Ok(negotiated)) => negotiated,
            Some(Err(e)) => return Err(err(ErrorCode::InvalidSdp, format!("could not apply the answer: {e}"))),
            None => return Err(connection_failed()),
        };
        let connected = match self.peers.get_mut(id) {
            Some(conn) => {
                conn.has_remote = true;
                conn.client_pwd = client_pwd;
                conn.connected
            }
            None => false,
        };
        let hosted = self.rooms.get_mut(&room_id).expect("checked by handle");
        hosted
            .room
            .subscriber_answered(participant_id, &negotiated, connected, now, &mut self.effects);
        if hosted.room.wants_offers() {
            self.negotiation_pending = true;
        }
        self.apply_held_candidates(room_id, participant_id, PeerRole::Subscriber, id);
        self.peers.replay_early_checks(id, now);
        self.apply(room_id, now);
        self.drive(id, now);
        Ok(())
    }

    fn ice_candidate(
        &mut self,
        room_id: RoomId,
        participant_id: &str,
        target: PeerRole,
        candidate: IceCandidate,
    ) -> Result<(), Error> {
        connection::validate_candidate(&candidate.candidate)
            .map_err(|e| err(ErrorCode::InvalidCandidate, format!("invalid candidate: {e}")))?;
        let init = RTCIceCandidateInit {
            candidate: candidate.candidate,
            sdp_mid: candidate.sdp_mid,
            sdp_mline_index: candidate.sdp_mline_index,
            ..Default::default()
        };
        let hosted = self.rooms.get_mut(&room_id).expect("checked by handle");
        let ready = hosted
            .room
            .connection(participant_id, target)
            .filter(|&id| self.peers.get(id).is_some_and(|c| c.has_remote));
        match ready {
            Some(id) => match self
                .peers
                .guard(id, "add_remote_candidate", |pc| pc.add_remote_candidate(init))
            {
                Some(Ok(())) => Ok(()),
                Some(Err(e)) => Err(err(ErrorCode::InvalidCandidate, format!("candidate refused: {e}"))),
                None => Err(connection_failed()),
            },
            // Early candidates wait for their description.
            None => hosted.room.hold_candidate(participant_id, target, init),
        }
    }

    fn apply_held_candidates(&mut self, room_id: RoomId, participant_id: &str, role: PeerRole, id: ConnId) {
        let Some(hosted) = self.rooms.get_mut(&room_id) else {
            return;
        };
        for init in hosted.room.take_candidates(participant_id, role) {
            if let Some(Err(e)) = self
                .peers
                .guard(id, "add_remote_candidate", |pc| pc.add_remote_candidate(init))
            {
                tracing::debug!(shard = self.index, participant_id, "held candidate refused: {e}");
            }
        }
    }

    fn shutdown(&mut self) {
        self.room_keys.clear();
        self.views_dirty.clear();
        self.peers.close_all();
        // The connections' last datagrams (DTLS close_notify) go out.
        self.peers.flush_io();
        self.rooms.clear();
        self.room_ids.clear();
    }

    fn debug_snapshot(&self, meeting_id: &str) -> Option<serde_json::Value> {
        let (_, hosted) = self.hosted(meeting_id)?;
        let conn_state = |id: Option<ConnId>| {
            let id = id?;
            let c = self.peers.get(id)?;
            Some(serde_json::json!({
                "conn": id,
                "connected": c.connected,
                "broken": c.broken,
                "state": c.state.to_string(),
                "nominated": c.nominated.map(|p| p.addr().to_string()),
                "transport": c.nominated.map(|p| p.transport()),
                "idle_ms": c.last_seen.elapsed().as_millis() as u64,
                "junk": c.junk.total,
            }))
        };
        let mut snapshot = hosted.room.debug_snapshot(conn_state);
        if let Some(object) = snapshot.as_object_mut() {
            object.insert("shard".into(), self.index.into());
            // The other shards holding part of the meeting, which its local tracks are relayed to.
            object.insert("relay_peers".into(), hosted.spread.peers().into());
            object.insert("media_addr".into(), self.peers.advertised().to_string().into());
            // The shard socket's batching so far: datagrams per system call each way.
            let udp = self.peers.udp();
            let totals = udp.totals();
            object.insert(
                "udp".into(),
                serde_json::json!({
                    "gso_segments": udp.max_segments(),
                    "queued": udp.queued(),
                    "blocked": udp.blocked(),
                    "datagrams_sent": totals.datagrams_sent,
                    "send_calls": totals.send_calls,
                    "gso_messages": totals.gso_messages,
                    "datagrams_received": totals.datagrams_received,
                    "recv_calls": totals.recv_calls,
                }),
            );
        }
        Some(snapshot)
    }
}

/// A compound RTCP packet's feedback handed to the room it came to (`Shard::on_rtcp`).
struct ToRoom<'s> {
    id: ConnId,
    room: &'s mut MediaRoom,
    peers: &'s mut Peers,
    effects: &'s mut Vec<Effect>,
    now: Instant,
    ntp_now: u32,
    /// Whether TWCC feedback came (the room may have started probing).
    twcc: bool,
}

impl Visit for ToRoom<'_> {
    fn keyframe_request(&mut self, ssrcs: impl Iterator<Item = u32>) {
        for ssrc in ssrcs {
            self.room.keyframe_requested(self.id, ssrc, self.now, self.effects);
        }
    }

    fn twcc(&mut self, acks: impl Iterator<Item = super::bwe::Ack>) {
        Counters::add(&self.peers.counters().twcc_feedback_received, 1);
        self.room.congestion_feedback(self.id, acks, self.now);
        self.twcc = true;
    }

    fn remb(&mut self, bps: Option<u64>) {
        if let Some(bps) = bps {
            self.room.remb_received(self.id, bps, self.now);
        }
    }

    fn reports(&mut self, blocks: impl Iterator<Item = Report>) {
        for r in blocks {
            let rtt = super::quality::rtt_of(self.ntp_now, r.last_sender_report, r.delay);
            self.room
                .reception_report(self.id, r.ssrc, r.fraction_lost, r.jitter, rtt);
        }
    }

    fn nack(&mut self, media_ssrc: u32, seqs: impl Iterator<Item = u16>) {
        let sink = &mut self.peers.sink(self.now);
        self.room
            .nack_received(self.id, media_ssrc, seqs, self.now, sink, self.effects);
    }
}
