//! VP8 picture ids and TL0PICIDX kept continuous across simulcast switches, pure.
//!
//! Each simulcast layer of a VP8 publisher numbers its frames on its own: a picture id
//! (RFC 7741 §4.2, 7 or 15 bits) counting frames, and a TL0PICIDX (8 bits) counting the
//! frames of temporal layer 0. A receiver's decoder finds a frame's references by those
//! numbers (libwebrtc's `RtpVp8RefFinder` looks up the base-layer frame by TL0PICIDX and
//! orders frames by picture id). When a leg moves from one layer to another, the numbers
//! would jump to another layer's counters, forward or back: a frame can then be matched
//! with a base-layer frame of the old layer that happened to carry the same TL0PICIDX, or
//! be taken for one older than what was decoded, and Chromium waits for a keyframe it has
//! to ask for (about a second of frozen picture, at random, depending on how the layers'
//! counters happen to lie). So every leg rewrites both, as mediasoup and LiveKit do: the
//! first packet after a switch (a keyframe) continues right after the last numbers the leg
//! sent, and the rest of that run keeps the same offset.
//!
//! A leg that never switches keeps offset zero, and its packets' payloads are shared, not
//! copied ([`Offsets::is_zero`]). KEYIDX is left alone (browsers do not send it).

/// Where the rewritable fields sit in a VP8 payload descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// The picture id, its byte offset, and whether it is the 15-bit form.
    pub picture_id: Option<(u16, usize, bool)>,
    /// The TL0PICIDX and its byte offset.
    pub tl0: Option<(u8, usize)>,
}

impl Descriptor {
    /// Reads the descriptor at the start of an RTP payload; `None` if it is cut short or
    /// carries neither field (nothing to rewrite). Never panics.
    pub fn parse(p: &[u8]) -> Option<Self> {
        let first = *p.first()?;
        if first & 0x80 == 0 {
            return None;
        }
        let x = *p.get(1)?;
        let mut i = 2;
        let mut picture_id = None;
        if x & 0x80 != 0 {
            let b = *p.get(i)?;
            if b & 0x80 != 0 {
                let lo = *p.get(i + 1)?;
                picture_id = Some((u16::from(b & 0x7F) << 8 | u16::from(lo), i, true));
                i += 2;
            } else {
                picture_id = Some((u16::from(b), i, false));
                i += 1;
            }
        }
        let mut tl0 = None;
        if x & 0x40 != 0 {
            tl0 = Some((*p.get(i)?, i));
        }
        (picture_id.is_some() || tl0.is_some()).then_some(Self { picture_id, tl0 })
    }
}

/// A VP8 packet's temporal layer (RFC 7741 §4.2): its TID, whether it is a layer sync
/// point (the Y bit: the frame refers only to base-layer frames, so a receiver may start
/// receiving its layer there), and the picture id that names its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Temporal {
    pub tid: u8,
    pub sync: bool,
    /// The picture id and whether it is the 15-bit form.
    pub picture_id: Option<(u16, bool)>,
}

impl Temporal {
    /// Reads the TID of a payload's descriptor: `None` when it carries none (no T bit: the
    /// stream has no temporal layers, or the packet is cut short). Never panics.
    pub fn parse(p: &[u8]) -> Option<Self> {
        let first = *p.first()?;
        if first & 0x80 == 0 {
            return None;
        }
        let x = *p.get(1)?;
        if x & 0x20 == 0 {
            return None;
        }
        let mut i = 2;
        let mut picture_id = None;
        if x & 0x80 != 0 {
            let b = *p.get(i)?;
            if b & 0x80 != 0 {
                picture_id = Some((u16::from(b & 0x7F) << 8 | u16::from(*p.get(i + 1)?), true));
                i += 2;
            } else {
                picture_id = Some((u16::from(b), false));
                i += 1;
            }
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        let t = *p.get(i)?;
        Some(Self {
            tid: t >> 6,
            sync: t & 0x20 != 0,
            picture_id,
        })
    }
}

/// What a leg subtracts from a packet's picture id (mod 2^15) and TL0PICIDX (mod 2^8).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offsets {
    pub picture_id: u16,
    pub tl0: u8,
}

impl Offsets {
    pub const ZERO: Self = Self { picture_id: 0, tl0: 0 };

    pub fn is_zero(self) -> bool {
        self == Self::ZERO
    }

    /// Rewrites the descriptor at the start of `payload` in place (a payload too short or
    /// without the fields is left as it is). A 7-bit picture id wraps within 7 bits.
    pub fn apply(self, payload: &mut [u8]) {
        let Some(d) = Descriptor::parse(payload) else { return };
        if let Some((pid, at, long)) = d.picture_id {
            let out = pid.wrapping_sub(self.picture_id);
            if long {
                let out = out & 0x7FFF;
                payload[at] = 0x80 | (out >> 8) as u8;
                payload[at + 1] = out as u8;
            } else {
                payload[at] = (out & 0x7F) as u8;
            }
        }
        if let Some((tl0, at)) = d.tl0 {
            payload[at] = tl0.wrapping_sub(self.tl0);
        }
    }
}

/// Whether `a` comes after `b` among 15-bit picture ids.
fn pid_after(a: u16, b: u16) -> bool {
    let d = a.wrapping_sub(b) & 0x7FFF;
    d != 0 && d < 0x4000
}

/// One leg's picture id and TL0PICIDX numbering.
#[derive(Debug, Clone, Default)]
pub struct Vp8Rewriter {
    offsets: Offsets,
    /// The highest picture id and TL0PICIDX (in modular order) the leg sent.
    last_pid: Option<u16>,
    last_tl0: Option<u8>,
    /// The next packet starts a new run, right after `last_*`.
    resync: bool,
}

impl Vp8Rewriter {
    /// The next packet starts a new run (a simulcast switch, the publisher's stream
    /// restarting): its numbers follow the last ones sent.
    pub fn resync(&mut self) {
        self.resync = true;
    }

    /// The offsets for the packet whose payload is `payload`, remembering what it sends.
    pub fn offsets_for(&mut self, payload: &[u8]) -> Offsets {
        self.offsets_shifted(payload, 0)
    }

    /// [`offsets_for`](Self::offsets_for) with `shift` more taken off the picture id: the
    /// frames of the run a temporal cap dropped before this one ([`super::temporal`]), so the
    /// picture ids the subscriber sees run on without a gap.
    pub fn offsets_shifted(&mut self, payload: &[u8], shift: u16) -> Offsets {
        let shifted = |o: Offsets| Offsets {
            picture_id: o.picture_id.wrapping_add(shift) & 0x7FFF,
            tl0: o.tl0,
        };
        let Some(d) = Descriptor::parse(payload) else {
            return shifted(self.offsets);
        };
        if std::mem::take(&mut self.resync) {
            if let (Some((pid, _, _)), Some(last)) = (d.picture_id, self.last_pid) {
                self.offsets.picture_id = pid.wrapping_sub(last.wrapping_add(1)).wrapping_sub(shift) & 0x7FFF;
            }
            if let (Some((tl0, _)), Some(last)) = (d.tl0, self.last_tl0) {
                self.offsets.tl0 = tl0.wrapping_sub(last.wrapping_add(1));
            }
        }
        let offsets = shifted(self.offsets);
        if let Some((pid, _, long)) = d.picture_id {
            let mask = if long { 0x7FFF } else { 0x7F };
            let out = pid.wrapping_sub(offsets.picture_id) & mask;
            if self.last_pid.is_none_or(|last| pid_after(out, last)) {
                self.last_pid = Some(out);
            }
        }
        if let Some((tl0, _)) = d.tl0 {
            let out = tl0.wrapping_sub(self.offsets.tl0);
            if self.last_tl0.is_none_or(|last| (out.wrapping_sub(last) as i8) > 0) {
                self.last_tl0 = Some(out);
            }
        }
        offsets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A descriptor with a 15-bit picture id, a TL0PICIDX and a temporal index, then a
    /// VP8 frame tag (`key` clears its P bit).
    fn packet(pid: u16, tl0: u8, tid: u8, key: bool) -> Vec<u8> {
        vec![
            0x90,
            0xE0,
            0x80 | (pid >> 8) as u8,
            pid as u8,
            tl0,
            tid << 6,
            if key { 0x00 } else { 0x01 },
            0xAB,
        ]
    }

    fn read(p: &[u8]) -> (u16, u8) {
        let d = Descriptor::parse(p).expect("descriptor");
        (d.picture_id.expect("pid").0, d.tl0.expect("tl0").0)
    }

    fn send(rw: &mut Vp8Rewriter, mut p: Vec<u8>) -> (u16, u8) {
        let off = rw.offsets_for(&p);
        off.apply(&mut p);
        read(&p)
    }

    #[test]
    fn parses_every_descriptor_shape_and_refuses_short_ones() {
        assert_eq!(read(&packet(0x1234, 7, 0, true)), (0x1234, 7));
        // 7-bit picture id, no TL0PICIDX.
        let d = Descriptor::parse(&[0x90, 0x80, 0x15, 0x00]).unwrap();
        assert_eq!((d.picture_id, d.tl0), (Some((0x15, 2, false)), None));
        // TL0PICIDX only.
        let d = Descriptor::parse(&[0x80, 0x40, 0x09, 0x00]).unwrap();
        assert_eq!((d.picture_id, d.tl0), (None, Some((9, 2))));
        // No X, or X with neither I nor L: nothing to rewrite.
        assert_eq!(Descriptor::parse(&[0x10, 0x00]), None);
        assert_eq!(Descriptor::parse(&[0x80, 0x20, 0x40]), None);
        // Cut short anywhere.
        let full = packet(0x1234, 7, 0, true);
        for n in 0..5 {
            assert_eq!(Descriptor::parse(&full[..n]), None, "{n} bytes");
        }
        assert_eq!(Descriptor::parse(&[]), None);
    }

    #[test]
    fn a_leg_that_never_switches_passes_numbers_unchanged() {
        let mut rw = Vp8Rewriter::default();
        for (i, pid) in (0x7FF0u16..0x7FFF).chain(0..0x10).enumerate() {
            let p = packet(pid, i as u8 / 3, (i % 3) as u8, i == 0);
            assert!(rw.offsets_for(&p).is_zero());
        }
    }

    #[test]
    fn a_switch_continues_right_after_the_last_numbers_sent() {
        let mut rw = Vp8Rewriter::default();
        for pid in 100..110u16 {
            send(&mut rw, packet(pid, (pid / 2) as u8, 0, false));
        }
        // The old layer's last: picture id 109, TL0PICIDX 54. The new layer's counters are
        // elsewhere, behind in picture id and ahead in TL0PICIDX.
        rw.resync();
        assert_eq!(send(&mut rw, packet(20, 200, 0, true)), (110, 55));
        assert_eq!(send(&mut rw, packet(21, 200, 2, false)), (111, 55));
        assert_eq!(send(&mut rw, packet(22, 200, 1, false)), (112, 55));
        assert_eq!(send(&mut rw, packet(24, 201, 0, false)), (114, 56), "a gap stays a gap");
        // A late packet of the run keeps the run's offset and does not move the high mark.
        assert_eq!(send(&mut rw, packet(23, 200, 2, false)), (113, 55));
        rw.resync();
        assert_eq!(send(&mut rw, packet(5000, 3, 0, true)), (115, 57));
    }

    #[test]
    fn numbers_wrap_in_their_own_widths() {
        let mut rw = Vp8Rewriter::default();
        send(&mut rw, packet(0x7FFE, 0xFE, 0, false));
        send(&mut rw, packet(0x7FFF, 0xFF, 0, false));
        rw.resync();
        assert_eq!(send(&mut rw, packet(10, 10, 0, true)), (0, 0));
        assert_eq!(send(&mut rw, packet(11, 11, 0, false)), (1, 1));
        // A 7-bit picture id wraps at 128.
        let mut rw = Vp8Rewriter::default();
        let short = |pid: u8| vec![0x90, 0x80, pid & 0x7F, 0x00];
        let mut p = short(126);
        rw.offsets_for(&p).apply(&mut p);
        rw.resync();
        let mut p = short(40);
        rw.offsets_for(&p).apply(&mut p);
        assert_eq!(p[2], 127);
        let mut p = short(41);
        rw.offsets_for(&p).apply(&mut p);
        assert_eq!(p[2], 0);
    }

    #[test]
    fn the_first_run_starts_at_the_publishers_numbers() {
        let mut rw = Vp8Rewriter::default();
        rw.resync();
        assert_eq!(send(&mut rw, packet(777, 9, 0, true)), (777, 9));
    }

    #[test]
    fn payloads_without_a_descriptor_field_change_nothing() {
        let mut rw = Vp8Rewriter::default();
        send(&mut rw, packet(100, 50, 0, false));
        rw.resync();
        // Padding (empty) and a descriptor without I or L: the resync waits for a real one.
        assert!(rw.offsets_for(&[]).is_zero());
        assert!(rw.offsets_for(&[0x10, 0x00]).is_zero());
        assert_eq!(send(&mut rw, packet(3, 3, 0, true)), (101, 51));
        let mut short = vec![0x90];
        rw.offsets_for(&short).apply(&mut short);
        assert_eq!(short, [0x90]);
    }

    #[test]
    fn the_temporal_index_is_read_with_its_sync_bit_and_only_where_the_t_bit_says() {
        let t = |p: &[u8]| Temporal::parse(p).map(|t| (t.tid, t.sync, t.picture_id));
        // I, L and T: 15-bit picture id, TL0PICIDX, then TID 2 with Y.
        assert_eq!(
            t(&[0x90, 0xE0, 0x81, 0x23, 0x07, 0xA0, 0x01]),
            Some((2, true, Some((0x0123, true))))
        );
        assert_eq!(t(&packet(0x0456, 9, 1, false)), Some((1, false, Some((0x0456, true)))));
        // T without I or L: the byte right after X.
        assert_eq!(t(&[0x90, 0x20, 0x40, 0x01]), Some((1, false, None)));
        // A 7-bit picture id, no TL0PICIDX.
        assert_eq!(
            t(&[0x90, 0xA0, 0x15, 0xC0, 0x01]),
            Some((3, false, Some((0x15, false))))
        );
        // K without T (a KEYIDX, no TID), no T at all, no X: no temporal layers.
        assert_eq!(t(&[0x90, 0xD0, 0x81, 0x23, 0x07, 0x05, 0x01]), None);
        assert_eq!(t(&[0x90, 0xC0, 0x81, 0x23, 0x07, 0x01]), None);
        assert_eq!(t(&[0x10, 0x01, 0x02]), None);
        // Cut short anywhere before the TID byte.
        let full = [0x90, 0xE0, 0x81, 0x23, 0x07, 0xA0, 0x01];
        for n in 0..6 {
            assert_eq!(t(&full[..n]), None, "{n} bytes");
        }
    }

    #[test]
    fn a_shift_takes_dropped_frames_off_the_picture_id_and_a_switch_continues_after_it() {
        let mut rw = Vp8Rewriter::default();
        let mut send_shifted = |pid: u16, shift: u16, key: bool| {
            let mut p = packet(pid, 3, 0, key);
            rw.offsets_shifted(&p, shift).apply(&mut p);
            read(&p).0
        };
        assert_eq!(send_shifted(0x7FFC, 0, false), 0x7FFC);
        // 0x7FFD dropped: 0x7FFE follows 0x7FFC.
        assert_eq!(send_shifted(0x7FFE, 1, false), 0x7FFD);
        // 0x7FFF and 0 dropped as well: 1 follows, wrapping in 15 bits.
        assert_eq!(send_shifted(1, 3, false), 0x7FFE);
        // A switch after them (the cap's shift starts again at zero) continues right after.
        rw.resync();
        for (pid, out) in [(5000, 0x7FFF), (5001, 0)] {
            let mut p = packet(pid, 3, 0, pid == 5000);
            rw.offsets_shifted(&p, 0).apply(&mut p);
            assert_eq!(read(&p).0, out);
        }
    }

    #[test]
    fn apply_never_panics_on_any_short_prefix() {
        let off = Offsets {
            picture_id: 1234,
            tl0: 77,
        };
        let full = packet(0x0ABC, 5, 1, false);
        for n in 0..=full.len() {
            let mut p = full[..n].to_vec();
            off.apply(&mut p);
        }
    }
}
