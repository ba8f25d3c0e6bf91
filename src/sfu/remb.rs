//! What a publisher without simulcast is asked to send at most (REMB), pure.
//!
//! A simulcast track adapts per subscriber: each leg takes the layer its path carries
//! ([`super::bwe`]). A track of one layer (a camera published with `?simulcast=0`, a
//! browser that would not simulcast, a screen share) cannot: a subscriber behind a
//! narrow path gets more than fits, loses a share of it, and freezes. The publisher's
//! encoder is the only place that can make it smaller, so the gateway tells the
//! publisher's browser a bitrate to stay under, with an RTCP REMB (receiver estimated
//! maximum bitrate, draft-alvestrand-rmcat-remb), which libwebrtc applies as an upper
//! bound on its own estimate. A browser asked to send less lowers its quality the way
//! its track's content hint says: a screen share (`contentHint = 'detail'`) keeps its
//! resolution and drops frame rate first.
//!
//! The policy, per single-layer video track: each subscriber leg whose connection's
//! estimate has dropped offers its share of that estimate (audio taken off first, the
//! rest split among its video legs, as the layer caps do); a leg on a path never found
//! short offers no limit. The track's limit is the lowest share in a meeting of up to
//! three subscribers (a 1:1 call follows its one subscriber), and in a larger one the
//! share at the lowest quarter: one slow subscriber among four or more does not lower
//! everybody's picture; it keeps losing some of it. Never under [`FLOOR_BPS`].
//! A publisher connection is told the sum of its tracks' needs, audio included, only
//! when all of its video is single-layer (REMB bounds the whole connection, and a
//! simulcast camera on it adapts already; documented in ARCHITECTURE).

use std::time::{Duration, Instant};

/// Never ask a publisher for less than this (an encoder below it shows nothing useful).
pub const FLOOR_BPS: u64 = 100_000;
/// What a publisher is told when nothing limits it any more: far above any camera or
/// screen share, so its own estimate rules again.
pub const LIFTED_BPS: u64 = 50_000_000;
/// A limit still in force is told again this often (an RTCP packet can be lost).
pub const REFRESH: Duration = Duration::from_secs(1);
/// A limit is told again at once when it moved by more than this share.
pub const CHANGE: f64 = 0.10;
/// How many times a lifted limit is told (each [`REFRESH`]), in case some are lost.
pub const LIFT_REPEATS: u8 = 3;

/// The limit of one single-layer track from its legs' shares (`None`: that leg's path
/// limits nothing). `None` when no leg limits it. Sorts `shares` in place.
pub fn track_limit(shares: &mut [Option<u64>]) -> Option<u64> {
    if shares.is_empty() {
        return None;
    }
    shares.sort_unstable_by_key(|s| s.unwrap_or(u64::MAX));
    let at = if shares.len() <= 3 { 0 } else { shares.len() / 4 };
    shares[at].map(|bps| bps.max(FLOOR_BPS))
}

/// One publisher connection's REMB state: what it was last told and when.
#[derive(Debug, Clone, Default)]
pub struct Remb {
    told: Option<(u64, Instant)>,
    /// A lifted limit still to be repeated this many times.
    lifting: u8,
}

impl Remb {
    /// The connection's limit now (`None`: nothing limits it). Returns the bitrate to
    /// tell the publisher now, if any.
    pub fn evaluate(&mut self, limit: Option<u64>, now: Instant) -> Option<u64> {
        match (limit, self.told) {
            (Some(bps), told) => {
                let due = told.is_none_or(|(was, at)| {
                    now.saturating_duration_since(at) >= REFRESH
                        || (bps as f64 - was as f64).abs() > was as f64 * CHANGE
                });
                self.lifting = 0;
                if due {
                    self.told = Some((bps, now));
                    return Some(bps);
                }
                None
            }
            (None, Some((was, at))) => {
                if was != LIFTED_BPS {
                    self.lifting = LIFT_REPEATS;
                }
                if self.lifting > 0 && (was != LIFTED_BPS || now.saturating_duration_since(at) >= REFRESH) {
                    self.lifting -= 1;
                    self.told = (self.lifting > 0).then_some((LIFTED_BPS, now));
                    return Some(LIFTED_BPS);
                }
                None
            }
            (None, None) => None,
        }
    }

    /// The limit in force, if one is (for the debug view).
    pub fn limit(&self) -> Option<u64> {
        self.told.map(|(bps, _)| bps).filter(|bps| *bps != LIFTED_BPS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn a_small_meeting_follows_its_slowest_subscriber() {
        assert_eq!(track_limit(&mut []), None);
        assert_eq!(track_limit(&mut [None]), None);
        assert_eq!(track_limit(&mut [Some(250_000)]), Some(250_000));
        assert_eq!(track_limit(&mut [None, Some(400_000), Some(250_000)]), Some(250_000));
        assert_eq!(
            track_limit(&mut [Some(20_000)]),
            Some(FLOOR_BPS),
            "never under the floor"
        );
    }

    #[test]
    fn in_a_larger_meeting_one_slow_subscriber_limits_nobody() {
        let mut four = [Some(200_000), None, None, None];
        assert_eq!(track_limit(&mut four), None);
        let mut four = [Some(200_000), Some(600_000), None, None];
        assert_eq!(track_limit(&mut four), Some(600_000), "the lowest quarter decides");
        let mut eight = [
            Some(150_000),
            Some(180_000),
            Some(900_000),
            None,
            None,
            None,
            None,
            None,
        ];
        assert_eq!(track_limit(&mut eight), Some(900_000));
        let mut eight = [
            Some(150_000),
            Some(180_000),
            Some(300_000),
            Some(350_000),
            None,
            None,
            None,
            None,
        ];
        assert_eq!(track_limit(&mut eight), Some(300_000));
    }

    #[test]
    fn a_limit_is_told_at_once_again_on_a_change_and_refreshed_each_second() {
        let t0 = Instant::now();
        let mut r = Remb::default();
        assert_eq!(r.evaluate(None, t0), None, "nothing to tell a free publisher");
        assert_eq!(r.evaluate(Some(300_000), t0), Some(300_000));
        assert_eq!(r.limit(), Some(300_000));
        assert_eq!(r.evaluate(Some(310_000), t0 + MS(200)), None, "a small move waits");
        assert_eq!(
            r.evaluate(Some(250_000), t0 + MS(300)),
            Some(250_000),
            "a larger one not"
        );
        assert_eq!(r.evaluate(Some(250_000), t0 + MS(1200)), None);
        assert_eq!(r.evaluate(Some(260_000), t0 + MS(1300)), Some(260_000), "refreshed");
    }

    #[test]
    fn a_lifted_limit_is_told_a_few_times_then_nothing() {
        let t0 = Instant::now();
        let mut r = Remb::default();
        r.evaluate(Some(300_000), t0);
        assert_eq!(r.evaluate(None, t0 + MS(100)), Some(LIFTED_BPS), "at once");
        assert_eq!(r.limit(), None);
        assert_eq!(r.evaluate(None, t0 + MS(500)), None);
        assert_eq!(r.evaluate(None, t0 + MS(1100)), Some(LIFTED_BPS));
        assert_eq!(r.evaluate(None, t0 + MS(2100)), Some(LIFTED_BPS));
        for s in 3..10 {
            assert_eq!(r.evaluate(None, t0 + Duration::from_secs(s)), None, "{s} s");
        }
        // Limited again, then lifted again: the same.
        assert_eq!(r.evaluate(Some(200_000), t0 + MS(10_000)), Some(200_000));
        assert_eq!(r.evaluate(None, t0 + MS(10_100)), Some(LIFTED_BPS));
        // Limited again while still lifting: told at once.
        assert_eq!(r.evaluate(Some(200_000), t0 + MS(10_200)), Some(200_000));
    }
}
