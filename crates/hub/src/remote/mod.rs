//! The client side: downloading a repository over the Hugging Face or ModelScope protocol
//! (from the real hubs, or from another Flywheel), resuming with `Range` and checking hashes
//! ([`source`]); and Flywheel's own upload API, for `push` ([`upload`]).

pub mod source;
pub mod upload;

use std::time::Duration;

use crate::error::{HubError, Result};

pub use source::{RemoteFile, Snapshot, Source};
pub use upload::FlywheelClient;

/// An HTTP client with connect/read timeouts suited to large downloads.
pub fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(300))
        .user_agent(concat!("flywheel/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| HubError::Remote(format!("cannot build an HTTP client: {e}")))
}

/// Percent-encodes a repository path for a URL, keeping `/` between segments.
pub fn encode_path(path: &str) -> String {
    path.split('/')
        .map(encode_component)
        .collect::<Vec<_>>()
        .join("/")
}

/// Percent-encodes one URL component (RFC 3986 unreserved characters stay).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Turns a non-success response into an error that says what the server said.
pub(crate) async fn check(response: reqwest::Response, what: &str) -> Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let code = response
        .headers()
        .get("x-error-code")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // An error page is read only so far: enough to quote it.
    let body = source::read_bounded(response, 64 << 10)
        .await
        .ok()
        .flatten()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.pointer("/error"))
                .or_else(|| v.pointer("/Message"))
                .and_then(|m| m.as_str().map(str::to_owned))
        })
        .unwrap_or_else(|| body.chars().take(300).collect());
    let hint = match status.as_u16() {
        401 => " (check the API key)",
        403 => " (the key may lack a scope, or the org is not yours)",
        404 => " (check the repository name and revision, and the key if it is private)",
        _ => "",
    };
    Err(HubError::Remote(format!(
        "{what}: HTTP {status}{}: {message}{hint}",
        code.map(|c| format!(" {c}")).unwrap_or_default()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_paths() {
        assert_eq!(encode_path("a b/c%d.gguf"), "a%20b/c%25d.gguf");
        assert_eq!(encode_component("refs/pr/1"), "refs%2Fpr%2F1");
    }
}
