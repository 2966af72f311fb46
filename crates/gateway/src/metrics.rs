//! The gateway's Prometheus metrics. Labelled by endpoint and served model, never by tenant.

use std::time::Instant;

use backend::Usage;

pub const HTTP_REQUESTS: &str = "flywheel_http_requests_total";
pub const HTTP_DURATION: &str = "flywheel_http_request_duration_seconds";
pub const PROMPT_TOKENS: &str = "flywheel_usage_prompt_tokens_total";
pub const COMPLETION_TOKENS: &str = "flywheel_usage_completion_tokens_total";
pub const CACHED_TOKENS: &str = "flywheel_usage_cached_tokens_total";
pub const REQUEST_LOGS_DROPPED: &str = "flywheel_request_logs_dropped_total";
pub const REQUEST_LOGS_WRITTEN: &str = "flywheel_request_logs_written_total";

/// Registers help texts with whatever recorder is installed.
pub fn describe() {
    metrics::describe_counter!(
        REQUEST_LOGS_DROPPED,
        "Request log rows dropped: the writer's channel was full or a batch could not be written."
    );
    metrics::describe_counter!(REQUEST_LOGS_WRITTEN, "Request log rows written.");
    metrics::describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by endpoint, model and status."
    );
    metrics::describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "Time from request to the end of the response body (streams included), by endpoint."
    );
    metrics::describe_counter!(
        PROMPT_TOKENS,
        "Prompt tokens of finished generations, by model."
    );
    metrics::describe_counter!(
        COMPLETION_TOKENS,
        "Generated tokens of finished generations, by model."
    );
    metrics::describe_counter!(
        CACHED_TOKENS,
        "Prompt tokens served from reused KV instead of recomputed, by model."
    );
}

/// The served model a response was for, attached as a response extension by the handlers so
/// the middleware can label by it. Only set for models that exist (bounded cardinality).
#[derive(Debug, Clone)]
pub struct ModelLabel(pub String);

pub fn record_request(endpoint: &str, model: &str, status: u16) {
    metrics::counter!(
        HTTP_REQUESTS,
        "endpoint" => endpoint.to_string(),
        "model" => model.to_string(),
        "status" => status.to_string()
    )
    .increment(1);
}

pub fn record_usage(model: &str, usage: Usage) {
    let model = model.to_string();
    metrics::counter!(PROMPT_TOKENS, "model" => model.clone())
        .increment(u64::from(usage.prompt_tokens));
    metrics::counter!(COMPLETION_TOKENS, "model" => model.clone())
        .increment(u64::from(usage.completion_tokens));
    metrics::counter!(CACHED_TOKENS, "model" => model).increment(u64::from(usage.cached_tokens));
}

/// Records the request duration when dropped: at the end of a response, or of its streamed body.
pub struct DurationTimer {
    endpoint: String,
    start: Instant,
}

impl DurationTimer {
    pub fn new(endpoint: String, start: Instant) -> Self {
        Self { endpoint, start }
    }
}

impl Drop for DurationTimer {
    fn drop(&mut self) {
        metrics::histogram!(HTTP_DURATION, "endpoint" => std::mem::take(&mut self.endpoint))
            .record(self.start.elapsed().as_secs_f64());
    }
}
