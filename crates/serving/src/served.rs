//! A backend's events with the request's metering applied in order.

use backend::{Event, EventStream};
use futures::StreamExt;

use crate::error::ServeError;
use crate::meter::Meter;

/// The events of one served request. Each event is handed out only after its ledger step
/// succeeded; dropping this drops the backend's stream (which cancels the generation) and
/// settles what was delivered.
pub struct Served {
    events: EventStream,
    /// `None` for requests nobody pays for (the admin key).
    meter: Option<Meter>,
    /// An event already read and billed, handed out again by the next [`Served::next`].
    unread: Option<Event>,
}

impl Served {
    pub(crate) fn new(events: EventStream, meter: Option<Meter>) -> Self {
        Self {
            events,
            meter,
            unread: None,
        }
    }

    /// Puts back an event [`Served::next`] returned (its ledger step is not repeated).
    pub fn unread(&mut self, event: Event) {
        self.unread = Some(event);
    }

    /// The next event, or `None` when the backend's stream ended.
    pub async fn next(&mut self) -> Option<Result<Event, ServeError>> {
        if let Some(event) = self.unread.take() {
            return Some(Ok(event));
        }
        let event = match self.events.next().await? {
            Ok(event) => event,
            Err(err) => {
                if let Some(meter) = &mut self.meter {
                    meter.backend_failed().await;
                }
                return Some(Err(ServeError::Backend(err)));
            }
        };
        if let Some(meter) = &mut self.meter {
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
                return Some(Err(err));
            }
        }
        Some(Ok(event))
    }
}
