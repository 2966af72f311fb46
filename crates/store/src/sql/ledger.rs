//! The ledger's reads, on either database. Its writes differ per database (SQLite's
//! group-commit writer, PostgreSQL's row-locking transactions) and stay in `sqlite/` and
//! `postgres/`; each `LedgerStore` implementation answers its reads here.

use super::{args, Db, Exec};
use crate::error::{Result, StoreError};
use crate::model::{
    LedgerEntry, Reservation, Timestamp, UsageGroup, UsageRow, AUDIO_SQL, TOOL_CALL_SQL,
};
use crate::rows::{self, Columns};

pub(crate) async fn ledger_entries<D: Db>(db: &D, tenant_id: &str) -> Result<Vec<LedgerEntry>> {
    let sql = format!(
        "SELECT {} FROM ledger_entries WHERE tenant_id = $1 ORDER BY id",
        rows::LEDGER_ENTRY
    );
    let all = db.reader().fetch_all(&sql, &args![tenant_id]).await?;
    all.iter().map(rows::ledger_entry).collect()
}

pub(crate) async fn reservation<D: Db>(db: &D, request_id: &str) -> Result<Reservation> {
    let sql = format!(
        "SELECT {} FROM reservations WHERE request_id = $1",
        rows::RESERVATION
    );
    let row = db.reader().fetch_optional(&sql, &args![request_id]).await?;
    rows::reservation(&row.ok_or_else(|| StoreError::not_found("reservation", request_id))?)
}

/// Open reservations of other processes whose lease ran out, oldest first.
pub(crate) async fn expired_reservations<D: Db>(
    db: &D,
    except_owner: &str,
    now: Timestamp,
    limit: i64,
) -> Result<Vec<Reservation>> {
    let sql = format!(
        "SELECT {} FROM reservations WHERE state = 'open' AND lease_expires_at < $1 \
         AND owner <> $2 ORDER BY lease_expires_at, request_id LIMIT $3",
        rows::RESERVATION
    );
    let all = db
        .reader()
        .fetch_all(&sql, &args![now, except_owner, limit])
        .await?;
    all.iter().map(rows::reservation).collect()
}

/// Settled usage of `tenant_id` in `[start, end)`, grouped. Tool calls count in `tool_calls`,
/// not in `requests` or the prompt tokens; transcriptions' audio seconds in `audio_seconds`,
/// not in the prompt tokens.
pub(crate) async fn usage<D: Db>(
    db: &D,
    tenant_id: &str,
    start: Timestamp,
    end: Timestamp,
    group: UsageGroup,
) -> Result<Vec<UsageRow>> {
    let by = match group {
        UsageGroup::Model => "model",
        UsageGroup::Day => D::SETTLED_DAY,
        UsageGroup::Key => "COALESCE(key_id, '-')",
    };
    let sum = |expr: &str| format!("CAST(COALESCE(SUM({expr}), 0) AS BIGINT)");
    let call = TOOL_CALL_SQL;
    let audio = AUDIO_SQL;
    let sql = format!(
        "SELECT {by} AS grp, {} AS requests, {} AS prompt_tokens, {} AS completion_tokens, \
         {} AS cached_tokens, {} AS grant_tokens, {} AS amount, {} AS tool_calls, \
         {} AS audio_seconds FROM reservations WHERE tenant_id = $1 AND state <> 'open' \
         AND settled_at >= $2 AND settled_at < $3 GROUP BY grp ORDER BY grp",
        sum(&format!("CASE WHEN {call} THEN 0 ELSE 1 END")),
        sum(&format!(
            "CASE WHEN {call} OR {audio} THEN 0 ELSE billed_prompt_tokens END"
        )),
        sum("billed_completion_tokens"),
        sum(&format!(
            "CASE WHEN {audio} THEN 0 ELSE billed_cached_tokens END"
        )),
        sum("charged_grant_tokens"),
        sum("charged_amount"),
        sum(&format!(
            "CASE WHEN {call} AND state = 'settled' THEN 1 ELSE 0 END"
        )),
        sum(&format!(
            "CASE WHEN {audio} THEN billed_prompt_tokens ELSE 0 END"
        )),
    );
    let all = db
        .reader()
        .fetch_all(&sql, &args![tenant_id, start, end])
        .await?;
    all.iter()
        .map(|row| {
            Ok(UsageRow {
                group: row.text("grp")?,
                requests: row.int("requests")?,
                prompt_tokens: row.int("prompt_tokens")?,
                completion_tokens: row.int("completion_tokens")?,
                cached_tokens: row.int("cached_tokens")?,
                grant_tokens: row.int("grant_tokens")?,
                amount: row.int("amount")?,
                tool_calls: row.int("tool_calls")?,
                audio_seconds: row.int("audio_seconds")?,
            })
        })
        .collect()
}
