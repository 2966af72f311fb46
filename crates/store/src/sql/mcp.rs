//! MCP servers, grants and sessions, on either database.

use async_trait::async_trait;

use super::{args, Arg, Db, Exec};
use crate::error::{Result, StoreError};
use crate::mcp::{McpCallRecord, McpServerRecord, McpSessionRecord, McpStore, McpUpstreamSession};
use crate::model::Timestamp;
use crate::rows::Columns;

const SERVER_COLUMNS: &str = "s.id, s.tenant_id, s.name, s.transport, s.url, s.command, s.args, \
     s.sealed, s.header_names, s.env_names, s.allowed_tools, s.public, s.created_at, s.updated_at";

fn server(row: &impl Columns) -> Result<McpServerRecord> {
    Ok(McpServerRecord {
        id: row.text("id")?,
        tenant_id: row.opt_text("tenant_id")?,
        name: row.text("name")?,
        transport: row.text("transport")?,
        url: row.opt_text("url")?,
        command: row.opt_text("command")?,
        args: row.list("args")?,
        sealed: row.opt_text("sealed")?,
        header_names: row.list("header_names")?,
        env_names: row.list("env_names")?,
        allowed_tools: row.opt_list("allowed_tools")?,
        public: row.flag("public")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
    })
}

fn upstream(row: &impl Columns) -> Result<McpUpstreamSession> {
    Ok(McpUpstreamSession {
        session_id: row.text("session_id")?,
        server_id: row.text("server_id")?,
        upstream_session: row.opt_text("upstream_session")?,
        protocol_version: row.text("protocol_version")?,
        created_at: row.time("created_at")?,
    })
}

fn name_taken(name: &str) -> impl FnOnce() -> String + '_ {
    move || format!("an MCP server named '{name}' already exists")
}

async fn servers<D: Db>(db: &D, filter: &str, arg: Option<&str>) -> Result<Vec<McpServerRecord>> {
    let sql = format!("SELECT {SERVER_COLUMNS} FROM mcp_servers s {filter} ORDER BY s.name, s.id");
    let rows = match arg {
        Some(a) => db.reader().fetch_all(&sql, &args![a]).await?,
        None => db.reader().fetch_all(&sql, &[]).await?,
    };
    rows.iter().map(server).collect()
}

/// An audit row of `mcp_calls` ([`call_args`] binds it).
pub(crate) const INSERT_CALL: &str = "INSERT INTO mcp_calls (id, tenant_id, key_prefix, \
     server_id, server_name, tool, started_at, duration_ms, outcome, error, charged, arguments) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

pub(crate) fn call_args(c: &McpCallRecord) -> [Arg<'_>; 12] {
    args![
        &c.id,
        &c.tenant_id,
        &c.key_prefix,
        &c.server_id,
        &c.server_name,
        &c.tool,
        c.started_at,
        c.duration_ms,
        &c.outcome,
        &c.error,
        c.charged,
        &c.arguments
    ]
}

#[async_trait]
impl<D: Db> McpStore for D {
    async fn create_mcp_server(&self, s: &McpServerRecord) -> Result<()> {
        self.reader()
            .execute(
                "INSERT INTO mcp_servers (id, tenant_id, name, transport, url, command, args, \
                 sealed, header_names, env_names, allowed_tools, public, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                &args![
                    &s.id,
                    &s.tenant_id,
                    &s.name,
                    &s.transport,
                    &s.url,
                    &s.command,
                    &s.args,
                    &s.sealed,
                    &s.header_names,
                    &s.env_names,
                    &s.allowed_tools,
                    s.public,
                    s.created_at,
                    s.updated_at
                ],
            )
            .await
            .map_err(|e| StoreError::unique(e, name_taken(&s.name)))?;
        Ok(())
    }

    async fn mcp_server(&self, id: &str) -> Result<McpServerRecord> {
        let sql = format!("SELECT {SERVER_COLUMNS} FROM mcp_servers s WHERE s.id = $1");
        let row = self
            .reader()
            .fetch_optional(&sql, &args![id])
            .await?
            .ok_or_else(|| StoreError::not_found("MCP server", id))?;
        server(&row)
    }

    async fn mcp_servers_owned(&self, tenant_id: Option<&str>) -> Result<Vec<McpServerRecord>> {
        match tenant_id {
            Some(t) => servers(self, "WHERE s.tenant_id = $1", Some(t)).await,
            None => servers(self, "WHERE s.tenant_id IS NULL", None).await,
        }
    }

    async fn mcp_servers_granted(&self, tenant_id: &str) -> Result<Vec<McpServerRecord>> {
        servers(
            self,
            "JOIN mcp_grants g ON g.server_id = s.id WHERE g.tenant_id = $1 AND s.public",
            Some(tenant_id),
        )
        .await
    }

    async fn mcp_servers_all(&self) -> Result<Vec<McpServerRecord>> {
        servers(self, "", None).await
    }

    async fn update_mcp_server(&self, s: &McpServerRecord) -> Result<()> {
        let updated = self
            .reader()
            .execute(
                "UPDATE mcp_servers SET name = $2, transport = $3, url = $4, command = $5, \
                 args = $6, sealed = $7, header_names = $8, env_names = $9, allowed_tools = $10, \
                 public = $11, updated_at = $12 WHERE id = $1",
                &args![
                    &s.id,
                    &s.name,
                    &s.transport,
                    &s.url,
                    &s.command,
                    &s.args,
                    &s.sealed,
                    &s.header_names,
                    &s.env_names,
                    &s.allowed_tools,
                    s.public,
                    s.updated_at
                ],
            )
            .await
            .map_err(|e| StoreError::unique(e, name_taken(&s.name)))?;
        if updated == 0 {
            return Err(StoreError::not_found("MCP server", &s.id));
        }
        Ok(())
    }

    async fn delete_mcp_server(&self, id: &str) -> Result<bool> {
        let deleted = self
            .reader()
            .execute("DELETE FROM mcp_servers WHERE id = $1", &args![id])
            .await?;
        Ok(deleted > 0)
    }

    async fn grant_mcp_server(
        &self,
        tenant_id: &str,
        server_id: &str,
        now: Timestamp,
    ) -> Result<bool> {
        let added = self
            .reader()
            .execute(
                "INSERT INTO mcp_grants (tenant_id, server_id, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
                &args![tenant_id, server_id, now],
            )
            .await?;
        Ok(added > 0)
    }

    async fn revoke_mcp_grant(&self, tenant_id: &str, server_id: &str) -> Result<bool> {
        let deleted = self
            .reader()
            .execute(
                "DELETE FROM mcp_grants WHERE tenant_id = $1 AND server_id = $2",
                &args![tenant_id, server_id],
            )
            .await?;
        Ok(deleted > 0)
    }

    async fn create_mcp_session(&self, s: &McpSessionRecord) -> Result<()> {
        self.reader()
            .execute(
                "INSERT INTO mcp_sessions (id, tenant_id, protocol_version, created_at, last_seen) \
                 VALUES ($1, $2, $3, $4, $5)",
                &args![
                    &s.id,
                    &s.tenant_id,
                    &s.protocol_version,
                    s.created_at,
                    s.last_seen
                ],
            )
            .await
            .map_err(|e| StoreError::unique(e, || format!("MCP session '{}' exists", s.id)))?;
        Ok(())
    }

    async fn mcp_session(&self, id: &str) -> Result<McpSessionRecord> {
        let row = self
            .reader()
            .fetch_optional(
                "SELECT id, tenant_id, protocol_version, created_at, last_seen \
                 FROM mcp_sessions WHERE id = $1",
                &args![id],
            )
            .await?
            .ok_or_else(|| StoreError::not_found("MCP session", id))?;
        Ok(McpSessionRecord {
            id: row.text("id")?,
            tenant_id: row.opt_text("tenant_id")?,
            protocol_version: row.text("protocol_version")?,
            created_at: row.time("created_at")?,
            last_seen: row.time("last_seen")?,
        })
    }

    async fn touch_mcp_session(&self, id: &str, now: Timestamp) -> Result<()> {
        self.reader()
            .execute(
                "UPDATE mcp_sessions SET last_seen = $2 WHERE id = $1 AND last_seen < $2",
                &args![id, now],
            )
            .await?;
        Ok(())
    }

    async fn delete_mcp_session(&self, id: &str) -> Result<bool> {
        let deleted = self
            .reader()
            .execute("DELETE FROM mcp_sessions WHERE id = $1", &args![id])
            .await?;
        Ok(deleted > 0)
    }

    async fn delete_mcp_sessions_before(&self, before: Timestamp) -> Result<u64> {
        Ok(self
            .reader()
            .execute(
                "DELETE FROM mcp_sessions WHERE last_seen < $1",
                &args![before],
            )
            .await?)
    }

    async fn pin_mcp_upstream(&self, pin: &McpUpstreamSession) -> Result<McpUpstreamSession> {
        let mut reader = self.reader();
        reader
            .execute(
                "INSERT INTO mcp_session_upstreams (session_id, server_id, upstream_session, \
                 protocol_version, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &args![
                    &pin.session_id,
                    &pin.server_id,
                    &pin.upstream_session,
                    &pin.protocol_version,
                    pin.created_at
                ],
            )
            .await?;
        let row = reader
            .fetch_optional(
                "SELECT session_id, server_id, upstream_session, protocol_version, created_at \
                 FROM mcp_session_upstreams WHERE session_id = $1 AND server_id = $2",
                &args![&pin.session_id, &pin.server_id],
            )
            .await?
            // The session or the server was deleted meanwhile.
            .ok_or_else(|| StoreError::not_found("MCP session", &pin.session_id))?;
        upstream(&row)
    }

    async fn mcp_upstream(
        &self,
        session_id: &str,
        server_id: &str,
    ) -> Result<Option<McpUpstreamSession>> {
        let row = self
            .reader()
            .fetch_optional(
                "SELECT session_id, server_id, upstream_session, protocol_version, created_at \
                 FROM mcp_session_upstreams WHERE session_id = $1 AND server_id = $2",
                &args![session_id, server_id],
            )
            .await?;
        row.as_ref().map(upstream).transpose()
    }

    async fn record_mcp_call(&self, c: &McpCallRecord) -> Result<()> {
        self.write_one(INSERT_CALL, &call_args(c)).await?;
        Ok(())
    }

    async fn mcp_audit_arguments(&self, tenant_id: &str) -> Result<bool> {
        let row = self
            .reader()
            .fetch_optional(
                "SELECT audit_arguments FROM mcp_settings WHERE tenant_id = $1",
                &args![tenant_id],
            )
            .await?;
        match row {
            Some(row) => row.flag("audit_arguments"),
            None => Ok(false),
        }
    }

    async fn set_mcp_audit_arguments(
        &self,
        tenant_id: &str,
        keep: bool,
        now: Timestamp,
    ) -> Result<()> {
        self.reader()
            .execute(
                "INSERT INTO mcp_settings (tenant_id, audit_arguments, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id) DO UPDATE SET audit_arguments = excluded.audit_arguments, \
                 updated_at = excluded.updated_at",
                &args![tenant_id, keep, now],
            )
            .await?;
        Ok(())
    }

    async fn mcp_calls(
        &self,
        tenant_id: Option<&str>,
        start: Timestamp,
        end: Timestamp,
        limit: i64,
    ) -> Result<Vec<McpCallRecord>> {
        const COLUMNS: &str = "SELECT id, tenant_id, key_prefix, server_id, server_name, tool, \
             started_at, duration_ms, outcome, error, charged, arguments FROM mcp_calls";
        let mut reader = self.reader();
        let rows = match tenant_id {
            Some(t) => {
                let sql = format!(
                    "{COLUMNS} WHERE tenant_id = $1 AND started_at >= $2 AND started_at < $3 \
                     ORDER BY started_at DESC, id LIMIT $4"
                );
                reader.fetch_all(&sql, &args![t, start, end, limit]).await?
            }
            None => {
                let sql = format!(
                    "{COLUMNS} WHERE tenant_id IS NULL AND started_at >= $1 AND started_at < $2 \
                     ORDER BY started_at DESC, id LIMIT $3"
                );
                reader.fetch_all(&sql, &args![start, end, limit]).await?
            }
        };
        rows.iter()
            .map(|row| {
                Ok(McpCallRecord {
                    id: row.text("id")?,
                    tenant_id: row.opt_text("tenant_id")?,
                    key_prefix: row.opt_text("key_prefix")?,
                    server_id: row.text("server_id")?,
                    server_name: row.text("server_name")?,
                    tool: row.text("tool")?,
                    started_at: row.time("started_at")?,
                    duration_ms: row.int("duration_ms")?,
                    outcome: row.text("outcome")?,
                    error: row.opt_text("error")?,
                    charged: row.int("charged")?,
                    arguments: row.opt_text("arguments")?,
                })
            })
            .collect()
    }

    async fn unpin_mcp_upstream(
        &self,
        session_id: &str,
        server_id: &str,
        upstream_session: Option<&str>,
    ) -> Result<bool> {
        let sql = if upstream_session.is_some() {
            "DELETE FROM mcp_session_upstreams WHERE session_id = $1 AND server_id = $2 \
             AND upstream_session = $3"
        } else {
            "DELETE FROM mcp_session_upstreams WHERE session_id = $1 AND server_id = $2 \
             AND upstream_session IS NULL"
        };
        let deleted = match upstream_session {
            Some(u) => {
                self.reader()
                    .execute(sql, &args![session_id, server_id, u])
                    .await?
            }
            None => {
                self.reader()
                    .execute(sql, &args![session_id, server_id])
                    .await?
            }
        };
        Ok(deleted > 0)
    }
}
