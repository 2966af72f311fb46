//! Rewriting a generation's event stream on its way out (tool calls parsed out of the text,
//! reasoning split from it, several answers merged into one stream), as tasks that end when
//! either side does, so a client gone still cancels the generation.

use backend::{BackendError, Event, FinishReason, Usage};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::{StreamExt, StreamMap};

pub(crate) type Events = mpsc::UnboundedReceiver<Result<Event, BackendError>>;

/// Events from `inner`, each rewritten by `rewrite` into any number of events; errors pass
/// through unchanged. The task ends after `Finished` or an error, or when either side is gone.
pub(crate) fn relay(
    mut inner: Events,
    mut rewrite: impl FnMut(Event) -> Vec<Event> + Send + 'static,
) -> Events {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let item = tokio::select! {
                item = inner.recv() => item,
                () = tx.closed() => return,
            };
            let Some(item) = item else { return };
            let (events, last) = match item {
                Ok(event) => {
                    let last = matches!(event, Event::Finished { .. });
                    (rewrite(event), last)
                }
                Err(err) => {
                    let _ = tx.send(Err(err));
                    return;
                }
            };
            for event in events {
                if tx.send(Ok(event)).is_err() {
                    return;
                }
            }
            if last {
                return;
            }
        }
    });
    rx
}

/// One stream of `n` answers' streams (OpenAI's `n`): each answer's events as
/// [`Event::Choice`], then, once every answer has finished, the request's own `Finished`: the
/// prompt counted once (answer 0's count and cached tokens), the completion tokens of all.
/// `first` goes out before them (the request's `Admitted`). An error of any answer ends the
/// stream; dropping it drops every answer's receiver, which cancels them all.
pub(crate) fn merge(first: Event, answers: Vec<Events>) -> Events {
    let (tx, rx) = mpsc::unbounded_channel();
    let _ = tx.send(Ok(first));
    tokio::spawn(async move {
        let mut streams = StreamMap::new();
        for (index, answer) in answers.into_iter().enumerate() {
            streams.insert(index as u32, UnboundedReceiverStream::new(answer));
        }
        let (n, mut finished) = (streams.len(), 0);
        let (mut total, mut reason) = (Usage::default(), FinishReason::Stop);
        loop {
            let next = tokio::select! {
                next = streams.next() => next,
                () = tx.closed() => return,
            };
            let Some((index, item)) = next else {
                let _ = tx.send(Err(BackendError::Internal(
                    "an answer's stream ended before it finished".into(),
                )));
                return;
            };
            let event = match item {
                Ok(event) => event,
                Err(err) => {
                    let _ = tx.send(Err(err));
                    return;
                }
            };
            if let Event::Finished { reason: r, usage } = &event {
                finished += 1;
                if index == 0 {
                    reason = *r;
                    total.prompt_tokens = usage.prompt_tokens;
                    total.cached_tokens = usage.cached_tokens;
                }
                total.completion_tokens = total
                    .completion_tokens
                    .saturating_add(usage.completion_tokens);
            }
            let event = Event::Choice {
                index,
                event: Box::new(event),
            };
            if tx.send(Ok(event)).is_err() {
                return;
            }
            if finished == n {
                let _ = tx.send(Ok(Event::Finished {
                    reason,
                    usage: total,
                }));
                return;
            }
        }
    });
    rx
}
