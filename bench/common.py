"""What the bench scripts share: starting and stopping servers, and one streamed request.
Standard library only."""

import http.client
import json
import os
import socket
import subprocess
import time


# Flywheel's admin key in every bench server (llama-server ignores the header).
ADMIN_KEY = "bench-admin-key-0123456789"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_health(port, proc, log, timeout=180, path="/health"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited; see {log}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server did not become healthy; see {log}")


def start_flywheel(bin_path, gguf, threads, slots, slot_ctx, work):
    """`flywheel serve` with the model served as `m`; returns (process, port)."""
    port = free_port()
    log = os.path.join(work, "flywheel.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env["FLYWHEEL_ADMIN_KEY"] = ADMIN_KEY
    proc = subprocess.Popen([bin_path, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir",
                             os.path.join(work, "fw-data"), "--model", f"{gguf}=m", "--slots", str(slots),
                             "--slot-context", str(slot_ctx), "--threads", str(threads),
                             "--step-tokens", "512", "--max-queue", "4096"],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
    wait_health(port, proc, log)
    return proc, port


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def stream(port, path, body):
    """POST a streaming request (stream and include_usage are set here). Returns
    (t_start, [arrival time of each chunk carrying text], usage); usage["_end"] is when the
    usage chunk arrived. Tokens after end-of-sequence may carry no text: count by usage."""
    body = dict(body, stream=True, stream_options={"include_usage": True})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
    t0 = time.perf_counter()
    conn.request("POST", path, json.dumps(body),
                 {"content-type": "application/json", "authorization": f"Bearer {ADMIN_KEY}"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
    arrivals, usage = [], None
    for raw in resp:
        line = raw.decode(errors="replace").strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        ev = json.loads(line[6:])
        if ev.get("usage"):
            usage = ev["usage"]
            usage["_end"] = time.perf_counter()
        for ch in ev.get("choices") or []:
            if ch.get("text") or (ch.get("delta") or {}).get("content"):
                arrivals.append(time.perf_counter())
    conn.close()
    return t0, arrivals, usage
