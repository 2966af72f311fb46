//! Grammars of constrained decoding, run token by token over a real vocabulary (Qwen 2.5's,
//! whose template writes Hermes calls). Needs FLYWHEEL_QWEN_GGUF (scripts/test.sh sets it);
//! skips, saying so, when it is not set.

use std::sync::Arc;

use backend::{
    BackendError, FunctionSpec, GenerateRequest, OutputFormat, Prompt, SchemaSite, Tool, ToolChoice,
};
use engine::constrain::{allows, Cache, Spec};
use engine::model::LoadedModel;
use llama_cpp_2::sampling::LlamaSampler;
use serde_json::json;

fn qwen() -> Option<Arc<LoadedModel>> {
    let Some(path) = std::env::var_os("FLYWHEEL_QWEN_GGUF").filter(|p| !p.is_empty()) else {
        eprintln!("skipped: FLYWHEEL_QWEN_GGUF is not set (scripts/test.sh sets it)");
        return None;
    };
    Some(Arc::new(
        LoadedModel::load(std::path::Path::new(&path), "qwen").expect("loads"),
    ))
}

fn weather() -> Tool {
    Tool {
        r#type: "function",
        function: FunctionSpec {
            name: "get_weather".into(),
            description: Some("The weather in a city".into()),
            parameters: json!({
                "type": "object",
                "properties": { "city": { "type": "string", "maxLength": 40 } },
                "required": ["city"]
            }),
        },
    }
}

fn request(choice: ToolChoice, parallel: bool, format: OutputFormat) -> GenerateRequest {
    GenerateRequest {
        request_id: "r".into(),
        model: "qwen".into(),
        prompt: Prompt::Text("x".into()),
        sampling: Default::default(),
        max_tokens: None,
        stop: Vec::new(),
        tenant: None,
        tools: if format == OutputFormat::Text {
            vec![weather()]
        } else {
            Vec::new()
        },
        tool_choice: choice,
        parallel_tool_calls: parallel,
        format,
        priority: Default::default(),
        resume: Vec::new(),
    }
}

async fn grammar(model: &Arc<LoadedModel>, request: &GenerateRequest) -> LlamaSampler {
    let spec = Spec::of(request, model.call_format).expect("constrained");
    Arc::new(Cache::default())
        .compile(model, spec)
        .await
        .expect("compiles")
        .into_sampler()
}

/// Feeds `text` (special tokens included) to the grammar; the byte offset of the first token
/// it refuses, if any.
fn refused_at(model: &LoadedModel, grammar: &mut LlamaSampler, text: &str) -> Option<usize> {
    let (mut offset, mut piece) = (0, Vec::new());
    for token in model.model.vocab().tokenize(text.as_bytes(), false, true) {
        if !allows(grammar, token) {
            return Some(offset);
        }
        grammar.try_accept(token).expect("accepts an allowed token");
        model.token_bytes(token, &mut piece);
        offset += piece.len();
    }
    None
}

fn end_allowed(model: &LoadedModel, grammar: &mut LlamaSampler) -> bool {
    let eos = model.model.vocab().eos();
    allows(grammar, eos)
}

const CALL: &str =
    "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";

#[tokio::test]
async fn required_calls_are_one_or_several_only_when_parallel_calls_are_allowed() {
    let Some(model) = qwen() else { return };
    assert_eq!(
        model.call_format,
        Some(engine::tool_calls::CallFormat::Hermes)
    );

    let mut parallel = grammar(
        &model,
        &request(ToolChoice::Required, true, OutputFormat::Text),
    )
    .await;
    assert!(
        !end_allowed(&model, &mut parallel),
        "an empty answer is not a call"
    );
    assert_eq!(refused_at(&model, &mut parallel, CALL), None);
    assert!(
        end_allowed(&model, &mut parallel),
        "one call may end the turn"
    );
    assert_eq!(
        refused_at(&model, &mut parallel, &format!("\n{CALL}")),
        None,
        "a second call"
    );
    assert!(end_allowed(&model, &mut parallel));

    let mut single = grammar(
        &model,
        &request(ToolChoice::Required, false, OutputFormat::Text),
    )
    .await;
    assert_eq!(refused_at(&model, &mut single, CALL), None);
    assert!(end_allowed(&model, &mut single), "the call ends the turn");
    assert_eq!(
        refused_at(&model, &mut single, &format!("\n{CALL}")),
        Some(0),
        "no second call"
    );
}

#[tokio::test]
async fn forced_calls_refuse_text_unknown_tools_and_arguments_outside_the_schema() {
    let Some(model) = qwen() else { return };
    let forced = request(
        ToolChoice::Function("get_weather".into()),
        true,
        OutputFormat::Text,
    );
    let cases = [
        ("Sure! Let me check.", 0),
        ("<tool_call>\n{\"name\": \"get_time\"", 30),
        (
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"town\"",
            57,
        ),
        (
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": 42",
            64,
        ),
    ];
    for (text, at) in cases {
        let mut g = grammar(&model, &forced).await;
        let refused = refused_at(&model, &mut g, text).unwrap_or(usize::MAX);
        assert!(
            refused <= at && refused != usize::MAX,
            "{text:?} refused at {refused}, expected by {at}"
        );
    }
    // maxLength bounds the string: 41 characters do not fit.
    let mut g = grammar(&model, &forced).await;
    let long = format!(
        "<tool_call>\n{{\"name\": \"get_weather\", \"arguments\": {{\"city\": \"{}\"",
        "a".repeat(41)
    );
    assert!(refused_at(&model, &mut g, &long).is_some());
}

#[tokio::test]
async fn auto_calls_leave_text_free_until_a_call_opens() {
    let Some(model) = qwen() else { return };
    let mut g = grammar(&model, &request(ToolChoice::Auto, true, OutputFormat::Text)).await;
    assert_eq!(refused_at(&model, &mut g, "Let me look that up. "), None);
    assert!(end_allowed(&model, &mut g), "a plain answer may end");
    assert!(
        refused_at(&model, &mut g, "<tool_call>\n{\"name\": \"nope\"").is_some(),
        "once opened, the call must be a valid one"
    );
}

#[tokio::test]
async fn a_call_may_open_pretty_printed_or_in_a_json_fence_and_ends_the_turn() {
    let Some(model) = qwen() else { return };
    let auto = request(ToolChoice::Auto, true, OutputFormat::Text);
    for text in [
        "```json\n{\n  \"name\": \"get_weather\",\n  \"arguments\": {\"city\": \"Paris\"}\n}",
        "```\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}",
        "{ \"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"} }",
        "<tool_call>\n{\n    \"name\": \"get_weather\",\n    \"arguments\": {\n      \"city\": \"Paris\"\n    }\n}\n</tool_call>",
    ] {
        let mut g = grammar(&model, &auto).await;
        assert_eq!(refused_at(&model, &mut g, text), None, "{text}");
        assert!(end_allowed(&model, &mut g), "{text}: the call ends the turn");
    }
    let mut g = grammar(&model, &auto).await;
    assert!(
        refused_at(&model, &mut g, "```json\n{\n  \"name\": \"nope\"").is_some(),
        "a fenced call is held to the offered tools"
    );
    // A fence that holds something else stays free text.
    let mut g = grammar(&model, &auto).await;
    assert_eq!(
        refused_at(&model, &mut g, "```json\n{\"answer\": 42}\n```"),
        None
    );
}

#[tokio::test]
async fn annotations_and_numeric_formats_do_not_stop_a_forced_call() {
    let Some(model) = qwen() else { return };
    let mut forced = request(ToolChoice::Required, false, OutputFormat::Text);
    forced.tools = vec![Tool {
        r#type: "function",
        function: FunctionSpec {
            name: "area".into(),
            description: None,
            // As BFCL's converter writes it.
            parameters: json!({
                "type": "object",
                "properties": {
                    "base": { "type": "number", "format": "float", "description": "base" },
                    "units": { "type": "integer", "format": "int32", "optional": true }
                },
                "required": ["base"]
            }),
        },
    }];
    let mut g = grammar(&model, &forced).await;
    let call = "<tool_call>\n{\"name\": \"area\", \"arguments\": {\"base\": 2.5, \"units\": 3}}\n</tool_call>";
    assert_eq!(refused_at(&model, &mut g, call), None);
    assert!(end_allowed(&model, &mut g));
    let mut g = grammar(&model, &forced).await;
    let too_big =
        "<tool_call>\n{\"name\": \"area\", \"arguments\": {\"base\": 2.5, \"units\": 9999999999";
    assert!(
        refused_at(&model, &mut g, too_big).is_some(),
        "int32 bounds the integer"
    );
}

#[tokio::test]
async fn json_answers_follow_their_schema_and_unenforceable_schemas_are_refused() {
    let Some(model) = qwen() else { return };
    let schema = json!({
        "type": "object",
        "properties": { "n": { "type": "integer" }, "tag": { "enum": ["a", "b"] } },
        "required": ["n", "tag"]
    });
    let mut g = grammar(
        &model,
        &request(ToolChoice::Auto, true, OutputFormat::JsonSchema(schema)),
    )
    .await;
    assert_eq!(
        refused_at(&model, &mut g, "{\"n\": 3, \"tag\": \"b\"}"),
        None
    );
    assert!(end_allowed(&model, &mut g));

    let mut object = grammar(
        &model,
        &request(ToolChoice::Auto, true, OutputFormat::JsonObject),
    )
    .await;
    assert_eq!(refused_at(&model, &mut object, "Here"), Some(0));

    let loose = OutputFormat::JsonSchema(json!({ "type": "string", "pattern": "^a$" }));
    let spec = Spec::of(&request(ToolChoice::Auto, true, loose), model.call_format).expect("spec");
    match Arc::new(Cache::default()).compile(&model, spec).await {
        Err(BackendError::UnsupportedSchema {
            site: SchemaSite::Format,
            message,
        }) => {
            assert!(message.contains("'pattern'"), "{message}")
        }
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("a pattern is refused"),
    }
}
