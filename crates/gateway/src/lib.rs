//! Flywheel's OpenAI-compatible HTTP API.
//!
//! Only this crate knows HTTP and the OpenAI wire format. It parses and validates requests into
//! [`backend::GenerateRequest`]s, hands them to the `Arc<dyn Backend>` serving the addressed
//! model, and renders the [`backend::Event`]s back as JSON or server-sent events. [`upstream`]
//! is a [`backend::Backend`] that proxies to an external OpenAI-compatible server.
//!
//! Code map: [`router`] (routes and state, here); `routes/` (handlers); `wire/` (request
//! parsing, `*View` response shapes); `validate` (strict field reading); `sse` (streaming);
//! `error` (the one error type and status table); `auth` (extractors); `observe` (request ids,
//! tracing, per-request metrics); `metrics` (metric names).

pub mod auth;
pub mod error;
pub mod meter;
pub mod metrics;
pub mod observe;
mod routes;
pub mod sse;
pub mod upstream;
pub mod validate;
pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use axum::Router;
use backend::Backend;
use metrics_exporter_prometheus::PrometheusHandle;

use tenancy::Tenancy;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::error::{ApiError, Code};
use crate::meter::{Meter, MeterSpec};

/// What the binary hands the gateway.
pub struct GatewayState {
    /// The served models, in the order `/v1/models` lists them.
    pub models: Vec<Arc<dyn Backend>>,
    /// The bootstrap admin key: every scope on every route.
    pub admin_key: String,
    /// Tenants, keys, prices, the ledger and limits.
    pub tenancy: Tenancy,
    /// Renders the process's Prometheus metrics.
    pub metrics: PrometheusHandle,
    /// Serve `/metrics` without a key.
    pub metrics_open: bool,
    /// Largest accepted request body; larger ones get a 413.
    pub max_body_bytes: usize,
    /// Settlements of interrupted requests run here; the binary waits for them when draining.
    pub settlements: TaskTracker,
    /// The model hub; `None` serves no hub routes (404).
    pub hub: Option<hub::Hub>,
    /// Deployments (served after `models` of the same name); `None` serves no deployment
    /// routes (404).
    pub plane: Option<control::ControlPlane>,
}

/// The state handlers see: cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    models: Vec<(String, Arc<dyn Backend>)>,
    by_name: HashMap<String, usize>,
    auth: Authenticator,
    tenancy: Tenancy,
    settlements: TaskTracker,
    metrics: PrometheusHandle,
    metrics_open: bool,
    hub: Option<hub::Hub>,
    plane: Option<control::ControlPlane>,
}

impl AppState {
    fn new(state: GatewayState) -> Self {
        let mut models = Vec::with_capacity(state.models.len());
        let mut by_name = HashMap::new();
        for backend in state.models {
            let name = backend.info().id;
            if by_name.contains_key(&name) {
                tracing::warn!(model = %name, "two backends serve the same model name; the first wins");
                continue;
            }
            by_name.insert(name.clone(), models.len());
            models.push((name, backend));
        }
        Self(Arc::new(Inner {
            models,
            by_name,
            auth: Authenticator::new(state.admin_key, state.tenancy.directory.clone()),
            tenancy: state.tenancy,
            settlements: state.settlements,
            hub: state.hub,
            plane: state.plane,
            metrics: state.metrics,
            metrics_open: state.metrics_open,
        }))
    }

    /// The fixed backends (upstreams), in order.
    pub fn backends(&self) -> impl Iterator<Item = (&str, &Arc<dyn Backend>)> {
        self.0.models.iter().map(|(name, b)| (name.as_str(), b))
    }

    /// Every served model: the fixed backends, then the deployments by name.
    pub fn models(&self) -> Vec<backend::ModelInfo> {
        let mut infos: Vec<backend::ModelInfo> =
            self.backends().map(|(_, backend)| backend.info()).collect();
        if let Some(plane) = &self.0.plane {
            infos.extend(
                plane
                    .names()
                    .iter()
                    .filter(|name| !self.0.by_name.contains_key(name.as_str()))
                    .filter_map(|name| plane.get(name))
                    .map(|deployment| deployment.info()),
            );
        }
        infos
    }

    /// The control plane, if this server runs one.
    pub fn plane(&self) -> Option<&control::ControlPlane> {
        self.0.plane.as_ref()
    }

    /// The backend serving `model` (a fixed backend, else the deployment of that name, looked
    /// up per request), or a 404 `model_not_found` listing what is served.
    pub fn backend(&self, model: &str) -> Result<Arc<dyn Backend>, ApiError> {
        let fixed = self
            .0
            .by_name
            .get(model)
            .and_then(|&i| self.0.models.get(i));
        if let Some((_, backend)) = fixed {
            return Ok(Arc::clone(backend));
        }
        match self.0.plane.as_ref().and_then(|p| p.get(model)) {
            Some(deployment) => Ok(Arc::new(deployment)),
            None => {
                let available: Vec<String> = self.models().into_iter().map(|m| m.id).collect();
                let available = if available.is_empty() {
                    "none".to_string()
                } else {
                    available.join(", ")
                };
                Err(ApiError::new(
                    Code::ModelNotFound,
                    format!("The model '{model}' does not exist. Available: {available}"),
                )
                .with_param("model"))
            }
        }
    }

    /// The model hub, if this server runs one.
    pub fn hub(&self) -> Option<&hub::Hub> {
        self.0.hub.as_ref()
    }

    pub fn tenancy(&self) -> &Tenancy {
        &self.0.tenancy
    }

    /// A meter for one tenant request.
    pub fn meter(&self, spec: MeterSpec) -> Meter {
        Meter::new(self.0.tenancy.clone(), self.0.settlements.clone(), spec)
    }

    pub fn metrics_open(&self) -> bool {
        self.0.metrics_open
    }

    pub fn render_metrics(&self) -> String {
        self.0.metrics.render()
    }
}

impl axum::extract::FromRef<AppState> for Authenticator {
    fn from_ref(state: &AppState) -> Self {
        state.0.auth.clone()
    }
}

/// The whole HTTP API; used by the binary and by the tests.
pub fn router(state: GatewayState) -> Router {
    metrics::describe();
    let max_body_bytes = state.max_body_bytes;
    Router::new()
        .route("/health", get(routes::ops::health))
        .route("/metrics", get(routes::ops::metrics))
        .route("/v1/models", get(routes::models::list))
        .route("/v1/models/{*id}", get(routes::models::get))
        .route(
            "/v1/chat/completions",
            post(routes::generate::chat_completions),
        )
        .route("/v1/completions", post(routes::generate::completions))
        .route("/v1/account", get(routes::account::account))
        .route("/v1/usage", get(routes::account::usage))
        .route(
            "/admin/v1/tenants",
            post(routes::admin::create_tenant).get(routes::admin::list_tenants),
        )
        .route(
            "/admin/v1/tenants/{id}",
            get(routes::admin::get_tenant).patch(routes::admin::patch_tenant),
        )
        .route(
            "/admin/v1/tenants/{id}/orgs",
            post(routes::admin::create_org).get(routes::admin::list_orgs),
        )
        .route(
            "/admin/v1/tenants/{id}/keys",
            post(routes::admin::create_key).get(routes::admin::list_keys),
        )
        .route("/admin/v1/keys/{key_id}", delete(routes::admin::revoke_key))
        .route("/admin/v1/tenants/{id}/topups", post(routes::admin::top_up))
        .route("/admin/v1/prices", get(routes::admin::list_prices))
        .route(
            "/admin/v1/requests/{request_id}",
            get(routes::admin::request_bill),
        )
        .route("/admin/v1/prices/{*model}", put(routes::admin::put_price))
        .route(
            "/admin/v1/deployments",
            post(routes::deployments::create).get(routes::deployments::list),
        )
        .route(
            "/admin/v1/deployments/{*name}",
            get(routes::deployments::get)
                .patch(routes::deployments::patch)
                .delete(routes::deployments::delete),
        )
        .route("/admin/v1/node", get(routes::deployments::node))
        .merge(routes::hub::router())
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(observe::observe))
        .with_state(AppState::new(state))
}
