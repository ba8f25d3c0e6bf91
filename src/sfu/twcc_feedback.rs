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
//! [`Receipts`](super::receipts::Receipts) builds that feedback itself now (and hides its
//! timer while nothing arrives): this module negotiates it and sets its pace.
//!
//! That cadence follows the connection's incoming rate ([`FeedbackPace`]), as libwebrtc's
//! receivers do (`RemoteEstimatorProxy`): feedback takes at most 5 % of what arrives, a report
//! counted as 68 octets on the wire, so it goes every 100 ms (`rtc`'s interval, and mediasoup's
//! and pion's) from about 109 kbit/s up, and less often below, every 250 ms at most
//! (libwebrtc's longest) from about 44 kbit/s down: an audio-only publisher is acknowledged four
//! times a second instead of ten, as a browser receiving it would. In rooms of audio those
//! reports were a sixth of the datagrams the shard sent (BENCHMARKS §3).

use std::time::{Duration, Instant};

use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpHeaderExtensionCapability, RtpCodecKind};
use rtc::shared::error::Error;

/// What `rtc`'s `configure_twcc_receiver_only` negotiates: `transport-cc` feedback and the
/// transport-wide sequence number extension for audio and video. The receiver itself
/// ([`Receipts`](super::receipts::Receipts)) is put in a publisher connection's chain by `own_inbound`'s
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
