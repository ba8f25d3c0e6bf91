//! A shard's peer connections and the socket they share: the only place that
//! touches `rtc` connections or the media socket.
//!
//! Every call into a connection goes through [`Peers::guard`]: a panic inside
//! `rtc` abandons that one connection (it is never fed or polled again, and
//! its owner is told through [`Peers::take_broken`]) and the shard goes on.
//! Datagrams a connection writes are queued on the socket ([`UdpIo`]) and sent
//! together when the shard's turn ends ([`Peers::flush_io`]); a full socket buffer
//! keeps them queued (bounded, then dropped and counted), it never stalls the loop.
//! Deadlines sit on the shard's coarse timer grid ([`Deadlines`]), re-armed whenever a
//! connection was touched; connections due in one tick fire in one turn.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::rtp::Packet;
use rtc::rtp::header::Extension;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::udp::UdpIo;

use super::connection::{Conn, Path};
use super::demux::{self, Junk, Route, Router};
use super::forward::DropDice;
use super::ice_lite;
use super::idmap::IdMap;
use super::media_room::{Admit, ConnId, LegSink};
use super::own_srtp::OwnSrtp;
use super::reaper::Reaper;
use super::stats::Counters;
use super::tcp::{Directory, Link, LinkId, ShardTcp};
use super::timers::{Deadlines, Deferred, TIMER_TICK};

/// A subscriber we have heard nothing from (not even a consent check, which
/// browsers send every few seconds) for this long gets no media.
const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The size of the buffer forwarded copies are sealed in: about a turn's worth of datagrams
/// before it is taken again or replaced (`bytes` makes a replacement as large, up to 64 KiB).
const ARENA: usize = 64 * 1024;

/// Lists of header extensions kept for reuse ([`Peers::recycle`]): a datagram opens into
/// one packet, or a few with a layer's retransmissions repaired.
const SPARE_EXTENSIONS: usize = 8;

/// A shard's part in ICE over TCP (see [`super::tcp`]).
pub struct TcpSide {
    /// Our passive TCP candidate's address (the same for every shard).
    pub advertised: SocketAddr,
    /// Where this shard's ufrags are published for the acceptor.
    pub directory: Directory,
    /// This shard's TCP queue, handed to each link's reader.
    pub events: mpsc::Sender<ShardTcp>,
}

/// The connections of one shard, their socket, routing and timers.
pub struct Peers {
    shard: usize,
    /// The shard's media socket, with its batched receive and send queue.
    udp: UdpIo,
    /// The address in our host candidate, also the local address we tell `rtc`
    /// for every datagram (it matches its local candidate by it).
    advertised: SocketAddr,
    router: Router<ConnId>,
    conns: IdMap<ConnId, Conn>,
    next_conn: ConnId,
    /// Each connection's next `rtc` deadline, on the [`TIMER_TICK`] grid.
    timers: Deadlines<ConnId>,
    /// Settling put off by [`settle_media`](Self::settle_media), paid a tick later.
    deferred: Deferred<ConnId>,
    /// What the last datagram the shard opened itself came out of its connection's receive
    /// interceptors as, and that connection (`open_own`, [`take_fast`](Self::take_fast)).
    fast: Vec<Packet>,
    fast_conn: ConnId,
    /// Forwarded packets' lists of header extensions, emptied, for the next packets opened
    /// (`open_own`, [`recycle`](Self::recycle)): opening allocates none.
    spare_extensions: Vec<Vec<Extension>>,
    /// Where forwarded copies are sealed (`srtp_gcm::Sealer::seal_in`), the same way: its
    /// space taken again once the datagrams cut from it were sent.
    out_arena: BytesMut,
    /// Publishers' receipts on the wire before they are sealed (`Receipts::due_into`): the
    /// compounds one after the other, each one's end, and the sealed datagrams; kept.
    receipt_wire: Vec<u8>,
    receipt_ends: Vec<usize>,
    receipt_sealed: Vec<BytesMut>,
    /// The RTCP the last datagram taken by the shard itself was, for the room, and its
    /// connection (`own_rtcp`).
    fast_rtcp: Option<(ConnId, super::own_rtcp::Opened)>,
    /// Connections whose events must be drained before the turn ends.
    dirty: Vec<ConnId>,
    /// Connections written to this turn (forwarded packets): sent and re-armed when the
    /// turn ends ([`settle_written`](Self::settle_written)); each counted in `Conn::written`.
    written: Vec<ConnId>,
    /// The buffer [`pay_deferred`](Self::pay_deferred) takes the debtors into.
    owed: Vec<ConnId>,
    /// Connections that broke (a panic in `rtc`) and whose owner is not told yet.
    broken: Vec<ConnId>,
    /// This shard's counters (summed over shards when read).
    counters: Arc<Counters>,
    /// This shard's live connections.
    live: Arc<AtomicUsize>,
    /// The loss test hook.
    pub dice: DropDice,
    /// The wire-loss test hook: forwarded packets recorded as sent, then not sent
    /// (what a lossy link toward the subscriber does; NACKs can repair it).
    pub wire_loss: DropDice,
    /// ICE-TCP, when on: our candidate and this shard's TCP links, by id and by
    /// the client's end (unique: every link ends at our one listening port).
    tcp: Option<TcpSide>,
    links: HashMap<LinkId, Link>,
    link_by_peer: HashMap<SocketAddr, LinkId>,
    next_link: LinkId,
    /// How forwarded packets go into `rtc` (both levers on; the bench turns them off to
    /// measure each).
    pub levers: WriteLevers,
    /// Where closed connections are freed, off the turn.
    reaper: Reaper,
}

/// The ways forwarded packets skip work in `rtc` (issue 13; docs/ARCHITECTURE.md).
#[derive(Debug, Clone, Copy)]
pub struct WriteLevers {
    /// Into the connection's write chain directly, not through `write_rtp`'s checks.
    pub direct: bool,
    /// Sent when the turn drains the connection, not flushed (and its timer re-armed) per copy.
    pub drain_once: bool,
    /// Encrypted by the shard and queued for the socket, past `rtc`'s write chain
    /// (`own_srtp`); read when a subscriber connection is built.
    pub own_srtp: bool,
    /// A publisher's media opened by the shard and fed to its receive interceptors, past
    /// `rtc`'s read pipeline (`own_inbound`); read when a publisher connection is built.
    pub own_inbound: bool,
}

impl Default for WriteLevers {
    fn default() -> Self {
        Self {
            direct: true,
            drain_once: true,
            own_srtp: true,
            own_inbound: true,
        }
    }
}

impl Peers {
    pub fn new(
        shard: usize,
        socket: UdpSocket,
        advertised: SocketAddr,
        counters: Arc<Counters>,
        live: Arc<AtomicUsize>,
        tcp: Option<TcpSide>,
    ) -> std::io::Result<Self> {
        Ok(Self {
            shard,
            udp: UdpIo::new(socket)?,
            advertised,
            router: Router::new(),
            conns: IdMap::default(),
            next_conn: 1,
            timers: Deadlines::new(Instant::now(), TIMER_TICK),
            deferred: Deferred::new(TIMER_TICK),
            fast: Vec::new(),
            fast_conn: 0,
            spare_extensions: Vec::new(),
            out_arena: BytesMut::with_capacity(ARENA),
            receipt_wire: Vec::new(),
            receipt_ends: Vec::new(),
            receipt_sealed: Vec::new(),
            fast_rtcp: None,
            dirty: Vec::new(),
            written: Vec::new(),
            owed: Vec::new(),
            broken: Vec::new(),
            counters,
            live,
            dice: DropDice::new(0x9E37_79B9_7F4A_7C15 ^ shard as u64),
            wire_loss: DropDice::new(0xD1B5_4A32_D192_ED03 ^ shard as u64),
            tcp,
            links: HashMap::new(),
            link_by_peer: HashMap::new(),
            next_link: 1,
            levers: WriteLevers::default(),
            reaper: Reaper::spawn(format!("sfu-reaper-{shard}")),
        })
    }

    pub fn udp(&self) -> &UdpIo {
        &self.udp
    }

    pub fn udp_mut(&mut self) -> &mut UdpIo {
        &mut self.udp
    }

    /// Sends every datagram queued this turn (see [`UdpIo::flush`]); what the kernel
    /// refused for good is counted as dropped.
    pub fn flush_io(&mut self) {
        let flushed = self.udp.flush();
        if flushed.failed > 0 {
            Counters::add(&self.counters.dropped_packets, flushed.failed as u64);
        }
    }

    pub fn advertised(&self) -> SocketAddr {
        self.advertised
    }

    /// Our passive TCP candidate's address, when ICE-TCP is on.
    pub fn tcp_advertised(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().map(|t| t.advertised)
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    pub fn get(&self, id: ConnId) -> Option<&Conn> {
        self.conns.get(&id)
    }

    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(&id)
    }

    pub fn is_broken(&self, id: ConnId) -> bool {
        self.conns.get(&id).is_some_and(|c| c.broken)
    }

    /// On this shard, or (with ICE-TCP, whose one port serves every shard) on any.
    pub fn ufrag_in_use(&self, ufrag: &str) -> bool {
        self.conns.values().any(|c| c.ufrag == ufrag)
            || self.tcp.as_ref().is_some_and(|t| t.directory.shard_of(ufrag).is_some())
    }

    /// Runs `f` on a connection's `rtc` peer connection. `None` if the
    /// connection is unknown or broken, or if `rtc` panicked, which breaks it.
    pub fn guard<T>(
        &mut self,
        id: ConnId,
        what: &'static str,
        f: impl FnOnce(&mut RTCPeerConnection) -> T,
    ) -> Option<T> {
        let conn = self.conns.get_mut(&id).filter(|c| !c.broken)?;
        // Whatever `f` does may move `rtc`'s deadline: unknown until the next re-arm.
        conn.rtc_due = None;
        match std::panic::catch_unwind(AssertUnwindSafe(|| f(&mut conn.pc))) {
            Ok(value) => Some(value),
            Err(_) => {
                conn.broken = true;
                conn.connected = false;
                self.timers.remove(id);
                tracing::error!(shard = self.shard, conn = id, meeting_id = %conn.meeting_id, participant_id = %conn.participant, role = ?conn.role, call = what, "rtc panicked: connection abandoned");
                self.broken.push(id);
                None
            }
        }
    }

    /// Connections broken since the last call (each reported once).
    pub fn take_broken(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.broken)
    }

    /// Registers a new connection with the demultiplexer and the live count.
    pub fn insert(&mut self, conn: Conn) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        let registered = self.router.register(&conn.ufrag, id);
        debug_assert!(registered, "ufrags are random and checked before use");
        if let Some(tcp) = &self.tcp {
            tcp.directory.insert(&conn.ufrag, self.shard);
        }
        self.conns.insert(id, conn);
        self.live.fetch_add(1, Ordering::Relaxed);
        id
    }

    /// Closes a connection (its last datagrams go out) and forgets it everywhere.
    pub fn close(&mut self, id: ConnId) {
        if self.guard(id, "close", |pc| pc.close()).is_some() {
            self.flush(id);
        }
        self.timers.remove(id);
        self.deferred.forget(id);
        if let Some(conn) = self.conns.remove(&id) {
            self.router.remove(id);
            if let Some(tcp) = &self.tcp {
                tcp.directory.remove(&conn.ufrag);
            }
            self.live.fetch_sub(1, Ordering::Relaxed);
            // Freed off the turn (`reaper`): dropping `rtc`'s state costs more than closing it.
            self.reaper.reap(conn);
        }
        // Its TCP links close with it (dropping a link ends its tasks and socket).
        let links: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, l)| l.conn == id)
            .map(|(&k, _)| k)
            .collect();
        for link in links {
            self.link_closed(link);
        }
    }

    /// Closes every connection.
    pub fn close_all(&mut self) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
    }

    /// Routes a datagram to its connection and feeds it in. Returns the
    /// connection to drive, or `None` if the datagram went nowhere (counted).
    pub fn receive(&mut self, now: Instant, from: SocketAddr, data: BytesMut) -> Option<ConnId> {
        match self.router.route(from, &data) {
            Route::Conn { key, nominated, .. } => self.take_in(key, now, Path::Udp(from), nominated, data),
            Route::Drop(reason) => {
                self.garbage();
                tracing::trace!(shard = self.shard, %from, ?reason, "dropped datagram");
                None
            }
        }
    }

    fn garbage(&self) {
        Counters::add(&self.counters.garbage_datagrams, 1);
        Counters::add(&self.counters.dropped_packets, 1);
    }

    /// Takes over a TCP connection the acceptor handed to this shard: its first
    /// frame `first` names the connection it serves for its whole life. Returns
    /// the connection to drive, or `None` if the ufrag is gone (the socket closes).
    pub fn accept_tcp(
        &mut self,
        now: Instant,
        stream: std::net::TcpStream,
        peer: SocketAddr,
        first: BytesMut,
    ) -> Option<ConnId> {
        let tcp = self.tcp.as_ref()?;
        let Some(conn) = super::tcp::first_frame_ufrag(&first).and_then(|ufrag| self.router.by_ufrag(ufrag)) else {
            self.garbage();
            return None;
        };
        let id = self.next_link;
        self.next_link += 1;
        let link = match Link::start(id, conn, stream, peer, tcp.events.clone()) {
            Ok(link) => link,
            Err(e) => {
                tracing::debug!(shard = self.shard, %peer, "media TCP link: {e}");
                return None;
            }
        };
        tracing::debug!(shard = self.shard, conn, %peer, link = id, "media TCP link up");
        self.links.insert(id, link);
        if let Some(old) = self.link_by_peer.insert(peer, id) {
            self.links.remove(&old);
        }
        self.receive_tcp(now, id, first)
    }

    /// Routes a frame from a TCP link to the link's connection and feeds it in.
    /// A check on a link may only name the link's own connection.
    pub fn receive_tcp(&mut self, now: Instant, link: LinkId, data: BytesMut) -> Option<ConnId> {
        let Some(&Link { conn: id, peer, .. }) = self.links.get(&link) else {
            self.garbage();
            return None;
        };
        let request = demux::binding_request(&data);
        let foreign =
            request.is_some_and(|r| demux::local_ufrag(r.username).and_then(|u| self.router.by_ufrag(u)) != Some(id));
        if foreign || demux::classify(&data) == demux::Class::Unknown {
            self.garbage();
            tracing::trace!(shard = self.shard, %peer, link, "dropped frame");
            return None;
        }
        let nominating = request.is_some_and(|r| r.use_candidate);
        self.take_in(id, now, Path::Tcp(peer), nominating, data)
    }

    /// A link's reader ended: the link is forgotten (a connection that nominated
    /// it gets nothing until the client nominates another path).
    pub fn link_closed(&mut self, link: LinkId) {
        if let Some(gone) = self.links.remove(&link)
            && self.link_by_peer.get(&gone.peer) == Some(&link)
        {
            self.link_by_peer.remove(&gone.peer);
        }
    }

    /// Feeds a routed datagram (or frame) from `path` into connection `id`, unless it
    /// is junk: that is counted, logged at a bounded rate, and never reaches `rtc`.
    fn take_in(&mut self, id: ConnId, now: Instant, path: Path, nominating: bool, data: BytesMut) -> Option<ConnId> {
        if let Err(kind) = self.screen(id, &data) {
            self.junk(id, now, path, kind);
            return None;
        }
        let (nominating, mut data) = self.promote_first_check(id, nominating, data);
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.last_seen = now;
            if demux::is_rtp(&data) {
                conn.last_media = Some(now);
            }
            if nominating && conn.nominated != Some(path) {
                conn.pending_nomination = Some(path);
            }
        }
        // A consent check on the path the client nominated, of a connection that is up: the
        // shard answers it itself (its integrity was verified by `screen`), without `rtc`,
        // which would verify it again, answer it and trigger a check of its own to be answered
        // and fed back (issue 13, the idle cost). Its agent's timeouts are off, so it misses
        // nothing it acts on; anything else (a nomination elsewhere, a check before the
        // connection is up) goes to `rtc` as before.
        if let Some(conn) = self.conns.get(&id)
            && conn.connected
            && conn.nominated == Some(path)
            && conn.pending_nomination.is_none()
            && demux::binding_request(&data).is_some()
            && ice_lite::answer_check(&data, path.addr(), &conn.local_pwd, &mut self.out_arena)
        {
            // Written where forwarded copies are sealed: no allocation of its own.
            let answer = self.out_arena.split();
            self.send_bytes(id, path, answer);
            return None;
        }
        // A publisher's media on a stream taken over: opened by the shard and fed to the
        // connection's receive interceptors, past `rtc`'s read (`own_inbound`); what comes
        // out waits in `fast` for the shard to forward.
        if self.open_own(id, now, &mut data) || self.open_own_rtcp(id, now, &data) {
            return None;
        }
        // A client's check (rare: a few per connection, then one per consent interval)
        // is kept, in case it nominated and has to be handed to `rtc` once more.
        let check = demux::binding_request(&data).map(|_| data.clone());
        if check.is_some()
            && let Some(conn) = self.conns.get_mut(&id)
            && !conn.has_remote
        {
            if conn.early_checks.len() < super::connection::MAX_EARLY_CHECKS {
                // Its own small buffer: a held slice would keep the receive pool allocated.
                conn.early_checks.push((path, nominating, BytesMut::from(&data[..])));
            }
            return None;
        }
        let from = path;
        match self.feed(id, now, from, data) {
            Some(Ok(())) => {
                if let Some(check) = check {
                    self.answer_checks(id, now, from, nominating.then_some(check));
                }
                Some(id)
            }
            Some(Err(e)) => {
                // A datagram the connection refused (bad DTLS record, SRTP auth failure, ...).
                Counters::add(&self.counters.dropped_packets, 1);
                tracing::debug!(shard = self.shard, conn = id, "handle_read: {e}");
                Some(id)
            }
            None => {
                Counters::add(&self.counters.dropped_packets, 1);
                None
            }
        }
    }

    /// [`take_in`](Self::take_in)'s own way for a publisher's media (`own_inbound`): an RTP
    /// datagram of a stream taken over, from any path routed to a connection that has
    /// nominated one (as `rtc` reads media from any address once it has selected a pair: an
    /// address change's first packets come before its nomination), is opened here and shown
    /// to the connection's receive interceptors; what comes out is left in
    /// [`fast`](Self::take_fast). Returns whether the datagram was taken (opened in place, or
    /// refused as `rtc` would refuse it: counted as dropped; `data` is left empty then).
    /// Anything else is `rtc`'s.
    fn open_own(&mut self, id: ConnId, now: Instant, data: &mut BytesMut) -> bool {
        let Self {
            conns,
            timers,
            fast,
            fast_conn,
            counters,
            shard,
            spare_extensions,
            ..
        } = self;
        let Some(conn) = conns.get_mut(&id) else {
            return false;
        };
        let (Some(inbound), Some(chain)) = (conn.inbound.as_mut(), conn.hosted.as_ref()) else {
            return false;
        };
        if conn.nominated.is_none()
            || !demux::is_rtp(data)
            || !super::own_inbound::ssrc_of(data).is_some_and(|ssrc| inbound.has(ssrc))
        {
            return false;
        }
        let spare = spare_extensions.pop().unwrap_or_default();
        // Opened in place: the datagram is the shard's now, whatever comes of it.
        let packet = match inbound.open(std::mem::take(data), spare) {
            Ok(packet) => packet,
            Err(e) => {
                Counters::add(&counters.dropped_packets, 1);
                tracing::trace!(shard = *shard, conn = id, "own inbound: {e}");
                return true;
            }
        };
        Counters::add(&counters.opened_packets, 1);
        fast.clear();
        *fast_conn = id;
        let due = chain.feed(now, packet, fast);
        if due.nack.is_some() {
            // The NACK generator's deadline is `rtc`'s to fire.
            conn.rtc_due = None;
        }
        if let Some(due) = due.earliest() {
            timers.arm_by(id, due, now);
        }
        true
    }

    /// [`take_in`](Self::take_in)'s own way for RTCP (`own_rtcp`): an RTCP datagram to a
    /// connection whose keys are known, from any path routed to it once it has nominated one,
    /// is opened here; a publisher's sender reports go to its receipts, what the room wants is
    /// left in [`take_fast_rtcp`](Self::take_fast_rtcp). Returns whether the datagram was
    /// taken (opened, or refused as `rtc` would refuse it: counted as dropped).
    fn open_own_rtcp(&mut self, id: ConnId, now: Instant, data: &[u8]) -> bool {
        let Some(conn) = self.conns.get_mut(&id) else {
            return false;
        };
        if conn.rtcp_stats.is_none() || conn.nominated.is_none() || !demux::is_rtcp(data) {
            return false;
        }
        if conn.own_rtcp.is_none() {
            let Some(keys) = conn.keys.as_ref().and_then(|k| k.keys()) else {
                return false;
            };
            conn.own_rtcp = conn
                .rtcp_stats
                .clone()
                .and_then(|stats| super::own_rtcp::OwnRtcp::new(&keys, stats))
                .map(Box::new);
            if conn.own_rtcp.is_none() {
                tracing::warn!(
                    shard = self.shard,
                    conn = id,
                    "own RTCP refused the keys: reading through rtc"
                );
                conn.rtcp_stats = None;
                return false;
            }
        }
        let Some(own) = conn.own_rtcp.as_mut() else {
            return false;
        };
        // A publisher's sender reports go to its receipts (their last-SR fields).
        let hosted = conn.hosted.as_ref();
        let senders = |ssrc, ntp_time| {
            if let Some(hosted) = hosted {
                hosted.sender_report(now, ssrc, ntp_time);
            }
        };
        match own.open(data, senders) {
            Ok(Some(packets)) => self.fast_rtcp = Some((id, packets)),
            Ok(None) => {}
            Err(e) => {
                Counters::add(&self.counters.dropped_packets, 1);
                tracing::trace!(shard = self.shard, conn = id, "own RTCP: {e}");
            }
        }
        true
    }

    /// The RTCP the last datagram taken by the shard itself was, if the room wants it
    /// ([`open_own_rtcp`](Self::open_own_rtcp)), and its connection.
    pub fn take_fast_rtcp(&mut self) -> Option<(ConnId, super::own_rtcp::Opened)> {
        self.fast_rtcp.take()
    }

    /// Hands what [`take_fast_rtcp`](Self::take_fast_rtcp) gave back to its connection, once
    /// the room has read it: its buffer opens the next one.
    pub fn give_back_rtcp(&mut self, id: ConnId, opened: super::own_rtcp::Opened) {
        if let Some(own) = self.conns.get_mut(&id).and_then(|c| c.own_rtcp.as_mut()) {
            own.give_back(opened);
        }
    }

    /// The packets the last datagram taken by the shard itself came out of its connection's
    /// receive interceptors as (`open_own`), and that connection; empty after anything else.
    pub fn take_fast(&mut self) -> Option<(ConnId, Vec<Packet>)> {
        if self.fast.is_empty() {
            return None;
        }
        Some((self.fast_conn, std::mem::take(&mut self.fast)))
    }

    /// Takes a forwarded packet's list of header extensions back for the next packet
    /// opened (`open_own`); its extensions, slices of the receive pool, are let go of.
    pub fn recycle(&mut self, packet: Packet) {
        let mut list = packet.header.extensions;
        if list.capacity() > 0 && self.spare_extensions.len() < SPARE_EXTENSIONS {
            list.clear();
            self.spare_extensions.push(list);
        }
    }

    /// Gives back the buffer [`take_fast`](Self::take_fast) lent (kept for the next packet).
    pub fn return_fast(&mut self, mut packets: Vec<Packet>) {
        packets.clear();
        if self.fast.capacity() < packets.capacity() {
            self.fast = packets;
        }
    }

    /// `rtc` delivered packet `seq` of `ssrc` to a track of publisher connection `id`: from
    /// now on the shard opens that stream's packets itself (`own_inbound`), once the
    /// connection's keys are known.
    pub fn take_over(&mut self, id: ConnId, ssrc: u32, seq: u16) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.hosted.is_none() {
            return;
        }
        if conn.inbound.is_none() {
            let Some(keys) = conn.keys.as_ref().and_then(|k| k.keys()) else {
                return;
            };
            conn.inbound = super::own_inbound::OwnInbound::new(&keys).map(Box::new);
            if conn.inbound.is_none() {
                tracing::warn!(
                    shard = self.shard,
                    conn = id,
                    "own inbound refused the keys: reading through rtc"
                );
                conn.keys = None;
                conn.hosted = None;
                return;
            }
            // Its receipts from now on sealed and sent by the shard too (`own_rtcp`).
            if let Some(hosted) = conn.hosted.as_ref() {
                conn.receipts_out = super::own_rtcp::RtcpSealer::new(&keys).map(Box::new);
                if conn.receipts_out.is_some() {
                    hosted.send_receipts_own();
                }
            }
        }
        if let Some(inbound) = conn.inbound.as_mut() {
            inbound.take_over(ssrc, seq);
        }
    }

    /// The client's first authenticated check on a connection that has its description
    /// and no path yet goes to `rtc` as a nomination (see [`ice_lite::nominating_copy`]):
    /// the connection selects that path and starts DTLS at once instead of waiting for
    /// the client to nominate. Anything else passes unchanged.
    fn promote_first_check(&self, id: ConnId, nominating: bool, data: BytesMut) -> (bool, BytesMut) {
        if nominating {
            return (true, data);
        }
        let Some(conn) = self.conns.get(&id) else {
            return (false, data);
        };
        if !conn.has_remote || conn.nominated.is_some() || conn.pending_nomination.is_some() {
            return (false, data);
        }
        if demux::binding_request(&data).is_none() {
            return (false, data);
        }
        match ice_lite::nominating_copy(&data, &conn.local_pwd) {
            Some(copy) => {
                tracing::debug!(shard = self.shard, conn = id, "first check taken as the nomination");
                (true, BytesMut::from(&copy[..]))
            }
            None => (false, data),
        }
    }

    /// The demultiplexer's screen, and for a client's check its MESSAGE-INTEGRITY with
    /// our password (only checks pay for the HMAC: a few per connection per second).
    fn screen(&self, id: ConnId, data: &[u8]) -> Result<(), Junk> {
        let class = demux::screen(data)?;
        if class == demux::Class::Stun
            && demux::binding_request(data).is_some()
            && let Some(conn) = self.conns.get(&id)
            && !demux::check_integrity(data, conn.local_pwd.as_bytes())
        {
            return Err(Junk::BadCheck);
        }
        Ok(())
    }

    /// Counts a junk datagram from a connection's path; logs it at most once per
    /// connection per [`JUNK_LOG_INTERVAL`](super::junk::JUNK_LOG_INTERVAL).
    fn junk(&mut self, id: ConnId, now: Instant, path: Path, kind: Junk) {
        Counters::add(&self.counters.junk_datagrams, 1);
        Counters::add(&self.counters.dropped_packets, 1);
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if let Some(line) = conn.junk.note(kind, now) {
            tracing::warn!(
                shard = self.shard,
                conn = id,
                meeting_id = %conn.meeting_id,
                participant_id = %conn.participant,
                role = ?conn.role,
                %path,
                kind = line.kind.as_str(),
                total = line.total,
                suppressed = line.suppressed,
                "junk datagrams from a participant's address dropped (one line per connection per 10 s at most)"
            );
        }
    }

    /// Hands a connection the checks that arrived before its remote description (see
    /// [`Conn::early_checks`]); call once the description is applied.
    pub fn replay_early_checks(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        for (path, nominating, data) in std::mem::take(&mut conn.early_checks) {
            tracing::debug!(shard = self.shard, conn = id, %path, nominating, "early check handed over");
            self.take_in(id, now, path, nominating, data);
        }
    }

    /// Our local address on a path's transport: the one `rtc` knows our candidate by.
    fn local_addr(&self, path: Path) -> SocketAddr {
        match path {
            Path::Udp(_) => self.advertised,
            Path::Tcp(_) => self.tcp_advertised().unwrap_or(self.advertised),
        }
    }

    /// What `rtc` (and the interceptors) are told a datagram from `path` came over.
    fn transport(&self, path: Path) -> TransportContext {
        TransportContext {
            local_addr: self.local_addr(path),
            peer_addr: path.addr(),
            ecn: None,
            transport_protocol: match path {
                Path::Udp(_) => TransportProtocol::UDP,
                Path::Tcp(_) => TransportProtocol::TCP,
            },
        }
    }

    /// Hands one datagram (or TCP frame) from `from` to a connection.
    fn feed(&mut self, id: ConnId, now: Instant, from: Path, data: BytesMut) -> Option<Result<(), String>> {
        let msg = TaggedBytesMut {
            now,
            transport: self.transport(from),
            message: data,
        };
        self.guard(id, "handle_read", |pc| pc.handle_read(msg).map_err(|e| e.to_string()))
    }

    /// Lite ICE after `rtc` took a client's check from `from` (see [`ice_lite`]):
    /// the checks it triggered toward `from` are answered here, as the client
    /// would; if the client's check nominated (`nominating`) and `rtc` left it
    /// unanswered, it is handed over again, now to be answered and to select the pair.
    fn answer_checks(&mut self, id: ConnId, now: Instant, from: Path, nominating: Option<BytesMut>) {
        let (answered, looped) = self.flush_to(id, Some(from));
        if looped == 0 {
            return;
        }
        if let Some(check) = nominating.filter(|_| !answered) {
            if let Some(Err(e)) = self.feed(id, now, from, check) {
                tracing::debug!(shard = self.shard, conn = id, "nominating check refused on replay: {e}");
            }
            // Its success goes out now, ahead of the DTLS the drive after this starts (`rtc`
            // hands out a sweep's DTLS records before its STUN): a client takes DTLS only
            // from a path its check has succeeded on.
            self.flush(id);
        }
    }

    /// The next event of a connection (`rtc` sweeps its pipeline for events only when
    /// none is queued).
    ///
    /// Draining a connection (`Shard::drive`) costs `rtc` a sweep of its eight handlers
    /// (and the interceptor chain) per `poll_event`, `poll_read`, `poll_write` and
    /// `poll_timeout` call, found or not; a drive makes as few as it can (issue 13): events,
    /// one read sweep, what it queued, then [`settle`](Self::settle) once.
    pub fn poll_event(&mut self, id: ConnId) -> Option<RTCPeerConnectionEvent> {
        self.guard(id, "poll_event", |pc| pc.poll_event()).flatten()
    }

    /// The next application message of a connection. With `sweep`, `rtc`'s read pipeline
    /// runs first (`poll_read`); without, only what it left queued is taken
    /// (`poll_media_read`, then `poll_data_read`: no sweep). One sweep per drive finds
    /// everything the timeout before it produced (a datagram's `handle_read` sweeps by
    /// itself): handling a message writes (into this connection or others) but reads
    /// nothing, and an event's own reads are swept by `poll_event`.
    pub fn poll_message(&mut self, id: ConnId, sweep: bool) -> Option<RTCMessage> {
        self.guard(id, "poll_read", |pc| {
            if sweep {
                pc.poll_read()
            } else {
                pc.poll_media_read().or_else(|| pc.poll_data_read())
            }
        })
        .flatten()
        .map(|TaggedRTCMessage { message, .. }| message)
    }

    /// The end of a drive: sends what the connection queued and re-arms its timer.
    pub fn settle(&mut self, id: ConnId, now: Instant) {
        self.flush(id);
        self.rearm(id, now);
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.written = 0;
        }
    }

    /// [`settle`](Self::settle) after media only: an SRTP or SRTCP datagram read
    /// (`datagrams` = 0), or `datagrams` forwarded packets written (each comes out of
    /// `rtc` as one datagram). A connection that is up and was settled less than a tick
    /// ago takes out only those datagrams and owes the rest of its settling (see
    /// [`Deferred`], paid by [`pay_deferred`](Self::pay_deferred)): each `poll_write` and
    /// `poll_timeout` is a sweep of `rtc`'s whole pipeline, and the one that finds the
    /// write queue empty, and the re-arm, would otherwise run after every packet. Reading
    /// media queues nothing to send (no handler or interceptor of ours writes on a read;
    /// reports, NACKs and feedback are written on timeouts, whose drive settles fully),
    /// so whatever else is queued waits a tick at most.
    pub fn settle_media(&mut self, id: ConnId, now: Instant, datagrams: usize) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if !(conn.connected && self.deferred.may_defer(conn.rearmed_at, now)) {
            self.settle(id, now);
            return;
        }
        conn.written = 0;
        if datagrams > 0 {
            self.flush_at_most(id, datagrams);
        }
        let pay_at = self.timers.slot(now + TIMER_TICK, now);
        self.deferred.owe(id, pay_at);
    }

    /// Bench hook: how long after its last complete settling a connection that moved only
    /// media may put the next off ([`TIMER_TICK`] in production; zero never defers, a long
    /// one always does once settled). Under a profiler the bench runs some fifty times
    /// slower than natively, so a tick passes every few packets; fixed ticks make its
    /// instruction counts independent of the machine's speed.
    pub fn set_settle_tick(&mut self, tick: Duration) {
        self.deferred.set_tick(tick);
    }

    /// Settles every connection whose settling was put off by
    /// [`settle_media`](Self::settle_media), once they are due.
    pub fn pay_deferred(&mut self, now: Instant) {
        if self.deferred.due().is_none_or(|due| due > now) {
            return;
        }
        let mut owed = std::mem::take(&mut self.owed);
        self.deferred.take_due(now, &mut owed);
        for id in owed.drain(..) {
            self.settle(id, now);
        }
        self.owed = owed;
    }

    /// Sends everything a connection has queued, re-arms its timer and marks it
    /// for the end-of-turn drain of its events.
    pub fn flush_later(&mut self, id: ConnId) {
        self.flush(id);
        self.rearm(id, Instant::now());
        self.mark_dirty(id);
    }

    /// Counts a forwarded packet written into a connection: the end of the turn settles
    /// it once (its datagrams out, its timer re-armed), however many it got. A write
    /// raises no event and no read, so it needs no drive.
    fn mark_written(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get_mut(&id) {
            if conn.written == 0 {
                self.written.push(id);
            }
            conn.written += 1;
        }
    }

    /// Settles every connection written to since the last call and not settled since
    /// (see [`mark_written`](Self::mark_written), [`settle_media`](Self::settle_media)).
    pub fn settle_written(&mut self, now: Instant) {
        let mut written = std::mem::take(&mut self.written);
        for id in written.drain(..) {
            let count = self.conns.get_mut(&id).map_or(0, |c| {
                c.last_media = Some(now);
                c.written
            });
            if count > 0 {
                self.settle_media(id, now, count);
            }
        }
        self.written = written;
    }

    /// Marks a connection for the end-of-turn drain (its writes sent, its events handled,
    /// its timer re-armed there).
    pub fn mark_dirty(&mut self, id: ConnId) {
        if !self.dirty.contains(&id) {
            self.dirty.push(id);
        }
    }

    /// The connections marked by [`flush_later`](Self::flush_later) since the last call.
    pub fn take_dirty(&mut self) -> Option<ConnId> {
        self.dirty.pop()
    }

    /// Sends everything a connection has queued. Non-blocking: a full socket
    /// buffer drops the datagram (counted) rather than stalling every other peer.
    ///
    /// STUN goes where `rtc` addressed it (responses answer their request's
    /// source); everything else follows the client's latest nomination.
    fn flush(&mut self, id: ConnId) {
        self.flush_to(id, None);
    }

    /// At most `limit` of the datagrams a connection queued (see
    /// [`settle_media`](Self::settle_media)).
    fn flush_at_most(&mut self, id: ConnId, limit: usize) {
        self.flush_once(id, None, &mut false, limit);
    }

    /// [`flush`](Self::flush), and the lite-ICE part of it: checks `rtc` originates
    /// never go out. Those toward `check_from` (the source of the client's check
    /// being handled) are answered and fed back; the others are dropped. Returns
    /// whether a Binding success went to `check_from`, and how many checks were answered.
    fn flush_to(&mut self, id: ConnId, check_from: Option<Path>) -> (bool, usize) {
        let (mut answered, mut looped) = (false, 0);
        loop {
            let own = self.flush_once(id, check_from, &mut answered, usize::MAX);
            if own.is_empty() {
                return (answered, looped);
            }
            for (to, response) in own {
                looped += 1;
                if let Some(Err(e)) = self.feed(id, Instant::now(), to, BytesMut::from(&response[..])) {
                    tracing::debug!(
                        shard = self.shard,
                        conn = id,
                        "our answer to rtc's own check was refused: {e}"
                    );
                }
            }
        }
    }

    /// One pass of sending what a connection queued (at most `limit` datagrams); returns
    /// the answers to `rtc`'s own checks toward `check_from`, to be fed back.
    fn flush_once(
        &mut self,
        id: ConnId,
        check_from: Option<Path>,
        answered: &mut bool,
        mut limit: usize,
    ) -> Vec<(Path, Vec<u8>)> {
        let mut own = Vec::new();
        let (udp_local, tcp_local) = (self.advertised, self.tcp_advertised());
        let Some(conn) = self.conns.get_mut(&id).filter(|c| !c.broken) else {
            return own;
        };
        let (udp, counters, links, link_by_peer) = (&mut self.udp, &self.counters, &self.links, &self.link_by_peer);
        let sent = std::panic::catch_unwind(AssertUnwindSafe(|| {
            while limit > 0
                && let Some(out) = conn.pc.poll_write()
            {
                limit -= 1;
                let to = match out.transport.transport_protocol {
                    TransportProtocol::TCP => Path::Tcp(out.transport.peer_addr),
                    _ => Path::Udp(out.transport.peer_addr),
                };
                if ice_lite::is_check(&out.message) {
                    // A lite agent originates no checks.
                    let mapped = match to {
                        Path::Udp(_) => udp_local,
                        Path::Tcp(_) => tcp_local.unwrap_or(udp_local),
                    };
                    if check_from == Some(to)
                        && let Some(pwd) = &conn.client_pwd
                        && let Some(response) = ice_lite::answer_own_check(&out.message, mapped, pwd)
                    {
                        own.push((to, response));
                    }
                    continue;
                }
                let success = demux::is_binding_success(&out.message);
                if success && check_from == Some(to) {
                    *answered = true;
                }
                if conn.pending_nomination == Some(to) && success {
                    conn.nominated = conn.pending_nomination.take();
                }
                let stun = demux::classify(&out.message) == demux::Class::Stun;
                let to = match conn.nominated {
                    Some(nominated) if !stun => nominated,
                    _ => to,
                };
                if !stun {
                    conn.out_path = Some(to);
                }
                match to {
                    Path::Udp(addr) => {
                        let (queued, flushed) = udp.queue(addr, out.message);
                        let dropped = flushed.failed + usize::from(!queued);
                        if dropped > 0 {
                            Counters::add(&counters.dropped_packets, dropped as u64);
                            tracing::trace!("send to {addr}: socket buffer full or datagram refused");
                        }
                    }
                    Path::Tcp(addr) => {
                        let link = link_by_peer
                            .get(&addr)
                            .and_then(|l| links.get(l))
                            .filter(|l| l.conn == id);
                        if !link.is_some_and(|link| link.send(&out.message)) {
                            Counters::add(&counters.dropped_packets, 1);
                            tracing::trace!("media TCP to {addr}: link gone or full");
                        }
                    }
                }
            }
        }));
        if sent.is_err() {
            conn.broken = true;
            conn.connected = false;
            tracing::error!(shard = self.shard, conn = id, meeting_id = %conn.meeting_id, participant_id = %conn.participant, call = "poll_write", "rtc panicked: connection abandoned");
            self.broken.push(id);
            own.clear();
        }
        own
    }

    /// A forwarded copy through the connection's own sending side (`own_srtp`): encrypted
    /// here and queued for the socket, counted for its sender reports. `None` while the
    /// connection has none (no keys yet, or not a subscriber connection): the copy goes
    /// through `rtc`. Once it has one, all its media goes that way.
    fn write_own(&mut self, id: ConnId, sender: RTCRtpSenderId, packet: &Packet, now: Instant) -> Option<bool> {
        let conn = self.conns.get_mut(&id)?;
        if conn.own.is_none() {
            let keys = conn.keys.as_ref()?.keys()?;
            conn.own = OwnSrtp::new(&keys).map(Box::new);
            if conn.own.is_none() {
                tracing::warn!(
                    shard = self.shard,
                    conn = id,
                    "own SRTP refused the keys: forwarding through rtc"
                );
                conn.keys = None;
                return None;
            }
        }
        let Conn { own, pc, .. } = conn;
        let own = own.as_mut()?;
        let Some(to) = conn.nominated.or(conn.out_path) else {
            Counters::add(&self.counters.dropped_packets, 1);
            return Some(false);
        };
        let datagram = match own.protect_in(packet, &mut self.out_arena) {
            Ok(datagram) => datagram,
            Err(e) => {
                tracing::trace!(shard = self.shard, conn = id, "own SRTP: {e}");
                Counters::add(&self.counters.dropped_packets, 1);
                return Some(false);
            }
        };
        own.reports.sent(sender, &packet.header, packet.payload.len(), now, || {
            clock_rate(pc, sender, packet.header.payload_type)
        });
        conn.last_media = Some(now);
        Some(self.send_bytes(id, to, datagram))
    }

    /// The sender reports due of the streams connections sent on their own sending side
    /// (`sender_reports`), sealed and sent by the shard (`own_srtp::OwnSrtp::seal_report`).
    pub fn send_sender_reports(&mut self, now: Instant) {
        let due: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.broken && c.own.as_ref().and_then(|o| o.reports.due()).is_some_and(|at| at <= now))
            .map(|(&id, _)| id)
            .collect();
        if due.is_empty() {
            return;
        }
        let wall = std::time::SystemTime::now();
        let mut reports = Vec::new();
        for id in due {
            if let Some(own) = self.conns.get_mut(&id).and_then(|c| c.own.as_mut()) {
                own.reports.reports(now, wall, &mut reports);
            }
            // Sealed and sent by the shard (`own_srtp`), without a write, flush and drive of
            // `rtc` (issue 13); for a sender the connection still has, as `write_rtcp` did.
            for (sender, report) in reports.drain(..) {
                if self.guard(id, "rtp_sender", |pc| pc.rtp_sender(sender).is_some()) != Some(true) {
                    continue;
                }
                let Some(conn) = self.conns.get_mut(&id) else {
                    break;
                };
                let (Some(own), Some(to)) = (conn.own.as_mut(), conn.nominated.or(conn.out_path)) else {
                    Counters::add(&self.counters.dropped_packets, 1);
                    continue;
                };
                match own.seal_report(&report, &mut self.out_arena) {
                    Ok(datagram) => {
                        self.send_bytes(id, to, datagram);
                    }
                    Err(e) => {
                        tracing::trace!(shard = self.shard, conn = id, "own sender report: {e}");
                        Counters::add(&self.counters.dropped_packets, 1);
                    }
                }
            }
        }
    }

    /// The SSRCs of the receipts the shard sends itself, one per connection that does.
    #[cfg(test)]
    pub(super) fn own_receipt_senders(&self) -> Vec<u32> {
        self.conns
            .values()
            .filter(|c| c.receipts_out.is_some())
            .filter_map(|c| c.hosted.as_ref().map(|h| h.receipts_sender_ssrc()))
            .collect()
    }

    /// A publisher connection's receipts due at `now`, sealed and sent by the shard (see
    /// `own_rtcp`), if it sends them itself.
    fn send_receipts(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let (Some(hosted), Some(sealer)) = (conn.hosted.as_ref(), conn.receipts_out.as_mut()) else {
            return;
        };
        self.receipt_wire.clear();
        self.receipt_ends.clear();
        hosted.receipts_due_into(now, &mut self.receipt_wire, &mut self.receipt_ends);
        if self.receipt_ends.is_empty() {
            return;
        }
        let Some(to) = conn.nominated.or(conn.out_path) else {
            Counters::add(&self.counters.dropped_packets, self.receipt_ends.len() as u64);
            return;
        };
        let mut sealed = std::mem::take(&mut self.receipt_sealed);
        let mut start = 0;
        for &end in &self.receipt_ends {
            match sealer.seal_in(&self.receipt_wire[start..end], &mut self.out_arena) {
                Ok(datagram) => sealed.push(datagram),
                Err(e) => {
                    tracing::trace!(shard = self.shard, conn = id, "own receipts: {e}");
                    Counters::add(&self.counters.dropped_packets, 1);
                }
            }
            start = end;
        }
        for datagram in sealed.drain(..) {
            self.send_bytes(id, to, datagram);
        }
        self.receipt_sealed = sealed;
    }

    /// Sends one datagram (or frame) of the shard's own to a connection's path: dropped and
    /// counted when the socket buffer or the link is full, as `rtc`'s are. Whether it was
    /// queued or sent.
    fn send_bytes(&mut self, id: ConnId, to: Path, datagram: BytesMut) -> bool {
        let sent = match to {
            Path::Udp(addr) => {
                let (queued, flushed) = self.udp.queue(addr, datagram);
                flushed.failed == 0 && queued
            }
            Path::Tcp(addr) => self
                .link_by_peer
                .get(&addr)
                .and_then(|l| self.links.get(l))
                .filter(|l| l.conn == id)
                .is_some_and(|link| link.send(&datagram)),
        };
        if !sent {
            Counters::add(&self.counters.dropped_packets, 1);
        }
        sent
    }

    /// Arms the connection's next deadline on the timer grid.
    fn rearm(&mut self, id: ConnId, now: Instant) {
        let Some(mut next) = self.guard(id, "poll_timeout", |pc| pc.poll_timeout()) else {
            return;
        };
        if let Some(conn) = self.conns.get_mut(&id) {
            // Once up, `rtc` is run for the NACK generator on time, for the rest once a second.
            if conn.connected
                && let Some(at) = next
            {
                let nack = conn.hosted.as_ref().and_then(|h| h.nack_next_due());
                next = Some(super::timers::connected_due(at, nack, conn.swept_at));
            }
            conn.rearmed_at = Some(now);
            conn.rtc_due = Some(next);
        }
        self.arm_next(id, next, now);
    }

    /// Arms the connection's timer for `rtc`'s deadline `next` and, when the shard sends its
    /// receipts itself, theirs.
    fn arm_next(&mut self, id: ConnId, mut next: Option<Instant>, now: Instant) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        if conn.receipts_out.is_some()
            && let Some(receipts) = conn.hosted.as_ref().and_then(|h| h.receipts_next_due())
        {
            next = Some(next.map_or(receipts, |at| at.min(receipts)));
        }
        // A quiet connection's deadlines on its coarse grid (issue 13, the idle cost).
        if super::timers::is_quiet(conn.connected, conn.last_media, now) {
            next =
                next.map(|at| super::timers::quiet_slot(at, now, self.timers.epoch(), super::timers::quiet_phase(id)));
        }
        self.timers.arm(id, next, now);
    }

    /// When the earliest armed deadline is due (a grid instant, or an instant already
    /// past when it was armed): when the shard must wake up next.
    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.timers.next(), self.deferred.due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// `at` as the timer grid serves it: the grid instant at or after `at` (or `at`
    /// when it is due by `now`). For the shard's own timers, to share the connections' wake-ups.
    pub fn timer_slot(&self, at: Instant, now: Instant) -> Instant {
        self.timers.slot(at, now)
    }

    /// Takes every connection whose deadline is due by `now` (disarmed, earliest first)
    /// into `due`; the caller [`fire`](Self::fire)s and drives each.
    pub fn take_due(&mut self, now: Instant, due: &mut Vec<ConnId>) {
        self.timers.take_due(now, due);
    }

    /// Runs a due connection's `handle_timeout`, after sending the receipts due if the shard
    /// sends them itself. Returns whether it is to be driven (`false` for a connection gone or
    /// broken since, or one whose `rtc` was known not to be due: only its receipts were).
    pub fn fire(&mut self, id: ConnId, now: Instant) -> bool {
        if let Some(conn) = self.conns.get(&id)
            && conn.receipts_out.is_some()
            && !conn.broken
        {
            let rtc_due = conn.rtc_due;
            self.send_receipts(id, now);
            if let Some(next) = rtc_due
                && next.is_none_or(|at| at > now)
            {
                // Only the receipts were due: `rtc` is not swept.
                self.arm_next(id, next, now);
                return false;
            }
        }
        let run = self.guard(id, "handle_timeout", |pc| pc.handle_timeout(now));
        if run.is_some() {
            Counters::add(&self.counters.rtc_timeouts, 1);
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.swept_at = Some(now);
            }
        }
        match run {
            Some(Ok(())) => true,
            Some(Err(e)) => {
                tracing::debug!(shard = self.shard, conn = id, "handle_timeout: {e}");
                true
            }
            None => false,
        }
    }

    /// A [`LegSink`] writing forwarded packets into this shard's connections.
    pub fn sink(&mut self, now: Instant) -> Delivery<'_> {
        Delivery { peers: self, now }
    }
}

/// Forwarded packets into subscriber connections, each flushed at once.
pub struct Delivery<'a> {
    peers: &'a mut Peers,
    now: Instant,
}

impl LegSink for Delivery<'_> {
    fn admit(&mut self, conn: ConnId) -> Admit {
        let Some(c) = self.peers.conns.get(&conn) else {
            return Admit::NotReady;
        };
        if c.broken || !c.connected || self.now.saturating_duration_since(c.last_seen) > CONSENT_TIMEOUT {
            return Admit::NotReady;
        }
        if self.peers.dice.roll() {
            return Admit::Drop;
        }
        if self.peers.wire_loss.roll() {
            return Admit::Lose;
        }
        Admit::Yes
    }

    fn retransmit(&mut self, conn: ConnId, sender: RTCRtpSenderId, packet: Packet, rtx: bool) -> bool {
        if !rtx {
            return self.write(conn, sender, &packet);
        }
        // `write_rtp` only takes the sender's own SSRC; an RTX packet goes in below it,
        // where `rtc`'s endpoint takes any RTP packet (the RTX SSRC is the sender's, in
        // the offer's `a=ssrc-group:FID`).
        let now = self.now;
        let written = self.peers.guard(conn, "write_rtx", |pc| {
            pc.handle_write(TaggedRTCMessage {
                now,
                message: RTCMessage::RtpPacket(Default::default(), packet),
            })
        });
        self.peers.flush_later(conn);
        match written {
            Some(Ok(())) => true,
            Some(Err(e)) => {
                tracing::trace!(shard = self.peers.shard, conn, "write RTX: {e}");
                false
            }
            None => false,
        }
    }

    fn write(&mut self, conn: ConnId, sender: RTCRtpSenderId, packet: &Packet) -> bool {
        let now = self.now;
        if let Some(sent) = self.peers.write_own(conn, sender, packet, now) {
            return sent;
        }
        let direct = self.peers.levers.direct;
        // `rtc` takes the packet by value: the room's copy is cloned (the payload shared, the
        // header's extension list, when something survived on it, allocated).
        let written = self.peers.guard(conn, "write_rtp", |pc| {
            if !direct {
                return pc.rtp_sender(sender).map(|mut s| s.write_rtp(now, packet.clone()));
            }
            // What `write_rtp` checks (the SSRC is the sender's, the payload type and every
            // extension id negotiated on it) holds by construction: the leg's `DownLeg` was
            // built from this sender's negotiation. Its checks (scans of the sender's
            // parameters and a track-id `String` per packet) are skipped; the packet goes in
            // where `write_rtp` puts it, if the sender is still there.
            pc.rtp_sender(sender)?;
            Some(pc.handle_write(TaggedRTCMessage {
                now,
                message: RTCMessage::RtpPacket(String::new(), packet.clone()),
            }))
        });
        let ok = match written {
            Some(Some(Ok(()))) => true,
            Some(Some(Err(e))) => {
                tracing::trace!(shard = self.peers.shard, conn, "write_rtp: {e}");
                false
            }
            _ => false,
        };
        if !self.peers.levers.drain_once {
            self.peers.flush_later(conn);
        } else if ok {
            // Sent, and its timer re-armed, when the turn ends: once per connection and
            // turn, however many copies it got.
            self.peers.mark_written(conn);
        }
        ok
    }
}

/// The clock rate of the codec a sender sends with payload type `pt` (90 kHz, as video's,
/// if it is not among its negotiated codecs, or if `rtc` panics: asked once per stream).
fn clock_rate(pc: &mut RTCPeerConnection, sender: RTCRtpSenderId, pt: u8) -> u32 {
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        pc.rtp_sender(sender).and_then(|mut s| {
            s.get_parameters()
                .rtp_parameters
                .codecs
                .iter()
                .find(|c| c.payload_type == pt)
                .map(|c| c.rtp_codec.clock_rate)
        })
    }))
    .ok()
    .flatten()
    .unwrap_or(90_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sfu::connection;
    use crate::sfu::stats::StatsPair;
    use gatehouse_signaling::protocol::PeerRole;

    async fn peers() -> Peers {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = socket.local_addr().expect("addr");
        Peers::new(0, socket, addr, Arc::default(), Arc::default(), None).expect("socket state")
    }

    fn conn(peers: &Peers, meeting: &str, participant: &str) -> Conn {
        let (ufrag, pwd) = connection::ice_credentials();
        let stats = StatsPair {
            meeting: Arc::default(),
            shard: peers.counters.clone(),
        };
        let (pc, _) = connection::build(
            Instant::now(),
            PeerRole::Subscriber,
            &ufrag,
            &pwd,
            peers.advertised,
            None,
            stats,
            Default::default(),
            None,
            None,
        )
        .expect("build");
        Conn::new(
            pc,
            1,
            meeting,
            participant,
            PeerRole::Subscriber,
            ufrag,
            pwd,
            Instant::now(),
        )
    }

    #[tokio::test]
    async fn a_panic_in_one_connection_breaks_only_that_one_and_is_reported_once() {
        let mut peers = peers().await;
        let a = peers.insert(conn(&peers, "m_1", "p_a"));
        let b = peers.insert(conn(&peers, "m_1", "p_b"));
        assert_eq!(peers.live.load(Ordering::Relaxed), 2);

        let panicked: Option<()> = peers.guard(a, "test", |_| panic!("injected"));
        assert!(panicked.is_none());
        assert!(peers.is_broken(a));
        assert!(!peers.is_broken(b));
        assert_eq!(peers.take_broken(), vec![a]);
        assert!(peers.take_broken().is_empty(), "reported once");

        // The broken one is never called again; the other one works on.
        let mut called = false;
        assert!(peers.guard(a, "test", |_| called = true).is_none());
        assert!(!called);
        let offer = peers.guard(b, "create_offer", |pc| pc.create_offer(None).map(|o| o.sdp));
        assert!(matches!(offer, Some(Ok(sdp)) if sdp.starts_with("v=0")));

        // A broken connection still closes cleanly and leaves the live count.
        peers.close(a);
        peers.close(b);
        assert_eq!(peers.live.load(Ordering::Relaxed), 0);
        assert!(peers.get(a).is_none() && peers.get(b).is_none());
    }

    /// A binding request naming `ufrag`, signed with `key`.
    fn early_check(ufrag: &str, key: &str) -> BytesMut {
        BytesMut::from(&crate::sfu::ice_lite::signed_check(&format!("{ufrag}:clnt"), key)[..])
    }

    #[tokio::test]
    async fn checks_before_the_description_wait_for_it_and_are_handed_over_then() {
        let mut peers = peers().await;
        let c = conn(&peers, "m_1", "p_a");
        let (ufrag, pwd) = (c.ufrag.clone(), c.local_pwd.clone());
        let a = peers.insert(c);
        let from: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
        let now = Instant::now();
        assert_eq!(
            peers.receive(now, from, early_check(&ufrag, &pwd)),
            None,
            "held: nothing to drive yet"
        );
        assert_eq!(peers.get(a).map(|c| c.early_checks.len()), Some(1));
        for _ in 0..20 {
            peers.receive(now, from, early_check(&ufrag, &pwd));
        }
        assert_eq!(
            peers.get(a).map(|c| c.early_checks.len()),
            Some(connection::MAX_EARLY_CHECKS),
            "bounded"
        );
        // The description arrives: the held checks go to `rtc` (which judges them as any check).
        peers.get_mut(a).expect("conn").has_remote = true;
        peers.replay_early_checks(a, now);
        assert_eq!(peers.get(a).map(|c| c.early_checks.len()), Some(0));
        // From now on checks are fed at once.
        assert_eq!(peers.receive(now, from, early_check(&ufrag, &pwd)), Some(a));
        assert_eq!(peers.get(a).map(|c| c.early_checks.len()), Some(0));
        peers.close(a);
    }

    #[tokio::test]
    async fn garbage_is_dropped_and_counted_without_touching_a_connection() {
        let mut peers = peers().await;
        let a = peers.insert(conn(&peers, "m_1", "p_a"));
        let from: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        assert_eq!(peers.receive(Instant::now(), from, BytesMut::from(&b"hello"[..])), None);
        assert_eq!(
            peers.receive(Instant::now(), from, BytesMut::from(&[0x80; 40][..])),
            None,
            "RTP from an unknown address"
        );
        let snapshot = peers.counters.snapshot();
        assert_eq!((snapshot.garbage_datagrams, snapshot.dropped_packets), (2, 2));
        assert!(!peers.is_broken(a));
    }

    #[tokio::test]
    async fn junk_from_a_connections_address_is_counted_for_it_and_never_fed() {
        let mut peers = peers().await;
        let c = conn(&peers, "m_1", "p_a");
        let (ufrag, pwd) = (c.ufrag.clone(), c.local_pwd.clone());
        let a = peers.insert(c);
        let from: SocketAddr = "127.0.0.1:40001".parse().expect("addr");
        let now = Instant::now();
        // A check signed with the right password teaches the address (held: no description yet).
        assert_eq!(peers.receive(now, from, early_check(&ufrag, &pwd)), None);
        assert_eq!(peers.get(a).map(|c| c.early_checks.len()), Some(1));
        let forged = early_check(&ufrag, "not-the-password-at-all");
        let mut truncated = early_check(&ufrag, &pwd);
        truncated.truncate(30);
        let junk: [&[u8]; 5] = [&forged, &truncated, &[0x42; 30], &[22, 0, 0, 0, 0], &[0x80, 96, 0]];
        for datagram in junk {
            assert_eq!(peers.receive(now, from, BytesMut::from(datagram)), None);
        }
        let conn = peers.get(a).expect("conn");
        assert_eq!(conn.junk.total, 5);
        assert_eq!(conn.early_checks.len(), 1, "the forged check was not held either");
        let snapshot = peers.counters.snapshot();
        assert_eq!(
            (
                snapshot.junk_datagrams,
                snapshot.garbage_datagrams,
                snapshot.dropped_packets
            ),
            (5, 0, 5)
        );
        peers.close(a);
    }
}
