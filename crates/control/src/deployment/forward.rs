//! Running one dispatched request on a replica: a small task pumps the replica's events to
//! the client's stream and tells the actor when the request ends. Dropping the replica's
//! stream (the client left) cancels the request in the engine.

use std::sync::Arc;

use backend::{Backend, BackendError, Event, GenerateRequest};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use super::Command;
use crate::queue::Entry;

pub(crate) type Events = mpsc::UnboundedSender<backend::Result<Event>>;

/// A request waiting for a replica, with the client's stream.
pub(crate) struct Waiter {
    pub request: GenerateRequest,
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
}

pub(crate) fn spawn(
    replica: u64,
    backend: Arc<dyn Backend>,
    job: Job,
    actor: mpsc::UnboundedSender<Command>,
) {
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let request = job.waiter().request.clone();
        let events = job.waiter().events.clone();
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
            completed,
            tokens,
            service: started.elapsed(),
        });
    });
}
