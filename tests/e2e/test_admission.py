"""Admission before anything queues (issue 14): a tenant that cannot pay, or is over its rate
limit, gets its 402 or 429 as the HTTP status of its request, streamed or not, and a deployment
at zero replicas starts nothing for it. One server with no --model; every deployment serves the
tiny random-weight model.
"""

import time

import pytest
import requests

from conftest import _start, _stop

# 1 micro-unit per token, prompt or completion.
PRICE = {"input_per_million": 1_000_000, "output_per_million": 1_000_000}


@pytest.fixture(scope="module")
def admission(tmp_path_factory, admin_key, paths):
    tmp = str(tmp_path_factory.mktemp("admission"))
    s = _start("admission", ["--node-threads", "2", "--node-memory-mib", "4096"], tmp, admin_key)
    common = {"model": paths["tiny"], "threads_per_replica": 1, "slots_per_replica": 2,
              "context_length": 2048, "max_replicas": 1}
    s.admin("POST", "/deployments", {"name": "cold", "min_replicas": 0, **common}, expect=201)
    s.admin("POST", "/deployments", {"name": "warm", "min_replicas": 1, **common}, expect=201)
    for name in ("cold", "warm"):
        s.admin("PUT", f"/prices/{name}", PRICE, expect=200)
    yield s
    _stop(s)


def _key(server, name, balance=0, grant_tokens=0, **key_fields):
    tenant = server.new_tenant(name, grant_tokens=grant_tokens)
    if balance:
        server.admin("POST", f"/tenants/{tenant}/topups", {"amount": balance}, expect=200)
    return tenant, server.new_key(tenant, **key_fields)["key"]


def _chat(server, key, model, content, stream, max_tokens=4):
    """The response with its status and headers read, its body not yet (a stream stays open)."""
    return requests.post(server.url + "/v1/chat/completions", headers=server.auth(key), timeout=60,
                         stream=stream,
                         json={"model": model, "stream": stream, "max_tokens": max_tokens,
                               "messages": [{"role": "user", "content": content}]})


def _scale_ups(server, name):
    events = server.admin("GET", f"/deployments/{name}/events", expect=200)["data"]
    return [e for e in events if e["kind"] in ("scale", "replica_ready") and e["to"] > 0]


def test_refused_tenants_get_a_status_and_start_no_replica(admission):
    s = admission
    assert s.admin("GET", "/deployments/cold", expect=200)["replicas"] == []
    _, broke = _key(s, "broke")
    # Ten micro-units: ten tokens at this price; the prompt is about a thousand. And a hundred:
    # more than the prompt's bytes prove it has (5,000 bytes are at least 20 tokens), so only
    # a bound from above refuses it before it queues.
    poor_id, poor = _key(s, "poor", balance=10)
    _, poorish = _key(s, "poorish", balance=100)
    _, limited = _key(s, "limited", grant_tokens=1_000_000, rpm=1)
    # The limited key spends its one request of this minute on the warm deployment.
    r = _chat(s, limited, "warm", "hi", stream=False)
    assert r.status_code == 200, r.text
    thousand = "word " * 1000
    cases = [(broke, "hi", 402, "insufficient_quota"),
             (poor, thousand, 402, "insufficient_quota"),
             (poorish, thousand, 402, "insufficient_quota"),
             (limited, "hi", 429, "rate_limit_exceeded")]
    for key, content, status, code in cases:
        for stream in (False, True):
            r = _chat(s, key, "cold", content, stream)
            # The refusal is the status itself: no 200 with an SSE error inside.
            assert r.status_code == status, (stream, r.status_code, r.text[:300])
            assert r.headers["content-type"].startswith("application/json"), r.headers
            assert r.json()["error"]["code"] == code, r.text
            if status == 429:
                assert int(r.headers["retry-after"]) >= 1
    assert s.admin("GET", "/deployments/cold", expect=200)["replicas"] == []
    assert _scale_ups(s, "cold") == [], "a refused request started a replica"
    account = s.admin("GET", f"/tenants/{poor_id}", expect=200)
    assert account["balance"] == 10 and account["amount_held"] == 0, account

    # The control: a tenant that can pay is served at once, and the deployment scales up for it.
    _, paying = _key(s, "paying", balance=1_000_000)
    r = _chat(s, paying, "cold", "hi", stream=True)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    assert any(line.startswith(b"data: [DONE]") for line in r.iter_lines())
    deadline = time.monotonic() + 30
    while not _scale_ups(s, "cold") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _scale_ups(s, "cold"), "the paying request did not scale the deployment up"
