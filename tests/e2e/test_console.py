"""The web console at /console in a real headless Chromium against a real `flywheel serve`
with SmolLM2: the operator creates and tops up a tenant and deploys a hub model; an owner
invites a developer and a viewer; the developer makes a key, chats in the playground and
checks usage; and the security rules (tenancy, roles, CSRF, cookies, removal, script
injection, throttled sign-ins). Every page is screenshotted and checked by axe-core."""

import csv
import io
import json
import os
import re
import subprocess
import time

import openai
import pytest
import requests

from conftest import _env_path, _start, _stop
from console_browser import Browser, By, shots_dir

PASSWORD = "correct horse battery"
XSS_CARD = ("---\nlicense: mit\npipeline_tag: text-generation\n---\n# Evil card\n"
            "<script>window.__fw_xss = 'script'</script>\n"
            "<img src=\"x\" onerror=\"window.__fw_xss = 'img'\">\n\n"
            "A **bold** claim, [a trap](javascript:window.__fw_xss='link') and "
            "[docs](https://example.test/docs).\n")


def _push(server, directory, repo, key=None, private=False):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(FLYWHEEL_URL=server.url, FLYWHEEL_API_KEY=key or server.admin_key)
    args = [_env_path("FLYWHEEL_BIN"), "push", str(directory), repo, "-m", "e2e"]
    if private:
        args.append("--private")
    p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"push {repo}: {p.stdout}\n{p.stderr}"


@pytest.fixture(scope="module")
def fw(tmp_path_factory, admin_key):
    smol = _env_path("FLYWHEEL_SMOL_GGUF")
    tmp = str(tmp_path_factory.mktemp("console"))
    s = _start("console", ["--model", f"{smol}=smol", "--slots", "4", "--slot-context", "2048",
                           "--threads", "1", "--node-threads", "4"], tmp, admin_key)
    repo = tmp_path_factory.mktemp("evil-repo")
    os.symlink(smol, repo / "smol.Q4_1.gguf")
    (repo / "README.md").write_text(XSS_CARD)
    _push(s, repo, "public/evil-smol")
    yield s
    _stop(s)


@pytest.fixture(scope="module")
def state():
    """What the ordered tests hand each other, and the pages checked."""
    return {"checked": []}


@pytest.fixture
def browser(fw):
    b = Browser(fw.url)
    yield b
    b.close()


def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


def test_operator_creates_a_tenant_tops_it_up_and_deploys(fw, browser, state, admin_key):
    b = browser
    b.go("/console/operator/sign-in")
    b.check_page("operator-sign-in", state["checked"])
    b.fill("#admin_key", admin_key)
    b.submit("form[action='/console/operator/sign-in']")
    assert b.path() == "/console/admin/tenants", b.path()

    b.fill("#tenant-name", "console-acme")
    b.fill("#tenant-grant", "1000000")
    b.submit("#create-tenant")
    notice = b.text(".notice")
    tenant_id = re.search(r"\((ten_[0-9a-f]+)\)", notice).group(1)
    state["tenant"] = tenant_id
    b.fill(f"#topup-{tenant_id}", "5.25")
    b.submit(f"form[action='/console/admin/tenants/{tenant_id}/top-up']")
    assert fw.admin("GET", f"/tenants/{tenant_id}", expect=200)["balance"] == 5_250_000
    assert "5.250000" in b.text(f"section[aria-label='console-acme']")
    b.check_page("operator-tenants", state["checked"])

    b.go("/console/admin/prices")
    b.fill("#price-model", "smol")
    b.fill("#price-in", "0.5")
    b.fill("#price-out", "1.25")
    b.submit("form[action='/console/admin/prices']")
    prices = {p["served_model"]: p for p in fw.admin("GET", "/prices", expect=200)["data"]}
    assert prices["smol"]["input_per_million"] == 500_000 and prices["smol"]["output_per_million"] == 1_250_000
    assert "1.250000" in b.text("table")
    b.check_page("operator-prices", state["checked"])
    b.go("/console/models?repo=public/evil-smol")
    b.check_page("operator-models", state["checked"])

    # One-form deploy of the hub model, ready, then scaled to zero.
    b.go("/console/admin/deployments")
    b.fill("#dep-name", "hubsmol")
    b.d.find_element(By.CSS_SELECTOR, "#dep-model option[value='public/evil-smol']").click()
    b.fill("#dep-min", "1")
    b.fill("#dep-max", "1")
    b.fill("#dep-idle", "2")
    b.submit("#create-deployment")
    assert b.path() == "/console/admin/deployments", b.path()

    def ready():
        b.go("/console/admin/deployments")
        return "ready" in b.text("tr[data-name='hubsmol'] td.states")

    _wait(ready, 240, "the deployment's replica to be ready")
    b.check_page("operator-deployments", state["checked"])
    assert int(b.d.find_element(By.CSS_SELECTOR, "#capacity meter").get_attribute("value")) > 0, \
        "the ready replica uses some of the node's memory"
    # Its detail: the replica and the event timeline that brought it up.
    b.go("/console/admin/deployments/hubsmol")
    assert "ready" in b.text("#replicas tbody"), b.text("#replicas tbody")
    kinds = [e.get_attribute("data-kind") for e in b.d.find_elements(By.CSS_SELECTOR, "#events tbody tr")]
    assert "replica ready" in kinds, kinds
    b.check_page("operator-deployment", state["checked"])
    # Nodes and capacity: this process is a one-node cluster holding the ready replica.
    b.go("/console/admin/nodes")
    node = b.d.find_element(By.CSS_SELECTOR, "#nodes tr[data-node='local']")
    assert node.get_attribute("data-role") == "both"
    assert int(node.get_attribute("data-placed")) >= 1 and int(node.get_attribute("data-memory-used")) > 0
    assert "placement leader" in node.text and "this process" in node.text, node.text
    assert b.has("#loads tr[data-node='local'][data-deployment='hubsmol']"), b.text("#loads")
    assert b.has("#placements tr[data-deployment='hubsmol']")
    cluster = fw.admin("GET", "/cluster", expect=200)
    assert cluster["nodes"][0]["memory_used_bytes"] == int(node.get_attribute("data-memory-used")), cluster
    b.check_page("operator-nodes", state["checked"])
    b.go("/console/admin/deployments")
    b.d.find_element(By.CSS_SELECTOR, "#scale-name option[value='hubsmol']").click()
    b.fill("#scale-min", "0")
    b.fill("#scale-max", "1")
    b.submit("#scale-deployment")

    def at_zero():
        b.go("/console/admin/deployments")
        return b.text("tr[data-name='hubsmol'] td.states") == "none"

    _wait(at_zero, 120, "the deployment to scale to zero")
    b.sign_out()

    # The admin API's member routes: with a password, and as an invite.
    owner = fw.admin("POST", f"/tenants/{tenant_id}/members",
                     {"email": "owner@acme.test", "password": PASSWORD, "role": "owner"}, expect=201)
    assert owner["status"] == "active" and "invite_link" not in owner
    invited = fw.admin("POST", f"/tenants/{tenant_id}/members", {"email": "later@acme.test", "role": "viewer"},
                       expect=201)
    assert invited["status"] == "invited" and invited["invite_link"].startswith("/console/invite/")
    listed = fw.admin("GET", f"/tenants/{tenant_id}/members", expect=200)["data"]
    assert sorted(m["email"] for m in listed) == ["later@acme.test", "owner@acme.test"]
    fw.admin("DELETE", f"/members/{invited['id']}", expect=200)
    fw.admin("DELETE", f"/members/{invited['id']}", expect=404)
    bad = requests.post(fw.url + f"/admin/v1/tenants/{tenant_id}/members", headers=fw.auth(fw.admin_key),
                        json={"email": "x@acme.test", "role": "admin"}, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "role", bad.text


def test_owner_invites_a_developer_and_a_viewer(fw, browser, state, figure):
    b = browser
    b.go("/console/sign-in")
    b.check_page("sign-in", state["checked"])
    b.sign_in("owner@acme.test", PASSWORD)
    assert b.path() == "/console/overview", b.path()
    interactive, loaded, size = b.load_figures()
    figure(f"overview after sign-in (cold cache): interactive {interactive:.0f} ms, loaded {loaded:.0f} ms, "
           f"{size / 1024:.1f} KiB transferred")
    assert interactive < 300 and size < 300 * 1024, (interactive, size)
    b.check_page("overview", state["checked"])
    links = {}
    for email, role in (("dev@acme.test", "developer"), ("viewer@acme.test", "viewer")):
        b.go("/console/members")
        b.fill("#invite-email", email)
        b.d.find_element(By.CSS_SELECTOR, f"#invite-role option[value='{role}']").click()
        b.submit("form[action='/console/members']")
        links[role] = b.text("#invite-link")
    b.check_page("members", state["checked"])
    b.sign_out()

    for role, link in links.items():
        b.go(link)
        if role == "developer":
            b.check_page("accept-invite", state["checked"])
        b.fill("#password", PASSWORD)
        b.submit("form")
        assert "Your password is set" in b.text(".notice")
        # The link works once.
        assert requests.get(fw.url + link, timeout=10).status_code == 404
    state["links"] = links


def _usage_totals(fw, key):
    rows = requests.get(fw.url + "/v1/usage", headers=fw.auth(key), timeout=10).json()["data"]
    return {f: sum(r[f] for r in rows) for f in ("requests", "prompt_tokens", "completion_tokens")}


def test_developer_makes_a_key_chats_and_reads_usage(fw, browser, state, figure):
    b = browser
    b.sign_in("dev@acme.test", PASSWORD)
    b.go("/console/keys")
    b.fill("#key-name", "ci-key")
    b.fill("#key-models", "smol")
    b.fill("#key-days", "30")
    b.fill("#key-rpm", "100")
    b.submit("#create-key")
    secret = b.text("#new-secret")
    assert secret.startswith("fw-") and len(secret) == 43
    b.check_page("keys-created", state["checked"])
    b.go("/console/keys")
    assert secret not in b.d.page_source, "a key is shown only once"
    assert secret[:12] in b.d.page_source
    b.check_page("keys", state["checked"])
    r = requests.post(fw.url + "/v1/chat/completions", headers=fw.auth(secret), timeout=120,
                      json={"model": "smol", "max_tokens": 4,
                            "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 200, r.text
    state["dev_key"] = secret

    b.go("/console/playground")
    first_key = b.d.find_element(By.CSS_SELECTOR, "#playground").get_attribute("data-key")
    b.go("/console/playground")
    interactive, loaded, size = b.load_figures()
    # One playground key per session however often the page loads: nothing piles up.
    assert b.d.find_element(By.CSS_SELECTOR, "#playground").get_attribute("data-key") == first_key
    playground_keys = [k for k in fw.admin("GET", f"/tenants/{state['tenant']}/keys", expect=200)["data"]
                       if k["name"].startswith("playground:")]
    assert len(playground_keys) == 1, playground_keys
    figure(f"playground: interactive {interactive:.0f} ms, loaded {loaded:.0f} ms, {size / 1024:.1f} KiB transferred")
    b.check_page("playground", state["checked"])
    b.d.find_element(By.CSS_SELECTOR, "#pg-model option[value='smol']").click()
    b.fill("#pg-system", "You are a helpful assistant.")
    b.fill("#pg-max", "24")
    b.fill("#pg-message", "Repeat exactly: <img src=x onerror=\"window.__fw_xss='reply'\"> <script>window.__fw_xss='s'</script>")
    b.d.find_element(By.CSS_SELECTOR, "#pg-send").click()
    def answered():
        cost, status = b.d.execute_script(
            "const u = document.getElementById('pg-usage'); return [u.dataset.cost || null, u.textContent];")
        return cost is not None or any(w in status for w in ("Refused", "failed", "Error"))

    _wait(answered, 120, "the playground answer")
    usage = b.d.execute_script("return document.getElementById('pg-usage').textContent")
    assert "completion tokens" in usage and "cost" in usage, usage
    answer = b.d.execute_script("return document.getElementById('pg-answer').textContent")
    assert answer.strip(), "a streamed answer"
    # Whatever the model wrote stayed text: no element inside the answer, nothing ran.
    assert b.d.execute_script("return document.getElementById('pg-answer').children.length") == 0
    assert b.d.execute_script("return window.__fw_xss === undefined")
    grant = int(b.d.execute_script("return document.getElementById('pg-usage').dataset.grantTokens"))
    assert grant > 0, "the answer was paid from the free grant"
    b.d.save_screenshot(os.path.join(shots_dir(), "playground-answered.png"))

    b.go("/console/usage")
    b.check_page("usage", state["checked"])
    total = b.d.find_element(By.CSS_SELECTOR, "#usage-total")
    page = {f: int(total.get_attribute("data-" + f.replace("_", "-")))
            for f in ("requests", "prompt_tokens", "completion_tokens")}
    assert page == _usage_totals(fw, secret), "the usage page's totals are /v1/usage's"
    assert page["requests"] >= 2
    b.go("/console/usage?group_by=day")
    b.check_page("usage-by-day", state["checked"])
    b.go("/console/usage?group_by=key")
    sess = b.session()
    text = sess.get(fw.url + "/console/usage.csv?group_by=key", timeout=10).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sum(int(r["requests"]) for r in rows) == page["requests"]
    assert {r["key_name"] for r in rows} >= {"ci-key"}
    # The request log: what /v1/logs lists, newest first, filtered.
    api_logs = _logged(fw, secret, page["requests"])
    b.go("/console/logs")
    rows = b.d.find_elements(By.CSS_SELECTOR, "#logs tbody tr[data-id]")
    shown = [(r.get_attribute("data-id"), int(r.get_attribute("data-status")), int(r.get_attribute("data-cost")))
             for r in rows]
    assert shown == [(x["id"], x["status"], x["cost"]) for x in api_logs[:50]], (shown, api_logs)
    b.check_page("logs", state["checked"])
    b.go("/console/logs?status=404")
    assert not b.has("#logs tbody tr[data-id]") and "with these filters" in b.text("#logs")
    bad = b.session().get(fw.url + "/console/logs?status=abc", timeout=10)
    assert bad.status_code == 400 and "status: expected an HTTP status" in bad.text, bad.text
    # Budgets the operator set, with this period's spend.
    fw.admin("PATCH", f"/tenants/{state['tenant']}",
             {"budget": {"amount": 5_000_000, "period": "month", "alert_at": [0.5]}}, expect=200)
    b.go("/console/budgets")
    row = b.d.find_element(By.CSS_SELECTOR, f"#budgets tr[data-subject='tenant:{state['tenant']}']")
    assert int(row.get_attribute("data-amount")) == 5_000_000
    status = requests.get(fw.url + "/v1/budget", headers=fw.auth(secret), timeout=10).json()["data"][0]
    assert int(row.get_attribute("data-spent")) == status["spent"], (row.get_attribute("data-spent"), status)
    assert "50%" in row.text and "No alert yet." in b.text("#budget-events")
    b.check_page("budgets", state["checked"])
    b.go("/console/models")
    b.check_page("models", state["checked"])
    b.go("/console/models?repo=public/evil-smol")
    assert "<script>window.__fw_xss" in b.text("#model-card"), "the card is shown as text"
    assert b.d.execute_script("return window.__fw_xss === undefined"), "nothing in the card ran"
    assert not b.has("#model-card img") and not b.has("#model-card script")
    # The card is Markdown: rendered, with only safe links left.
    assert b.text("#model-card h1") == "Evil card" and b.text("#model-card strong") == "bold"
    hrefs = b.d.execute_script(
        "return [...document.querySelectorAll('#model-card a')].map(a => a.getAttribute('href'))")
    assert [h for h in hrefs if h] == ["https://example.test/docs"], hrefs
    # The tenant's batches (made through the API) and MCP servers, read-only.
    client = openai.OpenAI(base_url=fw.url + "/v1", api_key=secret, max_retries=0)
    line = {"custom_id": "one", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "smol", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}}
    upload = client.files.create(file=("in.jsonl", (json.dumps(line) + "\n").encode()), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    b.go("/console/batches")
    assert b.has(f"#batches tr[data-id='{batch.id}']"), b.text("#batches")
    b.check_page("batches", state["checked"])
    b.go("/console/mcp")
    assert "No MCP server yet." in b.text("#mcp-servers")
    b.check_page("mcp", state["checked"])
    b.check_page("model-card", state["checked"])
    cookie = dict(sess.cookies)
    b.sign_out()
    # The signed-out session is gone on the server.
    r = requests.get(fw.url + "/console/overview", cookies=cookie, allow_redirects=False, timeout=10)
    assert r.status_code == 303 and r.headers["location"] == "/console/sign-in"


def _logged(fw, key, want):
    """The tenant's request log through the API, once it holds `want` rows (written asynchronously)."""
    deadline = time.monotonic() + 30
    while True:
        data = requests.get(fw.url + "/v1/logs", params={"limit": 1000}, headers=fw.auth(key), timeout=10).json()["data"]
        if len(data) >= want or time.monotonic() > deadline:
            return data
        time.sleep(0.2)


def _signed_in(fw, email):
    s = requests.Session()
    r = s.post(fw.url + "/console/sign-in", data={"email": email, "password": PASSWORD},
               headers={"Origin": fw.url}, allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text
    return s, r


def _csrf(s, fw, path="/console/keys"):
    return re.search(r'name="csrf" value="([^"]+)"', s.get(fw.url + path, timeout=10).text).group(1)


def test_security_rules(fw, state):
    tenant = state["tenant"]
    # Cookie flags (plain HTTP: no Secure) and headers.
    dev, r = _signed_in(fw, "dev@acme.test")
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie, cookie
    assert "Secure" not in cookie, cookie
    page = dev.get(fw.url + "/console/overview", timeout=10)
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp, csp
    assert page.headers["x-frame-options"] == "DENY"

    # A form without its CSRF token, or with another session's, is refused.
    keys_before = len(fw.admin("GET", f"/tenants/{tenant}/keys", expect=200)["data"])
    r = dev.post(fw.url + "/console/keys", data={"name": "no-csrf", "scopes": "inference"}, timeout=10)
    assert r.status_code == 403, r.status_code
    viewer, _ = _signed_in(fw, "viewer@acme.test")
    r = dev.post(fw.url + "/console/keys", data={"name": "x", "scopes": "inference", "csrf": _csrf(viewer, fw)},
                 timeout=10)
    assert r.status_code == 403
    # A viewer cannot create keys, even with its own token; sees no form.
    r = viewer.post(fw.url + "/console/keys",
                    data={"name": "viewer-key", "scopes": "inference", "csrf": _csrf(viewer, fw)}, timeout=10)
    assert r.status_code == 403, r.status_code
    assert 'id="create-key"' not in viewer.get(fw.url + "/console/keys", timeout=10).text
    assert viewer.get(fw.url + "/console/playground", timeout=10).status_code == 403
    assert len(fw.admin("GET", f"/tenants/{tenant}/keys", expect=200)["data"]) == keys_before
    # Sign-in forms from another site are refused.
    r = requests.post(fw.url + "/console/sign-in", data={"email": "dev@acme.test", "password": PASSWORD},
                      headers={"Origin": "http://evil.test"}, allow_redirects=False, timeout=10)
    assert r.status_code == 403

    # Another tenant's keys, bills, members and private repositories are refused everywhere.
    other = fw.new_tenant("console-other", grant_tokens=1_000_000)
    fw.admin("POST", f"/tenants/{other}/orgs", {"name": "other-org"}, expect=201)
    other_key = fw.new_key(other, scopes=["inference", "hub:read", "hub:write"], name="other-secret-key")
    other_member = fw.admin("POST", f"/tenants/{other}/members",
                            {"email": "o@other.test", "password": PASSWORD, "role": "owner"}, expect=201)
    done = requests.post(fw.url + "/v1/chat/completions", headers=fw.auth(other_key["key"]), timeout=120,
                         json={"model": "smol", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]})
    assert done.status_code == 200, done.text
    other_request = done.json()["id"]
    private = os.path.join(shots_dir(), "..", "private-repo")
    os.makedirs(private, exist_ok=True)
    with open(os.path.join(private, "README.md"), "w") as f:
        f.write("# secret\n")
    _push(fw, private, "other-org/secret", key=other_key["key"], private=True)
    owner, _ = _signed_in(fw, "owner@acme.test")
    token = _csrf(owner, fw)
    for path in ("/console/keys", "/console/usage", "/console/usage.csv?group_by=key", "/console/overview",
                 "/console/models", "/console/members", "/console/logs", "/console/budgets"):
        body = owner.get(fw.url + path, timeout=10).text
        assert "other-secret-key" not in body and other_key["id"] not in body and "o@other.test" not in body, path
        assert "other-org/secret" not in body and other_request not in body and other not in body, path
    r = owner.post(fw.url + f"/console/keys/{other_key['id']}/revoke", data={"csrf": token}, timeout=10)
    assert r.status_code == 404, r.status_code
    assert requests.get(fw.url + "/v1/account", headers=fw.auth(other_key["key"]), timeout=10).status_code == 200
    assert owner.get(fw.url + f"/console/api/bill/{other_request}", timeout=10).status_code == 404
    # Paging the log from another tenant's request is refused, not a look into its log.
    assert owner.get(fw.url + f"/console/logs?after={other_request}", timeout=10).status_code == 404
    assert owner.get(fw.url + "/console/models?repo=other-org/secret", timeout=10).status_code == 404
    r = owner.post(fw.url + f"/console/members/{other_member['id']}/remove", data={"csrf": token}, timeout=10)
    assert r.status_code == 404
    for path in ("/console/admin/tenants", "/console/admin/deployments", "/console/admin/prices",
                 "/console/admin/nodes"):
        assert owner.get(fw.url + path, timeout=10).status_code == 403, path
    r = owner.post(fw.url + f"/console/admin/tenants/{other}/top-up", data={"csrf": token, "amount": "9"},
                   timeout=10)
    assert r.status_code == 403
    assert fw.admin("GET", f"/tenants/{other}", expect=200)["balance"] == 0

    # A removed member's session ends at its next request.
    members = fw.admin("GET", f"/tenants/{tenant}/members", expect=200)["data"]
    viewer_id = next(m["id"] for m in members if m["email"] == "viewer@acme.test")
    assert viewer.get(fw.url + "/console/overview", timeout=10).status_code == 200
    fw.admin("DELETE", f"/members/{viewer_id}", expect=200)
    r = viewer.get(fw.url + "/console/overview", allow_redirects=False, timeout=10)
    assert r.status_code == 303 and r.headers["location"] == "/console/sign-in"


def test_repeated_wrong_passwords_are_slowed_then_refused(fw):
    fw.admin("POST", f"/tenants/{fw.new_tenant('console-brute')}/members",
             {"email": "target@acme.test", "password": PASSWORD, "role": "developer"}, expect=201)
    timings = []
    for _ in range(10):
        t0 = time.monotonic()
        r = requests.post(fw.url + "/console/sign-in", data={"email": "target@acme.test", "password": "wrong!"},
                          headers={"Origin": fw.url}, allow_redirects=False, timeout=30)
        timings.append(time.monotonic() - t0)
        assert r.status_code == 401, r.status_code
    assert all(t < 1.0 for t in timings[:3]), timings
    assert all(t >= 1.0 for t in timings[3:]), timings
    r = requests.post(fw.url + "/console/sign-in", data={"email": "target@acme.test", "password": PASSWORD},
                      headers={"Origin": fw.url}, allow_redirects=False, timeout=30)
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0, r.status_code


def test_every_page_was_checked(state):
    expected = {"operator-sign-in", "operator-tenants", "operator-prices", "operator-models",
                "operator-deployments", "operator-deployment", "sign-in", "overview", "members", "accept-invite", "keys",
                "keys-created", "playground", "usage", "usage-by-day", "models", "model-card", "batches", "mcp",
                "operator-nodes", "logs", "budgets"}
    assert expected <= set(state["checked"]), expected - set(state["checked"])
