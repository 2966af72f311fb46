//! The fine-tuning API's one error type; the `wire` crate maps it to statuses.

use files::FilesError;
use store::StoreError;

pub type Result<T, E = JobError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A request parameter (`param`) is missing or wrong (400).
    #[error("{message}")]
    Invalid {
        param: &'static str,
        message: String,
    },
    /// Missing or another tenant's: alike (404).
    #[error("No such fine-tuning job: {0}")]
    NotFound(String),
    /// The base model: not served, or not one this server can fine-tune (404 naming `model`).
    #[error("{0}")]
    Model(String),
    /// A training or validation file: missing, another tenant's, expired (404), or unreadable.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// The tenant has as many unfinished jobs as it may (429).
    #[error("{0}")]
    TooManyJobs(String),
    /// The job is in a status that does not allow this (409).
    #[error("{0}")]
    Conflict(String),
    /// The ledger refused: the balance cannot cover the job (402), a disabled tenant (403).
    #[error(transparent)]
    Tenancy(#[from] tenancy::Error),
    #[error("store error: {0}")]
    Store(StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for JobError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound {
                entity: "fine_tuning_job",
                id,
            } => JobError::NotFound(id),
            other => JobError::Store(other),
        }
    }
}

impl JobError {
    pub(crate) fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        JobError::Invalid {
            param,
            message: message.into(),
        }
    }
}
