//! The MCP registry's JSON: registrations, changes, grants, and the server view (secrets are
//! write-only: only their header names are shown).

use std::collections::BTreeMap;

use mcp::{McpCallRecord, McpServerRecord};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ApiError, Code, Result};
use crate::validate::{parse_object, Fields};

fn headers(fields: &Fields<'_>) -> Result<Option<BTreeMap<String, String>>> {
    let Some(map) = fields.object("headers")? else {
        return Ok(None);
    };
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(ApiError::invalid(
                format!("headers.{k}"),
                "header values are strings",
            )),
        })
        .collect::<Result<_>>()
        .map(Some)
}

fn allowed_tools(fields: &Fields<'_>) -> Result<Option<Vec<String>>> {
    let Some(list) = fields.array("allowed_tools")? else {
        return Ok(None);
    };
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str().map(str::to_owned).ok_or_else(|| {
                ApiError::invalid(format!("allowed_tools[{i}]"), "tool names are strings")
            })
        })
        .collect::<Result<_>>()
        .map(Some)
}

fn strings(fields: &Fields<'_>, key: &str) -> Result<Vec<String>> {
    let Some(list) = fields.array(key)? else {
        return Ok(Vec::new());
    };
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| ApiError::invalid(format!("{key}[{i}]"), "must be a string"))
        })
        .collect()
}

fn string_map(fields: &Fields<'_>, key: &str) -> Result<BTreeMap<String, String>> {
    let Some(map) = fields.object(key)? else {
        return Ok(BTreeMap::new());
    };
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(ApiError::invalid(
                format!("{key}.{k}"),
                "values are strings",
            )),
        })
        .collect()
}

/// `"transport": "http"` (default, with `url`) or, for the operator, `"stdio"` (with
/// `command`, `args`, `env`).
fn transport(fields: &Fields<'_>, operator: bool) -> Result<mcp::Transport> {
    match fields.string("transport")? {
        None | Some("http") => {
            for key in ["command", "args", "env"] {
                if fields.get(key).is_some() {
                    return Err(ApiError::invalid(key, format!("'{key}' is for stdio servers; an http server takes url and headers")));
                }
            }
            Ok(mcp::Transport::Http {
                url: fields.required_string("url")?.to_owned(),
            })
        }
        Some("stdio") if operator => {
            if fields.get("url").is_some() {
                return Err(ApiError::invalid("url", "a stdio server has no url; it takes command, args and env"));
            }
            Ok(mcp::Transport::Stdio {
                command: fields.required_string("command")?.to_owned(),
                args: strings(fields, "args")?,
                env: string_map(fields, "env")?,
            })
        }
        Some("stdio") => Err(ApiError::new(
            Code::PermissionDenied,
            "Only the operator registers stdio MCP servers (they run commands on Flywheel's host); register a Streamable HTTP server with \"transport\": \"http\".",
        )),
        Some(other) => Err(ApiError::invalid(
            "transport",
            format!("transport is 'http' or (for the operator) 'stdio', not '{other}'"),
        )),
    }
}

/// `POST /v1/mcp/servers` (and `/admin/v1/mcp/servers`, where `public` is allowed).
pub fn new_server(body: &[u8], operator: bool) -> Result<mcp::NewServer> {
    let map = parse_object(body)?;
    let fields = Fields::root(&map);
    let mut allowed = vec!["name", "transport", "url", "headers", "allowed_tools"];
    if operator {
        allowed.extend(["public", "command", "args", "env"]);
    }
    // The transport first: a tenant asking for stdio learns it is the operator's.
    let transport = transport(&fields, operator)?;
    fields.deny_unknown(&allowed)?;
    Ok(mcp::NewServer {
        transport,
        name: fields.required_string("name")?.to_owned(),
        headers: headers(&fields)?.unwrap_or_default(),
        allowed_tools: allowed_tools(&fields)?,
        public: fields.bool("public")?.unwrap_or(false),
    })
}

/// `PATCH /v1/mcp/servers/{name}`: absent keeps a field; `"allowed_tools": null` offers all.
pub fn server_patch(body: &[u8], operator: bool) -> Result<mcp::ServerPatch> {
    let map = parse_object(body)?;
    let fields = Fields::root(&map);
    let mut allowed = vec!["name", "url", "headers", "allowed_tools"];
    if operator {
        allowed.push("public");
    }
    fields.deny_unknown(&allowed)?;
    let patch = mcp::ServerPatch {
        name: fields.string("name")?.map(str::to_owned),
        url: fields.string("url")?.map(str::to_owned),
        headers: headers(&fields)?,
        allowed_tools: if fields.is_null("allowed_tools") {
            Some(None)
        } else {
            allowed_tools(&fields)?.map(Some)
        },
        public: fields.bool("public")?,
    };
    if map.is_empty() {
        return Err(ApiError::new(
            Code::InvalidRequest,
            format!(
                "Nothing to change: send at least one of {}.",
                allowed.join(", ")
            ),
        ));
    }
    Ok(patch)
}

/// `POST /admin/v1/tenants/{id}/mcp_grants`.
pub fn grant(body: &[u8]) -> Result<String> {
    let map = parse_object(body)?;
    let fields = Fields::root(&map);
    fields.deny_unknown(&["server"])?;
    Ok(fields.required_string("server")?.to_owned())
}

#[derive(Debug, Serialize)]
pub struct ServerView {
    pub id: String,
    pub object: &'static str,
    pub name: String,
    pub transport: String,
    pub url: Option<String>,
    /// A stdio server's program and arguments (the operator's own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// The names of a stdio server's environment variables (values are never shown).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env_names: Vec<String>,
    /// `"tenant"` (the caller's own) or `"operator"`.
    pub owner: &'static str,
    pub public: bool,
    pub header_names: Vec<String>,
    pub allowed_tools: Option<Vec<String>>,
    /// `"ok"`, or `"failing"` while this process skips it after an error.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ServerView {
    pub fn new(server: McpServerRecord, down: Option<String>) -> Self {
        Self {
            object: "mcp.server",
            owner: if server.tenant_id.is_some() {
                "tenant"
            } else {
                "operator"
            },
            status: if down.is_some() { "failing" } else { "ok" },
            last_error: down,
            id: server.id,
            name: server.name,
            transport: server.transport,
            url: server.url,
            command: server.command,
            args: server.args,
            env_names: server.env_names,
            public: server.public,
            header_names: server.header_names,
            allowed_tools: server.allowed_tools,
            created_at: server.created_at.timestamp(),
            updated_at: server.updated_at.timestamp(),
        }
    }
}

/// One row of `GET /v1/mcp/calls`, the audit log of tool calls.
#[derive(Debug, Serialize)]
pub struct CallView {
    pub id: String,
    pub object: &'static str,
    pub key_prefix: Option<String>,
    pub server_id: String,
    pub server: String,
    pub tool: String,
    pub started_at: i64,
    pub duration_ms: i64,
    /// `ok`, `tool_error`, `failed` or `refused`.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Micro-units charged.
    pub cost: i64,
    /// The call's arguments: only where the tenant opted in (`PUT /v1/mcp/settings`), else
    /// `null`.
    pub arguments: Option<serde_json::Value>,
}

/// `GET|PUT /v1/mcp/settings`: a tenant's MCP settings.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsView {
    /// Keep each tool call's arguments in the audit log (`GET /v1/mcp/calls`).
    pub audit_arguments: bool,
}

impl From<McpCallRecord> for CallView {
    fn from(c: McpCallRecord) -> Self {
        Self {
            id: c.id,
            object: "mcp.call",
            key_prefix: c.key_prefix,
            server_id: c.server_id,
            server: c.server_name,
            tool: c.tool,
            started_at: c.started_at.timestamp(),
            duration_ms: c.duration_ms,
            outcome: c.outcome,
            error: c.error,
            cost: c.charged,
            arguments: c
                .arguments
                .map(|text| serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))),
        }
    }
}
