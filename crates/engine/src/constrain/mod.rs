//! Constrained decoding: a tool call the request forces (`tool_choice` required or named), a
//! call the model chooses to make (`auto`), and a JSON answer (`json_object`, `json_schema`)
//! are generated under a llama.cpp grammar, so they always parse and fit their schemas.
//!
//! Each schema goes through llama.cpp's own converter (`json_schema_to_grammar`, the one
//! llama-server uses) after [`schema::check`] has refused what it would not enforce; the
//! per-schema grammars are joined under rules for the model's call format ([`gbnf`]). Forced
//! calls and JSON answers use a strict grammar (the answer is the call(s) or the document,
//! then end of turn); `auto` uses a lazy grammar that starts constraining when the model opens
//! a call (the format's trigger), so text before it is free.
//!
//! Grammar text is built on the blocking pool, within a time and size limit, and cached per
//! distinct request shape (bounded); the sampler is parsed there too and moved to the worker,
//! which never waits for a schema. Sampling checks the unconstrained choice against the
//! grammar first and runs the grammar over the whole vocabulary only when it is refused (as
//! llama.cpp's common sampler does).

pub mod gbnf;
pub mod schema;

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use backend::{BackendError, GenerateRequest, OutputFormat, SchemaSite, Tool, ToolChoice};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;
use serde_json::{json, Value};

use crate::model::LoadedModel;
use crate::tool_calls::CallFormat;

/// The root rule of every grammar built here.
const ROOT: &str = "fw-root";
/// Largest grammar text accepted (a schema past it is refused with a 400).
const MAX_GRAMMAR_BYTES: usize = 512 * 1024;
/// Longest time building and parsing one grammar may take.
const COMPILE_TIMEOUT: Duration = Duration::from_secs(10);
/// Whitespace allowed between the tokens of a call's head: what llama.cpp's converter
/// allows between JSON tokens (`space`), so pretty-printed calls fit.
const WS: &str = "| \" \" | \"\\n\" [ \\t]{0,20}";
/// Distinct grammars kept.
const CACHE_ENTRIES: usize = 64;

/// What a request's answer must look like, when anything is constrained.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    calls: Option<Calls>,
    format: OutputFormat,
    format_site: SchemaSite,
}

#[derive(Debug, Clone, PartialEq)]
struct Calls {
    format: CallFormat,
    /// The tools a call may use, with their index in the request.
    tools: Vec<(usize, Tool)>,
    /// Whether the answer must be calls (else the grammar waits for the model to open one).
    forced: bool,
    parallel: bool,
}

impl Spec {
    /// The constraint `request` needs, if any. `format` is the model's call format (checked
    /// by the caller when tools are offered).
    pub fn of(request: &GenerateRequest, format: Option<CallFormat>) -> Option<Self> {
        let calls = match (request.tools.is_empty(), format) {
            (false, Some(format)) => {
                let offered = request.tools.iter().cloned().enumerate();
                let (tools, forced) = match &request.tool_choice {
                    ToolChoice::Auto => (offered.collect(), false),
                    ToolChoice::Required => (offered.collect(), true),
                    ToolChoice::Function(name) => (
                        offered.filter(|(_, t)| &t.function.name == name).collect(),
                        true,
                    ),
                };
                Some(Calls {
                    format,
                    tools,
                    forced,
                    parallel: request.parallel_tool_calls,
                })
            }
            _ => None,
        };
        if calls.is_none() && request.format == OutputFormat::Text {
            return None;
        }
        Some(Self {
            calls,
            format: request.format.clone(),
            format_site: SchemaSite::Format,
        })
    }

    /// Whether the answer is constrained from its first token (else the grammar waits for the
    /// model to open a call).
    pub fn strict(&self) -> bool {
        self.format != OutputFormat::Text || self.calls.as_ref().is_some_and(|c| c.forced)
    }

    /// The cache key: everything the grammar depends on.
    fn key(&self) -> String {
        let calls = self.calls.as_ref().map(|c| {
            json!({
                "format": format!("{:?}", c.format),
                "tools": c.tools.iter().map(|(i, t)| json!([i, t.function.name, t.function.parameters])).collect::<Vec<_>>(),
                "forced": c.forced,
                "parallel": c.parallel,
            })
        });
        let format = match &self.format {
            OutputFormat::Text => Value::Null,
            OutputFormat::JsonObject => json!("object"),
            OutputFormat::JsonSchema(s) => s.clone(),
        };
        json!([calls, format]).to_string()
    }
}

/// Grammar text and, for a lazy grammar, the patterns that start it.
#[derive(Debug)]
struct Source {
    gbnf: String,
    /// Empty: strict (constrains from the first token).
    triggers: Vec<String>,
}

/// A parsed grammar sampler for one sequence, ready for the worker.
pub struct Grammar(LlamaSampler);

// SAFETY: a llama.cpp grammar sampler is heap state (the parsed rules, the parse stacks, the
// trigger buffer) plus a pointer to the model's vocabulary, which the model owns and which is
// read-only and `Send + Sync` (llama-cpp-2 marks `LlamaModel` and `LlamaVocab` so). It has no
// thread affinity: it is built on a blocking-pool thread, moved once to the engine's worker
// and used there only.
unsafe impl Send for Grammar {}

impl Grammar {
    pub fn into_sampler(self) -> LlamaSampler {
        self.0
    }
}

/// Built grammar texts, by [`Spec::key`].
pub struct Cache(Mutex<lru::LruCache<String, Arc<Source>>>);

impl Default for Cache {
    fn default() -> Self {
        let entries = NonZeroUsize::new(CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN);
        Self(Mutex::new(lru::LruCache::new(entries)))
    }
}

impl Cache {
    /// Builds (or finds) the grammar for `spec` and parses a sampler from it, off the async
    /// threads and within [`COMPILE_TIMEOUT`].
    pub async fn compile(
        self: &Arc<Self>,
        model: &Arc<LoadedModel>,
        spec: Spec,
    ) -> Result<Grammar, BackendError> {
        let (cache, model) = (self.clone(), model.clone());
        let task = tokio::task::spawn_blocking(move || {
            let key = spec.key();
            let cached = cache
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&key)
                .cloned();
            let source = match cached {
                Some(source) => source,
                None => {
                    let source = Arc::new(build(&spec)?);
                    cache
                        .0
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .put(key, source.clone());
                    source
                }
            };
            sampler(&model, &source)
        });
        match tokio::time::timeout(COMPILE_TIMEOUT, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(BackendError::Internal(format!("grammar task failed: {e}"))),
            Err(_) => Err(BackendError::InvalidRequest {
                message: format!(
                    "The request's schemas took longer than {} s to turn into a grammar; send smaller or simpler schemas.",
                    COMPILE_TIMEOUT.as_secs()
                ),
                field: None,
            }),
        }
    }
}

fn sampler(model: &LoadedModel, source: &Source) -> Result<Grammar, BackendError> {
    let sampler = if source.triggers.is_empty() {
        LlamaSampler::grammar(&model.model, &source.gbnf, ROOT)
    } else {
        LlamaSampler::grammar_lazy_patterns(&model.model, &source.gbnf, ROOT, &source.triggers, &[])
    };
    sampler.map(Grammar).map_err(|e| {
        BackendError::Internal(format!(
            "llama.cpp could not parse the grammar built for this request: {e}"
        ))
    })
}

/// The grammar text for `spec`.
fn build(spec: &Spec) -> Result<Source, BackendError> {
    let mut gbnf = String::new();
    let mut alternatives = Vec::new();
    let mut triggers = Vec::new();
    if let Some(calls) = &spec.calls {
        let mut call_rules = Vec::new();
        for (i, tool) in &calls.tools {
            let site = SchemaSite::Tool(*i);
            let prefix = format!("t{i}-");
            gbnf.push_str(&converted(&tool.function.parameters, site, &prefix)?);
            let key = match calls.format {
                CallFormat::Hermes => "arguments",
                CallFormat::Llama3Json => "parameters",
            };
            // `{"name": "…", "arguments": …}`, compact or pretty-printed as the model likes.
            gbnf.push_str(&format!(
                "{prefix}call ::= \"{{\" fw-ws \"\\\"name\\\"\" fw-ws \":\" fw-ws {} fw-ws \",\" fw-ws {} fw-ws \":\" fw-ws {prefix}root fw-ws \"}}\"\n",
                gbnf::literal(&format!("\"{}\"", tool.function.name)),
                gbnf::literal(&format!("\"{key}\"")),
            ));
            call_rules.push(format!("{prefix}call"));
        }
        gbnf.push_str(&format!("fw-ws ::= {WS}\n"));
        gbnf.push_str(&format!("fw-call ::= {}\n", call_rules.join(" | ")));
        let (one, separator) = match calls.format {
            CallFormat::Hermes => {
                gbnf.push_str("fw-tagged ::= \"<tool_call>\\n\" fw-call \"\\n</tool_call>\"\n");
                ("fw-tagged", "\"\\n\"")
            }
            CallFormat::Llama3Json => ("fw-call", "\";\" \" \"?"),
        };
        if calls.parallel {
            gbnf.push_str(&format!("fw-calls ::= {one} ({separator} {one})*\n"));
        } else {
            gbnf.push_str(&format!("fw-calls ::= {one}\n"));
        }
        let opened = match calls.format {
            // A tagged call, or (as Qwen 2.5 sometimes writes) one bare call.
            CallFormat::Hermes => "fw-calls | fw-call",
            CallFormat::Llama3Json => "\"<|python_tag|>\"? fw-calls",
        };
        alternatives.push(opened.to_owned());
        if !calls.forced {
            let tag = match calls.format {
                CallFormat::Hermes => "<tool_call>",
                CallFormat::Llama3Json => "<\\|python_tag\\|>",
            };
            triggers.push(format!("[\\s\\S]*?({tag})[\\s\\S]*"));
            // A reply that starts with a call object (for Hermes, also in a ```json fence, as
            // small Qwen models write it). The text the trigger captures must be text the
            // grammar accepts: `{`, whitespace as `fw-ws` allows it, `"name"`.
            let fence = match calls.format {
                CallFormat::Hermes => "(?:```(?:json)?\\s*)?",
                CallFormat::Llama3Json => "",
            };
            triggers.push(format!(
                "\\s*{fence}(\\{{(?: |\\n[ \\t]{{0,20}})?\"name\")[\\s\\S]*"
            ));
        }
    }
    let format = match &spec.format {
        OutputFormat::Text => None,
        OutputFormat::JsonObject => Some(json!({ "type": "object" })),
        OutputFormat::JsonSchema(schema) => Some(schema.clone()),
    };
    if let Some(schema) = format {
        gbnf.push_str(&converted(&schema, spec.format_site, "f-")?);
        alternatives.push("f-root".to_owned());
        // An answer that may be JSON or calls is not lazy: it is constrained from the start.
        triggers.clear();
    }
    gbnf.push_str(&format!("{ROOT} ::= {}\n", alternatives.join(" | ")));
    if gbnf.len() > MAX_GRAMMAR_BYTES {
        return Err(BackendError::InvalidRequest {
            message: format!(
                "The grammar for this request's schemas would be {} KiB, more than {} KiB; send smaller schemas (fewer properties, lower maxLength/maxItems).",
                gbnf.len() / 1024,
                MAX_GRAMMAR_BYTES / 1024
            ),
            field: None,
        });
    }
    Ok(Source { gbnf, triggers })
}

/// `schema` checked, tightened and converted to GBNF, its rules prefixed with `prefix`.
fn converted(schema: &Value, site: SchemaSite, prefix: &str) -> Result<String, BackendError> {
    let refuse = |message: String| BackendError::UnsupportedSchema { site, message };
    schema::check(schema).map_err(|m| refuse(format!("This schema cannot be enforced: {m}.")))?;
    let tightened = schema::enforced(schema.clone());
    let gbnf = llama_cpp_2::json_schema_to_grammar(&tightened.to_string()).map_err(|_| {
        refuse("llama.cpp could not turn this schema into a grammar; check its '$ref's and that its keywords have values of the right types.".into())
    })?;
    Ok(gbnf::prefixed(&gbnf, prefix))
}

/// Whether `grammar`, in its current state, lets `token` come next.
pub fn allows(grammar: &mut LlamaSampler, token: LlamaToken) -> bool {
    let mut one = LlamaTokenDataArray::new(vec![LlamaTokenData::new(token, 0.0, 0.0)], false);
    one.apply_sampler(grammar);
    one.data.first().is_some_and(|d| d.logit().is_finite())
}

/// One constrained draw: the chain's choice if the grammar allows it, else the chain's choice
/// among the tokens the grammar allows. Both samplers accept the token. `None`: the grammar
/// refused every token (it cannot continue).
pub fn sample(
    ctx: &LlamaContext<'_>,
    idx: i32,
    chain: &mut LlamaSampler,
    grammar: &mut LlamaSampler,
) -> Option<LlamaToken> {
    let mut candidates = ctx.token_data_array_ith(idx);
    candidates.apply_sampler(chain);
    let first = candidates.selected_token();
    let allowed = first.is_some_and(|token| allows(grammar, token));
    let token = match first {
        Some(token) if allowed => token,
        _ => {
            let mut candidates = ctx.token_data_array_ith(idx);
            candidates.apply_sampler(grammar);
            candidates.apply_sampler(chain);
            let token = candidates.selected_token()?;
            let chosen = candidates.data.iter().find(|d| d.id() == token);
            if !chosen.is_some_and(|d| d.logit().is_finite()) {
                return None;
            }
            token
        }
    };
    grammar.try_accept(token).ok()?;
    chain.accept(token);
    Some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use backend::{FunctionSpec, Prompt};

    fn tool(name: &str, parameters: Value) -> Tool {
        Tool {
            r#type: "function",
            function: FunctionSpec {
                name: name.into(),
                description: None,
                parameters,
            },
        }
    }

    fn request(tools: Vec<Tool>, choice: ToolChoice, format: OutputFormat) -> GenerateRequest {
        GenerateRequest {
            request_id: "r".into(),
            model: "m".into(),
            prompt: Prompt::Text("x".into()),
            sampling: Default::default(),
            max_tokens: None,
            stop: Vec::new(),
            tenant: None,
            tools,
            tool_choice: choice,
            parallel_tool_calls: true,
            format,
            priority: Default::default(),
            resume: Vec::new(),
        }
    }

    #[test]
    fn nothing_is_constrained_without_tools_or_a_format() {
        let plain = request(Vec::new(), ToolChoice::Auto, OutputFormat::Text);
        assert_eq!(Spec::of(&plain, Some(CallFormat::Hermes)), None);
    }

    #[test]
    fn a_named_choice_offers_only_that_tool_and_auto_is_lazy() {
        let tools = vec![
            tool(
                "a",
                json!({ "type": "object", "properties": { "x": { "type": "integer" } } }),
            ),
            tool("b", json!({ "type": "object" })),
        ];
        let named = request(
            tools.clone(),
            ToolChoice::Function("b".into()),
            OutputFormat::Text,
        );
        let source = build(&Spec::of(&named, Some(CallFormat::Hermes)).unwrap()).unwrap();
        assert!(
            source.gbnf.contains("fw-call ::= t1-call\n"),
            "{}",
            source.gbnf
        );
        assert!(!source.gbnf.contains("t0-call"));
        assert!(source.triggers.is_empty());
        let auto = request(tools, ToolChoice::Auto, OutputFormat::Text);
        let source = build(&Spec::of(&auto, Some(CallFormat::Hermes)).unwrap()).unwrap();
        assert_eq!(source.triggers.len(), 2);
        assert!(source.gbnf.contains("fw-call ::= t0-call | t1-call\n"));
    }

    #[test]
    fn a_schema_it_cannot_enforce_names_its_site() {
        let tools = vec![tool(
            "a",
            json!({ "type": "object", "properties": { "x": { "type": "string", "pattern": "^x$" } } }),
        )];
        let forced = request(tools, ToolChoice::Required, OutputFormat::Text);
        let err = build(&Spec::of(&forced, Some(CallFormat::Hermes)).unwrap()).unwrap_err();
        match err {
            BackendError::UnsupportedSchema { site, message } => {
                assert_eq!(site, SchemaSite::Tool(0));
                assert!(message.contains("'pattern' at /properties/x"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn declared_properties_close_their_objects() {
        let open = json!({
            "properties": { "a": { "properties": {} }, "b": { "const": { "properties": 1 } } },
            "items": { "type": "object" }
        });
        let shut = schema::enforced(open);
        assert_eq!(shut["additionalProperties"], false);
        assert_eq!(shut["properties"]["a"]["additionalProperties"], false);
        assert_eq!(shut["properties"]["b"]["const"], json!({ "properties": 1 }));
        assert!(shut["items"].get("additionalProperties").is_none());
    }
}
