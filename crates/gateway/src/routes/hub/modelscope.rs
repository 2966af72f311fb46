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

use hub::listing::{self, Node};

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

/// The most entries one listing answers: a listing without `PageSize` that would hold more
/// is refused (ModelScope's own client does not page), and no page may be larger.
const MAX_ENTRIES: usize = 20_000;
/// The longest commit message repeated in every file entry.
const ENTRY_MESSAGE_CHARS: usize = 200;

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct FilesParams {
    revision: Option<String>,
    recursive: Option<String>,
    root: Option<String>,
    file_path: Option<String>,
    page_number: Option<String>,
    page_size: Option<String>,
}

/// `PageNumber` (from 1) and `PageSize`, if the client pages.
fn paging(p: &FilesParams) -> Result<Option<(usize, usize)>, hub::HubError> {
    let number =
        |param: &str, value: Option<&str>, max: usize| -> Result<Option<usize>, hub::HubError> {
            match value.filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) => match v.parse::<usize>() {
                    Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
                    _ => Err(hub::HubError::Invalid {
                        param: param.into(),
                        message: format!("{param} must be an integer from 1 to {max}, not '{v}'"),
                    }),
                },
            }
        };
    let size = number("PageSize", p.page_size.as_deref(), MAX_ENTRIES)?;
    let page = number("PageNumber", p.page_number.as_deref(), usize::MAX)?;
    Ok(match (page, size) {
        (None, None) => None,
        (page, size) => Some((page.unwrap_or(1), size.unwrap_or(100))),
    })
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

/// `GET /api/v1/models/{org}/{name}/repo/files?Revision=&Recursive=&Root=&PageNumber=&PageSize=`:
/// the listing, built one page at a time (see [`hub::listing`]); without `PageSize`, the
/// whole listing up to [`MAX_ENTRIES`] entries, and a clear refusal past that.
pub async fn files(
    State(state): State<AppState>,
    Reader(access): Reader,
    Path((org, name)): Path<(String, String)>,
    Query(params): Query<FilesParams>,
) -> HubResult<Json<Value>> {
    let hub = the_hub(&state)?;
    let paging = paging(&params)?;
    let root = params.root.as_deref().unwrap_or("").trim_matches('/');
    if !root.is_empty() {
        hub::path::ValidPath::parse(root)?;
    }
    let repo = hub.repo(&access, &repo_id(&org, &name)?).await?;
    let commit = hub.resolve(&repo, revision(&params)).await?;
    let entries = hub.tree(&repo, &commit).await?;
    let recursive = params
        .recursive
        .as_deref()
        .is_some_and(|r| r.eq_ignore_ascii_case("true") || r == "1");
    let (skip, take) = match paging {
        Some((number, size)) => ((number - 1).saturating_mul(size), size),
        None => (0, MAX_ENTRIES),
    };
    let page = listing::page(&entries, root, recursive, skip, take);
    if paging.is_none() && page.more {
        return Err(hub::HubError::Invalid {
            param: "PageSize".into(),
            message: format!(
                "this listing has more than {MAX_ENTRIES} entries; page it with PageNumber \
                 (from 1) and PageSize (at most {MAX_ENTRIES}), or list a subdirectory with Root"
            ),
        }
        .into());
    }
    let message: String = commit
        .message
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(ENTRY_MESSAGE_CHARS)
        .collect();
    let all: Vec<Value> = page
        .nodes
        .iter()
        .map(|node| match node {
            Node::Directory(d) => json!({"Name": d.rsplit('/').next().unwrap_or(d), "Path": d,
                "Type": "tree", "Size": 0, "Revision": commit.id}),
            Node::File(e) => json!({
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
                "CommitMessage": message,
                "CommitterName": commit.author,
                "CommittedDate": commit.created_at.timestamp(),
            }),
        })
        .collect();
    let mut data = json!({
        "Files": all,
        "LatestCommitter": {"CommitterName": commit.author, "CommittedDate": commit.created_at.timestamp(),
            "Id": commit.id, "Message": commit.message},
    });
    if paging.is_some() {
        data["HasMore"] = json!(page.more);
    }
    Ok(ok(data))
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
