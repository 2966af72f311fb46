#!/usr/bin/env python3
"""One picture of every Flywheel/anchor ratio in bench/results/*.json: bench/results/ratios.png.

Each bar is Flywheel's advantage over the anchor of that figure, oriented so that right of 1 is
better for Flywheel (for throughputs Flywheel/anchor, for latencies anchor/Flywheel), on a log
scale; a black tick marks the issue's goal where it names one. Figures the run did not produce
are left out. matplotlib comes from PyPI into its own venv (cached under ~/.cache/flywheel).
"""

import argparse
import glob
import json
import os
import subprocess
import sys

MATPLOTLIB = "matplotlib==3.9.2"


def ensure_venv(venv):
    python = os.path.join(venv, "bin", "python")
    probe = [python, "-c", "import matplotlib"]
    if os.path.exists(python) and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"[bench] installing {MATPLOTLIB} into {venv} (pip)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", MATPLOTLIB], check=True)
    return python


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def bars(results):
    """(group, label, advantage, goal advantage or None) for every figure present."""
    out = []
    short = {"qwen2.5-coder-0.5b-q4_k_m": "Qwen 0.5B", "smollm2-135m-q4_1": "SmolLM2 135M"}
    for path in sorted(glob.glob(os.path.join(results, "engine-*.json"))):
        d = load(path)
        if not d:
            continue
        name = short.get(d.get("model", ""), d.get("model", "?"))
        r = d.get("ratio", {})
        if "single_stream_decode_vs_llama_bench_tg128" in r:
            out.append(("engine", f"{name}: 1 stream vs llama-bench tg128",
                        r["single_stream_decode_vs_llama_bench_tg128"], 0.95))
        if "multi_total_vs_batched_bench_S" in r:
            out.append(("engine", f"{name}: 16 streams vs llama-batched-bench",
                        r["multi_total_vs_batched_bench_S"], None))
    for path in sorted(glob.glob(os.path.join(results, "serving-*.json"))):
        d = load(path)
        if not d:
            continue
        name = short.get(d.get("model", ""), d.get("model", "?"))
        for level, row in sorted((d.get("levels") or {}).items(), key=lambda kv: int(kv[0])):
            r = row.get("ratio", {})
            sixteen = level == "16"
            if r.get("output_tok_s"):
                out.append(("serving", f"{name} c={level}: output tok/s", r["output_tok_s"],
                            1.25 if sixteen else None))
            if r.get("ttft_p50_s"):
                out.append(("serving", f"{name} c={level}: TTFT p50", 1 / r["ttft_p50_s"],
                            1 / 0.8 if sixteen else None))
            if r.get("itl_p50_s"):
                out.append(("serving", f"{name} c={level}: inter-token p50", 1 / r["itl_p50_s"], None))
        prefix = d.get("prefix") or {}
        if prefix.get("ratio", {}).get("warm_ttft_p50"):
            out.append(("serving", f"{name}: warm prefix TTFT p50", 1 / prefix["ratio"]["warm_ttft_p50"], None))
    g = load(os.path.join(results, "gateway.json"))
    if g:
        r = g.get("ratios", {})
        if r.get("rps_flywheel_metered_over_litellm"):
            out.append(("gateway", "metered req/s vs LiteLLM", r["rps_flywheel_metered_over_litellm"], 20.0))
        if r.get("added_p50_litellm_over_flywheel"):
            out.append(("gateway", "added p50 latency vs LiteLLM", r["added_p50_litellm_over_flywheel"], None))
    h = load(os.path.join(results, "hub.json"))
    if h and h.get("ratio"):
        out.append(("hub", "500 MB download vs nginx", h["ratio"], None))
    t = load(os.path.join(results, "tools.json"))
    if t:
        r = t.get("ratios", {})
        for cat in ("simple", "multiple", "parallel", "parallel_multiple"):
            v = r.get(f"bfcl_{cat}_accuracy")  # None when llama-server scored 0
            if v is not None:  # a log scale has no 0: Flywheel at 0 is drawn at 0.05
                out.append(("tools", f"BFCL {cat}: accuracy vs llama-server" + (" (0; drawn at 0.05)" if v < 0.05 else ""),
                            max(v, 0.05), 1.0))
        if r.get("constrained_flywheel_over_llama_server"):
            out.append(("tools", "json_schema decode vs llama-server", r["constrained_flywheel_over_llama_server"], 1.0))
        if r.get("constrained_over_unconstrained_flywheel"):
            out.append(("tools", "json_schema decode vs Flywheel unconstrained", r["constrained_over_unconstrained_flywheel"], 0.9))
    s = load(os.path.join(results, "transcribe.json"))
    if s and s.get("ratio"):
        out.append(("speech", "transcription speed vs faster-whisper", s["ratio"], s.get("goal", 0.8)))
    e = load(os.path.join(results, "embeddings.json"))
    for suffix, label in (("", "F32"), ("_q8_0", "Q8_0")):
        v = (e or {}).get("ratios", {}).get("embeddings_inputs_per_s_over_sentence_transformers" + suffix)
        if v:
            out.append(("embeddings", f"inputs/s vs sentence-transformers ({label} weights)", v, 2.0))
    c = load(os.path.join(results, "console.json"))
    if c and c.get("ratios"):
        r = c["ratios"]  # Flywheel/LiteLLM: smaller is better, so drawn inverted
        if r.get("first_page_usable_vs_litellm"):
            out.append(("console", "first page usable vs LiteLLM UI", 1 / r["first_page_usable_vs_litellm"], None))
        if r.get("first_page_bytes_vs_litellm"):
            out.append(("console", "first page bytes vs LiteLLM UI", 1 / r["first_page_bytes_vs_litellm"], None))
    f = load(os.path.join(results, "fleet.json"))
    if f and f.get("ratios"):
        r = f["ratios"]  # Flywheel over the static fleet (or over itself without the batch)
        for key, label, smaller_is_better, goal in (
                ("core_s_per_mtok_flywheel_over_static", "core-s per 1M tokens vs static fleet", True, 0.6),
                ("slo_fraction_flywheel_over_static", "requests with TTFT ≤ 2 s vs static fleet", False, 1.0),
                ("ttft_p99_with_batch_over_without", "TTFT p99 without vs with a batch", True, 1.1),
                ("day_core_s_per_mtok_flywheel_over_static_separate_batch",
                 "day's core-s per 1M tokens vs static + batch replica", True, 0.7)):
            if r.get(key):
                out.append(("fleet", label, 1 / r[key] if smaller_is_better else r[key],
                            1 / goal if smaller_is_better else goal))
    return out


def draw(rows, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"engine": "#4C72B0", "serving": "#55A868", "gateway": "#C44E52", "hub": "#8172B2", "tools": "#CCB974",
               "speech": "#64B5CD", "embeddings": "#8C8C8C", "console": "#DD8452", "fleet": "#937860"}
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(rows) + 1.4))
    ys = list(range(len(rows)))[::-1]
    for y, (group, label, adv, goal) in zip(ys, rows):
        # Bars grow from 1 (parity) towards the advantage, leftwards when Flywheel is behind.
        ax.barh(y, adv - 1, left=1, color=colours[group], height=0.6)
        ax.text(adv * (1.03 if adv >= 1 else 0.97), y, f"{adv:.2f}×", va="center",
                ha="left" if adv >= 1 else "right", fontsize=8)
        if goal:
            ax.plot([goal, goal], [y - 0.4, y + 0.4], color="black", linewidth=2)
    ax.set_xscale("log")
    ax.set_xlim(min(0.4, min(adv for _, _, adv, _ in rows) * 0.7), 40)
    ax.axvline(1.0, color="grey", linewidth=1, linestyle="--")
    ax.set_yticks(ys, [label for _, label, _, _ in rows], fontsize=8)
    ax.set_xlabel("Flywheel's advantage over the anchor (right of 1 = Flywheel better; black tick = goal)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    ax.legend(handles, list(colours), loc="lower right", fontsize=8)
    ax.set_title("Flywheel vs anchors, same machine, same run (bench/results)", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--venv", default=os.path.expanduser("~/.cache/flywheel/bench-plot"))
    ap.add_argument("--in-venv", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if not a.in_venv:
        python = ensure_venv(a.venv)
        sys.exit(subprocess.run([python, __file__, "--results", a.results, "--in-venv"]).returncode)
    rows = bars(a.results)
    if not rows:
        print(f"[bench] no results in {a.results} to chart; run bench/run first", file=sys.stderr)
        sys.exit(1)
    png = os.path.join(a.results, "ratios.png")
    draw(rows, png)
    print(f"[bench] chart of {len(rows)} ratios: {png}", file=sys.stderr)


if __name__ == "__main__":
    main()
