"""The Files API (`/v1/files`, issue 19 point 1) end to end: real `flywheel serve` processes (no
models loaded) and the official `openai` client. Upload, list, retrieve, content byte-identical
(and by Range), delete; tenants isolated (another tenant's file is a 404 like a missing one);
a blob shared with a hub repository outlives the file; bad input refused in OpenAI's error shape
leaving nothing on disk; the quota; expiry with the sweep; and a 200 MB upload streamed through
in bounded memory."""

import hashlib
import io
import json
import os
import secrets
import subprocess
import threading
import time

import openai
import pytest
import requests

from conftest import _env_path, _start, _stop

MAX_FILE = 1 << 20
QUOTA = 3 * (1 << 20)


@pytest.fixture(scope="module")
def fw(tmp_path_factory, admin_key):
    """Small limits, a 2 s minimum expiry (test-only flag) and a 1 s sweep."""
    tmp = str(tmp_path_factory.mktemp("files"))
    s = _start("files", ["--files-max-file-bytes", str(MAX_FILE), "--files-tenant-quota-bytes", str(QUOTA),
                         "--files-min-expiry-seconds", "2", "--files-sweep-seconds", "1"], tmp, admin_key)
    s.data_dir = os.path.join(tmp, "data")
    yield s
    _stop(s)


def _tenant(fw, name, scopes=("inference", "hub:read", "hub:write")):
    tid = fw.new_tenant(f"{name}-{secrets.token_hex(3)}")
    key = fw.new_key(tid, scopes=list(scopes))["key"]
    return tid, key


def _blob(fw, sha):
    return os.path.join(fw.data_dir, "hub", "blobs", sha[:2], sha)


def _staging(fw):
    d = os.path.join(fw.data_dir, "files", "staging")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def _all_blobs(fw):
    root = os.path.join(fw.data_dir, "hub", "blobs")
    return sorted(n for _, _, names in os.walk(root) for n in names)


def _jsonl(n, salt=""):
    lines = [json.dumps({"custom_id": f"r{i}{salt}", "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": "tiny", "messages": [{"role": "user", "content": f"hi {i}"}]}})
             for i in range(n)]
    return ("\n".join(lines) + "\n").encode()


def _error(r, status, param=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "code", "param"}, err
    if param is not None:
        assert err["param"] == param, err
    return err


def test_upload_list_retrieve_content_delete(fw):
    _, key = _tenant(fw, "a")
    client = fw.client(api_key=key)
    data = _jsonl(50, secrets.token_hex(4))
    created = client.files.create(file=("requests.jsonl", data), purpose="batch")
    assert created.id.startswith("file-") and created.object == "file"
    assert (created.bytes, created.filename, created.purpose, created.status) == \
        (len(data), "requests.jsonl", "batch", "processed")
    assert created.expires_at is None
    assert abs(created.created_at - time.time()) < 60

    listed = client.files.list()
    assert [f.id for f in listed.data] == [created.id]
    assert client.files.list(purpose="fine-tune").data == []
    got = client.files.retrieve(created.id)
    assert got.model_dump() == created.model_dump()
    assert client.files.content(created.id).content == data
    sha = hashlib.sha256(data).hexdigest()
    assert os.path.exists(_blob(fw, sha)), "stored content-addressed in the hub's blob store"

    r = requests.get(f"{fw.url}/v1/files/{created.id}/content", headers={**fw.auth(key), "Range": "bytes=10-19"},
                     timeout=30)
    assert r.status_code == 206 and r.content == data[10:20], r.text
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"

    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "file", True)
    with pytest.raises(openai.NotFoundError) as e:
        client.files.retrieve(created.id)
    assert e.value.status_code == 404 and created.id in e.value.message
    with pytest.raises(openai.NotFoundError):
        client.files.delete(created.id)
    assert client.files.list().data == []
    assert not os.path.exists(_blob(fw, sha)), "its blob went with it"


def test_listing_pages_newest_first(fw):
    _, key = _tenant(fw, "pages")
    client = fw.client(api_key=key)
    ids = []
    for i in range(5):
        ids.append(client.files.create(file=(f"f{i}.txt", f"file {i}".encode()), purpose="user_data").id)
        time.sleep(1.05)  # created_at is in seconds; distinct ones make the order plain
    first = client.files.list(limit=2)
    assert [f.id for f in first.data] == ids[::-1][:2] and first.has_more
    assert [f.id for f in client.files.list(limit=2, after=first.data[-1].id).data] == ids[::-1][2:4]
    assert [f.id for f in client.files.list(order="asc").data] == ids
    # The client's auto-pagination walks every page.
    assert [f.id for f in client.files.list(limit=2)] == ids[::-1]
    r = requests.get(f"{fw.url}/v1/files?limit=0", headers=fw.auth(key), timeout=30)
    _error(r, 400, "limit")
    r = requests.get(f"{fw.url}/v1/files?after=file-nope", headers=fw.auth(key), timeout=30)
    _error(r, 400, "after")
    for f in ids:
        client.files.delete(f)


def test_another_tenant_cannot_see_read_or_delete(fw):
    _, a_key = _tenant(fw, "owner")
    _, b_key = _tenant(fw, "other")
    a, b = fw.client(api_key=a_key), fw.client(api_key=b_key)
    f = a.files.create(file=("mine.jsonl", _jsonl(2)), purpose="batch")
    assert b.files.list().data == []
    missing = f"file-{'0' * 32}"
    with pytest.raises(openai.NotFoundError) as absent:
        b.files.retrieve(missing)
    for call in (lambda: b.files.retrieve(f.id), lambda: b.files.content(f.id), lambda: b.files.delete(f.id)):
        with pytest.raises(openai.NotFoundError) as e:
            call()
        # Another tenant's file reads exactly like a missing one.
        assert e.value.body == {**absent.value.body, "message": absent.value.body["message"].replace(missing, f.id)}
    assert a.files.content(f.id).content == _jsonl(2), "still there for its owner"
    a.files.delete(f.id)


def test_bad_input_is_refused_and_leaves_nothing(fw):
    _, key = _tenant(fw, "bad")
    client = fw.client(api_key=key)
    blobs_before = _all_blobs(fw)
    url, auth = fw.url + "/v1/files", fw.auth(key)

    _error(requests.post(url, headers=auth, data={"purpose": "batch"}, files={"other": ("x", b"{}")}, timeout=30),
           400, "other")
    _error(requests.post(url, headers=auth, files={"purpose": (None, "batch")}, timeout=30), 400, "file")
    _error(requests.post(url, headers=auth, files={"file": ("a.jsonl", b"{}\n")}, timeout=30), 400, "purpose")
    with pytest.raises(openai.BadRequestError) as e:
        client.files.create(file=("a.jsonl", b"{}\n"), purpose="training")
    assert e.value.body["param"] == "purpose" and "batch" in e.value.message
    _error(requests.post(url, headers=auth, json={"purpose": "batch"}, timeout=30), 400, "file")
    _error(requests.post(url, headers=auth, data=b"not a form", timeout=30), 400, "file")

    for expires, param in (({"anchor": "created_at", "seconds": 1}, "expires_after[seconds]"),
                           ({"anchor": "created_at", "seconds": 2592001}, "expires_after[seconds]"),
                           ({"anchor": "last_active_at", "seconds": 3600}, "expires_after[anchor]")):
        with pytest.raises(openai.BadRequestError) as e:
            client.files.create(file=("a.jsonl", b"{}\n"), purpose="batch", expires_after=expires)
        assert e.value.body["param"] == param, e.value.body

    bad = b'{"custom_id": "1"}\n{"custom_id": "2"}\n[1, 2]\n{}\n'
    for purpose in ("batch", "fine-tune"):
        with pytest.raises(openai.BadRequestError) as e:
            client.files.create(file=("bad.jsonl", bad), purpose=purpose)
        assert "line 3" in e.value.message and e.value.body["param"] == "file", e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.files.create(file=("bad.jsonl", b'{"a": 1}\n{"a": \n'), purpose="batch")
    assert "line 2" in e.value.message
    # Other purposes take any bytes.
    ok = client.files.create(file=("img.bin", b"\x89PNG\x00\xff"), purpose="vision")
    client.files.delete(ok.id)

    # The admin key has no files of its own.
    _error(requests.get(url, headers=fw.auth(fw.admin_key), timeout=30), 403)
    # A key without `inference` is refused before anything is read.
    _, hub_only = _tenant(fw, "hubonly", scopes=("hub:read",))
    _error(requests.post(url, headers=fw.auth(hub_only), files={"file": ("a", b"{}")}, timeout=30), 403)

    assert client.files.list().data == []
    assert _staging(fw) == [] and _all_blobs(fw) == blobs_before, "nothing half-written"


def test_an_oversized_upload_is_413_and_removed(fw):
    _, key = _tenant(fw, "big")
    client = fw.client(api_key=key)
    blobs_before = _all_blobs(fw)
    with pytest.raises(openai.APIStatusError) as e:
        client.files.create(file=("big.bin", os.urandom(MAX_FILE + 1)), purpose="user_data")
    assert e.value.status_code == 413, e.value
    assert e.value.body["code"] == "request_too_large" and str(MAX_FILE) in e.value.message
    # Far past the limit (the body limit of the route stops it too): still a clean 413.
    r = requests.post(fw.url + "/v1/files", headers=fw.auth(key), timeout=60,
                      files={"purpose": (None, "user_data"), "file": ("huge.bin", os.urandom(3 * MAX_FILE))})
    _error(r, 413, "file")
    assert client.files.list().data == []
    assert _staging(fw) == [] and _all_blobs(fw) == blobs_before, "the partial upload is gone"
    # Exactly at the limit is fine.
    f = client.files.create(file=("max.bin", os.urandom(MAX_FILE)), purpose="user_data")
    assert f.bytes == MAX_FILE
    client.files.delete(f.id)


def test_the_quota_refuses_with_quota_and_usage(fw):
    tid, key = _tenant(fw, "quota")
    client = fw.client(api_key=key)
    first = client.files.create(file=("1.bin", os.urandom(MAX_FILE)), purpose="user_data")
    second = client.files.create(file=("2.bin", os.urandom(MAX_FILE)), purpose="user_data")
    view = fw.admin("GET", f"/tenants/{tid}/files_quota", expect=200)
    assert (view["quota_bytes"], view["used_bytes"], view["overridden"]) == (QUOTA, 2 * MAX_FILE, False)
    # An operator's override for this tenant: room for two files only.
    view = fw.admin("PUT", f"/tenants/{tid}/files_quota", {"quota_bytes": 2 * MAX_FILE + 10}, expect=200)
    assert view["overridden"] is True
    blobs_before = _all_blobs(fw)
    with pytest.raises(openai.APIStatusError) as e:
        client.files.create(file=("3.bin", os.urandom(MAX_FILE)), purpose="user_data")
    assert e.value.status_code == 413, e.value
    assert str(2 * MAX_FILE) in e.value.message and str(2 * MAX_FILE + 10) in e.value.message, e.value.message
    assert "quota" in e.value.message
    assert _staging(fw) == [] and _all_blobs(fw) == blobs_before
    # Back to the default, and deleting makes room.
    fw.admin("PUT", f"/tenants/{tid}/files_quota", {"quota_bytes": None}, expect=200)
    client.files.delete(first.id)
    third = client.files.create(file=("3.bin", os.urandom(MAX_FILE)), purpose="user_data")
    for f in (second, third):
        client.files.delete(f.id)
    fw.admin("PUT", "/tenants/nobody/files_quota", {"quota_bytes": 1}, expect=404)


def test_an_expired_file_disappears_and_is_swept(fw):
    _, key = _tenant(fw, "expiry")
    client = fw.client(api_key=key)
    data = _jsonl(3, secrets.token_hex(4))
    brief = client.files.create(file=("brief.jsonl", data), purpose="batch",
                                expires_after={"anchor": "created_at", "seconds": 2})
    kept = client.files.create(file=("kept.jsonl", _jsonl(1, "kept")), purpose="batch")
    assert brief.expires_at == brief.created_at + 2
    assert client.files.retrieve(brief.id).expires_at == brief.expires_at
    sha = hashlib.sha256(data).hexdigest()
    assert os.path.exists(_blob(fw, sha))
    time.sleep(3.2)
    for call in (lambda: client.files.retrieve(brief.id), lambda: client.files.content(brief.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert [f.id for f in client.files.list().data] == [kept.id]
    deadline = time.monotonic() + 10
    while os.path.exists(_blob(fw, sha)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not os.path.exists(_blob(fw, sha)), "the sweep deleted its blob"
    client.files.delete(kept.id)


def test_a_blob_shared_with_a_hub_repository_outlives_the_file(fw, tmp_path):
    tid, key = _tenant(fw, "shared")
    org = f"org-{secrets.token_hex(3)}"
    fw.admin("POST", f"/tenants/{tid}/orgs", {"name": org}, expect=201)
    data = os.urandom(20_000)
    (tmp_path / "weights.bin").write_bytes(data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(FLYWHEEL_URL=fw.url, FLYWHEEL_API_KEY=key)
    p = subprocess.run([_env_path("FLYWHEEL_BIN"), "push", str(tmp_path), f"{org}/model"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    client = fw.client(api_key=key)
    f = client.files.create(file=("weights.bin", data), purpose="user_data")
    sha = hashlib.sha256(data).hexdigest()
    client.files.delete(f.id)
    assert os.path.exists(_blob(fw, sha)), "the repository still names the blob"
    r = requests.get(f"{fw.url}/{org}/model/resolve/main/weights.bin", headers=fw.auth(key), timeout=60)
    assert r.status_code == 200 and r.content == data

    # The same bytes as a new file again: stored once, read back whole.
    g = client.files.create(file=("again.bin", data), purpose="user_data")
    assert client.files.content(g.id).content == data
    client.files.delete(g.id)


def _vm(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


@pytest.fixture(scope="module")
def big(tmp_path_factory, admin_key):
    """The default limits (512 MiB per file)."""
    tmp = str(tmp_path_factory.mktemp("files-big"))
    s = _start("files-big", [], tmp, admin_key)
    s.data_dir = os.path.join(tmp, "data")
    yield s
    _stop(s)


def test_a_200_mb_upload_streams_in_bounded_memory(big):
    _, key = _tenant(big, "mem")
    size, block = 200 << 20, os.urandom(1 << 20)
    boundary = "fw" + secrets.token_hex(8)
    digest = hashlib.sha256()

    def body():
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nuser_data\r\n"
               f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n"
               f"Content-Type: application/octet-stream\r\n\r\n").encode()
        for i in range(size // len(block)):
            chunk = bytes([i & 0xFF]) + block[1:]
            digest.update(chunk)
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    pid = big.proc.pid
    rss_before = _vm(pid, "VmRSS")
    peak = {"rss": rss_before}
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak["rss"] = max(peak["rss"], _vm(pid, "VmRSS"))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        r = requests.post(big.url + "/v1/files", data=body(), timeout=600,
                          headers={**big.auth(key), "Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert r.status_code == 200, r.text
        f = r.json()
        assert f["bytes"] == size
        got = hashlib.sha256()
        with requests.get(f"{big.url}/v1/files/{f['id']}/content", headers=big.auth(key), stream=True,
                          timeout=600) as d:
            assert d.status_code == 200
            for chunk in d.iter_content(1 << 20):
                got.update(chunk)
        assert got.hexdigest() == digest.hexdigest(), "byte-identical"
    finally:
        done.set()
        watcher.join()
    growth = peak["rss"] - rss_before
    assert growth < 64 << 20, f"server RSS grew {growth >> 20} MiB for a {size >> 20} MiB file"
    assert os.path.exists(os.path.join(big.data_dir, "hub", "blobs", got.hexdigest()[:2], got.hexdigest()))
    fw_client = big.client(api_key=key)
    fw_client.files.delete(f["id"])
