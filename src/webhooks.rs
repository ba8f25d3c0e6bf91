//! Webhooks: what an appointment's lifecycle sends to the endpoints an operator configures,
//! and the pure rules of sending it (signature, retry schedule, settings file).
//!
//! Every lifecycle event is written to a durable outbox in the same transaction as the
//! state change it reports (`store::webhooks`); a delivery task per endpoint
//! (`server::webhooks`) posts each event until the endpoint answers 2xx, with exponential
//! backoff and jitter, so delivery is at-least-once and the event id is the idempotency key.
//! A receiver verifies `Gatehouse-Signature` over `"{Gatehouse-Timestamp}.{body}"` with
//! [`verify`] (or the same HMAC-SHA256 in any language; docs/PROTOCOL.md §15.5).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Header with the Unix time (seconds) the request was signed at.
pub const TIMESTAMP_HEADER: &str = "Gatehouse-Timestamp";
/// Header with `v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`.
pub const SIGNATURE_HEADER: &str = "Gatehouse-Signature";
/// Header with the event id: the same on every attempt of one event to one endpoint.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// Header with the event type (also in the body).
pub const EVENT_HEADER: &str = "Gatehouse-Event";
/// Header with the attempt number, from 1.
pub const ATTEMPT_HEADER: &str = "Gatehouse-Delivery-Attempt";
/// How old a signed request a receiver should accept, by default (replays older are refused).
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);
/// Shortest secret accepted: 16 bytes.
const MIN_SECRET_BYTES: usize = 16;

/// What happened to an appointment (the `type` of an event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "appointment.booked")]
    Booked,
    #[serde(rename = "appointment.rescheduled")]
    Rescheduled,
    #[serde(rename = "appointment.cancelled")]
    Cancelled,
    #[serde(rename = "appointment.reminder")]
    Reminder,
    #[serde(rename = "appointment.guest_waiting")]
    GuestWaiting,
    #[serde(rename = "appointment.admitted")]
    Admitted,
    #[serde(rename = "appointment.completed")]
    Completed,
    #[serde(rename = "appointment.no_show")]
    NoShow,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Booked => "appointment.booked",
            EventType::Rescheduled => "appointment.rescheduled",
            EventType::Cancelled => "appointment.cancelled",
            EventType::Reminder => "appointment.reminder",
            EventType::GuestWaiting => "appointment.guest_waiting",
            EventType::Admitted => "appointment.admitted",
            EventType::Completed => "appointment.completed",
            EventType::NoShow => "appointment.no_show",
        }
    }

    /// The event a state transition is, if any: the guest starting to wait (from
    /// `scheduled` or `no_show`; `waiting` ⇄ `late` is the same wait), the first or a
    /// renewed `in_progress` (admitted), and every arrival in a final or no-show state.
    pub fn of_transition(t: &gatehouse_signaling::appointment::Transition) -> Option<EventType> {
        use gatehouse_signaling::appointment::{AppointmentState as S, Cause};
        match (t.from, t.to, t.cause) {
            (None, _, _) => Some(EventType::Booked),
            (_, _, Cause::Rescheduled) => Some(EventType::Rescheduled),
            (_, S::Cancelled, _) => Some(EventType::Cancelled),
            (Some(S::Scheduled | S::NoShow), S::Waiting | S::Late, _) => Some(EventType::GuestWaiting),
            (Some(from), S::InProgress, _) if from != S::InProgress => Some(EventType::Admitted),
            (_, S::Completed, _) => Some(EventType::Completed),
            (_, S::NoShow, _) => Some(EventType::NoShow),
            _ => None,
        }
    }
}

/// `v1=<hex>`: the signature of `body` sent at `timestamp` (Unix seconds).
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut out = String::with_capacity(3 + 64);
    out.push_str("v1=");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Why a receiver refuses a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the timestamp header is not a number of seconds")]
    BadTimestamp,
    #[error("signed {0} s away from now: a replay or a wrong clock")]
    TooOld(u64),
    #[error("no v1 signature in the header")]
    NoSignature,
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Checks a request as a receiver should: the timestamp within `tolerance` of `now_secs`
/// (either way), and one of the header's comma-separated `v1=` signatures matching
/// `"{timestamp}.{body}"` (compared in constant time). Several signatures appear while a
/// secret is being rotated.
pub fn verify(
    secret: &[u8],
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now_secs: u64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let ts: u64 = timestamp_header.trim().parse().map_err(|_| VerifyError::BadTimestamp)?;
    let skew = now_secs.abs_diff(ts);
    if skew > tolerance.as_secs() {
        return Err(VerifyError::TooOld(skew));
    }
    let mut any = false;
    for sig in signature_header.split(',') {
        let Some(hex) = sig.trim().strip_prefix("v1=") else {
            continue;
        };
        any = true;
        let Some(bytes) = from_hex(hex) else { continue };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
        mac.update(ts.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        if mac.verify_slice(&bytes).is_ok() {
            return Ok(());
        }
    }
    Err(if any {
        VerifyError::Mismatch
    } else {
        VerifyError::NoSignature
    })
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// When to try again and when to give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// The delay after the first failure; it doubles with each failure after.
    pub base_ms: u64,
    /// The longest delay between two attempts.
    pub max_ms: u64,
    /// An event not delivered this long after it happened is given up (kept, marked failed).
    pub give_up_after_secs: u64,
    /// How long one request may take before it counts as failed.
    pub timeout_ms: u64,
    /// How often each endpoint's worker looks for due deliveries.
    pub poll_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base_ms: 5_000,
            max_ms: 3_600_000,
            give_up_after_secs: 3 * 24 * 3600,
            timeout_ms: 10_000,
            poll_ms: 1_000,
        }
    }
}

impl RetryPolicy {
    /// The wait after the `failures`-th failed attempt (1 = the first): `base · 2^(failures−1)`
    /// capped at `max`, of which a random half is taken off (`jitter` in [0, 1)), so
    /// receivers that failed together are not retried together.
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let exp = failures.saturating_sub(1).min(40);
        let full = self.base_ms.saturating_mul(1u64 << exp).min(self.max_ms).max(1);
        let off = (full as f64 / 2.0 * jitter.clamp(0.0, 1.0)) as u64;
        Duration::from_millis(full - off)
    }

    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.base_ms >= 1 && self.base_ms <= self.max_ms,
            "retry.base_ms must be 1 to max_ms"
        );
        anyhow::ensure!(self.max_ms <= 24 * 3_600_000, "retry.max_ms must be at most a day");
        anyhow::ensure!(
            self.give_up_after_secs >= 1,
            "retry.give_up_after_secs must be at least 1"
        );
        anyhow::ensure!(
            (100..=120_000).contains(&self.timeout_ms),
            "retry.timeout_ms must be 100 to 120000"
        );
        anyhow::ensure!(
            (10..=60_000).contains(&self.poll_ms),
            "retry.poll_ms must be 10 to 60000"
        );
        Ok(())
    }
}

/// One receiver of events, as the file gives it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// Stable name: deliveries are kept under it (renaming starts afresh).
    pub name: String,
    /// `https://…` (or `http://` for a receiver on the same host).
    pub url: String,
    /// The shared secret, at least 16 bytes (or `secret_file`).
    #[serde(default)]
    pub secret: Option<String>,
    /// A file holding the secret (trailing whitespace ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Only this organisation's events; absent: every organisation's.
    #[serde(default)]
    pub organization: Option<String>,
}

/// The webhooks file: `[[endpoint]]` tables and an optional `[retry]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksFile {
    #[serde(default)]
    pub endpoint: Vec<EndpointSpec>,
    #[serde(default)]
    pub retry: RetryPolicy,
}

/// An endpoint ready to use.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub url: url::Url,
    pub secret: Vec<u8>,
    pub organization: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("url", &self.url.as_str())
            .field("organization", &self.organization)
            .finish_non_exhaustive()
    }
}

/// The webhook settings in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Webhooks {
    pub endpoints: Vec<Endpoint>,
    pub retry: RetryPolicy,
}

impl Webhooks {
    /// Reads and checks the webhooks file (relative `secret_file`s are read beside it).
    pub fn load(path: &Path) -> anyhow::Result<Webhooks> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: WebhooksFile = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Self::from_file(file, path.parent().unwrap_or(Path::new("."))).with_context(|| format!("in {}", path.display()))
    }

    pub fn from_file(file: WebhooksFile, dir: &Path) -> anyhow::Result<Webhooks> {
        file.retry.check()?;
        let mut endpoints: Vec<Endpoint> = Vec::new();
        for e in file.endpoint {
            let name = e.name.trim().to_owned();
            anyhow::ensure!(
                !name.is_empty()
                    && name.len() <= 64
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                "endpoint name `{name}` must be 1 to 64 of A-Z a-z 0-9 - _ ."
            );
            anyhow::ensure!(
                !endpoints.iter().any(|x| x.name == name),
                "two endpoints are named `{name}`"
            );
            let url =
                url::Url::parse(&e.url).with_context(|| format!("endpoint `{name}`: `{}` is not a URL", e.url))?;
            anyhow::ensure!(
                matches!(url.scheme(), "https" | "http"),
                "endpoint `{name}`: the URL must be https:// (or http:// on this host)"
            );
            let secret = match (e.secret, e.secret_file) {
                (Some(s), None) => s,
                (None, Some(f)) => {
                    let f = dir.join(f);
                    std::fs::read_to_string(&f)
                        .with_context(|| format!("endpoint `{name}`: reading {}", f.display()))?
                        .trim_end()
                        .to_owned()
                }
                _ => anyhow::bail!("endpoint `{name}`: give exactly one of secret and secret_file"),
            };
            anyhow::ensure!(
                secret.len() >= MIN_SECRET_BYTES,
                "endpoint `{name}`: the secret must be at least {MIN_SECRET_BYTES} bytes"
            );
            endpoints.push(Endpoint {
                name,
                url,
                secret: secret.into_bytes(),
                organization: e.organization,
            });
        }
        Ok(Webhooks {
            endpoints,
            retry: file.retry,
        })
    }
}

/// Parses a reminder offset: `"24h"`, `"15m"`, `"2d"`, `"90s"` (whole numbers) to ms.
pub fn parse_offset(s: &str) -> Option<u64> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let n: u64 = s[..s.len() - unit.len_utf8()].parse().ok()?;
    let ms = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_signaling::appointment::{AppointmentState as S, Cause, Transition};

    #[test]
    fn a_signature_verifies_and_anything_else_is_refused() {
        let secret = b"0123456789abcdef-secret";
        let body = br#"{"id":"evt_1"}"#;
        let sig = sign(secret, 1_700_000_000, body);
        assert!(sig.starts_with("v1=") && sig.len() == 3 + 64, "{sig}");
        let tol = DEFAULT_TOLERANCE;
        assert_eq!(verify(secret, "1700000000", &sig, body, 1_700_000_100, tol), Ok(()));
        assert_eq!(
            verify(secret, "1700000000", &sig, body, 1_700_000_000 + 300, tol),
            Ok(())
        );
        assert_eq!(
            verify(secret, "1700000000", &sig, body, 1_700_000_000 + 301, tol),
            Err(VerifyError::TooOld(301)),
            "a replay after five minutes"
        );
        assert_eq!(
            verify(secret, "1700000000", &sig, body, 1_699_999_000, tol),
            Err(VerifyError::TooOld(1000)),
            "from the future"
        );
        assert_eq!(
            verify(secret, "1700000001", &sig, body, 1_700_000_000, tol),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(secret, "1700000000", &sig, b"{}", 1_700_000_000, tol),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"another-secret-0000", "1700000000", &sig, body, 1_700_000_000, tol),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(secret, "soon", &sig, body, 0, tol),
            Err(VerifyError::BadTimestamp)
        );
        assert_eq!(
            verify(secret, "1700000000", "", body, 1_700_000_000, tol),
            Err(VerifyError::NoSignature)
        );
        assert_eq!(
            verify(secret, "1700000000", "v1=zz", body, 1_700_000_000, tol),
            Err(VerifyError::Mismatch)
        );
        // Rotation: the old and the new secret's signatures side by side.
        let both = format!("{}, {sig}", sign(b"old-secret-0000000", 1_700_000_000, body));
        assert_eq!(verify(secret, "1700000000", &both, body, 1_700_000_000, tol), Ok(()));
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // The crates' HMAC-SHA256 against RFC 4231 test case 2.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        // sign() is that MAC over "{ts}.{body}".
        let mut mac = Hmac::<Sha256>::new_from_slice(b"k").unwrap();
        mac.update(b"12.body");
        let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(sign(b"k", 12, b"body"), format!("v1={hex}"));
    }

    #[test]
    fn retries_back_off_exponentially_with_jitter_up_to_the_cap() {
        let p = RetryPolicy {
            base_ms: 1000,
            max_ms: 60_000,
            ..Default::default()
        };
        assert_eq!(p.delay(1, 0.0), Duration::from_secs(1));
        assert_eq!(p.delay(2, 0.0), Duration::from_secs(2));
        assert_eq!(p.delay(3, 0.0), Duration::from_secs(4));
        assert_eq!(p.delay(7, 0.0), Duration::from_secs(60), "capped");
        assert_eq!(p.delay(1000, 0.0), Duration::from_secs(60), "no overflow");
        assert_eq!(p.delay(3, 1.0), Duration::from_millis(2000), "half taken off at most");
        assert!(p.delay(3, 0.999_999) > Duration::from_millis(2000));
        assert_eq!(p.delay(3, 0.5), Duration::from_millis(3000));
        assert_eq!(p.delay(3, 7.0), Duration::from_millis(2000), "jitter clamped");
        assert_eq!(p.delay(0, 0.0), Duration::from_secs(1));
    }

    #[test]
    fn the_file_is_checked() {
        let dir = std::env::temp_dir().join(format!("gatehouse-wh-{}", crate::ids::random_code(8)));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("s.txt"), "from-a-file-0123456789\n").unwrap();
        let path = dir.join("webhooks.toml");
        std::fs::write(
            &path,
            r#"
[[endpoint]]
name = "crm"
url = "https://crm.example.org/hooks/gatehouse"
secret_file = "s.txt"
organization = "acme"

[[endpoint]]
name = "sms"
url = "http://127.0.0.1:9000/"
secret = "0123456789abcdef"

[retry]
base_ms = 100
"#,
        )
        .unwrap();
        let w = Webhooks::load(&path).unwrap();
        assert_eq!(w.endpoints.len(), 2);
        assert_eq!(w.endpoints[0].secret, b"from-a-file-0123456789");
        assert_eq!(w.endpoints[0].organization.as_deref(), Some("acme"));
        assert_eq!((w.retry.base_ms, w.retry.max_ms), (100, 3_600_000));
        assert!(
            !format!("{:?}", w.endpoints[1]).contains("0123456789abcdef"),
            "secrets stay out of logs"
        );
        let bad = |text: &str| {
            std::fs::write(&path, text).unwrap();
            format!("{:#}", Webhooks::load(&path).unwrap_err())
        };
        let e = bad("[[endpoint]]\nname = \"a\"\nurl = \"https://x/\"\nsecret = \"short\"\n");
        assert!(e.contains("16 bytes"), "{e}");
        let e = bad("[[endpoint]]\nname = \"a\"\nurl = \"ftp://x/\"\nsecret = \"0123456789abcdef\"\n");
        assert!(e.contains("https"), "{e}");
        let e = bad("[[endpoint]]\nname = \"a b\"\nurl = \"https://x/\"\nsecret = \"0123456789abcdef\"\n");
        assert!(e.contains("name"), "{e}");
        let e = bad("[[endpoint]]\nname = \"a\"\nurl = \"https://x/\"\n");
        assert!(e.contains("exactly one"), "{e}");
        let e = bad("[retry]\nbase_ms = 0\n");
        assert!(e.contains("base_ms"), "{e}");
        let e = bad(
            "[[endpoint]]\nname = \"a\"\nurl = \"https://x/\"\nsecret = \"0123456789abcdef\"\n[[endpoint]]\nname = \"a\"\nurl = \"https://y/\"\nsecret = \"0123456789abcdef\"\n",
        );
        assert!(e.contains("two endpoints"), "{e}");
        let e = bad("[[endpoint]]\nnme = \"a\"\n");
        assert!(e.contains("parsing"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reminder_offsets_parse() {
        assert_eq!(parse_offset("24h"), Some(86_400_000));
        assert_eq!(parse_offset("15m"), Some(900_000));
        assert_eq!(parse_offset("2d"), Some(172_800_000));
        assert_eq!(parse_offset("90s"), Some(90_000));
        for bad in ["", "h", "15", "1.5h", "-1h", "15 m", "1w", "99999999999999999999d", "é"] {
            assert_eq!(parse_offset(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn transitions_map_to_events() {
        let t = |from: Option<S>, to: S, cause: Cause| Transition {
            from,
            to,
            at_ms: 0,
            cause,
        };
        let cases = [
            (t(None, S::Scheduled, Cause::Booked), Some(EventType::Booked)),
            (
                t(Some(S::Scheduled), S::Scheduled, Cause::Rescheduled),
                Some(EventType::Rescheduled),
            ),
            (
                t(Some(S::NoShow), S::Scheduled, Cause::Rescheduled),
                Some(EventType::Rescheduled),
            ),
            (
                t(Some(S::Scheduled), S::Cancelled, Cause::CancelledByGuest),
                Some(EventType::Cancelled),
            ),
            (
                t(Some(S::Late), S::Cancelled, Cause::CancelledByStaff),
                Some(EventType::Cancelled),
            ),
            (
                t(Some(S::Scheduled), S::Waiting, Cause::Presence),
                Some(EventType::GuestWaiting),
            ),
            (
                t(Some(S::Scheduled), S::Late, Cause::Presence),
                Some(EventType::GuestWaiting),
            ),
            (
                t(Some(S::NoShow), S::Waiting, Cause::Presence),
                Some(EventType::GuestWaiting),
            ),
            (t(Some(S::Waiting), S::Late, Cause::Clock), None),
            (t(Some(S::Late), S::Waiting, Cause::Presence), None),
            (t(Some(S::Waiting), S::Scheduled, Cause::Presence), None),
            (
                t(Some(S::Waiting), S::InProgress, Cause::Presence),
                Some(EventType::Admitted),
            ),
            (
                t(Some(S::Late), S::InProgress, Cause::Presence),
                Some(EventType::Admitted),
            ),
            (
                t(Some(S::InProgress), S::Completed, Cause::Presence),
                Some(EventType::Completed),
            ),
            (t(Some(S::Scheduled), S::NoShow, Cause::Clock), Some(EventType::NoShow)),
        ];
        for (tr, want) in cases {
            assert_eq!(EventType::of_transition(&tr), want, "{tr:?}");
        }
        assert_eq!(
            serde_json::to_value(EventType::GuestWaiting).unwrap(),
            EventType::GuestWaiting.as_str()
        );
    }
}
