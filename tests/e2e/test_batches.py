"""The Batch API (`/v1/batches`, issue 19 points 2, 4 and 5) end to end: real `flywheel serve` processes
serving SmolLM2 and the official `openai` client. files.create -> batches.create -> poll retrieve ->
files.content; batch texts at temperature 0 equal the same requests made interactively at the same
concurrency; each line costs ceil(tokens x batch price / 10^6) in the ledger (default: half the
interactive price; an explicit `batch/<model>` price); a short window expires a batch with partial
results; a balance running out mid-batch fails the rest as `insufficient_quota`; kill -9 mid-batch and a
restart finish it with each custom_id once and one charge per line; cancel mid-batch bills only what ran;
another tenant sees nothing; every bad input is refused in OpenAI's shape with nothing half-written."""

import json
import math
import os
import secrets
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

from conftest import _env_path, _start, _stop

CONCURRENCY = 4
# Interactive price of smol in these tests (micro-units per million tokens); the default batch
# price is half of it.
PRICE = {"input_per_million": 2_000_000, "output_per_million": 6_000_000, "cached_input_per_million": 2_000_000}
HALF = {k: v // 2 for k, v in PRICE.items()}
CHAT = "/v1/chat/completions"


def _serve(tmp_path_factory, admin_key, name, extra=(), tmp=None):
    tmp = tmp or str(tmp_path_factory.mktemp(name))
    threads = os.environ.get("FLYWHEEL_E2E_THREADS") or str(os.cpu_count() or 2)
    args = ["--model", f"{_env_path('FLYWHEEL_SMOL_GGUF')}=smol", "--slots", str(CONCURRENCY),
            "--slot-context", "2048", "--threads", threads, "--batch-concurrency", str(CONCURRENCY), *extra]
    s = _start(name, args, tmp, admin_key)
    s.tmp, s.args = tmp, args
    s.admin("PUT", "/prices/smol", PRICE, expect=200)
    return s


@pytest.fixture(scope="module")
def fw(tmp_path_factory, admin_key):
    s = _serve(tmp_path_factory, admin_key, "batches", ["--batch-max-input-bytes", str(256 << 10)])
    yield s
    _stop(s)


def _tenant(fw, balance=10**12, grant=0):
    tid = fw.new_tenant(f"b-{secrets.token_hex(3)}", grant_tokens=grant)
    if balance:
        fw.admin("POST", f"/tenants/{tid}/topups", {"amount": balance}, expect=200)
    key = fw.new_key(tid)["key"]
    return tid, key


def _line(i, content=None, max_tokens=8, **extra):
    body = {"model": "smol", "temperature": 0, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": content or f"Say a word about the number {i}."}]}
    return {"custom_id": f"req-{i}", "method": "POST", "url": CHAT, "body": body, **extra}


def _jsonl(lines):
    return ("\n".join(json.dumps(l) if not isinstance(l, str) else l for l in lines) + "\n").encode()


def _submit(client, lines, endpoint=CHAT):
    f = client.files.create(file=("in.jsonl", _jsonl(lines)), purpose="batch")
    return client.batches.create(input_file_id=f.id, endpoint=endpoint, completion_window="24h",
                                 metadata={"suite": "e2e"})


def _wait(client, batch_id, until=("completed", "failed", "expired", "cancelled"), timeout=600, pred=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        b = client.batches.retrieve(batch_id)
        if b.status in until or (pred and pred(b)):
            return b
        time.sleep(0.3)
    raise AssertionError(f"batch {batch_id} still {b.status} ({b.request_counts}) after {timeout}s")


def _lines(client, file_id):
    if file_id is None:
        return []
    return [json.loads(l) for l in client.files.content(file_id).text.splitlines() if l.strip()]


def _bill(fw, request_id):
    return fw.admin("GET", f"/requests/{request_id}", expect=200)


def _balance(fw, tid):
    return fw.admin("GET", f"/tenants/{tid}", expect=200)["balance"]


def _cost(usage, rates):
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    micro = ((usage["prompt_tokens"] - cached) * rates["input_per_million"] + cached * rates["cached_input_per_million"]
             + usage["completion_tokens"] * rates["output_per_million"])
    return math.ceil(micro / 1_000_000)


def _check_bills(fw, outputs, rates):
    """Each output line's request was billed once, at the batch price, exactly ceil(tokens x price / 1e6)."""
    total = 0
    for line in outputs:
        body = line["response"]["body"]
        bill = _bill(fw, line["response"]["request_id"])
        assert bill["model"] == "batch/smol" and bill["state"] == "settled", bill
        assert bill["billed"]["prompt_tokens"] == body["usage"]["prompt_tokens"], (bill, body["usage"])
        assert bill["billed"]["completion_tokens"] == body["usage"]["completion_tokens"], (bill, body["usage"])
        assert bill["cost"] == _cost(body["usage"], rates), (bill, body["usage"], rates)
        total += bill["cost"]
    return total


def test_200_lines_match_interactive_and_cost_the_batch_price(fw, figure):
    tid, key = _tenant(fw)
    client = fw.client(api_key=key)
    lines = [_line(i) for i in range(200)]
    before = _balance(fw, tid)
    started = time.monotonic()
    batch = _submit(client, lines)
    assert batch.id.startswith("batch_") and batch.object == "batch" and batch.status == "validating", batch
    assert batch.endpoint == CHAT and batch.completion_window == "24h" and batch.metadata == {"suite": "e2e"}
    done = _wait(client, batch.id)
    took = time.monotonic() - started
    assert done.status == "completed", done
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (200, 200, 0)
    assert done.in_progress_at and done.finalizing_at and done.completed_at and done.error_file_id is None
    out = _lines(client, done.output_file_id)
    assert [l["custom_id"] for l in out] == [l["custom_id"] for l in lines], "every line once, in input order"
    assert all(l["response"]["status_code"] == 200 and l["error"] is None and l["id"].startswith("batch_req_")
               for l in out)
    output_file = client.files.retrieve(done.output_file_id)
    assert output_file.purpose == "batch_output", output_file

    spent = _check_bills(fw, out, HALF)
    assert before - _balance(fw, tid) == spent, "the ledger charged exactly the lines' costs"

    # The same requests interactively, at the same concurrency, give the same texts.
    def ask(line):
        r = client.chat.completions.create(**line["body"])
        return r.choices[0].message.content
    t0 = time.monotonic()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        interactive = list(pool.map(ask, lines))
    took_interactive = time.monotonic() - t0
    batch_texts = [l["response"]["body"]["choices"][0]["message"]["content"] for l in out]
    diverged = [i for i, (a, b) in enumerate(zip(batch_texts, interactive)) if a != b]
    figure(f"batch of 200 chat lines (max_tokens 8): {took:.1f}s; interactively at concurrency "
           f"{CONCURRENCY}: {took_interactive:.1f}s; texts diverging: {len(diverged)}")
    assert not diverged, [(batch_texts[i], interactive[i]) for i in diverged[:5]]


def test_explicit_batch_price_and_listing(fw):
    fw.admin("PUT", "/prices/batch/smol", {"input_per_million": 777_777, "output_per_million": 1_234_567,
                                           "cached_input_per_million": 777_777}, expect=200)
    try:
        tid, key = _tenant(fw)
        client = fw.client(api_key=key)
        before = _balance(fw, tid)
        batch = _submit(client, [_line(i) for i in range(5)])
        done = _wait(client, batch.id)
        out = _lines(client, done.output_file_id)
        rates = {"input_per_million": 777_777, "output_per_million": 1_234_567, "cached_input_per_million": 777_777}
        assert before - _balance(fw, tid) == _check_bills(fw, out, rates)
        second = _submit(client, [_line(i) for i in range(2)])
        page = client.batches.list(limit=1)
        assert [b.id for b in page.data] == [second.id] and page.has_more
        rest = client.batches.list(limit=10, after=second.id)
        assert [b.id for b in rest.data] == [batch.id]
        _wait(client, second.id)
    finally:
        fw.admin("PUT", "/prices/batch/smol", HALF, expect=200)


def test_bad_lines_go_to_the_error_file_and_good_ones_run(fw):
    _, key = _tenant(fw)
    client = fw.client(api_key=key)
    lines = [
        _line(0),
        {"method": "POST", "url": CHAT, "body": {"model": "smol", "messages": []}},  # no custom_id
        {"custom_id": "wrong-url", "method": "POST", "url": "/v1/completions", "body": {"model": "smol", "prompt": "x"}},
        _line(0),  # duplicate custom_id
        {**_line(4), "body": {**_line(4)["body"], "model": "other"}},
        {"custom_id": "no-body", "method": "POST", "url": CHAT},
        {"custom_id": "bad-body", "method": "POST", "url": CHAT, "body": {"model": "smol", "messages": "nope"}},
        _line(7),
    ]
    done = _wait(client, _submit(client, lines).id)
    assert done.status == "completed", done
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (8, 2, 6)
    out = _lines(client, done.output_file_id)
    assert [l["custom_id"] for l in out] == ["req-0", "req-7"]
    errors = {(l["custom_id"] or f"line-{i}"): l for i, l in enumerate(_lines(client, done.error_file_id))}
    codes = {k: (l["error"] or {}).get("code") for k, l in errors.items()}
    assert codes["wrong-url"] == "invalid_url" and codes["req-0"] == "duplicate_custom_id", codes
    assert codes["req-4"] == "model_mismatch" and codes["no-body"] == "invalid_request", codes
    assert codes["line-0"] == "invalid_request", codes  # no custom_id to name
    bad = errors["bad-body"]
    assert bad["response"]["status_code"] == 400 and bad["error"] is None, bad
    assert bad["response"]["body"]["error"]["param"] == "messages", bad


def test_bad_input_refused_in_openai_shape_nothing_half_written(fw):
    tid, key = _tenant(fw)
    client = fw.client(api_key=key)
    _, other_key = _tenant(fw)
    other = fw.client(api_key=other_key)
    good = client.files.create(file=("in.jsonl", _jsonl([_line(1)])), purpose="batch")
    theirs = other.files.create(file=("in.jsonl", _jsonl([_line(1)])), purpose="batch")
    user_data = client.files.create(file=("in.jsonl", _jsonl([_line(1)])), purpose="user_data")
    big = client.files.create(file=("big.jsonl", _jsonl([_line(i, content="x" * 2000) for i in range(200)])),
                              purpose="batch")

    with pytest.raises(openai.BadRequestError) as e:  # not JSONL: the Files API refuses it for purpose batch
        client.files.create(file=("x.jsonl", b"{not json\n"), purpose="batch")
    assert e.value.body["param"] == "file"

    def refused(status, param, **kw):
        body = {"input_file_id": good.id, "endpoint": CHAT, "completion_window": "24h", **kw}
        r = requests.post(fw.url + "/v1/batches", json=body, headers=fw.auth(key), timeout=30)
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert set(err) >= {"message", "type", "code", "param"} and err["param"] == param, err
        return err

    refused(404, "input_file_id", input_file_id="file-doesnotexist")
    refused(404, "input_file_id", input_file_id=theirs.id)
    assert "purpose 'batch'" in refused(400, "input_file_id", input_file_id=user_data.id)["message"]
    assert "more than a batch may read" in refused(400, "input_file_id", input_file_id=big.id)["message"]
    refused(400, "endpoint", endpoint="/v1/images")
    refused(400, "completion_window", completion_window="1h")
    refused(400, "metadata", metadata={"a": 1})
    refused(400, "bogus", bogus=True)
    r = requests.post(fw.url + "/v1/batches", data=b"{", headers=fw.auth(key), timeout=30)
    assert r.status_code == 400 and "error" in r.json(), r.text
    assert client.batches.list().data == [], "no refused create left a batch"

    # A file with no line that can run: failed at validation, with the lines' errors.
    only_bad = client.files.create(file=("bad.jsonl", _jsonl([{"custom_id": "a", "method": "GET", "url": CHAT,
                                                                 "body": {"model": "smol"}}])), purpose="batch")
    failed = client.batches.create(input_file_id=only_bad.id, endpoint=CHAT, completion_window="24h")
    assert failed.status == "failed" and failed.failed_at and failed.errors.data[0].line == 1, failed
    # Cancel of a finished batch: a conflict in OpenAI's shape.
    r = requests.post(f"{fw.url}/v1/batches/{failed.id}/cancel", headers=fw.auth(key), timeout=30)
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict", r.text
    # The admin key has no batches.
    r = requests.get(fw.url + "/v1/batches", headers=fw.auth(fw.admin_key), timeout=30)
    assert r.status_code == 403, r.text


def test_another_tenant_cannot_see_read_or_cancel(fw):
    _, key = _tenant(fw)
    client = fw.client(api_key=key)
    _, other_key = _tenant(fw)
    other = fw.client(api_key=other_key)
    batch = _submit(client, [_line(i, max_tokens=4) for i in range(3)])
    for call in (lambda: other.batches.retrieve(batch.id), lambda: other.batches.cancel(batch.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert other.batches.list().data == []
    with pytest.raises(openai.BadRequestError):
        other.batches.list(after=batch.id)
    done = _wait(client, batch.id)
    for file_id in (done.output_file_id, done.input_file_id):
        with pytest.raises(openai.NotFoundError):
            other.files.retrieve(file_id)
        with pytest.raises(openai.NotFoundError):
            other.files.content(file_id)
    with pytest.raises(openai.NotFoundError):
        other.batches.create(input_file_id=done.input_file_id, endpoint=CHAT, completion_window="24h")
    assert len(_lines(client, done.output_file_id)) == 3


def test_balance_running_out_fails_the_rest_as_insufficient_quota(fw):
    # Enough for a few lines at the batch price (one line is roughly 40 tokens x 1-3 units).
    tid, key = _tenant(fw, balance=400)
    client = fw.client(api_key=key)
    lines = [_line(i) for i in range(40)]
    done = _wait(client, _submit(client, lines).id)
    assert done.status == "completed", done
    out, errors = _lines(client, done.output_file_id), _lines(client, done.error_file_id)
    assert out and errors, (len(out), len(errors))
    assert sorted(l["custom_id"] for l in out + errors) == sorted(l["custom_id"] for l in lines)
    assert all(l["response"] is None and l["error"]["code"] == "insufficient_quota" for l in errors), errors[:3]
    assert (done.request_counts.completed, done.request_counts.failed) == (len(out), len(errors))
    spent = _check_bills(fw, out, HALF)
    assert 400 - _balance(fw, tid) == spent


def test_cancel_mid_batch_bills_only_what_ran(fw):
    tid, key = _tenant(fw)
    client = fw.client(api_key=key)
    before = _balance(fw, tid)
    lines = [_line(i, max_tokens=48) for i in range(80)]
    batch = _submit(client, lines)
    _wait(client, batch.id, pred=lambda b: b.request_counts.completed >= 3)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at, cancelling
    done = _wait(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at, done
    out, errors = _lines(client, done.output_file_id), _lines(client, done.error_file_id)
    assert 3 <= len(out) < 80, len(out)
    assert sorted(l["custom_id"] for l in out + errors) == sorted(l["custom_id"] for l in lines)
    assert all(l["error"]["code"] == "batch_cancelled" for l in errors)
    assert before - _balance(fw, tid) == _check_bills(fw, out, HALF), "billed exactly the lines in the output"


def test_short_window_expires_with_partial_results(tmp_path_factory, admin_key):
    s = _serve(tmp_path_factory, admin_key, "batches-window", ["--batch-window-max", "4s"])
    try:
        tid, key = _tenant(s)
        client = s.client(api_key=key)
        before = _balance(s, tid)
        lines = [_line(i, max_tokens=48) for i in range(200)]
        batch = _submit(client, lines)
        assert batch.expires_at - batch.created_at == 4, batch
        done = _wait(client, batch.id, timeout=120)
        assert done.status == "expired" and done.expired_at, done
        out, errors = _lines(client, done.output_file_id), _lines(client, done.error_file_id)
        assert out and errors, (len(out), len(errors))
        assert sorted(l["custom_id"] for l in out + errors) == sorted(l["custom_id"] for l in lines)
        assert all(l["error"]["code"] == "batch_expired" for l in errors)
        assert before - _balance(s, tid) == _check_bills(s, out, HALF)
    finally:
        _stop(s)


def test_kill_9_mid_batch_resumes_without_rerunning_or_rebilling(tmp_path_factory, admin_key):
    # The restarted process is a new owner: it takes the batch once the dead one's lease lapsed.
    s = _serve(tmp_path_factory, admin_key, "batches-kill", ["--batch-lease", "3s"])
    tid, key = _tenant(s)
    client = s.client(api_key=key)
    before = _balance(s, tid)
    lines = [_line(i, max_tokens=24) for i in range(60)]
    batch = _submit(client, lines)
    _wait(client, batch.id, pred=lambda b: b.request_counts.completed >= 8)
    s.proc.send_signal(signal.SIGKILL)  # by PID: the server this test started
    s.proc.wait(timeout=30)
    s2 = _start("batches-kill-2", s.args, s.tmp, admin_key)
    try:
        client = s2.client(api_key=key)
        done = _wait(client, batch.id)
        assert done.status == "completed", done
        out = _lines(client, done.output_file_id)
        ids = [l["custom_id"] for l in out]
        assert sorted(ids) == sorted(l["custom_id"] for l in lines) and len(set(ids)) == 60, "each custom_id once"
        assert done.request_counts.completed == 60 and done.error_file_id is None
        assert before - _balance(s2, tid) == _check_bills(s2, out, HALF), "one charge per line, nothing else"
    finally:
        _stop(s2)


def test_tenant_deletion_removes_its_batches(fw):
    tid, key = _tenant(fw)
    client = fw.client(api_key=key)
    batch = _submit(client, [_line(i) for i in range(3)])
    _wait(client, batch.id)
    r = requests.delete(f"{fw.url}/admin/v1/tenants/{tid}?dry_run=true", headers=fw.auth(fw.admin_key), timeout=60)
    assert r.status_code == 200 and r.json()["removed"]["batches"] == [batch.id], r.text
    r = requests.delete(f"{fw.url}/admin/v1/tenants/{tid}", headers=fw.auth(fw.admin_key), timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["removed"]["batches"] == [batch.id] and r.json()["removed"]["batch_lines"] == [batch.id]
