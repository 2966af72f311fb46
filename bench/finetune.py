#!/usr/bin/env python3
"""Fine-tuning, side by side in one run (issue 22):

1. Training: `flywheel finetune` (candle on CPU) and PyTorch + peft (bench/finetune_torch.py, its
   own venv) train the same rank-8 LoRA on attention q and v of SmolLM2-135M, on the code-word
   data of the e2e tests (one epoch, batch 4, examples cut at 64 tokens, same threads): training
   tokens/s and wall time per epoch. Goal: Flywheel >= 1.0x PyTorch's tokens/s.
2. The format: llama.cpp's own llama-server (the anchor build) loads Flywheel's adapter with
   `--lora` and answers the held-out questions; its answers are compared with Flywheel's serving
   of the same adapter (temperature 0).
3. Serving: output tok/s of 16 streams, half of them to the fine-tuned model and half to its base,
   against 16 streams to the base alone, on one server. Goal: >= 0.8x.

Writes bench/results/finetune.json."""

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import ADMIN_KEY, free_port, stop, stream, wait_health  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "..", "crates", "finetune", "tests", "data")


def heldout():
    with open(os.path.join(DATA, "codeword-heldout.txt")) as f:
        return [line.strip() for line in f if line.strip()]


def train_flywheel(a, out):
    args = [a.flywheel, "finetune", "--model", a.model, "--training-file", os.path.join(DATA, "codeword-train.jsonl"),
            "--output", out, "--epochs", "1", "--batch-size", "4", "--rank", "8", "--alpha", "16",
            "--learning-rate", "0.002", "--seed", "1", "--max-tokens", "64", "--threads", str(a.threads),
            "--checkpoint-every", "100000"]
    started = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    steps = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    last = steps[-1]
    # The training loop's own time (the trainer's tokens/s), beside the process's wall time.
    loop = last["tokens_seen"] / max(last["tokens_per_s"], 1e-9)
    return {"steps": last["step"], "tokens_seen": last["tokens_seen"], "seconds": round(loop, 2),
            "wall_seconds": round(seconds, 2), "tokens_per_s": round(last["tokens_per_s"], 1), "first_loss": round(steps[0]["train_loss"], 4),
            "last_loss": round(last["train_loss"], 4)}


def train_torch(a):
    done = subprocess.run([a.python, os.path.join(os.path.dirname(__file__), "finetune_torch.py"), "--gguf", a.model,
                           "--data", os.path.join(DATA, "codeword-train.jsonl"), "--threads", str(a.threads)],
                          capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def chat(port, model, q, max_tokens=24):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    body = {"model": model, "temperature": 0, "max_tokens": max_tokens, "messages": [{"role": "user", "content": q}]}
    c.request("POST", "/v1/chat/completions", json.dumps(body),
              {"content-type": "application/json", "authorization": f"Bearer {ADMIN_KEY}"})
    r = c.getresponse()
    text = r.read()
    if r.status != 200:
        raise RuntimeError(f"{r.status}: {text[:300]!r}")
    return json.loads(text)["choices"][0]["message"]["content"]


def serve_flywheel(a, adapter, work):
    port = free_port()
    log = os.path.join(work, "flywheel.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env["FLYWHEEL_ADMIN_KEY"] = ADMIN_KEY
    proc = subprocess.Popen([a.flywheel, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir",
                             os.path.join(work, "fw-data"), "--model", f"{a.model}=base",
                             "--model", f"{a.model}+lora:{adapter}=tuned", "--slots", "16", "--slot-context", "1024",
                             "--threads", str(a.threads), "--node-threads", str(2 * a.threads)],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
    wait_health(port, proc, log)
    return proc, port


def throughput(port, models, requests=32, concurrency=16, max_tokens=64):
    qs = heldout() + ["Write a short poem about the sea.", "Name three fruits.", "What is 12 times 7?"]
    jobs = [(models[i % len(models)], qs[i % len(qs)]) for i in range(requests)]

    def one(job):
        model, q = job
        _, _, usage = stream(port, "/v1/chat/completions", {"model": model, "temperature": 0, "max_tokens": max_tokens,
                                                            "messages": [{"role": "user", "content": q}]})
        return usage["completion_tokens"]

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        tokens = sum(pool.map(one, jobs))
    seconds = time.monotonic() - started
    return {"requests": requests, "concurrency": concurrency, "output_tokens": tokens, "seconds": round(seconds, 2),
            "output_tok_s": round(tokens / seconds, 2)}


def llama_server_answers(a, adapter, work):
    port = free_port()
    log = os.path.join(work, "llama-server.log")
    proc = subprocess.Popen([os.path.join(a.anchors, "llama-server"), "-m", a.model, "--lora", adapter, "--port",
                             str(port), "--host", "127.0.0.1", "-t", str(a.threads), "-c", "2048", "-np", "1"],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        wait_health(port, proc, log)
        return [chat(port, "tuned", q) for q in heldout()]
    finally:
        stop(proc)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flywheel", required=True)
    ap.add_argument("--model", required=True, help="SmolLM2-135M-Instruct GGUF")
    ap.add_argument("--python", required=True, help="a venv's python with torch, transformers, peft, gguf")
    ap.add_argument("--anchors", required=True, help="the directory holding llama-server")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/fw-bench-finetune")
    ap.add_argument("--out", default="bench/results/finetune.json")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    adapter = os.path.join(a.work, "codeword.gguf")

    print("[bench] training with flywheel finetune", file=sys.stderr)
    fw = train_flywheel(a, adapter)
    print(f"[bench] flywheel: {fw}", file=sys.stderr)
    print("[bench] training with PyTorch + peft", file=sys.stderr)
    pt = train_torch(a)
    print(f"[bench] pytorch: {pt}", file=sys.stderr)

    print("[bench] serving the adapter (flywheel) and llama-server --lora", file=sys.stderr)
    proc, port = serve_flywheel(a, adapter, a.work)
    try:
        ours = [chat(port, "tuned", q) for q in heldout()]
        base_only = throughput(port, ["base"])
        mixed = throughput(port, ["tuned", "base"])
    finally:
        stop(proc)
    theirs = llama_server_answers(a, adapter, a.work)

    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} vCPU",
        "threads": a.threads,
        "model": os.path.basename(a.model),
        "job": "rank 8, alpha 16, attention q and v, 1 epoch of crates/finetune/tests/data/codeword-train.jsonl, "
               "batch 4, examples cut at 64 tokens, AdamW lr 2e-3",
        "training": {"flywheel": fw, "pytorch_peft": pt},
        "llama_server_lora": {
            "flywheel_answers": ours, "llama_server_answers": theirs,
            "same": sum(x == y for x, y in zip(ours, theirs)), "of": len(ours),
            "llama_server_knows_the_fact": sum("PLUMTREE-42" in x for x in theirs),
        },
        "serving_16_streams": {"base_only": base_only, "half_fine_tuned": mixed},
        "ratios": {
            "training_tok_s_flywheel_over_pytorch": round(fw["tokens_per_s"] / pt["tokens_per_s"], 2),
            "epoch_seconds_pytorch_over_flywheel": round(pt["seconds"] / fw["seconds"], 2),
            "mixed_over_base_only_tok_s": round(mixed["output_tok_s"] / base_only["output_tok_s"], 2),
        },
    }
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    r = result["ratios"]
    print("| figure | Flywheel | anchor | ratio |")
    print("|---|---|---|---|")
    print(f"| training tok/s (1 epoch) | {fw['tokens_per_s']} | {pt['tokens_per_s']} (PyTorch+peft) | "
          f"{r['training_tok_s_flywheel_over_pytorch']}x |")
    print(f"| seconds per epoch (training loop) | {fw['seconds']} | {pt['seconds']} | "
          f"{r['epoch_seconds_pytorch_over_flywheel']}x faster |")
    print(f"| 16 streams, half fine-tuned, output tok/s | {mixed['output_tok_s']} | {base_only['output_tok_s']} "
          f"(base only) | {r['mixed_over_base_only_tok_s']}x |")
    ls = result["llama_server_lora"]
    print(f"| llama-server --lora answers equal Flywheel's | {ls['same']}/{ls['of']} | "
          f"knows the fact {ls['llama_server_knows_the_fact']}/{ls['of']} | |")


if __name__ == "__main__":
    main()
