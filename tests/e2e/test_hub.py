"""The model hub end to end: a real `flywheel serve` (no models loaded), `flywheel push` and
`flywheel pull`, and the official `huggingface_hub` client with HF_ENDPOINT pointing at it."""

import hashlib
import os
import random
import subprocess
import time

import pytest
import requests

from conftest import _env_path, _start, _stop
from fw import metric

huggingface_hub = pytest.importorskip("huggingface_hub")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cli(server, *args, key=None, check=True, **kw):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(FLYWHEEL_URL=server.url, FLYWHEEL_API_KEY=key or server.admin_key)
    p = subprocess.run([_env_path("FLYWHEEL_BIN"), *args], env=env, capture_output=True, text=True, timeout=600, **kw)
    if check:
        assert p.returncode == 0, f"{args}: {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


@pytest.fixture(scope="module")
def hub(tmp_path_factory, admin_key):
    s = _start("hub", [], str(tmp_path_factory.mktemp("hub")), admin_key)
    yield s
    _stop(s)


@pytest.fixture(scope="module")
def pushed(hub, tmp_path_factory):
    """acme/smol: the demo GGUF, a card, a config and a nested file."""
    d = tmp_path_factory.mktemp("repo")
    os.symlink(_env_path("FLYWHEEL_SMOL_GGUF"), d / "smol.Q4_1.gguf")
    (d / "README.md").write_text("---\nlicense: apache-2.0\npipeline_tag: text-generation\ntags: [demo]\n---\n# smol\n")
    (d / "config.json").write_text('{"model_type": "llama"}\n')
    (d / "nested" / "deeper").mkdir(parents=True)
    (d / "nested" / "deeper" / "notes.txt").write_bytes(os.urandom(3000))
    out = _cli(hub, "push", str(d), "acme/smol", "-m", "first").stdout.strip()
    assert out.startswith("acme/smol@")
    return d


def _resolve_gets(hub) -> float:
    return metric(hub.metrics(), "flywheel_hub_requests_total", 0, route="hf_resolve", method="GET")


def _resolve_heads(hub) -> float:
    return metric(hub.metrics(), "flywheel_hub_requests_total", 0, route="hf_resolve", method="HEAD")


def test_snapshot_and_file_downloads_are_identical_and_cached(hub, pushed, tmp_path, monkeypatch):
    from huggingface_hub import hf_hub_download, snapshot_download

    cache = str(tmp_path / "cache")
    kw = dict(endpoint=hub.url, cache_dir=cache, token=False)
    before = _resolve_gets(hub)
    snap = snapshot_download("acme/smol", **kw)
    for rel in ["smol.Q4_1.gguf", "README.md", "config.json", "nested/deeper/notes.txt"]:
        assert _sha256(os.path.join(snap, rel)) == _sha256(os.path.join(pushed, rel)), rel
    assert _resolve_gets(hub) - before == 4
    one = hf_hub_download("acme/smol", "nested/deeper/notes.txt", **kw)
    assert _sha256(one) == _sha256(pushed / "nested" / "deeper" / "notes.txt")

    gets, heads = _resolve_gets(hub), _resolve_heads(hub)
    again = snapshot_download("acme/smol", **kw)
    assert again == snap
    assert (_resolve_gets(hub), _resolve_heads(hub)) == (gets, heads), "a cached snapshot downloads nothing"

    info = requests.get(f"{hub.url}/api/models/acme/smol?blobs=true", timeout=10).json()
    gguf = next(s for s in info["siblings"] if s["rfilename"] == "smol.Q4_1.gguf")
    assert gguf["lfs"]["sha256"] == _sha256(pushed / "smol.Q4_1.gguf")
    found = requests.get(f"{hub.url}/api/models", params={"filter": "gguf", "search": "smol"}, timeout=10).json()
    assert [m["id"] for m in found] == ["acme/smol"]
    assert found[0]["downloads"] >= 1


def test_missing_things_raise_the_right_exceptions(hub, pushed, tmp_path):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    kw = dict(endpoint=hub.url, cache_dir=str(tmp_path), token=False)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("acme/nope", "README.md", **kw)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("acme/smol", "README.md", revision="v9", **kw)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("acme/smol", "missing.bin", **kw)


def test_private_repo_is_the_owners_only(hub, tmp_path):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RepositoryNotFoundError

    def tenant(name):
        tid = hub.new_tenant(name)
        hub.admin("POST", f"/tenants/{tid}/orgs", {"name": f"{name}-org"}, expect=201)
        return hub.new_key(tid, scopes=["hub:read", "hub:write"])["key"]

    alice, bob = tenant("alice"), tenant("bob")
    d = tmp_path / "private"
    d.mkdir()
    (d / "weights.bin").write_bytes(os.urandom(50_000))
    _cli(hub, "push", str(d), "alice-org/secret", "--private", key=alice)
    kw = dict(endpoint=hub.url, cache_dir=str(tmp_path / "c"))
    got = hf_hub_download("alice-org/secret", "weights.bin", token=alice, **kw)
    assert _sha256(got) == _sha256(d / "weights.bin")
    for i, token in enumerate((bob, False)):
        # A cache of their own: huggingface_hub may fall back to files already cached.
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download("alice-org/secret", "weights.bin", token=token, endpoint=hub.url,
                            cache_dir=str(tmp_path / f"other-{i}"))
    # Bob cannot write into Alice's org; a read-only key cannot write at all.
    assert _cli(hub, "push", str(d), "alice-org/secret", key=bob, check=False).returncode != 0
    reader = hub.new_key(hub.new_tenant("carol"), scopes=["hub:read"])["key"]
    r = requests.post(f"{hub.url}/api/v1/hub/repos", json={"org": "alice-org", "name": "x"},
                      headers={"Authorization": f"Bearer {reader}"}, timeout=10)
    assert r.status_code == 403, r.text


def test_modelscope_paths(hub, pushed):
    base = f"{hub.url}/api/v1/models/acme/smol"
    listing = requests.get(f"{base}/repo/files", params={"Revision": "master", "Recursive": "true"}, timeout=10).json()
    assert listing["Code"] == 200
    files = {f["Path"]: f for f in listing["Data"]["Files"] if f["Type"] == "blob"}
    assert set(files) == {"smol.Q4_1.gguf", "README.md", "config.json", "nested/deeper/notes.txt"}
    assert files["config.json"]["Sha256"] == _sha256(pushed / "config.json")
    body = requests.get(f"{base}/repo", params={"Revision": "master", "FilePath": "nested/deeper/notes.txt"}, timeout=10)
    assert body.status_code == 200 and body.content == (pushed / "nested" / "deeper" / "notes.txt").read_bytes()
    revs = requests.get(f"{base}/revisions", timeout=10).json()
    assert [b["Revision"] for b in revs["Data"]["RevisionMap"]["Branches"]] == ["main"]


def test_modelscope_client_downloads_identical_files(hub, pushed, tmp_path):
    modelscope = pytest.importorskip("modelscope")

    cache = str(tmp_path / "ms-cache")
    snap = modelscope.snapshot_download("acme/smol", endpoint=hub.url, cache_dir=cache)
    for rel in ["smol.Q4_1.gguf", "README.md", "config.json", "nested/deeper/notes.txt"]:
        assert _sha256(os.path.join(snap, rel)) == _sha256(os.path.join(pushed, rel)), rel
    one = modelscope.model_file_download("acme/smol", "config.json", endpoint=hub.url,
                                         cache_dir=str(tmp_path / "ms-one"))
    assert _sha256(one) == _sha256(pushed / "config.json")


def test_random_ranges_return_the_right_bytes(hub, pushed):
    data = (pushed / "nested" / "deeper" / "notes.txt").read_bytes()
    url = f"{hub.url}/acme/smol/resolve/main/nested/deeper/notes.txt"
    rng = random.Random(4)
    with requests.Session() as s:
        for _ in range(150):
            a = rng.randrange(0, len(data) + 50)
            b = rng.randrange(a, len(data) + 100)
            r = s.get(url, headers={"Range": f"bytes={a}-{b}"}, timeout=10)
            if a >= len(data):
                assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{len(data)}"
            else:
                assert r.status_code == 206, (a, b)
                assert r.content == data[a : b + 1]
                assert r.headers["Content-Range"] == f"bytes {a}-{min(b, len(data) - 1)}/{len(data)}"
        n = rng.randrange(1, 100)
        assert s.get(url, headers={"Range": f"bytes=-{n}"}, timeout=10).content == data[-n:]


def test_traversal_and_bad_writes_change_nothing(hub, pushed):
    before = requests.get(f"{hub.url}/api/models/acme/smol", timeout=10).json()["sha"]
    for path in ["..%2F..%2Fetc%2Fpasswd", "a/%2E%2E/b", "nested//x", "a%5Cb", "%00"]:
        r = requests.get(f"{hub.url}/acme/smol/resolve/main/{path}", timeout=10)
        assert r.status_code in (400, 404), (path, r.status_code)
    auth = {"Authorization": f"Bearer {hub.admin_key}"}
    sha = "ab" * 32
    r = requests.post(f"{hub.url}/api/v1/hub/repos/acme/smol/commits/main",
                      json={"files": [{"path": "../evil", "sha256": sha, "size": 1}]}, headers=auth, timeout=10)
    assert r.status_code == 400, r.text
    r = requests.post(f"{hub.url}/api/v1/hub/repos/acme/smol/commits/main",
                      json={"files": [{"path": "ok.bin", "sha256": sha, "size": 1}]}, headers=auth, timeout=10)
    assert r.status_code == 400, "a blob never uploaded cannot be committed"
    r = requests.post(f"{hub.url}/api/v1/hub/repos/acme/smol/uploads", json={"sha256": sha, "size": 1}, timeout=10)
    assert r.status_code == 401
    assert requests.get(f"{hub.url}/api/models/acme/smol", timeout=10).json()["sha"] == before


def test_pull_resumes_an_interrupted_download(hub, admin_key, tmp_path_factory, tmp_path):
    # A throttled source, so the pull can be stopped halfway.
    src = _start("hub-source", ["--hub-throttle-bytes-per-sec", "2000000"], str(tmp_path_factory.mktemp("src")), admin_key)
    try:
        d = tmp_path / "src"
        d.mkdir()
        (d / "big.bin").write_bytes(os.urandom(8 << 20))
        (d / "small.txt").write_text("hello\n")
        _cli(src, "push", str(d), "up/stream")
        staging = tmp_path / "staging"
        args = [_env_path("FLYWHEEL_BIN"), "pull", f"{src.url}/up/stream", "mirror/stream", "--staging-dir", str(staging)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
        env.update(FLYWHEEL_URL=hub.url, FLYWHEEL_API_KEY=hub.admin_key)
        first = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        partial = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = list(staging.rglob("big.bin.partial"))
            if found and found[0].stat().st_size > (2 << 20):
                partial = found[0]
                break
            time.sleep(0.1)
        first.kill()  # by PID: the pull we started
        first.wait(timeout=10)
        assert partial is not None, "the pull never got halfway"
        n = partial.stat().st_size
        assert 0 < n < (8 << 20)
        second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        assert "resumed from byte" in second.stderr
        assert metric(src.metrics(), "flywheel_hub_downloads_total", 0, resumed="true") >= 1
        mirror = requests.get(f"{hub.url}/api/models/mirror/stream?blobs=true", timeout=10).json()
        got = {s["rfilename"]: s.get("lfs", {}).get("sha256") for s in mirror["siblings"]}
        assert got["big.bin"] == _sha256(d / "big.bin")
    finally:
        _stop(src)


def _rss_anon_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def test_500mb_download_streams_in_bounded_memory(hub, tmp_path):
    d = tmp_path / "big"
    d.mkdir()
    big = d / "huge.bin"
    with open(big, "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(500):
            f.write(block)
    _cli(hub, "push", str(d), "acme/huge")
    base = _rss_anon_kib(hub.proc.pid)
    peak = base
    h = hashlib.sha256()
    with requests.get(f"{hub.url}/acme/huge/resolve/main/huge.bin", stream=True, timeout=60) as r:
        assert r.status_code == 200
        for i, chunk in enumerate(r.iter_content(1 << 20)):
            h.update(chunk)
            if i % 16 == 0:
                peak = max(peak, _rss_anon_kib(hub.proc.pid))
    assert h.hexdigest() == _sha256(big)
    assert peak - base < 64 * 1024, f"server anonymous RSS grew by {(peak - base) // 1024} MiB"
