//! Model groups and the request log at start: the stored groups opened with the server's
//! secret key, the log's writer started (flushed by the caller at shutdown), and its rows past
//! retention swept hourly.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::config::ServeConfig;

/// The status a refusal is answered with, as the wire maps it.
fn status_of(err: &serving::ServeError) -> u16 {
    gateway::wire::error::ApiError::from_serve(err.clone(), "messages")
        .status()
        .as_u16()
}

pub async fn setup(
    config: &ServeConfig,
    store: Arc<dyn store::Store>,
    sealer: mcp::Sealer,
) -> Result<(gateway::RoutingSetup, Option<serving::LogWriter>)> {
    let groups = gateway::load_groups(&store, &sealer)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the stored model groups: {e}"))?;
    if !groups.is_empty() {
        tracing::info!(groups = groups.len(), "serving stored model groups");
    }
    let (logs, writer) = if config.request_log_buffer > 0 {
        let (logs, writer) =
            serving::RequestLogs::start(store.clone(), config.request_log_buffer, status_of);
        (Some(logs), Some(writer))
    } else {
        (None, None)
    };
    sweep(store.clone(), config.request_log_retention);
    let setup = gateway::RoutingSetup {
        store,
        sealer,
        groups,
        logs,
        reload_every: Some(Duration::from_secs(5)),
    };
    Ok((setup, writer))
}

/// Deletes request log rows older than `retention`, now and every hour.
fn sweep(store: Arc<dyn store::Store>, retention: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            let Ok(age) = chrono::Duration::from_std(retention) else {
                return;
            };
            match store.sweep_request_logs(chrono::Utc::now() - age).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "deleted request log rows past retention"),
                Err(err) => tracing::warn!(error = %err, "could not sweep the request log"),
            }
        }
    });
}
