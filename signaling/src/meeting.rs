//! Meetings: their settings and the rules that validate them.

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode};

/// Who may skip the lobby, with the meaning Microsoft Teams gives these options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LobbyBypass {
    /// Only the organiser enters directly; everyone else waits.
    OrganizerOnly,
    /// The organiser, staff on the invite list and guests holding a private invite link.
    #[default]
    Invited,
    /// Every staff member of the organiser's organisation; guests wait.
    Organization,
    /// Everyone, anonymous guests included.
    Everyone,
}

/// The settings staff choose for a meeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MeetingSettings {
    pub title: String,
    pub lobby_bypass: LobbyBypass,
    /// Whether guests may join through the public link at all (invite links still work).
    pub allow_anonymous: bool,
    /// Whether the meeting's public link works.
    pub public_link_enabled: bool,
    /// Whether guests may share their screen.
    pub guests_may_present: bool,
    pub chat_enabled: bool,
    /// In the call and in the lobby together.
    pub max_participants: u32,
    /// How long someone may wait in the lobby before being turned away.
    pub lobby_timeout_secs: u64,
    /// Staff subjects on the invite list.
    pub invited_staff: Vec<String>,
    /// Scheduled start, Unix milliseconds (informational).
    pub scheduled_start_ms: Option<u64>,
    /// Scheduled end, Unix milliseconds (informational).
    pub scheduled_end_ms: Option<u64>,
}

impl Default for MeetingSettings {
    fn default() -> Self {
        Self {
            title: String::new(),
            lobby_bypass: LobbyBypass::default(),
            allow_anonymous: true,
            public_link_enabled: true,
            guests_may_present: false,
            chat_enabled: true,
            max_participants: 50,
            lobby_timeout_secs: 15 * 60,
            invited_staff: Vec::new(),
            scheduled_start_ms: None,
            scheduled_end_ms: None,
        }
    }
}

/// Longest meeting title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Largest meeting size we accept.
pub const MAX_PARTICIPANTS_LIMIT: u32 = 1000;

impl MeetingSettings {
    /// Checks the settings are coherent; trims the title.
    pub fn validate(mut self) -> Result<Self, Error> {
        self.title = self.title.trim().to_owned();
        let bad = |m: &str| Err(Error::new(ErrorCode::BadRequest, m));
        if self.title.is_empty() || self.title.chars().count() > MAX_TITLE_CHARS {
            return bad("title must be 1 to 200 characters");
        }
        if self.title.chars().any(char::is_control) {
            return bad("title must not contain control characters");
        }
        if !(2..=MAX_PARTICIPANTS_LIMIT).contains(&self.max_participants) {
            return bad("max_participants must be between 2 and 1000");
        }
        if !(5..=24 * 3600).contains(&self.lobby_timeout_secs) {
            return bad("lobby_timeout_secs must be between 5 and 86400");
        }
        if let (Some(start), Some(end)) = (self.scheduled_start_ms, self.scheduled_end_ms)
            && end <= start
        {
            return bad("scheduled_end_ms must be after scheduled_start_ms");
        }
        Ok(self)
    }
}

/// A partial update of [`MeetingSettings`]; absent fields keep their value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeetingPatch {
    pub title: Option<String>,
    pub lobby_bypass: Option<LobbyBypass>,
    pub allow_anonymous: Option<bool>,
    pub public_link_enabled: Option<bool>,
    pub guests_may_present: Option<bool>,
    pub chat_enabled: Option<bool>,
    pub max_participants: Option<u32>,
    pub lobby_timeout_secs: Option<u64>,
    pub invited_staff: Option<Vec<String>>,
    pub scheduled_start_ms: Option<u64>,
    pub scheduled_end_ms: Option<u64>,
}

impl MeetingPatch {
    /// The settings with this patch applied, validated.
    pub fn apply(self, mut s: MeetingSettings) -> Result<MeetingSettings, Error> {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { s.$f = v; } )* };
        }
        set!(
            title,
            lobby_bypass,
            allow_anonymous,
            public_link_enabled,
            guests_may_present,
            chat_enabled,
            max_participants,
            lobby_timeout_secs,
            invited_staff
        );
        if self.scheduled_start_ms.is_some() {
            s.scheduled_start_ms = self.scheduled_start_ms;
        }
        if self.scheduled_end_ms.is_some() {
            s.scheduled_end_ms = self.scheduled_end_ms;
        }
        s.validate()
    }
}

/// A meeting as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meeting {
    pub meeting_id: crate::protocol::MeetingId,
    /// The organisation that owns the meeting (the organiser's).
    pub organization: String,
    /// Staff subject of the organiser.
    pub organizer: String,
    pub settings: MeetingSettings,
    pub created_at_ms: u64,
    /// Set once the meeting has been ended; an ended meeting admits nobody.
    pub ended_at_ms: Option<u64>,
}

impl Meeting {
    pub fn is_ended(&self) -> bool {
        self.ended_at_ms.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(title: &str) -> MeetingSettings {
        MeetingSettings {
            title: title.into(),
            ..Default::default()
        }
    }

    #[test]
    fn validates_title_and_limits() {
        assert_eq!(settings("  Clinic  ").validate().unwrap().title, "Clinic");
        assert!(settings("   ").validate().is_err());
        assert!(settings(&"x".repeat(201)).validate().is_err());
        assert!(settings("a\u{7}b").validate().is_err());
        assert!(
            MeetingSettings {
                max_participants: 1,
                ..settings("x")
            }
            .validate()
            .is_err()
        );
        assert!(
            MeetingSettings {
                lobby_timeout_secs: 1,
                ..settings("x")
            }
            .validate()
            .is_err()
        );
        assert!(
            MeetingSettings {
                scheduled_start_ms: Some(10),
                scheduled_end_ms: Some(5),
                ..settings("x")
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn patch_changes_only_given_fields() {
        let base = settings("Clinic").validate().unwrap();
        let patched = MeetingPatch {
            chat_enabled: Some(false),
            ..Default::default()
        }
        .apply(base.clone())
        .unwrap();
        assert!(!patched.chat_enabled);
        assert_eq!(patched.title, "Clinic");
        assert!(
            MeetingPatch {
                title: Some(String::new()),
                ..Default::default()
            }
            .apply(base)
            .is_err()
        );
    }

    #[test]
    fn bypass_names_on_the_wire() {
        assert_eq!(
            serde_json::to_string(&LobbyBypass::OrganizerOnly).unwrap(),
            "\"organizer_only\""
        );
        let s: MeetingSettings = serde_json::from_str(r#"{"title":"t","lobby_bypass":"everyone"}"#).unwrap();
        assert_eq!(s.lobby_bypass, LobbyBypass::Everyone);
        assert!(s.chat_enabled, "defaults fill absent fields");
    }
}
