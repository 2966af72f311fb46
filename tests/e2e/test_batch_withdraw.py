"""A batch's end does not wait behind its own queued lines (issue 19 point 3: "work not done by its end is
`expired`, with partial results kept").

One replica of SmolLM2 with one slot, and a batch runner allowed 32 lines in flight: 31 of them wait in the
model's queue at any time. At the window's end (6 s here) or a cancel, the lines still waiting leave the
queue unbilled and fail with the batch's reason; only the line running is finished. So the batch ends
within about one line's time of its deadline (before, it ended after every queued line had run: 31 lines
late), and the bill is exactly the output's lines, with nothing left held.
"""

import os

import pytest

from conftest import _env_path, _start, _stop
from test_batches import HALF, PRICE, _balance, _check_bills, _line, _lines, _submit, _tenant, _wait

WINDOW_S = 6
IN_FLIGHT = 32
# A running line takes well under a second here (48 tokens of SmolLM2); the bound leaves room for a
# loaded machine and the 2 s status tick.
LATE_S = 5


@pytest.fixture(scope="module")
def server(tmp_path_factory, admin_key):
    tmp = str(tmp_path_factory.mktemp("batch-withdraw"))
    threads = os.environ.get("FLYWHEEL_E2E_THREADS") or str(os.cpu_count() or 2)
    s = _start("batch-withdraw", ["--model", f"{_env_path('FLYWHEEL_SMOL_GGUF')}=smol", "--slots", "1",
                                  "--slot-context", "1024", "--threads", threads,
                                  "--batch-concurrency", str(IN_FLIGHT), "--batch-window-max", f"{WINDOW_S}s"],
               tmp, admin_key)
    s.admin("PUT", "/prices/smol", PRICE, expect=200)
    yield s
    _stop(s)


def _account(s, tid):
    return s.admin("GET", f"/tenants/{tid}", expect=200)


def _settled(s, tid, out, before):
    """The tenant paid exactly the output's lines at the batch price and holds nothing."""
    assert _account(s, tid)["amount_held"] == 0, _account(s, tid)
    assert before - _balance(s, tid) == _check_bills(s, out, HALF)


def test_an_expiring_batch_withdraws_its_queued_lines_at_the_deadline(server, figure):
    tid, key = _tenant(server)
    client = server.client(api_key=key)
    before = _balance(server, tid)
    lines = [_line(i, max_tokens=48) for i in range(120)]
    batch = _submit(client, lines)
    done = _wait(client, batch.id, timeout=120)
    assert done.status == "expired" and done.expired_at, done
    late = done.expired_at - done.expires_at
    figure(f"batch expired {late} s after its deadline, {done.request_counts.completed} lines done")
    assert late <= LATE_S, f"the batch expired {late} s after its deadline: queued lines were waited for"
    out, errors = _lines(client, done.output_file_id), _lines(client, done.error_file_id)
    assert out and errors, (len(out), len(errors))
    assert sorted(l["custom_id"] for l in out + errors) == sorted(l["custom_id"] for l in lines)
    assert all(l["error"]["code"] == "batch_expired" for l in errors), errors[:3]
    _settled(server, tid, out, before)


def test_a_cancel_withdraws_the_queued_lines_at_once(server):
    tid, key = _tenant(server)
    client = server.client(api_key=key)
    before = _balance(server, tid)
    lines = [_line(i, max_tokens=48) for i in range(40)]
    batch = _submit(client, lines)
    _wait(client, batch.id, until=(), pred=lambda b: b.request_counts.completed >= 2, timeout=60)
    cancelling = client.batches.cancel(batch.id)
    done = _wait(client, batch.id, timeout=60)
    assert done.status == "cancelled", done
    assert done.cancelled_at - cancelling.cancelling_at <= LATE_S, done
    out, errors = _lines(client, done.output_file_id), _lines(client, done.error_file_id)
    assert sorted(l["custom_id"] for l in out + errors) == sorted(l["custom_id"] for l in lines)
    assert all(l["error"]["code"] == "batch_cancelled" for l in errors), errors[:3]
    assert len(out) < len(lines), "the cancel came after every line had run"
    _settled(server, tid, out, before)
