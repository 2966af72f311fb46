//! What `/v1/responses` answers: the `response` object (also what is stored and retrieved) and
//! its typed stream events, each with a `sequence_number`.

use backend::{FinishReason, Usage};
use futures::future::BoxFuture;
use serde_json::{json, Map, Value};

use super::items::Item;
use crate::error::ApiError;
use crate::sse::{named_frame, Encoder};
use crate::tools::ToolCallView;

/// What every state of one response shares: its id, time, model and the request's echo.
#[derive(Debug, Clone)]
pub struct Shell {
    pub id: String,
    pub created_at: u64,
    pub model: String,
    pub echo: Map<String, Value>,
}

/// How a generation ended, as the Responses API says it.
fn status(reason: FinishReason) -> (&'static str, Value) {
    match reason {
        FinishReason::Length => ("incomplete", json!({ "reason": "max_output_tokens" })),
        FinishReason::Stop | FinishReason::ToolCalls => ("completed", Value::Null),
    }
}

pub fn usage(u: Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": { "cached_tokens": u.cached_tokens },
        "output_tokens": u.completion_tokens,
        "output_tokens_details": { "reasoning_tokens": 0 },
        "total_tokens": u.prompt_tokens.saturating_add(u.completion_tokens),
    })
}

impl Shell {
    /// The response object with this `status`, `output` items and usage.
    pub fn object(
        &self,
        status: &str,
        incomplete: Value,
        output: Vec<Value>,
        usage: Option<Usage>,
    ) -> Value {
        let mut map = Map::new();
        map.insert("id".into(), json!(self.id));
        map.insert("object".into(), json!("response"));
        map.insert("created_at".into(), json!(self.created_at));
        map.insert("status".into(), json!(status));
        map.insert("error".into(), Value::Null);
        map.insert("incomplete_details".into(), incomplete);
        map.insert("model".into(), json!(self.model));
        map.insert("output".into(), Value::Array(output));
        map.extend(self.echo.clone());
        map.insert("usage".into(), usage.map_or(Value::Null, self::usage));
        Value::Object(map)
    }

    /// The id of the message item of this response's text.
    fn message_id(&self) -> String {
        format!("msg_{}", self.id.trim_start_matches("resp_"))
    }

    /// The id of the reasoning item of this response's thinking.
    fn reasoning_id(&self) -> String {
        format!("rs_{}", self.id.trim_start_matches("resp_"))
    }
}

/// The id of a function call's output item.
fn call_item_id(call: &ToolCallView) -> String {
    format!("fc_{}", call.id.trim_start_matches("call_"))
}

fn message_item(id: &str, status: &str, text: &str) -> Value {
    let content = if status == "in_progress" {
        json!([])
    } else {
        json!([text_part(text)])
    };
    json!({ "type": "message", "id": id, "status": status, "role": "assistant", "content": content })
}

fn text_part(text: &str) -> Value {
    json!({ "type": "output_text", "text": text, "annotations": [], "logprobs": [] })
}

fn reasoning_part(text: &str) -> Value {
    json!({ "type": "reasoning_text", "text": text })
}

fn reasoning_item(id: &str, status: &str, text: &str) -> Value {
    let content = if status == "in_progress" {
        json!([])
    } else {
        json!([reasoning_part(text)])
    };
    json!({ "type": "reasoning", "id": id, "status": status, "summary": [], "content": content })
}

fn call_item(call: &ToolCallView, status: &str, arguments: &str) -> Value {
    json!({
        "type": "function_call", "id": call_item_id(call), "status": status,
        "call_id": call.id, "name": call.function.name, "arguments": arguments,
    })
}

/// A whole answer: the output items (reasoning, text, then calls) and the conversation items
/// they add (reasoning is not part of the conversation: templates drop it from history).
pub fn output(
    shell: &Shell,
    reasoning: &str,
    text: &str,
    calls: &[ToolCallView],
) -> (Vec<Value>, Vec<Item>) {
    let mut views = Vec::with_capacity(calls.len() + 2);
    let mut items = Vec::with_capacity(calls.len() + 1);
    if !reasoning.is_empty() {
        views.push(reasoning_item(
            &shell.reasoning_id(),
            "completed",
            reasoning,
        ));
    }
    if !text.is_empty() || calls.is_empty() {
        views.push(message_item(&shell.message_id(), "completed", text));
        items.push(Item::Message {
            role: "assistant".into(),
            content: text.to_owned(),
        });
    }
    for call in calls {
        views.push(call_item(call, "completed", &call.function.arguments));
        items.push(Item::FunctionCall {
            call_id: call.id.clone(),
            name: call.function.name.clone(),
            arguments: call.function.arguments.clone(),
        });
    }
    (views, items)
}

/// The finished response object of a whole answer.
pub fn finished(shell: &Shell, output: Vec<Value>, reason: FinishReason, usage_: Usage) -> Value {
    let (status, incomplete) = status(reason);
    shell.object(status, incomplete, output, Some(usage_))
}

/// Stores a finished response: gets the response object and the conversation items its
/// output adds.
pub type Persist = Box<dyn FnOnce(Value, Vec<Item>) -> BoxFuture<'static, ()> + Send>;

/// The typed event stream: `response.created`, `response.in_progress`, per output item
/// `response.output_item.added` … `response.output_item.done` (text: `content_part.added`,
/// `output_text.delta`, `output_text.done`, `content_part.done`; calls:
/// `function_call_arguments.delta` and `.done`), then `response.completed` (or
/// `response.incomplete`); `error` if it fails after starting.
pub struct ResponseEvents {
    shell: Shell,
    sequence: u64,
    /// The message or reasoning item being written.
    open: Option<OpenPart>,
    pub(super) output: Vec<Value>,
    pub(super) items: Vec<Item>,
    persist: Option<Persist>,
    pending: Option<BoxFuture<'static, ()>>,
    /// The model turn being written (a response with `mcp` tools takes several); items of
    /// later turns get ids of their own.
    turn: u32,
    /// The output index of the `mcp_call` being made.
    pub(super) calling: Option<usize>,
    /// The finished response object, once `finish` built it.
    finished: Option<Value>,
}

impl ResponseEvents {
    pub fn new(shell: Shell, persist: Option<Persist>) -> Self {
        Self {
            shell,
            sequence: 0,
            open: None,
            output: Vec::new(),
            items: Vec::new(),
            persist,
            pending: None,
            turn: 0,
            calling: None,
            finished: None,
        }
    }

    /// The next model turn begins: its text and reasoning are new items.
    pub fn next_turn(&mut self) {
        self.turn += 1;
    }

    /// The response object `finish` built, once.
    pub fn take_finished(&mut self) -> Option<Value> {
        self.finished.take()
    }

    /// The id of this turn's item of `kind`.
    fn id_of(&self, kind: Kind) -> String {
        let id = kind.id(&self.shell);
        if self.turn == 0 {
            id
        } else {
            format!("{id}_{}", self.turn)
        }
    }

    pub(super) fn emit(&mut self, out: &mut Vec<u8>, kind: &str, mut data: Value) {
        if let Value::Object(map) = &mut data {
            map.insert("type".into(), json!(kind));
            map.insert("sequence_number".into(), json!(self.sequence));
        }
        self.sequence += 1;
        named_frame(out, kind, &data);
    }

    /// Ends the item being written, if any (`….done` events, `output_item.done`).
    pub(super) fn close(&mut self, out: &mut Vec<u8>) {
        let Some(OpenPart { kind, index, text }) = self.open.take() else {
            return;
        };
        let id = self.id_of(kind);
        let at = json!({ "item_id": id, "output_index": index, "content_index": 0 });
        let with = |extra: Value| {
            let mut data = at.clone();
            if let (Value::Object(map), Value::Object(more)) = (&mut data, extra) {
                map.extend(more);
            }
            data
        };
        let done = match kind {
            Kind::Message => (
                "response.output_text.done",
                json!({ "text": text, "logprobs": [] }),
            ),
            Kind::Reasoning => ("response.reasoning_text.done", json!({ "text": text })),
        };
        self.emit(out, done.0, with(done.1));
        self.emit(
            out,
            "response.content_part.done",
            with(json!({ "part": kind.part(&text) })),
        );
        let item = kind.item(&id, "completed", &text);
        self.emit(
            out,
            "response.output_item.done",
            json!({ "output_index": index, "item": item.clone() }),
        );
        self.output.push(item);
        if kind == Kind::Message {
            self.items.push(Item::Message {
                role: "assistant".into(),
                content: text,
            });
        }
    }

    /// A delta of a message or reasoning item, opening it first (and closing another one).
    fn delta(&mut self, out: &mut Vec<u8>, kind: Kind, text: &str) {
        if self.open.as_ref().is_some_and(|open| open.kind != kind) {
            self.close(out);
        }
        let id = self.id_of(kind);
        if self.open.is_none() {
            let index = self.output.len();
            self.emit(
                out,
                "response.output_item.added",
                json!({ "output_index": index, "item": kind.item(&id, "in_progress", "") }),
            );
            self.emit(
                out,
                "response.content_part.added",
                json!({ "item_id": id, "output_index": index, "content_index": 0, "part": kind.part("") }),
            );
            self.open = Some(OpenPart {
                kind,
                index,
                text: String::new(),
            });
        }
        let index = match &mut self.open {
            Some(open) => {
                open.text.push_str(text);
                open.index
            }
            None => 0,
        };
        let data =
            json!({ "item_id": id, "output_index": index, "content_index": 0, "delta": text });
        match kind {
            Kind::Message => {
                let mut data = data;
                if let Value::Object(map) = &mut data {
                    map.insert("logprobs".into(), json!([]));
                }
                self.emit(out, "response.output_text.delta", data);
            }
            Kind::Reasoning => self.emit(out, "response.reasoning_text.delta", data),
        }
    }
}

/// The kinds of output item written in parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Message,
    Reasoning,
}

impl Kind {
    fn id(self, shell: &Shell) -> String {
        match self {
            Kind::Message => shell.message_id(),
            Kind::Reasoning => shell.reasoning_id(),
        }
    }

    fn item(self, id: &str, status: &str, text: &str) -> Value {
        match self {
            Kind::Message => message_item(id, status, text),
            Kind::Reasoning => reasoning_item(id, status, text),
        }
    }

    fn part(self, text: &str) -> Value {
        match self {
            Kind::Message => text_part(text),
            Kind::Reasoning => reasoning_part(text),
        }
    }
}

/// The item being written: its kind, output index and text so far.
struct OpenPart {
    kind: Kind,
    index: usize,
    text: String,
}

impl Encoder for ResponseEvents {
    fn open(&mut self, out: &mut Vec<u8>) {
        let response = self
            .shell
            .object("in_progress", Value::Null, Vec::new(), None);
        self.emit(
            out,
            "response.created",
            json!({ "response": response.clone() }),
        );
        self.emit(out, "response.in_progress", json!({ "response": response }));
    }

    fn text(&mut self, out: &mut Vec<u8>, text: &str, _so_far: Usage) {
        self.delta(out, Kind::Message, text);
    }

    fn reasoning(&mut self, out: &mut Vec<u8>, text: &str, _so_far: Usage) {
        self.delta(out, Kind::Reasoning, text);
    }

    fn tool_call(&mut self, out: &mut Vec<u8>, _index: u32, call: ToolCallView, _so_far: Usage) {
        self.close(out);
        let index = self.output.len();
        let id = call_item_id(&call);
        let arguments = call.function.arguments.clone();
        self.emit(
            out,
            "response.output_item.added",
            json!({ "output_index": index, "item": call_item(&call, "in_progress", "") }),
        );
        self.emit(
            out,
            "response.function_call_arguments.delta",
            json!({ "item_id": id, "output_index": index, "delta": arguments }),
        );
        self.emit(
            out,
            "response.function_call_arguments.done",
            json!({ "item_id": id, "output_index": index, "name": call.function.name, "arguments": arguments }),
        );
        let item = call_item(&call, "completed", &arguments);
        self.emit(
            out,
            "response.output_item.done",
            json!({ "output_index": index, "item": item.clone() }),
        );
        self.output.push(item);
        self.items.push(Item::FunctionCall {
            call_id: call.id,
            name: call.function.name,
            arguments,
        });
    }

    fn finish(&mut self, out: &mut Vec<u8>, reason: FinishReason, usage: Usage) {
        self.close(out);
        let response = finished(&self.shell, std::mem::take(&mut self.output), reason, usage);
        self.finished = Some(response.clone());
        if let Some(persist) = self.persist.take() {
            self.pending = Some(persist(response.clone(), std::mem::take(&mut self.items)));
        }
        let kind = if reason == FinishReason::Length {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.emit(out, kind, json!({ "response": response }));
    }

    fn settle(&mut self) -> Option<BoxFuture<'static, ()>> {
        self.pending.take()
    }

    fn fail(&mut self, out: &mut Vec<u8>, err: &ApiError) {
        let body = err.body();
        self.emit(
            out,
            "error",
            json!({
                "code": body.error.code, "message": body.error.message,
                "param": body.error.param,
            }),
        );
    }
}
