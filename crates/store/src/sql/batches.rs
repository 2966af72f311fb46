//! The Batch API's rows, on either database (see `crate::batches`).

use async_trait::async_trait;

use super::{args, Arg, Db, Exec, WriteTx};
use crate::batches::{
    BatchCreate, BatchLine, BatchPage, BatchRecord, BatchStore, LineEnd, LineState, BATCH_STATUSES,
};
use crate::error::{Result, StoreError};
use crate::model::Timestamp;
use crate::rows::Columns;

const COLUMNS: &str = "id, tenant_id, key_id, endpoint, model, input_file_id, \
    completion_window, status, output_file_id, error_file_id, errors, metadata, total, \
    completed, failed, created_at, in_progress_at, finalizing_at, completed_at, failed_at, \
    expired_at, cancelling_at, cancelled_at, expires_at";

const LINE_COLUMNS: &str =
    "line_no, custom_id, body, state, attempt, result, error_code, error_message, est_tokens";

/// The final statuses: nothing moves a batch out of them.
const FINAL: &str = "('completed', 'failed', 'expired', 'cancelled')";

fn batch_row(row: &impl Columns) -> Result<BatchRecord> {
    Ok(BatchRecord {
        id: row.text("id")?,
        tenant_id: row.text("tenant_id")?,
        key_id: row.opt_text("key_id")?,
        endpoint: row.text("endpoint")?,
        model: row.opt_text("model")?,
        input_file_id: row.text("input_file_id")?,
        completion_window: row.text("completion_window")?,
        status: row.text("status")?,
        output_file_id: row.opt_text("output_file_id")?,
        error_file_id: row.opt_text("error_file_id")?,
        errors: row.opt_text("errors")?,
        metadata: row.opt_text("metadata")?,
        total: row.int("total")?,
        completed: row.int("completed")?,
        failed: row.int("failed")?,
        created_at: row.time("created_at")?,
        in_progress_at: row.opt_time("in_progress_at")?,
        finalizing_at: row.opt_time("finalizing_at")?,
        completed_at: row.opt_time("completed_at")?,
        failed_at: row.opt_time("failed_at")?,
        expired_at: row.opt_time("expired_at")?,
        cancelling_at: row.opt_time("cancelling_at")?,
        cancelled_at: row.opt_time("cancelled_at")?,
        expires_at: row.time("expires_at")?,
    })
}

fn line_row(row: &impl Columns) -> Result<BatchLine> {
    let state = row.text("state")?;
    Ok(BatchLine {
        line_no: row.int("line_no")?,
        custom_id: row.text("custom_id")?,
        body: row.opt_text("body")?,
        state: LineState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("batch line state '{state}'")))?,
        attempt: row.int("attempt")?,
        result: row.opt_text("result")?,
        error_code: row.opt_text("error_code")?,
        error_message: row.opt_text("error_message")?,
        est_tokens: row.int("est_tokens")?,
    })
}

/// A tenant's enqueued batch tokens (`$1`: the tenant), as `enqueued`.
fn enqueued_sql() -> String {
    format!(
        "SELECT CAST(COALESCE(SUM(l.est_tokens), 0) AS BIGINT) AS enqueued \
         FROM batch_lines l \
         JOIN batches b ON b.id = l.batch_id WHERE b.tenant_id = $1 \
         AND b.status NOT IN {FINAL} AND l.state = 'pending'"
    )
}

/// `status IN ('a', 'b')` for statuses of [`BATCH_STATUSES`] (anything else is refused, so
/// nothing but those names reaches the statement).
fn status_in(from: &[&str]) -> Result<String> {
    let known = from
        .iter()
        .map(|s| known_status(s).map(|s| format!("'{s}'")))
        .collect::<Result<Vec<_>>>()?;
    Ok(format!("status IN ({})", known.join(", ")))
}

fn known_status(status: &str) -> Result<&'static str> {
    BATCH_STATUSES
        .iter()
        .find(|s| **s == status)
        .copied()
        .ok_or_else(|| StoreError::Corrupt(format!("unknown batch status '{status}'")))
}

/// `SET status = $1, {to}_at = $2` for a status that has a time.
fn set_status(to: &str) -> Result<String> {
    let to = known_status(to)?;
    if to == "validating" {
        return Err(StoreError::Corrupt(
            "a batch does not go back to validating".into(),
        ));
    }
    Ok(format!("status = $1, {to}_at = $2"))
}

#[async_trait]
impl<D: Db> BatchStore for D {
    async fn create_batch(
        &self,
        b: &BatchRecord,
        lines: &[BatchLine],
        max_enqueued: Option<i64>,
        lease: Option<(&str, Timestamp)>,
    ) -> Result<BatchCreate> {
        let mut tx = self.write().await?;
        // One tenant's creations take turns, so concurrent ones cannot pass the limit together.
        if let Some(lock) = D::LOCK_KEY {
            let key = format!("batch_tokens:{}", b.tenant_id);
            tx.execute(lock, &args![key.as_str()]).await?;
        }
        let tenant = tx
            .fetch_optional(
                "SELECT deleted_at FROM tenants WHERE id = $1",
                &args![&b.tenant_id],
            )
            .await?;
        match tenant {
            Some(row) if row.opt_time("deleted_at")?.is_none() => {}
            _ => return Err(StoreError::not_found("tenant", &b.tenant_id)),
        }
        if let Some(limit) = max_enqueued {
            let row = tx.fetch_one(&enqueued_sql(), &args![&b.tenant_id]).await?;
            let enqueued = row.int("enqueued")?;
            let adding = lines
                .iter()
                .filter(|l| l.state == LineState::Pending)
                .fold(0i64, |sum, l| sum.saturating_add(l.est_tokens));
            if enqueued.saturating_add(adding) > limit {
                return Ok(BatchCreate::OverLimit { enqueued, limit });
            }
        }
        let sql = format!(
            "INSERT INTO batches ({COLUMNS}, lease_owner, lease_expires_at) VALUES ($1, $2, $3, \
             $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, \
             $22, $23, $24, $25, $26)"
        );
        let (owner, until) = (lease.map(|l| l.0.to_owned()), lease.map(|l| l.1));
        tx.execute(
            &sql,
            &args![
                &b.id,
                &b.tenant_id,
                &b.key_id,
                &b.endpoint,
                &b.model,
                &b.input_file_id,
                &b.completion_window,
                &b.status,
                &b.output_file_id,
                &b.error_file_id,
                &b.errors,
                &b.metadata,
                b.total,
                b.completed,
                b.failed,
                b.created_at,
                b.in_progress_at,
                b.finalizing_at,
                b.completed_at,
                b.failed_at,
                b.expired_at,
                b.cancelling_at,
                b.cancelled_at,
                b.expires_at,
                &owner,
                until
            ],
        )
        .await
        .map_err(|e| StoreError::unique(e, || format!("batch '{}' already exists", b.id)))?;
        let sql = format!(
            "INSERT INTO batch_lines (batch_id, {LINE_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        );
        for l in lines {
            tx.execute(
                &sql,
                &args![
                    &b.id,
                    l.line_no,
                    &l.custom_id,
                    &l.body,
                    l.state.as_str(),
                    l.attempt,
                    &l.result,
                    &l.error_code,
                    &l.error_message,
                    l.est_tokens
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(BatchCreate::Created)
    }

    async fn enqueued_batch_tokens(&self, tenant_id: &str) -> Result<i64> {
        let row = self
            .reader()
            .fetch_one(&enqueued_sql(), &args![tenant_id])
            .await?;
        row.int("enqueued")
    }

    async fn claim_batch(
        &self,
        id: &str,
        owner: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<bool> {
        let sql = format!(
            "UPDATE batches SET lease_owner = $1, lease_expires_at = $2 WHERE id = $3 \
             AND status NOT IN {FINAL} AND (lease_owner IS NULL OR lease_owner = $1 \
             OR lease_expires_at IS NULL OR lease_expires_at < $4)"
        );
        let mut tx = self.write().await?;
        let changed = tx.execute(&sql, &args![owner, until, id, now]).await?;
        tx.commit().await?;
        Ok(changed > 0)
    }

    async fn renew_batch_lease(&self, id: &str, owner: &str, until: Timestamp) -> Result<bool> {
        let mut tx = self.write().await?;
        let changed = tx
            .execute(
                "UPDATE batches SET lease_expires_at = $1 WHERE id = $2 AND lease_owner = $3",
                &args![until, id, owner],
            )
            .await?;
        tx.commit().await?;
        Ok(changed > 0)
    }

    async fn release_batch_lease(&self, id: &str, owner: &str) -> Result<()> {
        let mut tx = self.write().await?;
        tx.execute(
            "UPDATE batches SET lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND lease_owner = $2",
            &args![id, owner],
        )
        .await?;
        tx.commit().await
    }

    async fn unleased_batches(&self, now: Timestamp) -> Result<Vec<BatchRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM batches WHERE status NOT IN {FINAL} AND (lease_owner IS NULL \
             OR lease_expires_at IS NULL OR lease_expires_at < $1) ORDER BY created_at, id"
        );
        let rows = self.reader().fetch_all(&sql, &args![now]).await?;
        rows.iter().map(batch_row).collect()
    }

    async fn batch(&self, tenant_id: &str, id: &str) -> Result<BatchRecord> {
        let sql = format!("SELECT {COLUMNS} FROM batches WHERE id = $1 AND tenant_id = $2");
        let row = self
            .reader()
            .fetch_optional(&sql, &args![id, tenant_id])
            .await?
            .ok_or_else(|| StoreError::not_found("batch", id))?;
        batch_row(&row)
    }

    async fn batch_by_id(&self, id: &str) -> Result<BatchRecord> {
        let sql = format!("SELECT {COLUMNS} FROM batches WHERE id = $1");
        let row = self
            .reader()
            .fetch_optional(&sql, &args![id])
            .await?
            .ok_or_else(|| StoreError::not_found("batch", id))?;
        batch_row(&row)
    }

    async fn batches(&self, tenant_id: &str, after: Option<&str>, limit: i64) -> Result<BatchPage> {
        let mut ex = self.reader();
        let mut sql = format!("SELECT {COLUMNS} FROM batches WHERE tenant_id = $1");
        let cursor: (Timestamp, String);
        let mut binds: Vec<Arg<'_>> = vec![Arg::from(tenant_id)];
        if let Some(after) = after {
            let row = ex
                .fetch_optional(
                    "SELECT created_at, id FROM batches WHERE id = $1 AND tenant_id = $2",
                    &args![after, tenant_id],
                )
                .await?
                .ok_or_else(|| StoreError::not_found("batch", after))?;
            cursor = (row.time("created_at")?, row.text("id")?);
            binds.push(Arg::from(cursor.0));
            binds.push(Arg::from(&cursor.1));
            sql.push_str(" AND (created_at < $2 OR (created_at = $2 AND id < $3))");
        }
        let limit = limit.max(0);
        sql.push_str(&format!(
            " ORDER BY created_at DESC, id DESC LIMIT {}",
            limit.saturating_add(1)
        ));
        let rows = ex.fetch_all(&sql, &binds).await?;
        let mut batches = rows.iter().map(batch_row).collect::<Result<Vec<_>>>()?;
        let has_more = batches.len() as i64 > limit;
        batches.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(BatchPage { batches, has_more })
    }

    async fn unfinished_batches(&self) -> Result<Vec<BatchRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM batches WHERE status NOT IN {FINAL} ORDER BY created_at, id"
        );
        let rows = self.reader().fetch_all(&sql, &[]).await?;
        rows.iter().map(batch_row).collect()
    }

    async fn transition_batch(
        &self,
        id: &str,
        from: &[&str],
        to: &str,
        now: Timestamp,
    ) -> Result<Option<BatchRecord>> {
        self.finish_batch(id, from, to, (None, None), None, now)
            .await
    }

    async fn finish_batch(
        &self,
        id: &str,
        from: &[&str],
        to: &str,
        (output, error): (Option<&str>, Option<&str>),
        errors: Option<&str>,
        now: Timestamp,
    ) -> Result<Option<BatchRecord>> {
        let sql = format!(
            "UPDATE batches SET {}, output_file_id = COALESCE($3, output_file_id), \
             error_file_id = COALESCE($4, error_file_id), errors = COALESCE($5, errors) \
             WHERE id = $6 AND {} RETURNING {COLUMNS}",
            set_status(to)?,
            status_in(from)?
        );
        let (output, error, errors) = (
            output.map(str::to_owned),
            error.map(str::to_owned),
            errors.map(str::to_owned),
        );
        let mut tx = self.write().await?;
        let row = tx
            .fetch_optional(&sql, &args![to, now, &output, &error, &errors, id])
            .await?;
        tx.commit().await?;
        row.as_ref().map(batch_row).transpose()
    }

    async fn pending_lines(
        &self,
        batch_id: &str,
        after_line: i64,
        limit: i64,
    ) -> Result<Vec<BatchLine>> {
        let sql = format!(
            "SELECT {LINE_COLUMNS} FROM batch_lines WHERE batch_id = $1 AND state = 'pending' \
             AND line_no > $2 ORDER BY line_no LIMIT {}",
            limit.max(0)
        );
        let rows = self
            .reader()
            .fetch_all(&sql, &args![batch_id, after_line])
            .await?;
        rows.iter().map(line_row).collect()
    }

    async fn start_line(&self, batch_id: &str, line_no: i64) -> Result<Option<i64>> {
        let mut tx = self.write().await?;
        let row = tx
            .fetch_optional(
                "UPDATE batch_lines SET attempt = attempt + 1 WHERE batch_id = $1 \
                 AND line_no = $2 AND state = 'pending' RETURNING attempt",
                &args![batch_id, line_no],
            )
            .await?;
        tx.commit().await?;
        row.map(|r| r.int("attempt")).transpose()
    }

    async fn finish_line(&self, batch_id: &str, line_no: i64, end: &LineEnd<'_>) -> Result<bool> {
        let counter = match end.state {
            LineState::Done => "completed",
            LineState::Failed => "failed",
            LineState::Pending => {
                return Err(StoreError::Corrupt("a line cannot end pending".into()))
            }
        };
        let (result, code, message) = (
            end.result.map(str::to_owned),
            end.error_code.map(str::to_owned),
            end.error_message.map(str::to_owned),
        );
        let mut tx = self.write().await?;
        let changed = tx
            .execute(
                "UPDATE batch_lines SET state = $1, result = $2, error_code = $3, \
                 error_message = $4 WHERE batch_id = $5 AND line_no = $6 AND state = 'pending'",
                &args![
                    end.state.as_str(),
                    &result,
                    &code,
                    &message,
                    batch_id,
                    line_no
                ],
            )
            .await?;
        if changed == 0 {
            return Ok(false);
        }
        tx.execute(
            &format!("UPDATE batches SET {counter} = {counter} + 1 WHERE id = $1"),
            &args![batch_id],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn fail_pending_lines(&self, batch_id: &str, code: &str, message: &str) -> Result<i64> {
        let mut tx = self.write().await?;
        let failed = tx
            .execute(
                "UPDATE batch_lines SET state = 'failed', error_code = $1, error_message = $2 \
                 WHERE batch_id = $3 AND state = 'pending'",
                &args![code, message, batch_id],
            )
            .await?;
        let failed = i64::try_from(failed).unwrap_or(i64::MAX);
        tx.execute(
            "UPDATE batches SET failed = failed + $1 WHERE id = $2",
            &args![failed, batch_id],
        )
        .await?;
        tx.commit().await?;
        Ok(failed)
    }

    async fn batch_lines(
        &self,
        batch_id: &str,
        after_line: i64,
        limit: i64,
    ) -> Result<Vec<BatchLine>> {
        let sql = format!(
            "SELECT {LINE_COLUMNS} FROM batch_lines WHERE batch_id = $1 AND line_no > $2 \
             ORDER BY line_no LIMIT {}",
            limit.max(0)
        );
        let rows = self
            .reader()
            .fetch_all(&sql, &args![batch_id, after_line])
            .await?;
        rows.iter().map(line_row).collect()
    }
}
