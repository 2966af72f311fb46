//! The web console, served at `/console` by the same process as the API.
//!
//! Server-rendered HTML (maud: templates are Rust, checked at compile time, every value
//! escaped) with a little vanilla JavaScript (the playground's stream, the charts with uPlot),
//! all embedded in the binary (`assets.rs`), nothing fetched from elsewhere. Every page and
//! form resolves its session first (`session.rs`: the cookie's session from the database, the
//! role's permission, the CSRF token of every state-changing form), then calls the same domain
//! services the API's handlers call (`tenancy`, `control`, `hub`): the console has no back door.
//!
//! Pages: `sign.rs` (sign-in for members and the operator, invites, sign-out), `tenant.rs`
//! (overview, members), `keys.rs`, `playground.rs`, `usage.rs`, `spend.rs` (request log,
//! budgets), `models.rs`, `agents.rs` (MCP servers, batches) and, for the operator,
//! `operator.rs` (tenants, prices), `deployments.rs`, `deployment_detail.rs` and `nodes.rs`
//! (the cluster's nodes and capacity).

mod agents;
mod assets;
mod deployment_detail;
mod deployments;
mod keys;
mod layout;
mod markdown;
mod models;
mod nodes;
mod operator;
mod playground;
mod session;
mod sign;
mod spend;
mod tenant;
mod usage;

use axum::routing::{get, post};
use axum::Router;
use gateway::AppState;

/// How the console is served.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConsoleConfig {
    /// The server speaks TLS: cookies get `Secure` (and the `__Host-` name).
    pub tls: bool,
}

/// What every console handler sees: the API's state and the console's settings.
#[derive(Clone)]
pub struct Console {
    app: AppState,
    config: ConsoleConfig,
}

impl Console {
    fn tenancy(&self) -> &tenancy::Tenancy {
        self.app.tenancy()
    }
}

/// The console's routes, to merge into the API's router (`gateway::router_with`).
pub fn router(app: &AppState, config: ConsoleConfig) -> Router<AppState> {
    let console = Console {
        app: app.clone(),
        config,
    };
    Router::new()
        .route("/console", get(sign::home))
        .route("/console/", get(sign::home))
        .route("/console/assets/{*path}", get(assets::serve))
        .route(
            "/console/sign-in",
            get(sign::sign_in_page).post(sign::sign_in),
        )
        .route(
            "/console/operator/sign-in",
            get(sign::operator_page).post(sign::operator_sign_in),
        )
        .route("/console/sign-out", post(sign::sign_out))
        .route(
            "/console/invite/{token}",
            get(sign::invite_page).post(sign::accept_invite),
        )
        .route("/console/overview", get(tenant::overview))
        .route(
            "/console/members",
            get(tenant::members).post(tenant::invite),
        )
        .route("/console/members/{id}/remove", post(tenant::remove_member))
        .route("/console/keys", get(keys::page).post(keys::create))
        .route("/console/keys/{id}/revoke", post(keys::revoke))
        .route("/console/playground", get(playground::page))
        .route("/console/api/bill/{request_id}", get(playground::bill))
        .route("/console/usage", get(usage::page))
        .route("/console/usage.csv", get(usage::csv))
        .route("/console/models", get(models::page))
        .route("/console/logs", get(spend::logs))
        .route("/console/budgets", get(spend::budgets))
        .route("/console/mcp", get(agents::mcp))
        .route("/console/batches", get(agents::batches))
        .route(
            "/console/admin/tenants",
            get(operator::tenants).post(operator::create_tenant),
        )
        .route("/console/admin/tenants/{id}/top-up", post(operator::top_up))
        .route(
            "/console/admin/tenants/{id}/status",
            post(operator::set_status),
        )
        .route(
            "/console/admin/tenants/{id}/members",
            post(operator::add_member),
        )
        .route(
            "/console/admin/prices",
            get(operator::prices).post(operator::set_price),
        )
        .route(
            "/console/admin/deployments",
            get(deployments::page).post(deployments::create),
        )
        .route("/console/admin/deployments/scale", post(deployments::scale))
        .route(
            "/console/admin/deployments/{name}",
            get(deployment_detail::page),
        )
        .route("/console/admin/nodes", get(nodes::page))
        .layer(axum::middleware::from_fn(session::security_headers))
        .with_state(console)
}
