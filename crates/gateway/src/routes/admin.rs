//! `/admin/v1/…`: tenants, orgs, keys, top-ups and prices (deleting a tenant: `tenant_delete`). Every handler takes [`Admin`], so a
//! tenant key gets a 403 and no key a 401 before any handler runs.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;

use super::{budgets, RawBody};
use crate::auth::Admin;
use crate::error::{ApiError, Code, Result};
use crate::wire::budgets::WithBudget;
use crate::wire::tenancy::{
    self as wire, CreatedKeyView, KeyView, ListView, OrgView, PriceView, RequestBillView,
    TenantView,
};
use crate::AppState;
use tenancy::Spender;

pub async fn create_tenant(
    State(state): State<AppState>,
    _: Admin,
    RawBody(body): RawBody,
) -> Result<impl IntoResponse> {
    let spec = wire::tenant_spec(&body)?;
    let budget = budgets::check(&state, &body).await?;
    let tenant = state
        .tenancy()
        .directory
        .create_tenant(&spec)
        .await
        .map_err(ApiError::from_tenancy)?;
    tracing::info!(tenant = %tenant.id, name = %tenant.name, "tenant created");
    let applied = budgets::apply(&state, &tenant.id, Spender::Tenant(&tenant.id), budget).await?;
    Ok((
        StatusCode::CREATED,
        Json(budgets::with(TenantView::from(tenant), applied)),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    include_deleted: Option<String>,
}

/// Active tenants; deleted ones too with `?include_deleted=true`.
pub async fn list_tenants(
    State(state): State<AppState>,
    _: Admin,
    params: std::result::Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<ListView<TenantView>>> {
    let Query(params) = params.map_err(|r| {
        ApiError::new(
            Code::InvalidRequest,
            format!(
                "{}. GET /admin/v1/tenants takes include_deleted (true or false).",
                r.body_text()
            ),
        )
    })?;
    let include_deleted = wire::flag("include_deleted", params.include_deleted.as_deref())?;
    let mut tenants = state
        .tenancy()
        .directory
        .tenants()
        .await
        .map_err(ApiError::from_tenancy)?;
    tenants.retain(|t| include_deleted || t.deleted_at.is_none());
    Ok(Json(ListView::new(tenants)))
}

pub async fn get_tenant(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<TenantView>> {
    let tenant = state
        .tenancy()
        .directory
        .tenant(&id)
        .await
        .map_err(ApiError::from_tenancy)?;
    Ok(Json(tenant.into()))
}

pub async fn patch_tenant(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<WithBudget<TenantView>>> {
    let patch = wire::tenant_patch(&body)?;
    let budget = budgets::check(&state, &body).await?;
    let directory = &state.tenancy().directory;
    let tenant = if patch == tenancy::TenantPatch::default() {
        directory.tenant(&id).await
    } else {
        directory.update_tenant(&id, &patch).await
    }
    .map_err(ApiError::from_tenancy)?;
    tracing::info!(tenant = %tenant.id, ?patch, "tenant updated");
    let applied = budgets::apply(&state, &tenant.id, Spender::Tenant(&tenant.id), budget).await?;
    Ok(Json(budgets::with(TenantView::from(tenant), applied)))
}

pub async fn create_org(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<impl IntoResponse> {
    let name = wire::org_name(&body)?;
    let org = state
        .tenancy()
        .directory
        .create_org(&id, &name)
        .await
        .map_err(ApiError::from_tenancy)?;
    Ok((StatusCode::CREATED, Json(OrgView::from(org))))
}

pub async fn list_orgs(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<ListView<OrgView>>> {
    let directory = &state.tenancy().directory;
    directory
        .tenant(&id)
        .await
        .map_err(ApiError::from_tenancy)?;
    let orgs = directory.orgs(&id).await.map_err(ApiError::from_tenancy)?;
    Ok(Json(ListView::new(orgs)))
}

pub async fn create_key(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<impl IntoResponse> {
    let spec = wire::key_spec(&body)?;
    let budget = budgets::check(&state, &body).await?;
    let created = state
        .tenancy()
        .directory
        .create_key(&id, &spec)
        .await
        .map_err(ApiError::from_tenancy)?;
    tracing::info!(tenant = %id, key = %created.key.id, prefix = %created.key.prefix, "key created");
    let key_id = created.key.id.clone();
    let applied = match budgets::apply(&state, &id, Spender::Key(&key_id), budget).await {
        Ok(applied) => applied,
        Err(err) => {
            // A key whose budget could not be set is not handed out.
            let _ = state.tenancy().directory.revoke_key(&key_id).await;
            return Err(err);
        }
    };
    Ok((
        StatusCode::CREATED,
        Json(budgets::with(CreatedKeyView::from(created), applied)),
    ))
}

pub async fn list_keys(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<ListView<KeyView>>> {
    let directory = &state.tenancy().directory;
    directory
        .tenant(&id)
        .await
        .map_err(ApiError::from_tenancy)?;
    let keys = directory.keys(&id).await.map_err(ApiError::from_tenancy)?;
    Ok(Json(ListView::new(keys)))
}

pub async fn revoke_key(
    State(state): State<AppState>,
    _: Admin,
    Path(key_id): Path<String>,
) -> Result<Json<KeyView>> {
    let key = state
        .tenancy()
        .directory
        .revoke_key(&key_id)
        .await
        .map_err(ApiError::from_tenancy)?;
    tracing::info!(key = %key.id, "key revoked");
    Ok(Json(key.into()))
}

pub async fn top_up(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<TenantView>> {
    let (amount, idempotency_key) = wire::top_up(&body)?;
    let tenant = state
        .tenancy()
        .ledger
        .top_up(&id, amount, idempotency_key.as_deref())
        .await
        .map_err(ApiError::from_tenancy)?;
    tracing::info!(tenant = %id, amount, "top-up");
    Ok(Json(tenant.into()))
}

pub async fn put_price(
    State(state): State<AppState>,
    _: Admin,
    Path(model): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<PriceView>> {
    if let Some(server) = model.strip_prefix(tenancy::TOOL_CALL_PREFIX) {
        return put_call_price(&state, server, &body).await;
    }
    if let Some(speech) = model.strip_prefix(tenancy::AUDIO_PREFIX) {
        let per_minute = wire::per_minute(&body)?;
        let price = state
            .tenancy()
            .prices
            .set_per_minute(speech, per_minute)
            .await
            .map_err(ApiError::from_tenancy)?;
        tracing::info!(model = %speech, per_minute, "audio price set");
        return Ok(Json(price.into()));
    }
    let rates = wire::price_rates(&body)?;
    let price = state
        .tenancy()
        .prices
        .set(&model, rates)
        .await
        .map_err(ApiError::from_tenancy)?;
    tracing::info!(model = %model, ?rates, "price set");
    Ok(Json(price.into()))
}

/// The price of a tool call to one MCP server (by id or, for the operator's, by name).
async fn put_call_price(state: &AppState, server: &str, body: &[u8]) -> Result<Json<PriceView>> {
    let per_call = wire::per_call(body)?;
    let mcp = state.mcp().ok_or_else(|| {
        ApiError::new(Code::NotFound, "This server does not run the MCP gateway.")
    })?;
    let id = mcp.server_id(server).await.map_err(super::mcp::from_mcp)?;
    let price = state
        .tenancy()
        .prices
        .set_per_call(&id, per_call)
        .await
        .map_err(ApiError::from_tenancy)?;
    tracing::info!(server = %id, per_call, "MCP call price set");
    Ok(Json(price.into()))
}

pub async fn list_prices(
    State(state): State<AppState>,
    _: Admin,
) -> Result<Json<ListView<PriceView>>> {
    let prices = state
        .tenancy()
        .prices
        .list()
        .await
        .map_err(ApiError::from_tenancy)?;
    Ok(Json(ListView::new(prices)))
}

/// `GET /admin/v1/requests/{id}`: the bill of one request (its `chatcmpl-…`/`cmpl-…` id).
pub async fn request_bill(
    State(state): State<AppState>,
    _: Admin,
    Path(request_id): Path<String>,
) -> Result<Json<RequestBillView>> {
    let reservation = state
        .tenancy()
        .ledger
        .reservation(&request_id)
        .await
        .map_err(ApiError::from_tenancy)?;
    Ok(Json(reservation.into()))
}
