"""Web console load figures, Flywheel beside LiteLLM's admin UI, in one run on loopback.

For each page, loaded with the browser's cache disabled (every byte fetched again) in Debian's
headless Chromium through Selenium (the e2e venv's):
  - interactive: the navigation's domInteractive (ms);
  - usable: when the page's first form control exists (ms since navigation start; a
    single-page app draws its form with script after the document is interactive);
  - bytes: everything transferred (navigation and resources).
Flywheel: the sign-in page (signed out: what a visitor gets first), the overview and the
playground (signed in as a developer). LiteLLM: its admin UI's first page (`/ui/`, the
login form; it needs a database for anything after that). The median of --runs loads each.
The goal (issue 20): first page interactive in < 300 ms, < 300 KB.

    bench/run console     (or python3 bench/console.py --flywheel BIN --litellm PATH)
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
from common import ADMIN_KEY, free_port, start_flywheel, stop, wait_health  # noqa: E402
from console_browser import By, new_browser  # noqa: E402

PASSWORD = "correct horse battery"

FIGURES_JS = """
const n = performance.getEntriesByType('navigation')[0];
const bytes = performance.getEntriesByType('resource').reduce((s, r) => s + (r.transferSize || 0),
                                                              n.transferSize || 0);
return [n.domInteractive, n.loadEventEnd, bytes];
"""


def measure(d, url, runs):
    """Median figures of `runs` cold loads of `url`."""
    interactive, usable, loaded, sizes = [], [], [], []
    for _ in range(runs):
        d.get("about:blank")
        d.get(url)
        deadline = time.time() + 30
        while time.time() < deadline:
            t = d.execute_script(
                "return document.querySelector('input:not([type=hidden]), textarea, select')"
                " ? performance.now() : null")
            if t is not None:
                break
            time.sleep(0.01)
        else:
            raise RuntimeError(f"{url}: no form control within 30 s")
        time.sleep(0.3)  # late resources of a single-page app
        i, l, b = d.execute_script(FIGURES_JS)
        interactive.append(i)
        loaded.append(l)
        usable.append(t)
        sizes.append(b)
    med = statistics.median
    return {"interactive_ms": round(med(interactive), 1), "usable_ms": round(med(usable), 1),
            "load_ms": round(med(loaded), 1), "bytes": int(med(sizes)), "runs": runs}


def no_cache(d):
    d.execute_cdp_cmd("Network.enable", {})
    d.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})


def flywheel_pages(bin_path, gguf, work, runs):
    proc, port = start_flywheel(bin_path, gguf, 1, 2, 1024, work)
    base = f"http://127.0.0.1:{port}"
    try:
        h = {"authorization": f"Bearer {ADMIN_KEY}"}
        tenant = requests.post(base + "/admin/v1/tenants", json={"name": "bench"}, headers=h, timeout=30).json()
        r = requests.post(base + f"/admin/v1/tenants/{tenant['id']}/members", headers=h, timeout=30,
                          json={"email": "dev@bench.test", "password": PASSWORD, "role": "developer"})
        r.raise_for_status()
        d = new_browser()
        try:
            no_cache(d)
            out = {"sign_in": measure(d, base + "/console/sign-in", runs)}
            d.get(base + "/console/sign-in")
            d.find_element(By.CSS_SELECTOR, "input[name=email]").send_keys("dev@bench.test")
            d.find_element(By.CSS_SELECTOR, "input[name=password]").send_keys(PASSWORD)
            d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
            time.sleep(1)
            # The overview has no form control: measured by its chart's container instead.
            out["overview"] = measure_overview(d, base + "/console/overview", runs)
            out["playground"] = measure(d, base + "/console/playground", runs)
            return out
        finally:
            d.quit()
    finally:
        stop(proc)


def measure_overview(d, url, runs):
    figures = []
    for _ in range(runs):
        d.get("about:blank")
        d.get(url)
        if not d.find_elements(By.CSS_SELECTOR, "#grant-left"):
            raise RuntimeError(f"{url}: not signed in ({d.current_url})")
        i, l, b = d.execute_script(FIGURES_JS)
        figures.append((i, l, b))
    med = statistics.median
    return {"interactive_ms": round(med(f[0] for f in figures), 1), "usable_ms": round(med(f[0] for f in figures), 1),
            "load_ms": round(med(f[1] for f in figures), 1), "bytes": int(med(f[2] for f in figures)), "runs": runs}


def litellm_page(litellm, work, runs):
    port = free_port()
    cfg = os.path.join(work, "litellm.yaml")
    with open(cfg, "w") as f:
        f.write("model_list:\n  - model_name: m\n    litellm_params: {model: openai/m, "
                "api_base: \"http://127.0.0.1:9/v1\", api_key: x}\n"
                "general_settings: {master_key: sk-bench-master}\nlitellm_settings: {telemetry: false}\n")
    log = os.path.join(work, "litellm.log")
    proc = subprocess.Popen([litellm, "--config", cfg, "--host", "127.0.0.1", "--port", str(port),
                             "--num_workers", "1"], stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            env=dict(os.environ, LITELLM_LOG="ERROR"))
    try:
        wait_health(port, proc, log, timeout=300, path="/health/liveliness")
        d = new_browser()
        try:
            no_cache(d)
            return {"login": measure(d, f"http://127.0.0.1:{port}/ui/", runs)}
        finally:
            d.quit()
    finally:
        stop(proc)


def version(litellm):
    python = os.path.join(os.path.dirname(litellm), "python")
    r = subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                       capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flywheel", required=True)
    ap.add_argument("--model", required=True, help="a GGUF for the playground's model list")
    ap.add_argument("--litellm", help="the litellm executable (its venv's bin/litellm); omitted: Flywheel alone")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--out", default="bench/results/console.json")
    a = ap.parse_args()
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="fw-bench-console-") as work:
        fw = flywheel_pages(a.flywheel, a.model, work, a.runs)
        ll = litellm_page(a.litellm, work, a.runs) if a.litellm else None
    result = {"date": time.strftime("%Y-%m-%d"), "browser": "Debian chromium (headless), cache disabled",
              "flywheel": fw}
    for name, f in fw.items():
        print(f"flywheel {name:10s} interactive {f['interactive_ms']:7.1f} ms  usable {f['usable_ms']:7.1f} ms  "
              f"load {f['load_ms']:7.1f} ms  {f['bytes'] / 1024:8.1f} KiB")
    if ll:
        result["litellm"] = dict(ll, version=version(a.litellm))
        f = ll["login"]
        print(f"litellm  {'login':10s} interactive {f['interactive_ms']:7.1f} ms  usable {f['usable_ms']:7.1f} ms  "
              f"load {f['load_ms']:7.1f} ms  {f['bytes'] / 1024:8.1f} KiB")
        first = fw["sign_in"]
        result["ratios"] = {
            "first_page_usable_vs_litellm": round(first["usable_ms"] / max(f["usable_ms"], 0.1), 3),
            "first_page_bytes_vs_litellm": round(first["bytes"] / max(f["bytes"], 1), 4),
        }
        print(f"first page: usable {result['ratios']['first_page_usable_vs_litellm']}x LiteLLM's, "
              f"bytes {result['ratios']['first_page_bytes_vs_litellm']}x")
    result["goal_met"] = all(p["usable_ms"] < 300 and p["bytes"] < 300 * 1024 for p in fw.values())
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"[bench] console done in {time.time() - t0:.0f} s -> {a.out}")


if __name__ == "__main__":
    main()
