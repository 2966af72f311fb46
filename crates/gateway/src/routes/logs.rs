//! `GET /v1/logs` (a tenant's own requests) and `GET /admin/v1/logs?tenant=ID` (the operator's
//! view of one tenant's), newest first, with filters (`model`, `status`, `since`, `until`) and
//! pages (`limit`, `after`).

use axum::extract::{Query, State};
use axum::Json;

use crate::auth::{Admin, Caller};
use crate::error::{ApiError, Code, Result};
use crate::wire::routing::{log_query, LogPageView, LogQueryParams};
use crate::AppState;

type Params = std::result::Result<Query<LogQueryParams>, axum::extract::rejection::QueryRejection>;

fn params(params: Params) -> Result<LogQueryParams> {
    let Query(params) = params.map_err(|rejection| {
        ApiError::new(
            Code::InvalidRequest,
            format!(
                "{}. The log takes model, status, since and until (Unix seconds), limit and after.",
                rejection.body_text()
            ),
        )
    })?;
    Ok(params)
}

async fn page(state: &AppState, tenant_id: &str, p: &LogQueryParams) -> Result<Json<LogPageView>> {
    let setup = state
        .routing()
        .ok_or_else(|| ApiError::new(Code::NotFound, "This server keeps no request log."))?;
    let query = log_query(tenant_id, p)?;
    let page = setup
        .store
        .request_logs(&query)
        .await
        .map_err(|e| match e {
            store::StoreError::NotFound { .. } => ApiError::invalid(
                "after",
                "'after' is not the id of one of your logged requests",
            ),
            e => ApiError::from_tenancy(tenancy::Error::from(e)),
        })?;
    Ok(Json(LogPageView::from(page)))
}

pub async fn tenant(
    State(state): State<AppState>,
    caller: Caller,
    q: Params,
) -> Result<Json<LogPageView>> {
    let principal = caller.principal().ok_or_else(|| {
        ApiError::new(
            Code::InvalidRequest,
            "The admin key belongs to no tenant; use /admin/v1/logs?tenant=ID.",
        )
    })?;
    let p = params(q)?;
    if p.tenant.is_some() {
        return Err(ApiError::invalid(
            "tenant",
            "a tenant sees only its own log; leave out 'tenant'",
        ));
    }
    page(&state, &principal.tenant.id, &p).await
}

pub async fn operator(
    State(state): State<AppState>,
    _: Admin,
    q: Params,
) -> Result<Json<LogPageView>> {
    let p = params(q)?;
    let tenant = p
        .tenant
        .clone()
        .ok_or_else(|| ApiError::invalid("tenant", "name the tenant: /admin/v1/logs?tenant=ID"))?;
    page(&state, &tenant, &p).await
}
