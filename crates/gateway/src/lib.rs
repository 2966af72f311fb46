//! Flywheel's HTTP server.
//!
//! Only this crate knows HTTP. Its handlers read a request's body with the `wire` crate (which
//! knows the OpenAI, Anthropic and MCP JSON and validates it into domain requests), hand it to
//! the `Arc<dyn Backend>` serving the addressed model through the `serving` layer, and send the
//! [`backend::Event`]s back as JSON or server-sent events.
//!
//! Code map: [`router`] (routes and state, here); `routes/` (handlers); `sse` (the streaming
//! driver; frames and encoders are `wire::sse`'s); `auth` (extractors); `observe` (request ids,
//! tracing, per-request metrics); `metrics` (metric names). `error`, `validate` and `wire` are
//! the `wire` crate, re-exported under the names the handlers use.

pub mod auth;
pub mod metrics;
pub mod observe;
mod routes;
pub mod sse;
pub mod webhooks;

pub use ::wire;
pub use observe::ClientAddr;
pub use wire::{error, validate};

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, patch, post, put};
use axum::Router;
use backend::Backend;
use metrics_exporter_prometheus::PrometheusHandle;

use tenancy::Tenancy;
use tokio_util::task::TaskTracker;

use serving::{Catalog, Serving};

use crate::auth::Authenticator;
use crate::error::ApiError;

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
    /// The MCP gateway; `None` serves no MCP routes (404).
    pub mcp: Option<Arc<mcp::Mcp>>,
    /// The Files API; `None` serves no file routes (404).
    pub files: Option<files::Files>,
    /// The Batch API (needs `files`): its store and limits; `None` serves no batch routes.
    pub batch: Option<BatchSetup>,
    /// The fine-tuning API (needs `files` and `plane`); `None` serves no fine-tuning routes.
    pub fine_tuning: Option<FineTuningSetup>,
    /// Limits of `/v1/audio/transcriptions`.
    pub audio: AudioLimits,
    /// Model groups and the request log (`None`: neither).
    pub routing: Option<RoutingSetup>,
    /// Where budget alert webhooks may go (`webhooks::guard`); `None`: public addresses only.
    pub webhook_guard: Option<mcp::Guard>,
}

/// Model groups (stored, keys sealed with `sealer`) and the request log.
pub struct RoutingSetup {
    pub store: Arc<dyn tenancy::Store>,
    pub sealer: mcp::Sealer,
    /// The groups to serve from the start ([`load_groups`]).
    pub groups: Vec<Arc<routing::Group>>,
    /// Where tenant requests are logged (`None`: not logged).
    pub logs: Option<serving::RequestLogs>,
    /// How often the stored groups are read again, so groups changed through another
    /// gateway process are served here too (`None`: only at start).
    pub reload_every: Option<std::time::Duration>,
}

pub use routes::groups::{load_groups, reseal_groups};

/// What the Batch API needs besides the serving layer and the Files API.
pub struct BatchSetup {
    pub store: Arc<dyn tenancy::Store>,
    pub config: batch::BatchConfig,
    /// Cancelled when the server shuts down: batch runners stop and give up their leases (a
    /// task on the settlements tracker, which the server awaits before it exits).
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// What the fine-tuning API needs besides the serving layer and the Files API.
pub struct FineTuningSetup {
    pub store: Arc<dyn tenancy::Store>,
    pub config: finetune::jobs::JobsConfig,
    /// Resolves a base model's SPEC to its GGUF file (`hub:` references through the hub).
    pub resolve: Arc<routes::fine_tuning::Resolve>,
    /// Cancelled when the server shuts down: trainings stop after their current step.
    pub shutdown: tokio_util::sync::CancellationToken,
}

pub use routes::fine_tuning::Resolve as FineTuningResolve;

/// Limits of `/v1/audio/transcriptions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioLimits {
    /// Largest audio file, in bytes (413 past it).
    pub max_bytes: u64,
    /// Longest audio, in seconds (400 past it).
    pub max_seconds: u64,
}

impl Default for AudioLimits {
    fn default() -> Self {
        Self {
            max_bytes: 25 << 20,
            max_seconds: 1800,
        }
    }
}

/// The state handlers see: cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    serving: Serving,
    auth: Authenticator,
    metrics: PrometheusHandle,
    metrics_open: bool,
    hub: Option<hub::Hub>,
    mcp: Option<Arc<mcp::Mcp>>,
    files: Option<files::Files>,
    batches: Option<batch::Batches>,
    fine_tuning: Option<finetune::jobs::FineTuning>,
    audio: AudioLimits,
    routing: Option<RoutingSetup>,
    /// Taken while groups are stored and served, so a reload and an admin change never
    /// interleave.
    groups_turn: tokio::sync::Mutex<()>,
    webhook_guard: mcp::Guard,
}

impl AppState {
    fn new(state: GatewayState) -> Self {
        let catalog = Catalog::new(state.models, state.plane);
        let background = state.settlements.clone();
        let mut serving = Serving::new(catalog, state.tenancy.clone(), state.settlements);
        if let Some(setup) = &state.routing {
            for group in &setup.groups {
                let name = &group.spec().name;
                match serving.catalog().name_taken(name, name) {
                    Some(why) => {
                        tracing::error!(group = %name, "{why}; the stored group is not served")
                    }
                    None => serving.catalog().set_group(Arc::clone(group)),
                }
            }
            if let Some(logs) = &setup.logs {
                serving = serving.with_logs(logs.clone());
            }
        }
        let batches = match (state.batch, &state.files) {
            (Some(setup), Some(files)) => {
                let batches = batch::Batches::new(
                    setup.store,
                    files.clone(),
                    state.tenancy.clone(),
                    Arc::new(routes::batches::LineExecutor::new(serving.clone())),
                    setup.config,
                );
                if tokio::runtime::Handle::try_current().is_ok() {
                    let (batches, stop) = (batches.clone(), setup.shutdown);
                    background.spawn(async move {
                        stop.cancelled().await;
                        batches.shutdown().await;
                    });
                }
                Some(batches)
            }
            _ => None,
        };
        let fine_tuning = match (state.fine_tuning, &state.files) {
            (Some(setup), Some(files)) if serving.catalog().plane().is_some() => {
                let models =
                    routes::fine_tuning::PlaneModels::new(serving.catalog().clone(), setup.resolve);
                let jobs = finetune::jobs::FineTuning::new(
                    setup.store,
                    files.clone(),
                    state.tenancy.clone(),
                    Arc::new(models),
                    setup.config,
                );
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    let (jobs, stop) = (jobs.clone(), setup.shutdown);
                    runtime.spawn(async move {
                        stop.cancelled().await;
                        jobs.shutdown();
                    });
                }
                Some(jobs)
            }
            _ => None,
        };
        Self(Arc::new(Inner {
            auth: Authenticator::new(state.admin_key, state.tenancy.directory.clone()),
            serving,
            batches,
            fine_tuning,
            hub: state.hub,
            mcp: state.mcp,
            files: state.files,
            audio: state.audio,
            routing: state.routing,
            groups_turn: tokio::sync::Mutex::new(()),
            webhook_guard: state
                .webhook_guard
                .unwrap_or_else(|| webhooks::guard(mcp::AllowList::default())),
            metrics: state.metrics,
            metrics_open: state.metrics_open,
        }))
    }

    /// The serving layer every generating route calls.
    pub fn serving(&self) -> &Serving {
        &self.0.serving
    }

    /// Every served model: the fixed backends, then the deployments by name.
    pub fn models(&self) -> Vec<backend::ModelInfo> {
        self.0.serving.catalog().models()
    }

    /// The control plane, if this server runs one.
    pub fn plane(&self) -> Option<&control::ControlPlane> {
        self.0.serving.catalog().plane()
    }

    /// The backend serving `model`, or a 404 `model_not_found` listing what is served.
    pub fn backend(&self, model: &str) -> Result<Arc<dyn Backend>, ApiError> {
        let catalog = self.0.serving.catalog();
        catalog.backend(model).ok_or_else(|| {
            let err = serving::ServeError::ModelNotFound {
                model: model.to_owned(),
                available: catalog.names(),
            };
            ApiError::from_serve(err, "model")
        })
    }

    /// The model hub, if this server runs one.
    pub fn hub(&self) -> Option<&hub::Hub> {
        self.0.hub.as_ref()
    }

    /// The Files API, if this server runs it.
    pub fn files(&self) -> Option<&files::Files> {
        self.0.files.as_ref()
    }

    pub fn batches(&self) -> Option<&batch::Batches> {
        self.0.batches.as_ref()
    }

    /// The fine-tuning API, if this server runs it.
    pub fn fine_tuning(&self) -> Option<&finetune::jobs::FineTuning> {
        self.0.fine_tuning.as_ref()
    }

    /// Limits of `/v1/audio/transcriptions`.
    pub fn audio_limits(&self) -> AudioLimits {
        self.0.audio
    }

    /// The MCP gateway, if this server runs one.
    pub fn mcp(&self) -> Option<Arc<mcp::Mcp>> {
        self.0.mcp.clone()
    }

    /// The outbound rules budget webhooks are checked and sent with.
    pub fn webhook_guard(&self) -> &mcp::Guard {
        &self.0.webhook_guard
    }

    pub fn tenancy(&self) -> &Tenancy {
        self.0.serving.tenancy()
    }

    pub fn metrics_open(&self) -> bool {
        self.0.metrics_open
    }

    pub fn render_metrics(&self) -> String {
        if let Some(logs) = self.0.serving.logs() {
            ::metrics::counter!(crate::metrics::REQUEST_LOGS_DROPPED).absolute(logs.dropped());
            ::metrics::counter!(crate::metrics::REQUEST_LOGS_WRITTEN).absolute(logs.written());
        }
        self.0.metrics.render()
    }

    pub fn routing(&self) -> Option<&RoutingSetup> {
        self.0.routing.as_ref()
    }

    /// The turn of whoever changes the served groups.
    pub(crate) async fn groups_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.0.groups_turn.lock().await
    }
}

impl axum::extract::FromRef<AppState> for Authenticator {
    fn from_ref(state: &AppState) -> Self {
        state.0.auth.clone()
    }
}

/// The state of the routes; unfinished batches no process holds resume (a runner each) once
/// it exists, and the takeover loop keeps looking for batches whose process died.
fn app_state(state: GatewayState) -> AppState {
    let state = AppState::new(state);
    if tokio::runtime::Handle::try_current().is_ok() {
        webhooks::spawn(
            state.tenancy().budgets.clone(),
            state.webhook_guard().clone(),
        );
    }
    if let (Some(batches), Ok(_)) = (state.batches(), tokio::runtime::Handle::try_current()) {
        // Unfinished batches no process holds resume here now, and so do, later, those of a
        // process sharing the database that died (once its leases lapse).
        batches.spawn_takeover();
    }
    if let (Some(jobs), Ok(runtime)) = (state.fine_tuning(), tokio::runtime::Handle::try_current())
    {
        let jobs = jobs.clone();
        runtime.spawn(async move {
            // The models of finished jobs are served again (privately), then unfinished jobs
            // resume from their last checkpoints.
            match jobs.published().await {
                Ok(models) => {
                    for model in models {
                        if let Err(e) = jobs.publish(&model).await {
                            tracing::error!(model = %model.name, error = %e, "could not serve a fine-tuned model");
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "could not read the fine-tuned models"),
            }
            match jobs.resume().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "resumed unfinished fine-tuning jobs"),
                Err(e) => tracing::error!(error = %e, "could not resume fine-tuning jobs; they resume at the next start"),
            }
        });
    }
    if let (Some(every), Ok(_)) = (
        state.routing().and_then(|r| r.reload_every),
        tokio::runtime::Handle::try_current(),
    ) {
        routes::groups::spawn_reload(state.clone(), every);
    }
    state
}

/// The whole HTTP API; used by the binary and by the tests.
pub fn router(state: GatewayState) -> Router {
    router_with(state, |_| Router::new())
}

/// The HTTP API with more routes merged in: `extend` gets the state the API's handlers use
/// (the binary merges the web console here, so its pages call the same services). The extra
/// routes share the API's fallback, body limit and request tracing.
pub fn router_with(
    state: GatewayState,
    extend: impl FnOnce(&AppState) -> Router<AppState>,
) -> Router {
    metrics::describe();
    let max_body_bytes = state.max_body_bytes;
    let audio = state.audio;
    let max_file_bytes = state
        .files
        .as_ref()
        .map_or(0, |f| f.config().max_file_bytes);
    let app = app_state(state);
    let extra = extend(&app);
    Router::new()
        .route("/health", get(routes::ops::health))
        .route("/ready", get(routes::ops::ready))
        .route("/metrics", get(routes::ops::metrics))
        .route("/v1/models", get(routes::models::list))
        .route("/v1/models/{*id}", get(routes::models::get))
        .route(
            "/v1/chat/completions",
            post(routes::generate::chat_completions),
        )
        .route("/v1/completions", post(routes::generate::completions))
        .route("/v1/embeddings", post(routes::embeddings::embeddings))
        .route("/v1/rerank", post(routes::embeddings::rerank))
        .route("/v1/responses", post(routes::responses::create))
        .route(
            "/v1/responses/{id}",
            get(routes::responses::retrieve).delete(routes::responses::delete),
        )
        .route(
            "/v1/responses/{id}/input_items",
            get(routes::responses::input_items),
        )
        .merge(
            Router::new()
                .route("/v1/messages", post(routes::messages::create))
                .route(
                    "/v1/messages/count_tokens",
                    post(routes::messages::count_tokens),
                )
                .layer(axum::middleware::from_fn(routes::messages::errors)),
        )
        .route(
            "/v1/mcp/servers",
            post(routes::mcp::create).get(routes::mcp::list),
        )
        .route(
            "/v1/mcp/servers/{name}",
            patch(routes::mcp::patch).delete(routes::mcp::delete),
        )
        .route("/v1/mcp/calls", get(routes::mcp::calls))
        .route(
            "/v1/mcp/settings",
            get(routes::mcp::settings).put(routes::mcp::put_settings),
        )
        .route("/internal/mcp/stdio", post(routes::mcp::forwarded))
        .route(
            "/admin/v1/mcp/servers",
            post(routes::mcp::admin_create).get(routes::mcp::admin_list),
        )
        .route(
            "/admin/v1/mcp/servers/{name}",
            patch(routes::mcp::admin_patch).delete(routes::mcp::admin_delete),
        )
        .route(
            "/admin/v1/tenants/{id}/mcp_grants",
            post(routes::mcp::grant),
        )
        .route(
            "/admin/v1/tenants/{id}/mcp_grants/{server}",
            delete(routes::mcp::revoke),
        )
        .route(
            "/mcp",
            post(routes::mcp::post)
                .get(routes::mcp::get)
                .delete(routes::mcp::end),
        )
        .route("/v1/account", get(routes::account::account))
        .route("/v1/usage", get(routes::account::usage))
        .route(
            "/admin/v1/tenants",
            post(routes::admin::create_tenant).get(routes::admin::list_tenants),
        )
        .route(
            "/admin/v1/tenants/{id}",
            get(routes::admin::get_tenant)
                .patch(routes::admin::patch_tenant)
                .delete(routes::tenant_delete::delete_tenant),
        )
        .route(
            "/admin/v1/tenants/{id}/orgs",
            post(routes::admin::create_org).get(routes::admin::list_orgs),
        )
        .route(
            "/admin/v1/tenants/{id}/keys",
            post(routes::admin::create_key).get(routes::admin::list_keys),
        )
        .route(
            "/admin/v1/keys/{key_id}",
            delete(routes::admin::revoke_key).patch(routes::budgets::patch_key),
        )
        .route("/v1/budget", get(routes::budgets::own_status))
        .route("/v1/budget/events", get(routes::budgets::own_events))
        .route(
            "/v1/budget/webhook_secret",
            post(routes::budgets::rotate_own_secret),
        )
        .route(
            "/admin/v1/tenants/{id}/budget",
            get(routes::budgets::status),
        )
        .route(
            "/admin/v1/tenants/{id}/budget/events",
            get(routes::budgets::events),
        )
        .route(
            "/admin/v1/tenants/{id}/webhook_secret",
            post(routes::budgets::rotate_secret),
        )
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
        .route("/admin/v1/models", get(routes::groups::list))
        .route(
            "/admin/v1/models/{*name}",
            put(routes::groups::put)
                .get(routes::groups::get)
                .delete(routes::groups::delete),
        )
        .route("/v1/logs", get(routes::logs::tenant))
        .route("/admin/v1/logs", get(routes::logs::operator))
        .route("/admin/v1/cluster", get(routes::deployments::cluster))
        .route(
            "/admin/v1/tenants/{id}/members",
            post(routes::members::create).get(routes::members::list),
        )
        .route(
            "/admin/v1/members/{member_id}",
            delete(routes::members::delete),
        )
        .merge(routes::hub::router())
        .merge(extra)
        .merge(routes::files::router(max_file_bytes))
        .merge(routes::batches::router())
        .merge(routes::fine_tuning::router())
        .merge(routes::transcriptions::router(audio))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(observe::observe))
        .with_state(app)
}
