//! The live queue as pure logic: which appointments a staff member's queue subscription
//! covers, and a waiting guest's place in their queue with an estimated wait.
//!
//! A guest's queue is their appointment's department (any of its staff may serve them),
//! or the staff member it is booked with when it has no department. Guests are served in
//! the order of their appointment time; on-demand guests by when they arrived. The
//! estimate is the department's median service time (staff and guest in the call, of its
//! last [`SAMPLES`] completed appointments) times the appointments ahead and in progress,
//! divided by the staff serving now: it counts each appointment in progress as a whole
//! service, so it errs long, and says nothing until [`MIN_SAMPLES`] appointments have
//! been completed (docs/PROTOCOL.md §15.6).

use serde::{Deserialize, Serialize};

use crate::appointment::AppointmentState;

/// Completed appointments whose service times the estimate uses, the most recent first.
pub const SAMPLES: usize = 20;
/// Fewer completed appointments than this: no estimate (a median of one or two says little).
pub const MIN_SAMPLES: usize = 3;

/// What a staff member's queue subscription (or `GET /api/v1/appointments`) covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueScope {
    pub organization: String,
    /// One department's appointments (the subscriber is in it, or an admin).
    pub department_id: Option<String>,
    /// One staff member's appointments (staff without a department filter: their own).
    pub staff: Option<String>,
}

impl QueueScope {
    /// Whether an appointment of `organization`, `department_id` and `staff` is in this queue.
    pub fn covers(&self, organization: &str, department_id: Option<&str>, staff: &str) -> bool {
        organization == self.organization
            && self.department_id.as_deref().is_none_or(|d| department_id == Some(d))
            && self.staff.as_deref().is_none_or(|s| s == staff)
    }
}

/// One appointment of a guest's queue, as the place computation needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub appointment_id: String,
    pub meeting_id: String,
    pub staff: String,
    pub state: AppointmentState,
    pub starts_at_ms: Option<u64>,
    pub first_arrived_ms: Option<u64>,
}

impl Queued {
    fn waiting(&self) -> bool {
        matches!(self.state, AppointmentState::Waiting | AppointmentState::Late)
    }

    /// The order of service: the appointment time, or the arrival when on demand.
    fn order(&self) -> (u64, &str) {
        let at = self.starts_at_ms.or(self.first_arrived_ms).unwrap_or(u64::MAX);
        (at, &self.appointment_id)
    }
}

/// A waiting guest's place, as sent to them (`queue_position`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    /// 1 for the next to be served.
    pub position: u32,
    /// `None` while fewer than [`MIN_SAMPLES`] appointments were completed.
    pub estimated_wait_secs: Option<u64>,
}

/// The median of `service_ms` (at most the first [`SAMPLES`]), or `None` below [`MIN_SAMPLES`].
pub fn median_service_ms(service_ms: &[u64]) -> Option<u64> {
    let mut s: Vec<u64> = service_ms.iter().copied().take(SAMPLES).collect();
    if s.len() < MIN_SAMPLES {
        return None;
    }
    s.sort_unstable();
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2
    })
}

/// The place of every waiting guest of one queue (`queue`: its open appointments, any
/// order), with `recent_service_ms` the service times of its latest completed ones, most
/// recent first. Returns `(index into queue, place)`, first to be served first.
pub fn places(queue: &[Queued], recent_service_ms: &[u64], now_ms: u64) -> Vec<(usize, Place)> {
    let median = median_service_ms(recent_service_ms);
    let in_progress: Vec<&Queued> = queue
        .iter()
        .filter(|q| q.state == AppointmentState::InProgress)
        .collect();
    let mut serving: Vec<&str> = in_progress.iter().map(|q| q.staff.as_str()).collect();
    serving.sort_unstable();
    serving.dedup();
    let servers = serving.len().max(1) as u64;
    let mut waiting: Vec<usize> = (0..queue.len()).filter(|&i| queue[i].waiting()).collect();
    waiting.sort_by(|&a, &b| queue[a].order().cmp(&queue[b].order()));
    waiting
        .into_iter()
        .enumerate()
        .map(|(ahead, i)| {
            let estimate = median.map(|m| {
                let work = (ahead + in_progress.len()) as u64;
                let mut ms = work.saturating_mul(m) / servers;
                // Not before the appointment's own time.
                if let Some(start) = queue[i].starts_at_ms {
                    ms = ms.max(start.saturating_sub(now_ms));
                }
                ms.div_ceil(1000)
            });
            (
                i,
                Place {
                    position: u32::try_from(ahead + 1).unwrap_or(u32::MAX),
                    estimated_wait_secs: estimate,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use AppointmentState::*;

    const MIN: u64 = 60_000;

    fn q(id: &str, staff: &str, state: AppointmentState, start: Option<u64>, arrived: Option<u64>) -> Queued {
        Queued {
            appointment_id: id.into(),
            meeting_id: format!("m-{id}"),
            staff: staff.into(),
            state,
            starts_at_ms: start,
            first_arrived_ms: arrived,
        }
    }

    fn positions(queue: &[Queued], service: &[u64], now: u64) -> Vec<(String, u32, Option<u64>)> {
        places(queue, service, now)
            .into_iter()
            .map(|(i, p)| (queue[i].appointment_id.clone(), p.position, p.estimated_wait_secs))
            .collect()
    }

    #[test]
    fn the_scope_covers_its_organisation_department_and_staff_only() {
        let org = QueueScope {
            organization: "acme".into(),
            department_id: None,
            staff: None,
        };
        assert!(org.covers("acme", None, "olga"));
        assert!(org.covers("acme", Some("d1"), "ivan"));
        assert!(!org.covers("other", Some("d1"), "olga"));
        let dept = QueueScope {
            department_id: Some("d1".into()),
            ..org.clone()
        };
        assert!(dept.covers("acme", Some("d1"), "ivan"));
        assert!(!dept.covers("acme", Some("d2"), "ivan"));
        assert!(!dept.covers("acme", None, "ivan"));
        assert!(!dept.covers("other", Some("d1"), "ivan"));
        let mine = QueueScope {
            staff: Some("olga".into()),
            ..org.clone()
        };
        assert!(mine.covers("acme", Some("d9"), "olga"));
        assert!(!mine.covers("acme", Some("d9"), "ivan"));
        assert!(!mine.covers("other", None, "olga"));
    }

    #[test]
    fn the_median_needs_three_samples_and_uses_the_latest_twenty() {
        assert_eq!(median_service_ms(&[]), None);
        assert_eq!(median_service_ms(&[5, 7]), None);
        assert_eq!(median_service_ms(&[9, 1, 5]), Some(5));
        assert_eq!(
            median_service_ms(&[4, 1, 3, 2]),
            Some(2),
            "the mean of the two middle ones"
        );
        // Twenty recent ones of 10, then old slow ones that no longer count.
        let mut s = vec![10; SAMPLES];
        s.extend([1000; 30]);
        assert_eq!(median_service_ms(&s), Some(10));
    }

    #[test]
    fn waiting_guests_are_placed_by_appointment_time_then_arrival() {
        let now = 100 * MIN;
        let queue = [
            q("served", "olga", InProgress, Some(90 * MIN), Some(88 * MIN)),
            q("walk-in", "olga", Waiting, None, Some(95 * MIN)),
            q("ten-oclock", "olga", Late, Some(92 * MIN), Some(99 * MIN)),
            q("not-here", "olga", Scheduled, Some(91 * MIN), None),
            q("gone", "olga", Completed, Some(80 * MIN), Some(80 * MIN)),
            q("away", "olga", NoShow, Some(70 * MIN), None),
            q("cancelled", "olga", Cancelled, Some(93 * MIN), None),
        ];
        let got = positions(&queue, &[], now);
        assert_eq!(
            got,
            [("ten-oclock".to_owned(), 1, None), ("walk-in".to_owned(), 2, None),],
            "only waiting and late guests have a place; no estimate without history"
        );
    }

    #[test]
    fn the_estimate_is_the_work_ahead_times_the_median_over_the_staff_serving() {
        let now = 100 * MIN;
        let service = [10 * MIN, 12 * MIN, 8 * MIN];
        // One staff member serving one guest; two waiting on demand.
        let queue = [
            q("served", "olga", InProgress, None, Some(90 * MIN)),
            q("a", "olga", Waiting, None, Some(95 * MIN)),
            q("b", "olga", Waiting, None, Some(96 * MIN)),
        ];
        assert_eq!(
            positions(&queue, &service, now),
            [("a".to_owned(), 1, Some(600)), ("b".to_owned(), 2, Some(1200))]
        );
        // Two staff serving: half the wait.
        let mut two = queue.to_vec();
        two.push(q("served2", "ivan", InProgress, None, Some(91 * MIN)));
        assert_eq!(
            positions(&two, &service, now),
            [("a".to_owned(), 1, Some(600)), ("b".to_owned(), 2, Some(900))]
        );
        // Nobody being served and nobody ahead: any moment now.
        let alone = [q("a", "olga", Waiting, None, Some(95 * MIN))];
        assert_eq!(positions(&alone, &service, now), [("a".to_owned(), 1, Some(0))]);
    }

    #[test]
    fn an_early_guest_waits_at_least_until_their_appointment_time() {
        let now = 100 * MIN;
        let service = [10 * MIN; 3];
        let early = [q("early", "olga", Waiting, Some(130 * MIN), Some(99 * MIN))];
        assert_eq!(
            positions(&early, &service, now),
            [("early".to_owned(), 1, Some(30 * 60))]
        );
        // Past the start, the queue alone decides.
        let late = [q("late", "olga", Late, Some(90 * MIN), Some(99 * MIN))];
        assert_eq!(positions(&late, &service, now), [("late".to_owned(), 1, Some(0))]);
    }

    #[test]
    fn ties_are_broken_by_id_and_missing_times_go_last() {
        let queue = [
            q("b", "olga", Waiting, Some(5), None),
            q("z", "olga", Waiting, None, None),
            q("a", "olga", Waiting, Some(5), None),
        ];
        let order: Vec<String> = positions(&queue, &[], 0).into_iter().map(|(id, _, _)| id).collect();
        assert_eq!(order, ["a", "b", "z"]);
    }
}
