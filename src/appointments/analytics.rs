//! Appointment analytics, pure: the facts of each appointment in a range (read with one
//! indexed query, `Store::analytics_facts`) summed per local day or ISO week and in total.
//!
//! Definitions (docs/PROTOCOL.md §15.6): an appointment counts in the period of its start
//! (on-demand ones: of their creation). *Duration* is from staff and guest first in the call
//! together to the guest leaving (completed appointments). *Lobby wait* is from the guest's
//! first arrival to that first moment together, as Teams defines it (served appointments).
//! *No-shows* are appointments in state `no_show` (never served); the *rate* is no-shows over
//! scheduled appointments not cancelled. Percentiles are nearest-rank.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

/// What the report needs of one appointment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// Start, or creation for on-demand ones (Unix ms).
    pub at_ms: u64,
    pub on_demand: bool,
    pub state: Outcome,
    /// Guest's first arrival to being served.
    pub lobby_wait_ms: Option<u64>,
    /// Served to completed.
    pub duration_ms: Option<u64>,
}

/// The state as the report counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Open,
    Completed,
    NoShow,
    Cancelled,
}

/// How to group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    Day,
    Week,
}

/// One period's (or the total's) figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    pub appointments: u64,
    pub scheduled: u64,
    pub on_demand: u64,
    pub completed: u64,
    pub cancelled: u64,
    pub no_shows: u64,
    /// No-shows over scheduled appointments not cancelled; null without any.
    pub no_show_rate: Option<f64>,
    pub duration_avg_ms: Option<u64>,
    pub duration_p90_ms: Option<u64>,
    pub lobby_wait_avg_ms: Option<u64>,
    pub lobby_wait_p90_ms: Option<u64>,
}

/// A period: `2026-12-07` (day) or `2026-W50` (ISO week), with its figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Period {
    pub period: String,
    /// The period's first instant (local midnight), Unix ms.
    pub from_ms: u64,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Default)]
struct Acc {
    f: Figures,
    durations: Vec<u64>,
    waits: Vec<u64>,
}

impl Acc {
    fn add(&mut self, x: &Facts) {
        self.f.appointments += 1;
        if x.on_demand {
            self.f.on_demand += 1;
        } else {
            self.f.scheduled += 1;
        }
        match x.state {
            Outcome::Completed => self.f.completed += 1,
            Outcome::NoShow => self.f.no_shows += 1,
            Outcome::Cancelled => self.f.cancelled += 1,
            Outcome::Open => {}
        }
        if let Some(d) = x.duration_ms {
            self.durations.push(d);
        }
        if let Some(w) = x.lobby_wait_ms {
            self.waits.push(w);
        }
    }

    fn finish(mut self, scheduled_cancelled: u64) -> Figures {
        let base = self.f.scheduled.saturating_sub(scheduled_cancelled);
        self.f.no_show_rate = (base > 0).then(|| self.f.no_shows as f64 / base as f64);
        (self.f.duration_avg_ms, self.f.duration_p90_ms) = avg_p90(&mut self.durations);
        (self.f.lobby_wait_avg_ms, self.f.lobby_wait_p90_ms) = avg_p90(&mut self.waits);
        self.f
    }
}

/// Mean and nearest-rank 90th percentile.
fn avg_p90(v: &mut [u64]) -> (Option<u64>, Option<u64>) {
    if v.is_empty() {
        return (None, None);
    }
    v.sort_unstable();
    let sum: u128 = v.iter().map(|&x| u128::from(x)).sum();
    let avg = (sum / v.len() as u128) as u64;
    // Nearest rank: the ceil(0.9 n)-th smallest.
    let rank = (v.len() * 9).div_ceil(10).max(1);
    (Some(avg), Some(v[rank - 1]))
}

/// The local date of `at_ms` in `tz`.
fn local_date(at_ms: u64, tz: &TimeZone) -> jiff::civil::Date {
    let ts = Timestamp::from_millisecond(at_ms.min(i64::MAX as u64) as i64).unwrap_or_default();
    tz.to_datetime(ts).date()
}

/// The period of a local date: its label and first instant.
fn period_of(date: jiff::civil::Date, tz: &TimeZone, group: Group) -> (String, u64) {
    let (label, first) = match group {
        Group::Day => (date.to_string(), date),
        Group::Week => {
            let w = date.iso_week_date();
            let monday = w.first_of_week().map(|d| d.date()).unwrap_or(date);
            (format!("{:04}-W{:02}", w.year(), w.week()), monday)
        }
    };
    let from = first
        .to_zoned_datetime(tz.clone())
        .map(|z| z.timestamp().as_millisecond().max(0) as u64)
        .unwrap_or(0);
    (label, from)
}

/// The report over `facts`: periods in order (only those with appointments), and the total.
pub fn report(facts: &[Facts], tz: &TimeZone, group: Group) -> (Vec<Period>, Figures) {
    let mut periods: std::collections::BTreeMap<u64, (String, Acc, u64)> = Default::default();
    let mut total = Acc::default();
    let mut total_sched_cancelled = 0;
    // A report spans at most a few hundred local dates: each date's period once.
    let mut by_date: std::collections::HashMap<jiff::civil::Date, (String, u64)> = Default::default();
    for x in facts {
        let date = local_date(x.at_ms, tz);
        let (label, from) = by_date
            .entry(date)
            .or_insert_with(|| period_of(date, tz, group))
            .clone();
        let entry = periods.entry(from).or_insert_with(|| (label, Acc::default(), 0));
        entry.1.add(x);
        total.add(x);
        if !x.on_demand && x.state == Outcome::Cancelled {
            entry.2 += 1;
            total_sched_cancelled += 1;
        }
    }
    let periods = periods
        .into_iter()
        .map(|(from_ms, (period, acc, sc))| Period {
            period,
            from_ms,
            figures: acc.finish(sc),
        })
        .collect();
    (periods, total.finish(total_sched_cancelled))
}

/// The CSV of a report: a header, a row per period, and a `total` row.
pub fn csv(periods: &[Period], total: &Figures) -> String {
    fn opt<T: ToString>(v: Option<T>) -> String {
        v.map(|v| v.to_string()).unwrap_or_default()
    }
    fn row(out: &mut String, label: &str, f: &Figures) {
        out.push_str(&format!(
            "{label},{},{},{},{},{},{},{},{},{},{},{}\r\n",
            f.appointments,
            f.scheduled,
            f.on_demand,
            f.completed,
            f.cancelled,
            f.no_shows,
            opt(f.no_show_rate.map(|r| format!("{r:.4}"))),
            opt(f.duration_avg_ms),
            opt(f.duration_p90_ms),
            opt(f.lobby_wait_avg_ms),
            opt(f.lobby_wait_p90_ms),
        ));
    }
    // Labels are dates, week names or "total": nothing to quote.
    let mut out = String::from(
        "period,appointments,scheduled,on_demand,completed,cancelled,no_shows,no_show_rate,duration_avg_ms,duration_p90_ms,lobby_wait_avg_ms,lobby_wait_p90_ms\r\n",
    );
    for p in periods {
        row(&mut out, &p.period, &p.figures);
    }
    row(&mut out, "total", total);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;
    const DAY: u64 = 24 * HOUR;
    /// 2026-12-07T00:00:00Z, a Monday.
    const MON: u64 = 1_796_601_600_000;

    fn f(at_ms: u64, on_demand: bool, state: Outcome, wait: Option<u64>, dur: Option<u64>) -> Facts {
        Facts {
            at_ms,
            on_demand,
            state,
            lobby_wait_ms: wait,
            duration_ms: dur,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(avg_p90(&mut []), (None, None));
        assert_eq!(avg_p90(&mut [7]), (Some(7), Some(7)));
        let mut v: Vec<u64> = (1..=10).rev().collect();
        assert_eq!(avg_p90(&mut v), (Some(5), Some(9)));
        let mut v: Vec<u64> = (1..=11).collect();
        assert_eq!(avg_p90(&mut v), (Some(6), Some(10)));
        let mut v = vec![u64::MAX, u64::MAX];
        assert_eq!(avg_p90(&mut v), (Some(u64::MAX), Some(u64::MAX)), "no overflow");
    }

    #[test]
    fn days_weeks_and_the_total() {
        let utc = TimeZone::UTC;
        let facts = [
            f(MON + 9 * HOUR, false, Outcome::Completed, Some(60_000), Some(600_000)),
            f(MON + 10 * HOUR, false, Outcome::NoShow, None, None),
            f(MON + 11 * HOUR, false, Outcome::Cancelled, None, None),
            f(MON + 12 * HOUR, true, Outcome::Completed, Some(180_000), Some(300_000)),
            f(MON + DAY + 9 * HOUR, false, Outcome::Open, Some(5_000), None),
            f(MON + 7 * DAY, false, Outcome::Completed, Some(1_000), Some(1_200_000)),
        ];
        let (days, total) = report(&facts, &utc, Group::Day);
        assert_eq!(
            days.iter().map(|p| p.period.as_str()).collect::<Vec<_>>(),
            ["2026-12-07", "2026-12-08", "2026-12-14"]
        );
        let mon = &days[0].figures;
        assert_eq!(days[0].from_ms, MON);
        assert_eq!(
            (
                mon.appointments,
                mon.scheduled,
                mon.on_demand,
                mon.completed,
                mon.cancelled,
                mon.no_shows
            ),
            (4, 3, 1, 2, 1, 1)
        );
        // One no-show of two scheduled appointments not cancelled.
        assert_eq!(mon.no_show_rate, Some(0.5));
        assert_eq!(
            (mon.duration_avg_ms, mon.duration_p90_ms),
            (Some(450_000), Some(600_000))
        );
        assert_eq!(
            (mon.lobby_wait_avg_ms, mon.lobby_wait_p90_ms),
            (Some(120_000), Some(180_000))
        );
        assert_eq!(days[1].figures.no_show_rate, Some(0.0));
        assert_eq!(total.appointments, 6);
        assert_eq!(total.no_show_rate, Some(0.25));
        let (weeks, wtotal) = report(&facts, &utc, Group::Week);
        assert_eq!(
            weeks
                .iter()
                .map(|p| (p.period.as_str(), p.figures.appointments))
                .collect::<Vec<_>>(),
            [("2026-W50", 5), ("2026-W51", 1)]
        );
        assert_eq!(weeks[1].from_ms, MON + 7 * DAY);
        assert_eq!(wtotal, total);
        let (none, empty) = report(&[], &utc, Group::Day);
        assert!(none.is_empty());
        assert_eq!(
            (empty.appointments, empty.no_show_rate, empty.duration_p90_ms),
            (0, None, None)
        );
    }

    #[test]
    fn periods_are_local_days() {
        // 23:30 UTC on Monday is Tuesday in Oslo (UTC+1 in December), 15:30 in Los Angeles.
        let late = MON + 23 * HOUR + 1_800_000;
        let x = [f(late, false, Outcome::Open, None, None)];
        let oslo = TimeZone::get("Europe/Oslo").unwrap();
        let (p, _) = report(&x, &oslo, Group::Day);
        assert_eq!(p[0].period, "2026-12-08");
        assert_eq!(p[0].from_ms, MON + DAY - HOUR, "local midnight");
        let la = TimeZone::get("America/Los_Angeles").unwrap();
        assert_eq!(report(&x, &la, Group::Day).0[0].period, "2026-12-07");
        // The year's first ISO week can start in the previous year.
        let jan1_2027 = MON + 25 * DAY;
        let (w, _) = report(
            &[f(jan1_2027, false, Outcome::Open, None, None)],
            &TimeZone::UTC,
            Group::Week,
        );
        assert_eq!(w[0].period, "2026-W53");
    }

    #[test]
    fn csv_has_a_row_per_period_and_a_total() {
        let facts = [
            f(MON, false, Outcome::NoShow, None, None),
            f(MON + DAY, true, Outcome::Completed, Some(2_000), Some(3_000)),
        ];
        let (p, t) = report(&facts, &TimeZone::UTC, Group::Day);
        let text = csv(&p, &t);
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert!(lines[0].starts_with("period,appointments,"));
        assert_eq!(lines[1], "2026-12-07,1,1,0,0,0,1,1.0000,,,,");
        assert_eq!(lines[2], "2026-12-08,1,0,1,1,0,0,,3000,3000,2000,2000");
        assert_eq!(lines[3], "total,2,1,1,1,0,1,1.0000,3000,3000,2000,2000");
        assert_eq!(lines[4], "");
        assert!(lines.iter().all(|l| l.is_empty() || l.split(',').count() == 12));
    }
}
