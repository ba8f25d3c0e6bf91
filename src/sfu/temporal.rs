//! Temporal layers per leg (issue 12, "screen share is protected"), pure: a subscriber
//! whose downlink cannot take a screen share's full rate gets every frame of its lower
//! temporal layers, at full resolution, and none of the upper ones.
//!
//! A VP8 publisher that sends temporal layers (`scalabilityMode` `L1T2` or `L1T3`) tags every
//! packet with its frame's TID (RFC 7741 §4.2; [`Temporal`]): base-layer frames refer only to
//! base-layer frames, so a leg may leave out every frame above a cap and what it sends still
//! decodes, at a half or a quarter of the frame rate. Per leg a [`TemporalFilter`]:
//!
//! - decides per frame (by picture id), so no frame is ever cut in two, and a late packet of
//!   a frame goes where the frame went;
//! - changes its cap only at a safe point: down at any frame boundary; up one layer at a time,
//!   on a frame of the next layer that has the Y (layer sync) bit, or at once on a keyframe. A
//!   base-layer frame is no place to go up: libwebrtc's temporal patterns have upper-layer
//!   frames refer to an earlier frame of their own layer (through the golden or altref
//!   buffer), which a capped leg never sent; only a sync frame refers to the base alone;
//! - reports how many frames of the run it dropped before each frame it sends (the `shift`),
//!   which the leg takes off the picture id so the subscriber's picture ids run on without a
//!   gap (libwebrtc's VP8 reference finder waits for every missing picture id). The leg's
//!   sequence numbers close up over dropped packets as over padding
//!   ([`super::forward::SeqRewriter::skip`]), so the subscriber does not NACK them. TL0PICIDX
//!   needs nothing: base-layer frames are never dropped.
//!
//! Which cap a leg gets is [`cap_for`]'s: the highest temporal layer whose rate (with the
//! layers below it) fits what the subscriber's bandwidth estimate leaves the track.
//! [`TemporalRates`] measures those rates where the publisher's packets arrive.
//! Cameras could use the same cap below their lowest simulcast layer; they do not yet.

use std::time::{Duration, Instant};

use super::bwe::{RateMeter, UP_HEADROOM};
use super::vp8::Temporal;

/// The most temporal layers measured per track (VP8's TID has two bits).
pub const MAX_TEMPORAL: usize = 4;

/// A cap that forwards every temporal layer.
pub const ALL: u8 = u8::MAX;

/// Frames remembered per leg, for late packets (a retransmission from the publisher).
const FRAMES: usize = 32;

/// What a leg does with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it, `shift` frames taken off its picture id.
    Forward { shift: u16 },
    /// Its frame is above the cap. Should it go out all the same (its sequence number
    /// slot already passed), `shift` is its frame's.
    Drop { shift: u16 },
}

#[derive(Debug, Clone, Copy, Default)]
struct Frame {
    pid: u16,
    dropped: bool,
    /// Frames dropped in this run before it.
    shift: u16,
}

/// One leg's temporal cap and the frames it decided on.
#[derive(Debug, Clone)]
pub struct TemporalFilter {
    /// The cap the policy asks for, and the one in force (they differ until a safe point).
    target: u8,
    cap: u8,
    /// The newest frame's picture id.
    newest: Option<u16>,
    /// Frames dropped in this run so far.
    shift: u16,
    /// The last [`FRAMES`] frames, a ring (allocated inline: the hot path allocates nothing).
    frames: [Frame; FRAMES],
    next: usize,
    filled: usize,
}

impl Default for TemporalFilter {
    fn default() -> Self {
        Self {
            target: ALL,
            cap: ALL,
            newest: None,
            shift: 0,
            frames: [Frame::default(); FRAMES],
            next: 0,
            filled: 0,
        }
    }
}

/// Whether picture id `a` comes after `b` within `mask` (0x7FFF or 0x7F).
fn after(a: u16, b: u16, mask: u16) -> bool {
    let d = a.wrapping_sub(b) & mask;
    d != 0 && d <= mask / 2
}

impl TemporalFilter {
    /// The cap asked for ([`ALL`]: none).
    pub fn target(&self) -> u8 {
        self.target
    }

    /// The cap in force.
    pub fn cap(&self) -> u8 {
        self.cap
    }

    /// Asks for a cap; it takes effect at the next safe point.
    pub fn set_target(&mut self, target: u8) {
        self.target = target;
    }

    /// The stream starts a new run (a simulcast switch or a restart, on a keyframe): frames
    /// and shift start afresh, and the cap asked for holds from its first frame.
    pub fn reset(&mut self) {
        *self = Self {
            target: self.target,
            cap: self.target,
            ..Self::default()
        };
    }

    fn record(&mut self, frame: Frame) {
        self.frames[self.next] = frame;
        self.next = (self.next + 1) % FRAMES;
        self.filled = (self.filled + 1).min(FRAMES);
    }

    fn find(&self, pid: u16) -> Option<Frame> {
        self.frames[..self.filled].iter().find(|f| f.pid == pid).copied()
    }

    /// The packet of a frame with temporal info `t` (`None`: the packet carries no TID, or
    /// no picture id to tell frames by: it goes, with the run's shift); `keyframe` when it
    /// starts a keyframe.
    pub fn decide(&mut self, t: Option<Temporal>, keyframe: bool) -> Verdict {
        let Some((t, (pid, long))) = t.and_then(|t| Some((t, t.picture_id?))) else {
            return Verdict::Forward { shift: self.shift };
        };
        let mask = if long { 0x7FFF } else { 0x7F };
        if let Some(newest) = self.newest
            && !after(pid, newest, mask)
        {
            if let Some(f) = self.find(pid) {
                return match f.dropped {
                    true => Verdict::Drop { shift: f.shift },
                    false => Verdict::Forward { shift: f.shift },
                };
            }
            // A whole frame arrives late (it was lost on the way in and resent): nothing was
            // taken off for it, so it fills its own picture id slot, whatever its layer.
            // Its shift: that of the first remembered frame after it.
            let shift = self.frames[..self.filled]
                .iter()
                .filter(|f| after(f.pid, pid, mask))
                .min_by_key(|f| f.pid.wrapping_sub(pid) & mask)
                .map_or(self.shift, |f| f.shift);
            self.record(Frame {
                pid,
                dropped: false,
                shift,
            });
            return Verdict::Forward { shift };
        }
        // A new frame: a safe point to go down, or up where the frame allows it.
        self.newest = Some(pid);
        if self.target < self.cap || keyframe {
            self.cap = self.target;
        } else if self.target > self.cap && t.sync && t.tid == self.cap.saturating_add(1) {
            self.cap = t.tid;
        }
        let frame = Frame {
            pid,
            dropped: t.tid > self.cap,
            shift: self.shift,
        };
        self.record(frame);
        if frame.dropped {
            self.shift = self.shift.wrapping_add(1);
            return Verdict::Drop { shift: frame.shift };
        }
        Verdict::Forward { shift: frame.shift }
    }
}

/// The highest temporal layer a leg may have: `cumulative[k]` is the rate of layers 0 to `k`
/// together (one entry per layer the track sends), `share` what the subscriber's estimate
/// leaves the track, `current` the leg's cap now. Going `down` (the estimate dropped), the
/// highest that fits, never above `current` and never below the base layer (video is
/// reduced, not stopped); otherwise the highest that fits with [`UP_HEADROOM`] to spare,
/// never below `current`. [`ALL`] when the top layer is chosen, or the track has no layers.
pub fn cap_for(cumulative: &[u64], current: u8, share: u64, down: bool) -> u8 {
    let n = cumulative.len();
    if n <= 1 {
        return ALL;
    }
    let room = if down {
        share
    } else {
        (share as f64 / UP_HEADROOM) as u64
    };
    let fits = cumulative.iter().rposition(|&r| r <= room).unwrap_or(0);
    let fits = if fits == n - 1 { ALL } else { fits as u8 };
    let current = if usize::from(current) >= n - 1 { ALL } else { current };
    if down { fits.min(current) } else { fits.max(current) }
}

/// The rate each temporal layer of a track's encoding arrives at, and which ones arrive.
/// A packet without a TID counts as the base layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct TemporalRates {
    meters: [RateMeter; MAX_TEMPORAL],
    last: [Option<Instant>; MAX_TEMPORAL],
}

impl TemporalRates {
    pub fn add(&mut self, tid: Option<u8>, size: u64, now: Instant) {
        let tid = usize::from(tid.unwrap_or(0)).min(MAX_TEMPORAL - 1);
        self.meters[tid].add(size, now);
        self.last[tid] = Some(now);
    }

    /// Per layer up to the highest that arrived within `timeout`: the rate of it and those
    /// below, as [`cap_for`] takes them (one entry: no temporal layers).
    pub fn cumulative(&self, now: Instant, timeout: Duration) -> ([u64; MAX_TEMPORAL], usize) {
        let n = self
            .last
            .iter()
            .rposition(|at| at.is_some_and(|at| now.saturating_duration_since(at) < timeout))
            .map_or(1, |i| i + 1);
        let mut out = [0u64; MAX_TEMPORAL];
        let mut sum = 0;
        for (k, slot) in out.iter_mut().enumerate().take(n) {
            sum += self.meters[k].bps();
            *slot = sum;
        }
        (out, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(pid: u16, tid: u8, sync: bool) -> Option<Temporal> {
        Some(Temporal {
            tid,
            sync,
            picture_id: Some((pid, true)),
        })
    }

    const FWD: fn(u16) -> Verdict = |shift| Verdict::Forward { shift };
    const DROP: fn(u16) -> Verdict = |shift| Verdict::Drop { shift };

    /// libwebrtc's L1T2 pattern from picture id `from`: TID 0, 1 (sync), 0, 1, ...
    /// (every other TL1 frame a sync frame).
    fn l1t2(pid: u16) -> (u8, bool) {
        match pid % 4 {
            0 | 2 => (0, false),
            1 => (1, true),
            _ => (1, false),
        }
    }

    #[test]
    fn an_uncapped_leg_forwards_everything_unshifted() {
        let mut f = TemporalFilter::default();
        for pid in 0..40 {
            let (tid, sync) = l1t2(pid);
            assert_eq!(f.decide(t(pid, tid, sync), false), FWD(0));
        }
        assert_eq!(f.decide(None, false), FWD(0), "no TID");
    }

    #[test]
    fn a_cap_drops_the_upper_frames_and_shifts_the_later_ones() {
        let mut f = TemporalFilter::default();
        f.set_target(0);
        let out: Vec<Verdict> = (0..8)
            .map(|pid| {
                let (tid, sync) = l1t2(pid);
                f.decide(t(pid, tid, sync), false)
            })
            .collect();
        assert_eq!(
            out,
            [FWD(0), DROP(0), FWD(1), DROP(1), FWD(2), DROP(2), FWD(3), DROP(3)]
        );
        // Every packet of a frame goes the way its frame went, late ones too.
        assert_eq!(f.decide(t(2, 0, false), false), FWD(1));
        assert_eq!(f.decide(t(3, 1, false), false), DROP(1));
        // The picture ids the subscriber sees: 0, 1, 2, 3 for 0, 2, 4, 6.
        let sent: Vec<u16> = (0..8u16)
            .filter_map(|pid| match f.find(pid)? {
                Frame {
                    dropped: false, shift, ..
                } => Some(pid - shift),
                _ => None,
            })
            .collect();
        assert_eq!(sent, [0, 1, 2, 3]);
    }

    #[test]
    fn a_cap_goes_down_at_the_next_frame_and_never_inside_one() {
        let mut f = TemporalFilter::default();
        assert_eq!(f.decide(t(1, 1, true), false), FWD(0));
        f.set_target(0);
        // The rest of frame 1 still goes: its first packet went.
        assert_eq!(f.decide(t(1, 1, true), false), FWD(0));
        assert_eq!(f.cap(), ALL);
        assert_eq!(f.decide(t(2, 0, false), false), FWD(0));
        assert_eq!(f.cap(), 0);
        assert_eq!(f.decide(t(3, 1, false), false), DROP(0));
    }

    #[test]
    fn a_cap_goes_up_only_on_a_sync_frame_of_the_next_layer_or_a_keyframe() {
        let mut f = TemporalFilter::default();
        f.set_target(0);
        assert_eq!(f.decide(t(0, 0, false), false), FWD(0));
        f.set_target(ALL);
        // Not on a base-layer frame, nor on a TL1 frame without Y, nor on a TL2 sync frame
        // (two layers up: the TL1 frames after it would refer to TL1 frames never sent).
        assert_eq!(f.decide(t(1, 1, false), false), DROP(0));
        assert_eq!(f.decide(t(2, 0, false), false), FWD(1));
        assert_eq!(f.decide(t(3, 2, true), false), DROP(1));
        assert_eq!(f.cap(), 0);
        // TL1 with Y: up one layer.
        assert_eq!(f.decide(t(4, 1, true), false), FWD(2));
        assert_eq!(f.cap(), 1);
        assert_eq!(f.decide(t(5, 2, false), false), DROP(2));
        assert_eq!(f.decide(t(6, 2, true), false), FWD(3));
        assert_eq!(f.cap(), 2);
        // A keyframe lifts any cap at once.
        let mut f = TemporalFilter::default();
        f.set_target(0);
        f.decide(t(10, 0, false), false);
        f.set_target(2);
        assert_eq!(f.decide(t(11, 0, false), true), FWD(0));
        assert_eq!(f.cap(), 2);
        assert_eq!(f.decide(t(12, 2, false), false), FWD(0));
    }

    #[test]
    fn a_whole_frame_arriving_late_fills_its_own_slot() {
        let mut f = TemporalFilter::default();
        f.set_target(0);
        assert_eq!(f.decide(t(0, 0, false), false), FWD(0));
        assert_eq!(f.decide(t(1, 1, true), false), DROP(0));
        // 2 lost on the way in; 3 dropped, 4 sent shifted by two.
        assert_eq!(f.decide(t(3, 1, false), false), DROP(1));
        assert_eq!(f.decide(t(4, 0, false), false), FWD(2));
        // 2 arrives: one frame was dropped before it, so it is sent as 1 (between 0 and 4 - 2).
        assert_eq!(f.decide(t(2, 0, false), false), FWD(1));
        assert_eq!(f.decide(t(2, 0, false), false), FWD(1), "its second packet");
    }

    #[test]
    fn picture_ids_wrap_and_short_ones_wrap_at_128() {
        let mut f = TemporalFilter::default();
        f.set_target(0);
        let mut shifts = Vec::new();
        for (i, pid) in (0x7FFCu16..=0x7FFF).chain(0..4).enumerate() {
            shifts.push(f.decide(t(pid, (i % 2) as u8, false), false));
        }
        assert_eq!(
            shifts,
            [FWD(0), DROP(0), FWD(1), DROP(1), FWD(2), DROP(2), FWD(3), DROP(3)]
        );
        let short = |pid: u16, tid: u8| {
            Some(Temporal {
                tid,
                sync: false,
                picture_id: Some((pid, false)),
            })
        };
        let mut f = TemporalFilter::default();
        f.set_target(0);
        assert_eq!(f.decide(short(127, 0), false), FWD(0));
        assert_eq!(f.decide(short(0, 1), false), DROP(0));
        assert_eq!(f.decide(short(1, 0), false), FWD(1), "0 comes after 127");
        assert_eq!(f.decide(short(127, 0), false), FWD(0), "late, not new");
    }

    #[test]
    fn a_reset_starts_a_run_under_the_cap_asked_for() {
        let mut f = TemporalFilter::default();
        f.set_target(0);
        f.decide(t(0, 0, false), false);
        f.decide(t(1, 1, false), false);
        f.set_target(1);
        f.reset();
        assert_eq!((f.cap(), f.target()), (1, 1));
        // The new layer's picture ids start anywhere; nothing shifted yet.
        assert_eq!(f.decide(t(900, 1, false), false), FWD(0));
        // Packets without a picture id or a TID pass with the run's shift.
        f.set_target(0);
        f.decide(t(901, 0, false), false);
        f.decide(t(902, 1, false), false);
        let no_pid = Some(Temporal {
            tid: 1,
            sync: false,
            picture_id: None,
        });
        assert_eq!(f.decide(no_pid, false), FWD(1));
    }

    #[test]
    fn the_policy_takes_the_highest_layer_that_fits_and_holds_its_direction() {
        // TL0 400k, TL0+1 700k, all 1 Mbit/s.
        let r = [400_000, 700_000, 1_000_000];
        // Down: what fits, never above the current cap, never below the base layer.
        assert_eq!(cap_for(&r, ALL, 1_200_000, true), ALL);
        assert_eq!(cap_for(&r, ALL, 1_000_000, true), ALL);
        assert_eq!(cap_for(&r, ALL, 999_999, true), 1);
        assert_eq!(cap_for(&r, ALL, 500_000, true), 0);
        assert_eq!(cap_for(&r, ALL, 100_000, true), 0, "the base layer at least");
        assert_eq!(cap_for(&r, 0, 1_200_000, true), 0, "a drop never raises");
        // Up: with headroom, never below the current cap.
        assert_eq!(cap_for(&r, 0, 1_000_000, false), 1, "1 Mbit/s fits with no headroom");
        assert_eq!(cap_for(&r, 0, 1_200_000, false), ALL);
        assert_eq!(cap_for(&r, 1, 100_000, false), 1, "going up never lowers");
        assert_eq!(cap_for(&r, 0, 0, false), 0);
        // A current cap at or above the top layer is no cap.
        assert_eq!(cap_for(&r, 2, 2_000_000, true), ALL);
        // No temporal layers: nothing to cap.
        assert_eq!(cap_for(&[1_000_000], ALL, 10, true), ALL);
        assert_eq!(cap_for(&[], ALL, 10, true), ALL);
        // Not measured yet (zero rates): everything fits.
        assert_eq!(cap_for(&[0, 0], ALL, 10, true), ALL);
    }

    #[test]
    fn rates_add_up_per_layer_and_a_silent_layer_is_not_counted() {
        let t0 = Instant::now();
        let mut r = TemporalRates::default();
        assert_eq!(r.cumulative(t0, Duration::from_secs(2)).1, 1);
        // 1 s of TL0 at 100 packets of 500 bytes and TL1 at 50 of 500: 400 and 200 kbit/s.
        for i in 0..=100u64 {
            let at = t0 + Duration::from_millis(10 * i);
            r.add(Some(0), 500, at);
            if i % 2 == 0 {
                r.add(Some(1), 500, at);
            }
        }
        let now = t0 + Duration::from_secs(1);
        let (c, n) = r.cumulative(now, Duration::from_secs(2));
        assert_eq!(n, 2);
        assert!((395_000..=405_000).contains(&c[0]), "{c:?}");
        assert!((590_000..=610_000).contains(&(c[1])), "{c:?}");
        // Packets without a TID count as the base layer; TID 1 silent for the timeout: gone.
        r.add(None, 500, now + Duration::from_secs(3));
        assert_eq!(r.cumulative(now + Duration::from_secs(3), Duration::from_secs(2)).1, 1);
    }
}
