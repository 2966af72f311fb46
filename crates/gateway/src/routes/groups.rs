//! `PUT|GET|DELETE /admin/v1/models/{name}` and `GET /admin/v1/models`: model groups and their
//! aliases (the `routing` crate serves them through the serving layer's catalog). Every handler
//! takes [`Admin`]. A definition is stored with its members' API keys sealed under the
//! server's secret key (the MCP registry's `Sealer`, bound to the group's name) and served
//! at once; keys are never shown again.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use routing::{Group, GroupSpec, Policy};
use store::{ModelGroupRecord, Store};

use super::RawBody;
use crate::auth::Admin;
use crate::error::{ApiError, Code, Result};
use crate::wire::routing::{
    parse_group, parse_stored, sealed, to_spec, DeletedGroupView, GroupView,
};
use crate::wire::tenancy::ListView;
use crate::{AppState, RoutingSetup};

/// What a group's sealed keys are bound to.
fn bound_to(name: &str) -> String {
    format!("model_group:{name}")
}

fn setup(state: &AppState) -> Result<&RoutingSetup> {
    state.routing().ok_or_else(|| {
        ApiError::new(
            Code::NotFound,
            "This server keeps no model groups (it has no secret key).",
        )
    })
}

fn store_error(err: store::StoreError) -> ApiError {
    ApiError::from_tenancy(tenancy::Error::from(err))
}

/// Every stored group, its keys opened, ready to serve. A group that cannot be read (a key
/// sealed under a key this server does not have) is skipped with an error in the log.
pub async fn load_groups(
    store: &Arc<dyn Store>,
    sealer: &mcp::Sealer,
) -> std::result::Result<Vec<Arc<Group>>, String> {
    let records = store.model_groups().await.map_err(|e| e.to_string())?;
    let mut groups = Vec::with_capacity(records.len());
    for record in records {
        match open_record(&record, sealer) {
            Ok(spec) => match Group::new(spec, Policy::default()) {
                Ok(group) => groups.push(Arc::new(group)),
                Err(e) => {
                    tracing::error!(group = %record.name, error = %e.message, "a stored model group is invalid; not served")
                }
            },
            Err(e) => {
                tracing::error!(group = %record.name, error = ?e, "a stored model group cannot be read; not served")
            }
        }
    }
    Ok(groups)
}

fn open_record(record: &ModelGroupRecord, sealer: &mcp::Sealer) -> Result<GroupSpec> {
    let body = parse_stored(&record.spec).map_err(|e| {
        ApiError::new(
            Code::Internal,
            format!("stored group '{}': {e}", record.name),
        )
    })?;
    let bound = bound_to(&record.name);
    to_spec(&record.name, &body, |s| {
        let plain = sealer.open(s, &bound).map_err(|e| e.to_string())?;
        String::from_utf8(plain).map_err(|e| e.to_string())
    })
}

/// The names `spec` uses must be free or its own, its deployment members and fallbacks
/// served here.
fn check_names(state: &AppState, spec: &GroupSpec) -> Result<()> {
    let catalog = state.serving().catalog();
    if let Some(why) = catalog.name_taken(&spec.name, &spec.name) {
        return Err(ApiError::new(
            Code::Conflict,
            format!("{why}; a group needs a name of its own."),
        ));
    }
    for (i, alias) in spec.aliases.iter().enumerate() {
        if let Some(why) = catalog.name_taken(alias, &spec.name) {
            return Err(ApiError::new(Code::Conflict, format!("{why}."))
                .with_param(format!("aliases[{i}]")));
        }
    }
    for (i, name) in spec.fallbacks.iter().enumerate() {
        if catalog.target(name).is_none() {
            return Err(ApiError::invalid(
                format!("fallbacks[{i}]"),
                format!("'{name}' is no model, group or alias of this server"),
            ));
        }
    }
    for (i, name) in spec
        .members
        .iter()
        .enumerate()
        .filter_map(|(i, m)| match &m.target {
            routing::Target::Deployment(d) => Some((i, d)),
            routing::Target::Upstream { .. } => None,
        })
    {
        let single = catalog
            .target(name)
            .is_some_and(|t| matches!(t, serving::Target::Backend(_)));
        if !single || catalog.group(name).is_some() {
            return Err(ApiError::invalid(
                format!("members[{i}].deployment"),
                format!("'{name}' is not a deployment or fixed model of this server"),
            ));
        }
    }
    Ok(())
}

pub async fn put(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
    RawBody(body): RawBody,
) -> Result<impl IntoResponse> {
    let setup = setup(&state)?;
    let parsed = parse_group(&body)?;
    let spec = to_spec(&name, &parsed, |_| Err("no sealed key in a request".into()))?;
    check_names(&state, &spec)?;
    let group =
        Group::new(spec, Policy::default()).map_err(|e| ApiError::invalid(e.param, e.message))?;
    let _turn = state.groups_turn().await;
    let bound = bound_to(&name);
    let stored = sealed(&parsed, |key| {
        setup
            .sealer
            .seal(key.as_bytes(), &bound)
            .map_err(|e| e.to_string())
    })?;
    let now = chrono::Utc::now();
    let record = ModelGroupRecord {
        name: name.clone(),
        spec: serde_json::to_string(&stored)
            .map_err(|e| ApiError::new(Code::Internal, e.to_string()))?,
        created_at: now,
        updated_at: now,
    };
    let created = setup
        .store
        .put_model_group(&record)
        .await
        .map_err(store_error)?;
    let group = Arc::new(group);
    state.serving().catalog().set_group(Arc::clone(&group));
    tracing::info!(group = %name, members = group.spec().members.len(), created, "model group stored");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(GroupView::new(&group))))
}

pub async fn get(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
) -> Result<Json<GroupView>> {
    let group = state
        .serving()
        .catalog()
        .group(&name)
        .ok_or_else(|| not_found(&name))?;
    Ok(Json(GroupView::new(&group)))
}

pub async fn list(State(state): State<AppState>, _: Admin) -> Json<ListView<GroupView>> {
    let groups = state.serving().catalog().groups_list();
    Json(ListView {
        object: "list",
        data: groups.iter().map(|g| GroupView::new(g)).collect(),
    })
}

pub async fn delete(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
) -> Result<Json<DeletedGroupView>> {
    let setup = setup(&state)?;
    let existed = setup
        .store
        .delete_model_group(&name)
        .await
        .map_err(store_error)?;
    let served = state.serving().catalog().remove_group(&name);
    if !existed && !served {
        return Err(not_found(&name));
    }
    tracing::info!(group = %name, "model group deleted");
    Ok(Json(DeletedGroupView {
        id: name,
        object: "model_group",
        deleted: true,
    }))
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(Code::NotFound, format!("There is no model group '{name}'."))
}

/// Seals every stored member key again under `sealer`'s current key (`rotate-secret-key`);
/// how many groups changed.
pub async fn reseal_groups(
    store: &dyn Store,
    sealer: &mcp::Sealer,
) -> std::result::Result<u64, String> {
    let mut changed = 0;
    for mut record in store.model_groups().await.map_err(|e| e.to_string())? {
        let mut body =
            parse_stored(&record.spec).map_err(|e| format!("group '{}': {e}", record.name))?;
        let bound = bound_to(&record.name);
        let mut resealed = false;
        for m in &mut body.members {
            if let Some(sealed) = m.upstream.as_mut().and_then(|u| u.api_key_sealed.as_mut()) {
                if let Some(new) = sealer.reseal(sealed, &bound).map_err(|e| e.to_string())? {
                    *sealed = new;
                    resealed = true;
                }
            }
        }
        if resealed {
            record.spec = serde_json::to_string(&body).map_err(|e| e.to_string())?;
            record.updated_at = chrono::Utc::now();
            store
                .put_model_group(&record)
                .await
                .map_err(|e| e.to_string())?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// Reads the stored groups every `every` and serves what changed (groups put or deleted
/// through another gateway process); a group whose definition is unchanged keeps its members'
/// state.
pub fn spawn_reload(state: AppState, every: std::time::Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(err) = reload(&state).await {
                tracing::warn!(error = %err, "could not read the stored model groups again");
            }
        }
    });
}

async fn reload(state: &AppState) -> std::result::Result<(), String> {
    let Some(setup) = state.routing() else {
        return Ok(());
    };
    let _turn = state.groups_turn().await;
    let records = setup
        .store
        .model_groups()
        .await
        .map_err(|e| e.to_string())?;
    let catalog = state.serving().catalog();
    let stored: std::collections::HashSet<&str> = records.iter().map(|r| r.name.as_str()).collect();
    for group in catalog.groups_list() {
        if !stored.contains(group.spec().name.as_str()) {
            catalog.remove_group(&group.spec().name);
            tracing::info!(group = %group.spec().name, "model group deleted elsewhere; no longer served");
        }
    }
    for record in &records {
        let Ok(spec) = open_record(record, &setup.sealer) else {
            continue;
        };
        if catalog
            .group(&record.name)
            .is_some_and(|g| g.spec() == &spec)
        {
            continue;
        }
        if let Some(why) = catalog.name_taken(&record.name, &record.name) {
            tracing::debug!(group = %record.name, "{why}; the stored group is not served");
            continue;
        }
        match Group::new(spec, Policy::default()) {
            Ok(group) => {
                catalog.set_group(Arc::new(group));
                tracing::info!(group = %record.name, "model group changed elsewhere; now served as stored");
            }
            Err(e) => {
                tracing::debug!(group = %record.name, error = %e.message, "a stored model group is invalid")
            }
        }
    }
    Ok(())
}
