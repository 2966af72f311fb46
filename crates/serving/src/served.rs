//! A backend's events with the request's metering applied in order.

use std::sync::Arc;

use backend::{Event, EventStream};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::error::ServeError;
use crate::meter::Meter;
use crate::running::{Parts, Registration, Slot};

/// The events of one served request. Each event is handed out only after its ledger step
/// succeeded; dropping this drops the backend's stream (which cancels the generation) and
/// settles what was delivered. A request ended from outside (its tenant deleted, see
/// `Serving::end_tenant`) is dropped the same way, whether or not it is being read, and its
/// next read is a refusal, then the end.
pub struct Served {
    slot: Arc<Slot>,
    /// Its place among the tenant requests in flight; `None` for the admin's.
    _registration: Option<Registration>,
    /// An event already read and billed, handed out again by the next [`Served::next`].
    unread: Option<Event>,
    /// The refusal for an ended request was handed out.
    ended: bool,
    phases: Phases,
}

/// A request given up while it waited for a place to run ([`Served::next_or_withdrawn`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Withdrawn;

/// The request's time waiting for a place to run (`queue`, until the backend's `Admitted`)
/// and generating (`generation`, until `Finished`), as child spans of the request's.
struct Phases {
    parent: tracing::Span,
    queue: Option<tracing::Span>,
    generation: Option<tracing::Span>,
}

impl Phases {
    fn new(parent: tracing::Span) -> Self {
        let queue = tracing::info_span!(parent: &parent, "queue");
        Self {
            parent,
            queue: Some(queue),
            generation: None,
        }
    }

    fn admitted(&mut self) {
        if self.queue.take().is_some() {
            self.generation = Some(tracing::info_span!(parent: &self.parent, "generation"));
        }
    }

    fn finished(&mut self) {
        self.queue = None;
        self.generation = None;
    }
}

impl Served {
    pub(crate) fn new(
        events: EventStream,
        meter: Option<Meter>,
        registration: Option<Registration>,
        span: tracing::Span,
    ) -> Self {
        let token = registration
            .as_ref()
            .map_or_else(CancellationToken::new, |r| r.token.clone());
        let slot = Slot::new(Parts { events, meter }, token);
        if let Some(registration) = &registration {
            registration.attach(&slot);
        }
        Self {
            slot,
            _registration: registration,
            unread: None,
            ended: false,
            phases: Phases::new(span),
        }
    }

    /// Puts back an event [`Served::next`] returned (its ledger step is not repeated).
    pub fn unread(&mut self, event: Event) {
        self.unread = Some(event);
    }

    /// The refusal of a request ended from outside, once; then the end.
    fn end(&mut self) -> Option<Result<Event, ServeError>> {
        if std::mem::replace(&mut self.ended, true) {
            return None;
        }
        Some(Err(ServeError::Tenancy(tenancy::Error::PermissionDenied {
            message: "this request was ended because its tenant was deleted; it was billed for \
                      what was delivered"
                .into(),
        })))
    }

    /// The next event, or `None` when the backend's stream ended.
    pub async fn next(&mut self) -> Option<Result<Event, ServeError>> {
        // Nothing withdraws it: never `Err`.
        self.next_unless(None).await.unwrap_or_default()
    }

    /// The next event, as [`Served::next`]; or [`Withdrawn`] as soon as `withdraw` fires while
    /// the request still waits for a place to run (before the backend's `Admitted`). Nothing
    /// was taken from the stream then: the caller drops this, which takes the request out of
    /// its queue and releases its hold whole. Once admitted, `withdraw` is ignored (a request
    /// that runs is finished and billed).
    pub async fn next_or_withdrawn(
        &mut self,
        withdraw: &CancellationToken,
    ) -> Result<Option<Result<Event, ServeError>>, Withdrawn> {
        self.next_unless(Some(withdraw)).await
    }

    async fn next_unless(
        &mut self,
        withdraw: Option<&CancellationToken>,
    ) -> Result<Option<Result<Event, ServeError>>, Withdrawn> {
        if let Some(event) = self.unread.take() {
            return Ok(Some(Ok(event)));
        }
        // Only the stream's own read races the withdrawal (it takes nothing when dropped);
        // the ledger steps of an event read are never cut short.
        let withdraw = withdraw.filter(|_| self.phases.queue.is_some());
        let withdrawn = async {
            match withdraw {
                Some(token) => token.cancelled().await,
                None => std::future::pending().await,
            }
        };
        self.next_event(withdrawn).await
    }

    async fn next_event(
        &mut self,
        withdrawn: impl std::future::Future<Output = ()>,
    ) -> Result<Option<Result<Event, ServeError>>, Withdrawn> {
        let Some(mut taken) = self.slot.take() else {
            return Ok(self.end());
        };
        let Some(parts) = taken.parts() else {
            return Ok(self.end());
        };
        let token = self.slot.token.clone();
        let item = tokio::select! {
            biased;
            () = token.cancelled() => None,
            () = withdrawn => return Err(Withdrawn),
            item = parts.events.next() => Some(item),
        };
        let Some(item) = item else {
            drop(taken);
            return Ok(self.end());
        };
        let Some(item) = item else {
            return Ok(None);
        };
        let event = match item {
            Ok(event) => event,
            Err(err) => {
                let err = ServeError::Backend(err);
                if let Some(meter) = &mut parts.meter {
                    if let Some(trail) = meter.trail() {
                        trail.fail(&err);
                    }
                    meter.backend_failed().await;
                }
                return Ok(Some(Err(err)));
            }
        };
        match &event {
            Event::Admitted { .. } => self.phases.admitted(),
            Event::Finished { .. } => self.phases.finished(),
            _ => {}
        }
        if let Some(meter) = &mut parts.meter {
            if !matches!(event, Event::Queued { .. } | Event::Admitted { .. }) {
                if let Some(trail) = meter.trail() {
                    trail.first_byte();
                }
            }
            let billed = match &event {
                Event::Queued { .. } | Event::ToolCall { .. } | Event::Logprobs(_) => Ok(()),
                Event::Admitted {
                    prompt_tokens,
                    max_tokens,
                    exact,
                } => meter.admitted(*prompt_tokens, *max_tokens, *exact).await,
                Event::Text { tokens, .. } | Event::Reasoning { tokens, .. } => {
                    meter.before_send(*tokens).await
                }
                Event::Choice { event, .. } => match event.as_ref() {
                    Event::Text { tokens, .. } | Event::Reasoning { tokens, .. } => {
                        meter.before_send(*tokens).await
                    }
                    // An answer's own end: the stream's `Finished` settles them all.
                    _ => Ok(()),
                },
                Event::Finished { usage, .. } => meter.finish(*usage).await,
            };
            if let Err(err) = billed {
                return Ok(Some(Err(err)));
            }
        }
        Ok(Some(Ok(event)))
    }
}
