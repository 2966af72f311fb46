//! The control plane's Prometheus metrics, labelled by deployment (the served name), never by
//! tenant.

use metrics::{counter, gauge};

pub const QUEUE_LENGTH: &str = "flywheel_deployment_queue_length";
pub const IN_FLIGHT: &str = "flywheel_deployment_in_flight";
pub const REPLICAS: &str = "flywheel_deployment_replicas";
pub const SCALE_DECISIONS: &str = "flywheel_deployment_scale_decisions_total";
pub const QUEUE_TIMEOUTS: &str = "flywheel_deployment_queue_timeouts_total";
pub const QUEUE_REJECTIONS: &str = "flywheel_deployment_queue_rejections_total";
/// Batch requests waiting (they are also in the queue length).
pub const BATCH_QUEUE_LENGTH: &str = "flywheel_deployment_batch_queue_length";
/// Batch requests on replicas, running or pre-empted there (also in the in-flight count).
pub const BATCH_IN_FLIGHT: &str = "flywheel_deployment_batch_in_flight";

pub(crate) fn queue(deployment: &str, queued: usize, in_flight: usize) {
    gauge!(QUEUE_LENGTH, "deployment" => deployment.to_owned()).set(queued as f64);
    gauge!(IN_FLIGHT, "deployment" => deployment.to_owned()).set(in_flight as f64);
}

pub(crate) fn batch(deployment: &str, queued: usize, in_flight: usize) {
    gauge!(BATCH_QUEUE_LENGTH, "deployment" => deployment.to_owned()).set(queued as f64);
    gauge!(BATCH_IN_FLIGHT, "deployment" => deployment.to_owned()).set(in_flight as f64);
}

pub(crate) fn replicas(deployment: &str, loading: usize, ready: usize, draining: usize) {
    for (state, n) in [
        ("loading", loading),
        ("ready", ready),
        ("draining", draining),
    ] {
        gauge!(REPLICAS, "deployment" => deployment.to_owned(), "state" => state).set(n as f64);
    }
}

pub(crate) fn scale(deployment: &str, up: bool) {
    let direction = if up { "up" } else { "down" };
    counter!(SCALE_DECISIONS, "deployment" => deployment.to_owned(), "direction" => direction)
        .increment(1);
}

pub(crate) fn timeout(deployment: &str) {
    counter!(QUEUE_TIMEOUTS, "deployment" => deployment.to_owned()).increment(1);
}

pub(crate) fn rejection(deployment: &str) {
    counter!(QUEUE_REJECTIONS, "deployment" => deployment.to_owned()).increment(1);
}
