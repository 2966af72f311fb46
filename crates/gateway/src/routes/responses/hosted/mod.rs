//! `/v1/responses` with `mcp` tools: Flywheel runs the loop. Each server is opened (a
//! registered one by its label, or the request's `server_url` under the outbound rules) and
//! its tools listed (an `mcp_list_tools` item, unless the conversation already has one for
//! it); each model turn goes through the serving path (admitted and billed like any
//! generation); a call the model proposes is made at once (`mcp_call`, metered per call) or,
//! where `require_approval` asks for it, returned as an `mcp_approval_request` that a later
//! request answers with an `mcp_approval_response`. The loop ends on a turn without MCP calls,
//! on a function call for the client, on an approval request, or after [`MAX_TURNS`].
//!
//! Whole and streamed responses take the same loop; a whole one drops the stream's frames and
//! keeps the response object the last event carries.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::Json;
use backend::{ChatMessage, Event, FinishReason, Prompt, Tool, ToolChoice, Usage};
use bytes::Bytes;
use mcp::{Hosted, Mcp, McpCaller};
use serde_json::{json, Value};
use tokio::sync::mpsc;

mod open;

use super::super::generate::{run, Outcome};
use crate::auth::Caller;
use crate::error::{ApiError, Code, Result};
use crate::metrics::{self, ModelLabel};
use crate::sse::{Encoder, Source};
use crate::wire::responses::hosted::{self as wire, McpTool};
use crate::wire::responses::items::{self, Item};
use crate::wire::responses::view::ResponseEvents;
use crate::wire::tools::ToolCallView;
use crate::wire::ValidRequest;
use crate::AppState;

/// Model turns in one response, at most.
pub const MAX_TURNS: u32 = 8;

/// What the model is told when it may call no more MCP tools.
const ANSWER_NOW: &str = "You have the results of the tool calls above. Answer the user's question from them, in plain words, without calling a tool.";

/// A served model's turn, and what the loop needs to start.
pub(super) struct Setup {
    /// The first turn's request (the conversation so far, function tools, `tool_choice`).
    pub valid: ValidRequest,
    pub servers: Vec<McpTool>,
    pub mcp_choice: Option<(String, Option<String>)>,
    /// Earlier turns and this request's input.
    pub conversation: Vec<Item>,
    /// This request's input (for approval answers).
    pub input: Vec<Item>,
    pub max_calls: Option<u32>,
    pub id: String,
    pub events: ResponseEvents,
}

/// One tool the model is offered: which server, its own name, and the name the model uses.
struct Offered {
    server: usize,
    tool: String,
    read_only: bool,
}

/// What the model proposed in one turn.
struct Proposal {
    model_name: String,
    arguments: String,
}

/// The loop's state.
struct Agent {
    state: AppState,
    caller: Caller,
    mcp: Arc<Mcp>,
    mcp_caller: McpCaller,
    servers: Vec<(McpTool, Hosted)>,
    /// By the name the model calls it.
    offered: HashMap<String, Offered>,
    /// The MCP tools as the model is offered them.
    mcp_tools: Vec<Tool>,
    /// The first turn is restricted to these (a `tool_choice` naming a server).
    first_tools: Option<Vec<Tool>>,
    base: ValidRequest,
    messages: Vec<ChatMessage>,
    /// Items written before the first turn (lists, calls the client approved).
    preface: Vec<Item>,
    calls: u32,
    max_calls: Option<u32>,
    /// The calls made, as `(model name, arguments)`: a model proposing one again is looping
    /// (small models do), so the next turn is offered no MCP tools and answers.
    made: HashSet<(String, Value)>,
    /// No more MCP tools are offered (a repeated call, or the calls ran out).
    tools_off: bool,
    id: String,
    events: ResponseEvents,
    usage: Usage,
}

/// Where the frames go: the client's stream, or nowhere (a whole response).
enum Sink {
    Stream(mpsc::Sender<Bytes>),
    Discard,
}

impl Sink {
    /// Sends what `out` holds; `false` once the client has gone.
    async fn flush(&mut self, out: &mut Vec<u8>) -> bool {
        let bytes = std::mem::take(out);
        match self {
            Sink::Discard => true,
            Sink::Stream(tx) => bytes.is_empty() || tx.send(bytes.into()).await.is_ok(),
        }
    }
}

pub(super) async fn respond(
    state: &AppState,
    caller: &Caller,
    setup: Setup,
    label: &mut ModelLabel,
) -> Result<Response> {
    let mut agent = Agent::open(state, caller, setup).await?;
    let stream = agent.base.stream;
    let first = agent.turn_request(0);
    // The first turn is asked for before anything is sent, so its refusals are statuses.
    let outcome = run(state, caller, &first, agent.id.clone(), label).await;
    let source = match outcome {
        Ok(Outcome::Stream(source)) => *source,
        Ok(Outcome::Whole(_)) => {
            agent.close().await;
            return Err(ApiError::new(
                Code::Internal,
                "the first turn was not streamed",
            ));
        }
        Err(err) => {
            agent.close().await;
            return Err(err.map_param(super::rename));
        }
    };
    if !stream {
        let mut sink = Sink::Discard;
        let result = agent.drive(&mut sink, source).await;
        let finished = agent.events.take_finished();
        agent.close().await;
        result?;
        return finished
            .map(|response| Json(response).into_response())
            .ok_or_else(|| ApiError::new(Code::Internal, "the response did not finish"));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(32);
    tokio::spawn(async move {
        let mut sink = Sink::Stream(tx);
        if let Err(err) = agent.drive(&mut sink, source).await {
            let mut out = Vec::new();
            tracing::warn!(id = %agent.id, error = %err, "a response with MCP tools failed after it started");
            agent.events.fail(&mut out, &err);
            sink.flush(&mut out).await;
        }
        agent.close().await;
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(bytes), rx))
    });
    Ok(crate::sse::event_stream(Body::from_stream(body)))
}

impl Agent {
    fn suffix(&self) -> &str {
        self.id.trim_start_matches("resp_")
    }

    /// One call of a server's tool: `(output, error)` as an `mcp_call` reports them.
    async fn call(
        &mut self,
        server: usize,
        tool: &str,
        arguments: &str,
    ) -> (Option<String>, Option<Value>) {
        self.calls += 1;
        let arguments = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
        let hosted = &self.servers[server].1;
        let result = self
            .mcp
            .hosted_call(&self.mcp_caller, hosted, tool, arguments)
            .await;
        wire::call_outcome(result)
    }

    /// The next turns are offered no MCP tool and the model is told to answer from the
    /// results it has (a message of this response only, not of the stored conversation).
    fn answer_now(&mut self) {
        if !self.tools_off {
            self.tools_off = true;
            self.messages.push(ChatMessage::text("system", ANSWER_NOW));
        }
    }

    /// Turn `turn`'s request: the conversation so far and the tools it may call.
    fn turn_request(&self, turn: u32) -> ValidRequest {
        let mut request = self.base.clone();
        request.prompt = Prompt::Chat(self.messages.clone());
        request.stream = true;
        if turn == 0 {
            match &self.first_tools {
                Some(only) => request.tools.tools = only.clone(),
                None => request.tools.tools.extend(self.mcp_tools.iter().cloned()),
            }
        } else {
            // Later turns may answer: the first turn's choice is not forced again.
            request.tools.choice = ToolChoice::Auto;
            if !self.tools_off {
                request.tools.tools.extend(self.mcp_tools.iter().cloned());
            }
        }
        request
    }

    /// Runs the turns, writing their events; the first turn's events are `source`.
    async fn drive(&mut self, sink: &mut Sink, source: Source) -> Result<()> {
        let mut out = Vec::new();
        self.events.open(&mut out);
        for item in std::mem::take(&mut self.preface) {
            match item {
                Item::McpListTools { .. } => self.events.mcp_list_tools(&mut out, item),
                _ => self.events.whole_item(&mut out, item),
            }
        }
        if !sink.flush(&mut out).await {
            return Ok(());
        }
        let mut source = Some(source);
        let mut turn = 0;
        loop {
            let source = match source.take() {
                Some(source) => source,
                None => {
                    let request = self.turn_request(turn);
                    let mut label = ModelLabel(String::new());
                    // Each turn is its own billed request: `<response id>_t<turn>`.
                    let id = format!("{}_t{turn}", self.id);
                    match run(&self.state, &self.caller, &request, id, &mut label).await? {
                        Outcome::Stream(source) => *source,
                        Outcome::Whole(_) => {
                            return Err(ApiError::new(Code::Internal, "a turn was not streamed"))
                        }
                    }
                }
            };
            let Some(step) = self.turn(sink, source).await? else {
                return Ok(());
            };
            let Step {
                reason,
                text,
                proposals,
                client_calls,
            } = step;
            let mut made = Vec::new();
            let mut waiting = false;
            let mut repeated = false;
            for (k, proposal) in proposals.into_iter().enumerate() {
                let Some(offered) = self.offered.get(&proposal.model_name) else {
                    continue;
                };
                let key = (
                    proposal.model_name.clone(),
                    serde_json::from_str(&proposal.arguments).unwrap_or(Value::Null),
                );
                if !self.made.insert(key) {
                    repeated = true;
                    continue;
                }
                let (server, tool, read_only) =
                    (offered.server, offered.tool.clone(), offered.read_only);
                let label = self.servers[server].0.label.clone();
                if self.servers[server].0.approval.needed(&tool, read_only) {
                    waiting = true;
                    let item = Item::McpApprovalRequest {
                        id: format!("mcpr_{}_{turn}_{k}", self.suffix()),
                        server_label: label,
                        name: tool,
                        arguments: proposal.arguments,
                    };
                    self.events.whole_item(&mut out, item);
                    continue;
                }
                let id = format!("mcp_{}_{turn}_{k}", self.suffix());
                self.events
                    .mcp_call_started(&mut out, &id, &label, &tool, &proposal.arguments);
                if !sink.flush(&mut out).await {
                    return Ok(());
                }
                let (output, error) = self.call(server, &tool, &proposal.arguments).await;
                let item = Item::McpCall {
                    id,
                    server_label: label,
                    name: tool,
                    arguments: proposal.arguments,
                    output,
                    error,
                    approval_request_id: None,
                };
                self.events.mcp_call_done(&mut out, item.clone());
                made.push(item);
            }
            turn += 1;
            if repeated && made.is_empty() && !waiting && !client_calls && !self.tools_off {
                // The model asked for what it already has (small models loop so): it is told
                // to answer from it, and offered no MCP tool again.
                self.answer_now();
                if turn < MAX_TURNS {
                    self.events.next_turn();
                    continue;
                }
            }
            if made.is_empty() || waiting || client_calls || turn >= MAX_TURNS {
                self.events.finish(&mut out, reason, self.usage);
                if let Some(work) = self.events.settle() {
                    work.await;
                }
                sink.flush(&mut out).await;
                return Ok(());
            }
            if !sink.flush(&mut out).await {
                return Ok(());
            }
            let mut said = Vec::with_capacity(made.len() + 1);
            if !text.is_empty() {
                said.push(Item::Message {
                    role: "assistant".into(),
                    content: text,
                });
            }
            said.extend(made);
            self.messages.extend(conversation_messages(&said)?);
            let calls_left = self.max_calls.is_none_or(|max| self.calls < max);
            if turn + 1 >= MAX_TURNS || !calls_left {
                self.answer_now();
            }
            self.events.next_turn();
        }
    }

    /// Writes one turn's events; `None` if the client went away.
    async fn turn(&mut self, sink: &mut Sink, source: Source) -> Result<Option<Step>> {
        let Source {
            mut events,
            first,
            model,
            prompt_param,
            ..
        } = source;
        let mut out = Vec::new();
        let mut pending = first;
        let mut so_far = self.usage;
        let mut step = Step {
            reason: FinishReason::Stop,
            text: String::new(),
            proposals: Vec::new(),
            client_calls: false,
        };
        loop {
            let event = match pending.take() {
                Some(event) => event,
                None => match events.next().await {
                    Some(event) => event.map_err(|err| ApiError::from_serve(err, prompt_param))?,
                    None => {
                        return Err(ApiError::new(
                            Code::Internal,
                            "the backend's stream ended before the generation finished",
                        ))
                    }
                },
            };
            match event {
                Event::Queued { position, eta_ms } => {
                    crate::sse::queue_comment(&mut out, position, eta_ms)
                }
                Event::Text { text, tokens, .. } => {
                    so_far.completion_tokens = so_far.completion_tokens.saturating_add(tokens);
                    if !text.is_empty() {
                        step.text.push_str(&text);
                        self.events.text(&mut out, &text, so_far);
                    }
                }
                Event::Reasoning { text, tokens } => {
                    so_far.completion_tokens = so_far.completion_tokens.saturating_add(tokens);
                    if !text.is_empty() {
                        self.events.reasoning(&mut out, &text, so_far);
                    }
                }
                Event::ToolCall {
                    index,
                    id,
                    name,
                    arguments,
                } => {
                    if self.offered.contains_key(&name) {
                        step.proposals.push(Proposal {
                            model_name: name,
                            arguments,
                        });
                    } else {
                        step.client_calls = true;
                        let call = ToolCallView::new(id, name, arguments);
                        self.events.tool_call(&mut out, index, call, so_far);
                    }
                }
                Event::Finished { reason, usage } => {
                    metrics::record_usage(&model, usage);
                    self.usage = add(self.usage, usage);
                    step.reason = reason;
                    return Ok(sink.flush(&mut out).await.then_some(step));
                }
                Event::Admitted { .. } | Event::Logprobs(_) | Event::Choice { .. } => {}
            }
            if !sink.flush(&mut out).await {
                return Ok(None);
            }
        }
    }

    /// Ends what the servers opened for this response.
    async fn close(&mut self) {
        for (_, hosted) in self.servers.drain(..) {
            self.mcp.hosted_close(hosted).await;
        }
    }
}

/// What one turn ended with.
struct Step {
    reason: FinishReason,
    /// The turn's text (part of the conversation the next turn sees).
    text: String,
    proposals: Vec<Proposal>,
    /// The model called a function tool: the client answers it.
    client_calls: bool,
}

fn add(a: Usage, b: Usage) -> Usage {
    Usage {
        prompt_tokens: a.prompt_tokens.saturating_add(b.prompt_tokens),
        completion_tokens: a.completion_tokens.saturating_add(b.completion_tokens),
        cached_tokens: a.cached_tokens.saturating_add(b.cached_tokens),
    }
}

/// The chat messages of items said in this response.
fn conversation_messages(items: &[Item]) -> Result<Vec<ChatMessage>> {
    items::chat_messages(None, &[], items)
}
