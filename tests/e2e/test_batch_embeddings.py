"""Batches of `/v1/embeddings` lines and the per-tenant limit on enqueued batch tokens (issue 19), end to
end: the real all-MiniLM-L6-v2 (converted by `flywheel convert` in scripts/e2e.sh) served by a real
`flywheel serve`, called with the official `openai` client. A batch's vectors equal the same requests
made interactively; each line is billed once at the batch price (`batch/minilm`: half the interactive
price by default); a line whose body the embeddings parser refuses is an error line found at creation;
a batch that would take a tenant past `--batch-max-enqueued-tokens` is refused with a 429 in OpenAI's
shape naming the numbers, and nothing of it is written."""

import json
import math
import os
import secrets
import time

import numpy as np
import openai
import pytest

from conftest import _start, _stop

EMBED = "/v1/embeddings"
PRICE = {"input_per_million": 2_000_000, "output_per_million": 0, "cached_input_per_million": 2_000_000}
LIMIT = 5000  # --batch-max-enqueued-tokens
SENTENCES = [
    "A cat sits on the mat.",
    "A kitten is sleeping on the rug.",
    "The stock market fell sharply today.",
    "Investors sold shares as prices dropped.",
    "I love eating pizza with friends.",
    "We had pasta for dinner last night.",
    "The weather is sunny and warm.",
    "It is raining heavily outside.",
    "She plays the piano beautifully.",
    "He is learning to play the guitar.",
    "The rocket launched into space.",
    "Astronauts live on the space station.",
]


def _env(name):
    value = os.environ.get(name)
    if not value or not os.path.exists(value):
        pytest.exit(f"{name} is not set or missing (run the suite through scripts/e2e.sh)", returncode=2)
    return value


@pytest.fixture(scope="module")
def fw(tmp_path_factory, admin_key):
    tmp = str(tmp_path_factory.mktemp("batch-embed"))
    args = ["--model", f"{_env('FLYWHEEL_MINILM_GGUF')}=minilm", "--slots", "4", "--slot-context", "512",
            "--batch-max-enqueued-tokens", str(LIMIT)]
    s = _start("batch-embed", args, tmp, admin_key)
    s.admin("PUT", "/prices/minilm", PRICE, expect=200)
    yield s
    _stop(s)


def _tenant(fw, balance=10**12):
    tid = fw.new_tenant(f"be-{secrets.token_hex(3)}", grant_tokens=0)
    fw.admin("POST", f"/tenants/{tid}/topups", {"amount": balance}, expect=200)
    return tid, fw.new_key(tid)["key"]


def _jsonl(lines):
    return ("\n".join(json.dumps(l) for l in lines) + "\n").encode()


def _submit(client, lines, endpoint=EMBED):
    f = client.files.create(file=("in.jsonl", _jsonl(lines)), purpose="batch")
    return client.batches.create(input_file_id=f.id, endpoint=endpoint, completion_window="24h")


def _wait(client, batch_id, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        b = client.batches.retrieve(batch_id)
        if b.status in ("completed", "failed", "expired", "cancelled"):
            return b
        time.sleep(0.3)
    raise AssertionError(f"batch {batch_id} still {b.status} after {timeout}s")


def _lines(client, file_id):
    return [json.loads(l) for l in client.files.content(file_id).text.splitlines() if l.strip()]


def test_embedding_lines_equal_interactive_and_cost_the_batch_price(fw):
    tid, key = _tenant(fw)
    client = fw.client(api_key=key)
    inputs = [*SENTENCES, SENTENCES[:3]]  # the last line embeds three inputs at once
    lines = [{"custom_id": f"e-{i}", "method": "POST", "url": EMBED, "body": {"model": "minilm", "input": text}}
             for i, text in enumerate(inputs)]
    # Refused at creation by the embeddings parser: no input.
    lines.append({"custom_id": "bad", "method": "POST", "url": EMBED, "body": {"model": "minilm", "input": []}})
    before = fw.admin("GET", f"/tenants/{tid}", expect=200)["balance"]
    batch = _submit(client, lines)
    assert batch.endpoint == EMBED, batch
    assert (batch.request_counts.total, batch.request_counts.failed) == (len(lines), 1), batch
    done = _wait(client, batch.id)
    assert done.status == "completed", done
    assert (done.request_counts.completed, done.request_counts.failed) == (len(inputs), 1), done

    errors = _lines(client, done.error_file_id)
    assert len(errors) == 1 and errors[0]["custom_id"] == "bad" and errors[0]["response"] is None, errors
    assert errors[0]["error"]["code"] == "invalid_request" and "input" in errors[0]["error"]["message"], errors

    out = _lines(client, done.output_file_id)
    assert [l["custom_id"] for l in out] == [l["custom_id"] for l in lines[:-1]], "each line once, in order"
    spent = 0
    for line, text in zip(out, inputs):
        response = line["response"]
        assert response["status_code"] == 200 and line["error"] is None, line
        body = response["body"]
        # OpenAI's shape, as the interactive route answers.
        assert body["object"] == "list" and body["model"] == "minilm", body.keys()
        assert set(body["usage"]) == {"prompt_tokens", "total_tokens"}, body["usage"]
        want = client.embeddings.create(model="minilm", input=text)
        assert [d["index"] for d in body["data"]] == [d.index for d in want.data]
        assert all(d["object"] == "embedding" for d in body["data"])
        for got, exp in zip(body["data"], want.data):
            got, exp = np.array(got["embedding"]), np.array(exp.embedding)
            assert got.shape == exp.shape == (384,)
            assert np.allclose(got, exp, atol=1e-5), float(np.abs(got - exp).max())
        assert body["usage"]["prompt_tokens"] == want.usage.prompt_tokens, (body["usage"], want.usage)
        bill = fw.admin("GET", f"/requests/{response['request_id']}", expect=200)
        assert bill["model"] == "batch/minilm" and bill["state"] == "settled", bill
        assert bill["billed"]["prompt_tokens"] == body["usage"]["prompt_tokens"], bill
        cost = math.ceil(body["usage"]["prompt_tokens"] * (PRICE["input_per_million"] // 2) / 1_000_000)
        assert bill["cost"] == cost, (bill, body["usage"])
        spent += cost
    interactive = sum(math.ceil(client.embeddings.create(model="minilm", input=t).usage.prompt_tokens
                                * PRICE["input_per_million"] / 1_000_000) for t in inputs)
    after = fw.admin("GET", f"/tenants/{tid}", expect=200)["balance"]
    # The batch lines cost `spent`; the interactive comparisons made above and just now cost the rest.
    assert before - after == spent + 2 * interactive, (before, after, spent, interactive)


def test_enqueued_token_limit_refuses_a_batch_whole_with_a_429(fw):
    tid, key = _tenant(fw)
    client = fw.client(api_key=key)
    long_text = "word " * 200  # ~1 KB per body: ~260 estimated tokens per line
    lines = [{"custom_id": f"l-{i}", "method": "POST", "url": EMBED, "body": {"model": "minilm", "input": long_text}}
             for i in range(30)]
    f = client.files.create(file=("in.jsonl", _jsonl(lines)), purpose="batch")
    with pytest.raises(openai.RateLimitError) as refused:
        client.batches.create(input_file_id=f.id, endpoint=EMBED, completion_window="24h")
    err = refused.value
    assert err.status_code == 429 and err.response.headers.get("retry-after"), err.response.headers
    body = err.response.json()["error"]
    assert body["code"] == "token_limit_exceeded" and body["type"] == "tokens", body
    assert f"limit of {LIMIT} enqueued tokens" in body["message"] and "this batch adds" in body["message"], body
    assert client.batches.list().data == [], "nothing of the refused batch was written"
    # A batch within the limit is accepted and runs.
    small = _submit(client, lines[:5])
    assert _wait(client, small.id).status == "completed"
