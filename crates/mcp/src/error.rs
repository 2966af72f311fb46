//! The MCP gateway's errors, in domain terms: the gateway maps them to HTTP statuses (the
//! registry routes) or JSON-RPC errors (`/mcp`).

use store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// A field of a registration is wrong; `param` names it.
    #[error("{message}")]
    Invalid {
        param: &'static str,
        message: String,
    },
    /// Not this caller's to see or use (reported like a missing one where it is another
    /// tenant's).
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// An outbound address the operator does not allow, or an operation only the operator may do.
    #[error("{0}")]
    Forbidden(String),
    /// The MCP server could not be reached or answered badly.
    #[error("{0}")]
    Upstream(String),
    /// The upstream ended the session this client session held (it will be renewed).
    #[error("the MCP server ended its session")]
    SessionGone,
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

impl McpError {
    pub fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            param,
            message: message.into(),
        }
    }

    /// A stable code for the wire.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "invalid_request",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::Forbidden(_) => "permission_denied",
            Self::Upstream(_) | Self::SessionGone => "mcp_server_error",
            Self::Store(StoreError::NotFound { .. }) => "not_found",
            Self::Store(StoreError::Conflict(_)) => "conflict",
            Self::Store(_) | Self::Internal(_) => "internal_error",
        }
    }
}

pub type Result<T, E = McpError> = std::result::Result<T, E>;
