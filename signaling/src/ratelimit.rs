//! A token bucket that takes the time as input, so rate rules are pure and testable.
//!
//! Used for chat (per participant) and link redemption (per client address).

/// Allows `burst` events at once and `per_sec` events per second sustained.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    burst: f64,
    per_sec: f64,
    tokens: f64,
    last_ms: u64,
}

impl TokenBucket {
    pub fn new(burst: u32, per_sec: f64, now_ms: u64) -> Self {
        Self {
            burst: burst as f64,
            per_sec,
            tokens: burst as f64,
            last_ms: now_ms,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// True when the bucket is full again (the key can be forgotten).
    pub fn is_idle(&self, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.tokens + elapsed * self.per_sec >= self.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let mut b = TokenBucket::new(3, 1.0, 0);
        assert!(b.try_take(0) && b.try_take(0) && b.try_take(0));
        assert!(!b.try_take(0));
        assert!(!b.try_take(999));
        assert!(b.try_take(1000));
        assert!(!b.try_take(1000));
        assert!(!b.is_idle(1000));
        assert!(b.is_idle(4000));
    }

    #[test]
    fn clock_going_backwards_is_harmless() {
        let mut b = TokenBucket::new(1, 1.0, 5000);
        assert!(b.try_take(5000));
        assert!(!b.try_take(1000));
        assert!(b.try_take(6000));
    }
}
