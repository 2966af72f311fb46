//! Tool calls in generated text: which format a model's chat template teaches it, and parsers
//! that turn a stream of generated text into plain text and whole calls, one per format behind
//! [`CallParser`].
//!
//! A parser never loses text: whatever is not a well-formed call (an unclosed `<tool_call>`
//! when generation stops, a body that is not a JSON call) comes back as text, so a call cut off
//! by `max_tokens` is content, never a broken call. Text that may still become a call opener is
//! held back until it is decided, as the stop-string matcher holds back a possible stop string.

use backend::{Event, FinishReason};
use serde_json::{Map, Value};

use crate::relay::{relay, Events};
use crate::text::partial_suffix;

/// How a model writes tool calls, recognised from its chat template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFormat {
    /// Hermes / Qwen 2.5: `<tool_call>{"name": …, "arguments": {…}}</tool_call>`, any number.
    Hermes,
    /// Llama 3.1/3.2 JSON: the whole reply is `{"name": …, "parameters": {…}}` (optionally after
    /// `<|python_tag|>`), several separated by `;`.
    Llama3Json,
}

impl CallFormat {
    /// The format a chat template teaches, or `None` when it has no tool support.
    pub fn detect(template: &str) -> Option<Self> {
        if template.contains("<tool_call>") {
            return Some(Self::Hermes);
        }
        let llama3 = template.contains("<|start_header_id|>") || template.contains("<|eom_id|>");
        if llama3 && template.contains("tools") && template.contains("\"parameters\"") {
            return Some(Self::Llama3Json);
        }
        None
    }

    /// A parser for one generation.
    pub fn parser(self) -> Box<dyn CallParser + Send> {
        match self {
            Self::Hermes => Box::new(Hermes::default()),
            Self::Llama3Json => Box::new(Llama3Json::default()),
        }
    }
}

/// A tool call as the model wrote it: the function's name and its arguments as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub name: String,
    pub arguments: String,
}

/// A piece of generated output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Call(Call),
}

/// Turns generated text, fed as it comes, into text and calls.
pub trait CallParser {
    /// The pieces `text` completes; text that may still open a call is held back.
    fn feed(&mut self, text: &str) -> Vec<Piece>;
    /// Generation ended: what was held back, as text unless it is a complete call.
    fn finish(&mut self) -> Vec<Piece>;
}

/// A JSON object with a string `name` and an object under `args_key` (a string holding
/// JSON is accepted too), as a [`Call`]; `None` for anything else.
fn json_call(text: &str, args_key: &str) -> Option<Call> {
    let Value::Object(mut object) = serde_json::from_str::<Value>(text.trim()).ok()? else {
        return None;
    };
    let Some(Value::String(name)) = object.remove("name") else {
        return None;
    };
    let arguments = match object.remove(args_key) {
        None => Value::Object(Map::new()),
        Some(Value::String(raw)) => match serde_json::from_str::<Value>(&raw).ok()? {
            object @ Value::Object(_) => object,
            _ => return None,
        },
        Some(object @ Value::Object(_)) => object,
        Some(_) => return None,
    };
    if name.is_empty() {
        return None;
    }
    Some(Call {
        name,
        arguments: arguments.to_string(),
    })
}

fn push_text(out: &mut Vec<Piece>, text: &str) {
    if text.is_empty() {
        return;
    }
    if let Some(Piece::Text(last)) = out.last_mut() {
        last.push_str(text);
    } else {
        out.push(Piece::Text(text.to_owned()));
    }
}

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";

/// `<tool_call>{…}</tool_call>` anywhere in the text; or, as small models often write it, a
/// reply that is nothing but the call objects without the tags, bare or in a ```` ```json ````
/// fence.
#[derive(Default)]
struct Hermes {
    /// Text not yet decided: outside a call, a possible start of the opener; inside, the call
    /// so far (opener included); in a bare reply, all of it.
    held: String,
    inside: bool,
    /// Whether anything was released yet (a bare JSON reply must start the reply).
    started: bool,
    /// The reply began with `{` (bare or fenced): held whole until the end, then parsed as
    /// calls.
    bare: bool,
}

/// How a reply begins, as far as calls without tags go.
#[derive(Debug, PartialEq, Eq)]
enum Start {
    /// Too little text to tell.
    Undecided,
    /// A JSON object, bare or in a ```` ```json ```` fence: held whole, a call if it parses
    /// as one.
    Call,
    Text,
}

const FENCE: &str = "```";

fn reply_start(held: &str) -> Start {
    let start = held.trim_start();
    if start.is_empty() || (start.len() < FENCE.len() && FENCE.starts_with(start)) {
        return Start::Undecided;
    }
    if start.starts_with('{') {
        return Start::Call;
    }
    let Some(rest) = start.strip_prefix(FENCE) else {
        return Start::Text;
    };
    let Some((language, body)) = rest.split_once('\n') else {
        let language = rest.to_ascii_lowercase();
        return match "json".starts_with(language.trim_end()) {
            true => Start::Undecided,
            false => Start::Text,
        };
    };
    if !matches!(language.trim().to_ascii_lowercase().as_str(), "" | "json") {
        return Start::Text;
    }
    match body.trim_start().chars().next() {
        None => Start::Undecided,
        Some('{') => Start::Call,
        Some(_) => Start::Text,
    }
}

/// A reply's text without the ```` ``` ```` fence around it, if it has one (the closing fence
/// may be missing: the grammar ends the turn right after the call).
fn unfenced(held: &str) -> &str {
    let text = held.trim();
    let Some(rest) = text.strip_prefix(FENCE) else {
        return text;
    };
    let body = rest.split_once('\n').map_or("", |(_, body)| body);
    body.trim_end().strip_suffix(FENCE).unwrap_or(body)
}

/// One or more JSON call objects, whitespace-separated, with their arguments under `key`.
fn bare_calls(text: &str, key: &str) -> Option<Vec<Call>> {
    let mut calls = Vec::new();
    for value in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        calls.push(json_call(&value.ok()?.to_string(), key)?);
    }
    (!calls.is_empty()).then_some(calls)
}

impl CallParser for Hermes {
    fn feed(&mut self, text: &str) -> Vec<Piece> {
        let mut out = Vec::new();
        self.held.push_str(text);
        if !self.started {
            match reply_start(&self.held) {
                Start::Undecided => return out,
                Start::Call => self.bare = true,
                Start::Text => {}
            }
            self.started = true;
        }
        if self.bare {
            return out;
        }
        loop {
            if self.inside {
                let Some(end) = self.held.find(HERMES_CLOSE) else {
                    return out;
                };
                let whole = self.held[..end + HERMES_CLOSE.len()].to_owned();
                let body = &whole[HERMES_OPEN.len()..end];
                match json_call(body, "arguments") {
                    Some(call) => out.push(Piece::Call(call)),
                    None => push_text(&mut out, &whole),
                }
                self.held.drain(..whole.len());
                self.inside = false;
            } else if let Some(start) = self.held.find(HERMES_OPEN) {
                let before = self.held[..start].to_owned();
                push_text(&mut out, &before);
                self.held.drain(..start);
                self.inside = true;
            } else {
                let keep = partial_suffix(&self.held, HERMES_OPEN);
                let sure = self.held.len() - keep;
                let text = self.held[..sure].to_owned();
                push_text(&mut out, &text);
                self.held.drain(..sure);
                return out;
            }
        }
    }

    fn finish(&mut self) -> Vec<Piece> {
        let held = std::mem::take(&mut self.held);
        if self.bare {
            if let Some(calls) = bare_calls(unfenced(&held), "arguments") {
                return calls.into_iter().map(Piece::Call).collect();
            }
        }
        let mut out = Vec::new();
        push_text(&mut out, &held);
        self.inside = false;
        out
    }
}

const PYTHON_TAG: &str = "<|python_tag|>";

/// A reply that is one or more JSON calls (`;`-separated), or plain text.
#[derive(Default)]
struct Llama3Json {
    /// Everything so far, while it may still be a call.
    held: String,
    /// Decided: plain text (passed through as it comes).
    text: bool,
}

impl Llama3Json {
    fn could_be_call(held: &str) -> bool {
        let start = held.trim_start();
        start.is_empty()
            || start.starts_with('{')
            || start.starts_with(PYTHON_TAG)
            || PYTHON_TAG.starts_with(start)
    }

    fn calls(held: &str) -> Option<Vec<Call>> {
        let body = held.trim_start();
        let body = body.strip_prefix(PYTHON_TAG).unwrap_or(body);
        let calls: Option<Vec<Call>> = body
            .split(';')
            .filter(|part| !part.trim().is_empty())
            .map(|part| json_call(part, "parameters"))
            .collect();
        calls.filter(|c| !c.is_empty())
    }
}

impl CallParser for Llama3Json {
    fn feed(&mut self, text: &str) -> Vec<Piece> {
        let mut out = Vec::new();
        if self.text {
            push_text(&mut out, text);
            return out;
        }
        self.held.push_str(text);
        if !Self::could_be_call(&self.held) {
            self.text = true;
            push_text(&mut out, &std::mem::take(&mut self.held));
        }
        out
    }

    fn finish(&mut self) -> Vec<Piece> {
        let held = std::mem::take(&mut self.held);
        match Self::calls(&held) {
            Some(calls) => calls.into_iter().map(Piece::Call).collect(),
            None => {
                let mut out = Vec::new();
                push_text(&mut out, &held);
                out
            }
        }
    }
}

/// Events of one generation with tool calls parsed out of its text: `Text` becomes text and
/// `ToolCall` events (ids `call_…`), and a generation that called a tool and then stopped
/// finishes with `ToolCalls`. Tokens of text held back ride with the next text released.
pub(crate) fn parse_calls(inner: Events, mut parser: Box<dyn CallParser + Send>) -> Events {
    let mut calls = 0u32;
    let mut held: (u32, Vec<u32>) = (0, Vec::new());
    let mut emit = move |pieces: Vec<Piece>, held: &mut (u32, Vec<u32>), out: &mut Vec<Event>| {
        for piece in pieces {
            out.push(match piece {
                Piece::Text(text) => {
                    let (tokens, ids) = std::mem::take(held);
                    Event::Text { text, tokens, ids }
                }
                Piece::Call(call) => {
                    let event = Event::ToolCall {
                        index: calls,
                        id: format!("call_{:024x}", rand::random::<u128>() >> 32),
                        name: call.name,
                        arguments: call.arguments,
                    };
                    calls += 1;
                    event
                }
            });
        }
        calls
    };
    relay(inner, move |event| {
        let mut out = Vec::new();
        match event {
            Event::Text { text, tokens, ids } => {
                held.0 = held.0.saturating_add(tokens);
                held.1.extend(ids);
                emit(parser.feed(&text), &mut held, &mut out);
            }
            Event::Finished { reason, usage } => {
                let calls = emit(parser.finish(), &mut held, &mut out);
                let reason = match reason {
                    FinishReason::Stop if calls > 0 => FinishReason::ToolCalls,
                    other => other,
                };
                out.push(Event::Finished { reason, usage });
            }
            other => out.push(other),
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Feeds `chunks` one by one, then finishes; adjacent text pieces merged.
    fn run(format: CallFormat, chunks: &[&str]) -> Vec<Piece> {
        let mut parser = format.parser();
        let mut out = Vec::new();
        for chunk in chunks {
            for piece in parser.feed(chunk) {
                match piece {
                    Piece::Text(t) => push_text(&mut out, &t),
                    call => out.push(call),
                }
            }
        }
        for piece in parser.finish() {
            match piece {
                Piece::Text(t) => push_text(&mut out, &t),
                call => out.push(call),
            }
        }
        out
    }

    fn call(name: &str, arguments: &str) -> Piece {
        Piece::Call(Call {
            name: name.into(),
            arguments: arguments.into(),
        })
    }

    #[test]
    fn formats_are_recognised_from_templates() {
        let qwen = "{%- if tools %}<tools>{{ tool }}</tools> ... <tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>{% endif %}";
        assert_eq!(CallFormat::detect(qwen), Some(CallFormat::Hermes));
        let llama = "{%- if tools is not none %}<|start_header_id|>user<|end_header_id|>Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}{% endif %}";
        assert_eq!(CallFormat::detect(llama), Some(CallFormat::Llama3Json));
        assert_eq!(CallFormat::detect(crate::template::CHATML), None);
    }

    #[test]
    fn hermes_calls_between_text_in_any_chunking() {
        let whole = "Let me check.<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call><tool_call>{\"name\":\"now\",\"arguments\":{}}</tool_call>";
        let want = vec![
            Piece::Text("Let me check.".into()),
            call("get_weather", "{\"city\":\"Oslo\"}"),
            call("now", "{}"),
        ];
        assert_eq!(run(CallFormat::Hermes, &[whole]), want);
        let chars: Vec<String> = whole.chars().map(String::from).collect();
        let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(run(CallFormat::Hermes, &refs), want);
    }

    #[test]
    fn a_bare_json_reply_is_a_call_and_other_braces_stay_text() {
        let bare = "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}";
        assert_eq!(
            run(CallFormat::Hermes, &[" ", &bare[..7], &bare[7..]]),
            vec![call("get_weather", "{\"city\":\"Paris\"}")]
        );
        let two = format!("{bare}\n{bare}");
        assert_eq!(run(CallFormat::Hermes, &[&two]).len(), 2);
        let json = "{\"answer\": 42}";
        assert_eq!(
            run(CallFormat::Hermes, &[json]),
            vec![Piece::Text(json.into())]
        );
        // Braces later in a reply are text as they come.
        assert_eq!(
            run(CallFormat::Hermes, &["Use ", "{x}"]),
            vec![Piece::Text("Use {x}".into())]
        );
    }

    #[test]
    fn a_fenced_json_reply_is_a_call_and_other_fences_stay_text() {
        let fenced = "```json\n{\n  \"name\": \"get_weather\",\n  \"arguments\": {\"city\": \"Paris\"}\n}\n```";
        let want = vec![call("get_weather", "{\"city\":\"Paris\"}")];
        assert_eq!(run(CallFormat::Hermes, &[fenced]), want);
        let chars: Vec<String> = fenced.chars().map(String::from).collect();
        let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(run(CallFormat::Hermes, &refs), want);
        // Cut off by the grammar's end of turn: no closing fence.
        let open = "```\n{\"name\": \"now\", \"arguments\": {}}";
        assert_eq!(run(CallFormat::Hermes, &[open]), vec![call("now", "{}")]);
        for text in [
            "```python\nprint({})\n```",
            "```json\n[1, 2]\n```",
            "```json\n{\"answer\": 42}\n```",
            "``not a fence",
            "```",
        ] {
            let chars: Vec<String> = text.chars().map(String::from).collect();
            let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
            assert_eq!(
                run(CallFormat::Hermes, &refs),
                vec![Piece::Text(text.into())],
                "{text}"
            );
        }
        // A code reply streams as it comes, once its fence's language says it is not JSON.
        let mut parser = CallFormat::Hermes.parser();
        assert_eq!(parser.feed("```py"), vec![Piece::Text("```py".into())]);
    }

    #[test]
    fn a_cut_off_or_malformed_hermes_call_stays_text() {
        let cut = "ok <tool_call>{\"name\": \"f\", \"argu";
        assert_eq!(
            run(CallFormat::Hermes, &[cut]),
            vec![Piece::Text(cut.into())]
        );
        let bad = "<tool_call>not json</tool_call> after";
        assert_eq!(
            run(CallFormat::Hermes, &[bad]),
            vec![Piece::Text(bad.into())]
        );
        // A held-back partial opener that never completes comes back at the end.
        assert_eq!(
            run(CallFormat::Hermes, &["a <tool_c"]),
            vec![Piece::Text("a <tool_c".into())]
        );
    }

    #[test]
    fn llama3_json_calls_and_plain_text() {
        let one = "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}";
        assert_eq!(
            run(CallFormat::Llama3Json, &[&one[..10], &one[10..]]),
            vec![call("get_weather", "{\"city\":\"Oslo\"}")]
        );
        let two = "<|python_tag|>{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"parameters\": {\"x\": 1}}";
        assert_eq!(
            run(CallFormat::Llama3Json, &[two]),
            vec![call("a", "{}"), call("b", "{\"x\":1}")]
        );
        assert_eq!(
            run(CallFormat::Llama3Json, &["The weather ", "is fine."]),
            vec![Piece::Text("The weather is fine.".into())]
        );
        let cut = "{\"name\": \"a\", \"param";
        assert_eq!(
            run(CallFormat::Llama3Json, &[cut]),
            vec![Piece::Text(cut.into())]
        );
    }

    fn text_of(pieces: &[Piece]) -> String {
        pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.clone(),
                Piece::Call(c) => format!("[{}]", c.name),
            })
            .collect()
    }

    proptest! {
        /// Arbitrary text, cut anywhere: no panic, and without an opener nothing but the same
        /// text comes out.
        #[test]
        fn arbitrary_text_is_never_lost(text in ".{0,200}", cuts in proptest::collection::vec(0usize..200, 0..6)) {
            let mut bounds: Vec<usize> = cuts.into_iter().filter(|&c| c <= text.len() && text.is_char_boundary(c)).collect();
            bounds.push(0);
            bounds.push(text.len());
            bounds.sort_unstable();
            bounds.dedup();
            let chunks: Vec<&str> = bounds.windows(2).map(|w| &text[w[0]..w[1]]).collect();
            for format in [CallFormat::Hermes, CallFormat::Llama3Json] {
                let pieces = run(format, &chunks);
                if !text.contains(HERMES_OPEN) && !text.contains('{') {
                    prop_assert_eq!(text_of(&pieces), text.clone());
                }
            }
        }

        /// A Hermes call with arbitrary text around it parses the same however it is cut.
        #[test]
        fn hermes_calls_survive_any_cut(before in "[a-z ]{0,20}", city in "[A-Za-z]{1,12}", cut in 0usize..120) {
            let whole = format!("{before}<tool_call>{{\"name\": \"w\", \"arguments\": {{\"city\": \"{city}\"}}}}</tool_call>");
            let cut = cut.min(whole.len());
            let pieces = run(CallFormat::Hermes, &[&whole[..cut], &whole[cut..]]);
            let want_call = call("w", &format!("{{\"city\":\"{city}\"}}"));
            prop_assert_eq!(pieces.last(), Some(&want_call));
        }
    }
}
