//! The control plane's one error type. The gateway maps each variant to a status once.

use crate::gguf::GgufError;
use crate::placement::NoRoom;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A spec field is out of range (400).
    #[error("invalid deployment field `{field}`: {message}")]
    InvalidSpec {
        field: &'static str,
        message: String,
    },
    /// No deployment has this name (404).
    #[error("no deployment is named '{0}'")]
    NotFound(String),
    /// A deployment with this name exists (409).
    #[error("a deployment named '{0}' exists already")]
    AlreadyExists(String),
    /// The node's budgets cannot hold a replica (409/507 at the gateway's choice).
    #[error(transparent)]
    NoRoom(#[from] NoRoom),
    /// The model file cannot be sized (400: a bad or missing file).
    #[error("cannot size the model: {0}")]
    Model(#[from] GgufError),
    /// A replica failed to start.
    #[error("a replica failed to start: {0}")]
    Launch(String),
    /// The deployment store failed.
    #[error("the deployment store failed: {0}")]
    Store(String),
    /// The deployment is shutting down or gone.
    #[error("the deployment '{0}' is shutting down")]
    Stopped(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
