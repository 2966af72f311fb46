"""Tool calling with the official `openai` client (issue 15, the model-decides part): Qwen 2.5's
own template offers the tools, its calls come back as `tool_calls` (streamed as
`delta.tool_calls`), and the tool's answer reaches the model. Through a second Flywheel that
serves it as an upstream, the same calls come back. A model whose template has no tool support
refuses tools with a 400 naming them, also through an upstream.
"""

import json

import openai
import pytest

WEATHER = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name"}},
            "required": ["city"],
        },
    },
}]
ASK = [{"role": "user", "content": "What is the weather in Paris right now?"}]
# What the tool answers. Qwen 2.5 Coder 0.5B, shown its tools again after a result, calls the
# same tool again at temperature 0 whatever the result says; offered none (`tool_choice:
# "none"`) and told to answer, it answers from the result.
RESULT = "The weather in Paris: 23.4 °C, sunny. Now answer the user's question in one sentence."


def _ask(client, messages, model="qwen", **kw):
    return client.chat.completions.create(model=model, messages=messages, tools=WEATHER,
                                          temperature=0, max_tokens=128, **kw)


def test_a_tool_loop_on_qwen(client):
    first = _ask(client, ASK)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"].lower() == "paris"
    assert first.usage.completion_tokens > 0

    messages = ASK + [choice.message.model_dump(exclude_none=True),
                      {"role": "tool", "tool_call_id": call.id, "content": RESULT}]
    # The answer turn offers no more tools (see RESULT).
    second = _ask(client, messages, tool_choice="none")
    assert "23.4" in (second.choices[0].message.content or ""), second.choices[0]


def _streamed_calls(client, model):
    calls = {}
    finish = None
    for chunk in _ask(client, ASK, model=model, stream=True):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        for d in delta.tool_calls or []:
            call = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = call["id"] or d.id
            call["name"] += (d.function.name or "") if d.function else ""
            call["arguments"] += (d.function.arguments or "") if d.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    return [calls[i] for i in sorted(calls)]


def test_streamed_calls_reassemble_to_the_whole_answer(client):
    whole = _ask(client, ASK).choices[0].message.tool_calls
    streamed = _streamed_calls(client, "qwen")
    assert [(c["name"], c["arguments"]) for c in streamed] == \
        [(c.function.name, c.function.arguments) for c in whole]
    assert all(c["id"].startswith("call_") for c in streamed)


def test_an_upstream_passes_tools_and_calls_through(client, client2):
    direct = _ask(client, ASK).choices[0]
    relayed = _ask(client2, ASK, model="remote-qwen").choices[0]
    assert relayed.finish_reason == "tool_calls", relayed
    assert [(c.function.name, c.function.arguments) for c in relayed.message.tool_calls] == \
        [(c.function.name, c.function.arguments) for c in direct.message.tool_calls]
    streamed = _streamed_calls(client2, "remote-qwen")
    assert [(c["name"], c["arguments"]) for c in streamed] == \
        [(c.function.name, c.function.arguments) for c in direct.message.tool_calls]
    # The whole loop through the upstream: the tool message reaches the model.
    call = relayed.message.tool_calls[0]
    messages = ASK + [relayed.message.model_dump(exclude_none=True),
                      {"role": "tool", "tool_call_id": call.id, "content": RESULT}]
    answer = _ask(client2, messages, model="remote-qwen", tool_choice="none")
    assert "23.4" in (answer.choices[0].message.content or "")


def test_models_and_servers_that_cannot_call_tools_say_so(client, client2):
    for c, model in ((client, "smol"), (client2, "remote-smol")):
        with pytest.raises(openai.BadRequestError) as e:
            c.chat.completions.create(model=model, messages=ASK, tools=WEATHER, max_tokens=8)
        assert e.value.body["param"] == "tools", e.value.body
    # A tool message must answer a call that was made.
    with pytest.raises(openai.BadRequestError) as e:
        _ask(client, ASK + [{"role": "tool", "tool_call_id": "call_nope", "content": "x"}])
    assert e.value.body["param"] == "messages[1].tool_call_id"
