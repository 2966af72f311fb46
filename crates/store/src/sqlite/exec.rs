//! SQLite under the shared statements (`crate::sql`): times as fixed-width RFC 3339 text, lists
//! as JSON text, writes behind the process's writer turn in `BEGIN IMMEDIATE`.

use async_trait::async_trait;
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqlitePool, SqliteRow};
use sqlx::Sqlite;

use super::rows::{json_list, ts};
use super::{SqliteStore, WriteTx};
use crate::error::Result;
use crate::sql::{self, impl_exec, Arg, Db};

fn query<'q>(sql: &'q str, args: &[Arg<'q>]) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    let mut query = sqlx::query(sql);
    for arg in args {
        query = match *arg {
            Arg::Text(v) => query.bind(v),
            Arg::Int(v) => query.bind(v),
            Arg::Bool(v) => query.bind(v),
            Arg::Time(v) => query.bind(v.map(ts)),
            Arg::List(v) => query.bind(v.map(json_list)),
        };
    }
    query
}

/// The pool, for statements outside a write transaction.
pub(crate) struct Reader<'a>(&'a SqlitePool);

impl_exec!(Reader<'_>, SqliteRow, query, |this| this.0);

impl_exec!(WriteTx, SqliteRow, query, |this| &mut **this);

#[async_trait]
impl sql::WriteTx for WriteTx {
    async fn commit(self) -> Result<()> {
        WriteTx::commit(self).await
    }
}

#[async_trait]
impl Db for SqliteStore {
    type Row = SqliteRow;
    type Reader<'a> = Reader<'a>;
    type Tx = WriteTx;

    const LOCK_KEY: Option<&'static str> = None;
    const LOCK_ROWS: &'static str = "";
    const SETTLED_DAY: &'static str = "substr(settled_at, 1, 10)";

    fn reader(&self) -> Reader<'_> {
        Reader(&self.pool)
    }

    async fn write(&self) -> Result<WriteTx> {
        SqliteStore::write(self).await
    }

    async fn write_one(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        let statement = Statement::new(sql, args);
        self.ledger.run(move |conn| statement.execute(conn)).await
    }

    /// Deleted rows' bytes are overwritten in their pages (the pool's connections delete with
    /// `secure_delete`), but earlier versions of those pages may still sit in the write-ahead
    /// log: copy it back and truncate it, in this process's writer turn. `false` when a reader
    /// kept the log busy past the busy timeout.
    async fn scrub_files(&self) -> Result<bool> {
        let _turn = self.writer.lock().await;
        let row: (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.0 == 0)
    }
}

/// A shared statement made ready for the ledger writer's rusqlite connection: its parameters
/// numbered as SQLite's, its values owned (a writer job runs on the writer's thread).
pub(super) struct Statement {
    sql: String,
    values: Vec<rusqlite::types::Value>,
}

impl Statement {
    pub(super) fn new(sql: &str, args: &[Arg<'_>]) -> Self {
        use rusqlite::types::Value;
        let values = args
            .iter()
            .map(|arg| match *arg {
                Arg::Text(v) => v.map_or(Value::Null, |t| Value::Text(t.to_owned())),
                Arg::Int(v) => v.map_or(Value::Null, Value::Integer),
                Arg::Bool(v) => v.map_or(Value::Null, |b| Value::Integer(i64::from(b))),
                Arg::Time(v) => v.map_or(Value::Null, |t| Value::Text(ts(t))),
                Arg::List(v) => v.map_or(Value::Null, |l| Value::Text(json_list(l))),
            })
            .collect();
        Self {
            sql: numbered(sql),
            values,
        }
    }

    /// Rows affected.
    pub(super) fn execute(self, conn: &rusqlite::Connection) -> Result<u64> {
        // Cached: the same few statements run on every call.
        let n = conn
            .prepare_cached(&self.sql)?
            .execute(rusqlite::params_from_iter(self.values))?;
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }
}

/// The shared statements' `$N` parameters as SQLite's own numbered ones (`?N`), which bind by
/// number whatever their order.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn parameters_are_numbered_for_sqlite() {
        assert_eq!(
            super::numbered("INSERT INTO t (a, b) VALUES ($2, $10) -- costs $"),
            "INSERT INTO t (a, b) VALUES (?2, ?10) -- costs $"
        );
    }
}
