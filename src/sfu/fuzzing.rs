//! A shard with a live meeting, for the fuzz targets in `fuzz/` (not an API: hidden
//! from the docs, and nothing in the server uses it).
//!
//! [`MediaHarness::new`] builds what production has after two participants entered a
//! call: a [`Shard`] on a real loopback socket, a meeting with participants A and B,
//! A's publisher connection negotiated from an `rtc` client's offer and connected
//! (ICE-lite checks, DTLS handshake, SRTP keys) with one audio and one video track
//! published and flowing, and B's subscriber connection offered with a leg of each.
//! The client is `rtc` driven by hand in the same thread: its datagrams go straight
//! into [`Shard::on_datagram`], the shard's come back over the loopback socket.
//!
//! The targets then feed arbitrary input through the shard's real entry points:
//! datagrams from any address ([`MediaHarness::datagram`]), RTP and RTCP the client
//! encrypts so they pass SRTP and reach forwarding and the RTCP tap
//! ([`MediaHarness::client_rtp`], [`MediaHarness::client_rtcp`]), and SDP as a
//! publisher offer or a subscriber answer ([`MediaHarness::publish_offer`],
//! [`MediaHarness::subscribe_answer`]).

/// A client-signed Binding request, for tests and targets outside the crate.
pub use super::ice_lite::signed_check;

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use gatehouse_signaling::protocol::{MediaMessage, ParticipantKind, PublishedTrack, ServerMessage, TrackSource};
use gatehouse_signaling::{Error, ErrorCode};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use rtc::shared::marshal::Unmarshal;
use tokio::sync::oneshot;

use super::MediaParticipant;
use super::peers::Peers;
use super::rtc_client;
use super::shard::{Command, Shard};
use crate::outbox::{self, OutboxReceiver};

const MEETING: &str = "m_fuzz";
const A: &str = "p_a";
const B: &str = "p_b";
const AUDIO_SSRC: u32 = 0x000A_0D10;
const VIDEO_SSRC: u32 = 0x000B_1DE0;
/// How long building the live meeting may take before it counts as broken (a bound for
/// a hung handshake, not a measurement).
/// Client datagrams kept for [`MediaHarness::recorded`].
const RECORDED: usize = 32;
const PATIENCE: Duration = Duration::from_secs(20);

/// Why the harness could not be built.
#[derive(Debug)]
pub struct HarnessError(pub String);

impl std::fmt::Display for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub(super) fn fail(what: impl std::fmt::Display) -> HarnessError {
    HarnessError(what.to_string())
}

/// A shard hosting a live two-participant meeting (see the module documentation).
pub struct MediaHarness {
    runtime: tokio::runtime::Runtime,
    shard: Shard,
    /// A's publisher connection, the client side.
    client: RTCPeerConnection,
    client_socket: StdUdpSocket,
    client_addr: SocketAddr,
    server_addr: SocketAddr,
    audio: RTCRtpSenderId,
    video: RTCRtpSenderId,
    /// ICE credentials of A's publisher connection: ours (from our answer) and the
    /// client's (from its offer), to sign checks as the client would.
    server_ufrag: String,
    server_pwd: String,
    client_ufrag: String,
    /// Signaling to A and to B (answers, offers, track announcements).
    outbox_a: OutboxReceiver,
    outbox_b: OutboxReceiver,
    seq: u16,
    /// The first datagrams A's client sent while the meeting was built (checks, its
    /// DTLS flight, SRTP, SRTCP): real traffic, for seed corpora.
    recorded: Vec<Vec<u8>>,
}

impl MediaHarness {
    /// Builds the live meeting; fails if A's connection does not come up.
    pub fn new() -> Result<Self, HarnessError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(fail)?;
        let (shard, server_addr) = {
            let _entered = runtime.enter();
            let std_socket = StdUdpSocket::bind("127.0.0.1:0").map_err(fail)?;
            std_socket.set_nonblocking(true).map_err(fail)?;
            let server_addr = std_socket.local_addr().map_err(fail)?;
            let socket = tokio::net::UdpSocket::from_std(std_socket).map_err(fail)?;
            let peers = Peers::new(0, socket, server_addr, Arc::default(), Arc::default(), None).map_err(fail)?;
            (Shard::new(0, peers), server_addr)
        };
        let client_socket = StdUdpSocket::bind("127.0.0.1:0").map_err(fail)?;
        client_socket.set_nonblocking(true).map_err(fail)?;
        let client_addr = client_socket.local_addr().map_err(fail)?;
        let (client, audio, video) = client(client_addr)?;
        let (outbox_a, outbox_b) = (outbox::outbox(), outbox::outbox());
        let mut h = MediaHarness {
            runtime,
            shard,
            client,
            client_socket,
            client_addr,
            server_addr,
            audio,
            video,
            server_ufrag: String::new(),
            server_pwd: String::new(),
            client_ufrag: String::new(),
            outbox_a: outbox_a.1,
            outbox_b: outbox_b.1,
            seq: 0,
            recorded: Vec::new(),
        };
        h.add(A, outbox_a.0)?;
        h.add(B, outbox_b.0)?;
        // A publishes: the client's offer, our answer.
        let offer = h.client.create_offer(None).map_err(fail)?;
        h.client
            .set_local_description(Instant::now(), offer.clone())
            .map_err(fail)?;
        h.client_ufrag = sdp_attr(&offer.sdp, "ice-ufrag").ok_or_else(|| fail("no ufrag in the offer"))?;
        let tracks = vec![track("0", TrackSource::Microphone), track("1", TrackSource::Camera)];
        h.command(A, MediaMessage::PublishOffer { sdp: offer.sdp, tracks })
            .map_err(|e| fail(format!("publish_offer: {}", e.message)))?;
        let answer = h
            .signals_a()
            .into_iter()
            .find_map(|m| match m {
                ServerMessage::PublishAnswer { sdp } => Some(sdp),
                _ => None,
            })
            .ok_or_else(|| fail("no publish_answer"))?;
        h.server_ufrag = sdp_attr(&answer, "ice-ufrag").ok_or_else(|| fail("no ufrag in the answer"))?;
        h.server_pwd = sdp_attr(&answer, "ice-pwd").ok_or_else(|| fail("no ice-pwd in the answer"))?;
        let answer = RTCSessionDescription::answer(answer).map_err(fail)?;
        h.client.set_remote_description(Instant::now(), answer).map_err(fail)?;
        // ICE, DTLS, then media until both tracks are published (B's legs exist).
        let started = Instant::now();
        let mut connected = false;
        let mut published = 0;
        while published < 2 {
            if started.elapsed() > PATIENCE {
                return Err(fail(format!(
                    "A's publisher connection did not come up (connected: {connected}, tracks published: {published})"
                )));
            }
            h.pump();
            while let Some(event) = h.client.poll_event() {
                if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                    connected = state == RTCPeerConnectionState::Connected;
                    if state == RTCPeerConnectionState::Failed {
                        return Err(fail("A's publisher connection failed"));
                    }
                }
            }
            if connected {
                h.media();
                published += h
                    .signals_b()
                    .iter()
                    .filter(|m| matches!(m, ServerMessage::TrackPublished { .. }))
                    .count();
            }
            h.yield_now();
        }
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

    /// A participant's media frame, as the meeting task hands it to the shard.
    fn command(&mut self, participant: &str, message: MediaMessage) -> Result<(), Error> {
        let (reply, result) = oneshot::channel();
        self.shard.on_command(Command::Handle {
            meeting_id: MEETING.into(),
            participant_id: participant.into(),
            message,
            reply,
        });
        result
            .blocking_recv()
            .unwrap_or_else(|_| Err(Error::new(ErrorCode::Internal, "no reply")))
    }

    /// Lets the runtime's IO driver run once (the shard's socket readiness).
    fn yield_now(&self) {
        self.runtime.block_on(tokio::task::yield_now());
    }

    /// Signaling queued for A (drained).
    fn signals_a(&mut self) -> Vec<ServerMessage> {
        drain(&self.runtime, &mut self.outbox_a)
    }

    /// Signaling queued for B (drained).
    fn signals_b(&mut self) -> Vec<ServerMessage> {
        drain(&self.runtime, &mut self.outbox_b)
    }

    /// Carries datagrams both ways until neither side has more, then runs both sides'
    /// due timers and the shard's end of turn. Bounded: a loop that keeps producing
    /// stops after a fixed number of rounds.
    fn pump(&mut self) {
        let mut buf = [0u8; 2048];
        for _ in 0..16 {
            let now = Instant::now();
            let mut moved = false;
            while let Some(out) = self.client.poll_write() {
                moved = true;
                if self.recorded.len() < RECORDED {
                    self.recorded.push(out.message.to_vec());
                }
                self.shard
                    .on_datagram(now, self.client_addr, BytesMut::from(&out.message[..]));
            }
            while let Ok((n, from)) = self.client_socket.recv_from(&mut buf) {
                moved = true;
                let msg = rtc_client::datagram(now, self.client_addr, from, BytesMut::from(&buf[..n]));
                let _ = self.client.handle_read(msg);
            }
            while self.client.poll_read().is_some() {}
            if self.client.poll_timeout().is_some_and(|at| at <= now) {
                let _ = self.client.handle_timeout(now);
                moved = true;
            }
            self.shard.end_turn(now);
            if !moved {
                break;
            }
            self.yield_now();
        }
    }

    /// One audio and one video packet from A, as a real sender would send them.
    fn media(&mut self) {
        self.seq = self.seq.wrapping_add(1);
        for (sender, ssrc, pt) in [(self.audio, AUDIO_SSRC, 111), (self.video, VIDEO_SSRC, 96)] {
            let packet = rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    payload_type: pt,
                    sequence_number: self.seq,
                    timestamp: u32::from(self.seq) * 960,
                    ssrc,
                    marker: true,
                    ..Default::default()
                },
                payload: Bytes::from_static(&[0x90, 0x80, 0x00, 0x00, 0x9d, 0x01, 0x2a]),
            };
            if let Some(mut s) = self.client.rtp_sender(sender) {
                let _ = s.write_rtp(Instant::now(), packet);
            }
        }
        self.pump();
    }

    /// The first datagrams A's client sent (see [`MediaHarness::new`]).
    pub fn recorded(&self) -> &[Vec<u8>] {
        &self.recorded
    }

    /// A's established address (learned from its checks), where A's media comes from.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The shard's media address.
    pub fn server_addr(&self) -> SocketAddr {
        self.server_addr
    }

    /// A datagram from `from`, into the shard as its socket would hand it over.
    pub fn datagram(&mut self, from: SocketAddr, data: &[u8]) {
        self.shard.on_datagram(Instant::now(), from, BytesMut::from(data));
        self.shard.end_turn(Instant::now());
        self.settle();
    }

    /// A connectivity check for A's publisher connection from `from`, signed as the
    /// client signs it (USERNAME, then `attributes`, MESSAGE-INTEGRITY, FINGERPRINT), so it
    /// passes the demultiplexer and `rtc`'s integrity check: the ICE-lite handling, and
    /// with `nominate` a move of A's path to `from`. `attributes` is a list of
    /// (type: 2 bytes, length: 1 byte, value) records; a truncated last one is cut.
    pub fn signed_check(&mut self, from: SocketAddr, mut attributes: &[u8], nominate: bool) {
        use rtc::stun::attributes::{ATTR_USERNAME, AttrType};
        use rtc::stun::message::{BINDING_REQUEST, Message, Setter, TransactionId};
        let mut records = Vec::new();
        while let [t0, t1, len, rest @ ..] = attributes {
            let len = usize::from(*len).min(rest.len());
            records.push((AttrType(u16::from_be_bytes([*t0, *t1])), &rest[..len]));
            attributes = &rest[len..];
        }
        let Ok(provider) = rtc::crypto::default_provider() else {
            return;
        };
        let mut m = Message::new();
        let mut setters: Vec<Box<dyn Setter + '_>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(rtc::stun::textattrs::Username::new(
                ATTR_USERNAME,
                format!("{}:{}", self.server_ufrag, self.client_ufrag),
            )),
            Box::new(rtc::ice::attributes::control::AttrControlling(42)),
            Box::new(rtc::ice::attributes::priority::PriorityAttr(2_130_706_431)),
        ];
        if nominate {
            setters.push(Box::new(rtc::ice::attributes::use_candidate::UseCandidateAttr::new()));
        }
        setters.push(Box::new(RawAttributes(records)));
        setters.push(Box::new(
            rtc::stun::integrity::MessageIntegrity::new_short_term_integrity_with_provider(
                self.server_pwd.clone(),
                provider.crypto(),
            ),
        ));
        setters.push(Box::new(rtc::stun::fingerprint::FINGERPRINT));
        if m.build(&setters).is_ok() {
            let raw = m.raw.clone();
            self.datagram(from, &raw);
        }
    }

    /// An RTP packet parsed from `data`, sent by A's client on its audio or video
    /// sender (SSRC and payload type set to that sender's; header extensions the
    /// sender did not negotiate dropped, as `rtc` refuses them): it passes SRTP and
    /// reaches the shard's forwarding to B. `false` when `data` is not RTP.
    pub fn client_rtp(&mut self, video: bool, data: &[u8]) -> bool {
        let Ok(mut packet) = rtc::rtp::Packet::unmarshal(&mut &data[..]) else {
            return false;
        };
        let (sender, ssrc, pt) = if video {
            (self.video, VIDEO_SSRC, 96)
        } else {
            (self.audio, AUDIO_SSRC, 111)
        };
        packet.header.ssrc = ssrc;
        packet.header.payload_type = pt;
        let Some(mut s) = self.client.rtp_sender(sender) else {
            return false;
        };
        let negotiated: Vec<u8> = s
            .get_parameters()
            .rtp_parameters
            .header_extensions
            .iter()
            .map(|e| e.id as u8)
            .collect();
        packet.header.extensions.retain(|e| negotiated.contains(&e.id));
        if packet.header.extensions.is_empty() {
            packet.header.extension = false;
        }
        let written = s.write_rtp(Instant::now(), packet).is_ok();
        self.pump();
        written
    }

    /// RTCP packets parsed from `data`, sent by A's client (SRTCP): the shard's RTCP
    /// tap and keyframe-request path. `false` when `data` is not RTCP.
    pub fn client_rtcp(&mut self, data: &[u8]) -> bool {
        let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut &data[..]) else {
            return false;
        };
        let Some(mut s) = self.client.rtp_sender(self.audio) else {
            return false;
        };
        let written = s.write_rtcp(Instant::now(), packets).is_ok();
        self.pump();
        written
    }

    /// `sdp` as B's publisher offer (B publishes a microphone on mid 0): the answer, or
    /// the error frame the client would get.
    pub fn publish_offer(&mut self, sdp: &str) -> Result<(), Error> {
        let tracks = vec![track("0", TrackSource::Microphone)];
        let result = self.command(
            B,
            MediaMessage::PublishOffer {
                sdp: sdp.to_owned(),
                tracks,
            },
        );
        self.shard.end_turn(Instant::now());
        self.settle();
        result
    }

    /// `sdp` as B's answer to the shard's subscriber offer.
    pub fn subscribe_answer(&mut self, sdp: &str) -> Result<(), Error> {
        let result = self.command(B, MediaMessage::SubscribeAnswer { sdp: sdp.to_owned() });
        self.shard.end_turn(Instant::now());
        self.settle();
        result
    }

    /// B asks for a fresh subscriber connection (`restart_ice`): a new offer to answer.
    pub fn restart_subscriber(&mut self) {
        let _ = self.command(B, MediaMessage::RestartIce);
        self.shard.end_turn(Instant::now());
        self.settle();
    }

    /// Whether A's publisher connection is still up (fuzzed input may close it, as a
    /// real client's DTLS alert would); a target rebuilds the harness when it is not.
    /// Read from the shard's debug snapshot, as `GET /api/v1/meetings/{id}/live` shows it.
    pub fn live(&mut self) -> bool {
        let (reply, snapshot) = oneshot::channel();
        self.shard.on_command(Command::Debug {
            meeting_id: MEETING.into(),
            reply,
        });
        let Ok(Some(snapshot)) = snapshot.blocking_recv() else {
            return false;
        };
        let publisher = snapshot["participants"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["participant_id"] == A))
            .map(|p| p["publisher"].clone())
            .unwrap_or_default();
        publisher["connected"] == true && publisher["broken"] == false
    }

    /// Drains what the shard queued for the clients (so no queue fills up over a run).
    fn settle(&mut self) {
        self.signals_a();
        self.signals_b();
        let mut buf = [0u8; 2048];
        while self.client_socket.recv_from(&mut buf).is_ok() {}
    }
}

/// Attributes added to a STUN message as they are.
struct RawAttributes<'a>(Vec<(rtc::stun::attributes::AttrType, &'a [u8])>);

impl rtc::stun::message::Setter for RawAttributes<'_> {
    fn add_to(&self, m: &mut rtc::stun::message::Message) -> rtc::shared::error::Result<()> {
        for (t, v) in &self.0 {
            m.add(*t, v);
        }
        Ok(())
    }
}

/// The value of the first `a=<name>:` line.
pub(super) fn sdp_attr(sdp: &str, name: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix(&format!("a={name}:")).map(str::to_owned))
}

pub(super) fn drain(runtime: &tokio::runtime::Runtime, rx: &mut OutboxReceiver) -> Vec<ServerMessage> {
    let mut out = Vec::new();
    runtime.block_on(async {
        use futures_util::FutureExt;
        while let Some(crate::outbox::Next::Message(m)) = rx.next().now_or_never() {
            out.push(m);
        }
    });
    out
}

fn track(mid: &str, source: TrackSource) -> PublishedTrack {
    PublishedTrack {
        mid: mid.into(),
        source,
        muted: false,
    }
}

/// A's client: Opus and VP8, audio level on audio, a host candidate at `addr`, one
/// audio and one video track.
fn client(addr: SocketAddr) -> Result<(RTCPeerConnection, RTCRtpSenderId, RTCRtpSenderId), HarnessError> {
    let audio_level = (rtc::sdp::extmap::AUDIO_LEVEL_URI, RtpCodecKind::Audio);
    let mut pc = rtc_client::client(addr, &[audio_level]).map_err(fail)?;
    let audio = pc
        .add_track(rtc_client::track("fuzz", "mic", RtpCodecKind::Audio, AUDIO_SSRC))
        .map_err(fail)?;
    let video = pc
        .add_track(rtc_client::track("fuzz", "cam", RtpCodecKind::Video, VIDEO_SSRC))
        .map_err(fail)?;
    Ok((pc, audio, video))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness the media fuzz targets stand on: A's connection really comes up, its
    /// first datagrams are real (a check, then DTLS), encrypted media is taken, and junk
    /// from A's address or from nowhere leaves it up.
    #[test]
    fn the_harness_builds_a_live_meeting_and_survives_junk() {
        let mut h = MediaHarness::new().expect("the live meeting comes up");
        assert!(h.live(), "A's publisher connection is connected");
        let recorded = h.recorded();
        assert!(
            recorded
                .first()
                .is_some_and(|d| d.len() >= 20 && d[0] == 0x00 && d[1] == 0x01),
            "the client's first datagram is a binding request"
        );
        assert!(
            recorded.iter().any(|d| (20..=63).contains(&d[0])),
            "the client's DTLS flight was recorded"
        );
        let rtp = [0x80, 96, 0, 9, 0, 0, 0, 1, 0, 0, 0, 1, 0x90, 0x80, 0, 0];
        assert!(h.client_rtp(true, &rtp), "an RTP packet on the video sender is written");
        let pli = [0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0x0B, 0x1D, 0xE0];
        assert!(h.client_rtcp(&pli), "a PLI is written");
        let established = h.client_addr();
        h.datagram(established, &[0x80; 40]);
        h.datagram(established, b"junk");
        h.datagram("192.0.2.1:9".parse().expect("addr"), &[0x16, 0xfe, 0xfd, 0, 0]);
        h.signed_check(established, &[0x80, 0x22, 3, b'f', b'o', b'o'], false);
        assert!(h.live(), "junk leaves A's connection up");
        assert_eq!(
            h.subscribe_answer("v=0\r\n").map_err(|e| e.code),
            Err(ErrorCode::InvalidSdp),
            "a broken answer is refused as such"
        );
        assert!(h.live());
    }
}
