//! The Batch API's wire shapes (`/v1/batches`): the create body, the list query, OpenAI's
//! batch object and the mapping of `batch::BatchError`.

use batch::store_types::{BatchPage, BatchRecord, Timestamp};
use batch::{BatchError, Endpoint, NewBatch};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ApiError, Code, Result};
use crate::validate::{parse_object, Fields};

/// Most `metadata` pairs, and their key and value lengths (OpenAI's).
const METADATA_PAIRS: usize = 16;
const METADATA_KEY: usize = 64;
const METADATA_VALUE: usize = 512;

fn endpoints() -> String {
    Endpoint::ALL
        .iter()
        .map(|e| format!("'{}'", e.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `POST /v1/batches`.
pub fn create(body: &[u8]) -> Result<NewBatch> {
    let map = parse_object(body)?;
    let fields = Fields::root(&map);
    fields.deny_unknown(&["input_file_id", "endpoint", "completion_window", "metadata"])?;
    let endpoint = fields.required_string("endpoint")?;
    let endpoint = Endpoint::parse(endpoint).ok_or_else(|| {
        ApiError::invalid(
            "endpoint",
            format!(
                "Invalid value for 'endpoint': '{}'. Supported: {}.",
                endpoint.chars().take(100).collect::<String>(),
                endpoints()
            ),
        )
    })?;
    let metadata = metadata(&fields)?;
    Ok(NewBatch {
        input_file_id: fields.required_string("input_file_id")?.to_owned(),
        endpoint,
        completion_window: fields.required_string("completion_window")?.to_owned(),
        metadata,
    })
}

/// `metadata`: at most 16 pairs of short strings, kept as JSON text (also the fine-tuning
/// API's).
pub(crate) fn metadata(fields: &Fields<'_>) -> Result<Option<String>> {
    Ok(match fields.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(pairs)) => {
            if pairs.len() > METADATA_PAIRS {
                return Err(ApiError::invalid(
                    "metadata",
                    format!("'metadata' may have at most {METADATA_PAIRS} pairs."),
                ));
            }
            for (key, value) in pairs {
                let ok = key.chars().count() <= METADATA_KEY
                    && value
                        .as_str()
                        .is_some_and(|v| v.chars().count() <= METADATA_VALUE);
                if !ok {
                    return Err(ApiError::invalid(
                        "metadata",
                        format!(
                            "'metadata' maps keys of at most {METADATA_KEY} characters to \
                         strings of at most {METADATA_VALUE}."
                        ),
                    ));
                }
            }
            Some(Value::Object(pairs.clone()).to_string())
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "metadata",
                "'metadata' must be an object of string values.",
            ))
        }
    })
}

/// `GET /v1/batches`'s query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub after: Option<String>,
    pub limit: Option<u32>,
}

/// OpenAI's `request_counts`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RequestCountsView {
    pub total: i64,
    pub completed: i64,
    pub failed: i64,
}

/// OpenAI's batch object.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BatchView {
    pub id: String,
    pub object: &'static str,
    pub endpoint: String,
    pub model: Option<String>,
    pub errors: Option<Value>,
    pub input_file_id: String,
    pub completion_window: String,
    pub status: String,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    pub created_at: i64,
    pub in_progress_at: Option<i64>,
    pub expires_at: i64,
    pub finalizing_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub expired_at: Option<i64>,
    pub cancelling_at: Option<i64>,
    pub cancelled_at: Option<i64>,
    pub request_counts: RequestCountsView,
    pub metadata: Option<Value>,
}

fn json(text: Option<&str>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(t).ok())
}

impl From<BatchRecord> for BatchView {
    fn from(b: BatchRecord) -> Self {
        let secs = |t: Option<Timestamp>| t.map(|t| t.timestamp());
        Self {
            object: "batch",
            errors: json(b.errors.as_deref()),
            metadata: json(b.metadata.as_deref()),
            request_counts: RequestCountsView {
                total: b.total,
                completed: b.completed,
                failed: b.failed,
            },
            created_at: b.created_at.timestamp(),
            in_progress_at: secs(b.in_progress_at),
            expires_at: b.expires_at.timestamp(),
            finalizing_at: secs(b.finalizing_at),
            completed_at: secs(b.completed_at),
            failed_at: secs(b.failed_at),
            expired_at: secs(b.expired_at),
            cancelling_at: secs(b.cancelling_at),
            cancelled_at: secs(b.cancelled_at),
            id: b.id,
            endpoint: b.endpoint,
            model: b.model,
            input_file_id: b.input_file_id,
            completion_window: b.completion_window,
            status: b.status,
            output_file_id: b.output_file_id,
            error_file_id: b.error_file_id,
        }
    }
}

/// A page of batches, in OpenAI's list shape.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BatchListView {
    pub object: &'static str,
    pub data: Vec<BatchView>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

impl BatchListView {
    pub fn new(page: BatchPage) -> Self {
        let data: Vec<BatchView> = page.batches.into_iter().map(BatchView::from).collect();
        Self {
            object: "list",
            first_id: data.first().map(|b| b.id.clone()),
            last_id: data.last().map(|b| b.id.clone()),
            data,
            has_more: page.has_more,
        }
    }
}

impl ApiError {
    /// Maps a Batch API refusal. Internal failures say nothing of their cause; the caller
    /// logs them.
    pub fn from_batch(err: BatchError) -> Self {
        let message = err.to_string();
        match err {
            BatchError::Invalid { param, .. } => Self::invalid(param, message),
            BatchError::NotFound(_) => Self::new(Code::NotFound, message).with_param("batch_id"),
            BatchError::Conflict(_) => Self::new(Code::Conflict, message),
            // Nothing frees room at a known time (the tenant's batches finishing do): a
            // minute is a polite first wait.
            BatchError::TokenLimit { .. } => {
                Self::new(Code::TokenLimitExceeded, message).with_retry_after(60)
            }
            BatchError::Files(files::FilesError::NotFound(id)) => {
                Self::new(Code::NotFound, format!("No such File object: {id}"))
                    .with_param("input_file_id")
            }
            BatchError::Files(files::FilesError::Invalid { message, .. }) => {
                Self::invalid("input_file_id", message)
            }
            BatchError::Files(_) => Self::new(
                Code::Internal,
                "The batch's files could not be read or written; try again.",
            ),
            BatchError::Store(_) | BatchError::Internal(_) => {
                Self::new(Code::Internal, "The batch could not be stored; try again.")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_bodies_are_read_strictly() {
        let ok = br#"{"input_file_id":"file-1","endpoint":"/v1/chat/completions","completion_window":"24h","metadata":{"a":"b"}}"#;
        let new = create(ok).expect("valid");
        assert_eq!(new.endpoint, Endpoint::Chat);
        assert_eq!(new.metadata.as_deref(), Some(r#"{"a":"b"}"#));
        for (body, param) in [
            (&br#"{"input_file_id":"f","endpoint":"/v1/nope","completion_window":"24h"}"#[..], "endpoint"),
            (br#"{"endpoint":"/v1/completions","completion_window":"24h"}"#, "input_file_id"),
            (br#"{"input_file_id":"f","endpoint":"/v1/completions","completion_window":"24h","x":1}"#, "x"),
            (br#"{"input_file_id":"f","endpoint":"/v1/completions","completion_window":"24h","metadata":{"a":1}}"#, "metadata"),
        ] {
            let err = create(body).expect_err("refused");
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
            assert_eq!(err.body().error.param, Some(param), "{}", String::from_utf8_lossy(body));
        }
    }
}
