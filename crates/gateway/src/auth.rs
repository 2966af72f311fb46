//! Who is calling, resolved by extractors before a handler runs, so a handler cannot forget
//! to check.
//!
//! Until tenancy lands, [`Caller`] accepts any or no key on `/v1/*`; the tenancy work replaces
//! its body with a key lookup (and the handlers keep their signatures).

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};

use crate::error::{ApiError, Code};
use crate::AppState;

/// The bearer token of a request, if it sent one.
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Compares without an early exit on the first differing byte.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The caller of an inference route.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The presented API key, unverified for now.
    pub api_key: Option<String>,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        Ok(Caller {
            api_key: bearer(parts).map(str::to_string),
        })
    }
}

/// Access to `GET /metrics`: the admin key, unless metrics are configured open.
#[derive(Debug, Clone, Copy)]
pub struct MetricsReader;

impl FromRequestParts<AppState> for MetricsReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.metrics_open() {
            return Ok(MetricsReader);
        }
        match bearer(parts) {
            Some(key) if same_secret(key, state.admin_key()) => Ok(MetricsReader),
            Some(_) => Err(ApiError::new(
                Code::InvalidApiKey,
                "Incorrect API key provided. /metrics needs the admin key.",
            )),
            None => Err(ApiError::new(
                Code::InvalidApiKey,
                "You didn't provide an API key. /metrics needs the admin key in an 'Authorization: Bearer KEY' header.",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_value() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
    }
}
