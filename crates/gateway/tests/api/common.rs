//! Fixtures: a scripted backend and helpers to call the router.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use backend::{
    Backend, BackendError, Event, EventStream, FinishReason, GenerateRequest, ModelInfo, Usage,
};
use futures::StreamExt;
use gateway::{router, GatewayState};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::Value;
use tenancy::{Tenancy, TenancyConfig};
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

pub const ADMIN_KEY: &str = "test-admin-key";
pub const MAX_BODY: usize = 64 * 1024;

/// What a [`Scripted`] backend does with a request.
#[derive(Clone)]
pub enum Script {
    /// `generate` fails.
    Refuse(BackendError),
    /// These items, then the stream ends.
    Events(Vec<Result<Event, BackendError>>),
    /// These items, then the stream stays open forever.
    EventsThenHang(Vec<Result<Event, BackendError>>),
}

/// A backend that plays a script and records what it was asked and whether its stream was
/// dropped.
pub struct Scripted {
    pub id: String,
    pub script: Script,
    /// What `info()` reports as the context length.
    pub context_length: u32,
    pub seen: Mutex<Vec<GenerateRequest>>,
    pub dropped: Arc<AtomicBool>,
}

impl Scripted {
    pub fn new(id: &str, script: Script) -> Arc<Self> {
        Self::with_context(id, script, 4096)
    }

    /// A scripted backend whose model has a context of `context_length` tokens.
    pub fn with_context(id: &str, script: Script, context_length: u32) -> Arc<Self> {
        Arc::new(Self {
            id: id.into(),
            script,
            context_length,
            seen: Mutex::new(Vec::new()),
            dropped: Arc::new(AtomicBool::new(false)),
        })
    }

    /// "Hello" " world", then finished with 5 prompt / 2 completion / 3 cached tokens.
    pub fn hello(id: &str) -> Arc<Self> {
        Self::new(id, Script::Events(hello_events()))
    }

    pub fn last_request(&self) -> GenerateRequest {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("no request reached the backend")
    }

    pub fn was_dropped(&self) -> bool {
        self.dropped.load(Ordering::SeqCst)
    }
}

/// What a backend sends first: 5 prompt tokens, at most 16 more.
pub fn admitted() -> Result<Event, BackendError> {
    Ok(Event::Admitted {
        prompt_tokens: 5,
        max_tokens: 16,
        exact: true,
    })
}

pub fn hello_events() -> Vec<Result<Event, BackendError>> {
    vec![
        admitted(),
        Ok(Event::text("Hello", 1)),
        Ok(Event::text(" world", 1)),
        Ok(Event::Finished {
            reason: FinishReason::Stop,
            usage: Usage {
                prompt_tokens: 5,
                completion_tokens: 2,
                cached_tokens: 3,
            },
        }),
    ]
}

/// Sets a flag when dropped: rides inside the event stream.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Backend for Scripted {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            id: self.id.clone(),
            owned_by: "flywheel".into(),
            context_length: Some(self.context_length),
            created: 1_700_000_000,
            kind: backend::ModelKind::Generate,
        }
    }

    /// Every prompt has the 5 tokens `hello` reports.
    async fn count_prompt_tokens(&self, request: &GenerateRequest) -> backend::Result<u32> {
        self.seen.lock().unwrap().push(request.clone());
        Ok(5)
    }

    async fn generate(&self, request: GenerateRequest) -> backend::Result<EventStream> {
        self.seen.lock().unwrap().push(request);
        let flag = DropFlag(Arc::clone(&self.dropped));
        let (items, hang) = match &self.script {
            Script::Refuse(err) => return Err(err.clone()),
            Script::Events(items) => (items.clone(), false),
            Script::EventsThenHang(items) => (items.clone(), true),
        };
        let head = futures::stream::iter(items);
        let tail = futures::stream::pending().take(usize::from(hang));
        Ok(Box::pin(head.chain(tail).map(move |item| {
            let _ = &flag;
            item
        })))
    }
}

/// One recorder for the whole test binary (the `metrics` macros need a global one).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .expect("install the test recorder")
        })
        .clone()
}

/// Tenancy on a private in-memory SQLite database.
pub async fn tenancy() -> Tenancy {
    let store = store::open("sqlite::memory:")
        .await
        .expect("in-memory SQLite");
    Tenancy::new(
        store,
        Arc::new(tenancy::SystemClock),
        &TenancyConfig::default(),
    )
    .expect("default tenancy config")
}

pub fn app_on(models: Vec<Arc<dyn Backend>>, metrics_open: bool, tenancy: Tenancy) -> Router {
    app_full(models, metrics_open, tenancy, None)
}

/// The router with fixed `models` and, optionally, a control plane for deployments.
pub fn app_full(
    models: Vec<Arc<dyn Backend>>,
    metrics_open: bool,
    tenancy: Tenancy,
    plane: Option<control::ControlPlane>,
) -> Router {
    router(GatewayState {
        models,
        admin_key: ADMIN_KEY.into(),
        tenancy,
        metrics: metrics_handle(),
        metrics_open,
        max_body_bytes: MAX_BODY,
        audio: gateway::AudioLimits::default(),
        routing: None,
        webhook_guard: None,
        settlements: TaskTracker::new(),
        hub: None,
        plane,
        mcp: None,
        files: None,
        batch: None,
        fine_tuning: None,
    })
}

pub async fn app_with(models: Vec<Arc<dyn Backend>>, metrics_open: bool) -> Router {
    app_on(models, metrics_open, tenancy().await)
}

pub async fn app(models: Vec<Arc<Scripted>>) -> Router {
    app_with(
        models.into_iter().map(|m| m as Arc<dyn Backend>).collect(),
        false,
    )
    .await
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an OpenAI-shaped error with this status, code and param.
    pub fn assert_error(&self, status: u16, code: &str, param: Option<&str>) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        let json = self.json();
        let error = &json["error"];
        assert_eq!(error["code"], code, "body: {}", self.body);
        assert_eq!(error["param"].as_str(), param, "body: {}", self.body);
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            self.body
        );
        assert!(error["type"].is_string(), "{}", self.body);
    }

    /// The `data:` payloads of an SSE body, in order.
    pub fn sse(&self) -> Vec<String> {
        assert_eq!(self.header("content-type"), Some("text/event-stream"));
        assert!(self.body.ends_with("\n\n"), "{:?}", self.body);
        self.body
            .split_terminator("\n\n")
            .map(|event| {
                event
                    .strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("not a data event: {event:?}"))
                    .to_string()
            })
            .collect()
    }
}

pub async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    Reply {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).expect("utf-8 body"),
    }
}

/// POSTs with the admin key.
pub async fn post_raw(app: &Router, path: &str, body: impl Into<Body>) -> Reply {
    post_as(app, path, body, Some(ADMIN_KEY)).await
}

pub async fn post_as(app: &Router, path: &str, body: impl Into<Body>, key: Option<&str>) -> Reply {
    let mut request = Request::post(path);
    if let Some(key) = key {
        request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let request = request
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .expect("request");
    send(app, request).await
}

pub async fn post(app: &Router, path: &str, body: Value) -> Reply {
    post_raw(app, path, body.to_string()).await
}

pub async fn get(app: &Router, path: &str, key: Option<&str>) -> Reply {
    let mut request = Request::get(path);
    if let Some(key) = key {
        request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    send(app, request.body(Body::empty()).expect("request")).await
}

pub fn chat_body(model: &str) -> Value {
    serde_json::json!({ "model": model, "messages": [{ "role": "user", "content": "Hi" }] })
}

pub fn completion_body(model: &str) -> Value {
    serde_json::json!({ "model": model, "prompt": "Once upon a time" })
}
