"""Shared helpers for the end-to-end tests (imported by the test modules)."""

import re
import threading
import time
from dataclasses import dataclass, field

import openai
import requests

BOTH = ["smol", "qwen"]
# An explicit system message: without one SmolLM2's own template adds "You are a helpful AI
# assistant named SmolLM, trained by Hugging Face", after which the 135M model rambles in French.
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
CAPITAL = [SYSTEM, {"role": "user", "content": "What is the capital of France?"}]
PLANETS = [SYSTEM, {"role": "user", "content": "Name the eight planets of the solar system in order, with one sentence about each."}]


@dataclass
class StreamResult:
    text: str = ""
    finish_reason: str = None
    usage: object = None
    content_chunks: int = 0
    chunks: list = field(default_factory=list)
    ids: set = field(default_factory=set)
    first_token_at: float = None
    ended_at: float = None


def chat(client: openai.OpenAI, model: str, messages, **kw):
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(model=model, messages=messages, **kw)


def stream_chat(client: openai.OpenAI, model: str, messages, include_usage=True, **kw) -> StreamResult:
    kw.setdefault("temperature", 0)
    if include_usage:
        kw["stream_options"] = {"include_usage": True}
    out = StreamResult()
    stream = client.chat.completions.create(model=model, messages=messages, stream=True, **kw)
    try:
        for ch in stream:
            out.chunks.append(ch)
            out.ids.add(ch.id)
            if ch.choices:
                c = ch.choices[0]
                if c.delta is not None and c.delta.content:
                    if out.first_token_at is None:
                        out.first_token_at = time.monotonic()
                    out.text += c.delta.content
                    out.content_chunks += 1
                if c.finish_reason:
                    out.finish_reason = c.finish_reason
            if ch.usage is not None:
                out.usage = ch.usage
    finally:
        stream.close()
    out.ended_at = time.monotonic()
    return out


def stream_completion(client: openai.OpenAI, model: str, prompt: str, include_usage=True, **kw) -> StreamResult:
    kw.setdefault("temperature", 0)
    if include_usage:
        kw["stream_options"] = {"include_usage": True}
    out = StreamResult()
    stream = client.completions.create(model=model, prompt=prompt, stream=True, **kw)
    try:
        for ch in stream:
            out.chunks.append(ch)
            out.ids.add(ch.id)
            if ch.choices:
                c = ch.choices[0]
                if c.text:
                    if out.first_token_at is None:
                        out.first_token_at = time.monotonic()
                    out.text += c.text
                    out.content_chunks += 1
                if c.finish_reason:
                    out.finish_reason = c.finish_reason
            if ch.usage is not None:
                out.usage = ch.usage
    finally:
        stream.close()
    out.ended_at = time.monotonic()
    return out


_greedy_cache = {}
_greedy_lock = threading.Lock()


def greedy(client: openai.OpenAI, model: str, messages, max_tokens: int):
    """Non-streamed temperature-0 chat answer, memoised per (server, model, messages, max_tokens)."""
    key = (str(client.base_url), model, repr(messages), max_tokens)
    with _greedy_lock:
        if key not in _greedy_cache:
            _greedy_cache[key] = chat(client, model, messages, max_tokens=max_tokens)
        return _greedy_cache[key]


def check_usage(usage, *, max_tokens=None, finish_reason=None):
    assert usage is not None, "no usage in the response"
    assert usage.prompt_tokens > 0, usage
    assert usage.completion_tokens >= 1, usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, usage
    if max_tokens is not None:
        assert usage.completion_tokens <= max_tokens, usage
        if finish_reason == "length":
            assert usage.completion_tokens == max_tokens, usage
    details = usage.prompt_tokens_details
    assert details is not None, f"usage lacks prompt_tokens_details: {usage}"
    assert details.cached_tokens is not None and 0 <= details.cached_tokens <= usage.prompt_tokens, usage


# --- Prometheus text ---------------------------------------------------------------------------

_LINE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list:
    """[(name, {labels}, value)] of every sample."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m.group(3) or ""))
        try:
            value = float(m.group(4))
        except ValueError:
            continue
        out.append((m.group(1), labels, value))
    return out


def metric(text: str, name: str, default=None, **labels):
    """Sum of the samples of `name` whose labels include `labels`; `default` when there are none."""
    found = [v for n, ls, v in parse_metrics(text) if n == name and all(ls.get(k) == w for k, w in labels.items())]
    if not found:
        return default
    return sum(found)


def has_metric(text: str, name: str) -> bool:
    return any(n == name for n, _, _ in parse_metrics(text))


def settled_bill(server, request_id, timeout=30):
    """The ledger's bill of one request (`GET /admin/v1/requests/{id}`), once it is no longer open."""
    deadline = time.monotonic() + timeout
    while True:
        r = requests.get(server.url + f"/admin/v1/requests/{request_id}",
                         headers=server.auth(server.admin_key), timeout=30)
        assert r.status_code == 200, r.text
        bill = r.json()
        if bill["state"] != "open" or time.monotonic() > deadline:
            return bill
        time.sleep(0.2)
