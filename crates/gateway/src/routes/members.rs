//! `/admin/v1/…/members`: a tenant's console members. The admin key only; the console's owner
//! pages call the same `tenancy::Members`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;

use super::RawBody;
use crate::auth::Admin;
use crate::error::{ApiError, Result};
use crate::wire::members::{self as wire, MemberView};
use crate::wire::tenancy::ListView;
use crate::AppState;

/// `POST /admin/v1/tenants/{id}/members`: with a password the member can sign in at once;
/// without one the answer carries `invite_link`, shown once.
pub async fn create(
    State(state): State<AppState>,
    _: Admin,
    Path(tenant_id): Path<String>,
    RawBody(body): RawBody,
) -> Result<impl IntoResponse> {
    let new = wire::new_member(&body)?;
    let added = state
        .tenancy()
        .members
        .add(&tenant_id, &new)
        .await
        .map_err(ApiError::from_tenancy)?;
    tracing::info!(tenant = %tenant_id, member = %added.member.id, role = %added.member.role, "member added");
    Ok((StatusCode::CREATED, Json(MemberView::from(added))))
}

pub async fn list(
    State(state): State<AppState>,
    _: Admin,
    Path(tenant_id): Path<String>,
) -> Result<Json<ListView<MemberView>>> {
    let members = state
        .tenancy()
        .members
        .list(&tenant_id)
        .await
        .map_err(ApiError::from_tenancy)?;
    Ok(Json(ListView::new(members)))
}

/// `DELETE /admin/v1/members/{member_id}`: its sessions end at once.
pub async fn delete(
    State(state): State<AppState>,
    _: Admin,
    Path(member_id): Path<String>,
) -> Result<Json<MemberView>> {
    let member = state
        .tenancy()
        .members
        .remove(&member_id)
        .await
        .map_err(ApiError::from_tenancy)?;
    tracing::info!(member = %member.id, "member removed");
    Ok(Json(member.into()))
}
