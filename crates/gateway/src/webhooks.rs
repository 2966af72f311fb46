//! Budget alert webhooks, delivered off the request path.
//!
//! One worker per process waits for `tenancy::Budgets` to record an event with a webhook (or
//! for its one-second tick), takes each due delivery (`Budgets::claim`, so one process makes
//! each attempt) and POSTs the event's JSON (`wire::budgets::alert_body`) to the budget's URL
//! through the outbound [`mcp::Guard`] (public addresses only unless the operator allows more
//! with `--webhook-allow-hosts`; no redirects, 10 s per attempt). A failed attempt (no
//! connection, or a status other than 2xx) is retried after 1, 2, 4, 8, 16 s, six attempts in
//! all; each outcome is kept on the event (`GET /v1/budget/events`).
//!
//! Signature: `x-flywheel-signature: sha256=HEX`, the HMAC-SHA256 under the tenant's webhook
//! secret of `TIMESTAMP.BODY`, where `TIMESTAMP` is the `x-flywheel-timestamp` header (Unix
//! seconds) and `BODY` the raw request body; a receiver recomputes it and rejects old
//! timestamps to refuse replays.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tenancy::{BudgetEvent, Budgets};

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-flywheel-signature";
/// The header carrying the signed timestamp (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "x-flywheel-timestamp";
/// How long one delivery attempt may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The outbound rules for webhooks, given `--webhook-allow-hosts`.
pub fn guard(allow: mcp::AllowList) -> mcp::Guard {
    mcp::Guard::with_purpose(
        allow,
        ATTEMPT_TIMEOUT,
        mcp::Purpose {
            what: "webhooks",
            flag: "--webhook-allow-hosts",
        },
    )
}

/// `sha256=HEX` of `timestamp.body` under `secret`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// Starts the delivery worker of this process.
pub fn spawn(budgets: Budgets, guard: mcp::Guard) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let wake = budgets.deliveries();
        loop {
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let due = match budgets.due(32).await {
                Ok(due) => due,
                Err(err) => {
                    tracing::warn!(error = %err, "could not read due budget webhooks");
                    continue;
                }
            };
            for event in due {
                match budgets.claim(&event).await {
                    Ok(true) => {
                        let (budgets, guard) = (budgets.clone(), guard.clone());
                        tokio::spawn(async move { deliver(&budgets, &guard, &event).await });
                    }
                    Ok(false) => {}
                    Err(err) => tracing::warn!(error = %err, "could not claim a budget webhook"),
                }
            }
        }
    })
}

async fn deliver(budgets: &Budgets, guard: &mcp::Guard, event: &BudgetEvent) {
    let result = send(budgets, guard, event).await;
    match &result {
        Ok(()) => {
            tracing::info!(event = %event.id, subject = %event.subject, "budget webhook delivered")
        }
        Err(err) => {
            tracing::warn!(event = %event.id, attempt = event.attempts + 1, error = %err, "budget webhook failed")
        }
    }
    if let Err(err) = budgets.finish(&event.id, result).await {
        tracing::warn!(event = %event.id, error = %err, "could not record a budget webhook's outcome");
    }
}

async fn send(budgets: &Budgets, guard: &mcp::Guard, event: &BudgetEvent) -> Result<(), String> {
    let url = event.webhook_url.as_deref().ok_or("no webhook URL")?;
    let secret = budgets
        .webhook_secret(&event.tenant_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the tenant has no webhook secret")?;
    let parsed = guard.check_url(url).map_err(|e| e.to_string())?;
    let client = guard.client(&parsed).map_err(|e| e.to_string())?;
    let body = serde_json::to_vec(&wire::budgets::alert_body(event)).map_err(|e| e.to_string())?;
    let timestamp = chrono::Utc::now().timestamp();
    let response = client
        .post(parsed)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(SIGNATURE_HEADER, signature(&secret, timestamp, &body))
        .header("x-flywheel-event-id", event.id.as_str())
        .body(body)
        .send()
        .await
        .map_err(|e| format!("could not deliver: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!(
            "the receiver answered HTTP {}",
            response.status().as_u16()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently with Python's hmac module:
        // hmac.new(b"whsec_test", b"1700000000.{}", "sha256").hexdigest()).
        assert_eq!(
            signature("whsec_test", 1_700_000_000, b"{}"),
            "sha256=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
        );
    }
}
