//! The SDK's NACK generator: asks the sender (RFC 4585 generic NACK) for the video packets
//! that did not arrive, in place of `rtc` 0.21's `NackGeneratorInterceptor`.
//!
//! `rtc`'s generator sits in the interceptor chain before RTX is unwrapped (its endpoint does
//! that on the way to the application), so it never saw a retransmission repair a packet: it
//! asked for every lost packet every 100 ms until 512 newer packets had arrived, about 9 s of
//! a 500 kbit/s camera, long after the packet was repaired and long after any sender still
//! held it (a gateway keeps about a second). Under 5 % loss a subscriber asked about 70 times
//! per lost packet, nine in ten of them for packets the gateway could no longer serve. It also
//! asked for the gaps of the RTX stream itself, under the RTX SSRC.
//!
//! This one does what real receivers do (libwebrtc's `NackRequester`): it learns repairs from
//! RTX (the original sequence number at the front of the payload, RFC 4588 §4) as well as
//! from late originals, asks for a missing packet at once, again no sooner than
//! [`NackParams::retry_interval`] later, at most [`NackParams::max_retries`] times, and gives up
//! on it after [`NackParams::max_age`]. The RTX stream itself is never NACKed. The bookkeeping
//! is [`MissingList`], pure and unit-tested; the interceptor is its thin shell.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rtc::interceptor::{AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{TransportLayerNack, nack_pairs_from_sequence_numbers};
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;
use rtc::shared::error::Error;

/// How often and for how long a missing packet is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NackParams {
    /// A packet is asked for again no sooner than this after the last time: about a round
    /// trip, so the retransmission had time to come (libwebrtc uses the RTT, 100 ms while it
    /// knows none; a receiver here knows none).
    pub retry_interval: Duration,
    /// A packet is asked for at most this many times (libwebrtc: 10).
    pub max_retries: u8,
    /// A packet missing for longer than this is given up: its frame is past showing and a
    /// sender keeps about a second of packets to resend.
    pub max_age: Duration,
    /// At most this many packets are tracked as missing; beyond it the oldest are given up.
    pub max_missing: usize,
    /// A jump forward of more than this many sequence numbers is a restart of the stream, not
    /// a loss: nothing before it is asked for (libwebrtc gives up on such a gap too).
    pub max_gap: u16,
}

impl Default for NackParams {
    fn default() -> Self {
        Self {
            retry_interval: Duration::from_millis(100),
            max_retries: 10,
            max_age: Duration::from_secs(1),
            max_missing: 1000,
            max_gap: 3000,
        }
    }
}

/// One packet that did not arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Missing {
    /// Its sequence number, extended past wrap-arounds (so the list stays sorted).
    ext: u64,
    /// When the gap showed.
    since: Instant,
    /// When it was last asked for.
    asked: Option<Instant>,
    /// How many times it was asked for.
    asks: u8,
}

/// The packets of one stream that did not arrive (yet), and which of them to ask for when.
/// Pure: the caller gives the time.
#[derive(Debug, Clone)]
pub struct MissingList {
    params: NackParams,
    /// The highest sequence number received, extended.
    highest: Option<u64>,
    /// Sorted by `ext`.
    missing: VecDeque<Missing>,
}

impl MissingList {
    /// Nothing received yet.
    pub fn new(params: NackParams) -> Self {
        Self {
            params,
            highest: None,
            missing: VecDeque::new(),
        }
    }

    /// How many packets are missing now.
    pub fn len(&self) -> usize {
        self.missing.len()
    }

    /// Whether nothing is missing.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
    }

    /// `seq` extended to be the closest to the highest received.
    fn extend(highest: u64, seq: u16) -> u64 {
        let delta = seq.wrapping_sub(highest as u16) as i16 as i64;
        (highest as i64 + delta).max(0) as u64
    }

    /// Packet `seq` arrived at `now` (an original, late or not, or its retransmission).
    pub fn received(&mut self, seq: u16, now: Instant) {
        let Some(highest) = self.highest else {
            // Start high enough that a packet from before the first never goes below zero.
            self.highest = Some(u64::from(seq) + (1 << 16));
            return;
        };
        let ext = Self::extend(highest, seq);
        if ext <= highest {
            if let Ok(i) = self.missing.binary_search_by_key(&ext, |m| m.ext) {
                self.missing.remove(i);
            }
            return;
        }
        let gap = ext - highest - 1;
        if gap > u64::from(self.params.max_gap) {
            // A restart, not a loss.
            self.missing.clear();
        } else {
            for e in highest + 1..ext {
                self.missing.push_back(Missing {
                    ext: e,
                    since: now,
                    asked: None,
                    asks: 0,
                });
            }
            while self.missing.len() > self.params.max_missing {
                self.missing.pop_front();
            }
        }
        self.highest = Some(ext);
    }

    /// Packet `seq` arrived as a retransmission (RTX): it is no longer missing. Unlike an
    /// original it says nothing of what else was sent: one newer than any received (which no
    /// sender retransmits) changes nothing.
    pub fn repaired(&mut self, seq: u16) {
        let Some(highest) = self.highest else {
            return;
        };
        let ext = Self::extend(highest, seq);
        if let Ok(i) = self.missing.binary_search_by_key(&ext, |m| m.ext) {
            self.missing.remove(i);
        }
    }

    /// Gives up on what is too old or was asked for often enough, and puts in `out` the
    /// sequence numbers to ask for at `now` (each marked asked).
    pub fn due(&mut self, now: Instant, out: &mut Vec<u16>) {
        let p = self.params;
        self.missing
            .retain(|m| m.asks < p.max_retries && now.saturating_duration_since(m.since) < p.max_age);
        for m in &mut self.missing {
            if m.asked
                .is_none_or(|at| now.saturating_duration_since(at) >= p.retry_interval)
            {
                m.asked = Some(now);
                m.asks += 1;
                out.push(m.ext as u16);
            }
        }
    }

    /// When something will next be due, if anything is missing.
    pub fn next_due(&self) -> Option<Instant> {
        self.missing
            .iter()
            .map(|m| m.asked.map_or(m.since, |at| at + self.params.retry_interval))
            .min()
    }
}

/// Whether a stream asked for generic NACK feedback (`a=rtcp-fb:<pt> nack`).
fn wants_nack(info: &StreamInfo) -> bool {
    info.rtcp_feedback
        .iter()
        .any(|fb| fb.typ == "nack" && fb.parameter.is_empty())
}

/// The interceptor: one [`MissingList`] per received stream that negotiated NACK, fed by its
/// packets and its RTX stream's; NACKs go out as the lists say.
pub(crate) struct NackGenerator {
    params: NackParams,
    sender_ssrc: u32,
    streams: HashMap<u32, MissingList>,
    /// RTX SSRC -> the SSRC of the stream it repairs.
    rtx: HashMap<u32, u32>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
    scratch: Vec<u16>,
}

impl NackGenerator {
    pub(crate) fn new(params: NackParams) -> Self {
        Self {
            params,
            sender_ssrc: rand::random(),
            streams: HashMap::new(),
            rtx: HashMap::new(),
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
            scratch: Vec::new(),
        }
    }

    fn on_rtp(&mut self, ssrc: u32, seq: u16, payload: &[u8], now: Instant) {
        if let Some(list) = self.streams.get_mut(&ssrc) {
            list.received(seq, now);
        } else if let Some(primary) = self.rtx.get(&ssrc)
            && let Some(list) = self.streams.get_mut(primary)
            && let [hi, lo, ..] = payload
        {
            // RFC 4588 §4: the original sequence number leads the payload. (A padding-only
            // RTX packet, a bandwidth probe, has no payload and repairs nothing.)
            list.repaired(u16::from_be_bytes([*hi, *lo]));
        }
    }
}

impl Default for NackGenerator {
    fn default() -> Self {
        Self::new(NackParams::default())
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for NackGenerator {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(rtp) = &msg.message.packet {
            self.on_rtp(rtp.header.ssrc, rtp.header.sequence_number, &rtp.payload, msg.now);
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
        for (&ssrc, list) in &mut self.streams {
            if list.next_due().is_none_or(|at| at > now) {
                continue;
            }
            self.scratch.clear();
            list.due(now, &mut self.scratch);
            if self.scratch.is_empty() {
                continue;
            }
            let nack = TransportLayerNack {
                sender_ssrc: self.sender_ssrc,
                media_ssrc: ssrc,
                nacks: nack_pairs_from_sequence_numbers(&self.scratch),
            };
            self.write_queue.push_back(TaggedPacket {
                now,
                transport: TransportContext::default(),
                message: AttributedPacket::new(Packet::Rtcp(vec![Box::new(nack)])),
            });
        }
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        self.streams.values().filter_map(MissingList::next_due).min()
    }
}

impl Interceptor for NackGenerator {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}

    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        // `rtc` binds a stream's RTX flow as a stream of its own, after the stream (with the
        // stream's codec and so its feedback): known by then as an RTX SSRC, it is not NACKed.
        if self.rtx.contains_key(&info.ssrc) || !wants_nack(info) {
            return;
        }
        if let Some(rtx) = info.ssrc_rtx {
            self.rtx.insert(rtx, info.ssrc);
            self.streams.remove(&rtx);
        }
        self.streams
            .entry(info.ssrc)
            .or_insert_with(|| MissingList::new(self.params));
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.streams.remove(&info.ssrc);
        self.rtx.remove(&info.ssrc);
        self.rtx.retain(|_, primary| *primary != info.ssrc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::RTCPFeedback;
    use rtc::rtp::{Header, Packet as RtpPacket};

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn asked(list: &mut MissingList, now: Instant) -> Vec<u16> {
        let mut out = Vec::new();
        list.due(now, &mut out);
        out
    }

    #[test]
    fn a_gap_is_asked_for_at_once_and_again_no_sooner_than_the_retry_interval() {
        let t0 = Instant::now();
        let mut l = MissingList::new(NackParams::default());
        l.received(10, t0);
        l.received(11, t0);
        assert!(l.is_empty() && l.next_due().is_none(), "nothing missing");
        l.received(14, t0 + MS(5));
        assert_eq!(l.len(), 2);
        assert_eq!(l.next_due(), Some(t0 + MS(5)), "due at once");
        assert_eq!(asked(&mut l, t0 + MS(5)), vec![12, 13]);
        assert_eq!(asked(&mut l, t0 + MS(50)), Vec::<u16>::new(), "not within the interval");
        assert_eq!(l.next_due(), Some(t0 + MS(105)));
        assert_eq!(asked(&mut l, t0 + MS(105)), vec![12, 13]);
    }

    #[test]
    fn a_repair_by_rtx_or_a_late_original_ends_the_asking() {
        let t0 = Instant::now();
        let mut l = MissingList::new(NackParams::default());
        l.received(100, t0);
        l.received(104, t0);
        assert_eq!(asked(&mut l, t0), vec![101, 102, 103]);
        l.received(102, t0 + MS(30));
        l.received(101, t0 + MS(40));
        l.received(101, t0 + MS(41));
        assert_eq!(asked(&mut l, t0 + MS(100)), vec![103]);
        l.received(103, t0 + MS(130));
        assert!(l.is_empty() && l.next_due().is_none());
        assert_eq!(asked(&mut l, t0 + MS(500)), Vec::<u16>::new());
        l.repaired(200);
        assert!(l.is_empty(), "a repair of a packet never missed changes nothing");
        l.received(106, t0 + MS(600));
        l.repaired(105);
        assert!(l.is_empty(), "repaired");
        l.received(107, t0 + MS(600));
        assert!(l.is_empty(), "and not missing again");
    }

    #[test]
    fn a_packet_is_asked_for_at_most_max_retries_times_and_not_past_max_age() {
        let t0 = Instant::now();
        let params = NackParams {
            max_retries: 3,
            ..NackParams::default()
        };
        let mut l = MissingList::new(params);
        l.received(1, t0);
        l.received(3, t0);
        let asks: usize = (0..20).map(|i| asked(&mut l, t0 + MS(100 * i)).len()).sum();
        assert_eq!(asks, 3, "three asks in all");
        assert!(l.is_empty(), "then given up");

        let mut l = MissingList::new(NackParams::default());
        l.received(1, t0);
        l.received(3, t0);
        let asks: Vec<u16> = (0..30).flat_map(|i| asked(&mut l, t0 + MS(50 * i))).collect();
        assert_eq!(asks, vec![2; 10], "every 100 ms, ten times, all within the second");
        let mut l = MissingList::new(NackParams::default());
        l.received(1, t0);
        l.received(3, t0);
        assert_eq!(asked(&mut l, t0 + MS(999)), vec![2]);
        assert_eq!(
            asked(&mut l, t0 + MS(1000)),
            Vec::<u16>::new(),
            "a second old: given up"
        );
        assert!(l.is_empty());
    }

    #[test]
    fn sequence_numbers_wrap_and_a_huge_jump_is_a_restart() {
        let t0 = Instant::now();
        let mut l = MissingList::new(NackParams::default());
        l.received(65_534, t0);
        l.received(1, t0);
        assert_eq!(asked(&mut l, t0), vec![65_535, 0], "across the wrap, in order");
        l.received(0, t0);
        assert_eq!(asked(&mut l, t0 + MS(100)), vec![65_535]);
        l.received(20_000, t0);
        assert!(l.is_empty(), "a jump of thousands asks for nothing");
        l.received(20_002, t0);
        assert_eq!(asked(&mut l, t0 + MS(200)), vec![20_001]);
        // A packet from before the first one seen changes nothing.
        let mut l = MissingList::new(NackParams::default());
        l.received(0, t0);
        l.received(65_000, t0);
        assert!(l.is_empty());
    }

    #[test]
    fn the_missing_list_is_bounded() {
        let t0 = Instant::now();
        let params = NackParams {
            max_missing: 5,
            ..NackParams::default()
        };
        let mut l = MissingList::new(params);
        l.received(0, t0);
        l.received(9, t0);
        assert_eq!(asked(&mut l, t0), vec![4, 5, 6, 7, 8], "the newest five");
    }

    fn stream(ssrc: u32, rtx: Option<u32>, pt: u8) -> StreamInfo {
        StreamInfo {
            ssrc,
            ssrc_rtx: rtx,
            payload_type: pt,
            rtcp_feedback: vec![
                RTCPFeedback {
                    typ: "nack".into(),
                    parameter: String::new(),
                },
                RTCPFeedback {
                    typ: "nack".into(),
                    parameter: "pli".into(),
                },
            ],
            ..Default::default()
        }
    }

    fn rtp(g: &mut NackGenerator, ssrc: u32, seq: u16, payload: &[u8], now: Instant) {
        let packet = RtpPacket {
            header: Header {
                ssrc,
                sequence_number: seq,
                ..Default::default()
            },
            payload: payload.to_vec().into(),
        };
        g.handle_read(TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(packet)),
        })
        .unwrap();
        assert!(g.poll_read().is_some(), "every packet passes on");
    }

    /// The NACKs the generator writes at `now`: (media SSRC, sequence numbers).
    fn nacks(g: &mut NackGenerator, now: Instant) -> Vec<(u32, Vec<u16>)> {
        if g.poll_timeout().is_some_and(|at| at <= now) {
            g.handle_timeout(now).unwrap();
        }
        let mut out = Vec::new();
        while let Some(msg) = g.poll_write() {
            let Packet::Rtcp(packets) = msg.message.packet else {
                panic!("only RTCP");
            };
            for p in packets {
                let nack = p.as_any().downcast_ref::<TransportLayerNack>().expect("a NACK");
                let seqs = nack.nacks.iter().flat_map(|pair| pair.packet_list()).collect();
                out.push((nack.media_ssrc, seqs));
            }
        }
        out
    }

    #[test]
    fn the_interceptor_nacks_the_stream_learns_rtx_repairs_and_never_nacks_the_rtx_stream() {
        let t0 = Instant::now();
        let mut g = NackGenerator::default();
        // As `rtc` binds them: the stream (naming its RTX SSRC), then the RTX flow with the
        // stream's feedback; an audio stream without NACK.
        g.bind_remote_stream(&stream(1000, Some(2000), 96));
        g.bind_remote_stream(&stream(2000, None, 97));
        g.bind_remote_stream(&StreamInfo {
            ssrc: 3000,
            ..Default::default()
        });
        assert_eq!(g.poll_timeout(), None, "nothing missing: no timer");
        for seq in [10, 11, 14, 15] {
            rtp(&mut g, 1000, seq, b"video", t0);
        }
        // The RTX flow's own numbers jump (an RTX packet lost): not NACKed. An RTX packet
        // naming a packet newer than any received says nothing of a gap.
        rtp(&mut g, 2000, 500, &[0, 12, 1, 2], t0);
        rtp(&mut g, 2000, 503, &[0, 99], t0);
        rtp(&mut g, 3000, 1, b"audio", t0);
        rtp(&mut g, 3000, 9, b"audio", t0);
        assert_eq!(nacks(&mut g, t0), vec![(1000, vec![13])], "12 came by RTX, 13 did not");
        assert_eq!(nacks(&mut g, t0 + MS(50)), vec![], "not within the interval");
        // A padding-only RTX packet (a probe) repairs nothing.
        rtp(&mut g, 2000, 504, &[], t0 + MS(60));
        assert_eq!(nacks(&mut g, t0 + MS(100)), vec![(1000, vec![13])]);
        rtp(&mut g, 2000, 505, &[0, 13, 7], t0 + MS(120));
        assert_eq!(g.poll_timeout(), None, "repaired: nothing left to ask");
        assert_eq!(nacks(&mut g, t0 + MS(300)), vec![]);
        g.unbind_remote_stream(&stream(1000, Some(2000), 96));
        rtp(&mut g, 1000, 30, b"video", t0 + MS(400));
        assert_eq!(nacks(&mut g, t0 + MS(400)), vec![], "an unbound stream is forgotten");
    }
}
