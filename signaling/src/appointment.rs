//! An appointment's state, derived from what really happens, never typed by hand.
//!
//! [`Appointment`] is a pure state machine. Its inputs are who is present in the
//! appointment's meeting (the open attendance the participation log keeps: guests in
//! the lobby, guests in the call, staff in the call), the clock, and the two things
//! people decide (cancel, reschedule). Each input returns the [`Transition`]s it caused,
//! each with the moment it became true, for the store to keep beside the state.
//!
//! ```text
//! scheduled ──guest in lobby──▶ waiting ──staff + guest in call──▶ in_progress ──guest left──▶ completed
//!     │  ▲                       ▲   │
//!     │  └──guest left lobby─────┘   └─start passed, no staff in call──▶ late (back to waiting when staff joins)
//!     └──start + N min, guest absent, never served──▶ no_show ──guest arrives──▶ waiting / late
//! scheduled, waiting, late ──cancel (staff or guest)──▶ cancelled
//! scheduled, no_show ──reschedule──▶ scheduled
//! ```
//!
//! `completed` and `cancelled` are final. `no_show` is not: a guest who arrives after
//! being marked a no-show is let into the waiting states and can be served (it ends
//! `completed`); the `no_show` transition stays in the history with its time, so the
//! analytics can count late arrivals after the no-show mark apart from true no-shows.

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode};

/// Minutes after the start at which an absent guest becomes a no-show, by default.
pub const DEFAULT_NO_SHOW_MINUTES: u32 = 15;

/// Where an appointment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppointmentState {
    /// Booked; the guest has not arrived (or left the lobby before being seen).
    Scheduled,
    /// The guest is in the lobby (or alone in the call) and staff are there or it is not yet time.
    Waiting,
    /// The guest is waiting after the start and no staff member is in the call.
    Late,
    /// Staff and guest are (or were, and the guest still is) in the call together.
    InProgress,
    /// The guest was served and has left the call. Final.
    Completed,
    /// The guest was not there N minutes after the start and had never been served.
    NoShow,
    /// Cancelled by staff or by the guest. Final.
    Cancelled,
}

impl AppointmentState {
    /// The name on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            AppointmentState::Scheduled => "scheduled",
            AppointmentState::Waiting => "waiting",
            AppointmentState::Late => "late",
            AppointmentState::InProgress => "in_progress",
            AppointmentState::Completed => "completed",
            AppointmentState::NoShow => "no_show",
            AppointmentState::Cancelled => "cancelled",
        }
    }

    /// Whether nothing can change the state any more.
    pub fn is_final(self) -> bool {
        matches!(self, AppointmentState::Completed | AppointmentState::Cancelled)
    }
}

/// Who cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelledBy {
    Staff,
    Guest,
}

/// Who is in the appointment's meeting now (from the store's open attendance).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub guests_in_lobby: u32,
    pub guests_in_call: u32,
    pub staff_in_call: u32,
}

impl Presence {
    fn guest_present(self) -> bool {
        self.guests_in_lobby > 0 || self.guests_in_call > 0
    }
}

/// Why a transition happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The appointment was made.
    Booked,
    /// Someone entered or left the lobby or the call.
    Presence,
    /// A time passed (the start, or the no-show deadline).
    Clock,
    CancelledByStaff,
    CancelledByGuest,
    Rescheduled,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Booked => "booked",
            Cause::Presence => "presence",
            Cause::Clock => "clock",
            Cause::CancelledByStaff => "cancelled_by_staff",
            Cause::CancelledByGuest => "cancelled_by_guest",
            Cause::Rescheduled => "rescheduled",
        }
    }
}

/// One change of state, with the moment it became true.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// `None` for the first state.
    pub from: Option<AppointmentState>,
    pub to: AppointmentState,
    pub at_ms: u64,
    pub cause: Cause,
}

/// What can happen to an appointment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Who is present changed (the participation log wrote an event).
    Presence(Presence),
    /// Only time passed.
    Tick,
    Cancel(CancelledBy),
    /// A new start and duration (scheduled appointments only).
    Reschedule {
        starts_at_ms: u64,
        duration_ms: u64,
    },
}

/// The facts an appointment's state is derived from; stored whole (as JSON) beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appointment {
    /// `None` for an on-demand appointment (a queue, no time): never late, never a no-show.
    pub starts_at_ms: Option<u64>,
    pub duration_ms: u64,
    /// N of "no-show N minutes after the start", in ms.
    pub no_show_after_ms: u64,
    pub presence: Presence,
    pub state: AppointmentState,
    pub state_since_ms: u64,
    /// When the guest first entered the lobby (or the call); lobby wait is measured from here.
    pub first_arrived_ms: Option<u64>,
    /// When staff and guest were first in the call together.
    pub served_at_ms: Option<u64>,
    /// When the guest was marked a no-show (kept after a late arrival, cleared by a reschedule).
    pub no_show_at_ms: Option<u64>,
    pub cancelled: Option<CancelledBy>,
}

impl Appointment {
    /// A new appointment, `scheduled` at `now_ms`, with its first transition.
    pub fn new(
        starts_at_ms: Option<u64>,
        duration_ms: u64,
        no_show_minutes: u32,
        now_ms: u64,
    ) -> (Appointment, Transition) {
        let a = Appointment {
            starts_at_ms,
            duration_ms,
            no_show_after_ms: u64::from(no_show_minutes) * 60_000,
            presence: Presence::default(),
            state: AppointmentState::Scheduled,
            state_since_ms: now_ms,
            first_arrived_ms: None,
            served_at_ms: None,
            no_show_at_ms: None,
            cancelled: None,
        };
        let t = Transition {
            from: None,
            to: AppointmentState::Scheduled,
            at_ms: now_ms,
            cause: Cause::Booked,
        };
        (a, t)
    }

    /// When the guest becomes a no-show if still absent.
    pub fn no_show_deadline_ms(&self) -> Option<u64> {
        self.starts_at_ms.map(|s| s.saturating_add(self.no_show_after_ms))
    }

    /// The scheduled end.
    pub fn ends_at_ms(&self) -> Option<u64> {
        self.starts_at_ms.map(|s| s.saturating_add(self.duration_ms))
    }

    /// How long the guest has waited (or waited, once served) in the lobby, at `now_ms`.
    pub fn lobby_wait_ms(&self, now_ms: u64) -> Option<u64> {
        let from = self.first_arrived_ms?;
        Some(self.served_at_ms.unwrap_or(now_ms).saturating_sub(from))
    }

    /// The next moment at which time alone would change the state, for the shell's timer.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let start = self.starts_at_ms?;
        match self.state {
            AppointmentState::Scheduled => self.no_show_deadline_ms(),
            AppointmentState::Waiting if self.presence.staff_in_call == 0 && self.state_since_ms < start => Some(start),
            _ => None,
        }
    }

    /// The state the facts say at `now_ms`, before latching.
    fn derive(&self, now_ms: u64) -> AppointmentState {
        use AppointmentState::*;
        if self.cancelled.is_some() {
            return Cancelled;
        }
        if self.state == Completed {
            return Completed;
        }
        let p = self.presence;
        if p.guests_in_call > 0 && (p.staff_in_call > 0 || self.served_at_ms.is_some()) {
            return InProgress;
        }
        if self.served_at_ms.is_some() {
            return Completed;
        }
        let started = self.starts_at_ms.is_some_and(|s| now_ms >= s);
        if p.guest_present() {
            return if started && p.staff_in_call == 0 { Late } else { Waiting };
        }
        if self.no_show_at_ms.is_some() || self.no_show_deadline_ms().is_some_and(|d| now_ms >= d) {
            return NoShow;
        }
        Scheduled
    }

    /// Moves to whatever the facts say at `now_ms`; `at_ms` is when that became true.
    fn settle(&mut self, now_ms: u64, at_ms: u64, cause: Cause, out: &mut Vec<Transition>) {
        let to = self.derive(now_ms);
        if to == self.state {
            return;
        }
        let at_ms = at_ms.max(self.state_since_ms);
        match to {
            AppointmentState::InProgress if self.served_at_ms.is_none() => self.served_at_ms = Some(at_ms),
            AppointmentState::NoShow if self.no_show_at_ms.is_none() => self.no_show_at_ms = Some(at_ms),
            _ => {}
        }
        out.push(Transition {
            from: Some(self.state),
            to,
            at_ms,
            cause,
        });
        self.state = to;
        self.state_since_ms = at_ms;
    }

    /// What time alone did up to `now_ms`, each transition at the deadline that caused it.
    fn tick(&mut self, now_ms: u64, out: &mut Vec<Transition>) {
        let at = match self.derive(now_ms) {
            AppointmentState::NoShow => self.no_show_deadline_ms(),
            AppointmentState::Late => self.starts_at_ms,
            _ => None,
        };
        if let Some(at) = at {
            self.settle(now_ms, at.min(now_ms), Cause::Clock, out);
        }
    }

    /// Applies `input` at `now_ms`; returns the transitions it caused (time first: a
    /// deadline that passed before the input is recorded before it). A refused input
    /// changes nothing.
    pub fn apply(&mut self, input: Input, now_ms: u64) -> Result<Vec<Transition>, Error> {
        use AppointmentState::*;
        let mut out = Vec::new();
        match input {
            Input::Tick => self.tick(now_ms, &mut out),
            Input::Presence(p) => {
                self.tick(now_ms, &mut out);
                self.presence = p;
                if p.guest_present() && self.first_arrived_ms.is_none() && !self.state.is_final() {
                    self.first_arrived_ms = Some(now_ms);
                }
                self.settle(now_ms, now_ms, Cause::Presence, &mut out);
            }
            Input::Cancel(by) => {
                // Time first: a no-show is a fact and stays one; it is not turned into a cancellation.
                let mut ticked = self.clone();
                ticked.tick(now_ms, &mut out);
                if !matches!(ticked.state, Scheduled | Waiting | Late) {
                    return Err(wrong_state(ticked.state, "cancelled"));
                }
                *self = ticked;
                self.cancelled = Some(by);
                let cause = match by {
                    CancelledBy::Staff => Cause::CancelledByStaff,
                    CancelledBy::Guest => Cause::CancelledByGuest,
                };
                self.settle(now_ms, now_ms, cause, &mut out);
            }
            Input::Reschedule {
                starts_at_ms,
                duration_ms,
            } => {
                let mut ticked = self.clone();
                ticked.tick(now_ms, &mut out);
                if self.starts_at_ms.is_none() {
                    return Err(Error::new(
                        ErrorCode::WrongAppointmentState,
                        "an on-demand appointment has no time to move",
                    ));
                }
                if !matches!(ticked.state, Scheduled | NoShow) {
                    return Err(wrong_state(ticked.state, "rescheduled"));
                }
                if starts_at_ms <= now_ms {
                    return Err(Error::new(ErrorCode::BadRequest, "the new start must be in the future"));
                }
                *self = ticked;
                self.starts_at_ms = Some(starts_at_ms);
                self.duration_ms = duration_ms;
                self.no_show_at_ms = None;
                let before = out.len();
                self.settle(now_ms, now_ms, Cause::Rescheduled, &mut out);
                if out.len() == before {
                    // Still `scheduled`, at another time: a transition all the same, so the
                    // history shows when it moved.
                    out.push(Transition {
                        from: Some(self.state),
                        to: self.state,
                        at_ms: now_ms,
                        cause: Cause::Rescheduled,
                    });
                    self.state_since_ms = now_ms;
                }
            }
        }
        Ok(out)
    }
}

fn wrong_state(state: AppointmentState, what: &str) -> Error {
    Error::new(
        ErrorCode::WrongAppointmentState,
        format!("an appointment that is {} cannot be {what}", state.as_str()),
    )
}

/// An appointment as staff see it (REST and the queue subscription) and as its guest's
/// page shows it (without the contact): defined once here, for the gateway and clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppointmentView {
    pub appointment_id: String,
    pub type_id: String,
    pub title: String,
    pub department_id: Option<String>,
    pub staff: String,
    pub meeting_id: String,
    pub guest_name: String,
    /// Staff only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_contact: Option<String>,
    pub on_demand: bool,
    pub starts_at: Option<String>,
    pub starts_at_ms: Option<u64>,
    pub ends_at_ms: Option<u64>,
    pub duration_minutes: u64,
    pub state: AppointmentState,
    pub state_since_ms: u64,
    /// From the guest's first arrival to being seen (or to now while waiting).
    pub lobby_wait_ms: Option<u64>,
    /// When the guest first arrived (lobby wait is counted from here).
    #[serde(default)]
    pub first_arrived_ms: Option<u64>,
    pub no_show_at_ms: Option<u64>,
    /// The guest's join link.
    pub join_url: String,
    /// Every transition with its time (one appointment's view only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transitions: Option<Vec<Transition>>,
}

#[cfg(test)]
mod tests {
    use super::AppointmentState::*;
    use super::*;

    const MIN: u64 = 60_000;
    /// The start: 10:00 on some day.
    const T0: u64 = 1_000 * MIN;

    fn presence(lobby: u32, call: u32, staff: u32) -> Input {
        Input::Presence(Presence {
            guests_in_lobby: lobby,
            guests_in_call: call,
            staff_in_call: staff,
        })
    }

    fn booked() -> Appointment {
        Appointment::new(Some(T0), 30 * MIN, DEFAULT_NO_SHOW_MINUTES, T0 - 60 * MIN).0
    }

    fn states(ts: &[Transition]) -> Vec<(AppointmentState, u64, Cause)> {
        ts.iter().map(|t| (t.to, t.at_ms, t.cause)).collect()
    }

    /// An appointment brought into `state` by real inputs.
    fn in_state(state: AppointmentState) -> (Appointment, u64) {
        let mut a = booked();
        let now = match state {
            Scheduled => T0 - 30 * MIN,
            Waiting => {
                a.apply(presence(1, 0, 0), T0 - 5 * MIN).unwrap();
                T0 - 5 * MIN
            }
            Late => {
                a.apply(presence(1, 0, 0), T0 + MIN).unwrap();
                T0 + MIN
            }
            InProgress => {
                a.apply(presence(1, 0, 1), T0).unwrap();
                a.apply(presence(0, 1, 1), T0 + MIN).unwrap();
                T0 + MIN
            }
            Completed => {
                a.apply(presence(0, 1, 1), T0).unwrap();
                a.apply(presence(0, 0, 1), T0 + 20 * MIN).unwrap();
                T0 + 20 * MIN
            }
            NoShow => {
                a.apply(Input::Tick, T0 + 15 * MIN).unwrap();
                T0 + 15 * MIN
            }
            Cancelled => {
                a.apply(Input::Cancel(CancelledBy::Staff), T0 - 10 * MIN).unwrap();
                T0 - 10 * MIN
            }
        };
        assert_eq!(a.state, state);
        (a, now)
    }

    const ALL: [AppointmentState; 7] = [Scheduled, Waiting, Late, InProgress, Completed, NoShow, Cancelled];

    #[test]
    fn the_happy_path_scheduled_waiting_in_progress_completed() {
        let (mut a, first) = Appointment::new(Some(T0), 30 * MIN, 15, T0 - 60 * MIN);
        assert_eq!((first.from, first.to, first.cause), (None, Scheduled, Cause::Booked));
        assert!(
            states(&a.apply(presence(1, 0, 0), T0 - 2 * MIN).unwrap())
                == vec![(Waiting, T0 - 2 * MIN, Cause::Presence)]
        );
        // Staff join before the start: still waiting (the guest is in the lobby).
        assert!(a.apply(presence(1, 0, 1), T0 - MIN).unwrap().is_empty());
        assert_eq!(
            states(&a.apply(presence(0, 1, 1), T0 + MIN).unwrap()),
            vec![(InProgress, T0 + MIN, Cause::Presence)]
        );
        assert_eq!(a.lobby_wait_ms(T0 + 9 * MIN), Some(3 * MIN));
        assert_eq!(
            states(&a.apply(presence(0, 0, 1), T0 + 25 * MIN).unwrap()),
            vec![(Completed, T0 + 25 * MIN, Cause::Presence)]
        );
        // Final: the guest coming back, time, staff leaving change nothing.
        for input in [presence(1, 0, 0), presence(0, 1, 1), Input::Tick, presence(0, 0, 0)] {
            assert!(a.apply(input, T0 + 40 * MIN).unwrap().is_empty());
            assert_eq!(a.state, Completed);
        }
    }

    #[test]
    fn no_show_at_exactly_n_minutes() {
        for n in [1u32, 15, 30] {
            let mut a = Appointment::new(Some(T0), 30 * MIN, n, T0 - MIN).0;
            let deadline = T0 + u64::from(n) * MIN;
            assert_eq!(a.next_deadline_ms(), Some(deadline));
            assert!(a.apply(Input::Tick, deadline - 1).unwrap().is_empty(), "n={n}");
            assert_eq!(a.state, Scheduled);
            // Observed late (a sweeper that ran 7 s after): stamped at the deadline itself.
            assert_eq!(
                states(&a.apply(Input::Tick, deadline + 7_000).unwrap()),
                vec![(NoShow, deadline, Cause::Clock)]
            );
            assert_eq!(a.no_show_at_ms, Some(deadline));
            assert!(a.apply(Input::Tick, deadline + MIN).unwrap().is_empty());
        }
    }

    #[test]
    fn a_guest_waiting_at_the_deadline_is_not_a_no_show_but_late() {
        let mut a = booked();
        a.apply(presence(1, 0, 0), T0 - MIN).unwrap();
        assert_eq!(a.next_deadline_ms(), Some(T0));
        assert_eq!(
            states(&a.apply(Input::Tick, T0 + 3).unwrap()),
            vec![(Late, T0, Cause::Clock)]
        );
        assert!(a.apply(Input::Tick, T0 + 60 * MIN).unwrap().is_empty());
        assert_eq!(a.state, Late);
        // Staff join the call: waiting again (to be admitted), then served.
        assert_eq!(
            states(&a.apply(presence(1, 0, 1), T0 + 61 * MIN).unwrap()),
            vec![(Waiting, T0 + 61 * MIN, Cause::Presence)]
        );
        assert_eq!(a.apply(presence(0, 1, 1), T0 + 62 * MIN).unwrap()[0].to, InProgress);
        assert_eq!(a.lobby_wait_ms(T0 + 90 * MIN), Some(63 * MIN));
    }

    #[test]
    fn a_guest_who_arrives_after_the_start_with_no_staff_is_late_at_once() {
        let (a, _) = in_state(Late);
        assert_eq!(a.state_since_ms, T0 + MIN);
        // Staff leaving the call while the guest is alone in it (admitted by bypass) after the start: late.
        let mut b = booked();
        b.apply(presence(0, 1, 0), T0 + MIN).unwrap();
        assert_eq!(b.state, Late);
        assert_eq!(b.apply(presence(0, 1, 1), T0 + 2 * MIN).unwrap()[0].to, InProgress);
    }

    #[test]
    fn a_guest_who_leaves_the_lobby_before_being_seen_goes_back_to_scheduled_then_no_show() {
        let (mut a, _) = in_state(Waiting);
        assert_eq!(
            states(&a.apply(presence(0, 0, 0), T0 - 4 * MIN).unwrap()),
            vec![(Scheduled, T0 - 4 * MIN, Cause::Presence)]
        );
        assert_eq!(a.apply(Input::Tick, T0 + 15 * MIN).unwrap()[0].to, NoShow);
    }

    #[test]
    fn a_guest_who_joins_after_the_no_show_mark_is_served_and_the_mark_stays_in_history() {
        let (mut a, _) = in_state(NoShow);
        assert_eq!(
            states(&a.apply(presence(1, 0, 0), T0 + 20 * MIN).unwrap()),
            vec![(Late, T0 + 20 * MIN, Cause::Presence)]
        );
        assert_eq!(a.no_show_at_ms, Some(T0 + 15 * MIN));
        // Leaves again unserved: back to no_show, at the time it became true again.
        assert_eq!(
            states(&a.apply(presence(0, 0, 0), T0 + 21 * MIN).unwrap()),
            vec![(NoShow, T0 + 21 * MIN, Cause::Presence)]
        );
        a.apply(presence(1, 0, 1), T0 + 22 * MIN).unwrap();
        assert_eq!(a.state, Waiting);
        a.apply(presence(0, 1, 1), T0 + 23 * MIN).unwrap();
        a.apply(presence(0, 0, 1), T0 + 30 * MIN).unwrap();
        assert_eq!(a.state, Completed);
        assert_eq!(a.no_show_at_ms, Some(T0 + 15 * MIN));
    }

    #[test]
    fn a_missed_deadline_is_recorded_before_the_input_that_reveals_it() {
        let mut a = booked();
        assert_eq!(
            states(&a.apply(presence(1, 0, 0), T0 + 16 * MIN).unwrap()),
            vec![
                (NoShow, T0 + 15 * MIN, Cause::Clock),
                (Late, T0 + 16 * MIN, Cause::Presence)
            ]
        );
    }

    #[test]
    fn in_progress_survives_staff_leaving_and_ends_when_the_guest_leaves() {
        let (mut a, now) = in_state(InProgress);
        assert!(a.apply(presence(0, 1, 0), now + MIN).unwrap().is_empty());
        assert_eq!(a.state, InProgress);
        // A dropped guest whose seat is held stays in the call (open attendance).
        assert!(a.apply(presence(0, 1, 1), now + 2 * MIN).unwrap().is_empty());
        assert_eq!(a.apply(presence(0, 0, 1), now + 3 * MIN).unwrap()[0].to, Completed);
        // Served once: a guest back in the lobby later does not reopen it.
        let (mut b, now) = in_state(InProgress);
        assert_eq!(b.apply(presence(1, 0, 1), now + MIN).unwrap()[0].to, Completed);
    }

    #[test]
    fn cancel_by_staff_or_guest_from_every_open_state_and_never_from_the_others() {
        for state in ALL {
            for by in [CancelledBy::Staff, CancelledBy::Guest] {
                let (mut a, now) = in_state(state);
                let before = a.clone();
                let result = a.apply(Input::Cancel(by), now + 1);
                if matches!(state, Scheduled | Waiting | Late) {
                    let cause = match by {
                        CancelledBy::Staff => Cause::CancelledByStaff,
                        CancelledBy::Guest => Cause::CancelledByGuest,
                    };
                    assert_eq!(states(&result.unwrap()), vec![(Cancelled, now + 1, cause)], "{state:?}");
                    assert_eq!(a.cancelled, Some(by));
                    // Final: nothing moves it.
                    for input in [presence(1, 0, 0), presence(0, 1, 1), Input::Tick] {
                        assert!(a.apply(input, T0 + 100 * MIN).unwrap().is_empty());
                    }
                    assert_eq!(a.state, Cancelled);
                } else {
                    assert_eq!(result.unwrap_err().code, ErrorCode::WrongAppointmentState, "{state:?}");
                    assert_eq!(a, before, "a refused cancel changes nothing ({state:?})");
                }
            }
        }
    }

    #[test]
    fn cancelling_after_the_deadline_finds_a_no_show() {
        let mut a = booked();
        let err = a.apply(Input::Cancel(CancelledBy::Guest), T0 + 15 * MIN).unwrap_err();
        assert_eq!(err.code, ErrorCode::WrongAppointmentState);
        assert!(err.message.contains("no_show"), "{}", err.message);
        assert_eq!(a.state, Scheduled, "refused: the caller's tick is not kept either");
    }

    #[test]
    fn reschedule_from_scheduled_and_no_show_only() {
        for state in ALL {
            let (mut a, now) = in_state(state);
            let before = a.clone();
            let new_start = T0 + 24 * 60 * MIN;
            let result = a.apply(
                Input::Reschedule {
                    starts_at_ms: new_start,
                    duration_ms: 45 * MIN,
                },
                now + 1,
            );
            if matches!(state, Scheduled | NoShow) {
                let ts = result.unwrap();
                assert_eq!(states(&ts), vec![(Scheduled, now + 1, Cause::Rescheduled)], "{state:?}");
                assert_eq!(ts[0].from, Some(state));
                assert_eq!(
                    (a.starts_at_ms, a.ends_at_ms()),
                    (Some(new_start), Some(new_start + 45 * MIN))
                );
                assert_eq!(a.no_show_at_ms, None);
                // The new deadline counts from the new start.
                assert!(a.apply(Input::Tick, new_start + 14 * MIN).unwrap().is_empty());
                assert_eq!(a.apply(Input::Tick, new_start + 15 * MIN).unwrap()[0].to, NoShow);
            } else {
                assert_eq!(result.unwrap_err().code, ErrorCode::WrongAppointmentState, "{state:?}");
                assert_eq!(a, before);
            }
        }
        let (mut a, now) = in_state(Scheduled);
        let past = a.apply(
            Input::Reschedule {
                starts_at_ms: now,
                duration_ms: MIN,
            },
            now,
        );
        assert_eq!(past.unwrap_err().code, ErrorCode::BadRequest);
    }

    #[test]
    fn on_demand_appointments_are_never_late_nor_no_show_nor_rescheduled() {
        let (mut a, _) = Appointment::new(None, 20 * MIN, 15, T0);
        assert_eq!(a.next_deadline_ms(), None);
        assert!(a.apply(Input::Tick, T0 + 1000 * MIN).unwrap().is_empty());
        assert_eq!(a.apply(presence(1, 0, 0), T0 + 1000 * MIN).unwrap()[0].to, Waiting);
        assert!(a.apply(Input::Tick, T0 + 2000 * MIN).unwrap().is_empty());
        let err = a
            .apply(
                Input::Reschedule {
                    starts_at_ms: T0 + 3000 * MIN,
                    duration_ms: MIN,
                },
                T0 + 2000 * MIN,
            )
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::WrongAppointmentState);
    }

    #[test]
    fn every_state_answers_every_input_without_panicking_and_final_states_stay_final() {
        let inputs = [
            presence(0, 0, 0),
            presence(1, 0, 0),
            presence(0, 1, 0),
            presence(0, 0, 1),
            presence(1, 0, 1),
            presence(0, 1, 1),
            presence(u32::MAX, u32::MAX, u32::MAX),
            Input::Tick,
            Input::Cancel(CancelledBy::Guest),
            Input::Reschedule {
                starts_at_ms: u64::MAX,
                duration_ms: u64::MAX,
            },
        ];
        for state in ALL {
            for input in inputs {
                for dt in [0, 1, 15 * MIN, u64::MAX / 4] {
                    let (mut a, now) = in_state(state);
                    let at = now.saturating_add(dt);
                    if let Ok(ts) = a.apply(input, at) {
                        for w in ts.windows(2) {
                            assert_eq!(Some(w[0].to), w[1].from, "{state:?} {input:?}: a chain");
                        }
                        if let Some(t) = ts.first() {
                            assert_eq!(t.from, Some(state));
                            assert!(t.at_ms <= at);
                        }
                        if state.is_final() {
                            assert!(ts.is_empty(), "{state:?} is final, {input:?} moved it");
                        }
                        assert_eq!(ts.last().map_or(state, |t| t.to), a.state);
                    }
                }
            }
        }
    }
}
