"""MCP gateway end to end: real `flywheel serve` processes (no model needed) in front of real
MCP servers (tests/e2e/mcp_servers/counter.py), driven with the official `mcp` Python client.

Covers: tools of the caller's servers only, `mcp` key scope, public servers and grants, header
secrets (never returned, never stored in plaintext, sent upstream), the outbound allow-list
(SSRF) and redirects (never followed), prompts and resources passed through, per-call billing and the audit log, dead upstreams, and one upstream session continued
by two Flywheel processes sharing one PostgreSQL database.
"""

import asyncio
import base64
import contextlib
import http.server
import json
import os
import secrets
import subprocess
import sys
import threading
import time

import httpx2
import pytest
import requests
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from conftest import _free_port, _start, _stop

MCP_SERVERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mcp_servers")
COUNTER_TOOLS = {"count", "echo", "sleep"}
CALL_TIMEOUT_S = 20  # one MCP request, client side
TEST_TIMEOUT_S = 60  # one whole async scenario
LEGACY = "legacy"  # the 2025-11-25 revision: initialize + Mcp-Session-Id
STATELESS = "2026-07-28"  # the per-request revision: one implicit session per API key
INSUFFICIENT_FUNDS = -32001  # the gateway's JSON-RPC error code for a call refused for money


# ---------------------------------------------------------------------------------------------
# Upstream MCP servers


class Upstream:
    """One counter.py-style MCP server process on 127.0.0.1:PORT."""

    def __init__(self, proc: subprocess.Popen, port: int, log_path: str):
        self.proc = proc
        self.port = port
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{port}/mcp"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # by PID: only the process we started
            self.proc.wait(timeout=10)


@pytest.fixture
def upstream(tmp_path):
    """Starts MCP test servers: `upstream()` (counter.py) or `upstream("header_counter.py")`.
    Waits for their "ready" line; all of them are killed when the test ends."""
    started = []

    def start(script: str = "counter.py", *args: str) -> Upstream:
        port = _free_port()
        log_path = str(tmp_path / f"{script}-{port}.log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, os.path.join(MCP_SERVERS, script), str(port), *args],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        u = Upstream(proc, port, log_path)
        started.append(u)
        deadline = time.monotonic() + 30
        while True:
            with open(log_path, errors="replace") as f:
                text = f.read()
            if "ready" in text.splitlines():
                return u
            if proc.poll() is not None or time.monotonic() > deadline:
                u.kill()
                pytest.fail(f"{script} on port {port} did not print ready (exit {proc.returncode}):\n{text[-2000:]}",
                            pytrace=False)
            time.sleep(0.05)

    yield start
    for u in started:
        u.kill()


# ---------------------------------------------------------------------------------------------
# Flywheel processes


@pytest.fixture(scope="module")
def gw(tmp_path_factory, admin_key):
    """A gateway that may reach MCP servers on any port of 127.0.0.1."""
    tmp = str(tmp_path_factory.mktemp("mcp-gw"))
    s = _start("mcp-gw", ["--mcp-allow-hosts", "127.0.0.1", "--mcp-call-timeout-seconds", "10"], tmp, admin_key)
    s.data_dir = os.path.join(tmp, "data")
    yield s
    _stop(s)


def _tenant_key(server, scopes=("mcp", "inference"), **tenant_fields):
    """A new tenant (unique name) and a key of it with SCOPES: (tenant id, key secret)."""
    tenant = server.new_tenant("mcp-" + secrets.token_hex(4), **tenant_fields)
    return tenant, server.new_key(tenant, scopes=list(scopes))["key"]


def _register(server, key, name, url, expect=201, admin=False, **fields):
    """POST /v1/mcp/servers (or the operator's /admin/v1/mcp/servers); returns the response."""
    path = "/admin/v1/mcp/servers" if admin else "/v1/mcp/servers"
    r = requests.post(server.url + path, headers=server.auth(key), timeout=30,
                      json={"name": name, "url": url, **fields})
    assert r.status_code == expect, f"register {name} -> {url}: {r.status_code} {r.text[:500]}"
    return r


def _server_names(server, key):
    r = requests.get(server.url + "/v1/mcp/servers", headers=server.auth(key), timeout=30)
    assert r.status_code == 200, r.text
    return {s["name"] for s in r.json()["data"]}


# ---------------------------------------------------------------------------------------------
# The official MCP client


@contextlib.asynccontextmanager
async def mcp_client(server, key, mode=LEGACY, transport=None):
    """The official client on SERVER's /mcp with KEY as bearer token (TRANSPORT: an httpx2 transport)."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, transport=transport,
                              timeout=httpx2.Timeout(CALL_TIMEOUT_S))
    async with http:
        async with Client(streamable_http_client(server.url + "/mcp", http_client=http), mode=mode,
                          read_timeout_seconds=CALL_TIMEOUT_S) as client:
            yield client


def run(coro):
    """Runs one async scenario, bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT_S))


async def tool_names(client) -> set:
    # bypass: the 2026-07-28 client may cache listings; every check here must reach the gateway.
    return {t.name for t in (await client.list_tools(cache_mode="bypass")).tools}


def text_of(result) -> str:
    assert len(result.content) == 1 and result.content[0].type == "text", result
    return result.content[0].text


def prefixed(server_name: str, tools=COUNTER_TOOLS) -> set:
    return {f"{server_name}__{t}" for t in tools}


# ---------------------------------------------------------------------------------------------
# 1. Tools of the caller's servers only; the `mcp` scope


@pytest.mark.parametrize("mode", [LEGACY, STATELESS])
def test_client_sees_and_calls_its_own_servers_only(gw, upstream, mode):
    alpha, beta = upstream(), upstream()
    _, key = _tenant_key(gw)
    _, other_key = _tenant_key(gw)
    _register(gw, key, "alpha", alpha.url)
    _register(gw, key, "beta", beta.url)
    # Another tenant's server, on a working upstream: visible to that tenant only.
    _register(gw, other_key, "gamma", alpha.url)
    assert _server_names(gw, key) == {"alpha", "beta"}
    assert _server_names(gw, other_key) == {"gamma"}

    async def scenario():
        async with mcp_client(gw, other_key, mode) as other:
            assert await tool_names(other) == prefixed("gamma")  # the control: gamma works for its owner
            assert text_of(await other.call_tool("gamma__echo", {"text": "owner"})) == "owner"
        async with mcp_client(gw, key, mode) as client:
            assert await tool_names(client) == prefixed("alpha") | prefixed("beta")
            result = await client.call_tool("alpha__echo", {"text": "hello from alpha"})
            assert not result.is_error and text_of(result) == "hello from alpha"
            result = await client.call_tool("beta__echo", {"text": "hello from beta"})
            assert not result.is_error and text_of(result) == "hello from beta"
            with pytest.raises(MCPError):
                await client.call_tool("gamma__echo", {"text": "not mine"})

    run(scenario())


@pytest.mark.parametrize("mode", [LEGACY, STATELESS])
def test_prompts_and_resources_pass_through_to_their_servers(gw, upstream, mode):
    a, b = upstream(), upstream()
    tenant, key = _tenant_key(gw)
    _register(gw, key, "pa", a.url)
    _register(gw, key, "pb", b.url)

    async def scenario():
        async with mcp_client(gw, key, mode) as client:
            prompts = {p.name for p in (await client.list_prompts()).prompts}
            assert prompts == {"pa__greet", "pb__greet"}, prompts
            got = await client.get_prompt("pb__greet", {"name": "Ada"})
            assert got.messages[0].content.text == "Say hello to Ada.", got
            resources = [r.uri for r in (await client.list_resources()).resources]
            assert sorted(map(str, resources)) == ["counter://motd", "counter://motd"], resources
            read = await client.read_resource("counter://motd")
            assert read.contents[0].text == "flywheel motd", read
            templates = {t.name for t in (await client.list_resource_templates()).resource_templates}
            assert templates == {"pa__note", "pb__note"}, templates
            templated = await client.read_resource("counter://notes/gears")
            assert templated.contents[0].text == "note about gears", templated
            with pytest.raises(MCPError):
                await client.read_resource("counter://nowhere")
            with pytest.raises(MCPError):
                await client.get_prompt("nobody__greet", {"name": "x"})

    run(scenario())


def test_key_without_mcp_scope_is_refused(gw, upstream):
    tenant, key = _tenant_key(gw)
    _register(gw, key, "alpha", upstream().url)
    plain = gw.new_key(tenant)["key"]  # the default scopes, which do not include `mcp`
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                             "clientInfo": {"name": "e2e", "version": "1"}}}
    accept = {"Accept": "application/json, text/event-stream"}
    r = requests.post(gw.url + "/mcp", json=initialize, headers={**gw.auth(key), **accept}, timeout=30)
    assert r.status_code == 200, r.text  # the control: the same request with an `mcp` key
    r = requests.post(gw.url + "/mcp", json=initialize, headers={**gw.auth(plain), **accept}, timeout=30)
    assert r.status_code == 403, r.text
    r = requests.get(gw.url + "/v1/mcp/servers", headers=gw.auth(plain), timeout=30)
    assert r.status_code == 403, r.text
    r = requests.post(gw.url + "/v1/mcp/servers", headers=gw.auth(plain), timeout=30,
                      json={"name": "sneaky", "url": upstream().url})
    assert r.status_code == 403, r.text


# ---------------------------------------------------------------------------------------------
# 2. Public servers: visible to a tenant only while granted


def test_public_server_is_visible_only_while_granted(gw, upstream):
    name = "pub" + secrets.token_hex(3)
    created = _register(gw, gw.admin_key, name, upstream().url, admin=True, public=True).json()
    assert created["owner"] == "operator" and created["public"] is True, created
    tenant, key = _tenant_key(gw)
    _, bystander = _tenant_key(gw)

    async def tools(k):
        async with mcp_client(gw, k) as client:
            return await tool_names(client)

    assert name not in _server_names(gw, key)
    assert not run(tools(key)) & prefixed(name)

    grant = requests.post(f"{gw.url}/admin/v1/tenants/{tenant}/mcp_grants", json={"server": name},
                          headers=gw.auth(gw.admin_key), timeout=30)
    assert grant.status_code == 201, grant.text
    again = requests.post(f"{gw.url}/admin/v1/tenants/{tenant}/mcp_grants", json={"server": created["id"]},
                          headers=gw.auth(gw.admin_key), timeout=30)
    assert again.status_code == 200, again.text  # already granted (by id this time)

    listed = requests.get(gw.url + "/v1/mcp/servers", headers=gw.auth(key), timeout=30).json()["data"]
    mine = [s for s in listed if s["name"] == name]
    assert len(mine) == 1 and mine[0]["owner"] == "operator" and mine[0]["public"] is True, listed

    async def granted():
        async with mcp_client(gw, key) as client:
            assert prefixed(name) <= await tool_names(client)
            assert text_of(await client.call_tool(f"{name}__echo", {"text": "public"})) == "public"

    run(granted())
    assert name not in _server_names(gw, bystander)  # a grant is per tenant
    assert not run(tools(bystander)) & prefixed(name)

    r = requests.delete(f"{gw.url}/admin/v1/tenants/{tenant}/mcp_grants/{name}", headers=gw.auth(gw.admin_key),
                        timeout=30)
    assert r.status_code == 204, r.text
    assert name not in _server_names(gw, key)

    async def revoked():
        async with mcp_client(gw, key) as client:
            assert not await tool_names(client) & prefixed(name)
            with pytest.raises(MCPError):
                await client.call_tool(f"{name}__echo", {"text": "revoked"})

    run(revoked())


# ---------------------------------------------------------------------------------------------
# 3. Header secrets


def test_header_secrets_are_sent_upstream_but_never_returned_or_stored_in_plaintext(gw, upstream):
    up = upstream("header_counter.py")
    _, key = _tenant_key(gw)
    name = "sec" + secrets.token_hex(4)  # unique: the control for the scan of the data dir below
    secret = "fw-e2e-secret-" + secrets.token_hex(16)
    rotated = "fw-e2e-rotated-" + secrets.token_hex(16)
    op_name = "opsec" + secrets.token_hex(4)
    op_secret = "fw-e2e-operator-" + secrets.token_hex(16)
    created = _register(gw, key, name, up.url, headers={"X-Api-Key": secret})
    assert created.json()["header_names"] == ["X-Api-Key"], created.text
    assert secret not in created.text
    # An operator's server with a secret header too (the admin listing shows the operator's servers).
    op = _register(gw, gw.admin_key, op_name, up.url, admin=True, headers={"Authorization": f"Bearer {op_secret}"})
    assert op.json()["header_names"] == ["Authorization"] and op_secret not in op.text, op.text

    for path, k, listed, value in (("/v1/mcp/servers", key, name, secret),
                                   ("/admin/v1/mcp/servers", gw.admin_key, op_name, op_secret)):
        r = requests.get(gw.url + path, headers=gw.auth(k), timeout=30)
        assert r.status_code == 200 and listed in r.text, r.text
        assert value not in r.text, f"GET {path} returns the header value"

    async def header_upstream():
        async with mcp_client(gw, key) as client:
            return text_of(await client.call_tool(f"{name}__header", {"name": "X-Api-Key"}))

    assert run(header_upstream()) == secret

    r = requests.patch(f"{gw.url}/v1/mcp/servers/{name}", json={"headers": {"X-Api-Key": rotated}},
                       headers=gw.auth(key), timeout=30)
    assert r.status_code == 200, r.text
    assert rotated not in r.text and r.json()["header_names"] == ["X-Api-Key"], r.text
    assert run(header_upstream()) == rotated

    # Every file of the data dir (flywheel.db, -wal, -shm, ...): the name is there in plaintext, the secrets are not.
    found_name, leaks = False, []
    for root, _, files in os.walk(gw.data_dir):
        for f in files:
            path = os.path.join(root, f)
            with open(path, "rb") as fh:
                data = fh.read()
            found_name |= name.encode() in data
            leaks += [f"{path}: {s[:20]}…" for s in (secret, rotated, op_secret) if s.encode() in data]
    assert found_name, f"the scan of {gw.data_dir} did not find the server's name: it reads the wrong files"
    assert not leaks, f"header values stored in plaintext: {leaks}"
    with open(gw.log_path, errors="replace") as f:
        log = f.read()
    assert not [v for v in (secret, rotated, op_secret) if v in log], "a header value is in the server log"


# ---------------------------------------------------------------------------------------------
# 4. Outbound allow-list (SSRF)


def test_registration_refuses_private_and_loopback_addresses_not_allowed(tmp_path_factory, admin_key, upstream):
    allowed = upstream()
    other = _free_port()  # nothing listens there; it is refused before any connection anyway
    tmp = str(tmp_path_factory.mktemp("mcp-ssrf"))
    s = _start("mcp-ssrf", ["--mcp-allow-hosts", f"127.0.0.1:{allowed.port}"], tmp, admin_key)
    try:
        _, key = _tenant_key(s)
        refused = [
            f"http://127.0.0.1:{other}/mcp",
            "http://10.0.0.1/mcp",
            "http://192.168.1.1/mcp",
            "http://169.254.169.254/latest",
            f"http://[::1]:{allowed.port}/mcp",
            f"http://[::ffff:127.0.0.1]:{other}/mcp",
            f"http://localhost:{other}/mcp",  # a host name is resolved at registration
        ]
        for i, url in enumerate(refused):
            r = _register(s, key, f"bad{i}", url, expect=403)
            assert r.json()["error"]["code"] == "permission_denied", f"{url}: {r.text}"
        # The operator is held to the same list.
        r = _register(s, admin_key, "badop", "http://10.0.0.1/mcp", expect=403, admin=True)
        assert r.json()["error"]["code"] == "permission_denied", r.text

        ok = _register(s, key, "good", allowed.url).json()
        assert ok["url"] == allowed.url and ok["status"] == "ok", ok
        # Changing the URL of a registered server is checked too.
        r = requests.patch(f"{s.url}/v1/mcp/servers/good", json={"url": "http://169.254.169.254/latest"},
                           headers=s.auth(key), timeout=30)
        assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied", r.text
        assert _server_names(s, key) == {"good"}
        listed = requests.get(s.url + "/v1/mcp/servers", headers=s.auth(key), timeout=30).json()["data"]
        assert listed[0]["url"] == allowed.url, listed
    finally:
        _stop(s)


# ---------------------------------------------------------------------------------------------
# 5. Billing and audit


def _balance(server, key) -> int:
    r = requests.get(server.url + "/v1/account", headers=server.auth(key), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["balance"]


def _calls(server, key, server_id) -> list:
    """The audit rows of SERVER_ID's calls, newest first."""
    r = requests.get(server.url + "/v1/mcp/calls?limit=100", headers=server.auth(key), timeout=30)
    assert r.status_code == 200, r.text
    return [c for c in r.json()["data"] if c["server_id"] == server_id]


def _usage(server, key, server_id) -> dict:
    r = requests.get(server.url + "/v1/usage", headers=server.auth(key), timeout=30)
    assert r.status_code == 200, r.text
    rows = [u for u in r.json()["data"] if u["group"] == f"mcp/{server_id}"]
    assert len(rows) <= 1, r.text
    return rows[0] if rows else {"tool_calls": 0, "cost": 0}  # no row: nothing used


def test_paid_calls_are_charged_on_success_only_and_audited(gw, upstream):
    price, top_up, n_ok = 1500, 10_000, 4
    alpha, beta = upstream(), upstream()
    tenant, key = _tenant_key(gw, grant_tokens=0)
    gw.admin("POST", f"/tenants/{tenant}/topups", {"amount": top_up}, expect=200)
    assert _balance(gw, key) == top_up
    ids = {}
    for name, up in (("alpha", alpha), ("beta", beta)):
        ids[name] = _register(gw, key, name, up.url).json()["id"]
        gw.admin("PUT", f"/prices/mcp/{ids[name]}", {"per_call": price}, expect=200)

    async def scenario():
        async with mcp_client(gw, key) as client:
            for i in range(n_ok):
                assert text_of(await client.call_tool("alpha__echo", {"text": f"paid {i}"})) == f"paid {i}"
            assert _balance(gw, key) == top_up - n_ok * price
            usage = _usage(gw, key, ids["alpha"])
            assert (usage["tool_calls"], usage["cost"]) == (n_ok, n_ok * price), usage
            audit = _calls(gw, key, ids["alpha"])
            assert [(c["outcome"], c["cost"], c["tool"]) for c in audit] == [("ok", price, "echo")] * n_ok, audit

            # The tool reports an error (missing argument): released, nothing charged.
            result = await client.call_tool("alpha__echo", {})
            assert result.is_error, result
            assert _balance(gw, key) == top_up - n_ok * price
            last = _calls(gw, key, ids["alpha"])[0]
            assert (last["outcome"], last["cost"]) == ("tool_error", 0), last

            # The upstream is gone: the call fails, nothing charged.
            beta.kill()
            with pytest.raises(MCPError):
                await client.call_tool("beta__echo", {"text": "dead"})
            assert _balance(gw, key) == top_up - n_ok * price
            last = _calls(gw, key, ids["beta"])[0]
            assert (last["outcome"], last["cost"]) == ("failed", 0), last
            assert _usage(gw, key, ids["beta"])["cost"] == 0

            # Spend down to less than one call's price: the next call is refused.
            while _balance(gw, key) >= price:
                await client.call_tool("alpha__echo", {"text": "more"})
            left = _balance(gw, key)
            assert left == (top_up - n_ok * price) % price, left
            with pytest.raises(MCPError) as refused:
                await client.call_tool("alpha__echo", {"text": "too poor"})
            assert refused.value.code == INSUFFICIENT_FUNDS, refused.value
            assert _balance(gw, key) == left
            last = _calls(gw, key, ids["alpha"])[0]
            assert (last["outcome"], last["cost"]) == ("refused", 0), last
            assert _usage(gw, key, ids["alpha"])["cost"] == top_up - left

    run(scenario())


def test_arguments_are_audited_only_after_the_tenant_opts_in(gw, upstream):
    up = upstream()
    tenant, key = _tenant_key(gw)
    server_id = _register(gw, key, "aud", up.url).json()["id"]
    settings = gw.url + "/v1/mcp/settings"
    r = requests.get(settings, headers=gw.auth(key), timeout=30)
    assert r.status_code == 200 and r.json() == {"audit_arguments": False}, r.text
    for bad in ({"audit_arguments": "yes"}, {"keep": True}):
        r = requests.put(settings, headers=gw.auth(key), json=bad, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == "audit_arguments", r.text

    async def call(text):
        async with mcp_client(gw, key) as client:
            assert text_of(await client.call_tool("aud__echo", {"text": text})) == text

    run(call("private"))
    assert _calls(gw, key, server_id)[0]["arguments"] is None
    r = requests.put(settings, headers=gw.auth(key), json={"audit_arguments": True}, timeout=30)
    assert r.status_code == 200 and r.json() == {"audit_arguments": True}, r.text
    run(call("kept"))
    newest, older = _calls(gw, key, server_id)[:2]
    assert newest["arguments"] == {"text": "kept"} and older["arguments"] is None, (newest, older)
    # Opting out again stops keeping them.
    requests.put(settings, headers=gw.auth(key), json={"audit_arguments": False}, timeout=30)
    run(call("private again"))
    assert _calls(gw, key, server_id)[0]["arguments"] is None


def test_a_call_whose_client_goes_away_is_released(gw, upstream):
    price, top_up = 2500, 10_000
    up = upstream()
    tenant, key = _tenant_key(gw, grant_tokens=0)
    gw.admin("POST", f"/tenants/{tenant}/topups", {"amount": top_up}, expect=200)
    server_id = _register(gw, key, "slow", up.url).json()["id"]
    gw.admin("PUT", f"/prices/mcp/{server_id}", {"per_call": price}, expect=200)
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "slow__sleep", "arguments": {"seconds": 4},
        "_meta": {"io.modelcontextprotocol/protocolVersion": STATELESS}}}
    headers = {**gw.auth(key), "MCP-Protocol-Version": STATELESS, "Accept": "application/json, text/event-stream"}
    # The client gives up after 1 s, while the tool sleeps: the price held for the call must
    # not stay held.
    with pytest.raises(requests.exceptions.Timeout):
        requests.post(gw.url + "/mcp", headers=headers, json=call, timeout=1)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        rows = _calls(gw, key, server_id)
        if rows and _balance(gw, key) == top_up:
            break
        time.sleep(0.2)
    assert _balance(gw, key) == top_up
    [row] = _calls(gw, key, server_id)
    assert (row["outcome"], row["cost"]) == ("failed", 0) and "went away" in row["error"], row


# ---------------------------------------------------------------------------------------------
# 6. A dead upstream


def test_dead_server_is_skipped_in_listing_and_fails_calls(gw, upstream):
    alpha, beta = upstream(), upstream()
    _, key = _tenant_key(gw)
    _register(gw, key, "alpha", alpha.url)
    _register(gw, key, "beta", beta.url)

    async def scenario():
        async with mcp_client(gw, key) as client:
            assert await tool_names(client) == prefixed("alpha") | prefixed("beta")
            assert text_of(await client.call_tool("beta__echo", {"text": "alive"})) == "alive"
            beta.kill()
            assert await tool_names(client) == prefixed("alpha")
            with pytest.raises(MCPError):
                await client.call_tool("beta__echo", {"text": "dead"})
            assert text_of(await client.call_tool("alpha__echo", {"text": "still here"})) == "still here"
        async with mcp_client(gw, key) as fresh:  # a new session sees the same
            assert await tool_names(fresh) == prefixed("alpha")

    run(scenario())


# ---------------------------------------------------------------------------------------------
# 7. Two Flywheel processes, one PostgreSQL database, one upstream session


def _postgres_base() -> str:
    return os.environ.get("FLYWHEEL_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")


def _psql(sql: str):
    subprocess.run(["psql", _postgres_base(), "-v", "ON_ERROR_STOP=1", "-q", "-c", sql], check=True,
                   capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pg_pair(tmp_path_factory, admin_key):
    """Two gateways on one scratch PostgreSQL database, sharing FLYWHEEL_SECRET_KEY."""
    db = "fw_e2e_mcp_" + secrets.token_hex(6)
    _psql(f"CREATE DATABASE {db}")
    url = f"{_postgres_base().rsplit('/', 1)[0]}/{db}"
    env = {"FLYWHEEL_SECRET_KEY": base64.b64encode(secrets.token_bytes(32)).decode()}
    servers = []
    try:
        for name in ("mcp-pg-a", "mcp-pg-b"):
            tmp = str(tmp_path_factory.mktemp(name))
            servers.append(_start(name, ["--mcp-allow-hosts", "127.0.0.1", "--database-url", url], tmp, admin_key,
                                  env=env))
        yield servers
    finally:
        for s in servers:
            _stop(s)
        _psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


class Alternate(httpx2.AsyncBaseTransport):
    """Sends each POST to the next of PORTS in turn (a load balancer without affinity); other
    requests (the GET stream, the closing DELETE) go to the first. Records (port, JSON-RPC method)."""

    def __init__(self, ports):
        self.inner = httpx2.AsyncHTTPTransport()
        self.ports = ports
        self.posts = 0
        self.sent = []

    async def handle_async_request(self, request):
        if request.method == "POST":
            port = self.ports[self.posts % len(self.ports)]
            self.posts += 1
            request.url = request.url.copy_with(port=port)
            request.headers["host"] = f"{request.url.host}:{port}"
            self.sent.append((port, json.loads(request.content).get("method")))
        return await self.inner.handle_async_request(request)

    async def aclose(self):
        await self.inner.aclose()


@pytest.mark.parametrize("mode", [LEGACY, STATELESS])
def test_two_processes_on_one_postgres_continue_one_upstream_session(pg_pair, upstream, mode):
    a, b = pg_pair
    up = upstream()
    tenant, key = _tenant_key(a)  # a fresh key: a fresh implicit session for the 2026-07-28 client
    # A header secret: process B can call the server only with the secret key they share.
    _register(a, key, "ctr", up.url, headers={"X-Api-Key": "shared-" + secrets.token_hex(8)})
    port_a, port_b = (int(s.url.rsplit(":", 1)[1]) for s in (a, b))

    async def scenario():
        route = Alternate([port_a, port_b])
        async with mcp_client(a, key, mode, transport=route) as client:
            counts = [text_of(await client.call_tool("ctr__count", {})) for _ in range(4)]
        calls = [port for port, method in route.sent if method == "tools/call"]
        assert set(calls) == {port_a, port_b}, route.sent  # the calls really went to both processes
        assert counts == ["1", "2", "3", "4"], (counts, route.sent)
        if mode == LEGACY:
            # The control: a new client session gets a new upstream session, whose counter starts again.
            async with mcp_client(b, key, mode) as fresh:
                assert text_of(await fresh.call_tool("ctr__count", {})) == "1"

    run(scenario())


# ---------------------------------------------------------------------------------------------
# 9. Stdio servers: run by Flywheel, one process per client session


def _register_stdio(server, name, env=None):
    """The operator registers mcp_servers/stdio_counter.py as a public stdio server."""
    body = {"name": name, "transport": "stdio", "command": sys.executable,
            "args": [os.path.join(MCP_SERVERS, "stdio_counter.py")], "env": env or {}, "public": True}
    r = requests.post(server.url + "/admin/v1/mcp/servers", headers=server.auth(), json=body, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()


def _grant(server, tenant, name):
    r = requests.post(f"{server.url}/admin/v1/tenants/{tenant}/mcp_grants", headers=server.auth(),
                      json={"server": name}, timeout=30)
    assert r.status_code in (200, 201), r.text


def test_stdio_server_beside_a_remote_one_and_a_killed_process_is_replaced(gw, upstream):
    up = upstream()
    name = "st" + secrets.token_hex(3)
    env_secret = "env-" + secrets.token_hex(8)
    view = _register_stdio(gw, name, env={"STDIO_SECRET": env_secret})
    assert view["env_names"] == ["STDIO_SECRET"] and env_secret not in json.dumps(view)
    tenant, key = _tenant_key(gw)
    _grant(gw, tenant, name)
    _register(gw, key, "remote", up.url)
    # A tenant may not register a stdio server: it would run a command on Flywheel's host.
    r = requests.post(gw.url + "/v1/mcp/servers", headers=gw.auth(key), timeout=30,
                      json={"name": "mine", "transport": "stdio", "command": "sh"})
    assert r.status_code == 403, r.text

    async def scenario():
        async with mcp_client(gw, key) as client:
            tools = await tool_names(client)
            assert prefixed("remote") <= tools and prefixed(name, COUNTER_TOOLS | {"pid"}) <= tools, tools
            assert [text_of(await client.call_tool(f"{name}__count", {})) for _ in range(2)] == ["1", "2"]
            assert text_of(await client.call_tool("remote__echo", {"text": "hi"})) == "hi"
            pid = int(text_of(await client.call_tool(f"{name}__pid", {})))
            # Kill the process in the middle of a call: that call fails with an MCP error...
            sleeping = asyncio.create_task(client.call_tool(f"{name}__sleep", {"seconds": 8}))
            await asyncio.sleep(1)
            os.kill(pid, 9)
            with pytest.raises(MCPError, match="exited"):
                await sleeping
            # ...the next call starts a new process (a new session: its counter starts again)...
            assert text_of(await client.call_tool(f"{name}__count", {})) == "1"
            assert int(text_of(await client.call_tool(f"{name}__pid", {}))) != pid
            # ...and the other server's tools never left the list.
            assert prefixed("remote") <= await tool_names(client)

    run(scenario())
    # Ending the client session stopped its process.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ps = subprocess.run(["pgrep", "-f", "stdio_counter.py"], capture_output=True, text=True).stdout.split()
        if not ps:
            break
        time.sleep(0.2)
    assert not ps, f"stdio processes left after the session ended: {ps}"


@pytest.mark.parametrize("mode", [LEGACY, STATELESS])
def test_two_processes_on_one_postgres_share_a_stdio_session(pg_pair, mode):
    a, b = pg_pair
    name = "sp" + secrets.token_hex(3)
    _register_stdio(a, name)
    tenant, key = _tenant_key(a)
    _grant(a, tenant, name)
    port_a, port_b = (int(s.url.rsplit(":", 1)[1]) for s in (a, b))

    async def scenario():
        route = Alternate([port_a, port_b])
        async with mcp_client(a, key, mode, transport=route) as client:
            counts = [text_of(await client.call_tool(f"{name}__count", {})) for _ in range(4)]
            pids = {text_of(await client.call_tool(f"{name}__pid", {})) for _ in range(2)}
        calls = [port for port, method in route.sent if method == "tools/call"]
        assert set(calls) == {port_a, port_b}, route.sent
        # One process served the session whichever gateway the call reached.
        assert counts == ["1", "2", "3", "4"], (counts, route.sent)
        assert len(pids) == 1, pids

    run(scenario())


# ---------------------------------------------------------------------------------------------
# 10. Rotating the secret key


def test_rotating_the_secret_key_reseals_every_secret(tmp_path_factory, admin_key, upstream):
    up = upstream("header_counter.py")
    tmp = str(tmp_path_factory.mktemp("mcp-rotate"))
    data_dir = os.path.join(tmp, "data")
    args = ["--mcp-allow-hosts", "127.0.0.1"]
    secret = "rot-" + secrets.token_hex(8)
    s = _start("mcp-rotate", args, tmp, admin_key)
    tenant, key = _tenant_key(s)
    _register(s, key, "hdr", up.url, headers={"X-Api-Key": secret})
    _stop(s)
    with open(os.path.join(data_dir, "secret.key")) as f:
        old_key = f.read()

    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    done = subprocess.run([os.environ["FLYWHEEL_BIN"], "rotate-secret-key", "--data-dir", data_dir],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert "resealed 1 MCP servers" in done.stderr, done.stderr
    with open(os.path.join(data_dir, "secret.key")) as f:
        new_key = f.read()
    with open(os.path.join(data_dir, "secret.key.old")) as f:
        assert f.read() == old_key
    assert new_key != old_key and not os.path.exists(os.path.join(data_dir, "secret.key.new"))

    # Restarted with the new key, the gateway still sends the secret; none of its files holds it.
    s = _start("mcp-rotate-2", args, tmp, admin_key)
    try:
        async def scenario():
            async with mcp_client(s, key) as client:
                return text_of(await client.call_tool("hdr__header", {"name": "X-Api-Key"}))

        assert run(scenario()) == secret
    finally:
        _stop(s)
    for root, _, files in os.walk(data_dir):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                assert secret.encode() not in f.read(), name


# ---------------------------------------------------------------------------------------------
# 11. Redirects are not followed


class _Redirect(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.send_response(307)
        self.send_header("Location", self.target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_redirects_are_not_followed(gw, upstream):
    target = upstream()
    _Redirect.target = target.url
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirect)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/mcp"
        tenant, key = _tenant_key(gw)
        _register(gw, key, "hop", url)
        _register(gw, key, "real", target.url)

        async def scenario():
            async with mcp_client(gw, key) as client:
                # The redirecting server offers nothing (the target's tools are not reached
                # through it); the other server's tools are there.
                tools = await tool_names(client)
                assert prefixed("real") <= tools and not any(t.startswith("hop__") for t in tools), tools
                with pytest.raises(MCPError, match="redirect"):
                    await client.call_tool("hop__echo", {"text": "x"})

        run(scenario())
        # The same for a server a response names by URL: a 424 that says why.
        r = requests.post(gw.url + "/v1/responses", headers=gw.auth(key), timeout=60, json={
            "model": "none", "input": "hi", "tools": [{"type": "mcp", "server_label": "hop", "server_url": url}]})
        assert r.status_code == 424 and "redirect" in r.json()["error"]["message"], r.text
    finally:
        httpd.shutdown()
