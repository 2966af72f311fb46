"""Deleting a tenant (issue 24, point 3) end to end: a real `flywheel serve` with the tiny model,
the hub, the Responses API and the MCP gateway; `flywheel push`, the official `openai` and
`huggingface_hub` clients.

Tenant A holds a key, a private repository sharing one file's bytes (so one blob) with tenant
B's repository plus a file of its own, a Files API file, a stored response, an MCP server and an
MCP session, and has a stream running. The dry run lists exactly what the deletion then removes; afterwards A's
keys get 401 in OpenAI's error shape, its private repository is a 404, its stored response is
gone from the database and from the data directory's files, its running stream ended and was
settled, B's repository still downloads byte-identical, and A's bills (its ledger) are still
there.
"""

import hashlib
import os
import secrets
import subprocess
import sys
import threading
import time

import openai
import pytest
import requests

from conftest import _env_path, _free_port, _start, _stop

huggingface_hub = pytest.importorskip("huggingface_hub")

MCP_SERVERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mcp_servers")
ACCEPT = {"Accept": "application/json, text/event-stream"}
COMPARED = ("revoked", "running_requests", "removed", "kept")


@pytest.fixture(scope="module")
def fw(tmp_path_factory, paths, admin_key):
    tmp = str(tmp_path_factory.mktemp("tenant-delete"))
    args = ["--model", f"{paths['tiny']}=tiny", "--slots", "2", "--slot-context", "4096",
            "--mcp-allow-hosts", "127.0.0.1"]
    s = _start("tenant-delete", args, tmp, admin_key)
    s.data_dir = os.path.join(tmp, "data")
    yield s
    _stop(s)


@pytest.fixture
def mcp_upstream(tmp_path):
    """tests/e2e/mcp_servers/counter.py on a free port: its /mcp URL."""
    port = _free_port()
    log_path = tmp_path / "counter.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, os.path.join(MCP_SERVERS, "counter.py"), str(port)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while "ready" not in log_path.read_text(errors="replace").splitlines():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.kill()  # by PID: only the process we started
        proc.wait(timeout=10)


def _push(fw, key, directory, repo, *extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(FLYWHEEL_URL=fw.url, FLYWHEEL_API_KEY=key)
    p = subprocess.run([_env_path("FLYWHEEL_BIN"), "push", str(directory), repo, *extra], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"push {repo}: {p.stdout}\n{p.stderr}"


def _sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _tenant(fw, name):
    tid = fw.new_tenant(name, grant_tokens=10_000_000)
    fw.admin("POST", f"/tenants/{tid}/orgs", {"name": f"{name}-org"}, expect=201)
    key = fw.new_key(tid, scopes=["inference", "hub:read", "hub:write", "mcp"])
    return tid, key["id"], key["key"]


def _files_containing(root, needle: bytes):
    """Files under ROOT (the data directory: database, its WAL, blobs) that contain NEEDLE."""
    found = []
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            try:
                with open(p, "rb") as f:
                    if needle in f.read():
                        found.append(p)
            except OSError:
                pass
    return found


def test_deleting_a_tenant_removes_what_the_dry_run_listed(fw, tmp_path, mcp_upstream):
    suffix = secrets.token_hex(3)
    a_id, a_key_id, a_key = _tenant(fw, f"a{suffix}")
    b_id, _, b_key = _tenant(fw, f"b{suffix}")
    a_client, b_client = fw.client(api_key=a_key), fw.client(api_key=b_key)

    # Hub: the same bytes in A's private repository and in B's; one file only A has.
    shared, own = os.urandom(40_000), os.urandom(30_000)
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    for d, files in ((a_dir, {"shared.bin": shared, "own.bin": own}), (b_dir, {"shared.bin": shared})):
        d.mkdir()
        for name, data in files.items():
            (d / name).write_bytes(data)
    _push(fw, a_key, a_dir, f"a{suffix}-org/secret", "--private")
    _push(fw, b_key, b_dir, f"b{suffix}-org/model", "--private")
    own_sha = hashlib.sha256(own).hexdigest()
    shared_sha = hashlib.sha256(shared).hexdigest()
    blob = lambda sha: os.path.join(fw.data_dir, "hub", "blobs", sha[:2], sha)  # noqa: E731
    assert os.path.exists(blob(own_sha)) and os.path.exists(blob(shared_sha))

    # A file of the Files API (its bytes a blob of their own) and a quota of A's own.
    file_data = (b'{"custom_id": "' + secrets.token_hex(8).encode() + b'"}\n') * 20
    a_file = a_client.files.create(file=("input.jsonl", file_data), purpose="batch")
    file_sha = hashlib.sha256(file_data).hexdigest()
    assert os.path.exists(blob(file_sha))
    fw.admin("PUT", f"/tenants/{a_id}/files_quota", {"quota_bytes": 1 << 30}, expect=200)

    # A stored response whose input carries a marker to look for on disk.
    marker = f"tenant-delete-marker-{secrets.token_hex(8)}"
    stored = a_client.responses.create(model="tiny", input=f"Remember {marker}.", max_output_tokens=4)
    assert a_client.responses.retrieve(stored.id).id == stored.id
    billed = a_client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                              max_tokens=4)
    assert _files_containing(fw.data_dir, marker.encode()), "the response is on disk before"

    # MCP: a server A registered and a client session of A's.
    r = requests.post(fw.url + "/v1/mcp/servers", headers=fw.auth(a_key), timeout=30,
                      json={"name": "counter", "url": mcp_upstream})
    assert r.status_code == 201, r.text
    server_id = r.json()["id"]
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "e2e", "version": "1"}}}
    r = requests.post(fw.url + "/mcp", json=init, headers={**fw.auth(a_key), **ACCEPT}, timeout=30)
    assert r.status_code == 200, r.text
    session_id = r.headers["Mcp-Session-Id"]

    # A long stream of A's is running when the tenant is deleted.
    streamed = {"chunks": 0, "error": None}
    first_chunk = threading.Event()

    def stream():
        try:
            s = a_client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "Count to a thousand."}],
                max_tokens=3500, stream=True, temperature=1.0)
            for chunk in s:
                if chunk.choices and chunk.choices[0].delta.content:
                    streamed["chunks"] += 1
                    streamed.setdefault("id", chunk.id)
                    first_chunk.set()
        except openai.APIError as e:
            streamed["error"] = e
        finally:
            first_chunk.set()

    reader = threading.Thread(target=stream, daemon=True)
    reader.start()
    assert first_chunk.wait(120), "the stream started"
    assert streamed["error"] is None and "id" in streamed, streamed

    dry = requests.delete(f"{fw.url}/admin/v1/tenants/{a_id}?dry_run=true", headers=fw.auth(fw.admin_key),
                          timeout=60)
    assert dry.status_code == 200, dry.text
    plan = dry.json()
    assert plan["dry_run"] is True and plan["deleted_at"] is None, plan
    assert plan["revoked"]["api_keys"] == [a_key_id]
    assert plan["running_requests"] == [streamed["id"]], plan
    removed = plan["removed"]
    assert removed["hub_repos"] == [f"a{suffix}-org/secret"]
    assert removed["hub_blobs"] == sorted([own_sha, file_sha]), "the shared blob stays"
    assert removed["files"] == [a_file.id]
    assert removed["file_quota"] == ["quota_bytes"]
    assert removed["responses"] == [stored.id]
    assert removed["mcp_servers"] == [server_id]
    assert removed["mcp_sessions"] == [session_id]
    assert removed["orgs"] == [f"a{suffix}-org"]
    assert reader.is_alive(), "a dry run ends nothing"

    done = requests.delete(f"{fw.url}/admin/v1/tenants/{a_id}", headers=fw.auth(fw.admin_key), timeout=60)
    assert done.status_code == 200, done.text
    result = done.json()
    assert result["dry_run"] is False and result["deleted_at"], result
    # The request log is written when a request settles: the stream the deletion ends adds its
    # row after the dry run. Everything else is exactly what the dry run listed.
    logged, listed = result["removed"].pop("request_logs", []), plan["removed"].pop("request_logs", [])
    assert set(listed) <= set(logged) and set(logged) - set(listed) <= {streamed["id"]}, (listed, logged)
    for part in COMPARED:
        assert result[part] == plan[part], f"{part}: the dry run listed {plan[part]}, the deletion {result[part]}"
    assert result["database_scrubbed"] is True, result

    # The running stream ended (an error, not a normal finish) and was settled.
    reader.join(30)
    assert not reader.is_alive(), "the stream ended"
    assert isinstance(streamed["error"], openai.APIError), streamed
    bill = fw.admin("GET", f"/requests/{streamed['id']}", expect=200)
    assert bill["state"] == "settled", bill
    assert 1 <= bill["billed"]["completion_tokens"] < 3500, bill

    # A's key: 401 in OpenAI's shape, on every route.
    with pytest.raises(openai.AuthenticationError) as e:
        a_client.models.list()
    assert e.value.status_code == 401 and e.value.code == "invalid_api_key", e.value.body
    r = requests.post(fw.url + "/mcp", json=init, headers={**fw.auth(a_key), **ACCEPT}, timeout=30)
    assert r.status_code == 401, r.text

    # A's private repository is gone; B's, sharing a blob, downloads byte-identical.
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RepositoryNotFoundError
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(f"a{suffix}-org/secret", "own.bin", token=fw.admin_key, endpoint=fw.url,
                        cache_dir=str(tmp_path / "cache-a"))
    got = hf_hub_download(f"b{suffix}-org/model", "shared.bin", token=b_key, endpoint=fw.url,
                          cache_dir=str(tmp_path / "cache-b"))
    assert _sha256(got) == hashlib.sha256(shared).hexdigest()
    assert os.path.exists(blob(shared_sha)) and not os.path.exists(blob(own_sha))
    assert not os.path.exists(blob(file_sha)), "the file's blob went with it"
    assert fw.admin("GET", f"/tenants/{a_id}/files_quota", expect=200)["overridden"] is False

    # A's stored response: gone from the API and from every file of the data directory.
    r = requests.get(f"{fw.url}/v1/responses/{stored.id}", headers=fw.auth(fw.admin_key), timeout=30)
    assert r.status_code == 404, r.text
    assert _files_containing(fw.data_dir, marker.encode()) == []

    # A's ledger and row stay: its bills read back, the tenant is marked deleted.
    for request_id in (billed.id, stored.id, streamed["id"]):
        bill = fw.admin("GET", f"/requests/{request_id}", expect=200)
        assert bill["tenant_id"] == a_id and bill["state"] == "settled", bill
    row = fw.admin("GET", f"/tenants/{a_id}", expect=200)
    assert row["deleted_at"] == result["deleted_at"] and row["disabled"] is True, row
    assert result["ledger_entries_kept"] >= plan["ledger_entries_kept"] > 0
    active = [t["id"] for t in fw.admin("GET", "/tenants", expect=200)["data"]]
    assert a_id not in active and b_id in active

    # Deleting it again, or anything that would change it, is a clear 409.
    again = requests.delete(f"{fw.url}/admin/v1/tenants/{a_id}", headers=fw.auth(fw.admin_key), timeout=30)
    assert again.status_code == 409 and "already deleted" in again.json()["error"]["message"], again.text
    fw.admin("POST", f"/tenants/{a_id}/topups", {"amount": 5}, expect=409)
    fw.admin("POST", f"/tenants/{a_id}/keys", {"name": "again"}, expect=409)

    # B is untouched.
    assert b_client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                            max_tokens=2).usage.completion_tokens >= 1
