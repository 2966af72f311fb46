//! The gateway's one error type and the one table that maps each error code to an HTTP status,
//! an OpenAI error `type` and a stable `code`.
//!
//! Every error leaves the server in OpenAI's shape
//! `{"error": {"message", "type", "code", "param"}}`; every 429 and 503 carries `Retry-After`.

use axum_core::response::{IntoResponse, Response};
use backend::{BackendError, UpstreamError};
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// Seconds a client is told to wait when no better estimate is known.
const DEFAULT_RETRY_AFTER: u64 = 1;
/// Seconds a client is told to wait when this process is draining.
const SHUTTING_DOWN_RETRY_AFTER: u64 = 5;

/// Declares [`Code`] and [`Code::ALL`] from one list, so the tests over every code cannot miss
/// one.
macro_rules! codes {
    ($($name:ident),* $(,)?) => {
        /// Stable error codes. Adding one means adding one row to [`Code::row`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Code {
            $($name),*
        }

        impl Code {
            /// Every code, in declaration order.
            pub const ALL: &'static [Code] = &[$(Code::$name),*];
        }
    };
}

codes!(
    InvalidRequest,
    ContextLengthExceeded,
    InvalidApiKey,
    InsufficientQuota,
    BudgetExceeded,
    PermissionDenied,
    ModelNotFound,
    NotFound,
    Conflict,
    InsufficientCapacity,
    MethodNotAllowed,
    RequestTooLarge,
    RateLimitExceeded,
    TokenLimitExceeded,
    ServerOverloaded,
    Internal,
    UpstreamUnreachable,
    ExternalConnector,
    QueueTimeout,
    ModelUnavailable,
    ShuttingDown,
);

/// What one code means on the wire.
struct Row {
    status: StatusCode,
    r#type: &'static str,
    code: &'static str,
}

/// OpenAI's error `type`s.
const INVALID: &str = "invalid_request_error";
const SERVER: &str = "server_error";

impl Code {
    /// The one status table: code → (HTTP status, OpenAI `type`, wire `code`).
    #[rustfmt::skip]
    fn row(self) -> Row {
        use StatusCode as S;
        let (status, r#type, code) = match self {
            Code::InvalidRequest        => (S::BAD_REQUEST,           INVALID,              "invalid_request_error"),
            Code::ContextLengthExceeded => (S::BAD_REQUEST,           INVALID,              "context_length_exceeded"),
            Code::InvalidApiKey         => (S::UNAUTHORIZED,          INVALID,              "invalid_api_key"),
            Code::InsufficientQuota     => (S::PAYMENT_REQUIRED,      "insufficient_quota", "insufficient_quota"),
            Code::BudgetExceeded        => (S::PAYMENT_REQUIRED,      "insufficient_quota", "budget_exceeded"),
            Code::PermissionDenied      => (S::FORBIDDEN,             INVALID,              "permission_denied"),
            Code::ModelNotFound         => (S::NOT_FOUND,             INVALID,              "model_not_found"),
            Code::NotFound              => (S::NOT_FOUND,             INVALID,              "not_found"),
            Code::Conflict              => (S::CONFLICT,              INVALID,              "conflict"),
            Code::InsufficientCapacity  => (S::CONFLICT,              INVALID,              "insufficient_capacity"),
            Code::MethodNotAllowed      => (S::METHOD_NOT_ALLOWED,    INVALID,              "method_not_allowed"),
            Code::RequestTooLarge       => (S::PAYLOAD_TOO_LARGE,     INVALID,              "request_too_large"),
            Code::RateLimitExceeded     => (S::TOO_MANY_REQUESTS,     "requests",           "rate_limit_exceeded"),
            Code::TokenLimitExceeded    => (S::TOO_MANY_REQUESTS,     "tokens",             "token_limit_exceeded"),
            Code::ServerOverloaded      => (S::TOO_MANY_REQUESTS,     SERVER,               "server_overloaded"),
            Code::Internal              => (S::INTERNAL_SERVER_ERROR, SERVER,               "internal_error"),
            Code::UpstreamUnreachable   => (S::BAD_GATEWAY,           SERVER,               "upstream_unreachable"),
            Code::ExternalConnector     => (S::FAILED_DEPENDENCY,     "external_connector_error", "mcp_server_error"),
            Code::QueueTimeout          => (S::SERVICE_UNAVAILABLE,   SERVER,               "queue_timeout"),
            Code::ModelUnavailable      => (S::SERVICE_UNAVAILABLE,   SERVER,               "model_unavailable"),
            Code::ShuttingDown          => (S::SERVICE_UNAVAILABLE,   SERVER,               "shutting_down"),
        };
        Row { status, r#type, code }
    }
}

/// An error on its way to the client.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    kind: Kind,
    message: String,
    param: Option<String>,
    retry_after: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Ours(Code),
    /// An upstream server's error, passed through with its own status, type and code.
    Upstream {
        status: StatusCode,
        r#type: Option<String>,
        code: Option<String>,
    },
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            kind: Kind::Ours(code),
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    /// A 400 `invalid_request_error` naming the offending parameter.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Code::InvalidRequest, message).with_param(param)
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// Renames the parameter an error names (the APIs name the same field differently).
    pub fn map_param(mut self, rename: impl Fn(&str) -> Option<String>) -> Self {
        if let Some(renamed) = self.param.as_deref().and_then(rename) {
            self.param = Some(renamed);
        }
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Maps a backend's refusal; `prompt_param` names the request field holding the prompt
    /// (`messages` or `prompt`).
    pub fn from_backend(err: BackendError, prompt_param: &str) -> Self {
        let message = err.to_string();
        match err {
            BackendError::ContextLengthExceeded { .. } => {
                Self::new(Code::ContextLengthExceeded, message).with_param(prompt_param)
            }
            BackendError::InvalidPrompt(_) => {
                Self::new(Code::InvalidRequest, message).with_param(prompt_param)
            }
            BackendError::ToolsUnsupported(_) => {
                Self::new(Code::InvalidRequest, message).with_param("tools")
            }
            BackendError::UnsupportedSchema { site, .. } => {
                let param = match site {
                    backend::SchemaSite::Tool(i) => format!("tools[{i}].function.parameters"),
                    backend::SchemaSite::Format => "response_format.json_schema.schema".into(),
                };
                Self::new(Code::InvalidRequest, message).with_param(param)
            }
            BackendError::InvalidRequest { field, .. } => Self {
                param: field.map(|field| param_of(field).into()),
                ..Self::new(Code::InvalidRequest, message)
            },
            BackendError::Overloaded { retry_after, .. } => {
                Self::new(Code::ServerOverloaded, message).with_retry_after(retry_after)
            }
            BackendError::QueueShareExceeded { retry_after, .. } => {
                Self::new(Code::RateLimitExceeded, message).with_retry_after(retry_after)
            }
            BackendError::QueueTimeout { retry_after, .. } => {
                Self::new(Code::QueueTimeout, message).with_retry_after(retry_after)
            }
            BackendError::Upstream(upstream) => Self::from_upstream(upstream),
            BackendError::Unreachable(_) => Self::new(Code::UpstreamUnreachable, message),
            BackendError::ShuttingDown => {
                Self::new(Code::ShuttingDown, message).with_retry_after(SHUTTING_DOWN_RETRY_AFTER)
            }
            BackendError::Unavailable(_) => Self::new(Code::ModelUnavailable, message),
            BackendError::Internal(_) => Self::new(Code::Internal, message),
        }
    }

    /// Maps a serving-layer refusal; `prompt_param` names the request field holding the
    /// prompt (`messages` or `prompt`).
    pub fn from_serve(err: serving::ServeError, prompt_param: &str) -> Self {
        use serving::ServeError as E;
        let message = err.to_string();
        match err {
            E::ModelNotFound { .. } => Self::new(Code::ModelNotFound, message).with_param("model"),
            E::PromptTooLong { .. } => {
                Self::new(Code::ContextLengthExceeded, message).with_param(prompt_param)
            }
            E::Tenancy(err) => Self::from_tenancy(err),
            E::Backend(err) => Self::from_backend(err, prompt_param),
            E::Audio(_) => Self::invalid("file", message),
        }
    }

    /// Maps a tenancy refusal (auth, quota, limits, admin input) by its stable code.
    pub fn from_tenancy(err: tenancy::Error) -> Self {
        use tenancy::Error as E;
        let message = err.to_string();
        match err {
            E::InvalidApiKey => Self::new(Code::InvalidApiKey, message),
            E::InsufficientQuota { .. } => Self::new(Code::InsufficientQuota, message),
            E::BudgetExceeded { .. } => Self::new(Code::BudgetExceeded, message),
            E::PermissionDenied { .. } => Self::new(Code::PermissionDenied, message),
            E::RateLimited {
                retry_after_secs, ..
            } => Self::new(Code::RateLimitExceeded, message).with_retry_after(retry_after_secs),
            E::NotFound { .. } => Self::new(Code::NotFound, message),
            E::Conflict { .. } => Self::new(Code::Conflict, message),
            E::ExceedsTokenLimit { .. } => {
                Self::invalid("max_tokens", format!("{message}; lower max_tokens"))
            }
            E::Invalid { param, .. } => Self {
                param,
                ..Self::new(Code::InvalidRequest, message)
            },
            E::Internal => Self::new(
                Code::Internal,
                "The server could not reach its database; try again, and tell the operator if \
                 it persists.",
            ),
        }
    }

    /// Maps a control-plane refusal (deployment admin routes).
    pub fn from_control(err: control::Error) -> Self {
        use control::Error as E;
        let message = err.to_string();
        match err {
            E::InvalidSpec { field, .. } => Self::invalid(field, message),
            E::NotFound(_) => Self::new(
                Code::NotFound,
                format!("{message}; list them with GET /admin/v1/deployments"),
            ),
            E::AlreadyExists(_) => Self::new(
                Code::Conflict,
                format!("{message}; PATCH it or DELETE it first"),
            ),
            E::NoRoom(_) => Self::new(Code::InsufficientCapacity, message),
            // Admin calls only size replicas (they start in the background), so a launch error
            // here is a model SPEC that does not resolve to a file.
            E::Model(_) | E::Launch(_) => Self::invalid("model", message),
            E::Store(_) => Self::new(Code::Internal, message),
            E::Stopped(_) => {
                Self::new(Code::ShuttingDown, message).with_retry_after(SHUTTING_DOWN_RETRY_AFTER)
            }
        }
    }

    fn from_upstream(err: UpstreamError) -> Self {
        let status = StatusCode::from_u16(err.status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())
            .unwrap_or(StatusCode::BAD_GATEWAY);
        Self {
            kind: Kind::Upstream {
                status,
                r#type: err.r#type,
                code: err.code,
            },
            message: err.message,
            param: err.param,
            retry_after: err.retry_after,
        }
    }

    pub fn status(&self) -> StatusCode {
        match &self.kind {
            Kind::Ours(code) => code.row().status,
            Kind::Upstream { status, .. } => *status,
        }
    }

    /// `Retry-After` seconds, present exactly when the status is 429 or 503.
    pub fn retry_after(&self) -> Option<u64> {
        let needs = matches!(
            self.status(),
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        );
        needs.then(|| self.retry_after.unwrap_or(DEFAULT_RETRY_AFTER))
    }

    /// The `{"error": {...}}` body.
    pub fn body(&self) -> ErrorBody<'_> {
        let (r#type, code) = match &self.kind {
            Kind::Ours(code) => {
                let row = code.row();
                (Some(row.r#type), Some(row.code))
            }
            Kind::Upstream {
                status,
                r#type,
                code,
            } => {
                let fallback = if status.is_server_error() {
                    SERVER
                } else {
                    INVALID
                };
                (Some(r#type.as_deref().unwrap_or(fallback)), code.as_deref())
            }
        };
        ErrorBody {
            error: ErrorView {
                message: &self.message,
                r#type,
                code,
                param: self.param.as_deref(),
            },
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The request parameter the error names, if any.
    pub fn param(&self) -> Option<&str> {
        self.param.as_deref()
    }

    /// The stable code string, for logs and metrics.
    pub fn code_str(&self) -> &str {
        match &self.kind {
            Kind::Ours(code) => code.row().code,
            Kind::Upstream { code, .. } => code.as_deref().unwrap_or("upstream_error"),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorView<'a>,
}

#[derive(Debug, Serialize)]
pub struct ErrorView<'a> {
    pub message: &'a str,
    #[serde(rename = "type")]
    pub r#type: Option<&'a str>,
    pub code: Option<&'a str>,
    pub param: Option<&'a str>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code_str())
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// This error as a response with `body` (the shape of the API it came in on), its status
    /// and `Retry-After`.
    pub fn respond_with(&self, body: impl Serialize) -> Response {
        let json = HeaderValue::from_static("application/json");
        let mut response = match serde_json::to_vec(&body) {
            Ok(bytes) => (self.status(), [(header::CONTENT_TYPE, json)], bytes).into_response(),
            // An error body is plain data; this is never reached.
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        };
        if let Some(seconds) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl IntoResponse for ApiError {
    /// OpenAI's shape. The error rides along in the response's extensions, so a route whose
    /// API has another shape (Anthropic's) can rewrite every error it answers with, those of
    /// extractors (auth, body limits) included.
    fn into_response(self) -> Response {
        let mut response = self.respond_with(self.body());
        response.extensions_mut().insert(self);
        response
    }
}

/// The parameter of OpenAI's APIs that holds a domain request's `field` (routes of other
/// APIs rename what they call otherwise, [`ApiError::map_param`]).
pub fn param_of(field: backend::Field) -> &'static str {
    use backend::Field as F;
    match field {
        F::Model => "model",
        F::Input => "input",
        F::Dimensions => "dimensions",
        F::Language => "language",
        F::Choices => "n",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_429_and_503_has_retry_after() {
        for &code in Code::ALL {
            let err = ApiError::new(code, "x");
            let status = err.status().as_u16();
            assert_eq!(
                err.retry_after().is_some(),
                status == 429 || status == 503,
                "{code:?}"
            );
        }
    }

    #[test]
    fn every_code_has_its_own_wire_code() {
        let mut seen = std::collections::HashSet::new();
        for &code in Code::ALL {
            assert!(seen.insert(code.row().code), "{code:?} reuses a wire code");
        }
        assert_eq!(seen.len(), Code::ALL.len());
    }

    #[test]
    fn upstream_errors_pass_through() {
        let err = ApiError::from_backend(
            BackendError::Upstream(UpstreamError {
                status: 429,
                message: "slow down".into(),
                r#type: Some("requests".into()),
                code: Some("rate_limit_exceeded".into()),
                param: None,
                retry_after: Some(7),
            }),
            "messages",
        );
        assert_eq!(err.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(err.retry_after(), Some(7));
        let body = serde_json::to_value(err.body()).unwrap_or_default();
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        assert_eq!(body["error"]["type"], "requests");
    }

    #[test]
    fn nonsense_upstream_status_becomes_502() {
        let err = ApiError::from_upstream(UpstreamError {
            status: 200,
            message: "?".into(),
            r#type: None,
            code: None,
            param: None,
            retry_after: None,
        });
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
    }
}
