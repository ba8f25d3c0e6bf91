//! Token verification (`TokenKeys::verify`, `verify_for_meeting`) against a real key,
//! two ways:
//!
//! - first byte even: the rest, as text, is a token from outside (a forged or mangled
//!   JWT). It must never verify: nothing here holds the key.
//! - first byte odd: the rest is a claims object that the fuzzer chose, signed with
//!   the server's own key (HS256, or another algorithm's header): the claims parsing
//!   and the expiry and audience checks after the signature. Whatever verifies must
//!   say what the server relies on: our issuer, a known audience, not expired.

#![no_main]

use gatehouse_signaling::token::{GUEST_AUDIENCE, Identity, LEEWAY_SECS, STAFF_AUDIENCE, TokenKeys};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8; 32] = b"fuzzing-key-of-thirty-two-bytes!";
const ISSUER: &str = "gatehouse-fuzz";
const NOW: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let keys = TokenKeys::new(SECRET, ISSUER).expect("a 32-byte key");
    let token = if mode % 2 == 0 {
        let Ok(token) = std::str::from_utf8(rest) else {
            return;
        };
        let verified = keys.verify(token, NOW);
        assert!(verified.is_err(), "a token made without the key verified: {token:?}");
        let verified = keys.verify_for_meeting(token, "m_1", NOW);
        assert!(verified.is_err(), "a token made without the key verified: {token:?}");
        return;
    } else {
        let Ok(claims) = serde_json::from_slice::<serde_json::Value>(rest) else {
            return;
        };
        // Mostly HS256 (the only algorithm we accept), sometimes another one's header.
        let algorithm = if mode & 0x0E == 0x0E {
            Algorithm::HS512
        } else {
            Algorithm::HS256
        };
        let Ok(token) = jsonwebtoken::encode(&Header::new(algorithm), &claims, &EncodingKey::from_secret(SECRET))
        else {
            return;
        };
        token
    };
    let now = NOW.wrapping_add(u64::from(mode >> 4) * 1_000_000);
    match keys.verify(&token, now) {
        Ok(identity) => {
            let (iss, aud, exp) = match &identity {
                Identity::Staff(s) => (&s.iss, s.aud.as_str(), s.exp),
                Identity::Guest(g) => (&g.iss, g.aud.as_str(), g.exp),
            };
            assert_eq!(iss, ISSUER, "a token of another issuer verified");
            assert!(aud == STAFF_AUDIENCE || aud == GUEST_AUDIENCE, "unknown audience {aud}");
            assert!(
                u128::from(exp) + u128::from(LEEWAY_SECS) > u128::from(now),
                "an expired token verified (exp {exp}, now {now})"
            );
            if let Identity::Guest(g) = &identity {
                let for_meeting = keys.verify_for_meeting(&token, &g.mtg, now);
                assert!(for_meeting.is_ok(), "a guest token refused for its own meeting");
                let other = format!("{}-other", g.mtg);
                assert!(keys.verify_for_meeting(&token, &other, now).is_err());
            }
            std::hint::black_box(identity);
        }
        Err(e) => {
            assert!(algorithm_or_claims_error(&e.code), "unexpected error code {:?}", e.code);
        }
    }
});

/// A refusal is always one of the two token codes (never `internal`).
fn algorithm_or_claims_error(code: &gatehouse_signaling::ErrorCode) -> bool {
    use gatehouse_signaling::ErrorCode::{TokenExpired, Unauthorized};
    matches!(code, Unauthorized | TokenExpired)
}
