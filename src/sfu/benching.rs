//! A shard forwarding one publisher's video to N connected subscribers, for the whole-path
//! bench (`benches/forwarding.rs`, group `path`); not an API: hidden from the docs, and
//! nothing in the server uses it.
//!
//! [`FanOut::new`] builds what production has once a meeting is running: a [`Shard`] on a
//! real loopback socket, a publisher whose connection was negotiated from an `rtc`
//! client's offer and came up (ICE-lite checks, DTLS, SRTP), and `n` subscribers, each an
//! `rtc` client that answered the shard's offer on its own socket and came up too, with a
//! video leg that has forwarded packets. The clients are driven by hand in the same thread
//! (as in [`super::fuzzing`]): their datagrams go straight into [`Shard::on_datagram`], the
//! shard's reach them over loopback.
//!
//! A bench then takes the publisher's encrypted datagrams ([`FanOut::datagrams`], untimed)
//! and times [`FanOut::forward`]: the shard's whole path for one datagram (routing, SRTP
//! decrypt and parse in `rtc`, `MediaRoom::forward`, `write_rtp` and `rtc`'s write chain
//! with SRTP encrypt per leg, the end of the turn) and, with [`FanOut::set_send`], the
//! `sendmmsg` to the subscribers' sockets.

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use gatehouse_signaling::protocol::{MediaMessage, ParticipantKind, PublishedTrack, ServerMessage, TrackSource};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp::header::{EXTENSION_PROFILE_ONE_BYTE, Extension, Header};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use tokio::sync::oneshot;

use super::MediaParticipant;
use super::fuzzing::{HarnessError, drain, fail, sdp_attr};
use super::peers::Peers;
use super::rtc_client;
use super::shard::{Command, Shard};
use super::srtp_keys::KeyCapture;
use super::stats::Counters;
use crate::outbox::{self, OutboxReceiver};

const MEETING: &str = "m_bench";
const PUBLISHER: &str = "p_pub";
const VIDEO_SSRC: u32 = 0x000B_1DE0;
/// The load tester's video payload size.
const PAYLOAD: usize = 1100;
/// How long building the meeting may take before it counts as broken (a bound for a
/// hung handshake, not a measurement).
const PATIENCE: Duration = Duration::from_secs(30);
/// The transport-cc extension id the publisher client negotiates (the shard strips it).
const TWCC_URI: &str = rtc::sdp::extmap::TRANSPORT_CC_URI;

/// One client: an `rtc` connection driven by hand, with its own socket.
struct Client {
    pc: RTCPeerConnection,
    socket: StdUdpSocket,
    addr: SocketAddr,
    connected: bool,
    /// Datagrams its socket received.
    received: u64,
    /// RTP packets it decrypted and read, and the last payload.
    opened: u64,
    last_payload: Bytes,
    /// Its SRTP keys (`srtp_keys`), and the sender reports it received, opened with them
    /// (`rtc` hands an application no RTCP for a stream it only receives).
    keys: Arc<KeyCapture>,
    reports: Vec<SenderReport>,
    /// Transport-wide sequence numbers its TWCC feedback said arrived, and the sequence
    /// numbers NACKs asked it for (a publisher's; opened with its keys as its reports are).
    acked: Vec<u16>,
    nacked: Vec<u16>,
    /// The TWCC feedback (`"twcc"`) and receiver reports (`"rr"`) it received, and the SSRC
    /// each came from.
    receipts_from: Vec<(&'static str, u32)>,
    /// The last-SR fields of the report blocks of those receiver reports: SSRC and LSR.
    last_sender_reports: Vec<(u32, u32)>,
}

impl Client {
    fn new(extensions: &[(&str, RtpCodecKind)]) -> Result<Self, HarnessError> {
        let socket = StdUdpSocket::bind("127.0.0.1:0").map_err(fail)?;
        socket.set_nonblocking(true).map_err(fail)?;
        let addr = socket.local_addr().map_err(fail)?;
        let keys = KeyCapture::new().map_err(fail)?;
        let pc = rtc_client::client_with_crypto(addr, extensions, keys.clone()).map_err(fail)?;
        Ok(Self {
            pc,
            socket,
            addr,
            connected: false,
            received: 0,
            opened: 0,
            last_payload: Bytes::new(),
            keys,
            reports: Vec::new(),
            acked: Vec::new(),
            nacked: Vec::new(),
            receipts_from: Vec::new(),
            last_sender_reports: Vec::new(),
        })
    }

    /// The sender reports, TWCC feedback and NACKs in an SRTCP datagram, opened with the
    /// connection's keys.
    fn open_rtcp(&mut self, datagram: &[u8]) {
        let rtcp =
            super::demux::classify(datagram) == super::demux::Class::Rtp && (192..=223).contains(&(datagram[1] | 0x80));
        let Some(keys) = self.keys.keys().filter(|_| rtcp) else {
            return;
        };
        let opened = keys
            .remote_context()
            .and_then(|mut context| context.decrypt_rtcp(datagram));
        if let Ok(plain) = opened
            && let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut &plain[..])
        {
            let reports = packets
                .iter()
                .filter_map(|p| p.as_any().downcast_ref::<SenderReport>().cloned());
            self.reports.extend(reports);
            for p in &packets {
                if let Some(rr) = p.as_any().downcast_ref::<rtc::rtcp::receiver_report::ReceiverReport>() {
                    self.receipts_from.push(("rr", rr.ssrc));
                    let blocks = rr.reports.iter().map(|b| (b.ssrc, b.last_sender_report));
                    self.last_sender_reports.extend(blocks);
                }
                if let Some(feedback) = super::rtcp::as_twcc(p.as_ref()) {
                    self.receipts_from.push(("twcc", feedback.sender_ssrc));
                    let acks = super::bwe::acks_of(feedback);
                    self.acked.extend(acks.filter(|a| a.arrival.is_some()).map(|a| a.seq));
                }
                if let Some(nack) = super::rtcp::as_nack(p.as_ref()) {
                    self.nacked.extend(nack.nacks.iter().flat_map(|pair| *pair));
                }
            }
        }
    }

    /// Takes what its socket received, its events and reads; runs its due timer.
    fn take_in(&mut self, now: Instant, buf: &mut [u8]) -> Result<bool, HarnessError> {
        let mut moved = false;
        while let Ok((n, from)) = self.socket.recv_from(buf) {
            moved = true;
            self.received += 1;
            self.open_rtcp(&buf[..n]);
            let msg = rtc_client::datagram(now, self.addr, from, BytesMut::from(&buf[..n]));
            let _ = self.pc.handle_read(msg);
        }
        while let Some(read) = self.pc.poll_read() {
            if let RTCMessage::RtpPacket(_, packet) = read.message {
                self.opened += 1;
                self.last_payload = packet.payload;
            }
        }
        while let Some(event) = self.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                if state == RTCPeerConnectionState::Failed {
                    return Err(fail(format!("client {} failed", self.addr)));
                }
                self.connected = state == RTCPeerConnectionState::Connected;
            }
        }
        if self.pc.poll_timeout().is_some_and(|at| at <= now) {
            let _ = self.pc.handle_timeout(now);
            moved = true;
        }
        Ok(moved)
    }
}

/// A shard forwarding one publisher's video to `n` connected subscribers (see the module
/// documentation).
pub struct FanOut {
    runtime: tokio::runtime::Runtime,
    shard: Shard,
    counters: Arc<Counters>,
    publisher: Client,
    video: RTCRtpSenderId,
    subscribers: Vec<Client>,
    outbox_publisher: OutboxReceiver,
    outbox_subscribers: Vec<OutboxReceiver>,
    seq: u16,
    payload: Bytes,
    /// The transport-cc id the publisher's connection negotiated (read at its first packet).
    twcc_id: Option<u8>,
    /// Whether turns drop their datagrams (see [`set_send`](Self::set_send)).
    discard: bool,
}

impl FanOut {
    /// Builds the running meeting; fails if a connection does not come up or a
    /// subscriber's leg forwards nothing.
    pub fn new(n: usize) -> Result<Self, HarnessError> {
        Self::with_own_srtp(n, true)
    }

    /// [`new`](Self::new) with the subscribers' copies encrypted by the shard or by `rtc`
    /// (`peers::WriteLevers::own_srtp`, read when their connections are built).
    pub fn with_own_srtp(n: usize, own_srtp: bool) -> Result<Self, HarnessError> {
        Self::with_own_paths(n, own_srtp, true)
    }

    /// [`with_own_srtp`](Self::with_own_srtp), and the publisher's packets opened by the
    /// shard or read through `rtc` (`peers::WriteLevers::own_inbound`).
    pub fn with_own_paths(n: usize, own_srtp: bool, own_inbound: bool) -> Result<Self, HarnessError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(fail)?;
        let counters = Arc::<Counters>::default();
        let shard = {
            let _entered = runtime.enter();
            let std_socket = StdUdpSocket::bind("127.0.0.1:0").map_err(fail)?;
            std_socket.set_nonblocking(true).map_err(fail)?;
            let server_addr = std_socket.local_addr().map_err(fail)?;
            let socket = tokio::net::UdpSocket::from_std(std_socket).map_err(fail)?;
            let peers = Peers::new(0, socket, server_addr, counters.clone(), Arc::default(), None).map_err(fail)?;
            let mut shard = Shard::new(0, peers);
            shard.levers_mut().own_srtp = own_srtp;
            shard.levers_mut().own_inbound = own_inbound;
            shard
        };
        let mut publisher = Client::new(&[(TWCC_URI, RtpCodecKind::Video)])?;
        let track = rtc_client::track("bench", "cam", RtpCodecKind::Video, VIDEO_SSRC);
        let video = publisher.pc.add_track(track).map_err(fail)?;
        // A VP8 keyframe's first packet (descriptor X=1 S=1, picture id; the keyframe start
        // code), then filler: every packet may start a leg.
        let mut payload = vec![0u8; PAYLOAD];
        payload[..7].copy_from_slice(&[0x90, 0x80, 0x81, 0x23, 0x9d, 0x01, 0x2a]);
        for (i, b) in payload.iter_mut().enumerate().skip(7) {
            *b = (i * 31) as u8;
        }
        let mut h = FanOut {
            runtime,
            shard,
            counters,
            publisher,
            video,
            subscribers: Vec::new(),
            outbox_publisher: outbox::outbox().1,
            outbox_subscribers: Vec::new(),
            seq: 0,
            payload: Bytes::from(payload),
            twcc_id: None,
            discard: false,
        };
        let (tx, rx) = outbox::outbox();
        h.outbox_publisher = rx;
        h.add(PUBLISHER, tx)?;
        for i in 0..n {
            let (tx, rx) = outbox::outbox();
            h.outbox_subscribers.push(rx);
            h.add(&subscriber(i), tx)?;
            h.subscribers.push(Client::new(&[])?);
        }
        // The publisher offers its camera; our answer.
        let offer = h.publisher.pc.create_offer(None).map_err(fail)?;
        h.publisher
            .pc
            .set_local_description(Instant::now(), offer.clone())
            .map_err(fail)?;
        let tracks = vec![PublishedTrack {
            mid: "0".into(),
            source: TrackSource::Camera,
            muted: false,
        }];
        h.command(PUBLISHER, MediaMessage::PublishOffer { sdp: offer.sdp, tracks })?;
        let answer = drain(&h.runtime, &mut h.outbox_publisher)
            .into_iter()
            .find_map(|m| match m {
                ServerMessage::PublishAnswer { sdp } => Some(sdp),
                _ => None,
            })
            .ok_or_else(|| fail("no publish_answer"))?;
        let answer = RTCSessionDescription::answer(answer).map_err(fail)?;
        h.publisher
            .pc
            .set_remote_description(Instant::now(), answer)
            .map_err(fail)?;
        // ICE, DTLS and media until every subscriber has answered its offers, is up, and
        // has received video.
        let started = Instant::now();
        let mut before = vec![0u64; n];
        loop {
            if started.elapsed() > PATIENCE {
                let up = h.subscribers.iter().filter(|c| c.connected).count();
                return Err(fail(format!(
                    "the meeting did not come up (publisher connected: {}, subscribers connected: {up} of {n})",
                    h.publisher.connected
                )));
            }
            h.pump()?;
            h.answer_offers()?;
            if h.publisher.connected {
                let mut out = Vec::new();
                h.datagrams(1, &mut out);
                for d in out {
                    h.forward(d);
                }
            }
            let all_up = h.publisher.connected && h.subscribers.iter().all(|c| c.connected);
            if all_up {
                // Each subscriber got media since the last round: its leg forwards.
                let now_received: Vec<u64> = h.subscribers.iter().map(|c| c.received).collect();
                if now_received.iter().zip(&before).all(|(a, b)| a > b) && h.forwarded() >= n as u64 {
                    break;
                }
                before = now_received;
            }
            h.runtime.block_on(tokio::task::yield_now());
        }
        h.maintain()?;
        Ok(h)
    }

    fn add(&mut self, participant: &str, outbox: crate::outbox::Outbox) -> Result<(), HarnessError> {
        let (reply, result) = oneshot::channel();
        self.shard.on_command(Command::Add {
            participant: MediaParticipant {
                meeting_id: MEETING.into(),
                participant_id: participant.into(),
                kind: ParticipantKind::Staff,
                may_present: true,
            },
            outbox,
            meeting_stats: Arc::default(),
            meeting_key: 0,
            told: None,
            reply,
        });
        match result.blocking_recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(fail(e.message)),
            Err(_) => Err(fail("no reply to add")),
        }
    }

    fn command(&mut self, participant: &str, message: MediaMessage) -> Result<(), HarnessError> {
        let (reply, result) = oneshot::channel();
        self.shard.on_command(Command::Handle {
            meeting_id: MEETING.into(),
            participant_id: participant.into(),
            message,
            reply,
        });
        match result.blocking_recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(fail(format!("{participant}: {}", e.message))),
            Err(_) => Err(fail("no reply")),
        }
    }

    /// Answers every subscriber offer the shard has sent.
    fn answer_offers(&mut self) -> Result<(), HarnessError> {
        for i in 0..self.subscribers.len() {
            let offers: Vec<String> = drain(&self.runtime, &mut self.outbox_subscribers[i])
                .into_iter()
                .filter_map(|m| match m {
                    ServerMessage::SubscribeOffer { sdp, .. } => Some(sdp),
                    _ => None,
                })
                .collect();
            for sdp in offers {
                sdp_attr(&sdp, "ice-ufrag").ok_or_else(|| fail("no ufrag in the subscribe offer"))?;
                let pc = &mut self.subscribers[i].pc;
                let offer = RTCSessionDescription::offer(sdp).map_err(fail)?;
                pc.set_remote_description(Instant::now(), offer).map_err(fail)?;
                let answer = pc.create_answer(None).map_err(fail)?;
                pc.set_local_description(Instant::now(), answer.clone()).map_err(fail)?;
                self.command(&subscriber(i), MediaMessage::SubscribeAnswer { sdp: answer.sdp })?;
            }
        }
        Ok(())
    }

    /// Carries datagrams both ways until no side has more, running due timers and the
    /// shard's end of turn. Bounded.
    fn pump(&mut self) -> Result<(), HarnessError> {
        // Room for any datagram: TWCC feedback covering the whole setup can be kilobytes.
        let mut buf = vec![0u8; 65536];
        for _ in 0..16 {
            let now = Instant::now();
            let mut moved = false;
            for client in std::iter::once(&mut self.publisher).chain(self.subscribers.iter_mut()) {
                while let Some(out) = client.pc.poll_write() {
                    moved = true;
                    self.shard.on_datagram(now, client.addr, out.message);
                }
                moved |= client.take_in(now, &mut buf)?;
            }
            self.shard.end_turn(now);
            if !moved {
                break;
            }
        }
        Ok(())
    }

    /// Untimed upkeep between measured batches: the clients take what reached them, answer
    /// and send what their timers ask (consent checks keep their legs admitted).
    /// Sends are on meanwhile, whatever [`set_send`](Self::set_send) said: the clients'
    /// checks are answered.
    pub fn maintain(&mut self) -> Result<(), HarnessError> {
        self.shard.udp_mut().set_discard(false);
        let pumped = self.pump();
        self.shard.udp_mut().set_discard(self.discard);
        pumped
    }

    /// The publisher's next `count` video packets, SRTP-encrypted as they arrive from it
    /// (with a transport-cc header extension, as browsers send), appended to `out`.
    pub fn datagrams(&mut self, count: usize, out: &mut Vec<BytesMut>) {
        let now = Instant::now();
        let Some(mut sender) = self.publisher.pc.rtp_sender(self.video) else {
            return;
        };
        let twcc_id = *self.twcc_id.get_or_insert_with(|| {
            sender
                .get_parameters()
                .rtp_parameters
                .header_extensions
                .iter()
                .find(|e| e.uri == TWCC_URI)
                .map_or(0, |e| e.id as u8)
        });
        for _ in 0..count {
            self.seq = self.seq.wrapping_add(1);
            let packet = rtc::rtp::Packet {
                header: Header {
                    version: 2,
                    payload_type: 96,
                    sequence_number: self.seq,
                    timestamp: u32::from(self.seq / 64) * 3000,
                    ssrc: VIDEO_SSRC,
                    marker: self.seq.is_multiple_of(64),
                    extension: twcc_id != 0,
                    extension_profile: if twcc_id != 0 { EXTENSION_PROFILE_ONE_BYTE } else { 0 },
                    extensions: if twcc_id != 0 {
                        vec![Extension {
                            id: twcc_id,
                            payload: Bytes::copy_from_slice(&self.seq.to_be_bytes()),
                        }]
                    } else {
                        Vec::new()
                    },
                    ..Default::default()
                },
                payload: self.payload.clone(),
            };
            let _ = sender.write_rtp(now, packet);
        }
        while let Some(w) = self.publisher.pc.poll_write() {
            out.push(w.message);
        }
    }

    /// One datagram from the publisher through the shard, and the end of the turn (the
    /// forwarded copies sent by `sendmmsg`, or dropped when sends are off).
    pub fn forward(&mut self, datagram: BytesMut) {
        let now = Instant::now();
        self.shard.on_datagram(now, self.publisher.addr, datagram);
        self.shard.end_turn(now);
    }

    /// [`forward`](Self::forward) under a name of its own, for a bench's timed loop: a
    /// profiler then counts the timed calls apart from those that built the meeting
    /// (`valgrind --tool=callgrind --toggle-collect='*FanOut*timed_forward*'`).
    #[inline(never)]
    pub fn timed_forward(&mut self, datagram: BytesMut) {
        self.forward(datagram);
    }

    /// Whether the turn's datagrams reach the kernel (on by default); off, a flush drops
    /// them (see [`super::udp::UdpIo::set_discard`]).
    pub fn set_send(&mut self, send: bool) {
        self.discard = !send;
        self.shard.udp_mut().set_discard(!send);
    }

    /// Bench hook: how long a connection that only moved media may put off completing its
    /// settling (see `Peers::set_settle_tick`).
    pub fn set_settle_tick(&mut self, tick: Duration) {
        self.shard.set_settle_tick(tick);
    }

    /// Bench hook: which of the forwarded packets' levers into `rtc` are on (both by
    /// default, as in production; see `peers::WriteLevers`).
    pub fn set_levers(&mut self, direct: bool, drain_once: bool) {
        let levers = self.shard.levers_mut();
        (levers.direct, levers.drain_once) = (direct, drain_once);
    }

    /// Packets written to subscriber legs so far.
    pub fn forwarded(&self) -> u64 {
        self.counters.snapshot().forwarded_packets
    }

    /// The publisher's packets the shard opened itself so far (`own_inbound`).
    pub fn opened(&self) -> u64 {
        self.counters.snapshot().opened_packets
    }

    /// Packets dropped so far (refused by a connection, or not sent).
    pub fn dropped(&self) -> u64 {
        self.counters.snapshot().dropped_packets
    }

    /// Datagrams the subscribers' sockets received so far (taken by [`maintain`](Self::maintain)).
    pub fn received(&self) -> u64 {
        self.subscribers.iter().map(|c| c.received).sum()
    }

    /// The end of a turn at `now` (a later time: timers and ticks due by then run).
    pub fn end_turn_at(&mut self, now: Instant) {
        self.shard.end_turn(now);
    }
}

fn subscriber(i: usize) -> String {
    format!("p_sub{i}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bench's meeting comes up and each datagram through it reaches every subscriber.
    #[test]
    fn every_subscriber_gets_each_forwarded_packet() {
        let mut h = FanOut::new(3).expect("the meeting comes up");
        h.maintain().expect("upkeep");
        let (forwarded, received) = (h.forwarded(), h.received());
        let mut out = Vec::new();
        h.datagrams(10, &mut out);
        assert_eq!(out.len(), 10);
        for d in out {
            h.forward(d);
        }
        h.maintain().expect("upkeep");
        assert_eq!(h.forwarded() - forwarded, 30, "each packet to each of 3 legs");
        assert!(h.received() - received >= 30, "and out to their sockets");
        h.set_send(false);
        let received = h.received();
        let mut out = Vec::new();
        h.datagrams(10, &mut out);
        for d in out {
            h.forward(d);
        }
        assert_eq!(h.forwarded() - forwarded, 60, "forwarded with sends off");
        h.maintain().expect("upkeep");
        assert!(h.received() - received < 30, "but not sent");
        assert_eq!(h.dropped(), 0);
    }

    /// The subscribers' `rtc` opens every copy and reads the publisher's payload, whether
    /// the shard or `rtc` encrypted it; with the shard's own SRTP, each subscriber gets a
    /// sender report of its stream once a second (the shard's tick run at a later time:
    /// sans-IO, nothing waits), counting what it was sent, and none once it is quiet.
    #[test]
    fn a_publishers_packets_opened_by_the_shard_are_forwarded_and_acknowledged() {
        for own in [false, true] {
            let mut h = FanOut::with_own_paths(1, true, own).expect("the meeting comes up");
            h.maintain().expect("upkeep");
            let (forwarded, opened) = (h.forwarded(), h.opened());
            let mut out = Vec::new();
            h.datagrams(30, &mut out);
            let first = h.seq.wrapping_sub(29);
            for d in out {
                h.forward(d);
            }
            assert_eq!(
                h.forwarded() - forwarded,
                30,
                "own inbound {own}: every packet forwarded"
            );
            // Past the stream's first packets (read through `rtc`, which finds its track),
            // every one is opened by the shard.
            let expected = if own { 30 } else { 0 };
            assert_eq!(h.opened() - opened, expected, "own inbound {own}: opened by the shard");
            // The TWCC feedback, from the shard's timer, acknowledges every one of them:
            // the receive interceptors saw them all. With the shard's own inbound, the shard
            // seals and sends it too (`own_rtcp::RtcpSealer`), from an SSRC of its own, and
            // the client's `rtc` and its keys open it as they open what `rtc` sends.
            let senders = h.shard.own_receipt_senders();
            assert_eq!(
                senders.len(),
                usize::from(own),
                "own inbound {own}: receipts sent by the shard"
            );
            let heard = h.publisher.receipts_from.len();
            let later = Instant::now() + Duration::from_millis(250);
            h.end_turn_at(later);
            h.maintain().expect("upkeep");
            for seq in (0..30).map(|i| first.wrapping_add(i)) {
                assert!(
                    h.publisher.acked.contains(&seq),
                    "own inbound {own}: {seq} acknowledged"
                );
            }
            // A receiver report comes with the feedback a second on.
            h.end_turn_at(later + Duration::from_millis(1100));
            h.maintain().expect("upkeep");
            let new = &h.publisher.receipts_from[heard..];
            for kind in ["twcc", "rr"] {
                assert!(
                    new.iter().any(|&(k, _)| k == kind),
                    "own inbound {own}: {kind} in {new:?}"
                );
            }
            if own {
                assert!(new.iter().all(|&(_, s)| s == senders[0]), "{new:?} from {senders:?}");
            }
            assert_eq!(h.dropped(), 0, "own inbound {own}");
        }
    }

    /// A busy call's connections run `rtc`'s timers about once a second each, not at its ICE
    /// agent's 200 ms (issue 13; `timers::connected_due`), while every packet is forwarded
    /// and acknowledged: three seconds of the shard's clock, a turn every 10 ms with one of
    /// the publisher's packets in each (sans-IO: the shard's clock runs ahead of the wall's).
    #[test]
    fn a_busy_calls_connections_run_rtcs_timers_about_once_a_second() {
        let mut h = FanOut::with_own_paths(2, true, true).expect("the meeting comes up");
        h.maintain().expect("upkeep");
        let (forwarded, runs) = (h.forwarded(), h.counters.snapshot().rtc_timeouts);
        let t0 = Instant::now();
        let mut out = Vec::new();
        for k in 0..300u32 {
            let at = t0 + Duration::from_millis(10) * k;
            out.clear();
            h.datagrams(1, &mut out);
            for d in out.drain(..) {
                h.shard.on_datagram(at, h.publisher.addr, d);
            }
            h.shard.end_turn(at);
        }
        assert_eq!(h.forwarded() - forwarded, 600, "each packet to both subscribers");
        let runs = h.counters.snapshot().rtc_timeouts - runs;
        // Three connections over three seconds: a run each at most once a second after the
        // first (each may have one due at the start). At the ICE agent's pace it was 45.
        assert!(runs <= 3 * 4, "rtc's timers ran {runs} times");
        // Still run, each at least once: its sender reports and the agent's bookkeeping are
        // not dropped.
        assert!(runs >= 3, "rtc's timers ran only {runs} times");
        assert_eq!(h.dropped(), 0);
    }

    /// A publisher's sender report, opened by the shard (`own_rtcp`), is answered in the
    /// receiver report the shard sends it next: its NTP time's middle 32 bits as the block's
    /// last-SR field.
    #[test]
    fn a_publishers_sender_report_is_answered_in_its_next_receiver_report() {
        use rtc::shared::marshal::Marshal;
        let mut h = FanOut::with_own_paths(1, true, true).expect("the meeting comes up");
        h.maintain().expect("upkeep");
        let mut out = Vec::new();
        h.datagrams(10, &mut out);
        let ssrc = u32::from_be_bytes(out[0][8..12].try_into().expect("an RTP header"));
        for d in out {
            h.forward(d);
        }
        h.maintain().expect("upkeep");
        // Its client sends no RTCP from the stream's SSRC: a context of the test's own, from the
        // client's key, numbers this one first.
        let keys = h.publisher.keys.keys().expect("the publisher's keys");
        let mut context = keys.local_context().expect("a context");
        let report = SenderReport {
            ssrc,
            ntp_time: 0x0123_4567_89ab_cdef,
            rtp_time: 90_000,
            packet_count: 10,
            octet_count: 10_000,
            ..Default::default()
        };
        let plain = report.marshal().expect("marshal");
        let datagram = context.encrypt_rtcp(&plain).expect("protect");
        let now = Instant::now();
        h.shard
            .on_datagram(now, h.publisher.addr, BytesMut::from(&datagram[..]));
        h.shard.end_turn(now);
        assert_eq!(h.dropped(), 0, "opened");
        // The next receiver report is due within a second.
        h.end_turn_at(now + Duration::from_millis(1100));
        h.maintain().expect("upkeep");
        assert!(
            h.publisher.last_sender_reports.contains(&(ssrc, 0x4567_89ab)),
            "{:x?}",
            h.publisher.last_sender_reports
        );
    }

    #[test]
    fn copies_encrypted_by_the_shard_are_opened_and_reported() {
        for own in [false, true] {
            let mut h = FanOut::with_own_srtp(2, own).expect("the meeting comes up");
            h.maintain().expect("upkeep");
            let opened: Vec<u64> = h.subscribers.iter().map(|c| c.opened).collect();
            let forwarded = h.forwarded();
            let mut out = Vec::new();
            h.datagrams(20, &mut out);
            for d in out {
                h.forward(d);
            }
            h.maintain().expect("upkeep");
            assert_eq!(h.forwarded() - forwarded, 40, "own SRTP {own}");
            for (c, before) in h.subscribers.iter().zip(opened) {
                assert_eq!(c.opened - before, 20, "own SRTP {own}: every copy opened");
                assert_eq!(c.last_payload.len(), PAYLOAD, "own SRTP {own}");
                assert_eq!(
                    c.last_payload[PAYLOAD - 1],
                    ((PAYLOAD - 1) * 31) as u8,
                    "own SRTP {own}"
                );
            }
            assert_eq!(h.dropped(), 0, "own SRTP {own}");
            if !own {
                continue;
            }
            let sent: Vec<u32> = h.subscribers.iter().map(|c| c.opened as u32).collect();
            let later = Instant::now() + Duration::from_secs(2);
            h.end_turn_at(later);
            h.maintain().expect("upkeep");
            for (c, sent) in h.subscribers.iter().zip(sent) {
                let sr = c.reports.last().expect("a sender report");
                assert_eq!(c.reports.len(), 1, "one stream, one report");
                assert_eq!(sr.packet_count, sent, "every packet it was sent");
                assert_eq!(sr.octet_count, sent * PAYLOAD as u32);
                assert_ne!(sr.ssrc, VIDEO_SSRC, "the leg's own SSRC");
                let wall = super::super::sender_reports::ntp(std::time::SystemTime::now());
                assert!(sr.ntp_time <= wall && wall - sr.ntp_time < 10 << 32, "the wall clock");
            }
            // Quiet since: the next second has no report.
            h.end_turn_at(later + Duration::from_secs(1));
            h.maintain().expect("upkeep");
            assert!(h.subscribers.iter().all(|c| c.reports.len() == 1));
        }
    }
}
