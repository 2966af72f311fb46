"""Overload and shutdown: a full queue answers 429 server_overloaded with Retry-After, and
SIGTERM lets a running stream finish while refusing new connections."""

import json
import signal
import threading
import time

import requests

from conftest import _start, _stop


def _small_server(tmp_path_factory, paths, admin_key, name, extra, tmp=None):
    tmp = tmp or str(tmp_path_factory.mktemp(name))
    args = ["--model", f"{paths['tiny']}=tiny", "--slots", "1", "--slot-context", "512",
            "--step-tokens", "64", "--threads", "1", *extra]
    return _start(name, args, tmp, admin_key), tmp


def _long_stream(server, max_tokens, started: threading.Event, out: dict):
    body = {"model": "tiny", "prompt": "hello", "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True}}
    with requests.post(server.url + "/v1/completions", json=body, headers=server.auth(), stream=True,
                       timeout=120) as r:
        out["status"] = r.status_code
        chunks = 0
        for line in r.iter_lines():
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                event = json.loads(line[6:])
                out["id"] = event.get("id")
                if event.get("usage"):
                    out["usage"] = event["usage"]
                chunks += 1
                started.set()
            if line == b"data: [DONE]":
                out["done"] = True
        out["chunks"] = chunks
    started.set()


def test_full_queue_answers_429_with_retry_after(tmp_path_factory, paths, admin_key):
    server, _ = _small_server(tmp_path_factory, paths, admin_key, "overload", ["--max-queue", "1"])
    try:
        started, out = threading.Event(), {}
        runner = threading.Thread(target=_long_stream, args=(server, 400, started, out))
        runner.start()
        assert started.wait(60), "the long stream never started"
        # The one slot is busy; the queue holds one more; the rest must be refused at once.
        results = []

        def fire():
            r = requests.post(server.url + "/v1/completions", timeout=120, headers=server.auth(),
                              json={"model": "tiny", "prompt": "x", "max_tokens": 2})
            results.append(r)

        shots = [threading.Thread(target=fire) for _ in range(6)]
        for t in shots:
            t.start()
        for t in shots:
            t.join(120)
        runner.join(120)
        codes = sorted(r.status_code for r in results)
        refused = [r for r in results if r.status_code == 429]
        assert refused, f"no request was refused with a full queue: {codes}"
        assert all(r.status_code in (200, 429) for r in results), codes
        for r in refused:
            err = r.json()["error"]
            assert err["code"] == "server_overloaded", err
            assert int(r.headers["Retry-After"]) >= 1, r.headers
        assert any(r.status_code == 200 for r in results), f"the queued request never ran: {codes}"
        assert out.get("done"), out
    finally:
        _stop(server)


def test_sigterm_drains_running_stream(tmp_path_factory, paths, admin_key):
    """The running stream finishes and is settled: a restart on the same data directory shows
    its bill, exactly the usage the client got."""
    server, tmp = _small_server(tmp_path_factory, paths, admin_key, "drain", [])
    server.with_tenant()
    try:
        started, out = threading.Event(), {}
        runner = threading.Thread(target=_long_stream, args=(server, 150, started, out))
        runner.start()
        assert started.wait(60), "the stream never started"
        server.proc.send_signal(signal.SIGTERM)  # by PID: the process this test started
        time.sleep(0.5)
        try:
            requests.get(server.url + "/health", timeout=2)
            refused = False
        except requests.RequestException:
            refused = True
        runner.join(120)
        assert refused, "the server still accepted new connections after SIGTERM"
        assert out.get("done"), f"the running stream did not finish cleanly: {out}"
        assert out["usage"]["completion_tokens"] == 150, out
        assert server.proc.wait(timeout=30) == 0, server.log_tail()
    finally:
        _stop(server)
    again, _ = _small_server(tmp_path_factory, paths, admin_key, "drain-again", [], tmp=tmp)
    try:
        bill = again.admin("GET", f"/requests/{out['id']}", expect=200)
        assert bill["state"] == "settled", bill
        assert bill["billed"]["completion_tokens"] == 150, bill
        assert bill["billed"]["prompt_tokens"] == out["usage"]["prompt_tokens"], bill
    finally:
        _stop(again)


def _stream_until_cut(server, out: dict, started: threading.Event):
    """A stream that would run long (ignore_eos), recording what the client received."""
    body = {"model": "smol", "prompt": "Once upon a time", "max_tokens": 480, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}
    out.update(chunks=0, text_chunks=0, error=None, done=False)
    try:
        with requests.post(server.url + "/v1/completions", json=body, headers=server.auth(),
                           stream=True, timeout=120) as r:
            out["status"] = r.status_code
            for line in r.iter_lines():
                if line == b"data: [DONE]":
                    out["done"] = True
                elif line.startswith(b"data: "):
                    event = json.loads(line[6:])
                    if "error" in event:
                        out["error"] = event["error"]
                        continue
                    out["id"] = event.get("id")
                    out["chunks"] += 1
                    if any(c.get("text") for c in event.get("choices", [])):
                        out["text_chunks"] += 1
                    started.set()
    except requests.RequestException as e:
        out["exception"] = repr(e)
    started.set()


def test_sigterm_past_the_drain_ends_streams_and_exits_cleanly(tmp_path_factory, paths, admin_key):
    """With --drain-seconds 1 and streams that outlast it, SIGTERM ends the streams (an error
    event `shutting_down`), stops the engine thread before the process exits (it used to exit
    with SIGSEGV, 139) and exits 0; each request is settled at what its client was sent."""
    tmp = str(tmp_path_factory.mktemp("drain-cut"))
    args = ["--model", f"{paths['smol']}=smol", "--slots", "3", "--slot-context", "512",
            "--threads", "2", "--drain-seconds", "1"]
    server = _start("drain-cut", args, tmp, admin_key).with_tenant()
    outs = [{} for _ in range(3)]
    try:
        started = [threading.Event() for _ in outs]
        runners = [threading.Thread(target=_stream_until_cut, args=(server, out, ev))
                   for out, ev in zip(outs, started)]
        for t in runners:
            t.start()
        for ev in started:
            assert ev.wait(60), "a stream never started"
        time.sleep(0.5)
        server.proc.send_signal(signal.SIGTERM)  # by PID: the process this test started
        t0 = time.monotonic()
        code = server.proc.wait(timeout=30)
        took = time.monotonic() - t0
        for t in runners:
            t.join(30)
        assert code == 0, f"exit status {code} after SIGTERM:\n{server.log_tail()}"
        assert took < 15, f"shutdown took {took:.1f}s with --drain-seconds 1"
        for out in outs:
            assert out.get("status") == 200, out
            assert not out["done"], f"a stream of 480 tokens finished within the drain: {out}"
            assert out["error"] and out["error"]["code"] == "shutting_down", out
    finally:
        _stop(server)
    again = _start("drain-cut-again", args, tmp, admin_key)
    try:
        for out in outs:
            bill = again.admin("GET", f"/requests/{out['id']}", expect=200)
            assert bill["state"] == "settled", bill
            billed = bill["billed"]["completion_tokens"]
            # Every text chunk carries at least one token; the reservation was 480.
            assert out["text_chunks"] <= billed < 480, (bill, out)
    finally:
        _stop(again)
