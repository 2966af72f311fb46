//! Flywheel's MCP gateway, without HTTP: a registry of MCP servers (a tenant's own, and the
//! operator's public ones granted to tenants), and the `/mcp` endpoint's logic, one JSON-RPC
//! message at a time: the union of a caller's tools named `SERVER__TOOL`, calls routed to their
//! server, and client sessions kept in the database with the upstream session each pinned per
//! server, so any process continues any session and a stateful server sees one session.
//!
//! - `registry` — register, list, update, delete, grant; secrets sealed (`secret`).
//! - `endpoint` — `initialize`, `ping`, `tools/list`, `tools/call`; sessions.
//! - `client` — JSON-RPC over Streamable HTTP to one server.
//! - `guard` — outbound rules on resolved addresses (SSRF), a client per host and port.
//! - `hosted` — servers as a response's `mcp` tools use them.
//! - `health` — a failing server is skipped with backoff; the others keep working.
//! - `passthrough` — prompts and resources of the caller's servers, routed like tools.
//! - `names` — server names and exposed tool names.

mod cache;
pub mod client;
pub mod endpoint;
mod error;
pub mod guard;
mod health;
pub mod hosted;
mod meter;
pub mod names;
mod passthrough;
pub mod registry;
mod route;
pub mod secret;
pub mod stdio;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rand::Rng;
use store::{McpSessionRecord, Store};

use crate::cache::Ttl;

pub use endpoint::{Incoming, McpCaller, Refusal, Reply};
pub use error::{McpError, Result};
pub use guard::{AllowList, Guard, Purpose};
pub use hosted::{Hosted, HostedSpec};
pub use registry::{reseal_all, NewServer, Owner, ServerPatch, Transport};
pub use route::NODE_AUTH_HEADER;
pub use secret::{Sealer, SecretKey};
pub use stdio::StdioLimits;
pub use store::{McpCallRecord, McpServerRecord, StoreError};

use crate::client::Upstream;
use crate::health::Health;
use crate::stdio::StdioPool;

/// How the gateway reaches servers.
pub struct McpOptions {
    /// Outbound rules for HTTP servers.
    pub guard: Guard,
    /// Stdio servers run under `stdio_root/<server id>`.
    pub stdio_root: PathBuf,
    pub stdio: StdioLimits,
}

/// The MCP gateway's state, shared by every request.
pub struct Mcp {
    store: Arc<dyn Store>,
    sealer: Sealer,
    upstream: Upstream,
    health: Health,
    tenancy: tenancy::Tenancy,
    stdio: StdioPool,
    /// Forwards to other Flywheel processes (their own addresses, not the guard's rules).
    nodes: reqwest::Client,
    /// This process's URL, where others forward its stdio sessions' requests.
    node_url: OnceLock<String>,
    /// The servers a tenant (or the operator, `None`) sees.
    visible: Ttl<Option<String>, Vec<McpServerRecord>>,
    /// Client sessions by id.
    sessions: Ttl<String, McpSessionRecord>,
    /// The upstream session a client session pinned with an HTTP server.
    pins: Ttl<(String, String), crate::client::Pinned>,
    /// Whether a tenant keeps its calls' arguments in the audit log.
    audit_arguments: Ttl<String, bool>,
}

/// How long a cached list of servers or session record is used (another process's change
/// is seen that late at worst; this process's own at once).
const CACHED_FOR: std::time::Duration = std::time::Duration::from_secs(2);
/// Pins change only when an upstream ends a session, which the next call notices.
const PINS_CACHED_FOR: std::time::Duration = std::time::Duration::from_secs(300);

impl Mcp {
    pub fn new(
        store: Arc<dyn Store>,
        tenancy: tenancy::Tenancy,
        sealer: Sealer,
        options: McpOptions,
    ) -> Arc<Self> {
        let call_timeout = options.stdio.call_timeout;
        let mcp = Arc::new(Self {
            tenancy,
            store,
            sealer,
            upstream: Upstream::new(options.guard),
            health: Health::default(),
            stdio: StdioPool::new(options.stdio_root, options.stdio),
            nodes: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(call_timeout + std::time::Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            node_url: OnceLock::new(),
            visible: Ttl::new(CACHED_FOR),
            sessions: Ttl::new(CACHED_FOR),
            pins: Ttl::new(PINS_CACHED_FOR),
            audit_arguments: Ttl::new(CACHED_FOR),
        });
        // Idle stdio processes are stopped; the task ends with the gateway.
        let weak = Arc::downgrade(&mcp);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
                loop {
                    tick.tick().await;
                    let Some(mcp) = weak.upgrade() else { break };
                    let stopped = mcp.stdio.reap();
                    if stopped > 0 {
                        tracing::info!(stopped, "stopped idle MCP stdio servers");
                    }
                }
            });
        }
        mcp
    }

    /// Sets the URL other Flywheel processes reach this one at (once, after it listens).
    pub fn set_node_url(&self, url: String) {
        let _ = self.node_url.set(url);
    }

    fn node_url(&self) -> &str {
        self.node_url.get().map_or("local", String::as_str)
    }

    /// Whether `tenant_id` keeps its tool calls' arguments in the audit log (opt-in).
    pub async fn audits_arguments(&self, tenant_id: &str) -> bool {
        if let Some(keep) = self.audit_arguments.get(&tenant_id.to_owned()) {
            return keep;
        }
        match self.store.mcp_audit_arguments(tenant_id).await {
            Ok(keep) => {
                self.audit_arguments.put(tenant_id.to_owned(), keep);
                keep
            }
            Err(e) => {
                tracing::warn!(tenant = tenant_id, error = %e, "could not read the MCP audit setting; arguments are not kept");
                false
            }
        }
    }

    /// Opts `tenant_id` in to (or out of) keeping its tool calls' arguments.
    pub async fn set_audit_arguments(&self, tenant_id: &str, keep: bool) -> Result<()> {
        self.store
            .set_mcp_audit_arguments(tenant_id, keep, chrono::Utc::now())
            .await?;
        self.audit_arguments.put(tenant_id.to_owned(), keep);
        Ok(())
    }

    /// Forgets what this process holds of a deleted tenant whose MCP rows are gone: the stdio
    /// processes of its servers and client sessions, its servers' health, and every cache
    /// entry that could still name them (another process's caches expire within seconds, and
    /// the tenant's keys are refused everywhere already).
    pub fn forget_tenant(&self, tenant_id: &str, servers: &[String], sessions: &[String]) {
        for server in servers {
            self.stdio.stop_server(server);
            self.health.forget(server);
        }
        for session in sessions {
            self.stdio.stop_session(session);
            self.sessions.remove(session);
        }
        self.visible.clear();
        self.pins.clear();
        self.audit_arguments.remove(&tenant_id.to_owned());
    }

    /// Why the server is being skipped now, if it is (its last error; retried after a backoff).
    pub fn down(&self, server_id: &str) -> Option<String> {
        self.health.skip(server_id)
    }
}

/// `prefix` and 24 random hex digits.
pub(crate) fn new_id(prefix: &str) -> String {
    let bytes: [u8; 12] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}
