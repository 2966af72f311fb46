"""Chat and text completions, streaming, usage and the models list."""

import json

import openai
import pytest
import requests

from fw import BOTH, CAPITAL, PLANETS, check_usage, chat, greedy, stream_chat, stream_completion

MAX = 48


@pytest.mark.parametrize("model", BOTH)
def test_capital_of_france(client, model):
    r = greedy(client, model, CAPITAL, MAX)
    text = r.choices[0].message.content
    assert r.object == "chat.completion"
    assert r.model == model
    assert r.choices[0].message.role == "assistant"
    assert "Paris" in text, f"{model} answered {text!r}"
    assert r.choices[0].finish_reason in ("stop", "length")
    check_usage(r.usage, max_tokens=MAX, finish_reason=r.choices[0].finish_reason)


@pytest.mark.parametrize("model", BOTH)
def test_stream_equals_non_stream(client, model):
    ref = greedy(client, model, PLANETS, MAX)
    s = stream_chat(client, model, PLANETS, max_tokens=MAX)
    want = ref.choices[0].message.content
    assert s.text == want, f"streamed text differs from non-streamed at temperature 0:\nstream: {s.text!r}\nplain:  {want!r}"
    assert s.finish_reason == ref.choices[0].finish_reason
    assert len(s.ids) == 1, f"chunks carry several ids: {s.ids}"
    # the usage chunk comes last, with no choices
    assert s.chunks[-1].choices == [], s.chunks[-1]
    assert s.chunks[-1].usage is not None
    check_usage(s.usage, max_tokens=MAX, finish_reason=s.finish_reason)
    assert (s.usage.prompt_tokens, s.usage.completion_tokens) == (ref.usage.prompt_tokens, ref.usage.completion_tokens)
    # every content chunk carries at least one generated token
    assert 1 <= s.content_chunks <= s.usage.completion_tokens


def test_completion_tokens_match_tokenizer(client, qwen_tokenizer):
    """For Qwen the generated text re-tokenises to (about) completion_tokens."""
    r = greedy(client, "qwen", PLANETS, MAX)
    text = r.choices[0].message.content
    n = len(qwen_tokenizer.encode(text, add_special_tokens=False).ids)
    c = r.usage.completion_tokens
    # a terminating end-of-generation token may or may not be counted
    assert c - 1 <= n <= c, f"completion_tokens={c} but the text is {n} tokens: {text!r}"


def test_stream_without_usage_has_no_usage_chunk(client):
    s = stream_chat(client, "smol", CAPITAL, include_usage=False, max_tokens=8)
    assert s.text
    assert s.usage is None
    assert all(ch.choices for ch in s.chunks), "a chunk without choices was sent without include_usage"


def test_sse_wire_format(server):
    """Raw SSE: `data: {...}` events, role first, a usage chunk with empty choices, then `data: [DONE]`."""
    body = {
        "model": "smol",
        "messages": CAPITAL,
        "max_tokens": 8,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    r = requests.post(
        server.url + "/v1/chat/completions", json=body, headers=server.auth(), stream=True, timeout=60
    )
    try:
        assert r.status_code == 200, r.text
        assert r.headers.get("content-type", "").startswith("text/event-stream"), r.headers
        data = [line[len("data:"):].strip() for line in r.iter_lines(decode_unicode=True) if line.startswith("data:")]
    finally:
        r.close()
    assert data and data[-1] == "[DONE]", f"stream does not end with data: [DONE]: {data[-3:]}"
    events = [json.loads(d) for d in data[:-1]]
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    assert events[0]["choices"][0]["delta"].get("role") == "assistant", events[0]
    last = events[-1]
    assert last["choices"] == [] and last["usage"]["completion_tokens"] >= 1, last
    assert any(e["choices"] and e["choices"][0].get("finish_reason") for e in events[:-1])


@pytest.mark.parametrize("model", BOTH)
def test_max_tokens_length(client, model):
    r = chat(client, model, PLANETS, max_tokens=5)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 5, r.usage
    assert r.choices[0].message.content
    s = stream_chat(client, model, PLANETS, max_tokens=5)
    assert s.finish_reason == "length"
    assert s.usage.completion_tokens == 5, s.usage
    assert s.text == r.choices[0].message.content


def test_max_tokens_clamped_to_context(client):
    """max_tokens beyond what fits in the slot is clamped: the answer fills the context, finish `length`."""
    ctx = 4096
    messages = [{"role": "user", "content": "hello " * 3900}]
    r = chat(client, "tiny", messages, max_tokens=2000)
    u = r.usage
    assert u.prompt_tokens < ctx - 50, f"test setup: prompt is {u.prompt_tokens} tokens"
    assert r.choices[0].finish_reason == "length"
    room = ctx - u.prompt_tokens
    assert room - 1 <= u.completion_tokens <= room + 1, f"clamped to {u.completion_tokens} with room for {room}"


@pytest.mark.parametrize("model", BOTH)
def test_completions(client, model):
    prompt = "The capital of France is"
    r = client.completions.create(model=model, prompt=prompt, max_tokens=12, temperature=0)
    assert r.object == "text_completion"
    text = r.choices[0].text
    assert text.strip(), r
    assert "Paris" in text, f"{model} completed {prompt!r} with {text!r}"
    check_usage(r.usage, max_tokens=12, finish_reason=r.choices[0].finish_reason)
    s = stream_completion(client, model, prompt, max_tokens=12)
    assert s.text == text, f"stream {s.text!r} != plain {text!r}"
    assert s.finish_reason == r.choices[0].finish_reason
    assert (s.usage.prompt_tokens, s.usage.completion_tokens) == (r.usage.prompt_tokens, r.usage.completion_tokens)


def test_completions_max_tokens(client):
    r = client.completions.create(model="qwen", prompt="def fibonacci(n):", max_tokens=7, temperature=0)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 7


def test_models_list(client):
    ids = [m.id for m in client.models.list().data]
    for name in ("smol", "qwen", "tiny"):
        assert name in ids, ids
    for name in ("smol", "qwen", "tiny"):
        m = client.models.retrieve(name)
        assert m.id == name and m.object == "model"
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("no-such-model")
    assert e.value.code == "model_not_found"


def test_health_is_open(server):
    r = requests.get(server.url + "/health", timeout=10)
    assert r.status_code == 200
