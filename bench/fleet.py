#!/usr/bin/env python3
"""The elastic fleet, in figures (issues 25 point 7 and 19): a day of chat traffic on three
models, compressed to --minutes, replayed against a static fleet and against Flywheel's elastic
deployments, one after the other on the same machine.

Trace (seeded, generated here): SmolLM2-135M, Gemma 3 270M and Qwen2.5-Coder-0.5B; per model a
request rate that follows a day curve (peak = 20 x valley, the three peaks staggered), Poisson
arrivals; each request a streamed chat completion at temperature 0, a short varied user prompt
(30-300 words) and max_tokens 32-128, from one of two tenants picked at random.

Sides:
  static          one llama-server per model, each sized for its peak (-np = max_replicas x
                  slots_per_replica, -c = slots x context, -t = nproc), all up for the whole run;
                  with --batch-lines, one more llama-server (the separate static batch replica)
                  runs the batch's lines at its slots' concurrency during the replay (or after
                  it: --static-batch after).
  flywheel        one `flywheel serve --node-threads nproc`, three deployments (min_replicas 0)
                  through the admin API, requests with tenant keys (metering on).
  flywheel-batch  the same, and a batch of --batch-lines chat lines for SmolLM2 submitted through
                  the Files and Batches API at the start of the replay (--batch-window-max = the
                  replay's length), polled to the end.

Figures per side: core-seconds (utime + stime of every serving process, all threads, from
/proc/PID/stat) from the start to the end of the replay per 1M output tokens; the fraction of
requests with TTFT <= 2 s (refused and failed requests miss it); TTFT p50/p90/p99; errors by
kind; Flywheel's replicas over time and scale events. Goals: Flywheel core-s/1M tokens <= 0.6x
the static fleet's at an equal or better SLO fraction; with the batch: the batch completes in
its window, interactive TTFT p99 <= 1.1x the run without it, the day's core-s per 1M tokens
(interactive + batch) <= 0.7x the static fleet with a separate batch replica.

Standard library only. Writes JSON to --out and prints markdown tables. Not part of CI:
bench/run fleet.
"""

import argparse
import datetime
import http.client
import json
import math
import os
import platform
import resource
import signal
import subprocess
import sys
import threading
import time

from serving import pct
from fleet_parts import (
    SLO_S,
    PEAK_OVER_VALLEY,
    SHARPNESS,
    MODELS,
    BATCH_MODEL,
    TENANTS,
    SYSTEM,
    log,
    make_trace,
    batch_lines,
    describe_trace,
    cpu_seconds,
    rss_mib,
    stop_all,
    LLAMA_EXTRA,
    start_llama_server,
    start_flywheel,
    call,
    ok,
    stream_chat,
    multipart,
)


# --- one side's replay ------------------------------------------------------------------------

class Replay:
    """Sends the trace on time (one thread per request), samples CPU (and Flywheel's replicas),
    prints progress; bounded by the day plus --drain-s."""

    def __init__(self, side, trace, day_s, target, pids, a, poll_replicas=None, batch=None):
        self.side, self.trace, self.day_s, self.target, self.a = side, trace, day_s, target, a
        self.pids = pids  # {"interactive": [pid...], "batch": [pid...]} or {"all": [pid]}
        self.poll_replicas, self.batch = poll_replicas, batch
        self.results = [None] * len(trace)
        self.sent = 0
        self.lock = threading.Lock()
        self.samples = []  # (t, {group: cpu seconds}) every tick
        self.replicas = []  # (t, {deployment: {"ready", "loading", "draining", "queue", "in_flight"}})
        self.stop_monitor = threading.Event()

    def cpu(self):
        out = {}
        for group, pids in self.pids.items():
            vals = [cpu_seconds(p) for p in pids]
            out[group] = sum(v for v in vals if v is not None)
        return out

    def one(self, i):
        r = self.trace[i]
        port, model, key = self.target(r)
        sent_at = time.perf_counter() - self.t0
        res = stream_chat(port, model, key, r, self.a.request_timeout_s)
        res["sent_at"] = sent_at
        with self.lock:
            if self.results[i] is None:  # not after the drain deadline marked it unfinished
                self.results[i] = res

    def done(self):
        with self.lock:
            return sum(1 for x in self.results if x is not None)

    def errors(self):
        with self.lock:
            return sum(1 for x in self.results if x is not None and x["error"])

    def monitor(self):
        last_print = 0.0
        while not self.stop_monitor.is_set():
            now = time.perf_counter() - self.t0
            self.samples.append((now, self.cpu()))
            reps = None
            if self.poll_replicas:
                try:
                    reps = self.poll_replicas()
                    self.replicas.append((now, reps))
                except Exception as e:  # a sampler: log and go on
                    log(f"{self.side}: polling deployments failed: {e!r}")
            if self.batch:
                try:
                    self.batch.poll(now)
                except Exception as e:
                    log(f"{self.side}: polling the batch failed: {e!r}")
            if now - last_print >= self.a.progress_s:
                last_print = now
                cpu = sum(self.samples[-1][1].values()) - sum(self.samples[0][1].values())
                rep = ""
                if reps:
                    rep = ", replicas " + " ".join(
                        f"{n.split('-')[0]}={v['ready']}{'+%d' % v['loading'] if v['loading'] else ''}"
                        f"{' q%d' % v['queue'] if v['queue'] else ''}" for n, v in reps.items())
                bat = f", batch {self.batch.progress()}" if self.batch else ""
                log(f"{self.side}: {now:.0f}/{self.day_s:.0f} s, sent {self.sent}/{len(self.trace)}, "
                    f"done {self.done()}, errors {self.errors()}, cpu {cpu:.0f} s{rep}{bat}")
            self.stop_monitor.wait(self.a.sample_s)

    def run(self):
        self.t0 = time.perf_counter()
        self.cpu0 = self.cpu()
        mon = threading.Thread(target=self.monitor, daemon=True)
        mon.start()
        try:
            return self.replay(mon)
        finally:
            self.stop_monitor.set()  # also when interrupted

    def replay(self, mon):
        if self.batch:
            self.batch.start(self.t0)
        threads = []
        for i, r in enumerate(self.trace):
            delay = self.t0 + r["t"] - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            th = threading.Thread(target=self.one, args=(i,), daemon=True)
            th.start()
            threads.append(th)
            self.sent += 1
        # Drain: the requests still running, at most --drain-s past the end of the day.
        deadline = self.t0 + self.day_s + self.a.drain_s
        for th in threads:
            th.join(max(0.0, deadline - time.perf_counter()))
        interactive_end = time.perf_counter() - self.t0
        cpu_interactive_end = self.cpu()
        with self.lock:
            for i, x in enumerate(self.results):
                if x is None:
                    self.results[i] = {"ttft": None, "tokens": 0, "error": "unfinished at the drain deadline",
                                       "end": None, "sent_at": self.trace[i]["t"]}
        batch_end = None
        if self.batch:
            self.batch.finish(self.t0 + self.day_s + self.a.batch_grace_s)
            batch_end = time.perf_counter() - self.t0
        cpu_end = self.cpu()
        self.stop_monitor.set()
        mon.join(timeout=30)
        return {"interactive_end_s": interactive_end, "batch_end_s": batch_end,
                "cpu_at_start": self.cpu0, "cpu_at_interactive_end": cpu_interactive_end, "cpu_at_end": cpu_end}


def summarize(trace, results):
    def block(idx):
        n = len(idx)
        rs = [results[i] for i in idx]
        ttfts = [r["ttft"] for r in rs if r["ttft"] is not None and not r["error"]]
        good = sum(1 for r in rs if r["ttft"] is not None and r["ttft"] <= SLO_S and not r["error"])
        errors = {}
        for r in rs:
            if r["error"]:
                errors[r["error"]] = errors.get(r["error"], 0) + 1
        return {"requests": n, "ok": sum(1 for r in rs if not r["error"]),
                "slo_fraction": good / n if n else None,
                "ttft_p50_s": pct(ttfts, 50) if ttfts else None, "ttft_p90_s": pct(ttfts, 90) if ttfts else None,
                "ttft_p99_s": pct(ttfts, 99) if ttfts else None,
                "output_tokens": sum(r["tokens"] for r in rs), "errors": errors}
    out = block(range(len(trace)))
    out["per_model"] = {m["name"]: block([i for i, r in enumerate(trace) if r["model"] == mi])
                        for mi, m in enumerate(MODELS)}
    return out


def timeline(trace, results, samples, day_s, buckets=40):
    """Per stretch of the day: requests sent, SLO fraction, CPU core-seconds."""
    width = day_s / buckets
    rows = [{"from_s": round(b * width, 1), "sent": 0, "slo_ok": 0, "cpu_s": 0.0} for b in range(buckets)]
    for r, res in zip(trace, results):
        b = min(buckets - 1, int(r["t"] / width))
        rows[b]["sent"] += 1
        if res["ttft"] is not None and res["ttft"] <= SLO_S and not res["error"]:
            rows[b]["slo_ok"] += 1
    for (t1, c1), (t2, c2) in zip(samples, samples[1:]):
        b = int(t1 / width)
        if b < buckets:
            rows[b]["cpu_s"] += sum(c2.values()) - sum(c1.values())
    for row in rows:
        row["cpu_s"] = round(row["cpu_s"], 2)
    return rows


# --- batches ----------------------------------------------------------------------------------

class FlywheelBatch:
    """The backlog through the Files and Batches API, submitted at the replay's start."""

    def __init__(self, port, key, lines):
        self.port, self.key, self.lines = port, key, lines
        self.view, self.id, self.started, self.error = None, None, None, None
        self.history = []  # (t, status, completed, failed)

    def start(self, t0):
        self.t0 = t0
        data = ("\n".join(json.dumps(l) for l in self.lines) + "\n").encode()
        form, ctype = multipart({"purpose": "batch"}, "file", "fleet-batch.jsonl", data)
        try:
            f = ok(self.port, "POST", "/v1/files", form, key=self.key, ctype=ctype)
            self.view = ok(self.port, "POST", "/v1/batches", {"input_file_id": f["id"], "completion_window": "24h",
                                                              "endpoint": "/v1/chat/completions"}, key=self.key)
        except (RuntimeError, OSError, http.client.HTTPException) as e:
            self.error = str(e)
            log(f"flywheel-batch: the batch was not created: {e}")
            return
        self.id = self.view["id"]
        self.started = time.perf_counter() - t0
        log(f"flywheel-batch: batch {self.id} of {len(self.lines)} lines submitted ({self.view['status']})")

    def poll(self, now):
        if not self.id or self.terminal():
            return
        status, view = call(self.port, "GET", f"/v1/batches/{self.id}", key=self.key, timeout=30)
        if status == 200:
            self.view = view
            c = view.get("request_counts") or {}
            if not self.history or self.history[-1][1:] != (view["status"], c.get("completed"), c.get("failed")):
                self.history.append((round(now, 1), view["status"], c.get("completed"), c.get("failed")))

    def terminal(self):
        return bool(self.view) and self.view.get("status") in ("completed", "failed", "expired", "cancelled")

    def progress(self):
        c = (self.view or {}).get("request_counts") or {}
        return f"{(self.view or {}).get('status')} {c.get('completed', 0)}+{c.get('failed', 0)}/{len(self.lines)}"

    def finish(self, deadline):
        while self.id and not self.terminal() and time.perf_counter() < deadline:
            self.poll(time.perf_counter() - self.t0)
            time.sleep(2)
        self.poll(time.perf_counter() - self.t0)
        tokens, lines_ok = 0, 0
        fid = (self.view or {}).get("output_file_id")
        if fid:
            status, payload = call(self.port, "GET", f"/v1/files/{fid}/content", key=self.key, raw=True, timeout=120)
            if status == 200:
                for line in payload.decode(errors="replace").splitlines():
                    if line.strip():
                        resp = json.loads(line).get("response") or {}
                        if resp.get("status_code") == 200:
                            lines_ok += 1
                            tokens += ((resp.get("body") or {}).get("usage") or {}).get("completion_tokens", 0)
        v = self.view or {}
        done_at = next((t for t, s, _, _ in self.history if s in ("completed", "failed", "expired", "cancelled")), None)
        self.result = {"id": self.id, "error": self.error, "status": v.get("status"), "request_counts": v.get("request_counts"),
                       "lines": len(self.lines), "lines_ok": lines_ok, "output_tokens": tokens,
                       "submitted_at_s": self.started, "terminal_at_s": done_at,
                       "completed_in_window": v.get("status") == "completed", "history": self.history}


class StaticBatch:
    """The separate static batch replica: the same lines at its slots' concurrency."""

    def __init__(self, port, lines, concurrency, request_timeout_s, window_s):
        self.port, self.lines, self.concurrency, self.timeout = port, lines, concurrency, request_timeout_s
        self.window_s = window_s
        self.done, self.failed, self.tokens = 0, 0, 0
        self.lock = threading.Lock()
        self.finished_at = None
        self.errors = {}

    def start(self, t0):
        self.t0, self.deadline, self.next = t0, t0 + self.window_s, 0
        self.workers = [threading.Thread(target=self.work, daemon=True) for _ in range(self.concurrency)]
        for w in self.workers:
            w.start()

    def work(self):
        while True:
            with self.lock:
                if self.next >= len(self.lines) or time.perf_counter() > self.deadline:
                    return
                line = self.lines[self.next]
                self.next += 1
            try:
                status, body = call(self.port, "POST", "/v1/chat/completions", line["body"], timeout=self.timeout)
                err = None if status == 200 else f"http {status}"
            except (OSError, http.client.HTTPException) as e:
                status, body, err = None, None, f"connection {type(e).__name__}"
            with self.lock:
                if err:
                    self.failed += 1
                    self.errors[err] = self.errors.get(err, 0) + 1
                else:
                    self.done += 1
                    self.tokens += ((body or {}).get("usage") or {}).get("completion_tokens", 0)
                if self.done + self.failed == len(self.lines):
                    self.finished_at = time.perf_counter() - self.t0

    def poll(self, now):
        pass

    def progress(self):
        return f"{self.done}+{self.failed}/{len(self.lines)}"

    def finish(self, deadline):
        for w in self.workers:
            w.join(max(0.0, deadline - time.perf_counter()))
        self.result = {"lines": len(self.lines), "lines_ok": self.done, "failed": self.failed, "errors": self.errors,
                       "output_tokens": self.tokens, "finished_at_s": self.finished_at,
                       "completed_in_window": self.done == len(self.lines) and self.finished_at is not None
                       and self.finished_at <= self.deadline - self.t0}


# --- the sides --------------------------------------------------------------------------------

def side_static(a, trace, lines, day_s, work):
    os.makedirs(work, exist_ok=True)
    servers, report = {}, {"servers": {}}
    try:
        slots = a.max_replicas * a.slots
        for m in MODELS:
            log(f"static: starting llama-server for {m['name']} (-np {slots} -c {slots * a.context} -t {a.threads})")
            proc, port, args = start_llama_server(a.anchors, os.path.join(a.models, m["file"]), a.threads, slots,
                                                  a.context, os.path.join(work, f"llama-server-{m['name']}.log"))
            servers[m["name"]] = (proc, port)
            report["servers"][m["name"]] = {"args": args}
        bproc = None
        if lines:
            log(f"static: starting the batch replica (-np {a.batch_concurrency})")
            bproc, bport, args = start_llama_server(a.anchors, os.path.join(a.models, MODELS[0]["file"]), a.threads,
                                                    a.batch_concurrency, a.context,
                                                    os.path.join(work, "llama-server-batch.log"))
            report["servers"]["batch"] = {"args": args}
        # Up for the whole run: one short request each before the clock starts.
        log("static: one warm-up request per server")
        warm = {"messages": [SYSTEM, {"role": "user", "content": "Hello"}], "max_tokens": 4}
        for name, (_, port) in servers.items():
            w = stream_chat(port, name, "none", warm, 60)
            if w["error"]:
                log(f"static: warm-up of {name}: {w['error']}")
        for m in MODELS:
            report["servers"][m["name"]]["rss_mib_before"] = rss_mib(servers[m["name"]][0].pid)
        pids = {"interactive": [p.pid for p, _ in servers.values()]}
        batch = None
        if lines:
            pids["batch"] = [bproc.pid]
            batch = StaticBatch(bport, lines, a.batch_concurrency, a.request_timeout_s, day_s)

        def target(r):
            name = MODELS[r["model"]]["name"]
            return servers[name][1], name, "none"

        rep = Replay("static", trace, day_s, target, pids, a, batch=batch if a.static_batch == "during" else None)
        log(f"static: replaying {len(trace)} requests over {day_s:.0f} s")
        times = rep.run()
        if lines and a.static_batch == "after":
            log(f"static: running the batch replica's {len(lines)} lines after the replay")
            t0 = time.perf_counter()
            batch.start(t0)
            while any(w.is_alive() for w in batch.workers):
                time.sleep(min(a.progress_s, 10))
                log(f"static: batch after the replay, {time.perf_counter() - t0:.0f} s, {batch.progress()}")
            times["cpu_at_end"] = rep.cpu()
        if lines:
            batch.finish(time.perf_counter() + 5)
            report["batch"] = batch.result
        for m in MODELS:
            report["servers"][m["name"]]["rss_mib_after"] = rss_mib(servers[m["name"]][0].pid)
        report.update(times)
        report.update(summarize(trace, rep.results))
        report["timeline"] = timeline(trace, rep.results, rep.samples, day_s)
        cpu_i = times["cpu_at_interactive_end"]["interactive"] - times["cpu_at_start"]["interactive"]
        report["cpu_s"] = cpu_i
        report["core_s_per_mtok"] = cpu_i / report["output_tokens"] * 1e6 if report["output_tokens"] else None
        report["allocated_thread_s"] = len(MODELS) * a.threads * times["interactive_end_s"]
        if lines:
            cpu_b = times["cpu_at_end"]["batch"] - times["cpu_at_start"]["batch"]
            report["batch_cpu_s"] = cpu_b
            tokens = report["output_tokens"] + batch.result["output_tokens"]
            report["day_cpu_s"] = cpu_i + cpu_b
            report["day_output_tokens"] = tokens
            report["day_core_s_per_mtok"] = (cpu_i + cpu_b) / tokens * 1e6 if tokens else None
        return report
    finally:
        stop_all()


def side_flywheel(a, trace, lines, day_s, work, name):
    os.makedirs(work, exist_ok=True)
    extra = ["--batch-concurrency", str(a.batch_concurrency)]
    if lines:
        extra += ["--batch-window-max", f"{math.ceil(day_s)}s"]
    proc = None
    try:
        log(f"{name}: starting flywheel serve (--node-threads {a.node_threads} --node-memory-mib {a.node_memory_mib})")
        proc, port, args = start_flywheel(a.flywheel, work, a.node_threads, a.node_memory_mib, extra,
                                          os.path.join(work, "flywheel.log"))
        report = {"args": args, "deployments": {}}
        for m in MODELS:
            spec = {"name": m["name"], "model": os.path.join(a.models, m["file"]), "min_replicas": 0,
                    "max_replicas": a.max_replicas, "slots_per_replica": a.slots,
                    "threads_per_replica": a.threads_per_replica, "context_length": a.context,
                    "idle_seconds": a.idle_seconds}
            ok(port, "POST", "/admin/v1/deployments", spec, expect=(201,))
            report["deployments"][m["name"]] = {"spec": spec}
        keys = []
        for t in TENANTS:
            tid = ok(port, "POST", "/admin/v1/tenants", {"name": t, "grant_tokens": 10**9}, expect=(201,))["id"]
            ok(port, "POST", f"/admin/v1/tenants/{tid}/topups", {"amount": 10**12})
            keys.append(ok(port, "POST", f"/admin/v1/tenants/{tid}/keys", {"name": "fleet"}, expect=(201,))["key"])

        def poll():
            data = ok(port, "GET", "/admin/v1/deployments", timeout=10)["data"]
            out = {}
            for d in data:
                states = [r["state"] for r in d["replicas"]]
                out[d["spec"]["name"]] = {"ready": states.count("ready"), "loading": states.count("loading"),
                                          "draining": states.count("draining"), "queue": d["queue_length"],
                                          "in_flight": d["in_flight"]}
            return out

        def target(r):
            return port, MODELS[r["model"]]["name"], keys[r["tenant"]]

        batch = FlywheelBatch(port, keys[0], lines) if lines else None
        rep = Replay(name, trace, day_s, target, {"all": [proc.pid]}, a, poll_replicas=poll, batch=batch)
        log(f"{name}: replaying {len(trace)} requests over {day_s:.0f} s"
            + (f", with a batch of {len(lines)} lines" if lines else ""))
        times = rep.run()
        report.update(times)
        report.update(summarize(trace, rep.results))
        report["timeline"] = timeline(trace, rep.results, rep.samples, day_s)
        report["rss_mib_after"] = rss_mib(proc.pid)
        cpu_i = times["cpu_at_interactive_end"]["all"] - times["cpu_at_start"]["all"]
        report["cpu_s"] = cpu_i
        # With a batch, the one process serves both: only the day's figure (below) is per token.
        report["core_s_per_mtok"] = cpu_i / report["output_tokens"] * 1e6 if report["output_tokens"] and not lines \
            else None
        # Replicas over time (change points) and the thread-seconds they held.
        changes, last, held = {}, {}, 0.0
        for (t1, s1), (t2, _) in zip(rep.replicas, rep.replicas[1:] + [(times["interactive_end_s"], None)]):
            for dep, v in s1.items():
                n = v["ready"] + v["loading"] + v["draining"]
                held += n * a.threads_per_replica * max(0.0, min(t2, times["interactive_end_s"]) - t1)
                if last.get(dep) != n:
                    changes.setdefault(dep, []).append([round(t1, 1), n])
                    last[dep] = n
        report["allocated_thread_s"] = held
        for m in MODELS:
            dep = report["deployments"][m["name"]]
            dep["replicas_over_time"] = changes.get(m["name"], [])
            counts = [s[m["name"]]["ready"] + s[m["name"]]["loading"] + s[m["name"]]["draining"]
                      for _, s in rep.replicas if m["name"] in s]
            dep["max_replicas_seen"] = max(counts) if counts else None
            dep["fraction_of_samples_at_zero"] = counts.count(0) / len(counts) if counts else None
            events = ok(port, "GET", f"/admin/v1/deployments/{m['name']}/events")["data"]
            dep["events"] = events
            dep["event_counts"] = event_counts(events)
        if lines:
            report["batch"] = batch.result
            tokens = report["output_tokens"] + batch.result["output_tokens"]
            cpu_day = times["cpu_at_end"]["all"] - times["cpu_at_start"]["all"]
            report["day_cpu_s"] = cpu_day
            report["day_output_tokens"] = tokens
            report["day_core_s_per_mtok"] = cpu_day / tokens * 1e6 if tokens else None
        return report
    finally:
        stop_all()


def event_counts(events):
    c = {"scale_up": 0, "scale_down": 0, "scale_to_zero": 0, "cold_start": 0, "replica_ready": 0,
         "replica_stopped": 0, "replica_failed": 0}
    for e in events:
        if e["kind"] == "scale":
            if e["to"] > e["from"]:
                c["scale_up"] += 1
                c["cold_start"] += e["from"] == 0
            elif e["to"] < e["from"]:
                c["scale_down"] += 1
                c["scale_to_zero"] += e["to"] == 0
        elif e["kind"] in c:
            c[e["kind"]] += 1
    return c


# --- report -----------------------------------------------------------------------------------

def ratio(x, y):
    return x / y if x is not None and y else None


def fmt(v, spec=".2f", unit=""):
    return "–" if v is None else f"{v:{spec}}{unit}"


def table(report):
    s = report["sides"]
    cols = [k for k in ("static", "flywheel", "flywheel-batch") if k in s]
    head = {"static": "static fleet", "flywheel": "Flywheel", "flywheel-batch": "Flywheel + batch"}
    t = report["trace"]
    lines = [f"Trace: {t['requests']} requests over {report['config']['day_s']:.0f} s ("
             + ", ".join(f"{n} {v['requests']}" for n, v in t["per_model"].items())
             + f"), {t['max_tokens_sum']:,} max_tokens in all; batch: {report['config']['batch_lines']} lines.", "",
             "| figure | " + " | ".join(head[c] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]

    def row(label, f):
        lines.append(f"| {label} | " + " | ".join(f(s[c]) for c in cols) + " |")

    row("requests ok / sent", lambda d: f"{d['ok']} / {d['requests']}")
    row("output tokens (interactive)", lambda d: f"{d['output_tokens']:,}")
    row("CPU core-seconds to the last interactive request", lambda d: fmt(d.get("cpu_s"), ".1f")
        + (" (batch too)" if "day_cpu_s" in d and "servers" not in d else ""))
    row("core-s per 1M interactive output tokens", lambda d: fmt(d.get("core_s_per_mtok"), ",.0f"))
    row(f"TTFT ≤ {SLO_S:g} s (of all sent)", lambda d: fmt(d["slo_fraction"] and 100 * d["slo_fraction"], ".1f", "%"))
    for p in (50, 90, 99):
        row(f"TTFT p{p}", lambda d, p=p: fmt(d[f"ttft_p{p}_s"], ".2f", " s"))
    row("errors", lambda d: ", ".join(f"{k}: {v}" for k, v in sorted(d["errors"].items())) or "0")
    row("thread-seconds held by serving replicas", lambda d: fmt(d.get("allocated_thread_s"), ",.0f"))
    if any("batch" in s[c] for c in cols):
        row("batch lines ok / total", lambda d: f"{d['batch']['lines_ok']} / {d['batch']['lines']}" if "batch" in d else "–")
        row("batch status", lambda d: (d["batch"].get("status") or ("done" if d["batch"]["completed_in_window"]
                                                                    else "unfinished")) if "batch" in d else "–")
        row("batch output tokens", lambda d: f"{d['batch']['output_tokens']:,}" if "batch" in d else "–")
        row("day core-s per 1M tokens (interactive + batch)", lambda d: fmt(d.get("day_core_s_per_mtok"), ",.0f"))
    out = "\n".join(lines)
    r, g = report["ratios"], report["goals"]
    if r:
        out += "\n\n| ratio | value | goal |\n|---|---|---|\n"
        out += "\n".join(f"| {k} | {fmt(v, '.3f')} | {g.get(k, {}).get('text', '–')} |" for k, v in r.items())
    out += "\n\n| model | side | ok / sent | TTFT ≤ 2 s | p50 | p99 | output tokens |\n|---|---|---|---|---|---|---|\n"
    rows = []
    for m in MODELS:
        for c in cols:
            d = s[c]["per_model"][m["name"]]
            rows.append(f"| {m['name']} | {head[c]} | {d['ok']} / {d['requests']} | "
                        f"{fmt(d['slo_fraction'] and 100 * d['slo_fraction'], '.1f', '%')} | "
                        f"{fmt(d['ttft_p50_s'], '.2f', ' s')} | {fmt(d['ttft_p99_s'], '.2f', ' s')} | "
                        f"{d['output_tokens']:,} |")
    out += "\n".join(rows)
    for c in ("flywheel", "flywheel-batch"):
        if c in s:
            out += f"\n\n{head[c]} scale events: " + "; ".join(
                f"{n}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in d["event_counts"].items() if v)
                + f" (max {d['max_replicas_seen']} replicas, at zero {fmt(d['fraction_of_samples_at_zero'] and 100 * d['fraction_of_samples_at_zero'], '.0f', '%')} of the time)"
                for n, d in s[c]["deployments"].items())
    return out


def ratios(sides):
    st, fw, fb = sides.get("static"), sides.get("flywheel"), sides.get("flywheel-batch")
    r, g = {}, {}
    if st and fw:
        r["core_s_per_mtok_flywheel_over_static"] = ratio(fw["core_s_per_mtok"], st["core_s_per_mtok"])
        g["core_s_per_mtok_flywheel_over_static"] = {"goal": 0.6, "better": "lower", "text": "≤ 0.6"}
        r["slo_fraction_flywheel_over_static"] = ratio(fw["slo_fraction"], st["slo_fraction"])
        g["slo_fraction_flywheel_over_static"] = {"goal": 1.0, "better": "higher", "text": "≥ 1.0"}
        r["ttft_p99_flywheel_over_static"] = ratio(fw["ttft_p99_s"], st["ttft_p99_s"])
    if fw and fb:
        r["ttft_p99_with_batch_over_without"] = ratio(fb["ttft_p99_s"], fw["ttft_p99_s"])
        g["ttft_p99_with_batch_over_without"] = {"goal": 1.1, "better": "lower", "text": "≤ 1.1"}
        r["slo_fraction_with_batch_over_without"] = ratio(fb["slo_fraction"], fw["slo_fraction"])
    if st and fb and fb.get("day_core_s_per_mtok") and st.get("day_core_s_per_mtok"):
        r["day_core_s_per_mtok_flywheel_over_static_separate_batch"] = ratio(fb["day_core_s_per_mtok"],
                                                                             st["day_core_s_per_mtok"])
        g["day_core_s_per_mtok_flywheel_over_static_separate_batch"] = {"goal": 0.7, "better": "lower",
                                                                        "text": "≤ 0.7"}
    if fb and "batch" in fb:
        r["batch_completed_in_window"] = 1.0 if fb["batch"]["completed_in_window"] else 0.0
        g["batch_completed_in_window"] = {"goal": 1.0, "better": "higher", "text": "1 (completed)"}
    return r, g


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
        with open("/proc/meminfo") as f:
            mem = int(next(l for l in f if l.startswith("MemTotal")).split()[1]) // 1024
    except (OSError, StopIteration):
        mem = None
    return {"cpu_model": model, "nproc": os.cpu_count(), "memory_mib": mem, "kernel": platform.release(),
            "python": platform.python_version()}


def versions(a):
    def out(args):
        try:
            p = subprocess.run(args, capture_output=True, text=True, timeout=30)
            return (p.stdout + p.stderr).strip().splitlines()[-1] if (p.stdout + p.stderr).strip() else None
        except (OSError, subprocess.TimeoutExpired):
            return None
    v = {"flywheel": out([a.flywheel, "--version"]) if a.flywheel else None}
    if a.anchors:
        try:
            with open(os.path.join(os.path.dirname(a.anchors.rstrip("/")), "version.txt")) as f:
                v["llama_cpp_anchor"] = " ".join(l.strip() for l in f if l.strip())
        except OSError:
            v["llama_cpp_anchor"] = out([os.path.join(a.anchors, "llama-server"), "--version"])
    v["git"] = out(["git", "-C", os.path.dirname(os.path.abspath(__file__)), "describe", "--always", "--dirty"])
    return v


def main():
    cores = os.cpu_count() or 2
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flywheel", help="the flywheel binary")
    ap.add_argument("--anchors", help="the llama.cpp bin dir (bench/anchors.sh prints it)")
    ap.add_argument("--models", default=os.path.join(os.environ.get("FLYWHEEL_CACHE", os.path.expanduser("~/.cache/flywheel")), "models"),
                    help="directory of the GGUFs (scripts/fetch-models.sh smollm2 qwen gemma)")
    ap.add_argument("--minutes", type=float, default=20, help="the day, compressed [20]")
    ap.add_argument("--load", type=float, default=1.0, help="multiplies every rate [1.0: calibrated for 2 cores]")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sides", default="static,flywheel,flywheel-batch")
    ap.add_argument("--batch-lines", type=int, default=200, help="lines of the batch; 0: no batch run")
    ap.add_argument("--batch-concurrency", type=int, default=4,
                    help="Flywheel's --batch-concurrency and the static batch replica's slots [4]")
    ap.add_argument("--static-batch", choices=("during", "after"), default="during",
                    help="the static batch replica runs during the replay (on the same cores) or after it")
    ap.add_argument("--threads", type=int, default=cores, help="llama-server -t [nproc]")
    ap.add_argument("--llama-server-args", default="", help="extra llama-server arguments (one string)")
    ap.add_argument("--node-threads", type=int, default=cores, help="flywheel --node-threads [nproc]")
    ap.add_argument("--node-memory-mib", type=int, default=4096)
    ap.add_argument("--threads-per-replica", type=int, default=max(1, cores // 2))
    ap.add_argument("--slots", type=int, default=4, help="slots_per_replica")
    ap.add_argument("--max-replicas", type=int, default=2)
    ap.add_argument("--context", type=int, default=1024, help="tokens per slot")
    ap.add_argument("--idle-seconds", type=int, help="the deployments' idle_seconds [day/40, at least 5]")
    ap.add_argument("--drain-s", type=float, default=120, help="after the day, wait at most this for the last requests")
    ap.add_argument("--batch-grace-s", type=float, default=120, help="after the day, wait at most this for the batch")
    ap.add_argument("--request-timeout-s", type=float, default=300, help="a request's socket read timeout")
    ap.add_argument("--progress-s", type=float, default=15)
    ap.add_argument("--sample-s", type=float, default=1.0)
    ap.add_argument("--work", help="logs and data [a new temporary directory]")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "fleet.json"))
    ap.add_argument("--dry-run", action="store_true", help="print the trace's totals and exit")
    a = ap.parse_args()
    day_s = a.minutes * 60
    if a.idle_seconds is None:
        a.idle_seconds = max(5, round(day_s / 40))
    LLAMA_EXTRA.extend(a.llama_server_args.split())
    sides = [s for s in a.sides.split(",") if s]
    if a.batch_lines <= 0:
        sides = [s for s in sides if s != "flywheel-batch"]
    unknown = set(sides) - {"static", "flywheel", "flywheel-batch"}
    if unknown:
        ap.error(f"unknown sides {unknown}")

    trace = make_trace(day_s, a.load, a.seed)
    lines = batch_lines(a.batch_lines, a.seed) if a.batch_lines > 0 else []
    info = describe_trace(trace, day_s, a.load)
    log(f"trace: {info['requests']} requests over {day_s:.0f} s ("
        + ", ".join(f"{n} {v['requests']}" for n, v in info["per_model"].items())
        + f"), {info['max_tokens_sum']:,} max_tokens in all; estimated machine load per 1/40 of the day "
        f"{info['est_machine_load_min']:.2f}–{info['est_machine_load_max']:.2f} (mean {info['est_machine_load_mean']:.2f}; "
        f"1.0 = the 2 cores busy)" + (f"; batch of {len(lines)} lines for {BATCH_MODEL}" if lines else ""))
    if a.dry_run:
        print(json.dumps(info, indent=2))
        return 0
    if "static" in sides and not a.anchors:
        ap.error("--anchors is needed for the static side")
    if any(s.startswith("flywheel") for s in sides) and not a.flywheel:
        ap.error("--flywheel is needed for the flywheel sides")
    for m in MODELS:
        if not os.path.exists(os.path.join(a.models, m["file"])):
            ap.error(f"{m['file']} is not in {a.models} (scripts/fetch-models.sh smollm2 qwen gemma)")
    # One socket per request in flight, and the servers inherit the limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8192 if hard == resource.RLIM_INFINITY else min(8192, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    work = a.work or __import__("tempfile").mkdtemp(prefix="flywheel-fleet-")
    os.makedirs(work, exist_ok=True)
    log(f"logs and data in {work}")

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_term)

    started = time.time()
    report = {"benchmark": "fleet", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "versions": versions(a),
              "config": {"minutes": a.minutes, "day_s": day_s, "load": a.load, "seed": a.seed, "slo_s": SLO_S,
                         "peak_over_valley": PEAK_OVER_VALLEY, "sharpness": SHARPNESS,
                         "models": [{k: m[k] for k in ("name", "file", "peak_rps", "phase")} for m in MODELS],
                         "batch_lines": len(lines), "batch_model": BATCH_MODEL,
                         "batch_concurrency": a.batch_concurrency, "static_batch": a.static_batch,
                         "llama_server_threads": a.threads, "static_slots_per_model": a.max_replicas * a.slots,
                         "node_threads": a.node_threads, "node_memory_mib": a.node_memory_mib,
                         "threads_per_replica": a.threads_per_replica, "slots_per_replica": a.slots,
                         "max_replicas": a.max_replicas, "context_per_slot": a.context,
                         "idle_seconds": a.idle_seconds, "drain_s": a.drain_s, "tenants": len(TENANTS)},
              "trace": info, "sides": {}}
    try:
        for side in sides:
            t = time.time()
            if side == "static":
                report["sides"][side] = side_static(a, trace, lines, day_s, os.path.join(work, "static"))
            else:
                report["sides"][side] = side_flywheel(a, trace, lines if side == "flywheel-batch" else [], day_s,
                                                      os.path.join(work, side), side)
            report["sides"][side]["side_wall_s"] = time.time() - t
            log(f"{side}: done in {time.time() - t:.0f} s")
    except KeyboardInterrupt:
        log("interrupted: stopping every server this script started")
        stop_all()
        return 130
    finally:
        stop_all()
    report["config"]["llama_server_extra_args"] = list(LLAMA_EXTRA)
    report["ratios"], report["goals"] = ratios(report["sides"])
    report["wall_s"] = time.time() - started
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(report, f, indent=1)
    print(table(report))
    log(f"wrote {a.out}; took {report['wall_s']:.0f} s; logs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
