//! Transport-wide congestion control feedback to publishers, sent only when there is
//! something to report (issue 13, the idle cost).
//!
//! `rtc` 0.21's `TwccReceiverInterceptor` records the arrival of every packet carrying
//! the transport-wide sequence number and writes feedback every 100 ms; but once its first
//! such packet has arrived it re-arms that timer for good, so a publisher connection that
//! receives nothing (a muted camera, a silent client, an idle participant) still wakes the
//! shard ten times a second to build empty feedback. Across a shard of quiet rooms those
//! firings were most of the timers' share of an idle participant's cost (BENCHMARKS §3,
//! "Timers on a grid per connection": 12 timer firings a second per participant).
//!
//! [`QuietTwccReceiver`] wraps it and hides its deadline while no packet has arrived since
//! the last feedback: the first packet after a quiet spell arms it again (the feedback then
//! goes out at once, since the interceptor's old deadline has passed, so a publisher waking
//! up is told about its packets without waiting), and a connection receiving media keeps
//! its cadence. Everything else passes straight through.
//!
//! That cadence follows the connection's incoming rate ([`FeedbackPace`]), as libwebrtc's
//! receivers do (`RemoteEstimatorProxy`): feedback takes at most 5 % of what arrives, a report
//! counted as 68 octets on the wire, so it goes every 100 ms (`rtc`'s interval, and mediasoup's
//! and pion's) from about 109 kbit/s up, and less often below, every 250 ms at most
//! (libwebrtc's longest) from about 44 kbit/s down: an audio-only publisher is acknowledged four
//! times a second instead of ten, as a browser receiving it would. In rooms of audio those
//! reports were a sixth of the datagrams the shard sent (BENCHMARKS §3).

use std::time::{Duration, Instant};

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket, TwccReceiverBuilder, TwccReceiverInterceptor};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpHeaderExtensionCapability, RtpCodecKind};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::MarshalSize;

/// What `rtc`'s `configure_twcc_receiver_only` negotiates: `transport-cc` feedback and the
/// transport-wide sequence number extension for audio and video. The receiver itself
/// ([`QuietTwccReceiver`]) is put in a publisher connection's chain by `own_inbound`'s
/// `ReceiveSide`; a connection that receives no media (a subscriber's: the feedback flows
/// toward us, and congestion control reads it from the RTCP tap) has none.
pub fn negotiate(media_engine: &mut MediaEngine) -> Result<(), Error> {
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        media_engine.register_feedback(
            RTCPFeedback {
                typ: "transport-cc".to_owned(),
                parameter: String::new(),
            },
            kind,
        );
        media_engine.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: rtc::sdp::extmap::TRANSPORT_CC_URI.to_owned(),
            },
            kind,
            None,
        )?;
    }
    Ok(())
}

/// An interceptor whose timer only runs while packets arrive: its deadline is hidden
/// until an RTP packet has arrived since it last fired, and firing it re-arms the wait.
/// Everything else passes straight through. `rtc` 0.21's TWCC receiver and receiver-report
/// interceptors re-arm their timers for good once a first packet has arrived, so a
/// connection whose media stopped woke its shard for nothing (see the module
/// documentation and `quiet_reports`).
pub struct Quiet<I> {
    inner: I,
    /// An RTP packet arrived since the timer last fired.
    heard: bool,
    /// The cadence, when it follows the incoming rate (TWCC feedback).
    pace: Option<FeedbackPace>,
}

impl<I> Quiet<I> {
    pub fn wrap(inner: I) -> Self {
        Self {
            inner,
            heard: false,
            pace: None,
        }
    }
}

/// Feedback's share of the incoming bandwidth (libwebrtc's `bandwidth_fraction`).
const FEEDBACK_SHARE: f64 = 0.05;
/// A feedback report on the wire, as libwebrtc counts it: IPv4, UDP, SRTCP and RTCP headers
/// and a short report (20 + 8 + 10 + 30 octets).
const FEEDBACK_BITS: f64 = 68.0 * 8.0;
/// The shortest interval: `rtc`'s default, which a fast connection keeps.
pub const FEEDBACK_MIN: Duration = Duration::from_millis(100);
/// The longest interval (libwebrtc's `max_interval`).
pub const FEEDBACK_MAX: Duration = Duration::from_millis(250);

/// The interval between feedback reports for a connection that received `bytes` of RTP over
/// `over`: the reports at most [`FEEDBACK_SHARE`] of it, between [`FEEDBACK_MIN`] and
/// [`FEEDBACK_MAX`].
pub fn feedback_interval(bytes: u64, over: Duration) -> Duration {
    let bits_per_sec = bytes as f64 * 8.0 / over.as_secs_f64().max(1e-3);
    let share = FEEDBACK_SHARE * bits_per_sec;
    if share * FEEDBACK_MAX.as_secs_f64() <= FEEDBACK_BITS {
        return FEEDBACK_MAX;
    }
    Duration::from_secs_f64(FEEDBACK_BITS / share).clamp(FEEDBACK_MIN, FEEDBACK_MAX)
}

/// When the next feedback may go: the RTP octets arrived since the last report, and the
/// earliest time of the next one.
#[derive(Debug, Default, Clone)]
pub struct FeedbackPace {
    bytes: u64,
    since: Option<Instant>,
    next: Option<Instant>,
}

impl FeedbackPace {
    /// A packet of `bytes` arrived.
    pub fn arrived(&mut self, now: Instant, bytes: usize) {
        self.bytes += bytes as u64;
        self.since.get_or_insert(now);
    }

    /// The earliest time of the next report (none before the first).
    pub fn next(&self) -> Option<Instant> {
        self.next
    }

    /// A report went at `now`: the next waits for the interval the rate since the last one
    /// calls for.
    pub fn reported(&mut self, now: Instant) {
        let over = self
            .since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        self.next = Some(now + feedback_interval(self.bytes, over));
        self.bytes = 0;
        self.since = Some(now);
    }
}

/// `rtc`'s TWCC receiver, quiet while nothing arrives. See the module documentation.
pub type QuietTwccReceiver = Quiet<TwccReceiverInterceptor>;

impl QuietTwccReceiver {
    pub fn new() -> Self {
        Self {
            pace: Some(FeedbackPace::default()),
            ..Self::wrap(TwccReceiverBuilder::new().with_interval(FEEDBACK_MIN).build())
        }
    }
}

impl Default for QuietTwccReceiver {
    fn default() -> Self {
        Self::new()
    }
}

impl<I: Interceptor> Protocol<TaggedPacket, TaggedPacket, ()> for Quiet<I> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(packet) = &msg.message.packet {
            self.heard = true;
            if let Some(pace) = &mut self.pace {
                pace.arrived(msg.now, packet.header.marshal_size() + packet.payload.len());
            }
        }
        self.inner.handle_read(msg)
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.inner.poll_read()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.inner.handle_write(msg)
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.inner.poll_write()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        if self.poll_timeout().is_none_or(|due| now < due) {
            return Ok(());
        }
        self.heard = false;
        if let Some(pace) = &mut self.pace {
            pace.reported(now);
        }
        self.inner.handle_timeout(now)
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        if !self.heard {
            return None;
        }
        let due = self.inner.poll_timeout()?;
        Some(match self.pace.as_ref().and_then(FeedbackPace::next) {
            Some(next) => due.max(next),
            None => due,
        })
    }
}

impl<I: Interceptor> Interceptor for Quiet<I> {
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.inner.bind_remote_stream(info);
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.inner.unbind_remote_stream(info);
    }

    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.inner.bind_local_stream(info);
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.inner.unbind_local_stream(info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rtc::interceptor::AttributedPacket;
    use rtc::interceptor::RTPHeaderExtension;
    use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
    use rtc::rtp::header::{EXTENSION_PROFILE_ONE_BYTE, Extension, Header};
    use rtc::shared::TransportContext;
    use rtc::shared::marshal::Marshal;
    use std::time::Duration;

    const TWCC_ID: u8 = 3;
    const SSRC: u32 = 0x1234;

    fn bound() -> QuietTwccReceiver {
        let mut twcc = QuietTwccReceiver::new();
        twcc.bind_remote_stream(&StreamInfo {
            ssrc: SSRC,
            rtp_header_extensions: vec![RTPHeaderExtension {
                uri: rtc::sdp::extmap::TRANSPORT_CC_URI.to_owned(),
                id: u16::from(TWCC_ID),
            }],
            ..Default::default()
        });
        twcc
    }

    fn packet(transport_seq: u16, now: Instant) -> TaggedPacket {
        sized(transport_seq, now, 20)
    }

    /// A packet with a payload of `len` octets (its header is 20: the fixed part and the
    /// one-byte extension block).
    fn sized(transport_seq: u16, now: Instant, len: usize) -> TaggedPacket {
        let header = Header {
            version: 2,
            payload_type: 96,
            sequence_number: transport_seq,
            ssrc: SSRC,
            extension: true,
            extension_profile: EXTENSION_PROFILE_ONE_BYTE,
            extensions: vec![Extension {
                id: TWCC_ID,
                payload: Bytes::copy_from_slice(&transport_seq.to_be_bytes()),
            }],
            ..Default::default()
        };
        let rtp = rtc::rtp::Packet {
            header,
            payload: Bytes::from(vec![0u8; len]),
        };
        assert!(rtp.marshal().is_ok());
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(rtp)),
        }
    }

    /// The TWCC feedback packets written, and how many packets they acknowledge.
    fn feedback(twcc: &mut QuietTwccReceiver) -> Vec<u16> {
        let mut acked = Vec::new();
        while let Some(out) = twcc.poll_write() {
            if let Packet::Rtcp(packets) = &out.message.packet {
                for p in packets {
                    if let Some(cc) = p.as_any().downcast_ref::<TransportLayerCc>() {
                        acked.push(cc.packet_status_count);
                    }
                }
            }
        }
        acked
    }

    /// Fires the timer when it is due, as the shard does, up to `until`.
    fn run_until(twcc: &mut QuietTwccReceiver, until: Instant) -> usize {
        let mut fired = 0;
        while let Some(due) = twcc.poll_timeout() {
            if due > until {
                break;
            }
            twcc.handle_timeout(due).unwrap();
            fired += 1;
        }
        fired
    }

    #[test]
    fn a_connection_that_never_received_media_has_no_timer() {
        let mut twcc = bound();
        assert_eq!(twcc.poll_timeout(), None);
    }

    /// Feeds `count` packets of `len` payload octets, one every 20 ms, firing the timer when
    /// due, then runs on to 100 ms after the last: the firings and the packets acknowledged.
    fn stream(twcc: &mut QuietTwccReceiver, t0: Instant, count: u16, len: usize) -> (usize, u32) {
        let mut fired = 0;
        let mut acked = Vec::new();
        for i in 0..count {
            let at = t0 + Duration::from_millis(20) * u32::from(i);
            fired += run_until(twcc, at);
            twcc.handle_read(sized(i, at, len)).unwrap();
            while twcc.poll_read().is_some() {}
            acked.extend(feedback(twcc));
        }
        let end = t0 + Duration::from_millis(20) * u32::from(count) + FEEDBACK_MAX;
        fired += run_until(twcc, end);
        acked.extend(feedback(twcc));
        (fired, acked.iter().map(|n| u32::from(*n)).sum())
    }

    #[test]
    fn fast_media_is_acknowledged_every_100_ms_and_silence_stops_the_timer() {
        let t0 = Instant::now();
        let mut twcc = bound();
        // 50 packets of 1 020 octets a second for one second (408 kbit/s): every 100 ms.
        let (fired, acked) = stream(&mut twcc, t0, 50, 1000);
        assert!(
            (9..=12).contains(&fired),
            "about ten feedback turns in a second: {fired}"
        );
        assert_eq!(acked, 50, "every packet acknowledged once");
        // Then nothing arrives: no timer at all, however long.
        assert_eq!(twcc.poll_timeout(), None);
        assert_eq!(run_until(&mut twcc, t0 + Duration::from_secs(60)), 0);
    }

    #[test]
    fn slow_media_is_acknowledged_less_often_as_a_browser_would() {
        let t0 = Instant::now();
        let mut twcc = bound();
        // Audio: 50 packets of 120 octets a second for two seconds (48 kbit/s): the reports
        // may take 5 % of it, one every 227 ms, after the first at 100 ms.
        let (fired, acked) = stream(&mut twcc, t0, 100, 100);
        assert!(
            (8..=10).contains(&fired),
            "about nine feedback turns in two seconds: {fired}"
        );
        assert_eq!(acked, 100, "every packet acknowledged once");
    }

    #[test]
    fn the_feedback_interval_follows_the_rate_between_100_and_250_ms() {
        let second = Duration::from_secs(1);
        assert_eq!(feedback_interval(0, second), FEEDBACK_MAX);
        assert_eq!(feedback_interval(0, Duration::ZERO), FEEDBACK_MAX);
        assert_eq!(feedback_interval(5_000, second), FEEDBACK_MAX, "40 kbit/s");
        let audio = feedback_interval(6_000, second).as_millis();
        assert!((225..=228).contains(&audio), "48 kbit/s: {audio} ms");
        assert_eq!(feedback_interval(13_600, second).as_millis(), 100, "108.8 kbit/s");
        assert_eq!(feedback_interval(125_000, second), FEEDBACK_MIN, "1 Mbit/s");
        assert_eq!(
            feedback_interval(1_000, Duration::ZERO),
            FEEDBACK_MIN,
            "a burst in an instant"
        );
    }

    #[test]
    fn a_packet_after_a_quiet_spell_is_acknowledged_at_once() {
        let t0 = Instant::now();
        let mut twcc = bound();
        twcc.handle_read(packet(0, t0)).unwrap();
        run_until(&mut twcc, t0 + Duration::from_millis(200));
        assert_eq!(feedback(&mut twcc), [1]);
        assert_eq!(twcc.poll_timeout(), None);
        // Ten seconds later one packet: its feedback is due at once (the old deadline passed).
        let later = t0 + Duration::from_secs(10);
        twcc.handle_read(packet(1, later)).unwrap();
        let due = twcc.poll_timeout().expect("armed by the packet");
        assert!(due <= later, "due at once");
        assert_eq!(run_until(&mut twcc, later), 1);
        assert_eq!(feedback(&mut twcc), [1]);
        assert_eq!(twcc.poll_timeout(), None);
    }
}
