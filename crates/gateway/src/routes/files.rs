//! The Files API (`/v1/files`), a tenant key with `inference` scope on every route; the admin
//! key has no files of its own but sets a tenant's quota
//! (`/admin/v1/tenants/{id}/files_quota`).
//!
//! ```text
//! POST   /v1/files                multipart: file, purpose[, expires_after[anchor|seconds]]
//! GET    /v1/files                ?purpose=&limit=&order=asc|desc&after=
//! GET    /v1/files/{id}
//! GET    /v1/files/{id}/content   the bytes, one Range honoured
//! DELETE /v1/files/{id}
//! ```
//! An upload streams to the domain's staging file as it arrives (never held whole); the body
//! limit of this route alone is raised to the largest file plus room for the form.

use axum::body::Body;
use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::auth::{Admin, Inference};
use crate::error::{ApiError, Code, Result};
use crate::routes::hub::files::range_not_satisfiable;
use crate::routes::hub::range::RangeRequest;
use crate::wire::files::{
    FileDeletedView, FileForm, FileListView, FileQuotaBody, FileQuotaView, FileView, ListQuery,
    MAX_TEXT_FIELD_BYTES,
};
use crate::AppState;

/// Room for the form around the file: boundaries, part headers, the text fields.
const FORM_OVERHEAD_BYTES: u64 = 64 << 10;
/// Read size when sending a file.
const CHUNK: usize = 256 << 10;

/// The Files API's routes; `max_file_bytes` sets the upload route's body limit.
pub fn router(max_file_bytes: u64) -> Router<AppState> {
    let body_limit =
        usize::try_from(max_file_bytes.saturating_add(FORM_OVERHEAD_BYTES)).unwrap_or(usize::MAX);
    Router::new()
        .route(
            "/v1/files",
            post(create)
                .layer(DefaultBodyLimit::max(body_limit))
                .get(list),
        )
        .route("/v1/files/{id}", get(retrieve).delete(delete))
        .route("/v1/files/{id}/content", get(content))
        .route(
            "/admin/v1/tenants/{id}/files_quota",
            get(get_quota).put(put_quota),
        )
}

/// The tenant whose files a request reaches: a tenant key with `inference` scope (403 for
/// the admin key, which has no files), checked before the handler runs.
pub struct FileOwner(pub String);

impl FromRequestParts<AppState> for FileOwner {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let Inference(caller) = Inference::from_request_parts(parts, state).await?;
        match caller.tenant_id() {
            Some(id) => Ok(FileOwner(id.to_owned())),
            None => Err(ApiError::new(
                Code::PermissionDenied,
                "Files belong to a tenant: call /v1/files with a tenant's API key. The admin \
                 key has no files of its own (it sets a tenant's quota at \
                 /admin/v1/tenants/{id}/files_quota).",
            )),
        }
    }
}

fn the_files(state: &AppState) -> Result<&files::Files> {
    state
        .files()
        .ok_or_else(|| ApiError::new(Code::NotFound, "This server runs without the Files API."))
}

/// Maps a domain refusal, logging internal failures (their messages stay in the log).
fn refused(err: files::FilesError) -> ApiError {
    if matches!(
        err,
        files::FilesError::Io(_) | files::FilesError::Store(_) | files::FilesError::Hub(_)
    ) {
        tracing::error!(error = %err, "files: internal failure");
    }
    ApiError::from_files(err)
}

fn unreadable(err: &MultipartError, max_file_bytes: u64) -> files::FilesError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        files::FilesError::TooLarge {
            limit: max_file_bytes,
        }
    } else {
        files::FilesError::Invalid {
            param: "file",
            message: format!("The multipart body could not be read: {}", err.body_text()),
        }
    }
}

/// A text field, at most [`MAX_TEXT_FIELD_BYTES`], UTF-8.
async fn text_field(
    mut field: axum::extract::multipart::Field<'_>,
    name: &str,
    max_file_bytes: u64,
) -> Result<String> {
    let mut value = Vec::new();
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => {
                if value.len() + chunk.len() > MAX_TEXT_FIELD_BYTES {
                    return Err(ApiError::invalid(
                        name,
                        format!(
                            "The form field '{name}' is longer than {MAX_TEXT_FIELD_BYTES} bytes."
                        ),
                    ));
                }
                value.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return Err(refused(unreadable(&e, max_file_bytes))),
        }
    }
    String::from_utf8(value)
        .map_err(|_| ApiError::invalid(name, format!("The form field '{name}' is not UTF-8.")))
}

/// `POST /v1/files`.
pub async fn create(
    State(state): State<AppState>,
    FileOwner(tenant): FileOwner,
    multipart: std::result::Result<Multipart, MultipartRejection>,
) -> Result<Json<FileView>> {
    let files = the_files(&state)?;
    let limit = files.config().max_file_bytes;
    let mut multipart = multipart.map_err(|r| {
        ApiError::invalid(
            "file",
            format!(
                "POST /v1/files takes a multipart/form-data body with a 'file' and a 'purpose' \
                 field ({}).",
                r.body_text()
            ),
        )
    })?;
    let mut form = FileForm::default();
    let mut staged = None;
    let mut filename = String::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return Err(refused(unreadable(&e, limit))),
        };
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            if staged.is_some() {
                return Err(ApiError::invalid(
                    "file",
                    "The form field 'file' is given twice; send one file.",
                ));
            }
            filename = field.file_name().unwrap_or("file").to_owned();
            let body = Box::pin(field.map(move |chunk| chunk.map_err(|e| unreadable(&e, limit))));
            staged = Some(files.stage(&tenant, body).await.map_err(refused)?);
        } else if FileForm::knows(&name) {
            let value = text_field(field, &name, limit).await?;
            form.field(&name, &value)?;
        } else {
            // Refused by name, before anything more is read.
            form.field(&name, "")?;
        }
    }
    let valid = form.finish()?;
    let staged = staged.ok_or_else(|| {
        ApiError::invalid(
            "file",
            "Missing required parameter: 'file'. Send the file's bytes as the form field 'file'.",
        )
    })?;
    let file = files
        .create(
            &tenant,
            staged,
            files::NewFile {
                filename,
                purpose: valid.purpose,
                expires_after: valid.expires_after,
            },
        )
        .await
        .map_err(refused)?;
    tracing::info!(tenant = %tenant, file = %file.id, bytes = file.bytes, purpose = %file.purpose, "file stored");
    Ok(Json(FileView::from(file)))
}

/// `GET /v1/files`.
pub async fn list(
    State(state): State<AppState>,
    FileOwner(tenant): FileOwner,
    query: std::result::Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<FileListView>> {
    let Query(query) = query.map_err(|r| {
        ApiError::invalid(
            "query",
            format!(
                "{}. GET /v1/files takes purpose, limit (1 to 10000), order (asc or desc) and \
                 after (a file id).",
                r.body_text()
            ),
        )
    })?;
    let listing = query.validate()?;
    let page = the_files(&state)?
        .list(&tenant, &listing)
        .await
        .map_err(refused)?;
    Ok(Json(FileListView::new(page)))
}

/// `GET /v1/files/{id}`.
pub async fn retrieve(
    State(state): State<AppState>,
    FileOwner(tenant): FileOwner,
    Path(id): Path<String>,
) -> Result<Json<FileView>> {
    let file = the_files(&state)?
        .get(&tenant, &id)
        .await
        .map_err(refused)?;
    Ok(Json(FileView::from(file)))
}

/// `DELETE /v1/files/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    FileOwner(tenant): FileOwner,
    Path(id): Path<String>,
) -> Result<Json<FileDeletedView>> {
    let file = the_files(&state)?
        .delete(&tenant, &id)
        .await
        .map_err(refused)?;
    tracing::info!(tenant = %tenant, file = %file.id, "file deleted");
    Ok(Json(FileDeletedView::new(file.id)))
}

fn set(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// `GET /v1/files/{id}/content`: the bytes, streamed from the blob in bounded reads, with
/// one `Range` honoured (206 / 416).
pub async fn content(
    State(state): State<AppState>,
    FileOwner(tenant): FileOwner,
    Path(id): Path<String>,
    request_headers: HeaderMap,
) -> Result<Response> {
    let (file, path) = the_files(&state)?
        .content(&tenant, &id)
        .await
        .map_err(refused)?;
    // Deleted since it was looked up: as if it never was. An open file stays readable.
    let mut blob = tokio::fs::File::open(&path)
        .await
        .map_err(|_| refused(files::FilesError::NotFound(id.clone())))?;
    let size = u64::try_from(file.bytes).unwrap_or(0);
    let range_header = request_headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    let (status, start, len) = match RangeRequest::parse(range_header, size) {
        RangeRequest::Unsatisfiable => {
            return Ok(range_not_satisfiable(
                size,
                &format!("the range is outside the file of {size} bytes"),
            ))
        }
        RangeRequest::Partial { start, end } => {
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeRequest::Full => (StatusCode::OK, 0, size),
    };
    let mut headers = HeaderMap::new();
    set(
        &mut headers,
        header::CONTENT_TYPE,
        "application/octet-stream",
    );
    set(&mut headers, header::CONTENT_LENGTH, &len.to_string());
    set(&mut headers, header::ACCEPT_RANGES, "bytes");
    if status == StatusCode::PARTIAL_CONTENT {
        set(
            &mut headers,
            header::CONTENT_RANGE,
            &format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    blob.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|e| refused(files::FilesError::Io(e)))?;
    let body = Body::from_stream(ReaderStream::with_capacity(blob.take(len), CHUNK));
    let mut response = (status, headers, body).into_response();
    response.extensions_mut().insert(crate::observe::Streamed);
    Ok(response)
}

/// `GET /admin/v1/tenants/{id}/files_quota`.
pub async fn get_quota(
    State(state): State<AppState>,
    _: Admin,
    Path(tenant): Path<String>,
) -> Result<Json<FileQuotaView>> {
    state
        .tenancy()
        .directory
        .tenant(&tenant)
        .await
        .map_err(ApiError::from_tenancy)?;
    let quota = the_files(&state)?.quota(&tenant).await.map_err(refused)?;
    Ok(Json(FileQuotaView::new(tenant, quota)))
}

/// `PUT /admin/v1/tenants/{id}/files_quota` `{"quota_bytes": N}` (or `null`: the default).
pub async fn put_quota(
    State(state): State<AppState>,
    _: Admin,
    Path(tenant): Path<String>,
    body: std::result::Result<Json<FileQuotaBody>, JsonRejection>,
) -> Result<Json<FileQuotaView>> {
    let Json(body) = body.map_err(|r| {
        ApiError::invalid(
            "quota_bytes",
            format!(
                "{}. The body is {{\"quota_bytes\": BYTES}}, or null for the server's default.",
                r.body_text()
            ),
        )
    })?;
    let quota = the_files(&state)?
        .set_quota(&tenant, body.quota_bytes)
        .await
        .map_err(refused)?;
    Ok(Json(FileQuotaView::new(tenant, quota)))
}
