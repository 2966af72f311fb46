use backend::{OutputFormat, ToolChoice};
use serde_json::json;

use super::items::{chat_messages, Item};
use super::parse;

fn parsed(body: serde_json::Value) -> super::ResponsesRequest {
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    match parse(&bytes) {
        Ok(request) => request,
        Err(err) => panic!("refused: {err}"),
    }
}

fn refused_param(body: serde_json::Value) -> String {
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    match parse(&bytes) {
        Ok(request) => panic!("accepted: {request:?}"),
        Err(err) => serde_json::to_value(err.body()).unwrap_or_default()["error"]["param"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    }
}

#[test]
fn an_agents_sdk_turn_parses_to_a_conversation() {
    let request = parsed(json!({
        "model": "m", "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}", "status": "completed"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call_output", "call_id": "call_1", "output": "23 C"},
        ],
        "tools": [{"type": "function", "name": "get_weather", "description": "d", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}, "strict": true}],
        "tool_choice": "required", "parallel_tool_calls": false,
        "include": ["reasoning.encrypted_content"], "store": false, "prompt_cache_key": "k",
        "truncation": "auto", "reasoning": {"effort": "low"}, "max_output_tokens": 64,
        "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": true}},
    }));
    assert_eq!(request.input.len(), 3, "the reasoning item carries nothing");
    assert_eq!(request.tools.choice, ToolChoice::Required);
    assert!(!request.tools.parallel && !request.store);
    assert!(matches!(request.format, OutputFormat::JsonSchema(_)));
    assert_eq!(request.max_output_tokens, Some(64));
    let messages = chat_messages(request.instructions.as_deref(), &[], &request.input)
        .unwrap_or_else(|e| panic!("{e}"));
    let roles: Vec<&str> = messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool"]);
    assert_eq!(
        messages[2].tool_calls[0].function.arguments,
        json!({"city": "Paris"})
    );
}

#[test]
fn a_string_input_is_one_user_message() {
    let request = parsed(json!({"model": "m", "input": "Hi"}));
    assert_eq!(
        request.input,
        [Item::Message {
            role: "user".into(),
            content: "Hi".into()
        }]
    );
    assert!(request.store, "store defaults to true");
    assert_eq!(request.echo["text"], json!({"format": {"type": "text"}}));
}

#[test]
fn bad_input_names_the_field() {
    let with = |key: &str, value: serde_json::Value| {
        let mut body = json!({"model": "m", "input": "Hi"});
        body[key] = value;
        body
    };
    assert_eq!(refused_param(json!({"model": "m"})), "input");
    assert_eq!(
        refused_param(with("input", json!([{"type": "computer_call"}]))),
        "input[0].type"
    );
    assert_eq!(
        refused_param(with(
            "input",
            json!([{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}])
        )),
        "input[0].content[0].type"
    );
    assert_eq!(
        refused_param(with(
            "input",
            json!([{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}])
        )),
        "input[0].arguments"
    );
    assert_eq!(
        refused_param(with("tools", json!([{"type": "mcp", "server_label": "x"}]))),
        "tools[0].type"
    );
    assert_eq!(
        refused_param(with("tools", json!([{"type": "web_search_preview"}]))),
        "tools[0].type"
    );
    assert_eq!(refused_param(with("background", json!(true))), "background");
    assert_eq!(
        refused_param(with("include", json!(["message.output_text.logprobs"]))),
        "include[0]"
    );
    assert_eq!(
        refused_param(with("tool_choice", json!("required"))),
        "tool_choice"
    );
    assert_eq!(refused_param(with("bogus", json!(1))), "bogus");
    // A function_call_output must answer a call made before it.
    let request = parsed(with(
        "input",
        json!([{"type": "function_call_output", "call_id": "call_x", "output": "1"}]),
    ));
    let err = chat_messages(None, &[], &request.input)
        .err()
        .map(|e| serde_json::to_value(e.body()).unwrap_or_default()["error"]["param"].clone());
    assert_eq!(err, Some(json!("input[0].call_id")));
}
