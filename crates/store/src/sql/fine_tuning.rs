//! Fine-tuning jobs' rows, on either database (see `crate::fine_tuning`).

use async_trait::async_trait;

use super::{args, Arg, Db, Exec, WriteTx};
use crate::error::{Result, StoreError};
use crate::fine_tuning::{
    FineTuningCheckpoint, FineTuningCheckpointPage, FineTuningEvent, FineTuningEventPage,
    FineTuningJob, FineTuningJobPage, FineTuningStore, FINE_TUNING_ACTIVE, FINE_TUNING_STATUSES,
};
use crate::model::Timestamp;
use crate::rows::Columns;

const COLUMNS: &str = "id, tenant_id, key_id, model, suffix, fine_tuned_model, status, \
    training_file, validation_file, hyperparameters, seed, error, total_tokens, trained_tokens, \
    attempt, billed_tokens, created_at, finished_at, estimated_finish, metadata, hub_repo";

fn job_row(row: &impl Columns) -> Result<FineTuningJob> {
    Ok(FineTuningJob {
        id: row.text("id")?,
        tenant_id: row.text("tenant_id")?,
        key_id: row.opt_text("key_id")?,
        model: row.text("model")?,
        suffix: row.opt_text("suffix")?,
        fine_tuned_model: row.opt_text("fine_tuned_model")?,
        status: row.text("status")?,
        training_file: row.text("training_file")?,
        validation_file: row.opt_text("validation_file")?,
        hyperparameters: row.text("hyperparameters")?,
        seed: row.int("seed")?,
        error: row.opt_text("error")?,
        total_tokens: row.opt_int("total_tokens")?,
        trained_tokens: row.opt_int("trained_tokens")?,
        attempt: row.int("attempt")?,
        billed_tokens: row.int("billed_tokens")?,
        created_at: row.time("created_at")?,
        finished_at: row.opt_time("finished_at")?,
        estimated_finish: row.opt_time("estimated_finish")?,
        metadata: row.opt_text("metadata")?,
        hub_repo: row.opt_text("hub_repo")?,
    })
}

/// `status IN ('a', 'b')` for statuses of [`FINE_TUNING_STATUSES`] (anything else is refused,
/// so nothing but those names reaches the statement).
fn status_in(from: &[&str]) -> Result<String> {
    let known = from
        .iter()
        .map(|s| {
            FINE_TUNING_STATUSES
                .iter()
                .find(|k| *k == s)
                .map(|k| format!("'{k}'"))
                .ok_or_else(|| StoreError::Corrupt(format!("unknown fine-tuning status '{s}'")))
        })
        .collect::<Result<Vec<_>>>()?;
    if known.is_empty() {
        return Err(StoreError::Corrupt("no fine-tuning status given".into()));
    }
    Ok(format!("status IN ({})", known.join(", ")))
}

#[async_trait]
impl<D: Db> FineTuningStore for D {
    async fn create_fine_tuning_job(&self, j: &FineTuningJob, max_active: i64) -> Result<bool> {
        status_in(&[j.status.as_str()])?;
        let mut tx = self.write().await?;
        // Locks the tenant's row on PostgreSQL, so concurrent creations count one another.
        let sql = format!(
            "SELECT deleted_at FROM tenants WHERE id = $1{}",
            D::LOCK_ROWS
        );
        let tenant = tx.fetch_optional(&sql, &args![&j.tenant_id]).await?;
        match tenant {
            Some(row) if row.opt_time("deleted_at")?.is_none() => {}
            _ => return Err(StoreError::not_found("tenant", &j.tenant_id)),
        }
        let sql = format!(
            "SELECT COUNT(*) AS n FROM fine_tuning_jobs WHERE tenant_id = $1 AND {}",
            status_in(&FINE_TUNING_ACTIVE)?
        );
        let active = tx.fetch_one(&sql, &args![&j.tenant_id]).await?.int("n")?;
        if active >= max_active {
            return Ok(false);
        }
        let sql = format!(
            "INSERT INTO fine_tuning_jobs ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
             $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
        );
        tx.execute(
            &sql,
            &args![
                &j.id,
                &j.tenant_id,
                &j.key_id,
                &j.model,
                &j.suffix,
                &j.fine_tuned_model,
                &j.status,
                &j.training_file,
                &j.validation_file,
                &j.hyperparameters,
                j.seed,
                &j.error,
                j.total_tokens,
                j.trained_tokens,
                j.attempt,
                j.billed_tokens,
                j.created_at,
                j.finished_at,
                j.estimated_finish,
                &j.metadata,
                &j.hub_repo
            ],
        )
        .await
        .map_err(|e| {
            StoreError::unique(e, || format!("fine-tuning job '{}' already exists", j.id))
        })?;
        tx.commit().await?;
        Ok(true)
    }

    async fn fine_tuning_job(&self, tenant_id: &str, id: &str) -> Result<FineTuningJob> {
        let sql =
            format!("SELECT {COLUMNS} FROM fine_tuning_jobs WHERE id = $1 AND tenant_id = $2");
        let row = self
            .reader()
            .fetch_optional(&sql, &args![id, tenant_id])
            .await?
            .ok_or_else(|| StoreError::not_found("fine_tuning_job", id))?;
        job_row(&row)
    }

    async fn fine_tuning_job_by_id(&self, id: &str) -> Result<FineTuningJob> {
        let sql = format!("SELECT {COLUMNS} FROM fine_tuning_jobs WHERE id = $1");
        let row = self
            .reader()
            .fetch_optional(&sql, &args![id])
            .await?
            .ok_or_else(|| StoreError::not_found("fine_tuning_job", id))?;
        job_row(&row)
    }

    async fn fine_tuning_jobs(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<FineTuningJobPage> {
        let mut ex = self.reader();
        let mut sql = format!("SELECT {COLUMNS} FROM fine_tuning_jobs WHERE tenant_id = $1");
        let cursor: (Timestamp, String);
        let mut binds: Vec<Arg<'_>> = vec![Arg::from(tenant_id)];
        if let Some(after) = after {
            let row = ex
                .fetch_optional(
                    "SELECT created_at, id FROM fine_tuning_jobs WHERE id = $1 AND tenant_id = $2",
                    &args![after, tenant_id],
                )
                .await?
                .ok_or_else(|| StoreError::not_found("fine_tuning_job", after))?;
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
        let mut jobs = rows.iter().map(job_row).collect::<Result<Vec<_>>>()?;
        let has_more = jobs.len() as i64 > limit;
        jobs.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(FineTuningJobPage { jobs, has_more })
    }

    async fn fine_tuning_jobs_in(&self, statuses: &[&str]) -> Result<Vec<FineTuningJob>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM fine_tuning_jobs WHERE {} ORDER BY created_at, id",
            status_in(statuses)?
        );
        let rows = self.reader().fetch_all(&sql, &[]).await?;
        rows.iter().map(job_row).collect()
    }

    async fn update_fine_tuning_job(&self, j: &FineTuningJob, from: &[&str]) -> Result<bool> {
        status_in(&[j.status.as_str()])?;
        let sql = format!(
            "UPDATE fine_tuning_jobs SET status = $1, fine_tuned_model = $2, error = $3, \
             total_tokens = $4, trained_tokens = $5, attempt = $6, billed_tokens = $7, \
             finished_at = $8, estimated_finish = $9, hub_repo = $10 WHERE id = $11 AND {}",
            status_in(from)?
        );
        let mut tx = self.write().await?;
        let changed = tx
            .execute(
                &sql,
                &args![
                    &j.status,
                    &j.fine_tuned_model,
                    &j.error,
                    j.total_tokens,
                    j.trained_tokens,
                    j.attempt,
                    j.billed_tokens,
                    j.finished_at,
                    j.estimated_finish,
                    &j.hub_repo,
                    &j.id
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(changed > 0)
    }

    async fn add_fine_tuning_event(
        &self,
        job_id: &str,
        level: &str,
        message: &str,
        data: Option<&str>,
        now: Timestamp,
    ) -> Result<i64> {
        let data = data.map(str::to_owned);
        let mut tx = self.write().await?;
        let row = tx
            .fetch_one(
                "SELECT COALESCE(MAX(seq), 0) + 1 AS next FROM fine_tuning_events WHERE job_id = $1",
                &args![job_id],
            )
            .await?;
        let seq = row.int("next")?;
        tx.execute(
            "INSERT INTO fine_tuning_events (job_id, seq, created_at, level, message, data) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &args![job_id, seq, now, level, message, &data],
        )
        .await?;
        tx.commit().await?;
        Ok(seq)
    }

    async fn fine_tuning_events(
        &self,
        job_id: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<FineTuningEventPage> {
        let limit = limit.max(0);
        let sql = format!(
            "SELECT seq, created_at, level, message, data FROM fine_tuning_events \
             WHERE job_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT {}",
            limit.saturating_add(1)
        );
        let rows = self
            .reader()
            .fetch_all(&sql, &args![job_id, before.unwrap_or(i64::MAX)])
            .await?;
        let mut events = rows
            .iter()
            .map(|r| {
                Ok(FineTuningEvent {
                    seq: r.int("seq")?,
                    created_at: r.time("created_at")?,
                    level: r.text("level")?,
                    message: r.text("message")?,
                    data: r.opt_text("data")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let has_more = events.len() as i64 > limit;
        events.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(FineTuningEventPage { events, has_more })
    }

    async fn put_fine_tuning_checkpoint(
        &self,
        job_id: &str,
        c: &FineTuningCheckpoint,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        tx.execute(
            "DELETE FROM fine_tuning_checkpoints WHERE job_id = $1 AND step = $2",
            &args![job_id, c.step],
        )
        .await?;
        tx.execute(
            "INSERT INTO fine_tuning_checkpoints (job_id, step, created_at, metrics) \
             VALUES ($1, $2, $3, $4)",
            &args![job_id, c.step, c.created_at, &c.metrics],
        )
        .await?;
        tx.commit().await
    }

    async fn fine_tuning_checkpoints(
        &self,
        job_id: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<FineTuningCheckpointPage> {
        let limit = limit.max(0);
        let sql = format!(
            "SELECT step, created_at, metrics FROM fine_tuning_checkpoints \
             WHERE job_id = $1 AND step < $2 ORDER BY step DESC LIMIT {}",
            limit.saturating_add(1)
        );
        let rows = self
            .reader()
            .fetch_all(&sql, &args![job_id, before.unwrap_or(i64::MAX)])
            .await?;
        let mut checkpoints = rows
            .iter()
            .map(|r| {
                Ok(FineTuningCheckpoint {
                    step: r.int("step")?,
                    created_at: r.time("created_at")?,
                    metrics: r.text("metrics")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let has_more = checkpoints.len() as i64 > limit;
        checkpoints.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(FineTuningCheckpointPage {
            checkpoints,
            has_more,
        })
    }
}
