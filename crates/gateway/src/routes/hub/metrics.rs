//! The hub's Prometheus metrics, labelled by route class (never by repository or tenant).

pub const REQUESTS: &str = "flywheel_hub_requests_total";
pub const BYTES_SERVED: &str = "flywheel_hub_bytes_served_total";
pub const DOWNLOADS: &str = "flywheel_hub_downloads_total";
pub const UPLOAD_BYTES: &str = "flywheel_hub_upload_bytes_total";
pub const UPLOADS: &str = "flywheel_hub_uploads_total";
pub const COMMITS: &str = "flywheel_hub_commits_total";

pub fn describe() {
    metrics::describe_counter!(REQUESTS, "Hub requests, by route class, method and status.");
    metrics::describe_counter!(
        BYTES_SERVED,
        metrics::Unit::Bytes,
        "File bytes sent by hub downloads, by route class."
    );
    metrics::describe_counter!(
        DOWNLOADS,
        "File bodies sent (GET, not HEAD), by route class and whether they resumed (Range start > 0)."
    );
    metrics::describe_counter!(
        UPLOAD_BYTES,
        metrics::Unit::Bytes,
        "Bytes received by uploads."
    );
    metrics::describe_counter!(UPLOADS, "Finished uploads, by outcome (stored, rejected).");
    metrics::describe_counter!(COMMITS, "Revisions created.");
}

/// The class of a matched hub route.
pub fn route_class(path: &str) -> &'static str {
    if path.contains("/resolve/") {
        "hf_resolve"
    } else if path.starts_with("/api/models") {
        "hf_api"
    } else if path.ends_with("/repo") {
        "ms_file"
    } else if path.starts_with("/api/v1/models") {
        "ms_api"
    } else if path.contains("/uploads") {
        "upload"
    } else if path.contains("/commits/") || path.ends_with("/tags") {
        "commit"
    } else {
        "repo_admin"
    }
}

pub fn record_request(class: &'static str, method: &str, status: u16) {
    metrics::counter!(REQUESTS, "route" => class, "method" => method.to_owned(), "status" => status.to_string())
        .increment(1);
}

pub fn record_bytes(route: &'static str, n: usize) {
    metrics::counter!(BYTES_SERVED, "route" => route).increment(n as u64);
}

pub fn record_download(route: &'static str, resumed: bool) {
    metrics::counter!(DOWNLOADS, "route" => route, "resumed" => if resumed { "true" } else { "false" })
        .increment(1);
}

pub fn record_upload_bytes(n: i64) {
    metrics::counter!(UPLOAD_BYTES).increment(u64::try_from(n).unwrap_or(0));
}

pub fn record_upload(outcome: &'static str) {
    metrics::counter!(UPLOADS, "outcome" => outcome).increment(1);
}

pub fn record_commit() {
    metrics::counter!(COMMITS).increment(1);
}
