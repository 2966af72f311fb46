//! Model groups' stored definitions and the per-tenant request log. The definitions are
//! opaque JSON here (the gateway reads and seals them); the log is written in batches by a
//! background writer and read a page at a time, newest first.

use async_trait::async_trait;

use crate::error::Result;
use crate::model::Timestamp;

/// A stored model group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelGroupRecord {
    pub name: String,
    /// The definition as JSON, members' API keys sealed.
    pub spec: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One logged request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLogRecord {
    pub request_id: String,
    pub tenant_id: String,
    pub created_at: Timestamp,
    pub key_prefix: String,
    pub model: String,
    pub member: Option<String>,
    /// The HTTP status the request ended with (499: the client left first).
    pub status: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Micro-units charged.
    pub cost: i64,
    pub ttft_ms: Option<i64>,
    pub total_ms: i64,
    pub retries: i64,
}

/// Which of a tenant's logged requests to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    pub tenant_id: String,
    pub model: Option<String>,
    pub status: Option<i64>,
    /// From this time on (inclusive).
    pub since: Option<Timestamp>,
    /// Before this time.
    pub until: Option<Timestamp>,
    /// At most this many (the store reads one more to tell whether more follow).
    pub limit: i64,
    /// Only requests older than this one of the tenant's (newest first). An id that is not
    /// one of the tenant's is `NotFound`.
    pub after: Option<String>,
}

/// A page of logged requests, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPage {
    pub logs: Vec<RequestLogRecord>,
    pub has_more: bool,
}

#[async_trait]
pub trait RoutingStore: Send + Sync + 'static {
    /// Creates or replaces the group `record.name` (its `created_at` kept on replace);
    /// whether it was created.
    async fn put_model_group(&self, record: &ModelGroupRecord) -> Result<bool>;
    /// Every group, by name.
    async fn model_groups(&self) -> Result<Vec<ModelGroupRecord>>;
    /// Whether it existed.
    async fn delete_model_group(&self, name: &str) -> Result<bool>;

    /// Writes a batch of log rows in one transaction (a request id already logged is kept).
    async fn insert_request_logs(&self, logs: &[RequestLogRecord]) -> Result<()>;
    async fn request_logs(&self, query: &LogQuery) -> Result<LogPage>;
    /// Deletes rows logged before `before`; how many.
    async fn sweep_request_logs(&self, before: Timestamp) -> Result<u64>;
}
