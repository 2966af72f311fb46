"""MCP gateway overhead: `tools/call` straight to a Streamable HTTP server vs through Flywheel's
`/mcp` (tenant key: session lookup, pin, RPM, reservation, settlement, audit row) and through
LiteLLM's MCP gateway (the anchor, from PyPI, with a master key and no database), p50/p99 at 1
client and req/s at 1 and 32 clients, each client its own MCP session on a kept-alive
connection. Standard library only (the upstream server runs in a venv with PyPI `mcp`).

    python3 bench/mcp.py --flywheel BIN --python VENV_PYTHON [--litellm LITELLM_BIN] --out bench/results/mcp.json
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ADMIN_KEY, free_port, wait_health  # noqa: E402

COUNTER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e", "mcp_servers", "counter.py")


class Session:
    """One MCP session (2025-11-25) on one kept-alive connection."""

    def __init__(self, port, key=None, path="/mcp"):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.path = path
        self.headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        r = self.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}})
        self.headers["Mcp-Session-Id"] = r[1]
        self.headers["MCP-Protocol-Version"] = "2025-11-25"
        self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def post(self, message):
        self.conn.request("POST", self.path, body=json.dumps(message), headers=self.headers)
        r = self.conn.getresponse()
        body = r.read()
        if r.status >= 300:
            raise RuntimeError(f"HTTP {r.status}: {body[:300]!r}")
        if (r.getheader("content-type") or "").startswith("text/event-stream"):
            # An SSE answer: the JSON-RPC response is the last `data:` line.
            data = [line[5:].strip() for line in body.decode().splitlines() if line.startswith("data:")]
            body = data[-1].encode() if data else b""
        return (json.loads(body) if body else None), r.getheader("mcp-session-id")

    def call(self, tool):
        answer, _ = self.post({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                               "params": {"name": tool, "arguments": {"text": "x"}}})
        if "result" not in answer or answer["result"].get("isError"):
            raise RuntimeError(f"call failed: {answer}")


def measure(port, key, tool, clients, calls, path="/mcp"):
    sessions = [Session(port, key, path) for _ in range(clients)]
    for s in sessions:
        s.call(tool)  # warm: the gateway pins its upstream session here
    latencies = [[] for _ in sessions]

    def run(i):
        for _ in range(calls):
            t = time.perf_counter()
            sessions[i].call(tool)
            latencies[i].append(time.perf_counter() - t)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    flat = sorted(x for l in latencies for x in l)
    return {"clients": clients, "calls": len(flat), "req_s": len(flat) / wall,
            "p50_ms": 1000 * statistics.median(flat), "p99_ms": 1000 * flat[int(0.99 * (len(flat) - 1))]}


LITELLM_KEY = "sk-bench-" + "0123456789abcdef"


def wait_litellm(port, proc, log, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"LiteLLM exited; see {log}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/health/liveliness")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"LiteLLM did not start in {timeout} s; see {log}")


def litellm_version(binary):
    python = os.path.join(os.path.dirname(binary), "python")
    try:
        return subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                              capture_output=True, text=True, timeout=60).stdout.strip()
    except OSError:
        return "?"


def admin(port, method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path, body=json.dumps(body) if body is not None else None,
              headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    if r.status >= 300:
        raise RuntimeError(f"{method} {path}: HTTP {r.status} {data[:300]!r}")
    return json.loads(data) if data else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flywheel", required=True)
    ap.add_argument("--python", required=True, help="a python with PyPI mcp (the upstream server)")
    ap.add_argument("--litellm", help="LiteLLM's `litellm` command (the anchor); left out: not measured")
    ap.add_argument("--calls", type=int, default=500, help="calls per client")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds for the added latency at 1 client")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-mcp-")
    up_port, fw_port = free_port(), free_port()
    up_log, fw_log = os.path.join(work, "upstream.log"), os.path.join(work, "flywheel.log")
    up = subprocess.Popen([args.python, COUNTER, str(up_port), "--json"], stdout=open(up_log, "wb"),
                          stderr=subprocess.STDOUT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env["FLYWHEEL_ADMIN_KEY"] = ADMIN_KEY
    env["RUST_LOG"] = "warn"
    fw = subprocess.Popen([args.flywheel, "serve", "--listen", f"127.0.0.1:{fw_port}", "--data-dir",
                           os.path.join(work, "data"), "--mcp-allow-hosts", "127.0.0.1"],
                          stdout=open(fw_log, "wb"), stderr=subprocess.STDOUT, env=env)
    procs = [fw, up]
    ll_port = free_port()
    if args.litellm:
        ll_log = os.path.join(work, "litellm.log")
        config = os.path.join(work, "litellm.yaml")
        with open(config, "w") as f:
            f.write(f"mcp_servers:\n  up:\n    url: \"http://127.0.0.1:{up_port}/mcp\"\n    transport: \"http\"\n"
                    f"general_settings:\n  master_key: {LITELLM_KEY}\n")
        ll_env = dict(os.environ, LITELLM_LOG="ERROR", LITELLM_LOCAL_MODEL_COST_MAP="True")
        procs.append(subprocess.Popen([args.litellm, "--config", config, "--host", "127.0.0.1", "--port", str(ll_port),
                                       "--num_workers", "1"], stdout=open(ll_log, "wb"), stderr=subprocess.STDOUT,
                                      env=ll_env))
    try:
        wait_health(fw_port, fw, fw_log)
        deadline = time.time() + 30
        while "ready" not in open(up_log).read():
            if time.time() > deadline or up.poll() is not None:
                raise RuntimeError(f"the upstream did not start; see {up_log}")
            time.sleep(0.1)
        tenant = admin(fw_port, "POST", "/admin/v1/tenants", {"name": "bench"})
        key = admin(fw_port, "POST", f"/admin/v1/tenants/{tenant['id']}/keys", {"scopes": ["mcp"]})["key"]
        c = http.client.HTTPConnection("127.0.0.1", fw_port, timeout=30)
        c.request("POST", "/v1/mcp/servers", body=json.dumps({"name": "up", "url": f"http://127.0.0.1:{up_port}/mcp"}),
                  headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        assert c.getresponse().status == 201
        if args.litellm:
            wait_litellm(ll_port, procs[-1], ll_log)
        results = {}
        # Added latency at 1 client, in alternating rounds (direct, then through Flywheel) so a
        # change in the shared machine's load falls on both sides: the figure is the median of
        # the rounds' p50 (p99) differences.
        rounds = []
        for _ in range(args.rounds):
            d = measure(up_port, None, "echo", 1, args.calls)
            f = measure(fw_port, key, "up__echo", 1, args.calls)
            rounds.append({"direct_p50_ms": d["p50_ms"], "flywheel_p50_ms": f["p50_ms"],
                           "added_p50_ms": f["p50_ms"] - d["p50_ms"], "added_p99_ms": f["p99_ms"] - d["p99_ms"]})
        results["rounds_c1"] = rounds
        for clients in (1, 32):
            calls = args.calls if clients == 1 else max(20, args.calls // 16)
            results[f"direct_c{clients}"] = measure(up_port, None, "echo", clients, calls)
            results[f"flywheel_c{clients}"] = measure(fw_port, key, "up__echo", clients, calls)
            if args.litellm:
                # LiteLLM is slower: fewer calls, the same clients.
                results[f"litellm_c{clients}"] = measure(ll_port, LITELLM_KEY, "up-echo", clients,
                                                         max(20, calls // 5), path="/mcp/")
        d1 = results["direct_c1"]
        ratios = {
            "added_p50_ms": statistics.median(r["added_p50_ms"] for r in rounds),
            "added_p99_ms": statistics.median(r["added_p99_ms"] for r in rounds),
            "added_p50_ms_rounds": [round(r["added_p50_ms"], 3) for r in rounds],
            "flywheel_over_direct_req_s_c32": results["flywheel_c32"]["req_s"] / results["direct_c32"]["req_s"],
        }
        if args.litellm:
            l1 = results["litellm_c1"]
            ratios["litellm_added_p50_ms"] = l1["p50_ms"] - d1["p50_ms"]
            for c in (1, 32):
                ratios[f"flywheel_over_litellm_req_s_c{c}"] = (results[f"flywheel_c{c}"]["req_s"]
                                                              / results[f"litellm_c{c}"]["req_s"])
        out = {"upstream": "tests/e2e/mcp_servers/counter.py --json (mcp 2.3.0, uvicorn)", "results": results,
               "ratios": ratios, "goals": {"added_p50_ms": "<= 1", "flywheel_over_litellm_req_s": ">= 10"},
               "anchor": f"LiteLLM {litellm_version(args.litellm)} MCP gateway (1 worker, master key, no database)"
               if args.litellm else "not measured (no --litellm)"}
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
        print("| path | clients | p50 ms | p99 ms | req/s |")
        print("|---|---|---|---|---|")
        for name, r in results.items():
            if name == "rounds_c1":
                continue
            print(f"| {name} | {r['clients']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['req_s']:.0f} |")
        print(json.dumps(ratios))
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
