"""Constrained decoding (issue 15): forced tool calls (`tool_choice` "required" or named) and
`response_format` (json_object, json_schema) on the in-process engine, with the official
`openai` client. The grammar, not the model, guarantees the shape: every call parses and
validates against its tool's schema (python `jsonschema`), every JSON answer against its
schema, on Qwen 2.5 and on a random-weight model with a Llama-3.1-style tool template.
"""

import json
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import openai
import pytest


def fn(name, description, properties, required):
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": required}}}


S = lambda n, d: {"type": "string", "maxLength": n, "description": d}  # noqa: E731

TOOL_SETS = {
    "travel": [
        fn("get_weather", "Current weather in a city", {"city": S(40, "city name"),
           "unit": {"enum": ["celsius", "fahrenheit"]}}, ["city"]),
        fn("book_flight", "Book a flight", {"origin": S(40, "from"), "destination": S(40, "to"),
           "passengers": {"type": "integer", "minimum": 1, "maximum": 9}}, ["origin", "destination"]),
    ],
    "shop": [
        fn("search_products", "Search the catalogue", {"query": S(60, "search words"),
           "max_price": {"type": "number"},
           "tags": {"type": "array", "items": S(20, "tag"), "maxItems": 4}}, ["query"]),
        fn("add_to_cart", "Add a product to the cart", {"product_id": S(20, "id"),
           "quantity": {"type": "integer", "minimum": 1, "maximum": 99}}, ["product_id", "quantity"]),
        fn("get_order_status", "Status of an order", {"order_id": S(20, "order id")}, ["order_id"]),
    ],
    "office": [
        fn("send_email", "Send an email", {"to": S(60, "address"), "subject": S(80, "subject"),
           "body": S(200, "text")}, ["to", "subject", "body"]),
        fn("create_event", "Create a calendar event", {"title": S(60, "title"),
           "day": {"type": "string", "format": "date"},
           "attendees": {"type": "array", "items": S(40, "name"), "maxItems": 5},
           "online": {"type": "boolean"}}, ["title", "day"]),
    ],
}

PROMPTS = {
    "travel": ["Is it raining in Lisbon?", "I need to fly from Oslo to Rome with my wife.",
               "Weather for Tokyo in fahrenheit please", "Book me a flight to Madrid from Berlin",
               "hello there", "What should I pack for Cairo?", "Get me from NYC to Boston, 3 people"],
    "shop": ["Find me running shoes under 80 dollars", "Put two of item A-1234 in my basket",
             "Where is my order 998877?", "I want a red scarf", "Add 5 pencils (P-55) to the cart",
             "Did order X12 ship yet?", "Tell me a joke"],
    "office": ["Email bob@example.com that the meeting moved to 3pm",
               "Put a team lunch on 2026-12-10 with Ann and Raj", "Schedule an online sync tomorrow",
               "Write to hr@corp.test asking about leave", "What time is it?",
               "Invite Lee to a design review on 2027-01-05"],
}


def _schemas(tools):
    return {t["function"]["name"]: t["function"]["parameters"] for t in tools}


def _forced(client, tools, prompt, model="qwen", **kw):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], tools=tools,
        tool_choice=kw.pop("tool_choice", "required"), temperature=kw.pop("temperature", 0),
        max_tokens=kw.pop("max_tokens", 400), **kw)


def test_required_calls_always_parse_and_validate(client, figure):
    jobs = [(name, prompt) for name, prompts in PROMPTS.items() for prompt in prompts]
    assert len(jobs) == 20
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda j: (j[0], _forced(client, TOOL_SETS[j[0]], j[1])), jobs))
    calls = 0
    for name, answer in answers:
        choice = answer.choices[0]
        assert choice.finish_reason == "tool_calls", choice
        assert choice.message.tool_calls, choice
        schemas = _schemas(TOOL_SETS[name])
        for call in choice.message.tool_calls:
            assert call.function.name in schemas, call
            jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])
            calls += 1
    figure(f"tool_choice required: {calls} calls from 20 prompts over 3 tool sets, 100% valid")


def test_a_named_choice_calls_that_tool_once_when_parallel_calls_are_off(client):
    tools = TOOL_SETS["shop"]
    answer = _forced(client, tools, "Find me a kettle, and add 2 of K-9 to my cart",
                     tool_choice={"type": "function", "function": {"name": "add_to_cart"}},
                     parallel_tool_calls=False)
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "add_to_cart"
    jsonschema.validate(json.loads(call.function.arguments), _schemas(tools)["add_to_cart"])


def test_forced_calls_stream_as_tool_call_deltas(client):
    stream = _forced(client, TOOL_SETS["travel"], "Is it raining in Lisbon?", stream=True)
    args, names, finish = "", "", None
    for chunk in stream:
        if chunk.choices:
            for d in chunk.choices[0].delta.tool_calls or []:
                names += d.function.name or ""
                args += d.function.arguments or ""
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and names in _schemas(TOOL_SETS["travel"])
    jsonschema.validate(json.loads(args), _schemas(TOOL_SETS["travel"])[names])


def test_the_grammar_not_the_model_makes_the_call(client):
    """A random-weight model (it writes random words and never stops by itself) with a
    Llama-3.1-style template: with `required`, its answer is still a valid call, parsed by the
    Llama-3 JSON parser."""
    tools = TOOL_SETS["office"]
    for prompt in ("Email Ann", "Plan a meeting"):
        answer = _forced(client, tools, prompt, model="tiny-tools", parallel_tool_calls=False,
                         max_tokens=600)
        choice = answer.choices[0]
        assert choice.finish_reason == "tool_calls", choice
        [call] = choice.message.tool_calls
        jsonschema.validate(json.loads(call.function.arguments), _schemas(tools)[call.function.name])


ORDER = {
    "type": "object",
    "properties": {
        "customer": {"type": "object", "properties": {
            "name": {"type": "string", "maxLength": 30},
            "tier": {"enum": ["free", "pro", "enterprise"]}}, "required": ["name", "tier"]},
        "items": {"type": "array", "maxItems": 3, "minItems": 1, "items": {"type": "object", "properties": {
            "sku": {"type": "string", "maxLength": 12},
            "qty": {"type": "integer", "minimum": 1, "maximum": 20}}, "required": ["sku", "qty"]}},
        "gift": {"type": "boolean"},
        "note": {"type": ["string", "null"], "maxLength": 40},
    },
    "required": ["customer", "items", "gift"],
}


def test_json_schema_answers_validate_at_temperature_one(client, figure):
    def one(seed):
        return client.chat.completions.create(
            model="qwen", messages=[{"role": "user", "content": "Make up a plausible shop order."}],
            response_format={"type": "json_schema", "json_schema": {"name": "order", "schema": ORDER,
                                                                   "strict": True}},
            temperature=1.0, seed=seed, max_tokens=600)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(one, range(20)))
    for answer in answers:
        choice = answer.choices[0]
        assert choice.finish_reason == "stop", choice
        jsonschema.validate(json.loads(choice.message.content), ORDER)
    figure("response_format json_schema: 20/20 answers at temperature 1.0 validate")


def test_json_object_answers_parse_on_both_endpoints(client):
    chat = client.chat.completions.create(
        model="qwen", messages=[{"role": "user", "content": "Describe a cat."}],
        response_format={"type": "json_object"}, temperature=0.7, seed=1, max_tokens=300)
    assert isinstance(json.loads(chat.choices[0].message.content), dict)
    done = client.completions.create(model="qwen", prompt="A cat, as JSON:", max_tokens=300,
                                     temperature=0, extra_body={"response_format": {"type": "json_object"}})
    assert done.choices[0].finish_reason == "stop", done.choices[0]
    assert isinstance(json.loads(done.choices[0].text), dict)


@pytest.mark.parametrize("where,schema,word", [
    ("tools", {"type": "object", "properties": {"x": {"type": "string", "pattern": "^[a-z]+$"}}}, "pattern"),
    ("tools", {"type": "object", "properties": {"x": {"type": "number", "minimum": 0}}}, "minimum"),
    ("format", {"type": "object", "properties": {"x": {"oneOf": [{"type": "string"}, {"type": "null"}]}}}, "oneOf"),
    ("format", {"type": "array", "uniqueItems": True}, "uniqueItems"),
])
def test_schemas_that_cannot_be_enforced_are_refused_by_name(client, where, schema, word):
    kw = {"model": "qwen", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    if where == "tools":
        kw["tools"] = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
        kw["tool_choice"] = "required"
        param = "tools[0].function.parameters"
    else:
        kw["response_format"] = {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}
        param = "response_format.json_schema.schema"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**kw)
    assert e.value.param == param, e.value.body
    assert word in e.value.message
    # The server keeps serving.
    ok = client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert ok.choices[0].message.content is not None
