#!/usr/bin/env python3
"""Engine vs llama.cpp's own tools, same GGUF, same threads, same run.

Flywheel is measured through its HTTP API (streaming, as users see it):
  - single-stream decode tok/s: one request, 128 tokens generated (ignore_eos), rate between the
    first and the last streamed token — compared with `llama-bench -n 128` (tg128);
  - 16-stream aggregate: 16 concurrent requests of ~PP prompt tokens each generating TG tokens;
    (prompt + generated tokens) / wall time — compared with `llama-batched-bench` doing the same
    work (-npp PP -ntg TG -npl 16, unified KV), whose figure excludes HTTP, tokenizing and
    scheduling.
Only the standard library is used. Writes bench/results/engine-<model>.json and prints a table.
"""

import argparse
import http.client
import json
import os
import platform
import re
import socket
import subprocess
import sys
import threading
import time

PP = 128
TG = 128
STREAMS = 16


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stream_completion(port, prompt, max_tokens):
    """POST a streaming completion; returns (t_start, [token arrival times], usage)."""
    body = json.dumps({
        "model": "m", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
        "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True},
    })
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"content-type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
    arrivals, usage = [], None
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[6:])
        if event.get("usage"):
            usage = event["usage"]
            usage["_end"] = time.perf_counter()
        if event.get("choices") and event["choices"][0].get("text"):
            arrivals.append(time.perf_counter())
    conn.close()
    return t0, arrivals, usage


def prompt_of(i, words):
    # Distinct from the first token on, so no request reuses another's prefix.
    return f"{i} " + " ".join(f"w{(i * 7919 + k) % 997}" for k in range(words))


def flywheel(bin_path, model, threads, data_dir):
    port = free_port()
    log = open(os.path.join(data_dir, "flywheel.log"), "w")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env["FLYWHEEL_ADMIN_KEY"] = "bench-admin-key-0123456789"
    proc = subprocess.Popen(
        [bin_path, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir,
         "--model", f"{model}=m", "--slots", str(STREAMS), "--slot-context", "1024",
         "--threads", str(threads), "--step-tokens", "512"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 120
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError(f"flywheel did not start; see {log.name}")
            time.sleep(0.3)
        # Calibrate the prompt to ~PP tokens, and warm up.
        words = PP
        _, _, usage = stream_completion(port, prompt_of(999, words), 2)
        words = max(8, int(words * PP / usage["prompt_tokens"]))
        # Single stream.
        # Tokens after end-of-sequence may render as no text, so count tokens by usage and time
        # from the first token to the end of the stream.
        _, arr, usage = stream_completion(port, prompt_of(1000, words), TG)
        single = (usage["completion_tokens"] - 1) / (usage["_end"] - arr[0])
        # 16 streams at once.
        results = [None] * STREAMS
        def run(i):
            results[i] = stream_completion(port, prompt_of(i, words), TG)
        threads_ = [threading.Thread(target=run, args=(i,)) for i in range(STREAMS)]
        t0 = time.perf_counter()
        for t in threads_:
            t.start()
        for t in threads_:
            t.join()
        wall = time.perf_counter() - t0
        prompt_tokens = sum(r[2]["prompt_tokens"] for r in results)
        gen_tokens = sum(r[2]["completion_tokens"] for r in results)
        cached = sum(r[2]["prompt_tokens_details"]["cached_tokens"] for r in results)
        ttfts = sorted(r[1][0] - r[0] for r in results)
        return {
            "single_stream_decode_tok_s": single,
            "multi_total_tok_s": (prompt_tokens + gen_tokens) / wall,
            "multi_output_tok_s": gen_tokens / wall,
            "multi_wall_s": wall,
            "multi_prompt_tokens": prompt_tokens,
            "multi_generated_tokens": gen_tokens,
            "multi_cached_tokens": cached,
            "multi_ttft_p50_s": ttfts[len(ttfts) // 2],
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def llama_bench(bin_dir, model, threads):
    out = subprocess.run(
        [os.path.join(bin_dir, "llama-bench"), "-m", model, "-t", str(threads), "-p", "0",
         "-n", str(TG), "-r", "3", "-o", "json"],
        capture_output=True, text=True, check=True).stdout
    rows = json.loads(out)
    return rows[0]["avg_ts"], rows[0].get("build_commit", "?")


def batched_bench(bin_dir, model, threads):
    out = subprocess.run(
        [os.path.join(bin_dir, "llama-batched-bench"), "-m", model, "-t", str(threads),
         "-c", str(STREAMS * 1024), "-b", "512", "-ub", "512", "-npp", str(PP), "-ntg", str(TG),
         "-npl", str(STREAMS), "-kvu", "--output-format", "jsonl"],
        capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("{") and '"pl"' in line:
            row = json.loads(line)
            return row
    raise RuntimeError("llama-batched-bench printed no result:\n" + out[-2000:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--flywheel", required=True)
    ap.add_argument("--anchors", required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    fw = flywheel(a.flywheel, a.model, a.threads, a.work)
    tg128, commit = llama_bench(a.anchors, a.model, a.threads)
    bb = batched_bench(a.anchors, a.model, a.threads)
    bb_total = bb["speed"]
    bb_tg = bb["speed_tg"]
    result = {
        "model": a.name, "gguf": os.path.basename(a.model), "threads": a.threads,
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "llama_cpp_anchor_commit": commit,
        "workload": {"prompt_tokens": PP, "generated_tokens": TG, "streams": STREAMS},
        "flywheel": fw,
        "llama_bench_tg128_tok_s": tg128,
        "llama_batched_bench": bb,
        "ratio": {
            "single_stream_decode_vs_llama_bench_tg128": fw["single_stream_decode_tok_s"] / tg128,
            "multi_total_vs_batched_bench_S": fw["multi_total_tok_s"] / bb_total,
        },
        "note": f"batched-bench S_TG (decode-only aggregate) = {bb_tg:.1f} tok/s",
    }
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
    r = result["ratio"]
    print(f"| {a.name} | single-stream decode | {fw['single_stream_decode_tok_s']:.1f} tok/s "
          f"| llama-bench tg128 {tg128:.1f} tok/s | {r['single_stream_decode_vs_llama_bench_tg128']:.2f} |")
    print(f"| {a.name} | {STREAMS} streams, {PP}+{TG} tokens each | {fw['multi_total_tok_s']:.1f} tok/s "
          f"({fw['multi_output_tok_s']:.1f} out) | llama-batched-bench S {bb_total:.1f} tok/s "
          f"(S_TG {bb_tg:.1f}) | {r['multi_total_vs_batched_bench_S']:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
