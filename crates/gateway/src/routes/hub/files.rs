//! Sending a file's bytes: the headers `huggingface_hub` reads, one `Range` (206 / 416), and
//! the body streamed from disk in bounded chunks (never held in memory), optionally
//! throttled (a test-only setting that makes interrupted downloads reproducible).

use std::io::SeekFrom;
use std::time::{Duration, Instant};

use super::range::RangeRequest;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hub::{FileView, TreeEntry};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::{metrics, HubResult};

/// Read size when streaming a file.
const CHUNK: usize = 256 << 10;
/// Git LFS pointer files are about this long; `huggingface_hub` wants the field.
pub const LFS_POINTER_SIZE: u64 = 134;
const LFS_MIN_BYTES: i64 = 10 << 20;
const LFS_EXTENSIONS: &[&str] = &[
    ".gguf",
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".onnx",
    ".msgpack",
    ".h5",
    ".npz",
    ".tflite",
    ".ot",
    ".zip",
    ".tar",
    ".gz",
    ".zst",
    ".parquet",
    ".arrow",
    ".pkl",
];

/// Whether the Hub would keep this file in LFS (large or binary): its ETag is then the
/// sha256 and the listing carries `lfs` details; otherwise the ETag is the git blob id.
pub fn is_lfs(entry: &TreeEntry) -> bool {
    let lower = entry.path.to_ascii_lowercase();
    entry.size >= LFS_MIN_BYTES || LFS_EXTENSIONS.iter().any(|ext| lower.ends_with(ext))
}

/// The `lfs` object of a listing entry, if the file is LFS.
pub fn lfs_json(entry: &TreeEntry, sha_key: &str) -> Option<serde_json::Value> {
    is_lfs(entry).then(
        || json!({ sha_key: entry.sha256, "size": entry.size, "pointerSize": LFS_POINTER_SIZE }),
    )
}

pub fn range_not_satisfiable(size: u64, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "invalid_request_error",
        "code": "range_not_satisfiable", "param": "range"}});
    let mut response = (StatusCode::RANGE_NOT_SATISFIABLE, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
        response.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    response
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// Answers a GET or HEAD for `view`, honouring one `Range`.
pub async fn send(
    hub: &hub::Hub,
    view: FileView,
    method: &Method,
    request_headers: &HeaderMap,
    route: &'static str,
) -> HubResult<Response> {
    let size = u64::try_from(view.entry.size).unwrap_or(0);
    let range_header = request_headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    let range = RangeRequest::parse(range_header, size);
    if range == RangeRequest::Unsatisfiable {
        return Ok(range_not_satisfiable(
            size,
            &format!(
                "the range '{}' is outside the file of {size} bytes",
                range_header.unwrap_or("")
            ),
        ));
    }
    let (status, start, len) = match range {
        RangeRequest::Partial { start, end } => {
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        _ => (StatusCode::OK, 0, size),
    };

    let mut headers = HeaderMap::new();
    let etag = if is_lfs(&view.entry) {
        set(
            &mut headers,
            "x-linked-etag",
            &format!("\"{}\"", view.entry.sha256),
        );
        set(&mut headers, "x-linked-size", &size.to_string());
        &view.entry.sha256
    } else {
        &view.entry.git_oid
    };
    set(&mut headers, "etag", &format!("\"{etag}\""));
    set(&mut headers, "x-repo-commit", &view.commit.id);
    set(&mut headers, "accept-ranges", "bytes");
    set(&mut headers, "content-type", "application/octet-stream");
    set(&mut headers, "content-length", &len.to_string());
    set(&mut headers, "x-sha256", &view.entry.sha256);
    if status == StatusCode::PARTIAL_CONTENT {
        set(
            &mut headers,
            "content-range",
            &format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    if method == Method::HEAD {
        return Ok((status, headers).into_response());
    }

    let mut file = tokio::fs::File::open(&view.blob_path).await.map_err(|e| {
        hub::HubError::Io(std::io::Error::new(
            e.kind(),
            format!(
                "blob {} of {}: {e}",
                view.entry.sha256,
                view.repo.full_name()
            ),
        ))
    })?;
    file.seek(SeekFrom::Start(start))
        .await
        .map_err(hub::HubError::Io)?;
    metrics::record_download(route, start > 0);
    if start == 0 {
        let (hub, repo) = (hub.clone(), view.repo.clone());
        tokio::spawn(async move {
            if let Err(e) = hub.count_download(&repo).await {
                tracing::warn!(error = %e, "could not count a download");
            }
        });
    }
    let throttle = hub.config().serve_throttle_bytes_per_sec;
    let chunk = if throttle.is_some() { 64 << 10 } else { CHUNK };
    let reader = ReaderStream::with_capacity(file.take(len), chunk);
    let body = match throttle {
        None => Body::from_stream(reader.inspect(move |r| {
            if let Ok(bytes) = r {
                metrics::record_bytes(route, bytes.len());
            }
        })),
        Some(rate) => Body::from_stream(throttled(reader, rate, route)),
    };
    let mut response = (status, headers, body).into_response();
    response.extensions_mut().insert(crate::observe::Streamed);
    Ok(response)
}

/// Paces a byte stream to `rate` bytes per second.
fn throttled(
    reader: ReaderStream<tokio::io::Take<tokio::fs::File>>,
    rate: u64,
    route: &'static str,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> {
    let rate = rate.max(1);
    futures::stream::unfold(
        (reader, Instant::now(), 0u64),
        move |(mut reader, started, sent)| async move {
            let item = reader.next().await?;
            let sent = match &item {
                Ok(bytes) => {
                    metrics::record_bytes(route, bytes.len());
                    sent + bytes.len() as u64
                }
                Err(_) => sent,
            };
            let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
            Some((item, (reader, started, sent)))
        },
    )
}
