"""Concurrency: many streams at once, continuous batching, cancellation on disconnect."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from fw import BOTH, CAPITAL, chat, metric, stream_chat

N_STREAMS = 16


@pytest.mark.parametrize("model", BOTH)
def test_16_concurrent_streams(server, client, model):
    max_tokens = 24
    barrier = threading.Barrier(N_STREAMS, timeout=60)
    stop_polling = threading.Event()
    peak = {"running": 0}

    def poll():
        while not stop_polling.is_set():
            try:
                v = metric(server.metrics(), "flywheel_running_sequences", 0, model=model)
                peak["running"] = max(peak["running"], v)
            except Exception:
                pass
            time.sleep(0.1)

    def one(i):
        msgs = [{"role": "user", "content": f"Write one sentence about the number {i + 1}."}]
        barrier.wait()
        return stream_chat(client, model, msgs, max_tokens=max_tokens)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        with ThreadPoolExecutor(N_STREAMS) as pool:
            results = list(pool.map(one, range(N_STREAMS), timeout=300))
    finally:
        stop_polling.set()
        poller.join(timeout=5)
    for i, s in enumerate(results):
        assert s.text.strip(), f"stream {i}: empty text"
        assert s.finish_reason in ("stop", "length"), f"stream {i}: finish_reason {s.finish_reason}"
        u = s.usage
        assert u is not None, f"stream {i}: no usage chunk"
        assert u.prompt_tokens > 0 and 1 <= u.completion_tokens <= max_tokens, f"stream {i}: {u}"
        assert u.total_tokens == u.prompt_tokens + u.completion_tokens
        if s.finish_reason == "length":
            assert u.completion_tokens == max_tokens, f"stream {i}: {u}"
        assert s.content_chunks <= u.completion_tokens, f"stream {i}: {s.content_chunks} chunks > {u}"
    assert peak["running"] >= 2, (
        f"flywheel_running_sequences{{model={model!r}}} never exceeded {peak['running']} with {N_STREAMS} streams"
    )


def test_second_request_is_batched_with_a_long_stream(client):
    """A request arriving while a long stream runs gets its first token before that stream ends."""
    long_msgs = [{"role": "user", "content": "Count from 1 to 1000, one number per line. Do not skip any number."}]
    second = {}

    def second_request():
        t0 = time.monotonic()
        second["started"] = t0
        second["result"] = stream_chat(client, "qwen", CAPITAL, max_tokens=8)

    stream = client.chat.completions.create(
        model="qwen", messages=long_msgs, max_tokens=512, temperature=0, stream=True
    )
    first_chunks = 0
    first_finished_at = None
    thread = None
    try:
        for ch in stream:
            if ch.choices and ch.choices[0].delta and ch.choices[0].delta.content:
                first_chunks += 1
            if ch.choices and ch.choices[0].finish_reason:
                first_finished_at = time.monotonic()
                break
            if first_chunks == 10 and thread is None:
                thread = threading.Thread(target=second_request, daemon=True)
                thread.start()
            if thread is not None and not thread.is_alive():
                break  # the second request is done while the first still streams
    finally:
        stream.close()
    assert thread is not None, f"test setup: the long stream ended after {first_chunks} chunks"
    thread.join(timeout=120)
    assert "result" in second, "the second request did not finish"
    s = second["result"]
    assert s.first_token_at is not None and s.text, "the second request produced no text"
    assert first_finished_at is None or s.first_token_at < first_finished_at, (
        f"second request's first token came {s.first_token_at - second['started']:.2f}s after it started, "
        f"after the first stream ended ({first_chunks} chunks): requests are not batched"
    )


def _settled_counter(server, model, reads=4):
    """Read flywheel_tokens_generated_total 1 s apart until two reads agree; returns (value, reads)."""
    seen = []
    for _ in range(reads):
        time.sleep(1.0)
        seen.append(metric(server.metrics(), "flywheel_tokens_generated_total", 0, model=model))
        if len(seen) >= 2 and seen[-1] == seen[-2]:
            return seen[-1], seen
    return None, seen


def test_stream_cancellation_stops_generation(server):
    before = metric(server.metrics(), "flywheel_tokens_generated_total", 0, model="tiny")
    c = server.client(timeout=60)
    stream = c.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "Talk forever."}],
        max_tokens=4000,
        temperature=0.8,
        seed=3,
        stream=True,
    )
    got = 0
    try:
        for ch in stream:
            if ch.choices and ch.choices[0].delta and ch.choices[0].delta.content:
                got += 1
            if got >= 20:
                break
        assert got >= 20, f"tiny stopped after {got} chunks (it should never stop on its own)"
        m = server.metrics()
        running = metric(m, "flywheel_running_sequences", None, model="tiny")
        cells = metric(m, "flywheel_kv_cells_used", None, model="tiny")
        assert running is not None and running >= 1, f"flywheel_running_sequences{{model=tiny}} = {running} mid-stream"
        assert cells is not None and cells > 0, f"flywheel_kv_cells_used{{model=tiny}} = {cells} mid-stream"
    finally:
        stream.close()
        c.close()
    settled, seen = _settled_counter(server, "tiny")
    assert settled is not None, f"tokens_generated_total{{model=tiny}} kept growing after the client left: {seen}"
    generated = settled - before
    assert generated < 3000, f"{generated} tokens generated for a stream closed after 20 chunks"
    running = metric(server.metrics(), "flywheel_running_sequences", None, model="tiny")
    assert running == 0, f"flywheel_running_sequences{{model=tiny}} = {running} after cancellation"
    r = chat(server.client(), "tiny", CAPITAL, max_tokens=5)
    assert r.usage.completion_tokens == 5


def test_non_stream_disconnect_stops_generation(server):
    before = metric(server.metrics(), "flywheel_tokens_generated_total", 0, model="tiny")
    c = server.client(timeout=1.5)
    with pytest.raises(openai.APITimeoutError):
        chat(c, "tiny", [{"role": "user", "content": "Talk forever."}], max_tokens=4000, temperature=0.8, seed=4)
    c.close()
    settled, seen = _settled_counter(server, "tiny")
    assert settled is not None, f"tokens_generated_total{{model=tiny}} kept growing after the client left: {seen}"
    assert settled - before < 3000, f"{settled - before} tokens generated for a request abandoned after 1.5 s"
    assert metric(server.metrics(), "flywheel_running_sequences", None, model="tiny") == 0
