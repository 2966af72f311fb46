//! MCP servers as a response's `mcp` tools use them (OpenAI's Responses API): a server the
//! caller registered or was granted, named by its label, reached through the key's own
//! session (the one a stateless `/mcp` client of the same key shares, so a stateful server
//! sees one session per key); or a server the request names by URL, checked against the
//! outbound rules like a registration, with one upstream session for the response that is
//! ended when it is done. Calls are metered and audited like `/mcp` calls.

use serde_json::Value;
use store::{McpServerRecord, McpSessionRecord};
use tokio::sync::Mutex;

use crate::client::{all_pages, Pinned, RpcError, Target};
use crate::endpoint::{call_params, code, McpCaller};
use crate::error::{McpError, Result};
use crate::meter::{Called, Metered};
use crate::Mcp;

/// Which server a response's `mcp` tool names.
#[derive(Debug, Clone)]
pub struct HostedSpec {
    /// `server_label`: a registered server's name when there is no URL.
    pub label: String,
    pub url: Option<String>,
    /// Headers for a server named by URL (`headers`, `authorization`).
    pub headers: Vec<(String, String)>,
}

/// One server, open for one response.
pub struct Hosted {
    label: String,
    via: Via,
}

enum Via {
    Registered {
        server: Box<McpServerRecord>,
        session: McpSessionRecord,
    },
    Remote {
        target: Target,
        called: Called,
        /// The upstream session, opened on first use.
        pinned: Mutex<Option<Pinned>>,
    },
}

impl Hosted {
    pub fn label(&self) -> &str {
        &self.label
    }
}

impl Mcp {
    /// Opens the server `spec` names for `caller`: a registered one it sees (by name) or a URL
    /// the outbound rules allow.
    pub async fn hosted(&self, caller: &McpCaller, spec: HostedSpec) -> Result<Hosted> {
        let HostedSpec {
            label,
            url,
            headers,
        } = spec;
        let via = match url {
            None => {
                let server = self
                    .visible_servers(caller)
                    .await?
                    .into_iter()
                    .find(|s| s.name == label)
                    .ok_or_else(|| {
                        McpError::NotFound(format!(
                            "no MCP server named '{label}' is registered for this key (GET /v1/mcp/servers lists them); name a registered server or give a 'server_url'"
                        ))
                    })?;
                let session = self.implicit_session(caller).await?;
                Via::Registered {
                    server: Box::new(server),
                    session,
                }
            }
            Some(url) => {
                let url = self.upstream.guard().check_url(&url)?;
                let called = Called {
                    id: format!("url:{}", url.host_str().unwrap_or_default()),
                    name: label.clone(),
                };
                Via::Remote {
                    target: Target {
                        name: label.clone(),
                        url,
                        headers,
                    },
                    called,
                    pinned: Mutex::new(None),
                }
            }
        };
        Ok(Hosted { label, via })
    }

    /// The tools `hosted` offers (a registered server's `allowed_tools` applied).
    pub async fn hosted_tools(&self, hosted: &Hosted) -> Result<Vec<Value>> {
        match &hosted.via {
            Via::Registered { server, session } => self.healthy_tools(session, server).await,
            Via::Remote { target, .. } => {
                all_pages("tools", |params| async move {
                    let page = self
                        .remote(hosted, "tools/list", params)
                        .await?
                        .map_err(|e| e.refused(&target.name, "tools/list"))?;
                    Ok(Some(page))
                })
                .await
            }
        }
    }

    /// Calls `tool` on `hosted` for `caller`, metered and audited: the tool's result (which may
    /// report an error itself, `isError`) or a JSON-RPC error `(code, message)`.
    pub async fn hosted_call(
        &self,
        caller: &McpCaller,
        hosted: &Hosted,
        tool: &str,
        arguments: Value,
    ) -> std::result::Result<Value, (i64, String)> {
        match &hosted.via {
            Via::Registered { server, session } => {
                if let Some(allowed) = &server.allowed_tools {
                    if !allowed.iter().any(|a| a == tool) {
                        return Err((
                            code::INVALID_PARAMS,
                            format!("the MCP server '{}' does not offer '{tool}'", server.name),
                        ));
                    }
                }
                self.call_on(caller, session, server, tool, Some(arguments))
                    .await
            }
            Via::Remote { called, .. } => {
                let metered = Metered::start(
                    self,
                    caller.principal.as_ref(),
                    called,
                    tool,
                    Some(&arguments),
                )
                .await?;
                let answer = self
                    .remote(
                        hosted,
                        "tools/call",
                        Some(call_params(tool, Some(arguments))),
                    )
                    .await;
                metered.settle(answer).await
            }
        }
    }

    /// Ends what `hosted` opened for the response (a URL server's session).
    pub async fn hosted_close(&self, hosted: Hosted) {
        if let Via::Remote { target, pinned, .. } = hosted.via {
            if let Some(pinned) = pinned.into_inner() {
                self.upstream.end(&target, &pinned).await;
            }
        }
    }

    /// One request to a URL server in the response's session (opened on first use, opened
    /// again once if the server ended it).
    async fn remote(
        &self,
        hosted: &Hosted,
        method: &str,
        params: Option<Value>,
    ) -> Result<std::result::Result<Value, RpcError>> {
        let Via::Remote { target, pinned, .. } = &hosted.via else {
            return Err(McpError::Internal("not a URL server".into()));
        };
        let mut pinned = pinned.lock().await;
        for attempt in 0..2 {
            let current = match pinned.as_ref() {
                Some(p) => p.clone(),
                None => {
                    let fresh = self.upstream.initialize(target).await?;
                    *pinned = Some(fresh.clone());
                    fresh
                }
            };
            match self
                .upstream
                .request(target, &current, method, params.clone())
                .await
            {
                Err(McpError::SessionGone) if attempt == 0 => *pinned = None,
                other => return other,
            }
        }
        Err(McpError::SessionGone)
    }
}
