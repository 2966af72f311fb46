//! The engine's Prometheus metrics, labelled by served model (never by tenant).

use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

pub const TOKENS_GENERATED: &str = "flywheel_tokens_generated_total";
pub const PROMPT_TOKENS: &str = "flywheel_prompt_tokens_total";
pub const PROMPT_TOKENS_CACHED: &str = "flywheel_prompt_tokens_cached_total";
pub const REQUESTS_FINISHED: &str = "flywheel_engine_requests_finished_total";
pub const REQUESTS_CANCELLED: &str = "flywheel_engine_requests_cancelled_total";
pub const REQUESTS_REJECTED: &str = "flywheel_engine_requests_rejected_total";
pub const QUEUE_LENGTH: &str = "flywheel_queue_length";
pub const RUNNING_SEQUENCES: &str = "flywheel_running_sequences";
pub const KV_CELLS_USED: &str = "flywheel_kv_cells_used";
pub const KV_CELLS_KEPT: &str = "flywheel_kv_cells_kept";
pub const TTFT: &str = "flywheel_time_to_first_token_seconds";
pub const ITL: &str = "flywheel_inter_token_latency_seconds";
pub const STEP_SECONDS: &str = "flywheel_decode_step_seconds";
pub const STEP_TOKENS: &str = "flywheel_decode_step_tokens";
/// Batch sequences pre-empted (their slot given to interactive work; they resume later).
pub const PREEMPTIONS: &str = "flywheel_engine_preemptions_total";
/// Slots held by batch sequences.
pub const BATCH_RUNNING: &str = "flywheel_batch_sequences_running";
/// Batch sequences waiting for a slot (pre-empted ones included).
pub const BATCH_QUEUED: &str = "flywheel_batch_queue_length";

/// Histogram metric names (the binary gives them buckets so they render as histograms).
pub const HISTOGRAMS: &[&str] = &[TTFT, ITL, STEP_SECONDS];

/// Handles for one model, created once so the hot loop does not build label sets.
pub struct ModelMetrics {
    model: String,
    tokens: Counter,
    prompt: Counter,
    cached: Counter,
    finished: Counter,
    cancelled: Counter,
    rejected: Counter,
    preemptions: Counter,
    batch_running: Gauge,
    batch_queued: Gauge,
    queue: Gauge,
    running: Gauge,
    kv_used: Gauge,
    kv_kept: Gauge,
    ttft: Histogram,
    itl: Histogram,
    step_secs: Histogram,
    step_tokens: Histogram,
}

impl ModelMetrics {
    pub fn new(model: &str) -> Self {
        let l = || [("model", model.to_owned())];
        Self {
            model: model.to_owned(),
            tokens: counter!(TOKENS_GENERATED, &l()),
            prompt: counter!(PROMPT_TOKENS, &l()),
            cached: counter!(PROMPT_TOKENS_CACHED, &l()),
            finished: counter!(REQUESTS_FINISHED, &l()),
            cancelled: counter!(REQUESTS_CANCELLED, &l()),
            rejected: counter!(REQUESTS_REJECTED, &l()),
            preemptions: counter!(PREEMPTIONS, &l()),
            batch_running: gauge!(BATCH_RUNNING, &l()),
            batch_queued: gauge!(BATCH_QUEUED, &l()),
            queue: gauge!(QUEUE_LENGTH, &l()),
            running: gauge!(RUNNING_SEQUENCES, &l()),
            kv_used: gauge!(KV_CELLS_USED, &l()),
            kv_kept: gauge!(KV_CELLS_KEPT, &l()),
            ttft: histogram!(TTFT, &l()),
            itl: histogram!(ITL, &l()),
            step_secs: histogram!(STEP_SECONDS, &l()),
            step_tokens: histogram!(STEP_TOKENS, &l()),
        }
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn admitted(&self, prompt: usize, reused: usize) {
        self.prompt.increment(prompt as u64);
        self.cached.increment(reused as u64);
    }

    pub fn generated(&self) {
        self.tokens.increment(1);
    }

    pub fn first_token(&self, d: Duration) {
        self.ttft.record(d.as_secs_f64());
    }

    pub fn next_token(&self, d: Duration) {
        self.itl.record(d.as_secs_f64());
    }

    pub fn step(&self, tokens: usize, d: Duration) {
        self.step_secs.record(d.as_secs_f64());
        self.step_tokens.record(tokens as f64);
    }

    pub fn finished(&self) {
        self.finished.increment(1);
    }

    pub fn cancelled(&self) {
        self.cancelled.increment(1);
    }

    pub fn rejected(&self) {
        self.rejected.increment(1);
    }

    pub fn preempted(&self) {
        self.preemptions.increment(1);
    }

    pub fn batch_gauges(&self, queued: usize, running: usize) {
        self.batch_queued.set(queued as f64);
        self.batch_running.set(running as f64);
    }

    pub fn gauges(&self, queued: usize, running: usize, kv_used: usize, kv_kept: usize) {
        self.queue.set(queued as f64);
        self.running.set(running as f64);
        self.kv_used.set(kv_used as f64);
        self.kv_kept.set(kv_kept as f64);
    }
}
