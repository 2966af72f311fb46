"""MCP gateway overhead: `tools/call` straight to a Streamable HTTP server vs through Flywheel's
`/mcp` (tenant key: session lookup, pin, RPM, reservation, settlement, audit row), p50/p99 at 1
client and req/s at 1 and 32 clients, each client its own MCP session on a kept-alive
connection. Standard library only (the upstream server runs in a venv with PyPI `mcp`).

    python3 bench/mcp.py --flywheel BIN --python VENV_PYTHON --out bench/results/mcp.json
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

    def __init__(self, port, key=None):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        r = self.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}})
        self.headers["Mcp-Session-Id"] = r[1]
        self.headers["MCP-Protocol-Version"] = "2025-11-25"
        self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def post(self, message):
        self.conn.request("POST", "/mcp", body=json.dumps(message), headers=self.headers)
        r = self.conn.getresponse()
        body = r.read()
        if r.status >= 300:
            raise RuntimeError(f"HTTP {r.status}: {body[:300]!r}")
        return (json.loads(body) if body else None), r.getheader("mcp-session-id")

    def call(self, tool):
        answer, _ = self.post({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                               "params": {"name": tool, "arguments": {"text": "x"}}})
        if "result" not in answer or answer["result"].get("isError"):
            raise RuntimeError(f"call failed: {answer}")


def measure(port, key, tool, clients, calls):
    sessions = [Session(port, key) for _ in range(clients)]
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
    ap.add_argument("--calls", type=int, default=500, help="calls per client")
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
        results = {}
        for clients in (1, 32):
            calls = args.calls if clients == 1 else max(20, args.calls // 16)
            results[f"direct_c{clients}"] = measure(up_port, None, "echo", clients, calls)
            results[f"flywheel_c{clients}"] = measure(fw_port, key, "up__echo", clients, calls)
        d1, f1 = results["direct_c1"], results["flywheel_c1"]
        ratios = {
            "added_p50_ms": f1["p50_ms"] - d1["p50_ms"],
            "added_p99_ms": f1["p99_ms"] - d1["p99_ms"],
            "flywheel_over_direct_req_s_c32": results["flywheel_c32"]["req_s"] / results["direct_c32"]["req_s"],
        }
        out = {"upstream": "tests/e2e/mcp_servers/counter.py --json (mcp 2.3.0, uvicorn)", "results": results,
               "ratios": ratios, "goals": {"added_p50_ms": "<= 1"}, "anchor_litellm": "not measured yet"}
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
        print("| path | clients | p50 ms | p99 ms | req/s |")
        print("|---|---|---|---|---|")
        for name, r in results.items():
            print(f"| {name} | {r['clients']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['req_s']:.0f} |")
        print(json.dumps(ratios))
    finally:
        for p in (fw, up):
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
