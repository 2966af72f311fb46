//! The `/mcp` endpoint, one JSON-RPC message at a time (the gateway crate carries it over
//! HTTP). Clients of the session revisions (2025-03-26 to 2025-11-25) `initialize` and then
//! send the `Mcp-Session-Id` they got; clients of the stateless revision (2026-07-28) send the
//! revision with every request and no session, and share one implicit session per key. Either
//! way a client session pins one upstream session per server (`store::McpUpstreamSession`),
//! so successive calls reach one upstream session whichever process forwards them.

use std::time::Duration;

use futures::future::join_all;
use serde_json::{json, Map, Value};
use store::{McpServerRecord, McpSessionRecord, StoreError};

use crate::client::all_pages;
use crate::error::{McpError, Result};
use crate::meter::{Called, Metered};
use crate::names::{exposed, split};
use crate::Mcp;

/// The revisions clients may speak, newest first.
pub const SESSION_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// The stateless revision.
pub const STATELESS_VERSION: &str = "2026-07-28";
/// A session's `last_seen` is written at most this often.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Who calls: a tenant's key, or the admin key (`None`: the operator's servers, unmetered).
#[derive(Debug, Clone)]
pub struct McpCaller {
    pub principal: Option<tenancy::Principal>,
}

impl McpCaller {
    pub fn tenant_id(&self) -> Option<String> {
        self.principal.as_ref().map(|p| p.tenant.id.clone())
    }

    /// The implicit session of a stateless client: one per key.
    fn implicit_session_id(&self) -> String {
        match &self.principal {
            Some(p) => format!("key_{}", p.key.id),
            None => "key_admin".to_owned(),
        }
    }
}

/// One POST to `/mcp`.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub session: Option<&'a str>,
    /// The `MCP-Protocol-Version` header.
    pub version: Option<&'a str>,
    pub body: &'a [u8],
}

/// What the transport answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A notification or a client's response: nothing to answer (HTTP 202).
    Accepted,
    /// A JSON-RPC response, with the session id to send back after `initialize`.
    Message {
        body: Value,
        session: Option<String>,
    },
    /// Refused below JSON-RPC (an HTTP status), with a JSON-RPC error body.
    Refused { why: Refusal, body: Value },
}

/// Transport-level refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not JSON-RPC, or a session revision's request without its session (HTTP 400).
    BadRequest,
    /// The session id is unknown, ended, or another tenant's (HTTP 404: initialize again).
    SessionNotFound,
}

/// JSON-RPC error codes.
pub mod code {
    pub const PARSE: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL: i64 = -32603;
    /// The MCP server behind a tool failed.
    pub const UPSTREAM: i64 = -32000;
    /// The account or a rate limit refused the call (`data.type` says which).
    pub const REFUSED: i64 = -32001;
}

fn error_body(id: &Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})
}

fn refused(why: Refusal, code: i64, message: impl Into<String>) -> Reply {
    Reply::Refused {
        why,
        body: error_body(&Value::Null, code, message),
    }
}

fn answer(id: &Value, outcome: std::result::Result<Value, (i64, String)>) -> Reply {
    let body = match outcome {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err((code, message)) => error_body(id, code, message),
    };
    Reply::Message {
        body,
        session: None,
    }
}

/// The revision a stateless request names: the header, or its `_meta`.
fn stateless_version<'a>(incoming: &Incoming<'a>, params: Option<&'a Value>) -> Option<&'a str> {
    if let Some(v) = incoming.version.filter(|v| *v == STATELESS_VERSION) {
        return Some(v);
    }
    let meta = params?.get("_meta")?.as_object()?;
    meta.iter()
        .find(|(k, _)| k.ends_with("protocolVersion"))
        .and_then(|(_, v)| v.as_str())
        .filter(|v| *v == STATELESS_VERSION)
}

impl Mcp {
    /// Handles one message of `caller`.
    pub async fn handle(&self, caller: &McpCaller, incoming: Incoming<'_>) -> Reply {
        let message: Value = match serde_json::from_slice(incoming.body) {
            Ok(v) => v,
            Err(e) => {
                return refused(
                    Refusal::BadRequest,
                    code::PARSE,
                    format!("the body is not JSON: {e}"),
                )
            }
        };
        let Value::Object(message) = message else {
            return refused(
                Refusal::BadRequest,
                code::INVALID_REQUEST,
                "send one JSON-RPC message per request (batches were removed in MCP 2025-06-18)",
            );
        };
        if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return refused(
                Refusal::BadRequest,
                code::INVALID_REQUEST,
                "\"jsonrpc\" must be \"2.0\"",
            );
        }
        let Some(method) = message.get("method").and_then(Value::as_str) else {
            // A client's response to a server request: this gateway sends none.
            return Reply::Accepted;
        };
        let Some(id) = message
            .get("id")
            .filter(|id| id.is_string() || id.is_i64() || id.is_u64())
        else {
            if message.get("id").is_some() {
                return refused(
                    Refusal::BadRequest,
                    code::INVALID_REQUEST,
                    "\"id\" must be a string or an integer",
                );
            }
            return Reply::Accepted;
        };
        let params = message.get("params");
        if method == "initialize" {
            return self.initialize(caller, id, params).await;
        }
        let stateless =
            incoming.session.is_none() && stateless_version(&incoming, params).is_some();
        if method == "server/discover" {
            let mut description = server_description(STATELESS_VERSION);
            description["supportedVersions"] = json!([STATELESS_VERSION]);
            return answer(id, Ok(modern(description)));
        }
        let session = match incoming.session {
            Some(sid) => match self.session(caller, sid).await {
                Ok(s) => s,
                Err(reply) => return reply,
            },
            None => match stateless_version(&incoming, params) {
                Some(_) => match self.implicit_session(caller).await {
                    Ok(s) => s,
                    Err(e) => return answer(id, Err((code::INTERNAL, e.to_string()))),
                },
                None => {
                    return refused(
                        Refusal::BadRequest,
                        code::INVALID_REQUEST,
                        "send the Mcp-Session-Id header that initialize returned (or speak the stateless revision 2026-07-28)",
                    )
                }
            },
        };
        let outcome = match method {
            "ping" => Ok(json!({})),
            "tools/list" => self.list_tools(caller, &session).await,
            "tools/call" => self.call_tool(caller, &session, params).await,
            other => match self.passthrough(caller, &session, other, params).await {
                Some(outcome) => outcome,
                None => Err((
                    code::METHOD_NOT_FOUND,
                    format!("this MCP gateway does not offer '{other}'; it offers tools, prompts and resources (list, call, get, read) and ping"),
                )),
            },
        };
        let outcome = if stateless {
            outcome.map(modern)
        } else {
            outcome
        };
        answer(id, outcome)
    }

    async fn initialize(&self, caller: &McpCaller, id: &Value, params: Option<&Value>) -> Reply {
        let asked = params
            .and_then(|p| p.get("protocolVersion"))
            .and_then(Value::as_str)
            .unwrap_or(SESSION_VERSIONS[0]);
        let version = SESSION_VERSIONS
            .iter()
            .find(|v| **v == asked)
            .copied()
            .unwrap_or(SESSION_VERSIONS[0]);
        let now = chrono::Utc::now();
        let record = McpSessionRecord {
            id: crate::new_id("mcps_"),
            tenant_id: caller.tenant_id(),
            protocol_version: version.to_owned(),
            created_at: now,
            last_seen: now,
        };
        if let Err(e) = self.store.create_mcp_session(&record).await {
            return answer(
                id,
                Err((code::INTERNAL, format!("could not open a session: {e}"))),
            );
        }
        Reply::Message {
            body: json!({"jsonrpc": "2.0", "id": id, "result": server_description(version)}),
            session: Some(record.id),
        }
    }

    /// The caller's session `sid`; another tenant's is as unknown as a missing one.
    async fn session(
        &self,
        caller: &McpCaller,
        sid: &str,
    ) -> std::result::Result<McpSessionRecord, Reply> {
        let not_found = || {
            refused(
                Refusal::SessionNotFound,
                code::INVALID_REQUEST,
                "this MCP session does not exist or has ended; initialize a new one",
            )
        };
        let mut session = match self.sessions.get(&sid.to_owned()) {
            Some(s) => s,
            None => match self.store.mcp_session(sid).await {
                Ok(s) => {
                    self.sessions.put(sid.to_owned(), s.clone());
                    s
                }
                Err(StoreError::NotFound { .. }) => return Err(not_found()),
                Err(e) => return Err(refused(Refusal::BadRequest, code::INTERNAL, e.to_string())),
            },
        };
        if session.tenant_id != caller.tenant_id() {
            return Err(not_found());
        }
        let now = chrono::Utc::now();
        if (now - session.last_seen)
            .to_std()
            .is_ok_and(|d| d > TOUCH_EVERY)
        {
            let _ = self.store.touch_mcp_session(sid, now).await;
            session.last_seen = now;
            self.sessions.put(sid.to_owned(), session.clone());
        }
        Ok(session)
    }

    /// A stateless client's session: one per key.
    pub(crate) async fn implicit_session(&self, caller: &McpCaller) -> Result<McpSessionRecord> {
        let id = caller.implicit_session_id();
        if let Some(s) = self.sessions.get(&id) {
            return Ok(s);
        }
        match self.store.mcp_session(&id).await {
            Ok(s) if s.tenant_id == caller.tenant_id() => {
                self.sessions.put(id, s.clone());
                return Ok(s);
            }
            Ok(_) => return Err(McpError::Internal("session id clash".into())),
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let now = chrono::Utc::now();
        let record = McpSessionRecord {
            id,
            tenant_id: caller.tenant_id(),
            protocol_version: STATELESS_VERSION.to_owned(),
            created_at: now,
            last_seen: now,
        };
        match self.store.create_mcp_session(&record).await {
            Ok(()) | Err(StoreError::Conflict(_)) => Ok(record),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes client sessions not seen for `idle` (with their pins; their stdio processes
    /// are reaped as idle); how many.
    pub async fn sweep_sessions(&self, idle: Duration) -> Result<u64> {
        let idle = chrono::TimeDelta::from_std(idle).unwrap_or(chrono::TimeDelta::days(1));
        Ok(self
            .store
            .delete_mcp_sessions_before(chrono::Utc::now() - idle)
            .await?)
    }

    /// Ends a client session and the upstream sessions it pinned; whether it existed.
    pub async fn end_session(
        &self,
        caller: &McpCaller,
        sid: &str,
    ) -> std::result::Result<(), Reply> {
        let session = self.session(caller, sid).await?;
        for server in self.visible_servers(caller).await.unwrap_or_default() {
            self.end_upstream(&session, &server).await;
        }
        let _ = self.store.delete_mcp_session(&session.id).await;
        self.sessions.remove(&session.id);
        Ok(())
    }

    /// The servers whose tools `caller` sees: a tenant's own and those granted to it; the
    /// operator's own.
    pub(crate) async fn visible_servers(&self, caller: &McpCaller) -> Result<Vec<McpServerRecord>> {
        let tenant = caller.tenant_id();
        if let Some(servers) = self.visible.get(&tenant) {
            return Ok(servers);
        }
        let servers = self.servers(tenant.as_deref()).await?;
        self.visible.put(tenant, servers.clone());
        Ok(servers)
    }

    pub(crate) async fn server_tools(
        &self,
        session: &McpSessionRecord,
        server: &McpServerRecord,
    ) -> Result<Vec<Value>> {
        let tools = all_pages("tools", |params| async move {
            let page = self
                .request(session, server, "tools/list", params)
                .await?
                .map_err(|e| e.refused(&server.name, "tools/list"))?;
            Ok(Some(page))
        })
        .await?;
        Ok(tools
            .into_iter()
            .filter(|t| {
                let name = t.get("name").and_then(Value::as_str).unwrap_or_default();
                server
                    .allowed_tools
                    .as_ref()
                    .is_none_or(|allowed| allowed.iter().any(|a| a == name))
            })
            .collect())
    }

    /// `server_tools`, unless the server is being skipped after failures; its health is
    /// updated with the outcome.
    pub(crate) async fn healthy_tools(
        &self,
        session: &McpSessionRecord,
        server: &McpServerRecord,
    ) -> Result<Vec<Value>> {
        if let Some(why) = self.health.skip(&server.id) {
            return Err(McpError::Upstream(format!(
                "the MCP server '{}' is failing ({why}); it is retried shortly",
                server.name
            )));
        }
        let tools = self.server_tools(session, server).await;
        match &tools {
            Ok(_) => self.health.ok(&server.id),
            Err(e) => self.health.failed(&server.id, &e.to_string()),
        }
        tools
    }

    async fn list_tools(
        &self,
        caller: &McpCaller,
        session: &McpSessionRecord,
    ) -> std::result::Result<Value, (i64, String)> {
        let servers = self.visible_servers(caller).await.map_err(internal)?;
        // A failing server adds no tools; the others keep theirs.
        let lists = join_all(servers.iter().map(|server| async move {
            self.healthy_tools(session, server)
                .await
                .unwrap_or_default()
                .into_iter()
                .filter_map(|mut tool| {
                    let name = tool.get("name")?.as_str()?.to_owned();
                    tool["name"] = json!(exposed(&server.name, &name));
                    Some(tool)
                })
                .collect::<Vec<_>>()
        }))
        .await;
        Ok(json!({ "tools": lists.into_iter().flatten().collect::<Vec<_>>() }))
    }

    async fn call_tool(
        &self,
        caller: &McpCaller,
        session: &McpSessionRecord,
        params: Option<&Value>,
    ) -> std::result::Result<Value, (i64, String)> {
        let params = params.and_then(Value::as_object).ok_or((
            code::INVALID_PARAMS,
            "tools/call needs params with the tool's \"name\"".to_owned(),
        ))?;
        let name = params.get("name").and_then(Value::as_str).ok_or((
            code::INVALID_PARAMS,
            "tools/call needs the tool's \"name\"".to_owned(),
        ))?;
        let unknown = || {
            (
                code::INVALID_PARAMS,
                format!("unknown tool '{name}'; tools/list lists the tools you may call"),
            )
        };
        let servers = self.visible_servers(caller).await.map_err(internal)?;
        let (server, tool) = own_name(&servers, name, unknown, |server| {
            self.server_tools(session, server)
        })
        .await?;
        if let Some(allowed) = &server.allowed_tools {
            if !allowed.contains(&tool) {
                return Err(unknown());
            }
        }
        let arguments = params.get("arguments").cloned();
        self.call_on(caller, session, server, &tool, arguments)
            .await
    }

    /// Calls `tool` of `server` in `session`, metered and audited: the tool's result (which
    /// may report an error itself, `isError`) or a JSON-RPC error.
    pub(crate) async fn call_on(
        &self,
        caller: &McpCaller,
        session: &McpSessionRecord,
        server: &McpServerRecord,
        tool: &str,
        arguments: Option<Value>,
    ) -> std::result::Result<Value, (i64, String)> {
        let called = Called::from(server);
        let metered = Metered::start(
            self,
            caller.principal.as_ref(),
            &called,
            tool,
            arguments.as_ref(),
        )
        .await?;
        let result = self
            .request(
                session,
                server,
                "tools/call",
                Some(call_params(tool, arguments)),
            )
            .await;
        match &result {
            Ok(_) => self.health.ok(&server.id),
            Err(e @ McpError::Upstream(_)) => self.health.failed(&server.id, &e.to_string()),
            Err(_) => {}
        }
        metered.settle(result).await
    }
}

/// `tools/call`'s params.
pub(crate) fn call_params(tool: &str, arguments: Option<Value>) -> Value {
    let mut params = Map::new();
    params.insert("name".into(), json!(tool));
    if let Some(args) = arguments {
        params.insert("arguments".into(), args);
    }
    Value::Object(params)
}

/// The server an exposed name (`SERVER__NAME`) belongs to among `servers`, and the name's own
/// form there: the rest after the prefix, or, where it was shortened to fit, the name among
/// what `list` gives for that server that exposes as it.
pub(crate) async fn own_name<'s, Fut>(
    servers: &'s [McpServerRecord],
    name: &str,
    unknown: impl Fn() -> (i64, String),
    list: impl FnOnce(&'s McpServerRecord) -> Fut,
) -> std::result::Result<(&'s McpServerRecord, String), (i64, String)>
where
    Fut: std::future::Future<Output = Result<Vec<Value>>>,
{
    let (server_name, rest) = split(name).ok_or_else(&unknown)?;
    let server = servers
        .iter()
        .find(|s| s.name == server_name)
        .ok_or_else(&unknown)?;
    if exposed(&server.name, rest) == name {
        return Ok((server, rest.to_owned()));
    }
    list(server)
        .await
        .map_err(upstream)?
        .iter()
        .filter_map(|item| item.get("name").and_then(Value::as_str))
        .find(|own| exposed(&server.name, own) == name)
        .map(|own| (server, own.to_owned()))
        .ok_or_else(unknown)
}

fn internal(e: McpError) -> (i64, String) {
    (code::INTERNAL, e.to_string())
}

fn upstream(e: McpError) -> (i64, String) {
    (code::UPSTREAM, e.to_string())
}

/// A result as the stateless revision shapes it: complete, not to be cached across callers.
fn modern(mut result: Value) -> Value {
    if let Value::Object(o) = &mut result {
        o.entry("resultType").or_insert(json!("complete"));
        if ["tools", "prompts", "resources", "resourceTemplates"]
            .iter()
            .any(|list| o.contains_key(*list))
        {
            o.entry("ttlMs").or_insert(json!(0));
            o.entry("cacheScope").or_insert(json!("private"));
        }
    }
    result
}

fn server_description(version: &str) -> Value {
    json!({
        "protocolVersion": version,
        "capabilities": {
            "tools": {"listChanged": false},
            "prompts": {"listChanged": false},
            "resources": {"listChanged": false, "subscribe": false},
        },
        "serverInfo": {"name": "flywheel", "title": "Flywheel MCP gateway", "version": env!("CARGO_PKG_VERSION")},
        "instructions": "Tools and prompts of the MCP servers registered for this key, named SERVER__NAME; their resources under the servers' own URIs.",
    })
}
