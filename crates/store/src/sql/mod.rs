//! The SQL both databases take alike, written once over a small dialect seam.
//!
//! Directory (tenants, orgs, keys, prices), hub metadata, deployment records and stored
//! responses are the same statements on SQLite and PostgreSQL; only how a value is encoded
//! (times, lists of strings), how a write transaction starts (`BEGIN IMMEDIATE` behind the
//! process's writer turn, or a plain `BEGIN` with row locks) and whether a read locks its row
//! differ. [`Db`] is that seam; the trait implementations in `directory`, `hub`, `hub_access`,
//! `deployments`, `responses`, `mcp`, `files`, `batches`, `fine_tuning` and `removal` are generic over it. What really differs stays per database:
//! the ledger (SQLite's group-commit writer) and the rate windows (PostgreSQL's per-subject row
//! locks).
//!
//! Statements bind [`Arg`]s, a closed set of value kinds each database encodes its own way,
//! rather than being generic over sqlx's `Database`: one `match` per database instead of an
//! `Encode + Type` bound on every value at every call site.

mod batches;
mod budgets;
mod deployments;
mod directory;
mod files;
mod fine_tuning;
mod hub;
mod hub_access;
pub(crate) mod ledger;
pub(crate) mod mcp;
mod members;
mod removal;
mod responses;
mod routing;

use async_trait::async_trait;

use crate::error::Result;
use crate::model::Timestamp;
use crate::rows::Columns;

/// A value bound to a statement's next placeholder (`$1`, `$2`, … in order).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Bool(Option<bool>),
    Time(Option<Timestamp>),
    /// A list of strings: `TEXT[]` on PostgreSQL, JSON text on SQLite.
    List(Option<&'a [String]>),
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(Some(v))
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(Some(v))
    }
}

impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Arg::Text(v.as_deref())
    }
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}

impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Arg::Bool(Some(v))
    }
}

impl From<Option<bool>> for Arg<'_> {
    fn from(v: Option<bool>) -> Self {
        Arg::Bool(v)
    }
}

impl From<Timestamp> for Arg<'_> {
    fn from(v: Timestamp) -> Self {
        Arg::Time(Some(v))
    }
}

impl From<Option<Timestamp>> for Arg<'_> {
    fn from(v: Option<Timestamp>) -> Self {
        Arg::Time(v)
    }
}

impl<'a> From<&'a [String]> for Arg<'a> {
    fn from(v: &'a [String]) -> Self {
        Arg::List(Some(v))
    }
}

impl<'a> From<&'a Vec<String>> for Arg<'a> {
    fn from(v: &'a Vec<String>) -> Self {
        Arg::List(Some(v))
    }
}

impl<'a> From<&'a Option<Vec<String>>> for Arg<'a> {
    fn from(v: &'a Option<Vec<String>>) -> Self {
        Arg::List(v.as_deref())
    }
}

/// `[Arg::from(a), Arg::from(b), …]`.
macro_rules! args {
    ($($value:expr),* $(,)?) => {
        [$($crate::sql::Arg::from($value)),*]
    };
}
pub(crate) use args;

/// Runs statements: on the pool (each its own transaction) or inside a write transaction.
/// Errors stay sqlx's, so callers can still tell a unique violation (`StoreError::unique`).
#[async_trait]
pub(crate) trait Exec: Send {
    type Row: Columns + Send + Sync;

    async fn fetch_all(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<Vec<Self::Row>, sqlx::Error>;
    async fn fetch_optional(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<Option<Self::Row>, sqlx::Error>;
    /// Rows affected.
    async fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, sqlx::Error>;

    async fn fetch_one(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Self::Row, sqlx::Error> {
        self.fetch_optional(sql, args)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }
}

/// Implements [`Exec`] for `$ty` (rows `$row`), building each statement with `$query` (the
/// database's binder) and running it on `$executor`, written in terms of `$this: &mut $ty`.
macro_rules! impl_exec {
    ($ty:ty, $row:ty, $query:path, |$this:ident| $executor:expr) => {
        #[async_trait::async_trait]
        impl $crate::sql::Exec for $ty {
            type Row = $row;

            async fn fetch_all(
                &mut self,
                sql: &str,
                args: &[$crate::sql::Arg<'_>],
            ) -> Result<Vec<$row>, sqlx::Error> {
                let $this = self;
                $query(sql, args).fetch_all($executor).await
            }

            async fn fetch_optional(
                &mut self,
                sql: &str,
                args: &[$crate::sql::Arg<'_>],
            ) -> Result<Option<$row>, sqlx::Error> {
                let $this = self;
                $query(sql, args).fetch_optional($executor).await
            }

            async fn execute(
                &mut self,
                sql: &str,
                args: &[$crate::sql::Arg<'_>],
            ) -> Result<u64, sqlx::Error> {
                let $this = self;
                Ok($query(sql, args).execute($executor).await?.rows_affected())
            }
        }
    };
}
pub(crate) use impl_exec;

/// A write transaction: rolled back if dropped before `commit`.
#[async_trait]
pub(crate) trait WriteTx: Exec + Sized {
    async fn commit(self) -> Result<()>;
}

/// A database the shared statements run on.
#[async_trait]
pub(crate) trait Db: Send + Sync + 'static {
    type Row: Columns + Send + Sync;
    type Reader<'a>: Exec<Row = Self::Row>
    where
        Self: 'a;
    type Tx: WriteTx<Row = Self::Row>;

    /// Appended to a `SELECT` inside a write transaction to lock the rows it reads until the
    /// commit (PostgreSQL's `FOR UPDATE`; SQLite's write transaction already excludes writers).
    const LOCK_ROWS: &'static str;
    /// A statement taking a transaction-scoped lock on the text key `$1`, where the database
    /// needs one to serialise writers that lock no common row (PostgreSQL's advisory locks;
    /// SQLite's write transaction already excludes every other writer).
    const LOCK_KEY: Option<&'static str>;
    /// The UTC day (`YYYY-MM-DD`) of a reservation's `settled_at`.
    const SETTLED_DAY: &'static str;

    /// Statements outside a transaction, on the pool.
    fn reader(&self) -> Self::Reader<'_>;
    /// One write statement on its own, for writes on a request's path that nothing else
    /// waits on (an audit row): on the pool, or on SQLite in the ledger writer's next group,
    /// which costs a fraction of a pool write's round trips beside the writer. Rows affected.
    async fn write_one(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        Ok(self.reader().execute(sql, args).await?)
    }
    /// A transaction that serialises with every other writer of the rows it locks.
    async fn write(&self) -> Result<Self::Tx>;
    /// Overwrites what deleted rows left in the database's files, where that can be done
    /// online (`RemovalStore::scrub`); whether it was. Nothing by default.
    async fn scrub_files(&self) -> Result<bool> {
        Ok(false)
    }
}
