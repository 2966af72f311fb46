//! A fake replica and launcher: replicas that take a fixed (virtual) time per request, so the
//! runtime is tested on tokio's paused clock, deterministically.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backend::{
    Backend, BackendError, Event, EventStream, FinishReason, GenerateRequest, ModelInfo, Prompt,
    SamplingParams, Usage,
};
use control::{
    ControlPlane, DeploymentSpec, Footprint, MemoryStore, NodeBudget, ReplicaLauncher, ReplicaSpec,
    Result,
};
use futures::StreamExt;

/// What every fake replica of a test records.
#[derive(Default)]
pub struct Journal {
    /// Request ids in the order replicas started them.
    pub started: Mutex<Vec<String>>,
    /// Models of replicas that served requests, by request id.
    pub served_by: Mutex<Vec<(String, String)>>,
    pub launches: AtomicUsize,
    /// Replicas told to stop (`Backend::stop`).
    pub stops: AtomicUsize,
}

pub struct FakeReplica {
    model: String,
    slots: usize,
    running: Arc<AtomicUsize>,
    /// Of `running`, batch requests: like an engine, the replica takes an interactive request
    /// while only batch work fills its slots (the engine would pre-empt it).
    batch_running: Arc<AtomicUsize>,
    work: Duration,
    journal: Arc<Journal>,
    /// Set by `stop`: running requests end with `ShuttingDown`.
    stopped: tokio::sync::watch::Sender<bool>,
}

#[async_trait::async_trait]
impl Backend for FakeReplica {
    /// Takes a slot for `work`, like a generation; one `[1.0]` per input, a token each.
    async fn embed(&self, request: backend::EmbedRequest) -> backend::Result<backend::Embeddings> {
        if self.running.load(Ordering::SeqCst) >= self.slots {
            return Err(BackendError::Overloaded {
                queued: 0,
                retry_after: 1,
            });
        }
        self.running.fetch_add(1, Ordering::SeqCst);
        self.journal
            .started
            .lock()
            .unwrap()
            .push(request.request_id.clone());
        tokio::time::sleep(self.work).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok(backend::Embeddings {
            vectors: request.inputs.iter().map(|_| vec![1.0]).collect(),
            prompt_tokens: request.inputs.len() as u32,
        })
    }

    async fn stop(&self) {
        self.journal.stops.fetch_add(1, Ordering::SeqCst);
        self.stopped.send_replace(true);
    }

    fn info(&self) -> ModelInfo {
        ModelInfo {
            id: self.model.clone(),
            owned_by: "test".into(),
            context_length: None,
            created: 0,
            kind: backend::ModelKind::Generate,
        }
    }

    async fn generate(&self, request: GenerateRequest) -> backend::Result<EventStream> {
        let batch = request.priority == backend::Priority::Batch;
        let running = self.running.load(Ordering::SeqCst);
        let busy = if batch {
            running
        } else {
            running - self.batch_running.load(Ordering::SeqCst)
        };
        if busy >= self.slots {
            return Err(BackendError::Overloaded {
                queued: 0,
                retry_after: 1,
            });
        }
        self.running.fetch_add(1, Ordering::SeqCst);
        let batch_running = batch.then(|| self.batch_running.clone());
        if let Some(n) = &batch_running {
            n.fetch_add(1, Ordering::SeqCst);
        }
        self.journal
            .started
            .lock()
            .unwrap()
            .push(request.request_id.clone());
        self.journal
            .served_by
            .lock()
            .unwrap()
            .push((request.request_id.clone(), self.model.clone()));
        let running = self.running.clone();
        let work = self.work;
        let mut stopped = self.stopped.subscribe();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let _ = tx.send(Ok(Event::Admitted {
            prompt_tokens: 3,
            max_tokens: 2,
            exact: true,
        }));
        tokio::spawn(async move {
            struct Release(Arc<AtomicUsize>, Option<Arc<AtomicUsize>>);
            impl Drop for Release {
                fn drop(&mut self) {
                    if let Some(batch) = &self.1 {
                        batch.fetch_sub(1, Ordering::SeqCst);
                    }
                    self.0.fetch_sub(1, Ordering::SeqCst);
                }
            }
            let _release = Release(running, batch_running);
            tokio::select! {
                () = tokio::time::sleep(work) => {}
                () = tx.closed() => return,
                _ = stopped.wait_for(|s| *s) => {
                    let _ = tx.send(Err(BackendError::ShuttingDown));
                    return;
                }
            }
            let _ = tx.send(Ok(Event::text("ok", 2)));
            let _ = tx.send(Ok(Event::Finished {
                reason: FinishReason::Length,
                usage: Usage {
                    prompt_tokens: 3,
                    completion_tokens: 2,
                    cached_tokens: 0,
                },
            }));
        });
        Ok(Box::pin(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        ))
    }
}

pub struct FakeLauncher {
    pub load: Duration,
    pub work: Duration,
    pub journal: Arc<Journal>,
}

#[async_trait::async_trait]
impl ReplicaLauncher for FakeLauncher {
    async fn footprint(&self, spec: &ReplicaSpec) -> Result<Footprint> {
        Ok(Footprint {
            weights_key: spec.model.clone(),
            weights_bytes: 100 << 20,
            private_bytes: (spec.slots as u64) << 20,
            threads: spec.threads,
            kind: backend::ModelKind::Generate,
        })
    }

    async fn start(&self, spec: &ReplicaSpec) -> Result<Arc<dyn Backend>> {
        tokio::time::sleep(self.load).await;
        if spec.model == "broken" {
            return Err(control::Error::Launch("broken: not a GGUF file".into()));
        }
        self.journal.launches.fetch_add(1, Ordering::SeqCst);
        Ok(Arc::new(FakeReplica {
            model: spec.model.clone(),
            slots: spec.slots,
            running: Arc::default(),
            batch_running: Arc::default(),
            work: self.work,
            journal: self.journal.clone(),
            stopped: tokio::sync::watch::Sender::new(false),
        }))
    }
}

pub struct Fixture {
    pub plane: ControlPlane,
    pub journal: Arc<Journal>,
}

/// A control plane on a node of `threads` threads and 8 GiB with fake replicas that load in
/// `load` and answer each request after `work`.
pub fn fixture(threads: usize, load: Duration, work: Duration) -> Fixture {
    let journal = Arc::new(Journal::default());
    let launcher = Arc::new(FakeLauncher {
        load,
        work,
        journal: journal.clone(),
    });
    let plane = ControlPlane::new(
        NodeBudget {
            memory_bytes: 8 << 30,
            threads,
        },
        launcher,
        Arc::new(MemoryStore::default()),
    );
    Fixture { plane, journal }
}

pub fn spec(name: &str, min: usize, max: usize, slots: usize) -> DeploymentSpec {
    DeploymentSpec {
        min_replicas: min,
        max_replicas: max,
        slots_per_replica: slots,
        ..DeploymentSpec::new(name, "model-v1")
    }
}

pub fn request(id: &str, tenant: Option<&str>) -> GenerateRequest {
    GenerateRequest {
        request_id: id.into(),
        model: "m".into(),
        prompt: Prompt::Text("hi".into()),
        sampling: SamplingParams::default(),
        max_tokens: Some(2),
        stop: Vec::new(),
        tenant: tenant.map(str::to_owned),
        tools: Vec::new(),
        tool_choice: Default::default(),
        parallel_tool_calls: true,
        format: Default::default(),
        priority: Default::default(),
        resume: Vec::new(),
    }
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Finished { queued_events: usize },
    Refused(BackendError),
    Failed(BackendError),
}

/// Send a request and read its stream to the end.
pub async fn run(backend: &dyn Backend, req: GenerateRequest) -> Outcome {
    match backend.generate(req).await {
        Err(e) => Outcome::Refused(e),
        Ok(stream) => finish(stream).await,
    }
}

pub async fn finish(mut stream: EventStream) -> Outcome {
    let mut queued_events = 0;
    while let Some(item) = stream.next().await {
        match item {
            Ok(Event::Queued { .. }) => queued_events += 1,
            Ok(Event::Finished { .. }) => return Outcome::Finished { queued_events },
            Ok(_) => {}
            Err(e) => return Outcome::Failed(e),
        }
    }
    Outcome::Failed(BackendError::Internal(
        "stream ended without Finished".into(),
    ))
}

/// Wait (virtual time) until `f` holds for the deployment's view, at most `secs` seconds.
pub async fn wait_until(
    plane: &ControlPlane,
    name: &str,
    secs: u64,
    f: impl Fn(&control::DeploymentView) -> bool,
) -> control::DeploymentView {
    for _ in 0..secs * 10 {
        let view = plane.describe(name).await.unwrap();
        if f(&view) {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let view = plane.describe(name).await.unwrap();
    panic!("condition not reached in {secs} s: {view:#?}");
}

pub fn ready(view: &control::DeploymentView) -> usize {
    view.replicas
        .iter()
        .filter(|r| r.state == control::ReplicaState::Ready)
        .count()
}
