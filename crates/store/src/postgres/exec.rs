//! PostgreSQL under the shared statements (`crate::sql`): native `timestamptz` and `TEXT[]`,
//! writes in a READ COMMITTED transaction that locks the rows it changes.

use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgPool, PgRow};
use sqlx::query::Query;
use sqlx::{Postgres, Transaction};

use super::PostgresStore;
use crate::error::Result;
use crate::sql::{impl_exec, Arg, Db, WriteTx};

fn query<'q>(sql: &'q str, args: &[Arg<'q>]) -> Query<'q, Postgres, PgArguments> {
    let mut query = sqlx::query(sql);
    for arg in args {
        query = match *arg {
            Arg::Text(v) => query.bind(v),
            Arg::Int(v) => query.bind(v),
            Arg::Bool(v) => query.bind(v),
            Arg::Time(v) => query.bind(v),
            Arg::List(v) => query.bind(v),
        };
    }
    query
}

/// The pool, for statements outside a write transaction.
pub(crate) struct Reader<'a>(&'a PgPool);

impl_exec!(Reader<'_>, PgRow, query, |this| this.0);

impl_exec!(Transaction<'static, Postgres>, PgRow, query, |this| {
    &mut **this
});

#[async_trait]
impl WriteTx for Transaction<'static, Postgres> {
    async fn commit(self) -> Result<()> {
        Ok(Transaction::commit(self).await?)
    }
}

#[async_trait]
impl Db for PostgresStore {
    type Row = PgRow;
    type Reader<'a> = Reader<'a>;
    type Tx = Transaction<'static, Postgres>;

    const LOCK_KEY: Option<&'static str> =
        Some("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))");
    const LOCK_ROWS: &'static str = " FOR UPDATE";
    const SETTLED_DAY: &'static str = "to_char(settled_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')";

    fn reader(&self) -> Reader<'_> {
        Reader(&self.pool)
    }

    async fn write(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }
}
