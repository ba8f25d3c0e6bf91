//! The store's seam between its SQL and a database: run a statement, read rows into
//! owned values, inside or outside a transaction ([`Db`]), for SQLite (here) and for
//! PostgreSQL (`pg.rs`, with the `cluster` feature).
//!
//! The store's SQL is written once, in the subset both dialects read the same: `?N`
//! placeholders (rewritten to `$N` for PostgreSQL), `ON CONFLICT … DO NOTHING` and
//! `ON CONFLICT (…) DO UPDATE` for upserts, `RETURNING` for generated keys, `CAST(?N AS
//! TEXT)` where a parameter's type cannot be inferred. Where the two must differ (row
//! locks, advisory locks, the schema itself) the statement asks [`Db::dialect`].
//! Parameters and values are a small closed set (integers, text, booleans, null): every
//! column of the schema is one of those.

use gatehouse_signaling::{Error, ErrorCode};

/// Which database a statement goes to, for the few places the dialects differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A bound parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Param<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Bool(bool),
}

/// What can be bound as a [`Param`].
pub trait ToParam {
    fn to_param(&self) -> Param<'_>;
}

impl ToParam for str {
    fn to_param(&self) -> Param<'_> {
        Param::Text(self)
    }
}

impl ToParam for String {
    fn to_param(&self) -> Param<'_> {
        Param::Text(self)
    }
}

impl ToParam for i64 {
    fn to_param(&self) -> Param<'_> {
        Param::Int(*self)
    }
}

impl ToParam for u32 {
    fn to_param(&self) -> Param<'_> {
        Param::Int(i64::from(*self))
    }
}

impl ToParam for bool {
    fn to_param(&self) -> Param<'_> {
        Param::Bool(*self)
    }
}

impl<T: ToParam + ?Sized> ToParam for &T {
    fn to_param(&self) -> Param<'_> {
        (**self).to_param()
    }
}

impl<T: ToParam> ToParam for Option<T> {
    fn to_param(&self) -> Param<'_> {
        match self {
            Some(v) => v.to_param(),
            None => Param::Null,
        }
    }
}

/// `args![a, b]`: the parameters of a statement, borrowed for its call.
macro_rules! args {
    ($($e:expr),* $(,)?) => {
        &[$($crate::store::db::ToParam::to_param(&$e)),*] as &[$crate::store::db::Param<'_>]
    };
}
pub(crate) use args;

/// A value read from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Bool(bool),
}

/// One row, owned (read whole, so no statement or lock outlives the call).
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

/// A column that is not what the code expects: the schema and the code disagree.
fn bad_column(i: usize, v: &Value, want: &str) -> Error {
    tracing::error!(column = i, value = ?v, want, "stored value of an unexpected type");
    Error::new(ErrorCode::Internal, "storage error")
}

impl Row {
    fn at(&self, i: usize) -> &Value {
        self.0.get(i).unwrap_or(&Value::Null)
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, Error> {
        match self.at(i) {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(*v)),
            Value::Bool(b) => Ok(Some(i64::from(*b))),
            v => Err(bad_column(i, v, "integer")),
        }
    }

    pub fn int(&self, i: usize) -> Result<i64, Error> {
        self.opt_int(i)?.ok_or_else(|| bad_column(i, &Value::Null, "integer"))
    }

    /// A non-negative integer column (times, counts) as `u64`.
    pub fn u64(&self, i: usize) -> Result<u64, Error> {
        Ok(self.int(i)?.max(0) as u64)
    }

    pub fn opt_u64(&self, i: usize) -> Result<Option<u64>, Error> {
        Ok(self.opt_int(i)?.map(|v| v.max(0) as u64))
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>, Error> {
        match self.at(i) {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s.clone())),
            v => Err(bad_column(i, v, "text")),
        }
    }

    pub fn text(&self, i: usize) -> Result<String, Error> {
        self.opt_text(i)?.ok_or_else(|| bad_column(i, &Value::Null, "text"))
    }

    /// A boolean: SQLite stores it as 0 or 1, PostgreSQL as a boolean.
    pub fn bool(&self, i: usize) -> Result<bool, Error> {
        match self.at(i) {
            Value::Bool(b) => Ok(*b),
            Value::Int(v) => Ok(*v != 0),
            v => Err(bad_column(i, v, "boolean")),
        }
    }
}

/// A connection or a transaction of either database. Errors are logged and come back as
/// `internal` (the caller has nothing better to say to a client).
pub trait Db {
    fn dialect(&self) -> Dialect;

    /// Runs a statement; the rows it changed.
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, Error>;

    /// Runs a statement outside a transaction; `None` when it broke a unique constraint
    /// (nothing was changed), the rows it changed otherwise.
    fn execute_unique(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<u64>, Error>;

    /// Every row of a query.
    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, Error>;

    /// The first row of a query, if any.
    fn query_opt(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>, Error> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The one row a query must return (an aggregate, `EXISTS`).
    fn query_one(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Row, Error> {
        self.query_opt(sql, params)?.ok_or_else(|| {
            tracing::error!(sql, "a query that always returns a row returned none");
            Error::new(ErrorCode::Internal, "storage error")
        })
    }

    /// Serialises this transaction with every other one that takes the same `key` until it
    /// ends (PostgreSQL: an advisory transaction lock). SQLite's store has one connection,
    /// which serialises every transaction already.
    fn lock(&mut self, key: &str) -> Result<(), Error>;
}

/// Logs a database error; `internal` to the caller.
pub fn db_err(e: impl std::fmt::Display) -> Error {
    tracing::error!(error = %e, "store error");
    Error::new(ErrorCode::Internal, "storage error")
}

/// SQLite through rusqlite: a connection, or a transaction (which derefs to one).
pub struct Sqlite<'c>(pub &'c rusqlite::Connection);

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match *self {
            Param::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Param::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(v)),
            Param::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Param::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(b))),
        })
    }
}

fn sqlite_value(v: rusqlite::types::ValueRef<'_>) -> Result<Value, Error> {
    use rusqlite::types::ValueRef;
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Real(r) => return Err(db_err(format!("unexpected real {r}"))),
        ValueRef::Blob(_) => return Err(db_err("unexpected blob")),
    })
}

impl Db for Sqlite<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, Error> {
        let mut stmt = self.0.prepare_cached(sql).map_err(db_err)?;
        let n = stmt.execute(rusqlite::params_from_iter(params)).map_err(db_err)?;
        Ok(n as u64)
    }

    fn execute_unique(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<u64>, Error> {
        let mut stmt = self.0.prepare_cached(sql).map_err(db_err)?;
        match stmt.execute(rusqlite::params_from_iter(params)) {
            Ok(n) => Ok(Some(n as u64)),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
            {
                Ok(None)
            }
            Err(e) => Err(db_err(e)),
        }
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, Error> {
        let mut stmt = self.0.prepare_cached(sql).map_err(db_err)?;
        let columns = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params)).map_err(db_err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(db_err)? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                values.push(sqlite_value(row.get_ref(i).map_err(db_err)?)?);
            }
            out.push(Row(values));
        }
        Ok(out)
    }

    fn lock(&mut self, _key: &str) -> Result<(), Error> {
        Ok(())
    }
}

/// `?N` placeholders as PostgreSQL's `$N` (the store's SQL has no `?` elsewhere: no
/// string literal or identifier of it holds one).
pub fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars_and_nothing_else_changes() {
        assert_eq!(
            dollar_placeholders("SELECT a FROM t WHERE b = ?1 AND (?2 IS NULL OR c = ?2) LIMIT ?10"),
            "SELECT a FROM t WHERE b = $1 AND ($2 IS NULL OR c = $2) LIMIT $10"
        );
        assert_eq!(dollar_placeholders("SELECT '?' , x"), "SELECT '?' , x");
    }

    #[test]
    fn params_bind_by_reference_and_null_for_none() {
        let s = String::from("a");
        let none: Option<&str> = None;
        let p = args![s, "b", 3i64, 4u32, true, none, Some(5i64)];
        assert_eq!(
            p,
            &[
                Param::Text("a"),
                Param::Text("b"),
                Param::Int(3),
                Param::Int(4),
                Param::Bool(true),
                Param::Null,
                Param::Int(5)
            ]
        );
    }

    #[test]
    fn rows_read_booleans_of_either_dialect_and_refuse_wrong_types() {
        let r = Row(vec![
            Value::Int(1),
            Value::Bool(false),
            Value::Null,
            Value::Text("x".into()),
        ]);
        assert!(r.bool(0).unwrap());
        assert!(!r.bool(1).unwrap());
        assert_eq!(r.opt_int(2).unwrap(), None);
        assert_eq!(r.opt_text(2).unwrap(), None);
        assert_eq!(r.text(3).unwrap(), "x");
        assert_eq!(r.int(3).unwrap_err().code, ErrorCode::Internal);
        assert_eq!(r.text(2).unwrap_err().code, ErrorCode::Internal);
        assert_eq!(r.int(9).unwrap_err().code, ErrorCode::Internal, "past the end is null");
    }
}
