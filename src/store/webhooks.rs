//! The webhook outbox: events written in the transaction of the change they report, one
//! delivery row per endpoint, and the delivery workers' reads and writes.
//!
//! An event's row holds its body (less the join URL, which needs the public URL the store
//! does not know); `webhook_endpoints` mirrors the configured endpoints (synced at start),
//! so the fan-out to deliveries is one `INSERT … SELECT` in the same transaction. A
//! delivery is due at `next_attempt_at` until it is delivered or given up; each endpoint's
//! worker reads only its own rows, so one dead endpoint never holds up another.

use gatehouse_signaling::appointment::{AppointmentState, Transition};
use gatehouse_signaling::{Error, ErrorCode};
use serde_json::{Value, json};

use super::db::{Db, Dialect, args};
use super::{Store, json_err};
use crate::appointments::AppointmentRecord;
use crate::webhooks::EventType;

/// How long a node's claim on a due delivery lasts (PostgreSQL, see
/// [`Store::due_deliveries`]): longer than a worker's batch of attempts, each bounded by the
/// request timeout.
pub const CLAIM_MS: u64 = 10 * 60 * 1000;

/// How long delivered (or given-up) events are kept.
pub const KEEP_DELIVERED_MS: u64 = 7 * 24 * 3600 * 1000;

/// A delivery that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    pub seq: i64,
    pub event_id: String,
    pub event_type: String,
    /// The event body as stored (`data.join_url` is added when sent).
    pub payload: String,
    /// The guest's join code, for `data.join_url`.
    pub join_code: Option<String>,
    pub created_at_ms: u64,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// Failed; try again at `next_at_ms`.
    Retry {
        error: String,
        next_at_ms: u64,
    },
    /// Failed for the last time.
    GiveUp {
        error: String,
    },
}

/// A delivery's state, for operators and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryStatus {
    pub endpoint: String,
    pub event_id: String,
    pub event_type: String,
    pub attempts: u32,
    pub delivered_at_ms: Option<u64>,
    pub failed_at_ms: Option<u64>,
    pub last_error: Option<String>,
}

/// Writes one event and its deliveries: its id and how many deliveries (one per endpoint
/// of its organisation), or `None` (and nothing written) when `dedupe_key` was used before.
#[allow(clippy::too_many_arguments)]
pub(super) fn enqueue_in(
    tx: &mut dyn Db,
    organization: &str,
    event_type: EventType,
    appointment_id: Option<&str>,
    dedupe_key: Option<&str>,
    data: Value,
    join_code: Option<&str>,
    now_ms: u64,
) -> Result<Option<(String, u64)>, Error> {
    let event_id = crate::ids::new_id("evt");
    let body = json!({
        "id": event_id,
        "type": event_type.as_str(),
        "created_at": crate::server::appointments::instant(now_ms),
        "created_at_ms": now_ms,
        "organization": organization,
        "data": data,
    });
    let payload = serde_json::to_string(&body).map_err(json_err)?;
    let inserted = tx.query_opt(
        "INSERT INTO webhook_events (event_id, organization, event_type, appointment_id, dedupe_key, payload, join_code, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING RETURNING seq",
        args![event_id, organization, event_type.as_str(), appointment_id, dedupe_key, payload, join_code, now_ms as i64],
    )?;
    let Some(seq) = inserted else {
        return Ok(None);
    };
    let seq = seq.int(0)?;
    let deliveries = tx.execute(
        "INSERT INTO webhook_deliveries (endpoint_id, seq, next_attempt_at) SELECT endpoint_id, ?1, ?2 FROM webhook_endpoints WHERE organization IS NULL OR organization = ?3",
        args![seq, now_ms as i64, organization],
    )?;
    Ok(Some((event_id, deliveries)))
}

/// What every appointment event says about the appointment.
pub(super) fn appointment_data(tx: &mut dyn Db, a: &AppointmentRecord) -> Result<Value, Error> {
    let settings = tx
        .query_opt(
            "SELECT settings FROM appointment_types WHERE type_id = ?1",
            args![a.type_id],
        )?
        .map(|r| r.text(0))
        .transpose()?;
    let title = settings
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .and_then(|v| v.get("title").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    let m = &a.machine;
    Ok(json!({
        "appointment_id": a.appointment_id,
        "type_id": a.type_id,
        "title": title,
        "department_id": a.department_id,
        "staff": a.staff,
        "meeting_id": a.meeting_id,
        "guest_name": a.guest_name,
        "guest_contact": a.guest_contact,
        "on_demand": m.starts_at_ms.is_none(),
        "starts_at": m.starts_at_ms.map(crate::server::appointments::instant),
        "starts_at_ms": m.starts_at_ms,
        "ends_at_ms": m.ends_at_ms(),
        "state": m.state.as_str(),
    }))
}

/// The guest's join code while their link works.
pub(super) fn join_code(tx: &mut dyn Db, link_id: &str) -> Result<Option<String>, Error> {
    tx.query_opt(
        "SELECT code FROM links WHERE link_id = ?1 AND revoked_at IS NULL",
        args![link_id],
    )?
    .map(|r| r.text(0))
    .transpose()
}

/// The events `transitions` of `a` are (see [`EventType::of_transition`]), written with them.
pub(super) fn transitions_in(tx: &mut dyn Db, a: &AppointmentRecord, transitions: &[Transition]) -> Result<(), Error> {
    let events: Vec<(EventType, &Transition)> = transitions
        .iter()
        .filter_map(|t| EventType::of_transition(t).map(|e| (e, t)))
        .collect();
    if events.is_empty() {
        return Ok(());
    }
    let base = appointment_data(tx, a)?;
    let code = join_code(tx, &a.link_id)?;
    for (event, t) in events {
        let mut data = base.clone();
        data["from_state"] = json!(t.from.map(AppointmentState::as_str));
        data["to_state"] = json!(t.to.as_str());
        data["cause"] = json!(t.cause.as_str());
        data["at_ms"] = json!(t.at_ms);
        if event == EventType::Admitted {
            data["lobby_wait_ms"] = json!(a.machine.lobby_wait_ms(t.at_ms));
        }
        let code = (event != EventType::Cancelled).then_some(code.as_deref()).flatten();
        enqueue_in(
            tx,
            &a.organization,
            event,
            Some(&a.appointment_id),
            None,
            data,
            code,
            t.at_ms,
        )?;
    }
    Ok(())
}

impl Store {
    /// Makes `webhook_endpoints` the configured endpoints (name, organisation filter).
    /// Pending deliveries of an endpoint no longer configured are given up.
    pub fn sync_webhook_endpoints(&self, endpoints: &[(String, Option<String>)], now_ms: u64) -> Result<(), Error> {
        let dropped = self.tx(|tx| {
            // Nodes starting together take turns (on PostgreSQL one's inserts would otherwise
            // collide with the other's, unseen by its `DELETE`).
            tx.lock("gatehouse:webhook_endpoints")?;
            tx.execute("DELETE FROM webhook_endpoints", args![])?;
            for (name, org) in endpoints {
                tx.execute(
                    "INSERT INTO webhook_endpoints (endpoint_id, organization) VALUES (?1, ?2)",
                    args![name, org],
                )?;
            }
            tx.execute(
                "UPDATE webhook_deliveries SET failed_at = ?1, last_error = 'endpoint removed from the configuration' WHERE delivered_at IS NULL AND failed_at IS NULL AND endpoint_id NOT IN (SELECT endpoint_id FROM webhook_endpoints)",
                args![now_ms as i64],
            )
        })?;
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "webhook deliveries given up: their endpoint is no longer configured"
            );
        }
        Ok(())
    }

    /// An endpoint's deliveries due at `now_ms`, oldest due first. On PostgreSQL, where every
    /// node runs a worker per endpoint, the rows returned are *claimed*: their next attempt
    /// moves [`CLAIM_MS`] ahead in the same statement (rows another node is claiming are
    /// skipped), so each delivery is attempted by one node; the attempt's outcome then sets
    /// it as usual, and a node that dies mid-batch leaves its claims to be retried after it.
    pub fn due_deliveries(&self, endpoint: &str, now_ms: u64, limit: u32) -> Result<Vec<DueDelivery>, Error> {
        let rows = self.with(|db| match db.dialect() {
            Dialect::Sqlite => db.query(
                "SELECT d.seq, e.event_id, e.event_type, e.payload, e.join_code, e.created_at, d.attempts FROM webhook_deliveries d JOIN webhook_events e ON e.seq = d.seq WHERE d.endpoint_id = ?1 AND d.delivered_at IS NULL AND d.failed_at IS NULL AND d.next_attempt_at <= ?2 ORDER BY d.next_attempt_at, d.seq LIMIT ?3",
                args![endpoint, now_ms as i64, limit],
            ),
            Dialect::Postgres => db.query(
                "WITH due AS (SELECT endpoint_id, seq, next_attempt_at FROM webhook_deliveries WHERE endpoint_id = ?1 AND delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= ?2 ORDER BY next_attempt_at, seq LIMIT ?3 FOR UPDATE SKIP LOCKED), claimed AS (UPDATE webhook_deliveries d SET next_attempt_at = ?4 FROM due WHERE d.endpoint_id = due.endpoint_id AND d.seq = due.seq RETURNING d.seq, d.attempts, due.next_attempt_at AS was_due) SELECT c.seq, e.event_id, e.event_type, e.payload, e.join_code, e.created_at, c.attempts FROM claimed c JOIN webhook_events e ON e.seq = c.seq ORDER BY c.was_due, c.seq",
                args![endpoint, now_ms as i64, limit, now_ms.saturating_add(CLAIM_MS) as i64],
            ),
        })?;
        rows.iter()
            .map(|r| {
                Ok(DueDelivery {
                    seq: r.int(0)?,
                    event_id: r.text(1)?,
                    event_type: r.text(2)?,
                    payload: r.text(3)?,
                    join_code: r.opt_text(4)?,
                    created_at_ms: r.u64(5)?,
                    attempts: r.int(6)?.try_into().unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    /// Records an attempt's outcome.
    pub fn delivery_attempted(&self, endpoint: &str, seq: i64, outcome: &Attempt, now_ms: u64) -> Result<(), Error> {
        let changed = self.with(|db| match outcome {
            Attempt::Delivered => db.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, delivered_at = ?3, last_error = NULL WHERE endpoint_id = ?1 AND seq = ?2",
                args![endpoint, seq, now_ms as i64],
            ),
            Attempt::Retry { error, next_at_ms } => db.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = ?3, last_error = ?4 WHERE endpoint_id = ?1 AND seq = ?2",
                args![endpoint, seq, *next_at_ms as i64, error],
            ),
            Attempt::GiveUp { error } => db.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, failed_at = ?3, last_error = ?4 WHERE endpoint_id = ?1 AND seq = ?2",
                args![endpoint, seq, now_ms as i64, error],
            ),
        })?;
        if changed == 1 {
            Ok(())
        } else {
            Err(Error::new(ErrorCode::NotFound, "no such delivery"))
        }
    }

    /// Deletes events older than `before_ms` that no endpoint still waits for.
    pub fn prune_webhook_events(&self, before_ms: u64) -> Result<usize, Error> {
        let n = self.with(|db| {
            db.execute(
                "DELETE FROM webhook_events WHERE created_at < ?1 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.seq = webhook_events.seq AND d.delivered_at IS NULL AND d.failed_at IS NULL)",
                args![before_ms as i64],
            )
        })?;
        Ok(n as usize)
    }

    /// Every delivery of an organisation's events, newest first (at most `limit`).
    pub fn webhook_deliveries(&self, organization: &str, limit: u32) -> Result<Vec<DeliveryStatus>, Error> {
        let rows = self.with(|db| {
            db.query(
                "SELECT d.endpoint_id, e.event_id, e.event_type, d.attempts, d.delivered_at, d.failed_at, d.last_error FROM webhook_deliveries d JOIN webhook_events e ON e.seq = d.seq WHERE e.organization = ?1 ORDER BY d.seq DESC, d.endpoint_id LIMIT ?2",
                args![organization, limit],
            )
        })?;
        rows.iter()
            .map(|r| {
                Ok(DeliveryStatus {
                    endpoint: r.text(0)?,
                    event_id: r.text(1)?,
                    event_type: r.text(2)?,
                    attempts: r.int(3)?.try_into().unwrap_or(u32::MAX),
                    delivered_at_ms: r.opt_u64(4)?,
                    failed_at_ms: r.opt_u64(5)?,
                    last_error: r.opt_text(6)?,
                })
            })
            .collect()
    }
}

/// Reminders of `a` from its type's schedule, replacing any not yet sent: each one due
/// `offset` before the start, if that is still ahead at `now_ms` (a reminder whose time
/// passed before the booking or reschedule is not sent).
pub(super) fn schedule_reminders(tx: &mut dyn Db, a: &AppointmentRecord, now_ms: u64) -> Result<(), Error> {
    tx.execute(
        "DELETE FROM appointment_reminders WHERE appointment_id = ?1",
        args![a.appointment_id],
    )?;
    let Some(start) = a.machine.starts_at_ms else {
        return Ok(());
    };
    if a.machine.state != AppointmentState::Scheduled {
        return Ok(());
    }
    let settings = tx.query_opt(
        "SELECT settings FROM appointment_types WHERE type_id = ?1",
        args![a.type_id],
    )?;
    let Some(settings) = settings else { return Ok(()) };
    let settings: crate::appointments::TypeSettings = serde_json::from_str(&settings.text(0)?).map_err(json_err)?;
    for label in &settings.reminders {
        let Some(offset) = crate::webhooks::parse_offset(label) else {
            continue;
        };
        let Some(due) = start.checked_sub(offset) else { continue };
        if due < now_ms {
            continue;
        }
        tx.execute(
            "INSERT INTO appointment_reminders (appointment_id, offset_ms, label, due_at, starts_at) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (appointment_id, offset_ms) DO UPDATE SET label = excluded.label, due_at = excluded.due_at, starts_at = excluded.starts_at",
            args![a.appointment_id, offset as i64, label, due as i64, start as i64],
        )?;
    }
    Ok(())
}

/// Sends every reminder due at `now_ms` whose appointment is still `scheduled` at the
/// same start; returns how many were written. Several nodes may run this at once: a
/// reminder is sent by whoever deletes its row (the others' `DELETE` finds none), and its
/// event has a dedupe key besides.
pub(super) fn send_due_reminders(tx: &mut dyn Db, now_ms: u64) -> Result<usize, Error> {
    let due = tx.query(
        "SELECT appointment_id, offset_ms, label, due_at, starts_at FROM appointment_reminders WHERE due_at <= ?1 ORDER BY due_at, appointment_id, offset_ms LIMIT 500",
        args![now_ms as i64],
    )?;
    let mut sent = 0;
    for r in due {
        let (id, offset, label, due_at, starts_at) = (r.text(0)?, r.int(1)?, r.text(2)?, r.u64(3)?, r.int(4)?);
        let taken = tx.execute(
            "DELETE FROM appointment_reminders WHERE appointment_id = ?1 AND offset_ms = ?2",
            args![id, offset],
        )?;
        if taken == 0 {
            continue;
        }
        let Some(a) = super::appointments::load_appointment(tx, &id)? else {
            continue;
        };
        if a.machine.state != AppointmentState::Scheduled || a.machine.starts_at_ms != Some(starts_at as u64) {
            continue;
        }
        let mut data = appointment_data(tx, &a)?;
        data["reminder"] = json!(label);
        data["reminder_offset_ms"] = json!(offset);
        let code = join_code(tx, &a.link_id)?;
        let key = format!("reminder:{id}:{starts_at}:{offset}");
        if enqueue_in(
            tx,
            &a.organization,
            EventType::Reminder,
            Some(&id),
            Some(&key),
            data,
            code.as_deref(),
            due_at.max(a.created_at_ms),
        )?
        .is_some()
        {
            sent += 1;
        }
    }
    Ok(sent)
}
