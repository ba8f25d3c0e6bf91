//! Compact time stamps for per-packet histories (issue 13, memory per participant).
//!
//! A history of what was sent (a leg's, for retransmissions; a subscriber connection's, for
//! congestion control) keeps hundreds or thousands of entries per leg or connection, and an
//! `Option<Instant>` is 16 bytes of each. A [`Clock`] stamp is 4: microseconds since the
//! history's first packet, in 32 bits, wrapping every 71 minutes. It is only ever read as an
//! age relative to now (modulo the wrap), which is exact for anything younger than a wrap;
//! the histories ask for ages of a second or less.

use std::time::{Duration, Instant};

/// A stamp that names no moment (an empty slot, a packet not resent).
pub const NEVER: u32 = 0;

/// A history's time origin (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    base: Option<Instant>,
}

impl Clock {
    /// `now` as a stamp (never [`NEVER`]); the first call sets the origin.
    pub fn stamp(&mut self, now: Instant) -> u32 {
        let base = *self.base.get_or_insert(now);
        match Self::at(base, now) {
            // Once a wrap, a microsecond late rather than taken for an empty slot.
            NEVER => 1,
            stamp => stamp,
        }
    }

    /// How long before `now` the stamp `at` was taken; `None` for [`NEVER`].
    pub fn age(&self, at: u32, now: Instant) -> Option<Duration> {
        let base = self.base.filter(|_| at != NEVER)?;
        Some(Duration::from_micros(u64::from(Self::at(base, now).wrapping_sub(at))))
    }

    /// Microseconds since `base`, plus one (so that the origin is not [`NEVER`]), wrapping.
    fn at(base: Instant, now: Instant) -> u32 {
        // Truncation is the wrap.
        (now.saturating_duration_since(base).as_micros() as u32).wrapping_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// Stamps are never `NEVER`, `NEVER` has no age, and an age is
    /// right across the 32-bit wrap (71 minutes after the first packet).
    #[test]
    fn stamps_are_never_never_and_ages_read_across_the_wrap() {
        let t0 = Instant::now();
        let mut clock = Clock::default();
        assert_eq!(clock.stamp(t0), 1, "the first stamp is the origin, and not NEVER");
        assert_eq!(clock.age(NEVER, t0 + MS(5)), None);
        let at = clock.stamp(t0 + MS(20));
        assert_eq!(clock.age(at, t0 + MS(25)), Some(MS(5)));
        let before_wrap = t0 + Duration::from_micros(u64::from(u32::MAX) - 1_000);
        let at = clock.stamp(before_wrap);
        assert_ne!(at, NEVER);
        assert_eq!(clock.age(at, before_wrap + MS(4)), Some(MS(4)), "across the wrap");
        let on_wrap = t0 + Duration::from_micros(u64::from(u32::MAX));
        assert_eq!(clock.stamp(on_wrap), 1, "a stamp that wraps to zero is not NEVER");
        assert_eq!(
            clock.age(1, on_wrap + MS(3)),
            Some(Duration::from_micros(2_999)),
            "a microsecond late"
        );
    }
}
