//! The Hugging Face Hub's read protocol, as `huggingface_hub` uses it: model search and info
//! (`/api/models…`), the tree listing `snapshot_download` reads, and `/resolve/` with the
//! headers `hf_hub_download` needs.

use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hub::listing::{self, Node};
use hub::Repo;
use hub::{Commit, Hub, RepoSort, SearchQuery, TreeEntry};
use serde_json::{json, Value};

use super::files::{self, lfs_json};
use super::{repo_id, the_hub, HubResult, Reader};
use crate::AppState;

/// Tree entries per page of `/tree/`.
const TREE_PAGE: usize = 1000;

/// Times as the Hub writes them (`2024-01-02T03:04:05.000Z`).
pub fn hf_time(t: hub::Timestamp) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn card_json(repo: &Repo) -> Value {
    let c = &repo.card;
    json!({
        "license": c.license,
        "pipeline_tag": c.pipeline_tag,
        "base_model": c.base_model,
        "language": c.languages,
        "tags": c.tags,
    })
}

fn summary_json(repo: &Repo) -> Value {
    json!({
        "_id": repo.id,
        "id": repo.full_name(),
        "modelId": repo.full_name(),
        "author": repo.org,
        "private": repo.private,
        "gated": false,
        "disabled": false,
        "downloads": repo.downloads,
        "likes": 0,
        "tags": repo.card.tags,
        "pipeline_tag": repo.card.pipeline_tag,
        "library_name": Value::Null,
        "createdAt": hf_time(repo.created_at),
        "lastModified": hf_time(repo.updated_at),
    })
}

fn sibling_json(e: &TreeEntry) -> Value {
    let mut v = json!({"rfilename": e.path, "size": e.size, "blobId": e.git_oid});
    if let Some(lfs) = lfs_json(e, "sha256") {
        v["lfs"] = lfs;
    }
    v
}

fn info_json(repo: &Repo, commit: Option<&Commit>, tree: &[TreeEntry]) -> Value {
    let mut v = summary_json(repo);
    v["sha"] = commit.map_or(Value::Null, |c| Value::String(c.id.clone()));
    if let Some(c) = commit {
        v["lastModified"] = Value::String(hf_time(c.created_at));
    }
    v["cardData"] = card_json(repo);
    v["siblings"] = tree.iter().map(sibling_json).collect();
    v["spaces"] = json!([]);
    v["usedStorage"] = json!(tree.iter().map(|e| e.size).sum::<i64>());
    v
}

/// `GET /api/models?search=&author=&filter=&pipeline_tag=&sort=&direction=&limit=`
pub async fn list_models(
    State(state): State<AppState>,
    Reader(access): Reader,
    Query(params): Query<Vec<(String, String)>>,
) -> HubResult<Json<Value>> {
    let hub = the_hub(&state)?;
    let mut q = SearchQuery {
        descending: true,
        ..SearchQuery::default()
    };
    for (key, value) in params {
        match key.as_str() {
            "search" => q.search = Some(value),
            "author" => q.author = Some(value),
            "filter" | "tags" => q.tags.extend(
                value
                    .split(',')
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned),
            ),
            "pipeline_tag" | "task" => q.pipeline_tag = Some(value),
            "sort" => {
                q.sort = match value.as_str() {
                    "lastModified" | "last_modified" | "updatedAt" => RepoSort::LastModified,
                    "createdAt" | "created_at" => RepoSort::CreatedAt,
                    "id" | "modelId" => RepoSort::Name,
                    _ => RepoSort::Downloads,
                }
            }
            "direction" => q.descending = value != "1",
            "limit" => {
                q.limit = Some(value.parse().map_err(|_| hub::HubError::Invalid {
                    param: "limit".into(),
                    message: format!("limit must be a positive integer, not '{value}'"),
                })?)
            }
            _ => {}
        }
    }
    let repos = hub.search(&access, q).await?;
    Ok(Json(repos.iter().map(summary_json).collect()))
}

async fn info(
    hub: &Hub,
    access: &hub::Access,
    org: &str,
    name: &str,
    rev: Option<&str>,
) -> HubResult<Json<Value>> {
    let id = repo_id(org, name)?;
    let repo = hub.repo(access, &id).await?;
    let commit = match rev {
        Some(rev) => Some(hub.resolve(&repo, rev).await?),
        None => match hub.resolve(&repo, "main").await {
            Ok(c) => Some(c),
            Err(hub::HubError::RevisionNotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        },
    };
    let tree = match &commit {
        Some(c) => hub.tree(&repo, c).await?,
        None => Vec::new(),
    };
    Ok(Json(info_json(&repo, commit.as_ref(), &tree)))
}

/// `GET /api/models/{org}/{name}`: the repository at `main`.
pub async fn model_info(
    State(state): State<AppState>,
    Reader(access): Reader,
    Path((org, name)): Path<(String, String)>,
) -> HubResult<Json<Value>> {
    info(the_hub(&state)?, &access, &org, &name, None).await
}

/// `GET /api/models/{org}/{name}/revision/{rev}`: what `snapshot_download` resolves first.
pub async fn model_info_at(
    State(state): State<AppState>,
    Reader(access): Reader,
    Path((org, name, rev)): Path<(String, String, String)>,
) -> HubResult<Json<Value>> {
    info(the_hub(&state)?, &access, &org, &name, Some(&rev)).await
}

#[derive(serde::Deserialize, Default)]
pub struct TreeParams {
    recursive: Option<String>,
    cursor: Option<String>,
}

pub async fn tree_root(
    state: State<AppState>,
    reader: Reader,
    Path((org, name, rev)): Path<(String, String, String)>,
    params: Query<TreeParams>,
    uri: OriginalUri,
) -> HubResult<Response> {
    tree(state, reader, (org, name, rev, String::new()), params, uri).await
}

pub async fn tree_at(
    state: State<AppState>,
    reader: Reader,
    Path((org, name, rev, path)): Path<(String, String, String, String)>,
    params: Query<TreeParams>,
    uri: OriginalUri,
) -> HubResult<Response> {
    tree(state, reader, (org, name, rev, path), params, uri).await
}

fn dir_oid(commit: &str, dir: &str) -> String {
    hub::blobs::Digests::of(format!("{commit}:{dir}").as_bytes()).git_oid
}

/// `GET /api/models/{org}/{name}/tree/{rev}[/{path}]?recursive=&cursor=`: files and
/// directories under `path`, paged with a `Link: <…>; rel="next"` header. Only the page is
/// built (see [`hub::listing`]), however deep and wide the tree.
async fn tree(
    State(state): State<AppState>,
    Reader(access): Reader,
    (org, name, rev, path): (String, String, String, String),
    Query(params): Query<TreeParams>,
    OriginalUri(uri): OriginalUri,
) -> HubResult<Response> {
    let hub = the_hub(&state)?;
    let id = repo_id(&org, &name)?;
    let prefix = path.trim_matches('/');
    if !prefix.is_empty() {
        hub::path::ValidPath::parse(prefix)?;
    }
    let start: usize = match params.cursor.as_deref() {
        None | Some("") => 0,
        Some(c) => c.parse().map_err(|_| hub::HubError::Invalid {
            param: "cursor".into(),
            message: "the cursor is not one this server gave; follow the Link header's next URL, \
                      or start without a cursor"
                .into(),
        })?,
    };
    let repo = hub.repo(&access, &id).await?;
    let commit = hub.resolve(&repo, &rev).await?;
    let entries = hub.tree(&repo, &commit).await?;
    let recursive = params
        .recursive
        .as_deref()
        .is_some_and(|r| r.eq_ignore_ascii_case("true") || r == "1");
    let page = listing::page(&entries, prefix, recursive, start, TREE_PAGE);
    if !prefix.is_empty() && !page.found {
        return Err(hub::HubError::EntryNotFound {
            repo: repo.full_name(),
            path: prefix.to_owned(),
            commit: commit.id.clone(),
        }
        .into());
    }
    let nodes: Vec<Value> = page
        .nodes
        .iter()
        .map(|node| match node {
            Node::Directory(d) => {
                json!({"type": "directory", "oid": dir_oid(&commit.id, d), "size": 0, "path": d})
            }
            Node::File(e) => {
                let mut v =
                    json!({"type": "file", "oid": e.git_oid, "size": e.size, "path": e.path});
                if let Some(lfs) = lfs_json(e, "oid") {
                    v["lfs"] = lfs;
                }
                v
            }
        })
        .collect();
    let mut response = Json(Value::Array(nodes)).into_response();
    if page.more {
        let next = format!(
            "<{}?recursive={recursive}&cursor={}>; rel=\"next\"",
            uri.path(),
            start.saturating_add(page.nodes.len())
        );
        if let Ok(v) = HeaderValue::from_str(&next) {
            response.headers_mut().insert(axum::http::header::LINK, v);
        }
    }
    Ok(response)
}

/// `GET|HEAD /{org}/{name}/resolve/{rev}/{*path}`: a file's bytes, or (HEAD) its metadata.
pub async fn resolve(
    State(state): State<AppState>,
    Reader(access): Reader,
    method: Method,
    headers: HeaderMap,
    Path((org, name, rev, path)): Path<(String, String, String, String)>,
) -> HubResult<Response> {
    let hub = the_hub(&state)?;
    let id = repo_id(&org, &name)?;
    let view = hub.file(&access, &id, &rev, &path).await?;
    files::send(hub, view, &method, &headers, "hf_resolve").await
}
