//! A request's route through a group of scripted members: retried before the first byte, not
//! after; one `Admitted`; fallbacks; the 503 of a group with no healthy member.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use backend::{
    Backend, BackendError, Event, EventStream, FinishReason, GenerateRequest, ModelInfo, Prompt,
    SamplingParams, UpstreamError, Usage,
};
use futures::StreamExt;
use routing::{Group, GroupSpec, Member, Policy, Route, Strategy, Target};

/// A member that answers each call with the next script (the last one repeats).
struct Scripted {
    scripts: Mutex<VecDeque<Vec<Result<Event, BackendError>>>>,
    calls: AtomicUsize,
}

impl Scripted {
    fn new(scripts: Vec<Vec<Result<Event, BackendError>>>) -> Arc<Self> {
        Arc::new(Self {
            scripts: Mutex::new(scripts.into()),
            calls: AtomicUsize::new(0),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl Backend for Scripted {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            id: "m".into(),
            owned_by: "test".into(),
            context_length: None,
            created: 0,
            kind: backend::ModelKind::Generate,
        }
    }

    async fn generate(&self, _: GenerateRequest) -> backend::Result<EventStream> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut scripts = self.scripts.lock().unwrap_or_else(|e| e.into_inner());
        let script = if scripts.len() > 1 {
            scripts.pop_front().unwrap_or_default()
        } else {
            scripts.front().cloned().unwrap_or_default()
        };
        Ok(Box::pin(futures::stream::iter(script)))
    }
}

fn admitted() -> Result<Event, BackendError> {
    Ok(Event::Admitted {
        prompt_tokens: 10,
        max_tokens: 5,
        exact: false,
    })
}

fn answer(text: &str) -> Vec<Result<Event, BackendError>> {
    vec![
        admitted(),
        Ok(Event::text(text, 1)),
        Ok(Event::Finished {
            reason: FinishReason::Stop,
            usage: Usage {
                prompt_tokens: 3,
                completion_tokens: 1,
                cached_tokens: 0,
            },
        }),
    ]
}

fn status(code: u16) -> Vec<Result<Event, BackendError>> {
    vec![
        admitted(),
        Err(BackendError::Upstream(UpstreamError {
            status: code,
            message: format!("{code}"),
            r#type: None,
            code: (code == 400).then(|| "context_length_exceeded".into()),
            param: None,
            retry_after: None,
        })),
    ]
}

fn request() -> GenerateRequest {
    GenerateRequest {
        request_id: "r".into(),
        model: "g".into(),
        prompt: Prompt::Text("hi".into()),
        sampling: SamplingParams::default(),
        max_tokens: Some(5),
        stop: vec![],
        tenant: None,
        tools: vec![],
        tool_choice: Default::default(),
        parallel_tool_calls: true,
        format: Default::default(),
        priority: Default::default(),
        resume: Vec::new(),
    }
}

fn route(members: &[Arc<Scripted>], fallbacks: Vec<(String, Arc<dyn Backend>)>) -> Route {
    let spec = GroupSpec {
        name: "g".into(),
        members: (0..members.len())
            .map(|i| Member {
                target: Target::Deployment(format!("d{i}")),
                weight: 1,
                rpm: None,
                tpm: None,
            })
            .collect(),
        strategy: Strategy::Weighted,
        fallbacks: fallbacks.iter().map(|(n, _)| n.clone()).collect(),
        aliases: vec![],
    };
    let group = Arc::new(Group::new(spec, Policy::default()).unwrap_or_else(|e| panic!("{e:?}")));
    let deployments = members
        .iter()
        .map(|m| Some(Arc::clone(m) as Arc<dyn Backend>))
        .collect();
    Route::new(group, deployments, fallbacks)
}

async fn run(route: &Route) -> (Vec<Result<Event, BackendError>>, routing::Routed) {
    let (stream, report) = route
        .generate_reported(request())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let events: Vec<_> = stream.collect().await;
    let routed = report.lock().unwrap_or_else(|e| e.into_inner()).clone();
    (events, routed)
}

fn texts(events: &[Result<Event, BackendError>]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Ok(Event::Text { text, .. }) => Some(text.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_failure_before_the_first_byte_moves_to_another_member() {
    let (a, b) = (
        Scripted::new(vec![status(500)]),
        Scripted::new(vec![answer("b")]),
    );
    let route = route(&[a.clone(), b.clone()], vec![]);
    let (events, routed) = run(&route).await;
    assert_eq!(texts(&events), ["b"]);
    assert!(events.iter().all(Result::is_ok), "{events:?}");
    // One admission reaches the meter.
    let admitted = events
        .iter()
        .filter(|e| matches!(e, Ok(Event::Admitted { .. })))
        .count();
    assert_eq!(admitted, 1);
    assert_eq!((a.calls(), b.calls()), (1, 1));
    assert_eq!(routed.member.as_deref(), Some("d1"));
    assert_eq!(routed.retries, 1);
}

#[tokio::test]
async fn a_failure_after_the_first_byte_is_not_retried() {
    let mut cut = answer("a");
    cut.truncate(2);
    cut.push(Err(BackendError::Unreachable("cut".into())));
    let (a, b) = (Scripted::new(vec![cut]), Scripted::new(vec![answer("b")]));
    let route = route(&[a.clone(), b.clone()], vec![]);
    let (events, routed) = run(&route).await;
    assert_eq!(texts(&events), ["a"]);
    assert!(matches!(
        events.last(),
        Some(Err(BackendError::Unreachable(_)))
    ));
    assert_eq!((a.calls(), b.calls()), (1, 0));
    assert_eq!((routed.member.as_deref(), routed.retries), (Some("d0"), 0));
}

#[tokio::test]
async fn a_request_error_is_answered_without_retrying() {
    let (a, b) = (
        Scripted::new(vec![status(404)]),
        Scripted::new(vec![answer("b")]),
    );
    let route = route(&[a.clone(), b.clone()], vec![]);
    let (events, _) = run(&route).await;
    assert!(matches!(events.last(), Some(Err(BackendError::Upstream(e))) if e.status == 404));
    assert_eq!(b.calls(), 0);
}

#[tokio::test]
async fn context_overflow_goes_straight_to_the_fallback() {
    let (a, b) = (
        Scripted::new(vec![status(400)]),
        Scripted::new(vec![answer("b")]),
    );
    let big = Scripted::new(vec![answer("big")]);
    let route = route(
        &[a.clone(), b.clone()],
        vec![("big".into(), big.clone() as Arc<dyn Backend>)],
    );
    let (events, routed) = run(&route).await;
    assert_eq!(texts(&events), ["big"]);
    assert_eq!((a.calls(), b.calls(), big.calls()), (1, 0, 1));
    assert_eq!(routed.member.as_deref(), Some("big"));
}

#[tokio::test]
async fn a_group_whose_members_all_rest_answers_503_with_retry_after() {
    let (a, b) = (
        Scripted::new(vec![status(503)]),
        Scripted::new(vec![status(502)]),
    );
    let route = route(&[a.clone(), b.clone()], vec![]);
    // Both fail: the last failure is the answer.
    let (events, _) = run(&route).await;
    assert!(matches!(events.last(), Some(Err(BackendError::Upstream(e))) if e.status >= 502));
    // Both rest now: nothing is tried, and the answer says when to come back.
    let err = match route.generate_reported(request()).await {
        Err(err) => err,
        Ok(_) => panic!("a resting group took a request"),
    };
    match err {
        BackendError::Upstream(e) => {
            assert_eq!(
                (e.status, e.code.as_deref()),
                (503, Some("no_healthy_member"))
            );
            assert!(e.retry_after.is_some_and(|s| s >= 1));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!((a.calls(), b.calls()), (1, 1));
}
