"""Model groups (issue #23): one served name in front of two small OpenAI-compatible servers
written here, which fail on command (500, 429, a dropped connection, a stream cut after its
first bytes). Retries before the first byte, never after; one bill per request; weights; the
circuit breaker's 503; aliases and allow-lists in /v1/models; the per-tenant request log."""

import base64
import http.server
import json
import os
import secrets
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

from conftest import _start, _stop
from fw import settled_bill

PROMPT = [{"role": "user", "content": "hi"}]
# What every answer of the test servers bills: their own usage report.
PROMPT_TOKENS, COMPLETION_TOKENS = 7, 3


class Upstream:
    """A tiny OpenAI-compatible chat server. `mode`: ok | 500 | 429 | drop | die (a stream cut
    after its first chunk of text). Counts the calls it gets."""

    def __init__(self, name: str):
        self.name = name
        self.mode = "ok"
        self.calls = 0
        self.lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with owner.lock:
                    owner.calls += 1
                    mode = owner.mode
                if mode == "drop":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if mode in ("500", "429"):
                    payload = json.dumps({"error": {"message": f"{owner.name} says {mode}", "type": "server_error"}})
                    self.send_response(int(mode))
                    self.send_header("Content-Type", "application/json")
                    if mode == "429":
                        self.send_header("Retry-After", "1")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload.encode())
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                words = ["from ", owner.name, "!"]

                def chunk(delta=None, finish=None, usage=None):
                    c = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": body.get("model"),
                         "choices": [] if usage else [{"index": 0, "delta": delta or {}, "finish_reason": finish}]}
                    if usage:
                        c["usage"] = usage
                    self.wfile.write(f"data: {json.dumps(c)}\n\n".encode())
                    self.wfile.flush()

                chunk({"role": "assistant", "content": ""})
                chunk({"content": words[0]})
                if mode == "die":
                    time.sleep(0.2)
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                for w in words[1:]:
                    chunk({"content": w})
                chunk(finish="stop")
                chunk(usage={"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
                             "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def reset(self, mode="ok"):
        with self.lock:
            self.mode, self.calls = mode, 0

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def ups():
    a, b = Upstream("A"), Upstream("B")
    yield a, b
    a.close()
    b.close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory, admin_key):
    tmp = str(tmp_path_factory.mktemp("routing"))
    s = _start("routing", [], tmp, admin_key)
    yield s
    _stop(s)


def _put_group(gw, name, body, expect=(200, 201)):
    r = requests.put(gw.url + f"/admin/v1/models/{name}", json=body, headers=gw.auth(gw.admin_key), timeout=30)
    assert r.status_code in (expect if isinstance(expect, tuple) else (expect,)), r.text
    return r


def _tenant(gw, name):
    tenant = gw.new_tenant(name, grant_tokens=1_000_000_000)
    return tenant, gw.new_key(tenant)["key"]


def _usage(gw, key):
    r = requests.get(gw.url + "/v1/usage", headers=gw.auth(key), timeout=30)
    assert r.status_code == 200, r.text
    return {row["group"]: row for row in r.json()["data"]}


def _logs(gw, key, want, **params):
    """The tenant's log, once it holds `want` rows (the writer is asynchronous)."""
    deadline = time.monotonic() + 30
    while True:
        rows, after = [], None
        while True:
            q = dict(params, limit=1000, **({"after": after} if after else {}))
            r = requests.get(gw.url + "/v1/logs", params=q, headers=gw.auth(key), timeout=30)
            assert r.status_code == 200, r.text
            page = r.json()
            rows += page["data"]
            if not page["has_more"]:
                break
            after = page["last_id"]
        if len(rows) >= want or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def _two_members(ups, wa=1, wb=1, **extra):
    a, b = ups
    return {"members": [{"upstream": {"base_url": a.url, "api_key": "sk-member-a-secret", "model": "m"}, "weight": wa},
                        {"upstream": {"base_url": b.url, "model": "m"}, "weight": wb}], **extra}


def test_group_admin_routes_hide_keys_and_check_names(gw, ups):
    r = _put_group(gw, "pool-admin", _two_members(ups, aliases=["pool-admin-alias"]))
    assert r.status_code == 201
    view = r.json()
    assert "sk-member-a-secret" not in r.text
    assert view["members"][0]["upstream"]["api_key_set"] is True
    assert view["members"][1]["upstream"]["api_key_set"] is False
    assert view["aliases"] == ["pool-admin-alias"] and view["strategy"] == "weighted"
    got = requests.get(gw.url + "/admin/v1/models/pool-admin", headers=gw.auth(gw.admin_key), timeout=30)
    assert got.status_code == 200 and "sk-member-a-secret" not in got.text
    # Replacing keeps the name; the answer says so.
    assert _put_group(gw, "pool-admin", _two_members(ups, aliases=["pool-admin-alias"])).status_code == 200
    # Bad input: the field at fault, in OpenAI's shape.
    for body, param in [
        ({"members": []}, "members"),
        ({"members": [{"deployment": "nope"}]}, "members[0].deployment"),
        ({"members": [{"upstream": {"base_url": "ftp://x"}}]}, "members[0].upstream.base_url"),
        ({**_two_members(ups), "strategy": "fastest"}, "strategy"),
        ({**_two_members(ups), "fallbacks": ["missing"]}, "fallbacks[0]"),
        (_two_members(ups, wa=0), "members[0].weight"),
    ]:
        r = _put_group(gw, "pool-bad", body, expect=400)
        assert r.json()["error"]["param"] == param, r.text
    r = _put_group(gw, "pool-bad", {**_two_members(ups), "extra": 1}, expect=400)
    assert "extra" in r.json()["error"]["message"]
    # An alias of another group is taken.
    r = _put_group(gw, "pool-other", _two_members(ups, aliases=["pool-admin-alias"]), expect=409)
    assert r.json()["error"]["param"] == "aliases[0]"
    # A tenant key cannot administer groups.
    _, key = _tenant(gw, "routing-admin-tenant")
    r = requests.put(gw.url + "/admin/v1/models/x", json=_two_members(ups), headers=gw.auth(key), timeout=30)
    assert r.status_code in (401, 403), r.text
    # Deleted: gone from the API and the catalog.
    r = requests.delete(gw.url + "/admin/v1/models/pool-admin", headers=gw.auth(gw.admin_key), timeout=30)
    assert r.status_code == 200 and r.json()["deleted"] is True
    r = requests.delete(gw.url + "/admin/v1/models/pool-admin", headers=gw.auth(gw.admin_key), timeout=30)
    assert r.status_code == 404
    with pytest.raises(openai.NotFoundError):
        gw.client().chat.completions.create(model="pool-admin-alias", messages=PROMPT)


def test_models_lists_groups_and_aliases_a_key_may_call(gw, ups):
    _put_group(gw, "pool-list", _two_members(ups, aliases=["gpt-4o-mini-e2e"]))
    tenant, key = _tenant(gw, "routing-list")
    ids = [m.id for m in gw.client(api_key=key).models.list().data]
    assert "pool-list" in ids and "gpt-4o-mini-e2e" in ids, ids
    # A key allowed the group may use its alias; one allowed nothing of it sees neither.
    only = gw.new_key(tenant, models=["pool-list"])["key"]
    c = gw.client(api_key=only)
    ids = [m.id for m in c.models.list().data]
    assert set(ids) == {"pool-list", "gpt-4o-mini-e2e"}, ids
    assert c.chat.completions.create(model="gpt-4o-mini-e2e", messages=PROMPT).choices[0].message.content
    other = gw.new_key(tenant, models=["something-else"])["key"]
    assert [m.id for m in gw.client(api_key=other).models.list().data] == []
    with pytest.raises(openai.PermissionDeniedError):
        gw.client(api_key=other).chat.completions.create(model="gpt-4o-mini-e2e", messages=PROMPT)


def test_weights_are_honoured(gw, ups):
    a, b = ups
    a.reset(), b.reset()
    _put_group(gw, "pool-weights", _two_members(ups, wa=3, wb=1))
    _, key = _tenant(gw, "routing-weights")
    c = gw.client(api_key=key)

    def one(_):
        return c.chat.completions.create(model="pool-weights", messages=PROMPT, max_tokens=8).choices[0].message.content

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(one, range(400)))
    assert a.calls + b.calls == 400, (a.calls, b.calls)
    assert 270 <= a.calls <= 330 and 70 <= b.calls <= 130, (a.calls, b.calls)
    assert answers.count("from A!") == a.calls and answers.count("from B!") == b.calls
    usage = _usage(gw, key)["pool-weights"]
    assert usage["requests"] == 400
    assert usage["prompt_tokens"] == 400 * PROMPT_TOKENS and usage["completion_tokens"] == 400 * COMPLETION_TOKENS


@pytest.mark.parametrize("mode", ["500", "429", "drop"])
@pytest.mark.parametrize("stream", [False, True])
def test_every_request_succeeds_while_one_member_fails(gw, ups, mode, stream):
    a, b = ups
    name = f"pool-fail-{mode}-{stream}".lower()
    _put_group(gw, name, _two_members(ups))
    a.reset(), b.reset(mode)
    _, key = _tenant(gw, f"routing-{name}")
    c = gw.client(api_key=key)
    n = 30
    for _ in range(n):
        if stream:
            text = "".join(ch.choices[0].delta.content or "" for ch in
                           c.chat.completions.create(model=name, messages=PROMPT, stream=True) if ch.choices)
        else:
            text = c.chat.completions.create(model=name, messages=PROMPT).choices[0].message.content
        assert text == "from A!"
    assert a.calls == n
    # The failing member was tried, then rested (cool-down, then its circuit opened).
    assert 1 <= b.calls < n // 2, b.calls
    # One bill per request, for the member that answered; failed attempts cost nothing.
    usage = _usage(gw, key)[name]
    assert usage["requests"] == n, usage
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (n * PROMPT_TOKENS, n * COMPLETION_TOKENS), usage
    rows = _logs(gw, key, n)
    assert len(rows) == n and {r["member"] for r in rows} == {"upstream#0"}, rows[:3]
    assert all(r["status"] == 200 for r in rows)
    assert sum(r["retries"] for r in rows) == b.calls, (b.calls, [r["retries"] for r in rows])
    b.reset()


def test_a_stream_cut_after_its_first_byte_is_not_retried(gw, ups):
    a, b = ups
    _put_group(gw, "pool-die", _two_members(ups))
    a.reset("die"), b.reset("die")
    _, key = _tenant(gw, "routing-die")
    stream = gw.client(api_key=key).chat.completions.create(
        model="pool-die", messages=PROMPT, stream=True)
    got, ids = [], set()
    with pytest.raises(openai.APIError):
        for ch in stream:
            ids.add(ch.id)
            if ch.choices and ch.choices[0].delta.content:
                got.append(ch.choices[0].delta.content)
    assert got == ["from "], got
    assert a.calls + b.calls == 1, (a.calls, b.calls)
    (request_id,) = ids
    bill = settled_bill(gw, request_id)
    assert bill["state"] != "open", bill
    assert bill["billed"]["completion_tokens"] == 1, bill
    usage = _usage(gw, key)["pool-die"]
    assert usage["requests"] == 1 and usage["completion_tokens"] == 1, usage
    (row,) = _logs(gw, key, 1)
    assert row["id"] == request_id and row["retries"] == 0 and row["status"] >= 500, row
    assert row["member"] in ("upstream#0", "upstream#1") and row["completion_tokens"] == 1, row
    a.reset(), b.reset()


def test_no_healthy_member_is_a_503_with_retry_after_then_the_fallback(gw, ups):
    a, b = ups
    _put_group(gw, "pool-down", _two_members(ups))
    a.reset("500"), b.reset("500")
    _, key = _tenant(gw, "routing-down")
    statuses, retry_after = [], None
    for _ in range(8):
        r = requests.post(gw.url + "/v1/chat/completions", headers=gw.auth(key), timeout=30,
                          json={"model": "pool-down", "messages": PROMPT})
        statuses.append(r.status_code)
        if r.status_code == 503:
            retry_after = r.headers.get("retry-after")
            assert r.json()["error"]["code"] == "no_healthy_member", r.text
            break
    assert statuses[-1] == 503 and retry_after and int(retry_after) >= 1, statuses
    # Nothing was billed for any of them.
    assert "pool-down" not in _usage(gw, key) or _usage(gw, key)["pool-down"]["completion_tokens"] == 0
    # A fallback takes the requests the group cannot.
    c_up = Upstream("C")
    try:
        _put_group(gw, "pool-backup", {"members": [{"upstream": {"base_url": c_up.url}}]})
        _put_group(gw, "pool-down", _two_members(ups, fallbacks=["pool-backup"]))
        a.reset("500"), b.reset("500")
        r = gw.client(api_key=key).chat.completions.create(model="pool-down", messages=PROMPT)
        assert r.choices[0].message.content == "from C!"
        rows = _logs(gw, key, len(statuses) + 1)
        assert rows[0]["member"] == "pool-backup" and rows[0]["retries"] == 2, rows[0]
    finally:
        c_up.close()
        a.reset(), b.reset()


def test_logs_show_the_member_and_only_to_their_tenant(gw, ups):
    a, b = ups
    a.reset(), b.reset()
    _put_group(gw, "pool-logs", _two_members(ups))
    tenant, key = _tenant(gw, "routing-logs")
    other_tenant, other = _tenant(gw, "routing-logs-other")
    c = gw.client(api_key=key)
    for _ in range(6):
        c.chat.completions.create(model="pool-logs", messages=PROMPT)
    rows = _logs(gw, key, 6)
    assert len(rows) == 6
    assert sorted(r["member"] for r in rows) == ["upstream#0"] * 3 + ["upstream#1"] * 3, rows
    prefix = key[:len(rows[0]["key_prefix"])]
    for r in rows:
        assert r["model"] == "pool-logs" and r["status"] == 200 and r["key_prefix"] == prefix
        assert r["prompt_tokens"] == PROMPT_TOKENS and r["completion_tokens"] == COMPLETION_TOKENS
        assert r["ttft_ms"] is not None and r["total_ms"] >= r["ttft_ms"]
    # Filters and pages.
    assert _logs(gw, key, 0, model="nope") == []
    assert len(_logs(gw, key, 6, status=200)) == 6
    first = requests.get(gw.url + "/v1/logs", params={"limit": 4}, headers=gw.auth(key), timeout=30).json()
    assert len(first["data"]) == 4 and first["has_more"]
    rest = requests.get(gw.url + "/v1/logs", params={"limit": 4, "after": first["last_id"]},
                        headers=gw.auth(key), timeout=30).json()
    assert len(rest["data"]) == 2 and not rest["has_more"]
    assert not {r["id"] for r in first["data"]} & {r["id"] for r in rest["data"]}
    # Another tenant sees none of them; the operator sees them by tenant.
    assert _logs(gw, other, 0) == []
    r = requests.get(gw.url + "/v1/logs", params={"tenant": tenant}, headers=gw.auth(other), timeout=30)
    assert r.status_code == 400
    r = requests.get(gw.url + "/admin/v1/logs", params={"tenant": tenant}, headers=gw.auth(gw.admin_key), timeout=30)
    assert r.status_code == 200 and len(r.json()["data"]) == 6
    r = requests.get(gw.url + "/admin/v1/logs", params={"tenant": tenant}, headers=gw.auth(other), timeout=30)
    assert r.status_code in (401, 403)
    r = requests.get(gw.url + "/v1/logs", params={"limit": 0}, headers=gw.auth(key), timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "limit"
    assert other_tenant


def _psql(sql: str):
    base = os.environ.get("FLYWHEEL_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
    subprocess.run(["psql", base, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql], check=True, capture_output=True,
                   timeout=60)
    return base


def test_groups_reach_every_gateway_on_one_postgres_database(tmp_path_factory, admin_key, ups):
    """A group put through one gateway is served by another on the same PostgreSQL database
    (its member key opened there with the shared secret key), a deletion too; both log."""
    a, b = ups
    a.reset(), b.reset()
    db = "fw_e2e_routing_" + secrets.token_hex(6)
    base = _psql(f"CREATE DATABASE {db}")
    url = f"{base.rsplit('/', 1)[0]}/{db}"
    env = {"FLYWHEEL_SECRET_KEY": base64.b64encode(secrets.token_bytes(32)).decode()}
    servers = []
    try:
        for name in ("routing-pg-a", "routing-pg-b"):
            servers.append(_start(name, ["--database-url", url], str(tmp_path_factory.mktemp(name)), admin_key,
                                  env=env))
        one, two = servers
        _put_group(one, "pool-pg", _two_members(ups, aliases=["pool-pg-alias"]))
        tenant, key = _tenant(one, "routing-pg")
        deadline = time.monotonic() + 20
        while "pool-pg-alias" not in [m.id for m in two.client(api_key=key).models.list().data]:
            assert time.monotonic() < deadline, "the other gateway never served the group"
            time.sleep(0.5)
        for s in servers:
            for _ in range(2):
                r = s.client(api_key=key).chat.completions.create(model="pool-pg-alias", messages=PROMPT)
                assert r.choices[0].message.content in ("from A!", "from B!")
        rows = _logs(one, key, 4)
        assert len(rows) == 4 and all(r["model"] == "pool-pg-alias" and r["status"] == 200 for r in rows), rows
        r = requests.delete(one.url + "/admin/v1/models/pool-pg", headers=one.auth(admin_key), timeout=30)
        assert r.status_code == 200
        deadline = time.monotonic() + 20
        while "pool-pg" in [m.id for m in two.client(api_key=key).models.list().data]:
            assert time.monotonic() < deadline, "the other gateway kept serving a deleted group"
            time.sleep(0.5)
        assert tenant
    finally:
        for s in servers:
            _stop(s)
        _psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
