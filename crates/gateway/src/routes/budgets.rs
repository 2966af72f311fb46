//! Spend budgets on the key and tenant routes, and what a tenant sees of them.
//!
//! The admin sets them: `budget` on `POST /admin/v1/tenants`, `PATCH /admin/v1/tenants/{id}`
//! and `POST /admin/v1/tenants/{id}/keys`, and on `PATCH /admin/v1/keys/{key_id}` (`null`
//! removes one on the update routes). A budget with a `webhook_url` (checked like every
//! outbound URL) gives the tenant a webhook signing secret if it has none; the answer carries
//! it once as `webhook_secret`, and `POST …/webhook_secret` replaces it. A tenant reads its
//! budgets with this period's spend at `GET /v1/budget` and their alert events at
//! `GET /v1/budget/events` (the admin: `/admin/v1/tenants/{id}/budget[/events]`).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use tenancy::{BudgetSpec, Spender};

use super::RawBody;
use crate::auth::{Admin, Caller};
use crate::error::{ApiError, Code, Result};
use crate::wire::budgets::{
    self as wire, BudgetEventView, BudgetStatusView, BudgetView, WithBudget,
};
use crate::wire::tenancy::{KeyView, ListView};
use crate::AppState;

/// What setting a budget from a body did: the budget now in force (`None` when the body had
/// no `budget`), and the webhook secret when one was created for it.
pub type Applied = (Option<Option<BudgetView>>, Option<String>);

/// The `budget` field of `body`, if any (`Some(None)`: remove it), with its webhook URL
/// checked: read before anything is created, so a refused budget creates nothing.
pub async fn check(state: &AppState, body: &[u8]) -> Result<Option<Option<BudgetSpec>>> {
    let change = wire::budget_field(body)?;
    if let Some(url) = change
        .as_ref()
        .and_then(|c| c.as_ref()?.webhook_url.as_deref())
    {
        let guard = state.webhook_guard();
        let parsed = guard
            .check_url(url)
            .map_err(|e| ApiError::invalid("budget.webhook_url", e.to_string()))?;
        guard
            .check_resolved(&parsed)
            .await
            .map_err(|e| ApiError::invalid("budget.webhook_url", e.to_string()))?;
    }
    Ok(change)
}

/// Applies a [`check`]ed change to `subject` of `tenant_id`.
pub async fn apply(
    state: &AppState,
    tenant_id: &str,
    subject: Spender<'_>,
    change: Option<Option<BudgetSpec>>,
) -> Result<Applied> {
    let Some(spec) = change else {
        return Ok((None, None));
    };
    let spec = spec.as_ref();
    let budgets = &state.tenancy().budgets;
    let record = budgets
        .set(tenant_id, subject, spec)
        .await
        .map_err(ApiError::from_tenancy)?;
    let secret = match spec.and_then(|s| s.webhook_url.as_ref()) {
        Some(_) => budgets
            .ensure_webhook_secret(tenant_id)
            .await
            .map_err(ApiError::from_tenancy)?,
        None => None,
    };
    tracing::info!(tenant = %tenant_id, subject = %subject.name(), set = record.is_some(), "budget changed");
    Ok((Some(record.as_ref().map(BudgetView::from)), secret))
}

/// Wraps a route's object with what [`apply`] did.
pub fn with<T: serde::Serialize>(inner: T, (budget, webhook_secret): Applied) -> WithBudget<T> {
    WithBudget {
        inner,
        budget,
        webhook_secret,
    }
}

/// `PATCH /admin/v1/keys/{key_id}`: `{"budget": {…} | null}`.
pub async fn patch_key(
    State(state): State<AppState>,
    _: Admin,
    Path(key_id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<WithBudget<KeyView>>> {
    let map = crate::validate::parse_object(&body)?;
    crate::validate::Fields::root(&map).deny_unknown(&["budget"])?;
    if !map.contains_key("budget") {
        return Err(ApiError::new(
            Code::InvalidRequest,
            "Nothing to change: send budget (an object, or null to remove it).",
        ));
    }
    let change = check(&state, &body).await?;
    let key = state
        .tenancy()
        .directory
        .key(&key_id)
        .await
        .map_err(ApiError::from_tenancy)?;
    let applied = apply(&state, &key.tenant_id, Spender::Key(&key.id), change).await?;
    Ok(Json(with(KeyView::from(key), applied)))
}

/// `POST /admin/v1/tenants/{id}/webhook_secret`: a new signing secret, shown once.
pub async fn rotate_secret(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>> {
    rotate(&state, &id).await
}

/// `POST /v1/budget/webhook_secret`: the caller's tenant's new signing secret, shown once.
pub async fn rotate_own_secret(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>> {
    let tenant = own_tenant(&caller)?;
    rotate(&state, &tenant).await
}

async fn rotate(state: &AppState, tenant_id: &str) -> Result<Json<serde_json::Value>> {
    state
        .tenancy()
        .directory
        .tenant(tenant_id)
        .await
        .map_err(ApiError::from_tenancy)?;
    let secret = state
        .tenancy()
        .budgets
        .rotate_webhook_secret(tenant_id)
        .await
        .map_err(ApiError::from_tenancy)?;
    tracing::info!(tenant = %tenant_id, "webhook secret replaced");
    Ok(Json(serde_json::json!({ "webhook_secret": secret })))
}

fn own_tenant(caller: &Caller) -> Result<String> {
    caller.tenant_id().map(str::to_owned).ok_or_else(|| {
        ApiError::new(
            Code::InvalidRequest,
            "The admin key belongs to no tenant; use /admin/v1/tenants/{id}/budget.",
        )
    })
}

/// `GET /v1/budget`.
pub async fn own_status(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ListView<BudgetStatusView>>> {
    let tenant = own_tenant(&caller)?;
    status_of(&state, &tenant).await
}

/// `GET /admin/v1/tenants/{id}/budget`.
pub async fn status(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<ListView<BudgetStatusView>>> {
    status_of(&state, &id).await
}

async fn status_of(state: &AppState, tenant_id: &str) -> Result<Json<ListView<BudgetStatusView>>> {
    let statuses = state
        .tenancy()
        .budgets
        .statuses(tenant_id)
        .await
        .map_err(ApiError::from_tenancy)?;
    Ok(Json(ListView::new(statuses)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    limit: Option<i64>,
    /// An event id: the page after it (older events).
    after: Option<String>,
}

/// `GET /v1/budget/events?limit=&after=`: newest first.
pub async fn own_events(
    State(state): State<AppState>,
    caller: Caller,
    params: std::result::Result<Query<EventParams>, QueryRejection>,
) -> Result<Json<ListView<BudgetEventView>>> {
    let tenant = own_tenant(&caller)?;
    events_of(&state, &tenant, params).await
}

/// `GET /admin/v1/tenants/{id}/budget/events`.
pub async fn events(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    params: std::result::Result<Query<EventParams>, QueryRejection>,
) -> Result<Json<ListView<BudgetEventView>>> {
    events_of(&state, &id, params).await
}

async fn events_of(
    state: &AppState,
    tenant_id: &str,
    params: std::result::Result<Query<EventParams>, QueryRejection>,
) -> Result<Json<ListView<BudgetEventView>>> {
    let Query(params) = params.map_err(|r| {
        ApiError::new(
            Code::InvalidRequest,
            format!(
                "{}. Budget events take limit (1 to 1000) and after (an event id).",
                r.body_text()
            ),
        )
    })?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("Invalid value for 'limit': expected 1 to 1000, but got {limit}."),
        ));
    }
    let events = state
        .tenancy()
        .budgets
        .events(tenant_id, limit, params.after.as_deref())
        .await
        .map_err(ApiError::from_tenancy)?;
    Ok(Json(ListView::new(events)))
}
