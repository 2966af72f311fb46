//! Failover with migration: a stream whose node dies (its connection lost, its lease expired,
//! or it shut down) goes on from another node. The gateway keeps the token ids of the text it
//! delivered ([`backend::Event::Text`]'s `ids`), sends the request again with them as
//! [`GenerateRequest::resume`], and continues the same client stream from the first token not
//! yet delivered: nothing repeated, nothing missing, never re-tokenized from text. The client
//! sees one `Admitted` and one `Finished`, whose usage counts the original prompt and every
//! delivered token once, so the request is metered and billed once.
//!
//! A stream that delivered anything without ids (reasoning, tool calls, several answers, text
//! an upstream produced) cannot be resumed exactly and ends with the node's error, as before.

use std::collections::BTreeSet;
use std::time::Instant;

use backend::{BackendError, Event, EventStream, FinishReason, GenerateRequest, Usage};
use futures::StreamExt;
use tokio::sync::watch;

use super::route::{try_another, ClusterDeployment, Counted};
use super::Member;

/// A stream moves at most this many times (each move loses a node).
const MAX_MOVES: u32 = 3;

/// Wraps the first node's stream of `request` so that it survives that node's loss.
pub(super) fn follow(
    route: ClusterDeployment,
    request: GenerateRequest,
    (node, counted): (Member, Counted),
    stream: EventStream,
) -> EventStream {
    let follower = Follower {
        route,
        request,
        node,
        stream,
        _counted: Some(counted),
        skip: BTreeSet::new(),
        delivered: Vec::new(),
        resumable: true,
        prompt_tokens: None,
        base: 0,
        moves: 0,
        done: false,
    };
    Box::pin(futures::stream::unfold(follower, |mut f| async move {
        let item = f.next().await?;
        Some((item, f))
    }))
}

struct Follower {
    route: ClusterDeployment,
    request: GenerateRequest,
    /// The node streaming now, counted against it until the stream ends.
    node: Member,
    stream: EventStream,
    _counted: Option<Counted>,
    /// Nodes that failed this request.
    skip: BTreeSet<String>,
    /// Ids of the tokens whose text the client has.
    delivered: Vec<u32>,
    /// Everything delivered so far has its ids.
    resumable: bool,
    /// The prompt's tokens, from the first `Admitted`.
    prompt_tokens: Option<u32>,
    /// Tokens delivered before the current node's stream began (its prompt holds them).
    base: u32,
    moves: u32,
    done: bool,
}

/// Returns once `node` is no longer a member (its lease expired or it left).
async fn gone(members: &mut watch::Receiver<Vec<Member>>, node: &str) {
    loop {
        if !members.borrow_and_update().iter().any(|m| m.id == node) {
            return;
        }
        if members.changed().await.is_err() {
            // Membership is no longer watched: only the stream itself can say.
            return std::future::pending().await;
        }
    }
}

impl Follower {
    async fn next(&mut self) -> Option<Result<Event, BackendError>> {
        let item = self.step().await;
        if self.done {
            // Ended: the node no longer counts it, whenever the client drops the stream.
            self._counted = None;
        }
        item
    }

    async fn step(&mut self) -> Option<Result<Event, BackendError>> {
        while !self.done {
            let item = tokio::select! {
                item = self.stream.next() => item.unwrap_or_else(|| Err(BackendError::Unreachable(
                    format!("node {} ended the stream before it finished", self.node.id),
                ))),
                () = gone(&mut self.route.members, &self.node.id) => Err(BackendError::Unreachable(
                    format!("node {} left the cluster mid-stream (its lease expired)", self.node.id),
                )),
            };
            match item {
                Ok(event) => {
                    if let Some(event) = self.pass(event) {
                        return Some(Ok(event));
                    }
                }
                Err(e) if try_another(&e) && self.resumable && self.moves < MAX_MOVES => {
                    match self.resume(&e).await {
                        Ok(None) => {}
                        Ok(Some(finished)) => return Some(Ok(finished)),
                        Err(e) => {
                            self.done = true;
                            return Some(Err(e));
                        }
                    }
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }

    /// What the client gets of `event`, noting what it delivers; `None`: nothing (a resumed
    /// node's own `Queued` and `Admitted`).
    fn pass(&mut self, event: Event) -> Option<Event> {
        match event {
            Event::Queued { .. } if self.prompt_tokens.is_some() => None,
            Event::Admitted { prompt_tokens, .. } => match self.prompt_tokens {
                Some(_) => None,
                None => {
                    self.prompt_tokens = Some(prompt_tokens);
                    Some(event)
                }
            },
            Event::Text {
                ref text,
                tokens,
                ref ids,
            } => {
                if ids.len() != tokens as usize || (ids.is_empty() && !text.is_empty()) {
                    self.resumable = false;
                }
                self.delivered.extend_from_slice(ids);
                Some(event)
            }
            Event::Finished { reason, usage } => {
                self.done = true;
                Some(Event::Finished {
                    reason,
                    usage: self.usage(usage),
                })
            }
            Event::Reasoning { .. } | Event::ToolCall { .. } | Event::Choice { .. } => {
                self.resumable = false;
                Some(event)
            }
            other @ (Event::Queued { .. } | Event::Logprobs(_)) => Some(other),
        }
    }

    /// A resumed node's usage as the client's: the original prompt, every delivered token.
    fn usage(&self, usage: Usage) -> Usage {
        if self.base == 0 {
            return usage;
        }
        let prompt = self
            .prompt_tokens
            .unwrap_or_else(|| usage.prompt_tokens.saturating_sub(self.base));
        Usage {
            prompt_tokens: prompt,
            completion_tokens: usage.completion_tokens.saturating_add(self.base),
            cached_tokens: usage.cached_tokens.min(prompt),
        }
    }

    /// Send the request with what was delivered to another node and stream from it. `Some`:
    /// the delivered tokens already reach `max_tokens`, so the stream ends here.
    async fn resume(&mut self, cause: &BackendError) -> Result<Option<Event>, BackendError> {
        self.moves += 1;
        self.skip.insert(self.node.id.clone());
        let delivered = u32::try_from(self.delivered.len()).unwrap_or(u32::MAX);
        if let (Some(max), Some(prompt)) = (self.request.max_tokens, self.prompt_tokens) {
            if delivered >= max {
                self.done = true;
                return Ok(Some(Event::Finished {
                    reason: FinishReason::Length,
                    usage: Usage {
                        prompt_tokens: prompt,
                        completion_tokens: delivered,
                        cached_tokens: 0,
                    },
                }));
            }
        }
        let since = Instant::now();
        let mut request = self.request.clone();
        request.resume = self.delivered.clone();
        loop {
            let node = self.route.wait_for_node(&self.skip, (since, None)).await?;
            let counted = Counted::new(&self.route.in_flight, &node.id);
            let backend = self.route.connector.connect(&node, &self.route.info.id);
            match backend.generate(request.clone()).await {
                Ok(stream) => {
                    tracing::warn!(
                        deployment = %self.route.info.id,
                        request = %self.request.request_id,
                        from = %self.node.id,
                        to = %node.id,
                        delivered_tokens = delivered,
                        cause = %cause,
                        "stream moved to another node"
                    );
                    metrics::counter!("flywheel_cluster_stream_moves_total",
                        "deployment" => self.route.info.id.clone())
                    .increment(1);
                    self.stream = stream;
                    self.node = node;
                    self._counted = Some(counted);
                    self.base = delivered;
                    return Ok(None);
                }
                Err(e) if try_another(&e) => {
                    tracing::warn!(node = %node.id, error = %e, "node unreachable for a resumed stream; trying another");
                    self.skip.insert(node.id);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
#[path = "migrate_tests.rs"]
mod tests;
