//! Coming back after the signaling socket dies: which endings are worth a reconnect,
//! how long to wait between attempts, and when to stop.
//!
//! Pure decisions, tested without a network: the client's supervisor task (see
//! [`Client`](crate::Client)) tells [`Reconnect`] what happened and waits as long as
//! it says. A socket that ends without the server putting us out (`left`) or the
//! application closing it is retried with the same token: a guest who was in the call
//! keeps its seat for the server's seat hold (60 s by default) and comes straight back,
//! unseen by the others (docs/PROTOCOL.md §9.6).

use std::time::Duration;

use gatehouse_signaling::ErrorCode;

use crate::error::SdkError;

/// How the SDK reconnects by itself ([`ConnectOptions::reconnect`](crate::ConnectOptions::reconnect)).
///
/// The first attempt goes out at once (a socket killed on a network that works comes
/// back in one round trip); the next waits `initial_backoff`, then twice that, and so
/// on up to `max_backoff`, each wait spread by jitter (between half and all of it) so
/// that the clients of one gateway that restarted do not all come back in the same
/// instant. The defaults (10 attempts, 250 ms doubling to 5 s) keep trying for 14 to
/// 28 s (depending on the jitter), well within the server's default seat hold of 60 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Attempts after a drop before giving up ([`Event::Disconnected`](crate::Event::Disconnected));
    /// 0 turns reconnecting off.
    pub max_attempts: u32,
    /// The wait before the second attempt.
    pub initial_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl ReconnectPolicy {
    /// No reconnecting: a dropped socket ends the events with `Disconnected`.
    pub fn never() -> ReconnectPolicy {
        ReconnectPolicy {
            max_attempts: 0,
            ..ReconnectPolicy::default()
        }
    }

    /// The wait before attempt `attempt` (1 for the first), with `jitter` in `[0, 1)`
    /// choosing where between half and all of the backoff it falls.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        if attempt <= 1 {
            return Duration::ZERO;
        }
        let doublings = (attempt - 2).min(31);
        let full = self
            .initial_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff);
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        full.mul_f64(0.5 + 0.5 * jitter)
    }
}

/// How a signaling socket ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketEnd {
    /// The server put us out with `left` (we left, were removed or denied, the meeting
    /// ended, another connection took our place): final.
    Left,
    /// The application closed the client: final.
    Closed,
    /// Anything else: a read or write error, a Close frame without `left` (a server
    /// shutting down, "too slow"), the server falling silent. Worth a reconnect.
    Dropped {
        /// What ended it, for the application and the logs.
        reason: String,
    },
}

/// Whether a failed attempt is worth another, or the server has said no for good.
pub fn is_refusal(error: &SdkError) -> bool {
    match error {
        SdkError::Left { .. } => true,
        SdkError::Server { code, .. } => !matches!(
            code,
            ErrorCode::ServerBusy | ErrorCode::RateLimited | ErrorCode::Internal | ErrorCode::MeetingFull
        ),
        _ => false,
    }
}

/// What the supervisor does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Wait `delay`, then make attempt `attempt`.
    Attempt {
        /// 1 for the first attempt after a drop.
        attempt: u32,
        /// How long to wait before it.
        delay: Duration,
    },
    /// Stop: the events end with `Disconnected` (`reason` says why).
    GiveUp {
        /// Why no more attempts are made.
        reason: String,
    },
    /// Stop without a `Disconnected`: the end was final (`left`, or closed by the app).
    Stop,
}

/// The reconnect state of one client: attempts since the socket was last up.
#[derive(Debug, Clone)]
pub struct Reconnect {
    policy: ReconnectPolicy,
    /// Attempts made since the last socket that came up.
    attempts: u32,
}

impl Reconnect {
    /// A client whose socket is up.
    pub fn new(policy: ReconnectPolicy) -> Reconnect {
        Reconnect { policy, attempts: 0 }
    }

    /// Attempts made since the socket was last up.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The socket ended: reconnect (and when), or stop. `jitter` in `[0, 1)`.
    pub fn on_end(&mut self, end: &SocketEnd, jitter: f64) -> Step {
        match end {
            SocketEnd::Left | SocketEnd::Closed => Step::Stop,
            SocketEnd::Dropped { reason } => self.next(reason, jitter),
        }
    }

    /// An attempt failed with `error`. `jitter` in `[0, 1)`.
    pub fn on_failed(&mut self, error: &SdkError, jitter: f64) -> Step {
        if is_refusal(error) {
            return Step::GiveUp {
                reason: format!("the server refused the reconnect: {error}"),
            };
        }
        self.next(&error.to_string(), jitter)
    }

    /// An attempt got a socket and `joined`: the count starts again.
    pub fn on_connected(&mut self) {
        self.attempts = 0;
    }

    fn next(&mut self, last: &str, jitter: f64) -> Step {
        if self.attempts >= self.policy.max_attempts {
            return Step::GiveUp {
                reason: match self.attempts {
                    0 => last.to_owned(),
                    n => format!("{n} reconnect attempts failed; the last: {last}"),
                },
            };
        }
        self.attempts += 1;
        Step::Attempt {
            attempt: self.attempts,
            delay: self.policy.delay(self.attempts, jitter),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_signaling::protocol::LeaveReason;

    fn dropped() -> SocketEnd {
        SocketEnd::Dropped {
            reason: "connection reset".into(),
        }
    }

    #[test]
    fn the_first_attempt_is_at_once_then_the_backoff_doubles_up_to_its_cap() {
        let policy = ReconnectPolicy::default();
        let full: Vec<_> = (1..=8).map(|n| policy.delay(n, 1.0)).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(
            full,
            [
                ms(0),
                ms(250),
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(5000),
                ms(5000)
            ]
        );
        // Jitter keeps between half and all of it.
        assert_eq!(policy.delay(3, 0.0), ms(250));
        assert_eq!(policy.delay(3, 0.5), ms(375));
        assert_eq!(policy.delay(1, 0.7), Duration::ZERO);
        // Out-of-range jitter is clamped, never a panic or a huge wait.
        assert_eq!(policy.delay(3, f64::NAN), ms(250));
        assert_eq!(policy.delay(3, 7.0), ms(500));
        assert_eq!(policy.delay(3, -1.0), ms(250));
        // No overflow however many attempts.
        assert_eq!(policy.delay(u32::MAX, 1.0), ms(5000));
    }

    #[test]
    fn the_default_keeps_trying_for_about_half_the_seat_hold() {
        let policy = ReconnectPolicy::default();
        let worst: Duration = (1..=policy.max_attempts).map(|n| policy.delay(n, 1.0)).sum();
        let best: Duration = (1..=policy.max_attempts).map(|n| policy.delay(n, 0.0)).sum();
        assert!(
            worst <= Duration::from_secs(30) && best >= Duration::from_secs(12),
            "{best:?}..{worst:?}"
        );
    }

    #[test]
    fn a_drop_is_retried_and_final_endings_are_not() {
        let mut r = Reconnect::new(ReconnectPolicy::default());
        assert_eq!(r.on_end(&SocketEnd::Left, 0.5), Step::Stop);
        assert_eq!(r.on_end(&SocketEnd::Closed, 0.5), Step::Stop);
        assert_eq!(r.attempts(), 0);
        assert_eq!(
            r.on_end(&dropped(), 0.5),
            Step::Attempt {
                attempt: 1,
                delay: Duration::ZERO
            }
        );
    }

    #[test]
    fn attempts_are_bounded_and_counted_again_after_a_success() {
        let policy = ReconnectPolicy {
            max_attempts: 3,
            ..ReconnectPolicy::default()
        };
        let mut r = Reconnect::new(policy);
        let timeout = SdkError::Timeout("websocket connect");
        assert!(matches!(r.on_end(&dropped(), 0.0), Step::Attempt { attempt: 1, .. }));
        assert!(matches!(r.on_failed(&timeout, 0.0), Step::Attempt { attempt: 2, .. }));
        assert!(matches!(r.on_failed(&timeout, 0.0), Step::Attempt { attempt: 3, .. }));
        match r.on_failed(&timeout, 0.0) {
            Step::GiveUp { reason } => {
                assert!(reason.contains("3 reconnect attempts failed"), "{reason}");
                assert!(reason.contains("websocket connect"), "{reason}");
            }
            other => panic!("expected to give up: {other:?}"),
        }
        // A success resets the count: the next drop has all its attempts again.
        r.on_connected();
        assert_eq!(r.attempts(), 0);
        assert!(matches!(r.on_end(&dropped(), 0.0), Step::Attempt { attempt: 1, .. }));
    }

    #[test]
    fn reconnecting_off_gives_up_at_the_drop_with_its_reason() {
        let mut r = Reconnect::new(ReconnectPolicy::never());
        assert_eq!(
            r.on_end(&dropped(), 0.0),
            Step::GiveUp {
                reason: "connection reset".into()
            }
        );
    }

    #[test]
    fn a_refusal_ends_the_attempts_at_once_and_busy_servers_are_retried() {
        let refusals = [
            SdkError::Server {
                code: ErrorCode::TokenExpired,
                message: "expired".into(),
            },
            SdkError::Server {
                code: ErrorCode::Unauthorized,
                message: "no".into(),
            },
            SdkError::Server {
                code: ErrorCode::MeetingEnded,
                message: "over".into(),
            },
            SdkError::Left {
                reason: LeaveReason::Denied,
                message: None,
            },
        ];
        for error in &refusals {
            let mut r = Reconnect::new(ReconnectPolicy::default());
            r.on_end(&dropped(), 0.0);
            assert!(matches!(r.on_failed(error, 0.0), Step::GiveUp { .. }), "{error}");
        }
        let transient = [
            SdkError::Server {
                code: ErrorCode::ServerBusy,
                message: "busy".into(),
            },
            SdkError::Server {
                code: ErrorCode::RateLimited,
                message: "slow down".into(),
            },
            SdkError::Server {
                code: ErrorCode::Internal,
                message: "oops".into(),
            },
            SdkError::Closed,
            SdkError::Timeout("joined"),
        ];
        for error in &transient {
            let mut r = Reconnect::new(ReconnectPolicy::default());
            r.on_end(&dropped(), 0.0);
            assert!(
                matches!(r.on_failed(error, 0.0), Step::Attempt { attempt: 2, .. }),
                "{error}"
            );
        }
    }
}
