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
//! - `health` — a failing server is skipped with backoff; the others keep working.
//! - `names` — server names and exposed tool names.

pub mod client;
pub mod endpoint;
mod error;
pub mod guard;
mod health;
mod meter;
pub mod names;
pub mod registry;
pub mod secret;

use std::sync::Arc;

use rand::Rng;
use store::Store;

pub use endpoint::{Incoming, McpCaller, Refusal, Reply};
pub use error::{McpError, Result};
pub use guard::{AllowList, Guard};
pub use registry::{NewServer, Owner, ServerPatch};
pub use secret::{Sealer, SecretKey};
pub use store::{McpCallRecord, McpServerRecord, StoreError};

use crate::client::Upstream;
use crate::health::Health;

/// The MCP gateway's state, shared by every request.
pub struct Mcp {
    store: Arc<dyn Store>,
    sealer: Sealer,
    upstream: Upstream,
    health: Health,
    tenancy: tenancy::Tenancy,
}

impl Mcp {
    pub fn new(
        store: Arc<dyn Store>,
        tenancy: tenancy::Tenancy,
        sealer: Sealer,
        guard: Guard,
    ) -> Self {
        Self {
            tenancy,
            store,
            sealer,
            upstream: Upstream::new(guard),
            health: Health::default(),
        }
    }

    /// Why the server is being skipped now, if it is (its last error; retried after a backoff).
    pub fn down(&self, server_id: &str) -> Option<String> {
        self.health.status(server_id)
    }
}

/// `prefix` and 24 random hex digits.
pub(crate) fn new_id(prefix: &str) -> String {
    let bytes: [u8; 12] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}
