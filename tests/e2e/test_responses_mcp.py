"""MCP tools inside responses (issue 17, point 4): `responses.create` with `{"type": "mcp"}` tools,
driven with the official `openai` client against a real `flywheel serve` with Qwen2.5-Coder-0.5B.

Flywheel runs the loop: it lists the server's tools (an `mcp_list_tools` item), the model proposes
a call, Flywheel makes it (an `mcp_call` item, metered per call) and the model answers from its
output. Covered: PyPI `mcp-server-time` run by Flywheel over stdio (registered by the operator,
granted to the tenant) with the answer's HH:MM taken from the call's output, whole and streamed
(item and event shapes as OpenAI documents them); approvals (`mcp_approval_request` answered
with `mcp_approval_response`, approved and denied) on a Streamable HTTP server named by
`server_url`; per-call billing; and the refusals: SSRF on `server_url`, unknown servers, keys
without the `mcp` scope, and a server that cannot be reached (424).
"""

import json
import os
import re
import secrets
import subprocess
import sys
import time

import pytest
import requests

from conftest import _free_port, _start, _stop

MCP_SERVERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mcp_servers")
PRICE = 7_000  # micro-units per call of the time server
ASK_TIME = "What time is it now in UTC? Answer with the time as HH:MM."
TIME_TOOL = {"type": "mcp", "server_label": "time", "allowed_tools": ["get_current_time"],
             "require_approval": "never"}


@pytest.fixture(scope="module")
def agent_gw(tmp_path_factory, paths, admin_key):
    """Qwen served, MCP servers on 127.0.0.1 allowed, and the time server registered (stdio, public)."""
    tmp = str(tmp_path_factory.mktemp("responses-mcp"))
    threads = os.environ.get("FLYWHEEL_E2E_THREADS") or str(os.cpu_count() or 2)
    s = _start("responses-mcp", ["--model", f"{paths['qwen']}=qwen", "--slots", "2", "--slot-context", "4096",
                                 "--threads", threads, "--mcp-allow-hosts", "127.0.0.1",
                                 "--mcp-call-timeout-seconds", "20"], tmp, admin_key)
    body = {"name": "time", "transport": "stdio", "command": sys.executable,
            "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"], "public": True}
    r = requests.post(s.url + "/admin/v1/mcp/servers", headers=s.auth(), json=body, timeout=30)
    assert r.status_code == 201, r.text
    s.time_id = r.json()["id"]
    r = requests.put(f"{s.url}/admin/v1/prices/mcp/{s.time_id}", headers=s.auth(), json={"per_call": PRICE},
                     timeout=30)
    assert r.status_code == 200, r.text
    yield s
    _stop(s)


TOP_UP = 1_000_000


def _tenant(server, scopes=("mcp", "inference"), grant_time=True):
    """A tenant with a grant of tokens, a balance for paid tool calls (TOP_UP) and a grant of the
    time server: (tenant id, key)."""
    tenant = server.new_tenant("agent-" + secrets.token_hex(4), grant_tokens=1_000_000_000)
    server.admin("POST", f"/tenants/{tenant}/topups", {"amount": TOP_UP}, expect=200)
    if grant_time:
        r = requests.post(f"{server.url}/admin/v1/tenants/{tenant}/mcp_grants", headers=server.auth(),
                          json={"server": "time"}, timeout=30)
        assert r.status_code in (200, 201), r.text
    return tenant, server.new_key(tenant, scopes=list(scopes))["key"]


def _calls(server, key) -> list:
    """The key's tenant's audit rows of tool calls, newest first."""
    r = requests.get(server.url + "/v1/mcp/calls?limit=100", headers=server.auth(key), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def _hhmm(call_output: str) -> str:
    """A pattern for the time server's HH:MM (`{"timezone": …, "datetime": "2026-…T03:04:05+00:00", …}`)
    in an answer: its minutes exactly, after any hour (the 0.5B model writes the hour 01 as
    "12"); the minutes can only come from the call."""
    minute = re.search(r"T\d\d:(\d\d)", json.loads(call_output)["datetime"]).group(1)
    # Digits may follow a letter (an ISO "T04:21:18" in the answer), so no \b before them.
    return rf"(?<!\d)\d{{1,2}}:{minute}(?!\d)"


def _check_time_answer(response):
    kinds = [item.type for item in response.output]
    assert kinds[0] == "mcp_list_tools", kinds
    listed = response.output[0]
    assert listed.server_label == "time" and listed.id.startswith("mcpl_")
    assert [t.name for t in listed.tools] == ["get_current_time"], listed.tools  # allowed_tools applied
    assert listed.tools[0].input_schema["properties"]["timezone"]["type"] == "string"
    calls = [item for item in response.output if item.type == "mcp_call"]
    assert calls, kinds
    for call in calls:
        assert call.server_label == "time" and call.name == "get_current_time", call
        assert call.id.startswith("mcp_") and call.error is None and call.status == "completed", call
        assert "timezone" in json.loads(call.arguments), call
    assert kinds[-1] == "message", kinds
    hhmm = {_hhmm(call.output) for call in calls}
    # The answer is the model's, from the call's output (it has no other way to know the time).
    assert any(re.search(t, response.output_text) for t in hhmm), (response.output_text, hhmm)
    assert response.status == "completed"
    assert response.tools[0].type == "mcp" and response.tools[0].server_label == "time"
    return calls


def test_the_time_server_answers_and_each_call_is_billed(agent_gw):
    tenant, key = _tenant(agent_gw)
    client = agent_gw.client(api_key=key)
    response = client.responses.create(model="qwen", input=ASK_TIME, tools=[TIME_TOOL], tool_choice="required",
                                       temperature=0, max_output_tokens=64)
    calls = _check_time_answer(response)
    # Every model turn is billed: the response's usage covers the turns (more than one prompt).
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    # Every call is metered: one audit row per mcp_call, each charged the price.
    audited = [c for c in _calls(agent_gw, key) if c["server_id"] == agent_gw.time_id]
    assert len(audited) == len(calls), (audited, calls)
    assert all(c["outcome"] == "ok" and c["cost"] == PRICE and c["tool"] == "get_current_time"
               for c in audited), audited
    usage = requests.get(agent_gw.url + "/v1/usage", headers=agent_gw.auth(key), timeout=30).json()["data"]
    [row] = [u for u in usage if u["group"] == f"mcp/{agent_gw.time_id}"]
    assert (row["tool_calls"], row["cost"]) == (len(calls), len(calls) * PRICE), usage
    # Tokens come out of the grant; the balance pays for the calls, exactly.
    balance = requests.get(agent_gw.url + "/v1/account", headers=agent_gw.auth(key), timeout=30).json()["balance"]
    assert balance == TOP_UP - len(calls) * PRICE

    # The stored response continues: a follow-up sees the call in its conversation.
    again = client.responses.retrieve(response.id)
    assert [i.type for i in again.output] == [i.type for i in response.output]
    items = client.responses.input_items.list(response.id)
    assert items.data[0].type == "message"


def test_the_loop_streams_openai_shaped_events(agent_gw):
    tenant, key = _tenant(agent_gw)
    client = agent_gw.client(api_key=key)
    events = list(client.responses.create(model="qwen", input=ASK_TIME, tools=[TIME_TOOL], tool_choice="required",
                                          temperature=0, max_output_tokens=64, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert kinds[2:6] == ["response.output_item.added", "response.mcp_list_tools.in_progress",
                          "response.mcp_list_tools.completed", "response.output_item.done"], kinds
    assert events[2].item.type == "mcp_list_tools" and events[5].item.tools[0].name == "get_current_time"
    # Each call: added, its arguments, in progress, completed, done, on one output index.
    start = kinds.index("response.mcp_call_arguments.delta") - 1
    call_events = events[start:start + 6]
    assert [e.type for e in call_events] == [
        "response.output_item.added", "response.mcp_call_arguments.delta", "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress", "response.mcp_call.completed", "response.output_item.done"], kinds
    assert call_events[0].item.type == "mcp_call" and call_events[0].item.status == "in_progress"
    assert len({e.output_index for e in call_events}) == 1
    assert call_events[2].arguments == call_events[-1].item.arguments
    assert kinds[-1] == "response.completed" and "response.output_text.delta" in kinds, kinds
    final = events[-1].response
    assert [i.id for i in final.output] == [e.item.id for e in events if e.type == "response.output_item.done"]
    _check_time_answer(final)


# ---------------------------------------------------------------------------------------------
# Approvals, on a Streamable HTTP server named by URL


@pytest.fixture
def counter(tmp_path):
    """mcp_servers/counter.py on a free port of 127.0.0.1 (killed, by PID, when the test ends)."""
    port = _free_port()
    log_path = str(tmp_path / "counter.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, os.path.join(MCP_SERVERS, "counter.py"), str(port)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while "ready" not in open(log_path, errors="replace").read().splitlines():
        assert proc.poll() is None and time.monotonic() < deadline, open(log_path).read()
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/mcp"
    proc.kill()
    proc.wait(timeout=10)


def test_approval_requests_wait_for_the_client(agent_gw, counter):
    tenant, key = _tenant(agent_gw, grant_time=False)
    client = agent_gw.client(api_key=key)
    tool = {"type": "mcp", "server_label": "counter", "server_url": counter, "allowed_tools": ["echo"]}
    first = client.responses.create(model="qwen", input="Echo the word 'flywheel' with the echo tool.",
                                    tools=[tool], tool_choice="required", temperature=0, max_output_tokens=64)
    kinds = [i.type for i in first.output]
    assert kinds[0] == "mcp_list_tools" and "mcp_approval_request" in kinds, kinds
    assert "mcp_call" not in kinds  # nothing is called before the client approves
    request = next(i for i in first.output if i.type == "mcp_approval_request")
    assert request.name == "echo" and request.server_label == "counter" and request.id.startswith("mcpr_")
    assert _calls(agent_gw, key) == []

    # Approved: the call is made and the model continues from its output.
    approved = client.responses.create(
        model="qwen", previous_response_id=first.id, tools=[tool], temperature=0, max_output_tokens=64,
        input=[{"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}])
    call = next(i for i in approved.output if i.type == "mcp_call")
    assert call.approval_request_id == request.id and call.name == "echo", call
    assert call.output == json.loads(request.arguments)["text"], call
    assert "mcp_list_tools" not in [i.type for i in approved.output]  # listed once per conversation
    assert [c["outcome"] for c in _calls(agent_gw, key)] == ["ok"]

    # The same request cannot be answered twice.
    with pytest.raises(Exception) as again:
        client.responses.create(
            model="qwen", previous_response_id=approved.id, tools=[tool], max_output_tokens=16,
            input=[{"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}])
    assert getattr(again.value, "status_code", None) == 400, again.value

    # Denied: nothing is called; the model is told and answers.
    denied = client.responses.create(
        model="qwen", previous_response_id=first.id, tools=[tool], temperature=0, max_output_tokens=64,
        input=[{"type": "mcp_approval_response", "approval_request_id": request.id, "approve": False,
                "reason": "not now"}])
    assert denied.status == "completed"
    assert [c["outcome"] for c in _calls(agent_gw, key)] == ["ok"]


# ---------------------------------------------------------------------------------------------
# Refusals


def _error(response):
    body = response.json()["error"]
    return response.status_code, body.get("param"), body["message"]


def _post(server, key, tools, **extra):
    body = {"model": "qwen", "input": "hi", "tools": tools, "max_output_tokens": 8, **extra}
    return requests.post(server.url + "/v1/responses", headers=server.auth(key), json=body, timeout=60)


def test_server_url_is_checked_against_the_outbound_rules(server, agent_gw):
    # `server` allows no private addresses: loopback, private, link-local and IPv6 loopback are refused.
    tenant = server.new_tenant("ssrf-" + secrets.token_hex(4), grant_tokens=1_000_000)
    key = server.new_key(tenant, scopes=["mcp", "inference"])["key"]
    for url in ["http://127.0.0.1:9/mcp", "http://10.1.2.3/mcp", "http://169.254.169.254/latest",
                "http://[::1]:9/mcp", "http://[::ffff:127.0.0.1]/mcp", "http://0.0.0.0/mcp"]:
        status, param, message = _error(_post(server, key, [{"type": "mcp", "server_label": "x", "server_url": url}]))
        assert (status, param) == (400, "tools[0].server_url"), (url, status, param, message)
    # A name that resolves to loopback passes the URL check and is refused when connecting.
    status, param, message = _error(
        _post(server, key, [{"type": "mcp", "server_label": "x", "server_url": "http://localhost:9/mcp"}]))
    assert status == 424 and ("loopback" in message or "not allowed" in message), (status, message)


def test_unknown_servers_scopes_and_dead_servers_are_refused(agent_gw):
    tenant, key = _tenant(agent_gw, grant_time=False)
    # Not registered for this tenant (the time server is not granted to it).
    status, param, _ = _error(_post(agent_gw, key, [{"type": "mcp", "server_label": "time"}]))
    assert (status, param) == (400, "tools[0].server_label")
    # A key without the `mcp` scope.
    _, inference_only = _tenant(agent_gw, scopes=("inference",))
    status, _, message = _error(_post(agent_gw, inference_only, [TIME_TOOL]))
    assert status == 403, message
    # A server that cannot be reached: 424, and nothing is generated or billed.
    dead = f"http://127.0.0.1:{_free_port()}/mcp"
    status, param, message = _error(_post(agent_gw, key, [{"type": "mcp", "server_label": "gone", "server_url": dead}]))
    assert status == 424 and "gone" in message, (status, message)
    # Bad shapes name their parameter.
    status, param, _ = _error(_post(agent_gw, key, [{"type": "mcp", "server_label": "a b", "server_url": dead}]))
    assert (status, param) == (400, "tools[0].server_label")
    status, param, _ = _error(_post(agent_gw, key, [{"type": "mcp", "server_label": "t", "server_url": dead,
                                                     "require_approval": "sometimes"}]))
    assert (status, param) == (400, "tools[0].require_approval")
    status, param, _ = _error(_post(agent_gw, key, [TIME_TOOL], tool_choice={"type": "mcp", "server_label": "nope"}))
    assert (status, param) == (400, "tool_choice.server_label")
