//! Running one dispatched request on a replica: a small task pumps the replica's events to
//! the client's stream and tells the actor when the request ends. Dropping the replica's
//! stream (the client left) cancels the request in the engine.

use std::sync::Arc;

use backend::{
    Backend, BackendError, EmbedRequest, Embeddings, Event, GenerateRequest, Priority,
    TranscribeRequest, Transcription,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;

use super::Command;
use crate::queue::Entry;

pub(crate) type Events = mpsc::UnboundedSender<backend::Result<Event>>;

/// What a request asks a replica for.
pub(crate) enum Work {
    Generate(GenerateRequest),
    /// Embeddings, answered whole on `reply`; the waiter's `events` still carry its place in
    /// line and refusals (queue full, timeout, shutdown).
    Embed {
        request: EmbedRequest,
        reply: oneshot::Sender<backend::Result<Embeddings>>,
    },
    /// A transcription, answered whole on `reply` like an embedding.
    Transcribe {
        request: TranscribeRequest,
        reply: oneshot::Sender<backend::Result<Transcription>>,
    },
}

impl Work {
    pub fn tenant(&self) -> Option<&String> {
        match self {
            Work::Generate(r) => r.tenant.as_ref(),
            Work::Embed { request, .. } => request.tenant.as_ref(),
            Work::Transcribe { request, .. } => request.tenant.as_ref(),
        }
    }

    /// A generation that resumes a stream moved off a lost node (its client is mid-answer).
    pub fn resumes(&self) -> bool {
        matches!(self, Work::Generate(r) if !r.resume.is_empty())
    }

    /// Its priority class (a batch's embeddings are batch work; transcriptions are always
    /// interactive).
    pub fn priority(&self) -> Priority {
        match self {
            Work::Generate(r) => r.priority,
            Work::Embed { request, .. } => request.priority,
            Work::Transcribe { .. } => Priority::Interactive,
        }
    }
}

/// A request waiting for a replica, with the client's stream.
pub(crate) struct Waiter {
    pub work: Work,
    pub events: Events,
    /// The position last reported to the client.
    pub reported: usize,
}

/// A request handed to a replica: from the queue (so a bounce puts it back in its place) or
/// dispatched on arrival.
pub(crate) enum Job {
    Queued(Entry<Waiter>),
    Direct(Waiter),
}

impl Job {
    pub fn waiter(&self) -> &Waiter {
        match self {
            Job::Queued(e) => &e.item,
            Job::Direct(w) => w,
        }
    }

    fn into_waiter(self) -> Waiter {
        match self {
            Job::Queued(e) => e.item,
            Job::Direct(w) => w,
        }
    }
}

/// A request answered whole (an embedding or a transcription).
enum WholeRequest {
    Embed(EmbedRequest),
    Transcribe(TranscribeRequest),
}

/// Runs a whole-answer job on the replica: the answer goes to the job's reply, an overloaded
/// replica sends it back in line.
async fn whole(
    replica: u64,
    backend: Arc<dyn Backend>,
    job: Job,
    request: WholeRequest,
    actor: mpsc::UnboundedSender<Command>,
) {
    let started = tokio::time::Instant::now();
    let (embedded, transcribed) = match request {
        WholeRequest::Embed(r) => (Some(backend.embed(r).await), None),
        WholeRequest::Transcribe(r) => (None, Some(backend.transcribe(r).await)),
    };
    let overloaded = |e: &BackendError| matches!(e, BackendError::Overloaded { .. });
    if embedded
        .as_ref()
        .is_some_and(|r| r.as_ref().is_err_and(overloaded))
        || transcribed
            .as_ref()
            .is_some_and(|r| r.as_ref().is_err_and(overloaded))
    {
        let _ = actor.send(Command::Bounced { replica, job });
        return;
    }
    let completed = embedded.as_ref().is_some_and(Result::is_ok)
        || transcribed.as_ref().is_some_and(Result::is_ok);
    match (job.into_waiter().work, embedded, transcribed) {
        (Work::Embed { reply, .. }, Some(result), _) => {
            let _ = reply.send(result);
        }
        (Work::Transcribe { reply, .. }, _, Some(result)) => {
            let _ = reply.send(result);
        }
        _ => {}
    }
    let _ = actor.send(Command::Done {
        replica,
        class: Priority::Interactive,
        completed,
        tokens: 0,
        service: started.elapsed(),
    });
}

pub(crate) fn spawn(
    replica: u64,
    backend: Arc<dyn Backend>,
    job: Job,
    actor: mpsc::UnboundedSender<Command>,
) {
    tokio::spawn(async move {
        let request = match &job.waiter().work {
            Work::Generate(request) => Ok(request.clone()),
            Work::Embed { request, .. } => Err(WholeRequest::Embed(request.clone())),
            Work::Transcribe { request, .. } => Err(WholeRequest::Transcribe(request.clone())),
        };
        let request = match request {
            Ok(request) => request,
            Err(other) => return whole(replica, backend, job, other, actor).await,
        };
        let started = tokio::time::Instant::now();
        let events = job.waiter().events.clone();
        let class = request.priority;
        let mut stream = match backend.generate(request).await {
            Ok(stream) => stream,
            Err(BackendError::Overloaded { .. }) => {
                let _ = actor.send(Command::Bounced { replica, job });
                return;
            }
            Err(e) => {
                let _ = events.send(Err(e));
                let _ = actor.send(Command::Done {
                    replica,
                    class,
                    completed: false,
                    tokens: 0,
                    service: started.elapsed(),
                });
                return;
            }
        };
        drop(job);
        let mut tokens = 0;
        let mut completed = false;
        loop {
            tokio::select! {
                item = stream.next() => {
                    let Some(item) = item else { break };
                    if let Ok(Event::Finished { usage, .. }) = &item {
                        tokens = usage.completion_tokens;
                        completed = true;
                    }
                    if events.send(item).is_err() {
                        break;
                    }
                }
                () = events.closed() => break,
            }
        }
        drop(stream);
        let _ = actor.send(Command::Done {
            replica,
            class,
            completed,
            tokens,
            service: started.elapsed(),
        });
    });
}
