//! Signed identities: staff tokens and anonymous guest tokens.
//!
//! Both are HS256 JWTs signed with the server's key. Verification pins the
//! algorithm, and checks issuer, audience and expiry against a caller-given
//! `now` (so tests control time). A guest token is scoped to one meeting and
//! one participant id and says nothing else but the display name and whether
//! the guest was invited.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode};

/// Audience of staff tokens.
pub const STAFF_AUDIENCE: &str = "gatehouse-staff";
/// Audience of guest tokens.
pub const GUEST_AUDIENCE: &str = "gatehouse-guest";
/// Clock skew tolerated on expiry, in seconds.
pub const LEEWAY_SECS: u64 = 5;

/// Staff privilege level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StaffRole {
    /// May manage every meeting of the organisation.
    Admin,
    /// May manage the meetings they organise or are invited to.
    Staff,
}

/// Claims of a staff token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaffClaims {
    /// Stable staff identifier (e.g. an e-mail or directory id).
    pub sub: String,
    /// Display name shown to others.
    pub name: String,
    /// Organisation the staff member belongs to.
    pub org: String,
    pub role: StaffRole,
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
}

/// Claims of an anonymous guest token, issued by redeeming a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestClaims {
    /// The participant id this guest will have in the meeting.
    pub sub: String,
    /// The one meeting this token is good for.
    pub mtg: String,
    /// The display name the guest typed (already cleaned).
    pub name: String,
    /// Whether the link redeemed was a private invitation.
    pub invited: bool,
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
}

/// A verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Staff(StaffClaims),
    Guest(GuestClaims),
}

impl Identity {
    /// The staff claims, or `Forbidden` for a guest.
    pub fn require_staff(&self) -> Result<&StaffClaims, Error> {
        match self {
            Identity::Staff(s) => Ok(s),
            Identity::Guest(_) => Err(Error::new(ErrorCode::Forbidden, "this action needs a staff token")),
        }
    }
}

/// The server's signing key and issuer name.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    issuer: String,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Keys from a secret of at least 32 bytes.
    pub fn new(secret: &[u8], issuer: impl Into<String>) -> Result<Self, Error> {
        if secret.len() < 32 {
            return Err(Error::new(ErrorCode::Internal, "signing key must be at least 32 bytes"));
        }
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            issuer: issuer.into(),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Mints a staff token valid from `now` for `ttl_secs`.
    pub fn mint_staff(
        &self,
        sub: &str,
        name: &str,
        org: &str,
        role: StaffRole,
        now_secs: u64,
        ttl_secs: u64,
    ) -> Result<String, Error> {
        let claims = StaffClaims {
            sub: sub.to_owned(),
            name: name.to_owned(),
            org: org.to_owned(),
            role,
            iss: self.issuer.clone(),
            aud: STAFF_AUDIENCE.to_owned(),
            iat: now_secs,
            exp: now_secs.saturating_add(ttl_secs),
        };
        self.sign(&claims)
    }

    /// Mints a guest token for one meeting and participant.
    pub fn mint_guest(
        &self,
        participant_id: &str,
        meeting_id: &str,
        display_name: &str,
        invited: bool,
        now_secs: u64,
        ttl_secs: u64,
    ) -> Result<String, Error> {
        let claims = GuestClaims {
            sub: participant_id.to_owned(),
            mtg: meeting_id.to_owned(),
            name: display_name.to_owned(),
            invited,
            iss: self.issuer.clone(),
            aud: GUEST_AUDIENCE.to_owned(),
            iat: now_secs,
            exp: now_secs.saturating_add(ttl_secs),
        };
        self.sign(&claims)
    }

    fn sign<T: Serialize>(&self, claims: &T) -> Result<String, Error> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| Error::new(ErrorCode::Internal, format!("signing failed: {e}")))
    }

    /// Verifies any token: signature (HS256 only), issuer, audience, expiry.
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<Identity, Error> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[STAFF_AUDIENCE, GUEST_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Expiry is checked below against the caller's clock, not the system's.
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &self.decoding, &validation)
            .map_err(|e| Error::new(ErrorCode::Unauthorized, format!("invalid token: {e}")))?;
        let claims = data.claims;
        let exp = claims.get("exp").and_then(|v| v.as_u64()).unwrap_or(0);
        // Saturating: a signed `exp` near u64::MAX (ours never are, but the claims are only
        // JSON) means "never", not an overflow (found by fuzz/fuzz_targets/token_verify.rs).
        if exp.saturating_add(LEEWAY_SECS) <= now_secs {
            return Err(Error::new(ErrorCode::TokenExpired, "the token has expired"));
        }
        let aud = claims
            .get("aud")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let shape = |e: serde_json::Error| Error::new(ErrorCode::Unauthorized, format!("invalid token claims: {e}"));
        match aud.as_str() {
            STAFF_AUDIENCE => Ok(Identity::Staff(serde_json::from_value(claims).map_err(shape)?)),
            GUEST_AUDIENCE => Ok(Identity::Guest(serde_json::from_value(claims).map_err(shape)?)),
            _ => Err(Error::new(ErrorCode::Unauthorized, "unknown token audience")),
        }
    }

    /// Verifies a token and checks it may act in `meeting_id`: a guest token
    /// only for its own meeting.
    pub fn verify_for_meeting(&self, token: &str, meeting_id: &str, now_secs: u64) -> Result<Identity, Error> {
        let identity = self.verify(token, now_secs)?;
        if let Identity::Guest(g) = &identity
            && g.mtg != meeting_id
        {
            return Err(Error::new(
                ErrorCode::WrongMeeting,
                "this guest token is for another meeting",
            ));
        }
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn keys() -> TokenKeys {
        TokenKeys::new(SECRET, "gatehouse-test").unwrap()
    }

    fn b64(data: &[u8]) -> String {
        // Minimal base64url without padding, for forging test tokens.
        const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
            for i in 0..=chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn staff_round_trip() {
        let t = keys()
            .mint_staff("alice", "Alice", "acme", StaffRole::Staff, 1000, 60)
            .unwrap();
        let id = keys().verify(&t, 1010).unwrap();
        let Identity::Staff(c) = id else {
            panic!("expected staff")
        };
        assert_eq!(
            (c.sub.as_str(), c.name.as_str(), c.org.as_str(), c.role),
            ("alice", "Alice", "acme", StaffRole::Staff)
        );
    }

    #[test]
    fn guest_scoped_to_meeting() {
        let t = keys().mint_guest("p_1", "m_1", "Bob", true, 1000, 60).unwrap();
        assert!(
            matches!(keys().verify_for_meeting(&t, "m_1", 1001), Ok(Identity::Guest(g)) if g.invited && g.name == "Bob")
        );
        assert_eq!(
            keys().verify_for_meeting(&t, "m_2", 1001).unwrap_err().code,
            ErrorCode::WrongMeeting
        );
        assert_eq!(
            keys().verify(&t, 1001).unwrap().require_staff().unwrap_err().code,
            ErrorCode::Forbidden
        );
    }

    #[test]
    fn expired_is_refused() {
        let t = keys().mint_staff("a", "A", "o", StaffRole::Admin, 1000, 60).unwrap();
        assert!(keys().verify(&t, 1060).is_ok(), "within leeway");
        assert_eq!(
            keys().verify(&t, 1060 + LEEWAY_SECS).unwrap_err().code,
            ErrorCode::TokenExpired
        );
    }

    /// fuzz/corpus/token_verify/crash-exp-overflow: `exp + LEEWAY_SECS` overflowed (a panic
    /// with overflow checks on) for a token we signed whose `exp` is near u64::MAX.
    #[test]
    fn an_expiry_at_the_end_of_time_is_not_an_overflow() {
        let claims = serde_json::json!({
            "sub": "a", "name": "A", "org": "o", "role": "admin",
            "iss": "gatehouse-test", "aud": "gatehouse-staff", "iat": 0, "exp": u64::MAX,
        });
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(matches!(keys().verify(&t, 1001), Ok(Identity::Staff(s)) if s.exp == u64::MAX));
        let minted = keys().mint_guest("p_1", "m_1", "Bob", false, u64::MAX - 1, 60).unwrap();
        assert!(
            keys().verify(&minted, u64::MAX - 1).is_ok(),
            "a lifetime past u64::MAX ends there"
        );
    }

    #[test]
    fn tampered_signature_is_refused() {
        let t = keys().mint_guest("p_1", "m_1", "Bob", false, 1000, 60).unwrap();
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        // Claim to be invited without re-signing.
        let forged = br#"{"sub":"p_1","mtg":"m_1","name":"Bob","invited":true,"iss":"gatehouse-test","aud":"gatehouse-guest","iat":1000,"exp":1060}"#;
        parts[1] = b64(forged);
        assert_eq!(
            keys().verify(&parts.join("."), 1001).unwrap_err().code,
            ErrorCode::Unauthorized
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64(br#"{"sub":"x","name":"X","org":"o","role":"admin","iss":"gatehouse-test","aud":"gatehouse-staff","iat":1000,"exp":9999999999}"#);
        for token in [format!("{header}.{body}."), format!("{header}.{body}")] {
            assert_eq!(keys().verify(&token, 1001).unwrap_err().code, ErrorCode::Unauthorized);
        }
    }

    #[test]
    fn other_key_or_issuer_is_refused() {
        let other = TokenKeys::new(b"ffffffffffffffffffffffffffffffff", "gatehouse-test").unwrap();
        let t = other.mint_staff("a", "A", "o", StaffRole::Admin, 1000, 60).unwrap();
        assert_eq!(keys().verify(&t, 1001).unwrap_err().code, ErrorCode::Unauthorized);
        let other_iss = TokenKeys::new(SECRET, "someone-else").unwrap();
        let t = other_iss.mint_staff("a", "A", "o", StaffRole::Admin, 1000, 60).unwrap();
        assert_eq!(keys().verify(&t, 1001).unwrap_err().code, ErrorCode::Unauthorized);
        assert_eq!(
            keys().verify("garbage", 1001).unwrap_err().code,
            ErrorCode::Unauthorized
        );
    }

    #[test]
    fn short_secret_is_refused() {
        assert!(TokenKeys::new(b"short", "x").is_err());
    }
}
