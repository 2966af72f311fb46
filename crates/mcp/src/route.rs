//! Where one request for a server goes, in a client session: an HTTP server through the
//! upstream session the client session pinned (opened and pinned on first use; pinned again if
//! the server ended it), a stdio server through the process serving the session. A stdio
//! session's process runs in the Flywheel process that pinned it (`stdio@<its URL>`); another
//! process forwards the request there (`POST /internal/mcp/stdio`, authenticated with an HMAC
//! under the shared secret key), and pins the session to itself if that process is gone.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use store::{McpServerRecord, McpSessionRecord, McpUpstreamSession};

use crate::client::{Pinned, RpcError, Target};
use crate::error::{McpError, Result};
use crate::stdio::StdioCommand;
use crate::Mcp;

const STDIO_PIN: &str = "stdio@";
/// How old a forwarded request may be.
const FORWARD_WINDOW_SECS: i64 = 60;
/// The header carrying a forwarded request's HMAC.
pub const NODE_AUTH_HEADER: &str = "x-flywheel-node-auth";

/// A request forwarded to the process running a session's stdio server.
#[derive(Debug, Serialize, Deserialize)]
struct Forwarded {
    /// Unix seconds when it was sent: a captured request cannot be replayed later.
    sent_at: i64,
    session_id: String,
    server_id: String,
    method: String,
    params: Option<Value>,
}

/// Its answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ForwardedAnswer {
    Result(Value),
    Error(Value),
    Failure(String),
}

fn pinned(pin: &McpUpstreamSession) -> Pinned {
    Pinned {
        session: pin.upstream_session.clone(),
        version: pin.protocol_version.clone(),
    }
}

impl Mcp {
    pub(crate) fn target(&self, server: &McpServerRecord) -> Result<Target> {
        let url = server
            .url
            .as_deref()
            .ok_or_else(|| McpError::Internal(format!("'{}' has no URL", server.name)))?;
        Ok(Target {
            name: server.name.clone(),
            url: self.upstream.guard().check_url(url)?,
            headers: self.headers_of(server)?,
        })
    }

    /// One request to `server` in `session`: its result or JSON-RPC error.
    pub(crate) async fn request(
        &self,
        session: &McpSessionRecord,
        server: &McpServerRecord,
        method: &str,
        params: Option<Value>,
    ) -> Result<Result<Value, RpcError>> {
        if server.transport == "stdio" {
            return self.stdio_request(session, server, method, params).await;
        }
        let target = self.target(server)?;
        for attempt in 0..2 {
            let pin = self.http_pin(session, server, &target).await?;
            match self
                .upstream
                .request(&target, &pin, method, params.clone())
                .await
            {
                Err(McpError::SessionGone) if attempt == 0 => {
                    self.pins.remove(&(session.id.clone(), server.id.clone()));
                    self.store
                        .unpin_mcp_upstream(&session.id, &server.id, pin.session.as_deref())
                        .await?;
                }
                other => return other,
            }
        }
        Err(McpError::SessionGone)
    }

    /// The upstream session `session` holds with an HTTP server, opened and pinned if none.
    async fn http_pin(
        &self,
        session: &McpSessionRecord,
        server: &McpServerRecord,
        target: &Target,
    ) -> Result<Pinned> {
        let key = (session.id.clone(), server.id.clone());
        if let Some(pin) = self.pins.get(&key) {
            return Ok(pin);
        }
        if let Some(pin) = self.store.mcp_upstream(&session.id, &server.id).await? {
            let pin = pinned(&pin);
            self.pins.put(key, pin.clone());
            return Ok(pin);
        }
        let fresh = self.upstream.initialize(target).await?;
        let stored = self
            .store
            .pin_mcp_upstream(&McpUpstreamSession {
                session_id: session.id.clone(),
                server_id: server.id.clone(),
                upstream_session: fresh.session.clone(),
                protocol_version: fresh.version.clone(),
                created_at: chrono::Utc::now(),
            })
            .await?;
        let stored = pinned(&stored);
        self.pins.put(key, stored.clone());
        if stored != fresh {
            // Another process pinned one first: use it, end ours.
            self.upstream.end(target, &fresh).await;
        }
        Ok(stored)
    }

    /// Ends what `session` holds with `server`: its upstream session, or its stdio process.
    pub(crate) async fn end_upstream(&self, session: &McpSessionRecord, server: &McpServerRecord) {
        let Ok(Some(pin)) = self.store.mcp_upstream(&session.id, &server.id).await else {
            return;
        };
        if server.transport == "stdio" {
            self.stdio.stop_session(&session.id);
        } else if let Ok(target) = self.target(server) {
            self.upstream.end(&target, &pinned(&pin)).await;
        }
    }

    fn me(&self) -> String {
        format!("{STDIO_PIN}{}", self.node_url())
    }

    async fn stdio_request(
        &self,
        session: &McpSessionRecord,
        server: &McpServerRecord,
        method: &str,
        params: Option<Value>,
    ) -> Result<Result<Value, RpcError>> {
        let me = self.me();
        for _ in 0..2 {
            let owner = match self.store.mcp_upstream(&session.id, &server.id).await? {
                Some(pin) => pin.upstream_session.unwrap_or_default(),
                None => self
                    .store
                    .pin_mcp_upstream(&McpUpstreamSession {
                        session_id: session.id.clone(),
                        server_id: server.id.clone(),
                        upstream_session: Some(me.clone()),
                        protocol_version: crate::client::UPSTREAM_VERSION.to_owned(),
                        created_at: chrono::Utc::now(),
                    })
                    .await?
                    .upstream_session
                    .unwrap_or_default(),
            };
            if owner == me {
                return self.stdio_local(&session.id, server, method, params).await;
            }
            let Some(url) = owner.strip_prefix(STDIO_PIN) else {
                return Err(McpError::Internal(format!(
                    "the session's pin for '{}' is not a stdio pin",
                    server.name
                )));
            };
            let forwarded = Forwarded {
                sent_at: chrono::Utc::now().timestamp(),
                session_id: session.id.clone(),
                server_id: server.id.clone(),
                method: method.to_owned(),
                params: params.clone(),
            };
            match self.forward(url, &forwarded).await {
                Ok(answer) => return answer,
                Err(e) => {
                    // That process is gone: its processes died with it; serve the session here.
                    tracing::warn!(owner = url, error = %e, "the Flywheel process running a stdio session is unreachable; taking the session over");
                    self.store
                        .unpin_mcp_upstream(&session.id, &server.id, Some(&owner))
                        .await?;
                }
            }
        }
        Err(McpError::Upstream(format!(
            "the stdio session of '{}' could not be placed; try again",
            server.name
        )))
    }

    async fn stdio_local(
        &self,
        session_id: &str,
        server: &McpServerRecord,
        method: &str,
        params: Option<Value>,
    ) -> Result<Result<Value, RpcError>> {
        let command = self.stdio_command(server)?;
        let process = self
            .stdio
            .process(&server.id, &server.name, session_id, &command)
            .await?;
        let timeout = self.stdio.limits().call_timeout;
        process.request(method, params, timeout).await
    }

    fn stdio_command(&self, server: &McpServerRecord) -> Result<StdioCommand> {
        Ok(StdioCommand {
            program: server
                .command
                .clone()
                .ok_or_else(|| McpError::Internal(format!("'{}' has no command", server.name)))?,
            args: server.args.clone(),
            env: self.env_of(server)?,
        })
    }

    async fn forward(
        &self,
        url: &str,
        forwarded: &Forwarded,
    ) -> std::result::Result<Result<Result<Value, RpcError>>, String> {
        let body = serde_json::to_vec(forwarded).map_err(|e| e.to_string())?;
        let mac = self.sealer.mac(&body);
        let response = self
            .nodes
            .post(format!("{}/internal/mcp/stdio", url.trim_end_matches('/')))
            .header(NODE_AUTH_HEADER, mac)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let answer: ForwardedAnswer = response.json().await.map_err(|e| e.to_string())?;
        Ok(match answer {
            ForwardedAnswer::Result(v) => Ok(Ok(v)),
            ForwardedAnswer::Error(e) => Ok(Err(RpcError(e))),
            ForwardedAnswer::Failure(m) => Err(McpError::Upstream(m)),
        })
    }

    /// Serves a request another Flywheel process forwarded (`body`, authenticated by `mac`).
    /// `Forbidden` if the MAC does not verify.
    pub async fn serve_forwarded(&self, mac: &str, body: &[u8]) -> Result<Value> {
        if !self.sealer.verify_mac(body, mac) {
            return Err(McpError::Forbidden(
                "a forwarded MCP request did not verify; every Flywheel process needs the same secret key".into(),
            ));
        }
        let forwarded: Forwarded = serde_json::from_slice(body)
            .map_err(|e| McpError::invalid("body", format!("not a forwarded request: {e}")))?;
        if (chrono::Utc::now().timestamp() - forwarded.sent_at).abs() > FORWARD_WINDOW_SECS {
            return Err(McpError::Forbidden(
                "a forwarded MCP request is too old (or the clocks of the Flywheel hosts differ by more than a minute)".into(),
            ));
        }
        let server = self.store.mcp_server(&forwarded.server_id).await?;
        let answer = match self
            .stdio_local(
                &forwarded.session_id,
                &server,
                &forwarded.method,
                forwarded.params,
            )
            .await
        {
            Ok(Ok(v)) => ForwardedAnswer::Result(v),
            Ok(Err(RpcError(e))) => ForwardedAnswer::Error(e),
            Err(e) => ForwardedAnswer::Failure(e.to_string()),
        };
        serde_json::to_value(answer).map_err(|e| McpError::Internal(e.to_string()))
    }
}
