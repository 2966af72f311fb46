//! A running deployment: an actor task owning its queue [`State`](crate::queue::State), its
//! replicas and its autoscaler, and a cloneable [`Deployment`] handle that implements
//! [`Backend`], so the gateway serves a deployment exactly as it serves one engine.
//!
//! A request sent to [`Deployment::generate`] is dispatched at once to a ready replica with a
//! free slot, or waits in the fair queue (its stream starts with `Event::Queued` and gets a
//! new one when its place changes), or is refused (`Overloaded`, the queue is full). Past the
//! maximum wait its stream ends with `QueueTimeout`. `generate` returns after the first event,
//! so errors a replica reports before admission (context length, …) are still return values.

mod actor;
mod backlog;
mod forward;
mod replicas;
mod rollout;
mod yielding;

use std::sync::Arc;
use std::time::SystemTime;

use std::sync::{Mutex, PoisonError};

use backend::{
    Backend, BackendError, EmbedRequest, Embeddings, Event, EventStream, GenerateRequest,
    ModelInfo, ModelKind, TranscribeRequest, Transcription,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;

pub use replicas::{ReplicaState, ReplicaView};

use crate::events::ScaleEvent;
use crate::footprint::Footprint;
use crate::launcher::ReplicaLauncher;
use crate::node::{Eviction, Node};
use crate::spec::DeploymentSpec;
use crate::{Error, Result};

/// What the actor is asked to do.
pub(crate) enum Command {
    Enqueue {
        work: forward::Work,
        events: mpsc::UnboundedSender<backend::Result<Event>>,
    },
    /// A dispatched request ended (`tokens` generated; `completed`: it ran to the end).
    Done {
        replica: u64,
        class: backend::Priority,
        completed: bool,
        tokens: u32,
        /// How long the request held its slot (dispatch to end).
        service: std::time::Duration,
    },
    /// A replica's engine refused a dispatched request as overloaded; it goes back in line.
    Bounced { replica: u64, job: forward::Job },
    Started {
        replica: u64,
        result: Result<Arc<dyn Backend>>,
    },
    /// Unload this replica if it is still idle (another deployment needs its room).
    Evict { replica: u64, reason: String },
    Update {
        spec: DeploymentSpec,
        footprint: Footprint,
        reply: oneshot::Sender<()>,
    },
    Describe {
        reply: oneshot::Sender<DeploymentView>,
    },
    Events {
        reply: oneshot::Sender<Vec<ScaleEvent>>,
    },
    /// A batch's runner reports the lines it has left and its deadline; the reply is how
    /// many lines it may keep in flight on this deployment.
    BatchBacklog {
        batch: String,
        lines: usize,
        deadline: SystemTime,
        reply: oneshot::Sender<usize>,
    },
    /// A ready replica's backend, if one is ready (for work beside generation: counting
    /// tokens).
    ReadyReplica {
        reply: oneshot::Sender<Option<Arc<dyn Backend>>>,
    },
    /// Take no new requests, finish the queued and running ones, unload, then reply.
    Shutdown { reply: oneshot::Sender<()> },
    /// Take no new requests, end the queued and running ones now (`ShuttingDown`), unload,
    /// then reply once every replica has stopped (engine threads joined).
    Stop { reply: oneshot::Sender<()> },
}

/// A deployment as the admin API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentView {
    pub spec: DeploymentSpec,
    pub replicas: Vec<ReplicaView>,
    pub queue_length: usize,
    pub in_flight: usize,
    /// Completions per second while work was waiting (the queue's drain rate).
    pub drain_per_sec: f64,
    /// Generated tokens per second while replicas were busy.
    pub tokens_per_sec: f64,
    /// Memory and threads one replica needs.
    pub replica_memory_bytes: u64,
    pub replica_threads: usize,
}

/// A handle on a running deployment; cheap to clone.
#[derive(Clone)]
pub struct Deployment {
    name: Arc<str>,
    created: u64,
    context_length: Option<u32>,
    /// What the deployment's model does (from its header; changes with the model).
    kind: Arc<Mutex<ModelKind>>,
    commands: mpsc::UnboundedSender<Command>,
}

impl Deployment {
    /// Start the deployment's actor (replicas start as its autoscaler decides).
    pub(crate) fn spawn(
        spec: DeploymentSpec,
        footprint: Footprint,
        node: Arc<Node>,
        launcher: Arc<dyn ReplicaLauncher>,
    ) -> Self {
        let (commands, rx) = mpsc::unbounded_channel();
        let evictions = commands.clone();
        node.register(
            &spec.name,
            Box::new(move |eviction: Eviction| {
                // A deployment that has stopped has nothing to unload.
                let _ = evictions.send(Command::Evict {
                    replica: eviction.replica,
                    reason: eviction.reason,
                });
            }),
        );
        let handle = Self {
            name: spec.name.as_str().into(),
            created: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            context_length: spec.context_length,
            kind: Arc::new(Mutex::new(footprint.kind)),
            commands: commands.clone(),
        };
        actor::spawn(actor::Parts {
            spec,
            footprint,
            node,
            launcher,
            commands,
            rx,
        });
        handle
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .map_err(|_| Error::Stopped(self.name.to_string()))?;
        rx.await.map_err(|_| Error::Stopped(self.name.to_string()))
    }

    pub async fn describe(&self) -> Result<DeploymentView> {
        self.ask(|reply| Command::Describe { reply }).await
    }

    pub async fn events(&self) -> Result<Vec<ScaleEvent>> {
        self.ask(|reply| Command::Events { reply }).await
    }

    /// Batch `batch` has `lines` left to finish by `deadline` (0: it is done). The autoscaler
    /// adds replicas when the rate batch lines have been finishing at would miss the deadline.
    /// Returns how many of its lines the batch may keep in flight here: every slot of the
    /// replicas up or starting.
    pub async fn batch_backlog(
        &self,
        batch: &str,
        lines: usize,
        deadline: SystemTime,
    ) -> Result<usize> {
        self.ask(|reply| Command::BatchBacklog {
            batch: batch.to_owned(),
            lines,
            deadline,
            reply,
        })
        .await
    }

    pub(crate) async fn update(&self, spec: DeploymentSpec, footprint: Footprint) -> Result<()> {
        *self.kind.lock().unwrap_or_else(PoisonError::into_inner) = footprint.kind;
        self.ask(|reply| Command::Update {
            spec,
            footprint,
            reply,
        })
        .await
    }

    /// Refuse new requests, let queued and running ones finish, unload every replica.
    pub async fn shutdown(&self) {
        let _ = self.ask(|reply| Command::Shutdown { reply }).await;
    }

    /// Queues `work` and waits for its whole answer on `answer` (queue refusals come as
    /// events meanwhile).
    async fn whole<T>(
        &self,
        work: forward::Work,
        mut answer: tokio::sync::oneshot::Receiver<backend::Result<T>>,
    ) -> backend::Result<T> {
        let (events, mut rx) = mpsc::unbounded_channel();
        self.commands
            .send(Command::Enqueue { work, events })
            .map_err(|_| BackendError::ShuttingDown)?;
        let stopped = || {
            BackendError::Internal(format!(
                "deployment '{}' stopped before answering",
                self.name
            ))
        };
        loop {
            tokio::select! {
                result = &mut answer => return result.map_err(|_| stopped())?,
                event = rx.recv() => match event {
                    Some(Err(e)) => return Err(e),
                    Some(Ok(_)) => {}
                    // Only the answer can come now.
                    None => return (&mut answer).await.map_err(|_| stopped())?,
                },
            }
        }
    }

    /// Refuse new requests and end the queued and running ones now (their streams end with
    /// `ShuttingDown`); returns once every replica has stopped. Also ends a `shutdown` that is
    /// still waiting.
    pub async fn stop(&self) {
        let _ = self.ask(|reply| Command::Stop { reply }).await;
    }
}

#[async_trait::async_trait]
impl Backend for Deployment {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            id: self.name.to_string(),
            owned_by: "flywheel".into(),
            context_length: self.context_length,
            created: self.created,
            kind: *self.kind.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// Queued fairly with the deployment's other requests (and starting a replica at zero,
    /// like a generation), then run whole on one replica.
    async fn embed(&self, request: EmbedRequest) -> backend::Result<Embeddings> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.whole(forward::Work::Embed { request, reply }, answer)
            .await
    }

    /// Queued and run whole like an embedding.
    async fn transcribe(&self, request: TranscribeRequest) -> backend::Result<Transcription> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.whole(forward::Work::Transcribe { request, reply }, answer)
            .await
    }

    /// Counted by a ready replica; with none ready (scaled to zero, or still loading) the
    /// deployment is not started for this: the caller is told to retry.
    async fn count_prompt_tokens(&self, request: &GenerateRequest) -> backend::Result<u32> {
        let replica = self
            .ask(|reply| Command::ReadyReplica { reply })
            .await
            .map_err(|_| BackendError::ShuttingDown)?;
        match replica {
            Some(backend) => backend.count_prompt_tokens(request).await,
            None => Err(BackendError::Unavailable(format!(
                "'{}' has no replica loaded to count tokens with (it is scaled to zero or still \
                 loading). Send it a request to start it, then retry.",
                self.name
            ))),
        }
    }

    async fn generate(&self, request: GenerateRequest) -> backend::Result<EventStream> {
        let (events, mut rx) = mpsc::unbounded_channel();
        self.commands
            .send(Command::Enqueue {
                work: forward::Work::Generate(request),
                events,
            })
            .map_err(|_| BackendError::ShuttingDown)?;
        match rx.recv().await {
            None => Err(BackendError::Internal(format!(
                "deployment '{}' stopped before answering",
                self.name
            ))),
            Some(Err(e)) => Err(e),
            Some(Ok(first)) => Ok(Box::pin(
                tokio_stream::once(Ok(first))
                    .chain(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)),
            )),
        }
    }
}
