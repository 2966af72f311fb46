//! Deleting a tenant: what goes, what stays, in one transaction.
//!
//! A deleted tenant's row stays (marked `deleted_at`, disabled) with its ledger entries and
//! reservations, which are append-only accounting. Its keys stay as rows too, revoked: the
//! reservations name them. Everything else it holds is deleted: its stored responses, the MCP
//! servers it registered (their grants and pinned upstream sessions with them), its MCP client
//! sessions, grants of the operator's servers and its MCP setting, its files (Files API) and
//! its files quota override, its batches with their lines, its fine-tuning jobs with their events and checkpoints, its console members with their sessions and failed sign-ins, the arguments kept in its
//! tool calls' audit rows (the rows stay: they are what it was charged), its private hub
//! repositories with every revision, its open hub uploads, the record of which blobs it
//! uploaded, the blobs no other repository or uploader still names, its budgets with their alert events and webhook secret, its rate windows and its
//! orgs. Its public repositories stay (others may depend on them), still its own so nobody else
//! can write to them, and so do the orgs holding them, so their names cannot be taken over.
//!
//! [`RemovalStore::tenant_removal`] lists what a removal would do now (a dry run);
//! [`RemovalStore::remove_tenant`] does it and lists what it did, each kind from the rows its
//! statements actually deleted (`DELETE … RETURNING`), with the same statements' conditions,
//! so a dry run lists exactly what a removal right after it removes. The caller deletes the
//! files of the removed blobs and uploads.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::error::Result;
use crate::model::Timestamp;

/// Keys revoked (`api_keys`: key ids).
pub const API_KEYS: &str = "api_keys";
/// Stored responses of the Responses API (ids).
pub const RESPONSES: &str = "responses";
/// The request log's rows (request ids).
pub const REQUEST_LOGS: &str = "request_logs";
/// Files of the Files API (ids), expired ones too; their blobs as [`HUB_BLOBS`].
pub const FILES: &str = "files";
/// Batches of the Batch API (ids), with their lines.
pub const BATCHES: &str = "batches";
/// The lines of its batches (batch ids).
pub const BATCH_LINES: &str = "batch_lines";
/// Fine-tuning jobs (ids), with their events and checkpoints.
pub const FINE_TUNING_JOBS: &str = "fine_tuning_jobs";
/// Events of its fine-tuning jobs (job ids).
pub const FINE_TUNING_EVENTS: &str = "fine_tuning_events";
/// Checkpoints of its fine-tuning jobs (job ids; their files are under the data directory).
pub const FINE_TUNING_CHECKPOINTS: &str = "fine_tuning_checkpoints";
/// The operator's override of its files quota (`quota_bytes`).
pub const FILE_QUOTA: &str = "file_quota";
/// MCP servers the tenant registered (ids).
pub const MCP_SERVERS: &str = "mcp_servers";
/// Grants of the operator's MCP servers to the tenant (server ids).
pub const MCP_GRANTS: &str = "mcp_grants";
/// MCP client sessions (ids).
pub const MCP_SESSIONS: &str = "mcp_sessions";
/// Upstream sessions pinned by its client sessions or with its servers (`SESSION/SERVER`).
pub const MCP_SESSION_UPSTREAMS: &str = "mcp_session_upstreams";
/// Its MCP setting (`audit_arguments`).
pub const MCP_SETTINGS: &str = "mcp_settings";
/// Audit rows of its tool calls whose kept arguments were erased (call ids).
pub const MCP_CALL_ARGUMENTS: &str = "mcp_call_arguments";
/// Private hub repositories (`org/name`), every revision with them.
pub const HUB_REPOS: &str = "hub_repos";
/// Open uploads into its repositories (upload ids; their staging files).
pub const HUB_UPLOADS: &str = "hub_uploads";
/// Blobs nothing else names any more (sha256; their files).
pub const HUB_BLOBS: &str = "hub_blobs";
/// Orgs (names).
pub const ORGS: &str = "orgs";
/// Console members (emails).
pub const MEMBERS: &str = "members";
/// Their console sessions (member ids, one per member with any).
pub const CONSOLE_SESSIONS: &str = "console_sessions";
/// Failed console sign-ins counted against its members' accounts (subjects).
pub const SIGN_IN_FAILURES: &str = "console_sign_in_failures";
/// Budgets of the tenant and its keys (subjects).
pub const BUDGETS: &str = "budgets";
/// Alert events of its budgets (ids).
pub const BUDGET_EVENTS: &str = "budget_events";
/// Its webhook signing secret (`webhook_secret`).
pub const WEBHOOK_SECRET: &str = "webhook_secret";
/// RPM/TPM windows of the tenant and its keys (subjects).
pub const RATE_WINDOWS: &str = "rate_windows";

/// What removing a tenant does (or would do now), by kind; every list sorted, without
/// duplicates. A kind with nothing in it has an empty list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removal {
    pub tenant_id: String,
    /// Keys revoked ([`API_KEYS`]); their rows stay.
    pub revoked: BTreeMap<&'static str, Vec<String>>,
    /// Deleted, by kind ([`RESPONSES`], [`HUB_REPOS`], …).
    pub removed: BTreeMap<&'static str, Vec<String>>,
    /// The tenant's own that stays: public repositories ([`HUB_REPOS`]) and the orgs holding
    /// them ([`ORGS`]).
    pub kept: BTreeMap<&'static str, Vec<String>>,
    /// Ledger entries kept (all of them).
    pub ledger_entries: i64,
    /// When it was removed; `None` for a dry run.
    pub deleted_at: Option<Timestamp>,
}

impl Removal {
    /// The ids or names of one removed kind (empty if none).
    pub fn removed(&self, kind: &str) -> &[String] {
        self.removed.get(kind).map_or(&[], Vec::as_slice)
    }
}

/// Removing tenants.
#[async_trait]
pub trait RemovalStore: Send + Sync + 'static {
    /// What [`RemovalStore::remove_tenant`] would do now. `NotFound` for an unknown tenant,
    /// `Conflict` for one already deleted.
    async fn tenant_removal(&self, tenant_id: &str) -> Result<Removal>;
    /// The first step of a deletion, at once: disables the tenant (no new reservation can be
    /// made for it) and revokes its keys; returns the keys it revoked. `NotFound`, or
    /// `Conflict` for a tenant already deleted.
    async fn disable_for_removal(&self, tenant_id: &str, now: Timestamp) -> Result<Vec<String>>;
    /// Request ids of the tenant's open reservations (any process's), oldest first.
    async fn open_reservations(&self, tenant_id: &str) -> Result<Vec<String>>;
    /// Removes everything [`RemovalStore::tenant_removal`] lists, revokes any key left, and
    /// marks the tenant deleted at `now`, in one transaction; lists what it did (the keys it
    /// revoked in this step only). `NotFound`, or `Conflict` for a tenant already deleted.
    async fn remove_tenant(&self, tenant_id: &str, now: Timestamp) -> Result<Removal>;
    /// Overwrites what deleted rows may have left in the database's files where that can be
    /// done online: on SQLite (whose connections delete with `secure_delete`) the write-ahead
    /// log is checkpointed and truncated; whether it was. PostgreSQL keeps dead rows until
    /// `VACUUM` reuses their space (`false`).
    async fn scrub(&self) -> Result<bool>;
}
