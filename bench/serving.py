#!/usr/bin/env python3
"""Flywheel vs llama-server as servers: the same GGUF, threads, slots and total context, the same
chat workload over HTTP with streaming, one after the other in the same run.

Workload per concurrency level: N chat requests (prompt lengths 64-1,500 tokens, outputs
32-256 tokens, ignore_eos so both generate exactly the asked length), at most C in flight.
Reported per server: aggregate output tok/s, TTFT p50/p90, inter-token latency p50/p90; and the
Flywheel/llama-server ratio of each. Also `prefix`: R requests sharing a ~1,000-token system
prompt, TTFT of the first (cold) request vs the median of the rest, on both servers.

Standard library only. Writes JSON to --out and prints a markdown table.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time

from common import free_port, start_flywheel, stop, stream, wait_health

WORDS = ("time year people way day man thing woman life child world school state family "
         "student group country problem hand part place case week company system program "
         "question work government number night point home water room mother area money "
         "story fact month lot right study book eye job word business issue side kind head").split()


def text_of(rng, tokens):
    # Roughly one token per word for these common words.
    return " ".join(rng.choice(WORDS) for _ in range(tokens))


def chat_stream(port, model, messages, max_tokens):
    return stream(port, "/v1/chat/completions", {"model": model, "messages": messages,
                                                 "max_tokens": max_tokens, "temperature": 0,
                                                 "ignore_eos": True})


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def run_level(port, model, concurrency, n, seed):
    rng = random.Random(seed)
    jobs = [([{"role": "user", "content": f"{i}: " + text_of(rng, rng.randint(64, 1500))}],
             rng.randint(32, 256)) for i in range(n)]
    results, lock, idx = [], threading.Lock(), [0]

    def worker():
        while True:
            with lock:
                if idx[0] >= len(jobs):
                    return
                job = jobs[idx[0]]
                idx[0] += 1
            results.append(chat_stream(port, model, *job))

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    out_tokens = sum((u or {}).get("completion_tokens", 0) for _, _, u in results)
    ttft = [a[0] - t for t, a, _ in results if a]
    # Inter-token latency per request: time from first to last token over the tokens between
    # (tokens after end-of-sequence may stream no text, so count them by usage).
    itl = [(u["_end"] - arr[0]) / (u["completion_tokens"] - 1)
           for _, arr, u in results if arr and u and u.get("completion_tokens", 0) > 1]
    return {"concurrency": concurrency, "requests": n, "wall_s": wall,
            "output_tok_s": out_tokens / wall,
            "ttft_p50_s": pct(ttft, 50), "ttft_p90_s": pct(ttft, 90),
            "itl_p50_s": pct(itl, 50), "itl_p90_s": pct(itl, 90)}


def run_prefix(port, model, n, seed):
    rng = random.Random(seed)
    system = "You are a support assistant. Reference notes: " + text_of(rng, 1000)
    ttfts, cached = [], []
    for i in range(n):
        msgs = [{"role": "system", "content": system},
                {"role": "user", "content": f"Question {i}: " + text_of(rng, 12)}]
        t0, arr, usage = chat_stream(port, model, msgs, 4)
        ttfts.append(arr[0] - t0)
        details = (usage or {}).get("prompt_tokens_details") or {}
        cached.append(details.get("cached_tokens"))
    warm = ttfts[1:]
    return {"requests": n, "cold_ttft_s": ttfts[0], "warm_ttft_p50_s": pct(warm, 50),
            "warm_over_cold": pct(warm, 50) / ttfts[0], "cached_tokens_p50": pct([c or 0 for c in cached[1:]], 50)}


def start_llama_server(bin_dir, gguf, threads, slots, slot_ctx, work):
    port = free_port()
    log = os.path.join(work, "llama-server.log")
    args = [os.path.join(bin_dir, "llama-server"), "-m", gguf, "--host", "127.0.0.1", "--port", str(port),
            "-t", str(threads), "-tb", str(threads), "-c", str(slots * slot_ctx), "-np", str(slots),
            "-kvu", "-b", "512", "-ub", "512", "--jinja", "--no-webui"]
    proc = subprocess.Popen(args, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    wait_health(port, proc, log)
    return proc, port, args[1:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--flywheel", required=True)
    ap.add_argument("--anchors", required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--levels", default="1,4,16,32")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--prefix-requests", type=int, default=200)
    ap.add_argument("--slots", type=int, default=32)
    ap.add_argument("--slot-context", type=int, default=2048)
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    levels = [int(x) for x in a.levels.split(",") if x]
    report = {"model": a.name, "gguf": os.path.basename(a.model), "threads": a.threads,
              "slots": a.slots, "slot_context": a.slot_context, "levels": {}, "prefix": {}}
    for server in ("flywheel", "llama-server"):
        if server == "flywheel":
            proc, port = start_flywheel(a.flywheel, a.model, a.threads, a.slots, a.slot_context, a.work)
        else:
            proc, port, args = start_llama_server(a.anchors, a.model, a.threads, a.slots, a.slot_context, a.work)
            report["llama_server_args"] = args
        try:
            chat_stream(port, "m", [{"role": "user", "content": "warm up"}], 4)
            for c in levels:
                r = run_level(port, "m", c, max(a.requests, c), seed=c)
                report["levels"].setdefault(str(c), {})[server] = r
                print(f"[serving] {a.name} {server} c={c}: {r['output_tok_s']:.1f} out tok/s, "
                      f"TTFT p50 {r['ttft_p50_s']:.2f}s", file=sys.stderr)
            if a.prefix_requests:
                report["prefix"][server] = run_prefix(port, "m", a.prefix_requests, seed=7)
        finally:
            stop(proc)
    print(f"| {a.name} | c | out tok/s FW / LS (ratio) | TTFT p50 FW / LS (ratio) | TTFT p90 ratio | ITL p50 FW / LS (ratio) | ITL p90 ratio |")
    print("|---|---|---|---|---|---|---|")
    for c, pair in report["levels"].items():
        f, l = pair["flywheel"], pair["llama-server"]
        ratio = {k: f[k] / l[k] if l[k] else None for k in
                 ("output_tok_s", "ttft_p50_s", "ttft_p90_s", "itl_p50_s", "itl_p90_s")}
        pair["ratio"] = ratio
        print(f"| {a.name} | {c} | {f['output_tok_s']:.1f} / {l['output_tok_s']:.1f} ({ratio['output_tok_s']:.2f}) "
              f"| {f['ttft_p50_s']*1000:.0f} / {l['ttft_p50_s']*1000:.0f} ms ({ratio['ttft_p50_s']:.2f}) "
              f"| {ratio['ttft_p90_s']:.2f} | {f['itl_p50_s']*1000:.1f} / {l['itl_p50_s']*1000:.1f} ms "
              f"({ratio['itl_p50_s']:.2f}) | {ratio['itl_p90_s']:.2f} |")
    if report["prefix"]:
        f, l = report["prefix"]["flywheel"], report["prefix"]["llama-server"]
        report["prefix"]["ratio"] = {"warm_ttft_p50": f["warm_ttft_p50_s"] / l["warm_ttft_p50_s"]}
        print(f"\nprefix reuse ({a.prefix_requests} requests, ~1,000-token shared system prompt): "
              f"Flywheel warm/cold TTFT {f['warm_over_cold']:.3f} ({f['warm_ttft_p50_s']*1000:.0f} vs "
              f"{f['cold_ttft_s']*1000:.0f} ms, cached {f['cached_tokens_p50']}); llama-server warm/cold "
              f"{l['warm_over_cold']:.3f} ({l['warm_ttft_p50_s']*1000:.0f} vs {l['cold_ttft_s']*1000:.0f} ms); "
              f"warm TTFT ratio FW/LS {report['prefix']['ratio']['warm_ttft_p50']:.2f}")
    with open(a.out, "w") as fh:
        json.dump(report, fh, indent=2)


if __name__ == "__main__":
    sys.exit(main())
