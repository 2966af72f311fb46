//! The Files API's one error type; the `wire` crate maps it to statuses.

use hub::HubError;
use store::StoreError;

pub type Result<T, E = FilesError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A request parameter (`param`) is missing or wrong.
    #[error("{message}")]
    Invalid {
        param: &'static str,
        message: String,
    },
    /// The file is larger than this server accepts.
    #[error(
        "The file is larger than this server accepts ({limit} bytes per file); upload a \
         smaller file, or ask the operator for a larger --files-max-file-bytes."
    )]
    TooLarge { limit: u64 },
    /// The tenant's files would hold more than its quota.
    #[error(
        "This file ({size}{more} bytes) would take your files past your quota: they hold \
         {used} of {quota} bytes. Delete files you no longer need, or ask the operator to \
         raise your files quota."
    )]
    OverQuota {
        used: i64,
        quota: i64,
        size: u64,
        /// `+` when only the first `size` bytes were received before the upload was cut.
        more: &'static str,
    },
    /// Missing, another tenant's, or expired: all alike.
    #[error("No such File object: {0}")]
    NotFound(String),
    /// Setting the quota of a tenant that does not exist (or was deleted).
    #[error("Tenant '{0}' not found (or deleted).")]
    UnknownTenant(String),
    #[error("file system error: {0}")]
    Io(#[from] std::io::Error),
    #[error("store error: {0}")]
    Store(StoreError),
    #[error("blob store error: {0}")]
    Hub(#[from] HubError),
}

impl From<StoreError> for FilesError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound { entity: "file", id } => FilesError::NotFound(id),
            StoreError::NotFound {
                entity: "tenant",
                id,
            } => FilesError::UnknownTenant(id),
            other => FilesError::Store(other),
        }
    }
}

impl FilesError {
    pub(crate) fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        FilesError::Invalid {
            param,
            message: message.into(),
        }
    }
}
