//! PostgreSQL under the shared statements (`crate::sql`): native `timestamptz` and `TEXT[]`,
//! writes in a READ COMMITTED transaction that locks the rows it changes.

use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgPool, PgRow};
use sqlx::query::Query;
use sqlx::{Postgres, Transaction};

use super::PostgresStore;
use crate::error::Result;
use crate::sql::{Arg, Db, Exec, WriteTx};

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

#[async_trait]
impl Exec for Reader<'_> {
    type Row = PgRow;

    async fn fetch_all(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<PgRow>, sqlx::Error> {
        query(sql, args).fetch_all(self.0).await
    }

    async fn fetch_optional(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<Option<PgRow>, sqlx::Error> {
        query(sql, args).fetch_optional(self.0).await
    }

    async fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, sqlx::Error> {
        Ok(query(sql, args).execute(self.0).await?.rows_affected())
    }
}

#[async_trait]
impl Exec for Transaction<'static, Postgres> {
    type Row = PgRow;

    async fn fetch_all(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<PgRow>, sqlx::Error> {
        query(sql, args).fetch_all(&mut **self).await
    }

    async fn fetch_optional(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<Option<PgRow>, sqlx::Error> {
        query(sql, args).fetch_optional(&mut **self).await
    }

    async fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, sqlx::Error> {
        Ok(query(sql, args).execute(&mut **self).await?.rows_affected())
    }
}

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

    fn reader(&self) -> Reader<'_> {
        Reader(&self.pool)
    }

    async fn write(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }
}
