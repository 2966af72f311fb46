//! Model groups and the request log, on either database (see `crate::routing`).

use async_trait::async_trait;

use super::{args, Db, Exec, WriteTx};
use crate::error::{Result, StoreError};
use crate::model::Timestamp;
use crate::routing::{LogPage, LogQuery, ModelGroupRecord, RequestLogRecord, RoutingStore};
use crate::rows::Columns;

/// Rows per `INSERT` (13 parameters each, well under either database's limit).
const ROWS_PER_STATEMENT: usize = 128;

const LOG_COLUMNS: &str = "request_id, tenant_id, created_at, key_prefix, model, member, status, \
     prompt_tokens, completion_tokens, cost, ttft_ms, total_ms, retries";

fn group_row(row: &impl Columns) -> Result<ModelGroupRecord> {
    Ok(ModelGroupRecord {
        name: row.text("name")?,
        spec: row.text("spec")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
    })
}

fn log_row(row: &impl Columns) -> Result<RequestLogRecord> {
    Ok(RequestLogRecord {
        request_id: row.text("request_id")?,
        tenant_id: row.text("tenant_id")?,
        created_at: row.time("created_at")?,
        key_prefix: row.text("key_prefix")?,
        model: row.text("model")?,
        member: row.opt_text("member")?,
        status: row.int("status")?,
        prompt_tokens: row.int("prompt_tokens")?,
        completion_tokens: row.int("completion_tokens")?,
        cost: row.int("cost")?,
        ttft_ms: row.opt_int("ttft_ms")?,
        total_ms: row.int("total_ms")?,
        retries: row.int("retries")?,
    })
}

#[async_trait]
impl<D: Db> RoutingStore for D {
    async fn put_model_group(&self, r: &ModelGroupRecord) -> Result<bool> {
        let mut tx = self.write().await?;
        let existed = tx
            .fetch_optional(
                "SELECT name FROM model_groups WHERE name = $1",
                &args![&r.name],
            )
            .await?
            .is_some();
        if existed {
            tx.execute(
                "UPDATE model_groups SET spec = $2, updated_at = $3 WHERE name = $1",
                &args![&r.name, &r.spec, r.updated_at],
            )
            .await?;
        } else {
            tx.execute(
                "INSERT INTO model_groups (name, spec, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4)",
                &args![&r.name, &r.spec, r.created_at, r.updated_at],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(!existed)
    }

    async fn model_groups(&self) -> Result<Vec<ModelGroupRecord>> {
        self.reader()
            .fetch_all(
                "SELECT name, spec, created_at, updated_at FROM model_groups ORDER BY name",
                &[],
            )
            .await?
            .iter()
            .map(group_row)
            .collect()
    }

    async fn delete_model_group(&self, name: &str) -> Result<bool> {
        let mut tx = self.write().await?;
        let n = tx
            .execute("DELETE FROM model_groups WHERE name = $1", &args![name])
            .await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn insert_request_logs(&self, logs: &[RequestLogRecord]) -> Result<()> {
        if logs.is_empty() {
            return Ok(());
        }
        // Multi-row statements keep the write transaction short (SQLite's one writer turn).
        let mut tx = self.write().await?;
        for chunk in logs.chunks(ROWS_PER_STATEMENT) {
            let values: Vec<String> = (0..chunk.len())
                .map(|r| {
                    let cols: Vec<String> = (1..=13).map(|c| format!("${}", r * 13 + c)).collect();
                    format!("({})", cols.join(", "))
                })
                .collect();
            let sql = format!(
                "INSERT INTO request_logs ({LOG_COLUMNS}) VALUES {} \
                 ON CONFLICT (request_id) DO NOTHING",
                values.join(", ")
            );
            let mut bound = Vec::with_capacity(chunk.len() * 13);
            for l in chunk {
                bound.extend(args![
                    &l.request_id,
                    &l.tenant_id,
                    l.created_at,
                    &l.key_prefix,
                    &l.model,
                    &l.member,
                    l.status,
                    l.prompt_tokens,
                    l.completion_tokens,
                    l.cost,
                    l.ttft_ms,
                    l.total_ms,
                    l.retries
                ]);
            }
            tx.execute(&sql, &bound).await?;
        }
        tx.commit().await
    }

    async fn request_logs(&self, q: &LogQuery) -> Result<LogPage> {
        let mut reader = self.reader();
        let cursor: Option<(Timestamp, String)> = match &q.after {
            None => None,
            Some(id) => {
                let row = reader
                    .fetch_optional(
                        "SELECT created_at, request_id FROM request_logs \
                         WHERE tenant_id = $1 AND request_id = $2",
                        &args![&q.tenant_id, id.as_str()],
                    )
                    .await?
                    .ok_or_else(|| StoreError::not_found("request log", id))?;
                Some((row.time("created_at")?, row.text("request_id")?))
            }
        };
        // Every filter is bound (NULL when unset), so the statement is one text.
        let sql = format!(
            "SELECT {LOG_COLUMNS} FROM request_logs WHERE tenant_id = $1 \
             AND ($2 IS NULL OR model = $2) \
             AND ($3 IS NULL OR status = $3) \
             AND ($4 IS NULL OR created_at >= $4) \
             AND ($5 IS NULL OR created_at < $5) \
             AND ($6 IS NULL OR created_at < $6 OR (created_at = $6 AND request_id < $7)) \
             ORDER BY created_at DESC, request_id DESC LIMIT $8"
        );
        let (at, id) = match &cursor {
            Some((at, id)) => (Some(*at), Some(id.clone())),
            None => (None, None),
        };
        let rows = reader
            .fetch_all(
                &sql,
                &args![
                    &q.tenant_id,
                    &q.model,
                    q.status,
                    q.since,
                    q.until,
                    at,
                    &id,
                    q.limit + 1
                ],
            )
            .await?;
        let mut logs = rows.iter().map(log_row).collect::<Result<Vec<_>>>()?;
        let has_more = logs.len() as i64 > q.limit;
        logs.truncate(usize::try_from(q.limit).unwrap_or(0));
        Ok(LogPage { logs, has_more })
    }

    async fn sweep_request_logs(&self, before: Timestamp) -> Result<u64> {
        let mut tx = self.write().await?;
        let n = tx
            .execute(
                "DELETE FROM request_logs WHERE created_at < $1",
                &args![before],
            )
            .await?;
        tx.commit().await?;
        Ok(n)
    }
}
