//! Virtual appointments: departments, appointment types, working hours, bookings.
//!
//! The state of one appointment is the pure machine in
//! [`gatehouse_signaling::appointment`]; free slots are the pure computation in
//! [`slots`]. This module holds the records the store keeps and the rules that validate
//! what staff and guests send; the store (`store::appointments`) applies them durably and
//! the REST handlers (`server::appointments`, `server::booking`) are thin shells.

pub mod analytics;
pub mod ics;
pub mod slots;

use gatehouse_signaling::appointment::{Appointment, AppointmentState, DEFAULT_NO_SHOW_MINUTES, Transition};
use gatehouse_signaling::meeting::LobbyBypass;
use gatehouse_signaling::{Error, ErrorCode};
use serde::{Deserialize, Serialize};

/// Default life of a private booking link (as for private meeting invitations).
pub const DEFAULT_PRIVATE_LINK_DAYS: u32 = 90;
/// Default time a guest's contact is kept after the appointment, in days.
pub const DEFAULT_CONTACT_RETENTION_DAYS: u32 = 30;
/// Longest range of free slots asked for at once.
pub const MAX_SLOT_RANGE_MS: u64 = 62 * 24 * 3600 * 1000;
/// Longest department name, type title or guest contact, in characters.
const MAX_NAME_CHARS: usize = 200;

/// A department of an organisation, with its staff (staff subjects, as in their tokens).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Department {
    pub department_id: String,
    pub organization: String,
    pub name: String,
    pub staff: Vec<String>,
    pub created_at_ms: u64,
}

/// What staff choose for an appointment type (Bookings' "meeting type").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TypeSettings {
    pub title: String,
    pub duration_minutes: u32,
    /// The department whose staff take it when `staff` is empty.
    pub department_id: Option<String>,
    /// The staff who take it (one or several); empty: any member of the department.
    pub staff: Vec<String>,
    /// The lobby rule of each appointment's meeting; guests wait by default.
    pub lobby_bypass: LobbyBypass,
    pub guests_may_present: bool,
    /// Listed on the organisation's booking page; otherwise reachable only by its private link.
    pub public: bool,
    /// The private booking link works for one booking only.
    pub single_use_link: bool,
    /// Life of a private booking link.
    pub private_link_days: u32,
    /// Minutes after the start at which an absent guest is a no-show.
    pub no_show_minutes: u32,
    /// When `appointment.reminder` webhook events are sent, before the start: `"24h"`,
    /// `"15m"`, `"2d"` (at most 5, each 1 minute to 30 days).
    pub reminders: Vec<String>,
    /// Days after the appointment's end (on demand: its creation) at which the guest's
    /// contact is erased; the name and the history stay.
    pub contact_retention_days: u32,
}

impl Default for TypeSettings {
    fn default() -> Self {
        Self {
            title: String::new(),
            duration_minutes: 30,
            department_id: None,
            staff: Vec::new(),
            lobby_bypass: LobbyBypass::OrganizerOnly,
            guests_may_present: false,
            public: true,
            single_use_link: false,
            private_link_days: DEFAULT_PRIVATE_LINK_DAYS,
            no_show_minutes: DEFAULT_NO_SHOW_MINUTES,
            reminders: Vec::new(),
            contact_retention_days: DEFAULT_CONTACT_RETENTION_DAYS,
        }
    }
}

fn bad(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::BadRequest, message)
}

/// Trims `s` and checks it is 1 to 200 characters with no control characters.
pub fn clean_name(what: &str, s: &str) -> Result<String, Error> {
    let s = s.trim();
    if s.is_empty() || s.chars().count() > MAX_NAME_CHARS || s.chars().any(char::is_control) {
        return Err(bad(format!(
            "{what} must be 1 to {MAX_NAME_CHARS} characters, without control characters"
        )));
    }
    Ok(s.to_owned())
}

impl TypeSettings {
    /// These settings with the fields `patch` names replaced (a JSON merge of one level:
    /// `null` sets an optional field to none), then checked as [`TypeSettings::validate`]
    /// does. An unknown field or a value of the wrong type is refused.
    pub fn patched(&self, patch: serde_json::Map<String, serde_json::Value>) -> Result<Self, Error> {
        if patch.is_empty() {
            return Err(bad("name at least one setting to change"));
        }
        let mut merged = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => return Err(Error::new(ErrorCode::Internal, "type settings are not an object")),
        };
        // An unknown field stays in the merge and `deny_unknown_fields` refuses it.
        merged.extend(patch);
        serde_json::from_value::<TypeSettings>(serde_json::Value::Object(merged))
            .map_err(|e| bad(format!("invalid body: {e}")))?
            .validate()
    }

    /// Checks the settings; trims the title.
    pub fn validate(mut self) -> Result<Self, Error> {
        self.title = clean_name("title", &self.title)?;
        if !(5..=8 * 60).contains(&self.duration_minutes) {
            return Err(bad("duration_minutes must be between 5 and 480"));
        }
        if !(1..=240).contains(&self.no_show_minutes) {
            return Err(bad("no_show_minutes must be between 1 and 240"));
        }
        if !(1..=3650).contains(&self.contact_retention_days) {
            return Err(bad("contact_retention_days must be between 1 and 3650"));
        }
        if !(1..=3650).contains(&self.private_link_days) {
            return Err(bad("private_link_days must be between 1 and 3650"));
        }
        if self.staff.is_empty() && self.department_id.is_none() {
            return Err(bad("an appointment type needs staff or a department"));
        }
        if self.staff.len() > 100 {
            return Err(bad("at most 100 staff per appointment type"));
        }
        for s in &mut self.staff {
            *s = clean_name("a staff subject", s)?;
        }
        self.staff.dedup();
        if self.reminders.len() > 5 {
            return Err(bad("at most 5 reminders per appointment type"));
        }
        for r in &mut self.reminders {
            *r = r.trim().to_owned();
            match crate::webhooks::parse_offset(r) {
                Some(ms) if (60_000..=30 * 86_400_000).contains(&ms) => {}
                _ => {
                    return Err(bad(format!(
                        "reminder {r:?} must be a whole number of s, m, h or d, between 1 minute and 30 days (\"24h\", \"15m\")"
                    )));
                }
            }
        }
        // Earliest first (the longest offset), each offset once.
        self.reminders
            .sort_by_key(|r| std::cmp::Reverse(crate::webhooks::parse_offset(r)));
        self.reminders.dedup_by_key(|r| crate::webhooks::parse_offset(r));
        Ok(self)
    }

    pub fn duration_ms(&self) -> u64 {
        u64::from(self.duration_minutes) * 60_000
    }
}

/// A private booking link of a type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivateLink {
    pub code: String,
    pub expires_at_ms: u64,
    /// Set when a single-use link was used for its one booking.
    pub used_at_ms: Option<u64>,
}

impl PrivateLink {
    /// Whether a booking may be made through it at `now_ms`.
    pub fn check(&self, single_use: bool, now_ms: u64) -> Result<(), Error> {
        if self.expires_at_ms <= now_ms {
            return Err(Error::new(ErrorCode::LinkExpired, "this booking link has expired"));
        }
        if single_use && self.used_at_ms.is_some() {
            return Err(Error::new(
                ErrorCode::LinkUsed,
                "this booking link has already been used",
            ));
        }
        Ok(())
    }
}

/// An appointment type as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppointmentType {
    pub type_id: String,
    pub organization: String,
    #[serde(flatten)]
    pub settings: TypeSettings,
    pub private_link: Option<PrivateLink>,
    pub created_at_ms: u64,
    pub archived_at_ms: Option<u64>,
}

/// An appointment as stored: who, when, its meeting and links, and its state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppointmentRecord {
    pub appointment_id: String,
    pub organization: String,
    pub type_id: String,
    pub department_id: Option<String>,
    pub staff: String,
    pub meeting_id: String,
    /// The guest's single-use join link.
    pub link_id: String,
    /// The code of the guest's own page (view, cancel, reschedule, `.ics`).
    pub manage_code: String,
    pub guest_name: String,
    pub guest_contact: Option<String>,
    pub machine: Appointment,
    pub created_at_ms: u64,
}

impl AppointmentRecord {
    pub fn state(&self) -> AppointmentState {
        self.machine.state
    }
}

/// A stored transition.
pub type StoredTransition = Transition;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_patch_replaces_only_the_fields_it_names_and_is_checked_whole() {
        let t = TypeSettings {
            title: "Skin check".into(),
            staff: vec!["olga".into()],
            department_id: Some("d_1".into()),
            reminders: vec!["24h".into()],
            ..Default::default()
        }
        .validate()
        .unwrap();
        let p = t
            .patched(patch(json!({ "title": " Mole check ", "no_show_minutes": 5 })))
            .unwrap();
        assert_eq!((p.title.as_str(), p.no_show_minutes), ("Mole check", 5));
        assert_eq!(
            TypeSettings {
                title: t.title.clone(),
                no_show_minutes: t.no_show_minutes,
                ..p.clone()
            },
            t,
            "nothing else changed"
        );
        // `null` clears an optional field; the whole is checked again.
        let p = t.patched(patch(json!({ "department_id": null }))).unwrap();
        assert_eq!(p.department_id, None);
        for (bad_patch, why) in [
            (json!({}), "name at least one"),
            (json!({ "colour": "red" }), "unknown field"),
            (json!({ "duration_minutes": "long" }), "invalid body"),
            (json!({ "duration_minutes": 2 }), "duration_minutes"),
            (
                json!({ "staff": [], "department_id": null }),
                "needs staff or a department",
            ),
            (json!({ "reminders": ["soon"] }), "reminder"),
            (json!({ "title": "  " }), "title"),
        ] {
            let e = t.patched(patch(bad_patch.clone())).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{bad_patch}");
            assert!(e.message.contains(why), "{bad_patch}: {}", e.message);
        }
    }

    #[test]
    fn type_settings_are_checked() {
        let ok = TypeSettings {
            title: "  Skin check ".into(),
            staff: vec!["olga".into()],
            ..Default::default()
        }
        .validate()
        .unwrap();
        assert_eq!(ok.title, "Skin check");
        assert_eq!((ok.no_show_minutes, ok.private_link_days), (15, 90));
        assert_eq!(ok.contact_retention_days, 30);
        assert_eq!(ok.lobby_bypass, LobbyBypass::OrganizerOnly, "guests wait by default");
        let bad_cases = [
            TypeSettings::default(),
            TypeSettings {
                title: "x".into(),
                ..Default::default()
            },
            TypeSettings {
                duration_minutes: 4,
                ..ok.clone()
            },
            TypeSettings {
                no_show_minutes: 0,
                ..ok.clone()
            },
            TypeSettings {
                private_link_days: 0,
                ..ok.clone()
            },
            TypeSettings {
                contact_retention_days: 0,
                ..ok.clone()
            },
            TypeSettings {
                title: "a\u{7}".into(),
                ..ok.clone()
            },
        ];
        for s in bad_cases {
            assert_eq!(s.clone().validate().unwrap_err().code, ErrorCode::BadRequest, "{s:?}");
        }
    }

    #[test]
    fn private_links_expire_and_single_use_ones_are_used_once() {
        let day = 24 * 3600 * 1000;
        let mut l = PrivateLink {
            code: "c".into(),
            expires_at_ms: 90 * day,
            used_at_ms: None,
        };
        l.check(true, 90 * day - 1).unwrap();
        assert_eq!(l.check(false, 90 * day).unwrap_err().code, ErrorCode::LinkExpired);
        l.used_at_ms = Some(5);
        assert_eq!(l.check(true, 1).unwrap_err().code, ErrorCode::LinkUsed);
        l.check(false, 1).unwrap();
    }
}
