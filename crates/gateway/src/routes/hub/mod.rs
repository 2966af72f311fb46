//! The model hub over HTTP: the Hugging Face download protocol (`hf`), ModelScope's
//! (`modelscope`) and Flywheel's upload API (`upload`), over [`hub::Hub`].
//!
//! Errors keep OpenAI's shape and status table, and also carry the `X-Error-Code` /
//! `X-Error-Message` headers `huggingface_hub` reads to raise the right exception
//! (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`). A private repository that the
//! caller may not see is a 404 like a missing one.

pub(crate) mod files;
mod hf;
pub mod metrics;
mod modelscope;
pub(crate) mod range;
mod upload;

use axum::extract::{FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use hub::{Access, ErrorKind, HubError};
use tenancy::Scope;

use crate::auth::{Caller, MaybeCaller};
use crate::error::{ApiError, Code};
use crate::AppState;

/// The hub's routes; merged into [`crate::router`].
pub fn router() -> Router<AppState> {
    metrics::describe();
    Router::new()
        .route("/api/models", get(hf::list_models))
        .route("/api/models/{org}/{name}", get(hf::model_info))
        .route(
            "/api/models/{org}/{name}/revision/{rev}",
            get(hf::model_info_at),
        )
        .route("/api/models/{org}/{name}/tree/{rev}", get(hf::tree_root))
        .route(
            "/api/models/{org}/{name}/tree/{rev}/{*path}",
            get(hf::tree_at),
        )
        .route(
            "/{org}/{name}/resolve/{rev}/{*path}",
            get(hf::resolve).head(hf::resolve),
        )
        .route("/api/v1/models/{org}/{name}", get(modelscope::model))
        .route(
            "/api/v1/models/{org}/{name}/repo/files",
            get(modelscope::files),
        )
        .route(
            "/api/v1/models/{org}/{name}/repo",
            get(modelscope::file).head(modelscope::file),
        )
        .route(
            "/api/v1/models/{org}/{name}/revisions",
            get(modelscope::revisions),
        )
        .route("/api/v1/hub/repos", post(upload::create_repo))
        .route(
            "/api/v1/hub/repos/{org}/{name}",
            axum::routing::patch(upload::patch_repo),
        )
        .route(
            "/api/v1/hub/repos/{org}/{name}/uploads",
            post(upload::start),
        )
        .route(
            "/api/v1/hub/repos/{org}/{name}/uploads/{id}",
            put(upload::chunk).get(upload::status),
        )
        .route(
            "/api/v1/hub/repos/{org}/{name}/commits/{branch}",
            post(upload::commit),
        )
        .route("/api/v1/hub/repos/{org}/{name}/tags", post(upload::tag))
        .route_layer(axum::middleware::from_fn(count_requests))
}

/// Counts hub requests by route class, method and status.
async fn count_requests(request: Request, next: Next) -> Response {
    let class = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", |p| metrics::route_class(p.as_str()));
    let method = request.method().clone();
    let response = next.run(request).await;
    metrics::record_request(class, method.as_str(), response.status().as_u16());
    response
}

/// The hub, or a 404 when this server runs without one.
pub(crate) fn the_hub(state: &AppState) -> Result<&hub::Hub, HubApiError> {
    state.hub().ok_or_else(|| {
        HubApiError::Api(ApiError::new(
            Code::NotFound,
            "This server runs without the model hub.",
        ))
    })
}

/// What the hub needs to know about a verified caller.
pub(crate) fn access(caller: &Caller) -> Access {
    match caller.principal() {
        None => Access::Admin,
        Some(p) => Access::Tenant {
            tenant_id: p.tenant.id.clone(),
            tenant_name: p.tenant.name.clone(),
            read: p.has_scope(Scope::HubRead),
            write: p.has_scope(Scope::HubWrite),
        },
    }
}

/// A reader: anonymous, or any valid key.
pub(crate) struct Reader(pub Access);

impl FromRequestParts<AppState> for Reader {
    type Rejection = HubApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, HubApiError> {
        let MaybeCaller(caller) = MaybeCaller::from_request_parts(parts, state)
            .await
            .map_err(HubApiError::Api)?;
        Ok(Reader(caller.as_ref().map_or(Access::Anonymous, access)))
    }
}

/// A writer: a key with `hub:write` (403 otherwise), before the handler runs.
pub(crate) struct Writer(pub Access);

impl FromRequestParts<AppState> for Writer {
    type Rejection = HubApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, HubApiError> {
        let caller = Caller::from_request_parts(parts, state)
            .await
            .map_err(HubApiError::Api)?;
        caller.require(Scope::HubWrite).map_err(HubApiError::Api)?;
        Ok(Writer(access(&caller)))
    }
}

/// A hub error on its way out: OpenAI's shape plus the Hugging Face error headers.
#[derive(Debug)]
pub enum HubApiError {
    Hub(HubError),
    Api(ApiError),
}

impl From<HubError> for HubApiError {
    fn from(err: HubError) -> Self {
        HubApiError::Hub(err)
    }
}

fn header_text(s: &str) -> HeaderValue {
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .take(500)
        .collect();
    HeaderValue::from_str(&clean).unwrap_or_else(|_| HeaderValue::from_static("error"))
}

impl IntoResponse for HubApiError {
    fn into_response(self) -> Response {
        let err = match self {
            HubApiError::Api(api) => return api.into_response(),
            HubApiError::Hub(err) => err,
        };
        let message = err.to_string();
        let (code, hf_code) = match err.kind() {
            ErrorKind::RepoNotFound => (Code::NotFound, Some("RepoNotFound")),
            ErrorKind::RevisionNotFound => (Code::NotFound, Some("RevisionNotFound")),
            ErrorKind::EntryNotFound => (Code::NotFound, Some("EntryNotFound")),
            ErrorKind::Invalid => (Code::InvalidRequest, None),
            ErrorKind::Unauthenticated => (Code::InvalidApiKey, None),
            ErrorKind::Forbidden => (Code::PermissionDenied, None),
            ErrorKind::Conflict => (Code::Conflict, None),
            ErrorKind::TooLarge | ErrorKind::QuotaExceeded => (Code::RequestTooLarge, None),
            ErrorKind::RangeNotSatisfiable => {
                let size = match &err {
                    HubError::RangeNotSatisfiable { size } => *size,
                    _ => 0,
                };
                return files::range_not_satisfiable(size, &message);
            }
            ErrorKind::Internal => {
                tracing::error!(error = %err, "hub request failed");
                (Code::Internal, None)
            }
        };
        let public_message = if code == Code::Internal {
            "The hub could not complete the request; try again, and tell the operator if it persists.".to_owned()
        } else {
            message
        };
        let mut api = ApiError::new(code, public_message.clone());
        if let Some(param) = err.param() {
            api = api.with_param(param);
        }
        let mut response = api.into_response();
        let headers = response.headers_mut();
        if let Some(hf_code) = hf_code {
            headers.insert(
                HeaderName::from_static("x-error-code"),
                HeaderValue::from_static(hf_code),
            );
        }
        headers.insert(
            HeaderName::from_static("x-error-message"),
            header_text(&public_message),
        );
        if let HubError::EntryNotFound { commit, .. } = &err {
            if let Ok(v) = HeaderValue::from_str(commit) {
                headers.insert(HeaderName::from_static("x-repo-commit"), v);
            }
        }
        if let HubError::WrongOffset { expected, .. } = &err {
            headers.insert(
                HeaderName::from_static("upload-offset"),
                HeaderValue::from(*expected),
            );
        }
        response
    }
}

/// Parses `org` and `name` path parameters.
pub(crate) fn repo_id(org: &str, name: &str) -> Result<hub::path::RepoId, HubApiError> {
    hub::path::RepoId::new(org, name).map_err(|_| {
        // A name that cannot exist is a missing repository, as on the Hub.
        HubApiError::Hub(HubError::RepoNotFound(format!("{org}/{name}")))
    })
}

pub(crate) type HubResult<T> = Result<T, HubApiError>;

pub(crate) fn status_json(status: StatusCode, value: serde_json::Value) -> Response {
    (status, axum::Json(value)).into_response()
}
