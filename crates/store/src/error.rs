//! The store's one error type.

use crate::model::{Debit, LimitSubject};
use crate::window::Refusal;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{entity} '{id}' not found")]
    NotFound { entity: &'static str, id: String },
    /// A uniqueness rule was broken (a name or request id already in use).
    #[error("{0}")]
    Conflict(String),
    /// Grant plus balance, less what is held, does not cover the hold.
    #[error(
        "insufficient quota: needs {} grant tokens and {} micro-units, {} and {} available",
        needed.grant_tokens, needed.amount, available.grant_tokens, available.amount
    )]
    InsufficientQuota { needed: Debit, available: Debit },
    /// A free-tier-only tenant whose free grant is used up.
    #[error("the free token grant is used up and this tenant may not use its paid balance")]
    GrantExhausted,
    #[error("tenant '{0}' is disabled")]
    TenantDisabled(String),
    #[error("rate limit of {subject} exceeded; retry after {retry_after_secs} s")]
    RateLimited {
        subject: String,
        retry_after_secs: u64,
    },
    /// The request alone is larger than a TPM limit.
    #[error("request of {tokens} tokens exceeds the {subject} limit of {tpm} tokens per minute")]
    ExceedsLimit {
        subject: String,
        tpm: i64,
        tokens: i64,
    },
    #[error("invalid database URL '{0}': expected sqlite://PATH or postgres://…")]
    InvalidUrl(String),
    /// A row that does not decode into its record (a bug or a hand-edited database).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// From the SQLite ledger writer's own connection (rusqlite); a failed group commit hands
    /// the same message to every request in the group.
    #[error("database error: {0}")]
    Sqlite(String),
    /// The private scratch database behind `sqlite::memory:` could not be created.
    #[error("cannot create a scratch database: {0}")]
    Scratch(std::io::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    pub(crate) fn not_found(entity: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound {
            entity,
            id: id.into(),
        }
    }

    /// Maps a unique-constraint violation to `Conflict(message)`, keeping other errors.
    pub(crate) fn unique(err: sqlx::Error, message: impl FnOnce() -> String) -> Self {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict(message()),
            _ => Self::Database(err),
        }
    }

    /// Maps a rusqlite unique-constraint violation to `Conflict(message)`.
    pub(crate) fn sqlite_unique(err: rusqlite::Error, message: impl FnOnce() -> String) -> Self {
        use rusqlite::ffi::{SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE};
        match &err {
            rusqlite::Error::SqliteFailure(e, _)
                if matches!(
                    e.extended_code,
                    SQLITE_CONSTRAINT_UNIQUE | SQLITE_CONSTRAINT_PRIMARYKEY
                ) =>
            {
                Self::Conflict(message())
            }
            _ => Self::from(err),
        }
    }

    pub(crate) fn refused(limits: &LimitSubject, refusal: Refusal, tokens: i64) -> Self {
        match refusal {
            Refusal::RateLimited { retry_after_secs } => Self::RateLimited {
                subject: limits.subject.clone(),
                retry_after_secs,
            },
            Refusal::TooLarge { tpm } => Self::ExceedsLimit {
                subject: limits.subject.clone(),
                tpm,
                tokens,
            },
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        Self::Sqlite(err.to_string())
    }
}
