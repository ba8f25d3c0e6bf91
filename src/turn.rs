//! The ICE servers a participant is handed on entering the call, TURN credentials
//! included, minted the TURN REST API way (coturn's `use-auth-secret`).
//!
//! The gateway and the TURN server share one secret and never talk to each other: for
//! each participant the gateway mints the username `<unix expiry>:<participant_id>` and
//! the password base64(HMAC-SHA1(secret, username)); the TURN server recomputes the
//! password from the username and refuses it once the expiry has passed. Pure: the
//! clock is an argument, so the tests pick the time.

use base64::Engine as _;
use gatehouse_signaling::protocol::{IceServer, ParticipantId};
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// A TURN server (or several, one URL each) that accepts TURN REST API credentials.
#[derive(Clone)]
pub struct TurnRest {
    /// `turn:`/`turns:` URLs, all served with the same secret.
    urls: Vec<String>,
    /// The TURN server's `static-auth-secret`.
    secret: String,
    /// How long a minted credential stays valid.
    ttl_secs: u64,
}

impl std::fmt::Debug for TurnRest {
    // The secret stays out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnRest")
            .field("urls", &self.urls)
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

impl TurnRest {
    pub fn new(urls: Vec<String>, secret: impl Into<String>, ttl_secs: u64) -> TurnRest {
        TurnRest {
            urls,
            secret: secret.into(),
            ttl_secs,
        }
    }

    /// The ICE server entry for `participant`, valid until `now_unix_secs` + the TTL.
    pub fn mint(&self, participant: &ParticipantId, now_unix_secs: u64) -> IceServer {
        let username = username(now_unix_secs.saturating_add(self.ttl_secs), participant);
        let credential = password(&self.secret, &username);
        IceServer {
            urls: self.urls.clone(),
            username: Some(username),
            credential: Some(credential),
        }
    }
}

/// The TURN REST API username: the Unix time at which it expires, a colon, who it is for.
/// coturn reads the number before the first colon as the expiry and logs the whole name,
/// so one grep of its log follows one participant.
pub fn username(expiry_unix_secs: u64, participant: &ParticipantId) -> String {
    format!("{expiry_unix_secs}:{participant}")
}

/// The TURN REST API password for `username`: base64(HMAC-SHA1(secret, username)).
pub fn password(secret: &str, username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Everything a participant gets in `admitted.ice_servers`: the plain STUN/TURN servers
/// configured as such, then, when a TURN REST server is configured, its entry with
/// credentials minted for that participant.
#[derive(Debug, Clone, Default)]
pub struct IceServers {
    /// Servers handed out as configured, without credentials (the `ice_servers` setting).
    plain: Vec<IceServer>,
    /// The TURN server whose credentials are minted per participant.
    turn: Option<TurnRest>,
}

impl IceServers {
    pub fn new(plain_urls: &[String], turn: Option<TurnRest>) -> IceServers {
        IceServers {
            plain: plain_urls
                .iter()
                .map(|url| IceServer {
                    urls: vec![url.clone()],
                    username: None,
                    credential: None,
                })
                .collect(),
            turn,
        }
    }

    /// The list for `participant` entering the call at `now_unix_secs`.
    pub fn for_participant(&self, participant: &ParticipantId, now_unix_secs: u64) -> Vec<IceServer> {
        let mut servers = self.plain.clone();
        servers.extend(self.turn.as_ref().map(|t| t.mint(participant, now_unix_secs)));
        servers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW_YEAR_2026: u64 = 1_767_225_600;

    #[test]
    fn the_password_is_what_coturn_computes() {
        // Computed independently of this code, in a shell:
        //   printf '%s' '1767225600:p_0lgaB3rg5tAff01Q' \
        //     | openssl dgst -sha1 -hmac 'north-wind-4-gatehouse' -binary | base64
        assert_eq!(
            password("north-wind-4-gatehouse", "1767225600:p_0lgaB3rg5tAff01Q"),
            "in9ITsz+0rLXDK7wylvYRSXRnQo="
        );
    }

    #[test]
    fn a_participant_gets_credentials_of_its_own_that_expire_after_the_ttl() {
        let turn = TurnRest::new(
            vec![
                "turn:turn.example.org:3478?transport=udp".into(),
                "turns:turn.example.org:443?transport=tcp".into(),
            ],
            "north-wind-4-gatehouse",
            7200,
        );
        let grace = ParticipantId::from("p_Gr4ceH0pp3rXy12Z");
        let olga = ParticipantId::from("p_0lgaB3rg5tAff01Q");
        let server = turn.mint(&olga, NEW_YEAR_2026 - 7200);
        assert_eq!(server.urls.len(), 2, "every URL in one entry, as browsers take them");
        assert_eq!(server.username.as_deref(), Some("1767225600:p_0lgaB3rg5tAff01Q"));
        assert_eq!(server.credential.as_deref(), Some("in9ITsz+0rLXDK7wylvYRSXRnQo="));
        let theirs = turn.mint(&grace, NEW_YEAR_2026 - 7200);
        assert_ne!(theirs.credential, server.credential);
        let later = turn.mint(&olga, NEW_YEAR_2026);
        assert_eq!(later.username.as_deref(), Some("1767232800:p_0lgaB3rg5tAff01Q"));
        assert!(
            !format!("{turn:?}").contains("north-wind"),
            "the secret is not in Debug"
        );
    }

    #[test]
    fn plain_servers_come_first_and_turn_only_when_configured() {
        let stun = vec!["stun:stun.example.org:3478".to_owned()];
        let olga = ParticipantId::from("p_0lgaB3rg5tAff01Q");
        let plain = IceServers::new(&stun, None).for_participant(&olga, NEW_YEAR_2026);
        assert_eq!(plain.len(), 1);
        assert_eq!(plain[0].urls, stun);
        assert_eq!((plain[0].username.as_ref(), plain[0].credential.as_ref()), (None, None));
        let turn = TurnRest::new(vec!["turn:turn.example.org:3478".into()], "s", 60);
        let both = IceServers::new(&stun, Some(turn)).for_participant(&olga, NEW_YEAR_2026);
        assert_eq!(both.len(), 2);
        assert_eq!(both[0], plain[0]);
        assert_eq!(both[1].username.as_deref(), Some("1767225660:p_0lgaB3rg5tAff01Q"));
        assert!(IceServers::default().for_participant(&olga, 0).is_empty());
    }
}
