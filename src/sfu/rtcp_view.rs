//! The RTCP subscribers send back, read in place (issue 13).
//!
//! A subscriber connection's client sends transport-wide congestion control feedback ten or
//! more times a second, receiver reports, NACKs and keyframe requests. `rtc-rtcp`'s parser
//! (`rtcp::packet::unmarshal`) makes a box per packet, a vector per TWCC status chunk, one
//! for the deltas and one for the compound, and `rtc`'s `convert_twcc` another for the
//! acknowledgements: at 30 one-to-one calls that was two fifths of the shard's allocations
//! (BENCHMARKS §3). [`View`] reads the same compound in the opened buffer and hands the room
//! what it acts on through [`Visit`], allocating nothing.
//!
//! It reads only what it can read exactly as `rtc-rtcp` does: receiver and sender reports,
//! PLI, FIR, REMB, generic NACK and TWCC feedback, and skips plain source descriptions (what a
//! client not in reduced-size mode puts in every compound). Anything else in the compound (BYE,
//! extended reports, other feedback), and anything `rtc-rtcp` would refuse or read in a way of
//! its own (a packet shorter than its kind needs, a version other than 2, a compound with
//! bytes left over, a TWCC packet whose last large delta is cut short), makes [`View::read`]
//! decline (`None`), and the caller parses with `rtc-rtcp` as before ([`visit_rtc`]). So the
//! room sees the same thing either way: the fuzz target `rtcp_view` checks that whatever
//! `View` reads, `rtc-rtcp` reads too, with the same keyframe requests, acknowledgements,
//! REMB, report blocks and NACKs. Browsers' and the SDK's feedback is all of the kinds above.

use std::time::Duration;

use rtc::rtcp;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;

use super::bwe::Ack;
use super::rtcp as tap;

const HEADER: usize = 4;
const VERSION: u8 = 2;
const SENDER_REPORT: u8 = 200;
const RECEIVER_REPORT: u8 = 201;
const SOURCE_DESCRIPTION: u8 = 202;
const TRANSPORT_FEEDBACK: u8 = 205;
const PAYLOAD_FEEDBACK: u8 = 206;
const FORMAT_NACK: u8 = 1;
const FORMAT_TWCC: u8 = 15;
const FORMAT_PLI: u8 = 1;
const FORMAT_FIR: u8 = 4;
const FORMAT_REMB: u8 = 15;
/// A reception report block (RFC 3550 §6.4.1).
const BLOCK: usize = 24;
/// Where a receiver report's blocks start, and a sender report's.
const RR_BLOCKS: usize = 8;
const SR_BLOCKS: usize = 28;
/// Where a TWCC packet's status chunks start (after base, count, reference time, count).
const TWCC_CHUNKS: usize = 20;
/// TWCC's units: the reference time counts 64 ms, a delta 250 us.
const TWCC_REFERENCE_TICK: Duration = Duration::from_millis(64);
const TWCC_DELTA_SCALE: u32 = 250;

/// One reception report block: what the room's connection quality reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub ssrc: u32,
    pub fraction_lost: u8,
    pub jitter: u32,
    pub last_sender_report: u32,
    pub delay: u32,
}

/// What the room acts on in a compound RTCP packet, one call per packet that is one of
/// these, in the compound's order.
pub trait Visit {
    /// A PLI or a FIR: the SSRCs it asks keyframes of.
    fn keyframe_request(&mut self, ssrcs: impl Iterator<Item = u32>);
    /// TWCC feedback: its acknowledgements (`bwe::acks_of`).
    fn twcc(&mut self, acks: impl Iterator<Item = Ack>);
    /// A REMB: the bit rate, if it is a finite, non-negative one (`rtcp::as_remb`).
    fn remb(&mut self, bps: Option<u64>);
    /// A receiver or sender report: its report blocks (maybe none).
    fn reports(&mut self, blocks: impl Iterator<Item = Report>);
    /// A generic NACK: the media SSRC and the sequence numbers it asks for.
    fn nack(&mut self, media_ssrc: u32, seqs: impl Iterator<Item = u16>);
}

/// A compound RTCP packet that [`View::read`] read, borrowed from its buffer.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    compound: &'a [u8],
}

/// One packet of a compound, of a kind [`View`] reads.
#[derive(Debug, Clone, Copy)]
enum Kind<'a> {
    /// A receiver or sender report's blocks.
    Reports(&'a [u8]),
    Pli(u32),
    /// A FIR's entries, 8 bytes each.
    Fir(&'a [u8]),
    /// A NACK's media SSRC and pairs, 4 bytes each.
    Nack(u32, &'a [u8]),
    Twcc(Twcc<'a>),
    /// A REMB's bit rate, as `rtc-rtcp` computes it.
    Remb(f32),
    /// A source description: nothing for the room.
    Sdes,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The packets of a compound: each with its length checked against what is left.
fn frames(mut rest: &[u8]) -> impl Iterator<Item = Option<&[u8]>> {
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        if rest.len() < HEADER || rest[0] >> 6 != VERSION {
            rest = &[];
            return Some(None);
        }
        let total = HEADER + 4 * usize::from(be16(rest, 2));
        if total > rest.len() {
            rest = &[];
            return Some(None);
        }
        let (packet, after) = rest.split_at(total);
        rest = after;
        Some(Some(packet))
    })
}

/// One packet, if it is of a kind read here and `rtc-rtcp` reads it the same way.
fn kind(p: &[u8]) -> Option<Kind<'_>> {
    let (count, len) = (p[0] & 0x1f, p.len());
    match (p[1], count) {
        (RECEIVER_REPORT, _) | (SENDER_REPORT, _) => {
            let start = if p[1] == RECEIVER_REPORT { RR_BLOCKS } else { SR_BLOCKS };
            let end = start + BLOCK * usize::from(count);
            (len >= start && end <= len).then(|| Kind::Reports(&p[start..end]))
        }
        (SOURCE_DESCRIPTION, _) => sdes_is_plain(p, count).then_some(Kind::Sdes),
        (TRANSPORT_FEEDBACK, FORMAT_NACK) => (len >= 16).then(|| Kind::Nack(be32(p, 8), &p[12..])),
        (TRANSPORT_FEEDBACK, FORMAT_TWCC) => Twcc::read(p).map(Kind::Twcc),
        (PAYLOAD_FEEDBACK, FORMAT_PLI) => (len >= 12).then(|| Kind::Pli(be32(p, 8))),
        (PAYLOAD_FEEDBACK, FORMAT_FIR) => (len >= 20 && (len - 12) % 8 == 0).then(|| Kind::Fir(&p[12..])),
        (PAYLOAD_FEEDBACK, FORMAT_REMB) => {
            if len < 20 || be32(p, 8) != 0 || &p[12..16] != b"REMB" || len < 20 + 4 * usize::from(p[16]) {
                return None;
            }
            Some(Kind::Remb(remb_bitrate(p[17], p[18], p[19])))
        }
        _ => None,
    }
}

/// Whether a source description is made as RFC 3550 §6.5 makes one, which `rtc-rtcp` reads
/// too: `count` chunks filling the packet, each an SSRC, items of the types it knows (1 to 8,
/// CNAME to PRIV) with their text inside the packet, an END octet and what pads the chunk to a
/// word (zeros, RFC 3550 says; `rtc-rtcp` skips it whatever it holds, and writes its length
/// into the last of it).
fn sdes_is_plain(p: &[u8], count: u8) -> bool {
    let (mut at, mut chunks) = (HEADER, 0u8);
    while at < p.len() {
        let start = at;
        at += 4;
        loop {
            match p.get(at) {
                Some(1..=8) => {
                    let Some(&len) = p.get(at + 1) else {
                        return false;
                    };
                    at += 2 + usize::from(len);
                }
                Some(0) => break,
                _ => return false,
            }
        }
        at += 1;
        let padded = start + (at - start).next_multiple_of(4);
        if padded > p.len() {
            return false;
        }
        at = padded;
        chunks = chunks.saturating_add(1);
    }
    chunks == count
}

/// A REMB's exponent and mantissa as the `f32` `rtc-rtcp` makes of them, to the bit (a
/// mantissa of 0 included, which it reads as 2^(23 + exponent)).
fn remb_bitrate(b17: u8, b18: u8, b19: u8) -> f32 {
    const MANTISSA_MAX: u32 = 0x7F_FFFF;
    let mut exp = u32::from(b17 >> 2) + 127 + 23;
    let mut mantissa = u32::from(b17 & 3) << 16 | u32::from(b18) << 8 | u32::from(b19);
    if mantissa != 0 {
        while mantissa & (MANTISSA_MAX + 1) == 0 {
            exp -= 1;
            mantissa *= 2;
        }
    }
    f32::from_bits(exp << 23 | (mantissa & MANTISSA_MAX))
}

impl<'a> View<'a> {
    /// Reads a compound RTCP packet (decrypted), or declines: see the module documentation.
    pub fn read(compound: &'a [u8]) -> Option<Self> {
        if compound.is_empty() {
            return None;
        }
        for packet in frames(compound) {
            kind(packet?)?;
        }
        Some(Self { compound })
    }

    fn kinds(&self) -> impl Iterator<Item = Kind<'a>> {
        // Every packet was read once in `read`.
        frames(self.compound).filter_map(|p| p.and_then(kind))
    }

    /// The sender reports' sender SSRCs and NTP timestamps, in the compound's order (what a
    /// publisher connection's receipts answer with their last-SR fields, `receipts`).
    pub fn sender_reports(&self) -> impl Iterator<Item = (u32, u64)> + 'a {
        // Every packet was read once in `read`: a sender report is at least `SR_BLOCKS` long.
        frames(self.compound)
            .flatten()
            .filter(|p| p[1] == SENDER_REPORT)
            .map(|p| (be32(p, 4), u64::from(be32(p, 8)) << 32 | u64::from(be32(p, 12))))
    }

    /// Hands `visit` what the room acts on, packet by packet.
    pub fn visit(&self, visit: &mut impl Visit) {
        for k in self.kinds() {
            match k {
                Kind::Reports(blocks) => visit.reports(blocks.chunks_exact(BLOCK).map(|b| Report {
                    ssrc: be32(b, 0),
                    fraction_lost: b[4],
                    jitter: be32(b, 12),
                    last_sender_report: be32(b, 16),
                    delay: be32(b, 20),
                })),
                Kind::Pli(ssrc) => visit.keyframe_request(std::iter::once(ssrc)),
                Kind::Fir(entries) => visit.keyframe_request(entries.chunks_exact(8).map(|e| be32(e, 0))),
                Kind::Nack(media_ssrc, pairs) => visit.nack(
                    media_ssrc,
                    pairs.chunks_exact(4).flat_map(|p| NackPair {
                        packet_id: be16(p, 0),
                        lost_packets: be16(p, 2),
                    }),
                ),
                Kind::Twcc(twcc) => visit.twcc(twcc.acks()),
                Kind::Remb(bitrate) => visit.remb(finite_bps(bitrate)),
                Kind::Sdes => {}
            }
        }
    }
}

/// A REMB's bit rate as the room takes it (`rtcp::as_remb`).
fn finite_bps(bitrate: f32) -> Option<u64> {
    (bitrate.is_finite() && bitrate >= 0.0).then_some(bitrate as u64)
}

/// A compound RTCP packet a connection received, as the room reads it: read here, or
/// parsed by `rtc-rtcp` (by `rtc`'s read pipeline, or where [`View`] declined).
#[derive(Clone, Copy)]
pub enum Feedback<'a> {
    Own(View<'a>),
    Rtc(&'a [Box<dyn rtcp::Packet>]),
}

impl Feedback<'_> {
    /// Hands `visit` what the room acts on, packet by packet.
    pub fn visit(&self, visit: &mut impl Visit) {
        match self {
            Feedback::Own(view) => view.visit(visit),
            Feedback::Rtc(packets) => visit_rtc(packets, visit),
        }
    }
}

/// Hands `visit` what the room acts on in a compound `rtc-rtcp` parsed.
pub fn visit_rtc(packets: &[Box<dyn rtcp::Packet>], visit: &mut impl Visit) {
    for p in packets {
        let p = p.as_ref();
        if tap::is_keyframe_request(p) {
            let mut ssrcs = Vec::new();
            tap::keyframe_request_ssrcs(p, |s| ssrcs.push(s));
            visit.keyframe_request(ssrcs.into_iter());
        } else if let Some(feedback) = tap::as_twcc(p) {
            visit.twcc(super::bwe::acks_of(feedback));
        } else if p
            .as_any()
            .is::<rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate>()
        {
            visit.remb(tap::as_remb(p));
        } else if let Some(nack) = tap::as_nack(p) {
            visit.nack(nack.media_ssrc, nack.nacks.iter().flat_map(|pair| *pair));
        } else if p.as_any().is::<rtcp::receiver_report::ReceiverReport>()
            || p.as_any().is::<rtcp::sender_report::SenderReport>()
        {
            visit.reports(tap::reception_reports(p).iter().map(|r| Report {
                ssrc: r.ssrc,
                fraction_lost: r.fraction_lost,
                jitter: r.jitter,
                last_sender_report: r.last_sender_report,
                delay: r.delay,
            }));
        }
    }
}

/// The sender reports' sender SSRCs and NTP timestamps in a compound `rtc-rtcp` parsed (as
/// [`View::sender_reports`]).
pub fn rtc_sender_reports(packets: &[Box<dyn rtcp::Packet>]) -> impl Iterator<Item = (u32, u64)> + '_ {
    packets
        .iter()
        .filter_map(|p| p.as_any().downcast_ref::<rtcp::sender_report::SenderReport>())
        .map(|sr| (sr.ssrc, sr.ntp_time))
}

/// A TWCC feedback packet (draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1), read as
/// `rtc-rtcp` reads it.
#[derive(Debug, Clone, Copy)]
struct Twcc<'a> {
    packet: &'a [u8],
    /// Where the receive deltas start: after the status chunks `rtc-rtcp` reads.
    deltas: usize,
}

/// The status symbols with a delta (0 is "not received", 3 "received, no delta").
const SMALL_DELTA: u8 = 1;
const LARGE_DELTA: u8 = 2;

/// The symbols of one status chunk, and how many of them count toward the packet status
/// count as `rtc-rtcp` counts (all of a vector's, a run's up to what is left).
fn chunk_symbols(b0: u8, b1: u8) -> (impl Iterator<Item = u8>, u16) {
    let word = u16::from_be_bytes([b0, b1]);
    let (run_symbol, run, bits, n) = if b0 & 0x80 == 0 {
        ((b0 >> 5) & 3, word & 0x1fff, 0, 0)
    } else if b0 & 0x40 == 0 {
        (0, 0, 1u16, 14u16)
    } else {
        (0, 0, 2u16, 7u16)
    };
    let symbols = (0..run)
        .map(move |_| run_symbol)
        .chain((0..n).map(move |i| ((word >> (14 - bits * (i + 1))) & ((1 << bits) - 1)) as u8));
    (symbols, run + n)
}

impl<'a> Twcc<'a> {
    /// `rtc-rtcp`'s reading: at least the fixed part; status chunks until the status count is
    /// reached, each followed by at least one more byte; then a delta for each received
    /// symbol of those chunks (all of a vector's, a run's up to the count), all within the
    /// packet. Padding after them is ignored.
    fn read(packet: &'a [u8]) -> Option<Self> {
        let len = packet.len();
        if len < TWCC_CHUNKS {
            return None;
        }
        let count = be16(packet, 14);
        let (mut pos, mut processed, mut need) = (TWCC_CHUNKS, 0u16, 0usize);
        while processed < count {
            if pos + 2 >= len {
                return None;
            }
            let (b0, b1) = (packet[pos], packet[pos + 1]);
            let (symbols, n) = chunk_symbols(b0, b1);
            let counted = if b0 & 0x80 == 0 { n.min(count - processed) } else { n };
            need += symbols
                .take(usize::from(counted))
                .map(|s| match s {
                    SMALL_DELTA => 1,
                    LARGE_DELTA => 2,
                    _ => 0,
                })
                .sum::<usize>();
            processed = processed.saturating_add(counted);
            pos += 2;
        }
        // Each delta must start inside the packet, and a large one must not be cut short
        // (`rtc-rtcp` reads a cut one as a small one: declined).
        (need <= len - pos).then_some(Self { packet, deltas: pos })
    }

    /// The acknowledgements, as `bwe::acks_of` makes them from `rtc-rtcp`'s packet: each
    /// symbol's sequence number from the base, and for a received one with a delta its
    /// arrival, accumulated from the reference time; the first status-count of them.
    fn acks(self) -> impl Iterator<Item = Ack> + 'a {
        let p = self.packet;
        let base = be16(p, 12);
        let count = be16(p, 14);
        let reference = u32::from_be_bytes([0, p[16], p[17], p[18]]);
        let mut arrival = TWCC_REFERENCE_TICK * reference;
        let mut delta_at = self.deltas;
        p[TWCC_CHUNKS..self.deltas]
            .chunks_exact(2)
            .flat_map(|c| chunk_symbols(c[0], c[1]).0)
            .take(usize::from(count))
            .enumerate()
            .map(move |(i, symbol)| {
                let seq = base.wrapping_add(i as u16);
                let delta = match symbol {
                    SMALL_DELTA => {
                        delta_at += 1;
                        Some(i32::from(p[delta_at - 1]))
                    }
                    LARGE_DELTA => {
                        delta_at += 2;
                        Some(i32::from(be16(p, delta_at - 2) as i16))
                    }
                    _ => None,
                };
                let arrival = delta.map(|d| {
                    let magnitude = Duration::from_micros(u64::from(d.unsigned_abs() * TWCC_DELTA_SCALE));
                    arrival = if d < 0 {
                        arrival.saturating_sub(magnitude)
                    } else {
                        arrival + magnitude
                    };
                    arrival
                });
                Ack { seq, arrival }
            })
    }
}

/// Counts what [`rtcp::tap`](super::rtcp::tap) counts, through [`Visit`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub nacks: u64,
    pub keyframe_requests: u64,
    /// TWCC feedback and REMBs.
    pub estimates: u64,
    /// Whether any report had a block.
    pub reports: bool,
}

impl Tally {
    /// Whether the room wants the compound: see [`rtcp::tap`](super::rtcp::tap).
    pub fn wanted(&self) -> bool {
        self.nacks + self.keyframe_requests + self.estimates > 0 || self.reports
    }
}

impl Visit for Tally {
    fn keyframe_request(&mut self, _: impl Iterator<Item = u32>) {
        self.keyframe_requests += 1;
    }
    fn twcc(&mut self, _: impl Iterator<Item = Ack>) {
        self.estimates += 1;
    }
    fn remb(&mut self, _: Option<u64>) {
        self.estimates += 1;
    }
    fn reports(&mut self, mut blocks: impl Iterator<Item = Report>) {
        self.reports |= blocks.next().is_some();
    }
    fn nack(&mut self, _: u32, _: impl Iterator<Item = u16>) {
        self.nacks += 1;
    }
}

/// Everything a [`Visit`] is handed, written down: for tests and the fuzz target.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    KeyframeRequest(Vec<u32>),
    Twcc(Vec<Ack>),
    Remb(Option<u64>),
    Reports(Vec<Report>),
    Nack(u32, Vec<u16>),
}

/// The [`Fact`]s of a compound, in order.
#[doc(hidden)]
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Facts(pub Vec<Fact>);

impl Visit for Facts {
    fn keyframe_request(&mut self, ssrcs: impl Iterator<Item = u32>) {
        self.0.push(Fact::KeyframeRequest(ssrcs.collect()));
    }
    fn twcc(&mut self, acks: impl Iterator<Item = Ack>) {
        self.0.push(Fact::Twcc(acks.collect()));
    }
    fn remb(&mut self, bps: Option<u64>) {
        self.0.push(Fact::Remb(bps));
    }
    fn reports(&mut self, blocks: impl Iterator<Item = Report>) {
        self.0.push(Fact::Reports(blocks.collect()));
    }
    fn nack(&mut self, media_ssrc: u32, seqs: impl Iterator<Item = u16>) {
        self.0.push(Fact::Nack(media_ssrc, seqs.collect()));
    }
}

/// The differential check of the fuzz target `rtcp_view`: if [`View`] reads `data`,
/// `rtc-rtcp` parses it too, and both hand on the same facts and the same sender reports
/// (SSRC and NTP time). Returns whether `View` read it.
#[doc(hidden)]
pub fn agrees_with_rtc(data: &[u8]) -> bool {
    let Some(view) = View::read(data) else {
        return false;
    };
    let mut ours = Facts::default();
    view.visit(&mut ours);
    let (theirs, their_senders) = match rtcp::packet::unmarshal(&mut bytes::Bytes::copy_from_slice(data)) {
        Ok(packets) => {
            let mut theirs = Facts::default();
            visit_rtc(&packets, &mut theirs);
            (theirs, rtc_sender_reports(&packets).collect::<Vec<_>>())
        }
        Err(e) => panic!("View read what rtc-rtcp refuses ({e}): {ours:?}"),
    };
    assert_eq!(ours, theirs, "View and rtc-rtcp read {data:02x?} differently");
    let our_senders: Vec<_> = view.sender_reports().collect();
    assert_eq!(
        our_senders, their_senders,
        "View and rtc-rtcp read {data:02x?}'s sender reports differently"
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::goodbye::Goodbye;
    use rtc::rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
    use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
    use rtc::rtcp::receiver_report::ReceiverReport;
    use rtc::rtcp::reception_report::ReceptionReport;
    use rtc::rtcp::sender_report::SenderReport;
    use rtc::rtcp::source_description::{SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem};
    use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
        PacketStatusChunk, RecvDelta, RunLengthChunk, StatusChunkTypeTcc, StatusVectorChunk, SymbolSizeTypeTcc,
        SymbolTypeTcc, TransportLayerCc,
    };
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

    /// xorshift64*: a fixed sequence, so a failure repeats.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn wire(packets: &[Box<dyn rtcp::Packet>]) -> Vec<u8> {
        rtcp::packet::marshal(packets).expect("marshals").to_vec()
    }

    fn facts(data: &[u8]) -> Vec<Fact> {
        assert!(agrees_with_rtc(data), "View declined {data:02x?}");
        let mut f = Facts::default();
        View::read(data).expect("read").visit(&mut f);
        f.0
    }

    fn block(ssrc: u32) -> ReceptionReport {
        ReceptionReport {
            ssrc,
            fraction_lost: 12,
            total_lost: 300,
            last_sequence_number: 0x1_0042,
            jitter: 77,
            last_sender_report: 0xdead_beef,
            delay: 6553,
        }
    }

    /// A TWCC packet of random symbols, in run-length and both kinds of status vector chunk,
    /// with a delta of the right size for each received one (negative ones too).
    fn random_twcc(rng: &mut Rng) -> TransportLayerCc {
        let mut chunks = Vec::new();
        let mut deltas = Vec::new();
        let mut count = 0u16;
        let delta = |rng: &mut Rng, symbol: SymbolTypeTcc, deltas: &mut Vec<RecvDelta>| {
            let d = match symbol {
                SymbolTypeTcc::PacketReceivedSmallDelta => rng.below(256) as i64,
                SymbolTypeTcc::PacketReceivedLargeDelta => rng.below(65536) as i64 - 32768,
                _ => return,
            };
            deltas.push(RecvDelta {
                type_tcc_packet: symbol,
                delta: d * 250,
            });
        };
        for _ in 0..rng.below(6) {
            match rng.below(3) {
                0 => {
                    let symbol = SymbolTypeTcc::from(rng.below(4) as u16);
                    let longest = if rng.below(2) == 0 { 20 } else { 400 };
                    let run = 1 + rng.below(longest) as u16;
                    for _ in 0..run {
                        delta(rng, symbol, &mut deltas);
                    }
                    count += run;
                    chunks.push(PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                        type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                        packet_status_symbol: symbol,
                        run_length: run,
                    }));
                }
                kind => {
                    let (size, n, kinds) = if kind == 1 {
                        (SymbolSizeTypeTcc::OneBit, 14, 2)
                    } else {
                        (SymbolSizeTypeTcc::TwoBit, 7, 4)
                    };
                    let symbols: Vec<SymbolTypeTcc> =
                        (0..n).map(|_| SymbolTypeTcc::from(rng.below(kinds) as u16)).collect();
                    for &s in &symbols {
                        delta(rng, s, &mut deltas);
                    }
                    count += n as u16;
                    chunks.push(PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                        type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                        symbol_size: size,
                        symbol_list: symbols,
                    }));
                }
            }
        }
        TransportLayerCc {
            sender_ssrc: rng.next() as u32,
            media_ssrc: rng.next() as u32,
            base_sequence_number: rng.next() as u16,
            packet_status_count: count,
            reference_time: rng.below(1 << 24) as u32,
            fb_pkt_count: rng.next() as u8,
            packet_chunks: chunks,
            recv_deltas: deltas,
        }
    }

    /// A compound of random feedback of every kind `View` reads.
    fn random_compound(rng: &mut Rng) -> Vec<Box<dyn rtcp::Packet>> {
        let mut out: Vec<Box<dyn rtcp::Packet>> = Vec::new();
        for _ in 0..1 + rng.below(4) {
            out.push(match rng.below(8) {
                6 => Box::new(SourceDescription {
                    chunks: (0..1 + rng.below(2))
                        .map(|_| SourceDescriptionChunk {
                            source: rng.next() as u32,
                            items: (0..rng.below(3))
                                .map(|_| SourceDescriptionItem {
                                    sdes_type: SdesType::from(1 + rng.below(8) as u8),
                                    text: (0..rng.below(20)).map(|_| rng.next() as u8).collect(),
                                })
                                .collect(),
                        })
                        .collect(),
                }),
                0 => Box::new(ReceiverReport {
                    ssrc: rng.next() as u32,
                    reports: (0..rng.below(4)).map(|_| block(rng.next() as u32)).collect(),
                    ..Default::default()
                }),
                1 => Box::new(SenderReport {
                    ssrc: rng.next() as u32,
                    ntp_time: rng.next(),
                    reports: (0..rng.below(3)).map(|_| block(rng.next() as u32)).collect(),
                    ..Default::default()
                }),
                2 => Box::new(PictureLossIndication {
                    sender_ssrc: rng.next() as u32,
                    media_ssrc: rng.next() as u32,
                }),
                3 => Box::new(FullIntraRequest {
                    sender_ssrc: 1,
                    media_ssrc: 2,
                    fir: (0..1 + rng.below(3))
                        .map(|i| FirEntry {
                            ssrc: rng.next() as u32,
                            sequence_number: i as u8,
                        })
                        .collect(),
                }),
                4 => Box::new(TransportLayerNack {
                    sender_ssrc: 1,
                    media_ssrc: rng.next() as u32,
                    nacks: (0..1 + rng.below(4))
                        .map(|_| NackPair {
                            packet_id: rng.next() as u16,
                            lost_packets: rng.next() as u16,
                        })
                        .collect(),
                }),
                5 => Box::new(ReceiverEstimatedMaximumBitrate {
                    sender_ssrc: 1,
                    bitrate: rng.below(50_000_000) as f32,
                    ssrcs: (0..rng.below(3)).map(|_| rng.next() as u32).collect(),
                }),
                _ => Box::new(random_twcc(rng)),
            });
        }
        out
    }

    #[test]
    fn every_kind_of_feedback_is_read_as_rtc_rtcp_reads_it() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut refused = 0;
        for _ in 0..2_000 {
            let compound = random_compound(&mut rng);
            let data = wire(&compound);
            // `rtc-rtcp` refuses some of what it writes: a TWCC packet whose last status
            // chunk ends the packet (no received packets, no padding). So does `View`.
            let parsed = rtcp::packet::unmarshal(&mut bytes::Bytes::copy_from_slice(&data)).is_ok();
            assert_eq!(agrees_with_rtc(&data), parsed, "{compound:?}");
            refused += usize::from(!parsed);
            if parsed {
                let sdes = compound.iter().filter(|p| p.as_any().is::<SourceDescription>()).count();
                assert_eq!(facts(&data).len() + sdes, compound.len());
            }
        }
        assert!(refused < 200, "{refused} of 2000 refused");
    }

    #[test]
    fn what_the_room_reads_is_what_was_sent() {
        let data = wire(&[
            Box::new(ReceiverReport {
                ssrc: 1,
                reports: vec![block(7), block(8)],
                ..Default::default()
            }),
            Box::new(TransportLayerNack {
                sender_ssrc: 1,
                media_ssrc: 9,
                nacks: vec![NackPair {
                    packet_id: 0xfffe,
                    lost_packets: 0b101,
                }],
            }),
            Box::new(FullIntraRequest {
                sender_ssrc: 1,
                media_ssrc: 0,
                fir: vec![
                    FirEntry {
                        ssrc: 4,
                        sequence_number: 1,
                    },
                    FirEntry {
                        ssrc: 5,
                        sequence_number: 1,
                    },
                ],
            }),
            Box::new(ReceiverEstimatedMaximumBitrate {
                sender_ssrc: 1,
                bitrate: 1_500_000.0,
                ssrcs: vec![9],
            }),
            Box::new(TransportLayerCc {
                sender_ssrc: 1,
                media_ssrc: 9,
                base_sequence_number: 65534,
                packet_status_count: 4,
                reference_time: 2,
                fb_pkt_count: 0,
                packet_chunks: vec![PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                    type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                    symbol_size: SymbolSizeTypeTcc::TwoBit,
                    symbol_list: vec![
                        SymbolTypeTcc::PacketReceivedSmallDelta,
                        SymbolTypeTcc::PacketNotReceived,
                        SymbolTypeTcc::PacketReceivedLargeDelta,
                        SymbolTypeTcc::PacketReceivedSmallDelta,
                        SymbolTypeTcc::PacketNotReceived,
                        SymbolTypeTcc::PacketNotReceived,
                        SymbolTypeTcc::PacketNotReceived,
                    ],
                })],
                recv_deltas: vec![
                    RecvDelta {
                        type_tcc_packet: SymbolTypeTcc::PacketReceivedSmallDelta,
                        delta: 4 * 250,
                    },
                    RecvDelta {
                        type_tcc_packet: SymbolTypeTcc::PacketReceivedLargeDelta,
                        delta: -2 * 250,
                    },
                    RecvDelta {
                        type_tcc_packet: SymbolTypeTcc::PacketReceivedSmallDelta,
                        delta: 8 * 250,
                    },
                ],
            }),
        ]);
        let ms = Duration::from_micros;
        let report = |ssrc| Report {
            ssrc,
            fraction_lost: 12,
            jitter: 77,
            last_sender_report: 0xdead_beef,
            delay: 6553,
        };
        assert_eq!(
            facts(&data),
            vec![
                Fact::Reports(vec![report(7), report(8)]),
                Fact::Nack(9, vec![0xfffe, 0xffff, 1]),
                Fact::KeyframeRequest(vec![4, 5]),
                Fact::Remb(Some(1_500_000)),
                Fact::Twcc(vec![
                    Ack {
                        seq: 65534,
                        arrival: Some(ms(128_000 + 1_000)),
                    },
                    Ack {
                        seq: 65535,
                        arrival: None,
                    },
                    Ack {
                        seq: 0,
                        arrival: Some(ms(128_000 + 500)),
                    },
                    Ack {
                        seq: 1,
                        arrival: Some(ms(128_000 + 2_500)),
                    },
                ]),
            ]
        );
        let mut tally = Tally::default();
        View::read(&data).expect("read").visit(&mut tally);
        assert_eq!(
            tally,
            Tally {
                nacks: 1,
                keyframe_requests: 1,
                estimates: 2,
                reports: true
            }
        );
        // A report without blocks alone is not wanted.
        let empty = wire(&[Box::new(ReceiverReport::default())]);
        let mut tally = Tally::default();
        View::read(&empty).expect("read").visit(&mut tally);
        assert!(!tally.wanted());
    }

    /// What is declined goes to `rtc-rtcp`: kinds not read here, and what `rtc-rtcp` refuses.
    #[test]
    fn other_kinds_and_malformed_compounds_are_declined() {
        let rr: Box<dyn rtcp::Packet> = Box::new(ReceiverReport {
            ssrc: 1,
            reports: vec![block(7)],
            ..Default::default()
        });
        let sdes: Box<dyn rtcp::Packet> = Box::new(SourceDescription {
            chunks: vec![SourceDescriptionChunk {
                source: 1,
                items: vec![SourceDescriptionItem {
                    sdes_type: SdesType::SdesCname,
                    text: bytes::Bytes::from_static(b"cname"),
                }],
            }],
        });
        let bye: Box<dyn rtcp::Packet> = Box::new(Goodbye {
            sources: vec![1],
            reason: bytes::Bytes::new(),
        });
        let good = wire(std::slice::from_ref(&rr));
        assert!(View::read(&good).is_some());
        let with_sdes = wire(&[rr.clone(), sdes]);
        assert_eq!(facts(&with_sdes), facts(&good), "a plain SDES is skipped");
        let mut odd_item = with_sdes.clone();
        let at = good.len() + 8;
        assert_eq!(odd_item[at], 1, "the CNAME item");
        odd_item[at] = 9;
        assert!(View::read(&odd_item).is_none(), "an item type rtc-rtcp reads as END");
        assert!(View::read(&wire(&[bye])).is_none());
        assert!(View::read(&[]).is_none());
        assert!(View::read(&good[..good.len() - 4]).is_none(), "cut short");
        let mut extra = good.clone();
        extra.extend_from_slice(&[0x80, 0xc9]);
        assert!(View::read(&extra).is_none(), "bytes left over");
        let mut v1 = good.clone();
        v1[0] = (v1[0] & 0x3f) | 0x40;
        assert!(View::read(&v1).is_none(), "version 1");
        let mut more_blocks = good.clone();
        more_blocks[0] += 1;
        assert!(View::read(&more_blocks).is_none(), "more blocks than the length holds");
        assert!(rtcp::packet::unmarshal(&mut bytes::Bytes::from(more_blocks)).is_err());
    }

    /// Damaged compounds: whatever `View` reads, `rtc-rtcp` reads alike (`agrees_with_rtc`
    /// panics otherwise); nothing panics. The fuzz target `rtcp_view` goes further.
    #[test]
    fn damaged_compounds_are_read_alike_or_declined() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let mut read = 0;
        for _ in 0..20_000 {
            let mut data = wire(&random_compound(&mut rng));
            for _ in 0..1 + rng.below(3) {
                match rng.below(3) {
                    0 if !data.is_empty() => {
                        let i = rng.below(data.len() as u64) as usize;
                        data[i] ^= 1 << rng.below(8);
                    }
                    1 => data.truncate(rng.below(data.len() as u64 + 1) as usize),
                    0 => {}
                    _ => {
                        let i = rng.below(data.len() as u64 + 1) as usize;
                        data.insert(i, rng.next() as u8);
                    }
                }
            }
            read += usize::from(agrees_with_rtc(&data));
        }
        assert!(read > 1_000, "only {read} damaged compounds were read");
    }
}
