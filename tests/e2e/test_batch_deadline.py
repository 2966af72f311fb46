"""A batch's deadline scales its deployment out (issue 19 point 3: "may ... scale it out when the
batch backlog cannot finish in its window otherwise"), end to end on SmolLM2.

One server with no --model, a node budget of 2 threads, and a 40 s batch window
(`--batch-window-max`). The deployment `dl` runs 1 to 2 replicas of 1 thread and 2 slots.
- A small batch that one replica finishes well inside its window adds no replica.
- A batch that one replica cannot finish in its window (160 lines of 48 tokens; one replica of one
  thread here finishes 1-3 lines a second) scales the deployment to 2 replicas, with an event whose reason names the deadline, and
  the new replica runs lines of it (the runner keeps every slot of the deployment busy, not just
  `--batch-concurrency`). The batch ends `completed` or `expired`, and either way every custom_id is
  in its output or error file once.
The time from the batch's start to the scale-out is a figure, not asserted.
"""

import io
import json
import secrets
import time

import pytest

from conftest import _env_path, _start, _stop

WINDOW_S = 40


@pytest.fixture(scope="module")
def server(tmp_path_factory, admin_key):
    tmp = str(tmp_path_factory.mktemp("batch-deadline"))
    s = _start("batch-deadline", ["--node-threads", "2", "--node-memory-mib", "4096",
                                  "--batch-window-max", f"{WINDOW_S}s", "--batch-concurrency", "2"],
               tmp, admin_key)
    s.admin("POST", "/deployments", {
        "name": "dl", "model": _env_path("FLYWHEEL_SMOL_GGUF"), "min_replicas": 1, "max_replicas": 2,
        "threads_per_replica": 1, "slots_per_replica": 2, "context_length": 512, "idle_seconds": 600,
    }, expect=201)
    _wait(lambda: _ready(s) >= 1, 120, "the first replica of dl")
    yield s
    _stop(s)


def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def _view(s):
    return s.admin("GET", "/deployments/dl", expect=200)


def _ready(s):
    return sum(1 for r in _view(s)["replicas"] if r["state"] == "ready")


def _scale_ups(s):
    events = s.admin("GET", "/deployments/dl/events", expect=200)["data"]
    return [e for e in events if e["kind"] == "scale" and e["to"] > e["from"]]


def _batch(s, n, max_tokens):
    tid = s.new_tenant(f"dl-{secrets.token_hex(3)}")
    s.admin("POST", f"/tenants/{tid}/topups", {"amount": 10**12}, expect=200)
    client = s.client(api_key=s.new_key(tid)["key"])
    lines = [{"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "dl", "temperature": 0, "max_tokens": max_tokens,
                       "messages": [{"role": "user", "content": f"Tell a long story about the number {i}."}]}}
             for i in range(n)]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    file = client.files.create(file=("lines.jsonl", io.BytesIO(data)), purpose="batch")
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    return client, batch, [line["custom_id"] for line in lines]


def _finished(client, batch_id, timeout):
    final = ("completed", "failed", "expired", "cancelled")
    return _wait(lambda: (b := client.batches.retrieve(batch_id)).status in final and b, timeout,
                 f"batch {batch_id} to end")


def _ids(client, file_id):
    if not file_id:
        return []
    text = client.files.content(file_id).text
    return [json.loads(line)["custom_id"] for line in text.splitlines() if line.strip()]


def test_a_batch_that_fits_its_window_adds_no_replica(server):
    before = len(_scale_ups(server))
    client, batch, ids = _batch(server, 6, 8)
    done = _finished(client, batch.id, WINDOW_S + 30)
    assert done.status == "completed", done
    assert sorted(_ids(client, done.output_file_id)) == sorted(ids)
    ups = _scale_ups(server)[before:]
    assert not ups, f"a batch that fits its window scaled the deployment: {ups}"
    assert _ready(server) == 1


def test_a_batch_that_would_miss_its_window_scales_out_and_uses_the_new_replica(server, figure):
    before = len(_scale_ups(server))
    t0 = time.monotonic()
    client, batch, ids = _batch(server, 160, 48)
    ups = _wait(lambda: _scale_ups(server)[before:], WINDOW_S, "a scale-up for the batch's deadline")
    figure(f"batch start to deadline scale-out: {time.monotonic() - t0:.1f} s ({ups[0]['reason']})")
    up = ups[0]
    assert (up["from"], up["to"]) == (1, 2), up
    assert "miss its deadline" in up["reason"], up
    # The new replica gets batch lines: the runner keeps every slot busy, past --batch-concurrency 2.
    _wait(lambda: _ready(server) == 2, 120, "the second replica to load")
    first = min(r["id"] for r in _view(server)["replicas"])
    _wait(lambda: any(r["id"] != first and r["completed"] > 0 for r in _view(server)["replicas"]), WINDOW_S,
          "the new replica to finish batch lines")
    done = _finished(client, batch.id, WINDOW_S + 60)
    assert done.status in ("completed", "expired"), done
    out, errors = _ids(client, done.output_file_id), _ids(client, done.error_file_id)
    assert sorted(out + errors) == sorted(ids), (len(out), len(errors))
    figure(f"deadline batch: {len(out)}/{len(ids)} lines done in the window ({done.status})")
