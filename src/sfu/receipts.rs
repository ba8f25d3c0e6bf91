//! What a publisher is told about the packets it sent us: transport-wide congestion control
//! feedback and receiver reports, built by the gateway itself (issue 13).
//!
//! `rtc` 0.21 has an interceptor for each (`TwccReceiverInterceptor`,
//! `ReceiverReportInterceptor`). In rooms of one-to-one calls and of audio, where every inbound
//! packet is forwarded once or twice, passing each packet through the two of them was a tenth
//! of a forwarded packet's cost (BENCHMARKS §3, "Where a small room's packet goes"): each
//! moves the whole packet through a queue of its own, looks its stream up in a hash map, and
//! the receiver reports touch a 1 KiB bitmap per stream. [`Receipts`] does both jobs for a
//! publisher connection in one place: the shard hands it each packet it opened by reference
//! ([`Receipts::observe`], no move and no queue); packets `rtc` reads itself (a stream's
//! first packets, repaired retransmissions) pass through it in `rtc`'s chain as before, as do
//! the publisher's sender reports, whose times the receiver reports answer (LSR/DLSR). What it
//! writes leaves through `rtc`'s chain, which encrypts it, until the shard sends it itself
//! (below).
//!
//! - **TWCC feedback** (draft-holmer-rmcat-transport-wide-cc-extensions-01): the arrival time
//!   of each packet carrying the transport-wide sequence number, reported at the pace of
//!   `twcc_feedback::FeedbackPace` (every 100 ms for a fast connection, up to 250 ms for a
//!   slow one, as libwebrtc's receivers do). A report covers the packets that arrived since
//!   the last one and marks the ones missing between them, and those missing right after the
//!   last report, as not received. A late packet whose number was already passed is reported
//!   alone, so that nothing reported received before is ever said to be missing.
//! - **Receiver reports** (RFC 3550 §6.4.2, its appendix A.3 for loss and A.8 for jitter):
//!   one RTCP receiver report a second with a block for each stream heard since the last,
//!   instead of `rtc`'s one datagram per stream; it rides in the same compound packet as the
//!   TWCC feedback due at that moment.
//! - **Quiet when nothing arrives.** Neither timer runs while no packet has arrived since it
//!   last fired: after the last packets one more report of each kind covers them, then none,
//!   so an idle publisher (a muted microphone and camera) costs no wake-ups. The first packet
//!   after a quiet spell finds its deadline passed and is acknowledged at once.
//! - **Sent by the shard** once the connection's keys are known ([`Receipts::send_own`]):
//!   from then on `rtc`'s chain gets nothing from it on a timeout and no deadline; the shard
//!   asks [`Receipts::due_into`] on the connection's timer itself, which writes the reports
//!   straight to the wire (as `rtc-rtcp` would marshal them, into buffers the shard keeps), and
//!   seals them with an SRTCP context of its own (`own_rtcp::RtcpSealer`), without a drive of
//!   `rtc` and without an allocation per report. They are
//!   sent from a new SSRC then, one `rtc` never sent from: each SSRC's SRTCP index is then
//!   counted by one context only, so no AES-GCM nonce is used twice.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::interceptor::{AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket};
#[cfg(test)]
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
#[cfg(test)]
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::{RecvDelta, SymbolTypeTcc};
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;
use rtc::shared::error::Error;
use rtc::shared::marshal::MarshalSize;

use super::own_rtcp::Compound;
use super::twcc_feedback::{FEEDBACK_MIN, FeedbackPace};

/// The receiver reports' interval (RFC 3550's minimum of 5 s shortened, as every browser and
/// `rtc` do, to one second: the publisher's round-trip time and loss figures come from it).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Streams a connection reports on (a camera's three simulcast layers, their repair flows and
/// a microphone are seven); more are not reported.
const MAX_STREAMS: usize = 32;
/// Arrivals kept between two feedback reports (at 100 ms a report, 40 000 packets a second):
/// when they are this many, the report is due at once.
const MAX_ARRIVALS: usize = 4096;
/// Packets acknowledged in one feedback report (its deltas at one or two octets each keep it
/// well under a datagram); more go in the next report of the same turn.
const MAX_RECEIVED_PER_FEEDBACK: usize = 400;
/// The longest run of missing packets a feedback report marks before its first packet, after
/// the previous report: a longer jump in the numbers is a restart, not loss.
const MAX_LEAD: i64 = 0x1000;
/// The longest run of missing packets a report marks between two that arrived.
const MAX_GAP: i64 = 0x7ffe;
/// A feedback delta's unit, in microseconds.
const DELTA_UNIT: i64 = 250;

/// RFC 3550 appendix A.1: a jump forward by less than this is packets lost; by more (and not
/// a reordering of fewer than [`MAX_MISORDER`]) a restart, accepted once confirmed.
const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u16 = 100;

/// A publisher connection's TWCC feedback and receiver reports. See the module documentation.
pub struct Receipts {
    /// Arrival times are microseconds since this.
    start: Option<Instant>,
    /// The SSRC our reports are sent from.
    sender_ssrc: u32,
    twcc: Twcc,
    streams: Vec<Stream>,
    /// A packet of a reported stream arrived since the last receiver report.
    report_heard: bool,
    report_next: Option<Instant>,
    /// The shard sends what is due itself ([`send_own`](Self::send_own)): `rtc`'s chain gets
    /// no reports and no deadline.
    own: bool,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl Default for Receipts {
    fn default() -> Self {
        Self::new(rand::random())
    }
}

impl Receipts {
    /// Reports sent from `sender_ssrc`.
    pub fn new(sender_ssrc: u32) -> Self {
        Self {
            start: None,
            sender_ssrc,
            twcc: Twcc::default(),
            streams: Vec::new(),
            report_heard: false,
            report_next: None,
            own: false,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }

    fn micros(&mut self, now: Instant) -> i64 {
        let start = *self.start.get_or_insert(now);
        now.saturating_duration_since(start).as_micros() as i64
    }

    /// A packet arrived at `now` (opened by the shard, or read by `rtc`).
    pub fn observe(&mut self, now: Instant, packet: &rtc::rtp::Packet) {
        let header = &packet.header;
        let at = self.micros(now);
        if let Some(id) = self.twcc.id
            && header.extension
            && let Some(ext) = header.extensions.iter().find(|e| e.id == id)
            && let [a, b, ..] = ext.payload[..]
        {
            let size = header.marshal_size() + packet.payload.len();
            self.twcc
                .arrived(now, at, header.ssrc, u16::from_be_bytes([a, b]), size);
        }
        if let Some(stream) = self.streams.iter_mut().find(|s| s.ssrc == header.ssrc) {
            stream.packet(header.sequence_number, header.timestamp, at);
            if !self.report_heard {
                self.report_heard = true;
                self.report_next.get_or_insert(now + REPORT_INTERVAL);
            }
        }
    }

    /// A sender report of one of the publisher's streams (its SSRC and NTP timestamp)
    /// arrived at `now`: read by `rtc` (`handle_read`) or by the shard (`own_rtcp`).
    pub fn sender_report(&mut self, now: Instant, ssrc: u32, ntp_time: u64) {
        if let Some(stream) = self.streams.iter_mut().find(|s| s.ssrc == ssrc) {
            stream.last_sr = Some(((ntp_time >> 16) as u32, now));
        }
    }

    /// From now on the shard sends the reports ([`due`](Self::due) on its own timer) and
    /// `rtc`'s chain none, from a new SSRC: neither the one `rtc` may have sent reports from
    /// nor one in `avoid` (the connection's other RTCP senders), nor 0. Returns it.
    pub fn send_own(&mut self, avoid: &[u32]) -> u32 {
        self.own = true;
        let old = self.sender_ssrc;
        self.sender_ssrc = std::iter::repeat_with(rand::random::<u32>)
            .find(|&ssrc| ssrc != 0 && ssrc != old && !avoid.contains(&ssrc))
            .expect("a random u32 outside a handful");
        self.sender_ssrc
    }

    /// The SSRC the reports are sent from.
    pub fn sender_ssrc(&self) -> u32 {
        self.sender_ssrc
    }

    /// When the next report is due: none while nothing arrived since the last of each kind.
    pub fn next_due(&self) -> Option<Instant> {
        let report = self.report_next.filter(|_| self.report_heard);
        [self.twcc.due(), report].into_iter().flatten().min()
    }

    /// The reports due at `now`, as RTCP compound packets (the receiver report, when due,
    /// first, with the first feedback report): [`due_into`](Self::due_into) read back with
    /// `rtc-rtcp`, for `rtc`'s chain (before the shard sends them itself) and tests.
    pub fn due(&mut self, now: Instant) -> Vec<Compound> {
        let (mut wire, mut ends) = (Vec::new(), Vec::new());
        self.due_into(now, &mut wire, &mut ends);
        let mut start = 0;
        ends.iter()
            .filter_map(|&end| {
                let compound = rtc::rtcp::packet::unmarshal(&mut &wire[start..end]);
                debug_assert!(compound.is_ok(), "our own receipts read back: {compound:?}");
                start = end;
                compound.ok()
            })
            .collect()
    }

    /// The reports due at `now`, written to `wire` as RTCP compound packets one after the
    /// other, each one's end pushed to `ends` (the receiver report, when due, first, with the
    /// first feedback report). Writes as `rtc-rtcp` marshals, byte for byte, and allocates
    /// nothing once `wire`, `ends` and the feedback's scratch have grown to a turn's size.
    pub fn due_into(&mut self, now: Instant, wire: &mut Vec<u8>, ends: &mut Vec<usize>) {
        let mut report = false;
        if self.report_heard && self.report_next.is_some_and(|due| now >= due) {
            self.report_heard = false;
            self.report_next = Some(now + REPORT_INTERVAL);
            let start = wire.len();
            wire.extend_from_slice(&[0x80, RECEIVER_REPORT, 0, 0]);
            wire.extend_from_slice(&self.sender_ssrc.to_be_bytes());
            let mut count = 0u8;
            for s in self.streams.iter_mut().filter(|s| s.heard).take(31) {
                s.report(now).write(wire);
                count += 1;
            }
            if count == 0 {
                wire.truncate(start);
            } else {
                wire[start] |= count;
                wire[start + 2..start + 4].copy_from_slice(&(1 + 6 * u16::from(count)).to_be_bytes());
                report = true;
            }
        }
        let before = ends.len();
        if self.twcc.due().is_some_and(|due| now >= due) {
            // Each feedback report ends a compound: the receiver report rides with the first.
            self.twcc.feedback_into(now, self.sender_ssrc, wire, ends);
        }
        if report && ends.len() == before {
            ends.push(wire.len());
        }
    }
}

/// RTCP's packet types written here.
const RECEIVER_REPORT: u8 = 201;
const TRANSPORT_FEEDBACK: u8 = 205;
/// The TWCC feedback's format in the transport feedback type.
const FORMAT_TWCC: u8 = 15;

/// A report block on the wire, as `rtc-rtcp` marshals it.
trait WriteBlock {
    fn write(&self, wire: &mut Vec<u8>);
}

impl WriteBlock for ReceptionReport {
    fn write(&self, wire: &mut Vec<u8>) {
        wire.extend_from_slice(&self.ssrc.to_be_bytes());
        wire.push(self.fraction_lost);
        wire.extend_from_slice(&self.total_lost.to_be_bytes()[1..]);
        wire.extend_from_slice(&self.last_sequence_number.to_be_bytes());
        wire.extend_from_slice(&self.jitter.to_be_bytes());
        wire.extend_from_slice(&self.last_sender_report.to_be_bytes());
        wire.extend_from_slice(&self.delay.to_be_bytes());
    }
}

/// The transport-wide side: arrivals since the last feedback report.
#[derive(Default)]
struct Twcc {
    /// The header extension's ID, once negotiated.
    id: Option<u8>,
    /// (unwrapped transport-wide sequence number, microseconds since `start`), in order of
    /// arrival.
    arrivals: Vec<(i64, i64)>,
    /// The highest unwrapped number seen.
    highest: Option<i64>,
    /// One past the highest number already reported.
    reported_end: Option<i64>,
    media_ssrc: u32,
    count: u8,
    heard: bool,
    next: Option<Instant>,
    /// Arrivals reached [`MAX_ARRIVALS`] at this time: the report is due.
    full: Option<Instant>,
    pace: FeedbackPace,
    /// A report's statuses and deltas, kept from one report to the next.
    scratch: Scratch,
}

/// [`Builder`]'s lists, reused.
#[derive(Default)]
struct Scratch {
    statuses: Vec<SymbolTypeTcc>,
    deltas: Vec<RecvDelta>,
}

impl Twcc {
    fn arrived(&mut self, now: Instant, at: i64, ssrc: u32, seq: u16, size: usize) {
        let unwrapped = match self.highest {
            None => i64::from(seq),
            Some(high) => high + i64::from(seq.wrapping_sub(high as u16) as i16),
        };
        self.highest = Some(self.highest.map_or(unwrapped, |h| h.max(unwrapped)));
        self.media_ssrc = ssrc;
        self.pace.arrived(now, size);
        self.heard = true;
        self.next.get_or_insert(now + FEEDBACK_MIN);
        self.arrivals.push((unwrapped, at));
        if self.arrivals.len() >= MAX_ARRIVALS {
            self.full = Some(now);
        }
    }

    fn due(&self) -> Option<Instant> {
        if !self.heard {
            return None;
        }
        if let Some(full) = self.full {
            return Some(full);
        }
        let due = self.next?;
        Some(self.pace.next().map_or(due, |next| due.max(next)))
    }

    /// The feedback reports for the arrivals since the last (see the module documentation),
    /// written to `wire`, each one's end pushed to `ends`.
    fn feedback_into(&mut self, now: Instant, sender_ssrc: u32, wire: &mut Vec<u8>, ends: &mut Vec<usize>) {
        self.heard = false;
        self.full = None;
        self.next = Some(now + FEEDBACK_MIN);
        self.pace.reported(now);
        let mut arrivals = std::mem::take(&mut self.arrivals);
        // By number, then time: a duplicate counts at its first arrival (unstable: a
        // stable sort allocates a buffer once there are more than 20).
        arrivals.sort_unstable();
        arrivals.dedup_by_key(|&mut (seq, _)| seq);
        let reported_end = self.reported_end;
        let mut building: Option<Builder> = None;
        let mut last_seq = i64::MIN;
        for &(seq, at) in &arrivals {
            // Packets missing between two arrivals are marked only where no earlier report
            // covered them.
            let fits = building.as_mut().is_some_and(|b| {
                let gap = seq - last_seq - 1;
                let gap_reported = reported_end.is_some_and(|end| last_seq + 1 < end);
                (gap == 0 || !gap_reported) && gap <= MAX_GAP && b.add(seq, at)
            });
            if !fits {
                if let Some(b) = building.take() {
                    self.scratch = b.finish_into(sender_ssrc, self.media_ssrc, &mut self.count, wire);
                    ends.push(wire.len());
                }
                let base = match reported_end {
                    Some(end) if end < seq && seq - end <= MAX_LEAD => end,
                    _ => seq,
                };
                let mut b = Builder::reusing(base, at, std::mem::take(&mut self.scratch));
                let added = b.add(seq, at);
                debug_assert!(added, "a new report takes its first packet");
                building = Some(b);
            }
            last_seq = seq;
        }
        if let Some(b) = building {
            self.scratch = b.finish_into(sender_ssrc, self.media_ssrc, &mut self.count, wire);
            ends.push(wire.len());
        }
        if let Some(&(seq, _)) = arrivals.last() {
            self.reported_end = Some(self.reported_end.map_or(seq + 1, |end| end.max(seq + 1)));
        }
        arrivals.clear();
        self.arrivals = arrivals;
    }
}

/// One feedback report being built: statuses from `base` on, and the deltas of those received.
struct Builder {
    base: i64,
    next: i64,
    /// In units of 64 ms since `start`.
    reference: i64,
    /// The time the last delta brings the receiver to, in microseconds since `start`.
    last: i64,
    statuses: Vec<SymbolTypeTcc>,
    deltas: Vec<RecvDelta>,
}

impl Builder {
    #[cfg(test)]
    fn new(base: i64, first_at: i64) -> Self {
        Self::reusing(base, first_at, Scratch::default())
    }

    /// A report from `base` whose first packet arrived at `first_at`, in `scratch`'s lists.
    fn reusing(base: i64, first_at: i64, mut scratch: Scratch) -> Self {
        let reference = first_at.div_euclid(64_000);
        scratch.statuses.clear();
        scratch.deltas.clear();
        Self {
            base,
            next: base,
            reference,
            last: reference * 64_000,
            statuses: scratch.statuses,
            deltas: scratch.deltas,
        }
    }

    /// Adds packet `seq` (at or after `next`) arrived at `at`: false if it does not fit (its
    /// delta is out of range, or the report is full), and nothing is added.
    fn add(&mut self, seq: i64, at: i64) -> bool {
        let units = (at - self.last + DELTA_UNIT / 2 * (at - self.last).signum()) / DELTA_UNIT;
        let Ok(units) = i16::try_from(units) else {
            return false;
        };
        if self.deltas.len() >= MAX_RECEIVED_PER_FEEDBACK || seq - self.base >= i64::from(u16::MAX) {
            return false;
        }
        while self.next < seq {
            self.statuses.push(SymbolTypeTcc::PacketNotReceived);
            self.next += 1;
        }
        let symbol = if (0..=255).contains(&units) {
            SymbolTypeTcc::PacketReceivedSmallDelta
        } else {
            SymbolTypeTcc::PacketReceivedLargeDelta
        };
        let delta = i64::from(units) * DELTA_UNIT;
        self.statuses.push(symbol);
        self.deltas.push(RecvDelta {
            type_tcc_packet: symbol,
            delta,
        });
        self.last += delta;
        self.next = seq + 1;
        true
    }

    /// The report written to `wire` as `rtc-rtcp` marshals a `TransportLayerCc` with
    /// [`write_chunks`]' chunks (padded to a word, the padding's length in its last octet, the P bit
    /// set); its lists handed back.
    fn finish_into(self, sender_ssrc: u32, media_ssrc: u32, count: &mut u8, wire: &mut Vec<u8>) -> Scratch {
        let fb_pkt_count = *count;
        *count = count.wrapping_add(1);
        let start = wire.len();
        wire.extend_from_slice(&[0x80 | FORMAT_TWCC, TRANSPORT_FEEDBACK, 0, 0]);
        wire.extend_from_slice(&sender_ssrc.to_be_bytes());
        wire.extend_from_slice(&media_ssrc.to_be_bytes());
        wire.extend_from_slice(&(self.base as u16).to_be_bytes());
        wire.extend_from_slice(&(self.statuses.len() as u16).to_be_bytes());
        let reference = (self.reference as u32) & 0x00ff_ffff;
        wire.extend_from_slice(&(reference << 8 | u32::from(fb_pkt_count)).to_be_bytes());
        write_chunks(&self.statuses, wire);
        for d in &self.deltas {
            let units = d.delta / DELTA_UNIT;
            if d.type_tcc_packet == SymbolTypeTcc::PacketReceivedSmallDelta {
                wire.push(units as u8);
            } else {
                wire.extend_from_slice(&(units as i16).to_be_bytes());
            }
        }
        let padding = (4 - (wire.len() - start) % 4) % 4;
        if padding > 0 {
            wire.extend(std::iter::repeat_n(0, padding - 1));
            wire.push(padding as u8);
            wire[start] |= 0x20;
        }
        let words = ((wire.len() - start) / 4 - 1) as u16;
        wire[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
        Scratch {
            statuses: self.statuses,
            deltas: self.deltas,
        }
    }
}

/// The statuses as packet status chunks on the wire, as `rtc-rtcp` marshals them: a run of 14
/// or more alike as a run-length chunk, else 14 one-bit symbols when none is a large delta,
/// else 7 two-bit ones (the last chunk padded with "not received", which a reader ignores past
/// the status count).
fn write_chunks(statuses: &[SymbolTypeTcc], wire: &mut Vec<u8>) {
    let mut i = 0;
    while i < statuses.len() {
        let first = statuses[i];
        let run = statuses[i..].iter().take(0x1fff).take_while(|&&s| s == first).count();
        if run >= 14 {
            wire.extend_from_slice(&((first as u16) << 13 | run as u16).to_be_bytes());
            i += run;
            continue;
        }
        let one_bit = statuses[i..]
            .iter()
            .take(14)
            .all(|&s| s != SymbolTypeTcc::PacketReceivedLargeDelta);
        let (width, bits, mut word) = if one_bit { (14, 1, 0x8000u16) } else { (7, 2, 0xc000u16) };
        for (k, &symbol) in statuses[i..].iter().take(width).enumerate() {
            word |= (symbol as u16 & ((1 << bits) - 1)) << (14 - bits * (k as u16 + 1));
        }
        wire.extend_from_slice(&word.to_be_bytes());
        i += width.min(statuses.len() - i);
    }
}

/// One received stream's statistics for its report block (RFC 3550 appendix A.1, A.3, A.8).
struct Stream {
    ssrc: u32,
    clock_rate: u32,
    /// A packet arrived since the last report.
    heard: bool,
    started: bool,
    base_seq: u32,
    max_seq: u16,
    /// Sequence number wraps, times 65 536.
    cycles: u32,
    /// A jump beyond `MAX_DROPOUT` waits for its next number to confirm a restart.
    bad_seq: Option<u16>,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    /// The previous packet's relative transit time, in timestamp units.
    transit: Option<i64>,
    /// The interarrival jitter in timestamp units, times 16 (A.8's integer form).
    jitter_q4: i64,
    /// The middle 32 bits of the last sender report's NTP time, and when it arrived.
    last_sr: Option<(u32, Instant)>,
}

impl Stream {
    fn new(ssrc: u32, clock_rate: u32) -> Self {
        Self {
            ssrc,
            clock_rate: if clock_rate == 0 { 90_000 } else { clock_rate },
            heard: false,
            started: false,
            base_seq: 0,
            max_seq: 0,
            cycles: 0,
            bad_seq: None,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            transit: None,
            jitter_q4: 0,
            last_sr: None,
        }
    }

    fn restart(&mut self, seq: u16) {
        self.base_seq = u32::from(seq);
        self.max_seq = seq;
        self.cycles = 0;
        self.bad_seq = None;
        self.received = 0;
        self.expected_prior = 0;
        self.received_prior = 0;
        self.transit = None;
    }

    /// Packet `seq` with RTP time `timestamp` arrived at `at` (microseconds).
    fn packet(&mut self, seq: u16, timestamp: u32, at: i64) {
        self.heard = true;
        if !self.started {
            self.started = true;
            self.restart(seq);
        } else {
            let udelta = seq.wrapping_sub(self.max_seq);
            if udelta < MAX_DROPOUT {
                if seq < self.max_seq {
                    self.cycles = self.cycles.wrapping_add(1 << 16);
                }
                self.max_seq = seq;
            } else if udelta <= u16::MAX - MAX_MISORDER {
                if self.bad_seq != Some(seq) {
                    self.bad_seq = Some(seq.wrapping_add(1));
                    return;
                }
                self.restart(seq);
            }
            // Else a duplicate or a reordered packet: counted, the highest number kept.
        }
        self.received = self.received.wrapping_add(1);
        let arrival = (i128::from(at) * i128::from(self.clock_rate) / 1_000_000) as i64;
        let transit = arrival.wrapping_sub(i64::from(timestamp));
        if let Some(prior) = self.transit {
            // The difference as RTP time differences go: modulo 2^32, signed.
            let d = i64::from((transit.wrapping_sub(prior) as u32) as i32).abs();
            self.jitter_q4 += d - ((self.jitter_q4 + 8) >> 4);
        }
        self.transit = Some(transit);
    }

    fn report(&mut self, now: Instant) -> ReceptionReport {
        self.heard = false;
        let extended_max = self.cycles.wrapping_add(u32::from(self.max_seq));
        let expected = extended_max.wrapping_sub(self.base_seq).wrapping_add(1);
        let lost = (i64::from(expected) - i64::from(self.received)).clamp(0, 0x7f_ffff);
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        };
        let (last_sender_report, delay) = match self.last_sr {
            Some((lsr, at)) => (lsr, (now.saturating_duration_since(at).as_secs_f64() * 65_536.0) as u32),
            None => (0, 0),
        };
        ReceptionReport {
            ssrc: self.ssrc,
            fraction_lost,
            total_lost: lost as u32,
            last_sequence_number: extended_max,
            jitter: (self.jitter_q4 >> 4) as u32,
            last_sender_report,
            delay,
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for Receipts {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        match &msg.message.packet {
            Packet::Rtp(packet) => self.observe(msg.now, packet),
            Packet::Rtcp(packets) => {
                for (ssrc, ntp_time) in super::rtcp_view::rtc_sender_reports(packets) {
                    self.sender_report(msg.now, ssrc, ntp_time);
                }
            }
            _ => {}
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
        if self.own {
            return Ok(());
        }
        for compound in self.due(now) {
            self.write_queue.push_back(TaggedPacket {
                now,
                transport: TransportContext::default(),
                message: AttributedPacket::new(Packet::Rtcp(compound)),
            });
        }
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        if self.own {
            return None;
        }
        self.next_due()
    }
}

impl Interceptor for Receipts {
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        if let Some(ext) = info
            .rtp_header_extensions
            .iter()
            .find(|ext| ext.uri == rtc::sdp::extmap::TRANSPORT_CC_URI && ext.id != 0)
        {
            // One ID per URI in a bundled session: the newest binding's is the only one (or,
            // after a renegotiation, the one in force).
            self.twcc.id = u8::try_from(ext.id).ok();
        }
        self.streams.retain(|s| s.ssrc != info.ssrc);
        if self.streams.len() < MAX_STREAMS {
            self.streams.push(Stream::new(info.ssrc, info.clock_rate));
        }
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.streams.retain(|s| s.ssrc != info.ssrc);
        if self.streams.is_empty() {
            self.twcc.id = None;
        }
    }

    fn bind_local_stream(&mut self, _info: &StreamInfo) {}

    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rtc::interceptor::RTPHeaderExtension;
    use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
        PacketStatusChunk, RunLengthChunk, StatusVectorChunk, SymbolSizeTypeTcc,
    };
    use rtc::rtp::header::{EXTENSION_PROFILE_ONE_BYTE, Extension, Header};
    use rtc::shared::marshal::{Marshal, Unmarshal};

    const TWCC_ID: u8 = 3;
    const AUDIO: u32 = 0x1234;
    const VIDEO: u32 = 0x5678;

    fn bound() -> Receipts {
        let mut r = Receipts::new(0xfeed);
        for (ssrc, clock_rate) in [(AUDIO, 48_000), (VIDEO, 90_000)] {
            r.bind_remote_stream(&StreamInfo {
                ssrc,
                clock_rate,
                rtp_header_extensions: vec![RTPHeaderExtension {
                    uri: rtc::sdp::extmap::TRANSPORT_CC_URI.to_owned(),
                    id: u16::from(TWCC_ID),
                }],
                ..Default::default()
            });
        }
        r
    }

    /// A packet of `ssrc` with RTP sequence number `seq`, transport-wide number `twcc`, RTP
    /// time `ts` and a payload of `len` octets (its header is 20: the fixed part and the
    /// one-byte extension block).
    fn packet(ssrc: u32, seq: u16, twcc: u16, ts: u32, len: usize) -> rtc::rtp::Packet {
        rtc::rtp::Packet {
            header: Header {
                version: 2,
                payload_type: 96,
                sequence_number: seq,
                timestamp: ts,
                ssrc,
                extension: true,
                extension_profile: EXTENSION_PROFILE_ONE_BYTE,
                extensions: vec![Extension {
                    id: TWCC_ID,
                    payload: Bytes::copy_from_slice(&twcc.to_be_bytes()),
                }],
                ..Default::default()
            },
            payload: Bytes::from(vec![0u8; len]),
        }
    }

    /// What fired in a shard turn at `until` (everything due by then): the feedback reports (parsed back from the wire) and the receiver reports.
    #[derive(Default)]
    struct Written {
        fired: usize,
        feedback: Vec<TransportLayerCc>,
        reports: Vec<ReceiverReport>,
        compounds: Vec<usize>,
    }

    fn run_until(r: &mut Receipts, until: Instant, w: &mut Written) {
        while let Some(due) = r.next_due() {
            if due > until {
                break;
            }
            w.fired += 1;
            // Written as `rtc-rtcp` marshals what it reads of it, byte for byte.
            let (mut wire, mut ends) = (Vec::new(), Vec::new());
            r.due_into(until, &mut wire, &mut ends);
            let mut start = 0;
            for &end in &ends {
                let bytes = &wire[start..end];
                start = end;
                let compound = rtc::rtcp::packet::unmarshal(&mut &bytes[..]).expect("rtc reads our receipts");
                let again = rtc::rtcp::packet::marshal(&compound).expect("marshals");
                assert_eq!(&again[..], bytes, "written as rtc-rtcp writes it");
                w.compounds.push(compound.len());
                for p in compound {
                    let wire = p.marshal().expect("marshals");
                    if let Some(cc) = p.as_any().downcast_ref::<TransportLayerCc>() {
                        let back = TransportLayerCc::unmarshal(&mut &wire[..]).expect("parses");
                        assert_eq!(back.packet_status_count, cc.packet_status_count);
                        w.feedback.push(back);
                    } else if let Some(rr) = p.as_any().downcast_ref::<ReceiverReport>() {
                        w.reports
                            .push(ReceiverReport::unmarshal(&mut &wire[..]).expect("parses"));
                        assert_eq!(rr.ssrc, r.sender_ssrc());
                    }
                }
            }
        }
    }

    /// (transport-wide number, arrival in µs relative to the first arrival) of every packet
    /// the feedback says arrived, and the numbers it says are missing.
    fn acked(feedback: &[TransportLayerCc]) -> (Vec<(u16, i64)>, Vec<u16>) {
        let mut received = Vec::new();
        let mut missing = Vec::new();
        for f in feedback {
            for a in crate::sfu::bwe::acks_of(f) {
                match a.arrival {
                    Some(at) => received.push((a.seq, at.as_micros() as i64)),
                    None => missing.push(a.seq),
                }
            }
        }
        let first = received.iter().map(|&(_, at)| at).min().unwrap_or(0);
        for r in &mut received {
            r.1 -= first;
        }
        (received, missing)
    }

    #[test]
    fn a_connection_that_never_received_media_has_no_timer() {
        let mut r = bound();
        assert_eq!(r.next_due(), None);
        let mut w = Written::default();
        run_until(&mut r, Instant::now() + Duration::from_secs(60), &mut w);
        assert_eq!(w.fired, 0);
    }

    /// `count` packets of `len` payload octets on `ssrc`, one every 20 ms from `t0`, firing
    /// what is due meanwhile, then on to `FEEDBACK_MAX` after the last.
    fn stream(r: &mut Receipts, t0: Instant, ssrc: u32, count: u16, len: usize, w: &mut Written) {
        for i in 0..count {
            let at = t0 + Duration::from_millis(20) * u32::from(i);
            run_until(r, at, w);
            r.observe(at, &packet(ssrc, i, i, u32::from(i) * 960, len));
        }
        let end = t0 + Duration::from_millis(20) * u32::from(count) + super::super::twcc_feedback::FEEDBACK_MAX;
        run_until(r, end, w);
    }

    #[test]
    fn fast_media_is_acknowledged_every_100_ms_and_silence_stops_the_timers() {
        let t0 = Instant::now();
        let mut r = bound();
        let mut w = Written::default();
        // 50 packets of 1 020 octets a second for one second (408 kbit/s): every 100 ms.
        stream(&mut r, t0, VIDEO, 50, 1000, &mut w);
        assert!(
            (9..=12).contains(&w.feedback.len()),
            "about ten feedback reports: {}",
            w.feedback.len()
        );
        let (received, missing) = acked(&w.feedback);
        assert_eq!(
            received.iter().map(|&(s, _)| s).collect::<Vec<_>>(),
            (0..50).collect::<Vec<_>>()
        );
        assert!(missing.is_empty(), "{missing:?}");
        for (i, &(_, at)) in received.iter().enumerate() {
            assert!((at - i as i64 * 20_000).abs() <= 250, "packet {i} at {at} us");
        }
        // Then nothing arrives: no timer at all, however long.
        assert_eq!(r.next_due(), None);
        let before = w.fired;
        run_until(&mut r, t0 + Duration::from_secs(60), &mut w);
        assert_eq!(w.fired, before);
    }

    #[test]
    fn slow_media_is_acknowledged_less_often_as_a_browser_would() {
        let t0 = Instant::now();
        let mut r = bound();
        let mut w = Written::default();
        // Audio: 50 packets of 120 octets a second for two seconds (48 kbit/s): the reports
        // may take 5 % of it, one every 227 ms, after the first at 100 ms.
        stream(&mut r, t0, AUDIO, 100, 100, &mut w);
        assert!(
            (8..=10).contains(&w.feedback.len()),
            "about nine feedback reports: {}",
            w.feedback.len()
        );
        let (received, _) = acked(&w.feedback);
        assert_eq!(received.len(), 100, "every packet acknowledged once");
    }

    #[test]
    fn a_packet_after_a_quiet_spell_is_acknowledged_and_reported_at_once() {
        let t0 = Instant::now();
        let mut r = bound();
        let mut w = Written::default();
        r.observe(t0, &packet(VIDEO, 0, 0, 0, 100));
        run_until(&mut r, t0 + Duration::from_secs(2), &mut w);
        assert_eq!((w.feedback.len(), w.reports.len()), (1, 1));
        assert_eq!(r.next_due(), None);
        // Ten seconds later one packet: both are due at once (their old deadlines passed).
        let later = t0 + Duration::from_secs(10);
        r.observe(later, &packet(VIDEO, 1, 1, 900_000, 100));
        assert!(r.next_due().expect("armed by the packet") <= later, "due at once");
        run_until(&mut r, later, &mut w);
        assert_eq!((w.feedback.len(), w.reports.len()), (2, 2));
        assert_eq!(
            w.compounds.last(),
            Some(&2),
            "the report and the feedback in one compound"
        );
        assert_eq!(r.next_due(), None);
    }

    #[test]
    fn media_is_reported_every_second_in_one_report_and_after_the_last_packets_once_more() {
        let t0 = Instant::now();
        let mut r = bound();
        let mut w = Written::default();
        for i in 0..250u16 {
            let at = t0 + Duration::from_millis(20) * u32::from(i);
            run_until(&mut r, at, &mut w);
            r.observe(at, &packet(AUDIO, i, 2 * i, u32::from(i) * 960, 100));
            r.observe(at, &packet(VIDEO, 1000 + i, 2 * i + 1, u32::from(i) * 1800, 1000));
        }
        assert!(
            (4..=5).contains(&w.reports.len()),
            "a report a second: {}",
            w.reports.len()
        );
        assert!(w.reports.iter().all(|rr| rr.reports.len() == 2), "a block per stream");
        let n = w.reports.len();
        run_until(&mut r, t0 + Duration::from_secs(60), &mut w);
        assert_eq!(w.reports.len(), n + 1, "one more covering the last packets");
        let last = w.reports.last().expect("a report");
        let audio = last.reports.iter().find(|b| b.ssrc == AUDIO).expect("audio's block");
        let video = last.reports.iter().find(|b| b.ssrc == VIDEO).expect("video's block");
        assert_eq!(audio.last_sequence_number, 249);
        assert_eq!(video.last_sequence_number, 1249);
        assert_eq!((audio.total_lost, video.fraction_lost), (0, 0));
        assert_eq!(audio.jitter, 0, "evenly paced packets have no jitter");
        assert_eq!(r.next_due(), None);
    }

    #[test]
    fn losses_are_marked_missing_in_the_feedback_and_counted_in_the_report() {
        let t0 = Instant::now();
        let mut r = bound();
        let mut w = Written::default();
        // 100 packets, every tenth lost; one arrives 3 ms late out of order.
        let mut sent: Vec<u16> = (0..100).filter(|i| i % 10 != 5).collect();
        sent.swap(40, 41);
        for (k, &i) in sent.iter().enumerate() {
            let at = t0 + Duration::from_millis(10) * k as u32 + Duration::from_millis(u64::from(k == 41) * 3);
            r.observe(
                at,
                &packet(VIDEO, 500 + i, 65_500u16.wrapping_add(i), u32::from(i) * 900, 500),
            );
        }
        run_until(&mut r, t0 + Duration::from_secs(2), &mut w);
        let (received, missing) = acked(&w.feedback);
        let mut seqs: Vec<u16> = received.iter().map(|&(s, _)| s).collect();
        seqs.sort_by_key(|&s| s.wrapping_sub(65_500));
        let expected: Vec<u16> = (0..100)
            .filter(|i| i % 10 != 5)
            .map(|i| 65_500u16.wrapping_add(i))
            .collect();
        assert_eq!(seqs, expected, "across the wrap of the transport-wide numbers");
        let mut missing_sorted = missing.clone();
        missing_sorted.sort_by_key(|&s| s.wrapping_sub(65_500));
        assert_eq!(
            missing_sorted,
            (0..10).map(|k| 65_500u16.wrapping_add(10 * k + 5)).collect::<Vec<_>>()
        );
        let block = &w.reports[0].reports[0];
        assert_eq!(block.ssrc, VIDEO);
        assert_eq!(block.total_lost, 10);
        assert_eq!(block.fraction_lost, (10 * 256 / 100) as u8);
        assert_eq!(block.last_sequence_number, 599);
    }

    #[test]
    fn a_late_packet_is_acknowledged_without_calling_reported_ones_missing() {
        let t0 = Instant::now();
        let mut r = bound();
        let mut w = Written::default();
        // 0..10 but 4, reported; then 4 arrives late with 13 and 14 (11 and 12 lost).
        for i in (0..10u16).filter(|&i| i != 4) {
            r.observe(t0 + Duration::from_millis(u64::from(i)), &packet(VIDEO, i, i, 0, 100));
        }
        run_until(&mut r, t0 + Duration::from_millis(150), &mut w);
        let (_, missing) = acked(&w.feedback);
        assert_eq!(missing, [4]);
        let later = t0 + Duration::from_millis(200);
        for i in [4u16, 13, 14] {
            r.observe(later, &packet(VIDEO, i, i, 0, 100));
        }
        let mut w2 = Written::default();
        run_until(&mut r, later + Duration::from_millis(300), &mut w2);
        let (received, missing) = acked(&w2.feedback);
        let mut seqs: Vec<u16> = received.iter().map(|&(s, _)| s).collect();
        seqs.sort();
        assert_eq!(seqs, [4, 13, 14]);
        missing
            .iter()
            .for_each(|m| assert!(!(5..10).contains(m), "{m} was reported received"));
        let mut missing = missing;
        missing.sort();
        assert_eq!(missing, [10, 11, 12], "lost since the last report");
    }

    #[test]
    fn long_gaps_and_large_deltas_are_encoded_as_rtc_reads_them() {
        let mut b = Builder::new(1_000, 70_000);
        // Received, a run of 40 missing, received after 70 ms (a large delta), one 20 ms
        // earlier (negative), then small ones.
        let arrivals = [
            (1_000, 70_000),
            (1_041, 140_000),
            (1_042, 120_000),
            (1_043, 120_500),
            (1_044, 121_000),
        ];
        for (seq, at) in arrivals {
            assert!(b.add(seq, at));
        }
        let mut wire = Vec::new();
        b.finish_into(1, 2, &mut 0, &mut wire);
        let back = TransportLayerCc::unmarshal(&mut &wire[..]).expect("parses");
        assert!(
            back.packet_chunks.len() <= 3,
            "the run of 40 in one chunk: {:?}",
            back.packet_chunks
        );
        let (received, missing) = acked(&[back]);
        assert_eq!(missing, (1_001..1_041).collect::<Vec<u16>>());
        let want: Vec<(u16, i64)> = arrivals.iter().map(|&(s, at)| (s as u16, at - 70_000)).collect();
        assert_eq!(received, want);
        // A delta beyond 8 s does not fit: the packet goes in the next report.
        assert!(!b_with(1_000, 0).add(1_001, 9_000_000));
    }

    fn b_with(seq: i64, at: i64) -> Builder {
        let mut b = Builder::new(seq, at);
        assert!(b.add(seq, at));
        b
    }

    /// `write_chunks`' chunks as `rtc-rtcp` reads them, word by word.
    fn chunks(statuses: &[SymbolTypeTcc]) -> Vec<PacketStatusChunk> {
        let mut wire = Vec::new();
        write_chunks(statuses, &mut wire);
        wire.chunks_exact(2)
            .map(|mut word| {
                if word[0] & 0x80 == 0 {
                    PacketStatusChunk::RunLengthChunk(RunLengthChunk::unmarshal(&mut word).expect("a run"))
                } else {
                    PacketStatusChunk::StatusVectorChunk(StatusVectorChunk::unmarshal(&mut word).expect("a vector"))
                }
            })
            .collect()
    }

    #[test]
    fn chunks_cover_every_status_in_the_fewest_simple_chunks() {
        use SymbolTypeTcc::*;
        let mut statuses = vec![PacketReceivedSmallDelta; 20];
        statuses.extend([PacketNotReceived, PacketReceivedLargeDelta, PacketReceivedSmallDelta]);
        let c = chunks(&statuses);
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(matches!(&c[0], PacketStatusChunk::RunLengthChunk(r) if r.run_length == 20));
        assert!(matches!(&c[1], PacketStatusChunk::StatusVectorChunk(v)
            if v.symbol_size == SymbolSizeTypeTcc::TwoBit && v.symbol_list.len() == 7));
        let mixed: Vec<_> = (0..30)
            .map(|i| {
                if i % 3 == 0 {
                    PacketNotReceived
                } else {
                    PacketReceivedSmallDelta
                }
            })
            .collect();
        let c = chunks(&mixed);
        assert_eq!(c.len(), 3, "14 one-bit symbols a chunk: {c:?}");
    }

    #[test]
    fn chunks_are_written_as_rtc_marshals_them() {
        use SymbolTypeTcc::*;
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for round in 0..500 {
            let len = round % 60 + 1;
            let statuses: Vec<SymbolTypeTcc> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Runs as often as mixtures: the symbol changes one time in four.
                    match (x % 16, round % 3) {
                        (0..=11, _) => PacketReceivedSmallDelta,
                        (12..=13, _) => PacketNotReceived,
                        (_, 0) => PacketReceivedSmallDelta,
                        _ => PacketReceivedLargeDelta,
                    }
                })
                .collect();
            let mut ours = Vec::new();
            write_chunks(&statuses, &mut ours);
            let mut theirs = Vec::new();
            for chunk in chunks(&statuses) {
                theirs.extend_from_slice(&chunk.marshal().expect("marshals"));
            }
            assert_eq!(ours, theirs, "{statuses:?}");
        }
    }

    #[test]
    fn a_jump_in_sequence_numbers_is_a_restart_once_confirmed() {
        let mut s = Stream::new(VIDEO, 90_000);
        for seq in 0..10 {
            s.packet(seq, 0, 0);
        }
        s.packet(30_000, 0, 0);
        assert_eq!(s.max_seq, 9, "a lone jump is not believed");
        s.packet(30_001, 0, 0);
        let block = s.report(Instant::now());
        assert_eq!(block.last_sequence_number, 30_001);
        assert_eq!(block.total_lost, 0, "counted from the restart");
    }

    #[test]
    fn jitter_follows_rfc_3550_and_sender_reports_are_answered() {
        let t0 = Instant::now();
        let mut r = bound();
        // Audio every 20 ms, arriving alternately 0 and 4 ms late: transit differences of
        // 4 ms = 192 timestamp units, so the jitter tends to 192.
        for i in 0..500u16 {
            let late = if i % 2 == 1 { 4 } else { 0 };
            let at = t0 + Duration::from_millis(20 * u64::from(i) + late);
            r.observe(at, &packet(AUDIO, i, i, u32::from(i) * 960, 100));
        }
        let sr_at = t0 + Duration::from_secs(10);
        r.sender_report(sr_at, AUDIO, 0x0123_4567_89ab_cdef);
        let compounds = r.due(sr_at + Duration::from_millis(500));
        let rr = compounds[0][0]
            .as_any()
            .downcast_ref::<ReceiverReport>()
            .expect("a report");
        let audio = rr.reports.iter().find(|b| b.ssrc == AUDIO).expect("audio");
        assert!((185..=192).contains(&audio.jitter), "{}", audio.jitter);
        assert_eq!(audio.last_sender_report, 0x4567_89ab);
        assert_eq!(audio.delay, 32_768, "half a second in 1/65 536 s");
    }

    #[test]
    fn a_flood_is_acknowledged_at_once_in_reports_that_fit_a_datagram() {
        let t0 = Instant::now();
        let mut r = bound();
        for i in 0..MAX_ARRIVALS as u16 {
            r.observe(t0 + Duration::from_micros(u64::from(i)), &packet(VIDEO, i, i, 0, 100));
        }
        let last = t0 + Duration::from_micros(MAX_ARRIVALS as u64);
        assert!(r.next_due().is_some_and(|due| due <= last), "due at once when full");
        let mut w = Written::default();
        run_until(&mut r, last, &mut w);
        let (received, missing) = acked(&w.feedback);
        assert_eq!(received.len(), MAX_ARRIVALS);
        assert!(missing.is_empty());
        for f in &w.feedback {
            assert!(f.marshal_size() < 1_200, "{} octets", f.marshal_size());
        }
        assert!(r.next_due().is_some_and(|due| due > last), "nothing more due now");
    }

    /// Against a model: random streams across the 16-bit wrap (loss, packets held back and
    /// delivered late, some past the report that marked them missing, duplicates, quiet
    /// spells of up to two seconds), the shard's turns in between. Each feedback report,
    /// parsed back as a publisher would, says a packet arrived only if it did and at one of
    /// its arrival times (within half a delta unit), never says missing what an earlier report
    /// said arrived, and fits a datagram; every packet that arrived is acknowledged.
    #[test]
    fn feedback_agrees_with_a_model_of_what_arrived() {
        use rand::{Rng, SeedableRng};
        use std::collections::{HashMap, HashSet};
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        for round in 0..40 {
            let t0 = Instant::now();
            let mut r = bound();
            let mut w = Written::default();
            let mut arrivals: HashMap<u16, Vec<i64>> = HashMap::new();
            let mut held: Vec<u16> = Vec::new();
            let start: u16 = rng.random();
            let mut now_us: i64 = 0;
            let mut deliver = |r: &mut Receipts, seq: u16, at_us: i64| {
                let at = t0 + Duration::from_micros(at_us as u64);
                r.observe(at, &packet(VIDEO, seq, seq, 0, 1000));
                arrivals.entry(seq).or_default().push(at_us);
            };
            for i in 0..2000u16 {
                let seq = start.wrapping_add(i);
                if i > 0 {
                    now_us += rng.random_range(0..3_000);
                    if rng.random_ratio(1, 300) {
                        now_us += rng.random_range(100_000..2_000_000);
                    }
                }
                run_until(&mut r, t0 + Duration::from_micros(now_us as u64), &mut w);
                if i > 0 && rng.random_ratio(1, 20) {
                    continue;
                }
                if i > 0 && rng.random_ratio(1, 15) {
                    held.push(seq);
                } else {
                    deliver(&mut r, seq, now_us);
                    if rng.random_ratio(1, 50) {
                        deliver(&mut r, seq, now_us);
                    }
                }
                if !held.is_empty() && rng.random_ratio(1, 4) {
                    let late = held.swap_remove(rng.random_range(0..held.len()));
                    deliver(&mut r, late, now_us);
                }
            }
            for late in std::mem::take(&mut held) {
                deliver(&mut r, late, now_us);
            }
            run_until(
                &mut r,
                t0 + Duration::from_micros(now_us as u64) + Duration::from_secs(5),
                &mut w,
            );
            let mut said_received: HashSet<u16> = HashSet::new();
            for f in &w.feedback {
                assert!(f.marshal_size() < 1_200, "round {round}: {} octets", f.marshal_size());
                for a in crate::sfu::bwe::acks_of(f) {
                    match a.arrival {
                        Some(at) => {
                            let at = at.as_micros() as i64;
                            let times = arrivals
                                .get(&a.seq)
                                .unwrap_or_else(|| panic!("round {round}: {} never arrived", a.seq));
                            assert!(
                                times.iter().any(|&t| (t - at).abs() <= DELTA_UNIT / 2),
                                "round {round}: {} said to arrive at {at} us, arrived at {times:?}",
                                a.seq
                            );
                            said_received.insert(a.seq);
                        }
                        None => assert!(
                            !said_received.contains(&a.seq),
                            "round {round}: {} said missing after it was said to arrive",
                            a.seq
                        ),
                    }
                }
            }
            let unacknowledged: Vec<u16> = arrivals
                .keys()
                .filter(|s| !said_received.contains(s))
                .copied()
                .collect();
            assert!(
                unacknowledged.is_empty(),
                "round {round}: never acknowledged: {unacknowledged:?}"
            );
        }
    }

    /// Sent by the shard: `rtc`'s chain gets neither reports nor a deadline, while the shard
    /// gets both, from a new SSRC (not the old one, not 0, not one to avoid).
    #[test]
    fn sent_by_the_shard_the_chain_gets_nothing_and_the_reports_a_new_ssrc() {
        let t0 = Instant::now();
        let mut r = bound();
        r.observe(t0, &packet(AUDIO, 1, 1, 960, 100));
        assert!(
            Protocol::poll_timeout(&mut r).is_some(),
            "rtc's chain drives it at first"
        );
        let ssrc = r.send_own(&[0xbeef]);
        assert!(![0, 0xfeed, 0xbeef].contains(&ssrc), "{ssrc:#x}");
        assert_eq!(r.sender_ssrc(), ssrc);
        r.observe(t0 + Duration::from_millis(20), &packet(AUDIO, 2, 2, 1920, 100));
        let late = t0 + REPORT_INTERVAL * 2;
        assert_eq!(Protocol::poll_timeout(&mut r), None, "no deadline for rtc's chain");
        Protocol::handle_timeout(&mut r, late).unwrap();
        assert!(Protocol::poll_write(&mut r).is_none(), "nothing written through rtc");
        assert!(r.next_due().is_some_and(|due| due <= late), "the shard's deadline");
        let mut w = Written::default();
        run_until(&mut r, late, &mut w);
        assert_eq!(w.reports.len(), 1, "one receiver report");
        assert_eq!(w.reports[0].ssrc, ssrc);
        assert!(!w.feedback.is_empty(), "feedback");
        assert!(w.feedback.iter().all(|f| f.sender_ssrc == ssrc));
        assert_eq!(
            w.feedback
                .iter()
                .flat_map(super::super::bwe::acks_of)
                .filter(|a| a.arrival.is_some())
                .count(),
            2,
            "both packets acknowledged"
        );
    }
}
