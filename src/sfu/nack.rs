//! Asking publishers for what did not arrive: a NACK generator with the pacing
//! and limits of real stacks, in place of `rtc`'s.
//!
//! `rtc` 0.21.1's `NackGeneratorInterceptor` NACKs every missing sequence number
//! of a 512-packet window every 100 ms, with no retry limit, and it never learns
//! that a packet came back as RTX: the repair arrives on the RTX SSRC, passes the
//! interceptor chain under that SSRC and is only turned back into the original
//! (RFC 4588 OSN) application-side of it. So each lost packet was asked for
//! again every 100 ms until 512 newer ones had arrived (4 to 10 s of video), and
//! the publisher (libwebrtc answers a NACK once per RTT per packet, from a ~1 s
//! history) resent it about ten times: 1 368 to 2 933 resends for about 100 lost
//! packets in 20 s of a 5 %-loss call, docs/BENCHMARKS.md §6.
//!
//! [`LossTracker`] is the pure policy, per received stream, as libwebrtc's
//! `NackRequester` does it: a gap is asked for at once, each missing packet again
//! only after max(RTT, 20 ms), at most 10 times and for at most 1 s; a repair (the
//! original or its RTX copy, whose OSN names it) ends the asking; a gap too large
//! to repair is given up for a keyframe. [`NackGenerator`] is the interceptor
//! that feeds it (slot `NackGenerator`, where `rtc`'s sat) and writes the NACKs.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::interceptor::{AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{TransportLayerNack, nack_pairs_from_sequence_numbers};
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;
use rtc::shared::error::Error;

use super::stats::StatsPair;

/// How a receiver asks for retransmissions (libwebrtc's `NackRequester` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NackParams {
    /// Never ask for the same packet again sooner than this, whatever the RTT.
    pub min_interval: Duration,
    /// The RTT assumed while none is known (libwebrtc's default too).
    pub default_rtt: Duration,
    /// Requests per missing packet before it is given up.
    pub max_tries: u8,
    /// A packet missing longer than this is given up (the frame it belongs to is late anyway).
    pub max_age: Duration,
    /// More missing packets than this at once: give them all up and ask for a keyframe.
    pub max_missing: usize,
}

impl Default for NackParams {
    fn default() -> Self {
        Self {
            min_interval: Duration::from_millis(20),
            default_rtt: Duration::from_millis(100),
            max_tries: 10,
            max_age: Duration::from_secs(1),
            max_missing: 500,
        }
    }
}

impl NackParams {
    /// How long to wait before asking for a packet again.
    pub fn retry_interval(&self, rtt: Option<Duration>) -> Duration {
        rtt.unwrap_or(self.default_rtt).max(self.min_interval)
    }
}

/// One packet not (yet) received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Missing {
    seq: u16,
    /// When the gap was seen.
    since: Instant,
    /// Requests sent for it so far.
    tries: u8,
    /// When it was last asked for.
    asked: Option<Instant>,
}

/// What one arriving packet meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The first packet, or the next one in order.
    InOrder,
    /// It came after a gap of this many packets (now missing).
    Gap(u16),
    /// It filled a gap (a late original or a retransmission).
    Recovered,
    /// Older than the newest and not missing: a duplicate, or older than anything tracked.
    Stale,
    /// A gap too large to repair by retransmission: nothing is missing any more,
    /// and the stream needs a keyframe.
    GaveUp,
}

/// Loss detection and request pacing for one received stream. Pure.
#[derive(Debug, Clone)]
pub struct LossTracker {
    params: NackParams,
    /// The newest sequence number seen (RTP modular order).
    highest: Option<u16>,
    /// Missing packets, oldest first.
    missing: VecDeque<Missing>,
}

/// `a` is newer than `b` in RTP's modular order.
fn newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

impl LossTracker {
    pub fn new(params: NackParams) -> Self {
        Self {
            params,
            highest: None,
            missing: VecDeque::new(),
        }
    }

    /// Packets currently missing.
    pub fn missing(&self) -> usize {
        self.missing.len()
    }

    /// A packet of the stream arrived (an original; see [`repaired`](Self::repaired) for RTX).
    pub fn received(&mut self, seq: u16, now: Instant) -> Arrival {
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            return Arrival::InOrder;
        };
        if !newer(seq, highest) {
            return if self.remove(seq) {
                Arrival::Recovered
            } else {
                Arrival::Stale
            };
        }
        self.highest = Some(seq);
        let gap = seq.wrapping_sub(highest).wrapping_sub(1);
        if gap == 0 {
            return Arrival::InOrder;
        }
        if self.missing.len() + gap as usize > self.params.max_missing {
            self.missing.clear();
            return Arrival::GaveUp;
        }
        for i in 1..=gap {
            self.missing.push_back(Missing {
                seq: highest.wrapping_add(i),
                since: now,
                tries: 0,
                asked: None,
            });
        }
        Arrival::Gap(gap)
    }

    /// A retransmission of `seq` arrived (an RTX packet's OSN): no longer missing.
    /// Unlike [`received`](Self::received) it never moves the newest sequence number.
    pub fn repaired(&mut self, seq: u16) -> bool {
        self.remove(seq)
    }

    fn remove(&mut self, seq: u16) -> bool {
        match self.missing.iter().position(|m| m.seq == seq) {
            Some(i) => {
                self.missing.remove(i);
                true
            }
            None => false,
        }
    }

    /// The packets to ask for now, appended to `out`: never asked, or asked longer
    /// than the retry interval ago. Packets past `max_tries` or `max_age` are given
    /// up (returned count).
    pub fn due(&mut self, now: Instant, rtt: Option<Duration>, out: &mut Vec<u16>) -> usize {
        let interval = self.params.retry_interval(rtt);
        let (max_tries, max_age) = (self.params.max_tries, self.params.max_age);
        let before = self.missing.len();
        self.missing
            .retain(|m| m.tries < max_tries && now.saturating_duration_since(m.since) < max_age);
        let given_up = before - self.missing.len();
        for m in &mut self.missing {
            if m.asked.is_none_or(|at| now.saturating_duration_since(at) >= interval) {
                m.tries += 1;
                m.asked = Some(now);
                out.push(m.seq);
            }
        }
        given_up
    }

    /// When [`due`](Self::due) next has something to do (a request or a packet to give up).
    pub fn next_due(&self, rtt: Option<Duration>) -> Option<Instant> {
        let interval = self.params.retry_interval(rtt);
        self.missing
            .iter()
            .map(|m| {
                let expiry = m.since + self.params.max_age;
                m.asked.map_or(m.since, |at| (at + interval).min(expiry))
            })
            .min()
    }
}

/// One received stream the generator watches.
struct Watched {
    ssrc: u32,
    /// Its RTX SSRC: packets there carry the sequence number they repair (OSN).
    rtx: Option<u32>,
    tracker: LossTracker,
}

/// The NACK generator for publisher connections, in `rtc`'s `NackGenerator` slot.
/// Sees every received RTP packet (originals and RTX, before the endpoint turns
/// RTX back into originals), asks for gaps at once and again on its timer.
pub struct NackGenerator {
    params: NackParams,
    /// The RTT toward the remote, when known (today never: the gateway only
    /// receives on publisher connections, so libwebrtc's default is assumed).
    rtt: Option<Duration>,
    /// The SSRC our NACKs and PLIs are sent from.
    sender_ssrc: u32,
    streams: Vec<Watched>,
    stats: StatsPair,
    next_timeout: Option<Instant>,
    scratch: Vec<u16>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl NackGenerator {
    pub fn new(params: NackParams, stats: StatsPair) -> Self {
        Self {
            params,
            rtt: None,
            sender_ssrc: rand::random(),
            streams: Vec::new(),
            stats,
            next_timeout: None,
            scratch: Vec::new(),
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }

    /// The SSRC its NACKs and PLIs are sent from.
    pub fn sender_ssrc(&self) -> u32 {
        self.sender_ssrc
    }

    /// Writes the NACKs (and keyframe requests) due on every stream.
    fn generate(&mut self, now: Instant) {
        for s in &mut self.streams {
            self.scratch.clear();
            s.tracker.due(now, self.rtt, &mut self.scratch);
            if self.scratch.is_empty() {
                continue;
            }
            self.stats.add(|c| &c.nacks_sent, 1);
            self.stats.add(|c| &c.nack_requests_sent, self.scratch.len() as u64);
            let nack = TransportLayerNack {
                sender_ssrc: self.sender_ssrc,
                media_ssrc: s.ssrc,
                nacks: nack_pairs_from_sequence_numbers(&self.scratch),
            };
            self.write_queue.push_back(rtcp(now, Box::new(nack)));
        }
        self.rearm();
    }

    fn rearm(&mut self) {
        self.next_timeout = self.streams.iter().filter_map(|s| s.tracker.next_due(self.rtt)).min();
    }

    /// What `handle_read` does with an RTP packet, without the queue (`own_inbound` calls
    /// it directly): notes its arrival in its stream.
    pub fn observe(&mut self, now: Instant, p: &rtc::rtp::Packet) {
        if !self.streams.is_empty() {
            self.on_rtp(now, p.header.ssrc, p.header.sequence_number, &p.payload);
        }
    }

    fn on_rtp(&mut self, now: Instant, ssrc: u32, seq: u16, payload: &[u8]) {
        if let Some(s) = self.streams.iter_mut().find(|s| s.ssrc == ssrc) {
            match s.tracker.received(seq, now) {
                Arrival::Gap(n) => {
                    self.stats.add(|c| &c.missing_packets, u64::from(n));
                    self.generate(now);
                }
                Arrival::GaveUp => {
                    let pli = PictureLossIndication {
                        sender_ssrc: self.sender_ssrc,
                        media_ssrc: ssrc,
                    };
                    self.write_queue.push_back(rtcp(now, Box::new(pli)));
                    self.stats.add(|c| &c.plis_sent, 1);
                    self.rearm();
                }
                Arrival::Recovered => self.rearm(),
                Arrival::InOrder | Arrival::Stale => {}
            }
        } else if let Some(s) = self.streams.iter_mut().find(|s| s.rtx == Some(ssrc))
            && let [hi, lo, ..] = *payload
        {
            // RFC 4588: the first two bytes of an RTX payload are the original sequence
            // number; padding-only RTX (bandwidth probes) carries none.
            if s.tracker.repaired(u16::from_be_bytes([hi, lo])) {
                self.rearm();
            }
        }
    }
}

fn rtcp(now: Instant, packet: Box<dyn rtc::rtcp::Packet>) -> TaggedPacket {
    TaggedPacket {
        now,
        transport: TransportContext::default(),
        message: AttributedPacket::new(Packet::Rtcp(vec![packet])),
    }
}

/// Whether a stream negotiated generic NACK (`a=rtcp-fb:<pt> nack`).
fn supports_nack(info: &StreamInfo) -> bool {
    info.rtcp_feedback
        .iter()
        .any(|fb| fb.typ == "nack" && fb.parameter.is_empty())
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for NackGenerator {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(p) = &msg.message.packet {
            self.observe(msg.now, p);
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        if self.next_timeout.is_some_and(|at| now >= at) {
            self.generate(now);
        }
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        self.next_timeout
    }
}

impl Interceptor for NackGenerator {
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        // `rtc` binds an RTX flow in its own right too (right after its primary): it is
        // watched through its primary, never as a stream of its own.
        let is_rtx = self.streams.iter().any(|s| s.rtx == Some(info.ssrc));
        if is_rtx || !supports_nack(info) || self.streams.iter().any(|s| s.ssrc == info.ssrc) {
            return;
        }
        self.streams.push(Watched {
            ssrc: info.ssrc,
            rtx: info.ssrc_rtx,
            tracker: LossTracker::new(self.params),
        });
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.streams.retain(|s| s.ssrc != info.ssrc);
        self.rearm();
    }

    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::RTCPFeedback;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn tracker() -> LossTracker {
        LossTracker::new(NackParams::default())
    }

    fn due(t: &mut LossTracker, now: Instant) -> Vec<u16> {
        let mut out = Vec::new();
        t.due(now, None, &mut out);
        out
    }

    #[test]
    fn in_order_packets_leave_nothing_missing() {
        let mut t = tracker();
        let now = Instant::now();
        for seq in 100..200 {
            assert_eq!(t.received(seq, now), Arrival::InOrder);
        }
        assert_eq!(t.missing(), 0);
        assert!(due(&mut t, now).is_empty());
        assert_eq!(t.next_due(None), None);
    }

    #[test]
    fn a_gap_is_asked_for_at_once_then_once_per_interval_until_repaired() {
        let mut t = tracker();
        let t0 = Instant::now();
        t.received(10, t0);
        assert_eq!(t.received(13, t0), Arrival::Gap(2));
        assert_eq!(t.next_due(None), Some(t0), "due at once");
        assert_eq!(due(&mut t, t0), [11, 12]);
        assert!(due(&mut t, t0 + MS(50)).is_empty(), "not again within the RTT");
        assert_eq!(t.next_due(None), Some(t0 + MS(100)));
        assert_eq!(t.received(11, t0 + MS(60)), Arrival::Recovered);
        assert_eq!(
            due(&mut t, t0 + MS(100)),
            [12],
            "the repaired one is not asked for again"
        );
        assert!(t.repaired(12));
        assert!(!t.repaired(12), "once");
        assert!(due(&mut t, t0 + MS(300)).is_empty());
        assert_eq!(t.received(12, t0 + MS(310)), Arrival::Stale, "a duplicate");
    }

    #[test]
    fn the_interval_follows_the_rtt_with_a_floor() {
        let p = NackParams::default();
        assert_eq!(p.retry_interval(None), MS(100));
        assert_eq!(p.retry_interval(Some(MS(5))), MS(20));
        assert_eq!(p.retry_interval(Some(MS(250))), MS(250));
        let mut t = tracker();
        let t0 = Instant::now();
        t.received(1, t0);
        t.received(3, t0);
        let mut out = Vec::new();
        t.due(t0, Some(MS(30)), &mut out);
        t.due(t0 + MS(29), Some(MS(30)), &mut out);
        assert_eq!(out, [2]);
        t.due(t0 + MS(30), Some(MS(30)), &mut out);
        assert_eq!(out, [2, 2]);
    }

    #[test]
    fn a_packet_is_asked_for_at_most_ten_times_and_for_at_most_a_second() {
        let mut t = tracker();
        let t0 = Instant::now();
        t.received(0, t0);
        t.received(2, t0);
        let mut asked = 0;
        let mut now = t0;
        for _ in 0..30 {
            asked += due(&mut t, now).len();
            now += MS(20);
        }
        // 580 ms at a 100 ms interval: 6 requests (0, 100, ..., 500 ms).
        assert_eq!(asked, 6);
        let mut out = Vec::new();
        assert_eq!(t.due(t0 + Duration::from_secs(1), None, &mut out), 1, "given up by age");
        assert!(out.is_empty());
        assert_eq!(t.missing(), 0);

        let params = NackParams {
            min_interval: MS(1),
            ..NackParams::default()
        };
        let mut t = LossTracker::new(params);
        t.received(0, t0);
        t.received(2, t0);
        let mut out = Vec::new();
        for i in 0..20 {
            t.due(t0 + MS(i * 10), Some(MS(1)), &mut out);
        }
        assert_eq!(out.len(), 10, "the try limit");
        assert_eq!(t.missing(), 0);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut t = tracker();
        let t0 = Instant::now();
        t.received(65534, t0);
        assert_eq!(t.received(1, t0), Arrival::Gap(2));
        assert_eq!(due(&mut t, t0), [65535, 0]);
        assert_eq!(t.received(65535, t0), Arrival::Recovered);
        assert_eq!(t.received(2, t0), Arrival::InOrder);
    }

    #[test]
    fn a_gap_too_large_is_given_up_for_a_keyframe() {
        let mut t = tracker();
        let t0 = Instant::now();
        t.received(0, t0);
        t.received(3, t0);
        assert_eq!(t.received(1000, t0), Arrival::GaveUp);
        assert_eq!(t.missing(), 0);
        assert_eq!(t.received(1001, t0), Arrival::InOrder, "and goes on from there");
        assert_eq!(t.received(998, t0), Arrival::Stale);
    }

    fn stats() -> StatsPair {
        StatsPair {
            meeting: Default::default(),
            shard: Default::default(),
        }
    }

    fn info(ssrc: u32, rtx: Option<u32>, nack: bool) -> StreamInfo {
        StreamInfo {
            ssrc,
            ssrc_rtx: rtx,
            rtcp_feedback: if nack {
                vec![RTCPFeedback {
                    typ: "nack".into(),
                    parameter: String::new(),
                }]
            } else {
                vec![]
            },
            ..Default::default()
        }
    }

    fn rtp(now: Instant, ssrc: u32, seq: u16, payload: &[u8]) -> TaggedPacket {
        let mut p = rtc::rtp::Packet::default();
        p.header.ssrc = ssrc;
        p.header.sequence_number = seq;
        p.payload = bytes::Bytes::copy_from_slice(payload);
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(p)),
        }
    }

    /// The NACKs written: (media SSRC, sequence numbers).
    fn nacks(g: &mut NackGenerator) -> Vec<(u32, Vec<u16>)> {
        let mut out = Vec::new();
        while let Some(msg) = g.poll_write() {
            if let Packet::Rtcp(ps) = msg.message.packet {
                for p in ps {
                    if let Some(n) = p.as_any().downcast_ref::<TransportLayerNack>() {
                        let seqs = n.nacks.iter().flat_map(|pair| pair.packet_list()).collect();
                        out.push((n.media_ssrc, seqs));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn the_interceptor_asks_once_per_interval_and_learns_repairs_from_rtx() {
        let st = stats();
        let mut g = NackGenerator::new(NackParams::default(), st.clone());
        g.bind_remote_stream(&info(7, Some(8), true));
        g.bind_remote_stream(&info(8, None, true)); // the RTX flow, bound in its own right
        g.bind_remote_stream(&info(9, None, false)); // audio: no NACK negotiated
        let t0 = Instant::now();
        for (ssrc, seq) in [(7, 1), (7, 2), (7, 5), (9, 1), (9, 4)] {
            g.handle_read(rtp(t0, ssrc, seq, b"media")).unwrap();
        }
        assert_eq!(
            nacks(&mut g),
            [(7, vec![3, 4])],
            "at once, the NACK-capable stream only"
        );
        assert_eq!(g.poll_read().map(|m| m.now), Some(t0), "packets pass through");
        assert_eq!(g.poll_timeout(), Some(t0 + MS(100)));
        g.handle_timeout(t0 + MS(50)).unwrap();
        assert!(nacks(&mut g).is_empty());
        // 3 comes back as RTX (OSN 3) on SSRC 8; padding-only RTX names nothing.
        g.handle_read(rtp(t0 + MS(60), 8, 500, &[0, 3, 0xAA])).unwrap();
        g.handle_read(rtp(t0 + MS(61), 8, 501, &[])).unwrap();
        g.handle_timeout(t0 + MS(100)).unwrap();
        assert_eq!(nacks(&mut g), [(7, vec![4])]);
        g.handle_read(rtp(t0 + MS(120), 8, 502, &[0, 4])).unwrap();
        assert_eq!(g.poll_timeout(), None, "nothing missing, no timer");
        let s = st.meeting.snapshot();
        assert_eq!((s.nacks_sent, s.nack_requests_sent, s.missing_packets), (2, 3, 2));
        g.unbind_remote_stream(&info(7, Some(8), true));
        g.handle_read(rtp(t0, 7, 100, b"x")).unwrap();
        assert!(nacks(&mut g).is_empty(), "unbound");
    }

    #[test]
    fn the_interceptor_asks_for_a_keyframe_when_a_gap_is_too_large() {
        let st = stats();
        let mut g = NackGenerator::new(NackParams::default(), st.clone());
        g.bind_remote_stream(&info(7, None, true));
        let t0 = Instant::now();
        g.handle_read(rtp(t0, 7, 1, b"x")).unwrap();
        g.handle_read(rtp(t0, 7, 2000, b"x")).unwrap();
        let mut plis = 0;
        while let Some(msg) = g.poll_write() {
            if let Packet::Rtcp(ps) = msg.message.packet {
                plis += ps.iter().filter(|p| p.as_any().is::<PictureLossIndication>()).count();
            }
        }
        assert_eq!(plis, 1);
        assert_eq!(st.meeting.snapshot().plis_sent, 1);
        assert_eq!(g.poll_timeout(), None);
    }
}
