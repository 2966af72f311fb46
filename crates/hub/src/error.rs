//! The hub's one error type. The gateway maps [`HubError::kind`] to a status and, for the
//! Hugging Face protocol, to the `X-Error-Code` its client reads.

use store::StoreError;

pub type Result<T, E = HubError> = std::result::Result<T, E>;

/// What a hub failure means to a client, for the gateway's status table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    RepoNotFound,
    RevisionNotFound,
    EntryNotFound,
    Invalid,
    Unauthenticated,
    Forbidden,
    Conflict,
    TooLarge,
    /// A tenant's hub storage or open-upload quota is used up.
    QuotaExceeded,
    RangeNotSatisfiable,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// Absent, or private and not the caller's (the two look the same).
    #[error("repository '{0}' not found; check the name, and send a key that may read it if it is private")]
    RepoNotFound(String),
    #[error("revision '{rev}' not found in repository '{repo}'")]
    RevisionNotFound { repo: String, rev: String },
    #[error("'{path}' does not exist in repository '{repo}' at revision {commit}")]
    EntryNotFound {
        repo: String,
        path: String,
        /// The commit the lookup resolved to (clients cache the absence per commit).
        commit: String,
    },
    #[error("invalid path '{path}': {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("{message}")]
    Invalid { param: String, message: String },
    #[error("anonymous reads are turned off on this server; send an API key")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    /// An upload chunk does not start where the upload stands.
    #[error("the upload is at byte {expected}, not {got}; resume from byte {expected}")]
    WrongOffset { expected: i64, got: i64 },
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("the requested range is outside the file of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("file system error: {0}")]
    Io(#[from] std::io::Error),
    #[error("store error: {0}")]
    Store(StoreError),
    #[error("{0}")]
    Remote(String),
}

impl From<StoreError> for HubError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(message) => HubError::Conflict(message),
            other => HubError::Store(other),
        }
    }
}

impl HubError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            HubError::RepoNotFound(_) => ErrorKind::RepoNotFound,
            HubError::RevisionNotFound { .. } => ErrorKind::RevisionNotFound,
            HubError::EntryNotFound { .. } => ErrorKind::EntryNotFound,
            HubError::InvalidPath { .. } | HubError::Invalid { .. } => ErrorKind::Invalid,
            HubError::Unauthenticated => ErrorKind::Unauthenticated,
            HubError::Forbidden(_) => ErrorKind::Forbidden,
            HubError::Conflict(_) | HubError::WrongOffset { .. } => ErrorKind::Conflict,
            HubError::TooLarge(_) => ErrorKind::TooLarge,
            HubError::QuotaExceeded(_) => ErrorKind::QuotaExceeded,
            HubError::RangeNotSatisfiable { .. } => ErrorKind::RangeNotSatisfiable,
            HubError::Io(_) | HubError::Store(_) | HubError::Remote(_) => ErrorKind::Internal,
        }
    }

    /// The request parameter at fault, if one is.
    pub fn param(&self) -> Option<&str> {
        match self {
            HubError::InvalidPath { .. } => Some("path"),
            HubError::Invalid { param, .. } => Some(param),
            _ => None,
        }
    }

    pub(crate) fn invalid(param: &str, message: impl Into<String>) -> Self {
        HubError::Invalid {
            param: param.to_owned(),
            message: message.into(),
        }
    }
}
