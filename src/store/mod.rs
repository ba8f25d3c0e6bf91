//! The store: meetings, links and participation events, everything that must survive a
//! restart. SQLite in the data directory by default (one node, nothing to run beside it);
//! PostgreSQL with `--database-url`, where the nodes of a cluster share their records
//! (docs/ARCHITECTURE.md, "Several nodes"). The methods are the same on both: their SQL is
//! written once against a small seam (`db`: a statement, owned rows, a transaction), and
//! `pg` carries it to PostgreSQL.
//!
//! SQLite: one connection behind a mutex: SQLite serialises writers anyway, and every
//! statement here is a short indexed read or write. PostgreSQL: a few connections per node
//! (`pg`). Single-use redemption is one conditional `UPDATE` on both, so it stays
//! single-use under concurrency, across nodes too.
//!
//! The methods block (disk, fsync, a busy database, the network): the async server calls
//! them through [`Store::run`], on tokio's blocking pool, never on a runtime
//! thread that serves sockets.
//!
//! Nothing is buffered on our side: every write is its own transaction, committed
//! before the method returns, in WAL mode with `synchronous = FULL` (the commit is
//! on disk, so neither `kill -9` nor a power cut loses it; PostgreSQL's default
//! `synchronous_commit = on` gives the same). A crash mid-transaction
//! leaves uncommitted WAL frames that SQLite ignores on the next open. Beside the
//! participation log, `open_attendance` says who is in a call or lobby right now,
//! written in the same transaction as the event that changes it, so after a crash
//! the gateway knows whose admission to honour (see `server::live::LiveMeetings::recover`).
//! An appointment's state follows that attendance in the same transaction
//! (`appointments`), so it is as durable as the log it is derived from.
//!
//! The schema is a list of versioned migrations (`migrations`), applied on open; the
//! PostgreSQL schema is its own list beside the SQLite one.

use std::path::Path;
use std::sync::{Arc, Mutex};

use gatehouse_signaling::link::{Link, LinkKind};
use gatehouse_signaling::meeting::Meeting;
use gatehouse_signaling::protocol::{ParticipantInfo, ParticipantKind};
use gatehouse_signaling::room::{EventKind, OpenAttendance, ParticipationEvent};
use gatehouse_signaling::{Error, ErrorCode};
use rusqlite::Connection;

use db::{Db, Row, args};
pub use db::{Dialect, db_err};

/// Handle to the database.
pub struct Store {
    backend: Backend,
    /// Every committed change the live queue shows (participation events, appointment
    /// transitions), published after its commit: the queue is pushed from where the
    /// changes happen, never polled (`server::queue`).
    queue: tokio::sync::broadcast::Sender<appointments::QueueChange>,
    /// The other nodes' changes, in a cluster (`share_queue_changes`).
    shared: Shared,
}

/// What a store of a cluster needs to announce its changes to the other nodes and hear
/// theirs (`notice`, `listen`).
struct Shared {
    /// Set once the node shares its changes: every change is then announced in its commit.
    on: std::sync::atomic::AtomicBool,
    /// This store's notices' origin, drawn at every start.
    origin: String,
    /// The next notice's number.
    seq: std::sync::atomic::AtomicU64,
    /// Bumped when the other nodes' notices may have been missed (the listening connection
    /// was lost and made again): a subscriber then reads the whole queue again.
    resyncs: tokio::sync::watch::Sender<u64>,
}

/// Where the records are: one node's SQLite file, or the PostgreSQL of a cluster.
enum Backend {
    Sqlite(Mutex<Connection>),
    #[cfg(feature = "cluster")]
    Postgres(pg::Pool),
}

/// Changes a slow queue subscriber may fall behind by before it is sent a fresh snapshot.
const QUEUE_CHANGES: usize = 256;

fn json_err(e: serde_json::Error) -> Error {
    tracing::error!(error = %e, "stored JSON unreadable");
    Error::new(ErrorCode::Internal, "storage error")
}

pub mod appointments;
pub mod db;
#[cfg(feature = "cluster")]
mod listen;
mod migrations;
pub mod notice;
#[cfg(feature = "cluster")]
mod pg;
#[cfg(feature = "cluster")]
mod pg_tls;
#[cfg(all(feature = "cluster", target_os = "linux"))]
#[doc(hidden)]
pub mod testing;
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
        Ok(Store::with_backend(Backend::Sqlite(Mutex::new(conn))))
    }

    fn with_backend(backend: Backend) -> Store {
        Store {
            backend,
            queue: tokio::sync::broadcast::channel(QUEUE_CHANGES).0,
            shared: Shared {
                on: false.into(),
                origin: format!("s-{}", crate::ids::random_code(10)),
                seq: 0.into(),
                resyncs: tokio::sync::watch::channel(0).0,
            },
        }
    }

    /// Connects to the PostgreSQL of a cluster (`postgres://…`) and migrates its schema.
    /// Blocks: call it off the runtime's threads.
    #[cfg(feature = "cluster")]
    pub fn open_postgres(url: &str) -> anyhow::Result<Store> {
        use anyhow::Context as _;
        let pool = pg::Pool::connect(url).context("connecting to the database (database_url)")?;
        pg::migrate(&pool).context("migrating the PostgreSQL schema")?;
        Ok(Store::with_backend(Backend::Postgres(pool)))
    }

    /// Which database this store is on.
    pub fn dialect(&self) -> Dialect {
        match &self.backend {
            Backend::Sqlite(_) => Dialect::Sqlite,
            #[cfg(feature = "cluster")]
            Backend::Postgres(_) => Dialect::Postgres,
        }
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

    /// Bumped whenever the other nodes' changes may have been missed: the queue's whole
    /// state is to be read again (never bumped on a node on its own).
    pub fn queue_resyncs(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.resyncs.subscribe()
    }

    /// Runs `f` in one transaction and publishes the queue changes it returns once that has
    /// committed. A store sharing its changes (`share_queue_changes`) also announces them to
    /// the other nodes, in the same transaction: PostgreSQL delivers a `NOTIFY` when, and only
    /// if, its transaction commits, so the others hear of exactly the committed changes.
    fn tx_changing<T>(
        &self,
        f: impl FnOnce(&mut dyn Db) -> Result<(T, Vec<appointments::QueueChange>), Error>,
    ) -> Result<T, Error> {
        let (out, changes) = self.tx(|tx| {
            let (out, changes) = f(tx)?;
            if self.shared.on.load(std::sync::atomic::Ordering::Relaxed) && tx.dialect() == Dialect::Postgres {
                for c in &changes {
                    let n = notice::Notice {
                        origin: self.shared.origin.clone(),
                        seq: self.shared.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                        meeting_id: c.meeting_id.clone(),
                        appointment_id: c.appointment.as_ref().map(|a| a.record.appointment_id.clone()),
                        transitions: c
                            .appointment
                            .as_ref()
                            .map(|a| a.transitions.clone())
                            .unwrap_or_default(),
                    };
                    tx.execute("SELECT pg_notify(?1, ?2)", args![notice::CHANNEL, n.to_payload()])?;
                }
            }
            Ok((out, changes))
        })?;
        self.published(changes);
        Ok(out)
    }

    fn sqlite(conn: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent; keep serving.
        conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the database outside a transaction (each statement commits by itself).
    fn with<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T, Error>) -> Result<T, Error> {
        match &self.backend {
            Backend::Sqlite(conn) => f(&mut db::Sqlite(&Self::sqlite(conn))),
            #[cfg(feature = "cluster")]
            Backend::Postgres(pool) => pool.with(f),
        }
    }

    /// Runs `f` in one transaction: committed if it returns `Ok`, rolled back otherwise.
    fn tx<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T, Error>) -> Result<T, Error> {
        match &self.backend {
            Backend::Sqlite(conn) => {
                let mut conn = Self::sqlite(conn);
                let tx = conn.transaction().map_err(db_err)?;
                let out = f(&mut db::Sqlite(&tx))?;
                tx.commit().map_err(db_err)?;
                Ok(out)
            }
            #[cfg(feature = "cluster")]
            Backend::Postgres(pool) => pool.tx(f),
        }
    }

    /// The secret named `name`, made by `make` and stored if there is none yet: the first
    /// caller's wins, however many race (`ON CONFLICT DO NOTHING`, then read back). Only a
    /// PostgreSQL store keeps secrets (a single node keeps its key in its data directory).
    pub fn shared_secret(&self, name: &str, make: impl FnOnce() -> String) -> Result<String, Error> {
        if self.dialect() != Dialect::Postgres {
            return Err(Error::new(ErrorCode::Internal, "only a shared store keeps secrets"));
        }
        self.with(|db| {
            if let Some(row) = db.query_opt("SELECT value FROM gatehouse_secrets WHERE name = ?1", args![name])? {
                return row.text(0);
            }
            let made = make();
            db.execute(
                "INSERT INTO gatehouse_secrets (name, value) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                args![name, made],
            )?;
            db.query_one("SELECT value FROM gatehouse_secrets WHERE name = ?1", args![name])?
                .text(0)
        })
    }

    pub fn insert_meeting(&self, m: &Meeting) -> Result<(), Error> {
        self.with(|db| Self::insert_meeting_in(db, m))
    }

    fn insert_meeting_in(db: &mut dyn Db, m: &Meeting) -> Result<(), Error> {
        let settings = serde_json::to_string(&m.settings).map_err(json_err)?;
        db.execute(
            "INSERT INTO meetings (meeting_id, organization, organizer, settings, created_at, ended_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            args![m.meeting_id.as_str(), m.organization, m.organizer, settings, m.created_at_ms as i64, m.ended_at_ms.map(|v| v as i64)],
        )?;
        Ok(())
    }

    pub fn update_meeting(&self, m: &Meeting) -> Result<(), Error> {
        let settings = serde_json::to_string(&m.settings).map_err(json_err)?;
        self.with(|db| {
            db.execute(
                "UPDATE meetings SET settings = ?2, ended_at = ?3 WHERE meeting_id = ?1",
                args![m.meeting_id.as_str(), settings, m.ended_at_ms.map(|v| v as i64)],
            )
        })?;
        Ok(())
    }

    const MEETING_COLUMNS: &'static str = "meeting_id, organization, organizer, settings, created_at, ended_at";

    fn meeting_from_row(row: &Row) -> Result<Meeting, Error> {
        Ok(Meeting {
            meeting_id: row.text(0)?.into(),
            organization: row.text(1)?,
            organizer: row.text(2)?,
            settings: serde_json::from_str(&row.text(3)?).map_err(json_err)?,
            created_at_ms: row.u64(4)?,
            ended_at_ms: row.opt_u64(5)?,
        })
    }

    pub fn meeting(&self, meeting_id: &str) -> Result<Option<Meeting>, Error> {
        let sql = format!("SELECT {} FROM meetings WHERE meeting_id = ?1", Self::MEETING_COLUMNS);
        self.with(|db| db.query_opt(&sql, args![meeting_id]))?
            .as_ref()
            .map(Self::meeting_from_row)
            .transpose()
    }

    /// Meetings of an organisation, newest first.
    pub fn meetings(&self, organization: &str, limit: u32) -> Result<Vec<Meeting>, Error> {
        let sql = format!(
            "SELECT {} FROM meetings WHERE organization = ?1 ORDER BY created_at DESC LIMIT ?2",
            Self::MEETING_COLUMNS
        );
        self.with(|db| db.query(&sql, args![organization, limit]))?
            .iter()
            .map(Self::meeting_from_row)
            .collect()
    }

    pub fn insert_link(&self, l: &Link) -> Result<(), Error> {
        self.with(|db| Self::insert_link_in(db, l))
    }

    fn insert_link_in(db: &mut dyn Db, l: &Link) -> Result<(), Error> {
        db.execute(
            "INSERT INTO links (link_id, meeting_id, code, kind, invitee, created_at, expires_at, revoked_at, redemptions) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            args![
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
        )?;
        Ok(())
    }

    fn link_from_row(row: &Row) -> Result<Link, Error> {
        Ok(Link {
            link_id: row.text(0)?,
            meeting_id: row.text(1)?.into(),
            code: row.text(2)?,
            kind: match row.text(3)?.as_str() {
                "public" => LinkKind::Public,
                "invite" => LinkKind::Invite,
                _ => LinkKind::SingleUse,
            },
            invitee: row.opt_text(4)?,
            created_at_ms: row.u64(5)?,
            expires_at_ms: row.opt_u64(6)?,
            revoked_at_ms: row.opt_u64(7)?,
            redemptions: u32::try_from(row.u64(8)?).unwrap_or(u32::MAX),
        })
    }

    const LINK_COLUMNS: &'static str =
        "link_id, meeting_id, code, kind, invitee, created_at, expires_at, revoked_at, redemptions";

    fn links_where(&self, condition: &str, value: &str) -> Result<Vec<Link>, Error> {
        let sql = format!("SELECT {} FROM links WHERE {condition}", Self::LINK_COLUMNS);
        self.with(|db| db.query(&sql, args![value]))?
            .iter()
            .map(Self::link_from_row)
            .collect()
    }

    pub fn link_by_code(&self, code: &str) -> Result<Option<Link>, Error> {
        Ok(self.links_where("code = ?1", code)?.into_iter().next())
    }

    pub fn link(&self, link_id: &str) -> Result<Option<Link>, Error> {
        Ok(self.links_where("link_id = ?1", link_id)?.into_iter().next())
    }

    pub fn links_of(&self, meeting_id: &str) -> Result<Vec<Link>, Error> {
        self.links_where("meeting_id = ?1 ORDER BY created_at, link_id", meeting_id)
    }

    /// The meeting's public link.
    pub fn public_link(&self, meeting_id: &str) -> Result<Option<Link>, Error> {
        Ok(self
            .links_where(
                "meeting_id = ?1 AND kind = 'public' AND revoked_at IS NULL ORDER BY created_at DESC LIMIT 1",
                meeting_id,
            )?
            .into_iter()
            .next())
    }

    /// Counts one redemption. For a single-use link only the first call
    /// succeeds, however many race: the condition is part of the `UPDATE` (on
    /// PostgreSQL a racing `UPDATE` waits for the first one's commit, then finds its
    /// condition false: still one statement, on any number of nodes).
    pub fn count_redemption(&self, link_id: &str) -> Result<(), Error> {
        let changed = self.with(|db| {
            db.execute(
                "UPDATE links SET redemptions = redemptions + 1 WHERE link_id = ?1 AND revoked_at IS NULL AND (kind != 'single_use' OR redemptions = 0)",
                args![link_id],
            )
        })?;
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
        self.with(|db| {
            db.execute(
                "UPDATE links SET revoked_at = COALESCE(revoked_at, ?2) WHERE link_id = ?1",
                args![link_id, now_ms as i64],
            )
        })?;
        Ok(())
    }

    pub fn record(&self, e: &ParticipationEvent) -> Result<(), Error> {
        self.record_all(std::slice::from_ref(e))
    }

    /// Writes events in one transaction (one fsync: an admission is `admitted` and
    /// `joined` together), each with the attendance it opens or closes.
    pub fn record_all(&self, events: &[ParticipationEvent]) -> Result<(), Error> {
        self.tx_changing(|tx| {
            let mut changes: Vec<appointments::QueueChange> = Vec::new();
            for e in events {
                if let Some(c) = Self::record_in(tx, e)? {
                    // One change per meeting and batch; the appointment's latest state wins.
                    match changes.iter_mut().find(|old| old.meeting_id == c.meeting_id) {
                        Some(old) => old.merge(c),
                        None => changes.push(c),
                    }
                }
            }
            Ok(((), changes))
        })
    }

    /// Writes one event; what the queue sees of it (nothing for a redemption or an
    /// admission alone: the `joined` after it is the change).
    fn record_in(tx: &mut dyn Db, e: &ParticipationEvent) -> Result<Option<appointments::QueueChange>, Error> {
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
            args![
                e.meeting_id.as_str(),
                e.participant_id.as_str(),
                e.display_name,
                kind,
                e.at_ms as i64,
                name,
                detail.to_string()
            ],
        )?;
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
                "INSERT INTO open_attendance (meeting_id, participant_id, display_name, kind, in_call, since_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (meeting_id, participant_id) DO UPDATE SET display_name = excluded.display_name, kind = excluded.kind, in_call = excluded.in_call, since_ms = excluded.since_ms",
                args![e.meeting_id.as_str(), e.participant_id.as_str(), e.display_name, kind, in_call, e.at_ms as i64],
            ),
            None => tx.execute(
                "DELETE FROM open_attendance WHERE meeting_id = ?1 AND participant_id = ?2",
                args![e.meeting_id.as_str(), e.participant_id.as_str()],
            ),
        }?;
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

    /// The meetings of `org` with someone's attendance open (in a call or a lobby, or a seat
    /// held): in a cluster's store, those live on any node (or on one that died, until they
    /// are taken over). Scans the open attendances, which are only the people present now.
    pub fn attended_meetings(&self, org: &str) -> Result<Vec<String>, Error> {
        let rows = self.with(|db| {
            db.query(
                "SELECT DISTINCT o.meeting_id FROM open_attendance o JOIN meetings m ON m.meeting_id = o.meeting_id WHERE m.organization = ?1 ORDER BY o.meeting_id",
                args![org],
            )
        })?;
        rows.iter().map(|r| r.text(0)).collect()
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
        let rows = self.with(|db| {
            db.query(
                "SELECT meeting_id, participant_id, display_name, kind, in_call, since_ms FROM open_attendance WHERE CAST(?1 AS TEXT) IS NULL OR meeting_id = ?1 ORDER BY meeting_id, since_ms, participant_id",
                args![meeting_id],
            )
        })?;
        rows.iter()
            .map(|row| {
                let kind = match row.text(3)?.as_str() {
                    "staff" => ParticipantKind::Staff,
                    _ => ParticipantKind::Guest,
                };
                Ok((
                    row.text(0)?,
                    OpenAttendance {
                        participant: ParticipantInfo {
                            participant_id: row.text(1)?.into(),
                            display_name: row.text(2)?,
                            kind,
                            // Only staff can be the organiser, and staff are never resumed.
                            organizer: false,
                        },
                        in_call: row.bool(4)?,
                        since_ms: row.u64(5)?,
                    },
                ))
            })
            .collect()
    }

    /// A meeting's participation log, oldest first.
    pub fn events_of(&self, meeting_id: &str) -> Result<Vec<ParticipationEvent>, Error> {
        let rows = self.with(|db| {
            db.query(
                "SELECT meeting_id, participant_id, display_name, kind, at_ms, detail FROM participation_events WHERE meeting_id = ?1 ORDER BY id",
                args![meeting_id],
            )
        })?;
        rows.iter()
            .map(|row| {
                Ok(ParticipationEvent {
                    meeting_id: row.text(0)?.into(),
                    participant_id: row.text(1)?.into(),
                    display_name: row.text(2)?,
                    kind: serde_json::from_value(serde_json::Value::String(row.text(3)?)).map_err(json_err)?,
                    at_ms: row.u64(4)?,
                    event: serde_json::from_str(&row.text(5)?).map_err(json_err)?,
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
    use gatehouse_signaling::meeting::MeetingSettings;

    fn temp_store() -> (tempdir::Dir, Store) {
        let dir = tempdir::Dir::new();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        (dir, store)
    }

    /// Runs `test` on a fresh SQLite store, then on a fresh PostgreSQL one (a throwaway
    /// cluster; skipped, saying so, where PostgreSQL is not installed and
    /// `GATEHOUSE_REQUIRE_POSTGRES` is unset).
    fn on_both(test: impl Fn(&Store)) {
        let (_d, s) = temp_store();
        test(&s);
        #[cfg(all(feature = "cluster", target_os = "linux"))]
        if let Some(pg) = testing::TestPostgres::start() {
            let s = Store::open_postgres(&pg.url()).unwrap();
            assert_eq!(s.dialect(), Dialect::Postgres);
            test(&s);
        }
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
        on_both(meetings_links_and_events_round_trip_on);
    }

    fn meetings_links_and_events_round_trip_on(s: &Store) {
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
        on_both(open_attendance_follows_the_log_on);
    }

    fn open_attendance_follows_the_log_on(s: &Store) {
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
            ids(s),
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
        assert_eq!(ids(s), vec![("p_s".into(), true, 1), ("p_a".into(), true, 4)]);
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
        assert!(ids(s).is_empty());
        assert_eq!(s.events_of("m_1").unwrap().len(), 8);
    }
    /// Every appointment and webhook method of the store, on both databases: these are
    /// where the dialects differ most (upserts, `RETURNING`, booleans, untyped parameters,
    /// row and advisory locks).
    #[test]
    fn appointments_and_the_webhook_outbox_on_both() {
        on_both(appointments_and_the_webhook_outbox_on);
    }

    fn appointments_and_the_webhook_outbox_on(s: &Store) {
        use crate::appointments::slots::WorkingHoursSpec;
        use crate::appointments::{AppointmentType, Department, PrivateLink, TypeSettings};
        use appointments::NewBooking;
        use gatehouse_signaling::appointment::{AppointmentState, CancelledBy, Input};
        const HOUR: u64 = 3600 * 1000;
        let now = 1_767_225_600_000; // 2026-01-01T00:00Z, a Thursday

        // Departments: unique names, members, rename onto a taken name refused.
        let dept = |id: &str, name: &str| Department {
            department_id: id.into(),
            organization: "acme".into(),
            name: name.into(),
            staff: vec![],
            created_at_ms: now,
        };
        s.insert_department(&dept("d_1", "Clinic")).unwrap();
        s.insert_department(&dept("d_2", "Lab")).unwrap();
        assert_eq!(
            s.insert_department(&dept("d_3", "Clinic")).unwrap_err().code,
            ErrorCode::BadRequest
        );
        s.set_member("d_1", "olga", true).unwrap();
        s.set_member("d_1", "olga", true).unwrap();
        s.set_member("d_1", "pete", true).unwrap();
        s.set_member("d_1", "pete", false).unwrap();
        assert_eq!(s.department("acme", "d_1").unwrap().unwrap().staff, vec!["olga"]);
        assert!(!s.rename_department("acme", "d_2", "Clinic").unwrap(), "name taken");
        assert!(s.rename_department("acme", "d_2", "Tests").unwrap());
        let names: Vec<String> = s.departments("acme").unwrap().into_iter().map(|d| d.name).collect();
        assert_eq!(names, vec!["Clinic", "Tests"]);
        assert!(s.delete_department("acme", "d_2").unwrap());
        assert!(!s.delete_department("acme", "d_2").unwrap());

        // Working hours: every day, all day (UTC); written twice, the second wins.
        let mut spec: WorkingHoursSpec = serde_json::from_value(serde_json::json!({
            "time_zone": "UTC",
            "weekly": {"mon": [["09:00", "17:00"]]}
        }))
        .unwrap();
        s.put_working_hours("acme", "olga", &spec, now).unwrap();
        for day in ["mon", "tue", "wed", "thu", "fri", "sat", "sun"] {
            spec.weekly.insert(day.into(), vec![["00:00".into(), "24:00".into()]]);
        }
        s.put_working_hours("acme", "olga", &spec, now).unwrap();
        assert_eq!(s.working_hours("acme", "olga").unwrap(), Some(spec));
        assert_eq!(s.working_hours("acme", "nobody").unwrap(), None);

        // Types: a public one and a private single-use one.
        let settings = TypeSettings {
            title: "Consultation".into(),
            staff: vec!["olga".into()],
            reminders: vec!["30m".into()],
            contact_retention_days: 1,
            ..TypeSettings::default()
        };
        let public = AppointmentType {
            type_id: "t_1".into(),
            organization: "acme".into(),
            settings: settings.clone(),
            private_link: None,
            created_at_ms: now,
            archived_at_ms: None,
        };
        s.insert_type(&public).unwrap();
        let private = AppointmentType {
            type_id: "t_2".into(),
            settings: TypeSettings {
                public: false,
                single_use_link: true,
                ..settings.clone()
            },
            private_link: Some(PrivateLink {
                code: "priv-1".into(),
                expires_at_ms: now + 48 * HOUR,
                used_at_ms: None,
            }),
            created_at_ms: now + 1,
            ..public.clone()
        };
        s.insert_type(&private).unwrap();
        assert_eq!(s.appointment_type("t_1").unwrap(), Some(public.clone()));
        assert_eq!(s.type_by_private_code("priv-1").unwrap(), Some(private.clone()));
        assert_eq!(s.types("acme").unwrap().len(), 2);
        let retitled = TypeSettings {
            title: "Visit".into(),
            ..settings.clone()
        };
        let private_link = PrivateLink {
            code: "priv-0".into(),
            expires_at_ms: now + HOUR,
            used_at_ms: None,
        };
        s.update_type("t_1", &retitled, Some(&private_link)).unwrap();
        let t1 = s.appointment_type("t_1").unwrap().unwrap();
        assert_eq!(
            (t1.settings.title.as_str(), t1.private_link),
            ("Visit", Some(private_link))
        );
        s.archive_type("t_1", now + 5).unwrap();
        s.archive_type("t_1", now + 6).unwrap();
        assert_eq!(
            s.appointment_type("t_1").unwrap().unwrap().archived_at_ms,
            Some(now + 5)
        );
        let renewed = PrivateLink {
            code: "priv-2".into(),
            expires_at_ms: now + 72 * HOUR,
            used_at_ms: None,
        };
        s.set_private_link("t_2", &renewed).unwrap();
        assert!(
            s.type_by_private_code("priv-1").unwrap().is_none(),
            "the old code stops working"
        );

        // One webhook endpoint for every organisation.
        s.sync_webhook_endpoints(&[("hook".into(), None)], now).unwrap();

        // Bookings: the slot once, the single-use private link once.
        let start = now + 10 * HOUR;
        let booking = |id: &str, t: &AppointmentType, code: Option<&str>, starts: u64| NewBooking {
            appointment_id: id.into(),
            appointment_type: t.clone(),
            via_private_code: code.map(str::to_owned),
            candidates: vec!["olga".into()],
            within_hours: true,
            starts_at_ms: Some(starts),
            guest_name: "Ann".into(),
            guest_contact: Some("ann@example.org".into()),
            manage_code: format!("manage-{id}"),
            meeting: Meeting {
                meeting_id: format!("m_{id}").into(),
                ..meeting()
            },
            link: Link {
                meeting_id: format!("m_{id}").into(),
                ..link(&format!("l_{id}"), LinkKind::SingleUse)
            },
            now_ms: now,
        };
        let t2 = s.appointment_type("t_2").unwrap().unwrap();
        let a = s.book(booking("a_1", &t2, Some("priv-2"), start)).unwrap();
        assert_eq!(
            (a.staff.as_str(), a.machine.state),
            ("olga", AppointmentState::Scheduled)
        );
        assert_eq!(
            s.book(booking("a_2", &public, None, start + 10 * 60_000))
                .unwrap_err()
                .code,
            ErrorCode::SlotTaken,
            "overlaps a_1"
        );
        assert_eq!(
            s.book(booking("a_3", &t2, Some("priv-2"), start + 5 * HOUR))
                .unwrap_err()
                .code,
            ErrorCode::LinkUsed
        );
        let b = s.book(booking("a_4", &public, None, start + 2 * HOUR)).unwrap();
        assert_eq!(s.appointment("a_1").unwrap(), Some(a.clone()));
        assert_eq!(s.appointment_by_manage_code("manage-a_4").unwrap(), Some(b.clone()));
        assert_eq!(s.appointment_by_meeting("m_a_1").unwrap(), Some(a.clone()));
        assert_eq!(s.transitions("a_1").unwrap().len(), 1);
        assert_eq!(
            s.busy("acme", "olga", now, now + 24 * HOUR).unwrap(),
            vec![
                (start, start + 30 * 60 * 1000),
                (start + 2 * HOUR, start + 2 * HOUR + 30 * 60 * 1000)
            ]
        );
        let between = |dept: Option<&str>, staff: Option<&str>| {
            s.appointments_between("acme", dept, staff, now, now + 24 * HOUR)
                .unwrap()
                .len()
        };
        assert_eq!(
            (
                between(None, None),
                between(None, Some("olga")),
                between(Some("d_1"), None)
            ),
            (2, 2, 0)
        );

        // The booked events are due at the endpoint; delivering one marks it.
        let due = s.due_deliveries("hook", now, 10).unwrap();
        assert_eq!(due.len(), 2, "{due:?}");
        assert_eq!(due[0].event_type, "appointment.booked");
        s.delivery_attempted("hook", due[0].seq, &webhooks::Attempt::Delivered, now)
            .unwrap();
        s.delivery_attempted(
            "hook",
            due[1].seq,
            &webhooks::Attempt::Retry {
                error: "503".into(),
                next_at_ms: now + 1000,
            },
            now,
        )
        .unwrap();
        assert_eq!(
            s.delivery_attempted("hook", 999_999, &webhooks::Attempt::Delivered, now)
                .unwrap_err()
                .code,
            ErrorCode::NotFound
        );
        assert_eq!(s.due_deliveries("hook", now, 10).unwrap().len(), 0);
        assert_eq!(s.due_deliveries("hook", now + 1000, 10).unwrap().len(), 1);
        let statuses = s.webhook_deliveries("acme", 10).unwrap();
        assert_eq!(statuses.len(), 2);
        assert!(statuses.iter().any(|d| d.delivered_at_ms == Some(now)));
        assert!(statuses.iter().any(|d| d.last_error.as_deref() == Some("503")));

        // A manual reminder goes to the one endpoint.
        let (event_id, endpoints) = s.send_reminder_now("a_4", now).unwrap();
        assert!(event_id.starts_with("evt"), "{event_id}");
        assert_eq!(endpoints, 1);

        // The guest arrives: the appointment follows the log in the same transaction.
        let guest = ParticipationEvent {
            meeting_id: "m_a_1".into(),
            participant_id: "p_g".into(),
            display_name: "Ann".into(),
            kind: ParticipantKind::Guest,
            at_ms: start - 60_000,
            event: EventKind::EnteredLobby,
        };
        let mut queue = s.queue_changes();
        s.record(&guest).unwrap();
        let a = s.appointment("a_1").unwrap().unwrap();
        assert_eq!(a.machine.state, AppointmentState::Waiting);
        let change = queue.try_recv().expect("the change is published after its commit");
        assert_eq!(change.meeting_id, "m_a_1");
        assert_eq!(
            change.appointment.expect("an appointment's").record.machine.state,
            AppointmentState::Waiting
        );
        let (queued, _service) = s.queue_of("acme", None, "olga", now).unwrap();
        assert_eq!(
            queued.iter().map(|q| q.appointment_id.as_str()).collect::<Vec<_>>(),
            vec!["a_1"]
        );

        // Staff joins and serves; the guest leaves: completed, with the analytics columns.
        let staff = ParticipationEvent {
            participant_id: "p_o".into(),
            display_name: "Olga".into(),
            kind: ParticipantKind::Staff,
            at_ms: start + 60_000,
            event: EventKind::Joined,
            ..guest.clone()
        };
        let admitted = ParticipationEvent {
            at_ms: start + 120_000,
            event: EventKind::Admitted {
                wait_ms: 180_000,
                by: Some("p_o".into()),
            },
            ..guest.clone()
        };
        let joined = ParticipationEvent {
            event: EventKind::Joined,
            ..admitted.clone()
        };
        s.record(&staff).unwrap();
        s.record_all(&[admitted, joined]).unwrap();
        assert_eq!(
            s.appointment("a_1").unwrap().unwrap().machine.state,
            AppointmentState::InProgress
        );
        let left = |e: &ParticipationEvent, at_ms: u64| ParticipationEvent {
            at_ms,
            event: EventKind::Left {
                reason: gatehouse_signaling::protocol::LeaveReason::Left,
                in_call_ms: 1,
            },
            ..e.clone()
        };
        s.record(&left(&guest, start + 20 * 60_000)).unwrap();
        s.record(&left(&staff, start + 21 * 60_000)).unwrap();
        assert_eq!(
            s.appointment("a_1").unwrap().unwrap().machine.state,
            AppointmentState::Completed
        );
        let facts = s
            .analytics_facts("acme", None, Some("olga"), now, now + 24 * HOUR)
            .unwrap();
        let served = facts.iter().find(|f| f.duration_ms.is_some()).expect("a served one");
        assert_eq!(
            (served.lobby_wait_ms, served.duration_ms),
            (Some(180_000), Some(18 * 60_000))
        );
        assert!(facts.iter().all(|f| !f.on_demand));
        assert_eq!(
            s.analytics_facts("acme", Some("d_1"), None, now, now + 24 * HOUR)
                .unwrap()
                .len(),
            0
        );
        let (_, service) = s.queue_of("acme", None, "olga", start + HOUR).unwrap();
        assert_eq!(service, vec![18 * 60_000]);

        // Reschedule into a taken slot is refused; into a free one moves link and meeting.
        let resched = |starts_at_ms: u64| Input::Reschedule {
            starts_at_ms,
            duration_ms: 30 * 60 * 1000,
        };
        assert_eq!(
            s.apply_to_appointment("a_4", resched(start), true, now)
                .unwrap_err()
                .code,
            ErrorCode::SlotTaken
        );
        let (b, _) = s
            .apply_to_appointment("a_4", resched(start + 4 * HOUR), true, now)
            .unwrap();
        assert_eq!(b.machine.starts_at_ms, Some(start + 4 * HOUR));
        let m = s.meeting("m_a_4").unwrap().unwrap();
        assert_eq!(m.settings.scheduled_start_ms, Some(start + 4 * HOUR));

        // Time passes: the reminder 30 minutes before a_4 is sent once; then a no-show.
        assert_eq!(
            s.tick_appointments(start + 4 * HOUR - 30 * 60_000).unwrap(),
            1,
            "the reminder"
        );
        assert_eq!(
            s.tick_appointments(start + 4 * HOUR - 30 * 60_000).unwrap(),
            0,
            "sent once"
        );
        let written = s.tick_appointments(start + 6 * HOUR).unwrap();
        assert!(written >= 1, "no-show of a_4: {written}");
        assert_eq!(
            s.appointment("a_4").unwrap().unwrap().machine.state,
            AppointmentState::NoShow
        );
        assert_eq!(
            s.apply_to_appointment("nope", Input::Cancel(CancelledBy::Staff), false, now)
                .unwrap_err()
                .code,
            ErrorCode::NotFound
        );

        // Contacts are erased a day after the end; the rest stays.
        assert_eq!(s.erase_expired_contacts(start + 2 * 24 * HOUR).unwrap(), 2);
        assert_eq!(s.appointment("a_1").unwrap().unwrap().guest_contact, None);
        assert_eq!(s.erase_expired_contacts(start + 2 * 24 * HOUR).unwrap(), 0);

        // Delivered and given-up events are pruned; pending ones stay.
        s.sync_webhook_endpoints(&[], now).unwrap();
        let pruned = s.prune_webhook_events(start + 30 * 24 * HOUR).unwrap();
        assert!(pruned >= 3, "{pruned}");
        assert!(s.webhook_deliveries("acme", 50).unwrap().is_empty());
    }

    /// PostgreSQL only: a restart of the server costs no call made after it: pooled
    /// connections it cut are found dead before they are lent, and replaced. (Checked on
    /// every lend here; the gateway checks those idle for 2 s, `pg::CHECK_IDLE_AFTER`.)
    #[cfg(all(feature = "cluster", target_os = "linux"))]
    #[test]
    fn postgres_restarted_costs_no_later_call() {
        let Some(mut pg) = testing::TestPostgres::start() else {
            return;
        };
        let s = Store::open_postgres(&pg.url()).unwrap();
        let Backend::Postgres(pool) = &s.backend else {
            unreachable!("a PostgreSQL store")
        };
        pool.check_idle_after_ms.store(0, std::sync::atomic::Ordering::Relaxed);
        s.insert_meeting(&meeting()).unwrap();
        // Several pooled connections, all cut by the restart.
        std::thread::scope(|sc| {
            for _ in 0..4 {
                sc.spawn(|| assert!(s.meeting("m_1").unwrap().is_some()));
            }
        });
        pg.restart();
        for _ in 0..6 {
            assert_eq!(s.meeting("m_1").unwrap().unwrap().settings.title, "Clinic");
        }
        s.insert_link(&link("l_after", LinkKind::SingleUse)).unwrap();
        s.count_redemption("l_after").unwrap();
    }

    /// The next change `rx` is pushed, within 10 s.
    #[cfg(all(feature = "cluster", target_os = "linux"))]
    fn next_change(rx: &mut tokio::sync::broadcast::Receiver<appointments::QueueChange>) -> appointments::QueueChange {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match rx.try_recv() {
                Ok(c) => return c,
                Err(tokio::sync::broadcast::error::TryRecvError::Empty) => {
                    assert!(std::time::Instant::now() < deadline, "no queue change in 10 s");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// PostgreSQL only: nodes that share their queue changes hear each other's, each once and
    /// with its appointment read back, and never hear their own again; a node that does not
    /// share hears nothing and announces nothing. A cut listening connection is made again,
    /// its node's subscribers are told to read the queue again, and changes flow on.
    #[cfg(all(feature = "cluster", target_os = "linux"))]
    #[test]
    fn postgres_nodes_hear_each_others_queue_changes_once() {
        use gatehouse_signaling::protocol::ParticipantKind;
        use tokio::sync::broadcast::error::TryRecvError;
        let Some(pg) = testing::TestPostgres::start() else {
            return;
        };
        let url = pg.url();
        let open = || Arc::new(Store::open_postgres(&url).unwrap());
        let (a, b, alone) = (open(), open(), open());
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        // Each returns once it listens.
        assert!(a.share_queue_changes(shutdown.clone()));
        assert!(b.share_queue_changes(shutdown.clone()));
        let (mut on_a, mut on_b, mut on_alone) = (a.queue_changes(), b.queue_changes(), alone.queue_changes());
        let ev = |who: &str, event: EventKind| ParticipationEvent {
            meeting_id: "m_1".into(),
            participant_id: who.into(),
            display_name: who.to_uppercase(),
            kind: ParticipantKind::Guest,
            at_ms: 5,
            event,
        };
        a.insert_meeting(&meeting()).unwrap();

        // A's change: A publishes it (its own), B hears it.
        a.record(&ev("p_1", EventKind::EnteredLobby)).unwrap();
        assert_eq!(next_change(&mut on_a).meeting_id, "m_1");
        let heard = next_change(&mut on_b);
        assert_eq!((heard.meeting_id.as_str(), heard.appointment.is_none()), ("m_1", true));
        // B's change after it: A hears it; PostgreSQL delivers in commit order, so an echo of
        // A's own would have come first. Nothing more on either.
        b.record(&ev("p_2", EventKind::Joined)).unwrap();
        assert_eq!(next_change(&mut on_b).meeting_id, "m_1");
        assert_eq!(next_change(&mut on_a).meeting_id, "m_1");
        a.record(&ev("p_1", EventKind::LeftLobby { wait_ms: 3 })).unwrap();
        assert_eq!(next_change(&mut on_a).meeting_id, "m_1");
        assert_eq!(next_change(&mut on_b).meeting_id, "m_1");
        assert!(
            matches!(on_a.try_recv(), Err(TryRecvError::Empty)),
            "A hears its own once"
        );
        assert!(
            matches!(on_b.try_recv(), Err(TryRecvError::Empty)),
            "B hears its own once"
        );

        // An appointment's change: B gets the record as committed, with its transition.
        use crate::appointments::{AppointmentType, TypeSettings};
        let t = AppointmentType {
            type_id: "t_1".into(),
            organization: "acme".into(),
            settings: TypeSettings {
                title: "Consultation".into(),
                staff: vec!["olga".into()],
                ..TypeSettings::default()
            },
            private_link: None,
            created_at_ms: 1,
            archived_at_ms: None,
        };
        a.insert_type(&t).unwrap();
        let booked = a
            .book(appointments::NewBooking {
                appointment_id: "a_1".into(),
                appointment_type: t,
                via_private_code: None,
                candidates: vec!["olga".into()],
                within_hours: false,
                starts_at_ms: Some(1_767_225_600_000),
                guest_name: "Ann".into(),
                guest_contact: None,
                manage_code: "manage-a_1".into(),
                meeting: Meeting {
                    meeting_id: "m_a_1".into(),
                    ..meeting()
                },
                link: Link {
                    meeting_id: "m_a_1".into(),
                    ..link("l_a_1", LinkKind::Public)
                },
                now_ms: 10,
            })
            .unwrap();
        assert_eq!(next_change(&mut on_a).meeting_id, "m_a_1");
        let heard = next_change(&mut on_b);
        let got = heard.appointment.expect("the appointment, read back");
        assert_eq!(heard.meeting_id, "m_a_1");
        assert_eq!(got.record, booked);
        assert_eq!(
            got.transitions,
            a.transitions("a_1").unwrap(),
            "the booking's transition"
        );
        assert!(
            matches!(on_alone.try_recv(), Err(TryRecvError::Empty)),
            "a node not sharing hears nothing"
        );

        // Both listening connections cut: made again, subscribers told to read it all again.
        let mut resync_a = a.queue_resyncs();
        let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let cut: i64 = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = $1",
                &[&format!("LISTEN {}", notice::CHANNEL)],
            )
            .unwrap()
            .get(0);
        assert_eq!(cut, 2);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !resync_a.has_changed().unwrap() {
            assert!(std::time::Instant::now() < deadline, "no resync after the cut");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        resync_a.mark_unchanged();
        // B listens again too (or is about to): a change of B's reaches A.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while *b.queue_resyncs().borrow() == 0 {
            assert!(std::time::Instant::now() < deadline, "B does not listen again");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        b.record(&ev(
            "p_2",
            EventKind::Left {
                reason: gatehouse_signaling::protocol::LeaveReason::Left,
                in_call_ms: 1,
            },
        ))
        .unwrap();
        assert_eq!(next_change(&mut on_b).meeting_id, "m_1");
        assert_eq!(next_change(&mut on_a).meeting_id, "m_1");
        assert!(matches!(on_alone.try_recv(), Err(TryRecvError::Empty)));
        stop.send(true).unwrap();
    }

    /// PostgreSQL only: nodes starting together migrate once and agree on one secret; a
    /// newer schema is refused; one single-use link redeemed from many connections at
    /// once counts once.
    #[cfg(all(feature = "cluster", target_os = "linux"))]
    #[test]
    fn postgres_nodes_share_one_schema_one_secret_and_one_redemption() {
        let Some(pg) = testing::TestPostgres::start() else {
            return;
        };
        let url = pg.url();
        let stores: Vec<Store> = std::thread::scope(|sc| {
            let opening: Vec<_> = (0..3).map(|_| sc.spawn(|| Store::open_postgres(&url))).collect();
            opening.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
        });
        let secrets: Vec<String> = std::thread::scope(|sc| {
            let asking: Vec<_> = stores
                .iter()
                .enumerate()
                .map(|(i, st)| sc.spawn(move || st.shared_secret("k", || format!("made-by-{i}")).unwrap()))
                .collect();
            asking.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(secrets.iter().all(|k| *k == secrets[0]), "{secrets:?}");
        assert!(secrets[0].starts_with("made-by-"));

        stores[0].insert_meeting(&meeting()).unwrap();
        stores[0].insert_link(&link("l_once", LinkKind::SingleUse)).unwrap();
        let wins: usize = std::thread::scope(|sc| {
            let racing: Vec<_> = (0..24)
                .map(|i| {
                    let st = &stores[i % 3];
                    sc.spawn(move || match st.count_redemption("l_once") {
                        Ok(()) => 1,
                        Err(e) => {
                            assert_eq!(e.code, ErrorCode::LinkUsed);
                            0
                        }
                    })
                })
                .collect();
            racing.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(wins, 1);
        assert_eq!(stores[2].link("l_once").unwrap().unwrap().redemptions, 1);

        // Nodes starting together sync the same webhook endpoints at once: all succeed.
        std::thread::scope(|sc| {
            for st in &stores {
                sc.spawn(move || {
                    for _ in 0..10 {
                        st.sync_webhook_endpoints(&[("hook".into(), None), ("audit".into(), Some("acme".into()))], 1)
                            .unwrap();
                    }
                });
            }
        });
        // Every node's webhook worker asks for the same endpoint's due deliveries at once:
        // each delivery is handed to one of them, and to nobody again until its claim lapses.
        stores[0].sync_webhook_endpoints(&[("hook".into(), None)], 1).unwrap();
        let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        for i in 0..40 {
            admin
                .execute(
                    "WITH e AS (INSERT INTO webhook_events (event_id, organization, event_type, payload, created_at) VALUES ($1, 'acme', 'appointment.booked', '{}', 5) RETURNING seq) INSERT INTO webhook_deliveries (endpoint_id, seq, next_attempt_at) SELECT 'hook', seq, 5 FROM e",
                    &[&format!("evt_{i}")],
                )
                .unwrap();
        }
        let handed: Vec<Vec<i64>> = std::thread::scope(|sc| {
            let asking: Vec<_> = stores
                .iter()
                .map(|st| {
                    sc.spawn(move || {
                        let mut seqs = Vec::new();
                        loop {
                            let batch = st.due_deliveries("hook", 10, 7).unwrap();
                            if batch.is_empty() {
                                return seqs;
                            }
                            seqs.extend(batch.iter().map(|d| d.seq));
                        }
                    })
                })
                .collect();
            asking.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut all: Vec<i64> = handed.concat();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 40, "every delivery handed out once: {handed:?}");
        assert_eq!(handed.iter().map(Vec::len).sum::<usize>(), 40, "{handed:?}");
        assert!(
            stores[1]
                .due_deliveries("hook", 10 + webhooks::CLAIM_MS - 1, 50)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            stores[1]
                .due_deliveries("hook", 10 + webhooks::CLAIM_MS, 50)
                .unwrap()
                .len(),
            40,
            "claims lapse"
        );
        drop(stores);

        admin
            .execute("UPDATE gatehouse_schema SET version = version + 1", &[])
            .unwrap();
        let err = format!("{:#}", Store::open_postgres(&url).err().expect("refused"));
        assert!(err.contains("newer than this gatehouse"), "{err}");
    }
}
