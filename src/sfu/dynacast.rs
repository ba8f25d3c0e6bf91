//! Which simulcast layers a publisher should send (issue 12, "dynacast" as LiveKit calls
//! it), pure. A publisher encodes every layer it offered whether or not anyone receives it;
//! a layer no subscriber needs costs the publisher's CPU and uplink for nothing, which on a
//! guest's phone or hotel Wi-Fi is what it can least spare. So per published track the media
//! room works out the best layer any subscriber needs (from the qualities their tiles ask
//! for, `set_subscription`), and this machine decides when to tell the publisher
//! (`publisher_layers`): layers above that one paused, the rest active.
//!
//! - **Up at once**: a subscriber that needs a better layer than the publisher sends gets it
//!   resumed on the next evaluation (the leg takes the best layer sending meanwhile and
//!   switches up on the resumed layer's first keyframe).
//! - **Down after [`HOLD`]**: a need that fell must stay fallen that long first, so a tile
//!   being resized or a subscriber rejoining does not pause and resume an encoder (each
//!   resume costs a keyframe).
//! - **The lowest layer is never paused**: it is what a new subscriber starts on, and it is
//!   cheap (a quarter of the resolution).
//! - **Told again** when a paused layer is still arriving [`RETELL`] after the publisher was
//!   told (its client missed the frame, or reconnected and started all layers again).
//!
//! Ranks are the layers' quality order (`forward::simulcast_ranks`; 0 lowest).

use std::time::{Duration, Instant};

/// How long a lower need must last before the layers above it are paused.
pub const HOLD: Duration = Duration::from_secs(3);

/// How long a paused layer may still arrive before the publisher is told again.
pub const RETELL: Duration = Duration::from_secs(2);

/// One track's layers as the publisher was told.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dynacast {
    /// The best rank the publisher was told to send; `None`: never told (it sends all).
    told: Option<u8>,
    /// When it was told.
    told_at: Option<Instant>,
    /// Since when the need has been below `told` (or below everything, untold).
    lower_since: Option<Instant>,
}

/// What the media room knows of a track at one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// The best rank any subscriber needs now; `None` when nobody receives the track.
    pub needed: Option<u8>,
    /// The track's lowest and best ranks (among the layers it has sent).
    pub lowest: u8,
    pub best: u8,
    /// Whether a layer above what the publisher was told arrived lately.
    pub paused_layer_arriving: bool,
}

impl Dynacast {
    /// The best rank the publisher should send now, if it must be told (again).
    pub fn evaluate(&mut self, need: Need, now: Instant) -> Option<u8> {
        if need.best <= need.lowest {
            // One layer (or none seen yet): nothing to pause.
            return None;
        }
        let want = need.needed.unwrap_or(need.lowest).clamp(need.lowest, need.best);
        let sending = self.told.unwrap_or(need.best);
        if want > sending {
            return Some(self.tell(want, now));
        }
        if want < sending {
            let since = *self.lower_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= HOLD {
                return Some(self.tell(want, now));
            }
            return None;
        }
        self.lower_since = None;
        let retell = need.paused_layer_arriving
            && self.told.is_some_and(|t| t < need.best)
            && self
                .told_at
                .is_some_and(|at| now.saturating_duration_since(at) >= RETELL);
        retell.then(|| self.tell(want, now))
    }

    /// The best rank the publisher was told to send (`None`: all, never told otherwise).
    pub fn told(&self) -> Option<u8> {
        self.told
    }

    /// The publisher's layers started again from scratch (a new connection): it sends
    /// all of them until told otherwise.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    fn tell(&mut self, rank: u8, now: Instant) -> u8 {
        self.told = Some(rank);
        self.told_at = Some(now);
        self.lower_since = None;
        rank
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(needed: Option<u8>) -> Need {
        Need {
            needed,
            lowest: 0,
            best: 2,
            paused_layer_arriving: false,
        }
    }

    #[test]
    fn a_track_everyone_needs_at_its_best_is_never_told_anything() {
        let mut d = Dynacast::default();
        let t0 = Instant::now();
        for s in 0..20 {
            assert_eq!(d.evaluate(need(Some(2)), t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(d.told(), None);
    }

    #[test]
    fn a_lower_need_pauses_the_layers_above_it_only_after_the_hold() {
        let mut d = Dynacast::default();
        let t0 = Instant::now();
        assert_eq!(d.evaluate(need(Some(0)), t0), None);
        assert_eq!(d.evaluate(need(Some(0)), t0 + HOLD - Duration::from_millis(1)), None);
        assert_eq!(d.evaluate(need(Some(0)), t0 + HOLD), Some(0));
        assert_eq!(d.told(), Some(0));
        // Said once: nothing more while the need stays.
        assert_eq!(d.evaluate(need(Some(0)), t0 + HOLD * 3), None);
    }

    #[test]
    fn a_need_that_comes_back_within_the_hold_changes_nothing() {
        let mut d = Dynacast::default();
        let t0 = Instant::now();
        assert_eq!(d.evaluate(need(Some(1)), t0), None);
        assert_eq!(d.evaluate(need(Some(2)), t0 + HOLD / 2), None);
        // The hold starts again from the next fall.
        assert_eq!(d.evaluate(need(Some(1)), t0 + HOLD), None);
        assert_eq!(d.evaluate(need(Some(1)), t0 + HOLD + HOLD / 2), None);
        assert_eq!(d.evaluate(need(Some(1)), t0 + HOLD * 2), Some(1));
    }

    #[test]
    fn a_higher_need_resumes_at_once() {
        let mut d = Dynacast::default();
        let t0 = Instant::now();
        d.evaluate(need(Some(0)), t0);
        assert_eq!(d.evaluate(need(Some(0)), t0 + HOLD), Some(0));
        let t1 = t0 + HOLD + Duration::from_millis(100);
        assert_eq!(d.evaluate(need(Some(2)), t1), Some(2));
        assert_eq!(d.told(), Some(2));
        // A step between resumes what it needs, no more.
        let mut d = Dynacast::default();
        d.evaluate(need(None), t0);
        assert_eq!(d.evaluate(need(None), t0 + HOLD), Some(0));
        assert_eq!(d.evaluate(need(Some(1)), t1), Some(1));
    }

    #[test]
    fn nobody_receiving_keeps_the_lowest_layer_only() {
        let mut d = Dynacast::default();
        let t0 = Instant::now();
        d.evaluate(need(None), t0);
        assert_eq!(d.evaluate(need(None), t0 + HOLD), Some(0));
        // Non-zero lowest rank (a publisher sending `h` and `f` only): never below it.
        let mut d = Dynacast::default();
        let two = Need {
            needed: None,
            lowest: 1,
            best: 2,
            paused_layer_arriving: false,
        };
        d.evaluate(two, t0);
        assert_eq!(d.evaluate(two, t0 + HOLD), Some(1));
    }

    #[test]
    fn needs_outside_the_tracks_layers_are_clamped() {
        let mut d = Dynacast::default();
        let t0 = Instant::now();
        // `high` is rank 255 before clamping: the best there is, so nothing to tell.
        assert_eq!(d.evaluate(need(Some(u8::MAX)), t0), None);
        d.evaluate(need(Some(0)), t0);
        assert_eq!(d.evaluate(need(Some(0)), t0 + HOLD), Some(0));
        assert_eq!(d.evaluate(need(Some(u8::MAX)), t0 + HOLD * 2), Some(2));
    }

    #[test]
    fn one_layer_is_never_paused() {
        let mut d = Dynacast::default();
        let t0 = Instant::now();
        let one = Need {
            needed: None,
            lowest: 0,
            best: 0,
            paused_layer_arriving: true,
        };
        for s in 0..10 {
            assert_eq!(d.evaluate(one, t0 + Duration::from_secs(s)), None);
        }
    }

    #[test]
    fn a_paused_layer_still_arriving_is_told_again_after_a_while() {
        let mut d = Dynacast::default();
        let t0 = Instant::now();
        d.evaluate(need(Some(0)), t0);
        assert_eq!(d.evaluate(need(Some(0)), t0 + HOLD), Some(0));
        let arriving = Need {
            paused_layer_arriving: true,
            ..need(Some(0))
        };
        // In flight, or the client is applying it: not yet.
        assert_eq!(d.evaluate(arriving, t0 + HOLD + RETELL / 2), None);
        assert_eq!(d.evaluate(arriving, t0 + HOLD + RETELL), Some(0));
        // And again only after another while.
        assert_eq!(d.evaluate(arriving, t0 + HOLD + RETELL + RETELL / 2), None);
        assert_eq!(d.evaluate(arriving, t0 + HOLD + RETELL * 2), Some(0));
        // Nothing paused (told the best): arriving layers are no reason to tell.
        let mut d = Dynacast::default();
        assert_eq!(
            d.evaluate(
                Need {
                    paused_layer_arriving: true,
                    ..need(Some(2))
                },
                t0 + HOLD * 5
            ),
            None
        );
    }

    #[test]
    fn reset_forgets_what_was_told() {
        let mut d = Dynacast::default();
        let t0 = Instant::now();
        d.evaluate(need(Some(0)), t0);
        d.evaluate(need(Some(0)), t0 + HOLD);
        d.reset();
        assert_eq!(d.told(), None);
        // A new connection sends all again: the hold runs again before pausing.
        assert_eq!(d.evaluate(need(Some(0)), t0 + HOLD * 2), None);
        assert_eq!(d.evaluate(need(Some(0)), t0 + HOLD * 3), Some(0));
    }
}
