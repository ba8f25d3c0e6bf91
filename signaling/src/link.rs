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

/// Trims a display name and checks it (PROTOCOL.md §13.9): 1 to 64 characters, no
/// control, direction or zero-width characters (the joiners U+200C and U+200D only
/// inside a sequence, as in 👩‍💻 or a Persian name), and at least one visible character.
pub fn clean_display_name(raw: &str) -> Result<String, Error> {
    let name: String = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    let bad = |m: &str| Err(Error::new(ErrorCode::InvalidDisplayName, m));
    if name.is_empty() {
        return bad("display name must not be empty");
    }
    if name.chars().count() > MAX_DISPLAY_NAME_CHARS {
        return bad("display name must be at most 64 characters");
    }
    if name.chars().any(is_refused) {
        return bad("display name must not contain control, direction-override or zero-width characters");
    }
    let chars: Vec<char> = name.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if is_joiner(c) && !joins(&chars[..i], chars.get(i + 1).copied()) {
            return bad("a zero-width joiner may only stand inside a word or an emoji sequence");
        }
    }
    if !chars.iter().any(|&c| is_visible(c)) {
        return bad("display name must have a visible character");
    }
    Ok(name)
}

/// Characters no name may hold anywhere: controls, bidirectional marks, embeddings,
/// overrides and isolates (they reorder what others see), and the zero-width space and
/// word joiners (they make two names that look the same differ).
fn is_refused(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{061C}'                     // Arabic letter mark
            | '\u{200B}'                   // zero-width space
            | '\u{200E}'..='\u{200F}'      // left-to-right and right-to-left marks
            | '\u{202A}'..='\u{202E}'      // embeddings and overrides
            | '\u{2060}'..='\u{2064}'      // word joiner, invisible operators
            | '\u{2066}'..='\u{206F}'      // isolates, deprecated format characters
            | '\u{FEFF}'                   // zero-width no-break space
            | '\u{FFF9}'..='\u{FFFB}'      // interlinear annotation
        )
}

/// Zero-width non-joiner and joiner: needed inside Indic and Persian words and emoji
/// sequences, nowhere else.
fn is_joiner(c: char) -> bool {
    matches!(c, '\u{200C}' | '\u{200D}')
}

/// Whether a joiner between `before` and `after` joins two visible characters; the
/// variation selectors that may end an emoji (❤️ is U+2764 U+FE0F) are looked through.
fn joins(before: &[char], after: Option<char>) -> bool {
    let prev = before.iter().rev().copied().find(|&c| !is_variation_selector(c));
    prev.is_some_and(is_visible) && after.is_some_and(is_visible)
}

fn is_variation_selector(c: char) -> bool {
    matches!(c, '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}')
}

/// Whether `c` shows anything on its own: not white space, not a format character
/// (general category Cf), not a default-ignorable code point (joiners, variation
/// selectors, tags, the soft hyphen, Hangul fillers), and not a blank glyph
/// (Braille pattern blank). A name needs at least one, or it renders empty.
pub fn is_visible(c: char) -> bool {
    !(c.is_whitespace() || c.is_control() || is_default_ignorable(c) || is_format(c) || c == '\u{2800}')
}

/// Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt, 15.1).
fn is_default_ignorable(c: char) -> bool {
    matches!(c,
        '\u{00AD}'
        | '\u{034F}'
        | '\u{061C}'
        | '\u{115F}'..='\u{1160}'
        | '\u{17B4}'..='\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{FEFF}'
        | '\u{FFA0}'
        | '\u{FFF0}'..='\u{FFF8}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// General category Cf (format) outside the default-ignorables (UnicodeData.txt, 15.1):
/// prepended number signs and annotation marks that do not stand as a glyph alone.
fn is_format(c: char) -> bool {
    matches!(c,
        '\u{0600}'..='\u{0605}'
        | '\u{06DD}'
        | '\u{070F}'
        | '\u{0890}'..='\u{0891}'
        | '\u{08E2}'
        | '\u{FFF9}'..='\u{FFFB}'
        | '\u{110BD}'
        | '\u{110CD}'
        | '\u{13430}'..='\u{1343F}'
    )
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

    fn refused(name: &str) -> bool {
        match clean_display_name(name) {
            Ok(_) => false,
            Err(e) => {
                assert_eq!(e.code, ErrorCode::InvalidDisplayName, "{name:?}");
                true
            }
        }
    }

    /// Characters that render as nothing on their own.
    const INVISIBLE: &[char] = &[
        '\u{00AD}',
        '\u{034F}',
        '\u{115F}',
        '\u{1160}',
        '\u{17B4}',
        '\u{17B5}',
        '\u{180B}',
        '\u{180E}',
        '\u{180F}',
        '\u{200C}',
        '\u{200D}',
        '\u{3164}',
        '\u{FE00}',
        '\u{FE0F}',
        '\u{FFA0}',
        '\u{2800}',
        '\u{1BCA0}',
        '\u{1D173}',
        '\u{E0001}',
        '\u{E0020}',
        '\u{E007F}',
        '\u{E0100}',
        '\u{0600}',
        '\u{06DD}',
        '\u{110BD}',
        '\u{13430}',
        '\u{FFF0}',
    ];

    #[test]
    fn names_with_nothing_visible_are_refused() {
        // One at a time, repeated, mixed with spaces, and all together.
        for &c in INVISIBLE {
            assert!(!is_visible(c), "U+{:04X}", c as u32);
            for name in [c.to_string(), c.to_string().repeat(5), format!(" {c} {c} ")] {
                assert!(refused(&name), "{name:?}");
            }
        }
        assert!(refused(&INVISIBLE.iter().take(60).collect::<String>()));
        // The ones the outside testing found, and the white space that is not ASCII.
        for name in [
            "\u{FEFF}",
            "\u{2060}",
            "\u{3164}",
            "\u{00AD}",
            "\u{2800}",
            "\u{180E}",
            "\u{3000}",
            "\u{00A0}",
            "\u{2028}",
            "\u{3164}\u{3164}\u{3164}",
        ] {
            assert!(refused(name), "{name:?}");
        }
        // Every character below the private-use planes, alone: white space and controls
        // are invisible, and a one-character name is taken exactly when it is visible.
        for c in (0..0xF_0000u32).filter_map(char::from_u32) {
            if c.is_whitespace() || c.is_control() {
                assert!(!is_visible(c), "U+{:04X}", c as u32);
            }
            assert_eq!(
                clean_display_name(&c.to_string()).is_ok(),
                is_visible(c),
                "U+{:04X}",
                c as u32
            );
        }
    }

    #[test]
    fn zero_width_and_direction_characters_are_refused_anywhere() {
        for c in [
            '\u{200B}', '\u{200E}', '\u{200F}', '\u{061C}', '\u{202A}', '\u{202E}', '\u{2060}', '\u{2064}', '\u{2066}',
            '\u{2069}', '\u{206F}', '\u{FEFF}', '\u{FFF9}',
        ] {
            for name in [format!("Ada{c}"), format!("{c}Ada"), format!("A{c}da")] {
                assert!(refused(&name), "{name:?}");
            }
        }
        // A joiner that joins nothing.
        for name in [
            "\u{200D}Ada",
            "Ada\u{200D}",
            "Ada \u{200D}Lovelace",
            "Ada\u{200D} Lovelace",
            "Ada\u{200C}",
            "\u{200C}\u{200D}",
            "👩\u{200D}\u{200D}💻",
        ] {
            assert!(refused(name), "{name:?}");
        }
    }

    #[test]
    fn real_names_are_kept() {
        for name in [
            "Zoë",
            "李小龙",
            "O'Brien",
            "Jean-Luc Picard",
            "José María Núñez",
            "Ægir Þórsson",
            "Σωκράτης",
            "Владимир",
            "محمد",
            "דוד",
            "สมชาย",
            "김민준",
            "Nguyễn Văn A",
            "Zoe\u{0308}",    // e + combining diaeresis
            "علی\u{200C}رضا", // Persian: ZWNJ inside the name
            "क्\u{200D}ष",     // Devanagari: ZWJ in a conjunct
            "🙂",
            "Ana 🎉",
            "❤\u{FE0F}",                                                // emoji presentation selector
            "👩\u{200D}💻 Ada",                                         // woman technologist (ZWJ sequence)
            "👨\u{200D}👩\u{200D}👧\u{200D}👦",                         // family
            "🏳\u{FE0F}\u{200D}🌈",                                      // rainbow flag: selector, then ZWJ
            "👋🏽",                                                       // skin tone modifier
            "🏴\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}", // Scotland: tag sequence
            "A",
            "x\u{00AD}y", // a soft hyphen among letters is harmless
        ] {
            assert_eq!(clean_display_name(name).as_deref(), Ok(name), "{name:?}");
        }
    }
}
