//! The `.ics` file of a booked appointment (RFC 5545, written by the `ics` crate, which
//! escapes text and folds long lines).

use ics::properties::{Description, DtEnd, DtStart, Sequence, Status, Summary, URL};
use ics::{Event, ICalendar, escape_text};
use jiff::Timestamp;

/// UTC in the iCalendar basic format, `20261207T080000Z`.
fn utc(ms: u64) -> String {
    Timestamp::from_millisecond(ms.min(i64::MAX as u64) as i64)
        .map(|t| t.strftime("%Y%m%dT%H%M%SZ").to_string())
        .unwrap_or_default()
}

/// What the calendar entry says.
pub struct IcsEvent<'a> {
    /// Stable across reschedules, so calendars update the entry rather than add one.
    pub uid: &'a str,
    pub title: &'a str,
    pub starts_at_ms: u64,
    pub ends_at_ms: u64,
    pub join_url: &'a str,
    pub manage_url: &'a str,
    /// Bumped on each reschedule or cancellation (RFC 5545 SEQUENCE).
    pub sequence: u32,
    pub cancelled: bool,
    pub now_ms: u64,
}

/// The calendar file.
pub fn calendar(e: &IcsEvent<'_>) -> String {
    let mut event = Event::new(e.uid.to_owned(), utc(e.now_ms));
    event.push(DtStart::new(utc(e.starts_at_ms)));
    event.push(DtEnd::new(utc(e.ends_at_ms)));
    event.push(Summary::new(escape_text(e.title.to_owned())));
    event.push(Description::new(escape_text(format!(
        "Join: {}\nCancel or reschedule: {}",
        e.join_url, e.manage_url
    ))));
    event.push(URL::new(e.join_url.to_owned()));
    event.push(Sequence::new(e.sequence.to_string()));
    event.push(Status::new(if e.cancelled { "CANCELLED" } else { "CONFIRMED" }));
    let mut cal = ICalendar::new("2.0", "-//Gatehouse//Appointments//EN");
    if e.cancelled {
        cal.push(ics::properties::Method::new("CANCEL"));
    }
    cal.add_event(event);
    cal.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_with_escaped_text_and_utc_times() {
        let text = calendar(&IcsEvent {
            uid: "a_1@gatehouse",
            title: "Skin check; follow-up, Dr Berg",
            starts_at_ms: 1_796_630_400_000, // 2026-12-07T08:00:00Z
            ends_at_ms: 1_796_632_200_000,
            join_url: "https://g.example/j/abc",
            manage_url: "https://g.example/book/a/xyz",
            sequence: 1,
            cancelled: false,
            now_ms: 1_796_000_000_000,
        });
        assert!(text.starts_with("BEGIN:VCALENDAR\r\n"), "{text}");
        assert!(text.contains("DTSTART:20261207T080000Z\r\n"), "{text}");
        assert!(text.contains("DTEND:20261207T083000Z\r\n"), "{text}");
        assert!(
            text.contains("SUMMARY:Skin check\\; follow-up\\, Dr Berg\r\n"),
            "{text}"
        );
        assert!(text.contains("UID:a_1@gatehouse\r\n"));
        assert!(text.contains("STATUS:CONFIRMED"));
        assert!(text.lines().all(|l| l.len() <= 75), "folded: {text}");
        assert!(text.trim_end().ends_with("END:VCALENDAR"));
    }
}
