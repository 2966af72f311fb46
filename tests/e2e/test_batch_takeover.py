"""One process runs a batch (issue 19): two real `flywheel serve` processes share one PostgreSQL database
(each its own data directory, both serving SmolLM2). A batch created on the first is claimed by it (a
lease in its row, renewed while it runs); the second never runs it while that lease is live. The first
is killed with SIGKILL mid-batch: its lease lapses, the second takes the batch over and finishes it from
its rows. The output holds each custom_id once, and the ledger one charge per line at the batch price,
nothing else taken from the balance. A process shut down gracefully (SIGTERM) gives its lease up, so the
other takes the batch over at once rather than once a long lease lapsed."""

import os
import secrets
import signal
import subprocess
import time

import pytest

from conftest import _env_path, _start, _stop
from test_batches import HALF, PRICE, _balance, _check_bills, _line, _lines, _submit, _wait

LEASE = "3s"


def _postgres_base() -> str:
    return os.environ.get("FLYWHEEL_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")


def _psql(sql: str):
    r = subprocess.run(["psql", _postgres_base(), "-v", "ON_ERROR_STOP=1", "-q", "-c", sql], capture_output=True,
                       text=True, timeout=60)
    if r.returncode != 0:
        pytest.skip(f"PostgreSQL is not reachable at {_postgres_base()}: {r.stderr.strip()[-300:]}")


@pytest.fixture
def database():
    db = "fw_e2e_batch_" + secrets.token_hex(4)
    _psql(f"CREATE DATABASE {db}")
    yield f"{_postgres_base().rsplit('/', 1)[0]}/{db}"
    _psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def _serve(tmp_path_factory, admin_key, name, db, lease=LEASE):
    tmp = str(tmp_path_factory.mktemp(name))
    threads = os.environ.get("FLYWHEEL_E2E_THREADS") or str(os.cpu_count() or 2)
    args = ["--model", f"{_env_path('FLYWHEEL_SMOL_GGUF')}=smol", "--slots", "4", "--slot-context", "2048",
            "--threads", threads, "--batch-concurrency", "4", "--batch-lease", lease, "--database-url", db]
    s = _start(name, args, tmp, admin_key)
    # Each process keeps its price book: set it through both.
    s.admin("PUT", "/prices/smol", PRICE, expect=200)
    return s


def _log(server) -> str:
    with open(server.log_path, errors="replace") as f:
        return f.read()


def _paying_batch(server, n=48):
    """A paying tenant (no grant) submits N chat lines on SERVER: (tenant id, key, balance before, lines, batch)."""
    tid = server.new_tenant(f"bt-{secrets.token_hex(3)}", grant_tokens=0)
    server.admin("POST", f"/tenants/{tid}/topups", {"amount": 10**12}, expect=200)
    key = server.new_key(tid)["key"]
    before = _balance(server, tid)
    lines = [_line(i, max_tokens=24) for i in range(n)]
    return tid, key, before, lines, _submit(server.client(api_key=key), lines)


def test_two_processes_one_database_one_runner_and_takeover_after_kill_9(tmp_path_factory, admin_key, database):
    a = _serve(tmp_path_factory, admin_key, "batch-owner-a", database)
    b = _serve(tmp_path_factory, admin_key, "batch-owner-b", database)
    try:
        tid, key, before, lines, batch = _paying_batch(a)
        # A runs it; B sees the rows (one database) but not a batch to take while A's lease is live.
        seen = _wait(b.client(api_key=key), batch.id, pred=lambda x: x.request_counts.completed >= 8)
        assert seen.status == "in_progress", seen
        assert "resuming batch" not in _log(b), "the second process took a batch the first holds"
        a.proc.send_signal(signal.SIGKILL)  # by PID: the server this test started
        a.proc.wait(timeout=30)

        client = b.client(api_key=key)
        done = _wait(client, batch.id)
        assert done.status == "completed", done
        assert "resuming batch" in _log(b), b.log_tail()
        out = _lines(client, done.output_file_id)
        ids = [l["custom_id"] for l in out]
        assert sorted(ids) == sorted(l["custom_id"] for l in lines) and len(set(ids)) == len(lines), \
            "each custom_id once"
        assert done.request_counts.completed == len(lines) and done.error_file_id is None, done
        assert before - _balance(b, tid) == _check_bills(b, out, HALF), "one charge per line, nothing else"
    finally:
        _stop(a)
        _stop(b)


def test_a_process_shut_down_gracefully_gives_its_batch_up_at_once(tmp_path_factory, admin_key, database):
    # A long lease: were it not given up at shutdown, the second process could take the batch only once
    # it lapsed (at least 40 s after the last renewal); given up, its takeover loop (every 5 s) takes it.
    a = _serve(tmp_path_factory, admin_key, "batch-grace-a", database, lease="60s")
    b = _serve(tmp_path_factory, admin_key, "batch-grace-b", database, lease="60s")
    try:
        tid, key, before, lines, batch = _paying_batch(a)
        _wait(b.client(api_key=key), batch.id, pred=lambda x: x.request_counts.completed >= 8)
        _stop(a)  # SIGTERM: a graceful shutdown
        assert a.proc.returncode == 0, a.log_tail()
        assert "giving up their leases" in _log(a), a.log_tail()
        stopped = time.monotonic()
        while "resuming batch" not in _log(b):
            assert time.monotonic() - stopped < 20, "the second process did not take the batch over within 20 s"
            time.sleep(0.2)
        client = b.client(api_key=key)
        done = _wait(client, batch.id)
        assert done.status == "completed", done
        out = _lines(client, done.output_file_id)
        ids = [l["custom_id"] for l in out]
        assert sorted(ids) == sorted(l["custom_id"] for l in lines) and len(set(ids)) == len(lines), \
            "each custom_id once"
        assert before - _balance(b, tid) == _check_bills(b, out, HALF), "one charge per line, nothing else"
    finally:
        _stop(a)
        _stop(b)
