//! The account, ledger and reservations on SQLite. Reads go through the sqlx pool; every write
//! is a job for the ledger writer (see `writer` and `ledger_writes`).

use async_trait::async_trait;

use super::exec::Statement;
use super::ledger_writes as writes;
use super::SqliteStore;
use crate::error::{Result, StoreError};
use crate::mcp::McpCallRecord;
use crate::model::{
    LedgerEntry, NewReservation, Reservation, SettleWith, Settlement, Tenant, Timestamp,
    TokenUsage, UsageGroup, UsageRow,
};
use crate::{sql, LedgerStore};

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

    async fn settle_audited(
        &self,
        with: SettleWith,
        now: Timestamp,
        mut audit: McpCallRecord,
    ) -> Result<Settlement> {
        self.ledger
            .run(move |conn| {
                let settled =
                    writes::close(conn, &audit.id, with, now, None)?.ok_or_else(|| {
                        StoreError::Corrupt(format!("call '{}' not closed", audit.id))
                    })?;
                audit.charged = settled.charged.amount;
                Statement::new(sql::mcp::INSERT_CALL, &sql::mcp::call_args(&audit))
                    .execute(conn)?;
                Ok(settled)
            })
            .await
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
        sql::ledger::ledger_entries(self, tenant_id).await
    }

    async fn reservation(&self, request_id: &str) -> Result<Reservation> {
        sql::ledger::reservation(self, request_id).await
    }

    async fn expired_reservations(
        &self,
        except_owner: &str,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<Reservation>> {
        sql::ledger::expired_reservations(self, except_owner, now, limit).await
    }

    async fn usage(
        &self,
        tenant_id: &str,
        start: Timestamp,
        end: Timestamp,
        group: UsageGroup,
    ) -> Result<Vec<UsageRow>> {
        sql::ledger::usage(self, tenant_id, start, end, group).await
    }
}
