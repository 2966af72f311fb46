//! Tool calls as ledger events: a call is counted toward the key's and tenant's RPM, its price
//! is reserved before it is made (`tenancy::Ledger::reserve_call`), charged when the tool
//! answers, released when the call fails or the tool reports an error; every call, made or
//! refused, is written to the audit log.

use std::time::Instant;

use store::{McpCallRecord, McpServerRecord};
use tenancy::Principal;

use crate::Mcp;

use crate::endpoint::code;

/// A refusal of the account or a limit, as a JSON-RPC error: `(code, message)`.
pub(crate) type Refused = (i64, String);

/// One metered call, from its reservation to its audit row.
pub(crate) struct Metered<'a> {
    mcp: &'a Mcp,
    principal: Option<&'a Principal>,
    server: &'a McpServerRecord,
    tool: String,
    id: String,
    started: Instant,
    started_at: chrono::DateTime<chrono::Utc>,
}

impl<'a> Metered<'a> {
    /// Counts the call toward RPM and reserves its price; a refusal is audited and returned.
    pub(crate) async fn start(
        mcp: &'a Mcp,
        principal: Option<&'a Principal>,
        server: &'a McpServerRecord,
        tool: &str,
    ) -> Result<Metered<'a>, Refused> {
        let tenancy = &mcp.tenancy;
        let call = Metered {
            mcp,
            principal,
            server,
            tool: tool.to_owned(),
            id: crate::new_id("mcpc_"),
            started: Instant::now(),
            started_at: chrono::Utc::now(),
        };
        let Some(p) = principal else {
            return Ok(call);
        };
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
                let refused = refusal(&e);
                call.audit("refused", Some(refused.1.clone()), 0).await;
                Err(refused)
            }
        }
    }

    /// Charges the call (the tool answered) or releases it (`error`: the call failed or the
    /// tool reported an error), and audits it.
    pub(crate) async fn finish(self, outcome: &str, error: Option<String>) {
        let mut charged = 0;
        if self.principal.is_some() {
            let settled = if outcome == "ok" {
                self.mcp.tenancy.ledger.settle_call(&self.id).await
            } else {
                self.mcp.tenancy.ledger.cancel(&self.id).await
            };
            match settled {
                Ok(s) => charged = s.charged.amount,
                Err(e) => {
                    tracing::error!(call = %self.id, error = %e, "could not settle an MCP call; lease recovery will")
                }
            }
        }
        self.audit(outcome, error, charged).await;
    }

    async fn audit(&self, outcome: &str, error: Option<String>, charged: i64) {
        let record = McpCallRecord {
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
        };
        if let Err(e) = self.mcp.store.record_mcp_call(&record).await {
            tracing::error!(call = %self.id, error = %e, "could not write an MCP call's audit row");
        }
    }
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
