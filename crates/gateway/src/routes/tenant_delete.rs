//! `DELETE /admin/v1/tenants/{id}` (admin key): deleting a tenant, or with `?dry_run=true`
//! listing what that would do now.
//!
//! In order: the tenant is disabled and its keys revoked at once (the next request with one is
//! a 401); its batches start no more lines, its fine-tuning jobs stop (and their models stop being served; their directories are deleted once their rows went), its requests running in this process are ended (their backend streams dropped,
//! read or not) and every open reservation of it is settled, by its meter or, after
//! [`SETTLE_WAIT`], from its persisted progress (a request of another process sharing the
//! database); then its data goes in one transaction (`store::removal` says what goes and what
//! stays), the files of the hub blobs and uploads that went are deleted while no upload or
//! commit can take them up, this process forgets its MCP servers and sessions, and the database
//! is scrubbed of the removed rows where it can be. Its row and ledger stay, marked deleted.
//! A deletion interrupted before its data went (the tenant is disabled, not yet deleted) is
//! finished by deleting again; deleting a deleted tenant is a 409.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use tenancy::removal as kinds;

use crate::auth::Admin;
use crate::error::{ApiError, Code, Result};
use crate::wire::tenancy::{flag, TenantDeletionView};
use crate::AppState;

/// How long running requests get to settle themselves before the rest are settled from their
/// persisted progress.
const SETTLE_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    dry_run: Option<String>,
}

pub async fn delete_tenant(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    params: std::result::Result<Query<DeleteParams>, QueryRejection>,
) -> Result<Json<TenantDeletionView>> {
    let Query(params) = params.map_err(|r| {
        ApiError::new(
            Code::InvalidRequest,
            format!(
                "{}. DELETE /admin/v1/tenants/{{id}} takes dry_run (true or false).",
                r.body_text()
            ),
        )
    })?;
    let dry_run = flag("dry_run", params.dry_run.as_deref())?;
    let tenancy = state.tenancy();
    let directory = &tenancy.directory;
    if dry_run {
        let plan = directory
            .removal_plan(&id)
            .await
            .map_err(ApiError::from_tenancy)?;
        let running = tenancy
            .ledger
            .open_requests(&id)
            .await
            .map_err(ApiError::from_tenancy)?;
        return Ok(Json(TenantDeletionView::new(plan, running, None)));
    }

    // 1. At once: no key of it authenticates, no request of it is admitted.
    let revoked = directory
        .disable_for_removal(&id)
        .await
        .map_err(ApiError::from_tenancy)?;
    tracing::info!(tenant = %id, keys = revoked.len(), "deleting a tenant: disabled, keys revoked");

    // 2. Its running requests end and are settled.
    let running = tenancy
        .ledger
        .open_requests(&id)
        .await
        .map_err(ApiError::from_tenancy)?;
    // Its batches start no more lines (their rows go with the removal below).
    if let Some(batches) = state.batches() {
        batches.end_tenant(&id);
    }
    // Its fine-tuning jobs stop training and its fine-tuned models stop being served.
    if let Some(jobs) = state.fine_tuning() {
        if let Err(e) = jobs.end_tenant(&id).await {
            tracing::error!(tenant = %id, error = %e, "could not stop a tenant's fine-tuning jobs");
        }
    }
    let ended = state.serving().end_tenant(&id);
    let forced = tenancy
        .ledger
        .close_open(&id, SETTLE_WAIT)
        .await
        .map_err(ApiError::from_tenancy)?;
    tracing::info!(
        tenant = %id,
        running = running.len(),
        ended_here = ended.len(),
        settled_from_progress = forced.len(),
        "deleting a tenant: its requests ended and settled"
    );

    // 3. Its data, and the files of what went, with no upload or commit in between.
    let hold = match state.hub() {
        Some(hub) => Some(hub.hold_blobs().await),
        None => None,
    };
    let mut removal = directory
        .remove(&id)
        .await
        .map_err(ApiError::from_tenancy)?;
    let keys = removal.revoked.entry(kinds::API_KEYS).or_default();
    keys.extend(revoked);
    keys.sort();
    keys.dedup();
    if let (Some(hub), Some(hold)) = (state.hub(), &hold) {
        let blobs = removal.removed(kinds::HUB_BLOBS);
        let uploads = removal.removed(kinds::HUB_UPLOADS);
        if let Err(e) = hub.remove_files(hold, blobs, uploads).await {
            return Err(ApiError::new(
                Code::Internal,
                format!(
                    "Tenant '{id}' was deleted and its data removed from the database, but \
                     deleting its hub files failed ({e}); the server log names each file left."
                ),
            ));
        }
    }
    drop(hold);
    if let Some(jobs) = state.fine_tuning() {
        jobs.remove_files(removal.removed(kinds::FINE_TUNING_JOBS))
            .await;
    }
    if let Some(mcp) = state.mcp() {
        let servers = removal.removed(kinds::MCP_SERVERS);
        mcp.forget_tenant(&id, servers, removal.removed(kinds::MCP_SESSIONS));
    }
    let scrubbed = directory.scrub().await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "could not scrub the database after deleting a tenant");
        false
    });
    tracing::info!(
        tenant = %id,
        removed = ?removal.removed.iter().map(|(k, v)| (*k, v.len())).collect::<Vec<_>>(),
        scrubbed,
        "tenant deleted"
    );
    Ok(Json(TenantDeletionView::new(
        removal,
        running,
        Some(scrubbed),
    )))
}
