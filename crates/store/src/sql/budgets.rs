//! Budgets, their alert events and webhook secrets, on either database.

use async_trait::async_trait;

use super::{args, Db, Exec};
use crate::budgets::{BudgetEvent, BudgetRecord, BudgetStore, Spent};
use crate::error::{Result, StoreError};
use crate::model::Timestamp;
use crate::rows::Columns;

const BUDGET_COLUMNS: &str =
    "subject, tenant_id, amount, period, alert_at, webhook_url, updated_at";
const EVENT_COLUMNS: &str = "id, tenant_id, subject, period_start, threshold_ppm, amount, spent, \
     webhook_url, created_at, attempts, next_attempt_at, delivered_at, last_error";

fn budget_row(row: &impl Columns) -> Result<BudgetRecord> {
    let alert_at = row.text("alert_at")?;
    let alert_at_ppm = alert_at
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<i64>()
                .map_err(|_| StoreError::Corrupt(format!("budget alert_at '{alert_at}'")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(BudgetRecord {
        subject: row.text("subject")?,
        tenant_id: row.text("tenant_id")?,
        amount: row.int("amount")?,
        period: row.text("period")?,
        alert_at_ppm,
        webhook_url: row.opt_text("webhook_url")?,
        updated_at: row.time("updated_at")?,
    })
}

fn event_row(row: &impl Columns) -> Result<BudgetEvent> {
    Ok(BudgetEvent {
        id: row.text("id")?,
        tenant_id: row.text("tenant_id")?,
        subject: row.text("subject")?,
        period_start: row.time("period_start")?,
        threshold_ppm: row.int("threshold_ppm")?,
        amount: row.int("amount")?,
        spent: row.int("spent")?,
        webhook_url: row.opt_text("webhook_url")?,
        created_at: row.time("created_at")?,
        attempts: row.int("attempts")?,
        next_attempt_at: row.time("next_attempt_at")?,
        delivered_at: row.opt_time("delivered_at")?,
        last_error: row.opt_text("last_error")?,
    })
}

#[async_trait]
impl<D: Db> BudgetStore for D {
    async fn put_budget(&self, b: &BudgetRecord) -> Result<()> {
        let alert_at = b
            .alert_at_ppm
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        self.reader()
            .execute(
                "INSERT INTO budgets (subject, tenant_id, amount, period, alert_at, webhook_url, \
                 updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (subject) DO UPDATE SET amount = excluded.amount, \
                 period = excluded.period, alert_at = excluded.alert_at, \
                 webhook_url = excluded.webhook_url, updated_at = excluded.updated_at",
                &args![
                    &b.subject,
                    &b.tenant_id,
                    b.amount,
                    &b.period,
                    alert_at.as_str(),
                    &b.webhook_url,
                    b.updated_at
                ],
            )
            .await?;
        Ok(())
    }

    async fn delete_budget(&self, subject: &str) -> Result<bool> {
        Ok(self
            .reader()
            .execute("DELETE FROM budgets WHERE subject = $1", &args![subject])
            .await?
            > 0)
    }

    async fn budget(&self, subject: &str) -> Result<Option<BudgetRecord>> {
        self.reader()
            .fetch_optional(
                &format!("SELECT {BUDGET_COLUMNS} FROM budgets WHERE subject = $1"),
                &args![subject],
            )
            .await?
            .as_ref()
            .map(budget_row)
            .transpose()
    }

    async fn budgets(&self, tenant_id: &str) -> Result<Vec<BudgetRecord>> {
        self.reader()
            .fetch_all(
                &format!(
                    "SELECT {BUDGET_COLUMNS} FROM budgets WHERE tenant_id = $1 ORDER BY subject"
                ),
                &args![tenant_id],
            )
            .await?
            .iter()
            .map(budget_row)
            .collect()
    }

    async fn spent(
        &self,
        tenant_id: &str,
        key_id: Option<&str>,
        since: Timestamp,
    ) -> Result<Spent> {
        let (column, id) = match key_id {
            Some(key) => ("key_id", key),
            None => ("tenant_id", tenant_id),
        };
        let row = self
            .reader()
            .fetch_one(
                &format!(
                    "SELECT \
                     (SELECT CAST(COALESCE(SUM(charged_amount), 0) AS BIGINT) FROM reservations \
                      WHERE {column} = $1 AND settled_at >= $2) AS settled, \
                     (SELECT CAST(COALESCE(SUM(held_amount), 0) AS BIGINT) FROM reservations \
                      WHERE {column} = $1 AND state = 'open') AS held"
                ),
                &args![id, since],
            )
            .await?;
        Ok(Spent {
            settled: row.int("settled")?,
            held: row.int("held")?,
        })
    }

    async fn record_budget_event(&self, e: &BudgetEvent) -> Result<bool> {
        let inserted = self
            .reader()
            .execute(
                &format!(
                    "INSERT INTO budget_events ({EVENT_COLUMNS}) VALUES \
                     ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                     ON CONFLICT (subject, period_start, threshold_ppm) DO NOTHING"
                ),
                &args![
                    &e.id,
                    &e.tenant_id,
                    &e.subject,
                    e.period_start,
                    e.threshold_ppm,
                    e.amount,
                    e.spent,
                    &e.webhook_url,
                    e.created_at,
                    e.attempts,
                    e.next_attempt_at,
                    e.delivered_at,
                    &e.last_error
                ],
            )
            .await?;
        Ok(inserted > 0)
    }

    async fn budget_events(
        &self,
        tenant_id: &str,
        limit: i64,
        before: Option<&str>,
    ) -> Result<Vec<BudgetEvent>> {
        let rows = match before {
            None => {
                self.reader()
                    .fetch_all(
                        &format!(
                            "SELECT {EVENT_COLUMNS} FROM budget_events WHERE tenant_id = $1 \
                             ORDER BY created_at DESC, id DESC LIMIT $2"
                        ),
                        &args![tenant_id, limit],
                    )
                    .await?
            }
            Some(before) => {
                self.reader()
                    .fetch_all(
                        &format!(
                            "SELECT {EVENT_COLUMNS} FROM budget_events b WHERE tenant_id = $1 \
                             AND EXISTS (SELECT 1 FROM budget_events c WHERE c.id = $3 \
                             AND c.tenant_id = $1 AND (b.created_at < c.created_at \
                             OR (b.created_at = c.created_at AND b.id < c.id))) \
                             ORDER BY created_at DESC, id DESC LIMIT $2"
                        ),
                        &args![tenant_id, limit, before],
                    )
                    .await?
            }
        };
        rows.iter().map(event_row).collect()
    }

    async fn due_budget_events(
        &self,
        now: Timestamp,
        max_attempts: i64,
        limit: i64,
    ) -> Result<Vec<BudgetEvent>> {
        self.reader()
            .fetch_all(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM budget_events WHERE delivered_at IS NULL \
                     AND webhook_url IS NOT NULL AND next_attempt_at <= $1 AND attempts < $2 \
                     ORDER BY next_attempt_at LIMIT $3"
                ),
                &args![now, max_attempts, limit],
            )
            .await?
            .iter()
            .map(event_row)
            .collect()
    }

    async fn claim_budget_event(
        &self,
        id: &str,
        attempts: i64,
        next_attempt_at: Timestamp,
    ) -> Result<bool> {
        Ok(self
            .reader()
            .execute(
                "UPDATE budget_events SET attempts = attempts + 1, next_attempt_at = $3 \
                 WHERE id = $1 AND attempts = $2 AND delivered_at IS NULL",
                &args![id, attempts, next_attempt_at],
            )
            .await?
            > 0)
    }

    async fn finish_budget_event(
        &self,
        id: &str,
        delivered_at: Option<Timestamp>,
        error: Option<&str>,
    ) -> Result<()> {
        self.reader()
            .execute(
                "UPDATE budget_events SET delivered_at = $2, last_error = $3 WHERE id = $1",
                &args![id, delivered_at, super::Arg::Text(error)],
            )
            .await?;
        Ok(())
    }

    async fn webhook_secret(&self, tenant_id: &str) -> Result<Option<String>> {
        self.reader()
            .fetch_optional(
                "SELECT secret FROM budget_webhooks WHERE tenant_id = $1",
                &args![tenant_id],
            )
            .await?
            .map(|row| row.text("secret"))
            .transpose()
    }

    async fn put_webhook_secret(
        &self,
        tenant_id: &str,
        secret: &str,
        now: Timestamp,
        replace: bool,
    ) -> Result<bool> {
        let on_conflict = if replace {
            "DO UPDATE SET secret = excluded.secret, created_at = excluded.created_at"
        } else {
            "DO NOTHING"
        };
        Ok(self
            .reader()
            .execute(
                &format!(
                    "INSERT INTO budget_webhooks (tenant_id, secret, created_at) \
                     VALUES ($1, $2, $3) ON CONFLICT (tenant_id) {on_conflict}"
                ),
                &args![tenant_id, secret, now],
            )
            .await?
            > 0)
    }

    async fn webhook_secrets(&self) -> Result<Vec<(String, String)>> {
        let rows = self
            .reader()
            .fetch_all(
                "SELECT tenant_id, secret FROM budget_webhooks ORDER BY tenant_id",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| Ok((row.text("tenant_id")?, row.text("secret")?)))
            .collect()
    }

    async fn reseal_webhook_secret(&self, tenant_id: &str, old: &str, new: &str) -> Result<bool> {
        Ok(self
            .reader()
            .execute(
                "UPDATE budget_webhooks SET secret = $3 WHERE tenant_id = $1 AND secret = $2",
                &args![tenant_id, old, new],
            )
            .await?
            > 0)
    }
}
