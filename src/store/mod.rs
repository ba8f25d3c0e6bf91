//! The embedded store (SQLite): meetings, links and participation events,
//! everything that must survive a restart.
//!
//! One connection behind a mutex: SQLite serialises writers anyway, and every
//! statement here is a short indexed read or write. Single-use redemption is
//! one conditional `UPDATE`, so it stays single-use under concurrency.
//!
//! The methods block (disk, fsync, a busy database): the async server calls
//! them through [`Store::run`], on tokio's blocking pool, never on a runtime
//! thread that serves sockets.
//!
//! Nothing is buffered on our side: every write is its own transaction, committed
//! before the method returns, in WAL mode with `synchronous = FULL` (the commit is
//! on disk, so neither `kill -9` nor a power cut loses it). A crash mid-transaction
//! leaves uncommitted WAL frames that SQLite ignores on the next open. Beside the
//! participation log, `open_attendance` says who is in a call or lobby right now,
//! written in the same transaction as the event that changes it, so after a crash
//! the gateway knows whose admission to honour (see `server::live::LiveMeetings::recover`).
//! An appointment's state follows that attendance in the same transaction
//! (`appointments`), so it is as durable as the log it is derived from.
//!
//! The schema is a list of versioned migrations (`migrations`), applied on open.

use std::path::Path;
use std::sync::{Arc, Mutex};

use gatehouse_signaling::link::{Link, LinkKind};
use gatehouse_signaling::meeting::{Meeting, MeetingSettings};
use gatehouse_signaling::protocol::{ParticipantInfo, ParticipantKind};
use gatehouse_signaling::room::{EventKind, OpenAttendance, ParticipationEvent};
use gatehouse_signaling::{Error, ErrorCode};
use rusqlite::{Connection, OptionalExtension, params};

/// Handle to the database.
pub struct Store {
    conn: Mutex<Connection>,
    /// Every committed change the live queue shows (participation events, appointment
    /// transitions), published after its commit: the queue is pushed from where the
    /// changes happen, never polled (`server::queue`).
    queue: tokio::sync::broadcast::Sender<appointments::QueueChange>,
}

/// Changes a slow queue subscriber may fall behind by before it is sent a fresh snapshot.
const QUEUE_CHANGES: usize = 256;

fn db_err(e: rusqlite::Error) -> Error {
    tracing::error!(error = %e, "store error");
    Error::new(ErrorCode::Internal, "storage error")
}

fn json_err(e: serde_json::Error) -> Error {
    tracing::error!(error = %e, "stored JSON unreadable");
    Error::new(ErrorCode::Internal, "storage error")
}

pub mod appointments;
mod migrations;
pub mod webhooks;

pub use migrations::SCHEMA_VERSION;

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        use anyhow::Context as _;
        Self::open_inner(path).with_context(|| format!("opening the store {}", path.display()))
    }

    fn open_inner(path: &Path) -> anyhow::Result<Store> {
        use anyhow::Context as _;
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit is fsynced before it returns, so what a client was told is
        // done (a redeemed link, an admission) survives a power cut as well as a kill.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // The first read runs SQLite's recovery: a WAL cut short (a torn write) is
        // replayed up to its last whole commit; `quick_check` then refuses a database
        // damaged beyond that.
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        anyhow::ensure!(check == "ok", "the database is damaged: {check}");
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        anyhow::ensure!(
            version <= SCHEMA_VERSION,
            "the database has schema version {version}, newer than this gatehouse ({SCHEMA_VERSION})"
        );
        // All pending migrations in one transaction: an upgrade cut short by a crash
        // leaves the previous version, whole.
        migrations::migrations()
            .to_latest(&mut conn)
            .context("migrating the schema")?;
        Ok(Store {
            conn: Mutex::new(conn),
            queue: tokio::sync::broadcast::channel(QUEUE_CHANGES).0,
        })
    }

    /// Runs `f` with the store on the blocking pool and waits for it without
    /// holding a runtime thread. A panic inside is an `internal` error.
    pub async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, Error> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "store task failed");
                Err(Error::new(ErrorCode::Internal, "storage error"))
            })
    }

    /// The queue's changes from now on, each after its commit.
    pub fn queue_changes(&self) -> tokio::sync::broadcast::Receiver<appointments::QueueChange> {
        self.queue.subscribe()
    }

    /// Publishes committed changes (nobody listening is fine).
    fn published(&self, changes: Vec<appointments::QueueChange>) {
        for c in changes {
            let _ = self.queue.send(c);
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent; keep serving.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert_meeting(&self, m: &Meeting) -> Result<(), Error> {
        Self::insert_meeting_in(&self.conn(), m)
    }

    fn insert_meeting_in(conn: &Connection, m: &Meeting) -> Result<(), Error> {
        let settings = serde_json::to_string(&m.settings).map_err(json_err)?;
        conn
            .execute(
                "INSERT INTO meetings (meeting_id, organization, organizer, settings, created_at, ended_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![m.meeting_id.as_str(), m.organization, m.organizer, settings, m.created_at_ms as i64, m.ended_at_ms.map(|v| v as i64)],
            )
            .map_err(db_err)?;
        Ok(())
    }

    pub fn update_meeting(&self, m: &Meeting) -> Result<(), Error> {
        let settings = serde_json::to_string(&m.settings).map_err(json_err)?;
        self.conn()
            .execute(
                "UPDATE meetings SET settings = ?2, ended_at = ?3 WHERE meeting_id = ?1",
                params![m.meeting_id.as_str(), settings, m.ended_at_ms.map(|v| v as i64)],
            )
            .map_err(db_err)?;
        Ok(())
    }

    fn meeting_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(Meeting, String)> {
        let settings: String = row.get(3)?;
        Ok((
            Meeting {
                meeting_id: row.get::<_, String>(0)?.into(),
                organization: row.get(1)?,
                organizer: row.get(2)?,
                settings: MeetingSettings::default(),
                created_at_ms: row.get::<_, i64>(4)? as u64,
                ended_at_ms: row.get::<_, Option<i64>>(5)?.map(|v| v as u64),
            },
            settings,
        ))
    }

    fn finish_meeting((mut m, settings): (Meeting, String)) -> Result<Meeting, Error> {
        m.settings = serde_json::from_str(&settings).map_err(json_err)?;
        Ok(m)
    }

    pub fn meeting(&self, meeting_id: &str) -> Result<Option<Meeting>, Error> {
        let row = self
            .conn()
            .query_row(
                "SELECT meeting_id, organization, organizer, settings, created_at, ended_at FROM meetings WHERE meeting_id = ?1",
                [meeting_id],
                Self::meeting_from_row,
            )
            .optional()
            .map_err(db_err)?;
        row.map(Self::finish_meeting).transpose()
    }

    /// Meetings of an organisation, newest first.
    pub fn meetings(&self, organization: &str, limit: u32) -> Result<Vec<Meeting>, Error> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT meeting_id, organization, organizer, settings, created_at, ended_at FROM meetings WHERE organization = ?1 ORDER BY created_at DESC LIMIT ?2",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![organization, limit], Self::meeting_from_row)
            .map_err(db_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_err)?;
        rows.into_iter().map(Self::finish_meeting).collect()
    }

    pub fn insert_link(&self, l: &Link) -> Result<(), Error> {
        Self::insert_link_in(&self.conn(), l)
    }

    fn insert_link_in(conn: &Connection, l: &Link) -> Result<(), Error> {
        conn
            .execute(
                "INSERT INTO links (link_id, meeting_id, code, kind, invitee, created_at, expires_at, revoked_at, redemptions) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    l.link_id,
                    l.meeting_id.as_str(),
                    l.code,
                    kind_name(l.kind),
                    l.invitee,
                    l.created_at_ms as i64,
                    l.expires_at_ms.map(|v| v as i64),
                    l.revoked_at_ms.map(|v| v as i64),
                    l.redemptions
                ],
            )
            .map_err(db_err)?;
        Ok(())
    }

    fn link_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Link> {
        let kind: String = row.get(3)?;
        Ok(Link {
            link_id: row.get(0)?,
            meeting_id: row.get::<_, String>(1)?.into(),
            code: row.get(2)?,
            kind: match kind.as_str() {
                "public" => LinkKind::Public,
                "invite" => LinkKind::Invite,
                _ => LinkKind::SingleUse,
            },
            invitee: row.get(4)?,
            created_at_ms: row.get::<_, i64>(5)? as u64,
            expires_at_ms: row.get::<_, Option<i64>>(6)?.map(|v| v as u64),
            revoked_at_ms: row.get::<_, Option<i64>>(7)?.map(|v| v as u64),
            redemptions: row.get(8)?,
        })
    }

    const LINK_COLUMNS: &'static str =
        "link_id, meeting_id, code, kind, invitee, created_at, expires_at, revoked_at, redemptions";

    pub fn link_by_code(&self, code: &str) -> Result<Option<Link>, Error> {
        self.conn()
            .query_row(
                &format!("SELECT {} FROM links WHERE code = ?1", Self::LINK_COLUMNS),
                [code],
                Self::link_from_row,
            )
            .optional()
            .map_err(db_err)
    }

    pub fn link(&self, link_id: &str) -> Result<Option<Link>, Error> {
        self.conn()
            .query_row(
                &format!("SELECT {} FROM links WHERE link_id = ?1", Self::LINK_COLUMNS),
                [link_id],
                Self::link_from_row,
            )
            .optional()
            .map_err(db_err)
    }

    pub fn links_of(&self, meeting_id: &str) -> Result<Vec<Link>, Error> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {} FROM links WHERE meeting_id = ?1 ORDER BY created_at",
                Self::LINK_COLUMNS
            ))
            .map_err(db_err)?;
        stmt.query_map([meeting_id], Self::link_from_row)
            .map_err(db_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_err)
    }

    /// The meeting's public link.
    pub fn public_link(&self, meeting_id: &str) -> Result<Option<Link>, Error> {
        self.conn()
            .query_row(
                &format!(
                    "SELECT {} FROM links WHERE meeting_id = ?1 AND kind = 'public' AND revoked_at IS NULL ORDER BY created_at DESC LIMIT 1",
                    Self::LINK_COLUMNS
                ),
                [meeting_id],
                Self::link_from_row,
            )
            .optional()
            .map_err(db_err)
    }

    /// Counts one redemption. For a single-use link only the first call
    /// succeeds, however many race: the condition is part of the `UPDATE`.
    pub fn count_redemption(&self, link_id: &str) -> Result<(), Error> {
        let changed = self
            .conn()
            .execute(
                "UPDATE links SET redemptions = redemptions + 1 WHERE link_id = ?1 AND revoked_at IS NULL AND (kind != 'single_use' OR redemptions = 0)",
                [link_id],
            )
            .map_err(db_err)?;
        if changed == 1 {
            Ok(())
        } else {
            Err(Error::new(
                ErrorCode::LinkUsed,
                "this single-use link has already been used",
            ))
        }
    }

    /// Revokes a link; revoking twice keeps the first time.
    pub fn revoke_link(&self, link_id: &str, now_ms: u64) -> Result<(), Error> {
        self.conn()
            .execute(
                "UPDATE links SET revoked_at = COALESCE(revoked_at, ?2) WHERE link_id = ?1",
                params![link_id, now_ms as i64],
            )
            .map_err(db_err)?;
        Ok(())
    }

    pub fn record(&self, e: &ParticipationEvent) -> Result<(), Error> {
        self.record_all(std::slice::from_ref(e))
    }

    /// Writes events in one transaction (one fsync: an admission is `admitted` and
    /// `joined` together), each with the attendance it opens or closes.
    pub fn record_all(&self, events: &[ParticipationEvent]) -> Result<(), Error> {
        let mut changes: Vec<appointments::QueueChange> = Vec::new();
        {
            let mut conn = self.conn();
            let tx = conn.transaction().map_err(db_err)?;
            for e in events {
                if let Some(c) = Self::record_in(&tx, e)? {
                    // One change per meeting and batch; the appointment's latest state wins.
                    match changes.iter_mut().find(|old| old.meeting_id == c.meeting_id) {
                        Some(old) => old.merge(c),
                        None => changes.push(c),
                    }
                }
            }
            tx.commit().map_err(db_err)?;
        }
        self.published(changes);
        Ok(())
    }

    /// Writes one event; what the queue sees of it (nothing for a redemption or an
    /// admission alone: the `joined` after it is the change).
    fn record_in(
        tx: &rusqlite::Transaction<'_>,
        e: &ParticipationEvent,
    ) -> Result<Option<appointments::QueueChange>, Error> {
        let detail = serde_json::to_value(&e.event).map_err(json_err)?;
        let name = detail
            .get("event")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_owned();
        let kind = serde_json::to_value(e.kind).map_err(json_err)?;
        let kind = kind.as_str().unwrap_or("guest");
        tx.execute(
            "INSERT INTO participation_events (meeting_id, participant_id, display_name, kind, at_ms, event, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                e.meeting_id.as_str(),
                e.participant_id.as_str(),
                e.display_name,
                kind,
                e.at_ms as i64,
                name,
                detail.to_string()
            ],
        )
        .map_err(db_err)?;
        let open = match e.event {
            EventKind::EnteredLobby => Some(false),
            EventKind::Joined => Some(true),
            EventKind::Denied { .. }
            | EventKind::LobbyTimeout { .. }
            | EventKind::LeftLobby { .. }
            | EventKind::Left { .. } => None,
            // Admission is followed by `joined`; a redemption opens nothing.
            EventKind::Admitted { .. } | EventKind::LinkRedeemed { .. } => return Ok(None),
        };
        match open {
            Some(in_call) => tx.execute(
                "INSERT OR REPLACE INTO open_attendance (meeting_id, participant_id, display_name, kind, in_call, since_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![e.meeting_id.as_str(), e.participant_id.as_str(), e.display_name, kind, in_call, e.at_ms as i64],
            ),
            None => tx.execute(
                "DELETE FROM open_attendance WHERE meeting_id = ?1 AND participant_id = ?2",
                params![e.meeting_id.as_str(), e.participant_id.as_str()],
            ),
        }
        .map_err(db_err)?;
        // An appointment's state follows who is present, in this same transaction.
        let appointment = appointments::presence_changed(tx, e.meeting_id.as_str(), e.at_ms)?;
        Ok(Some(appointments::QueueChange {
            meeting_id: e.meeting_id.to_string(),
            appointment,
        }))
    }

    /// Everyone whose attendance is open (in a call or a lobby), by meeting, oldest
    /// first. After a clean stop there is nobody: every attendance was closed in the log.
    pub fn open_attendance(&self) -> Result<Vec<(String, OpenAttendance)>, Error> {
        self.open_attendance_where(None)
    }

    /// Whoever's attendance of one meeting is open, oldest first (its primary key's prefix).
    pub fn open_attendance_of(&self, meeting_id: &str) -> Result<Vec<OpenAttendance>, Error> {
        Ok(self
            .open_attendance_where(Some(meeting_id))?
            .into_iter()
            .map(|(_, a)| a)
            .collect())
    }

    fn open_attendance_where(&self, meeting_id: Option<&str>) -> Result<Vec<(String, OpenAttendance)>, Error> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT meeting_id, participant_id, display_name, kind, in_call, since_ms FROM open_attendance WHERE ?1 IS NULL OR meeting_id = ?1 ORDER BY meeting_id, since_ms",
            )
            .map_err(db_err)?;
        stmt.query_map([meeting_id], |row| {
            let kind = match row.get::<_, String>(3)?.as_str() {
                "staff" => ParticipantKind::Staff,
                _ => ParticipantKind::Guest,
            };
            Ok((
                row.get::<_, String>(0)?,
                OpenAttendance {
                    participant: ParticipantInfo {
                        participant_id: row.get::<_, String>(1)?.into(),
                        display_name: row.get(2)?,
                        kind,
                        // Only staff can be the organiser, and staff are never resumed.
                        organizer: false,
                    },
                    in_call: row.get(4)?,
                    since_ms: row.get::<_, i64>(5)? as u64,
                },
            ))
        })
        .map_err(db_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err)
    }

    /// A meeting's participation log, oldest first.
    pub fn events_of(&self, meeting_id: &str) -> Result<Vec<ParticipationEvent>, Error> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT meeting_id, participant_id, display_name, kind, at_ms, detail FROM participation_events WHERE meeting_id = ?1 ORDER BY id",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map([meeting_id], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, i64>(4)?,
                    row.get::<_, String>(5)?,
                ))
            })
            .map_err(db_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_err)?;
        rows.into_iter()
            .map(|(meeting_id, participant_id, display_name, kind, at_ms, detail)| {
                Ok(ParticipationEvent {
                    meeting_id: meeting_id.into(),
                    participant_id: participant_id.into(),
                    display_name,
                    kind: serde_json::from_value(serde_json::Value::String(kind)).map_err(json_err)?,
                    at_ms: at_ms as u64,
                    event: serde_json::from_str(&detail).map_err(json_err)?,
                })
            })
            .collect()
    }
}

fn kind_name(kind: LinkKind) -> &'static str {
    match kind {
        LinkKind::Public => "public",
        LinkKind::Invite => "invite",
        LinkKind::SingleUse => "single_use",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> (tempdir::Dir, Store) {
        let dir = tempdir::Dir::new();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        (dir, store)
    }

    mod tempdir {
        /// A directory removed on drop (keeps the dependency list short).
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                let p = std::env::temp_dir().join(format!("gatehouse-store-{}", crate::ids::random_code(12)));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn meeting() -> Meeting {
        Meeting {
            meeting_id: "m_1".into(),
            organization: "acme".into(),
            organizer: "olga".into(),
            settings: MeetingSettings {
                title: "Clinic".into(),
                ..Default::default()
            },
            created_at_ms: 1,
            ended_at_ms: None,
        }
    }

    fn link(id: &str, kind: LinkKind) -> Link {
        Link {
            link_id: id.into(),
            meeting_id: "m_1".into(),
            code: format!("code-{id}"),
            kind,
            invitee: None,
            created_at_ms: 2,
            expires_at_ms: Some(99),
            revoked_at_ms: None,
            redemptions: 0,
        }
    }

    #[test]
    fn meetings_links_and_events_round_trip() {
        let (_d, s) = temp_store();
        let mut m = meeting();
        s.insert_meeting(&m).unwrap();
        m.settings.chat_enabled = false;
        m.ended_at_ms = Some(5);
        s.update_meeting(&m).unwrap();
        assert_eq!(s.meeting("m_1").unwrap().unwrap(), m);
        assert_eq!(s.meetings("acme", 10).unwrap().len(), 1);
        assert!(s.meeting("nope").unwrap().is_none());

        let l = link("l_1", LinkKind::SingleUse);
        s.insert_link(&l).unwrap();
        assert_eq!(s.link_by_code("code-l_1").unwrap().unwrap(), l);
        s.count_redemption("l_1").unwrap();
        assert_eq!(s.count_redemption("l_1").unwrap_err().code, ErrorCode::LinkUsed);
        s.insert_link(&link("l_2", LinkKind::Invite)).unwrap();
        s.count_redemption("l_2").unwrap();
        s.count_redemption("l_2").unwrap();
        s.revoke_link("l_2", 7).unwrap();
        s.revoke_link("l_2", 8).unwrap();
        let l2 = s.link("l_2").unwrap().unwrap();
        assert_eq!((l2.redemptions, l2.revoked_at_ms), (2, Some(7)));
        assert_eq!(s.links_of("m_1").unwrap().len(), 2);

        let ev = ParticipationEvent {
            meeting_id: "m_1".into(),
            participant_id: "p_1".into(),
            display_name: "Ann".into(),
            kind: gatehouse_signaling::protocol::ParticipantKind::Guest,
            at_ms: 9,
            event: EventKind::Admitted {
                wait_ms: 1200,
                by: Some("p_o".into()),
            },
        };
        s.record(&ev).unwrap();
        assert_eq!(s.events_of("m_1").unwrap(), vec![ev]);
    }

    #[test]
    fn a_damaged_or_newer_database_is_refused_with_its_path() {
        let dir = tempdir::Dir::new();
        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
        let err = format!("{:#}", Store::open(&garbage).err().expect("refused"));
        assert!(err.contains("garbage.db"), "{err}");
        let newer = dir.path().join("newer.db");
        drop(Store::open(&newer).unwrap());
        let conn = Connection::open(&newer).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        drop(conn);
        let err = format!("{:#}", Store::open(&newer).err().expect("refused"));
        assert!(err.contains("newer than this gatehouse"), "{err}");
    }

    #[test]
    fn open_attendance_follows_the_log() {
        let (_d, s) = temp_store();
        s.insert_meeting(&meeting()).unwrap();
        let ev = |who: &str, kind: ParticipantKind, at_ms: u64, event: EventKind| ParticipationEvent {
            meeting_id: "m_1".into(),
            participant_id: who.into(),
            display_name: who.to_uppercase(),
            kind,
            at_ms,
            event,
        };
        let (guest, staff) = (ParticipantKind::Guest, ParticipantKind::Staff);
        let ids = |s: &Store| -> Vec<(String, bool, u64)> {
            let open = s.open_attendance().unwrap();
            open.into_iter()
                .map(|(m, a)| {
                    assert_eq!(m, "m_1");
                    (a.participant.participant_id.to_string(), a.in_call, a.since_ms)
                })
                .collect()
        };
        s.record(&ev("p_s", staff, 1, EventKind::Joined)).unwrap();
        s.record(&ev("p_a", guest, 2, EventKind::EnteredLobby)).unwrap();
        s.record(&ev("p_b", guest, 3, EventKind::EnteredLobby)).unwrap();
        assert_eq!(
            ids(&s),
            vec![
                ("p_s".into(), true, 1),
                ("p_a".into(), false, 2),
                ("p_b".into(), false, 3)
            ]
        );
        let admitted = EventKind::Admitted { wait_ms: 2, by: None };
        s.record_all(&[ev("p_a", guest, 4, admitted), ev("p_a", guest, 4, EventKind::Joined)])
            .unwrap();
        s.record(&ev(
            "p_b",
            guest,
            5,
            EventKind::Denied {
                wait_ms: 2,
                reason: None,
            },
        ))
        .unwrap();
        assert_eq!(ids(&s), vec![("p_s".into(), true, 1), ("p_a".into(), true, 4)]);
        let open = s.open_attendance().unwrap();
        assert_eq!(open[1].1.participant.kind, guest);
        assert_eq!(open[0].1.participant.kind, staff);
        let of_m1: Vec<_> = open.iter().map(|(_, a)| a.clone()).collect();
        assert_eq!(s.open_attendance_of("m_1").unwrap(), of_m1, "one meeting's, by its key");
        assert!(s.open_attendance_of("m_other").unwrap().is_empty());
        let left = EventKind::Left {
            reason: gatehouse_signaling::protocol::LeaveReason::Left,
            in_call_ms: 5,
        };
        s.record(&ev("p_s", staff, 6, left.clone())).unwrap();
        s.record(&ev("p_a", guest, 6, left)).unwrap();
        assert!(ids(&s).is_empty());
        assert_eq!(s.events_of("m_1").unwrap().len(), 8);
    }
}
