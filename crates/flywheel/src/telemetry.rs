//! Logs and traces: the log lines on stderr (`RUST_LOG`), and with `--otlp-endpoint` the
//! request spans exported as OpenTelemetry traces over OTLP/HTTP (protobuf). Spans are
//! batched and exported from the SDK's own thread, never on a request's path; a collector
//! that is down costs dropped spans (logged by the SDK), not latency.

use anyhow::{Context, Result};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The installed exporters; [`Telemetry::shutdown`] flushes the spans still buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(err) = provider.shutdown() {
                eprintln!("warning: could not flush the last traces: {err}");
            }
        }
    }
}

/// The OTLP traces URL for `--otlp-endpoint`: a collector's base URL gets `/v1/traces`.
pub fn traces_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    if trimmed.ends_with("/v1/traces") {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/v1/traces")
    }
}

/// Installs the global subscriber: logs always, traces when `otlp_endpoint` is set. Call it
/// before any async runtime starts (the exporter's blocking HTTP client must not be built
/// inside one).
pub fn init(otlp_endpoint: Option<&str>) -> Result<Telemetry> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,llama-cpp-2=warn,llama_cpp_2=warn".into());
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let Some(endpoint) = otlp_endpoint else {
        tracing_subscriber::registry()
            .with(filter)
            .with(logs)
            .try_init()
            .context("cannot install the log subscriber")?;
        return Ok(Telemetry { provider: None });
    };
    let url = traces_url(endpoint);
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .with_timeout(std::time::Duration::from_secs(10))
        .build()
        .with_context(|| format!("--otlp-endpoint {endpoint}: cannot build the OTLP exporter"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("flywheel").build())
        .build();
    let tracer = provider.tracer("flywheel");
    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init()
        .context("cannot install the log subscriber")?;
    tracing::info!(endpoint = %url, "exporting traces over OTLP/HTTP");
    Ok(Telemetry {
        provider: Some(provider),
    })
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn a_base_url_gets_the_traces_path() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }
}
