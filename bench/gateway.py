"""Gateway overhead and metering overhead, side by side in one run.

A fast upstream (nginx answering every POST with one fixed chat completion, no model) is called
  - directly,
  - through Flywheel with the admin key (not metered),
  - through Flywheel with a tenant key (authenticated, rate-limit window, reserve, settle) on
    SQLite and on PostgreSQL,
  - through the LiteLLM proxy (pip `litellm[proxy]`, master key: its virtual keys need a
    Prisma-managed database whose engines are downloaded from the internet, which this
    machine cannot reach),
with the same client (`wrk`, Debian): one connection for latency (p50/p99), 32 connections
for throughput (req/s). Also a model group of two members (both the same nginx, weighted)
through Flywheel, with the request log on (as it always is), and through LiteLLM's router with
the same two deployments. Prints a table and writes bench/results/gateway.json.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from common import ADMIN_KEY, free_port, stop, wait_health  # noqa: E402

ANSWER = json.dumps({
    "id": "chatcmpl-fast", "object": "chat.completion", "created": 1, "model": "fast",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
})
BODY = json.dumps({"model": "fast", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def ensure_debian(pkg, binary):
    if shutil.which(binary):
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    print(f"[bench] installing {pkg} (Debian)", file=sys.stderr)
    sh(*sudo, "apt-get", "install", "-y", "-qq", pkg, stdout=subprocess.DEVNULL,
       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def start_nginx(work):
    port = free_port()
    conf = os.path.join(work, "nginx.conf")
    answer = ANSWER.replace("'", "\\'")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1; daemon off; pid {work}/nginx.pid; error_log {work}/nginx.err;
events {{ worker_connections 4096; }}
http {{ access_log off;
  client_body_temp_path {work}/body; proxy_temp_path {work}/proxy; fastcgi_temp_path {work}/fcgi;
  uwsgi_temp_path {work}/uwsgi; scgi_temp_path {work}/scgi;
  server {{ listen 127.0.0.1:{port};
    location /health {{ return 200 'ok'; }}
    location / {{ default_type application/json; return 200 '{answer}'; }} }} }}
""")
    proc = subprocess.Popen(["nginx", "-c", conf, "-p", work], stderr=subprocess.DEVNULL)
    wait_health(port, proc, os.path.join(work, "nginx.err"), timeout=30)
    return proc, port


def start_flywheel(binary, upstream_port, database_url, work, name):
    port = free_port()
    data = os.path.join(work, name)
    os.makedirs(data, exist_ok=True)
    cfg = os.path.join(data, "flywheel.toml")
    with open(cfg, "w") as f:
        f.write(f'[[upstreams]]\nname = "fast"\nbase_url = "http://127.0.0.1:{upstream_port}/v1"\n')
    args = [binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data, "--config", cfg]
    if database_url:
        args += ["--database-url", database_url]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(FLYWHEEL_ADMIN_KEY=ADMIN_KEY, RUST_LOG="warn")
    log = os.path.join(data, "server.log")
    proc = subprocess.Popen(args, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
    wait_health(port, proc, log)
    return proc, port


GROUP = "fast-group"


def admin(port, path, body, method="POST"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/admin/v1{path}", data=json.dumps(body).encode(),
                                 headers={"authorization": f"Bearer {ADMIN_KEY}"}, method=method)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def put_group(port, upstream_port):
    member = {"upstream": {"base_url": f"http://127.0.0.1:{upstream_port}/v1", "model": "fast"}}
    admin(port, f"/models/{GROUP}", {"members": [member, member]}, method="PUT")


def tenant_key(port):
    tenant = admin(port, "/tenants", {"name": f"bench-{time.time_ns()}", "grant_tokens": 10**12})
    return admin(port, f"/tenants/{tenant['id']}/keys", {"name": "bench"})["key"]


def start_litellm(venv, upstream_port, work):
    port = free_port()
    cfg = os.path.join(work, "litellm.yaml")
    with open(cfg, "w") as f:
        f.write(f"""model_list:
  - model_name: fast
    litellm_params: {{model: openai/fast, api_base: "http://127.0.0.1:{upstream_port}/v1", api_key: x}}
  - model_name: {GROUP}
    litellm_params: {{model: openai/fast, api_base: "http://127.0.0.1:{upstream_port}/v1", api_key: x}}
  - model_name: {GROUP}
    litellm_params: {{model: openai/fast, api_base: "http://127.0.0.1:{upstream_port}/v1", api_key: y}}
router_settings: {{routing_strategy: simple-shuffle, num_retries: 2}}
general_settings: {{master_key: sk-bench-master}}
litellm_settings: {{telemetry: false}}
""")
    log = os.path.join(work, "litellm.log")
    proc = subprocess.Popen([os.path.join(venv, "bin", "litellm"), "--config", cfg, "--host", "127.0.0.1",
                             "--port", str(port), "--num_workers", "1"],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            env=dict(os.environ, LITELLM_LOG="ERROR"))
    # LiteLLM's /health checks every model and needs a key; liveliness is its readiness probe.
    wait_health(port, proc, log, timeout=300, path="/health/liveliness")
    return proc, port


def ensure_litellm(venv):
    if os.path.exists(os.path.join(venv, "bin", "litellm")):
        return True
    print(f"[bench] installing litellm[proxy] into {venv} (pip)", file=sys.stderr)
    try:
        sh(sys.executable, "-m", "venv", venv)
        sh(os.path.join(venv, "bin", "pip"), "install", "-q", "litellm[proxy]==1.100.0")
        return True
    except subprocess.CalledProcessError as e:
        print(f"[bench] cannot install litellm: {e}", file=sys.stderr)
        return False


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(port, key, connections, seconds, work, model="fast"):
    script = os.path.join(work, "post.lua")
    body = BODY.replace('"model": "fast"', f'"model": "{model}"')
    with open(script, "w") as f:
        f.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n'
                f'wrk.headers["Content-Type"] = "application/json"\n'
                f'wrk.headers["Authorization"] = "Bearer {key}"\n'
                'done = function(summary, latency, requests)\n'
                '  io.write(string.format("FW p50=%d p99=%d errors=%d non2xx=%d\\n", latency:percentile(50),'
                ' latency:percentile(99), summary.errors.status + summary.errors.connect + summary.errors.read'
                ' + summary.errors.write + summary.errors.timeout, summary.errors.status))\nend\n')
    out = subprocess.run(["wrk", "-t", "1" if connections == 1 else "2", "-c", str(connections), "-d",
                          f"{seconds}s", "--latency", "-s", script, f"http://127.0.0.1:{port}/v1/chat/completions"],
                         check=True, capture_output=True, text=True).stdout
    m = re.search(r"FW p50=(\d+) p99=(\d+) errors=(\d+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m or not rps:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    if int(m.group(3)):
        raise RuntimeError(f"{m.group(3)} requests failed:\n{out}")
    return {"p50_ms": int(m.group(1)) / 1000, "p99_ms": int(m.group(2)) / 1000, "rps": float(rps.group(1))}


def measure(label, port, key, seconds, work, model="fast"):
    wrk(port, key, 1, 2, work, model)  # warm up
    lat = wrk(port, key, 1, seconds, work, model)
    thr = wrk(port, key, 32, seconds, work, model)
    row = {"target": label, "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"], "rps_c32": thr["rps"]}
    print(f"[bench] {label}: p50 {row['p50_ms']:.3f} ms, p99 {row['p99_ms']:.3f} ms, {row['rps_c32']:.0f} req/s",
          file=sys.stderr)
    return row


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def group_rounds(a, upstream_port, port, key):
    """The same server's single upstream and two-member group, measured in alternating rounds
    (with the upstream itself each round) so the machine's drift falls on both; the added p50s'
    medians. Sequential rows drift with the machine and the database's growth."""
    added = {"single": [], "group": []}
    for i in range(a.rounds):
        order = ("single", "group") if i % 2 == 0 else ("group", "single")
        direct = wrk(upstream_port, "x", 1, a.seconds, a.work)["p50_ms"]
        for name in order:
            model = GROUP if name == "group" else "fast"
            p50 = wrk(port, key, 1, a.seconds, a.work, model)["p50_ms"]
            added[name].append(round(p50 - direct, 3))
        print(f"[bench] group round {i + 1}: added p50 single {added['single'][-1]:.3f} ms, "
              f"group {added['group'][-1]:.3f} ms", file=sys.stderr)
    single, group = median(added["single"]), median(added["group"])
    return {"rounds": a.rounds, "added_p50_ms": added, "single_added_p50_ms_median": single,
            "group_added_p50_ms_median": group, "group_added_p50_over_single": round(group / max(single, 0.001), 2)}


def ab_rounds(a, upstream_port, procs):
    """The metered SQLite path of --flywheel (B) and --baseline (A), both up at once, measured in
    alternating rounds (A B, B A, ...) so the machine's own load falls on both sides; medians."""
    sides = {}
    for name, binary in (("baseline", a.baseline), ("current", a.flywheel)):
        proc, port = start_flywheel(binary, upstream_port, None, a.work, f"ab-{name}")
        procs.append(proc)
        sides[name] = {"port": port, "key": tenant_key(port), "p50": [], "rps": []}
        wrk(port, sides[name]["key"], 1, 2, a.work)  # warm up
    for i in range(a.rounds):
        order = ("baseline", "current") if i % 2 == 0 else ("current", "baseline")
        for name in order:
            side = sides[name]
            lat = wrk(side["port"], side["key"], 1, a.seconds, a.work)
            thr = wrk(side["port"], side["key"], 32, a.seconds, a.work)
            side["p50"].append(lat["p50_ms"])
            side["rps"].append(thr["rps"])
            print(f"[bench] A/B round {i + 1} {name}: p50 {lat['p50_ms']:.3f} ms, {thr['rps']:.0f} req/s",
                  file=sys.stderr)
    for _ in range(2):
        stop(procs.pop())
    out = {name: {"p50_ms_median": median(s["p50"]), "rps_c32_median": median(s["rps"]),
                  "p50_ms": s["p50"], "rps_c32": s["rps"]} for name, s in sides.items()}
    out["ratios"] = {
        "ab_rps_current_over_baseline": round(out["current"]["rps_c32_median"] / out["baseline"]["rps_c32_median"], 3),
        "ab_p50_current_over_baseline": round(out["current"]["p50_ms_median"] / out["baseline"]["p50_ms_median"], 3),
    }
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flywheel", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--postgres", default=os.environ.get("FLYWHEEL_BENCH_POSTGRES_URL",
                                                         "postgres://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--litellm-venv", default=os.path.expanduser("~/.cache/flywheel/bench-litellm"))
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--skip-litellm", action="store_true")
    ap.add_argument("--baseline", help="an earlier flywheel binary: its metered SQLite figures are measured in "
                    "alternating rounds with --flywheel's, both servers up at once (an A/B within one run)")
    ap.add_argument("--rounds", type=int, default=5,
                    help="rounds of the --baseline A/B and of the group-vs-single comparison")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    ensure_debian("wrk", "wrk")
    ensure_debian("nginx", "nginx")
    procs, rows = [], []
    scratch = f"fw_bench_{os.getpid()}"
    try:
        nginx, up = start_nginx(a.work)
        procs.append(nginx)
        rows.append(measure("direct (nginx)", up, "x", a.seconds, a.work))
        fw, port = start_flywheel(a.flywheel, up, None, a.work, "fw-sqlite")
        procs.append(fw)
        rows.append(measure("flywheel, admin key (no metering)", port, ADMIN_KEY, a.seconds, a.work))
        key = tenant_key(port)
        rows.append(measure("flywheel, tenant key, SQLite", port, key, a.seconds, a.work))
        put_group(port, up)
        rows.append(measure("flywheel, tenant key, SQLite, two-member group", port, key, a.seconds, a.work, GROUP))
        group_ab = group_rounds(a, up, port, key)
        stop(procs.pop())
        base = a.postgres.rsplit("/", 1)[0]
        sh("psql", a.postgres, "-q", "-c", f"CREATE DATABASE {scratch}", stdout=subprocess.DEVNULL)
        fw, port = start_flywheel(a.flywheel, up, f"{base}/{scratch}", a.work, "fw-postgres")
        procs.append(fw)
        rows.append(measure("flywheel, tenant key, PostgreSQL", port, tenant_key(port), a.seconds, a.work))
        stop(procs.pop())
        if a.baseline:
            result_ab = ab_rounds(a, up, procs)
        if not a.skip_litellm and ensure_litellm(a.litellm_venv):
            lite, port = start_litellm(a.litellm_venv, up, a.work)
            procs.append(lite)
            rows.append(measure("litellm proxy, master key", port, "sk-bench-master", a.seconds, a.work))
            rows.append(measure("litellm router, two deployments", port, "sk-bench-master", a.seconds, a.work,
                                GROUP))
    finally:
        for p in procs:
            stop(p)
        subprocess.run(["psql", a.postgres, "-q", "-c", f"DROP DATABASE IF EXISTS {scratch} WITH (FORCE)"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    direct = rows[0]
    by = {r["target"]: r for r in rows}
    admin_row = by["flywheel, admin key (no metering)"]
    result = {"rows": rows, "ratios": {}}
    if a.baseline:
        result["baseline_ab"] = result_ab
        result["ratios"].update(result_ab["ratios"])
    for r in rows[1:]:
        r["added_p50_ms"] = round(r["p50_ms"] - direct["p50_ms"], 3)
        r["added_p99_ms"] = round(r["p99_ms"] - direct["p99_ms"], 3)
    for db in ("SQLite", "PostgreSQL"):
        row = by.get(f"flywheel, tenant key, {db}")
        if row:
            result["ratios"][f"metering_overhead_p50_us_{db.lower()}"] = round(
                (row["p50_ms"] - admin_row["p50_ms"]) * 1000)
    group = by.get("flywheel, tenant key, SQLite, two-member group")
    single = by.get("flywheel, tenant key, SQLite")
    if group and single:
        # The goal's figure, from the alternating rounds; the sequential rows' ratio beside it.
        result["group_rounds"] = group_ab
        result["ratios"]["group_added_p50_over_single"] = group_ab["group_added_p50_over_single"]
        result["ratios"]["group_added_p50_over_single_sequential_rows"] = round(
            group["added_p50_ms"] / max(single["added_p50_ms"], 0.001), 2)
        result["ratios"]["group_rps_over_single"] = round(group["rps_c32"] / single["rps_c32"], 2)
    lite_router = by.get("litellm router, two deployments")
    if group and lite_router:
        result["ratios"]["rps_flywheel_group_over_litellm_router"] = round(
            group["rps_c32"] / lite_router["rps_c32"], 2)
    lite = by.get("litellm proxy, master key")
    if lite:
        fw = by["flywheel, tenant key, SQLite"]
        result["ratios"]["rps_flywheel_metered_over_litellm"] = round(fw["rps_c32"] / lite["rps_c32"], 2)
        result["ratios"]["added_p50_litellm_over_flywheel"] = round(
            lite["added_p50_ms"] / max(fw["added_p50_ms"], 0.001), 1)
    result["date"] = time.strftime("%Y-%m-%d")
    result["machine"] = f"{os.cpu_count()} vCPU"
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
    print("| target | p50 ms | p99 ms | added p50 ms | added p99 ms | req/s (32 conns) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['target']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r.get('added_p50_ms', 0):.3f} | "
              f"{r.get('added_p99_ms', 0):.3f} | {r['rps_c32']:.0f} |")
    for k, v in result["ratios"].items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
