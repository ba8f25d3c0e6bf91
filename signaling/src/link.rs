//! Links a guest opens: the meeting's public link, private invitations and
//! single-use links; and the rule for whether one may be redeemed now.

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode};
use crate::meeting::Meeting;

/// Default life of a private invitation.
pub const DEFAULT_INVITE_TTL_SECS: u64 = 90 * 24 * 3600;
/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    /// The meeting's one public link; guests who redeem it are anonymous.
    Public,
    /// A private invitation for one invitee; redeemers count as invited.
    Invite,
    /// Works once, then never again.
    SingleUse,
}

/// A link as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub link_id: String,
    pub meeting_id: crate::protocol::MeetingId,
    /// The unguessable code in the URL.
    pub code: String,
    pub kind: LinkKind,
    /// Whom a private or single-use link was made for (informational).
    pub invitee: Option<String>,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub revoked_at_ms: Option<u64>,
    /// How many times the link was redeemed.
    pub redemptions: u32,
}

impl Link {
    /// Whether a guest redeeming this link counts as invited.
    pub fn grants_invited(&self) -> bool {
        matches!(self.kind, LinkKind::Invite | LinkKind::SingleUse)
    }
}

/// Whether `link` of `meeting` may be redeemed at `now_ms`. The single-use
/// check here is advisory; the store re-checks atomically when it counts the use.
pub fn check_redeemable(link: &Link, meeting: &Meeting, now_ms: u64) -> Result<(), Error> {
    if link.revoked_at_ms.is_some() {
        return Err(Error::new(ErrorCode::LinkRevoked, "this link has been revoked"));
    }
    if meeting.is_ended() {
        return Err(Error::new(ErrorCode::MeetingEnded, "this meeting has ended"));
    }
    if link.expires_at_ms.is_some_and(|exp| exp <= now_ms) {
        return Err(Error::new(ErrorCode::LinkExpired, "this link has expired"));
    }
    match link.kind {
        LinkKind::Public if !meeting.settings.public_link_enabled => Err(Error::new(
            ErrorCode::LinkDisabled,
            "this meeting's public link is turned off",
        )),
        LinkKind::Public if !meeting.settings.allow_anonymous => Err(Error::new(
            ErrorCode::AnonymousJoinDisabled,
            "this meeting does not admit anonymous guests; ask for a personal invitation",
        )),
        LinkKind::SingleUse if link.redemptions > 0 => Err(Error::new(
            ErrorCode::LinkUsed,
            "this single-use link has already been used",
        )),
        _ => Ok(()),
    }
}

/// Trims a display name and checks it: 1 to 64 characters, no control characters.
pub fn clean_display_name(raw: &str) -> Result<String, Error> {
    let name: String = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    let bad = |m: &str| Err(Error::new(ErrorCode::InvalidDisplayName, m));
    if name.is_empty() {
        return bad("display name must not be empty");
    }
    if name.chars().count() > MAX_DISPLAY_NAME_CHARS {
        return bad("display name must be at most 64 characters");
    }
    if name.chars().any(|c| {
        c.is_control() || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    }) {
        return bad("display name must not contain control or direction-override characters");
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meeting::MeetingSettings;

    fn meeting() -> Meeting {
        Meeting {
            meeting_id: "m".into(),
            organization: "acme".into(),
            organizer: "olga".into(),
            settings: MeetingSettings {
                title: "t".into(),
                ..Default::default()
            },
            created_at_ms: 0,
            ended_at_ms: None,
        }
    }

    fn link(kind: LinkKind) -> Link {
        Link {
            link_id: "l".into(),
            meeting_id: "m".into(),
            code: "c".into(),
            kind,
            invitee: None,
            created_at_ms: 0,
            expires_at_ms: None,
            revoked_at_ms: None,
            redemptions: 0,
        }
    }

    fn code(r: Result<(), Error>) -> Option<ErrorCode> {
        r.err().map(|e| e.code)
    }

    #[test]
    fn redeemable_rules() {
        let m = meeting();
        assert_eq!(code(check_redeemable(&link(LinkKind::Public), &m, 5)), None);
        let expired = Link {
            expires_at_ms: Some(5),
            ..link(LinkKind::Invite)
        };
        assert_eq!(code(check_redeemable(&expired, &m, 4)), None);
        assert_eq!(code(check_redeemable(&expired, &m, 5)), Some(ErrorCode::LinkExpired));
        let revoked = Link {
            revoked_at_ms: Some(1),
            ..link(LinkKind::Invite)
        };
        assert_eq!(code(check_redeemable(&revoked, &m, 5)), Some(ErrorCode::LinkRevoked));
        let used = Link {
            redemptions: 1,
            ..link(LinkKind::SingleUse)
        };
        assert_eq!(code(check_redeemable(&used, &m, 5)), Some(ErrorCode::LinkUsed));
        let reused_invite = Link {
            redemptions: 3,
            ..link(LinkKind::Invite)
        };
        assert_eq!(code(check_redeemable(&reused_invite, &m, 5)), None);
    }

    #[test]
    fn meeting_settings_gate_the_public_link() {
        let mut m = meeting();
        m.settings.public_link_enabled = false;
        assert_eq!(
            code(check_redeemable(&link(LinkKind::Public), &m, 5)),
            Some(ErrorCode::LinkDisabled)
        );
        m.settings.public_link_enabled = true;
        m.settings.allow_anonymous = false;
        assert_eq!(
            code(check_redeemable(&link(LinkKind::Public), &m, 5)),
            Some(ErrorCode::AnonymousJoinDisabled)
        );
        assert_eq!(
            code(check_redeemable(&link(LinkKind::Invite), &m, 5)),
            None,
            "invites still work"
        );
        m.ended_at_ms = Some(1);
        assert_eq!(
            code(check_redeemable(&link(LinkKind::Invite), &m, 5)),
            Some(ErrorCode::MeetingEnded)
        );
    }

    #[test]
    fn display_names() {
        assert_eq!(clean_display_name("  Ada   Lovelace \n").unwrap(), "Ada Lovelace");
        assert_eq!(clean_display_name("Zoë 周").unwrap(), "Zoë 周");
        for bad in ["", "   ", "a\u{0}b", "x\u{202E}y", "a\u{1b}[31m"] {
            assert_eq!(
                clean_display_name(bad).unwrap_err().code,
                ErrorCode::InvalidDisplayName,
                "{bad:?}"
            );
        }
        assert!(clean_display_name(&"é".repeat(64)).is_ok());
        assert!(clean_display_name(&"é".repeat(65)).is_err());
        assert!(link(LinkKind::Invite).grants_invited() && !link(LinkKind::Public).grants_invited());
    }
}
