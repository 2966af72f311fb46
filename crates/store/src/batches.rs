//! The Batch API's rows: a tenant's batches and each input line's progress. Policy (ids,
//! validation, the state machine, rendering results) is the `batch` crate's; the store keeps
//! rows and makes the transitions that must be exactly once conditional in their statements:
//! a batch moves only from the statuses named, a line is finished only while pending, and its
//! batch's counts move in the same transaction.

use async_trait::async_trait;

use crate::error::Result;
use crate::model::Timestamp;

/// The statuses a batch can be in (OpenAI's), each but `validating` with its `{status}_at`.
pub const BATCH_STATUSES: [&str; 8] = [
    "validating",
    "in_progress",
    "finalizing",
    "completed",
    "failed",
    "expired",
    "cancelling",
    "cancelled",
];

/// One stored batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRecord {
    /// `batch_…`, unique.
    pub id: String,
    pub tenant_id: String,
    /// The key that created it, whose allow-list and usage its lines run under.
    pub key_id: Option<String>,
    pub endpoint: String,
    /// The one model its lines name (`None` when no line was valid).
    pub model: Option<String>,
    pub input_file_id: String,
    pub completion_window: String,
    pub status: String,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    /// OpenAI's `errors` object, as JSON text.
    pub errors: Option<String>,
    /// The client's `metadata`, as JSON text.
    pub metadata: Option<String>,
    pub total: i64,
    pub completed: i64,
    pub failed: i64,
    pub created_at: Timestamp,
    pub in_progress_at: Option<Timestamp>,
    pub finalizing_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub failed_at: Option<Timestamp>,
    pub expired_at: Option<Timestamp>,
    pub cancelling_at: Option<Timestamp>,
    pub cancelled_at: Option<Timestamp>,
    pub expires_at: Timestamp,
}

/// Where a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineState {
    /// To run.
    Pending,
    /// Ran and succeeded: its result is an output line.
    Done,
    /// An error line: it ran and failed (its result), or did not run (`error_code`).
    Failed,
}

impl LineState {
    pub fn as_str(self) -> &'static str {
        match self {
            LineState::Pending => "pending",
            LineState::Done => "done",
            LineState::Failed => "failed",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        [LineState::Pending, LineState::Done, LineState::Failed]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// One input line of a batch and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchLine {
    /// 0-based position in the input file.
    pub line_no: i64,
    pub custom_id: String,
    /// The request body as JSON text; `None` for a line refused at validation.
    pub body: Option<String>,
    pub state: LineState,
    /// How many times it was started; its last run's ledger request id ends in this.
    pub attempt: i64,
    /// Its output (or error) line as JSON text, once it ran.
    pub result: Option<String>,
    /// Why a failed line has no result (`duplicate_custom_id`, `batch_expired`, …).
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// Its tokens as estimated at creation (what a pending line holds of its tenant's
    /// enqueued batch tokens).
    pub est_tokens: i64,
}

/// A line's end, for [`BatchStore::finish_line`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineEnd<'a> {
    pub state: LineState,
    pub result: Option<&'a str>,
    pub error_code: Option<&'a str>,
    pub error_message: Option<&'a str>,
}

/// A page of batches, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPage {
    pub batches: Vec<BatchRecord>,
    pub has_more: bool,
}

/// What [`BatchStore::create_batch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchCreate {
    Created,
    /// Nothing written: the tenant's enqueued tokens (its unfinished batches' pending lines')
    /// plus this batch's would pass `limit`.
    OverLimit {
        enqueued: i64,
        limit: i64,
    },
}

/// A tenant's batches.
#[async_trait]
pub trait BatchStore: Send + Sync + 'static {
    /// Records `batch` and all its `lines` in one transaction (nothing when it fails). The
    /// caller counts the lines refused at validation in `batch.failed`. With `max_enqueued`,
    /// refused (`OverLimit`) when the tenant's enqueued tokens (the `est_tokens` of pending
    /// lines of its unfinished batches) plus those of `lines` would pass it; one tenant's
    /// creations take turns, so concurrent ones cannot overshoot together. `NotFound` for an
    /// unknown or deleted tenant; a taken id is `Conflict`. With `lease`, the batch is created
    /// claimed by that owner until that time (its creator runs it; no other process can take
    /// it between its creation and a claim).
    async fn create_batch(
        &self,
        batch: &BatchRecord,
        lines: &[BatchLine],
        max_enqueued: Option<i64>,
        lease: Option<(&str, Timestamp)>,
    ) -> Result<BatchCreate>;
    /// The tenant's enqueued batch tokens: the `est_tokens` of the pending lines of its
    /// unfinished batches.
    async fn enqueued_batch_tokens(&self, tenant_id: &str) -> Result<i64>;
    /// Claims batch `id` for `owner` until `until`, if it is unfinished and no other owner's
    /// lease on it is live at `now` (none, lapsed, or `owner`'s own); whether `owner` holds it.
    async fn claim_batch(
        &self,
        id: &str,
        owner: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<bool>;
    /// Extends `owner`'s lease on batch `id` to `until`; `false` when `owner` no longer holds
    /// it (another process took it over after it lapsed).
    async fn renew_batch_lease(&self, id: &str, owner: &str, until: Timestamp) -> Result<bool>;
    /// Gives up `owner`'s lease on batch `id` (its runner ended), so another process may take
    /// it at once.
    async fn release_batch_lease(&self, id: &str, owner: &str) -> Result<()>;
    /// Unfinished batches on which no lease is live at `now` (none, or lapsed), oldest first:
    /// the ones a process may take.
    async fn unleased_batches(&self, now: Timestamp) -> Result<Vec<BatchRecord>>;
    /// The tenant's batch `id` (`NotFound` for another tenant's).
    async fn batch(&self, tenant_id: &str, id: &str) -> Result<BatchRecord>;
    /// Batch `id`, whoever's.
    async fn batch_by_id(&self, id: &str) -> Result<BatchRecord>;
    /// A page of the tenant's batches, newest first, after the batch `after` (which must be
    /// the tenant's: `NotFound` otherwise).
    async fn batches(&self, tenant_id: &str, after: Option<&str>, limit: i64) -> Result<BatchPage>;
    /// Every batch not yet in a final status, oldest first.
    async fn unfinished_batches(&self) -> Result<Vec<BatchRecord>>;
    /// Moves batch `id` to `to` (stamping `{to}_at` with `now`) if its status is one of
    /// `from`; the batch after, or `None` when it was not in `from`.
    async fn transition_batch(
        &self,
        id: &str,
        from: &[&str],
        to: &str,
        now: Timestamp,
    ) -> Result<Option<BatchRecord>>;
    /// Like [`BatchStore::transition_batch`], also recording its files and errors.
    async fn finish_batch(
        &self,
        id: &str,
        from: &[&str],
        to: &str,
        files: (Option<&str>, Option<&str>),
        errors: Option<&str>,
        now: Timestamp,
    ) -> Result<Option<BatchRecord>>;
    /// Up to `limit` pending lines after `after_line`, in order.
    async fn pending_lines(
        &self,
        batch_id: &str,
        after_line: i64,
        limit: i64,
    ) -> Result<Vec<BatchLine>>;
    /// Counts a start of a pending line; its attempt number, or `None` if it is not pending.
    async fn start_line(&self, batch_id: &str, line_no: i64) -> Result<Option<i64>>;
    /// Ends a pending line and counts it in its batch, in one transaction; `false` (nothing
    /// written) when it was not pending.
    async fn finish_line(&self, batch_id: &str, line_no: i64, end: &LineEnd<'_>) -> Result<bool>;
    /// Fails every pending line with `code` and `message`, counting them; how many.
    async fn fail_pending_lines(&self, batch_id: &str, code: &str, message: &str) -> Result<i64>;
    /// Up to `limit` lines after `after_line`, in order, whatever their state.
    async fn batch_lines(
        &self,
        batch_id: &str,
        after_line: i64,
        limit: i64,
    ) -> Result<Vec<BatchLine>>;
}
