//! Persistence for tenancy and billing, the hub, deployments and stored responses, behind one
//! trait with one implementation per database (SQLite for one process and a data directory,
//! PostgreSQL for several processes), each with its own migrations.
//!
//! The store knows records and transactions, not policy: callers validate input, mint ids and
//! secrets, and pass the time in. The few decisions that must be taken inside a transaction
//! (whether an account can take a hold, what a settlement charges, whether a rate window has
//! room) are pure functions in [`accounting`] and [`window`], so both databases decide alike.
//!
//! Every operation that reads and then writes shared state is one transaction that serialises
//! with its competitors across processes: `BEGIN IMMEDIATE` on SQLite, row locks
//! (`SELECT … FOR UPDATE`) on PostgreSQL.

pub mod accounting;
pub mod batches;
pub mod budgets;
pub mod deployments;
mod error;
pub mod files;
pub mod fine_tuning;
pub mod hub;
pub mod hub_access;
pub mod mcp;
pub mod members;
pub mod model;
mod postgres;
pub mod removal;
pub mod responses;
pub mod routing;
mod rows;
mod sql;
mod sqlite;
pub mod testing;
pub mod window;

use std::sync::Arc;

use async_trait::async_trait;

pub use batches::{BatchCreate, BatchLine, BatchPage, BatchRecord, BatchStore, LineEnd, LineState};
pub use budgets::{BudgetEvent, BudgetRecord, BudgetStore, Spent};
pub use deployments::{DeploymentRecord, DeploymentRecordStore};
pub use error::{Result, StoreError};
pub use files::{FilePage, FilePut, FileQuery, FileRecord, FileRemoval, FileStore};
pub use fine_tuning::{
    FineTuningCheckpoint, FineTuningCheckpointPage, FineTuningEvent, FineTuningEventPage,
    FineTuningJob, FineTuningJobPage, FineTuningStore,
};
pub use hub::HubStore;
pub use hub_access::HubAccessStore;
pub use mcp::{McpCallRecord, McpServerRecord, McpSessionRecord, McpStore, McpUpstreamSession};
pub use members::{MemberRecord, MemberStore, SessionRecord};
pub use model::*;
pub use postgres::PostgresStore;
pub use removal::{Removal, RemovalStore};
pub use responses::{ResponseStore, StoredResponse};
pub use routing::{LogPage, LogQuery, ModelGroupRecord, RequestLogRecord, RoutingStore};
pub use sqlite::{snapshot as snapshot_sqlite, SqliteStore};

/// Opens the database at `url` and brings its schema up to date:
/// `sqlite://PATH` (created if missing, WAL) or `postgres://…` / `postgresql://…`.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::open(url).await?))
    } else {
        Err(StoreError::InvalidUrl(url.to_owned()))
    }
}

/// Everything tenancy, billing, the hub, the control plane, the Responses API, the MCP
/// gateway, the Files API, the Batch API, the console and fine-tuning jobs persist, in fifteen parts, and the
/// removal of a tenant across them. Implementations are cheap to share (`Arc<dyn Store>`) and
/// safe to use from many tasks and from several processes on one database. Callers bring the parts into scope with
/// `use store::{TenantStore, LedgerStore, LimitStore, HubStore, HubAccessStore,
/// DeploymentRecordStore, ResponseStore, McpStore, FileStore, BatchStore, RemovalStore,
/// MemberStore, RoutingStore, BudgetStore, FineTuningStore}`.
#[async_trait]
pub trait Store:
    TenantStore
    + LedgerStore
    + LimitStore
    + HubStore
    + HubAccessStore
    + DeploymentRecordStore
    + ResponseStore
    + McpStore
    + FileStore
    + BatchStore
    + RemovalStore
    + MemberStore
    + RoutingStore
    + BudgetStore
    + FineTuningStore
{
    /// `"sqlite"` or `"postgres"`, for logs.
    fn kind(&self) -> &'static str;

    /// Whether the database answers: a read, and on SQLite a round trip through the ledger
    /// writer (an empty write transaction), for readiness probes.
    async fn ping(&self) -> Result<()>;

    /// Closes the connection pool; later calls fail.
    async fn close(&self);
}

/// Tenants, orgs, API keys and the price book.
#[async_trait]
pub trait TenantStore: Send + Sync + 'static {
    /// Creates a tenant and records its grant in the ledger. A taken name is `Conflict`.
    async fn create_tenant(&self, new: &NewTenant) -> Result<Tenant>;
    async fn tenant(&self, id: &str) -> Result<Tenant>;
    /// All tenants, oldest first.
    async fn tenants(&self) -> Result<Vec<Tenant>>;
    async fn update_tenant(&self, id: &str, patch: &TenantPatch) -> Result<Tenant>;

    /// A taken name is `Conflict`.
    async fn create_org(&self, org: &Org) -> Result<Org>;
    async fn orgs(&self, tenant_id: &str) -> Result<Vec<Org>>;
    async fn org_by_name(&self, name: &str) -> Result<Org>;

    async fn create_api_key(&self, key: &ApiKey) -> Result<ApiKey>;
    async fn api_key(&self, id: &str) -> Result<ApiKey>;
    /// A tenant's keys, oldest first, revoked ones included.
    async fn api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKey>>;
    /// Candidates for verification: the keys whose visible prefix is `prefix`.
    async fn api_keys_by_prefix(&self, prefix: &str) -> Result<Vec<ApiKey>>;
    /// Revokes at once; revoking twice keeps the first time.
    async fn revoke_api_key(&self, id: &str, now: Timestamp) -> Result<ApiKey>;
    async fn touch_api_key(&self, id: &str, now: Timestamp) -> Result<()>;

    async fn put_price(&self, price: &Price) -> Result<Price>;
    async fn price(&self, served_model: &str) -> Result<Option<Price>>;
    async fn prices(&self) -> Result<Vec<Price>>;
}

/// The account, the append-only ledger, reservations and usage.
#[async_trait]
pub trait LedgerStore: Send + Sync + 'static {
    /// Adds `amount` (> 0) to the balance. A repeated `idempotency_key` for the same tenant and
    /// amount changes nothing; for another tenant or amount it is `Conflict`.
    async fn top_up(
        &self,
        tenant_id: &str,
        amount: i64,
        idempotency_key: &str,
        now: Timestamp,
    ) -> Result<Tenant>;
    /// The tenant's ledger, oldest first.
    async fn ledger_entries(&self, tenant_id: &str) -> Result<Vec<LedgerEntry>>;

    /// Holds the worst case of a request ([`accounting::hold`]) if the account can take it
    /// ([`accounting::check_hold`]): `InsufficientQuota`, `GrantExhausted`, `TenantDisabled`,
    /// or `Conflict` for a request id already used.
    async fn reserve(&self, new: &NewReservation) -> Result<Reservation>;
    async fn reservation(&self, request_id: &str) -> Result<Reservation>;
    /// Changes an open reservation's worst case to `prompt_tokens` and `max_completion_tokens`
    /// at its own rates ([`accounting::resize`]): a larger hold is taken only if the account
    /// can take it (`InsufficientQuota`, `GrantExhausted`), a smaller one gives the difference
    /// back. At most once per reservation (a second resize is `Conflict`); a closed
    /// reservation is returned as it is.
    async fn resize_reservation(
        &self,
        request_id: &str,
        prompt_tokens: i64,
        max_completion_tokens: i64,
        now: Timestamp,
    ) -> Result<Reservation>;
    /// Persists a stream's progress while the reservation is open (a no-op after it closed).
    /// Completion tokens only ever grow.
    async fn record_progress(
        &self,
        request_id: &str,
        delivered: &TokenUsage,
        now: Timestamp,
    ) -> Result<()>;
    /// Closes a reservation ([`accounting::close`]): charges the clamped usage and releases the
    /// rest. Idempotent: a closed reservation returns its settlement with `already_settled`.
    async fn settle(
        &self,
        request_id: &str,
        with: SettleWith,
        now: Timestamp,
    ) -> Result<Settlement>;
    /// Settles an MCP tool call's reservation (`audit.id`) as [`LedgerStore::settle`] does
    /// and writes the call's audit row, its `charged` set to what the settlement charged, in
    /// the same write: one ledger-writer job on SQLite (so a call costs one write fewer on its
    /// path), the settlement's transaction then the row on PostgreSQL.
    async fn settle_audited(
        &self,
        with: SettleWith,
        now: Timestamp,
        audit: mcp::McpCallRecord,
    ) -> Result<Settlement>;
    /// Extends the lease of every open reservation `owner` holds; returns how many.
    async fn renew_leases(&self, owner: &str, until: Timestamp) -> Result<u64>;
    /// Open reservations of other owners whose lease ended before `now`, oldest lease first.
    async fn expired_reservations(
        &self,
        except_owner: &str,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<Reservation>>;
    /// Settles a reservation from its persisted progress if it is still open and its lease
    /// still ended before `now` (its owner may have renewed it since it was listed).
    async fn settle_expired(&self, request_id: &str, now: Timestamp) -> Result<Option<Settlement>>;

    /// The tenant's closed reservations settled in `[start, end)`, grouped, ordered by group.
    async fn usage(
        &self,
        tenant_id: &str,
        start: Timestamp,
        end: Timestamp,
        group: UsageGroup,
    ) -> Result<Vec<UsageRow>>;
}

/// Sliding-window RPM/TPM counters ([`window`]).
#[async_trait]
pub trait LimitStore: Send + Sync + 'static {
    /// Counts one request of `tokens` against every subject, atomically across processes: all
    /// or none. Returns the bucket second it was counted in, for [`LimitStore::correct_tokens`].
    /// Over a limit: `RateLimited`; larger than a TPM limit: `ExceedsLimit`.
    async fn admit(&self, subjects: &[LimitSubject], tokens: i64, now: Timestamp) -> Result<i64>;
    /// Takes `delta` tokens back from the subjects' bucket at `second`, if it still exists.
    async fn correct_tokens(&self, subjects: &[String], second: i64, delta: i64) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_an_in_memory_database_and_refuses_unknown_urls() {
        let store = open("sqlite::memory:").await.expect("in-memory SQLite");
        assert_eq!(store.kind(), "sqlite");
        assert!(store.tenants().await.expect("migrated").is_empty());
        assert!(matches!(
            open("mysql://localhost/x").await,
            Err(StoreError::InvalidUrl(_))
        ));
    }
}
