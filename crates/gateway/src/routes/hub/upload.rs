//! Flywheel's upload API: create a repository, upload blobs in chunks (resumable: ask where
//! an upload stands, continue from there), then commit them as a new revision.
//!
//! ```text
//! POST  /api/v1/hub/repos                              {"org","name","private"}  → 201 repo
//! PATCH /api/v1/hub/repos/{org}/{name}                 {"private"}
//! POST  /api/v1/hub/repos/{org}/{name}/uploads         {"sha256","size"}         → UploadState
//! PUT   /api/v1/hub/repos/{org}/{name}/uploads/{id}?offset=N   <bytes>           → UploadState
//! GET   /api/v1/hub/repos/{org}/{name}/uploads/{id}                              → UploadState
//! POST  /api/v1/hub/repos/{org}/{name}/commits/{branch} CommitRequest            → {"commit"}
//! POST  /api/v1/hub/repos/{org}/{name}/tags            {"tag","revision"}
//! ```
//! Every route needs a key with `hub:write` whose tenant owns the org (or the admin key).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use hub::{CommitRequest, HubError, UploadState};
use serde::Deserialize;
use serde_json::{json, Value};

use super::hf::hf_time;
use super::{metrics, repo_id, status_json, the_hub, HubResult, Writer};
use crate::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRepo {
    org: String,
    name: String,
    #[serde(default)]
    private: bool,
}

fn repo_json(repo: &hub::Repo) -> Value {
    json!({"id": repo.full_name(), "org": repo.org, "name": repo.name, "private": repo.private,
        "createdAt": hf_time(repo.created_at)})
}

fn bad_json(e: axum::extract::rejection::JsonRejection) -> HubError {
    HubError::Invalid {
        param: "body".into(),
        message: format!("the request body is not valid: {}", e.body_text()),
    }
}

pub async fn create_repo(
    State(state): State<AppState>,
    Writer(access): Writer,
    body: Result<Json<CreateRepo>, axum::extract::rejection::JsonRejection>,
) -> HubResult<Response> {
    let Json(body) = body.map_err(bad_json)?;
    let hub = the_hub(&state)?;
    let id = hub::path::RepoId::new(&body.org, &body.name)?;
    let repo = hub.create_repo(&access, &id, body.private).await?;
    Ok(status_json(StatusCode::CREATED, repo_json(&repo)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchRepo {
    private: bool,
}

pub async fn patch_repo(
    State(state): State<AppState>,
    Writer(access): Writer,
    Path((org, name)): Path<(String, String)>,
    body: Result<Json<PatchRepo>, axum::extract::rejection::JsonRejection>,
) -> HubResult<Json<Value>> {
    let Json(body) = body.map_err(bad_json)?;
    let hub = the_hub(&state)?;
    let repo = hub
        .set_private(&access, &repo_id(&org, &name)?, body.private)
        .await?;
    Ok(Json(repo_json(&repo)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartUpload {
    sha256: String,
    size: i64,
}

pub async fn start(
    State(state): State<AppState>,
    Writer(access): Writer,
    Path((org, name)): Path<(String, String)>,
    body: Result<Json<StartUpload>, axum::extract::rejection::JsonRejection>,
) -> HubResult<Json<UploadState>> {
    let Json(body) = body.map_err(bad_json)?;
    let hub = the_hub(&state)?;
    let upload = hub
        .start_upload(
            &access,
            &repo_id(&org, &name)?,
            &body.sha256.to_ascii_lowercase(),
            body.size,
        )
        .await?;
    Ok(Json(upload))
}

pub async fn status(
    State(state): State<AppState>,
    Writer(access): Writer,
    Path((org, name, id)): Path<(String, String, String)>,
) -> HubResult<Json<UploadState>> {
    let hub = the_hub(&state)?;
    Ok(Json(
        hub.upload_status(&access, &repo_id(&org, &name)?, &id)
            .await?,
    ))
}

#[derive(Deserialize)]
pub struct ChunkParams {
    offset: i64,
}

/// `PUT …/uploads/{id}?offset=N`: the body is streamed to disk, never held whole; a chunk
/// larger than the server's `max_chunk_bytes` is a 413 and leaves the upload where it was.
pub async fn chunk(
    State(state): State<AppState>,
    Writer(access): Writer,
    Path((org, name, id)): Path<(String, String, String)>,
    params: Result<Query<ChunkParams>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> HubResult<Json<UploadState>> {
    let Query(params) = params.map_err(|_| HubError::Invalid {
        param: "offset".into(),
        message: "give the chunk's starting byte as ?offset=N".into(),
    })?;
    let hub = the_hub(&state)?;
    // The hub refuses a chunk past `max_chunk_bytes` (413) as the bytes arrive.
    let stream = body.into_data_stream();
    let result = hub
        .write_chunk(&access, &repo_id(&org, &name)?, &id, params.offset, stream)
        .await;
    match &result {
        Ok(state) => {
            metrics::record_upload_bytes(state.offset - params.offset);
            if state.complete {
                metrics::record_upload("stored");
            }
        }
        Err(HubError::Invalid { param, .. }) if param == "sha256" => {
            metrics::record_upload("rejected")
        }
        Err(_) => {}
    }
    Ok(Json(result?))
}

pub async fn commit(
    State(state): State<AppState>,
    Writer(access): Writer,
    Path((org, name, branch)): Path<(String, String, String)>,
    body: Result<Json<CommitRequest>, axum::extract::rejection::JsonRejection>,
) -> HubResult<Response> {
    let Json(body) = body.map_err(bad_json)?;
    let hub = the_hub(&state)?;
    let commit = hub
        .commit(&access, &repo_id(&org, &name)?, &branch, body)
        .await?;
    metrics::record_commit();
    Ok(status_json(
        StatusCode::CREATED,
        json!({"commit": commit.id, "parent": commit.parent_id, "branch": branch,
            "message": commit.message, "createdAt": hf_time(commit.created_at)}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTag {
    tag: String,
    #[serde(default = "main")]
    revision: String,
}

fn main() -> String {
    "main".into()
}

pub async fn tag(
    State(state): State<AppState>,
    Writer(access): Writer,
    Path((org, name)): Path<(String, String)>,
    body: Result<Json<CreateTag>, axum::extract::rejection::JsonRejection>,
) -> HubResult<Response> {
    let Json(body) = body.map_err(bad_json)?;
    let hub = the_hub(&state)?;
    let r = hub
        .tag(&access, &repo_id(&org, &name)?, &body.tag, &body.revision)
        .await?;
    Ok(status_json(
        StatusCode::CREATED,
        json!({"tag": r.name, "commit": r.commit_id}),
    ))
}
