"""Spend caps and alerts (#23): a key's and a tenant's daily budget refuse the request whose worst
case would cross them (402 `budget_exceeded`, in OpenAI's and Anthropic's shapes), and the
threshold alerts reach a webhook receiver written here, signed with HMAC-SHA256 under the tenant's
webhook secret (returned once when the budget was set)."""

import hashlib
import hmac
import json
import os
import re
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest
import requests

from conftest import _start, _stop

# 1 micro-unit per token, in and out.
PRICE = {"input_per_million": 1_000_000, "output_per_million": 1_000_000, "cached_input_per_million": 1_000_000}
MESSAGES = [{"role": "user", "content": "Say something."}]
MAX_TOKENS = 16


class Receiver:
    """A webhook receiver on a loopback port: keeps every POST (headers and raw body)."""

    def __init__(self, fail_first: int = 0):
        self.calls = []
        self.fail_first = fail_first
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with outer.lock:
                    outer.calls.append((dict((k.lower(), v) for k, v in self.headers.items()), body))
                    failing = len(outer.calls) <= outer.fail_first
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def delivered(self, count: int, timeout: float = 30.0) -> list:
        """The first COUNT bodies the receiver accepted, waiting for them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                calls = list(self.calls)
            ok = calls[self.fail_first:]
            if len(ok) >= count:
                return ok
            time.sleep(0.1)
        raise AssertionError(f"{len(self.calls)} webhook calls after {timeout}s, wanted {count} accepted")


@pytest.fixture(scope="module")
def receiver():
    r = Receiver(fail_first=1)
    yield r
    r.close()


@pytest.fixture(scope="module")
def budget_server(tmp_path_factory, paths, admin_key):
    tmp = str(tmp_path_factory.mktemp("budgets"))
    args = ["--model", f"{paths['tiny']}=tiny", "--slots", "4", "--slot-context", "512",
            "--webhook-allow-hosts", "127.0.0.1", "--free-grant-tokens", "0"]
    s = _start("budgets", args, tmp, admin_key)
    s.tmp = tmp
    s.admin("PUT", "/prices/tiny", PRICE, expect=200)
    yield s
    _stop(s)


def paying_tenant(server, name: str, **fields) -> dict:
    tenant = server.admin("POST", "/tenants", {"name": name, **fields}, expect=201)
    server.admin("POST", f"/tenants/{tenant['id']}/topups", {"amount": 10_000_000}, expect=200)
    return tenant


def verify(secret: str, headers: dict, body: bytes) -> dict:
    ts = headers["x-flywheel-timestamp"]
    want = "sha256=" + hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-flywheel-signature"], want), (headers, body)
    assert abs(int(ts) - time.time()) < 300
    return json.loads(body)


def spend_until_refused(client, limit: int = 200) -> tuple:
    """Calls until a 402; returns (requests that passed, the refusal)."""
    passed = 0
    for _ in range(limit):
        try:
            client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=MAX_TOKENS)
            passed += 1
        except openai.APIStatusError as e:
            assert e.status_code == 402, e.body
            return passed, e
    raise AssertionError(f"{limit} requests passed a budget meant to stop them")


def check_refusal(err, owner: str, amount: int) -> None:
    assert err.code == "budget_exceeded", err.body
    message = err.body["message"]
    assert f"this {owner}'s budget of {amount} micro-units per day" in message, message
    spent, worst = map(int, re.search(r"(\d+) spent or held this day, and this request may cost up to (\d+)", message).groups())
    # Refused only because the worst case would cross the cap; what was spent did not.
    assert spent <= amount < spent + worst, message


def test_a_key_budget_stops_at_its_cap_and_alerts_a_signed_webhook(budget_server, receiver):
    s = budget_server
    tenant = paying_tenant(s, "budget-key")
    amount = 1500
    created = s.admin("POST", f"/tenants/{tenant['id']}/keys", {
        "name": "capped",
        "budget": {"amount": amount, "period": "day", "alert_at": [0.25, 0.5], "webhook_url": receiver.url},
    }, expect=201)
    secret = created["webhook_secret"]
    assert secret.startswith("whsec_")
    # Sealed at rest: the database holds no trace of the secret, only the sealed text.
    with sqlite3.connect(f"file:{os.path.join(s.tmp, 'data', 'flywheel.db')}?mode=ro", uri=True) as db:
        stored = db.execute("SELECT secret FROM budget_webhooks WHERE tenant_id = ?", (tenant["id"],)).fetchone()[0]
    assert stored.startswith("v1.") and secret not in stored and secret[6:] not in stored, stored
    assert created["budget"] == {"amount": amount, "period": "day", "alert_at": [0.25, 0.5], "webhook_url": receiver.url}
    client = s.client(api_key=created["key"])

    passed, err = spend_until_refused(client)
    assert passed >= 3, passed
    check_refusal(err, "key", amount)
    # Streamed requests are refused before anything is sent, the same way.
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=MAX_TOKENS, stream=True)
    assert e.value.status_code == 402 and e.value.code == "budget_exceeded"
    # Anthropic's shape on /v1/messages.
    r = requests.post(s.url + "/v1/messages", headers=s.auth(created["key"]), json={
        "model": "tiny", "max_tokens": MAX_TOKENS, "messages": MESSAGES}, timeout=30)
    assert r.status_code == 402, r.text
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "billing_error", r.text
    assert "budget" in r.json()["error"]["message"]

    status = requests.get(s.url + "/v1/budget", headers=s.auth(created["key"]), timeout=30).json()["data"]
    assert [b["subject"] for b in status] == [f"key:{created['id']}"]
    assert status[0]["spent"] <= amount and status[0]["held"] == 0, status

    # Both thresholds, each once, signed; the first attempt got a 500 and was retried.
    calls = receiver.delivered(2)
    bodies = [verify(secret, h, b) for h, b in calls]
    assert sorted(b["threshold"] for b in bodies) == [0.25, 0.5], bodies
    for b in bodies:
        assert b["type"] == "budget.threshold_crossed"
        assert b["subject"] == f"key:{created['id']}" and b["amount"] == amount
        assert b["spent"] >= b["threshold"] * amount
    first_id = receiver.calls[0][0]["x-flywheel-event-id"]
    assert sum(1 for h, _ in receiver.calls if h["x-flywheel-event-id"] == first_id) == 2, "no retry of the failed attempt"
    time.sleep(1.5)
    assert len(receiver.calls) == 3, "a threshold fired twice in one period"

    events = requests.get(s.url + "/v1/budget/events", headers=s.auth(created["key"]), timeout=30).json()["data"]
    assert sorted(e["threshold"] for e in events) == [0.25, 0.5]
    assert all(e["delivery"] == "delivered" for e in events), events

    # Another tenant sees none of it.
    other = paying_tenant(s, "budget-other")
    other_key = s.new_key(other["id"])["key"]
    assert requests.get(s.url + "/v1/budget/events", headers=s.auth(other_key), timeout=30).json()["data"] == []

    # The admin lifts the cap.
    s.admin("PATCH", f"/keys/{created['id']}", {"budget": None}, expect=200)
    client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=MAX_TOKENS)


def test_a_tenant_budget_caps_all_its_keys(budget_server):
    s = budget_server
    amount = 1200
    tenant = paying_tenant(s, "budget-tenant", budget={"amount": amount, "period": "day"})
    assert tenant["budget"]["amount"] == amount and "webhook_secret" not in tenant
    first = s.client(api_key=s.new_key(tenant["id"])["key"])
    second = s.client(api_key=s.new_key(tenant["id"])["key"])
    passed_first = 0
    for _ in range(3):
        first.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=MAX_TOKENS)
        passed_first += 1
    passed, err = spend_until_refused(second)
    check_refusal(err, "tenant", amount)
    with pytest.raises(openai.APIStatusError) as e:
        first.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=MAX_TOKENS)
    assert e.value.code == "budget_exceeded"


def test_bad_budgets_are_refused_by_name(budget_server):
    s = budget_server
    tenant = paying_tenant(s, "budget-bad")
    for budget, param in [
        ({"amount": 0, "period": "day"}, "budget.amount"),
        ({"amount": 10, "period": "week"}, "budget.period"),
        ({"amount": 10, "period": "day", "alert_at": [2]}, "budget.alert_at[0]"),
        ({"amount": 10, "period": "day", "webhook_url": "http://10.1.2.3/hook"}, "budget.webhook_url"),
        ({"amount": 10, "period": "day", "webhook_url": "ftp://example.com/hook"}, "budget.webhook_url"),
    ]:
        r = requests.post(s.url + f"/admin/v1/tenants/{tenant['id']}/keys", headers=s.auth(s.admin_key),
                          json={"budget": budget}, timeout=30)
        assert r.status_code == 400, (budget, r.text)
        assert r.json()["error"]["param"] == param, (budget, r.text)
    # A refused budget created no key.
    assert s.admin("GET", f"/tenants/{tenant['id']}/keys", expect=200)["data"] == []
