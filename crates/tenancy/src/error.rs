//! The tenancy error: one enum, one stable code per variant. The gateway owns the code → HTTP
//! status table (see [`Error::code`]).

use store::StoreError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Unknown, malformed, revoked or expired key, or a disabled tenant's key (401).
    #[error("invalid API key")]
    InvalidApiKey,
    /// Grant plus balance, less what is held, does not cover the request's worst case (402).
    #[error("{message}")]
    InsufficientQuota { message: String },
    /// The request's worst case would pass a key's or tenant's spend budget for the period
    /// (402 `budget_exceeded`).
    #[error("{message}")]
    BudgetExceeded { message: String },
    /// The key lacks a scope or the model, or the tenant may not spend (403).
    #[error("{message}")]
    PermissionDenied { message: String },
    /// A key's or tenant's RPM/TPM limit (429 with `Retry-After`).
    #[error("{message}")]
    RateLimited {
        retry_after_secs: u64,
        message: String,
    },
    #[error("{message}")]
    NotFound { message: String },
    #[error("{message}")]
    Conflict { message: String },
    /// A request's worst case is more than a TPM limit allows in a minute, so it can never be
    /// admitted as sent (400).
    #[error("this request may use {tokens} tokens, more than the {owner} limit of {limit} tokens per minute")]
    ExceedsTokenLimit {
        tokens: i64,
        limit: i64,
        /// `key` or `tenant`.
        owner: String,
    },
    /// Input that fails validation; `param` names the offending field of the domain request
    /// (400).
    #[error("{message}")]
    Invalid {
        message: String,
        param: Option<String>,
    },
    /// The database failed or holds something unreadable (500). Details are logged, not shown.
    #[error("internal error")]
    Internal,
}

impl Error {
    /// The stable code, as the wire's `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidApiKey => "invalid_api_key",
            Self::InsufficientQuota { .. } => "insufficient_quota",
            Self::BudgetExceeded { .. } => "budget_exceeded",
            Self::PermissionDenied { .. } => "permission_denied",
            Self::RateLimited { .. } => "rate_limit_exceeded",
            Self::NotFound { .. } => "not_found",
            Self::Conflict { .. } => "conflict",
            Self::Invalid { .. } | Self::ExceedsTokenLimit { .. } => "invalid_request_error",
            Self::Internal => "internal_error",
        }
    }

    pub(crate) fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            message: message.into(),
            param: Some(param.to_owned()),
        }
    }

    pub(crate) fn denied(message: impl Into<String>) -> Self {
        Self::PermissionDenied {
            message: message.into(),
        }
    }
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound { .. } => Self::NotFound {
                message: err.to_string(),
            },
            StoreError::Conflict(message) => Self::Conflict { message },
            StoreError::InsufficientQuota { needed, available } => Self::InsufficientQuota {
                message: format!(
                    "insufficient quota: this request may cost up to {} free tokens and {} \
                     micro-units; {} free tokens and {} micro-units are available. Top up or \
                     lower max_tokens.",
                    needed.grant_tokens, needed.amount, available.grant_tokens, available.amount
                ),
            },
            StoreError::GrantExhausted => {
                Self::denied("the free token grant is used up and this tenant is free-tier only")
            }
            StoreError::TenantDisabled(_) => Self::denied("this tenant is disabled"),
            StoreError::RateLimited {
                subject,
                retry_after_secs,
            } => Self::RateLimited {
                retry_after_secs,
                message: format!(
                    "rate limit exceeded for this {}; retry after {retry_after_secs} s",
                    subject.split(':').next().unwrap_or("key")
                ),
            },
            StoreError::ExceedsLimit {
                subject,
                tpm,
                tokens,
            } => Self::ExceedsTokenLimit {
                tokens,
                limit: tpm,
                owner: subject.split(':').next().unwrap_or("key").to_owned(),
            },
            StoreError::InvalidUrl(_)
            | StoreError::Corrupt(_)
            | StoreError::Database(_)
            | StoreError::Sqlite(_)
            | StoreError::Scratch(_)
            | StoreError::Migrate(_) => {
                tracing::error!(error = %err, "store failure");
                Self::Internal
            }
        }
    }
}
