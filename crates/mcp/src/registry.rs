//! The registry: MCP servers a tenant registers for itself, and the operator's, public ones
//! granted to tenants. Secrets are sealed before they reach the store and never returned.

use std::collections::BTreeMap;

use serde_json::Value;
use store::{McpServerRecord, StoreError};

use crate::error::{McpError, Result};
use crate::names::check_server_name;
use crate::Mcp;

/// Who registers or manages a server: a tenant, or the operator (`None`).
pub type Owner<'a> = Option<&'a str>;

/// How a server is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A Streamable HTTP endpoint.
    Http { url: String },
    /// A command Flywheel runs (operator only: it runs on Flywheel's host).
    Stdio {
        command: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
    },
}

/// A registration.
#[derive(Debug, Clone)]
pub struct NewServer {
    pub name: String,
    pub transport: Transport,
    pub headers: BTreeMap<String, String>,
    pub allowed_tools: Option<Vec<String>>,
    /// Operator only: may be granted to tenants.
    pub public: bool,
}

/// A change; `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct ServerPatch {
    pub name: Option<String>,
    pub url: Option<String>,
    /// Replaces every header.
    pub headers: Option<BTreeMap<String, String>>,
    /// `Some(None)` offers every tool again.
    pub allowed_tools: Option<Option<Vec<String>>>,
    pub public: Option<bool>,
}

const MAX_HEADERS: usize = 16;
const MAX_HEADER_BYTES: usize = 8 << 10;
const MAX_ALLOWED_TOOLS: usize = 256;
const MAX_ARGS: usize = 64;
const MAX_ENV: usize = 64;

fn check_stdio(command: &str, args: &[String], env: &BTreeMap<String, String>) -> Result<()> {
    if command.is_empty() || command.len() > 4096 || command.contains('\0') {
        return Err(McpError::invalid(
            "command",
            "command is the program to run (a name on PATH or a path)",
        ));
    }
    if args.len() > MAX_ARGS || args.iter().any(|a| a.len() > 4096 || a.contains('\0')) {
        return Err(McpError::invalid(
            "args",
            format!("at most {MAX_ARGS} arguments of at most 4 KiB, without NUL"),
        ));
    }
    if env.len() > MAX_ENV {
        return Err(McpError::invalid(
            "env",
            format!("at most {MAX_ENV} variables"),
        ));
    }
    for (k, v) in env {
        let ok = !k.is_empty()
            && k.len() <= 256
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !k.as_bytes()[0].is_ascii_digit()
            && v.len() <= 32 << 10
            && !v.contains('\0');
        if !ok {
            return Err(McpError::invalid("env", format!("'{}' is not an environment variable name of A-Z, a-z, 0-9 and '_' (with a value without NUL, at most 32 KiB)", k.escape_debug())));
        }
        if k.starts_with("FLYWHEEL_") {
            return Err(McpError::invalid(
                "env",
                "FLYWHEEL_ variables are Flywheel's own",
            ));
        }
    }
    Ok(())
}

fn check_headers(headers: &BTreeMap<String, String>) -> Result<()> {
    if headers.len() > MAX_HEADERS {
        return Err(McpError::invalid(
            "headers",
            format!("at most {MAX_HEADERS} headers"),
        ));
    }
    for (name, value) in headers {
        let name_ok = !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !name_ok {
            return Err(McpError::invalid(
                "headers",
                format!("'{}' is not an HTTP header name", name.escape_debug()),
            ));
        }
        let lower = name.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "host"
                | "content-type"
                | "content-length"
                | "accept"
                | "mcp-session-id"
                | "mcp-protocol-version"
                | "transfer-encoding"
                | "connection"
        ) {
            return Err(McpError::invalid(
                "headers",
                format!("the header '{name}' is set by Flywheel itself"),
            ));
        }
        if value.len() > MAX_HEADER_BYTES
            || value.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f)
        {
            return Err(McpError::invalid(
                "headers",
                format!("the value of '{name}' is not a valid header value (no control characters, at most 8 KiB)"),
            ));
        }
    }
    Ok(())
}

fn check_allowed(tools: &Option<Vec<String>>) -> Result<()> {
    if let Some(list) = tools {
        if list.len() > MAX_ALLOWED_TOOLS || list.iter().any(|t| t.is_empty() || t.len() > 128) {
            return Err(McpError::invalid(
                "allowed_tools",
                format!("allowed_tools is a list of at most {MAX_ALLOWED_TOOLS} tool names of 1 to 128 characters"),
            ));
        }
    }
    Ok(())
}

impl Mcp {
    fn seal_secrets(
        &self,
        id: &str,
        headers: &BTreeMap<String, String>,
        env: &BTreeMap<String, String>,
    ) -> Result<Option<String>> {
        if headers.is_empty() && env.is_empty() {
            return Ok(None);
        }
        let plain = serde_json::to_vec(&serde_json::json!({ "headers": headers, "env": env }))
            .map_err(|e| McpError::Internal(e.to_string()))?;
        self.sealer.seal(&plain, id).map(Some)
    }

    /// The opened headers of a server.
    pub(crate) fn headers_of(&self, server: &McpServerRecord) -> Result<Vec<(String, String)>> {
        self.opened(server, "headers")
    }

    /// The opened environment of a stdio server.
    pub(crate) fn env_of(&self, server: &McpServerRecord) -> Result<Vec<(String, String)>> {
        self.opened(server, "env")
    }

    fn secrets_map(
        &self,
        server: &McpServerRecord,
        part: &str,
    ) -> Result<BTreeMap<String, String>> {
        Ok(self.opened(server, part)?.into_iter().collect())
    }

    fn opened(&self, server: &McpServerRecord, part: &str) -> Result<Vec<(String, String)>> {
        let Some(sealed) = &server.sealed else {
            return Ok(Vec::new());
        };
        let plain = self.sealer.open(sealed, &server.id)?;
        let value: Value =
            serde_json::from_slice(&plain).map_err(|e| McpError::Internal(e.to_string()))?;
        Ok(value
            .get(part)
            .and_then(Value::as_object)
            .map(|h| {
                h.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Checks a URL against the outbound rules, resolving its host now too.
    async fn check_url(&self, url: &str) -> Result<String> {
        let parsed = self.upstream.guard().check_url(url)?;
        self.upstream.guard().check_resolved(&parsed).await?;
        Ok(parsed.to_string())
    }

    /// Registers a server for `owner`.
    pub async fn register(&self, owner: Owner<'_>, new: NewServer) -> Result<McpServerRecord> {
        check_server_name(&new.name)?;
        check_headers(&new.headers)?;
        check_allowed(&new.allowed_tools)?;
        if new.public && owner.is_some() {
            return Err(McpError::Forbidden(
                "only the operator registers public MCP servers".into(),
            ));
        }
        let (url, command, args, env) = match &new.transport {
            Transport::Http { url } => (
                Some(self.check_url(url).await?),
                None,
                Vec::new(),
                BTreeMap::new(),
            ),
            Transport::Stdio { command, args, env } => {
                if owner.is_some() {
                    return Err(McpError::Forbidden(
                        "only the operator registers stdio MCP servers: they run commands on Flywheel's host".into(),
                    ));
                }
                if !new.headers.is_empty() {
                    return Err(McpError::invalid(
                        "headers",
                        "a stdio server takes env, not headers",
                    ));
                }
                check_stdio(command, args, env)?;
                (None, Some(command.clone()), args.clone(), env.clone())
            }
        };
        if let Some(tenant) = owner {
            if self
                .store
                .mcp_servers_granted(tenant)
                .await?
                .iter()
                .any(|s| s.name == new.name)
            {
                return Err(McpError::Conflict(format!(
                    "an MCP server named '{}' is already granted to you; choose another name",
                    new.name
                )));
            }
        }
        let now = chrono::Utc::now();
        let id = crate::new_id("mcp_");
        let record = McpServerRecord {
            sealed: self.seal_secrets(&id, &new.headers, &env)?,
            id,
            tenant_id: owner.map(str::to_owned),
            name: new.name,
            transport: if command.is_some() { "stdio" } else { "http" }.into(),
            url,
            command,
            args,
            header_names: new.headers.keys().cloned().collect(),
            env_names: env.keys().cloned().collect(),
            allowed_tools: new.allowed_tools,
            public: new.public,
            created_at: now,
            updated_at: now,
        };
        self.store
            .create_mcp_server(&record)
            .await
            .map_err(conflict)?;
        self.visible.clear();
        Ok(record)
    }

    /// The servers `owner` owns, and for a tenant also those granted to it.
    pub async fn servers(&self, owner: Owner<'_>) -> Result<Vec<McpServerRecord>> {
        let mut list = self.store.mcp_servers_owned(owner).await?;
        if let Some(tenant) = owner {
            list.extend(self.store.mcp_servers_granted(tenant).await?);
            list.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Ok(list)
    }

    /// `owner`'s server named `name` (a tenant cannot manage granted servers).
    pub async fn owned(&self, owner: Owner<'_>, name: &str) -> Result<McpServerRecord> {
        self.store
            .mcp_servers_owned(owner)
            .await?
            .into_iter()
            .find(|s| s.name == name || (owner.is_none() && s.id == name))
            .ok_or_else(|| {
                McpError::NotFound(format!(
                    "no MCP server named '{name}' is yours; GET /v1/mcp/servers lists them"
                ))
            })
    }

    /// The id of a server named by its id, or by name among the operator's.
    pub async fn server_id(&self, id_or_name: &str) -> Result<String> {
        match self.store.mcp_server(id_or_name).await {
            Ok(s) => Ok(s.id),
            Err(StoreError::NotFound { .. }) => Ok(self.owned(None, id_or_name).await?.id),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn update(
        &self,
        owner: Owner<'_>,
        name: &str,
        patch: ServerPatch,
    ) -> Result<McpServerRecord> {
        let mut server = self.owned(owner, name).await?;
        if let Some(new_name) = patch.name {
            check_server_name(&new_name)?;
            server.name = new_name;
        }
        if let Some(url) = patch.url {
            if server.transport != "http" {
                return Err(McpError::invalid("url", "a stdio server has no URL"));
            }
            server.url = Some(self.check_url(&url).await?);
        }
        if let Some(headers) = patch.headers {
            if server.transport != "http" {
                return Err(McpError::invalid(
                    "headers",
                    "a stdio server takes env, not headers",
                ));
            }
            check_headers(&headers)?;
            let env = self.secrets_map(&server, "env")?;
            server.sealed = self.seal_secrets(&server.id, &headers, &env)?;
            server.header_names = headers.keys().cloned().collect();
        }
        if let Some(allowed) = patch.allowed_tools {
            check_allowed(&allowed)?;
            server.allowed_tools = allowed;
        }
        if let Some(public) = patch.public {
            if owner.is_some() && public {
                return Err(McpError::Forbidden(
                    "only the operator makes MCP servers public".into(),
                ));
            }
            server.public = public;
        }
        server.updated_at = chrono::Utc::now();
        self.store
            .update_mcp_server(&server)
            .await
            .map_err(conflict)?;
        self.health.forget(&server.id);
        self.visible.clear();
        Ok(server)
    }

    pub async fn delete(&self, owner: Owner<'_>, name: &str) -> Result<()> {
        let server = self.owned(owner, name).await?;
        self.store.delete_mcp_server(&server.id).await?;
        self.health.forget(&server.id);
        self.stdio.stop_server(&server.id);
        self.visible.clear();
        Ok(())
    }

    /// Grants the operator's public server `server` (its name or id) to `tenant_id`; whether
    /// the grant is new.
    pub async fn grant(&self, tenant_id: &str, server: &str) -> Result<(McpServerRecord, bool)> {
        let record = self.owned(None, server).await?;
        if !record.public {
            return Err(McpError::invalid(
                "server",
                format!(
                    "the MCP server '{}' is not public; PATCH it with \"public\": true first",
                    record.name
                ),
            ));
        }
        if self
            .store
            .mcp_servers_owned(Some(tenant_id))
            .await?
            .iter()
            .any(|s| s.name == record.name)
        {
            return Err(McpError::Conflict(format!(
                "the tenant already has an MCP server named '{}'",
                record.name
            )));
        }
        let added = self
            .store
            .grant_mcp_server(tenant_id, &record.id, chrono::Utc::now())
            .await?;
        self.visible.clear();
        Ok((record, added))
    }

    pub async fn revoke(&self, tenant_id: &str, server: &str) -> Result<bool> {
        let record = self.owned(None, server).await?;
        let revoked = self.store.revoke_mcp_grant(tenant_id, &record.id).await?;
        self.visible.clear();
        Ok(revoked)
    }

    /// The audit log of `owner`'s tool calls in the last `days` days, newest first.
    pub async fn calls(
        &self,
        owner: Owner<'_>,
        days: i64,
        limit: i64,
    ) -> Result<Vec<store::McpCallRecord>> {
        let end = chrono::Utc::now() + chrono::TimeDelta::seconds(1);
        let start = end - chrono::TimeDelta::days(days);
        Ok(self.store.mcp_calls(owner, start, end, limit).await?)
    }
}

fn conflict(e: StoreError) -> McpError {
    match e {
        StoreError::Conflict(m) => McpError::Conflict(m),
        other => McpError::Store(other),
    }
}

/// Seals every server's secrets again under `sealer`'s current key (opening them with it or its
/// previous key); how many changed. Key rotation: `flywheel rotate-secret-key`.
pub async fn reseal_all(store: &dyn store::Store, sealer: &crate::Sealer) -> Result<usize> {
    let mut changed = 0;
    for mut server in store.mcp_servers_all().await? {
        let Some(sealed) = &server.sealed else {
            continue;
        };
        if let Some(new) = sealer.reseal(sealed, &server.id)? {
            server.sealed = Some(new);
            store.update_mcp_server(&server).await?;
            changed += 1;
        }
    }
    Ok(changed)
}
