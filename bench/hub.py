"""Hub download throughput: one 500 MB file over loopback from Flywheel's
`/{repo}/resolve/main/{file}` vs nginx serving the same bytes as a static file, in the same run.
Each side is read once with Python (sha256 of the body must match the file), then timed REPEAT
times with `curl -o /dev/null` (one connection; the best run counts), so the client is not the
bottleneck. The server's RSS is sampled during the timed runs. nginx (Debian package `nginx`) is installed with apt-get if missing and runs as
this user's process with a temporary config on a free port.

  python3 bench/hub.py --flywheel BIN [--size-mb 500] [--repeat 3] [--out FILE]
"""

import argparse
import hashlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import ADMIN_KEY, free_port, stop, wait_health  # noqa: E402


def nginx_bin():
    path = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(path):
        subprocess.run(["apt-get", "install", "-y", "-q", "nginx"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return path


def start_nginx(root, work):
    port = free_port()
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off; worker_processes 1; pid {work}/nginx.pid; error_log {work}/nginx.err;
events {{ worker_connections 64; }}
http {{ access_log off; sendfile on; tcp_nopush on; client_body_temp_path {work}/ngx-body;
  proxy_temp_path {work}/ngx-proxy; fastcgi_temp_path {work}/ngx-fcgi; uwsgi_temp_path {work}/ngx-uwsgi;
  scgi_temp_path {work}/ngx-scgi; default_type application/octet-stream;
  server {{ listen 127.0.0.1:{port}; root {root}; location /health {{ return 200 "ok"; }} }} }}
""")
    proc = subprocess.Popen([nginx_bin(), "-c", conf, "-p", work], stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(work, "nginx.log"), "w"))
    wait_health(port, proc, os.path.join(work, "nginx.err"))
    return proc, port


def start_flywheel(bin_path, work):
    port = free_port()
    log = os.path.join(work, "flywheel.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env["FLYWHEEL_ADMIN_KEY"] = ADMIN_KEY
    proc = subprocess.Popen([bin_path, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir",
                             os.path.join(work, "fw-data")], stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, env=env)
    wait_health(port, proc, log)
    return proc, port


def sha256_of(port, path):
    """sha256 and length of one GET of `path` (the correctness check; not timed)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.request("GET", path)
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError(f"GET {path}: HTTP {r.status}")
    h, n = hashlib.sha256(), 0
    while block := r.read(1 << 20):
        n += len(block)
        h.update(block)
    return h.hexdigest(), n


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def timed_download(port, path, pid):
    """Seconds for one `curl` GET of `path` (body discarded) and the server's peak RSS (KiB)."""
    proc = subprocess.Popen(["curl", "-sS", "-o", "/dev/null", "-w", "%{time_total} %{size_download}",
                             f"http://127.0.0.1:{port}{path}"], stdout=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, rss_kib(pid))
        time.sleep(0.05)
    out = proc.stdout.read().split()
    if proc.returncode != 0 or len(out) != 2:
        raise RuntimeError(f"curl failed ({proc.returncode}): {out}")
    return float(out[0]), int(out[1]), peak


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flywheel", required=True)
    ap.add_argument("--size-mb", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="fw-bench-hub-")
    os.chmod(work, 0o755)  # nginx started as root reads as its worker user
    procs = []
    try:
        root = os.path.join(work, "www")
        os.makedirs(os.path.join(root, "files"))
        path = os.path.join(root, "files", "big.bin")
        with open(path, "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(args.size_mb):
                f.write(block)
        fw, fw_port = start_flywheel(args.flywheel, work)
        procs.append(fw)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")},
               "FLYWHEEL_URL": f"http://127.0.0.1:{fw_port}", "FLYWHEEL_API_KEY": ADMIN_KEY}
        subprocess.run([args.flywheel, "push", os.path.join(root, "files"), "bench/big"], env=env,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ngx, ngx_port = start_nginx(root, work)
        procs.append(ngx)
        with open(path, "rb") as f:
            want = hashlib.file_digest(f, "sha256").hexdigest()
        results = {}
        for name, proc, port, url in [("flywheel", fw, fw_port, "/bench/big/resolve/main/big.bin"),
                                      ("nginx", ngx, ngx_port, "/files/big.bin")]:
            got, n = sha256_of(port, url)
            if got != want or n != args.size_mb << 20:
                raise RuntimeError(f"{name} served different bytes: {n} bytes, sha256 {got}")
            base_rss = rss_kib(proc.pid)
            runs = [timed_download(port, url, proc.pid) for _ in range(args.repeat)]
            best = min(r[0] for r in runs)
            results[name] = {"best_s": best, "mb_per_s": n / best / 1e6, "bytes": n,
                             "rss_growth_mib": max(r[2] for r in runs) / 1024 - base_rss / 1024}
        ratio = results["flywheel"]["mb_per_s"] / results["nginx"]["mb_per_s"]
        print("| server | best of %d | MB/s | RSS growth while serving |" % args.repeat)
        print("|---|---|---|---|")
        for name, r in results.items():
            print(f"| {name} | {r['best_s']:.2f} s | {r['mb_per_s']:.0f} | {r['rss_growth_mib']:.1f} MiB |")
        print(f"| ratio flywheel/nginx | | {ratio:.2f} | |")
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"size_mb": args.size_mb, "results": results, "ratio": ratio}, f, indent=2)
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
