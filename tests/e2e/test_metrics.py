"""Prometheus metrics at /metrics."""

import secrets
import time

import openai
import pytest

from fw import CAPITAL, PLANETS, chat, has_metric, metric


def _idle(server, model, timeout=30):
    """The metrics once nothing runs on `model` (an earlier test's abandoned stream may still
    be decoding its last step when the next test starts)."""
    deadline = time.monotonic() + timeout
    while True:
        m = server.metrics()
        if metric(m, "flywheel_running_sequences", 0, model=model) == 0 or time.monotonic() > deadline:
            return m
        time.sleep(0.1)


def test_tokens_generated_counts_every_token(server, client):
    before = metric(_idle(server, "qwen"), "flywheel_tokens_generated_total", 0, model="qwen")
    r = chat(client, "qwen", PLANETS, max_tokens=5)
    assert r.usage.completion_tokens == 5
    m = server.metrics()
    after = metric(m, "flywheel_tokens_generated_total", None, model="qwen")
    assert after is not None, "no flywheel_tokens_generated_total{model=\"qwen\"}"
    assert after - before == 5, f"tokens_generated_total grew by {after - before} for 5 generated tokens"


def test_gauges_and_histograms_present(server, client):
    chat(client, "qwen", PLANETS, max_tokens=3)
    m = server.metrics()
    for name in ("flywheel_running_sequences", "flywheel_queue_length", "flywheel_kv_cells_used"):
        for model in ("smol", "qwen", "tiny"):
            assert metric(m, name, None, model=model) is not None, f"no {name}{{model={model!r}}}"
    assert metric(m, "flywheel_running_sequences", None, model="qwen") == 0
    assert metric(m, "flywheel_queue_length", None, model="qwen") == 0
    for h in ("flywheel_time_to_first_token_seconds", "flywheel_inter_token_latency_seconds"):
        assert has_metric(m, h + "_bucket"), f"no histogram {h}"
        assert (metric(m, h + "_count", 0) or 0) > 0, f"{h}_count is 0 after requests"


def test_histograms_grow(server, client):
    m0 = server.metrics()
    chat(client, "smol", PLANETS, max_tokens=6)
    m1 = server.metrics()
    for h in ("flywheel_time_to_first_token_seconds", "flywheel_inter_token_latency_seconds"):
        a, b = metric(m0, h + "_count", 0), metric(m1, h + "_count", 0)
        assert b > a, f"{h}_count did not grow ({a} -> {b})"


def test_unserved_model_names_are_not_labels(server, client):
    """Unique long model names must not become label values: /metrics stays flat."""
    chat(client, "smol", CAPITAL, max_tokens=1)
    before = len(server.metrics())
    names = [f"{i:03d}-{secrets.token_hex(8)}-" + "m" * (256 * 1024) for i in range(40)]
    for name in names:
        with pytest.raises(openai.NotFoundError):
            chat(client, name, CAPITAL, max_tokens=1)
    m = server.metrics()
    assert not any(name[:32] in m for name in names), "an unserved model name became a label"
    assert len(m) < before + 64 * 1024, f"/metrics grew from {before} to {len(m)} bytes"
    assert metric(m, "flywheel_http_requests_total", None, model="unknown", status="404") is not None
