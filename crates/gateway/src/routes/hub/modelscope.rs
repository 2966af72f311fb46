//! ModelScope's read protocol, as its `modelscope` client and plain scripts use it: the file
//! list, a file's bytes by `FilePath`, and the revisions. Answers are wrapped as ModelScope
//! wraps them: `{"Code": 200, "Data": …, "Message", "Success", "RequestId"}`. ModelScope's
//! default revision `master` means `main` here unless a `master` branch exists.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{files, repo_id, the_hub, HubResult, Reader};
use crate::AppState;

fn ok(data: Value) -> Json<Value> {
    Json(json!({
        "Code": 200,
        "Data": data,
        "Message": "success",
        "Success": true,
        "RequestId": uuid::Uuid::new_v4().to_string(),
    }))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct FilesParams {
    revision: Option<String>,
    recursive: Option<String>,
    root: Option<String>,
    file_path: Option<String>,
}

fn revision(p: &FilesParams) -> &str {
    p.revision
        .as_deref()
        .filter(|r| !r.is_empty())
        .unwrap_or("master")
}

/// `GET /api/v1/models/{org}/{name}`: the model's summary.
pub async fn model(
    State(state): State<AppState>,
    Reader(access): Reader,
    Path((org, name)): Path<(String, String)>,
) -> HubResult<Json<Value>> {
    let hub = the_hub(&state)?;
    let repo = hub.repo(&access, &repo_id(&org, &name)?).await?;
    Ok(ok(json!({
        "Id": repo.id, "Name": repo.name, "Path": repo.org, "ChineseName": repo.name,
        "Downloads": repo.downloads, "License": repo.card.license, "Tags": repo.card.tags,
        "Tasks": repo.card.pipeline_tag.iter().map(|t| json!({"Name": t})).collect::<Vec<_>>(),
        "IsPublished": 1, "Visibility": if repo.private { 1 } else { 5 },
        "CreatedTime": repo.created_at.timestamp(), "LastUpdatedTime": repo.updated_at.timestamp(),
    })))
}

/// `GET /api/v1/models/{org}/{name}/repo/files?Revision=&Recursive=&Root=`
pub async fn files(
    State(state): State<AppState>,
    Reader(access): Reader,
    Path((org, name)): Path<(String, String)>,
    Query(params): Query<FilesParams>,
) -> HubResult<Json<Value>> {
    let hub = the_hub(&state)?;
    let repo = hub.repo(&access, &repo_id(&org, &name)?).await?;
    let commit = hub.resolve(&repo, revision(&params)).await?;
    let entries = hub.tree(&repo, &commit).await?;
    let recursive = params
        .recursive
        .as_deref()
        .is_some_and(|r| r.eq_ignore_ascii_case("true") || r == "1");
    let root = params.root.as_deref().unwrap_or("").trim_matches('/');
    let base = if root.is_empty() {
        String::new()
    } else {
        format!("{root}/")
    };
    let mut dirs = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for e in &entries {
        let Some(rest) = e.path.strip_prefix(&base) else {
            continue;
        };
        let segments: Vec<&str> = rest.split('/').collect();
        if !recursive && segments.len() > 1 {
            dirs.insert(format!("{base}{}", segments[0]));
            continue;
        }
        for depth in 1..segments.len() {
            dirs.insert(format!("{base}{}", segments[..depth].join("/")));
        }
        out.push(json!({
            "Name": e.path.rsplit('/').next().unwrap_or(&e.path),
            "Path": e.path,
            "Type": "blob",
            "Size": e.size,
            "Sha256": e.sha256,
            "Id": e.git_oid,
            "Mode": "33188",
            "IsLFS": files::is_lfs(e),
            "Revision": commit.id,
            "CommitId": commit.id,
            "CommitMessage": commit.message,
            "CommitterName": commit.author,
            "CommittedDate": commit.created_at.timestamp(),
        }));
    }
    let mut all: Vec<Value> = dirs
        .iter()
        .map(|d| {
            json!({"Name": d.rsplit('/').next().unwrap_or(d), "Path": d, "Type": "tree",
            "Size": 0, "Revision": commit.id})
        })
        .collect();
    all.extend(out);
    Ok(ok(json!({
        "Files": all,
        "LatestCommitter": {"CommitterName": commit.author, "CommittedDate": commit.created_at.timestamp(),
            "Id": commit.id, "Message": commit.message},
    })))
}

/// `GET|HEAD /api/v1/models/{org}/{name}/repo?Revision=&FilePath=`: a file's bytes.
pub async fn file(
    State(state): State<AppState>,
    Reader(access): Reader,
    method: Method,
    headers: HeaderMap,
    Path((org, name)): Path<(String, String)>,
    Query(params): Query<FilesParams>,
) -> HubResult<Response> {
    let hub = the_hub(&state)?;
    let path = params.file_path.as_deref().unwrap_or("");
    let view = hub
        .file(&access, &repo_id(&org, &name)?, revision(&params), path)
        .await?;
    files::send(hub, view, &method, &headers, "ms_file").await
}

/// `GET /api/v1/models/{org}/{name}/revisions`: branches and tags.
pub async fn revisions(
    State(state): State<AppState>,
    Reader(access): Reader,
    Path((org, name)): Path<(String, String)>,
) -> HubResult<Json<Value>> {
    let hub = the_hub(&state)?;
    let repo = hub.repo(&access, &repo_id(&org, &name)?).await?;
    let refs = hub.refs(&repo).await?;
    let view = |kind: hub::RefKind| -> Vec<Value> {
        refs.iter()
            .filter(|r| r.kind == kind)
            .map(|r| {
                json!({"Revision": r.name, "CommitId": r.commit_id,
                "CreatedAt": r.updated_at.timestamp(), "Description": ""})
            })
            .collect()
    };
    Ok(ok(json!({
        "RevisionMap": {"Branches": view(hub::RefKind::Branch), "Tags": view(hub::RefKind::Tag)},
    })))
}
