"""Embeddings and rerank end to end: all-MiniLM-L6-v2 converted by `flywheel convert`, served
by a real server and called with the official `openai` client, checked against a NumPy forward
pass of the same safetensors; the rerank API on embeddings and on a random-weight cross-encoder;
metering through the ledger; bad inputs."""

import base64
import concurrent.futures
import json
import math
import os
import time

import numpy as np
import openai
import pytest
import requests

from conftest import _start, _stop

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
    "My phone battery died again.",
    "Charging the laptop takes an hour.",
    "The river flows through the valley.",
    "Mountains are covered with snow in winter.",
    "Python is a popular programming language.",
    "Rust programs are fast and safe.",
    "The children played football in the park.",
    "A dog barked at the mailman.",
]


def _env(name):
    value = os.environ.get(name)
    if not value or not os.path.exists(value):
        pytest.exit(f"{name} is not set or missing (run the suite through scripts/e2e.sh)", returncode=2)
    return value


@pytest.fixture(scope="module")
def embed_server(tmp_path_factory, admin_key):
    """MiniLM as `minilm` (and as `minilm-q8`, converted with `--outtype q8_0`), the random
    cross-encoder as `rank`, and a chat model as `tiny`."""
    tmp = str(tmp_path_factory.mktemp("embed"))
    args = ["--model", f"{_env('FLYWHEEL_MINILM_GGUF')}=minilm", "--model", f"{_env('FLYWHEEL_RANK_GGUF')}=rank",
            "--model", f"{_env('FLYWHEEL_MINILM_Q8_GGUF')}=minilm-q8",
            "--model", f"{_env('FLYWHEEL_TINY_GGUF')}=tiny", "--slots", "4", "--slot-context", "512"]
    s = _start("embed", args, tmp, admin_key).with_tenant()
    yield s
    _stop(s)


@pytest.fixture(scope="module")
def client(embed_server):
    c = embed_server.client()
    yield c
    c.close()


# --- A NumPy BERT forward pass from the safetensors (no torch) -------------------------------

@pytest.fixture(scope="module")
def reference():
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    directory = _env("FLYWHEEL_MINILM_DIR")
    weights = load_file(os.path.join(directory, "model.safetensors"))
    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    tokenizer = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    erf = np.vectorize(math.erf)

    def layer_norm(x, prefix):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + config["layer_norm_eps"]) * weights[prefix + ".weight"] + weights[prefix + ".bias"]

    def dense(x, prefix):
        return x @ weights[prefix + ".weight"].T + weights[prefix + ".bias"]

    def embed(text):
        ids = tokenizer.encode(text).ids
        n, heads = len(ids), config["num_attention_heads"]
        d = config["hidden_size"] // heads
        x = (weights["embeddings.word_embeddings.weight"][ids]
             + weights["embeddings.position_embeddings.weight"][:n]
             + weights["embeddings.token_type_embeddings.weight"][0])
        x = layer_norm(x.astype(np.float64), "embeddings.LayerNorm")
        for layer in range(config["num_hidden_layers"]):
            p = f"encoder.layer.{layer}."
            q, k, v = (dense(x, p + f"attention.self.{m}").reshape(n, heads, d).transpose(1, 0, 2)
                       for m in ("query", "key", "value"))
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            attention = scores / scores.sum(-1, keepdims=True)
            context = (attention @ v).transpose(1, 0, 2).reshape(n, heads * d)
            x = layer_norm(dense(context, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            h = dense(x, p + "intermediate.dense")
            h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
            x = layer_norm(dense(h, p + "output.dense") + x, p + "output.LayerNorm")
        pooled = x.mean(0)  # every token is attended (no padding), so the mask is all ones
        return pooled / np.linalg.norm(pooled), len(ids)

    return embed


def _cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _vectors(response):
    return [np.asarray(d.embedding, np.float64) for d in sorted(response.data, key=lambda d: d.index)]


def test_models_say_what_each_model_can_do(embed_server):
    models = {m["id"]: m for m in requests.get(embed_server.url + "/v1/models", headers=embed_server.auth(),
                                                 timeout=30).json()["data"]}
    assert models["minilm"]["capabilities"] == ["embeddings", "rerank"], models
    assert models["minilm"]["dimensions"] == 384
    assert models["rank"]["capabilities"] == ["rerank"]
    assert models["tiny"]["capabilities"] == ["chat", "completions"]


def test_vectors_match_a_numpy_forward_pass_of_the_safetensors(client, reference):
    response = client.embeddings.create(model="minilm", input=SENTENCES, encoding_format="float")
    assert response.object == "list" and response.model == "minilm"
    vectors = _vectors(response)
    assert len(vectors) == len(SENTENCES) and all(len(v) == 384 for v in vectors)
    total = 0
    for sentence, got in zip(SENTENCES, vectors):
        want, n_tokens = reference(sentence)
        total += n_tokens
        assert _cos(got, want) >= 0.99, (sentence, _cos(got, want))
        assert abs(np.linalg.norm(got) - 1.0) < 1e-4
    # The same tokenizer as Hugging Face's: the same token count.
    assert response.usage.prompt_tokens == total, (response.usage, total)
    assert response.usage.total_tokens == total


def test_q8_0_weights_keep_the_vectors(client, reference, figure):
    """`flywheel convert --outtype q8_0`: a quarter of the weights' bytes, the same vectors within
    8-bit rounding, both against the NumPy reference and against the F32 conversion."""
    full = _vectors(client.embeddings.create(model="minilm", input=SENTENCES))
    q8 = _vectors(client.embeddings.create(model="minilm-q8", input=SENTENCES))
    to_reference = [_cos(got, reference(s)[0]) for s, got in zip(SENTENCES, q8)]
    to_f32 = [_cos(a, b) for a, b in zip(q8, full)]
    figure(f"q8_0 MiniLM: cosine to the NumPy reference min {min(to_reference):.5f}, "
           f"to the F32 conversion min {min(to_f32):.5f}")
    assert min(to_reference) >= 0.99 and min(to_f32) >= 0.995, (to_reference, to_f32)
    assert os.path.getsize(_env("FLYWHEEL_MINILM_Q8_GGUF")) < 0.6 * os.path.getsize(_env("FLYWHEEL_MINILM_GGUF"))


def test_similar_sentences_rank_above_unrelated_ones(client):
    # sentence-transformers' own README example for this model: 0.6660, 0.1046, 0.1411.
    lovely, sunny, stadium = _vectors(client.embeddings.create(
        model="minilm", input=["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."],
        encoding_format="float"))
    assert abs(_cos(lovely, sunny) - 0.6660) < 0.005, _cos(lovely, sunny)
    assert abs(_cos(lovely, stadium) - 0.1046) < 0.005, _cos(lovely, stadium)
    assert abs(_cos(sunny, stadium) - 0.1411) < 0.005, _cos(sunny, stadium)
    # Single words (the NumPy reference gives 0.788 and 0.190).
    cat, kitten, market = _vectors(client.embeddings.create(
        model="minilm", input=["cat", "kitten", "stock market"], encoding_format="float"))
    assert _cos(cat, kitten) > _cos(cat, market) + 0.4, (_cos(cat, kitten), _cos(cat, market))
    vectors = _vectors(client.embeddings.create(model="minilm", input=SENTENCES[:4], encoding_format="float"))
    assert _cos(vectors[0], vectors[1]) > _cos(vectors[0], vectors[2]) + 0.2
    assert _cos(vectors[2], vectors[3]) > _cos(vectors[2], vectors[1]) + 0.2


def test_base64_and_float_give_the_same_vectors(embed_server, client):
    floats = _vectors(client.embeddings.create(model="minilm", input=SENTENCES[:3], encoding_format="float"))
    # The client asks for base64 by default and decodes it itself.
    decoded = _vectors(client.embeddings.create(model="minilm", input=SENTENCES[:3]))
    r = requests.post(embed_server.url + "/v1/embeddings", headers=embed_server.auth(), timeout=60,
                      json={"model": "minilm", "input": SENTENCES[:3], "encoding_format": "base64"})
    assert r.status_code == 200, r.text
    raw = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in r.json()["data"]]
    for f, d, b in zip(floats, decoded, raw):
        assert np.array_equal(np.asarray(f, np.float32), np.asarray(d, np.float32))
        assert np.array_equal(np.asarray(f, np.float32), b)


def test_batched_and_concurrent_requests_give_the_single_vectors(client):
    single = [_vectors(client.embeddings.create(model="minilm", input=s, encoding_format="float"))[0]
              for s in SENTENCES]
    batched = _vectors(client.embeddings.create(model="minilm", input=SENTENCES, encoding_format="float"))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        concurrent_ = list(pool.map(
            lambda s: _vectors(client.embeddings.create(model="minilm", input=[s, "filler text here"],
                                                        encoding_format="float"))[0], SENTENCES))
    for s, b, c in zip(single, batched, concurrent_):
        assert np.max(np.abs(s - b)) < 1e-5, np.max(np.abs(s - b))
        assert np.max(np.abs(s - c)) < 1e-5, np.max(np.abs(s - c))


def test_token_id_inputs_embed_like_their_text(client):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(os.path.join(_env("FLYWHEEL_MINILM_DIR"), "tokenizer.json"))
    tokenizer.no_padding()  # the model's tokenizer.json pads to 128
    tokenizer.no_truncation()
    ids = [tokenizer.encode(s).ids for s in SENTENCES[:2]]
    text = _vectors(client.embeddings.create(model="minilm", input=SENTENCES[:2], encoding_format="float"))
    lists = _vectors(client.embeddings.create(model="minilm", input=ids, encoding_format="float"))
    one = client.embeddings.create(model="minilm", input=ids[0], encoding_format="float")
    assert one.usage.prompt_tokens == len(ids[0])
    for t, l in zip(text, lists):
        assert np.max(np.abs(t - l)) < 1e-5
    assert np.max(np.abs(_vectors(one)[0] - text[0])) < 1e-5


def _refusal(embed_server, body, path="/v1/embeddings", status=400):
    r = requests.post(embed_server.url + path, headers=embed_server.auth(), json=body, timeout=60)
    assert r.status_code == status, (body, r.status_code, r.text)
    error = r.json()["error"]
    assert error["message"] and error["type"], error
    return error


def test_bad_inputs_are_400s_naming_the_parameter(embed_server):
    for body, param in [
        ({"model": "minilm", "input": ""}, "input"),
        ({"model": "minilm", "input": []}, "input"),
        ({"model": "minilm", "input": ["ok", ""]}, "input"),
        ({"model": "minilm", "input": ["x"] * 2049}, "input"),
        ({"model": "minilm", "input": [[101, 99999999, 102]]}, "input"),
        ({"model": "minilm", "input": [7, "a"]}, "input"),
        ({"model": "minilm", "input": {"text": "a"}}, "input"),
        ({"model": "minilm", "input": 5}, "input"),
        ({"model": "minilm", "input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "minilm", "input": "a", "dimensions": 128}, "dimensions"),
        ({"model": "minilm", "input": "a", "truncate": True}, "truncate"),
        ({"model": "tiny", "input": "a"}, "model"),
        ({"model": "rank", "input": "a"}, "model"),
    ]:
        error = _refusal(embed_server, body)
        assert error["param"] == param, (body, error)
        assert error["code"] == "invalid_request_error" or param == "input", error
    # Longer than the model's 512-token context: refused, naming the input's index.
    error = _refusal(embed_server, {"model": "minilm", "input": ["short", "word " * 600]})
    assert error["param"] == "input" and "input[1]" in error["message"], error
    # dimensions equal to the model's own are accepted.
    r = requests.post(embed_server.url + "/v1/embeddings", headers=embed_server.auth(), timeout=60,
                      json={"model": "minilm", "input": "a", "dimensions": 384, "user": "u"})
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 384
    assert _refusal(embed_server, {"model": "nope", "input": "a"}, status=404)["code"] == "model_not_found"
    # A chat request on an embedding model, and rerank on a chat model.
    error = _refusal(embed_server, {"model": "minilm", "messages": [{"role": "user", "content": "hi"}]},
                     path="/v1/chat/completions")
    assert error["param"] == "model" and "embedding model" in error["message"], error
    error = _refusal(embed_server, {"model": "tiny", "query": "q", "documents": ["d"]}, path="/v1/rerank")
    assert error["param"] == "model", error


def test_tokens_are_metered_exactly(embed_server):
    embed_server.admin("PUT", "/prices/minilm", {"input_per_million": 1000, "output_per_million": 0}, expect=200)
    tenant = embed_server.new_tenant("embed-meter", grant_tokens=0)
    embed_server.admin("POST", f"/tenants/{tenant}/topups", {"amount": 1_000_000}, expect=200)
    key = embed_server.new_key(tenant)["key"]
    client = embed_server.client(api_key=key)
    raw = client.embeddings.with_raw_response.create(model="minilm", input=SENTENCES, encoding_format="float")
    response = raw.parse()
    tokens = response.usage.prompt_tokens
    assert tokens > len(SENTENCES) * 3
    bill = requests.get(embed_server.url + f"/admin/v1/requests/embd-{raw.headers['x-request-id']}",
                        headers=embed_server.auth(embed_server.admin_key), timeout=30).json()
    assert bill["state"] != "open", bill
    assert bill["billed"]["prompt_tokens"] == tokens and bill["billed"]["completion_tokens"] == 0, bill
    usage = requests.get(embed_server.url + "/v1/usage?group_by=model", headers=embed_server.auth(key),
                         timeout=30).json()["data"]
    row = [u for u in usage if u["group"] == "minilm"]
    assert row and row[0]["prompt_tokens"] == tokens and row[0]["completion_tokens"] == 0, usage
    assert row[0]["cost"] == math.ceil(tokens * 1000 / 1_000_000), usage
    # Rerank is metered the same way.
    r = requests.post(embed_server.url + "/v1/rerank", headers=embed_server.auth(key), timeout=60,
                      json={"model": "minilm", "query": "cat", "documents": ["kitten", "stocks"]})
    assert r.status_code == 200, r.text
    bill = requests.get(embed_server.url + f"/admin/v1/requests/{r.json()['id']}",
                        headers=embed_server.auth(embed_server.admin_key), timeout=30).json()
    assert bill["billed"]["prompt_tokens"] == r.json()["usage"]["total_tokens"], bill


def test_rerank_by_embeddings_scores_cosines_in_order(embed_server, client):
    query, documents = "a small cat", SENTENCES[:8]
    vectors = _vectors(client.embeddings.create(model="minilm", input=[query] + documents, encoding_format="float"))
    cosines = [_cos(vectors[0], v) for v in vectors[1:]]
    r = requests.post(embed_server.url + "/v1/rerank", headers=embed_server.auth(), timeout=60,
                      json={"model": "minilm", "query": query, "documents": documents})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["meta"]["method"] == "embedding-cosine" and body["model"] == "minilm" and body["id"]
    results = body["results"]
    assert [x["index"] for x in results] == sorted(range(len(documents)), key=lambda i: -cosines[i])
    for x in results:
        assert abs(x["relevance_score"] - cosines[x["index"]]) < 1e-5, x
        assert x["document"]["text"] == documents[x["index"]]
    assert body["usage"]["total_tokens"] > 0
    r = requests.post(embed_server.url + "/v1/rerank", headers=embed_server.auth(), timeout=60,
                      json={"model": "minilm", "query": query, "top_n": 2, "return_documents": False,
                            "documents": [{"text": d} for d in documents]})
    top = r.json()["results"]
    assert [x["index"] for x in top] == [x["index"] for x in results[:2]]
    assert all("document" not in x for x in top)


def test_rerank_on_a_cross_encoder(embed_server):
    documents = ["a cat on a mat", "stock prices fell", "kittens sleep a lot", "rust is fast"]
    r = requests.post(embed_server.url + "/v1/rerank", headers=embed_server.auth(), timeout=60,
                      json={"model": "rank", "query": "cats", "documents": documents})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["meta"]["method"] == "cross-encoder"
    scores = [x["relevance_score"] for x in body["results"]]
    assert len(scores) == len(documents) and all(math.isfinite(s) for s in scores)
    assert scores == sorted(scores, reverse=True)
    assert sorted(x["index"] for x in body["results"]) == list(range(len(documents)))
    # Scores are a function of the pair: the same pair scores the same in another request.
    again = requests.post(embed_server.url + "/v1/rerank", headers=embed_server.auth(), timeout=60,
                          json={"model": "rank", "query": "cats", "documents": documents[::-1]}).json()
    by_text = {x["document"]["text"]: x["relevance_score"] for x in body["results"]}
    for x in again["results"]:
        assert abs(by_text[x["document"]["text"]] - x["relevance_score"]) < 1e-5
    assert len(set(round(s, 6) for s in scores)) > 1, "a random model still tells pairs apart"


def test_embeddings_and_reranks_are_in_the_request_log(embed_server):
    """Every tenant request through the serving path is logged, embeddings and reranks too:
    the billed tokens on a success, the status of a refusal."""
    tenant = embed_server.new_tenant("embed-logs", grant_tokens=1_000_000_000)
    key = embed_server.new_key(tenant)["key"]
    c = embed_server.client(api_key=key)
    ok = c.embeddings.create(model="minilm", input=SENTENCES[:2], encoding_format="float")
    with pytest.raises(openai.BadRequestError):
        c.embeddings.create(model="minilm", input="a", dimensions=128)
    r = requests.post(embed_server.url + "/v1/rerank", headers=embed_server.auth(key), timeout=60,
                      json={"model": "minilm", "query": SENTENCES[0], "documents": SENTENCES[1:3]})
    assert r.status_code == 200, r.text
    reranked_tokens = r.json()["usage"]["prompt_tokens"]
    deadline, rows = time.monotonic() + 30, []
    while len(rows) < 3 and time.monotonic() < deadline:
        page = requests.get(embed_server.url + "/v1/logs", headers=embed_server.auth(key), timeout=30)
        assert page.status_code == 200, page.text
        rows = page.json()["data"]
        time.sleep(0.2)
    assert len(rows) == 3, rows
    assert all(row["model"] == "minilm" and row["completion_tokens"] == 0 for row in rows), rows
    refused = [row for row in rows if row["status"] == 400]
    assert len(refused) == 1 and refused[0]["prompt_tokens"] == 0 and refused[0]["cost"] == 0, rows
    served = sorted(row["prompt_tokens"] for row in rows if row["status"] == 200)
    assert served == sorted([ok.usage.prompt_tokens, reranked_tokens]), rows
