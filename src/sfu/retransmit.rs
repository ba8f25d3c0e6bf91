//! Answering subscribers' NACKs: what was sent on each leg is kept for a second,
//! and a NACK (RFC 4585 generic NACK, with the leg's own sequence numbers) is
//! answered from it, as RTX (RFC 4588) where the subscriber negotiated RTX for the
//! payload type, otherwise as the original packet. Pure: no clock, no connection.
//!
//! Two parts, as LiveKit's sequencer and buffer: a [`PacketCache`] per published
//! video track holds the packets as they arrived (payload and header fields copied
//! into slots allocated once and reused, so the forward path allocates nothing),
//! and a [`LegHistory`] per subscriber leg maps each sequence number the leg sent
//! to the cached packet it carried, when, and whether it was already resent. With
//! fan-out N that is one payload copy per packet, not N.
//!
//! A NACK for a packet resent less than [`RetransmitParams::resend_guard`] ago is
//! answered once; one older than [`RetransmitParams::max_age`], overwritten, or
//! never sent on the leg is *unservable*: counted, and the first such packet newer
//! than any before it asks the publisher for a keyframe (through the track's
//! throttle), since the subscriber's decoder cannot go on without it.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::rtp::Packet;
use rtc::rtp::header::{Extension, Header};

use super::forward::DownLeg;
use super::stamp::{Clock, NEVER};
use super::vp8::Offsets;

/// Packets a track's cache holds (a power of two: slots are indexed by sequence
/// number). 512 is about 1.7 s of 1.5 Mbit/s video and 0.8 s at 3 Mbit/s.
pub const CACHE_SLOTS: usize = 512;
/// Sequence numbers a leg remembers (as many as the cache can serve).
pub const HISTORY_SLOTS: usize = CACHE_SLOTS;

/// The RTX SSRC of a video leg whose own SSRC is `ssrc` (declared in the offer as
/// `a=ssrc-group:FID <ssrc> <rtx>`): derived, so nothing more is carried per leg.
pub fn rtx_ssrc(ssrc: u32) -> u32 {
    ssrc ^ 0x5254_5800
}

/// How old a packet may be and still be resent, and how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetransmitParams {
    /// A packet sent longer ago than this is not resent: a receiver has given up on
    /// its frame (libwebrtc keeps about one second too).
    pub max_age: Duration,
    /// A packet is resent at most once within this: repeated NACKs inside one round
    /// trip are the same loss asked for twice. Below libwebrtc's default retry
    /// interval (100 ms while it knows no RTT), so a genuine retry after a lost
    /// retransmission is answered.
    pub resend_guard: Duration,
    /// A packet is resent at most this often in all. Chrome and our SDK (`gatehouse_sdk::nack`)
    /// stop asking once a packet arrives, RTX included, but a receiver with `rtc` 0.21's own
    /// NACK generator never learns of an RTX repair and asks again every 100 ms for seconds
    /// (the bug this gateway had toward publishers, see `nack`, and the SDK before its own
    /// generator): without a cap each loss would cost such a receiver ten resends.
    pub max_resends: u8,
}

impl Default for RetransmitParams {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(1),
            resend_guard: Duration::from_millis(50),
            max_resends: 3,
        }
    }
}

/// One cached packet: the header fields a retransmission needs, and where its header
/// extensions and payload lie in the cache's byte ring ([`PacketCache`]).
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    filled: bool,
    /// The track's sequence space it belongs to (see [`PacketCache::restart`]).
    epoch: u32,
    seq: u16,
    at: Option<Instant>,
    marker: bool,
    payload_type: u8,
    extension_profile: u16,
    /// Its bytes in the ring: from `start` (a position in the ring's running count of
    /// bytes written), `ext_len` bytes of extensions (a count, then (id, length) pairs,
    /// then their data), then `payload_len` bytes of payload.
    start: u64,
    ext_len: u16,
    payload_len: u16,
}

/// A cached packet as a retransmission reads it: its header fields, and its extensions
/// and payload borrowed from the ring.
#[derive(Debug, Clone, Copy)]
pub struct Cached<'a> {
    pub marker: bool,
    pub payload_type: u8,
    extension_profile: u16,
    /// The extensions as [`PacketCache::insert`] laid them out.
    extensions: &'a [u8],
    pub payload: &'a [u8],
}

impl<'a> Cached<'a> {
    /// The publisher's header extensions: (id, data).
    fn extensions(&self) -> impl Iterator<Item = (u8, &'a [u8])> + 'a {
        let table = self.extensions;
        let n = table.first().copied().unwrap_or(0) as usize;
        let mut at = 1 + 2 * n;
        (0..n).filter_map(move |i| {
            let (id, len) = (*table.get(1 + 2 * i)?, *table.get(2 + 2 * i)? as usize);
            let data = table.get(at..at + len)?;
            at += len;
            Some((id, data))
        })
    }
}

/// What [`PacketCache::insert`] made of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// Cached; forward it.
    New,
    /// The same packet is already cached (a publisher resending what arrived, or
    /// an RTX bandwidth probe): not forwarded again.
    Duplicate,
}

/// The ring's first size, and the most it grows to (a packet written over before its
/// `max_age` then costs a NACK answered as unservable, as an overwritten slot does).
pub const RING_START: usize = 64 * 1024;
pub const RING_MAX: usize = 4 * 1024 * 1024;
/// The ring's laps are marked in this many segments: the age of what a write covers is
/// known to within one segment.
const SEGMENTS: usize = 8;

/// The last [`CACHE_SLOTS`] packets of one published video track, as they arrived.
///
/// The packets' bytes (extensions and payload) go one after the other into one ring of
/// bytes, so the cache holds what the track sent in its last `max_age` rather than
/// [`CACHE_SLOTS`] buffers each as large as the largest packet they held: a 500 kbit/s
/// camera's cache took about 600 KB as slot buffers, its ring takes 128 KB. The ring starts
/// at [`RING_START`] and doubles (up to [`RING_MAX`]) when a write would cover bytes
/// younger than `max_age`, so a 4 Mbit/s screen share keeps its second too. One packet
/// is one contiguous copy into memory written just before, which also spares the forward
/// path a cold buffer per packet. A slot's bytes are whole while fewer than the ring's
/// size were written after them ([`get`](Self::get) checks it).
#[derive(Debug)]
pub struct PacketCache {
    slots: Box<[Slot]>,
    epoch: u32,
    max_age: Duration,
    /// The ring (empty until the first packet) and its running count of bytes written:
    /// position `p` of that count lies at `ring[p % ring.len()]`.
    ring: Vec<u8>,
    head: u64,
    /// When the ring's last `SEGMENTS` segments (`SEGMENTS` per lap, numbered along the
    /// running count, at their number modulo `SEGMENTS`) were entered: (number, when).
    marks: [Option<(u64, Instant)>; SEGMENTS],
}

impl Default for PacketCache {
    fn default() -> Self {
        Self::new(RetransmitParams::default())
    }
}

impl PacketCache {
    pub fn new(params: RetransmitParams) -> Self {
        Self {
            slots: vec![Slot::default(); CACHE_SLOTS].into_boxed_slice(),
            epoch: 0,
            max_age: params.max_age,
            ring: Vec::new(),
            head: 0,
            marks: [None; SEGMENTS],
        }
    }

    /// A cache whose sequence spaces start at `epoch`: a track with simulcast layers
    /// gives each layer's cache its own top byte, so what a leg recorded names the
    /// layer's cache as well as its sequence space ([`LegHistory::answer_in`]).
    pub fn with_epoch(mut self, epoch: u32) -> Self {
        self.epoch = epoch;
        self
    }

    /// The current sequence space; legs record it with what they sent.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The publisher's stream restarted (new SSRC, another connection): its sequence
    /// numbers start over, so nothing cached can be found by them any more.
    pub fn restart(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
    }

    /// The ring's size in bytes (0 before the first packet).
    #[cfg(test)]
    pub fn ring_size(&self) -> usize {
        self.ring.len()
    }

    fn index(seq: u16) -> usize {
        seq as usize & (CACHE_SLOTS - 1)
    }

    /// Copies a packet in (no allocation unless the ring grows).
    pub fn insert(&mut self, packet: &Packet, now: Instant) -> Insert {
        let h = &packet.header;
        let index = Self::index(h.sequence_number);
        let slot = self.slots[index];
        if slot.filled
            && slot.epoch == self.epoch
            && slot.seq == h.sequence_number
            && slot
                .at
                .is_some_and(|at| now.saturating_duration_since(at) < self.max_age)
        {
            return Insert::Duplicate;
        }
        // The extensions kept: those whose data fits a length octet, at most 255 of them.
        let kept = || {
            h.extensions
                .iter()
                .filter(|e| h.extension && e.payload.len() <= usize::from(u8::MAX))
                .take(usize::from(u8::MAX))
        };
        let (count, ext_data) = kept().fold((0usize, 0usize), |(n, len), e| (n + 1, len + e.payload.len()));
        let ext_len = if count == 0 { 0 } else { 1 + 2 * count + ext_data };
        let payload_len = packet.payload.len();
        let total = ext_len + payload_len;
        let reserved = match (u16::try_from(ext_len), u16::try_from(payload_len)) {
            (Ok(ext_len), Ok(payload_len)) => self.reserve(total, now).map(|start| (start, ext_len, payload_len)),
            _ => None,
        };
        let Some((start, ext_len16, payload_len16)) = reserved else {
            // Larger than any datagram or ring: not cacheable (a NACK for it is unservable).
            self.slots[index].filled = false;
            return Insert::New;
        };
        let size = self.ring.len();
        let at = (start % size as u64) as usize;
        let bytes = &mut self.ring[at..at + total];
        if count > 0 {
            bytes[0] = count as u8;
            let (table, mut data) = bytes[1..ext_len].split_at_mut(2 * count);
            for (pair, e) in table.chunks_exact_mut(2).zip(kept()) {
                pair[0] = e.id;
                pair[1] = e.payload.len() as u8;
                let (this, rest) = data.split_at_mut(e.payload.len());
                this.copy_from_slice(&e.payload);
                data = rest;
            }
        }
        bytes[ext_len..].copy_from_slice(&packet.payload);
        self.slots[index] = Slot {
            filled: true,
            epoch: self.epoch,
            seq: h.sequence_number,
            at: Some(now),
            marker: h.marker,
            payload_type: h.payload_type,
            extension_profile: h.extension_profile,
            start,
            ext_len: ext_len16,
            payload_len: payload_len16,
        };
        Insert::New
    }

    /// Room for `len` bytes: their position in the running count, after the ring grew if
    /// the write would cover bytes younger than `max_age`. `None` if `len` exceeds the
    /// largest ring.
    fn reserve(&mut self, len: usize, now: Instant) -> Option<u64> {
        if len > RING_MAX / SEGMENTS {
            return None;
        }
        if self.ring.is_empty() {
            self.ring = vec![0; RING_START];
        }
        loop {
            let size = self.ring.len() as u64;
            // A packet never straddles the ring's end: it starts the next lap instead.
            let mut start = self.head;
            if start % size + len as u64 > size {
                start = start.next_multiple_of(size);
            }
            let end = start + len as u64;
            if end > size && self.ring.len() < RING_MAX && self.covers_young(end - size, now) {
                self.grow();
                continue;
            }
            self.mark(end, now);
            self.head = end;
            return Some(start);
        }
    }

    fn segment_len(&self) -> u64 {
        (self.ring.len() / SEGMENTS) as u64
    }

    /// Whether bytes written before position `until` of the running count, up to a lap
    /// back, may be younger than `max_age`: the segment after the one holding
    /// `until - 1` was entered less than `max_age` ago (a segment without a mark holds
    /// nothing a slot names).
    fn covers_young(&self, until: u64, now: Instant) -> bool {
        let next = (until - 1) / self.segment_len() + 1;
        self.marks[next as usize % SEGMENTS]
            .is_some_and(|(s, at)| s == next && now.saturating_duration_since(at) < self.max_age)
    }

    /// The writes up to `end` enter the segments after the head's: marked entered now.
    fn mark(&mut self, end: u64, now: Instant) {
        if end <= self.head {
            // Nothing written (an empty packet: no payload, no extensions).
            return;
        }
        let segment = self.segment_len();
        let (from, to) = (self.head.div_ceil(segment), (end - 1) / segment);
        for s in from..=to {
            self.marks[s as usize % SEGMENTS] = Some((s, now));
        }
    }

    /// Doubles the ring, keeping the last lap's bytes at their positions of the running
    /// count (a slot's bytes never straddle a multiple of the old size, hence none of the
    /// new); slots whose bytes were already written over are emptied, as the larger ring
    /// would take them for whole. A segment of the new size (two of the old) holding part
    /// of that lap is marked as entered when the first of its old halves still marked was:
    /// never later than its bytes were written, so nothing young is written over early.
    fn grow(&mut self) {
        let old = std::mem::take(&mut self.ring);
        let (old_size, new_size) = (old.len() as u64, 2 * old.len() as u64);
        self.ring = vec![0; new_size as usize];
        let mut p = self.head.saturating_sub(old_size);
        while p < self.head {
            let (o, n) = ((p % old_size) as usize, (p % new_size) as usize);
            let len = ((self.head - p) as usize).min(old.len() - o).min(self.ring.len() - n);
            self.ring[n..n + len].copy_from_slice(&old[o..o + len]);
            p += len as u64;
        }
        for slot in self
            .slots
            .iter_mut()
            .filter(|s| s.filled && self.head > s.start + old_size)
        {
            slot.filled = false;
        }
        let old_marks = std::mem::replace(&mut self.marks, [None; SEGMENTS]);
        let old_mark = |s: u64| {
            old_marks[s as usize % SEGMENTS]
                .filter(|&(n, _)| n == s)
                .map(|(_, at)| at)
        };
        let new_segment = new_size / SEGMENTS as u64;
        let from = self.head.saturating_sub(old_size) / new_segment;
        for s in from..=(self.head - 1) / new_segment {
            if let Some(at) = old_mark(2 * s).or_else(|| old_mark(2 * s + 1)) {
                self.marks[s as usize % SEGMENTS] = Some((s, at));
            }
        }
    }

    fn get(&self, seq: u16, epoch: u32) -> Option<Cached<'_>> {
        let slot = &self.slots[Self::index(seq)];
        let size = self.ring.len() as u64;
        if !(slot.filled && slot.epoch == epoch && slot.seq == seq) || self.head > slot.start + size {
            return None;
        }
        let at = (slot.start % size) as usize;
        let (ext_len, payload_len) = (usize::from(slot.ext_len), usize::from(slot.payload_len));
        Some(Cached {
            marker: slot.marker,
            payload_type: slot.payload_type,
            extension_profile: slot.extension_profile,
            extensions: &self.ring[at..at + ext_len],
            payload: &self.ring[at + ext_len..at + ext_len + payload_len],
        })
    }
}

/// What one leg sent under one of its sequence numbers: 24 bytes, 512 of them per video
/// leg (it was 56, with two `Option<Instant>`, 28 KB per leg: BENCHMARKS §3).
#[derive(Debug, Clone, Copy, Default)]
struct Sent {
    out_seq: u16,
    /// The publisher's sequence number and sequence space of the packet it carried.
    in_seq: u16,
    /// The timestamp it carried on this leg (legs rewrite timestamps across restarts).
    out_ts: u32,
    epoch: u32,
    /// The VP8 renumbering it was sent with (zero for other codecs), so a resend matches.
    vp8_picture_id: u16,
    vp8_tl0: u8,
    resends: u8,
    /// When it was sent and last resent ([`Clock`] stamps; [`NEVER`] for an empty slot and
    /// for a packet not resent). Only ages up to `max_age` (a second) are asked: an entry
    /// left unwritten for longer than the clock's wrap could read young again, but a NACK
    /// names a packet sent in the last second, which its slot holds (512 slots), and the
    /// packet cache keeps ages of its own.
    at: u32,
    resent: u32,
}

impl Sent {
    fn vp8(&self) -> Offsets {
        Offsets {
            picture_id: self.vp8_picture_id,
            tl0: self.vp8_tl0,
        }
    }
}

/// The answer to one sequence number of a NACK.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Send this (RTX when `rtx`, else the original under the leg's SSRC).
    Resend { packet: Packet, rtx: bool },
    /// Resent less than the guard ago (this NACK repeats one already answered), or
    /// resent `max_resends` times already.
    Suppressed,
    /// Not resendable (too old, overwritten, never sent here). `fresh` when the leg sent
    /// it, never resent it, and it is newer than any unservable packet before: worth a
    /// keyframe request. One the leg resent was most likely repaired (its receiver asks out
    /// of turn); one it never sent was lost before reaching the gateway, whose repair is
    /// forwarded when it comes (`nack` asks the publisher), or never existed.
    Unservable { fresh: bool },
}

/// RTX on one leg: its SSRC and, per payload type of the leg, the RTX payload type
/// the subscriber negotiated for it (`a=fmtp:<rtx> apt=<pt>`).
#[derive(Debug, Clone)]
pub struct Rtx {
    pub ssrc: u32,
    pt: [u8; 128],
    seq: u16,
}

impl Rtx {
    const NONE: u8 = 0xFF;

    /// From the leg's negotiated codecs (payload type, mime type, fmtp); `None` if
    /// none is RTX.
    pub fn negotiated<'a>(ssrc: u32, codecs: impl IntoIterator<Item = (u8, &'a str, &'a str)>) -> Option<Self> {
        let mut pt = [Self::NONE; 128];
        for (rtx_pt, mime, fmtp) in codecs {
            if !mime.eq_ignore_ascii_case("video/rtx") || rtx_pt >= 128 {
                continue;
            }
            let apt = fmtp
                .split(';')
                .filter_map(|kv| kv.trim().strip_prefix("apt="))
                .find_map(|v| v.trim().parse::<u8>().ok());
            if let Some(apt) = apt.filter(|a| *a < 128) {
                pt[apt as usize] = rtx_pt;
            }
        }
        pt.iter().any(|p| *p != Self::NONE).then(|| Self {
            ssrc,
            pt,
            seq: rand::random(),
        })
    }

    fn payload_type(&self, pt: u8) -> Option<u8> {
        let to = *self.pt.get(pt as usize)?;
        (to != Self::NONE).then_some(to)
    }
}

/// What one subscriber leg of a video track sent, for answering its NACKs.
#[derive(Debug)]
pub struct LegHistory {
    entries: Box<[Sent]>,
    clock: Clock,
    params: RetransmitParams,
    /// RTX where the leg negotiated it.
    pub rtx: Option<Rtx>,
    /// The newest unservable sequence number reported so far (one keyframe per loss).
    last_unservable: Option<u16>,
    /// The newest sequence number sent, and how far back the last probe copy went.
    newest: Option<u16>,
    probe_back: u16,
}

impl Default for LegHistory {
    fn default() -> Self {
        Self::new(RetransmitParams::default())
    }
}

impl LegHistory {
    pub fn new(params: RetransmitParams) -> Self {
        Self {
            entries: vec![Sent::default(); HISTORY_SLOTS].into_boxed_slice(),
            clock: Clock::default(),
            params,
            rtx: None,
            last_unservable: None,
            newest: None,
            probe_back: 0,
        }
    }

    fn index(seq: u16) -> usize {
        seq as usize & (HISTORY_SLOTS - 1)
    }

    /// The leg sent `out_seq` with timestamp `out_ts`, carrying the track's packet
    /// `in_seq` of sequence space `epoch`, its VP8 numbers rewritten by `vp8`.
    pub fn sent(&mut self, out_seq: u16, out_ts: u32, in_seq: u16, epoch: u32, vp8: Offsets, now: Instant) {
        if self
            .newest
            .is_none_or(|n| out_seq.wrapping_sub(n).wrapping_sub(1) < 0x8000)
        {
            self.newest = Some(out_seq);
        }
        let at = self.clock.stamp(now);
        self.entries[Self::index(out_seq)] = Sent {
            out_seq,
            in_seq,
            out_ts,
            epoch,
            vp8_picture_id: vp8.picture_id,
            vp8_tl0: vp8.tl0,
            resends: 0,
            at,
            resent: NEVER,
        };
    }

    /// Answers the NACK of one sequence number of this leg, building the packet with
    /// the leg's current tables.
    pub fn answer(&mut self, seq: u16, cache: &PacketCache, leg: &DownLeg, now: Instant) -> Answer {
        self.answer_in(seq, |_| Some(cache), leg, now)
    }

    /// As [`answer`](Self::answer), the packet looked up in the cache `cache_of` names
    /// for the sequence space it was sent from (a leg that switched simulcast layers
    /// sent packets of several caches).
    pub fn answer_in<'c>(
        &mut self,
        seq: u16,
        cache_of: impl Fn(u32) -> Option<&'c PacketCache>,
        leg: &DownLeg,
        now: Instant,
    ) -> Answer {
        let clock = self.clock;
        let e = &mut self.entries[Self::index(seq)];
        let ours = e.at != NEVER && e.out_seq == seq;
        let fresh_enough = ours && clock.age(e.at, now).is_some_and(|age| age < self.params.max_age);
        let cached = if fresh_enough {
            cache_of(e.epoch).and_then(|cache| cache.get(e.in_seq, e.epoch))
        } else {
            None
        };
        let Some(slot) = cached else {
            let fresh = ours
                && e.resends == 0
                && self
                    .last_unservable
                    .is_none_or(|last| seq != last && seq.wrapping_sub(last) < 0x8000);
            if fresh {
                self.last_unservable = Some(seq);
            }
            return Answer::Unservable { fresh };
        };
        if e.resends >= self.params.max_resends
            || clock
                .age(e.resent, now)
                .is_some_and(|age| age < self.params.resend_guard)
        {
            return Answer::Suppressed;
        }
        e.resent = self.clock.stamp(now);
        e.resends += 1;
        let e = *e;
        self.build(&e, slot, leg)
    }

    /// Padding for a bandwidth probe (`probe`): an RTX copy of one of the last few packets
    /// the leg sent and can still build, its subscriber drops it as a duplicate
    /// (RFC 4588). Successive calls go back one packet further each, over up to eight.
    /// Resend counts are untouched; `None` without RTX or without a packet to copy.
    pub fn probe_copy<'c>(
        &mut self,
        cache_of: impl Fn(u32) -> Option<&'c PacketCache>,
        leg: &DownLeg,
        now: Instant,
    ) -> Option<Packet> {
        self.rtx.as_ref()?;
        let newest = self.newest?;
        for step in 0..8u16 {
            let back = (self.probe_back + step) % 8;
            let seq = newest.wrapping_sub(back);
            let e = self.entries[Self::index(seq)];
            let fresh = e.at != NEVER
                && e.out_seq == seq
                && self.clock.age(e.at, now).is_some_and(|age| age < self.params.max_age);
            let Some(slot) = fresh
                .then(|| cache_of(e.epoch).and_then(|c| c.get(e.in_seq, e.epoch)))
                .flatten()
            else {
                continue;
            };
            if let Answer::Resend { packet, rtx: true } = self.build(&e, slot, leg) {
                self.probe_back = (back + 1) % 8;
                return Some(packet);
            }
        }
        None
    }

    /// The retransmission of what entry `e` sent, its payload in `slot`: RTX where the
    /// leg negotiated it for the payload type, else the original under the leg's SSRC.
    fn build(&mut self, e: &Sent, slot: Cached<'_>, leg: &DownLeg) -> Answer {
        let seq = e.out_seq;
        let mut header = Header {
            version: 2,
            marker: slot.marker,
            payload_type: slot.payload_type,
            sequence_number: seq,
            timestamp: e.out_ts,
            ssrc: leg.ssrc,
            ..Default::default()
        };
        if !slot.extensions.is_empty() {
            header.extension = true;
            header.extension_profile = slot.extension_profile;
            for (id, data) in slot.extensions() {
                header.extensions.push(Extension {
                    id,
                    payload: Bytes::copy_from_slice(data),
                });
            }
            leg.ext_map.apply(&mut header);
        }
        header.payload_type = leg.pt_map.get(slot.payload_type).unwrap_or(slot.payload_type);
        let rtx = self
            .rtx
            .as_mut()
            .and_then(|r| r.payload_type(header.payload_type).map(|pt| (r, pt)));
        let vp8 = e.vp8();
        let Some((rtx, rtx_pt)) = rtx else {
            let mut payload = BytesMut::from(slot.payload);
            if !vp8.is_zero() {
                vp8.apply(&mut payload);
            }
            return Answer::Resend {
                packet: Packet {
                    header,
                    payload: payload.freeze(),
                },
                rtx: false,
            };
        };
        // RFC 4588 §4: the RTX stream's own SSRC, payload type and sequence numbers;
        // the payload starts with the original sequence number (OSN).
        header.ssrc = rtx.ssrc;
        header.payload_type = rtx_pt;
        header.sequence_number = rtx.seq;
        rtx.seq = rtx.seq.wrapping_add(1);
        let mut payload = Vec::with_capacity(2 + slot.payload.len());
        payload.extend_from_slice(&seq.to_be_bytes());
        payload.extend_from_slice(slot.payload);
        if !vp8.is_zero() {
            vp8.apply(&mut payload[2..]);
        }
        Answer::Resend {
            packet: Packet {
                header,
                payload: payload.into(),
            },
            rtx: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sfu::forward::{CodecKey, ExtMap, PtMap};

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn a_sent_entry_is_24_bytes() {
        assert_eq!(std::mem::size_of::<Sent>(), 24);
    }

    fn packet(seq: u16, payload: &[u8]) -> Packet {
        Packet {
            header: Header {
                version: 2,
                marker: seq.is_multiple_of(3),
                payload_type: 96,
                sequence_number: seq,
                timestamp: 1000 + u32::from(seq),
                ssrc: 0xAAAA,
                ..Default::default()
            },
            payload: Bytes::copy_from_slice(payload),
        }
    }

    /// A leg mapping the publisher's VP8 (96) to the subscriber's (100), and the
    /// video-orientation extension from id 4 to id 7.
    fn leg() -> DownLeg {
        let mut leg = DownLeg::new(0xBBBB);
        let key = |payload_type| CodecKey {
            payload_type,
            mime_type: "video/VP8",
            clock_rate: 90_000,
            fmtp: "",
        };
        leg.pt_map = PtMap::by_codec([key(96)], [key(100)]);
        leg.ext_map = ExtMap::by_uri([("urn:3gpp:video-orientation", 4)], [("urn:3gpp:video-orientation", 7)]);
        leg
    }

    fn resent(a: Answer) -> (Packet, bool) {
        match a {
            Answer::Resend { packet, rtx } => (packet, rtx),
            other => panic!("expected a resend, got {other:?}"),
        }
    }

    /// Forwards `seqs` through cache and history as the media room does, with the
    /// leg's own sequence numbers starting at 5000.
    fn sent(seqs: impl IntoIterator<Item = u16>, now: Instant) -> (PacketCache, LegHistory) {
        let mut cache = PacketCache::default();
        let mut history = LegHistory::default();
        for seq in seqs {
            assert_eq!(cache.insert(&packet(seq, &[seq as u8; 3]), now), Insert::New);
            history.sent(
                seq.wrapping_add(5000),
                1000 + u32::from(seq),
                seq,
                cache.epoch(),
                Offsets::ZERO,
                now,
            );
        }
        (cache, history)
    }

    #[test]
    fn a_nack_is_answered_with_the_packet_as_the_leg_sent_it() {
        let t0 = Instant::now();
        let (mut cache, mut history) = sent(0..10, t0);
        let mut with_ext = packet(10, b"keyframe-end");
        with_ext.header.extension = true;
        with_ext.header.extension_profile = 0xBEDE;
        with_ext.header.extensions = vec![
            Extension {
                id: 4,
                payload: Bytes::from_static(&[3]),
            },
            Extension {
                id: 9, // not negotiated on the leg: stripped
                payload: Bytes::from_static(&[1, 2]),
            },
        ];
        cache.insert(&with_ext, t0);
        history.sent(5010, 1010, 10, cache.epoch(), Offsets::ZERO, t0);
        let leg = leg();
        let (p, rtx) = resent(history.answer(5003, &cache, &leg, t0 + MS(30)));
        assert!(!rtx, "no RTX negotiated");
        assert_eq!(
            (p.header.ssrc, p.header.payload_type, p.header.sequence_number),
            (0xBBBB, 100, 5003)
        );
        assert_eq!((p.header.timestamp, p.header.marker), (1003, true));
        assert_eq!(&p.payload[..], &[3, 3, 3]);
        assert!(!p.header.extension);
        let (p, _) = resent(history.answer(5010, &cache, &leg, t0 + MS(30)));
        assert_eq!(&p.payload[..], b"keyframe-end");
        assert_eq!(p.header.extensions.len(), 1);
        assert_eq!(
            (p.header.extensions[0].id, &p.header.extensions[0].payload[..]),
            (7, &[3][..])
        );
    }

    #[test]
    fn a_resend_carries_the_vp8_numbers_the_leg_sent_plain_and_as_rtx() {
        let t0 = Instant::now();
        let mut cache = PacketCache::default();
        let mut history = LegHistory::default();
        // Picture id 0x0105, TL0PICIDX 9, sent renumbered to 0x0100 and 4.
        let vp8 = [0x90, 0xC0, 0x81, 0x05, 9, 0x01, 0xAA];
        cache.insert(&packet(7, &vp8), t0);
        let offsets = Offsets { picture_id: 5, tl0: 5 };
        history.sent(5007, 1007, 7, cache.epoch(), offsets, t0);
        let leg = leg();
        let (p, _) = resent(history.answer(5007, &cache, &leg, t0 + MS(30)));
        assert_eq!(&p.payload[..], &[0x90, 0xC0, 0x81, 0x00, 4, 0x01, 0xAA]);
        history.rtx = Rtx::negotiated(0xCCCC, [(100, "video/VP8", ""), (101, "video/rtx", "apt=100")]);
        let (p, rtx) = resent(history.answer(5007, &cache, &leg, t0 + MS(300)));
        assert!(rtx);
        assert_eq!(&p.payload[..], &[0x13, 0x8F, 0x90, 0xC0, 0x81, 0x00, 4, 0x01, 0xAA]);
        // The cache keeps the publisher's numbers.
        assert_eq!(cache.get(7, cache.epoch()).unwrap().payload, &vp8);
    }

    #[test]
    fn rtx_where_negotiated_with_its_own_sequence_numbers_and_the_osn() {
        let t0 = Instant::now();
        let (cache, mut history) = sent(0..10, t0);
        let codecs = [
            (100, "video/VP8", ""),
            (101, "video/rtx", "apt=100"),
            (103, "video/rtx", "apt=102"),
        ];
        history.rtx = Rtx::negotiated(0xCCCC, codecs);
        let first_rtx_seq = history.rtx.as_ref().unwrap().seq;
        let leg = leg();
        let (a, rtx) = resent(history.answer(5002, &cache, &leg, t0));
        let (b, _) = resent(history.answer(5004, &cache, &leg, t0));
        assert!(rtx);
        assert_eq!((a.header.ssrc, a.header.payload_type), (0xCCCC, 101));
        assert_eq!(a.header.sequence_number, first_rtx_seq);
        assert_eq!(b.header.sequence_number, first_rtx_seq.wrapping_add(1));
        assert_eq!(&a.payload[..], &[0x13, 0x8A, 2, 2, 2], "OSN 5002 then the payload");
        assert_eq!(a.header.timestamp, 1002);
        assert!(Rtx::negotiated(1, [(100, "video/VP8", "")]).is_none());
        assert!(Rtx::negotiated(1, [(101, "video/rtx", "apt=x")]).is_none());
        assert!(Rtx::negotiated(1, [(101, "video/rtx", "rtx-time=3000;apt=100")]).is_some());
    }

    #[test]
    fn probe_copies_go_back_over_the_last_packets_as_rtx_and_leave_nacks_answerable() {
        let t0 = Instant::now();
        let (cache, mut history) = sent(0..20, t0);
        let leg = leg();
        assert_eq!(
            history.probe_copy(|_| Some(&cache), &leg, t0),
            None,
            "no RTX: no padding"
        );
        history.rtx = Rtx::negotiated(0xCCCC, [(100, "video/VP8", ""), (101, "video/rtx", "apt=100")]);
        let first = history.rtx.as_ref().unwrap().seq;
        let osns: Vec<u16> = (0..10)
            .map(|i| {
                let p = history.probe_copy(|_| Some(&cache), &leg, t0).expect("a copy");
                assert_eq!((p.header.ssrc, p.header.payload_type), (0xCCCC, 101));
                assert_eq!(p.header.sequence_number, first.wrapping_add(i));
                u16::from_be_bytes([p.payload[0], p.payload[1]])
            })
            .collect();
        // The newest (5019) back over eight, then again.
        assert_eq!(osns, [5019, 5018, 5017, 5016, 5015, 5014, 5013, 5012, 5019, 5018]);
        // Padding is no resend: a NACK of a copied packet is answered, as often as before.
        for i in 1..=3 {
            let (p, rtx) = resent(history.answer(5019, &cache, &leg, t0 + MS(100 * i)));
            assert!(rtx && p.payload[..2] == [0x13, 0x9B]);
        }
        assert_eq!(
            history.answer(5019, &cache, &leg, t0 + MS(400)),
            Answer::Suppressed,
            "max_resends"
        );
        // Too old for the cache's age: nothing to copy.
        assert_eq!(history.probe_copy(|_| Some(&cache), &leg, t0 + MS(1000)), None);
    }

    #[test]
    fn repeats_within_the_guard_are_answered_once() {
        let t0 = Instant::now();
        let (cache, mut history) = sent(0..10, t0);
        let leg = leg();
        assert!(matches!(history.answer(5001, &cache, &leg, t0), Answer::Resend { .. }));
        assert_eq!(history.answer(5001, &cache, &leg, t0 + MS(49)), Answer::Suppressed);
        assert!(matches!(
            history.answer(5001, &cache, &leg, t0 + MS(50)),
            Answer::Resend { .. }
        ));
        assert!(matches!(
            history.answer(5002, &cache, &leg, t0 + MS(50)),
            Answer::Resend { .. }
        ));
        assert!(matches!(
            history.answer(5001, &cache, &leg, t0 + MS(100)),
            Answer::Resend { .. }
        ));
        assert_eq!(
            history.answer(5001, &cache, &leg, t0 + MS(200)),
            Answer::Suppressed,
            "three resends at most"
        );
        assert_eq!(
            history.answer(5001, &cache, &leg, t0 + Duration::from_secs(1)),
            Answer::Unservable { fresh: false },
            "asked again a second later: it was resent, so no keyframe for it"
        );
    }

    #[test]
    fn old_overwritten_or_never_sent_packets_are_unservable_and_reported_once() {
        let t0 = Instant::now();
        let (mut cache, mut history) = sent(0..10, t0);
        let leg = leg();
        assert_eq!(
            history.answer(5005, &cache, &leg, t0 + Duration::from_secs(1)),
            Answer::Unservable { fresh: true },
            "too old"
        );
        assert_eq!(
            history.answer(5004, &cache, &leg, t0 + Duration::from_secs(1)),
            Answer::Unservable { fresh: false },
            "older than one reported: no second keyframe"
        );
        assert_eq!(
            history.answer(6000, &cache, &leg, t0),
            Answer::Unservable { fresh: false },
            "never sent on this leg: lost before the gateway (its repair is forwarded), no keyframe"
        );
        // The cache slot of 3 is overwritten by 3 + 512 (the leg never sent that one).
        cache.insert(&packet(3 + CACHE_SLOTS as u16, b"new"), t0);
        assert_eq!(
            history.answer(5003, &cache, &leg, t0),
            Answer::Unservable { fresh: false }
        );
        // A restarted stream's cache no longer answers for the old sequence space.
        let t1 = t0 + MS(10);
        let (mut cache, mut history) = sent(0..10, t1);
        cache.restart();
        cache.insert(&packet(7, b"other stream"), t1);
        assert_eq!(
            history.answer(5007, &cache, &leg, t1),
            Answer::Unservable { fresh: true }
        );
    }

    #[test]
    fn the_cache_drops_duplicates_and_wraps() {
        let t0 = Instant::now();
        let mut cache = PacketCache::default();
        assert_eq!(cache.insert(&packet(65535, b"a"), t0), Insert::New);
        assert_eq!(cache.insert(&packet(65535, b"a"), t0 + MS(5)), Insert::Duplicate);
        assert_eq!(
            cache.insert(&packet(65535, b"a"), t0 + Duration::from_secs(2)),
            Insert::New,
            "a second later it cannot be the same packet"
        );
        cache.restart();
        assert_eq!(
            cache.insert(&packet(65535, b"a"), t0 + Duration::from_secs(2)),
            Insert::New
        );
        let mut history = LegHistory::default();
        history.sent(0, 7, 65535, cache.epoch(), Offsets::ZERO, t0 + Duration::from_secs(2));
        assert!(matches!(
            history.answer(0, &cache, &leg(), t0 + Duration::from_secs(2)),
            Answer::Resend { .. }
        ));
    }

    /// A payload of `len` bytes that names its sequence number throughout.
    fn marked(seq: u16, len: usize) -> Vec<u8> {
        (0..len).map(|i| (seq as usize * 7 + i) as u8).collect()
    }

    /// `n` packets of `len` bytes from sequence number `first`, `gap` apart from `t0`.
    fn stream(cache: &mut PacketCache, first: u16, n: usize, len: usize, t0: Instant, gap: Duration) -> Instant {
        let mut at = t0;
        for i in 0..n {
            let seq = first.wrapping_add(i as u16);
            at = t0 + gap * i as u32;
            assert_eq!(cache.insert(&packet(seq, &marked(seq, len)), at), Insert::New);
        }
        at
    }

    /// Whether `seq` is cached whole (its own bytes, never another packet's).
    fn whole(cache: &PacketCache, seq: u16, len: usize) -> Option<bool> {
        cache
            .get(seq, cache.epoch())
            .map(|c| c.payload == &marked(seq, len)[..])
    }

    #[test]
    fn the_cache_allocates_nothing_once_warm() {
        let t0 = Instant::now();
        let mut cache = PacketCache::default();
        // 1.5 Mbit/s of 1 200-byte packets (156 a second) for five seconds: the ring finds its size.
        let gap = Duration::from_micros(6_400);
        let last = stream(&mut cache, 0, 780, 1200, t0, gap);
        let (size, ring) = (cache.ring_size(), cache.ring.as_ptr());
        stream(&mut cache, 780, 3 * CACHE_SLOTS, 1000, last + gap, gap);
        assert_eq!(
            (cache.ring_size(), cache.ring.as_ptr()),
            (size, ring),
            "no growth, no reallocation"
        );
    }

    #[test]
    fn a_camera_keeps_a_small_ring_and_its_last_second_whole() {
        let t0 = Instant::now();
        let mut cache = PacketCache::default();
        // 500 kbit/s: 52 packets of 1 200 bytes a second, for 20 s.
        let n = 52 * 20;
        stream(&mut cache, 0, n, 1200, t0, Duration::from_micros(19_230));
        assert!(cache.ring_size() <= 128 * 1024, "ring {}", cache.ring_size());
        for seq in (n - 52)..n {
            assert_eq!(whole(&cache, seq as u16, 1200), Some(true), "seq {seq}");
        }
    }

    #[test]
    fn a_fast_screen_share_grows_the_ring_to_keep_its_second() {
        let t0 = Instant::now();
        let mut cache = PacketCache::default();
        // 4 Mbit/s: 417 packets of 1 200 bytes a second, for 3 s.
        let n = 417 * 3;
        stream(&mut cache, 0, n, 1200, t0, Duration::from_micros(2_400));
        assert!(
            (512 * 1024..=2 * 1024 * 1024).contains(&cache.ring_size()),
            "ring {}",
            cache.ring_size()
        );
        // The slots hold the last 512 sequence numbers; every one of the last second is whole.
        for seq in (n - 417)..n {
            assert_eq!(whole(&cache, seq as u16, 1200), Some(true), "seq {seq}");
        }
    }

    #[test]
    fn bytes_written_over_are_never_served() {
        let t0 = Instant::now();
        // Packets older than 10 ms are not worth keeping: the ring stays at its first size.
        let mut cache = PacketCache::new(RetransmitParams {
            max_age: MS(10),
            ..RetransmitParams::default()
        });
        stream(&mut cache, 0, 400, 1000, t0, MS(20));
        assert_eq!(cache.ring_size(), RING_START);
        // A lap holds 65 of them whole (65 000 bytes; the rest of the lap is skipped, as a
        // packet never straddles the ring's end), 66 when the oldest starts a lap.
        let lap = RING_START / 1000;
        for seq in 0..400u16 {
            let got = whole(&cache, seq, 1000);
            assert_ne!(got, Some(false), "seq {seq}: another packet's bytes");
            if usize::from(seq) >= 400 - lap {
                assert_eq!(got, Some(true), "seq {seq}");
            } else if usize::from(seq) < 400 - lap - 1 {
                assert_eq!(got, None, "seq {seq}");
            }
        }
    }

    #[test]
    fn growing_keeps_the_last_lap_and_never_revives_what_was_written_over() {
        let t0 = Instant::now();
        let mut cache = PacketCache::default();
        // Two laps of the first ring at 20 kB/s (a lap is 3.3 s: nothing young is written
        // over), then 100 packets at one instant: the ring grows.
        let slow = stream(&mut cache, 0, 131, 1000, t0, MS(50));
        assert_eq!(cache.ring_size(), RING_START);
        assert_eq!(whole(&cache, 50, 1000), None, "written over in the first ring");
        stream(&mut cache, 131, 100, 1000, slow + MS(50), Duration::ZERO);
        assert!(cache.ring_size() > RING_START);
        for seq in 0..231u16 {
            let got = whole(&cache, seq, 1000);
            assert_ne!(got, Some(false), "seq {seq}: another packet's bytes");
            // The first ring held the 65 or 66 packets before the burst's first 39 when it grew.
            if seq < 100 {
                assert_eq!(got, None, "seq {seq}: written over before the ring grew");
            }
            if seq >= 110 {
                assert_eq!(got, Some(true), "seq {seq}");
            }
        }
    }

    #[test]
    fn an_empty_packet_is_cached_first_or_later() {
        let t0 = Instant::now();
        let mut cache = PacketCache::default();
        // Padding only: no payload, no extensions (the first packet, then one among others).
        assert_eq!(cache.insert(&packet(1, &[]), t0), Insert::New);
        assert_eq!(whole(&cache, 1, 0), Some(true));
        stream(&mut cache, 2, 3, 500, t0, MS(20));
        assert_eq!(cache.insert(&packet(5, &[]), t0 + MS(60)), Insert::New);
        assert_eq!(cache.insert(&packet(5, &[]), t0 + MS(61)), Insert::Duplicate);
        assert_eq!((whole(&cache, 4, 500), whole(&cache, 5, 0)), (Some(true), Some(true)));
    }

    #[test]
    fn a_packet_too_large_for_any_ring_is_not_cached_but_forwarded() {
        let t0 = Instant::now();
        let mut cache = PacketCache::default();
        assert_eq!(cache.insert(&packet(1, &[1; 100]), t0), Insert::New);
        assert_eq!(
            cache.insert(&packet(1 + CACHE_SLOTS as u16, &vec![2; 70_000]), t0),
            Insert::New
        );
        assert_eq!(
            cache.get(1, cache.epoch()).map(|c| c.payload.len()),
            None,
            "its slot emptied"
        );
        assert!(cache.get(1 + CACHE_SLOTS as u16, cache.epoch()).is_none());
    }
}
