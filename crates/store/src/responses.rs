//! What the Responses API keeps of a response created with `store: true`: the response object,
//! this turn's input items and the whole conversation through it, each as JSON text, keyed by
//! the response's id. The gateway owns their shapes; the store only keeps them, and forgets
//! them when asked to or when they are older than the retention period.

use async_trait::async_trait;

use crate::error::Result;
use crate::model::Timestamp;

/// A stored response of the Responses API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// `resp_…`, unique.
    pub id: String,
    /// The tenant whose key made it; `None` for the admin key.
    pub tenant_id: Option<String>,
    pub model: String,
    /// The `previous_response_id` it continued, if any. Not a reference: the previous response
    /// may have been deleted since.
    pub previous_id: Option<String>,
    /// The response object, as JSON text.
    pub response: String,
    /// This turn's input items, as JSON text (an array).
    pub input_items: String,
    /// The whole conversation through this response, as JSON text: what a later request that
    /// names this response as its `previous_response_id` continues from.
    pub conversation: String,
    pub created_at: Timestamp,
}

/// Stored responses, across restarts and processes.
#[async_trait]
pub trait ResponseStore: Send + Sync + 'static {
    /// Inserts; an id already stored is `Conflict`.
    async fn put_response(&self, response: &StoredResponse) -> Result<()>;
    /// The stored response `id`, `NotFound` if none.
    async fn response(&self, id: &str) -> Result<StoredResponse>;
    /// Deletes it; whether it existed.
    async fn delete_response(&self, id: &str) -> Result<bool>;
    /// Deletes every response created before `before` (retention); how many.
    async fn delete_responses_before(&self, before: Timestamp) -> Result<u64>;
}
