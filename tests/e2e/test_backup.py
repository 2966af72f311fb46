"""Backup and restore end to end: `flywheel backup` of a live data directory while its server
streams 32 requests and takes a hub push, `flywheel restore` into a new directory, and a second
server on the restored directory serving the same tenants and keys, a ledger that adds up to the
balances, and byte-identical hub files. A cut archive is refused."""

import os
import sqlite3
import subprocess
import threading

import openai
import pytest
import requests

from conftest import _env_path, _start, _stop

PRICE = {"input_per_million": 1_000_000, "output_per_million": 1_000_000}


def _flywheel(*args, check=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    p = subprocess.run([_env_path("FLYWHEEL_BIN"), *args], env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert p.returncode == 0, f"{args}: {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def _push(server, directory, repo):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(FLYWHEEL_URL=server.url, FLYWHEEL_API_KEY=server.admin_key)
    return subprocess.run([_env_path("FLYWHEEL_BIN"), "push", str(directory), repo, "-m", "backup test"],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def live(tmp_path_factory, paths, admin_key):
    tmp = str(tmp_path_factory.mktemp("backup-live"))
    s = _start("backup-live", ["--model", f"{paths['tiny']}=tiny", "--slots", "8", "--slot-context", "512",
                               "--threads", "2"], tmp, admin_key)
    yield s, os.path.join(tmp, "data")
    _stop(s)


def _ledger_adds_up(db_path):
    """Every tenant's balance and hold equal what its ledger entries add up to."""
    db = sqlite3.connect(db_path)
    try:
        for tenant_id, balance, held in db.execute("SELECT id, balance, amount_held FROM tenants"):
            sums = dict(db.execute("SELECT kind, COALESCE(SUM(amount), 0) FROM ledger_entries WHERE tenant_id = ? "
                                   "GROUP BY kind", (tenant_id,)).fetchall())
            topup, charge = sums.get("topup", 0), sums.get("charge", 0)
            reserve, release = sums.get("reserve", 0), sums.get("release", 0)
            assert balance == topup - charge, (tenant_id, balance, sums)
            assert held == reserve - charge - release, (tenant_id, held, sums)
    finally:
        db.close()


def test_a_live_server_is_backed_up_and_restored(live, tmp_path, admin_key):
    server, data_dir = live
    ready = requests.get(server.url + "/ready", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "models": {"tiny": "ready"}}
    server.admin("PUT", "/prices/tiny", PRICE, expect=200)
    tenant = server.new_tenant("backed-up")
    server.admin("POST", f"/tenants/{tenant}/topups", {"amount": 50_000_000}, expect=200)
    key = server.new_key(tenant)["key"]
    kept = tmp_path / "kept"
    (kept / "nested").mkdir(parents=True)
    (kept / "weights.bin").write_bytes(os.urandom(3 << 20))
    (kept / "nested" / "card.md").write_text("# kept\n")
    assert _push(server, kept, "acme/kept").returncode == 0

    # 32 streams and a second push run while the backup is taken.
    later = tmp_path / "later"
    later.mkdir()
    (later / "big.bin").write_bytes(os.urandom(8 << 20))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=120)
    errors = []

    def stream(i):
        try:
            s = client.chat.completions.create(model="tiny", max_tokens=48, stream=True,
                                               messages=[{"role": "user", "content": f"count to {i}"}])
            for _ in s:
                pass
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(32)]
    threads.append(threading.Thread(target=lambda: errors.extend(
        [] if _push(server, later, "acme/later").returncode == 0 else ["second push failed"])))
    for t in threads:
        t.start()
    archive = tmp_path / "flywheel.tar"
    _flywheel("backup", "--data-dir", data_dir, "-o", str(archive))
    for t in threads:
        t.join(timeout=180)
    assert not errors, errors
    assert archive.exists() and not os.path.exists(f"{archive}.partial")

    # A cut archive is refused and leaves no directory behind.
    cut = tmp_path / "cut.tar"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    refused = _flywheel("restore", str(cut), "--data-dir", str(tmp_path / "from-cut"), check=False)
    assert refused.returncode != 0
    assert "not a complete Flywheel backup" in refused.stderr, refused.stderr
    assert not (tmp_path / "from-cut").exists()
    # Nor is a server's own, non-empty directory overwritten.
    busy = _flywheel("restore", str(archive), "--data-dir", data_dir, check=False)
    assert busy.returncode != 0 and "not empty" in busy.stderr, busy.stderr

    restored_root = tmp_path / "restored"
    _flywheel("restore", str(archive), "--data-dir", str(restored_root / "data"))
    _ledger_adds_up(str(restored_root / "data" / "flywheel.db"))
    again = _start("restored", [], str(restored_root), admin_key)
    try:
        names = {t["name"] for t in server.admin("GET", "/tenants", expect=200)["data"]}
        assert names == {t["name"] for t in again.admin("GET", "/tenants", expect=200)["data"]}
        account = requests.get(again.url + "/v1/account", headers=again.auth(key), timeout=10)
        assert account.status_code == 200, account.text
        assert account.json()["tenant_id"] == tenant
        assert account.json()["balance"] <= 50_000_000
        for path in ("weights.bin", "nested/card.md"):
            r = requests.get(f"{again.url}/acme/kept/resolve/main/{path}", timeout=60)
            assert r.status_code == 200, (path, r.status_code)
            assert r.content == (kept / path).read_bytes(), path
    finally:
        _stop(again)
