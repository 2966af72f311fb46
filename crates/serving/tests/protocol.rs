//! The serving layer's metering protocol, without HTTP, on both databases: admission before
//! the backend is asked anything, reservation before delivery, a hold given back when the
//! request leaves the queue, settlement exactly once (also on drop), and lease heartbeats.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backend::{
    Backend, BackendError, ChatMessage, Event, EventStream, FinishReason, GenerateRequest,
    ModelInfo, Prompt, SamplingParams, Usage,
};
use chrono::{TimeDelta, TimeZone, Utc};
use serving::{Catalog, Delivery, ServeError, Serving};
use store::testing::ScratchDb;
use tenancy::{
    KeySpec, ManualClock, PriceRates, Principal, ReservationState, Tenancy, TenancyConfig,
    TenantSpec,
};
use tokio_util::task::TaskTracker;

store::on_both!(Fixture;
    the_bound_is_reserved_before_the_backend_is_asked,
    a_tenant_that_cannot_pay_never_reaches_the_backend,
    refused_requests_do_not_count_toward_rpm,
    the_reservation_shrinks_to_the_counted_prompt_and_settles_once,
    a_dropped_stream_settles_what_was_delivered,
    a_backend_failure_bills_a_stream_what_it_sent_and_a_whole_answer_nothing,
    a_request_that_leaves_the_queue_gets_its_hold_back,
    a_backend_refusal_gives_the_hold_back,
    heartbeats_keep_a_long_request_from_being_recovered,
    a_deleted_tenants_requests_end_whether_read_or_not,
    embeddings_settle_exactly_the_counted_tokens,
);

const MODEL: &str = "m";
const LEASE_MS: i64 = 600;

/// 1 micro-unit per input token, 2 per output token.
const RATES: PriceRates = PriceRates {
    input_per_million: 1_000_000,
    output_per_million: 2_000_000,
    cached_input_per_million: 1_000_000,
};

/// What the scripted backend does with each request.
#[derive(Clone)]
struct Script {
    events: Vec<Result<Event, BackendError>>,
    /// After the events, the stream stays open (a generation or a queue wait in progress).
    then_wait: bool,
    /// `generate` itself refuses.
    refuse: Option<BackendError>,
}

struct Scripted {
    script: Script,
    tenancy: Tenancy,
    calls: AtomicUsize,
    /// The tenant's amount held when `generate` was called.
    held_at_generate: Mutex<Vec<i64>>,
    tenant: Mutex<Option<String>>,
    /// The request ids of the event streams dropped (their generation cancelled), in order.
    dropped: Arc<Mutex<Vec<String>>>,
}

/// Records a stream's drop under its request id: rides inside it.
struct DropCount(Arc<Mutex<Vec<String>>>, String);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0
            .lock()
            .expect("lock")
            .push(std::mem::take(&mut self.1));
    }
}

impl Scripted {
    /// The request ids of the streams dropped so far, in order.
    fn dropped(&self) -> Vec<String> {
        self.dropped.lock().expect("lock").clone()
    }
}

#[async_trait::async_trait]
impl Backend for Scripted {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            id: MODEL.into(),
            owned_by: "test".into(),
            context_length: Some(4096),
            created: 0,
            kind: backend::ModelKind::Generate,
        }
    }

    async fn generate(&self, request: GenerateRequest) -> backend::Result<EventStream> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let tenant = self.tenant.lock().expect("lock").clone();
        if let Some(tenant) = tenant {
            let account = self.tenancy.usage.account(&tenant).await.expect("account");
            self.held_at_generate
                .lock()
                .expect("lock")
                .push(account.amount_held);
        }
        if let Some(err) = self.script.refuse.clone() {
            return Err(err);
        }
        let events = tokio_stream::iter(self.script.events.clone());
        let count = DropCount(self.dropped.clone(), request.request_id.clone());
        let stream: EventStream = if self.script.then_wait {
            Box::pin(tokio_stream::StreamExt::chain(
                events,
                futures::stream::pending(),
            ))
        } else {
            Box::pin(events)
        };
        Ok(Box::pin(futures::StreamExt::map(stream, move |item| {
            let _ = &count;
            item
        })))
    }
}

/// An embedding model: 3 tokens per input, or a refusal when an input is "refuse".
struct Embedder;

#[async_trait::async_trait]
impl Backend for Embedder {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            id: "e".into(),
            owned_by: "test".into(),
            context_length: Some(512),
            created: 0,
            kind: backend::ModelKind::Embed { dimensions: 2 },
        }
    }

    async fn generate(&self, _request: GenerateRequest) -> backend::Result<EventStream> {
        unreachable!("the serving layer refuses generations on an embedding model")
    }

    async fn embed(&self, request: backend::EmbedRequest) -> backend::Result<backend::Embeddings> {
        if request
            .inputs
            .contains(&backend::EmbedInput::Text("refuse".into()))
        {
            return Err(BackendError::InvalidRequest {
                message: "no".into(),
                field: Some(backend::Field::Input),
            });
        }
        Ok(backend::Embeddings {
            vectors: request.inputs.iter().map(|_| vec![0.6, 0.8]).collect(),
            prompt_tokens: 3 * request.inputs.len() as u32,
        })
    }
}

pub struct Fixture {
    clock: Arc<ManualClock>,
    tenancy: Tenancy,
    settlements: TaskTracker,
    store: Arc<dyn tenancy::Store>,
    _scratch: ScratchDb,
}

fn config(process_id: &str) -> TenancyConfig {
    TenancyConfig {
        free_grant_tokens: 0,
        default_price: RATES,
        lease: TimeDelta::milliseconds(LEASE_MS),
        process_id: process_id.into(),
    }
}

impl Fixture {
    pub async fn new(kind: store::testing::Kind) -> Self {
        let scratch = ScratchDb::new(kind).await;
        let store = store::open(&scratch.url).await.expect("open the store");
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single();
        let clock = Arc::new(ManualClock::new(start.expect("a valid time")));
        let tenancy =
            Tenancy::new(store.clone(), clock.clone(), &config("proc-a")).expect("tenancy");
        Self {
            clock,
            tenancy,
            settlements: TaskTracker::new(),
            store,
            _scratch: scratch,
        }
    }

    /// A tenant with `balance` micro-units and no grant, and a principal for one of its keys.
    async fn payer(&self, balance: i64, rpm: Option<i64>) -> Principal {
        self.named_payer("acme", balance, rpm).await
    }

    async fn named_payer(&self, name: &str, balance: i64, rpm: Option<i64>) -> Principal {
        let directory = &self.tenancy.directory;
        let spec = TenantSpec {
            name: name.into(),
            rpm,
            grant_tokens: Some(0),
            ..TenantSpec::default()
        };
        let tenant = directory.create_tenant(&spec).await.expect("tenant");
        if balance > 0 {
            self.tenancy
                .ledger
                .top_up(&tenant.id, balance, None)
                .await
                .expect("top up");
        }
        let key = KeySpec {
            name: "k".into(),
            ..KeySpec::default()
        };
        let created = directory.create_key(&tenant.id, &key).await.expect("key");
        directory.verify(&created.secret).await.expect("verify")
    }

    fn serving(&self, script: Script, payer: &Principal) -> (Serving, Arc<Scripted>) {
        let backend = Arc::new(Scripted {
            script,
            tenancy: self.tenancy.clone(),
            calls: AtomicUsize::new(0),
            held_at_generate: Mutex::new(Vec::new()),
            tenant: Mutex::new(Some(payer.tenant.id.clone())),
            dropped: Arc::new(Mutex::new(Vec::new())),
        });
        let catalog = Catalog::new(vec![backend.clone() as Arc<dyn Backend>], None);
        let serving = Serving::new(catalog, self.tenancy.clone(), self.settlements.clone());
        (serving, backend)
    }

    async fn held(&self, principal: &Principal) -> i64 {
        let account = self.tenancy.usage.account(&principal.tenant.id).await;
        account.expect("account").amount_held
    }

    async fn settled(&self) {
        self.settlements.close();
        self.settlements.wait().await;
        self.settlements.reopen();
    }
}

fn request(id: &str, prompt: &str, max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        request_id: id.into(),
        model: MODEL.into(),
        prompt: Prompt::Chat(vec![ChatMessage::text("user", prompt)]),
        sampling: SamplingParams::default(),
        max_tokens: Some(max_tokens),
        stop: Vec::new(),
        tenant: None,
        tools: Vec::new(),
        tool_choice: Default::default(),
        parallel_tool_calls: true,
        format: Default::default(),
        priority: Default::default(),
        resume: Vec::new(),
    }
}

fn admitted(prompt_tokens: u32, max_tokens: u32) -> Result<Event, BackendError> {
    Ok(Event::Admitted {
        prompt_tokens,
        max_tokens,
        exact: true,
    })
}

fn finished(prompt_tokens: u32, completion_tokens: u32) -> Result<Event, BackendError> {
    Ok(Event::Finished {
        reason: FinishReason::Stop,
        usage: Usage {
            prompt_tokens,
            completion_tokens,
            cached_tokens: 0,
        },
    })
}

fn script(events: Vec<Result<Event, BackendError>>) -> Script {
    Script {
        events,
        then_wait: false,
        refuse: None,
    }
}

/// Whether the request was refused for want of money.
fn unpaid(err: &Option<ServeError>) -> bool {
    matches!(
        err,
        Some(ServeError::Tenancy(
            tenancy::Error::InsufficientQuota { .. }
        ))
    )
}

/// Reads every event; the error that ended the stream, if any.
async fn drain(served: &mut serving::Served) -> Option<ServeError> {
    while let Some(event) = served.next().await {
        if let Err(err) = event {
            return Some(err);
        }
    }
    None
}

async fn the_bound_is_reserved_before_the_backend_is_asked(fx: Fixture) {
    let payer = fx.payer(100_000, None).await;
    let events = vec![admitted(7, 20), Ok(Event::text("hi", 2)), finished(7, 2)];
    let (serving, backend) = fx.serving(script(events), &payer);
    let mut served = serving
        .serve(Some(&payer), request("r1", "hello", 20), Delivery::Stream)
        .await
        .expect("served");
    // "hello" and "user": 9 bytes, plus the template allowance, at 1; 20 completion at 2.
    let bound = 9 + 96 + 8 + 2 * 20;
    assert_eq!(*backend.held_at_generate.lock().expect("lock"), vec![bound]);
    assert_eq!(drain(&mut served).await, None);
    let bill = fx.tenancy.ledger.reservation("r1").await.expect("bill");
    assert_eq!(bill.state, ReservationState::Settled);
    assert_eq!(bill.charged.map(|c| c.amount), Some(7 + 2 * 2));
    assert_eq!(fx.held(&payer).await, 0);
}

async fn a_tenant_that_cannot_pay_never_reaches_the_backend(fx: Fixture) {
    let broke = fx.payer(0, None).await;
    let (serving, backend) = fx.serving(script(vec![admitted(1, 1)]), &broke);
    let err = serving
        .serve(Some(&broke), request("r1", "hi", 1), Delivery::Whole)
        .await
        .err();
    assert!(unpaid(&err), "{err:?}");
    // Enough for ten tokens; a 1,000-token prompt.
    let poor = fx.named_payer("poor", 10, None).await;
    let long = "word ".repeat(1_000);
    let err = serving
        .serve(Some(&poor), request("r2", &long, 1), Delivery::Stream)
        .await
        .err();
    assert!(unpaid(&err), "{err:?}");
    assert_eq!(backend.calls.load(Ordering::SeqCst), 0);
    assert!(
        fx.tenancy.ledger.reservation("r2").await.is_err(),
        "nothing reserved"
    );
}

async fn refused_requests_do_not_count_toward_rpm(fx: Fixture) {
    let payer = fx.payer(0, Some(1)).await;
    let (serving, backend) = fx.serving(script(vec![admitted(1, 1), finished(1, 1)]), &payer);
    for i in 0..3 {
        let err = serving
            .serve(
                Some(&payer),
                request(&format!("r{i}"), "hi", 1),
                Delivery::Whole,
            )
            .await
            .err();
        assert!(unpaid(&err), "{err:?}");
    }
    fx.tenancy
        .ledger
        .top_up(&payer.tenant.id, 100_000, None)
        .await
        .expect("top up");
    // The next request reads the account afresh.
    let payer = Principal {
        tenant: fx
            .tenancy
            .directory
            .tenant(&payer.tenant.id)
            .await
            .expect("tenant"),
        ..payer
    };
    let mut served = serving
        .serve(Some(&payer), request("ok", "hi", 1), Delivery::Whole)
        .await
        .expect("the first paid request is within the RPM");
    assert_eq!(drain(&mut served).await, None);
    let err = serving
        .serve(Some(&payer), request("over", "hi", 1), Delivery::Whole)
        .await
        .err();
    assert!(
        matches!(
            err,
            Some(ServeError::Tenancy(tenancy::Error::RateLimited { .. }))
        ),
        "{err:?}"
    );
    assert_eq!(backend.calls.load(Ordering::SeqCst), 1);
}

async fn the_reservation_shrinks_to_the_counted_prompt_and_settles_once(fx: Fixture) {
    let payer = fx.payer(100_000, None).await;
    let events = vec![admitted(5, 10), Ok(Event::text("a", 1)), finished(5, 3)];
    let (serving, _) = fx.serving(script(events), &payer);
    let mut served = serving
        .serve(Some(&payer), request("r1", "hello", 10), Delivery::Stream)
        .await
        .expect("served");
    let queued_bound = served.next().await;
    assert!(matches!(queued_bound, Some(Ok(Event::Admitted { .. }))));
    let reservation = fx.tenancy.ledger.reservation("r1").await.expect("r1");
    assert_eq!(
        (reservation.prompt_tokens, reservation.max_completion_tokens),
        (5, 10)
    );
    assert_eq!(fx.held(&payer).await, 5 + 2 * 10);
    assert_eq!(drain(&mut served).await, None);
    drop(served);
    fx.settled().await;
    let entries = fx
        .tenancy
        .ledger
        .entries(&payer.tenant.id)
        .await
        .expect("ledger");
    let charges = entries
        .iter()
        .filter(|e| e.kind == tenancy::LedgerKind::Charge)
        .count();
    assert_eq!(charges, 1, "{entries:?}");
    let again = fx
        .tenancy
        .ledger
        .settle("r1", Default::default())
        .await
        .expect("settle");
    assert!(again.already_settled);
    assert_eq!(again.charged.amount, 5 + 2 * 3);
    let tenant = fx
        .tenancy
        .directory
        .tenant(&payer.tenant.id)
        .await
        .expect("tenant");
    assert_eq!(tenant.balances.balance, 100_000 - 11);
}

async fn a_dropped_stream_settles_what_was_delivered(fx: Fixture) {
    let payer = fx.payer(100_000, None).await;
    let mut s = script(vec![admitted(6, 50), Ok(Event::text("abc", 3))]);
    s.then_wait = true;
    let (serving, _) = fx.serving(s, &payer);
    for (id, delivery, completion) in [("s", Delivery::Stream, 3), ("w", Delivery::Whole, 0)] {
        let mut served = serving
            .serve(Some(&payer), request(id, "hello", 50), delivery)
            .await
            .expect("served");
        assert!(matches!(
            served.next().await,
            Some(Ok(Event::Admitted { .. }))
        ));
        assert!(matches!(served.next().await, Some(Ok(Event::Text { .. }))));
        drop(served);
        fx.settled().await;
        let bill = fx.tenancy.ledger.reservation(id).await.expect("bill");
        let billed = bill.billed.expect("settled");
        assert_eq!(
            (billed.prompt_tokens, billed.completion_tokens),
            (6, completion),
            "{id}"
        );
    }
    assert_eq!(fx.held(&payer).await, 0);
}

async fn a_backend_failure_bills_a_stream_what_it_sent_and_a_whole_answer_nothing(fx: Fixture) {
    let payer = fx.payer(100_000, None).await;
    let s = script(vec![
        admitted(6, 50),
        Ok(Event::text("abc", 3)),
        Err(BackendError::ShuttingDown),
    ]);
    let (serving, _) = fx.serving(s, &payer);
    for (id, delivery) in [("s", Delivery::Stream), ("w", Delivery::Whole)] {
        let mut served = serving
            .serve(Some(&payer), request(id, "hello", 50), delivery)
            .await
            .expect("served");
        let err = drain(&mut served).await;
        assert!(
            matches!(err, Some(ServeError::Backend(BackendError::ShuttingDown))),
            "{id}: {err:?}"
        );
        drop(served);
        fx.settled().await;
        let bill = fx.tenancy.ledger.reservation(id).await.expect("bill");
        if delivery == Delivery::Stream {
            let billed = bill.billed.expect("settled");
            assert_eq!((billed.prompt_tokens, billed.completion_tokens), (6, 3));
        } else {
            // Its client got the error and nothing of the completion (a batch line then runs
            // again, metered under its next attempt).
            assert_eq!(bill.state, ReservationState::Released, "{id}");
        }
    }
    assert_eq!(fx.held(&payer).await, 0);
}

async fn a_request_that_leaves_the_queue_gets_its_hold_back(fx: Fixture) {
    let payer = fx.payer(100_000, None).await;
    let queued = Ok(Event::Queued {
        position: 1,
        eta_ms: 10,
    });
    // Timed out in the queue.
    let timeout = Err(BackendError::QueueTimeout {
        waited_secs: 1,
        retry_after: 1,
    });
    let (serving, _) = fx.serving(script(vec![queued.clone(), timeout]), &payer);
    let mut served = serving
        .serve(Some(&payer), request("t", "hello", 10), Delivery::Stream)
        .await
        .expect("queued");
    assert!(matches!(
        drain(&mut served).await,
        Some(ServeError::Backend(BackendError::QueueTimeout { .. }))
    ));
    assert_eq!(fx.held(&payer).await, 0, "released when it left the queue");
    // Its client went away while it waited.
    let mut waiting = script(vec![queued]);
    waiting.then_wait = true;
    let (serving, _) = fx.serving(waiting, &payer);
    let mut served = serving
        .serve(Some(&payer), request("gone", "hello", 10), Delivery::Stream)
        .await
        .expect("queued");
    assert!(matches!(
        served.next().await,
        Some(Ok(Event::Queued { .. }))
    ));
    assert!(fx.held(&payer).await > 0, "held while queued");
    drop(served);
    fx.settled().await;
    assert_eq!(fx.held(&payer).await, 0);
    let bill = fx.tenancy.ledger.reservation("gone").await.expect("bill");
    assert_eq!(bill.state, ReservationState::Released);
    let balance = fx
        .tenancy
        .directory
        .tenant(&payer.tenant.id)
        .await
        .expect("tenant");
    assert_eq!(balance.balances.balance, 100_000);
}

async fn a_backend_refusal_gives_the_hold_back(fx: Fixture) {
    let payer = fx.payer(100_000, None).await;
    let mut s = script(Vec::new());
    s.refuse = Some(BackendError::Overloaded {
        queued: 8,
        retry_after: 2,
    });
    let (serving, backend) = fx.serving(s, &payer);
    let err = serving
        .serve(Some(&payer), request("r", "hello", 10), Delivery::Whole)
        .await
        .err();
    assert!(matches!(
        err,
        Some(ServeError::Backend(BackendError::Overloaded { .. }))
    ));
    assert!(backend.held_at_generate.lock().expect("lock")[0] > 0);
    assert_eq!(fx.held(&payer).await, 0);
    let bill = fx.tenancy.ledger.reservation("r").await.expect("bill");
    assert_eq!(bill.state, ReservationState::Released);
}

async fn heartbeats_keep_a_long_request_from_being_recovered(fx: Fixture) {
    let payer = fx.payer(100_000, None).await;
    let mut s = script(vec![admitted(5, 10), Ok(Event::text("a", 1))]);
    s.then_wait = true;
    let (serving, _) = fx.serving(s, &payer);
    let mut served = serving
        .serve(Some(&payer), request("long", "hello", 10), Delivery::Stream)
        .await
        .expect("served");
    assert!(matches!(
        served.next().await,
        Some(Ok(Event::Admitted { .. }))
    ));
    let other = Tenancy::new(fx.store.clone(), fx.clock.clone(), &config("proc-b")).expect("b");
    let keeper = fx.tenancy.ledger.spawn_heartbeat();
    for _ in 0..3 {
        // Past the lease; the keeper (every third of the lease) renews it from the new time.
        fx.clock.advance(TimeDelta::milliseconds(2 * LEASE_MS));
        tokio::time::sleep(Duration::from_millis(2 * LEASE_MS as u64 / 3 + 100)).await;
        let recovered = other.ledger.recover().await.expect("recover");
        assert!(recovered.settled.is_empty() && recovered.released.is_empty());
    }
    keeper.abort();
    fx.clock.advance(TimeDelta::milliseconds(2 * LEASE_MS));
    let recovered = other.ledger.recover().await.expect("recover");
    assert_eq!(recovered.released.len() + recovered.settled.len(), 1);
    drop(served);
}

/// Deleting a tenant ends its requests in this process: one whose client stopped reading as
/// well as one being read, each settled for what it delivered; another tenant's runs on.
async fn a_deleted_tenants_requests_end_whether_read_or_not(fx: Fixture) {
    let payer = fx.payer(100_000, None).await;
    let other = fx.named_payer("other", 100_000, None).await;
    let mut s = script(vec![admitted(6, 50), Ok(Event::text("abc", 3))]);
    s.then_wait = true;
    let (serving, backend) = fx.serving(s, &payer);
    let serve = |id: &'static str, who: Principal| {
        let serving = serving.clone();
        async move {
            let mut served = serving
                .serve(Some(&who), request(id, "hello", 50), Delivery::Stream)
                .await
                .expect("served");
            assert!(matches!(
                served.next().await,
                Some(Ok(Event::Admitted { .. }))
            ));
            assert!(matches!(served.next().await, Some(Ok(Event::Text { .. }))));
            served
        }
    };
    // Its client stopped reading.
    let mut stalled = serve("stalled", payer.clone()).await;
    // Its client waits for the next token.
    let mut read = serve("read", payer.clone()).await;
    let reader = tokio::spawn(async move { read.next().await.map(|r| r.map(|_| ())) });
    let others = serve("others", other.clone()).await;
    tokio::time::sleep(Duration::from_millis(20)).await;

    fx.tenancy
        .directory
        .disable_for_removal(&payer.tenant.id)
        .await
        .expect("disable");
    let mut ended = serving.end_tenant(&payer.tenant.id);
    ended.sort();
    assert_eq!(ended, ["read", "stalled"]);
    // The unread one at once; the one being read by its reader, which wakes up to it (on
    // another worker thread, so perhaps already).
    let dropped = backend.dropped();
    assert!(
        dropped.iter().any(|id| id == "stalled") && !dropped.iter().any(|id| id == "others"),
        "the stalled one cancelled at once: {dropped:?}"
    );
    let refused = |r: Option<Result<(), ServeError>>| {
        matches!(
            r,
            Some(Err(ServeError::Tenancy(
                tenancy::Error::PermissionDenied { .. }
            )))
        )
    };
    assert!(refused(reader.await.expect("reader")));
    let mut dropped = backend.dropped();
    dropped.sort();
    assert_eq!(dropped, ["read", "stalled"], "both generations cancelled");
    assert!(refused(stalled.next().await.map(|r| r.map(|_| ()))));
    assert!(stalled.next().await.is_none(), "then the end");
    fx.settled().await;
    for id in ["stalled", "read"] {
        let bill = fx.tenancy.ledger.reservation(id).await.expect("bill");
        assert_eq!(bill.state, ReservationState::Settled, "{id}");
        let billed = bill.billed.expect("settled");
        assert_eq!(
            (billed.prompt_tokens, billed.completion_tokens),
            (6, 3),
            "{id}"
        );
    }
    assert_eq!(fx.held(&payer).await, 0);
    let closed = fx
        .tenancy
        .ledger
        .close_open(&payer.tenant.id, Duration::ZERO);
    assert!(
        closed.await.expect("close").is_empty(),
        "nothing was left open"
    );
    // A request admitted from before the deletion is refused now.
    let again = serving
        .serve(Some(&payer), request("late", "hello", 50), Delivery::Stream)
        .await;
    assert!(matches!(
        again.err(),
        Some(ServeError::Tenancy(tenancy::Error::PermissionDenied { .. }))
    ));
    // The other tenant's request runs on.
    let open = fx.tenancy.ledger.reservation("others").await.expect("bill");
    assert_eq!(open.state, ReservationState::Open);
    assert_eq!(backend.dropped().len(), 2);
    drop(others);
}

async fn embeddings_settle_exactly_the_counted_tokens(fx: Fixture) {
    let payer = fx.payer(100_000, None).await;
    let catalog = Catalog::new(vec![Arc::new(Embedder) as Arc<dyn Backend>], None);
    let serving = Serving::new(catalog, fx.tenancy.clone(), fx.settlements.clone());
    let embed = |id: &str, inputs: &[&str]| backend::EmbedRequest {
        request_id: id.into(),
        model: "e".into(),
        inputs: inputs
            .iter()
            .map(|t| backend::EmbedInput::Text((*t).into()))
            .collect(),
        tenant: Some(payer.tenant.id.clone()),
        dimensions: None,
        priority: backend::Priority::Interactive,
    };
    let out = serving
        .embed(Some(&payer), embed("e1", &["a longer input", "b"]))
        .await
        .expect("embedded");
    assert_eq!(out.prompt_tokens, 6);
    fx.settled().await;
    let settled = fx.tenancy.ledger.settle("e1", Default::default()).await;
    let settled = settled.expect("settled");
    assert!(settled.already_settled);
    assert_eq!(settled.charged.amount, 6, "1 micro-unit per input token");
    assert_eq!(fx.held(&payer).await, 0);

    // A refusal gives the hold back; a generation on the model, or other dimensions, never
    // reach the ledger.
    let refused = serving.embed(Some(&payer), embed("e2", &["refuse"])).await;
    assert!(matches!(refused, Err(ServeError::Backend(_))));
    fx.settled().await;
    assert_eq!(fx.held(&payer).await, 0);
    let mut chat = request("e3", "hi", 4);
    chat.model = "e".into();
    let chat = serving.serve(Some(&payer), chat, Delivery::Whole).await;
    assert!(matches!(
        chat,
        Err(ServeError::Backend(BackendError::InvalidRequest { .. }))
    ));
    let mut other = embed("e4", &["a"]);
    other.dimensions = Some(3);
    assert!(serving.embed(Some(&payer), other).await.is_err());
    assert!(fx.tenancy.ledger.reservation("e3").await.is_err());
    assert!(fx.tenancy.ledger.reservation("e4").await.is_err());
    let tenant = fx.tenancy.directory.tenant(&payer.tenant.id).await;
    assert_eq!(tenant.expect("tenant").balances.balance, 100_000 - 6);
}
