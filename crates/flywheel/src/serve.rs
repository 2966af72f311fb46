//! `flywheel serve`: load the models, build the router, serve until SIGTERM/Ctrl-C, then drain.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use backend::Backend;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::Notify;

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
    let metrics = install_metrics()?;

    let mut models: Vec<Arc<dyn Backend>> = Vec::new();
    for spec in &config.models {
        let (path, name, opts) = (spec.path.clone(), spec.name.clone(), config.engine.clone());
        tracing::info!(model = %name, path = %path.display(), "loading model");
        let engine =
            tokio::task::spawn_blocking(move || engine::Engine::start(&path, &name, &opts))
                .await
                .context("model loading task failed")?
                .with_context(|| format!("cannot serve model '{}'", spec.name))?;
        models.push(Arc::new(engine));
    }
    for up in &config.upstreams {
        let backend = gateway::upstream::UpstreamBackend::new(up.clone())
            .map_err(|e| anyhow::anyhow!("upstream '{}': {e}", up.name))?;
        tracing::info!(model = %up.name, base_url = %up.base_url, "serving upstream model");
        models.push(Arc::new(backend));
    }

    let app = gateway::router(gateway::GatewayState {
        models,
        admin_key,
        metrics,
        metrics_open: config.metrics_open,
        max_body_bytes: config.max_body_bytes,
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}; is another server using it?",
                config.listen
            )
        })?;
    let addr = listener.local_addr().context("listener has no address")?;
    tracing::info!("listening on http://{addr}");
    eprintln!("flywheel is serving on http://{addr}");

    let stop = Arc::new(Notify::new());
    let signalled = stop.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: no new connections; waiting for running requests");
        signalled.notify_waiters();
    });
    let drain = Duration::from_secs(config.drain_seconds);
    let deadline = async {
        stop.notified().await;
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        result = server => result.context("server error")?,
        () = deadline => tracing::warn!("drain timeout of {}s passed; exiting with requests still running", drain.as_secs()),
    }
    tracing::info!("stopped");
    Ok(())
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

fn install_metrics() -> Result<PrometheusHandle> {
    const LATENCY: &[f64] = &[
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    let mut builder = PrometheusBuilder::new();
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
