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
        refused_param(with("tools", json!([{"type": "web_search"}]))),
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

#[test]
fn mcp_tools_parse_with_their_filters_and_secrets_stay_out_of_the_echo() {
    let request = parsed(json!({
        "model": "m", "input": "time?",
        "tools": [
            {"type": "mcp", "server_label": "time", "require_approval": "never",
             "allowed_tools": ["get_current_time"]},
            {"type": "mcp", "server_label": "remote", "server_url": "https://mcp.example.com/mcp",
             "headers": {"X-Api-Key": "s3cret"}, "authorization": "tok",
             "require_approval": {"never": {"tool_names": ["read"]}}},
        ],
        "tool_choice": {"type": "mcp", "server_label": "time"}, "max_tool_calls": 3,
    }));
    assert_eq!(request.mcp.len(), 2);
    let time = &request.mcp[0];
    assert_eq!((time.label.as_str(), time.url.as_deref()), ("time", None));
    assert!(time.allowed.matches("get_current_time", false));
    assert!(!time.allowed.matches("convert_time", false));
    assert!(!time.approval.needed("get_current_time", false));
    let remote = &request.mcp[1];
    assert_eq!(remote.param, "tools[1]");
    assert!(remote
        .headers
        .contains(&("authorization".to_owned(), "Bearer tok".to_owned())));
    assert!(!remote.approval.needed("read", false));
    assert!(remote.approval.needed("write", false));
    assert_eq!(request.mcp_choice, Some(("time".to_owned(), None)));
    assert_eq!(request.tools.choice, ToolChoice::Required);
    assert_eq!(request.max_tool_calls, Some(3));
    let echo = request.echo["tools"].to_string();
    assert!(
        !echo.contains("s3cret") && !echo.contains("tok\""),
        "{echo}"
    );
    assert_eq!(request.echo["tools"][0]["require_approval"], "never");
}

#[test]
fn approval_defaults_to_always_and_filters_combine() {
    use super::hosted::{Approval, Filter};
    assert!(Approval::ALWAYS.needed("any", true));
    let only_always = Approval {
        always: Some(Filter {
            names: Some(vec!["delete".into()]),
            read_only: None,
        }),
        never: None,
    };
    assert!(only_always.needed("delete", false));
    assert!(!only_always.needed("read", false));
    let read_only_never = Approval {
        always: None,
        never: Some(Filter {
            names: None,
            read_only: Some(true),
        }),
    };
    assert!(!read_only_never.needed("list", true));
    assert!(read_only_never.needed("write", false));
}

#[test]
fn bad_mcp_tools_name_their_parameter() {
    let tool = |extra: serde_json::Value| {
        let mut t =
            json!({"type": "mcp", "server_label": "s", "server_url": "https://x.example/mcp"});
        if let (Some(t), Some(extra)) = (t.as_object_mut(), extra.as_object()) {
            t.extend(extra.clone());
        }
        json!({"model": "m", "input": "x", "tools": [t]})
    };
    assert_eq!(
        refused_param(tool(json!({"server_label": "a b"}))),
        "tools[0].server_label"
    );
    assert_eq!(
        refused_param(tool(json!({"require_approval": "sometimes"}))),
        "tools[0].require_approval"
    );
    assert_eq!(
        refused_param(tool(json!({"allowed_tools": [1]}))),
        "tools[0].allowed_tools[0]"
    );
    assert_eq!(
        refused_param(tool(json!({"connector_id": "connector_gmail"}))),
        "tools[0].connector_id"
    );
    assert_eq!(refused_param(tool(json!({"bogus": 1}))), "tools[0].bogus");
    let registered_with_headers = json!({"model": "m", "input": "x", "tools": [
        {"type": "mcp", "server_label": "s", "headers": {"a": "b"}}]});
    assert_eq!(refused_param(registered_with_headers), "tools[0].headers");
    let twice = json!({"model": "m", "input": "x", "tools": [
        {"type": "mcp", "server_label": "s"}, {"type": "mcp", "server_label": "s"}]});
    assert_eq!(refused_param(twice), "tools[1].server_label");
    let unknown_choice = json!({"model": "m", "input": "x", "tools": [
        {"type": "mcp", "server_label": "s"}], "tool_choice": {"type": "mcp", "server_label": "t"}});
    assert_eq!(refused_param(unknown_choice), "tool_choice.server_label");
}

#[test]
fn mcp_items_come_back_as_conversation() {
    let request = parsed(json!({
        "model": "m",
        "input": [
            {"role": "user", "content": "time?"},
            {"type": "mcp_list_tools", "id": "mcpl_1", "server_label": "time", "tools": []},
            {"type": "mcp_call", "id": "mcp_1", "server_label": "time", "name": "now",
             "arguments": "{}", "output": "03:04", "error": null, "status": "completed"},
            {"type": "mcp_approval_request", "id": "mcpr_1", "server_label": "time", "name": "now", "arguments": "{}"},
            {"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": false},
        ],
    }));
    let messages = chat_messages(None, &[], &request.input).unwrap_or_default();
    let roles: Vec<&str> = messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "tool"]);
    assert_eq!(messages[1].tool_calls[0].function.name, "now");
    assert_eq!(messages[2].content, "03:04");
    assert!(matches!(
        request.input[4],
        Item::McpApprovalResponse { approve: false, .. }
    ));
}

#[test]
fn mcp_results_become_output_or_errors_and_schemas_lose_what_cannot_be_enforced() {
    use super::hosted::{call_outcome, model_schema};
    let ok = call_outcome(Ok(json!({"content": [{"type": "text", "text": "03:04"}]})));
    assert_eq!(ok, (Some("03:04".to_owned()), None));
    let tool_error = call_outcome(Ok(
        json!({"isError": true, "content": [{"type": "text", "text": "bad zone"}]}),
    ));
    assert_eq!(tool_error.0, None);
    assert_eq!(
        tool_error.1.map(|e| e["type"].clone()),
        Some(json!("mcp_tool_execution_error"))
    );
    let failed = call_outcome(Err((-32000, "down".into())));
    assert_eq!(
        failed.1.map(|e| (e["type"].clone(), e["code"].clone())),
        Some((json!("mcp_protocol_error"), json!(-32000)))
    );
    let schema = model_schema(Some(&json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
        "properties": {"pattern": {"type": "string", "pattern": "^a", "format": "date"},
                        "n": {"type": "integer", "multipleOf": 2}},
        "required": ["pattern"],
    })));
    assert_eq!(
        schema,
        json!({"type": "object", "properties": {"pattern": {"type": "string"}, "n": {"type": "integer"}},
               "required": ["pattern"]})
    );
    assert_eq!(
        model_schema(Some(&json!({"type": "string"}))),
        json!({"type": "object"})
    );
    assert_eq!(model_schema(None), json!({"type": "object"}));
}
