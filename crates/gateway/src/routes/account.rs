//! What a tenant sees of itself: `GET /v1/account` and `GET /v1/usage`. The tenant is always
//! the caller's own; there is no parameter that names another.

use axum::extract::{Query, State};
use axum::Json;
use chrono::{Duration, Utc};
use serde::Deserialize;
use tenancy::{UsageGroup, UsageQuery};

use crate::auth::Caller;
use crate::error::{ApiError, Code, Result};
use crate::wire::tenancy::{parse_time, AccountView, ListView, UsageRowView};
use crate::AppState;

/// How far back `/v1/usage` looks without `start`.
const DEFAULT_USAGE_DAYS: i64 = 30;

fn no_tenant() -> ApiError {
    ApiError::new(
        Code::InvalidRequest,
        "The admin key belongs to no tenant; use /admin/v1/tenants/{id} to see a tenant's account.",
    )
}

pub async fn account(State(state): State<AppState>, caller: Caller) -> Result<Json<AccountView>> {
    let principal = caller.principal().ok_or_else(no_tenant)?;
    let account = state
        .tenancy()
        .usage
        .account(&principal.tenant.id)
        .await
        .map_err(ApiError::from_tenancy)?;
    Ok(Json(AccountView::new(account, Some(principal.key.clone()))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    start: Option<String>,
    end: Option<String>,
    group_by: Option<String>,
}

pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    params: std::result::Result<Query<UsageParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ListView<UsageRowView>>> {
    let principal = caller.principal().ok_or_else(no_tenant)?;
    let Query(params) = params.map_err(|rejection| {
        ApiError::new(
            Code::InvalidRequest,
            format!(
                "{}. /v1/usage takes start, end (RFC 3339) and group_by (model, day or key).",
                rejection.body_text()
            ),
        )
    })?;
    let end = match params.end.as_deref() {
        Some(t) => parse_time("end", t)?,
        None => Utc::now(),
    };
    let start = match params.start.as_deref() {
        Some(t) => parse_time("start", t)?,
        None => end - Duration::days(DEFAULT_USAGE_DAYS),
    };
    let group_by = match params.group_by.as_deref().unwrap_or("model") {
        "model" => UsageGroup::Model,
        "day" => UsageGroup::Day,
        "key" => UsageGroup::Key,
        other => {
            return Err(ApiError::invalid(
                "group_by",
                format!(
                    "Invalid value for 'group_by': expected model, day or key, but got '{other}'."
                ),
            ))
        }
    };
    let rows = state
        .tenancy()
        .usage
        .usage(
            &principal.tenant.id,
            &UsageQuery {
                start,
                end,
                group_by,
            },
        )
        .await
        .map_err(ApiError::from_tenancy)?;
    Ok(Json(ListView::new(rows)))
}
