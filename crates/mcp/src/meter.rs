//! Tool calls as ledger events: a call is counted toward the key's and tenant's RPM, its price
//! is reserved before it is made (`tenancy::Ledger::reserve_call`), charged when the tool
//! answers, released when the call fails or the tool reports an error; every call, made or
//! refused, is written to the audit log.

use std::time::Instant;

use serde_json::Value;
use store::{McpCallRecord, McpServerRecord};

use crate::client::RpcError;
use tenancy::Principal;

use crate::Mcp;

use crate::endpoint::code;

/// A refusal of the account or a limit, as a JSON-RPC error: `(code, message)`.
pub(crate) type Refused = (i64, String);

/// The server a call goes to, as the price book and the audit log name it: a registered
/// server's id and name, or a URL a response named (`url:<host>`, under its label).
#[derive(Debug, Clone)]
pub(crate) struct Called {
    pub id: String,
    pub name: String,
}

impl From<&McpServerRecord> for Called {
    fn from(server: &McpServerRecord) -> Self {
        Self {
            id: server.id.clone(),
            name: server.name.clone(),
        }
    }
}

/// One metered call, from its reservation to its audit row.
pub(crate) struct Metered<'a> {
    mcp: &'a Mcp,
    principal: Option<&'a Principal>,
    server: &'a Called,
    tool: String,
    id: String,
    started: Instant,
    started_at: chrono::DateTime<chrono::Utc>,
    /// The arguments, where the tenant opted in to keeping them.
    arguments: Option<String>,
    /// A reservation may be held (it is asked for, or was made).
    reserved: bool,
    /// Settled (or released) and audited: nothing left for `drop`.
    finished: bool,
}

/// Longest arguments kept in an audit row; longer ones are cut (and say so).
const MAX_AUDITED_ARGUMENTS: usize = 16 * 1024;

/// Arguments as an audit row keeps them: JSON, at most [`MAX_AUDITED_ARGUMENTS`] bytes.
fn audited(arguments: &serde_json::Value) -> String {
    let text = arguments.to_string();
    if text.len() <= MAX_AUDITED_ARGUMENTS {
        return text;
    }
    let mut end = MAX_AUDITED_ARGUMENTS;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (cut at {MAX_AUDITED_ARGUMENTS} bytes)", &text[..end])
}

impl<'a> Metered<'a> {
    /// Counts the call toward RPM and reserves its price; a refusal is audited and returned.
    pub(crate) async fn start(
        mcp: &'a Mcp,
        principal: Option<&'a Principal>,
        server: &'a Called,
        tool: &str,
        arguments: Option<&serde_json::Value>,
    ) -> Result<Metered<'a>, Refused> {
        let tenancy = &mcp.tenancy;
        let keep = match (principal, arguments) {
            (Some(p), Some(_)) => mcp.audits_arguments(&p.tenant.id).await,
            _ => false,
        };
        let call = Metered {
            mcp,
            principal,
            server,
            tool: tool.to_owned(),
            id: crate::new_id("mcpc_"),
            started: Instant::now(),
            started_at: chrono::Utc::now(),
            arguments: arguments.filter(|_| keep).map(audited),
            reserved: false,
            finished: false,
        };
        let Some(p) = principal else {
            return Ok(call);
        };
        let mut call = call;
        // From here a dropped call releases what it may hold (the release queues behind the
        // reservation on the same writer, so it never comes first).
        call.reserved = true;
        let admitted = async {
            tenancy
                .limits
                .admit_request(Some(&p.key), &p.tenant)
                .await?;
            tenancy
                .ledger
                .reserve_call(&call.id, &p.tenant.id, Some(&p.key.id), &server.id)
                .await
        };
        match admitted.await {
            Ok(_) => Ok(call),
            Err(e) => {
                call.reserved = false;
                call.finished = true;
                let refused = refusal(&e);
                call.audit("refused", Some(refused.1.clone()), 0).await;
                Err(refused)
            }
        }
    }

    /// Charges the call (the tool answered) or releases it (`error`: the call failed or the
    /// tool reported an error), and audits it: both in one write.
    async fn finish(mut self, outcome: &str, error: Option<String>) {
        self.finished = true;
        let record = self.record(outcome, error, 0);
        if self.principal.is_some() {
            let ledger = &self.mcp.tenancy.ledger;
            match ledger.close_call(outcome == "ok", record.clone()).await {
                Ok(_) => return,
                // Not settled here: lease recovery will. The audit row is still written.
                Err(e) => {
                    tracing::error!(call = %self.id, error = %e, "could not settle an MCP call; lease recovery will")
                }
            }
        }
        self.write_audit(&record).await;
    }

    /// Settles the call after the server's answer: a result (charged unless the tool reported
    /// an error, `isError`) or the JSON-RPC error the caller gets.
    pub(crate) async fn settle(
        self,
        answer: crate::Result<Result<Value, RpcError>>,
    ) -> Result<Value, (i64, String)> {
        match answer {
            Ok(Ok(value)) => {
                if value.get("isError").and_then(Value::as_bool) == Some(true) {
                    self.finish("tool_error", Some(tool_error_text(&value)))
                        .await;
                } else {
                    self.finish("ok", None).await;
                }
                Ok(value)
            }
            Ok(Err(RpcError(e))) => {
                let message = format!(
                    "the MCP server '{}': {}",
                    self.server.name,
                    e.get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("error without a message")
                );
                self.finish("failed", Some(message.clone())).await;
                let code = e.get("code").and_then(Value::as_i64);
                Err((code.unwrap_or(code::UPSTREAM), message))
            }
            Err(e) => {
                self.finish("failed", Some(e.to_string())).await;
                Err((code::UPSTREAM, e.to_string()))
            }
        }
    }

    async fn audit(&self, outcome: &str, error: Option<String>, charged: i64) {
        self.write_audit(&self.record(outcome, error, charged))
            .await;
    }

    async fn write_audit(&self, record: &McpCallRecord) {
        if let Err(e) = self.mcp.store.record_mcp_call(record).await {
            tracing::error!(call = %self.id, error = %e, "could not write an MCP call's audit row");
        }
    }

    fn record(&self, outcome: &str, error: Option<String>, charged: i64) -> McpCallRecord {
        McpCallRecord {
            id: self.id.clone(),
            tenant_id: self.principal.map(|p| p.tenant.id.clone()),
            key_prefix: self.principal.map(|p| p.key.prefix.clone()),
            server_id: self.server.id.clone(),
            server_name: self.server.name.clone(),
            tool: self.tool.clone(),
            started_at: self.started_at,
            duration_ms: i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX),
            outcome: outcome.to_owned(),
            error: error.map(|e| e.chars().take(1000).collect()),
            charged,
            arguments: self.arguments.clone(),
        }
    }
}

/// A call dropped before it finished (its caller went away: a cancelled request, a closed
/// stream): its reservation is released and the audit log says so, off the dropped task, so
/// no price stays held.
impl Drop for Metered<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(call = %self.id, "no runtime to release a dropped MCP call");
            return;
        };
        let ledger = self.reserved.then(|| self.mcp.tenancy.ledger.clone());
        let store = self.mcp.store.clone();
        let record = self.record(
            "failed",
            Some("the caller went away before the tool answered; the call was released".into()),
            0,
        );
        runtime.spawn(async move {
            if let Some(ledger) = ledger {
                if let Err(e) = ledger.cancel(&record.id).await {
                    tracing::error!(call = %record.id, error = %e, "could not release a dropped MCP call");
                }
            }
            if let Err(e) = store.record_mcp_call(&record).await {
                tracing::error!(call = %record.id, error = %e, "could not write an MCP call's audit row");
            }
        });
    }
}

/// The text a tool that reported an error gave, for the audit log.
fn tool_error_text(result: &Value) -> String {
    result
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The JSON-RPC error of a call the account or a limit refused; the message names which.
fn refusal(e: &tenancy::Error) -> Refused {
    let message = match e {
        tenancy::Error::InsufficientQuota { .. } => "insufficient_quota: the balance left cannot pay this tool call's price; top up the account to make paid tool calls".to_owned(),
        tenancy::Error::RateLimited {
            retry_after_secs, ..
        } => format!("rate_limit_exceeded: {e}; retry after {retry_after_secs} s"),
        _ => format!("{}: {e}", e.code()),
    };
    (code::REFUSED, message)
}
