//! Sender reports for the streams the shard encrypts itself (issue 13, the lean write path;
//! see `srtp_keys` and docs/ARCHITECTURE.md "A forwarded packet's path").
//!
//! A forwarded copy written past `rtc`'s write chain is never seen by its sender-report
//! interceptor, which reports only streams it saw packets of; so the connection's
//! [`SenderReports`] counts what was sent per SSRC and makes the RTCP sender reports
//! (RFC 3550 §6.4.1) the same way: the RTP-to-wall-clock mapping is taken at the first
//! packet of each frame (its timestamp changed) of an in-order packet, so the time a
//! large frame takes to send does not skew it; the report's RTP time is that timestamp
//! moved on by the time since at the stream's clock rate; packets and payload octets are
//! counted whatever their order. A stream is reported once a second while it sends, and
//! once more after it stops (it was a sender in the last interval), then no more: a
//! quiet connection sends no reports (the idle cost).

use std::time::{Duration, Instant, SystemTime};

use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp::header::Header;
use rtc::rtp_transceiver::RTCRtpSenderId;

/// How often a sending stream is reported (`rtc`'s sender-report interval).
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// `wall` as a 64-bit NTP timestamp (32.32 fixed point seconds since 1900).
pub fn ntp(wall: SystemTime) -> u64 {
    let since = wall.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs() + NTP_UNIX_OFFSET;
    let fraction = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    (seconds << 32) | fraction
}

/// One stream sent through the lean path.
#[derive(Debug, Clone)]
struct Sent {
    ssrc: u32,
    sender: RTCRtpSenderId,
    clock_rate: u32,
    last_sn: u16,
    /// The timestamp of the frame whose first packet set the mapping, and when.
    frame_ts: u32,
    frame_at: Instant,
    packets: u32,
    octets: u32,
    /// Packets since the last report.
    fresh: bool,
}

/// What one connection's lean path sent, per SSRC, and its reports' schedule.
#[derive(Debug, Default)]
pub struct SenderReports {
    streams: Vec<Sent>,
    due: Option<Instant>,
}

impl SenderReports {
    /// A packet of `header` with `payload` bytes was sent on `sender` at `now`;
    /// `clock_rate` is asked for only when the stream is new.
    pub fn sent(
        &mut self,
        sender: RTCRtpSenderId,
        header: &Header,
        payload: usize,
        now: Instant,
        clock_rate: impl FnOnce() -> u32,
    ) {
        let (ssrc, seq, ts) = (header.ssrc, header.sequence_number, header.timestamp);
        let stream = match self.streams.iter().position(|s| s.ssrc == ssrc) {
            Some(i) => &mut self.streams[i],
            None => {
                self.streams.push(Sent {
                    ssrc,
                    sender,
                    clock_rate: clock_rate(),
                    last_sn: seq,
                    frame_ts: ts,
                    frame_at: now,
                    packets: 0,
                    octets: 0,
                    fresh: false,
                });
                self.streams.last_mut().expect("just pushed")
            }
        };
        let ahead = seq.wrapping_sub(stream.last_sn);
        if ahead > 0 && ahead < 1 << 15 {
            stream.last_sn = seq;
            if ts != stream.frame_ts {
                stream.frame_ts = ts;
                stream.frame_at = now;
            }
        }
        stream.sender = sender;
        stream.packets = stream.packets.wrapping_add(1);
        stream.octets = stream.octets.wrapping_add(payload as u32);
        stream.fresh = true;
        self.due.get_or_insert(now + INTERVAL);
    }

    /// When the next reports are due (none while nothing is to be reported).
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// The reports due at `now` (wall clock `wall`), each with the sender to write it on:
    /// every stream that sent since the last reports; none before they are due.
    pub fn reports(&mut self, now: Instant, wall: SystemTime, out: &mut Vec<(RTCRtpSenderId, SenderReport)>) {
        if self.due.is_none_or(|at| now < at) {
            return;
        }
        let ntp_time = ntp(wall);
        let mut any = false;
        for s in &mut self.streams {
            if !std::mem::take(&mut s.fresh) {
                continue;
            }
            any = true;
            let since = now.saturating_duration_since(s.frame_at);
            // RTP time wraps: so does the elapsed time in clock ticks.
            let ticks = (since.as_nanos() * u128::from(s.clock_rate) / 1_000_000_000) as u32;
            out.push((
                s.sender,
                SenderReport {
                    ssrc: s.ssrc,
                    ntp_time,
                    rtp_time: s.frame_ts.wrapping_add(ticks),
                    packet_count: s.packets,
                    octet_count: s.octets,
                    ..Default::default()
                },
            ));
        }
        // Quiet since the last reports: nothing more until it sends again.
        self.due = any.then_some(now + INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ssrc: u32, seq: u16, ts: u32) -> Header {
        Header {
            ssrc,
            sequence_number: seq,
            timestamp: ts,
            ..Default::default()
        }
    }

    fn sender(i: usize) -> RTCRtpSenderId {
        RTCRtpSenderId::from(i)
    }

    fn reports(r: &mut SenderReports, now: Instant) -> Vec<(RTCRtpSenderId, SenderReport)> {
        let mut out = Vec::new();
        r.reports(now, SystemTime::UNIX_EPOCH + Duration::from_secs(1_000), &mut out);
        out
    }

    #[test]
    fn ntp_counts_from_1900_in_32_32_fixed_point() {
        assert_eq!(ntp(SystemTime::UNIX_EPOCH), NTP_UNIX_OFFSET << 32);
        let half = SystemTime::UNIX_EPOCH + Duration::from_millis(1_500);
        assert_eq!(ntp(half), ((NTP_UNIX_OFFSET + 1) << 32) | (1 << 31));
    }

    #[test]
    fn nothing_is_reported_before_a_packet_or_before_the_interval() {
        let t0 = Instant::now();
        let mut r = SenderReports::default();
        assert_eq!(r.due(), None);
        assert!(reports(&mut r, t0 + INTERVAL * 5).is_empty());
        r.sent(sender(0), &header(7, 1, 3000), 100, t0, || 90_000);
        assert_eq!(r.due(), Some(t0 + INTERVAL));
        assert!(reports(&mut r, t0 + INTERVAL / 2).is_empty());
        assert_eq!(reports(&mut r, t0 + INTERVAL).len(), 1);
    }

    #[test]
    fn a_report_maps_the_frame_start_and_counts_every_packet() {
        let t0 = Instant::now();
        let mut r = SenderReports::default();
        let ms = Duration::from_millis;
        // A frame of three packets sent over 4 ms, then the next frame 33 ms later, then a
        // late packet of the first frame (out of order: counted, not mapped).
        r.sent(sender(2), &header(7, 10, 90_000), 1000, t0, || 90_000);
        r.sent(sender(2), &header(7, 11, 90_000), 1000, t0 + ms(2), || unreachable!());
        r.sent(sender(2), &header(7, 12, 90_000), 500, t0 + ms(4), || unreachable!());
        r.sent(sender(2), &header(7, 14, 93_000), 800, t0 + ms(33), || unreachable!());
        r.sent(sender(2), &header(7, 13, 90_000), 700, t0 + ms(40), || unreachable!());
        let out = reports(&mut r, t0 + ms(1033));
        assert_eq!(out.len(), 1);
        let (on, sr) = &out[0];
        assert_eq!(*on, sender(2));
        assert_eq!((sr.ssrc, sr.packet_count, sr.octet_count), (7, 5, 4000));
        assert_eq!(sr.rtp_time, 93_000 + 90_000, "one second after the last frame began");
        assert_eq!(sr.ntp_time, (NTP_UNIX_OFFSET + 1_000) << 32);
    }

    #[test]
    fn streams_are_reported_on_their_own_clocks_and_a_quiet_one_stops() {
        let t0 = Instant::now();
        let mut r = SenderReports::default();
        r.sent(sender(0), &header(1, 1, 0), 100, t0, || 48_000);
        r.sent(sender(1), &header(2, 1, 0), 1000, t0, || 90_000);
        let out = reports(&mut r, t0 + INTERVAL);
        let rtp: Vec<(u32, u32)> = out.iter().map(|(_, sr)| (sr.ssrc, sr.rtp_time)).collect();
        assert_eq!(rtp, [(1, 48_000), (2, 90_000)]);
        assert_eq!(r.due(), Some(t0 + INTERVAL * 2));
        // Only audio goes on: video, a sender in the last interval no more, is not reported.
        r.sent(sender(0), &header(1, 2, 960), 100, t0 + INTERVAL, || unreachable!());
        let out = reports(&mut r, t0 + INTERVAL * 2);
        assert_eq!(out.iter().map(|(_, sr)| sr.ssrc).collect::<Vec<_>>(), [1]);
        // Then nothing at all: one more tick finds nothing, and the schedule stops.
        assert!(reports(&mut r, t0 + INTERVAL * 3).is_empty());
        assert_eq!(r.due(), None);
        // Sending again starts it again, counts carried on.
        r.sent(
            sender(1),
            &header(2, 2, 900_000),
            1000,
            t0 + INTERVAL * 10,
            || unreachable!(),
        );
        let out = reports(&mut r, t0 + INTERVAL * 11);
        assert_eq!(
            (out[0].1.ssrc, out[0].1.packet_count, out[0].1.octet_count),
            (2, 2, 2000)
        );
    }

    #[test]
    fn sequence_numbers_wrap_in_order() {
        let t0 = Instant::now();
        let mut r = SenderReports::default();
        r.sent(sender(0), &header(1, 65_535, 100), 10, t0, || 90_000);
        r.sent(
            sender(0),
            &header(1, 0, 200),
            10,
            t0 + Duration::from_millis(10),
            || 90_000,
        );
        let out = reports(&mut r, t0 + Duration::from_millis(10) + INTERVAL);
        assert_eq!(
            out[0].1.rtp_time,
            200 + 90_000,
            "the wrapped packet started the new frame"
        );
    }
}
