"""What bench/fleet.py is made of besides its sides and report: the day-shaped trace, the
serving processes it starts (and their CPU time), and the HTTP calls it makes. Standard library only."""

import http.client
import json
import math
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time

from common import ADMIN_KEY, free_port, wait_health
from serving import WORDS

SLO_S = 2.0
PEAK_OVER_VALLEY = 20
SHARPNESS = 3  # the day curve is ((1 + cos)/2)^SHARPNESS around each model's peak
# Peak requests/s at --load 1 and the peak's place in the day (fraction). The rates are for a
# 2-core machine: the valleys load it lightly, the busiest stretch (Gemma's peak, with the other
# two half up) a little over what it serves. `est_*`: rough per-request costs on 2 cores (prompt
# tok/s, batched decode tok/s) used only to print the trace's estimated load.
MODELS = [
    {"name": "smollm2-135m", "file": "SmolLM2-135M-Instruct.Q4_1.gguf", "peak_rps": 1.0, "phase": 0.30,
     "est_prefill": 800, "est_decode": 200},
    {"name": "gemma-3-270m", "file": "gemma-3-270m-q4_k_m.gguf", "peak_rps": 0.7, "phase": 0.45,
     "est_prefill": 500, "est_decode": 140},
    {"name": "qwen2.5-coder-0.5b", "file": "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf", "peak_rps": 0.35, "phase": 0.60,
     "est_prefill": 200, "est_decode": 80},
]
BATCH_MODEL = "smollm2-135m"
TENANTS = ("fleet-tenant-a", "fleet-tenant-b")
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
TASKS = ("Summarize these notes in two sentences:", "Write a short reply to this message:",
         "Explain in plain words what this is about:", "List three ideas these words suggest:",
         "Answer briefly. Which of these words matter most, and why?", "Turn these notes into a short plan:")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROCS = []  # every process this script started, stopped in `finally`


def log(msg):
    print(f"[fleet] {msg}", file=sys.stderr, flush=True)


# --- the trace --------------------------------------------------------------------------------

def rate(m, x, load):
    """Requests/s of model m at fraction x of the day."""
    peak = m["peak_rps"] * load
    valley = peak / PEAK_OVER_VALLEY
    g = ((1 + math.cos(2 * math.pi * (x - m["phase"]))) / 2) ** SHARPNESS
    return valley + (peak - valley) * g


def make_trace(day_s, load, seed):
    """Requests sorted by send time: non-homogeneous Poisson arrivals per model (thinning)."""
    rng = random.Random(seed)
    reqs = []
    for mi, m in enumerate(MODELS):
        top = m["peak_rps"] * load
        t = 0.0
        while True:
            t += rng.expovariate(top)
            if t >= day_s:
                break
            if rng.random() * top <= rate(m, t / day_s, load):
                reqs.append({"t": t, "model": mi})
    reqs.sort(key=lambda r: (r["t"], r["model"]))
    for i, r in enumerate(reqs):
        words = rng.randint(30, 300)
        content = f"{rng.choice(TASKS)} " + " ".join(rng.choice(WORDS) for _ in range(words))
        r.update(id=i, tenant=rng.randrange(len(TENANTS)), words=words, max_tokens=rng.randint(32, 128),
                 messages=[SYSTEM, {"role": "user", "content": content}])
    return reqs


def batch_lines(n, seed):
    rng = random.Random(seed + 1_000_003)
    out = []
    for i in range(n):
        content = f"{rng.choice(TASKS)} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 300)))
        out.append({"custom_id": f"line-{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": BATCH_MODEL, "temperature": 0, "max_tokens": rng.randint(32, 128),
                             "messages": [SYSTEM, {"role": "user", "content": content}]}})
    return out


def est_cost(m, r):
    """Rough seconds of the whole 2-core machine one request takes (prompt ~ words + 30)."""
    return (r["words"] + 30) / m["est_prefill"] + 0.8 * r["max_tokens"] / m["est_decode"]


def describe_trace(trace, day_s, load):
    buckets = 40
    width = day_s / buckets
    load_per_bucket = [0.0] * buckets
    per_model = {m["name"]: {"requests": 0, "max_tokens_sum": 0, "prompt_words_sum": 0} for m in MODELS}
    for r in trace:
        m = MODELS[r["model"]]
        pm = per_model[m["name"]]
        pm["requests"] += 1
        pm["max_tokens_sum"] += r["max_tokens"]
        pm["prompt_words_sum"] += r["words"]
        load_per_bucket[min(buckets - 1, int(r["t"] / width))] += est_cost(m, r) / width
    rates = {m["name"]: {"peak_rps": m["peak_rps"] * load, "valley_rps": m["peak_rps"] * load / PEAK_OVER_VALLEY,
                         "peak_at_fraction_of_day": m["phase"]} for m in MODELS}
    return {"requests": len(trace), "per_model": per_model, "rates": rates,
            "max_tokens_sum": sum(r["max_tokens"] for r in trace),
            "est_machine_load_max": max(load_per_bucket), "est_machine_load_min": min(load_per_bucket),
            "est_machine_load_mean": sum(load_per_bucket) / buckets}


# --- processes --------------------------------------------------------------------------------

def cpu_seconds(pid):
    """utime + stime of a process (all its threads, living and exited), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def spawn(args, log_path, env=None):
    out = open(log_path, "ab")
    out.write(("$ " + " ".join(args) + "\n").encode())
    out.flush()
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    PROCS.append(proc)
    return proc


def stop_all(grace=30):
    """SIGTERM to every process this script started (by their Popen, never by name), then
    SIGKILL to those still up after `grace` seconds."""
    procs = [p for p in PROCS if p.poll() is None]
    PROCS.clear()
    for p in procs:
        p.terminate()
    deadline = time.time() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


# Extra llama-server arguments (--llama-server-args, and --no-repack after a crash at start).
LLAMA_EXTRA = []


def start_llama_server(bin_dir, gguf, threads, slots, ctx, log_path):
    port = free_port()
    args = [os.path.join(bin_dir, "llama-server"), "-m", gguf, "--host", "127.0.0.1", "--port", str(port),
            "-t", str(threads), "-tb", str(threads), "-c", str(slots * ctx), "-np", str(slots), "-kvu",
            "-b", "512", "-ub", "512", "--jinja", "--no-webui", *LLAMA_EXTRA]
    proc = spawn(args, log_path)
    try:
        wait_health(port, proc, log_path, timeout=300)
    except RuntimeError:
        # On CPUs with AMX (Intel Sapphire Rapids and later) the anchor, built with
        # GGML_NATIVE=ON, can die with SIGSEGV in ggml_backend_amx_mul_mat at its warm-up
        # decode. --no-repack keeps llama.cpp off its extra buffer types (AMX and the repacked
        # layouts): slower, but it runs. Recorded in the JSON (config.llama_server_extra_args).
        if proc.poll() != -signal.SIGSEGV or "--no-repack" in LLAMA_EXTRA:
            raise
        log(f"llama-server died with SIGSEGV at start (see {log_path}); every llama-server of this run "
            "gets --no-repack from now on (no AMX or repacked weights: a slower anchor)")
        PROCS.remove(proc)
        LLAMA_EXTRA.append("--no-repack")
        return start_llama_server(bin_dir, gguf, threads, slots, ctx, log_path)
    return proc, port, args[1:]


def start_flywheel(bin_path, work, node_threads, node_memory_mib, extra, log_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(FLYWHEEL_ADMIN_KEY=ADMIN_KEY, NO_COLOR="1")
    env.setdefault("RUST_LOG", "info")
    args = [bin_path, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", os.path.join(work, "data"),
            "--node-threads", str(node_threads), "--node-memory-mib", str(node_memory_mib), "--drain-seconds", "5",
            *extra]
    proc = spawn(args, log_path, env)
    wait_health(port, proc, log_path, timeout=300)
    return proc, port, args[1:]


# --- HTTP -------------------------------------------------------------------------------------

def call(port, method, path, body=None, key=ADMIN_KEY, ctype="application/json", timeout=60, raw=False):
    """(status, decoded JSON or bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body)
        c.request(method, path, data, {"content-type": ctype, "authorization": f"Bearer {key}"})
        r = c.getresponse()
        payload = r.read()
    finally:
        c.close()
    if raw:
        return r.status, payload
    try:
        return r.status, json.loads(payload) if payload else None
    except ValueError:
        return r.status, payload


def ok(port, method, path, body=None, expect=(200, 201), **kw):
    status, data = call(port, method, path, body, **kw)
    if status not in expect:
        raise RuntimeError(f"{method} {path}: HTTP {status}: {str(data)[:400]}")
    return data


def error_code(payload):
    try:
        err = json.loads(payload)["error"]
        return err.get("code") or err.get("type") or "?"
    except (ValueError, KeyError, TypeError, AttributeError):
        return "unparsed"


def stream_chat(port, model, key, req, timeout):
    """One streamed chat completion; fills and returns a result dict (times relative to send)."""
    res = {"ttft": None, "tokens": 0, "error": None, "end": None}
    body = {"model": model, "messages": req["messages"], "max_tokens": req["max_tokens"], "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body),
                     {"content-type": "application/json", "authorization": f"Bearer {key}"})
        resp = conn.getresponse()
        if resp.status != 200:
            res["error"] = f"http {resp.status} {error_code(resp.read(4000))}"
            return res
        usage, chunks, finished = None, 0, False
        for raw in resp:
            line = raw.decode(errors="replace").strip()
            if not line.startswith("data: "):
                continue  # blank lines, `: queue position=…` comments
            if line == "data: [DONE]":
                finished = True
                break
            ev = json.loads(line[6:])
            if ev.get("error"):
                res["error"] = f"stream {error_code(line[6:])}"
                break
            if ev.get("usage"):
                usage = ev["usage"]
            for ch in ev.get("choices") or []:
                if (ch.get("delta") or {}).get("content"):
                    chunks += 1
                    if res["ttft"] is None:
                        res["ttft"] = time.perf_counter() - t0
                if ch.get("finish_reason"):
                    finished = True
        res["tokens"] = (usage or {}).get("completion_tokens", chunks)
        if not finished and not res["error"]:
            res["error"] = "stream cut"
    except socket.timeout:
        res["error"] = "client timeout"
    except (OSError, http.client.HTTPException, ValueError) as e:
        res["error"] = f"connection {type(e).__name__}"
    finally:
        conn.close()
        res["end"] = time.perf_counter() - t0
    return res


def multipart(fields, file_field, filename, data):
    boundary = "fleet" + secrets.token_hex(12)
    out = []
    for k, v in fields.items():
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{filename}"\r\n'
               f"Content-Type: application/jsonl\r\n\r\n".encode() + data + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"
