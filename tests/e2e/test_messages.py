"""Anthropic's Messages API with the official `anthropic` client (issue 16): `messages.create`
and `messages.stream` on Qwen 2.5 with a tool loop (tool_use → tool_result → answer),
`count_tokens` equal to a request's input, `x-api-key` auth (the SDK's default), errors that
parse as the SDK's own exception types, a Claude Code-shaped request, and metering: the bill
of each request is its reported usage, an abandoned stream is billed between what was
delivered and that plus K.
"""

import json

import anthropic
import pytest
import requests

from fw import settled_bill

K = 16  # PROGRESS_INTERVAL_TOKENS
# The SDK no longer has a temperature argument; the API still takes it.
T0 = {"temperature": 0}

WEATHER = [{
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city name"}},
        "required": ["city"],
    },
}]
ASK = [{"role": "user", "content": "What is the weather in Paris right now?"}]


@pytest.fixture(scope="module")
def claude(server):
    c = anthropic.Anthropic(base_url=server.url, api_key=server.key, max_retries=0, timeout=120)
    yield c
    c.close()


_bill = settled_bill


def _billed_like_reported(server, message):
    bill = _bill(server, message.id)
    u = message.usage
    assert bill["state"] == "settled", bill
    assert bill["billed"]["prompt_tokens"] == u.input_tokens + u.cache_read_input_tokens, (bill, u)
    assert bill["billed"]["completion_tokens"] == u.output_tokens, (bill, u)


def test_a_tool_loop_with_messages_create(server, claude):
    first = claude.messages.create(model="qwen", max_tokens=128, extra_body=T0, tools=WEATHER,
                                   tool_choice={"type": "any"}, messages=ASK)
    assert first.stop_reason == "tool_use", first
    [use] = [b for b in first.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.input["city"].lower() == "paris", use
    _billed_like_reported(server, first)

    messages = ASK + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                      "content": "The weather in Paris: 23.4 °C, sunny. Now answer the user's question in one sentence."}]},
    ]
    answer = claude.messages.create(model="qwen", max_tokens=128, extra_body=T0, tools=WEATHER,
                                    tool_choice={"type": "none"}, messages=messages)
    assert answer.stop_reason == "end_turn", answer
    text = "".join(b.text for b in answer.content if b.type == "text")
    assert "23.4" in text, answer
    _billed_like_reported(server, answer)


def test_messages_stream_reassembles_calls_and_text(server, claude):
    with claude.messages.stream(model="qwen", max_tokens=128, extra_body=T0, tools=WEATHER,
                                tool_choice={"type": "tool", "name": "get_weather"}, messages=ASK) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use", final
    [use] = final.content
    assert use.type == "tool_use" and use.input["city"].lower() == "paris", final
    assert events[0] == "message_start" and "message_stop" in events, events
    assert final.usage.output_tokens > 0
    _billed_like_reported(server, final)

    with claude.messages.stream(model="qwen", max_tokens=24, extra_body=T0,
                                messages=[{"role": "user", "content": "Say hello."}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].text == text, (text, final)
    assert final.stop_reason in ("end_turn", "max_tokens")
    _billed_like_reported(server, final)


def test_output_config_format_is_enforced(claude):
    import jsonschema

    schema = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
              "required": ["city", "population"], "additionalProperties": False}
    done = claude.messages.create(model="qwen", max_tokens=64, extra_body=T0,
                                  output_config={"format": {"type": "json_schema", "schema": schema}},
                                  messages=[{"role": "user", "content": "The largest city of France and its population?"}])
    jsonschema.validate(json.loads(done.content[0].text), schema)
    with pytest.raises(anthropic.BadRequestError) as e:
        claude.messages.create(model="qwen", max_tokens=8, messages=ASK, output_config={
            "format": {"type": "json_schema", "schema": {"type": "string", "pattern": "^a+$"}}})
    assert "pattern" in e.value.body["error"]["message"]


def test_count_tokens_is_the_input_of_the_same_request(claude):
    system = "You answer in one short sentence."
    counted = claude.messages.count_tokens(model="qwen", system=system, tools=WEATHER, messages=ASK)
    done = claude.messages.create(model="qwen", max_tokens=8, system=system, tools=WEATHER, messages=ASK)
    # Anthropic's input_tokens leaves out the prompt tokens read from the cache.
    assert counted.input_tokens == done.usage.input_tokens + done.usage.cache_read_input_tokens, (counted, done.usage)
    assert counted.input_tokens > 50  # the tools' JSON is in the prompt


def test_errors_are_the_sdks_own_exceptions(server, claude):
    with pytest.raises(anthropic.AuthenticationError) as e:
        anthropic.Anthropic(base_url=server.url, api_key="fw-" + "x" * 40, max_retries=0).messages.create(
            model="qwen", max_tokens=4, messages=ASK)
    assert e.value.status_code == 401 and e.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.NotFoundError) as e:
        claude.messages.create(model="no-such-model", max_tokens=4, messages=ASK)
    assert e.value.body["type"] == "error" and "qwen" in e.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as e:
        claude.messages.create(model="qwen", max_tokens=4, messages=[
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_nope", "content": "x"}]}])
    assert "tool_use_id" in e.value.body["error"]["message"]
    # No max_tokens: a raw request, as the SDK insists on it.
    r = requests.post(server.url + "/v1/messages", json={"model": "qwen", "messages": ASK},
                      headers={"x-api-key": server.key, "anthropic-version": "2023-06-01"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", r.text
    assert "max_tokens" in r.json()["error"]["message"]


def test_a_claude_code_shaped_request(server):
    """What Claude Code sends: cache_control on system and message blocks, thinking, metadata,
    tools, streaming; Bearer auth works as well as x-api-key."""
    body = {
        "model": "qwen", "max_tokens": 64, "stream": True, "temperature": 1,
        "system": [{"type": "text", "text": "You are Claude Code, a coding agent.",
                    "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "List the files here.", "cache_control": {"type": "ephemeral"}}]}],
        "tools": [{"name": "Bash", "description": "Run a shell command",
                   "input_schema": {"type": "object", "properties": {"command": {"type": "string"}},
                                    "required": ["command"], "additionalProperties": False,
                                    "$schema": "http://json-schema.org/draft-07/schema#"}}],
        "metadata": {"user_id": "user_abc_account_def_session_ghi"},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    headers = {"Authorization": f"Bearer {server.key}", "anthropic-version": "2023-06-01",
               "anthropic-beta": "interleaved-thinking-2025-05-14"}
    with requests.post(server.url + "/v1/messages", json=body, headers=headers, stream=True, timeout=120) as r:
        assert r.status_code == 200, r.text
        names = [line[7:].decode() for line in r.iter_lines() if line.startswith(b"event: ")]
    assert names[0] == "message_start" and names[-1] == "message_stop", names
    assert "message_delta" in names


def test_an_abandoned_stream_is_billed_what_was_delivered(server, claude, qwen_tokenizer):
    prompt = [{"role": "user", "content": "Count from 1 to 300, separated by commas."}]
    delivered = ""
    with claude.messages.stream(model="qwen", max_tokens=600, extra_body=T0, messages=prompt) as stream:
        for event in stream:
            if event.type == "message_start":
                message_id = event.message.id
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                delivered += event.delta.text
                if len(qwen_tokenizer.encode(delivered, add_special_tokens=False).ids) >= 40:
                    break
    received = len(qwen_tokenizer.encode(delivered, add_special_tokens=False).ids)
    bill = _bill(server, message_id)
    assert bill["state"] == "settled", bill
    billed = bill["billed"]["completion_tokens"]
    # Re-tokenizing the delivered text may merge a token or two differently.
    assert received - 2 <= billed <= received + K, (received, bill)
