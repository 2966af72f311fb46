//! The account, ledger and reservations on SQLite. Reads go through the sqlx pool; every write
//! is a job for the ledger writer (see `writer` and `ledger_writes`).

use async_trait::async_trait;

use super::ledger_writes as writes;
use super::rows::{self, ts};
use super::SqliteStore;
use crate::error::{Result, StoreError};
use crate::model::TOOL_CALL_SQL;
use crate::model::{
    LedgerEntry, NewReservation, Reservation, SettleWith, Settlement, Tenant, Timestamp,
    TokenUsage, UsageGroup, UsageRow,
};
use crate::LedgerStore;

#[async_trait]
impl LedgerStore for SqliteStore {
    async fn top_up(
        &self,
        tenant_id: &str,
        amount: i64,
        idempotency_key: &str,
        now: Timestamp,
    ) -> Result<Tenant> {
        let (tenant_id, key) = (tenant_id.to_owned(), idempotency_key.to_owned());
        self.ledger
            .run(move |conn| writes::top_up(conn, &tenant_id, amount, &key, now))
            .await
    }

    async fn reserve(&self, new: &NewReservation) -> Result<Reservation> {
        let new = new.clone();
        self.ledger
            .run(move |conn| writes::reserve(conn, &new))
            .await
    }

    async fn resize_reservation(
        &self,
        request_id: &str,
        prompt_tokens: i64,
        max_completion_tokens: i64,
        now: Timestamp,
    ) -> Result<Reservation> {
        let id = request_id.to_owned();
        self.ledger
            .run(move |conn| writes::resize(conn, &id, prompt_tokens, max_completion_tokens, now))
            .await
    }

    async fn record_progress(
        &self,
        request_id: &str,
        delivered: &TokenUsage,
        now: Timestamp,
    ) -> Result<()> {
        let (request_id, delivered) = (request_id.to_owned(), *delivered);
        self.ledger
            .run(move |conn| writes::record_progress(conn, &request_id, &delivered, now))
            .await
    }

    async fn settle(
        &self,
        request_id: &str,
        with: SettleWith,
        now: Timestamp,
    ) -> Result<Settlement> {
        let id = request_id.to_owned();
        self.ledger
            .run(move |conn| writes::close(conn, &id, with, now, None))
            .await?
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "reservation '{request_id}' closed without a charge"
                ))
            })
    }

    async fn renew_leases(&self, owner: &str, until: Timestamp) -> Result<u64> {
        let owner = owner.to_owned();
        self.ledger
            .run(move |conn| writes::renew_leases(conn, &owner, until))
            .await
    }

    async fn settle_expired(&self, request_id: &str, now: Timestamp) -> Result<Option<Settlement>> {
        let id = request_id.to_owned();
        self.ledger
            .run(move |conn| writes::close(conn, &id, SettleWith::Progress, now, Some(now)))
            .await
    }

    async fn ledger_entries(&self, tenant_id: &str) -> Result<Vec<LedgerEntry>> {
        let sql = format!(
            "SELECT {} FROM ledger_entries WHERE tenant_id = $1 ORDER BY id",
            rows::LEDGER_ENTRY
        );
        let all = sqlx::query(&sql)
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await?;
        all.iter().map(rows::ledger_entry).collect()
    }

    async fn reservation(&self, request_id: &str) -> Result<Reservation> {
        let sql = format!(
            "SELECT {} FROM reservations WHERE request_id = $1",
            rows::RESERVATION
        );
        let row = sqlx::query(&sql)
            .bind(request_id)
            .fetch_optional(&self.pool)
            .await?;
        rows::reservation(&row.ok_or_else(|| StoreError::not_found("reservation", request_id))?)
    }

    async fn expired_reservations(
        &self,
        except_owner: &str,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<Reservation>> {
        let sql = format!(
            "SELECT {} FROM reservations WHERE state = 'open' AND lease_expires_at < $1 \
             AND owner <> $2 ORDER BY lease_expires_at, request_id LIMIT $3",
            rows::RESERVATION
        );
        let all = sqlx::query(&sql)
            .bind(ts(now))
            .bind(except_owner)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        all.iter().map(rows::reservation).collect()
    }

    async fn usage(
        &self,
        tenant_id: &str,
        start: Timestamp,
        end: Timestamp,
        group: UsageGroup,
    ) -> Result<Vec<UsageRow>> {
        let by = match group {
            UsageGroup::Model => "model",
            UsageGroup::Day => "substr(settled_at, 1, 10)",
            UsageGroup::Key => "COALESCE(key_id, '-')",
        };
        let sql = format!(
            "SELECT {by} AS grp, \
             COALESCE(SUM(CASE WHEN {call} THEN 0 ELSE 1 END), 0) AS requests, \
             COALESCE(SUM(CASE WHEN {call} THEN 0 ELSE billed_prompt_tokens END), 0) AS prompt_tokens, \
             COALESCE(SUM(billed_completion_tokens), 0) AS completion_tokens, \
             COALESCE(SUM(billed_cached_tokens), 0) AS cached_tokens, \
             COALESCE(SUM(charged_grant_tokens), 0) AS grant_tokens, \
             COALESCE(SUM(charged_amount), 0) AS amount, \
             COALESCE(SUM(CASE WHEN {call} AND state = 'settled' THEN 1 ELSE 0 END), 0) AS tool_calls \
             FROM reservations WHERE tenant_id = $1 AND state <> 'open' \
             AND settled_at >= $2 AND settled_at < $3 GROUP BY grp ORDER BY grp",
            call = TOOL_CALL_SQL
        );
        let all: Vec<(String, i64, i64, i64, i64, i64, i64, i64)> = sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(ts(start))
            .bind(ts(end))
            .fetch_all(&self.pool)
            .await?;
        Ok(all.into_iter().map(UsageRow::from).collect())
    }
}
