//! Removing a tenant, on either database (see `crate::removal`). Each kind is one statement's
//! condition on `$1`, the tenant: a dry run selects what it matches, a removal deletes (or
//! erases) it and lists what the statement returned.

use async_trait::async_trait;

use super::{args, Db, Exec, WriteTx};
use crate::error::{Result, StoreError};
use crate::model::{Tenant, Timestamp};
use crate::removal::{self as kinds, Removal, RemovalStore};
use crate::rows::{self, Columns};

/// The tenant's private repositories (`$1`): what goes.
const PRIVATE_REPOS: &str = "SELECT id FROM hub_repos WHERE owner_tenant_id = $1 AND private";

/// The org names of the tenant's public repositories (`$1`): what stays.
const PUBLIC_ORGS: &str = "SELECT org FROM hub_repos WHERE owner_tenant_id = $1 AND NOT private";

/// One kind of the tenant's data, as one statement on `table` where `condition` holds:
/// `SELECT {label}` in a dry run; `DELETE … RETURNING {label}`, or with `erase` an
/// `UPDATE … SET {erase} … RETURNING {label}`, in a removal.
struct Part {
    kind: &'static str,
    table: &'static str,
    label: &'static str,
    condition: &'static str,
    erase: Option<&'static str>,
}

impl Part {
    const fn delete(
        kind: &'static str,
        table: &'static str,
        label: &'static str,
        condition: &'static str,
    ) -> Self {
        Self {
            kind,
            table,
            label,
            condition,
            erase: None,
        }
    }

    fn select(&self) -> String {
        format!(
            "SELECT {} AS label FROM {} WHERE {}",
            self.label, self.table, self.condition
        )
    }

    fn remove(&self) -> String {
        match self.erase {
            Some(set) => format!(
                "UPDATE {} SET {set} WHERE {} RETURNING {} AS label",
                self.table, self.condition, self.label
            ),
            None => format!(
                "DELETE FROM {} WHERE {} RETURNING {} AS label",
                self.table, self.condition, self.label
            ),
        }
    }
}

/// What is not the hub, in the order a removal deletes it (upstream pins before the sessions
/// and servers they name).
const PARTS: &[Part] = &[
    Part::delete(kinds::RESPONSES, "responses", "id", "tenant_id = $1"),
    Part::delete(
        kinds::REQUEST_LOGS,
        "request_logs",
        "request_id",
        "tenant_id = $1",
    ),
    Part::delete(
        kinds::BATCH_LINES,
        "batch_lines",
        "batch_id",
        "batch_id IN (SELECT id FROM batches WHERE tenant_id = $1)",
    ),
    Part::delete(kinds::BATCHES, "batches", "id", "tenant_id = $1"),
    Part::delete(
        kinds::FINE_TUNING_EVENTS,
        "fine_tuning_events",
        "job_id",
        "job_id IN (SELECT id FROM fine_tuning_jobs WHERE tenant_id = $1)",
    ),
    Part::delete(
        kinds::FINE_TUNING_CHECKPOINTS,
        "fine_tuning_checkpoints",
        "job_id",
        "job_id IN (SELECT id FROM fine_tuning_jobs WHERE tenant_id = $1)",
    ),
    Part::delete(
        kinds::FINE_TUNING_JOBS,
        "fine_tuning_jobs",
        "id",
        "tenant_id = $1",
    ),
    Part::delete(kinds::FILES, "files", "id", "tenant_id = $1"),
    Part::delete(
        kinds::FILE_QUOTA,
        "file_quotas",
        "CAST('quota_bytes' AS TEXT)",
        "tenant_id = $1",
    ),
    Part::delete(
        kinds::MCP_SESSION_UPSTREAMS,
        "mcp_session_upstreams",
        "session_id || '/' || server_id",
        "session_id IN (SELECT id FROM mcp_sessions WHERE tenant_id = $1) \
         OR server_id IN (SELECT id FROM mcp_servers WHERE tenant_id = $1)",
    ),
    Part::delete(
        kinds::MCP_GRANTS,
        "mcp_grants",
        "server_id",
        "tenant_id = $1",
    ),
    Part::delete(kinds::MCP_SESSIONS, "mcp_sessions", "id", "tenant_id = $1"),
    Part::delete(kinds::MCP_SERVERS, "mcp_servers", "id", "tenant_id = $1"),
    Part::delete(
        kinds::MCP_SETTINGS,
        "mcp_settings",
        "CAST('audit_arguments' AS TEXT)",
        "tenant_id = $1",
    ),
    Part {
        kind: kinds::MCP_CALL_ARGUMENTS,
        table: "mcp_calls",
        label: "id",
        condition: "tenant_id = $1 AND arguments IS NOT NULL",
        erase: Some("arguments = NULL"),
    },
    Part::delete(
        kinds::SIGN_IN_FAILURES,
        "console_sign_in_failures",
        "subject",
        "subject IN (SELECT 'account:' || email FROM members WHERE tenant_id = $1)",
    ),
    Part::delete(
        kinds::CONSOLE_SESSIONS,
        "console_sessions",
        "member_id",
        "member_id IN (SELECT id FROM members WHERE tenant_id = $1)",
    ),
    Part::delete(kinds::MEMBERS, "members", "email", "tenant_id = $1"),
    Part::delete(
        kinds::BUDGET_EVENTS,
        "budget_events",
        "id",
        "tenant_id = $1",
    ),
    Part::delete(kinds::BUDGETS, "budgets", "subject", "tenant_id = $1"),
    Part::delete(
        kinds::WEBHOOK_SECRET,
        "budget_webhooks",
        "CAST('webhook_secret' AS TEXT)",
        "tenant_id = $1",
    ),
    Part::delete(
        kinds::RATE_WINDOWS,
        "rate_buckets",
        "subject",
        "subject = 'tenant:' || $1 \
         OR subject IN (SELECT 'key:' || id FROM api_keys WHERE tenant_id = $1)",
    ),
];

/// Open uploads into any of the tenant's repositories, private or public.
const UPLOADS: Part = Part::delete(
    kinds::HUB_UPLOADS,
    "hub_uploads",
    "id",
    "repo_id IN (SELECT id FROM hub_repos WHERE owner_tenant_id = $1)",
);

const REPOS: Part = Part::delete(
    kinds::HUB_REPOS,
    "hub_repos",
    "org || '/' || name",
    "owner_tenant_id = $1 AND private",
);

/// Orgs that hold none of its public repositories (those stay, so their names do too).
const ORGS: Part = Part::delete(
    kinds::ORGS,
    "orgs",
    "name",
    // PUBLIC_ORGS, inlined: a `const` cannot be built with `format!`.
    "tenant_id = $1 AND name NOT IN \
     (SELECT org FROM hub_repos WHERE owner_tenant_id = $1 AND NOT private)",
);

/// The parts of its private repositories, deleted before them (no listing of their own).
const REPO_PARTS: &[&str] = &[
    "DELETE FROM hub_repo_tags WHERE repo_id IN (SELECT id FROM hub_repos WHERE owner_tenant_id = $1 AND private)",
    "DELETE FROM hub_refs WHERE repo_id IN (SELECT id FROM hub_repos WHERE owner_tenant_id = $1 AND private)",
    "DELETE FROM hub_tree_entries WHERE repo_id IN (SELECT id FROM hub_repos WHERE owner_tenant_id = $1 AND private)",
    "DELETE FROM hub_commits WHERE repo_id IN (SELECT id FROM hub_repos WHERE owner_tenant_id = $1 AND private)",
];

/// Blobs the tenant's private repositories or files name, or it uploaded: the ones that may
/// go.
fn blob_candidates() -> String {
    format!(
        "SELECT sha256 AS label FROM hub_tree_entries WHERE repo_id IN ({PRIVATE_REPOS}) \
         UNION SELECT sha256 AS label FROM hub_blob_uploaders WHERE tenant_id = $1 \
         UNION SELECT sha256 AS label FROM files WHERE tenant_id = $1"
    )
}

/// Whether blob `sha` is still named once the tenant's hub data is gone: by a tree entry of any
/// other repository (another tenant's, the admin's, its own public ones), by another
/// uploader (who may still commit it) or by another tenant's file.
fn unreferenced(sha: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM hub_tree_entries e WHERE e.sha256 = {sha} \
         AND e.repo_id NOT IN ({PRIVATE_REPOS})) \
         AND NOT EXISTS (SELECT 1 FROM hub_blob_uploaders u WHERE u.sha256 = {sha} \
         AND u.tenant_id <> $1) \
         AND NOT EXISTS (SELECT 1 FROM files f WHERE f.sha256 = {sha} AND f.tenant_id <> $1)"
    )
}

const ACTIVE_KEYS: &str = "tenant_id = $1 AND revoked_at IS NULL";

/// Sorted, without duplicates.
fn labels<R: Columns>(rows: &[R]) -> Result<Vec<String>> {
    let mut all = rows
        .iter()
        .map(|r| r.text("label"))
        .collect::<Result<Vec<_>>>()?;
    all.sort();
    all.dedup();
    Ok(all)
}

async fn list<E: Exec>(ex: &mut E, sql: &str, tenant_id: &str) -> Result<Vec<String>> {
    labels(&ex.fetch_all(sql, &args![tenant_id]).await?)
}

/// The tenant, if it may be removed: `NotFound`, or `Conflict` once deleted.
async fn removable<E: Exec>(ex: &mut E, tenant_id: &str, lock: &str) -> Result<Tenant> {
    let sql = format!("SELECT {} FROM tenants WHERE id = $1{lock}", rows::TENANT);
    let row = ex.fetch_optional(&sql, &args![tenant_id]).await?;
    let tenant = rows::tenant(&row.ok_or_else(|| StoreError::not_found("tenant", tenant_id))?)?;
    match tenant.deleted_at {
        Some(at) => Err(StoreError::Conflict(format!(
            "tenant '{tenant_id}' is already deleted (at {})",
            rows::ts(at)
        ))),
        None => Ok(tenant),
    }
}

/// What stays of the tenant's own, and its ledger.
async fn kept<E: Exec>(ex: &mut E, tenant_id: &str, removal: &mut Removal) -> Result<()> {
    let repos = "SELECT org || '/' || name AS label FROM hub_repos \
                 WHERE owner_tenant_id = $1 AND NOT private";
    removal
        .kept
        .insert(kinds::HUB_REPOS, list(ex, repos, tenant_id).await?);
    let orgs =
        format!("SELECT name AS label FROM orgs WHERE tenant_id = $1 AND name IN ({PUBLIC_ORGS})");
    removal
        .kept
        .insert(kinds::ORGS, list(ex, &orgs, tenant_id).await?);
    let row = ex
        .fetch_one(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM ledger_entries WHERE tenant_id = $1",
            &args![tenant_id],
        )
        .await?;
    removal.ledger_entries = row.int("n")?;
    Ok(())
}

#[async_trait]
impl<D: Db> RemovalStore for D {
    async fn tenant_removal(&self, tenant_id: &str) -> Result<Removal> {
        let mut ex = self.reader();
        removable(&mut ex, tenant_id, "").await?;
        let mut removal = Removal {
            tenant_id: tenant_id.to_owned(),
            ..Removal::default()
        };
        let keys = format!("SELECT id AS label FROM api_keys WHERE {ACTIVE_KEYS}");
        removal
            .revoked
            .insert(kinds::API_KEYS, list(&mut ex, &keys, tenant_id).await?);
        for part in PARTS.iter().chain([&UPLOADS, &REPOS, &ORGS]) {
            let found = list(&mut ex, &part.select(), tenant_id).await?;
            removal.removed.insert(part.kind, found);
        }
        let blobs = format!(
            "SELECT b.sha256 AS label FROM hub_blobs b WHERE b.sha256 IN ({}) AND {}",
            blob_candidates(),
            unreferenced("b.sha256")
        );
        removal
            .removed
            .insert(kinds::HUB_BLOBS, list(&mut ex, &blobs, tenant_id).await?);
        kept(&mut ex, tenant_id, &mut removal).await?;
        Ok(removal)
    }

    async fn disable_for_removal(&self, tenant_id: &str, now: Timestamp) -> Result<Vec<String>> {
        let mut tx = self.write().await?;
        removable(&mut tx, tenant_id, D::LOCK_ROWS).await?;
        tx.execute(
            "UPDATE tenants SET disabled = TRUE WHERE id = $1",
            &args![tenant_id],
        )
        .await?;
        let revoke = format!(
            "UPDATE api_keys SET revoked_at = $2 WHERE {ACTIVE_KEYS} RETURNING id AS label"
        );
        let revoked = labels(&tx.fetch_all(&revoke, &args![tenant_id, now]).await?)?;
        tx.commit().await?;
        Ok(revoked)
    }

    async fn open_reservations(&self, tenant_id: &str) -> Result<Vec<String>> {
        let rows = self
            .reader()
            .fetch_all(
                "SELECT request_id FROM reservations WHERE tenant_id = $1 AND state = 'open' \
                 ORDER BY created_at, request_id",
                &args![tenant_id],
            )
            .await?;
        rows.iter().map(|r| r.text("request_id")).collect()
    }

    async fn remove_tenant(&self, tenant_id: &str, now: Timestamp) -> Result<Removal> {
        let mut tx = self.write().await?;
        removable(&mut tx, tenant_id, D::LOCK_ROWS).await?;
        let mut removal = Removal {
            tenant_id: tenant_id.to_owned(),
            deleted_at: Some(now),
            ..Removal::default()
        };
        let revoke = format!(
            "UPDATE api_keys SET revoked_at = $2 WHERE {ACTIVE_KEYS} RETURNING id AS label"
        );
        let revoked = labels(&tx.fetch_all(&revoke, &args![tenant_id, now]).await?)?;
        removal.revoked.insert(kinds::API_KEYS, revoked);
        // Read before the trees and upload records naming them are gone.
        let candidates = list(&mut tx, &blob_candidates(), tenant_id).await?;
        for part in PARTS.iter().chain([&UPLOADS]) {
            let removed = labels(&tx.fetch_all(&part.remove(), &args![tenant_id]).await?)?;
            removal.removed.insert(part.kind, removed);
        }
        tx.execute(
            "UPDATE hub_repos SET removing = TRUE WHERE owner_tenant_id = $1 AND private",
            &args![tenant_id],
        )
        .await?;
        for sql in REPO_PARTS {
            tx.execute(sql, &args![tenant_id]).await?;
        }
        let repos = labels(&tx.fetch_all(&REPOS.remove(), &args![tenant_id]).await?)?;
        removal.removed.insert(kinds::HUB_REPOS, repos);
        tx.execute(
            "DELETE FROM hub_blob_uploaders WHERE tenant_id = $1",
            &args![tenant_id],
        )
        .await?;
        let delete_blob = format!(
            "DELETE FROM hub_blobs WHERE sha256 = $2 AND {} RETURNING sha256 AS label",
            unreferenced("$2")
        );
        let mut blobs = Vec::new();
        for sha in &candidates {
            let gone = tx.fetch_all(&delete_blob, &args![tenant_id, sha]).await?;
            blobs.extend(labels(&gone)?);
        }
        removal.removed.insert(kinds::HUB_BLOBS, blobs);
        let orgs = labels(&tx.fetch_all(&ORGS.remove(), &args![tenant_id]).await?)?;
        removal.removed.insert(kinds::ORGS, orgs);
        kept(&mut tx, tenant_id, &mut removal).await?;
        tx.execute(
            "UPDATE tenants SET deleted_at = $2, disabled = TRUE WHERE id = $1",
            &args![tenant_id, now],
        )
        .await?;
        tx.commit().await?;
        Ok(removal)
    }

    async fn scrub(&self) -> Result<bool> {
        self.scrub_files().await
    }
}
