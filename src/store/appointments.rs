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

use super::db::{Db, Dialect, Row, args};
use super::{Store, json_err};
use crate::appointments::slots::{WorkingHours, WorkingHoursSpec};
use crate::appointments::{AppointmentRecord, AppointmentType, Department, PrivateLink, TypeSettings};
use gatehouse_signaling::appointment::{Appointment, AppointmentState, Cause, Input, Presence, Transition};
use gatehouse_signaling::link::Link;
use gatehouse_signaling::meeting::Meeting;
use gatehouse_signaling::{Error, ErrorCode};

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

fn appointment_from_row(row: &Row) -> Result<AppointmentRecord, Error> {
    Ok(AppointmentRecord {
        appointment_id: row.text(0)?,
        organization: row.text(1)?,
        type_id: row.text(2)?,
        department_id: row.opt_text(3)?,
        staff: row.text(4)?,
        meeting_id: row.text(5)?,
        link_id: row.text(6)?,
        manage_code: row.text(7)?,
        guest_name: row.text(8)?,
        guest_contact: row.opt_text(9)?,
        machine: serde_json::from_str(&row.text(10)?).map_err(json_err)?,
        created_at_ms: row.u64(11)?,
    })
}

fn type_from_row(row: &Row) -> Result<AppointmentType, Error> {
    let code = row.opt_text(3)?;
    let expires = row.opt_u64(4)?;
    let used = row.opt_u64(5)?;
    Ok(AppointmentType {
        type_id: row.text(0)?,
        organization: row.text(1)?,
        settings: serde_json::from_str(&row.text(2)?).map_err(json_err)?,
        private_link: code.map(|code| PrivateLink {
            code,
            expires_at_ms: expires.unwrap_or(0),
            used_at_ms: used,
        }),
        created_at_ms: row.u64(6)?,
        archived_at_ms: row.opt_u64(7)?,
    })
}

const TYPE_COLUMNS: &str =
    "type_id, organization, settings, link_code, link_expires_at, link_used_at, created_at, archived_at";

/// Loads an appointment to change it, inside a transaction: on PostgreSQL its row stays
/// locked until the transaction ends, so two nodes (or two connections of one) applying
/// inputs to one appointment take turns and neither overwrites the other's machine.
pub(super) fn load_appointment(tx: &mut dyn Db, appointment_id: &str) -> Result<Option<AppointmentRecord>, Error> {
    let lock = match tx.dialect() {
        Dialect::Sqlite => "",
        Dialect::Postgres => " FOR UPDATE",
    };
    tx.query_opt(
        &format!("SELECT {APPOINTMENT_COLUMNS} FROM appointments WHERE appointment_id = ?1{lock}"),
        args![appointment_id],
    )?
    .as_ref()
    .map(appointment_from_row)
    .transpose()
}

/// Writes the machine and the transitions it made, the webhook events they are, and (after
/// a booking, reschedule or cancellation) the reminders still to send.
fn save(tx: &mut dyn Db, a: &AppointmentRecord, transitions: &[Transition]) -> Result<(), Error> {
    let machine = serde_json::to_string(&a.machine).map_err(json_err)?;
    tx.execute(
        "UPDATE appointments SET machine = ?2, state = ?3, starts_at = ?4, ends_at = ?5, first_arrived_at = ?6, served_at = ?7, completed_at = ?8 WHERE appointment_id = ?1",
        args![
            a.appointment_id,
            machine,
            a.machine.state.as_str(),
            a.machine.starts_at_ms.map(|v| v as i64),
            a.machine.ends_at_ms().map(|v| v as i64),
            a.machine.first_arrived_ms.map(|v| v as i64),
            a.machine.served_at_ms.map(|v| v as i64),
            (a.machine.state == AppointmentState::Completed).then_some(a.machine.state_since_ms as i64)
        ],
    )?;
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

fn insert_transition(tx: &mut dyn Db, appointment_id: &str, t: &Transition) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO appointment_transitions (appointment_id, from_state, to_state, at_ms, cause) VALUES (?1, ?2, ?3, ?4, ?5)",
        args![
            appointment_id,
            t.from.map(AppointmentState::as_str),
            t.to.as_str(),
            t.at_ms as i64,
            t.cause.as_str()
        ],
    )?;
    Ok(())
}

/// After `meeting_id`'s open attendance changed at `at_ms` (inside the event's transaction):
/// feeds the appointment whose meeting it is, if any, who is present now.
pub(super) fn presence_changed(
    tx: &mut dyn Db,
    meeting_id: &str,
    at_ms: u64,
) -> Result<Option<ChangedAppointment>, Error> {
    let id = tx.query_opt(
        "SELECT appointment_id FROM appointments WHERE meeting_id = ?1",
        args![meeting_id],
    )?;
    let Some(id) = id else { return Ok(None) };
    // Locked before counting: a concurrent change of the same meeting has then committed,
    // and the count below (a statement of its own, so a fresh snapshot) includes it.
    let Some(mut a) = load_appointment(tx, &id.text(0)?)? else {
        return Ok(None);
    };
    let mut presence = Presence::default();
    let rows = tx.query(
        "SELECT kind, in_call, count(*) FROM open_attendance WHERE meeting_id = ?1 GROUP BY kind, in_call",
        args![meeting_id],
    )?;
    for row in rows {
        let (kind, in_call, n) = (row.text(0)?, row.bool(1)?, row.int(2)?);
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        match (kind.as_str(), in_call) {
            ("staff", true) => presence.staff_in_call = n,
            ("staff", false) => {}
            (_, true) => presence.guests_in_call = n,
            (_, false) => presence.guests_in_lobby = n,
        }
    }
    if a.machine.presence == presence {
        return Ok(None);
    }
    let transitions = a.machine.apply(Input::Presence(presence), at_ms)?;
    save(tx, &a, &transitions)?;
    Ok(Some(ChangedAppointment { record: a, transitions }))
}

fn overlaps(tx: &mut dyn Db, org: &str, staff: &str, start: u64, end: u64, except: &str) -> Result<bool, Error> {
    tx.query_one(
        &format!(
            "SELECT EXISTS (SELECT 1 FROM appointments WHERE organization = ?1 AND staff = ?2 AND {HOLDS_SLOT} AND starts_at < ?4 AND ends_at > ?3 AND appointment_id != ?5)"
        ),
        args![org, staff, start as i64, end as i64, except],
    )?
    .bool(0)
}

fn working_hours_in(tx: &mut dyn Db, org: &str, staff: &str) -> Result<Option<WorkingHours>, Error> {
    let row = tx.query_opt(
        "SELECT hours FROM working_hours WHERE organization = ?1 AND staff = ?2",
        args![org, staff],
    )?;
    let Some(row) = row else { return Ok(None) };
    let spec: WorkingHoursSpec = serde_json::from_str(&row.text(0)?).map_err(json_err)?;
    // Stored only after validation; a zone the bundled database lost would refuse here.
    WorkingHours::parse(&spec).map(Some)
}

/// The advisory lock a booking or reschedule in `org` holds while it checks a slot and
/// takes it (PostgreSQL; SQLite's one connection serialises them anyway).
fn slot_lock(org: &str) -> String {
    format!("gatehouse:slots:{org}")
}

impl Store {
    pub fn insert_department(&self, d: &Department) -> Result<(), Error> {
        let changed = self.with(|db| {
            db.execute(
                "INSERT INTO departments (department_id, organization, name, created_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                args![d.department_id, d.organization, d.name, d.created_at_ms as i64],
            )
        })?;
        if changed == 0 {
            return Err(Error::new(ErrorCode::BadRequest, "a department of that name exists"));
        }
        Ok(())
    }

    /// An organisation's departments with their staff, by name.
    pub fn departments(&self, org: &str) -> Result<Vec<Department>, Error> {
        let rows = self.with(|db| {
            db.query(
                "SELECT d.department_id, d.name, d.created_at, s.staff FROM departments d LEFT JOIN department_staff s ON s.department_id = d.department_id WHERE d.organization = ?1 ORDER BY d.name, d.department_id, s.staff",
                args![org],
            )
        })?;
        let mut out: Vec<Department> = Vec::new();
        for row in rows {
            let (id, name, created, staff) = (row.text(0)?, row.text(1)?, row.u64(2)?, row.opt_text(3)?);
            if out.last().is_none_or(|d| d.department_id != id) {
                out.push(Department {
                    department_id: id,
                    organization: org.to_owned(),
                    name,
                    staff: Vec::new(),
                    created_at_ms: created,
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
        let changed = self.with(|db| {
            db.execute(
                "DELETE FROM departments WHERE organization = ?1 AND department_id = ?2",
                args![org, id],
            )
        })?;
        Ok(changed == 1)
    }

    /// Renames a department. False if another department of the organisation has that name
    /// (the caller has checked that the department exists).
    pub fn rename_department(&self, org: &str, id: &str, name: &str) -> Result<bool, Error> {
        let changed = self.with(|db| {
            db.execute_unique(
                "UPDATE departments SET name = ?3 WHERE organization = ?1 AND department_id = ?2",
                args![org, id, name],
            )
        })?;
        Ok(changed == Some(1))
    }

    /// Adds or removes a staff member of a department.
    pub fn set_member(&self, department_id: &str, staff: &str, member: bool) -> Result<(), Error> {
        let sql = if member {
            "INSERT INTO department_staff (department_id, staff) VALUES (?1, ?2) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM department_staff WHERE department_id = ?1 AND staff = ?2"
        };
        self.with(|db| db.execute(sql, args![department_id, staff]))?;
        Ok(())
    }

    pub fn put_working_hours(&self, org: &str, staff: &str, spec: &WorkingHoursSpec, now_ms: u64) -> Result<(), Error> {
        let json = serde_json::to_string(spec).map_err(json_err)?;
        self.with(|db| {
            db.execute(
                "INSERT INTO working_hours (organization, staff, hours, updated_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (organization, staff) DO UPDATE SET hours = excluded.hours, updated_at = excluded.updated_at",
                args![org, staff, json, now_ms as i64],
            )
        })?;
        Ok(())
    }

    pub fn working_hours(&self, org: &str, staff: &str) -> Result<Option<WorkingHoursSpec>, Error> {
        let row = self.with(|db| {
            db.query_opt(
                "SELECT hours FROM working_hours WHERE organization = ?1 AND staff = ?2",
                args![org, staff],
            )
        })?;
        row.map(|r| serde_json::from_str(&r.text(0)?).map_err(json_err))
            .transpose()
    }

    pub fn insert_type(&self, t: &AppointmentType) -> Result<(), Error> {
        let settings = serde_json::to_string(&t.settings).map_err(json_err)?;
        let link = t.private_link.as_ref();
        self.with(|db| {
            db.execute(
                "INSERT INTO appointment_types (type_id, organization, settings, link_code, link_expires_at, link_used_at, created_at, archived_at) VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, NULL)",
                args![
                    t.type_id,
                    t.organization,
                    settings,
                    link.map(|l| l.code.as_str()),
                    link.map(|l| l.expires_at_ms as i64),
                    t.created_at_ms as i64
                ],
            )
        })?;
        Ok(())
    }

    fn types_where(&self, condition: &str, value: &str) -> Result<Vec<AppointmentType>, Error> {
        let sql = format!("SELECT {TYPE_COLUMNS} FROM appointment_types WHERE {condition}");
        self.with(|db| db.query(&sql, args![value]))?
            .iter()
            .map(type_from_row)
            .collect()
    }

    /// An organisation's types, archived ones included, oldest first.
    pub fn types(&self, org: &str) -> Result<Vec<AppointmentType>, Error> {
        self.types_where("organization = ?1 ORDER BY created_at, type_id", org)
    }

    pub fn appointment_type(&self, type_id: &str) -> Result<Option<AppointmentType>, Error> {
        Ok(self.types_where("type_id = ?1", type_id)?.into_iter().next())
    }

    pub fn type_by_private_code(&self, code: &str) -> Result<Option<AppointmentType>, Error> {
        Ok(self.types_where("link_code = ?1", code)?.into_iter().next())
    }

    pub fn archive_type(&self, type_id: &str, now_ms: u64) -> Result<(), Error> {
        self.with(|db| {
            db.execute(
                "UPDATE appointment_types SET archived_at = COALESCE(archived_at, ?2) WHERE type_id = ?1",
                args![type_id, now_ms as i64],
            )
        })?;
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
        self.with(|db| {
            db.execute(
                "UPDATE appointment_types SET settings = ?2, link_code = COALESCE(link_code, ?3), link_expires_at = COALESCE(link_expires_at, ?4) WHERE type_id = ?1",
                args![
                    type_id,
                    settings,
                    private_link.map(|l| l.code.as_str()),
                    private_link.map(|l| l.expires_at_ms as i64)
                ],
            )
        })?;
        Ok(())
    }

    /// Replaces a type's private link (the old code stops working).
    pub fn set_private_link(&self, type_id: &str, link: &PrivateLink) -> Result<(), Error> {
        self.with(|db| {
            db.execute(
                "UPDATE appointment_types SET link_code = ?2, link_expires_at = ?3, link_used_at = NULL WHERE type_id = ?1",
                args![type_id, link.code, link.expires_at_ms as i64],
            )
        })?;
        Ok(())
    }

    /// Books: picks the first free candidate, uses up a single-use private link, and
    /// inserts the meeting, the guest's link, the appointment and its first transition,
    /// all in one transaction.
    pub fn book(&self, b: NewBooking) -> Result<AppointmentRecord, Error> {
        let record = self.tx_changing(|tx| {
            let t = &b.appointment_type;
            let duration = t.settings.duration_ms();
            let org = &t.organization;
            // Two bookings of one slot take turns: the second finds it taken.
            tx.lock(&slot_lock(org))?;
            let staff = match b.starts_at_ms {
                None => b.candidates.first().cloned(),
                Some(start) => {
                    let end = start + duration;
                    let mut found = None;
                    for s in &b.candidates {
                        if overlaps(tx, org, s, start, end, "")? {
                            continue;
                        }
                        if b.within_hours && !working_hours_in(tx, org, s)?.is_some_and(|h| h.covers(start, end)) {
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
                let changed = tx.execute(
                    "UPDATE appointment_types SET link_used_at = ?2 WHERE link_code = ?1 AND link_used_at IS NULL",
                    args![code, b.now_ms as i64],
                )?;
                if changed == 0 {
                    return Err(Error::new(
                        ErrorCode::LinkUsed,
                        "this booking link has already been used",
                    ));
                }
            }
            let mut meeting = b.meeting.clone();
            meeting.organizer = staff.clone();
            meeting.settings.invited_staff = vec![staff.clone()];
            Self::insert_meeting_in(tx, &meeting)?;
            Self::insert_link_in(tx, &b.link)?;
            let (machine, first) = Appointment::new(b.starts_at_ms, duration, t.settings.no_show_minutes, b.now_ms);
            let record = AppointmentRecord {
                appointment_id: b.appointment_id.clone(),
                organization: org.clone(),
                type_id: t.type_id.clone(),
                department_id: t.settings.department_id.clone(),
                staff,
                meeting_id: meeting.meeting_id.to_string(),
                link_id: b.link.link_id.clone(),
                manage_code: b.manage_code.clone(),
                guest_name: b.guest_name.clone(),
                guest_contact: b.guest_contact.clone(),
                machine,
                created_at_ms: b.now_ms,
            };
            tx.execute(
                "INSERT INTO appointments (appointment_id, organization, type_id, department_id, staff, meeting_id, link_id, manage_code, guest_name, guest_contact, starts_at, ends_at, machine, state, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, NULL, '{}', 'scheduled', ?11)",
                args![
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
            )?;
            save(tx, &record, &[first])?;
            let change = QueueChange::of(&record, vec![first]);
            Ok((record, vec![change]))
        })?;
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
        let sql = format!("SELECT {APPOINTMENT_COLUMNS} FROM appointments WHERE {column} = ?1");
        self.with(|db| db.query_opt(&sql, args![value]))?
            .as_ref()
            .map(appointment_from_row)
            .transpose()
    }

    /// An appointment's transitions, oldest first.
    pub fn transitions(&self, appointment_id: &str) -> Result<Vec<Transition>, Error> {
        let rows = self.with(|db| {
            db.query(
                "SELECT from_state, to_state, at_ms, cause FROM appointment_transitions WHERE appointment_id = ?1 ORDER BY id",
                args![appointment_id],
            )
        })?;
        let state =
            |s: String| serde_json::from_value::<AppointmentState>(serde_json::Value::String(s)).map_err(json_err);
        rows.iter()
            .map(|r| {
                Ok(Transition {
                    from: r.opt_text(0)?.map(state).transpose()?,
                    to: state(r.text(1)?)?,
                    at_ms: r.u64(2)?,
                    cause: serde_json::from_value::<Cause>(serde_json::Value::String(r.text(3)?)).map_err(json_err)?,
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
        let (a, transitions) = self.tx_changing(|tx| {
            let Some(org) = tx
                .query_opt(
                    "SELECT organization FROM appointments WHERE appointment_id = ?1",
                    args![appointment_id],
                )?
                .map(|r| r.text(0))
                .transpose()?
            else {
                return Err(Error::new(ErrorCode::NotFound, "no such appointment"));
            };
            if matches!(input, Input::Reschedule { .. }) {
                tx.lock(&slot_lock(&org))?;
            }
            let mut a = load_appointment(tx, appointment_id)?
                .ok_or_else(|| Error::new(ErrorCode::NotFound, "no such appointment"))?;
            // The state machine first: a time in the past, or an appointment that cannot move
            // any more, is that error whether or not the time is free.
            let transitions = a.machine.apply(input, now_ms)?;
            if let Input::Reschedule {
                starts_at_ms,
                duration_ms,
            } = input
            {
                let end = starts_at_ms.saturating_add(duration_ms);
                let free = !overlaps(tx, &a.organization, &a.staff, starts_at_ms, end, appointment_id)?
                    && (!within_hours
                        || working_hours_in(tx, &a.organization, &a.staff)?
                            .is_some_and(|h| h.covers(starts_at_ms, end)));
                if !free {
                    return Err(Error::new(ErrorCode::SlotTaken, "that time is not free"));
                }
            }
            save(tx, &a, &transitions)?;
            match input {
                Input::Cancel(_) => {
                    tx.execute(
                        "UPDATE links SET revoked_at = COALESCE(revoked_at, ?2) WHERE link_id = ?1",
                        args![a.link_id, now_ms as i64],
                    )?;
                }
                Input::Reschedule { .. } => {
                    let settings = tx
                        .query_one(
                            "SELECT settings FROM meetings WHERE meeting_id = ?1",
                            args![a.meeting_id],
                        )?
                        .text(0)?;
                    let mut s: gatehouse_signaling::meeting::MeetingSettings =
                        serde_json::from_str(&settings).map_err(json_err)?;
                    s.scheduled_start_ms = a.machine.starts_at_ms;
                    s.scheduled_end_ms = a.machine.ends_at_ms();
                    let settings = serde_json::to_string(&s).map_err(json_err)?;
                    tx.execute(
                        "UPDATE meetings SET settings = ?2 WHERE meeting_id = ?1",
                        args![a.meeting_id, settings],
                    )?;
                    // The join link lives until a day after the new end.
                    tx.execute(
                        "UPDATE links SET expires_at = ?2 WHERE link_id = ?1",
                        args![
                            a.link_id,
                            (a.machine.ends_at_ms().unwrap_or(now_ms) + 24 * 3600 * 1000) as i64
                        ],
                    )?;
                }
                _ => {}
            }
            let change = QueueChange::of(&a, transitions.clone());
            Ok(((a, transitions), vec![change]))
        })?;
        Ok((a, transitions))
    }

    /// An `appointment.reminder` webhook event now, asked for by staff (`data.reminder`
    /// is `"manual"`), with the join link; only while the guest may still come (`scheduled`,
    /// `waiting`, `late`: 409 `wrong_appointment_state` otherwise). Returns the event id and
    /// how many endpoints it goes to (0: no webhook endpoint is configured, nobody is told).
    pub fn send_reminder_now(&self, appointment_id: &str, now_ms: u64) -> Result<(String, u64), Error> {
        use super::webhooks::{appointment_data, enqueue_in, join_code};
        self.tx(|tx| {
            let a = load_appointment(tx, appointment_id)?
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
            let code = join_code(tx, &a.link_id)?;
            let mut data = appointment_data(tx, &a)?;
            data["reminder"] = serde_json::json!("manual");
            let key = format!("manual-reminder:{appointment_id}:{}", crate::ids::new_id("r"));
            let enqueued = enqueue_in(
                tx,
                &a.organization,
                crate::webhooks::EventType::Reminder,
                Some(appointment_id),
                Some(&key),
                data,
                code.as_deref(),
                now_ms,
            )?;
            let Some((event_id, endpoints)) = enqueued else {
                tracing::error!(key, "a fresh reminder key was taken");
                return Err(Error::new(ErrorCode::Internal, "storage error"));
            };
            Ok((event_id, endpoints))
        })
    }

    /// Erases the guest contact of every appointment whose type's `contact_retention_days`
    /// have passed since its end (on demand: its creation) at `now_ms`; returns how many.
    /// The name, the state and the history stay (analytics need them, not the contact).
    pub fn erase_expired_contacts(&self, now_ms: u64) -> Result<usize, Error> {
        const DAY_MS: u64 = 24 * 3600 * 1000;
        self.tx(|tx| {
            // Every retention is at least a day: nothing younger can be due.
            let candidates = tx.query(
                "SELECT appointment_id, type_id, COALESCE(ends_at, created_at) FROM appointments WHERE guest_contact IS NOT NULL AND COALESCE(ends_at, created_at) <= ?1",
                args![now_ms.saturating_sub(DAY_MS) as i64],
            )?;
            let mut days_of = std::collections::HashMap::new();
            let mut erased = 0;
            for row in candidates {
                let (id, type_id, end) = (row.text(0)?, row.text(1)?, row.u64(2)?);
                if !days_of.contains_key(&type_id) {
                    let settings = tx
                        .query_opt(
                            "SELECT settings FROM appointment_types WHERE type_id = ?1",
                            args![type_id],
                        )?
                        .map(|r| r.text(0))
                        .transpose()?;
                    let days = settings
                        .and_then(|s| serde_json::from_str::<TypeSettings>(&s).ok())
                        .map_or(crate::appointments::DEFAULT_CONTACT_RETENTION_DAYS, |t| {
                            t.contact_retention_days
                        });
                    days_of.insert(type_id.clone(), days);
                }
                let days = u64::from(days_of[&type_id]);
                if end.saturating_add(days * DAY_MS) <= now_ms {
                    erased += tx.execute(
                        "UPDATE appointments SET guest_contact = NULL WHERE appointment_id = ?1",
                        args![id],
                    )? as usize;
                }
            }
            Ok(erased)
        })
    }

    /// Lets time act on every appointment it may change by `now_ms` (a start or a no-show
    /// deadline passed) and sends the reminders due; returns how many transitions and
    /// reminders were written.
    pub fn tick_appointments(&self, now_ms: u64) -> Result<usize, Error> {
        let written = self.tx_changing(|tx| {
            let ids = tx.query(
                "SELECT appointment_id FROM appointments WHERE state IN ('scheduled', 'waiting') AND starts_at <= ?1 ORDER BY appointment_id",
                args![now_ms as i64],
            )?;
            let mut written = 0;
            let mut changes = Vec::new();
            for id in ids {
                let Some(mut a) = load_appointment(tx, &id.text(0)?)? else {
                    continue;
                };
                let transitions = a.machine.apply(Input::Tick, now_ms)?;
                if !transitions.is_empty() {
                    written += transitions.len();
                    save(tx, &a, &transitions)?;
                    changes.push(QueueChange::of(&a, transitions));
                }
            }
            written += super::webhooks::send_due_reminders(tx, now_ms)?;
            Ok((written, changes))
        })?;
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
        let sql = format!(
            "SELECT {APPOINTMENT_COLUMNS} FROM appointments WHERE organization = ?1 AND (CAST(?2 AS TEXT) IS NULL OR department_id = ?2) AND (CAST(?3 AS TEXT) IS NULL OR staff = ?3) AND COALESCE(starts_at, created_at) >= ?4 AND COALESCE(starts_at, created_at) < ?5 ORDER BY COALESCE(starts_at, created_at), appointment_id LIMIT 2000"
        );
        self.with(|db| db.query(&sql, args![org, department_id, staff, from_ms as i64, to_ms as i64]))?
            .iter()
            .map(appointment_from_row)
            .collect()
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
            (Some(_), None) => "department_id = ?2 AND CAST(?3 AS TEXT) IS NULL",
            (None, Some(_)) => "CAST(?2 AS TEXT) IS NULL AND staff = ?3",
            (None, None) => "CAST(?2 AS TEXT) IS NULL AND CAST(?3 AS TEXT) IS NULL",
        };
        let sql = format!(
            "SELECT COALESCE(starts_at, created_at), starts_at IS NULL, state, first_arrived_at, served_at, completed_at FROM appointments WHERE organization = ?1 AND {filter} AND COALESCE(starts_at, created_at) >= ?4 AND COALESCE(starts_at, created_at) < ?5"
        );
        let rows = self.with(|db| db.query(&sql, args![org, department_id, staff, from_ms as i64, to_ms as i64]))?;
        rows.iter()
            .map(|r| {
                let arrived = r.opt_int(3)?;
                let served = r.opt_int(4)?;
                let completed = r.opt_int(5)?;
                Ok(Facts {
                    at_ms: r.u64(0)?,
                    on_demand: r.bool(1)?,
                    state: match r.text(2)?.as_str() {
                        "completed" => Outcome::Completed,
                        "no_show" => Outcome::NoShow,
                        "cancelled" => Outcome::Cancelled,
                        _ => Outcome::Open,
                    },
                    lobby_wait_ms: arrived.zip(served).map(|(a, s)| s.saturating_sub(a).max(0) as u64),
                    duration_ms: served.zip(completed).map(|(s, c)| c.saturating_sub(s).max(0) as u64),
                })
            })
            .collect()
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
            // Every parameter appears in both (SQLite binds by count; PostgreSQL must be
            // able to name each one's type).
            Some(_) => "department_id = ?2 AND CAST(?3 AS TEXT) IS NOT NULL",
            None => "department_id IS NULL AND CAST(?2 AS TEXT) IS NULL AND staff = ?3",
        };
        let week_ago = now_ms.saturating_sub(7 * 24 * 3600 * 1000);
        let (rows, service) = self.with(|db| {
            let rows = db.query(
                &format!(
                    "SELECT appointment_id, meeting_id, staff, machine FROM appointments WHERE state IN ('waiting', 'late', 'in_progress') AND organization = ?1 AND {filter} ORDER BY appointment_id"
                ),
                args![org, department_id, staff],
            )?;
            let service = db.query(
                &format!(
                    "SELECT completed_at - served_at FROM appointments WHERE organization = ?1 AND {filter} AND COALESCE(starts_at, created_at) >= ?4 AND state = 'completed' AND served_at IS NOT NULL AND completed_at IS NOT NULL ORDER BY completed_at DESC LIMIT ?5"
                ),
                args![org, department_id, staff, week_ago as i64, SAMPLES as i64],
            )?;
            Ok((rows, service))
        })?;
        let mut queue = Vec::with_capacity(rows.len());
        for r in rows {
            let m: Appointment = serde_json::from_str(&r.text(3)?).map_err(json_err)?;
            queue.push(Queued {
                appointment_id: r.text(0)?,
                meeting_id: r.text(1)?,
                staff: r.text(2)?,
                state: m.state,
                starts_at_ms: m.starts_at_ms,
                first_arrived_ms: m.first_arrived_ms,
            });
        }
        let service = service.iter().map(|r| r.u64(0)).collect::<Result<Vec<_>, _>>()?;
        Ok((queue, service))
    }

    /// Busy intervals of a staff member overlapping `[from_ms, to_ms)`.
    pub fn busy(&self, org: &str, staff: &str, from_ms: u64, to_ms: u64) -> Result<Vec<(u64, u64)>, Error> {
        let rows = self.with(|db| {
            db.query(
                &format!(
                    "SELECT starts_at, ends_at FROM appointments WHERE organization = ?1 AND staff = ?2 AND {HOLDS_SLOT} AND starts_at < ?4 AND ends_at > ?3 ORDER BY starts_at"
                ),
                args![org, staff, from_ms as i64, to_ms as i64],
            )
        })?;
        rows.iter().map(|r| Ok((r.u64(0)?, r.u64(1)?))).collect()
    }
}
