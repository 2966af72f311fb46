"""Embeddings throughput, side by side in one run: Flywheel's /v1/embeddings (all-MiniLM-L6-v2
converted by `flywheel convert`, llama.cpp) against sentence-transformers on CPU (PyTorch's
CPU wheel) on the same safetensors, the same inputs and the same number of threads.

The workload is the issue's: 32 concurrent requests of 16 inputs each, every input 64 tokens
(with [CLS] and [SEP]), repeated for --seconds; sentence-transformers encodes the same 512
inputs with batch_size 32 in one process, repeated as long. Figures are inputs per second;
both sides' vectors are compared (cosine) so the two did the same work. Hugging Face's
text-embeddings-inference ships only as a Docker image or a Rust build from Git, neither
reachable from the registries this machine uses, so it is not run.

    python3 bench/embeddings.py --flywheel BIN --minilm-dir DIR --python VENV_PYTHON --out F
"""

import argparse
import base64
import concurrent.futures
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from common import ADMIN_KEY, free_port, stop, wait_health  # noqa: E402

REQUESTS, PER_REQUEST, TOKENS = 32, 16, 64

# Run in the sentence-transformers venv: makes the inputs (exactly TOKENS tokens each by the
# model's own tokenizer) and times the encoder.
ANCHOR = r"""
import json, sys, time
import torch
from sentence_transformers import SentenceTransformer
cfg = json.load(open(sys.argv[1]))
torch.set_num_threads(cfg["threads"])
model = SentenceTransformer(cfg["model_dir"], device="cpu")
tok = model.tokenizer
if cfg["mode"] == "inputs":
    words = ("river mountain quietly engine harvest lantern orbit copper meadow signal "
             "garden whisper ledger canyon violet thunder anchor basket marble compass").split()
    texts = []
    i = 0
    while len(texts) < cfg["count"]:
        parts = []
        while True:
            parts.append(words[(i * 7 + len(parts) * 3) % len(words)])
            n = len(tok(" ".join(parts))["input_ids"])
            if n >= cfg["tokens"]:
                break
        if n == cfg["tokens"]:
            texts.append(" ".join(parts))
        i += 1
    json.dump(texts, open(cfg["out"], "w"))
    sys.exit(0)
texts = json.load(open(cfg["inputs"]))
model.encode(texts[:64], batch_size=32)  # warm up
done, start = 0, time.perf_counter()
while time.perf_counter() - start < cfg["seconds"]:
    vectors = model.encode(texts, batch_size=32, normalize_embeddings=True)
    done += len(texts)
elapsed = time.perf_counter() - start
json.dump({"inputs_per_s": done / elapsed, "inputs": done, "seconds": elapsed,
           "vectors": vectors.tolist()}, open(cfg["out"], "w"))
"""


def admin(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/admin/v1{path}", data=json.dumps(body).encode(),
                                 headers={"authorization": f"Bearer {ADMIN_KEY}"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def embed(port, key, texts):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/embeddings", method="POST",
        data=json.dumps({"model": "minilm", "input": texts, "encoding_format": "base64"}).encode(),
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        body = json.load(r)
    assert body["usage"]["prompt_tokens"] == TOKENS * len(texts), body["usage"]
    return [struct.unpack(f"<{len(base64.b64decode(d['embedding'])) // 4}f", base64.b64decode(d["embedding"]))
            for d in body["data"]]


def run_flywheel(a, gguf, texts, work):
    port = free_port()
    log = os.path.join(work, "flywheel.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(FLYWHEEL_ADMIN_KEY=ADMIN_KEY, RUST_LOG="warn")
    proc = subprocess.Popen([a.flywheel, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir",
                             os.path.join(work, "fw-data-" + os.path.basename(gguf)), "--model", f"{gguf}=minilm",
                             "--threads", str(a.threads), "--slots", str(a.slots),
                             "--step-tokens", str(a.step_tokens), "--max-queue", "4096"],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
    try:
        wait_health(port, proc, log)
        tenant = admin(port, "/tenants", {"name": "bench", "grant_tokens": 10**12})
        key = admin(port, f"/tenants/{tenant['id']}/keys", {"name": "bench"})["key"]
        chunks = [texts[i:i + PER_REQUEST] for i in range(0, len(texts), PER_REQUEST)]
        with concurrent.futures.ThreadPoolExecutor(REQUESTS) as pool:
            list(pool.map(lambda c: embed(port, key, c), chunks))  # warm up
            done, start, vectors = 0, time.perf_counter(), None
            while time.perf_counter() - start < a.seconds:
                results = list(pool.map(lambda c: embed(port, key, c), chunks))
                vectors = [v for r in results for v in r]
                done += len(texts)
            elapsed = time.perf_counter() - start
        return {"inputs_per_s": done / elapsed, "inputs": done, "seconds": elapsed, "vectors": vectors}
    finally:
        stop(proc)


def run_anchor(a, cfg, work):
    """Runs ANCHOR in the sentence-transformers python with `cfg`; what it wrote to cfg["out"]."""
    cfg = dict({"out": os.path.join(work, f"anchor-{cfg['mode']}.json")}, **cfg,
               model_dir=a.minilm_dir, threads=a.threads)
    path = os.path.join(work, f"cfg-{cfg['mode']}.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    subprocess.run([a.python, "-c", ANCHOR, path], check=True)
    with open(cfg["out"]) as f:
        return json.load(f)


def cosines(xs, ys):
    """Cosine of each pair of vectors (both sides are unit length; normalised again anyway)."""
    out = []
    for x, y in zip(xs, ys):
        nx = sum(v * v for v in x) ** 0.5
        ny = sum(v * v for v in y) ** 0.5
        out.append(sum(p * q for p, q in zip(x, y)) / (nx * ny))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flywheel", required=True)
    ap.add_argument("--minilm-dir", required=True, help="the sentence-transformers directory (safetensors)")
    ap.add_argument("--outtypes", default="f32,q8_0",
                    help="`flywheel convert --outtype` of each Flywheel run (comma-separated)")
    ap.add_argument("--python", required=True, help="a python with sentence-transformers and torch (CPU)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--slots", type=int, default=64, help="sequences per llama.cpp batch")
    ap.add_argument("--step-tokens", type=int, default=2048, help="tokens per llama.cpp batch")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="fw-bench-embed-")
    inputs = os.path.join(work, "inputs.json")
    run_anchor(a, {"mode": "inputs", "count": REQUESTS * PER_REQUEST, "tokens": TOKENS, "out": inputs}, work)
    with open(inputs) as f:
        texts = json.load(f)
    print(f"[bench] {len(texts)} inputs of {TOKENS} tokens; {a.threads} threads", file=sys.stderr)
    runs = {}
    for outtype in a.outtypes.split(","):
        gguf = os.path.join(work, f"minilm-{outtype}.gguf")
        subprocess.run([a.flywheel, "convert", a.minilm_dir, "-o", gguf, "--outtype", outtype], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        runs[outtype] = run_flywheel(a, gguf, texts, work)
        print(f"[bench] flywheel ({outtype}): {runs[outtype]['inputs_per_s']:.1f} inputs/s", file=sys.stderr)
    st = run_anchor(a, {"mode": "encode", "inputs": inputs, "seconds": a.seconds}, work)
    print(f"[bench] sentence-transformers: {st['inputs_per_s']:.1f} inputs/s", file=sys.stderr)
    reference = st.pop("vectors")
    ratios = {}
    for outtype, fw in runs.items():
        cos = cosines(fw.pop("vectors"), reference)
        fw["cosine_to_sentence_transformers"] = {"min": round(min(cos), 5), "mean": round(sum(cos) / len(cos), 5)}
        suffix = "" if outtype == "f32" else f"_{outtype}"
        ratios[f"embeddings_inputs_per_s_over_sentence_transformers{suffix}"] = \
            round(fw["inputs_per_s"] / st["inputs_per_s"], 2)
    result = {
        "machine": cpu_model(),
        "workload": {"requests": REQUESTS, "inputs_per_request": PER_REQUEST, "tokens_per_input": TOKENS,
                     "threads": a.threads, "slots": a.slots, "step_tokens": a.step_tokens},
        "flywheel": runs, "sentence_transformers": st, "ratios": ratios,
    }
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"{result['machine']}\n| target | inputs/s | ratio | cosine to sentence-transformers (min / mean of {len(texts)}) |")
    print("|---|---|---|---|")
    for outtype, fw in runs.items():
        c = fw["cosine_to_sentence_transformers"]
        print(f"| Flywheel, {outtype} weights (llama.cpp, {a.threads} threads) | {fw['inputs_per_s']:.1f} | "
              f"{fw['inputs_per_s'] / st['inputs_per_s']:.2f}x | {c['min']} / {c['mean']} |")
    print(f"| sentence-transformers, f32 (torch CPU, {a.threads} threads) | {st['inputs_per_s']:.1f} | 1 | — |")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
