//! The Batch API's one error type; the `wire` crate maps it to statuses.

use files::FilesError;
use store::StoreError;

pub type Result<T, E = BatchError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// A request parameter (`param`) is missing or wrong (400).
    #[error("{message}")]
    Invalid {
        param: &'static str,
        message: String,
    },
    /// Missing or another tenant's: alike (404).
    #[error("No such Batch object: {0}")]
    NotFound(String),
    /// The input file: missing, another tenant's, expired (404), or unreadable.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// The batch is in a status that does not allow this (409 in OpenAI's shape).
    #[error("{0}")]
    Conflict(String),
    /// The tenant's enqueued batch tokens would pass its limit (429 in OpenAI's shape).
    #[error(
        "Enqueued token limit reached: your unfinished batches hold {enqueued} estimated tokens \
         and this batch adds {adding}, more than the limit of {limit} enqueued tokens per \
         tenant. Wait for your batches to finish (or cancel one), or submit fewer requests."
    )]
    TokenLimit {
        enqueued: i64,
        adding: i64,
        limit: i64,
    },
    #[error("store error: {0}")]
    Store(StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for BatchError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound {
                entity: "batch",
                id,
            } => BatchError::NotFound(id),
            other => BatchError::Store(other),
        }
    }
}

impl BatchError {
    pub(crate) fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        BatchError::Invalid {
            param,
            message: message.into(),
        }
    }
}
