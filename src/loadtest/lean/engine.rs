//! The lean engine's media thread: every connection of its participants on one UDP socket,
//! driven from `rtc`'s sans-IO core as a shard drives its own (batched receive, batched
//! send at the end of each turn, a heap of the connections' deadlines).
//!
//! The socket is bound to the wildcard address and each connection has its own loopback
//! address (127.1.x.y) on it: the gateway tells connections apart by their address, so one
//! socket carries them all ([`UdpIo::with_local_addresses`]). Datagrams that come in are
//! handed to the connection of the address they came to; a connection's datagrams leave
//! from its address. Synthetic senders are paced by the same loop (one deadline per
//! source); receivers count every RTP packet into the participant's [`Probe`] streams.
//!
//! Signaling tasks talk to the thread with [`Command`]s; nothing here awaits the network
//! but the socket.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use gatehouse_sdk::now_us;
use gatehouse_sdk::synthetic::{SyntheticCodec, SyntheticConfig, SyntheticSource};
use gatehouse_signaling::protocol::TrackKind;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use tokio::sync::{mpsc, oneshot};

use super::super::participant::{Probe, StreamProbe};
use crate::sfu::rtc_client;
use crate::sfu::udp::UdpIo;

/// A participant's key in its engine.
pub type Member = u64;

/// The engine's answer to [`Command::Publish`]: the offer and each track's kind and mid.
pub type Published = Result<(String, Vec<(TrackKind, String)>), String>;

/// What a signaling task asks of the engine thread.
pub(crate) enum Command {
    /// Create the participant's publisher connection with these sources and answer with its
    /// offer and the mids of its audio and video (in that order, where present).
    Publish {
        member: Member,
        probe: Arc<Probe>,
        audio: Option<SyntheticConfig>,
        video: Option<SyntheticConfig>,
        sent: Arc<Sent>,
        reply: oneshot::Sender<Published>,
    },
    /// The gateway's answer to the publisher offer.
    PublishAnswer { member: Member, sdp: String },
    /// A subscriber offer from the gateway (the first creates the connection): the answer.
    SubscribeOffer {
        member: Member,
        probe: Arc<Probe>,
        sdp: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// An idle run's publishers go quiet: stop sending (the connections stay up).
    Quiet { member: Member },
    /// The participant leaves: close its connections.
    Remove { member: Member },
}

/// What a participant's synthetic senders sent (read once it stopped).
#[derive(Debug, Default)]
pub struct Sent {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
}

/// A synthetic source on a publisher connection.
struct Source {
    sender: RTCRtpSenderId,
    source: SyntheticSource,
    ssrc: u32,
    payload_type: u8,
    video: bool,
    /// Next frame due.
    due: Instant,
    interval: Duration,
    base_timestamp: u32,
    seq: u16,
    /// The audio level extension's id, once negotiated (audio only): every packet carries
    /// it, as a browser's do.
    level_id: Option<u8>,
}

/// One `rtc` connection and what the engine knows about it.
struct Conn {
    pc: RTCPeerConnection,
    /// Its own address on the engine's socket.
    local: SocketAddr,
    /// Publisher: its sources. Subscriber: none.
    sources: Vec<Source>,
    /// Subscriber: received streams by SSRC.
    streams: HashMap<u32, Arc<StreamProbe>>,
    probe: Arc<Probe>,
    sent: Option<Arc<Sent>>,
    connected: bool,
    /// Its sources stopped for good (an idle run's publishers, once quiet).
    quiet: bool,
    /// ICE is up: DTLS may flow.
    ice_connected: bool,
    /// DTLS datagrams that came before ICE was up here (the gateway, ICE-lite, is up at our
    /// first check and sends its ClientHello at once; `rtc` would drop it and the gateway
    /// resend it only a second later), handed over once ICE is up, as browsers do.
    early: Vec<(SocketAddr, BytesMut)>,
    /// Deadline last put on the heap (an entry with another one is stale).
    armed: Option<Instant>,
    /// Queued for the end of the turn.
    touched: bool,
    /// The gateway's address was noted (from its first datagram).
    gateway_noted: bool,
}

/// The thread's state.
struct Engine {
    udp: UdpIo,
    port: u16,
    conns: Vec<Option<Conn>>,
    by_ip: HashMap<IpAddr, usize>,
    members: HashMap<Member, [Option<usize>; 2]>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    touched: Vec<usize>,
    /// The next local address to hand out (an index into 127.1.0.0/16 and beyond).
    next_ip: u32,
    /// The gateway's media addresses datagrams came from, for its socket drops.
    gateways: Arc<std::sync::Mutex<std::collections::BTreeSet<SocketAddr>>>,
}

/// The local address of the `n`-th connection: 127.1.0.1, 127.1.0.2, ... (never the gateway's
/// 127.0.0.1, never a .0 or .255 host byte).
pub fn local_ip(n: u32) -> Ipv4Addr {
    let n = n % (254 * 254 * 100);
    let (hi, rest) = (n / (254 * 254), n % (254 * 254));
    Ipv4Addr::new(127, 1 + hi as u8, (rest / 254) as u8 + 1, (rest % 254) as u8 + 1)
}

/// Which synthetic format a received payload is in: audio payloads start with the synthetic
/// header itself, video ones with a VP8 descriptor.
pub fn codec_of(payload: &[u8]) -> SyntheticCodec {
    if payload.starts_with(&gatehouse_sdk::synthetic::MAGIC) {
        SyntheticCodec::Opus
    } else {
        SyntheticCodec::Vp8
    }
}

/// Runs an engine on `socket` until every command sender is gone.
pub(crate) fn run(
    socket: std::net::UdpSocket,
    mut commands: mpsc::UnboundedReceiver<Command>,
    first_ip: u32,
    gateways: Arc<std::sync::Mutex<std::collections::BTreeSet<SocketAddr>>>,
    precise: bool,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "lean engine: no runtime");
            return;
        }
    };
    runtime.block_on(async move {
        let port = socket.local_addr().map(|a| a.port()).unwrap_or_default();
        let udp = match tokio::net::UdpSocket::from_std(socket).and_then(UdpIo::with_local_addresses) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "lean engine: socket");
                return;
            }
        };
        let mut engine = Engine {
            udp,
            port,
            conns: Vec::new(),
            by_ip: HashMap::new(),
            members: HashMap::new(),
            timers: BinaryHeap::new(),
            touched: Vec::new(),
            next_ip: first_ip,
            gateways,
        };
        'turns: loop {
            let wake = engine.next_wake();
            // Precise sends: a deadline within the runtime's timer tick is slept for exactly
            // (the timer would round it up to the next millisecond, with every other frame due
            // by then), then the turn runs as if woken; commands are taken on the way.
            if precise {
                let now = Instant::now();
                if let Some(at) = wake.filter(|&at| at > now && at - now <= PRECISE_WINDOW) {
                    std::thread::sleep(at - now);
                    loop {
                        match commands.try_recv() {
                            Ok(command) => engine.on_command(command),
                            Err(mpsc::error::TryRecvError::Empty) => break,
                            Err(mpsc::error::TryRecvError::Disconnected) => break 'turns,
                        }
                    }
                    engine.turn();
                    continue;
                }
            }
            let blocked = engine.udp.blocked();
            let woken = tokio::select! {
                biased;
                command = commands.recv() => command.map(Some),
                ready = engine.udp.readable() => ready.ok().map(|()| None),
                _ = engine.udp.writable(), if blocked => Some(None),
                () = sleep_until(if precise { wake.map(|at| at.checked_sub(PRECISE_WINDOW).unwrap_or(at)) } else { wake }) => Some(None),
            };
            match woken {
                Some(Some(command)) => engine.on_command(command),
                Some(None) => {}
                None => break,
            }
            engine.turn();
        }
        engine.close_all();
    });
}

/// With precise sends, deadlines closer than this are slept for rather than left to the
/// runtime's timer, whose tick is a millisecond.
/// The runtime's timer is set that much early for them. Datagrams that arrive meanwhile wait
/// for the sleep (at most this long), which the latency figures then include.
const PRECISE_WINDOW: Duration = Duration::from_millis(1);

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

impl Engine {
    /// The earliest of the timers and the sources' next frames.
    fn next_wake(&mut self) -> Option<Instant> {
        // Drop stale heap entries so the top is a live deadline.
        while let Some(Reverse((at, i))) = self.timers.peek().copied() {
            if self
                .conns
                .get(i)
                .and_then(Option::as_ref)
                .is_some_and(|c| c.armed == Some(at))
            {
                break;
            }
            self.timers.pop();
        }
        let timer = self.timers.peek().map(|Reverse((at, _))| *at);
        let frame = self
            .conns
            .iter()
            .flatten()
            .filter(|c| c.connected && !c.quiet)
            .flat_map(|c| c.sources.iter().map(|s| s.due))
            .min();
        match (timer, frame) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// One turn: what the socket has, due frames, due timers, then every touched
    /// connection's output, sent in one flush.
    fn turn(&mut self) {
        let now = Instant::now();
        loop {
            match self.udp.receive() {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "lean engine: receive");
                    break;
                }
            }
            while let Some((from, data)) = self.udp.next_datagram() {
                let Some(&i) = self.udp.last_destination().and_then(|ip| self.by_ip.get(&ip)) else {
                    continue;
                };
                let Some(conn) = self.conns[i].as_mut() else { continue };
                if !conn.gateway_noted {
                    conn.gateway_noted = true;
                    self.gateways.lock().unwrap_or_else(|p| p.into_inner()).insert(from);
                }
                if !conn.ice_connected && is_dtls(&data) {
                    if conn.early.len() < MAX_EARLY {
                        conn.early.push((from, data));
                    }
                    continue;
                }
                let _ = conn.pc.handle_read(rtc_client::datagram(now, conn.local, from, data));
                // Its reads, events and answers before the next datagram: a DTLS flight that
                // arrives right behind the check that connected ICE is then taken, not dropped
                // (and retransmitted by its sender a second later).
                drain(conn, now);
                while let Some(out) = conn.pc.poll_write() {
                    let _ = self
                        .udp
                        .queue_from(Some(conn.local.ip()), out.transport.peer_addr, out.message);
                }
                touch(&mut self.touched, conn, i);
            }
        }
        for i in 0..self.conns.len() {
            let Some(conn) = self.conns[i].as_mut() else { continue };
            if conn.connected && !conn.quiet && conn.sources.iter().any(|s| s.due <= now) {
                send_due(conn, now);
                touch(&mut self.touched, conn, i);
            }
        }
        while let Some(Reverse((at, i))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(conn) = self.conns.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            if conn.armed != Some(at) {
                continue;
            }
            conn.armed = None;
            let _ = conn.pc.handle_timeout(now);
            touch(&mut self.touched, conn, i);
        }
        self.drain_touched(now);
        let _ = self.udp.flush();
    }

    /// Takes every touched connection's reads, events and writes, and re-arms its timer.
    fn drain_touched(&mut self, now: Instant) {
        let touched = std::mem::take(&mut self.touched);
        for &i in &touched {
            let Some(conn) = self.conns.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            conn.touched = false;
            drain(conn, now);
            while let Some(out) = conn.pc.poll_write() {
                let _ = self
                    .udp
                    .queue_from(Some(conn.local.ip()), out.transport.peer_addr, out.message);
            }
            let deadline = conn.pc.poll_timeout();
            if deadline != conn.armed
                && let Some(at) = deadline
            {
                conn.armed = Some(at);
                self.timers.push(Reverse((at, i)));
            }
        }
        self.touched = touched;
        self.touched.clear();
    }

    fn on_command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Publish {
                member,
                probe,
                audio,
                video,
                sent,
                reply,
            } => {
                let result = self.publish(member, probe, audio, video, sent, now);
                let _ = reply.send(result);
            }
            Command::PublishAnswer { member, sdp } => {
                if let Some(i) = self.members.get(&member).and_then(|m| m[0])
                    && let Some(conn) = self.conns[i].as_mut()
                {
                    let applied = RTCSessionDescription::answer(sdp)
                        .map_err(|e| e.to_string())
                        .and_then(|a| conn.pc.set_remote_description(now, a).map_err(|e| e.to_string()));
                    if let Err(e) = applied {
                        conn.probe
                            .fail(format!("the gateway's publish answer was refused: {e}"));
                    }
                    touch(&mut self.touched, conn, i);
                }
            }
            Command::SubscribeOffer {
                member,
                probe,
                sdp,
                reply,
            } => {
                let result = self.subscribe(member, probe, sdp, now);
                let _ = reply.send(result);
            }
            Command::Quiet { member } => {
                for i in self.members.get(&member).into_iter().flatten().flatten() {
                    if let Some(conn) = self.conns[*i].as_mut() {
                        conn.quiet = true;
                    }
                }
            }
            Command::Remove { member } => {
                if let Some(slots) = self.members.remove(&member) {
                    for i in slots.into_iter().flatten() {
                        if let Some(mut conn) = self.conns[i].take() {
                            let _ = conn.pc.close();
                            while let Some(out) = conn.pc.poll_write() {
                                let _ =
                                    self.udp
                                        .queue_from(Some(conn.local.ip()), out.transport.peer_addr, out.message);
                            }
                            self.by_ip.remove(&conn.local.ip());
                        }
                    }
                }
            }
        }
        self.drain_touched(now);
        let _ = self.udp.flush();
    }

    /// A new connection on a fresh local address.
    fn connect(&mut self, probe: Arc<Probe>) -> Result<usize, String> {
        let ip = IpAddr::V4(local_ip(self.next_ip));
        self.next_ip += 1;
        let local = SocketAddr::new(ip, self.port);
        let pc = rtc_client::browser_like(local).map_err(|e| e.to_string())?;
        probe.connection_added();
        let i = self.conns.iter().position(Option::is_none).unwrap_or(self.conns.len());
        let conn = Conn {
            pc,
            local,
            sources: Vec::new(),
            streams: HashMap::new(),
            probe,
            sent: None,
            connected: false,
            quiet: false,
            ice_connected: false,
            early: Vec::new(),
            armed: None,
            touched: false,
            gateway_noted: false,
        };
        if i == self.conns.len() {
            self.conns.push(Some(conn));
        } else {
            self.conns[i] = Some(conn);
        }
        self.by_ip.insert(ip, i);
        Ok(i)
    }

    fn publish(
        &mut self,
        member: Member,
        probe: Arc<Probe>,
        audio: Option<SyntheticConfig>,
        video: Option<SyntheticConfig>,
        sent: Arc<Sent>,
        now: Instant,
    ) -> Published {
        let i = self.connect(probe)?;
        self.members.entry(member).or_default()[0] = Some(i);
        let conn = self.conns[i].as_mut().expect("just connected");
        conn.sent = Some(sent);
        let mut kinds = Vec::new();
        for (config, kind) in [(audio, RtpCodecKind::Audio), (video, RtpCodecKind::Video)] {
            let Some(config) = config else { continue };
            let ssrc: u32 = rand::random();
            let sender = conn
                .pc
                .add_track(rtc_client::track("loadtest", &format!("t{ssrc}"), kind, ssrc))
                .map_err(|e| e.to_string())?;
            let video = kind == RtpCodecKind::Video;
            conn.sources.push(Source {
                sender,
                interval: Duration::from_micros(config.frame_interval_us()),
                source: SyntheticSource::new(config),
                ssrc,
                payload_type: if video { rtc_client::VP8_PT } else { rtc_client::OPUS_PT },
                video,
                due: now,
                base_timestamp: rand::random(),
                seq: rand::random(),
                level_id: None,
            });
            kinds.push(if video { TrackKind::Video } else { TrackKind::Audio });
        }
        let offer = conn.pc.create_offer(None).map_err(|e| e.to_string())?;
        conn.pc
            .set_local_description(now, offer.clone())
            .map_err(|e| e.to_string())?;
        let mids = sdp_mids(&offer.sdp);
        if mids.len() != kinds.len() {
            return Err(format!(
                "the offer has {} media sections for {} tracks",
                mids.len(),
                kinds.len()
            ));
        }
        touch(&mut self.touched, conn, i);
        Ok((offer.sdp, kinds.into_iter().zip(mids).collect()))
    }

    fn subscribe(&mut self, member: Member, probe: Arc<Probe>, sdp: String, now: Instant) -> Result<String, String> {
        let existing = self.members.get(&member).and_then(|m| m[1]);
        let i = match existing {
            Some(i) => i,
            None => {
                let i = self.connect(probe)?;
                self.members.entry(member).or_default()[1] = Some(i);
                i
            }
        };
        let conn = self.conns[i].as_mut().expect("a live subscriber connection");
        let offer = RTCSessionDescription::offer(sdp).map_err(|e| e.to_string())?;
        conn.pc.set_remote_description(now, offer).map_err(|e| e.to_string())?;
        let answer = conn.pc.create_answer(None).map_err(|e| e.to_string())?;
        conn.pc
            .set_local_description(now, answer.clone())
            .map_err(|e| e.to_string())?;
        touch(&mut self.touched, conn, i);
        Ok(answer.sdp)
    }

    fn close_all(&mut self) {
        for conn in self.conns.iter_mut().flatten() {
            let _ = conn.pc.close();
        }
    }
}

/// Early DTLS datagrams kept per connection (a flight or two).
const MAX_EARLY: usize = 8;

/// Whether a datagram is DTLS (RFC 7983: first byte 20 to 63).
pub fn is_dtls(data: &[u8]) -> bool {
    data.first().is_some_and(|b| (20..=63).contains(b))
}

fn touch(touched: &mut Vec<usize>, conn: &mut Conn, i: usize) {
    if !conn.touched {
        conn.touched = true;
        touched.push(i);
    }
}

/// A connection's reads (received RTP counted, keyframe requests noted) and events.
fn drain(conn: &mut Conn, now: Instant) {
    while let Some(read) = conn.pc.poll_read() {
        match read.message {
            RTCMessage::RtpPacket(_, packet) => {
                let stream = conn.streams.entry(packet.header.ssrc).or_insert_with(|| {
                    let codec = codec_of(&packet.payload);
                    let kind = if codec == SyntheticCodec::Opus {
                        TrackKind::Audio
                    } else {
                        TrackKind::Video
                    };
                    let stream = Arc::new(StreamProbe::new(kind, codec, conn.probe.started_us()));
                    conn.probe.add_stream(stream.clone());
                    stream
                });
                stream.record(now_us(), &packet.payload);
            }
            RTCMessage::RtcpPacket(_, packets) => {
                let wants_keyframe = packets
                    .iter()
                    .any(|p| p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>());
                if wants_keyframe {
                    for s in conn.sources.iter_mut().filter(|s| s.video) {
                        s.source.request_keyframe();
                    }
                }
            }
            _ => {}
        }
    }
    while let Some(event) = conn.pc.poll_event() {
        tracing::debug!(local = %conn.local, ?event, "lean connection event");
        if let RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(state) = &event {
            conn.ice_connected =
                *state == RTCIceConnectionState::Connected || *state == RTCIceConnectionState::Completed;
            if conn.ice_connected {
                for (from, data) in std::mem::take(&mut conn.early) {
                    let _ = conn.pc.handle_read(rtc_client::datagram(now, conn.local, from, data));
                }
            }
        }
        if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
            match state {
                RTCPeerConnectionState::Connected => {
                    set_connected(conn, true);
                    // Frames start now, not in a burst of those missed while connecting.
                    for s in &mut conn.sources {
                        s.due = now;
                    }
                    if !conn.sources.is_empty() {
                        conn.probe.published();
                    }
                }
                RTCPeerConnectionState::Failed => {
                    set_connected(conn, false);
                    let role = if conn.sources.is_empty() {
                        "subscriber"
                    } else {
                        "publisher"
                    };
                    conn.probe.fail(format!("{role} connection failed"));
                }
                RTCPeerConnectionState::Disconnected | RTCPeerConnectionState::Closed => set_connected(conn, false),
                _ => {}
            }
        }
    }
}

/// Notes a connection up or down, in its participant's probe too.
fn set_connected(conn: &mut Conn, connected: bool) {
    if conn.connected != connected {
        conn.connected = connected;
        conn.probe.connection_changed(connected);
    }
}

/// Writes every frame that is due on a publisher connection.
fn send_due(conn: &mut Conn, now: Instant) {
    let Some(sent) = conn.sent.clone() else { return };
    for s in &mut conn.sources {
        if !s.video && s.level_id.is_none() && s.due <= now {
            s.level_id = rtc_client::extension_id(&mut conn.pc, s.sender, rtc::sdp::extmap::AUDIO_LEVEL_URI);
        }
        while s.due <= now {
            s.due += s.interval;
            let frame = s.source.next_frame(now_us());
            let last = frame.payloads.len().saturating_sub(1);
            let timestamp = s.base_timestamp.wrapping_add(frame.rtp_timestamp);
            for (k, payload) in frame.payloads.into_iter().enumerate() {
                s.seq = s.seq.wrapping_add(1);
                let len = payload.len() as u64;
                let mut header = rtc::rtp::header::Header {
                    version: 2,
                    payload_type: s.payload_type,
                    sequence_number: s.seq,
                    timestamp,
                    ssrc: s.ssrc,
                    marker: k == last,
                    ..Default::default()
                };
                if let Some(id) = s.level_id {
                    // RFC 6464: voice activity and a level of -40 dBov, a talker's.
                    let _ = header.set_extension(id, Bytes::from_static(&[0x80 | 40]));
                }
                let packet = rtc::rtp::Packet {
                    header,
                    payload: Bytes::from(payload),
                };
                let Some(mut sender) = conn.pc.rtp_sender(s.sender) else {
                    break;
                };
                if sender.write_rtp(now, packet).is_ok() {
                    sent.packets.fetch_add(1, Ordering::Relaxed);
                    sent.bytes.fetch_add(len, Ordering::Relaxed);
                }
            }
            // A long stall sends what is due once, not a burst of everything missed.
            if s.due + s.interval < now {
                s.due = now;
            }
        }
    }
}

/// The mids of an SDP's media sections, in order.
pub fn sdp_mids(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=mid:").map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_sdk::synthetic::build_payload;

    #[test]
    fn local_addresses_are_distinct_loopback_ones_and_never_the_gateways() {
        let mut seen = std::collections::HashSet::new();
        for n in 0..70_000 {
            let ip = local_ip(n);
            assert!(ip.is_loopback(), "{ip}");
            assert_ne!(ip, Ipv4Addr::LOCALHOST);
            let [_, b, c, d] = ip.octets();
            assert!(b >= 1 && (1..=254).contains(&c) && (1..=254).contains(&d), "{ip}");
            assert!(seen.insert(ip), "{ip} handed out twice");
        }
        assert_eq!(local_ip(0), Ipv4Addr::new(127, 1, 1, 1));
        assert_eq!(local_ip(254), Ipv4Addr::new(127, 1, 2, 1));
    }

    #[test]
    fn a_received_payload_says_whether_it_is_audio_or_video() {
        let audio = build_payload(SyntheticCodec::Opus, 1, 1, 5, false, true, true, 100);
        let key = build_payload(SyntheticCodec::Vp8, 1, 0, 5, true, true, false, 1000);
        let middle = build_payload(SyntheticCodec::Vp8, 2, 0, 5, true, false, false, 1000);
        assert_eq!(codec_of(&audio), SyntheticCodec::Opus);
        assert_eq!(codec_of(&key), SyntheticCodec::Vp8);
        assert_eq!(codec_of(&middle), SyntheticCodec::Vp8);
        assert_eq!(codec_of(b""), SyntheticCodec::Vp8);
    }

    #[test]
    fn dtls_is_told_from_stun_rtp_and_rtcp() {
        assert!(is_dtls(&[22, 0xfe, 0xfd]), "a handshake record");
        assert!(is_dtls(&[20]) && is_dtls(&[63]));
        assert!(!is_dtls(&[0x00, 0x01]), "a binding request");
        assert!(!is_dtls(&[0x80, 96]), "RTP");
        assert!(!is_dtls(&[0x81, 200]), "RTCP");
        assert!(!is_dtls(&[]));
    }

    #[test]
    fn mids_are_read_in_order() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n";
        assert_eq!(sdp_mids(sdp), ["0", "1"]);
        assert!(sdp_mids("v=0\r\n").is_empty());
    }
}
