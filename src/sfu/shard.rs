//! One shard: a thread with a current-thread tokio runtime that owns one UDP
//! media socket, every connection of the meetings placed on it, and a timer
//! heap of their deadlines.
//!
//! Run to completion: a datagram is routed by the demultiplexer, handed to its
//! connection, and that connection is drained (writes, events, reads) at once;
//! an RTP packet read from a publisher is rewritten for and written into every
//! subscriber connection in the same turn, whose datagrams go straight out with
//! a non-blocking send (a full socket buffer drops that datagram and counts it,
//! it never stalls the loop). Commands from the async world arrive on a
//! channel and run between datagrams. Nothing here is shared across threads
//! except atomics.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use gatehouse_signaling::Error;
use gatehouse_signaling::protocol::{MediaMessage, ServerMessage, TrackInfo};
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::MediaParticipant;
use super::connection::{Conn, ConnId, RoomId};
use super::demux::{self, Route, Router};
use super::forward::DropDice;
use super::room::Room;
use super::stats::{Counters, StatsPair};

/// Largest datagram we read; WebRTC keeps packets under the path MTU.
const RECV_BUF: usize = 2048;
/// Datagrams drained per wake-up before commands and timers get a turn.
const RECV_BATCH: usize = 64;
/// Commands taken per turn besides the one the select may pick: enough that joins and
/// offers never queue behind a saturated socket, few enough to keep a turn short.
const COMMAND_BATCH: usize = 16;
/// A subscriber we have heard nothing from (not even a consent check, which
/// browsers send every few seconds) for this long gets no media.
const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Keyframe requests per published track are at most this frequent.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_millis(300);

/// A request from the async API to a shard.
pub enum Command {
    Add {
        participant: MediaParticipant,
        outbox: mpsc::UnboundedSender<ServerMessage>,
        meeting_stats: Arc<Counters>,
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
    SetDropProbability(f64),
    /// Close every connection, free every meeting and stop the shard.
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Everything one shard thread owns.
pub struct Shard {
    pub(super) index: usize,
    socket: UdpSocket,
    /// The address in our host candidate, also used as the local address we
    /// tell `rtc` for every datagram (it matches its local candidate by it).
    pub(super) advertised: SocketAddr,
    pub(super) router: Router<ConnId>,
    pub(super) conns: HashMap<ConnId, Conn>,
    next_conn: ConnId,
    timers: BinaryHeap<Reverse<(Instant, ConnId)>>,
    pub(super) rooms: HashMap<RoomId, Room>,
    pub(super) room_ids: HashMap<String, RoomId>,
    next_room: RoomId,
    pub(super) process: Arc<Counters>,
    live: Arc<AtomicUsize>,
    pub(super) dice: DropDice,
    /// Connections whose events must be drained before the turn ends.
    dirty: Vec<ConnId>,
    /// Some subscriber connection wants a (re)offer: checked once per turn.
    pub(super) negotiation_pending: bool,
}

impl Shard {
    pub fn new(
        index: usize,
        socket: UdpSocket,
        advertised: SocketAddr,
        process: Arc<Counters>,
        live: Arc<AtomicUsize>,
        drop_probability: f64,
    ) -> Self {
        let mut dice = DropDice::new(0x9E37_79B9_7F4A_7C15 ^ index as u64);
        dice.set_probability(drop_probability);
        Self {
            index,
            socket,
            advertised,
            router: Router::new(),
            conns: HashMap::new(),
            next_conn: 1,
            timers: BinaryHeap::new(),
            rooms: HashMap::new(),
            room_ids: HashMap::new(),
            next_room: 1,
            process,
            live,
            dice,
            dirty: Vec::new(),
            negotiation_pending: false,
        }
    }

    /// The loop. Returns when the command channel closes (the `Sfu` was dropped).
    pub async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let deadline = self.next_deadline();
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(
                deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
            ));
            tokio::select! {
                biased;
                received = self.socket.recv_from(&mut buf) => {
                    match received {
                        Ok((n, from)) => {
                            let now = Instant::now();
                            self.on_datagram(now, from, &buf[..n]);
                            for _ in 1..RECV_BATCH {
                                match self.socket.try_recv_from(&mut buf) {
                                    Ok((n, from)) => self.on_datagram(now, from, &buf[..n]),
                                    Err(_) => break,
                                }
                            }
                        }
                        // ICMP port unreachable surfaces as an error on some
                        // platforms: one peer's problem, not the shard's.
                        Err(e) => tracing::debug!(shard = self.index, "recv_from: {e}"),
                    }
                }
                command = commands.recv() => {
                    match command {
                        Some(command) => {
                            if self.on_command_or_stop(command) {
                                return;
                            }
                        }
                        None => break,
                    }
                }
                _ = sleep => {}
            }
            // A saturated socket wins the biased select every turn; commands (joins,
            // offers, leaves) still get a bounded share of each turn.
            for _ in 0..COMMAND_BATCH {
                let Ok(command) = commands.try_recv() else { break };
                if self.on_command_or_stop(command) {
                    return;
                }
            }
            self.fire_timers(Instant::now());
            self.drain_dirty(Instant::now());
            if self.negotiation_pending {
                self.run_negotiations(Instant::now());
                self.drain_dirty(Instant::now());
            }
        }
        self.shutdown();
    }

    /// Carries out a command; `true` when it was `Shutdown` (done, the loop ends).
    fn on_command_or_stop(&mut self, command: Command) -> bool {
        match command {
            Command::Shutdown { reply } => {
                self.shutdown();
                let _ = reply.send(());
                true
            }
            command => {
                self.on_command(command);
                false
            }
        }
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        // Drop stale heap entries at the top so we do not wake up for nothing.
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            match self.conns.get(&id) {
                Some(conn) if conn.deadline == Some(at) => return Some(at),
                _ => {
                    self.timers.pop();
                }
            }
        }
        None
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            if conn.deadline != Some(at) || conn.broken {
                continue;
            }
            conn.deadline = None;
            match std::panic::catch_unwind(AssertUnwindSafe(|| conn.pc.handle_timeout(now))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(shard = self.index, conn = id, "handle_timeout: {e}"),
                Err(_) => {
                    self.break_conn(id);
                    continue;
                }
            }
            self.drive(id, now);
        }
        // Heap hygiene: stale entries pile up when deadlines move; rebuild when large.
        if self.timers.len() > 4 * self.conns.len() + 1024 {
            let conns = &self.conns;
            self.timers
                .retain(|Reverse((at, id))| conns.get(id).is_some_and(|c| c.deadline == Some(*at)));
        }
    }

    fn on_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let id = match self.router.route(from, data) {
            Route::Conn { key, nominated, .. } => {
                if let Some(conn) = self.conns.get_mut(&key) {
                    conn.last_seen = now;
                    if nominated && conn.nominated != Some(from) {
                        conn.pending_nomination = Some(from);
                    }
                }
                key
            }
            Route::Drop(reason) => {
                Counters::add(&self.process.garbage_datagrams, 1);
                Counters::add(&self.process.dropped_packets, 1);
                tracing::trace!(shard = self.index, %from, ?reason, "dropped datagram");
                return;
            }
        };
        let Some(conn) = self.conns.get_mut(&id).filter(|c| !c.broken) else {
            Counters::add(&self.process.dropped_packets, 1);
            return;
        };
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.advertised,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(data),
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| conn.pc.handle_read(msg))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // A datagram the connection refused (bad DTLS record, SRTP auth failure, ...).
                Counters::add(&self.process.dropped_packets, 1);
                tracing::debug!(shard = self.index, conn = id, "handle_read: {e}");
            }
            Err(_) => return self.break_conn(id),
        }
        self.drive(id, now);
    }

    /// Drains a connection: sends its datagrams, handles its events and
    /// application messages (forwarding RTP), re-arms its timer.
    pub(super) fn drive(&mut self, id: ConnId, now: Instant) {
        loop {
            let Some(conn) = self.conns.get_mut(&id).filter(|c| !c.broken) else {
                return;
            };
            flush(&self.socket, &self.process, conn);
            if let Some(event) = conn.pc.poll_event() {
                self.on_event(id, event, now);
                continue;
            }
            if let Some(TaggedRTCMessage { message, .. }) = conn.pc.poll_read() {
                self.on_message(id, message, now);
                continue;
            }
            break;
        }
        if let Some(conn) = self.conns.get_mut(&id) {
            flush(&self.socket, &self.process, conn);
            rearm(&mut self.timers, id, conn);
        }
    }

    /// Writes out a connection's datagrams and re-arms its timer, without
    /// handling events (used for subscriber legs on the forwarding path; their
    /// events are drained at the end of the turn).
    pub(super) fn flush_conn(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get_mut(&id) {
            flush(&self.socket, &self.process, conn);
            rearm(&mut self.timers, id, conn);
            mark_dirty(&mut self.dirty, id);
        }
    }

    fn drain_dirty(&mut self, now: Instant) {
        while let Some(id) = self.dirty.pop() {
            self.drive(id, now);
        }
    }

    fn on_event(&mut self, id: ConnId, event: RTCPeerConnectionEvent, now: Instant) {
        match event {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                let Some(conn) = self.conns.get_mut(&id) else {
                    return;
                };
                tracing::debug!(shard = self.index, conn = id, participant = %conn.participant, role = ?conn.role, %state, "connection state");
                conn.state = state;
                let was = conn.connected;
                conn.connected = state == RTCPeerConnectionState::Connected;
                if conn.connected && !was {
                    self.on_connected(id, now);
                }
            }
            RTCPeerConnectionEvent::OnTrack(rtc::peer_connection::event::RTCTrackEvent::OnOpen(init)) => {
                self.on_track_open(id, init, now);
            }
            _ => {}
        }
    }

    fn on_message(&mut self, id: ConnId, message: RTCMessage, now: Instant) {
        match message {
            RTCMessage::RtpPacket(_, packet) => self.forward(id, packet, now),
            RTCMessage::RtcpPacket(_, packets) => self.on_feedback(id, &packets, now),
            _ => {}
        }
    }

    /// Forwards one RTP packet from a publisher connection to every subscriber leg of its track.
    fn forward(&mut self, from: ConnId, packet: rtc::rtp::Packet, now: Instant) {
        let Some(room_id) = self.conns.get(&from).map(|c| c.room) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        let Some(t) = room
            .tracks
            .iter()
            .position(|t| t.conn == from && t.ssrc == packet.header.ssrc)
        else {
            // Not (yet) a published track: an unannounced mid, RTX, or a track being removed.
            return;
        };
        room.tracks[t].packets += 1;
        let pli_due = room.tracks[t].throttle.poll(now);
        let track = &room.tracks[t];
        let owner = track.info.participant_id.as_str();
        let track_id = track.info.track_id.as_str();
        let stats = &room.stats;
        let size = (packet.header.marshal_size_hint() + packet.payload.len()) as u64;
        for p in room.participants.iter_mut() {
            if p.id == owner {
                continue;
            }
            let Some(sub) = p.subscriber else { continue };
            let Some(down) = p.down.iter_mut().find(|d| d.track_id == track_id) else {
                continue;
            };
            if !down.negotiated || down.leg.accepts(&packet.header).is_err() {
                continue;
            }
            let Some(conn) = self.conns.get_mut(&sub) else {
                continue;
            };
            if !conn.connected || now.saturating_duration_since(conn.last_seen) > CONSENT_TIMEOUT {
                continue;
            }
            if self.dice.roll() {
                stats.add(|c| &c.dropped_packets, 1);
                continue;
            }
            let copy = down.leg.copy(&packet);
            let written = conn.pc.rtp_sender(down.sender).map(|mut s| s.write_rtp(now, copy));
            match written {
                Some(Ok(())) => {
                    down.forwarded += 1;
                    stats.add(|c| &c.forwarded_packets, 1);
                    stats.add(|c| &c.forwarded_bytes, size);
                }
                Some(Err(e)) => {
                    stats.add(|c| &c.dropped_packets, 1);
                    tracing::trace!(shard = self.index, conn = sub, "write_rtp: {e}");
                }
                None => stats.add(|c| &c.dropped_packets, 1),
            }
            flush(&self.socket, &self.process, conn);
            rearm(&mut self.timers, sub, conn);
            mark_dirty(&mut self.dirty, sub);
        }
        if pli_due {
            self.send_pli(room_id, t, now);
        }
    }

    fn shutdown(&mut self) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.close_conn(id);
        }
        self.rooms.clear();
        self.room_ids.clear();
    }

    /// Registers a new connection with the demultiplexer and the live count.
    pub(super) fn insert_conn(&mut self, conn: Conn) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        let registered = self.router.register(&conn.ufrag, id);
        debug_assert!(registered, "ufrags are random and checked before use");
        self.conns.insert(id, conn);
        self.live.fetch_add(1, Ordering::Relaxed);
        id
    }

    /// Closes a connection and forgets it everywhere.
    pub(super) fn close_conn(&mut self, id: ConnId) {
        let Some(mut conn) = self.conns.remove(&id) else {
            return;
        };
        if !conn.broken {
            match std::panic::catch_unwind(AssertUnwindSafe(|| conn.pc.close())) {
                Ok(Ok(())) => flush(&self.socket, &self.process, &mut conn),
                Ok(Err(e)) => tracing::debug!(shard = self.index, conn = id, "close: {e}"),
                Err(_) => tracing::error!(shard = self.index, conn = id, "rtc panicked while closing"),
            }
        }
        self.router.remove(id);
        self.live.fetch_sub(1, Ordering::Relaxed);
    }

    /// `rtc` panicked inside a connection. Its state cannot be trusted: stop
    /// feeding and polling it (the rest of the shard goes on) and tell its owner,
    /// whose client has to rejoin for media on it.
    fn break_conn(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.broken = true;
        conn.connected = false;
        tracing::error!(shard = self.index, conn = id, participant = %conn.participant, role = ?conn.role, "rtc panicked: connection abandoned");
        let (room, participant) = (conn.room, conn.participant.clone());
        if let Some(p) = self
            .rooms
            .get(&room)
            .and_then(|r| r.participants.iter().find(|p| p.id == participant))
        {
            p.send(ServerMessage::error(
                gatehouse_signaling::ErrorCode::Internal,
                "a media connection failed; leave and rejoin the call",
            ));
        }
    }

    pub(super) fn ufrag_in_use(&self, ufrag: &str) -> bool {
        self.conns.values().any(|c| c.ufrag == ufrag)
    }

    pub(super) fn new_room_id(&mut self) -> RoomId {
        let id = self.next_room;
        self.next_room += 1;
        id
    }

    pub(super) fn stats_for(&self, room: RoomId) -> Option<StatsPair> {
        self.rooms.get(&room).map(|r| r.stats.clone())
    }

    fn on_command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Add {
                participant,
                outbox,
                meeting_stats,
                reply,
            } => {
                let result = self.add_participant(participant, outbox, meeting_stats, now);
                let _ = reply.send(result);
            }
            Command::Handle {
                meeting_id,
                participant_id,
                message,
                reply,
            } => {
                let result = self.handle(&meeting_id, &participant_id, message, now);
                let _ = reply.send(result);
            }
            Command::Remove {
                meeting_id,
                participant_id,
                reply,
            } => {
                self.remove_participant(&meeting_id, &participant_id, now);
                let _ = reply.send(());
            }
            Command::Tracks { meeting_id, reply } => {
                let tracks = self
                    .room_ids
                    .get(&meeting_id)
                    .and_then(|id| self.rooms.get(id))
                    .map(|r| r.tracks.iter().map(|t| t.info.clone()).collect())
                    .unwrap_or_default();
                let _ = reply.send(tracks);
            }
            Command::Debug { meeting_id, reply } => {
                let snapshot = self.room_ids.get(&meeting_id).map(|&id| self.debug_snapshot(id));
                let _ = reply.send(snapshot);
            }
            Command::SetDropProbability(p) => self.dice.set_probability(p),
            Command::Shutdown { reply } => {
                // Handled by the loop; kept exhaustive here.
                self.shutdown();
                let _ = reply.send(());
            }
        }
        self.run_negotiations(now);
    }

    fn debug_snapshot(&self, room_id: RoomId) -> serde_json::Value {
        let Some(room) = self.rooms.get(&room_id) else {
            return serde_json::Value::Null;
        };
        let conn_state = |id: Option<ConnId>| {
            id.and_then(|id| self.conns.get(&id)).map(|c| {
                serde_json::json!({
                    "conn": id,
                    "connected": c.connected,
                    "state": c.state.to_string(),
                    "nominated": c.nominated.map(|a| a.to_string()),
                    "idle_ms": c.last_seen.elapsed().as_millis() as u64,
                })
            })
        };
        serde_json::json!({
            "meeting_id": room.meeting_id,
            "shard": self.index,
            "media_addr": self.advertised.to_string(),
            "counters": room.stats.meeting.snapshot(),
            "participants": room.participants.iter().map(|p| serde_json::json!({
                "participant_id": p.id,
                "kind": p.kind,
                "may_present": p.may_present,
                "publisher": conn_state(p.publisher),
                "subscriber": conn_state(p.subscriber),
                "announced": p.announced,
                "negotiation": { "outstanding": p.negotiation.outstanding, "wanted": p.negotiation.wanted },
                "receiving": p.down.iter().map(|d| serde_json::json!({
                    "track_id": d.track_id,
                    "kind": d.kind,
                    "ssrc": d.leg.ssrc,
                    "negotiated": d.negotiated,
                    "paused": d.leg.paused(),
                    "forwarded": d.forwarded,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "tracks": room.tracks.iter().map(|t| serde_json::json!({
                "track": t.info,
                "mid": t.mid,
                "ssrc": t.ssrc,
                "codec": t.codec.mime_type,
                "packets": t.packets,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Sends everything a connection has queued. Non-blocking: a full socket
/// buffer drops the datagram (counted) rather than stalling every other peer.
///
/// STUN goes where `rtc` addressed it (responses answer their request's
/// source); everything else follows the client's latest nomination.
fn flush(socket: &UdpSocket, process: &Counters, conn: &mut Conn) {
    while let Some(out) = conn.pc.poll_write() {
        if conn.pending_nomination == Some(out.transport.peer_addr) && demux::is_binding_success(&out.message) {
            conn.nominated = conn.pending_nomination.take();
        }
        let to = match conn.nominated {
            Some(nominated) if demux::classify(&out.message) != demux::Class::Stun => nominated,
            _ => out.transport.peer_addr,
        };
        if let Err(e) = socket.try_send_to(&out.message, to) {
            Counters::add(&process.dropped_packets, 1);
            tracing::trace!("send_to {to}: {e}");
        }
    }
}

/// Remembers a connection for the end-of-turn drain, once.
fn mark_dirty(dirty: &mut Vec<ConnId>, id: ConnId) {
    if !dirty.contains(&id) {
        dirty.push(id);
    }
}

/// Pushes the connection's next deadline onto the heap if it changed.
fn rearm(timers: &mut BinaryHeap<Reverse<(Instant, ConnId)>>, id: ConnId, conn: &mut Conn) {
    let next = conn.pc.poll_timeout();
    if next != conn.deadline {
        conn.deadline = next;
        if let Some(at) = next {
            timers.push(Reverse((at, id)));
        }
    }
}

/// Header size without marshalling (12 bytes + CSRCs + extension block).
trait MarshalSizeHint {
    fn marshal_size_hint(&self) -> usize;
}

impl MarshalSizeHint for rtc::rtp::header::Header {
    fn marshal_size_hint(&self) -> usize {
        rtc::shared::marshal::MarshalSize::marshal_size(self)
    }
}
