//! Receiver reports to publishers, sent only when there is something to report (issue 13,
//! the idle cost).
//!
//! `rtc` 0.21's `ReceiverReportInterceptor` writes a receiver report per received stream
//! every second once a first packet has arrived, and keeps doing so for good: a publisher
//! connection whose media stopped (a muted microphone and camera, an idle participant)
//! still made the shard build, encrypt and send one SRTCP datagram per stream every second,
//! reporting nothing new. RFC 3550 §6.4 puts a report block in a receiver report for the
//! sources heard since the last report; a publisher that sends nothing needs none (its
//! round-trip time and loss figures are about packets it sends).
//!
//! [`QuietReceiverReport`] wraps it and hides its deadline while no RTP packet has arrived
//! since the last report, as `twcc_feedback::QuietTwccReceiver` does for TWCC feedback: a
//! connection receiving media keeps the one-second cadence unchanged; after the last
//! packets one more report goes out (covering them), then none; the first packet after a
//! quiet spell arms it again (the report is then due at once, since the interceptor's old
//! deadline has passed). Everything else, the sender reports it reads included, passes
//! straight through.

use rtc::interceptor::{ReceiverReportBuilder, ReceiverReportInterceptor};

use super::twcc_feedback::Quiet;

/// `rtc`'s receiver reports, quiet while nothing arrives (the wrapper the TWCC receiver
/// uses, `twcc_feedback::Quiet`). See the module documentation.
pub type QuietReceiverReport = Quiet<ReceiverReportInterceptor>;

impl QuietReceiverReport {
    pub fn new() -> Self {
        Self::wrap(ReceiverReportBuilder::new().build())
    }
}

impl Default for QuietReceiverReport {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rtc::interceptor::AttributedPacket;
    use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
    use rtc::rtcp::receiver_report::ReceiverReport;
    use rtc::rtp::header::Header;
    use rtc::sansio::Protocol;
    use rtc::shared::TransportContext;
    use std::time::Duration;
    use std::time::Instant;

    const AUDIO: u32 = 0x1234;
    const VIDEO: u32 = 0x5678;

    fn bound() -> QuietReceiverReport {
        let mut rr = QuietReceiverReport::new();
        for ssrc in [AUDIO, VIDEO] {
            rr.bind_remote_stream(&StreamInfo {
                ssrc,
                clock_rate: 90_000,
                ..Default::default()
            });
        }
        rr
    }

    fn packet(ssrc: u32, seq: u16, now: Instant) -> TaggedPacket {
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(rtc::rtp::Packet {
                header: Header {
                    version: 2,
                    payload_type: 96,
                    sequence_number: seq,
                    ssrc,
                    ..Default::default()
                },
                payload: Bytes::from_static(&[0u8; 20]),
            })),
        }
    }

    /// The receiver reports written: each one's SSRCs reported on.
    fn reports(rr: &mut QuietReceiverReport) -> Vec<Vec<u32>> {
        let mut out = Vec::new();
        while let Some(written) = rr.poll_write() {
            if let Packet::Rtcp(packets) = &written.message.packet {
                for p in packets {
                    if let Some(r) = p.as_any().downcast_ref::<ReceiverReport>() {
                        out.push(r.reports.iter().map(|b| b.ssrc).collect());
                    }
                }
            }
        }
        out
    }

    /// A shard turn at `until`: fires the timer if it is due by then, as often as it is.
    fn run_until(rr: &mut QuietReceiverReport, until: Instant) -> usize {
        let mut fired = 0;
        while let Some(due) = rr.poll_timeout() {
            if due > until {
                break;
            }
            rr.handle_timeout(until).unwrap();
            fired += 1;
        }
        fired
    }

    /// `seconds` of 50 packets a second on `ssrc` from `from`, firing due reports meanwhile.
    fn media(rr: &mut QuietReceiverReport, ssrc: u32, from: Instant, seconds: u16, seq: &mut u16) -> usize {
        let mut fired = 0;
        for i in 0..50 * seconds {
            let at = from + Duration::from_millis(20) * u32::from(i);
            fired += run_until(rr, at);
            rr.handle_read(packet(ssrc, *seq, at)).unwrap();
            *seq = seq.wrapping_add(1);
            while rr.poll_read().is_some() {}
        }
        fired
    }

    #[test]
    fn a_connection_that_never_received_media_has_no_timer() {
        let mut rr = bound();
        assert_eq!(rr.poll_timeout(), None);
        assert_eq!(run_until(&mut rr, Instant::now() + Duration::from_secs(60)), 0);
    }

    #[test]
    fn media_is_reported_every_second_and_after_the_last_packets_one_report_then_none() {
        let t0 = Instant::now();
        let mut rr = bound();
        let mut seq = 0;
        let fired = media(&mut rr, AUDIO, t0, 5, &mut seq);
        assert!(
            (4..=5).contains(&fired),
            "a report a second while media arrives: {fired}"
        );
        let written = reports(&mut rr);
        assert_eq!(written.len(), 2 * fired, "one per stream each second: {written:?}");
        assert!(written.iter().all(|r| r.len() == 1), "{written:?}");
        // The media stops: one more report covers the last packets, then nothing, however long.
        assert_eq!(run_until(&mut rr, t0 + Duration::from_secs(60)), 1);
        assert_eq!(reports(&mut rr).len(), 2);
        assert_eq!(rr.poll_timeout(), None);
        assert_eq!(run_until(&mut rr, t0 + Duration::from_secs(600)), 0);
        assert!(reports(&mut rr).is_empty());
    }

    #[test]
    fn a_packet_after_a_quiet_spell_is_reported_at_once_and_the_cadence_resumes() {
        let t0 = Instant::now();
        let mut rr = bound();
        let mut seq = 0;
        media(&mut rr, VIDEO, t0, 2, &mut seq);
        run_until(&mut rr, t0 + Duration::from_secs(10));
        reports(&mut rr);
        assert_eq!(rr.poll_timeout(), None, "quiet");
        // A minute later the camera is back.
        let later = t0 + Duration::from_secs(70);
        rr.handle_read(packet(VIDEO, seq, later)).unwrap();
        let due = rr.poll_timeout().expect("armed by the packet");
        assert!(due <= later, "due at once");
        assert_eq!(run_until(&mut rr, later), 1);
        assert_eq!(reports(&mut rr).len(), 2);
        seq = seq.wrapping_add(1);
        let fired = media(&mut rr, VIDEO, later + Duration::from_millis(20), 3, &mut seq);
        assert!((2..=3).contains(&fired), "the one-second cadence again: {fired}");
    }
}
