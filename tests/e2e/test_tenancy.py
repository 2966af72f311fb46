"""Tenancy end to end: tenant keys with the official client, exact bills for finished and
broken streams (kill -9 included), and one RPM limit shared by two processes on PostgreSQL."""

import json
import os
import secrets
import signal
import subprocess
import threading
import time

import openai
import pytest
import requests

from conftest import _start, _stop
from fw import CAPITAL

K = 16  # PROGRESS_INTERVAL_TOKENS: a crash bills at most K tokens beyond what was received


def _bill(server, request_id):
    r = requests.get(server.url + f"/admin/v1/requests/{request_id}", headers=server.auth(server.admin_key), timeout=30)
    if r.status_code == 404:
        # Never admitted (it waited in a deployment's queue): nothing was reserved or billed.
        return {"state": "never_reserved", "billed": None}
    assert r.status_code == 200, r.text
    return r.json()


def _wait_settled(server, request_id, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        bill = _bill(server, request_id)
        if bill["state"] != "open" or time.monotonic() > deadline:
            return bill
        time.sleep(0.2)


def test_openai_client_sees_openai_shaped_auth_quota_and_limit_errors(server):
    with pytest.raises(openai.AuthenticationError) as e:
        server.client(api_key="fw-" + "x" * 40).models.list()
    assert e.value.status_code == 401 and e.value.code == "invalid_api_key", e.value.body

    # A model with a price: a tenant with neither grant nor balance cannot pay for it (a free
    # model, price 0, costs nothing even then).
    server.admin("PUT", "/prices/smol", {"input_per_million": 1000, "output_per_million": 2000}, expect=200)
    broke = server.new_tenant("broke", grant_tokens=0)
    key = server.new_key(broke)["key"]
    with pytest.raises(openai.APIStatusError) as e:
        server.client(api_key=key).chat.completions.create(model="smol", messages=CAPITAL, max_tokens=4)
    assert e.value.status_code == 402 and e.value.code == "insufficient_quota", e.value.body

    hub_only = server.new_key(server.tenant_id, scopes=["hub:read"])["key"]
    with pytest.raises(openai.PermissionDeniedError) as e:
        server.client(api_key=hub_only).chat.completions.create(model="smol", messages=CAPITAL, max_tokens=4)
    assert e.value.code == "permission_denied", e.value.body

    limited = server.client(api_key=server.new_key(server.tenant_id, rpm=1)["key"])
    limited.chat.completions.create(model="smol", messages=CAPITAL, max_tokens=1)
    with pytest.raises(openai.RateLimitError) as e:
        limited.chat.completions.create(model="smol", messages=CAPITAL, max_tokens=1)
    assert e.value.code == "rate_limit_exceeded", e.value.body
    assert int(e.value.response.headers["retry-after"]) >= 1


def test_finished_requests_are_billed_exactly_their_usage(server):
    tenant = server.new_tenant("exact")
    client = server.client(api_key=server.new_key(tenant)["key"])
    done = client.chat.completions.create(model="smol", messages=CAPITAL, max_tokens=24, temperature=0)
    bill = _wait_settled(server, done.id)
    assert bill["billed"]["prompt_tokens"] == done.usage.prompt_tokens, bill
    assert bill["billed"]["completion_tokens"] == done.usage.completion_tokens, bill

    stream = client.chat.completions.create(model="smol", messages=CAPITAL, max_tokens=40, stream=True,
                                            stream_options={"include_usage": True})
    usage, stream_id = None, None
    for chunk in stream:
        stream_id = chunk.id
        usage = chunk.usage or usage
    bill = _wait_settled(server, stream_id)
    assert bill["billed"]["completion_tokens"] == usage.completion_tokens, bill
    account = requests.get(server.url + "/v1/account", headers=server.auth(client.api_key), timeout=10).json()
    spent = done.usage.total_tokens + usage.total_tokens
    assert account["grant_tokens_left"] == 1_000_000 - spent, account
    assert account["grant_tokens_held"] == 0, account


def _stream_until_killed(server, key, max_tokens, out: dict, started: threading.Event):
    body = {"model": "smol", "messages": CAPITAL, "max_tokens": max_tokens, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    out["received"] = 0
    try:
        with requests.post(server.url + "/v1/chat/completions", json=body, headers=server.auth(key), stream=True,
                           timeout=300) as r:
            out["status"] = r.status_code
            for line in r.iter_lines():
                if not line.startswith(b"data: {"):
                    continue
                event = json.loads(line[6:])
                out["id"] = event.get("id")
                if event.get("usage"):
                    out["received"] = event["usage"]["completion_tokens"]
                    if out["received"] >= 4:
                        started.set()
    except requests.RequestException as e:
        out["error"] = repr(e)


def test_kill_9_during_200_streams_bills_between_received_and_received_plus_k(tmp_path_factory, paths, admin_key):
    tmp = str(tmp_path_factory.mktemp("crash"))
    args = ["--model", f"{paths['smol']}=smol", "--slots", "16", "--slot-context", "1024",
            "--reservation-lease-seconds", "2"]
    server = _start("crash", args, tmp, admin_key)
    tenant = server.new_tenant("crash")
    key = server.new_key(tenant)["key"]
    outs = [{} for _ in range(200)]
    started = threading.Event()
    threads = [threading.Thread(target=_stream_until_killed, args=(server, key, 400, out, started)) for out in outs]
    for t in threads:
        t.start()
    try:
        assert started.wait(120), "no stream got tokens"
        time.sleep(2.0)  # let a few dozen marks be written
        server.proc.send_signal(signal.SIGKILL)  # by PID: the process this test started
        server.proc.wait(timeout=30)
    finally:
        for t in threads:
            t.join(60)
        _stop(server)

    again = _start("crash-again", args, tmp, admin_key)
    try:
        checked = with_tokens = 0
        for out in outs:
            if not out.get("id"):
                continue
            bill = _wait_settled(again, out["id"], timeout=60)
            assert bill["state"] != "open", bill
            billed = bill["billed"]["completion_tokens"] if bill["billed"] else 0
            assert out["received"] <= billed <= out["received"] + K, (out, bill)
            checked += 1
            with_tokens += out["received"] > 0
        assert checked >= 100, f"only {checked} of 200 streams were answered before the kill"
        assert with_tokens >= 16, f"only {with_tokens} streams received tokens before the kill"
        account = requests.get(again.url + "/v1/account", headers=again.auth(key), timeout=10).json()
        assert account["grant_tokens_held"] == 0, f"reservations are still held after recovery: {account}"
    finally:
        _stop(again)


def _postgres_base() -> str:
    return os.environ.get("FLYWHEEL_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")


def _psql(sql: str):
    subprocess.run(["psql", _postgres_base(), "-v", "ON_ERROR_STOP=1", "-q", "-c", sql], check=True,
                   capture_output=True, timeout=60)


@pytest.fixture
def scratch_postgres():
    name = "fw_e2e_" + secrets.token_hex(6)
    _psql(f"CREATE DATABASE {name}")
    base = _postgres_base().rsplit("/", 1)[0]
    yield f"{base}/{name}"
    _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_two_processes_on_one_postgres_enforce_one_rpm_limit(tmp_path_factory, paths, admin_key, scratch_postgres):
    servers = []
    try:
        for name in ("pg-a", "pg-b"):
            tmp = str(tmp_path_factory.mktemp(name))
            servers.append(_start(name, ["--model", f"{paths['tiny']}=tiny", "--slots", "4", "--slot-context", "256",
                                         "--threads", "1", "--database-url", scratch_postgres], tmp, admin_key))
        tenant = servers[0].new_tenant("shared")
        key = servers[0].new_key(tenant, rpm=60)["key"]
        accepted = {s.url: 0 for s in servers}
        other = []
        lock = threading.Lock()
        stop_at = time.monotonic() + 20

        def drive(i):
            n = 0
            while time.monotonic() < stop_at:
                target = servers[(i + n) % 2]
                n += 1
                r = requests.post(target.url + "/v1/completions", headers=target.auth(key), timeout=60,
                                  json={"model": "tiny", "prompt": "hi", "max_tokens": 1})
                with lock:
                    if r.status_code == 200:
                        accepted[target.url] += 1
                    elif r.status_code != 429 or r.json()["error"]["code"] != "rate_limit_exceeded" \
                            or "retry-after" not in r.headers:
                        other.append((r.status_code, r.text[:200]))

        threads = [threading.Thread(target=drive, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert not other, other[:5]
        assert sum(accepted.values()) == 60, accepted
        assert all(n >= 15 for n in accepted.values()), accepted
    finally:
        for s in servers:
            _stop(s)
