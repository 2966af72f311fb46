#!/usr/bin/env python3
"""Engine vs llama.cpp's own tools, same GGUF, same threads, same run.

Flywheel is measured through its HTTP API (streaming, as users see it):
  - single-stream decode tok/s: one request with a one-word prompt, 128 tokens generated
    (ignore_eos), rate between the first and the last streamed token — compared with
    `llama-bench -n 128` (tg128, which starts from an empty KV cache too);
  - 16-stream aggregate: 16 concurrent requests of ~PP prompt tokens each generating TG tokens;
    (prompt + generated tokens) / wall time — compared with `llama-batched-bench` doing the same
    work (-npp PP -ntg TG -npl 16, unified KV), whose figure excludes HTTP, tokenizing and
    scheduling.
Only the standard library is used. Writes bench/results/engine-<model>.json and prints a table.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time

from common import start_flywheel, stop, stream

PP = 128
TG = 128
STREAMS = 16


def stream_completion(port, prompt, max_tokens):
    return stream(port, "/v1/completions", {"model": "m", "prompt": prompt, "max_tokens": max_tokens,
                                            "temperature": 0, "ignore_eos": True})


def prompt_of(i, words):
    # Distinct from the first token on, so no request reuses another's prefix.
    return f"{i} " + " ".join(f"w{(i * 7919 + k) % 997}" for k in range(words))


def flywheel(bin_path, model, threads, data_dir):
    proc, port = start_flywheel(bin_path, model, threads, STREAMS, 1024, data_dir)
    try:
        # Calibrate the prompt to ~PP tokens, and warm up.
        words = PP
        _, _, usage = stream_completion(port, prompt_of(999, words), 2)
        words = max(8, int(words * PP / usage["prompt_tokens"]))
        # Single stream.
        # Tokens after end-of-sequence may render as no text, so count tokens by usage and time
        # from the first token to the end of the stream.
        # A one-word prompt, so the KV depth matches tg128's (0 → 128 tokens).
        _, arr, usage = stream_completion(port, prompt_of(1000, 1), TG)
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
        stop(proc)


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
