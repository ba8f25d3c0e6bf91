//! The store's schema as a list of versioned migrations (`rusqlite_migration`, which
//! keeps the version in `PRAGMA user_version`, where the store always kept it).
//!
//! Migrations 1 and 2 are exactly the two schema versions the store wrote before it used
//! migrations (the tables of the first release; `open_attendance`), so a data directory
//! of any earlier release is at a known version and upgrades in place on start. A
//! migration is never edited once released: a change is a new migration at the end.

use rusqlite_migration::{M, Migrations};

/// Version 1: meetings, links and the participation log.
const V1_MEETINGS_LINKS_EVENTS: &str = r#"
CREATE TABLE IF NOT EXISTS meetings (
    meeting_id   TEXT PRIMARY KEY,
    organization TEXT NOT NULL,
    organizer    TEXT NOT NULL,
    settings     TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    ended_at     INTEGER
);
CREATE TABLE IF NOT EXISTS links (
    link_id     TEXT PRIMARY KEY,
    meeting_id  TEXT NOT NULL REFERENCES meetings(meeting_id),
    code        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    invitee     TEXT,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER,
    redemptions INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS links_by_meeting ON links(meeting_id);
CREATE TABLE IF NOT EXISTS participation_events (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    meeting_id     TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    display_name   TEXT NOT NULL,
    kind           TEXT NOT NULL,
    at_ms          INTEGER NOT NULL,
    event          TEXT NOT NULL,
    detail         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_meeting ON participation_events(meeting_id, id);
"#;

/// Version 2: who is in a call or lobby now (one row per open attendance; see `Store::record`).
const V2_OPEN_ATTENDANCE: &str = r#"
CREATE TABLE IF NOT EXISTS open_attendance (
    meeting_id     TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    display_name   TEXT NOT NULL,
    kind           TEXT NOT NULL,
    in_call        INTEGER NOT NULL,
    since_ms       INTEGER NOT NULL,
    PRIMARY KEY (meeting_id, participant_id)
);
"#;

/// Version 3: virtual appointments (docs/ARCHITECTURE.md, "Appointments").
const V3_APPOINTMENTS: &str = r#"
CREATE TABLE departments (
    department_id TEXT PRIMARY KEY,
    organization  TEXT NOT NULL,
    name          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    UNIQUE (organization, name)
);
CREATE TABLE department_staff (
    department_id TEXT NOT NULL REFERENCES departments(department_id) ON DELETE CASCADE,
    staff         TEXT NOT NULL,
    PRIMARY KEY (department_id, staff)
);
CREATE TABLE working_hours (
    organization TEXT NOT NULL,
    staff        TEXT NOT NULL,
    hours        TEXT NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (organization, staff)
);
CREATE TABLE appointment_types (
    type_id         TEXT PRIMARY KEY,
    organization    TEXT NOT NULL,
    settings        TEXT NOT NULL,
    link_code       TEXT UNIQUE,
    link_expires_at INTEGER,
    link_used_at    INTEGER,
    created_at      INTEGER NOT NULL,
    archived_at     INTEGER
);
CREATE INDEX appointment_types_by_org ON appointment_types(organization);
CREATE TABLE appointments (
    appointment_id TEXT PRIMARY KEY,
    organization   TEXT NOT NULL,
    type_id        TEXT NOT NULL REFERENCES appointment_types(type_id),
    department_id  TEXT,
    staff          TEXT NOT NULL,
    meeting_id     TEXT NOT NULL UNIQUE REFERENCES meetings(meeting_id),
    link_id        TEXT NOT NULL REFERENCES links(link_id),
    manage_code    TEXT NOT NULL UNIQUE,
    guest_name     TEXT NOT NULL,
    guest_contact  TEXT,
    starts_at      INTEGER,
    ends_at        INTEGER,
    machine        TEXT NOT NULL,
    state          TEXT NOT NULL,
    created_at     INTEGER NOT NULL
);
CREATE INDEX appointments_by_staff_time ON appointments(organization, staff, starts_at);
CREATE INDEX appointments_by_department_time ON appointments(organization, department_id, starts_at);
CREATE INDEX appointments_by_state ON appointments(state, starts_at);
CREATE TABLE appointment_transitions (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    appointment_id TEXT NOT NULL REFERENCES appointments(appointment_id),
    from_state     TEXT,
    to_state       TEXT NOT NULL,
    at_ms          INTEGER NOT NULL,
    cause          TEXT NOT NULL
);
CREATE INDEX transitions_by_appointment ON appointment_transitions(appointment_id, id);
"#;

/// Version 4: the webhook outbox (docs/ARCHITECTURE.md, "Webhooks") and reminders.
/// An event is written in the transaction of the change it reports, with one delivery row
/// per configured endpoint of its organisation (`webhook_endpoints`, synced from the
/// settings at start), so a crash never loses one and a dead endpoint holds up only its own.
const V4_WEBHOOK_OUTBOX: &str = r#"
CREATE TABLE webhook_events (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       TEXT NOT NULL UNIQUE,
    organization   TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    appointment_id TEXT,
    dedupe_key     TEXT UNIQUE,
    payload        TEXT NOT NULL,
    join_code      TEXT,
    created_at     INTEGER NOT NULL
);
CREATE INDEX webhook_events_by_time ON webhook_events(created_at);
CREATE TABLE webhook_endpoints (
    endpoint_id  TEXT PRIMARY KEY,
    organization TEXT
);
CREATE TABLE webhook_deliveries (
    endpoint_id     TEXT NOT NULL,
    seq             INTEGER NOT NULL REFERENCES webhook_events(seq) ON DELETE CASCADE,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    delivered_at    INTEGER,
    failed_at       INTEGER,
    last_error      TEXT,
    PRIMARY KEY (endpoint_id, seq)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(endpoint_id, next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE TABLE appointment_reminders (
    appointment_id TEXT NOT NULL REFERENCES appointments(appointment_id),
    offset_ms      INTEGER NOT NULL,
    label          TEXT NOT NULL,
    due_at         INTEGER NOT NULL,
    starts_at      INTEGER NOT NULL,
    PRIMARY KEY (appointment_id, offset_ms)
);
CREATE INDEX appointment_reminders_due ON appointment_reminders(due_at);
"#;

/// Version 5: what the analytics read, as columns (filled from each machine's JSON and the
/// transitions for appointments made before), and indexes on the period's instant (the
/// start, or the creation of an on-demand appointment) per department and per staff member.
const V5_APPOINTMENT_ANALYTICS: &str = r#"
ALTER TABLE appointments ADD COLUMN first_arrived_at INTEGER;
ALTER TABLE appointments ADD COLUMN served_at INTEGER;
ALTER TABLE appointments ADD COLUMN completed_at INTEGER;
UPDATE appointments SET
    first_arrived_at = json_extract(machine, '$.first_arrived_ms'),
    served_at = json_extract(machine, '$.served_at_ms'),
    completed_at = (SELECT max(at_ms) FROM appointment_transitions t
                    WHERE t.appointment_id = appointments.appointment_id AND t.to_state = 'completed');
CREATE INDEX appointments_by_department_period ON appointments(organization, department_id, COALESCE(starts_at, created_at));
CREATE INDEX appointments_by_staff_period ON appointments(organization, staff, COALESCE(starts_at, created_at));
CREATE INDEX appointments_by_period ON appointments(organization, COALESCE(starts_at, created_at));
"#;

/// Every migration, oldest first; the schema version is their count.
pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(V1_MEETINGS_LINKS_EVENTS),
        M::up(V2_OPEN_ATTENDANCE),
        M::up(V3_APPOINTMENTS),
        M::up(V4_WEBHOOK_OUTBOX),
        M::up(V5_APPOINTMENT_ANALYTICS),
    ])
}

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 5;

/// PostgreSQL version 1: the SQLite schema at version 5, whole, in PostgreSQL's types
/// (`BIGINT` for every integer, `BOOLEAN` for `in_call`, identity columns for SQLite's
/// `AUTOINCREMENT`), plus `gatehouse_secrets`, where the nodes of a cluster keep their
/// one token-signing key (`server::shared_signing_key`). The two lists grow together:
/// a change of schema is a new migration at the end of each, never an edit.
const PG_V1_SCHEMA: &str = r#"
CREATE TABLE meetings (
    meeting_id   TEXT PRIMARY KEY,
    organization TEXT NOT NULL,
    organizer    TEXT NOT NULL,
    settings     TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    ended_at     BIGINT
);
CREATE INDEX meetings_by_org ON meetings(organization, created_at);
CREATE TABLE links (
    link_id     TEXT PRIMARY KEY,
    meeting_id  TEXT NOT NULL REFERENCES meetings(meeting_id),
    code        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    invitee     TEXT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT,
    redemptions BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX links_by_meeting ON links(meeting_id);
CREATE TABLE participation_events (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    meeting_id     TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    display_name   TEXT NOT NULL,
    kind           TEXT NOT NULL,
    at_ms          BIGINT NOT NULL,
    event          TEXT NOT NULL,
    detail         TEXT NOT NULL
);
CREATE INDEX events_by_meeting ON participation_events(meeting_id, id);
CREATE TABLE open_attendance (
    meeting_id     TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    display_name   TEXT NOT NULL,
    kind           TEXT NOT NULL,
    in_call        BOOLEAN NOT NULL,
    since_ms       BIGINT NOT NULL,
    PRIMARY KEY (meeting_id, participant_id)
);
CREATE TABLE departments (
    department_id TEXT PRIMARY KEY,
    organization  TEXT NOT NULL,
    name          TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    UNIQUE (organization, name)
);
CREATE TABLE department_staff (
    department_id TEXT NOT NULL REFERENCES departments(department_id) ON DELETE CASCADE,
    staff         TEXT NOT NULL,
    PRIMARY KEY (department_id, staff)
);
CREATE TABLE working_hours (
    organization TEXT NOT NULL,
    staff        TEXT NOT NULL,
    hours        TEXT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (organization, staff)
);
CREATE TABLE appointment_types (
    type_id         TEXT PRIMARY KEY,
    organization    TEXT NOT NULL,
    settings        TEXT NOT NULL,
    link_code       TEXT UNIQUE,
    link_expires_at BIGINT,
    link_used_at    BIGINT,
    created_at      BIGINT NOT NULL,
    archived_at     BIGINT
);
CREATE INDEX appointment_types_by_org ON appointment_types(organization);
CREATE TABLE appointments (
    appointment_id   TEXT PRIMARY KEY,
    organization     TEXT NOT NULL,
    type_id          TEXT NOT NULL REFERENCES appointment_types(type_id),
    department_id    TEXT,
    staff            TEXT NOT NULL,
    meeting_id       TEXT NOT NULL UNIQUE REFERENCES meetings(meeting_id),
    link_id          TEXT NOT NULL REFERENCES links(link_id),
    manage_code      TEXT NOT NULL UNIQUE,
    guest_name       TEXT NOT NULL,
    guest_contact    TEXT,
    starts_at        BIGINT,
    ends_at          BIGINT,
    machine          TEXT NOT NULL,
    state            TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    first_arrived_at BIGINT,
    served_at        BIGINT,
    completed_at     BIGINT
);
CREATE INDEX appointments_by_staff_time ON appointments(organization, staff, starts_at);
CREATE INDEX appointments_by_department_time ON appointments(organization, department_id, starts_at);
CREATE INDEX appointments_by_state ON appointments(state, starts_at);
CREATE INDEX appointments_by_department_period ON appointments(organization, department_id, (COALESCE(starts_at, created_at)));
CREATE INDEX appointments_by_staff_period ON appointments(organization, staff, (COALESCE(starts_at, created_at)));
CREATE INDEX appointments_by_period ON appointments(organization, (COALESCE(starts_at, created_at)));
CREATE TABLE appointment_transitions (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    appointment_id TEXT NOT NULL REFERENCES appointments(appointment_id),
    from_state     TEXT,
    to_state       TEXT NOT NULL,
    at_ms          BIGINT NOT NULL,
    cause          TEXT NOT NULL
);
CREATE INDEX transitions_by_appointment ON appointment_transitions(appointment_id, id);
CREATE TABLE webhook_events (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       TEXT NOT NULL UNIQUE,
    organization   TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    appointment_id TEXT,
    dedupe_key     TEXT UNIQUE,
    payload        TEXT NOT NULL,
    join_code      TEXT,
    created_at     BIGINT NOT NULL
);
CREATE INDEX webhook_events_by_time ON webhook_events(created_at);
CREATE TABLE webhook_endpoints (
    endpoint_id  TEXT PRIMARY KEY,
    organization TEXT
);
CREATE TABLE webhook_deliveries (
    endpoint_id     TEXT NOT NULL,
    seq             BIGINT NOT NULL REFERENCES webhook_events(seq) ON DELETE CASCADE,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    delivered_at    BIGINT,
    failed_at       BIGINT,
    last_error      TEXT,
    PRIMARY KEY (endpoint_id, seq)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(endpoint_id, next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE TABLE appointment_reminders (
    appointment_id TEXT NOT NULL REFERENCES appointments(appointment_id),
    offset_ms      BIGINT NOT NULL,
    label          TEXT NOT NULL,
    due_at         BIGINT NOT NULL,
    starts_at      BIGINT NOT NULL,
    PRIMARY KEY (appointment_id, offset_ms)
);
CREATE INDEX appointment_reminders_due ON appointment_reminders(due_at);
CREATE TABLE gatehouse_secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#;

/// The PostgreSQL migrations, oldest first (`pg::migrate` keeps the version in
/// `gatehouse_schema`).
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub const POSTGRES: &[&str] = &[PG_V1_SCHEMA];

#[cfg(test)]
mod tests {
    #[test]
    fn the_migrations_are_valid_and_counted() {
        super::migrations()
            .validate()
            .expect("migrations apply to an empty database");
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        super::migrations().to_latest(&mut conn).unwrap();
        let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(v, super::SCHEMA_VERSION);
    }
}
