//! Per-packet forwarding decisions, pure: what a subscriber leg must change in
//! a publisher's RTP header before `write_rtp` accepts it, whether a paused leg
//! gets the packet at all, and when a keyframe may be asked for again.
//!
//! `rtc`'s `write_rtp` rejects rather than rewrites: the SSRC must be the leg's
//! own, the payload type one negotiated on that leg, and every header-extension
//! id negotiated there too. A [`DownLeg`] holds the tables for one subscriber
//! leg (built once per negotiation) and applies them in place, allocation-free.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::rtp::Packet;
use rtc::rtp::header::{EXTENSION_PROFILE_ONE_BYTE, EXTENSION_PROFILE_TWO_BYTE, Header};

use super::temporal::{TemporalFilter, Verdict};
use super::vp8::{Offsets, Temporal, Vp8Rewriter};

/// Header extensions that describe one leg's transport and must never cross to another.
const PER_LEG_EXTENSIONS: &[&str] = &[
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    "urn:ietf:params:rtp-hdrext:sdes:mid",
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
];

/// Which extensions survive from one leg to another, and under which ids.
#[derive(Clone)]
pub struct ExtMap {
    /// Indexed by the publisher's id; 0 means "strip".
    to: [u8; 256],
}

impl std::fmt::Debug for ExtMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pairs: Vec<(usize, u8)> = self
            .to
            .iter()
            .enumerate()
            .filter(|(_, t)| **t != 0)
            .map(|(i, t)| (i, *t))
            .collect();
        f.debug_struct("ExtMap").field("to", &pairs).finish()
    }
}

impl Default for ExtMap {
    fn default() -> Self {
        Self { to: [0; 256] }
    }
}

impl ExtMap {
    /// Matches extensions by URI: `from` is the publisher leg's (uri, id) list,
    /// `to` the subscriber leg's. Per-leg extensions (TWCC, MID, RID) are never carried.
    pub fn by_uri<'a>(
        from: impl IntoIterator<Item = (&'a str, u16)>,
        to: impl IntoIterator<Item = (&'a str, u16)> + Clone,
    ) -> Self {
        let mut map = Self::default();
        for (uri, from_id) in from {
            if PER_LEG_EXTENSIONS.contains(&uri) || !(1..=255).contains(&from_id) {
                continue;
            }
            if let Some((_, to_id)) = to.clone().into_iter().find(|(u, _)| *u == uri)
                && (1..=255).contains(&to_id)
            {
                map.to[from_id as usize] = to_id as u8;
            }
        }
        map
    }

    /// Whether any of the header's extensions survives onto the other leg.
    pub fn keeps_any(&self, header: &Header) -> bool {
        header.extension
            && (header.extension_profile == EXTENSION_PROFILE_ONE_BYTE
                || header.extension_profile == EXTENSION_PROFILE_TWO_BYTE)
            && header.extensions.iter().any(|e| self.to[e.id as usize] != 0)
    }

    /// Rewrites the header's extensions in place: remap kept ids, drop the rest.
    ///
    /// When everything is dropped all four extension fields are reset (a stale
    /// `extensions_padding` makes SRTP fail later with a size mismatch; see the notes).
    pub fn apply(&self, header: &mut Header) {
        if !header.extension {
            return;
        }
        let profile = header.extension_profile;
        if profile != EXTENSION_PROFILE_ONE_BYTE && profile != EXTENSION_PROFILE_TWO_BYTE {
            header.extensions.clear();
        } else {
            header.extensions.retain_mut(|ext| {
                let to = self.to[ext.id as usize];
                // one-byte form carries ids 1..=14 and payloads of 1..=16 bytes only
                if to == 0 || (profile == EXTENSION_PROFILE_ONE_BYTE && to > 14) {
                    return false;
                }
                ext.id = to;
                true
            });
        }
        // Padding is recomputed by the marshaller from the payload length.
        header.extensions_padding = 0;
        if header.extensions.is_empty() {
            header.extension = false;
            header.extension_profile = 0;
        }
    }
}

/// Publisher payload type -> subscriber payload type, `NONE` for "not negotiated".
#[derive(Clone)]
pub struct PtMap {
    to: [u8; 128],
}

impl std::fmt::Debug for PtMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pairs: Vec<(usize, u8)> = self
            .to
            .iter()
            .enumerate()
            .filter(|(_, t)| **t != PtMap::NONE)
            .map(|(i, t)| (i, *t))
            .collect();
        f.debug_struct("PtMap").field("to", &pairs).finish()
    }
}

impl Default for PtMap {
    fn default() -> Self {
        Self { to: [Self::NONE; 128] }
    }
}

/// A codec as both legs describe it, for matching.
#[derive(Debug, Clone, Copy)]
pub struct CodecKey<'a> {
    pub payload_type: u8,
    pub mime_type: &'a str,
    pub clock_rate: u32,
    pub fmtp: &'a str,
}

impl PtMap {
    const NONE: u8 = 0xFF;

    /// Matches each publisher codec to the subscriber leg's: same mime type and
    /// clock rate, preferring an identical fmtp line (H.264 profiles differ there).
    pub fn by_codec<'a>(
        from: impl IntoIterator<Item = CodecKey<'a>>,
        to: impl IntoIterator<Item = CodecKey<'a>> + Clone,
    ) -> Self {
        let mut map = Self::default();
        for f in from {
            if f.payload_type >= 128 {
                continue;
            }
            let same = |t: &CodecKey<'_>| t.mime_type.eq_ignore_ascii_case(f.mime_type) && t.clock_rate == f.clock_rate;
            let exact = to.clone().into_iter().find(|t| same(t) && t.fmtp == f.fmtp);
            let loose = || to.clone().into_iter().find(|t| same(t));
            if let Some(t) = exact.or_else(loose)
                && t.payload_type < 128
            {
                map.to[f.payload_type as usize] = t.payload_type;
            }
        }
        map
    }

    pub fn get(&self, pt: u8) -> Option<u8> {
        let to = *self.to.get(pt as usize)?;
        (to != Self::NONE).then_some(to)
    }

    pub fn is_empty(&self) -> bool {
        self.to.iter().all(|t| *t == Self::NONE)
    }
}

/// How many runs of dropped padding a leg remembers, to number a late packet (a
/// retransmission) from before them as it would have been numbered then.
pub const SEQ_DROP_RUNS: usize = 16;

/// Keeps a leg's sequence numbers contiguous across pauses and dropped padding, so a
/// subscriber never sees (and NACKs) the packets it was deliberately not sent.
///
/// Padding-only packets (a publisher's bandwidth probes: Chromium sends them on a
/// simulcast layer's own SSRC when it has no RTX) are the publisher's business, not the
/// subscriber's: [`skip`](Self::skip) drops one that is the newest so far and closes its
/// gap, later packets numbered one lower. A packet arriving late from before such a drop
/// is numbered with the offset that held before it (the runs of drops are remembered,
/// up to [`SEQ_DROP_RUNS`]), so it lands in the slot the subscriber is missing.
#[derive(Debug, Clone, Default)]
pub struct SeqRewriter {
    /// in - out, for packets newer than the last drop.
    offset: u16,
    /// The last sequence number this leg emitted.
    last_out: Option<u16>,
    /// The next packet starts a new run (first packet, or after a resume).
    resync: bool,
    /// The newest input sequence number of this run, and whether it was dropped.
    highest_in: Option<(u16, bool)>,
    /// Runs of dropped packets in this run, oldest first: (first input dropped, the
    /// offset that held before it). Fixed size: the hot path allocates nothing.
    drops: [(u16, u16); SEQ_DROP_RUNS],
    drop_runs: usize,
}

/// Whether `a` comes after `b` in RTP modular order.
fn seq_after(a: u16, b: u16) -> bool {
    (a.wrapping_sub(b) as i16) > 0
}

impl SeqRewriter {
    pub fn new() -> Self {
        Self {
            resync: true,
            ..Self::default()
        }
    }

    /// The next packet to pass starts a new run right after the last one sent.
    pub fn resync(&mut self) {
        self.resync = true;
    }

    /// The offset for input `seq`: the current one, unless it is older than a remembered
    /// run of drops, then the one that held before the oldest such run.
    fn offset_for(&self, seq: u16) -> u16 {
        let runs = &self.drops[..self.drop_runs];
        match runs.last() {
            Some((first, _)) if !seq_after(seq, *first) => runs
                .iter()
                .find(|(first, _)| !seq_after(seq, *first))
                .map_or(self.offset, |(_, before)| *before),
            _ => self.offset,
        }
    }

    pub fn rewrite(&mut self, seq: u16) -> u16 {
        if self.resync {
            self.resync = false;
            self.offset = match self.last_out {
                Some(last) => seq.wrapping_sub(last.wrapping_add(1)),
                None => 0,
            };
            self.drop_runs = 0;
            self.highest_in = None;
        }
        let out = seq.wrapping_sub(self.offset_for(seq));
        if self.highest_in.is_none_or(|(h, _)| seq_after(seq, h)) {
            self.highest_in = Some((seq, false));
        }
        // Track the highest (in RTP modular order) sequence emitted.
        match self.last_out {
            Some(last) if (out.wrapping_sub(last) as i16) <= 0 => {}
            _ => self.last_out = Some(out),
        }
        out
    }

    /// A packet this leg need not send (padding only): true if it is dropped, its
    /// number given to the next packet; false if it must go out all the same (it came
    /// late, after newer packets were numbered around it).
    pub fn skip(&mut self, seq: u16) -> bool {
        if self.resync {
            // Nothing numbered in this run yet: the run starts with the next real packet.
            return true;
        }
        let Some((highest, dropped)) = self.highest_in else {
            return true;
        };
        if !seq_after(seq, highest) {
            return false;
        }
        let extends_run = dropped && seq == highest.wrapping_add(1) && self.drop_runs > 0;
        if !extends_run {
            if self.drop_runs == SEQ_DROP_RUNS {
                self.drops.copy_within(1.., 0);
                self.drop_runs -= 1;
            }
            self.drops[self.drop_runs] = (seq, self.offset);
            self.drop_runs += 1;
        }
        self.offset = self.offset.wrapping_add(1);
        self.highest_in = Some((seq, true));
        true
    }
}

/// Keeps a leg's RTP timestamps moving forward when its source restarts (a new
/// SSRC on the same mid, or a parked track adopted by the publisher's new
/// connection): the new source's timeline starts at a random base, and a
/// receiver that sees timestamps jump back (in RTP modular order) takes every
/// later frame for one older than the last it decoded and drops it (libwebrtc's
/// frame buffer does), so video never shows again. Between restarts the
/// timestamps pass with one constant offset (zero until the first restart).
#[derive(Debug, Clone, Default)]
pub struct TsRewriter {
    /// in - out.
    offset: u32,
    /// The highest timestamp (in RTP modular order) this leg emitted.
    last_out: Option<u32>,
    /// The next packet starts a new timeline this many ticks after `last_out`.
    resync: Option<u32>,
}

impl TsRewriter {
    /// The next packet starts a new source's timeline, `gap` clock ticks after the
    /// last timestamp sent (at least one tick, so it is never taken for the same frame).
    pub fn resync(&mut self, gap: u32) {
        self.resync = Some(gap.max(1));
    }

    pub fn rewrite(&mut self, ts: u32) -> u32 {
        if let Some(gap) = self.resync.take()
            && let Some(last) = self.last_out
        {
            self.offset = ts.wrapping_sub(last.wrapping_add(gap));
        }
        let out = ts.wrapping_sub(self.offset);
        match self.last_out {
            Some(last) if (out.wrapping_sub(last) as i32) <= 0 => {}
            _ => self.last_out = Some(out),
        }
        out
    }
}

/// Why a leg skipped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The subscriber paused this track.
    Paused,
    /// The packet's payload type has no counterpart on this leg (e.g. RTX, RED).
    UnmappedPayloadType,
}

/// One subscriber's leg of one published track.
#[derive(Debug, Clone)]
pub struct DownLeg {
    /// The SSRC of the subscriber-side local track.
    pub ssrc: u32,
    pub pt_map: PtMap,
    pub ext_map: ExtMap,
    paused: bool,
    seq: SeqRewriter,
    ts: TsRewriter,
    vp8: Vp8Rewriter,
    /// Its temporal cap ([`super::temporal`]), and the picture id shift of the packet it
    /// let through last.
    temporal: TemporalFilter,
    shift: u16,
    /// Where rewritten VP8 payloads are cut from ([`rewrite_vp8`](Self::rewrite_vp8)).
    pool: BytesMut,
}

/// The buffer a leg cuts its rewritten payloads from: about a dozen full-size packets (kept
/// per leg that ever rewrote, so small: 16 MiB for a thousand such legs).
pub const PAYLOAD_POOL: usize = 16 * 1024;

impl DownLeg {
    pub fn new(ssrc: u32) -> Self {
        Self {
            ssrc,
            pt_map: PtMap::default(),
            ext_map: ExtMap::default(),
            paused: false,
            seq: SeqRewriter::new(),
            ts: TsRewriter::default(),
            vp8: Vp8Rewriter::default(),
            temporal: TemporalFilter::default(),
            shift: 0,
            pool: BytesMut::new(),
        }
    }

    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Pauses or resumes. Returns true when this resumed a paused leg (time to
    /// ask for a keyframe).
    pub fn set_paused(&mut self, paused: bool) -> bool {
        let resumed = self.paused && !paused;
        if resumed {
            self.seq.resync();
        }
        self.paused = paused;
        resumed
    }

    /// The publisher's stream restarted (new SSRC, new sequence space, new
    /// timeline) `gap` clock ticks after its last packet: the next packet
    /// continues this leg's sequence numbers, and its timestamps that much later.
    pub fn restart(&mut self, gap: u32) {
        self.seq.resync();
        self.ts.resync(gap);
        self.vp8.resync();
        self.temporal.reset();
        self.shift = 0;
    }

    /// The temporal cap asked for ([`super::temporal::ALL`]: none) and the one in force.
    pub fn temporal_cap(&self) -> (u8, u8) {
        (self.temporal.target(), self.temporal.cap())
    }

    /// Asks for a temporal cap; it takes effect at the next safe point.
    pub fn set_temporal_cap(&mut self, cap: u8) {
        self.temporal.set_target(cap);
    }

    /// For a VP8 track, before [`copy_into`](Self::copy_into): whether the packet (with
    /// temporal info `t`, sequence number `seq`) goes out under the leg's temporal cap. A
    /// dropped packet's sequence number is closed up ([`SeqRewriter::skip`]); one whose slot
    /// already passed (it came late) goes out all the same, so the subscriber has nothing
    /// to NACK. Remembers the picture id shift for [`rewrite_vp8`](Self::rewrite_vp8).
    pub fn temporal_pass(&mut self, t: Option<Temporal>, keyframe: bool, seq: u16) -> bool {
        match self.temporal.decide(t, keyframe) {
            Verdict::Forward { shift } => {
                self.shift = shift;
                true
            }
            Verdict::Drop { shift } => {
                self.shift = shift;
                !self.seq.skip(seq)
            }
        }
    }

    /// For a VP8 track: renumbers the picture id and TL0PICIDX of a copy's payload so they
    /// run on across this leg's switches and restarts ([`super::vp8`]). A leg whose offsets
    /// are zero (it never switched) keeps sharing the publisher's payload; otherwise the
    /// copy gets its own, cut from the leg's [`PAYLOAD_POOL`]-sized buffer: once the copies
    /// cut before it have been sent and dropped, the buffer is reused, so a leg that switched
    /// or leaves out temporal layers does not allocate per packet. Returns the offsets, for
    /// rewriting a retransmission the same way.
    pub fn rewrite_vp8(&mut self, payload: &mut Bytes) -> Offsets {
        let offsets = self.vp8.offsets_shifted(payload, self.shift);
        if !offsets.is_zero() {
            // Out of room: reclaims the whole buffer in place when nothing cut from it is alive
            // any more, else (copies still queued) takes a new one.
            if self.pool.capacity() < payload.len() {
                self.pool.reserve(payload.len().max(PAYLOAD_POOL));
            }
            self.pool.extend_from_slice(payload);
            offsets.apply(&mut self.pool);
            *payload = self.pool.split().freeze();
        }
        offsets
    }

    /// A padding-only packet this leg accepts: true if it is dropped and its sequence
    /// number closed up ([`SeqRewriter::skip`]), false if it must be sent all the same.
    pub fn skip_padding(&mut self, seq: u16) -> bool {
        self.seq.skip(seq)
    }

    /// Decides whether the packet goes out on this leg, checking without
    /// touching the header first so a skipped packet costs no copy.
    pub fn accepts(&self, header: &Header) -> Result<(), Skip> {
        if self.paused {
            return Err(Skip::Paused);
        }
        if self.pt_map.get(header.payload_type).is_none() {
            return Err(Skip::UnmappedPayloadType);
        }
        Ok(())
    }

    /// The packet as this leg sends it: a copy with the header rewritten. The
    /// payload is shared (reference-counted); the extension list is only cloned
    /// when something in it survives, so the usual copy allocates nothing of ours.
    /// Call only after [`accepts`](Self::accepts).
    pub fn copy(&mut self, packet: &Packet) -> Packet {
        let h = &packet.header;
        let mut header = Header {
            version: h.version,
            padding: h.padding,
            extension: h.extension,
            marker: h.marker,
            payload_type: h.payload_type,
            sequence_number: h.sequence_number,
            timestamp: h.timestamp,
            ssrc: h.ssrc,
            csrc: h.csrc.clone(),
            extension_profile: h.extension_profile,
            extensions: if self.ext_map.keeps_any(h) {
                h.extensions.clone()
            } else {
                Vec::new()
            },
            extensions_padding: h.extensions_padding,
        };
        self.rewrite(&mut header);
        Packet {
            header,
            payload: packet.payload.clone(),
        }
    }

    /// [`copy`](Self::copy) into `out`, reusing its buffers (its extension and CSRC lists
    /// keep their capacity from packet to packet): allocation-free once `out` has grown.
    /// Call only after [`accepts`](Self::accepts).
    pub fn copy_into(&mut self, packet: &Packet, out: &mut Packet) {
        let h = &packet.header;
        let o = &mut out.header;
        o.version = h.version;
        o.padding = h.padding;
        o.extension = h.extension;
        o.marker = h.marker;
        o.payload_type = h.payload_type;
        o.sequence_number = h.sequence_number;
        o.timestamp = h.timestamp;
        o.ssrc = h.ssrc;
        o.csrc.clear();
        o.csrc.extend_from_slice(&h.csrc);
        o.extension_profile = h.extension_profile;
        o.extensions.clear();
        if self.ext_map.keeps_any(h) {
            o.extensions.extend_from_slice(&h.extensions);
        }
        o.extensions_padding = h.extensions_padding;
        self.rewrite(o);
        out.payload.clone_from(&packet.payload);
    }

    /// Rewrites a copy of an accepted packet's header for this leg: SSRC,
    /// payload type, sequence number, extensions. Call only after [`accepts`](Self::accepts).
    pub fn rewrite(&mut self, header: &mut Header) {
        header.ssrc = self.ssrc;
        if let Some(pt) = self.pt_map.get(header.payload_type) {
            header.payload_type = pt;
        }
        header.sequence_number = self.seq.rewrite(header.sequence_number);
        header.timestamp = self.ts.rewrite(header.timestamp);
        self.ext_map.apply(header);
    }
}

/// How a codec marks the first packet of a keyframe in its RTP payload, so a leg
/// switches simulcast layers where the subscriber's decoder can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeFormat {
    Vp8,
    Vp9,
    H264,
    H265,
    Av1,
    /// No keyframe is ever recognised: a leg stays on the layer it started with.
    Unknown,
}

impl KeyframeFormat {
    pub fn of(mime_type: &str) -> Self {
        let codec = mime_type.rsplit('/').next().unwrap_or_default();
        match codec.to_ascii_lowercase().as_str() {
            "vp8" => Self::Vp8,
            "vp9" => Self::Vp9,
            "h264" => Self::H264,
            "h265" | "hevc" => Self::H265,
            "av1" => Self::Av1,
            _ => Self::Unknown,
        }
    }

    /// Whether `payload` is the first packet of a keyframe (reads a few bytes, never panics).
    pub fn starts_keyframe(self, payload: &[u8]) -> bool {
        match self {
            Self::Vp8 => vp8_starts_keyframe(payload),
            // RFC 9628: B (start of frame) set, P (inter-picture predicted) clear.
            Self::Vp9 => payload.first().is_some_and(|b| b & 0x08 != 0 && b & 0x40 == 0),
            Self::H264 => h264_starts_keyframe(payload),
            Self::H265 => h265_starts_keyframe(payload),
            // AV1 RTP: N, the first packet of a coded video sequence (a keyframe with its sequence header).
            Self::Av1 => payload.first().is_some_and(|b| b & 0x08 != 0),
            Self::Unknown => false,
        }
    }
}

/// RFC 7741: S set and partition 0 in the descriptor, then the VP8 frame tag's P bit clear.
fn vp8_starts_keyframe(p: &[u8]) -> bool {
    let Some(&first) = p.first() else { return false };
    if first & 0x10 == 0 || first & 0x07 != 0 {
        return false;
    }
    let mut i = 1;
    if first & 0x80 != 0 {
        let Some(&x) = p.get(1) else { return false };
        i = 2;
        if x & 0x80 != 0 {
            // Picture id: 15 bits when M is set, else 7.
            i += if p.get(i).is_some_and(|b| b & 0x80 != 0) { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    p.get(i).is_some_and(|tag| tag & 0x01 == 0)
}

/// An IDR slice or an SPS, alone, first in a STAP-A, or starting a FU-A (RFC 6184).
fn h264_starts_keyframe(p: &[u8]) -> bool {
    let key = |nal: u8| matches!(nal & 0x1F, 5 | 7);
    match p.first().map(|b| b & 0x1F) {
        Some(24) => p.get(3).is_some_and(|b| key(*b)),
        Some(28) => p.get(1).is_some_and(|b| b & 0x80 != 0 && key(*b)),
        Some(_) => key(p[0]),
        None => false,
    }
}

/// An IRAP picture or a VPS/SPS, alone, first in an AP, or starting an FU (RFC 7798).
fn h265_starts_keyframe(p: &[u8]) -> bool {
    let key = |t: u8| (16..=21).contains(&t) || t == 32 || t == 33;
    let Some(&b0) = p.first() else { return false };
    match (b0 >> 1) & 0x3F {
        48 => p.get(4).is_some_and(|b| key((b >> 1) & 0x3F)),
        49 => p.get(2).is_some_and(|b| b & 0x80 != 0 && key(b & 0x3F)),
        t => key(t),
    }
}

/// A subscriber's wish for one simulcast track as a layer rank: the highest rank it
/// wants (0 is the lowest layer the publisher sends; [`Self::HIGH`] is its best).
/// A bandwidth estimate can later lower the effective target per leg the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target(pub u8);

impl Target {
    pub const LOW: Self = Self(0);
    pub const MEDIUM: Self = Self(1);
    pub const HIGH: Self = Self(u8::MAX);
}

/// What a leg does with a packet of one of its track's layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Not this leg's layer (or an old packet of the layer it just switched to).
    Skip,
    /// Forward it.
    Forward,
    /// The keyframe the leg waited for: restart its rewriting (sequence numbers and
    /// timestamps continue from what it sent), then forward.
    Switch,
}

/// Which of a track's simulcast layers one subscriber leg forwards, pure. The leg
/// starts with the layer it wants as soon as that layer sends; later it moves to
/// another only on a keyframe of that layer (a PLI for that layer is asked for when
/// the move is decided, and again each [`LayerSelector::RETRY`] while it waits), so
/// the decoder never gets a delta frame it has no reference for. Layers are indexes
/// into the track's list, ranks their quality order. A track without simulcast has
/// one layer and never switches.
#[derive(Debug, Clone)]
pub struct LayerSelector {
    target: Target,
    /// The highest rank the subscriber connection's bandwidth estimate allows this leg
    /// ([`super::bwe`]); [`Target::HIGH`] while nothing is capped. The leg wants the
    /// lower of the two.
    cap: Target,
    /// The layer forwarded now.
    current: Option<usize>,
    /// The layer to move to on its next keyframe.
    pending: Option<usize>,
    /// When a keyframe of `pending` was last asked for.
    asked: Option<Instant>,
    /// After a switch: the first sequence number of the new layer forwarded, and how
    /// many more packets to check against it (late packets from before the keyframe
    /// would reuse sequence numbers the leg already sent for the old layer).
    floor: Option<(u16, u16)>,
}

impl Default for LayerSelector {
    fn default() -> Self {
        Self::new(Target::HIGH)
    }
}

impl LayerSelector {
    /// A keyframe asked for and not seen within this is asked for again.
    pub const RETRY: Duration = Duration::from_secs(1);

    pub fn new(target: Target) -> Self {
        Self {
            target,
            cap: Target::HIGH,
            current: None,
            pending: None,
            asked: None,
            floor: None,
        }
    }

    pub fn target(&self) -> Target {
        self.target
    }

    pub fn set_target(&mut self, target: Target) {
        self.target = target;
    }

    /// The bandwidth cap (see the field).
    pub fn cap(&self) -> Target {
        self.cap
    }

    pub fn set_cap(&mut self, cap: Target) {
        self.cap = cap;
    }

    /// What the leg aims at: the subscriber's target under the bandwidth cap.
    pub fn effective(&self) -> Target {
        self.target.min(self.cap)
    }

    /// The layer forwarded now, and the one waited for.
    pub fn layers(&self) -> (Option<usize>, Option<usize>) {
        (self.current, self.pending)
    }

    /// The layer a keyframe request for this leg should name: the one it waits for, else its own.
    pub fn keyframe_layer(&self) -> Option<usize> {
        self.pending.or(self.current)
    }

    /// The layer this leg should have: among the `available` ones (bit i for layer i,
    /// `ranks[i]` its rank) the highest at or below the target, else the lowest above
    /// it. With nothing available, the layer it has (a silent publisher is no reason to move).
    pub fn desired(&self, ranks: &[u8], available: u32) -> Option<usize> {
        self.choose(self.effective(), ranks, available)
    }

    /// What [`desired`](Self::desired) would be without the bandwidth cap: the subscriber's
    /// own wish. Dynacast keeps the layers up to it sending, so a capped leg can still try
    /// the next one and climb back when its path widens.
    pub fn wished(&self, ranks: &[u8], available: u32) -> Option<usize> {
        self.choose(self.target, ranks, available)
    }

    fn choose(&self, target: Target, ranks: &[u8], available: u32) -> Option<usize> {
        let avail = |i: &usize| *i < 32 && available & (1 << i) != 0;
        let target = target.0;
        let below = (0..ranks.len())
            .filter(avail)
            .filter(|&i| ranks[i] <= target)
            .max_by_key(|&i| ranks[i]);
        let above = || {
            (0..ranks.len())
                .filter(avail)
                .filter(|&i| ranks[i] > target)
                .min_by_key(|&i| ranks[i])
        };
        below.or_else(above).or(self.current)
    }

    /// A packet of `layer` with sequence number `seq` arrived while the leg should have
    /// `desired`. `keyframe` is asked only when the answer depends on it. Returns what
    /// to do with the packet and, when a keyframe of some layer must be asked for now, which.
    pub fn pick(
        &mut self,
        layer: usize,
        seq: u16,
        desired: Option<usize>,
        keyframe: impl FnOnce() -> bool,
        now: Instant,
    ) -> (Pick, Option<usize>) {
        let mut ask = None;
        match (desired, self.current) {
            (None, _) => {}
            (Some(d), None) => self.current = Some(d),
            (Some(d), Some(c)) if d == c => {
                self.pending = None;
                self.asked = None;
            }
            (Some(d), Some(_)) => {
                let stale = self
                    .asked
                    .is_none_or(|at| now.saturating_duration_since(at) >= Self::RETRY);
                if self.pending != Some(d) || stale {
                    self.pending = Some(d);
                    self.asked = Some(now);
                    ask = Some(d);
                }
            }
        }
        if self.pending == Some(layer) && keyframe() {
            self.current = Some(layer);
            self.pending = None;
            self.asked = None;
            self.floor = Some((seq, 512));
            return (Pick::Switch, ask);
        }
        if self.current != Some(layer) {
            return (Pick::Skip, ask);
        }
        if let Some((first, left)) = &mut self.floor {
            if (seq.wrapping_sub(*first) as i16) < 0 {
                return (Pick::Skip, ask);
            }
            *left -= 1;
            if *left == 0 {
                self.floor = None;
            }
        }
        (Pick::Forward, ask)
    }

    /// The layer at `layer` was removed from the track's list: indexes above it move down.
    pub fn layer_removed(&mut self, layer: usize) {
        let shift = |l: &mut Option<usize>| {
            *l = match *l {
                Some(i) if i == layer => None,
                Some(i) if i > layer => Some(i - 1),
                other => other,
            }
        };
        shift(&mut self.current);
        shift(&mut self.pending);
    }
}

/// The quality order of a publisher's simulcast layers from their rids, in the order
/// its offer lists them (`a=simulcast:send`). The names browsers' clients use are
/// understood (`q`/`h`/`f` as LiveKit's and ours, `l`/`m`/`h`, `low`/`mid`/`high`);
/// any other set is taken lowest first, in offer order (as mediasoup's `r0`, `r1`, ...).
pub fn simulcast_ranks<S: AsRef<str>>(rids: &[S]) -> Vec<u8> {
    const SCHEMES: &[&[&str]] = &[&["q", "h", "f"], &["l", "m", "h"], &["low", "mid", "high"]];
    for scheme in SCHEMES {
        if rids.iter().all(|r| scheme.contains(&r.as_ref())) {
            return rids
                .iter()
                .map(|r| scheme.iter().position(|s| *s == r.as_ref()).unwrap_or(0) as u8)
                .collect();
        }
    }
    (0..rids.len()).map(|i| i.min(u8::MAX as usize) as u8).collect()
}

/// Rate-limits keyframe requests for one published track: at most one per
/// `interval`; a request inside the interval is remembered and released when
/// the interval has passed, so a late subscriber is never left without one.
#[derive(Debug, Clone)]
pub struct KeyframeThrottle {
    interval: Duration,
    last: Option<Instant>,
    pending: bool,
}

impl KeyframeThrottle {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            pending: false,
        }
    }

    /// Somebody wants a keyframe. True if one should be requested now.
    pub fn request(&mut self, now: Instant) -> bool {
        self.pending = true;
        self.poll(now)
    }

    /// True when a deferred request is due now.
    pub fn poll(&mut self, now: Instant) -> bool {
        if !self.pending {
            return false;
        }
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < self.interval)
        {
            return false;
        }
        self.pending = false;
        self.last = Some(now);
        true
    }

    /// When a deferred request will be due, if one is waiting.
    pub fn deadline(&self) -> Option<Instant> {
        if !self.pending {
            return None;
        }
        Some(self.last.map_or_else(Instant::now, |last| last + self.interval))
    }
}

/// Drops a configured share of forwarded packets, for loss tests. A tiny
/// xorshift generator: deterministic per seed, no allocation, no locking.
#[derive(Debug, Clone)]
pub struct DropDice {
    state: u64,
    /// Drop when the next draw is below this (0 = never).
    threshold: u64,
}

impl DropDice {
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed | 1,
            threshold: 0,
        }
    }

    /// Sets the share of packets to drop, clamped to [0, 1].
    pub fn set_probability(&mut self, p: f64) {
        let p = if p.is_finite() { p.clamp(0.0, 1.0) } else { 0.0 };
        self.threshold = if p >= 1.0 {
            u64::MAX
        } else {
            (p * u64::MAX as f64) as u64
        };
    }

    pub fn is_active(&self) -> bool {
        self.threshold != 0
    }

    /// True if this packet should be dropped.
    pub fn roll(&mut self) -> bool {
        if self.threshold == 0 {
            return false;
        }
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        self.threshold == u64::MAX || x < self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtp::header::Extension;

    const TWCC: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
    const AUDIO_LEVEL: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
    const MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
    const ORIENT: &str = "urn:3gpp:video-orientation";

    fn header_with(exts: &[(u8, &'static [u8])]) -> Header {
        Header {
            version: 2,
            extension: true,
            extension_profile: EXTENSION_PROFILE_ONE_BYTE,
            extensions: exts
                .iter()
                .map(|(id, p)| Extension {
                    id: *id,
                    payload: Bytes::from_static(p),
                })
                .collect(),
            extensions_padding: 3,
            payload_type: 111,
            sequence_number: 100,
            ssrc: 1,
            ..Default::default()
        }
    }

    #[test]
    fn ext_map_remaps_by_uri_and_strips_per_leg_extensions() {
        let map = ExtMap::by_uri(
            [(AUDIO_LEVEL, 1), (TWCC, 3), (MID, 4), (ORIENT, 5)],
            [(AUDIO_LEVEL, 7), (TWCC, 2), (MID, 1)],
        );
        let mut h = header_with(&[(1, b"\x80"), (3, b"\x00\x01"), (4, b"0"), (5, b"\x01")]);
        map.apply(&mut h);
        assert_eq!(h.extensions.len(), 1);
        assert_eq!(h.extensions[0].id, 7);
        assert!(h.extension);
        assert_eq!(h.extensions_padding, 0);
    }

    #[test]
    fn stripping_everything_resets_all_four_fields() {
        let map = ExtMap::by_uri([(TWCC, 3)], [(TWCC, 3)]);
        let mut h = header_with(&[(3, b"\x00\x01")]);
        map.apply(&mut h);
        assert!(!h.extension);
        assert!(h.extensions.is_empty());
        assert_eq!(h.extensions_padding, 0);
        assert_eq!(h.extension_profile, 0);
    }

    #[test]
    fn one_byte_form_cannot_carry_ids_above_14() {
        let map = ExtMap::by_uri([(AUDIO_LEVEL, 1)], [(AUDIO_LEVEL, 20)]);
        let mut h = header_with(&[(1, b"\x80")]);
        map.apply(&mut h);
        assert!(!h.extension);
    }

    #[test]
    fn unknown_extension_profile_is_stripped() {
        let map = ExtMap::by_uri([(AUDIO_LEVEL, 1)], [(AUDIO_LEVEL, 1)]);
        let mut h = header_with(&[(0, b"\x00\x00\x00\x00")]);
        h.extension_profile = 0x1234;
        map.apply(&mut h);
        assert!(!h.extension && h.extensions.is_empty() && h.extension_profile == 0);
    }

    #[test]
    fn stripped_header_marshals_to_the_size_it_claims() {
        use rtc::shared::marshal::{Marshal, MarshalSize};
        let map = ExtMap::by_uri([(AUDIO_LEVEL, 1)], [(AUDIO_LEVEL, 2)]);
        let mut h = header_with(&[(1, b"\x80"), (3, b"\x00\x01\x02")]);
        map.apply(&mut h);
        let mut buf = vec![0u8; h.marshal_size()];
        let n = h.marshal_to(&mut buf).expect("marshal");
        assert_eq!(n, h.marshal_size());
    }

    fn key(pt: u8, mime: &'static str, fmtp: &'static str) -> CodecKey<'static> {
        CodecKey {
            payload_type: pt,
            mime_type: mime,
            clock_rate: if mime.starts_with("audio") { 48000 } else { 90000 },
            fmtp,
        }
    }

    #[test]
    fn pt_map_prefers_identical_fmtp_then_mime() {
        let map = PtMap::by_codec(
            [
                key(111, "audio/opus", "minptime=10;useinbandfec=1"),
                key(96, "video/VP8", ""),
                key(102, "video/H264", "profile-level-id=42e01f;packetization-mode=1"),
                key(35, "video/AV1", ""),
            ],
            [
                key(109, "audio/OPUS", "x"),
                key(120, "video/vp8", ""),
                key(125, "video/H264", "profile-level-id=42001f;packetization-mode=1"),
                key(127, "video/H264", "profile-level-id=42e01f;packetization-mode=1"),
            ],
        );
        assert_eq!(map.get(111), Some(109));
        assert_eq!(map.get(96), Some(120));
        assert_eq!(map.get(102), Some(127));
        assert_eq!(map.get(35), None, "AV1 not negotiated on this leg");
        assert_eq!(map.get(200), None);
        assert!(!map.is_empty());
        assert!(PtMap::default().is_empty());
    }

    #[test]
    fn leg_rewrites_ssrc_pt_seq_and_skips_unmapped_or_paused() {
        let mut leg = DownLeg::new(0xABCD);
        leg.pt_map = PtMap::by_codec([key(111, "audio/opus", "")], [key(100, "audio/opus", "")]);
        let mut h = header_with(&[(1, b"\x80")]);
        assert_eq!(leg.accepts(&h), Ok(()));
        leg.rewrite(&mut h);
        assert_eq!((h.ssrc, h.payload_type, h.sequence_number), (0xABCD, 100, 100));
        assert!(!h.extension, "no extension negotiated on the leg");

        let mut rtx = header_with(&[]);
        rtx.payload_type = 97;
        assert_eq!(leg.accepts(&rtx), Err(Skip::UnmappedPayloadType));

        assert!(!leg.set_paused(true));
        assert_eq!(leg.accepts(&header_with(&[])), Err(Skip::Paused));
        assert!(leg.set_paused(false), "resume reports itself");
        assert!(!leg.set_paused(false));
    }

    #[test]
    fn copy_shares_the_payload_and_keeps_only_mapped_extensions() {
        let mut leg = DownLeg::new(9);
        leg.pt_map = PtMap::by_codec([key(96, "video/VP8", "")], [key(98, "video/VP8", "")]);
        let mut header = header_with(&[(3, b"\x00\x01")]);
        header.payload_type = 96;
        let packet = Packet {
            header,
            payload: Bytes::from_static(b"frame"),
        };
        let copy = leg.copy(&packet);
        assert_eq!((copy.header.ssrc, copy.header.payload_type), (9, 98));
        assert!(
            !copy.header.extension && copy.header.extensions.capacity() == 0,
            "no extension list allocated"
        );
        assert_eq!(
            copy.payload.as_ptr(),
            packet.payload.as_ptr(),
            "payload shared, not copied"
        );
        assert_eq!(packet.header.ssrc, 1, "the original is untouched");

        leg.ext_map = ExtMap::by_uri([(AUDIO_LEVEL, 3)], [(AUDIO_LEVEL, 5)]);
        let copy = leg.copy(&packet);
        assert_eq!(copy.header.extensions.len(), 1);
        assert_eq!(copy.header.extensions[0].id, 5);
    }

    #[test]
    fn a_restarted_stream_continues_the_legs_sequence() {
        let mut leg = DownLeg::new(5);
        leg.pt_map = PtMap::by_codec([key(96, "video/VP8", "")], [key(96, "video/VP8", "")]);
        let mut h = header_with(&[]);
        h.payload_type = 96;
        h.sequence_number = 1000;
        let mut a = h.clone();
        leg.rewrite(&mut a);
        h.sequence_number = 1001;
        let mut b = h.clone();
        leg.rewrite(&mut b);
        leg.restart(3000);
        h.sequence_number = 7;
        let mut c = h.clone();
        leg.rewrite(&mut c);
        assert_eq!(
            (a.sequence_number, b.sequence_number, c.sequence_number),
            (1000, 1001, 1002)
        );
    }

    #[test]
    fn a_restarted_stream_continues_the_legs_timeline_forward() {
        // Whatever base the new source picks, ahead or behind in modular order,
        // the leg's timestamps go on `gap` ticks after the last sent, then follow it.
        for new_base in [0u32, 5, 1 << 31, (1 << 31) + 1, u32::MAX, 2_000_000_000] {
            let mut leg = DownLeg::new(5);
            leg.pt_map = PtMap::by_codec([key(96, "video/VP8", "")], [key(96, "video/VP8", "")]);
            let mut h = header_with(&[]);
            h.payload_type = 96;
            let mut sent = Vec::new();
            for ts in [90_000u32, 93_000, 93_000, 96_000] {
                let mut p = h.clone();
                p.timestamp = ts;
                leg.rewrite(&mut p);
                sent.push(p.timestamp);
            }
            assert_eq!(sent, [90_000, 93_000, 93_000, 96_000], "untouched before a restart");
            leg.restart(45_000);
            for ts in [new_base, new_base, new_base.wrapping_add(3000)] {
                let mut p = h.clone();
                p.timestamp = ts;
                leg.rewrite(&mut p);
                sent.push(p.timestamp);
            }
            assert_eq!(sent[4..], [141_000, 141_000, 144_000], "new base {new_base}");
        }
    }

    #[test]
    fn timestamps_survive_reordering_and_wrap_and_a_zero_gap_still_moves_on() {
        let mut t = TsRewriter::default();
        assert_eq!(t.rewrite(u32::MAX - 2999), u32::MAX - 2999);
        assert_eq!(t.rewrite(1), 1, "wraps");
        assert_eq!(
            t.rewrite(u32::MAX - 2999),
            u32::MAX - 2999,
            "a late packet keeps its time"
        );
        t.resync(0);
        assert_eq!(t.rewrite(777), 2, "one tick after the highest sent, not the late one");
        assert_eq!(t.rewrite(778), 3);
    }

    #[test]
    fn seq_is_contiguous_across_a_pause_and_wraps() {
        let mut s = SeqRewriter::new();
        assert_eq!(s.rewrite(65534), 65534);
        assert_eq!(s.rewrite(65535), 65535);
        assert_eq!(s.rewrite(0), 0);
        // paused for 1000 packets
        s.resync();
        assert_eq!(s.rewrite(1001), 1);
        assert_eq!(s.rewrite(1002), 2);
        // a late (reordered) packet from before stays before
        assert_eq!(s.rewrite(1000), 0);
        assert_eq!(s.rewrite(1003), 3);
        // resume again after a reorder: continue from the highest emitted
        s.resync();
        assert_eq!(s.rewrite(5000), 4);
    }

    /// A VP8 packet of frame `pid` (TL0PICIDX `tl0`, temporal layer `tid`, Y bit `sync`).
    fn temporal_packet(seq: u16, pid: u16, tl0: u8, tid: u8, sync: bool) -> Packet {
        let mut header = header_with(&[]);
        header.payload_type = 96;
        header.sequence_number = seq;
        header.timestamp = u32::from(pid) * 3000;
        let d = [
            0x90,
            0xE0,
            0x80 | (pid >> 8) as u8,
            pid as u8,
            tl0,
            tid << 6 | u8::from(sync) << 5,
            0x01,
        ];
        Packet {
            header,
            payload: Bytes::copy_from_slice(&d),
        }
    }

    /// Issue 12: a leg capped to the base layer of an L1T2 stream (two packets per frame)
    /// sends every base-layer frame and nothing else, with sequence numbers and picture ids
    /// that run on without a gap and TL0PICIDX as the publisher sent it; the cap lifted, the
    /// upper frames come back from a sync frame on, still without a gap.
    #[test]
    fn a_temporal_cap_drops_upper_frames_without_a_gap_in_seq_or_picture_id() {
        let mut leg = DownLeg::new(7);
        leg.pt_map = PtMap::by_codec([key(96, "video/VP8", "")], [key(96, "video/VP8", "")]);
        leg.set_temporal_cap(0);
        let mut out = Vec::new();
        fn send(leg: &mut DownLeg, p: Packet, out: &mut Vec<(u16, u16, u8, u8)>) {
            let t = Temporal::parse(&p.payload);
            if !leg.temporal_pass(t, false, p.header.sequence_number) {
                return;
            }
            let mut copy = leg.copy(&p);
            leg.rewrite_vp8(&mut copy.payload);
            let d = super::super::vp8::Descriptor::parse(&copy.payload).expect("descriptor");
            let tid = Temporal::parse(&copy.payload).expect("tid").tid;
            out.push((
                copy.header.sequence_number,
                d.picture_id.unwrap().0,
                d.tl0.unwrap().0,
                tid,
            ));
        }
        // pid 100.. with TID 0, 1 (sync), 0, 1 (no sync) ...; TL0PICIDX counts the base frames.
        fn frame_packet(seq: u16, pid: u16) -> Packet {
            let (tid, sync) = if pid.is_multiple_of(2) {
                (0, false)
            } else {
                (1, pid % 4 == 1)
            };
            temporal_packet(seq, pid, (pid / 2) as u8, tid, sync)
        }
        let mut seq = 5000u16;
        for pid in 100u16..108 {
            for _ in 0..2 {
                send(&mut leg, frame_packet(seq, pid), &mut out);
                seq += 1;
            }
        }
        assert_eq!(
            out,
            [
                (5000, 100, 50, 0),
                (5001, 100, 50, 0),
                (5002, 101, 51, 0),
                (5003, 101, 51, 0),
                (5004, 102, 52, 0),
                (5005, 102, 52, 0),
                (5006, 103, 53, 0),
                (5007, 103, 53, 0)
            ]
        );
        // Lifted: 108 (TL0) and 111 (TL1 without Y) wait, 109 (TL1 with Y) opens the layer.
        out.clear();
        leg.set_temporal_cap(super::super::temporal::ALL);
        for pid in 108u16..112 {
            send(&mut leg, frame_packet(seq, pid), &mut out);
            seq += 1;
        }
        assert_eq!(
            out,
            [
                (5008, 104, 54, 0),
                (5009, 105, 54, 1),
                (5010, 106, 55, 0),
                (5011, 107, 55, 1)
            ]
        );
        // The second packet of a dropped frame, lost on the way in, is numbered around (the
        // frame after it takes the number after its slot): resent, it goes out in that slot
        // so the subscriber has no gap to NACK (a fragment it cannot assemble, no frame).
        let mut leg = DownLeg::new(7);
        leg.pt_map = PtMap::by_codec([key(96, "video/VP8", "")], [key(96, "video/VP8", "")]);
        leg.set_temporal_cap(0);
        out.clear();
        for (seq, pid, tid) in [(1, 10, 0), (2, 10, 0), (3, 11, 1), (5, 12, 0), (6, 12, 0), (4, 11, 1)] {
            send(&mut leg, temporal_packet(seq, pid, 5, tid, false), &mut out);
        }
        let seqs: Vec<u16> = out.iter().map(|o| o.0).collect();
        assert_eq!(seqs, [1, 2, 4, 5, 3]);
        assert_eq!(out[2].1, 11, "frame 12 follows frame 10");
    }

    /// A leg whose VP8 numbers are shifted rewrites each copy's payload in a buffer it
    /// reuses: each copy is cut right after the one before, and a new buffer is needed about
    /// once per [`PAYLOAD_POOL`] bytes only while copies are still alive (here the last three,
    /// as if queued), never once per packet.
    #[test]
    fn rewritten_payloads_are_cut_from_one_buffer_not_allocated_each() {
        let mut leg = DownLeg::new(7);
        leg.set_temporal_cap(0);
        let mut alive: std::collections::VecDeque<Bytes> = std::collections::VecDeque::new();
        let (mut copies, mut fresh) = (0, 0);
        for pid in 0u16..400 {
            let p = temporal_packet(pid, pid, (pid / 2) as u8, (pid % 2) as u8, false);
            if !leg.temporal_pass(Temporal::parse(&p.payload), false, pid) {
                continue;
            }
            let mut payload = Bytes::from([&p.payload[..], &[0u8; 1000][..]].concat());
            if leg.rewrite_vp8(&mut payload).is_zero() {
                continue;
            }
            let d = super::super::vp8::Descriptor::parse(&payload).expect("descriptor");
            assert_eq!(d.picture_id.unwrap().0, pid / 2, "rewritten");
            let follows = alive
                .back()
                .is_some_and(|prev| prev.as_ptr() as usize + prev.len() == payload.as_ptr() as usize);
            copies += 1;
            fresh += usize::from(!follows);
            alive.push_back(payload);
            if alive.len() > 3 {
                alive.pop_front();
            }
        }
        assert_eq!(copies, 199);
        assert!(
            fresh <= 1 + 199 * 1007 / PAYLOAD_POOL,
            "{fresh} buffers for {copies} copies"
        );
    }

    /// Padding dropped on a leg closes up: the next packet takes its number, and a late
    /// packet from before a drop (a retransmission) gets the number it would have had.
    #[test]
    fn dropped_padding_closes_up_and_late_packets_keep_their_slots() {
        let mut s = SeqRewriter::new();
        assert!(
            s.skip(99),
            "before the first packet of a run: dropped, nothing to close"
        );
        assert_eq!((s.rewrite(100), s.rewrite(101)), (100, 101));
        assert!(s.skip(102) && s.skip(103), "a burst of probes");
        assert_eq!(s.rewrite(104), 102);
        // 105 is lost on the way; more padding; 107 comes.
        assert!(s.skip(106));
        assert_eq!(s.rewrite(107), 104);
        assert_eq!(
            s.rewrite(105),
            103,
            "the retransmission fills the slot the subscriber misses"
        );
        assert_eq!(s.rewrite(101), 101, "from before every drop: as first numbered");
        assert!(!s.skip(103), "late padding, already numbered around: sent as it is");
        assert_eq!(s.rewrite(108), 105);
        // A new run (a resume, a layer switch) forgets the drops and continues.
        s.resync();
        assert!(s.skip(9000));
        assert_eq!((s.rewrite(9001), s.rewrite(9002)), (106, 107));
    }

    /// Against a model: packets in order but for some lost ones resent later, padding in
    /// runs, across the 16-bit wrap. Every real packet gets its rank among the real ones
    /// (so the subscriber sees no gap and no collision), however late it came.
    #[test]
    fn padding_drops_agree_with_a_model() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        for _ in 0..50 {
            let start: u16 = 65_000;
            let mut s = SeqRewriter::new();
            let mut real: Vec<u16> = Vec::new();
            let mut late: Vec<(usize, u16)> = Vec::new();
            let mut seen = Vec::new();
            let mut padding_run = 0;
            for i in 0..3000usize {
                let seq = start.wrapping_add(i as u16);
                if padding_run == 0 && i > 0 && rng.random_ratio(1, 40) {
                    padding_run = rng.random_range(1..30);
                }
                if padding_run > 0 {
                    padding_run -= 1;
                    assert!(s.skip(seq), "in-order padding is dropped");
                } else {
                    real.push(seq);
                    if i > 0 && rng.random_ratio(1, 20) {
                        late.push((i + rng.random_range(1..25), seq));
                    } else {
                        seen.push((seq, s.rewrite(seq)));
                    }
                }
                let due: Vec<u16> = late.iter().filter(|(at, _)| *at == i).map(|(_, q)| *q).collect();
                late.retain(|(at, _)| *at != i);
                for q in due {
                    seen.push((q, s.rewrite(q)));
                }
            }
            let rank = |q: u16| real.iter().position(|r| *r == q).unwrap() as u16;
            for (q, out) in seen {
                assert_eq!(out, start.wrapping_add(rank(q)), "packet {q}");
            }
        }
    }

    #[test]
    fn throttle_allows_one_per_interval_and_releases_deferred_requests() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut k = KeyframeThrottle::new(ms(300));
        assert!(!k.poll(t0), "nothing pending");
        assert!(k.request(t0));
        assert!(!k.request(t0 + ms(100)), "throttled");
        assert_eq!(k.deadline(), Some(t0 + ms(300)));
        assert!(!k.poll(t0 + ms(299)));
        assert!(k.poll(t0 + ms(300)), "deferred request released");
        assert!(!k.poll(t0 + ms(900)), "released once");
        assert_eq!(k.deadline(), None);
        assert!(k.request(t0 + ms(900)));
    }

    #[test]
    fn drop_dice_hits_roughly_the_configured_share() {
        let mut d = DropDice::new(42);
        assert!(!d.is_active());
        assert!((0..1000).all(|_| !d.roll()));
        d.set_probability(0.1);
        let dropped = (0..100_000).filter(|_| d.roll()).count();
        assert!((9_000..11_000).contains(&dropped), "{dropped}");
        d.set_probability(1.0);
        assert!((0..1000).all(|_| d.roll()));
        d.set_probability(f64::NAN);
        assert!(!d.is_active());
        d.set_probability(-3.0);
        assert!(!d.is_active());
    }

    #[test]
    fn keyframes_are_recognised_per_codec_and_garbage_is_not_one() {
        use KeyframeFormat::*;
        assert_eq!(KeyframeFormat::of("video/VP8"), Vp8);
        assert_eq!(KeyframeFormat::of("video/h264"), H264);
        assert_eq!(KeyframeFormat::of("audio/opus"), Unknown);
        // VP8: plain descriptor; with X, a 15-bit picture id, TL0PICIDX and TID/KEYIDX.
        assert!(Vp8.starts_keyframe(&[0x10, 0x00]));
        assert!(!Vp8.starts_keyframe(&[0x10, 0x01]), "inter frame");
        assert!(!Vp8.starts_keyframe(&[0x00, 0x00]), "not the start of a frame");
        assert!(!Vp8.starts_keyframe(&[0x11, 0x00]), "another partition");
        assert!(Vp8.starts_keyframe(&[0x90, 0xF0, 0x81, 0x23, 0x05, 0x40, 0x00]));
        assert!(!Vp8.starts_keyframe(&[0x90, 0xF0, 0x81, 0x23, 0x05, 0x40, 0x01]));
        assert!(Vp8.starts_keyframe(&[0x90, 0x80, 0x12, 0x00]), "7-bit picture id");
        assert!(!Vp8.starts_keyframe(&[0x90, 0xF0, 0x81]), "cut short");
        // H.264: IDR alone, SPS first in a STAP-A, IDR starting a FU-A; a P slice, a FU-A middle.
        assert!(H264.starts_keyframe(&[0x65, 0x88]));
        assert!(H264.starts_keyframe(&[0x78, 0x00, 0x0A, 0x67, 0x42]));
        assert!(H264.starts_keyframe(&[0x7C, 0x85, 0x00]));
        assert!(!H264.starts_keyframe(&[0x41, 0x9A]));
        assert!(!H264.starts_keyframe(&[0x7C, 0x05, 0x00]));
        // VP9 (B set, P clear), AV1 (N set), H.265 (IDR_W_RADL = 19; FU starting one).
        assert!(Vp9.starts_keyframe(&[0x08]) && !Vp9.starts_keyframe(&[0x48]));
        assert!(Av1.starts_keyframe(&[0x18]) && !Av1.starts_keyframe(&[0x10]));
        assert!(H265.starts_keyframe(&[19 << 1, 0x01]));
        assert!(H265.starts_keyframe(&[49 << 1, 0x01, 0x80 | 19]));
        assert!(!H265.starts_keyframe(&[1 << 1, 0x01]));
        for format in [Vp8, Vp9, H264, H265, Av1, Unknown] {
            assert!(!format.starts_keyframe(&[]), "{format:?} on nothing");
        }
    }

    #[test]
    fn simulcast_ranks_follow_known_rid_names_else_offer_order() {
        assert_eq!(simulcast_ranks(&["f", "h", "q"]), [2, 1, 0]);
        assert_eq!(simulcast_ranks(&["q", "f"]), [0, 2]);
        assert_eq!(simulcast_ranks(&["h", "l", "m"]), [2, 0, 1]);
        assert_eq!(simulcast_ranks(&["r0", "r1", "r2"]), [0, 1, 2]);
        assert_eq!(simulcast_ranks(&["hi", "lo"]), [0, 1], "unknown names: offer order");
    }

    #[test]
    fn a_selector_wants_the_best_layer_at_or_below_its_target_else_the_lowest_above() {
        let ranks = [0, 1, 2];
        let all = 0b111;
        let mut s = LayerSelector::new(Target::HIGH);
        assert_eq!(s.desired(&ranks, all), Some(2));
        assert_eq!(s.desired(&ranks, 0b011), Some(1), "the top layer stopped");
        s.set_target(Target::MEDIUM);
        assert_eq!(s.desired(&ranks, all), Some(1));
        s.set_target(Target::LOW);
        assert_eq!(
            s.desired(&ranks, 0b110),
            Some(1),
            "nothing low enough: the lowest above"
        );
        assert_eq!(s.desired(&ranks, 0), None, "nothing at all, nothing had");
        assert_eq!(s.desired(&[0], 0b1), Some(0), "one layer whatever the target");
        // Layers listed out of rank order (arrival order) are ranked, not indexed.
        let mut s = LayerSelector::new(Target::HIGH);
        assert_eq!(s.desired(&[2, 0, 1], 0b111), Some(0));
        s.set_target(Target::LOW);
        assert_eq!(s.desired(&[2, 0, 1], 0b111), Some(1));
    }

    #[test]
    fn a_bandwidth_cap_lowers_the_target_and_never_raises_it() {
        let ranks = [0, 1, 2];
        let mut s = LayerSelector::new(Target::HIGH);
        s.set_cap(Target(0));
        assert_eq!(s.desired(&ranks, 0b111), Some(0), "capped to the lowest");
        assert_eq!(s.effective(), Target(0));
        s.set_cap(Target(1));
        s.set_target(Target::LOW);
        assert_eq!(s.desired(&ranks, 0b111), Some(0), "the subscriber's own wish is lower");
        s.set_target(Target::HIGH);
        assert_eq!(s.desired(&ranks, 0b111), Some(1));
        assert_eq!(
            s.desired(&ranks, 0b100),
            Some(2),
            "only the top sends: video is kept, not stopped"
        );
        assert_eq!(s.wished(&ranks, 0b111), Some(2), "the wish ignores the cap");
        s.set_cap(Target::HIGH);
        assert_eq!(s.desired(&ranks, 0b111), Some(2), "uncapped");
    }

    #[test]
    fn a_selector_asks_again_for_a_keyframe_that_does_not_come() {
        let t0 = Instant::now();
        let mut s = LayerSelector::new(Target::HIGH);
        assert_eq!(
            s.pick(0, 1, Some(0), || false, t0),
            (Pick::Forward, None),
            "starts at once"
        );
        assert_eq!(s.pick(0, 2, Some(1), || false, t0), (Pick::Forward, Some(1)));
        assert_eq!(s.pick(1, 7, Some(1), || false, t0), (Pick::Skip, None), "asked once");
        let later = t0 + LayerSelector::RETRY;
        assert_eq!(
            s.pick(0, 3, Some(1), || false, later),
            (Pick::Forward, Some(1)),
            "asked again"
        );
        // The wish goes back to the layer it has: the wait ends.
        assert_eq!(s.pick(0, 4, Some(0), || true, later), (Pick::Forward, None));
        assert_eq!(s.layers(), (Some(0), None));
        assert_eq!(
            s.pick(1, 8, Some(0), || true, later),
            (Pick::Skip, None),
            "no switch unasked"
        );
        s.layer_removed(0);
        assert_eq!(s.layers(), (None, None));
    }
}
