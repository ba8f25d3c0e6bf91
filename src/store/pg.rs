//! The store on PostgreSQL (`--database-url`): the shared records of several nodes.
//!
//! The blocking `postgres` client, since every store call already runs on tokio's blocking
//! pool (`Store::run`). A small pool of connections per node ([`MAX_CONNECTIONS`]), each
//! with its prepared statements cached by their SQL, so a store call is one round trip. A
//! connection idle for a while is checked before it is lent, and one found closed (the
//! server restarted) is replaced, so a restart of PostgreSQL fails only the calls under way
//! when it went (with `internal`, as a SQLite error would); calls while it is down fail
//! the same way, and the pool reconnects once it is back. Transactions run at PostgreSQL's default, READ COMMITTED: single-use
//! redemption is one conditional `UPDATE` (a racing `UPDATE` waits for the winner's commit
//! and then finds its condition false), and the read-modify-writes of an appointment lock
//! its row first (`appointments::load_appointment`), bookings their organisation
//! ([`super::db::Db::lock`]).

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use gatehouse_signaling::{Error, ErrorCode};
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, Statement};

use super::db::{Db, Dialect, Param, Row, Value, db_err, dollar_placeholders};
use super::pg_tls::Target;

/// Connections one node holds at most: store calls beyond wait for one to come back.
pub const MAX_CONNECTIONS: usize = 8;

/// How long a store call waits for a free connection before it fails.
const CHECKOUT_WAIT: Duration = Duration::from_secs(10);

/// A connection idle for longer is checked (one round trip) before it is lent: the server
/// may have restarted meanwhile, and a dead connection would fail its caller's statement.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(2);

/// How long that check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Param::Null => Ok(IsNull::Yes),
            Param::Int(v) => match *ty {
                Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
                Type::BOOL => (v != 0).to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            Param::Text(s) => s.to_sql(ty, out),
            Param::Bool(b) => match *ty {
                Type::BOOL => b.to_sql(ty, out),
                _ => i64::from(b).to_sql(ty, out),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        // Each variant converts itself to the parameter's type in `to_sql` (the schema uses
        // only integers, text and booleans).
        true
    }

    to_sql_checked!();
}

fn pg_row(row: &postgres::Row) -> Result<Row, Error> {
    let mut values = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let v = match *col.type_() {
            Type::INT8 => row.try_get::<_, Option<i64>>(i).map(|v| v.map(Value::Int)),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)
                .map(|v| v.map(|v| Value::Int(v.into()))),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)
                .map(|v| v.map(|v| Value::Int(v.into()))),
            Type::BOOL => row.try_get::<_, Option<bool>>(i).map(|v| v.map(Value::Bool)),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                row.try_get::<_, Option<String>>(i).map(|v| v.map(Value::Text))
            }
            ref other => return Err(db_err(format!("column {} of unexpected type {other}", col.name()))),
        }
        .map_err(db_err)?;
        values.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

/// One connection and the statements prepared on it.
pub struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
    /// When it was last given back.
    idle_since: std::time::Instant,
}

impl Conn {
    fn connect(target: &Target) -> Result<Conn, postgres::Error> {
        Ok(Conn {
            client: target.connect()?,
            statements: HashMap::new(),
            idle_since: std::time::Instant::now(),
        })
    }

    /// Whether it can be lent: not known closed, and answering if it sat idle longer than
    /// `check_after`.
    fn usable(&mut self, check_after: Duration) -> bool {
        !self.client.is_closed()
            && (self.idle_since.elapsed() < check_after || self.client.is_valid(CHECK_TIMEOUT).is_ok())
    }
}

/// A statement prepared once per connection (its SQL rewritten to `$N` once).
fn prepared<C: postgres::GenericClient>(
    client: &mut C,
    cache: &mut HashMap<String, Statement>,
    sql: &str,
) -> Result<Statement, postgres::Error> {
    if let Some(s) = cache.get(sql) {
        return Ok(s.clone());
    }
    let s = client.prepare(&dollar_placeholders(sql))?;
    cache.insert(sql.to_owned(), s.clone());
    Ok(s)
}

fn to_sql_params<'a>(params: &'a [Param<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

fn is_unique_violation(e: &postgres::Error) -> bool {
    e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION)
}

/// A connection or a transaction on it, with the connection's statement cache.
pub struct Pg<'c, C: postgres::GenericClient> {
    client: &'c mut C,
    statements: &'c mut HashMap<String, Statement>,
}

impl<C: postgres::GenericClient> Db for Pg<'_, C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, Error> {
        let stmt = prepared(self.client, self.statements, sql).map_err(db_err)?;
        self.client.execute(&stmt, &to_sql_params(params)).map_err(db_err)
    }

    fn execute_unique(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<u64>, Error> {
        let stmt = prepared(self.client, self.statements, sql).map_err(db_err)?;
        match self.client.execute(&stmt, &to_sql_params(params)) {
            Ok(n) => Ok(Some(n)),
            Err(e) if is_unique_violation(&e) => Ok(None),
            Err(e) => Err(db_err(e)),
        }
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, Error> {
        let stmt = prepared(self.client, self.statements, sql).map_err(db_err)?;
        let rows = self.client.query(&stmt, &to_sql_params(params)).map_err(db_err)?;
        rows.iter().map(pg_row).collect()
    }

    fn lock(&mut self, key: &str) -> Result<(), Error> {
        self.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(?1, 0))",
            &[Param::Text(key)],
        )?;
        Ok(())
    }
}

/// The node's connections to PostgreSQL.
pub struct Pool {
    target: Target,
    state: Mutex<PoolState>,
    returned: Condvar,
    /// [`CHECK_IDLE_AFTER`], in ms (the store's tests check every connection they lend).
    pub(super) check_idle_after_ms: std::sync::atomic::AtomicU64,
}

struct PoolState {
    idle: Vec<Conn>,
    /// Connections open, idle or lent.
    open: usize,
}

impl Pool {
    /// Connects once (so a wrong URL, an unreadable `sslrootcert` or an unreachable or
    /// unverified server fails at start).
    pub fn connect(url: &str) -> anyhow::Result<Pool> {
        let target = Target::parse(url)?;
        let first = Conn::connect(&target)?;
        tracing::info!(tls = target.tls(), "connected to PostgreSQL");
        Ok(Pool {
            target,
            state: Mutex::new(PoolState {
                idle: vec![first],
                open: 1,
            }),
            returned: Condvar::new(),
            check_idle_after_ms: (CHECK_IDLE_AFTER.as_millis() as u64).into(),
        })
    }

    /// The server it connects to (a listening connection is made apart from the pool).
    pub(super) fn target(&self) -> &Target {
        &self.target
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn checkout(&self) -> Result<Conn, Error> {
        let deadline = std::time::Instant::now() + CHECKOUT_WAIT;
        let check_after = Duration::from_millis(self.check_idle_after_ms.load(std::sync::atomic::Ordering::Relaxed));
        let mut state = self.state();
        loop {
            while let Some(mut conn) = state.idle.pop() {
                drop(state);
                if conn.usable(check_after) {
                    return Ok(conn);
                }
                tracing::info!("a PostgreSQL connection was lost; opening another");
                drop(conn);
                state = self.state();
                state.open -= 1;
            }
            if state.open < MAX_CONNECTIONS {
                state.open += 1;
                drop(state);
                return Conn::connect(&self.target).map_err(|e| {
                    self.state().open -= 1;
                    self.returned.notify_one();
                    db_err(format!("connecting to PostgreSQL: {e}"))
                });
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                tracing::error!("no PostgreSQL connection came free in time");
                return Err(Error::new(ErrorCode::ServerBusy, "storage is busy"));
            }
            state = self
                .returned
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn checkin(&self, mut conn: Conn) {
        conn.idle_since = std::time::Instant::now();
        let mut state = self.state();
        if conn.client.is_closed() {
            state.open -= 1;
        } else {
            state.idle.push(conn);
        }
        drop(state);
        self.returned.notify_one();
    }

    /// Runs `f` on a connection, outside a transaction (each statement commits by itself).
    pub fn with<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T, Error>) -> Result<T, Error> {
        let mut conn = self.checkout()?;
        let Conn { client, statements, .. } = &mut conn;
        let out = f(&mut Pg { client, statements });
        self.checkin(conn);
        out
    }

    /// Runs `f` in a transaction, committed if it returns `Ok`, rolled back otherwise.
    pub fn tx<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T, Error>) -> Result<T, Error> {
        let mut conn = self.checkout()?;
        let out = (|| {
            let Conn { client, statements, .. } = &mut conn;
            let mut tx = client.transaction().map_err(db_err)?;
            let out = f(&mut Pg {
                client: &mut tx,
                statements,
            })?;
            tx.commit().map_err(db_err)?;
            Ok(out)
        })();
        self.checkin(conn);
        out
    }
}

impl Drop for Pool {
    /// Closes the idle connections on a thread of its own: closing one blocks on the
    /// client's runtime, which must not happen on a thread of the server's (the last
    /// reference to the store may go on one as the server stops).
    fn drop(&mut self) {
        let idle = std::mem::take(&mut self.state().idle);
        if !idle.is_empty() {
            let _ = std::thread::spawn(move || drop(idle)).join();
        }
    }
}

/// Applies the schema's pending migrations ([`super::migrations::POSTGRES`]), all in one
/// transaction under an advisory lock, so nodes starting together migrate once; refuses a
/// database whose schema is newer than this build.
pub fn migrate(pool: &Pool) -> anyhow::Result<()> {
    let mut conn = pool.checkout().map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let result = (|| -> anyhow::Result<()> {
        let mut tx = conn.client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock(4242016)", &[])?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS gatehouse_schema (version BIGINT NOT NULL)")?;
        let version: i64 = match tx.query_opt("SELECT version FROM gatehouse_schema", &[])? {
            Some(row) => row.get(0),
            None => {
                tx.execute("INSERT INTO gatehouse_schema (version) VALUES (0)", &[])?;
                0
            }
        };
        let all = super::migrations::POSTGRES;
        let latest = all.len() as i64;
        anyhow::ensure!(
            version <= latest,
            "the database has schema version {version}, newer than this gatehouse ({latest})"
        );
        for (i, sql) in all.iter().enumerate().skip(version.max(0) as usize) {
            use anyhow::Context as _;
            tx.batch_execute(sql)
                .with_context(|| format!("applying PostgreSQL migration {}", i + 1))?;
        }
        tx.execute("UPDATE gatehouse_schema SET version = $1", &[&latest])?;
        tx.commit()?;
        Ok(())
    })();
    pool.checkin(conn);
    result
}
