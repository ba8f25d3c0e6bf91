//! The lobby-bypass rule: may this person enter the call without waiting?
//!
//! Pure and total over (rule, attendee); `tests` below is the whole matrix.

use crate::meeting::{LobbyBypass, Meeting};

/// Who is knocking, as far as admission cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attendee {
    Staff { subject: String, organization: String },
    Guest { invited: bool },
}

impl Attendee {
    /// The organiser always enters.
    pub fn is_organizer(&self, meeting: &Meeting) -> bool {
        matches!(self, Attendee::Staff { subject, .. } if *subject == meeting.organizer)
    }

    /// Staff on the invite list, or a guest with a private invitation.
    pub fn is_invited(&self, meeting: &Meeting) -> bool {
        match self {
            Attendee::Staff { subject, .. } => {
                *subject == meeting.organizer || meeting.settings.invited_staff.iter().any(|s| s == subject)
            }
            Attendee::Guest { invited } => *invited,
        }
    }
}

/// Whether `attendee` skips the lobby of `meeting` under its bypass rule.
pub fn may_bypass_lobby(meeting: &Meeting, attendee: &Attendee) -> bool {
    if attendee.is_organizer(meeting) {
        return true;
    }
    match meeting.settings.lobby_bypass {
        LobbyBypass::OrganizerOnly => false,
        LobbyBypass::Invited => attendee.is_invited(meeting),
        LobbyBypass::Organization => {
            matches!(attendee, Attendee::Staff { organization, .. } if *organization == meeting.organization)
        }
        LobbyBypass::Everyone => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meeting::MeetingSettings;

    fn meeting(rule: LobbyBypass) -> Meeting {
        Meeting {
            meeting_id: "m".into(),
            organization: "acme".into(),
            organizer: "olga".into(),
            settings: MeetingSettings {
                title: "t".into(),
                lobby_bypass: rule,
                invited_staff: vec!["ivan".into()],
                ..Default::default()
            },
            created_at_ms: 0,
            ended_at_ms: None,
        }
    }

    fn staff(s: &str, org: &str) -> Attendee {
        Attendee::Staff {
            subject: s.into(),
            organization: org.into(),
        }
    }

    #[test]
    fn the_whole_matrix() {
        use LobbyBypass::*;
        let people = [
            ("organiser", staff("olga", "acme")),
            ("invited staff", staff("ivan", "acme")),
            ("other staff", staff("sam", "acme")),
            ("other org staff", staff("xena", "other")),
            ("invited guest", Attendee::Guest { invited: true }),
            ("anonymous guest", Attendee::Guest { invited: false }),
        ];
        // Expected bypass per rule, in the order of `people`.
        let table = [
            (OrganizerOnly, [true, false, false, false, false, false]),
            (Invited, [true, true, false, false, true, false]),
            (Organization, [true, true, true, false, false, false]),
            (Everyone, [true, true, true, true, true, true]),
        ];
        for (rule, expected) in table {
            let m = meeting(rule);
            for ((who, attendee), want) in people.iter().zip(expected) {
                assert_eq!(may_bypass_lobby(&m, attendee), want, "{rule:?} / {who}");
            }
        }
    }
}
