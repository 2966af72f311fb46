//! What the MCP gateway keeps: registered MCP servers (a tenant's own, or the operator's, public
//! ones granted to tenants), grants, and client sessions with the upstream session each one
//! pinned per server, so any process sharing the database continues a session. Secrets arrive
//! sealed (the `mcp` crate encrypts them); the store never sees them in the clear.

use async_trait::async_trait;

use crate::error::Result;
use crate::model::Timestamp;

/// A registered MCP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpServerRecord {
    /// `mcp_…`, unique.
    pub id: String,
    /// The owning tenant; `None` for the operator's servers.
    pub tenant_id: Option<String>,
    /// Unique per owner; the prefix of its tools' names.
    pub name: String,
    /// `"http"` or `"stdio"`.
    pub transport: String,
    /// The Streamable HTTP endpoint (`http`).
    pub url: Option<String>,
    /// The program and its arguments (`stdio`).
    pub command: Option<String>,
    pub args: Vec<String>,
    /// Header values and environment, sealed as one JSON object; `None` when there are none.
    pub sealed: Option<String>,
    /// The names of the sealed headers, shown to their owner (values never are).
    pub header_names: Vec<String>,
    /// The names of the sealed environment variables.
    pub env_names: Vec<String>,
    /// Only these tools are offered; `None`: all the server lists.
    pub allowed_tools: Option<Vec<String>>,
    /// An operator's server that may be granted to tenants.
    pub public: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A client session of the `/mcp` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpSessionRecord {
    /// The `Mcp-Session-Id` the client sends.
    pub id: String,
    /// The tenant whose key opened it; `None` for the admin key.
    pub tenant_id: Option<String>,
    /// The protocol revision agreed at `initialize`.
    pub protocol_version: String,
    pub created_at: Timestamp,
    pub last_seen: Timestamp,
}

/// The upstream session a client session holds with one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpUpstreamSession {
    pub session_id: String,
    pub server_id: String,
    /// The upstream's `Mcp-Session-Id`; `None` for a server that keeps no sessions.
    pub upstream_session: Option<String>,
    /// The revision the upstream agreed to.
    pub protocol_version: String,
    pub created_at: Timestamp,
}

/// One tool call in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpCallRecord {
    /// The call's reservation id (`mcpc_…`).
    pub id: String,
    pub tenant_id: Option<String>,
    /// The visible prefix of the key that made it.
    pub key_prefix: Option<String>,
    pub server_id: String,
    pub server_name: String,
    pub tool: String,
    pub started_at: Timestamp,
    pub duration_ms: i64,
    /// `ok`, `tool_error` (the tool said `isError`), `failed` (the server or the connection
    /// failed) or `refused` (the account or a limit refused it before it was made).
    pub outcome: String,
    pub error: Option<String>,
    /// Micro-units charged.
    pub charged: i64,
    /// The call's arguments (JSON), kept only where the tenant opted in.
    pub arguments: Option<String>,
}

/// MCP servers, grants and sessions, across restarts and processes.
#[async_trait]
pub trait McpStore: Send + Sync + 'static {
    /// A name its owner already uses is `Conflict`.
    async fn create_mcp_server(&self, server: &McpServerRecord) -> Result<()>;
    /// `NotFound` if none.
    async fn mcp_server(&self, id: &str) -> Result<McpServerRecord>;
    /// The servers `tenant_id` owns (`None`: the operator's), by name.
    async fn mcp_servers_owned(&self, tenant_id: Option<&str>) -> Result<Vec<McpServerRecord>>;
    /// The operator's servers granted to `tenant_id`, by name.
    async fn mcp_servers_granted(&self, tenant_id: &str) -> Result<Vec<McpServerRecord>>;
    /// Every server, for key rotation.
    async fn mcp_servers_all(&self) -> Result<Vec<McpServerRecord>>;
    /// Rewrites every field but `id`, `tenant_id` and `created_at`. A name the owner already
    /// uses is `Conflict`; a missing server `NotFound`.
    async fn update_mcp_server(&self, server: &McpServerRecord) -> Result<()>;
    /// Deletes it with its grants and pinned upstream sessions; whether it existed.
    async fn delete_mcp_server(&self, id: &str) -> Result<bool>;

    /// Grants an operator's server; whether the grant is new.
    async fn grant_mcp_server(
        &self,
        tenant_id: &str,
        server_id: &str,
        now: Timestamp,
    ) -> Result<bool>;
    /// Whether there was such a grant.
    async fn revoke_mcp_grant(&self, tenant_id: &str, server_id: &str) -> Result<bool>;

    async fn create_mcp_session(&self, session: &McpSessionRecord) -> Result<()>;
    /// `NotFound` if none.
    async fn mcp_session(&self, id: &str) -> Result<McpSessionRecord>;
    async fn touch_mcp_session(&self, id: &str, now: Timestamp) -> Result<()>;
    /// Deletes it with its pinned upstream sessions; whether it existed.
    async fn delete_mcp_session(&self, id: &str) -> Result<bool>;
    /// Sessions not seen since `before`; how many were deleted.
    async fn delete_mcp_sessions_before(&self, before: Timestamp) -> Result<u64>;

    /// Pins `pin` unless the session already holds one with that server (another process won
    /// the race): returns the pinned one, which callers then use.
    async fn pin_mcp_upstream(&self, pin: &McpUpstreamSession) -> Result<McpUpstreamSession>;
    async fn mcp_upstream(
        &self,
        session_id: &str,
        server_id: &str,
    ) -> Result<Option<McpUpstreamSession>>;
    async fn record_mcp_call(&self, call: &McpCallRecord) -> Result<()>;
    /// Whether `tenant_id` opted in to keeping its calls' arguments (default: no).
    async fn mcp_audit_arguments(&self, tenant_id: &str) -> Result<bool>;
    async fn set_mcp_audit_arguments(
        &self,
        tenant_id: &str,
        keep: bool,
        now: Timestamp,
    ) -> Result<()>;
    /// A tenant's calls (`None`: the admin key's) started in `[start, end)`, newest first, at
    /// most `limit`.
    async fn mcp_calls(
        &self,
        tenant_id: Option<&str>,
        start: Timestamp,
        end: Timestamp,
        limit: i64,
    ) -> Result<Vec<McpCallRecord>>;

    /// Forgets the pin if it is still `upstream_session` (the upstream ended it); whether it did.
    async fn unpin_mcp_upstream(
        &self,
        session_id: &str,
        server_id: &str,
        upstream_session: Option<&str>,
    ) -> Result<bool>;
}
