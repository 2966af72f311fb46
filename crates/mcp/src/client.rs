//! The client side: JSON-RPC over MCP's Streamable HTTP transport to a registered server, with
//! the session a client session pinned. Written on reqwest rather than `rmcp`'s client: the
//! gateway must continue an upstream session another process opened (rmcp's transport owns
//! its session id and cannot be handed one), and it forwards results as they are, unknown
//! fields of newer revisions included, where a typed model would drop them.

use std::sync::atomic::{AtomicU64, Ordering};

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt, TryStreamExt};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use serde_json::{json, Value};
use url::Url;

use crate::error::McpError;
use crate::guard::Guard;

/// The revision the gateway speaks to servers.
pub const UPSTREAM_VERSION: &str = "2025-11-25";
/// The most a server's answer to one request may be.
pub const MAX_RESPONSE_BYTES: usize = 8 << 20;
const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

/// Where and how to reach one server.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's registered name, for messages.
    pub name: String,
    pub url: Url,
    /// Headers sent with every request (opened secrets).
    pub headers: Vec<(String, String)>,
}

/// A session held with a server: its id (`None` for a server that keeps none) and revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    pub session: Option<String>,
    pub version: String,
}

/// A JSON-RPC error object a server answered with.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError(pub Value);

impl RpcError {
    /// The server's message.
    pub fn message(&self) -> &str {
        self.0
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("no message")
    }

    /// The error of a request the gateway itself needed (`what`: "initialize", "tools/list").
    pub fn refused(self, server: &str, what: &str) -> McpError {
        McpError::Upstream(format!(
            "the MCP server '{server}' refused {what}: {}",
            self.message()
        ))
    }
}

/// Talks to servers through the guard's clients.
pub struct Upstream {
    guard: Guard,
    next_id: AtomicU64,
}

impl Upstream {
    pub fn new(guard: Guard) -> Self {
        Self {
            guard,
            next_id: AtomicU64::new(1),
        }
    }

    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// `initialize` and `notifications/initialized`: a new session with the server.
    pub async fn initialize(&self, target: &Target) -> Result<Pinned, McpError> {
        let params = json!({
            "protocolVersion": UPSTREAM_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "flywheel", "version": env!("CARGO_PKG_VERSION")},
        });
        let none = Pinned {
            session: None,
            version: UPSTREAM_VERSION.to_owned(),
        };
        let (answer, session) = self
            .exchange(target, &none, "initialize", Some(params), true)
            .await?;
        let result = answer.map_err(|e| e.refused(&target.name, "initialize"))?;
        let version = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(UPSTREAM_VERSION)
            .to_owned();
        let pinned = Pinned { session, version };
        let _accepted = self
            .exchange(target, &pinned, "notifications/initialized", None, false)
            .await?;
        Ok(pinned)
    }

    /// One request in the pinned session: the server's result or its JSON-RPC error.
    /// `SessionGone` if the server no longer knows the session (HTTP 404).
    pub async fn request(
        &self,
        target: &Target,
        pinned: &Pinned,
        method: &str,
        params: Option<Value>,
    ) -> Result<Result<Value, RpcError>, McpError> {
        self.exchange(target, pinned, method, params, true)
            .await
            .map(|(answer, _)| answer)
    }

    /// Ends a session (HTTP DELETE); servers may refuse, which changes nothing.
    pub async fn end(&self, target: &Target, pinned: &Pinned) {
        let Some(session) = &pinned.session else {
            return;
        };
        let Ok(client) = self.guard.client(&target.url) else {
            return;
        };
        let Ok(mut headers) = self.headers(target, pinned) else {
            return;
        };
        if let Ok(v) = HeaderValue::from_str(session) {
            headers.insert(SESSION_HEADER, v);
        }
        let _ = client
            .delete(target.url.clone())
            .headers(headers)
            .send()
            .await;
    }

    fn headers(&self, target: &Target, pinned: &Pinned) -> Result<HeaderMap, McpError> {
        let mut headers = HeaderMap::new();
        for (name, value) in &target.headers {
            let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) else {
                return Err(McpError::Upstream(format!(
                    "the MCP server '{}' has a header that is not valid HTTP; update it with PATCH /v1/mcp/servers/{}",
                    target.name, target.name
                )));
            };
            headers.insert(n, v);
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        if let Ok(v) = HeaderValue::from_str(&pinned.version) {
            headers.insert(VERSION_HEADER, v);
        }
        Ok(headers)
    }

    async fn exchange(
        &self,
        target: &Target,
        pinned: &Pinned,
        method: &str,
        params: Option<Value>,
        expects_answer: bool,
    ) -> Result<(Result<Value, RpcError>, Option<String>), McpError> {
        let client = self.guard.client(&target.url)?;
        let mut headers = self.headers(target, pinned)?;
        if let Some(session) = &pinned.session {
            let v = HeaderValue::from_str(session).map_err(|_| {
                McpError::Upstream(format!(
                    "the MCP server '{}' gave a session id that is not a valid header",
                    target.name
                ))
            })?;
            headers.insert(SESSION_HEADER, v);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut message = json!({"jsonrpc": "2.0", "method": method});
        if expects_answer {
            message["id"] = json!(id);
        }
        if let Some(p) = params {
            message["params"] = p;
        }
        let unreachable = |e: reqwest::Error| {
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why = format!("{why}: {s}");
                source = s.source();
            }
            McpError::Upstream(format!(
                "the MCP server '{}' could not be reached: {why}",
                target.name
            ))
        };
        let response = client
            .post(target.url.clone())
            .headers(headers)
            .json(&message)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let session = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if status.is_redirection() {
            return Err(McpError::Upstream(format!(
                "the MCP server '{}' redirected ({status}); redirects are not followed: register the final URL",
                target.name
            )));
        }
        if status == reqwest::StatusCode::NOT_FOUND && pinned.session.is_some() {
            return Err(McpError::SessionGone);
        }
        if !status.is_success() {
            let body = bounded_text(response).await.unwrap_or_default();
            return Err(McpError::Upstream(format!(
                "the MCP server '{}' answered {method} with HTTP {status}: {}",
                target.name,
                body.chars().take(300).collect::<String>()
            )));
        }
        if !expects_answer {
            return Ok((Ok(Value::Null), session));
        }
        let is_sse = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        let answer = if is_sse {
            let events = bounded(response.bytes_stream()).eventsource();
            futures::pin_mut!(events);
            let mut found = None;
            while let Some(event) = events.next().await {
                let event = event.map_err(|e| {
                    McpError::Upstream(format!(
                        "the MCP server '{}' sent a broken event stream: {e}",
                        target.name
                    ))
                })?;
                let Ok(v) = serde_json::from_str::<Value>(&event.data) else {
                    continue;
                };
                if v.get("id") == Some(&json!(id)) && v.get("method").is_none() {
                    found = Some(v);
                    break;
                }
            }
            found.ok_or_else(|| {
                McpError::Upstream(format!(
                    "the MCP server '{}' ended its event stream without answering {method}",
                    target.name
                ))
            })?
        } else {
            let text = bounded_text(response).await.map_err(|e| {
                McpError::Upstream(format!("the MCP server '{}': {e}", target.name))
            })?;
            serde_json::from_str(&text).map_err(|e| {
                McpError::Upstream(format!(
                    "the MCP server '{}' answered {method} with something that is not JSON: {e}",
                    target.name
                ))
            })?
        };
        Ok((split_answer(answer, &target.name, method)?, session))
    }
}

fn split_answer(
    answer: Value,
    server: &str,
    method: &str,
) -> Result<Result<Value, RpcError>, McpError> {
    match answer {
        Value::Object(mut o) => {
            if let Some(e) = o.remove("error") {
                return Ok(Err(RpcError(e)));
            }
            o.remove("result").map(Ok).ok_or_else(|| {
                McpError::Upstream(format!(
                    "the MCP server '{server}' answered {method} with neither result nor error"
                ))
            })
        }
        _ => Err(McpError::Upstream(format!(
            "the MCP server '{server}' answered {method} with something that is not a JSON-RPC response"
        ))),
    }
}

/// A response body as a stream that fails past [`MAX_RESPONSE_BYTES`].
fn bounded(
    body: impl Stream<Item = reqwest::Result<bytes::Bytes>>,
) -> impl Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    let mut seen = 0usize;
    body.map_err(std::io::Error::other).and_then(move |chunk| {
        seen += chunk.len();
        let over = seen > MAX_RESPONSE_BYTES;
        async move {
            if over {
                Err(std::io::Error::other(format!(
                    "the answer is larger than {} MiB",
                    MAX_RESPONSE_BYTES >> 20
                )))
            } else {
                Ok(chunk)
            }
        }
    })
}

async fn bounded_text(response: reqwest::Response) -> Result<String, std::io::Error> {
    let mut body = Vec::new();
    let stream = bounded(response.bytes_stream());
    futures::pin_mut!(stream);
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk?);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Pages of one list followed at most.
const MAX_PAGES: usize = 20;

/// Every item under `key` of a paginated list (`tools/list`, `prompts/list`, …): `fetch` asks
/// for one page (the cursor of the next, `None` for the first) and gives its result, or
/// `None` to stop with what was gathered (a server that does not offer the list).
pub(crate) async fn all_pages<F, Fut>(key: &str, mut fetch: F) -> Result<Vec<Value>, McpError>
where
    F: FnMut(Option<Value>) -> Fut,
    Fut: std::future::Future<Output = Result<Option<Value>, McpError>>,
{
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let params = cursor.as_ref().map(|c| json!({ "cursor": c }));
        let Some(page) = fetch(params).await? else {
            break;
        };
        if let Some(found) = page.get(key).and_then(Value::as_array) {
            items.extend(found.iter().cloned());
        }
        cursor = page
            .get("nextCursor")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    Ok(items)
}
