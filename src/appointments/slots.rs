//! Free booking slots: a staff member's working hours (weekly hours in their own IANA
//! time zone, with dated exceptions) minus their appointments, for one appointment type's
//! duration over a range of time. Pure: the caller passes the busy intervals and `now`.
//!
//! Working hours are civil times ("09:00 on Mondays in Europe/Oslo"); each day's hours are
//! turned into instants with that day's offset (jiff and its bundled tz database), so a
//! slot at 09:00 stays at 09:00 local across a DST change. A time that does not exist on a
//! spring-forward day is moved forward (02:30 becomes 03:30), and a repeated one on a
//! fall-back day is taken the first time: RFC 5545's and Temporal's "compatible" rule.
//! Within an interval slots follow one another in real time, so a night shift that spans
//! a change has one slot fewer or more: what the clock on the wall really allows.

use std::collections::BTreeMap;

use gatehouse_signaling::{Error, ErrorCode};
use jiff::Timestamp;
use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

/// Most intervals in one day.
const MAX_INTERVALS_PER_DAY: usize = 12;
/// Most dated exceptions.
const MAX_EXCEPTIONS: usize = 400;

/// Working hours as the API takes and returns them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkingHoursSpec {
    /// An IANA time zone name, e.g. `Europe/Oslo`.
    pub time_zone: String,
    /// Hours per weekday (`mon` … `sun`): `[["09:00", "12:00"], ["13:00", "17:00"]]`.
    /// A day left out is not worked. `"24:00"` ends an interval at midnight.
    #[serde(default)]
    pub weekly: BTreeMap<String, Vec<[String; 2]>>,
    /// Dates whose hours differ from the week's (an empty list is a day off).
    #[serde(default)]
    pub exceptions: Vec<ExceptionSpec>,
}

/// One date's own hours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionSpec {
    /// `YYYY-MM-DD`, in the working hours' time zone.
    pub date: String,
    #[serde(default)]
    pub hours: Vec<[String; 2]>,
}

/// Minutes since midnight, start < end, end at most 24:00.
type Interval = (u16, u16);

/// Validated working hours.
#[derive(Debug, Clone)]
pub struct WorkingHours {
    tz: TimeZone,
    /// Monday first.
    weekly: [Vec<Interval>; 7],
    exceptions: BTreeMap<Date, Vec<Interval>>,
}

fn bad(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::BadRequest, message)
}

fn minutes(s: &str) -> Result<u16, Error> {
    if s == "24:00" {
        return Ok(24 * 60);
    }
    let t: Time = s
        .parse()
        .map_err(|_| bad(format!("{s:?} is not a time of day (HH:MM)")))?;
    if t.second() != 0 || t.subsec_nanosecond() != 0 {
        return Err(bad(format!("{s:?}: working hours are whole minutes")));
    }
    Ok(t.hour() as u16 * 60 + t.minute() as u16)
}

fn intervals(list: &[[String; 2]]) -> Result<Vec<Interval>, Error> {
    if list.len() > MAX_INTERVALS_PER_DAY {
        return Err(bad(format!("at most {MAX_INTERVALS_PER_DAY} intervals a day")));
    }
    let mut out = list
        .iter()
        .map(|[a, b]| {
            let (a, b) = (minutes(a)?, minutes(b)?);
            if a >= b {
                return Err(bad("each interval must end after it starts"));
            }
            Ok((a, b))
        })
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_unstable();
    if out.windows(2).any(|w| w[0].1 > w[1].0) {
        return Err(bad("a day's intervals must not overlap"));
    }
    Ok(out)
}

fn weekday_index(name: &str) -> Option<usize> {
    ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .position(|d| *d == name)
}

impl WorkingHours {
    /// Checks and compiles `spec`: a known time zone, `HH:MM` times, intervals in order.
    pub fn parse(spec: &WorkingHoursSpec) -> Result<WorkingHours, Error> {
        let tz = TimeZone::get(&spec.time_zone)
            .map_err(|_| bad(format!("{:?} is not an IANA time zone", spec.time_zone)))?;
        let mut weekly: [Vec<Interval>; 7] = Default::default();
        for (day, list) in &spec.weekly {
            let i = weekday_index(day).ok_or_else(|| bad(format!("{day:?} is not a weekday (mon … sun)")))?;
            weekly[i] = intervals(list)?;
        }
        if spec.exceptions.len() > MAX_EXCEPTIONS {
            return Err(bad(format!("at most {MAX_EXCEPTIONS} exceptions")));
        }
        let mut exceptions = BTreeMap::new();
        for e in &spec.exceptions {
            let date: Date = e
                .date
                .parse()
                .map_err(|_| bad(format!("{:?} is not a date (YYYY-MM-DD)", e.date)))?;
            if exceptions.insert(date, intervals(&e.hours)?).is_some() {
                return Err(bad(format!("{} has two exceptions", e.date)));
            }
        }
        Ok(WorkingHours { tz, weekly, exceptions })
    }

    fn hours_on(&self, date: Date) -> &[Interval] {
        self.exceptions.get(&date).unwrap_or_else(|| {
            let i = match date.weekday() {
                Weekday::Monday => 0,
                Weekday::Tuesday => 1,
                Weekday::Wednesday => 2,
                Weekday::Thursday => 3,
                Weekday::Friday => 4,
                Weekday::Saturday => 5,
                Weekday::Sunday => 6,
            };
            &self.weekly[i]
        })
    }

    /// The instant of `minute` past midnight on `date`, in these hours' zone.
    fn instant(&self, date: Date, minute: u16) -> Option<i64> {
        let (date, minute) = if minute >= 24 * 60 {
            (date.tomorrow().ok()?, 0)
        } else {
            (date, minute)
        };
        let dt = date.at((minute / 60) as i8, (minute % 60) as i8, 0, 0);
        // "Compatible" disambiguation: a time in a gap moves forward, one in a fold is the first.
        Some(self.tz.to_timestamp(dt).ok()?.as_millisecond())
    }

    /// Whether `[start, end)` lies inside one working interval.
    pub fn covers(&self, start_ms: u64, end_ms: u64) -> bool {
        // Intervals that meet are one stretch of work: a day worked to 24:00 and the next
        // from 00:00 (a night shift, or every hour of every day) cover a time across midnight.
        let mut intervals: Vec<(u64, u64)> = self.intervals_around(start_ms, end_ms).collect();
        intervals.sort_unstable();
        let mut stretch: Option<(u64, u64)> = None;
        for (a, b) in intervals {
            let (from, to) = match stretch {
                Some((from, to)) if a <= to => (from, to.max(b)),
                _ => (a, b),
            };
            if from <= start_ms && end_ms <= to {
                return true;
            }
            stretch = Some((from, to));
        }
        false
    }

    /// The working intervals (as instants) of every local date that `[from, to)` touches.
    fn intervals_around(&self, from_ms: u64, to_ms: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let date_of = |ms: u64| {
            Timestamp::from_millisecond(ms.min(i64::MAX as u64) as i64)
                .ok()
                .map(|t| t.to_zoned_datetime(self.tz.clone()).date())
        };
        // A day before and after: an interval of the previous local date may reach in.
        let first = date_of(from_ms).and_then(|d| d.yesterday().ok());
        let last = date_of(to_ms).and_then(|d| d.tomorrow().ok());
        let dates = first
            .zip(last)
            .into_iter()
            .flat_map(|(first, last)| first.series(jiff::Span::new().days(1)).take_while(move |d| *d <= last));
        dates.flat_map(move |date| {
            self.hours_on(date).iter().filter_map(move |&(a, b)| {
                let (a, b) = (self.instant(date, a)?, self.instant(date, b)?);
                (a >= 0 && b > a).then_some((a as u64, b as u64))
            })
        })
    }
}

/// Slot starts (Unix ms, ascending, no repeats) of `duration_ms` within `hours` that start
/// in `[from_ms, to_ms)`, not before `not_before_ms`, and overlap none of `busy`
/// (`[start, end)` intervals).
pub fn free_slots(
    hours: &WorkingHours,
    duration_ms: u64,
    busy: &[(u64, u64)],
    from_ms: u64,
    to_ms: u64,
    not_before_ms: u64,
) -> Vec<u64> {
    if duration_ms == 0 || to_ms <= from_ms {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (a, b) in hours.intervals_around(from_ms, to_ms) {
        let mut s = a;
        while let Some(e) = s.checked_add(duration_ms).filter(|e| *e <= b) {
            let free = !busy.iter().any(|&(x, y)| s < y && x < e);
            if s >= from_ms && s < to_ms && s >= not_before_ms && free {
                out.push(s);
            }
            s = e;
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;
    const HOUR: u64 = 60 * MIN;

    fn ms(rfc3339: &str) -> u64 {
        rfc3339.parse::<Timestamp>().unwrap().as_millisecond() as u64
    }

    fn iso(ms: u64) -> String {
        Timestamp::from_millisecond(ms as i64).unwrap().to_string()
    }

    fn spec(tz: &str, weekly: &[(&str, &[(&str, &str)])]) -> WorkingHoursSpec {
        WorkingHoursSpec {
            time_zone: tz.into(),
            weekly: weekly
                .iter()
                .map(|(d, l)| {
                    (
                        d.to_string(),
                        l.iter().map(|(a, b)| [a.to_string(), b.to_string()]).collect(),
                    )
                })
                .collect(),
            exceptions: Vec::new(),
        }
    }

    fn every_day(tz: &str, a: &str, b: &str) -> WorkingHours {
        let day = vec![[a.to_owned(), b.to_owned()]];
        WorkingHours::parse(&WorkingHoursSpec {
            time_zone: tz.into(),
            weekly: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
                .iter()
                .map(|d| (d.to_string(), day.clone()))
                .collect(),
            exceptions: Vec::new(),
        })
        .unwrap()
    }

    fn slots(h: &WorkingHours, dur: u64, from: &str, to: &str) -> Vec<String> {
        free_slots(h, dur, &[], ms(from), ms(to), 0)
            .into_iter()
            .map(iso)
            .collect()
    }

    #[test]
    fn local_hours_follow_the_offset_of_each_season() {
        let h = WorkingHours::parse(&spec("Europe/Oslo", &[("mon", &[("09:00", "10:30")])])).unwrap();
        // Monday 7 December 2026, winter: UTC+1.
        assert_eq!(
            slots(&h, 30 * MIN, "2026-12-07T00:00:00Z", "2026-12-08T00:00:00Z"),
            ["2026-12-07T08:00:00Z", "2026-12-07T08:30:00Z", "2026-12-07T09:00:00Z"]
        );
        // Monday 6 July 2026, summer: UTC+2.
        assert_eq!(
            slots(&h, 45 * MIN, "2026-07-06T00:00:00Z", "2026-07-07T00:00:00Z"),
            ["2026-07-06T07:00:00Z", "2026-07-06T07:45:00Z"]
        );
        // Tuesday: not worked.
        assert!(slots(&h, 30 * MIN, "2026-12-08T00:00:00Z", "2026-12-09T00:00:00Z").is_empty());
    }

    #[test]
    fn a_night_across_spring_forward_has_one_hour_less() {
        // Berlin, Sunday 29 March 2026: 02:00 CET becomes 03:00 CEST.
        let h = every_day("Europe/Berlin", "00:00", "06:00");
        assert_eq!(
            slots(&h, HOUR, "2026-03-28T23:00:00Z", "2026-03-29T05:00:00Z"),
            [
                "2026-03-28T23:00:00Z",
                "2026-03-29T00:00:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-29T02:00:00Z",
                "2026-03-29T03:00:00Z"
            ]
        );
    }

    #[test]
    fn a_night_across_fall_back_has_one_hour_more() {
        // Berlin, Sunday 25 October 2026: 03:00 CEST becomes 02:00 CET.
        let h = every_day("Europe/Berlin", "00:00", "06:00");
        let s = slots(&h, HOUR, "2026-10-24T22:00:00Z", "2026-10-25T05:00:00Z");
        assert_eq!(s.len(), 7, "{s:?}");
        assert_eq!(
            (s[0].as_str(), s[6].as_str()),
            ("2026-10-24T22:00:00Z", "2026-10-25T04:00:00Z")
        );
    }

    #[test]
    fn hours_that_start_in_the_spring_gap_start_after_it() {
        let h = every_day("Europe/Berlin", "02:30", "04:00");
        // 02:30 does not exist on 29 March: it is 03:30 CEST (01:30Z); 04:00 CEST is 02:00Z.
        assert_eq!(
            slots(&h, 30 * MIN, "2026-03-29T00:00:00Z", "2026-03-29T12:00:00Z"),
            ["2026-03-29T01:30:00Z"]
        );
        // The day before, the same hours are 90 minutes.
        assert_eq!(
            slots(&h, 30 * MIN, "2026-03-28T00:00:00Z", "2026-03-28T12:00:00Z").len(),
            3
        );
    }

    #[test]
    fn zones_change_on_their_own_dates() {
        // New York moves on 8 March 2026, Europe three weeks later: 09:00 New York is 14:00Z
        // on the 6th and 13:00Z on the 9th, whatever zone the booking page is in.
        let h = every_day("America/New_York", "09:00", "10:00");
        assert_eq!(
            slots(&h, HOUR, "2026-03-06T00:00:00Z", "2026-03-10T00:00:00Z"),
            [
                "2026-03-06T14:00:00Z",
                "2026-03-07T14:00:00Z",
                "2026-03-08T13:00:00Z",
                "2026-03-09T13:00:00Z"
            ]
        );
    }

    #[test]
    fn a_local_date_that_starts_the_utc_day_before_is_found() {
        // Auckland is UTC+13 in December: Monday 09:00 there is Sunday 20:00Z.
        let h = WorkingHours::parse(&spec("Pacific/Auckland", &[("mon", &[("09:00", "10:00")])])).unwrap();
        assert_eq!(
            slots(&h, HOUR, "2026-12-06T00:00:00Z", "2026-12-07T00:00:00Z"),
            ["2026-12-06T20:00:00Z"]
        );
    }

    #[test]
    fn intervals_end_at_midnight_and_slots_never_cross_an_interval_end() {
        let h = every_day("UTC", "22:00", "24:00");
        assert_eq!(
            slots(&h, 50 * MIN, "2026-12-07T00:00:00Z", "2026-12-08T00:00:00Z"),
            ["2026-12-07T22:00:00Z", "2026-12-07T22:50:00Z"]
        );
    }

    #[test]
    fn appointments_exceptions_and_now_take_slots_away() {
        let mut sp = spec("UTC", &[("mon", &[("09:00", "12:00")]), ("tue", &[("09:00", "10:00")])]);
        sp.exceptions = vec![
            ExceptionSpec {
                date: "2026-12-08".into(),
                hours: vec![],
            },
            ExceptionSpec {
                date: "2026-12-12".into(),
                hours: vec![["10:00".into(), "11:00".into()]],
            },
        ];
        let h = WorkingHours::parse(&sp).unwrap();
        let busy = [(ms("2026-12-07T09:30:00Z"), ms("2026-12-07T10:15:00Z"))];
        let free: Vec<String> = free_slots(
            &h,
            30 * MIN,
            &busy,
            ms("2026-12-07T00:00:00Z"),
            ms("2026-12-14T00:00:00Z"),
            ms("2026-12-07T09:05:00Z"),
        )
        .into_iter()
        .map(iso)
        .collect();
        assert_eq!(
            free,
            [
                // 09:00 is past; 09:30 to 10:15 is booked (10:00 overlaps it).
                "2026-12-07T10:30:00Z",
                "2026-12-07T11:00:00Z",
                "2026-12-07T11:30:00Z",
                // Tuesday the 8th is a day off; Saturday the 12th is worked by exception.
                "2026-12-12T10:00:00Z",
                "2026-12-12T10:30:00Z"
            ]
        );
        assert!(h.covers(ms("2026-12-07T11:00:00Z"), ms("2026-12-07T12:00:00Z")));
        assert!(!h.covers(ms("2026-12-07T11:30:00Z"), ms("2026-12-07T12:30:00Z")));
        assert!(!h.covers(ms("2026-12-08T09:00:00Z"), ms("2026-12-08T09:30:00Z")));
    }

    #[test]
    fn hours_that_run_through_midnight_cover_a_time_across_it() {
        // Every hour of every day (CI once ran at 23:57 UTC, and a reschedule to 23:56 was
        // "not free" because no one day's interval held it).
        let all = every_day("UTC", "00:00", "24:00");
        assert!(all.covers(ms("2026-12-07T23:45:00Z"), ms("2026-12-08T00:15:00Z")));
        // A night shift: Monday 20:00 to 24:00, Tuesday 00:00 to 04:00.
        let night = WorkingHours::parse(&spec(
            "UTC",
            &[("mon", &[("20:00", "24:00")]), ("tue", &[("00:00", "04:00")])],
        ))
        .unwrap();
        assert!(night.covers(ms("2026-12-07T23:30:00Z"), ms("2026-12-08T00:30:00Z")));
        assert!(night.covers(ms("2026-12-07T20:00:00Z"), ms("2026-12-08T04:00:00Z")));
        assert!(!night.covers(ms("2026-12-08T03:30:00Z"), ms("2026-12-08T04:30:00Z")));
        // A gap is a gap: 09:00-12:00 and 13:00-17:00 do not cover 11:30-13:30.
        let split = WorkingHours::parse(&spec("UTC", &[("mon", &[("09:00", "12:00"), ("13:00", "17:00")])])).unwrap();
        assert!(!split.covers(ms("2026-12-07T11:30:00Z"), ms("2026-12-07T13:30:00Z")));
        assert!(split.covers(ms("2026-12-07T13:00:00Z"), ms("2026-12-07T17:00:00Z")));
    }

    #[test]
    fn bad_hours_are_refused_with_a_reason() {
        let cases: Vec<(WorkingHoursSpec, &str)> = vec![
            (spec("Mars/Olympus", &[]), "time zone"),
            (spec("UTC", &[("monday", &[("09:00", "10:00")])]), "weekday"),
            (spec("UTC", &[("mon", &[("9am", "10:00")])]), "time of day"),
            (spec("UTC", &[("mon", &[("10:00", "09:00")])]), "end after"),
            (
                spec("UTC", &[("mon", &[("09:00", "11:00"), ("10:00", "12:00")])]),
                "overlap",
            ),
            (spec("UTC", &[("mon", &[("09:00:30", "10:00")])]), "whole minutes"),
            (spec("UTC", &[("mon", &[("24:30", "25:00")])]), "time of day"),
        ];
        for (s, why) in cases {
            let err = WorkingHours::parse(&s).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadRequest);
            assert!(err.message.contains(why), "{why}: {}", err.message);
        }
        let mut s = spec("UTC", &[]);
        s.exceptions = vec![
            ExceptionSpec {
                date: "2026-12-24".into(),
                hours: vec![],
            },
            ExceptionSpec {
                date: "2026-12-24".into(),
                hours: vec![],
            },
        ];
        assert!(WorkingHours::parse(&s).unwrap_err().message.contains("two exceptions"));
        s.exceptions[1].date = "24.12.2026".into();
        assert!(WorkingHours::parse(&s).unwrap_err().message.contains("not a date"));
    }

    #[test]
    fn degenerate_ranges_give_nothing_and_never_panic() {
        let h = every_day("UTC", "00:00", "24:00");
        assert!(free_slots(&h, 0, &[], 0, 10 * HOUR, 0).is_empty());
        assert!(free_slots(&h, HOUR, &[], 10 * HOUR, 10 * HOUR, 0).is_empty());
        assert_eq!(free_slots(&h, HOUR, &[], 0, 3 * HOUR, 0), [0, HOUR, 2 * HOUR]);
        let _ = free_slots(&h, u64::MAX, &[], u64::MAX - 10, u64::MAX, 0);
        let _ = free_slots(&h, 1, &[], u64::MAX - 10, u64::MAX, 0);
    }
}
