//! MCP: the registry (`/v1/mcp/servers` for a tenant key with the `mcp` scope, the operator's
//! `/admin/v1/mcp/servers` and grants) and the `/mcp` endpoint (Streamable HTTP: one JSON-RPC
//! message per POST, answered as JSON; DELETE ends a session). The logic is the `mcp` crate's.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mcp::{Incoming, McpCaller, McpError, Refusal, Reply};

use super::RawBody;
use crate::auth::{Admin, Caller, McpUser};
use crate::error::{ApiError, Code, Result};
use crate::wire::mcp::{self as wire, CallView, ServerView};
use crate::wire::tenancy::ListView;
use crate::AppState;

fn service(state: &AppState) -> Result<Arc<mcp::Mcp>> {
    state
        .mcp()
        .ok_or_else(|| ApiError::new(Code::NotFound, "This server does not run the MCP gateway."))
}

pub(crate) fn from_mcp(e: McpError) -> ApiError {
    let code = match &e {
        McpError::Invalid { param, .. } => {
            return ApiError::invalid(*param, e.to_string());
        }
        McpError::NotFound(_) => Code::NotFound,
        McpError::Conflict(_) => Code::Conflict,
        McpError::Forbidden(_) => Code::PermissionDenied,
        McpError::Upstream(_) | McpError::SessionGone => Code::UpstreamUnreachable,
        McpError::Store(mcp::StoreError::NotFound { .. }) => Code::NotFound,
        McpError::Store(mcp::StoreError::Conflict(_)) => Code::Conflict,
        McpError::Store(_) | McpError::Internal(_) => Code::Internal,
    };
    ApiError::new(code, e.to_string())
}

/// The tenant a registry request acts for (`None`: the operator, for the admin key).
fn owner(caller: &Caller) -> Option<String> {
    caller.tenant_id().map(str::to_owned)
}

fn view(service: &mcp::Mcp, server: mcp::McpServerRecord) -> ServerView {
    let down = service.down(&server.id);
    ServerView::new(server, down)
}

pub async fn create(
    State(state): State<AppState>,
    McpUser(caller): McpUser,
    RawBody(body): RawBody,
) -> Result<impl IntoResponse> {
    let owner = owner(&caller);
    let new = wire::new_server(&body, owner.is_none())?;
    register(&state, owner.as_deref(), new).await
}

pub async fn admin_create(
    State(state): State<AppState>,
    _: Admin,
    RawBody(body): RawBody,
) -> Result<impl IntoResponse> {
    let new = wire::new_server(&body, true)?;
    register(&state, None, new).await
}

async fn register(
    state: &AppState,
    owner: Option<&str>,
    new: mcp::NewServer,
) -> Result<(StatusCode, Json<ServerView>)> {
    let service = service(state)?;
    let server = service.register(owner, new).await.map_err(from_mcp)?;
    tracing::info!(server = %server.id, name = %server.name, tenant = ?owner, "MCP server registered");
    Ok((StatusCode::CREATED, Json(view(&service, server))))
}

pub async fn list(
    State(state): State<AppState>,
    McpUser(caller): McpUser,
) -> Result<Json<ListView<ServerView>>> {
    let owner = owner(&caller);
    list_for(&state, owner.as_deref()).await
}

pub async fn admin_list(
    State(state): State<AppState>,
    _: Admin,
) -> Result<Json<ListView<ServerView>>> {
    list_for(&state, None).await
}

async fn list_for(state: &AppState, owner: Option<&str>) -> Result<Json<ListView<ServerView>>> {
    let service = service(state)?;
    let servers = service.servers(owner).await.map_err(from_mcp)?;
    let views: Vec<ServerView> = servers.into_iter().map(|s| view(&service, s)).collect();
    Ok(Json(ListView::new(views)))
}

pub async fn patch(
    State(state): State<AppState>,
    McpUser(caller): McpUser,
    Path(name): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<ServerView>> {
    let owner = owner(&caller);
    let patch = wire::server_patch(&body, owner.is_none())?;
    let service = service(&state)?;
    let server = service
        .update(owner.as_deref(), &name, patch)
        .await
        .map_err(from_mcp)?;
    Ok(Json(view(&service, server)))
}

pub async fn admin_patch(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<ServerView>> {
    let patch = wire::server_patch(&body, true)?;
    let service = service(&state)?;
    let server = service.update(None, &name, patch).await.map_err(from_mcp)?;
    Ok(Json(view(&service, server)))
}

pub async fn delete(
    State(state): State<AppState>,
    McpUser(caller): McpUser,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    let owner = owner(&caller);
    service(&state)?
        .delete(owner.as_deref(), &name)
        .await
        .map_err(from_mcp)?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn admin_delete(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    service(&state)?
        .delete(None, &name)
        .await
        .map_err(from_mcp)?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn grant(
    State(state): State<AppState>,
    _: Admin,
    Path(tenant_id): Path<String>,
    RawBody(body): RawBody,
) -> Result<impl IntoResponse> {
    let server = wire::grant(&body)?;
    // The tenant must exist: a 404 names it rather than a foreign-key failure; a deleted
    // one is a 409.
    state
        .tenancy()
        .directory
        .active_tenant(&tenant_id)
        .await
        .map_err(ApiError::from_tenancy)?;
    let service = service(&state)?;
    let (record, added) = service.grant(&tenant_id, &server).await.map_err(from_mcp)?;
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(&service, record))))
}

pub async fn revoke(
    State(state): State<AppState>,
    _: Admin,
    Path((tenant_id, server)): Path<(String, String)>,
) -> Result<StatusCode> {
    let revoked = service(&state)?
        .revoke(&tenant_id, &server)
        .await
        .map_err(from_mcp)?;
    if !revoked {
        return Err(ApiError::new(
            Code::NotFound,
            format!("the tenant '{tenant_id}' has no grant of '{server}'"),
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallsParams {
    days: Option<i64>,
    limit: Option<i64>,
}

/// `GET /v1/mcp/calls?days=&limit=`: the caller's tool calls, newest first (default the last
/// 30 days, 100 rows; at most 366 days, 1,000 rows).
pub async fn calls(
    State(state): State<AppState>,
    McpUser(caller): McpUser,
    params: std::result::Result<Query<CallsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ListView<CallView>>> {
    let owner = owner(&caller);
    let Query(params) = params.map_err(|r| {
        ApiError::new(
            Code::InvalidRequest,
            format!(
                "{}. /v1/mcp/calls takes days (1-366) and limit (1-1000).",
                r.body_text()
            ),
        )
    })?;
    let days = params.days.unwrap_or(30);
    let limit = params.limit.unwrap_or(100);
    if !(1..=366).contains(&days) {
        return Err(ApiError::invalid("days", "days is 1 to 366"));
    }
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "limit is 1 to 1000"));
    }
    let rows = service(&state)?
        .calls(owner.as_deref(), days, limit)
        .await
        .map_err(from_mcp)?;
    Ok(Json(ListView::new(rows)))
}

/// The tenant whose MCP settings a key reads or writes (the admin key has none).
fn settings_tenant(caller: &Caller) -> Result<String> {
    caller.tenant_id().map(str::to_owned).ok_or_else(|| {
        ApiError::invalid(
            "audit_arguments",
            "MCP settings are a tenant's: use a tenant key (the operator's own calls keep no arguments)",
        )
    })
}

/// `GET /v1/mcp/settings`.
pub async fn settings(
    State(state): State<AppState>,
    McpUser(caller): McpUser,
) -> Result<Json<wire::SettingsView>> {
    let tenant = settings_tenant(&caller)?;
    let audit_arguments = service(&state)?.audits_arguments(&tenant).await;
    Ok(Json(wire::SettingsView { audit_arguments }))
}

/// `PUT /v1/mcp/settings` `{"audit_arguments": bool}`.
pub async fn put_settings(
    State(state): State<AppState>,
    McpUser(caller): McpUser,
    RawBody(body): RawBody,
) -> Result<Json<wire::SettingsView>> {
    let tenant = settings_tenant(&caller)?;
    let wanted: wire::SettingsView = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(
            "audit_arguments",
            format!("send {{\"audit_arguments\": true|false}} ({e})"),
        )
    })?;
    service(&state)?
        .set_audit_arguments(&tenant, wanted.audit_arguments)
        .await
        .map_err(from_mcp)?;
    tracing::info!(
        tenant,
        audit_arguments = wanted.audit_arguments,
        "MCP settings changed"
    );
    Ok(Json(wanted))
}

fn mcp_caller(caller: &Caller) -> McpCaller {
    McpCaller {
        principal: caller.principal().cloned(),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `POST /mcp`: one JSON-RPC message.
pub async fn post(
    State(state): State<AppState>,
    McpUser(caller): McpUser,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response> {
    let caller = mcp_caller(&caller);
    let service = service(&state)?;
    let incoming = Incoming {
        session: header(&headers, "mcp-session-id"),
        version: header(&headers, "mcp-protocol-version"),
        body: &body,
    };
    Ok(match service.handle(&caller, incoming).await {
        Reply::Accepted => StatusCode::ACCEPTED.into_response(),
        Reply::Message { body, session } => {
            let mut response = Json(body).into_response();
            if let Some(v) = session.and_then(|s| HeaderValue::from_str(&s).ok()) {
                response.headers_mut().insert("mcp-session-id", v);
            }
            response
        }
        Reply::Refused { why, body } => refusal(why, body),
    })
}

fn refusal(why: Refusal, body: serde_json::Value) -> Response {
    let status = match why {
        Refusal::BadRequest => StatusCode::BAD_REQUEST,
        Refusal::SessionNotFound => StatusCode::NOT_FOUND,
    };
    (status, Json(body)).into_response()
}

/// `DELETE /mcp`: ends the session named by `Mcp-Session-Id`.
pub async fn end(
    State(state): State<AppState>,
    McpUser(caller): McpUser,
    headers: HeaderMap,
) -> Result<Response> {
    let caller = mcp_caller(&caller);
    let service = service(&state)?;
    let Some(session) = header(&headers, "mcp-session-id") else {
        return Err(ApiError::invalid(
            "Mcp-Session-Id",
            "send the Mcp-Session-Id header of the session to end",
        ));
    };
    Ok(match service.end_session(&caller, session).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(Reply::Refused { why, body }) => refusal(why, body),
        Err(_) => StatusCode::NO_CONTENT.into_response(),
    })
}

/// `GET /mcp`: this gateway opens no server-to-client stream.
pub async fn get() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "POST, DELETE")],
        Json(serde_json::json!({"error": {"message": "This MCP endpoint sends no server-initiated messages: use POST (and DELETE to end a session).", "type": "invalid_request_error", "code": "method_not_allowed"}})),
    )
        .into_response()
}

/// `POST /internal/mcp/stdio`: a request another Flywheel process forwards to the stdio
/// session this one runs (authenticated by an HMAC under the shared secret key, not a key).
pub async fn forwarded(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<serde_json::Value>> {
    let mac = header(&headers, mcp::NODE_AUTH_HEADER).unwrap_or_default();
    let answer = service(&state)?
        .serve_forwarded(mac, &body)
        .await
        .map_err(from_mcp)?;
    Ok(Json(answer))
}
