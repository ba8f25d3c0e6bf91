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

/// One cached packet: the header fields a retransmission needs and a copy of the
/// payload and extensions, in buffers that keep their capacity from use to use.
#[derive(Debug, Clone, Default)]
struct Slot {
    filled: bool,
    /// The track's sequence space it belongs to (see [`PacketCache::restart`]).
    epoch: u32,
    seq: u16,
    at: Option<Instant>,
    marker: bool,
    payload_type: u8,
    extension_profile: u16,
    /// (publisher's extension id, length) of each extension, their bytes in `ext_data`.
    extensions: Vec<(u8, u8)>,
    ext_data: Vec<u8>,
    payload: Vec<u8>,
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

/// The last [`CACHE_SLOTS`] packets of one published video track, as they arrived.
#[derive(Debug)]
pub struct PacketCache {
    slots: Box<[Slot]>,
    epoch: u32,
    max_age: Duration,
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

    fn index(seq: u16) -> usize {
        seq as usize & (CACHE_SLOTS - 1)
    }

    /// Copies a packet in (no allocation once the slot has held one as large).
    pub fn insert(&mut self, packet: &Packet, now: Instant) -> Insert {
        let h = &packet.header;
        let slot = &mut self.slots[Self::index(h.sequence_number)];
        if slot.filled
            && slot.epoch == self.epoch
            && slot.seq == h.sequence_number
            && slot
                .at
                .is_some_and(|at| now.saturating_duration_since(at) < self.max_age)
        {
            return Insert::Duplicate;
        }
        slot.filled = true;
        slot.epoch = self.epoch;
        slot.seq = h.sequence_number;
        slot.at = Some(now);
        slot.marker = h.marker;
        slot.payload_type = h.payload_type;
        slot.extension_profile = h.extension_profile;
        slot.extensions.clear();
        slot.ext_data.clear();
        if h.extension {
            for e in &h.extensions {
                let Ok(len) = u8::try_from(e.payload.len()) else {
                    continue;
                };
                slot.extensions.push((e.id, len));
                slot.ext_data.extend_from_slice(&e.payload);
            }
        }
        slot.payload.clear();
        slot.payload.extend_from_slice(&packet.payload);
        Insert::New
    }

    fn get(&self, seq: u16, epoch: u32) -> Option<&Slot> {
        let slot = &self.slots[Self::index(seq)];
        (slot.filled && slot.epoch == epoch && slot.seq == seq).then_some(slot)
    }
}

/// What one leg sent under one of its sequence numbers.
#[derive(Debug, Clone, Copy, Default)]
struct Sent {
    filled: bool,
    out_seq: u16,
    /// The timestamp it carried on this leg (legs rewrite timestamps across restarts).
    out_ts: u32,
    /// The publisher's sequence number and sequence space of the packet it carried.
    in_seq: u16,
    epoch: u32,
    /// The VP8 renumbering it was sent with (zero for other codecs), so a resend matches.
    vp8: Offsets,
    at: Option<Instant>,
    resent: Option<Instant>,
    resends: u8,
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
        self.entries[Self::index(out_seq)] = Sent {
            filled: true,
            out_seq,
            out_ts,
            in_seq,
            epoch,
            vp8,
            at: Some(now),
            resent: None,
            resends: 0,
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
        let e = &mut self.entries[Self::index(seq)];
        let ours = e.filled && e.out_seq == seq;
        let fresh_enough = ours
            && e.at
                .is_some_and(|at| now.saturating_duration_since(at) < self.params.max_age);
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
            || e.resent
                .is_some_and(|at| now.saturating_duration_since(at) < self.params.resend_guard)
        {
            return Answer::Suppressed;
        }
        e.resent = Some(now);
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
            let fresh = e.filled
                && e.out_seq == seq
                && e.at
                    .is_some_and(|at| now.saturating_duration_since(at) < self.params.max_age);
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
    fn build(&mut self, e: &Sent, slot: &Slot, leg: &DownLeg) -> Answer {
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
            let mut at = 0;
            for &(id, len) in &slot.extensions {
                let end = at + len as usize;
                header.extensions.push(Extension {
                    id,
                    payload: Bytes::copy_from_slice(&slot.ext_data[at..end]),
                });
                at = end;
            }
            leg.ext_map.apply(&mut header);
        }
        header.payload_type = leg.pt_map.get(slot.payload_type).unwrap_or(slot.payload_type);
        let rtx = self
            .rtx
            .as_mut()
            .and_then(|r| r.payload_type(header.payload_type).map(|pt| (r, pt)));
        let vp8 = e.vp8;
        let Some((rtx, rtx_pt)) = rtx else {
            let mut payload = BytesMut::from(&slot.payload[..]);
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
        payload.extend_from_slice(&slot.payload);
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
        assert_eq!(&cache.get(7, cache.epoch()).unwrap().payload[..], &vp8);
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

    #[test]
    fn the_cache_allocates_nothing_once_warm() {
        let t0 = Instant::now();
        let mut cache = PacketCache::default();
        let big = vec![7u8; 1200];
        for seq in 0..CACHE_SLOTS as u16 {
            cache.insert(&packet(seq, &big), t0);
        }
        let capacity: Vec<usize> = cache.slots.iter().map(|s| s.payload.capacity()).collect();
        for seq in CACHE_SLOTS as u16..3 * CACHE_SLOTS as u16 {
            cache.insert(&packet(seq, &big[..1000]), t0);
        }
        let after: Vec<usize> = cache.slots.iter().map(|s| s.payload.capacity()).collect();
        assert_eq!(capacity, after, "slots keep their buffers");
    }
}
