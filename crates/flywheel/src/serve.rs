//! `flywheel serve`: start the control plane (`--model`s as pinned deployments, stored
//! deployments restored), build the router, serve until SIGTERM/Ctrl-C, then drain.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use backend::Backend;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::task::TaskTracker;

use crate::config::ServeConfig;

pub fn run(config: ServeConfig) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: ServeConfig) -> Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let admin_key = crate::admin_key::load_or_create(&config.data_dir)?;
    // Before anything slow: a bad certificate is the operator's to fix at once.
    let transport = transport(&config)?;
    let metrics = install_metrics(config.cluster.as_ref().map(|c| c.id.as_str()))?;
    // One database pool (and one migration run) for tenancy, the hub and deployments.
    let store = open_store(&config).await?;
    // The server's secret key seals secrets at rest: MCP servers' headers, model groups' member
    // keys, budget webhooks' signing secrets.
    let sealer = secret_sealer(&config)?;
    let tenancy = open_tenancy(&config, store.clone(), &sealer).await?;
    let settlements = TaskTracker::new();
    let hub = crate::hub_config::open(store.clone(), &config.data_dir, config.hub.clone()).await?;
    let store_for_mcp = store.clone();
    let files = crate::files_config::open(
        store.clone(),
        hub.clone(),
        &config.data_dir,
        config.files.clone(),
    )?;
    let store_for_batch = store.clone();
    let store_for_fine_tuning = store.clone();
    let resolve_base: Arc<gateway::FineTuningResolve> =
        Arc::new(crate::deployments::resolver(hub.clone()));
    // Cancelled at shutdown: trainings stop after their step, batch runners give up their leases.
    let background_stop = tokio_util::sync::CancellationToken::new();
    let (plane, clustered) = match &config.cluster {
        None => (
            Some(crate::deployments::start(&config, &hub.clone(), store).await?),
            None,
        ),
        Some(c) => {
            let clustered = crate::clustered::start(&config, c, &hub, store).await?;
            (clustered.plane.clone(), Some(clustered))
        }
    };

    let mut models: Vec<Arc<dyn Backend>> = Vec::new();
    for up in &config.upstreams {
        let backend = upstream::UpstreamBackend::new(up.clone())
            .map_err(|e| anyhow::anyhow!("upstream '{}': {e}", up.name))?;
        tracing::info!(model = %up.name, base_url = %up.base_url, "serving upstream model");
        models.push(Arc::new(backend));
    }

    let store_for_routing = store_for_mcp.clone();
    let mcp = mcp_gateway(&config, store_for_mcp, tenancy.clone(), sealer.clone())?;
    let (routing, log_writer) = crate::routing::setup(&config, store_for_routing, sealer).await?;
    sweep_mcp_sessions(mcp.clone());
    let console_config = console::ConsoleConfig {
        tls: transport.tls.is_some(),
    };
    let (node_metrics_handle, metrics_open) = (metrics.clone(), config.metrics_open);
    let state = gateway::GatewayState {
        models,
        admin_key,
        tenancy: tenancy.clone(),
        settlements: settlements.clone(),
        hub: Some(hub),
        plane: plane.clone(),
        metrics,
        metrics_open: config.metrics_open,
        max_body_bytes: config.max_body_bytes,
        audio: config.audio,
        webhook_guard: Some(gateway::webhooks::guard(config.webhook_allow_hosts.clone())),
        mcp: Some(mcp.clone()),
        files: Some(files),
        batch: Some(gateway::BatchSetup {
            store: store_for_batch,
            config: config.batch.clone(),
            shutdown: background_stop.clone(),
        }),
        routing: Some(routing),
        fine_tuning: Some(gateway::FineTuningSetup {
            store: store_for_fine_tuning,
            config: config.fine_tuning.clone(),
            resolve: resolve_base,
            shutdown: background_stop.clone(),
        }),
    };
    let internal = clustered.as_ref().and_then(|c| c.internal.clone());
    let app = if plane.is_some() {
        let app = gateway::router_with(state, |app| console::router(app, console_config));
        match internal {
            Some(internal) => app.merge(internal),
            None => app,
        }
    } else {
        // A node agent alone: its internal API, liveness and its metrics (the engine's), no
        // public API.
        let secret = clustered.as_ref().map(|c| c.secret.clone());
        internal
            .unwrap_or_default()
            .route(
                "/health",
                axum::routing::get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
            )
            .route(
                "/metrics",
                axum::routing::get(move |headers: axum::http::HeaderMap| {
                    node_metrics(
                        node_metrics_handle.clone(),
                        metrics_open,
                        secret.clone(),
                        headers,
                    )
                }),
            )
    };
    let limits = connection_limits(&config);
    let listener = crate::http::bind(config.listen).with_context(|| {
        format!(
            "cannot listen on {}; is another server using it?",
            config.listen
        )
    })?;
    let addr = listener.local_addr().context("listener has no address")?;
    // Where other processes forward the requests of stdio sessions this one runs.
    let reachable = if addr.ip().is_unspecified() {
        std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    let scheme = if transport.tls.is_some() {
        "https"
    } else {
        "http"
    };
    mcp.set_node_url(format!("{scheme}://{reachable}"));
    tracing::info!("listening on {scheme}://{addr}");
    eprintln!("flywheel is serving on {scheme}://{addr}");

    let heartbeat = tenancy.ledger.spawn_heartbeat();
    let server = crate::http::Server::start(listener, app, limits, transport);
    shutdown_signal().await;
    tracing::info!("shutting down: no new connections; waiting for running requests");
    // Trainings stop after their current step (their jobs resume at the next start); batch
    // runners start no more lines and give up their leases once their running lines ended.
    background_stop.cancel();
    server.close();
    let drain = Duration::from_secs(config.drain_seconds);
    let drained = tokio::time::timeout(drain, server.closed()).await.is_ok();
    if !drained {
        tracing::warn!(
            "drain timeout of {}s passed; ending the requests still running",
            drain.as_secs()
        );
    }
    // Deployments end what they still run (after the drain, nothing normally) and stop their
    // replicas: every engine thread is joined here, before the process exits.
    let grace = if drained {
        Duration::from_secs(1)
    } else {
        Duration::ZERO
    };
    if let Some(plane) = &plane {
        plane.shutdown_within(grace).await;
    }
    if let Some(clustered) = clustered {
        clustered.stop(grace).await;
    }
    if !drained {
        // The ended streams send their last event and close; what still runs (a stream from
        // an upstream server) is cut. Their meters settle what was delivered.
        if tokio::time::timeout(Duration::from_secs(2), server.closed())
            .await
            .is_err()
        {
            server.abort();
            server.closed().await;
        }
    }
    // Interrupted requests settle in the background; give them a moment to land. Whatever
    // does not is settled from its progress marks by the next process to start.
    settlements.close();
    if tokio::time::timeout(Duration::from_secs(10), settlements.wait())
        .await
        .is_err()
    {
        tracing::warn!("some settlements did not finish; the next start recovers them");
    }
    // The settled requests' log rows are queued by now; write them before leaving.
    if let Some(writer) = log_writer {
        if !writer.flush(Duration::from_secs(5)).await {
            tracing::warn!("the request log's last rows were not written within 5 s");
        }
    }
    heartbeat.abort();
    tracing::info!("stopped");
    Ok(())
}

/// The configured connection limits, with the open-file limit raised as far as allowed and
/// the total cap lowered to fit under it.
fn connection_limits(config: &ServeConfig) -> crate::http::ConnectionLimits {
    let mut limits = config.connections;
    let files = crate::http::raise_open_files_limit();
    let fitting = crate::http::ConnectionLimits::fitting(files);
    if limits.max_connections > fitting {
        tracing::info!(
            configured = limits.max_connections,
            open_file_limit = files,
            max_connections = fitting,
            "--max-connections lowered to fit the open-file limit (raise it with ulimit -n)"
        );
        limits.max_connections = fitting;
    }
    tracing::info!(
        max_connections = limits.max_connections,
        per_address = limits.max_connections_per_address,
        header_read_timeout_s = limits.header_read_timeout.as_secs(),
        idle_timeout_s = limits.idle_timeout.as_secs(),
        "connection limits"
    );
    limits
}

/// TLS (reloaded on SIGHUP) when configured, and the trusted proxies.
fn transport(config: &ServeConfig) -> Result<crate::http::Transport> {
    let tls = match &config.tls {
        None => None,
        Some(files) => {
            let tls = Arc::new(crate::http::tls::Tls::load(files.clone()).map_err(|e| {
                anyhow::anyhow!(
                    "{e}. Check the files, or leave out --tls-cert/--tls-key for plain HTTP"
                )
            })?);
            #[cfg(unix)]
            crate::http::tls::reload_on_hangup(tls.clone())
                .context("cannot listen for SIGHUP (certificate reloads)")?;
            Some(tls)
        }
    };
    if !config.trusted_proxies.is_empty() {
        tracing::info!(proxies = ?config.trusted_proxies, "X-Forwarded-For is trusted from these proxies");
    }
    Ok(crate::http::Transport {
        tls,
        proxies: Arc::new(config.trusted_proxies.clone()),
    })
}

/// Opens the database at `--database-url`, migrating it.
async fn open_store(config: &ServeConfig) -> Result<Arc<dyn store::Store>> {
    let shown = redact_password(&config.database_url);
    let store = store::open(&config.database_url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the database {shown}: {e}. Check --database-url (sqlite://PATH or postgres://USER@HOST/DB) and that the server is reachable"))?;
    tracing::info!(database = %shown, kind = store.kind(), "database ready");
    Ok(store)
}

/// The tenancy domain over `store`, after settling or releasing the reservations of processes
/// that died.
async fn open_tenancy(
    config: &ServeConfig,
    store: Arc<dyn store::Store>,
    sealer: &mcp::Sealer,
) -> Result<tenancy::Tenancy> {
    let sealed = tenancy::reseal_webhook_secrets(store.as_ref(), sealer, false)
        .await
        .map_err(|e| anyhow::anyhow!("cannot seal the budget webhooks' secrets: {e}"))?;
    if sealed > 0 {
        tracing::info!(
            sealed,
            "sealed budget webhook secrets stored before sealing existed"
        );
    }
    let tenancy = tenancy::Tenancy::new(store, Arc::new(tenancy::SystemClock), &config.tenancy)
        .map_err(|e| anyhow::anyhow!("tenancy settings: {e}"))?
        .with_secret_seal(Arc::new(sealer.clone()));
    let recovery = tenancy
        .ledger
        .recover()
        .await
        .map_err(|e| anyhow::anyhow!("cannot recover interrupted requests: {e}"))?;
    if !recovery.settled.is_empty() || !recovery.released.is_empty() {
        tracing::info!(
            settled = recovery.settled.len(),
            released = recovery.released.len(),
            "recovered the reservations of processes that stopped"
        );
    }
    sweep_responses(tenancy.responses.clone(), config.responses_retention);
    sweep_console_sessions(tenancy.members.clone());
    Ok(tenancy)
}

/// The server's secret key, from `FLYWHEEL_SECRET_KEY` or `DATA_DIR/secret.key` (created on
/// first start; every process of a cluster needs the same one).
fn secret_sealer(config: &ServeConfig) -> Result<mcp::Sealer> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let env = std::env::var("FLYWHEEL_SECRET_KEY").ok();
    let key = mcp::SecretKey::load(env.as_deref(), &config.data_dir.join("secret.key"))
        .map_err(|e| anyhow::anyhow!("the secret key for secrets at rest: {e}"))?;
    Ok(mcp::Sealer::new(key, None))
}

/// The MCP gateway, its servers' secrets sealed by `sealer`.
fn mcp_gateway(
    config: &ServeConfig,
    store: Arc<dyn store::Store>,
    tenancy: tenancy::Tenancy,
    sealer: mcp::Sealer,
) -> Result<Arc<mcp::Mcp>> {
    let options = mcp::McpOptions {
        guard: mcp::Guard::new(config.mcp_allow_hosts.clone(), config.mcp_call_timeout),
        stdio_root: config.data_dir.join("mcp"),
        stdio: mcp::StdioLimits {
            call_timeout: config.mcp_call_timeout,
            ..mcp::StdioLimits::default()
        },
    };
    Ok(mcp::Mcp::new(store, tenancy, sealer, options))
}

/// Deletes MCP client sessions idle for a day, now and every hour.
fn sweep_mcp_sessions(mcp: Arc<mcp::Mcp>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            match mcp.sweep_sessions(Duration::from_secs(86_400)).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "deleted idle MCP sessions"),
                Err(err) => tracing::warn!(error = %err, "could not sweep MCP sessions"),
            }
        }
    });
}

/// Deletes stored responses older than `retention`, now and every hour.
fn sweep_responses(responses: tenancy::Responses, retention: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            match responses.sweep(retention).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "deleted stored responses past retention"),
                Err(err) => tracing::warn!(error = %err, "could not sweep stored responses"),
            }
        }
    });
}

/// Ends console sessions idle past their limit (revoking their playground keys) and forgets
/// old failed sign-ins and ended sessions, now and every five minutes.
fn sweep_console_sessions(members: tenancy::Members) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(300));
        loop {
            tick.tick().await;
            match members.sweep().await {
                Ok((0, 0, 0)) => {}
                Ok((ended, failures, deleted)) => tracing::info!(
                    ended,
                    failures,
                    deleted,
                    "swept console sessions and failed sign-ins"
                ),
                Err(err) => tracing::warn!(error = %err, "could not sweep console sessions"),
            }
        }
    });
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`, for logs and errors.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

/// A lone node's `GET /metrics`: open with `--metrics-open`, else for the cluster secret (what
/// gateways send; a Prometheus scrape job sends it as its bearer token).
async fn node_metrics(
    handle: PrometheusHandle,
    open: bool,
    secret: Option<cluster::ClusterSecret>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if open || secret.is_some_and(|s| s.accepts(auth)) {
        return handle.render().into_response();
    }
    let body = serde_json::json!({"error": {
        "message": "A node's /metrics needs the cluster secret as a bearer token (FLYWHEEL_CLUSTER_SECRET), or start the node with --metrics-open.",
        "type": "authentication_error",
        "code": "invalid_api_key",
    }});
    (axum::http::StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
}

/// The Prometheus recorder. In a cluster every series carries `node="<member id>"`, so the
/// scrapes of many processes add up without colliding.
fn install_metrics(node: Option<&str>) -> Result<PrometheusHandle> {
    const LATENCY: &[f64] = &[
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    let mut builder = PrometheusBuilder::new();
    if let Some(node) = node {
        builder = builder.add_global_label("node", node);
    }
    for name in engine::metrics::HISTOGRAMS
        .iter()
        .chain(&[gateway::metrics::HTTP_DURATION])
    {
        builder = builder
            .set_buckets_for_metric(Matcher::Full((*name).to_owned()), LATENCY)
            .context("bad histogram buckets")?;
    }
    let handle = builder
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}
