//! Appointments in the store: departments, working hours, types, bookings and every
//! state transition.
//!
//! An appointment's state machine is stored whole (JSON) beside its state, and each input
//! is applied inside one transaction that also writes the transitions it caused: a
//! participation event and the appointment state it changes are one commit
//! (`Store::record_all` calls [`presence_changed`]), so a crash never leaves one without
//! the other. A booking checks the slot and inserts the appointment, its meeting and its
//! link in one transaction on the store's one connection: two bookings of one slot are
//! serialised and the second finds the slot taken.

use gatehouse_signaling::appointment::{Appointment, AppointmentState, Cause, Input, Presence, Transition};
use gatehouse_signaling::link::Link;
use gatehouse_signaling::meeting::Meeting;
use gatehouse_signaling::{Error, ErrorCode};
use rusqlite::{OptionalExtension, Transaction, params};

use super::{Store, db_err, json_err};
use crate::appointments::slots::{WorkingHours, WorkingHoursSpec};
use crate::appointments::{AppointmentRecord, AppointmentType, Department, PrivateLink, TypeSettings};

/// A committed change the live queue shows: a meeting's lobby or call, and the
/// appointment whose meeting it is, when it is one's (`Store::queue_changes`).
#[derive(Debug, Clone)]
pub struct QueueChange {
    pub meeting_id: String,
    pub appointment: Option<ChangedAppointment>,
}

/// An appointment as it is after a change, with the transitions the change made (none
/// when only who is present changed).
#[derive(Debug, Clone)]
pub struct ChangedAppointment {
    pub record: AppointmentRecord,
    pub transitions: Vec<Transition>,
}

impl QueueChange {
    fn of(a: &AppointmentRecord, transitions: Vec<Transition>) -> QueueChange {
        QueueChange {
            meeting_id: a.meeting_id.clone(),
            appointment: Some(ChangedAppointment {
                record: a.clone(),
                transitions,
            }),
        }
    }

    /// Folds a later change of the same meeting into this one.
    pub(super) fn merge(&mut self, later: QueueChange) {
        match (&mut self.appointment, later.appointment) {
            (Some(old), Some(new)) => {
                old.record = new.record;
                old.transitions.extend(new.transitions);
            }
            (None, new) => self.appointment = new,
            (Some(_), None) => {}
        }
    }
}

/// States in which an appointment holds its slot.
const HOLDS_SLOT: &str = "state != 'cancelled'";

/// A booking to make.
pub struct NewBooking {
    pub appointment_id: String,
    pub appointment_type: AppointmentType,
    /// Through a private link: its code (a single-use link is used up in the same transaction).
    pub via_private_code: Option<String>,
    /// Staff who may take it, in order of preference; the first free one does.
    pub candidates: Vec<String>,
    /// Whether the slot must lie in the staff member's working hours (guests' bookings).
    pub within_hours: bool,
    pub starts_at_ms: Option<u64>,
    pub guest_name: String,
    pub guest_contact: Option<String>,
    pub manage_code: String,
    /// The meeting and link to create; their organiser and invitee are filled in here.
    pub meeting: Meeting,
    pub link: Link,
    pub now_ms: u64,
}

const APPOINTMENT_COLUMNS: &str = "appointment_id, organization, type_id, department_id, staff, meeting_id, link_id, manage_code, guest_name, guest_contact, machine, created_at";

fn appointment_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(AppointmentRecord, String)> {
    Ok((
        AppointmentRecord {
            appointment_id: row.get(0)?,
            organization: row.get(1)?,
            type_id: row.get(2)?,
            department_id: row.get(3)?,
            staff: row.get(4)?,
            meeting_id: row.get(5)?,
            link_id: row.get(6)?,
            manage_code: row.get(7)?,
            guest_name: row.get(8)?,
            guest_contact: row.get(9)?,
            // Filled from the JSON column by `finish`.
            machine: Appointment::new(None, 0, 0, 0).0,
            created_at_ms: row.get::<_, i64>(11)? as u64,
        },
        row.get(10)?,
    ))
}

fn finish((mut a, machine): (AppointmentRecord, String)) -> Result<AppointmentRecord, Error> {
    a.machine = serde_json::from_str(&machine).map_err(json_err)?;
    Ok(a)
}

fn type_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(AppointmentType, String)> {
    let code: Option<String> = row.get(3)?;
    let expires: Option<i64> = row.get(4)?;
    let used: Option<i64> = row.get(5)?;
    Ok((
        AppointmentType {
            type_id: row.get(0)?,
            organization: row.get(1)?,
            settings: TypeSettings::default(),
            private_link: code.map(|code| PrivateLink {
                code,
                expires_at_ms: expires.unwrap_or(0) as u64,
                used_at_ms: used.map(|v| v as u64),
            }),
            created_at_ms: row.get::<_, i64>(6)? as u64,
            archived_at_ms: row.get::<_, Option<i64>>(7)?.map(|v| v as u64),
        },
        row.get(2)?,
    ))
}

fn finish_type((mut t, settings): (AppointmentType, String)) -> Result<AppointmentType, Error> {
    t.settings = serde_json::from_str(&settings).map_err(json_err)?;
    Ok(t)
}

const TYPE_COLUMNS: &str =
    "type_id, organization, settings, link_code, link_expires_at, link_used_at, created_at, archived_at";

pub(super) fn load_appointment(tx: &Transaction<'_>, appointment_id: &str) -> Result<Option<AppointmentRecord>, Error> {
    tx.query_row(
        &format!("SELECT {APPOINTMENT_COLUMNS} FROM appointments WHERE appointment_id = ?1"),
        [appointment_id],
        appointment_from_row,
    )
    .optional()
    .map_err(db_err)?
    .map(finish)
    .transpose()
}

/// Writes the machine and the transitions it made, the webhook events they are, and (after
/// a booking, reschedule or cancellation) the reminders still to send.
fn save(tx: &Transaction<'_>, a: &AppointmentRecord, transitions: &[Transition]) -> Result<(), Error> {
    let machine = serde_json::to_string(&a.machine).map_err(json_err)?;
    tx.execute(
        "UPDATE appointments SET machine = ?2, state = ?3, starts_at = ?4, ends_at = ?5, first_arrived_at = ?6, served_at = ?7, completed_at = ?8 WHERE appointment_id = ?1",
        params![
            a.appointment_id,
            machine,
            a.machine.state.as_str(),
            a.machine.starts_at_ms.map(|v| v as i64),
            a.machine.ends_at_ms().map(|v| v as i64),
            a.machine.first_arrived_ms.map(|v| v as i64),
            a.machine.served_at_ms.map(|v| v as i64),
            (a.machine.state == AppointmentState::Completed).then_some(a.machine.state_since_ms as i64)
        ],
    )
    .map_err(db_err)?;
    for t in transitions {
        insert_transition(tx, &a.appointment_id, t)?;
    }
    super::webhooks::transitions_in(tx, a, transitions)?;
    let rescheduling = transitions.iter().rev().find(|t| {
        matches!(
            t.cause,
            Cause::Booked | Cause::Rescheduled | Cause::CancelledByGuest | Cause::CancelledByStaff
        )
    });
    if let Some(t) = rescheduling {
        super::webhooks::schedule_reminders(tx, a, t.at_ms)?;
    }
    Ok(())
}

fn insert_transition(tx: &Transaction<'_>, appointment_id: &str, t: &Transition) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO appointment_transitions (appointment_id, from_state, to_state, at_ms, cause) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            appointment_id,
            t.from.map(AppointmentState::as_str),
            t.to.as_str(),
            t.at_ms as i64,
            t.cause.as_str()
        ],
    )
    .map_err(db_err)?;
    Ok(())
}

/// After `meeting_id`'s open attendance changed at `at_ms` (inside the event's transaction):
/// feeds the appointment whose meeting it is, if any, who is present now.
pub(super) fn presence_changed(
    tx: &Transaction<'_>,
    meeting_id: &str,
    at_ms: u64,
) -> Result<Option<ChangedAppointment>, Error> {
    let id: Option<String> = tx
        .query_row(
            "SELECT appointment_id FROM appointments WHERE meeting_id = ?1",
            [meeting_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err)?;
    let Some(id) = id else { return Ok(None) };
    let mut presence = Presence::default();
    let mut stmt = tx
        .prepare_cached(
            "SELECT kind, in_call, count(*) FROM open_attendance WHERE meeting_id = ?1 GROUP BY kind, in_call",
        )
        .map_err(db_err)?;
    let rows = stmt
        .query_map([meeting_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?, r.get::<_, i64>(2)?))
        })
        .map_err(db_err)?;
    for row in rows {
        let (kind, in_call, n) = row.map_err(db_err)?;
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        match (kind.as_str(), in_call) {
            ("staff", true) => presence.staff_in_call = n,
            ("staff", false) => {}
            (_, true) => presence.guests_in_call = n,
            (_, false) => presence.guests_in_lobby = n,
        }
    }
    let Some(mut a) = load_appointment(tx, &id)? else {
        return Ok(None);
    };
    if a.machine.presence == presence {
        return Ok(None);
    }
    let transitions = a.machine.apply(Input::Presence(presence), at_ms)?;
    save(tx, &a, &transitions)?;
    Ok(Some(ChangedAppointment { record: a, transitions }))
}

fn overlaps(tx: &Transaction<'_>, org: &str, staff: &str, start: u64, end: u64, except: &str) -> Result<bool, Error> {
    tx.query_row(
        &format!(
            "SELECT EXISTS (SELECT 1 FROM appointments WHERE organization = ?1 AND staff = ?2 AND {HOLDS_SLOT} AND starts_at < ?4 AND ends_at > ?3 AND appointment_id != ?5)"
        ),
        params![org, staff, start as i64, end as i64, except],
        |r| r.get(0),
    )
    .map_err(db_err)
}

fn working_hours_in(tx: &Transaction<'_>, org: &str, staff: &str) -> Result<Option<WorkingHours>, Error> {
    let json: Option<String> = tx
        .query_row(
            "SELECT hours FROM working_hours WHERE organization = ?1 AND staff = ?2",
            params![org, staff],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err)?;
    let Some(json) = json else { return Ok(None) };
    let spec: WorkingHoursSpec = serde_json::from_str(&json).map_err(json_err)?;
    // Stored only after validation; a zone the bundled database lost would refuse here.
    WorkingHours::parse(&spec).map(Some)
}

impl Store {
    pub fn insert_department(&self, d: &Department) -> Result<(), Error> {
        let changed = self
            .conn()
            .execute(
                "INSERT OR IGNORE INTO departments (department_id, organization, name, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![d.department_id, d.organization, d.name, d.created_at_ms as i64],
            )
            .map_err(db_err)?;
        if changed == 0 {
            return Err(Error::new(ErrorCode::BadRequest, "a department of that name exists"));
        }
        Ok(())
    }

    /// An organisation's departments with their staff, by name.
    pub fn departments(&self, org: &str) -> Result<Vec<Department>, Error> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT d.department_id, d.name, d.created_at, s.staff FROM departments d LEFT JOIN department_staff s ON s.department_id = d.department_id WHERE d.organization = ?1 ORDER BY d.name, s.staff",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map([org], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })
            .map_err(db_err)?;
        let mut out: Vec<Department> = Vec::new();
        for row in rows {
            let (id, name, created, staff) = row.map_err(db_err)?;
            if out.last().is_none_or(|d| d.department_id != id) {
                out.push(Department {
                    department_id: id,
                    organization: org.to_owned(),
                    name,
                    staff: Vec::new(),
                    created_at_ms: created as u64,
                });
            }
            if let (Some(s), Some(d)) = (staff, out.last_mut()) {
                d.staff.push(s);
            }
        }
        Ok(out)
    }

    pub fn department(&self, org: &str, id: &str) -> Result<Option<Department>, Error> {
        Ok(self.departments(org)?.into_iter().find(|d| d.department_id == id))
    }

    /// Deletes a department (its memberships go with it); false if there was none.
    pub fn delete_department(&self, org: &str, id: &str) -> Result<bool, Error> {
        let changed = self
            .conn()
            .execute(
                "DELETE FROM departments WHERE organization = ?1 AND department_id = ?2",
                params![org, id],
            )
            .map_err(db_err)?;
        Ok(changed == 1)
    }

    /// Renames a department. False if another department of the organisation has that name
    /// (the caller has checked that the department exists).
    pub fn rename_department(&self, org: &str, id: &str, name: &str) -> Result<bool, Error> {
        let changed = self
            .conn()
            .execute(
                "UPDATE OR IGNORE departments SET name = ?3 WHERE organization = ?1 AND department_id = ?2",
                params![org, id, name],
            )
            .map_err(db_err)?;
        Ok(changed == 1)
    }

    /// Adds or removes a staff member of a department.
    pub fn set_member(&self, department_id: &str, staff: &str, member: bool) -> Result<(), Error> {
        let sql = if member {
            "INSERT OR IGNORE INTO department_staff (department_id, staff) VALUES (?1, ?2)"
        } else {
            "DELETE FROM department_staff WHERE department_id = ?1 AND staff = ?2"
        };
        self.conn()
            .execute(sql, params![department_id, staff])
            .map_err(db_err)?;
        Ok(())
    }

    pub fn put_working_hours(&self, org: &str, staff: &str, spec: &WorkingHoursSpec, now_ms: u64) -> Result<(), Error> {
        let json = serde_json::to_string(spec).map_err(json_err)?;
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO working_hours (organization, staff, hours, updated_at) VALUES (?1, ?2, ?3, ?4)",
                params![org, staff, json, now_ms as i64],
            )
            .map_err(db_err)?;
        Ok(())
    }

    pub fn working_hours(&self, org: &str, staff: &str) -> Result<Option<WorkingHoursSpec>, Error> {
        let json: Option<String> = self
            .conn()
            .query_row(
                "SELECT hours FROM working_hours WHERE organization = ?1 AND staff = ?2",
                params![org, staff],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        json.map(|j| serde_json::from_str(&j).map_err(json_err)).transpose()
    }

    pub fn insert_type(&self, t: &AppointmentType) -> Result<(), Error> {
        let settings = serde_json::to_string(&t.settings).map_err(json_err)?;
        let link = t.private_link.as_ref();
        self.conn()
            .execute(
                "INSERT INTO appointment_types (type_id, organization, settings, link_code, link_expires_at, link_used_at, created_at, archived_at) VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, NULL)",
                params![
                    t.type_id,
                    t.organization,
                    settings,
                    link.map(|l| l.code.as_str()),
                    link.map(|l| l.expires_at_ms as i64),
                    t.created_at_ms as i64
                ],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// An organisation's types, archived ones included, oldest first.
    pub fn types(&self, org: &str) -> Result<Vec<AppointmentType>, Error> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {TYPE_COLUMNS} FROM appointment_types WHERE organization = ?1 ORDER BY created_at"
            ))
            .map_err(db_err)?;
        let rows = stmt
            .query_map([org], type_from_row)
            .map_err(db_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_err)?;
        rows.into_iter().map(finish_type).collect()
    }

    pub fn appointment_type(&self, type_id: &str) -> Result<Option<AppointmentType>, Error> {
        self.conn()
            .query_row(
                &format!("SELECT {TYPE_COLUMNS} FROM appointment_types WHERE type_id = ?1"),
                [type_id],
                type_from_row,
            )
            .optional()
            .map_err(db_err)?
            .map(finish_type)
            .transpose()
    }

    pub fn type_by_private_code(&self, code: &str) -> Result<Option<AppointmentType>, Error> {
        self.conn()
            .query_row(
                &format!("SELECT {TYPE_COLUMNS} FROM appointment_types WHERE link_code = ?1"),
                [code],
                type_from_row,
            )
            .optional()
            .map_err(db_err)?
            .map(finish_type)
            .transpose()
    }

    pub fn archive_type(&self, type_id: &str, now_ms: u64) -> Result<(), Error> {
        self.conn()
            .execute(
                "UPDATE appointment_types SET archived_at = COALESCE(archived_at, ?2) WHERE type_id = ?1",
                params![type_id, now_ms as i64],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// Replaces a type's settings, and gives it `private_link` if it has none yet (a public
    /// type made private).
    pub fn update_type(
        &self,
        type_id: &str,
        settings: &TypeSettings,
        private_link: Option<&PrivateLink>,
    ) -> Result<(), Error> {
        let settings = serde_json::to_string(settings).map_err(json_err)?;
        self.conn()
            .execute(
                "UPDATE appointment_types SET settings = ?2, link_code = COALESCE(link_code, ?3), link_expires_at = COALESCE(link_expires_at, ?4) WHERE type_id = ?1",
                params![
                    type_id,
                    settings,
                    private_link.map(|l| l.code.as_str()),
                    private_link.map(|l| l.expires_at_ms as i64)
                ],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// Replaces a type's private link (the old code stops working).
    pub fn set_private_link(&self, type_id: &str, link: &PrivateLink) -> Result<(), Error> {
        self.conn()
            .execute(
                "UPDATE appointment_types SET link_code = ?2, link_expires_at = ?3, link_used_at = NULL WHERE type_id = ?1",
                params![type_id, link.code, link.expires_at_ms as i64],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// Books: picks the first free candidate, uses up a single-use private link, and
    /// inserts the meeting, the guest's link, the appointment and its first transition,
    /// all in one transaction.
    pub fn book(&self, b: NewBooking) -> Result<AppointmentRecord, Error> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db_err)?;
        let t = &b.appointment_type;
        let duration = t.settings.duration_ms();
        let org = &t.organization;
        let staff = match b.starts_at_ms {
            None => b.candidates.first().cloned(),
            Some(start) => {
                let end = start + duration;
                let mut found = None;
                for s in &b.candidates {
                    if overlaps(&tx, org, s, start, end, "")? {
                        continue;
                    }
                    if b.within_hours && !working_hours_in(&tx, org, s)?.is_some_and(|h| h.covers(start, end)) {
                        continue;
                    }
                    found = Some(s.clone());
                    break;
                }
                found
            }
        };
        let Some(staff) = staff else {
            return Err(Error::new(ErrorCode::SlotTaken, "this time is not free any more"));
        };
        if let Some(code) = &b.via_private_code
            && t.settings.single_use_link
        {
            let changed = tx
                .execute(
                    "UPDATE appointment_types SET link_used_at = ?2 WHERE link_code = ?1 AND link_used_at IS NULL",
                    params![code, b.now_ms as i64],
                )
                .map_err(db_err)?;
            if changed == 0 {
                return Err(Error::new(
                    ErrorCode::LinkUsed,
                    "this booking link has already been used",
                ));
            }
        }
        let mut meeting = b.meeting;
        meeting.organizer = staff.clone();
        meeting.settings.invited_staff = vec![staff.clone()];
        Self::insert_meeting_in(&tx, &meeting)?;
        Self::insert_link_in(&tx, &b.link)?;
        let (machine, first) = Appointment::new(b.starts_at_ms, duration, t.settings.no_show_minutes, b.now_ms);
        let record = AppointmentRecord {
            appointment_id: b.appointment_id,
            organization: org.clone(),
            type_id: t.type_id.clone(),
            department_id: t.settings.department_id.clone(),
            staff,
            meeting_id: meeting.meeting_id.to_string(),
            link_id: b.link.link_id.clone(),
            manage_code: b.manage_code,
            guest_name: b.guest_name,
            guest_contact: b.guest_contact,
            machine,
            created_at_ms: b.now_ms,
        };
        tx.execute(
            "INSERT INTO appointments (appointment_id, organization, type_id, department_id, staff, meeting_id, link_id, manage_code, guest_name, guest_contact, starts_at, ends_at, machine, state, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, NULL, '{}', 'scheduled', ?11)",
            params![
                record.appointment_id,
                record.organization,
                record.type_id,
                record.department_id,
                record.staff,
                record.meeting_id,
                record.link_id,
                record.manage_code,
                record.guest_name,
                record.guest_contact,
                record.created_at_ms as i64
            ],
        )
        .map_err(db_err)?;
        save(&tx, &record, &[first])?;
        tx.commit().map_err(db_err)?;
        drop(conn);
        self.published(vec![QueueChange::of(&record, vec![first])]);
        Ok(record)
    }

    pub fn appointment(&self, appointment_id: &str) -> Result<Option<AppointmentRecord>, Error> {
        self.appointment_where("appointment_id", appointment_id)
    }

    pub fn appointment_by_manage_code(&self, code: &str) -> Result<Option<AppointmentRecord>, Error> {
        self.appointment_where("manage_code", code)
    }

    /// The appointment whose meeting is `meeting_id` (each appointment has its own).
    pub fn appointment_by_meeting(&self, meeting_id: &str) -> Result<Option<AppointmentRecord>, Error> {
        self.appointment_where("meeting_id", meeting_id)
    }

    fn appointment_where(&self, column: &str, value: &str) -> Result<Option<AppointmentRecord>, Error> {
        self.conn()
            .query_row(
                &format!("SELECT {APPOINTMENT_COLUMNS} FROM appointments WHERE {column} = ?1"),
                [value],
                appointment_from_row,
            )
            .optional()
            .map_err(db_err)?
            .map(finish)
            .transpose()
    }

    /// An appointment's transitions, oldest first.
    pub fn transitions(&self, appointment_id: &str) -> Result<Vec<Transition>, Error> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT from_state, to_state, at_ms, cause FROM appointment_transitions WHERE appointment_id = ?1 ORDER BY id",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map([appointment_id], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .map_err(db_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_err)?;
        let state =
            |s: String| serde_json::from_value::<AppointmentState>(serde_json::Value::String(s)).map_err(json_err);
        rows.into_iter()
            .map(|(from, to, at, cause)| {
                Ok(Transition {
                    from: from.map(state).transpose()?,
                    to: state(to)?,
                    at_ms: at as u64,
                    cause: serde_json::from_value::<Cause>(serde_json::Value::String(cause)).map_err(json_err)?,
                })
            })
            .collect()
    }

    /// Applies a cancel or a reschedule (or a tick) to one appointment, durably with its
    /// transitions. A reschedule must find the new time free for the same staff member
    /// (in their working hours when `within_hours`). A cancellation revokes the guest's link.
    pub fn apply_to_appointment(
        &self,
        appointment_id: &str,
        input: Input,
        within_hours: bool,
        now_ms: u64,
    ) -> Result<(AppointmentRecord, Vec<Transition>), Error> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db_err)?;
        let mut a = load_appointment(&tx, appointment_id)?
            .ok_or_else(|| Error::new(ErrorCode::NotFound, "no such appointment"))?;
        if let Input::Reschedule {
            starts_at_ms,
            duration_ms,
        } = input
        {
            let end = starts_at_ms.saturating_add(duration_ms);
            let free = !overlaps(&tx, &a.organization, &a.staff, starts_at_ms, end, appointment_id)?
                && (!within_hours
                    || working_hours_in(&tx, &a.organization, &a.staff)?.is_some_and(|h| h.covers(starts_at_ms, end)));
            if !free {
                return Err(Error::new(ErrorCode::SlotTaken, "that time is not free"));
            }
        }
        let transitions = a.machine.apply(input, now_ms)?;
        save(&tx, &a, &transitions)?;
        match input {
            Input::Cancel(_) => {
                tx.execute(
                    "UPDATE links SET revoked_at = COALESCE(revoked_at, ?2) WHERE link_id = ?1",
                    params![a.link_id, now_ms as i64],
                )
                .map_err(db_err)?;
            }
            Input::Reschedule { .. } => {
                let mut settings: String = tx
                    .query_row(
                        "SELECT settings FROM meetings WHERE meeting_id = ?1",
                        [&a.meeting_id],
                        |r| r.get(0),
                    )
                    .map_err(db_err)?;
                let mut s: gatehouse_signaling::meeting::MeetingSettings =
                    serde_json::from_str(&settings).map_err(json_err)?;
                s.scheduled_start_ms = a.machine.starts_at_ms;
                s.scheduled_end_ms = a.machine.ends_at_ms();
                settings = serde_json::to_string(&s).map_err(json_err)?;
                tx.execute(
                    "UPDATE meetings SET settings = ?2 WHERE meeting_id = ?1",
                    params![a.meeting_id, settings],
                )
                .map_err(db_err)?;
                // The join link lives until a day after the new end.
                tx.execute(
                    "UPDATE links SET expires_at = ?2 WHERE link_id = ?1",
                    params![
                        a.link_id,
                        (a.machine.ends_at_ms().unwrap_or(now_ms) + 24 * 3600 * 1000) as i64
                    ],
                )
                .map_err(db_err)?;
            }
            _ => {}
        }
        tx.commit().map_err(db_err)?;
        drop(conn);
        self.published(vec![QueueChange::of(&a, transitions.clone())]);
        Ok((a, transitions))
    }

    /// An `appointment.reminder` webhook event now, asked for by staff (`data.reminder`
    /// is `"manual"`), with the join link; only while the guest may still come (`scheduled`,
    /// `waiting`, `late`: 409 `wrong_appointment_state` otherwise). Returns the event id and
    /// how many endpoints it goes to (0: no webhook endpoint is configured, nobody is told).
    pub fn send_reminder_now(&self, appointment_id: &str, now_ms: u64) -> Result<(String, u64), Error> {
        use super::webhooks::{appointment_data, enqueue_in, join_code};
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db_err)?;
        let a = load_appointment(&tx, appointment_id)?
            .ok_or_else(|| Error::new(ErrorCode::NotFound, "no such appointment"))?;
        if !matches!(
            a.machine.state,
            AppointmentState::Scheduled | AppointmentState::Waiting | AppointmentState::Late
        ) {
            return Err(Error::new(
                ErrorCode::WrongAppointmentState,
                format!("a {} appointment gets no reminder", a.machine.state.as_str()),
            ));
        }
        let code = join_code(&tx, &a.link_id)?;
        let mut data = appointment_data(&tx, &a)?;
        data["reminder"] = serde_json::json!("manual");
        let key = format!("manual-reminder:{appointment_id}:{}", crate::ids::new_id("r"));
        enqueue_in(
            &tx,
            &a.organization,
            crate::webhooks::EventType::Reminder,
            Some(appointment_id),
            Some(&key),
            data,
            code.as_deref(),
            now_ms,
        )?;
        // The last statement of enqueue_in made one delivery per endpoint.
        let endpoints = tx.changes();
        let event_id: String = tx
            .query_row(
                "SELECT event_id FROM webhook_events WHERE dedupe_key = ?1",
                [&key],
                |r| r.get(0),
            )
            .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok((event_id, endpoints))
    }

    /// Erases the guest contact of every appointment whose type's `contact_retention_days`
    /// have passed since its end (on demand: its creation) at `now_ms`; returns how many.
    /// The name, the state and the history stay (analytics need them, not the contact).
    pub fn erase_expired_contacts(&self, now_ms: u64) -> Result<usize, Error> {
        const DAY_MS: u64 = 24 * 3600 * 1000;
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db_err)?;
        // Every retention is at least a day: nothing younger can be due.
        let candidates: Vec<(String, String, i64)> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT appointment_id, type_id, COALESCE(ends_at, created_at) FROM appointments WHERE guest_contact IS NOT NULL AND COALESCE(ends_at, created_at) <= ?1",
                )
                .map_err(db_err)?;
            stmt.query_map([now_ms.saturating_sub(DAY_MS) as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(db_err)?
            .collect::<Result<_, _>>()
            .map_err(db_err)?
        };
        let mut days_of = std::collections::HashMap::new();
        let mut erased = 0;
        for (id, type_id, end) in candidates {
            if !days_of.contains_key(&type_id) {
                let settings: Option<String> = tx
                    .query_row(
                        "SELECT settings FROM appointment_types WHERE type_id = ?1",
                        [&type_id],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(db_err)?;
                let days = settings
                    .and_then(|s| serde_json::from_str::<TypeSettings>(&s).ok())
                    .map_or(crate::appointments::DEFAULT_CONTACT_RETENTION_DAYS, |t| {
                        t.contact_retention_days
                    });
                days_of.insert(type_id.clone(), days);
            }
            let days = u64::from(days_of[&type_id]);
            if (end.max(0) as u64).saturating_add(days * DAY_MS) <= now_ms {
                erased += tx
                    .execute(
                        "UPDATE appointments SET guest_contact = NULL WHERE appointment_id = ?1",
                        [&id],
                    )
                    .map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)?;
        Ok(erased)
    }

    /// Lets time act on every appointment it may change by `now_ms` (a start or a no-show
    /// deadline passed) and sends the reminders due; returns how many transitions and
    /// reminders were written.
    pub fn tick_appointments(&self, now_ms: u64) -> Result<usize, Error> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db_err)?;
        let ids: Vec<String> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT appointment_id FROM appointments WHERE state IN ('scheduled', 'waiting') AND starts_at <= ?1",
                )
                .map_err(db_err)?;
            stmt.query_map([now_ms as i64], |r| r.get(0))
                .map_err(db_err)?
                .collect::<Result<_, _>>()
                .map_err(db_err)?
        };
        let mut written = 0;
        let mut changes = Vec::new();
        for id in ids {
            let Some(mut a) = load_appointment(&tx, &id)? else {
                continue;
            };
            let transitions = a.machine.apply(Input::Tick, now_ms)?;
            if !transitions.is_empty() {
                written += transitions.len();
                save(&tx, &a, &transitions)?;
                changes.push(QueueChange::of(&a, transitions));
            }
        }
        written += super::webhooks::send_due_reminders(&tx, now_ms)?;
        tx.commit().map_err(db_err)?;
        drop(conn);
        self.published(changes);
        Ok(written)
    }

    /// Appointments of an organisation starting in `[from_ms, to_ms)` (on-demand ones
    /// created then), optionally of one department or staff member, by start.
    pub fn appointments_between(
        &self,
        org: &str,
        department_id: Option<&str>,
        staff: Option<&str>,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<AppointmentRecord>, Error> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {APPOINTMENT_COLUMNS} FROM appointments WHERE organization = ?1 AND (?2 IS NULL OR department_id = ?2) AND (?3 IS NULL OR staff = ?3) AND COALESCE(starts_at, created_at) >= ?4 AND COALESCE(starts_at, created_at) < ?5 ORDER BY COALESCE(starts_at, created_at), appointment_id LIMIT 2000"
            ))
            .map_err(db_err)?;
        let rows = stmt
            .query_map(
                params![org, department_id, staff, from_ms as i64, to_ms as i64],
                appointment_from_row,
            )
            .map_err(db_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_err)?;
        rows.into_iter().map(finish).collect()
    }

    /// The analytics facts of an organisation's appointments whose period instant (start, or
    /// creation when on demand) is in `[from_ms, to_ms)`, of one department or staff member
    /// or all; one range scan of an index on that instant.
    pub fn analytics_facts(
        &self,
        org: &str,
        department_id: Option<&str>,
        staff: Option<&str>,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<crate::appointments::analytics::Facts>, Error> {
        use crate::appointments::analytics::{Facts, Outcome};
        let filter = match (department_id, staff) {
            (Some(_), Some(_)) => "department_id = ?2 AND staff = ?3",
            (Some(_), None) => "department_id = ?2 AND ?3 IS NULL",
            (None, Some(_)) => "?2 IS NULL AND staff = ?3",
            (None, None) => "?2 IS NULL AND ?3 IS NULL",
        };
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT COALESCE(starts_at, created_at), starts_at IS NULL, state, first_arrived_at, served_at, completed_at FROM appointments WHERE organization = ?1 AND {filter} AND COALESCE(starts_at, created_at) >= ?4 AND COALESCE(starts_at, created_at) < ?5"
            ))
            .map_err(db_err)?;
        stmt.query_map(params![org, department_id, staff, from_ms as i64, to_ms as i64], |r| {
            let at: i64 = r.get(0)?;
            let state: String = r.get(2)?;
            let arrived: Option<i64> = r.get(3)?;
            let served: Option<i64> = r.get(4)?;
            let completed: Option<i64> = r.get(5)?;
            Ok(Facts {
                at_ms: at.max(0) as u64,
                on_demand: r.get(1)?,
                state: match state.as_str() {
                    "completed" => Outcome::Completed,
                    "no_show" => Outcome::NoShow,
                    "cancelled" => Outcome::Cancelled,
                    _ => Outcome::Open,
                },
                lobby_wait_ms: arrived.zip(served).map(|(a, s)| s.saturating_sub(a).max(0) as u64),
                duration_ms: served.zip(completed).map(|(s, c)| c.saturating_sub(s).max(0) as u64),
            })
        })
        .map_err(db_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err)
    }

    /// A guest's queue (`department_id`'s appointments, or `staff`'s when it has none): its
    /// appointments waiting, late or in progress, and the service times (served to
    /// completed) of its latest [`SAMPLES`](gatehouse_signaling::queue::SAMPLES) completed
    /// ones of the last 7 days, most recent first.
    pub fn queue_of(
        &self,
        org: &str,
        department_id: Option<&str>,
        staff: &str,
        now_ms: u64,
    ) -> Result<(Vec<gatehouse_signaling::queue::Queued>, Vec<u64>), Error> {
        use gatehouse_signaling::queue::{Queued, SAMPLES};
        let filter = match department_id {
            // Every parameter appears in both (rusqlite binds by count).
            Some(_) => "department_id = ?2 AND ?3 IS NOT NULL",
            None => "department_id IS NULL AND ?2 IS NULL AND staff = ?3",
        };
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT appointment_id, meeting_id, staff, machine FROM appointments WHERE state IN ('waiting', 'late', 'in_progress') AND organization = ?1 AND {filter}"
            ))
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![org, department_id, staff], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .map_err(db_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_err)?;
        let mut queue = Vec::with_capacity(rows.len());
        for (appointment_id, meeting_id, staff, machine) in rows {
            let m: Appointment = serde_json::from_str(&machine).map_err(json_err)?;
            queue.push(Queued {
                appointment_id,
                meeting_id,
                staff,
                state: m.state,
                starts_at_ms: m.starts_at_ms,
                first_arrived_ms: m.first_arrived_ms,
            });
        }
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT completed_at - served_at FROM appointments WHERE organization = ?1 AND {filter} AND COALESCE(starts_at, created_at) >= ?4 AND state = 'completed' AND served_at IS NOT NULL AND completed_at IS NOT NULL ORDER BY completed_at DESC LIMIT ?5"
            ))
            .map_err(db_err)?;
        let week_ago = now_ms.saturating_sub(7 * 24 * 3600 * 1000);
        let service = stmt
            .query_map(
                params![org, department_id, staff, week_ago as i64, SAMPLES as i64],
                |r| r.get::<_, i64>(0),
            )
            .map_err(db_err)?
            .map(|r| r.map(|v| v.max(0) as u64))
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_err)?;
        Ok((queue, service))
    }

    /// Busy intervals of a staff member overlapping `[from_ms, to_ms)`.
    pub fn busy(&self, org: &str, staff: &str, from_ms: u64, to_ms: u64) -> Result<Vec<(u64, u64)>, Error> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT starts_at, ends_at FROM appointments WHERE organization = ?1 AND staff = ?2 AND {HOLDS_SLOT} AND starts_at < ?4 AND ends_at > ?3"
            ))
            .map_err(db_err)?;
        stmt.query_map(params![org, staff, from_ms as i64, to_ms as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })
        .map_err(db_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err)
    }
}
