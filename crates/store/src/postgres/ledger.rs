//! The account, ledger and reservations on PostgreSQL. A transaction locks the rows it will
//! change before it reads them (`FOR UPDATE`), so competing transactions queue.

use async_trait::async_trait;
use sqlx::{Postgres, Transaction};

use super::rows;
use super::PostgresStore;
use crate::accounting;
use crate::error::{Result, StoreError};
use crate::mcp::{McpCallRecord, McpStore};
use crate::model::{
    Debit, LedgerEntry, LedgerKind, NewReservation, PriceRates, Reservation, ReservationState,
    SettleWith, Settlement, Tenant, Timestamp, TokenUsage, UsageGroup, UsageRow,
};
use crate::{sql, LedgerStore};

type Tx = Transaction<'static, Postgres>;

async fn tenant_in(tx: &mut Tx, id: &str) -> Result<Tenant> {
    let sql = format!(
        "SELECT {} FROM tenants WHERE id = $1 FOR UPDATE",
        rows::TENANT
    );
    let row = sqlx::query(&sql).bind(id).fetch_optional(&mut **tx).await?;
    rows::tenant(&row.ok_or_else(|| StoreError::not_found("tenant", id))?)
}

/// The tenant and the model's price (or `default`) in one statement, the tenant locked.
async fn tenant_and_rates_in(
    tx: &mut Tx,
    id: &str,
    model: &str,
    default: PriceRates,
) -> Result<(Tenant, PriceRates)> {
    let sql = format!(
        "SELECT {}, prices.input_per_million, prices.output_per_million, \
         prices.cached_input_per_million FROM tenants \
         LEFT JOIN prices ON prices.served_model = $2 WHERE tenants.id = $1 FOR UPDATE OF tenants",
        rows::TENANT
    );
    let row = sqlx::query(&sql)
        .bind(id)
        .bind(model)
        .fetch_optional(&mut **tx)
        .await?;
    let row = row.ok_or_else(|| StoreError::not_found("tenant", id))?;
    Ok((rows::tenant(&row)?, rows::rates_or(&row, default)?))
}

async fn reservation_in(tx: &mut Tx, request_id: &str) -> Result<Reservation> {
    let sql = format!(
        "SELECT {} FROM reservations WHERE request_id = $1 FOR UPDATE",
        rows::RESERVATION
    );
    let row = sqlx::query(&sql)
        .bind(request_id)
        .fetch_optional(&mut **tx)
        .await?;
    rows::reservation(&row.ok_or_else(|| StoreError::not_found("reservation", request_id))?)
}

async fn append(
    tx: &mut Tx,
    tenant_id: &str,
    kind: LedgerKind,
    debit: Debit,
    key: &str,
    now: Timestamp,
) -> Result<u64> {
    append_all(tx, tenant_id, &[(kind, debit)], key, now).await
}

/// Appends entries that share a tenant, an idempotency key and a time, in one statement;
/// returns how many were new.
async fn append_all(
    tx: &mut Tx,
    tenant_id: &str,
    entries: &[(LedgerKind, Debit)],
    key: &str,
    now: Timestamp,
) -> Result<u64> {
    let values: Vec<String> = (0..entries.len())
        .map(|i| {
            let p = 4 + 3 * i;
            format!("($1, ${}, ${}, ${}, $2, $3)", p, p + 1, p + 2)
        })
        .collect();
    let sql = format!(
        "INSERT INTO ledger_entries (tenant_id, kind, tokens, amount, idempotency_key, \
         created_at) VALUES {} ON CONFLICT (idempotency_key, kind) DO NOTHING",
        values.join(", ")
    );
    let mut query = sqlx::query(&sql).bind(tenant_id).bind(key).bind(now);
    for (kind, debit) in entries {
        query = query
            .bind(kind.as_str())
            .bind(debit.grant_tokens)
            .bind(debit.amount);
    }
    Ok(query.execute(&mut **tx).await?.rows_affected())
}

impl PostgresStore {
    /// Settles `request_id` if open (and, with `expired_before`, only if its lease ended before
    /// that time). `None`: left open because its lease was renewed.
    async fn close(
        &self,
        request_id: &str,
        with: SettleWith,
        now: Timestamp,
        expired_before: Option<Timestamp>,
    ) -> Result<Option<Settlement>> {
        let mut tx = self.pool.begin().await?;
        let res = reservation_in(&mut tx, request_id).await?;
        if res.state != ReservationState::Open {
            return Ok(expired_before.map_or_else(|| res.settlement(true), |_| None));
        }
        if expired_before.is_some_and(|t| res.lease_expires_at >= t) {
            return Ok(None);
        }
        let closing = accounting::close(&res, with);
        sqlx::query(
            "UPDATE reservations SET state = $2, billed_prompt_tokens = $3, \
             billed_completion_tokens = $4, billed_cached_tokens = $5, \
             charged_grant_tokens = $6, charged_amount = $7, settled_at = $8 \
             WHERE request_id = $1 AND state = 'open'",
        )
        .bind(request_id)
        .bind(closing.state.as_str())
        .bind(closing.billed.prompt_tokens)
        .bind(closing.billed.completion_tokens)
        .bind(closing.billed.cached_tokens)
        .bind(closing.charged.grant_tokens)
        .bind(closing.charged.amount)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE tenants SET grant_tokens_used = grant_tokens_used + $2, \
             balance = balance - $3, grant_tokens_held = grant_tokens_held - $4, \
             amount_held = amount_held - $5 WHERE id = $1",
        )
        .bind(&res.tenant_id)
        .bind(closing.charged.grant_tokens)
        .bind(closing.charged.amount)
        .bind(res.hold.grant_tokens)
        .bind(res.hold.amount)
        .execute(&mut *tx)
        .await?;
        let (tenant, key) = (&res.tenant_id, request_id);
        let entries = [
            (LedgerKind::Charge, closing.charged),
            (LedgerKind::Release, closing.released),
        ];
        append_all(&mut tx, tenant, &entries, key, now).await?;
        tx.commit().await?;
        Ok(Some(Settlement {
            request_id: res.request_id,
            tenant_id: res.tenant_id,
            billed: closing.billed,
            charged: closing.charged,
            released: closing.released,
            already_settled: false,
        }))
    }
}

#[async_trait]
impl LedgerStore for PostgresStore {
    async fn top_up(
        &self,
        tenant_id: &str,
        amount: i64,
        idempotency_key: &str,
        now: Timestamp,
    ) -> Result<Tenant> {
        let mut tx = self.pool.begin().await?;
        tenant_in(&mut tx, tenant_id).await?;
        let debit = Debit {
            grant_tokens: 0,
            amount,
        };
        let key = idempotency_key;
        if append(&mut tx, tenant_id, LedgerKind::Topup, debit, key, now).await? == 0 {
            let same: Option<(String, i64)> = sqlx::query_as(
                "SELECT tenant_id, amount FROM ledger_entries \
                 WHERE idempotency_key = $1 AND kind = 'topup'",
            )
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            if same != Some((tenant_id.to_owned(), amount)) {
                return Err(StoreError::Conflict(format!(
                    "idempotency key '{key}' was used for another top-up"
                )));
            }
        } else {
            sqlx::query("UPDATE tenants SET balance = balance + $2 WHERE id = $1")
                .bind(tenant_id)
                .bind(amount)
                .execute(&mut *tx)
                .await?;
        }
        let tenant = tenant_in(&mut tx, tenant_id).await?;
        tx.commit().await?;
        Ok(tenant)
    }

    async fn ledger_entries(&self, tenant_id: &str) -> Result<Vec<LedgerEntry>> {
        sql::ledger::ledger_entries(self, tenant_id).await
    }

    async fn reserve(&self, new: &NewReservation) -> Result<Reservation> {
        let mut tx = self.pool.begin().await?;
        let (tenant, rates) =
            tenant_and_rates_in(&mut tx, &new.tenant_id, &new.model, new.default_rates).await?;
        let hold = accounting::hold_for(&tenant, new, &rates)?;
        let sql = format!(
            "INSERT INTO reservations (request_id, tenant_id, key_id, model, prompt_tokens, \
             max_completion_tokens, input_per_million, output_per_million, \
             cached_input_per_million, held_grant_tokens, held_amount, owner, \
             lease_expires_at, created_at, state) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'open') \
             RETURNING {}",
            rows::RESERVATION
        );
        let row = sqlx::query(&sql)
            .bind(&new.request_id)
            .bind(&new.tenant_id)
            .bind(&new.key_id)
            .bind(&new.model)
            .bind(new.prompt_tokens)
            .bind(new.max_completion_tokens)
            .bind(rates.input_per_million)
            .bind(rates.output_per_million)
            .bind(rates.cached_input_per_million)
            .bind(hold.grant_tokens)
            .bind(hold.amount)
            .bind(&new.owner)
            .bind(new.lease_expires_at)
            .bind(new.created_at)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| {
                StoreError::unique(e, || {
                    format!("request id '{}' was already reserved", new.request_id)
                })
            })?;
        sqlx::query(
            "UPDATE tenants SET grant_tokens_held = grant_tokens_held + $2, \
             amount_held = amount_held + $3 WHERE id = $1",
        )
        .bind(&new.tenant_id)
        .bind(hold.grant_tokens)
        .bind(hold.amount)
        .execute(&mut *tx)
        .await?;
        let (tenant_id, key, now) = (&new.tenant_id, &new.request_id, new.created_at);
        append(&mut tx, tenant_id, LedgerKind::Reserve, hold, key, now).await?;
        let reservation = rows::reservation(&row)?;
        tx.commit().await?;
        Ok(reservation)
    }

    async fn reservation(&self, request_id: &str) -> Result<Reservation> {
        sql::ledger::reservation(self, request_id).await
    }

    async fn resize_reservation(
        &self,
        request_id: &str,
        prompt_tokens: i64,
        max_completion_tokens: i64,
        now: Timestamp,
    ) -> Result<Reservation> {
        let mut tx = self.pool.begin().await?;
        let res = reservation_in(&mut tx, request_id).await?;
        if res.state != ReservationState::Open {
            return Ok(res);
        }
        let tenant = tenant_in(&mut tx, &res.tenant_id).await?;
        let change = accounting::resize(&tenant, &res, prompt_tokens, max_completion_tokens)?;
        let key = accounting::resize_key(request_id);
        for (kind, debit) in [
            (LedgerKind::Reserve, change.taken),
            (LedgerKind::Release, change.returned),
        ] {
            if debit != Debit::default()
                && append(&mut tx, &res.tenant_id, kind, debit, &key, now).await? == 0
            {
                return Err(StoreError::Conflict(format!(
                    "reservation '{request_id}' was already resized"
                )));
            }
        }
        let sql = format!(
            "UPDATE reservations SET prompt_tokens = $2, max_completion_tokens = $3, \
             held_grant_tokens = $4, held_amount = $5 WHERE request_id = $1 RETURNING {}",
            rows::RESERVATION
        );
        let row = sqlx::query(&sql)
            .bind(request_id)
            .bind(prompt_tokens)
            .bind(max_completion_tokens)
            .bind(change.hold.grant_tokens)
            .bind(change.hold.amount)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE tenants SET grant_tokens_held = grant_tokens_held + $2, \
             amount_held = amount_held + $3 WHERE id = $1",
        )
        .bind(&res.tenant_id)
        .bind(change.hold.grant_tokens - res.hold.grant_tokens)
        .bind(change.hold.amount - res.hold.amount)
        .execute(&mut *tx)
        .await?;
        let resized = rows::reservation(&row)?;
        tx.commit().await?;
        Ok(resized)
    }

    async fn record_progress(
        &self,
        request_id: &str,
        delivered: &TokenUsage,
        now: Timestamp,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE reservations SET delivered_prompt_tokens = $2, \
             delivered_completion_tokens = GREATEST(COALESCE(delivered_completion_tokens, 0), $3), \
             delivered_cached_tokens = $4, progress_at = $5 \
             WHERE request_id = $1 AND state = 'open'",
        )
        .bind(request_id)
        .bind(delivered.prompt_tokens)
        .bind(delivered.completion_tokens)
        .bind(delivered.cached_tokens)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            // Closed already (fine) or unknown (an error).
            self.reservation(request_id).await?;
        }
        Ok(())
    }

    async fn settle(
        &self,
        request_id: &str,
        with: SettleWith,
        now: Timestamp,
    ) -> Result<Settlement> {
        self.close(request_id, with, now, None)
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
        let settled = self.settle(&audit.id, with, now).await?;
        audit.charged = settled.charged.amount;
        self.record_mcp_call(&audit).await?;
        Ok(settled)
    }

    async fn renew_leases(&self, owner: &str, until: Timestamp) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE reservations SET lease_expires_at = $2 WHERE owner = $1 AND state = 'open'",
        )
        .bind(owner)
        .bind(until)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn expired_reservations(
        &self,
        except_owner: &str,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<Reservation>> {
        sql::ledger::expired_reservations(self, except_owner, now, limit).await
    }

    async fn settle_expired(&self, request_id: &str, now: Timestamp) -> Result<Option<Settlement>> {
        self.close(request_id, SettleWith::Progress, now, Some(now))
            .await
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
