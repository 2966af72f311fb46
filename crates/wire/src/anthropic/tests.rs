use backend::{Prompt, ToolChoice};
use serde_json::json;

use super::{parse, Route};

fn parsed(body: serde_json::Value) -> super::ValidRequest {
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    match parse(&bytes, Route::Create) {
        Ok(request) => request,
        Err(err) => panic!("refused: {err}"),
    }
}

fn refused(body: serde_json::Value) -> (String, String) {
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    match parse(&bytes, Route::Create) {
        Ok(request) => panic!("accepted: {request:?}"),
        Err(err) => {
            let body = serde_json::to_value(err.body()).unwrap_or_default();
            (
                body["error"]["param"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                err.message().to_owned(),
            )
        }
    }
}

#[test]
fn a_tool_loop_becomes_chat_messages() {
    let request = parsed(json!({
        "model": "m", "max_tokens": 64,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hm", "signature": "x"},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "23 C"}]},
                {"type": "text", "text": "And now?"},
            ]},
        ],
        "tools": [{"name": "get_weather", "description": "d", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "metadata": {"user_id": "u"}, "thinking": {"type": "enabled", "budget_tokens": 1024},
    }));
    let Prompt::Chat(messages) = &request.prompt else {
        panic!("not a chat prompt")
    };
    let roles: Vec<&str> = messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
    assert_eq!(messages[2].content, "Let me look.");
    assert_eq!(
        messages[2].tool_calls[0].function.arguments,
        json!({"city": "Paris"})
    );
    assert_eq!(messages[3].tool_call_id.as_deref(), Some("toolu_1"));
    assert_eq!(messages[3].content, "23 C");
    assert_eq!(request.tools.choice, ToolChoice::Required);
    assert!(!request.tools.parallel);
    assert_eq!(request.max_tokens, Some(64));
}

#[test]
fn bad_input_names_the_field() {
    let base =
        json!({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]});
    let with = |key: &str, value: serde_json::Value| {
        let mut body = base.clone();
        body[key] = value;
        body
    };
    let mut no_max = base.clone();
    no_max.as_object_mut().map(|m| m.remove("max_tokens"));
    assert_eq!(refused(no_max).0, "max_tokens");
    assert_eq!(refused(with("temperature", json!(1.5))).0, "temperature");
    assert_eq!(refused(with("container", json!("c"))).0, "container");
    assert_eq!(refused(with("bogus", json!(1))).0, "bogus");
    assert_eq!(
        refused(with(
            "messages",
            json!([{"role": "system", "content": "x"}])
        ))
        .0,
        "messages[0].role"
    );
    assert_eq!(
        refused(with(
            "messages",
            json!([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "nope"}]}])
        ))
        .0,
        "messages[0].content[0].tool_use_id"
    );
    assert_eq!(
        refused(with(
            "messages",
            json!([{"role": "user", "content": [{"type": "image", "source": {}}]}])
        ))
        .0,
        "messages[0].content[0].type"
    );
    assert_eq!(
        refused(with(
            "tools",
            json!([{"type": "web_search_20250305", "name": "web_search"}])
        ))
        .0,
        "tools[0].type"
    );
    assert_eq!(
        refused(with("tools", json!([{"name": "f"}]))).0,
        "tools[0].input_schema"
    );
    let tools = json!([{"name": "f", "input_schema": {"type": "object"}}]);
    let mut body = with("tools", tools);
    body["tool_choice"] = json!({"type": "tool", "name": "g"});
    assert_eq!(refused(body).0, "tool_choice.name");
    assert_eq!(
        refused(with("tool_choice", json!({"type": "any"}))).0,
        "tool_choice"
    );
}

#[test]
fn count_tokens_needs_no_max_tokens_and_refuses_generation_fields() {
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    assert!(parse(&bytes, Route::CountTokens).is_ok());
    let body =
        json!({"model": "m", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]});
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    assert!(parse(&bytes, Route::CountTokens).is_err());
}
