#!/usr/bin/env python3
"""Tool calling and structured output: Flywheel vs llama-server (--jinja) on the same GGUF.

1. BFCL (Berkeley Function Calling Leaderboard), non-live AST categories simple (simple_python),
   multiple, parallel, parallel_multiple, from the PyPI package bfcl-eval: each question goes to
   /v1/chat/completions with its functions as OpenAI `tools` (converted by BFCL's own
   `convert_to_tool`, as its OpenAI Chat Completions handler does), tool_choice auto,
   temperature 0, and the reply is graded by BFCL's own per-entry AST grading
   (`eval_runner._evaluate_single_ast_entry`: the OpenAI FC handler's `decode_ast`, then
   `ast_checker`). Also counted: tool calls whose arguments are not JSON or fail the tool's JSON
   Schema (python-jsonschema), and replies with no tool call.
2. Cost of constraint: decode tok/s of one streamed chat request under a bounded
   `response_format: json_schema`, vs the same request unconstrained (ignore_eos, the same
   completion length) on Flywheel, and vs the constrained request on llama-server.

bfcl-eval and its imports live in a cached venv (~/.cache/flywheel/venv-bench-tools); the script
re-runs itself there. Servers run one at a time. Writes JSON to --out, a markdown table to stdout.
"""

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ADMIN_KEY, start_flywheel, stop, stream  # noqa: E402
from serving import start_llama_server  # noqa: E402

BFCL = "bfcl-eval==2026.3.23"
# What importing bfcl_eval's AST checker and eval runner needs (its handlers import every
# vendor SDK); its sentence-transformers/faiss (torch) are only for the web-search and memory
# categories and are left out. Versions pinned as resolved on 2026-12-05.
BFCL_DEPS = ["anthropic==2.17.0", "boto3==1.44.18", "cohere==5.18.0", "datamodel-code-generator==0.25.7",
             "filelock==3.20.0", "google-genai==3.6.1", "jsonschema==4.26.0", "mistralai==1.7.0",
             "numpy==1.26.4", "openai==3.63.0", "overrides==7.7.0", "pandas==2.2.3", "qwen-agent==0.0.34",
             "soundfile==0.14.0", "tenacity==9.1.4", "tree-sitter==0.21.3", "tree-sitter-java==0.21.0",
             "tree-sitter-javascript==0.21.4", "writer-sdk==3.0.0"]
CATEGORIES = {"simple": "simple_python", "multiple": "multiple", "parallel": "parallel",
              "parallel_multiple": "parallel_multiple"}
# BFCL model whose checker settings match an OpenAI-style FC model: function names with "." are
# sent as "_" (convert_to_tool) and mapped back by ast_checker (underscore_to_dot).
CHECKER_MODEL = "gpt-4o-2024-11-20-FC"
SERVERS = ("flywheel", "llama-server")

# A bounded schema: every string has a maxLength, the array a maxItems, no free keys; so the
# grammar itself ends the object.
PROFILE_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "city": {"type": "string", "maxLength": 30},
        "role": {"type": "string", "enum": ["engineer", "designer", "manager", "analyst"]},
        "skills": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 4},
        "address": {"type": "object",
                    "properties": {"street": {"type": "string", "maxLength": 40},
                                   "zip": {"type": "string", "maxLength": 10}},
                    "required": ["street", "zip"], "additionalProperties": False},
        "bio": {"type": "string", "maxLength": 160},
    },
    "required": ["name", "city", "role", "skills", "address", "bio"],
    "additionalProperties": False,
}
PROFILE_PROMPT = [{"role": "user", "content": "Invent a fictional employee and describe them as a JSON object "
                   "with name, city, role, skills, address (street, zip) and a short bio."}]


def ensure_venv(venv):
    python = os.path.join(venv, "bin", "python")
    probe = [python, "-c", "import jsonschema, bfcl_eval.eval_checker.eval_runner"]
    env = dict(os.environ, OPENAI_API_KEY="unused")
    if os.path.exists(python) and subprocess.run(probe, capture_output=True, env=env).returncode == 0:
        return python
    print(f"[tools] installing {BFCL} into {venv} (pip)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    pip = [os.path.join(venv, "bin", "pip"), "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + ["--no-deps", BFCL], check=True)
    subprocess.run(pip + BFCL_DEPS, check=True)
    subprocess.run(probe, check=True, env=env)
    return python


def post(port, body, timeout=600):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", "/v1/chat/completions", json.dumps(body),
                 {"content-type": "application/json", "authorization": f"Bearer {ADMIN_KEY}"})
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    try:
        return resp.status, json.loads(raw)
    except ValueError:
        return resp.status, raw.decode(errors="replace")


# ---------------------------------------------------------------- BFCL

def load_bfcl(sample):
    from bfcl_eval.constants.enums import ModelStyle
    from bfcl_eval.constants.type_mappings import GORILLA_TO_OPENAPI
    from bfcl_eval.model_handler.utils import convert_to_tool
    from bfcl_eval.utils import load_dataset_entry, load_ground_truth_entry

    cases = {}
    for cat, bfcl_cat in CATEGORIES.items():
        entries = load_dataset_entry(bfcl_cat)  # with BFCL's language hint, as its runs send it
        truth = {g["id"]: g["ground_truth"] for g in load_ground_truth_entry(bfcl_cat)}
        entries = entries if sample <= 0 else entries[:sample]  # file order: ids 0, 1, 2, ...
        cases[cat] = [{"entry": e, "truth": truth[e["id"]],
                       "tools": convert_to_tool(e["function"], GORILLA_TO_OPENAPI, ModelStyle.OPENAI_COMPLETIONS)}
                      for e in entries]
    return cases


def ask_bfcl(port, case, max_tokens):
    body = {"model": "m", "messages": case["entry"]["question"][0], "tools": case["tools"],
            "tool_choice": "auto", "temperature": 0, "max_tokens": max_tokens}
    t0 = time.perf_counter()
    status, resp = post(port, body)
    return {"id": case["entry"]["id"], "status": status, "response": resp, "s": time.perf_counter() - t0}


def calls_in_text(text):
    """Calls a reply wrote as text instead of tool calls: JSON {"name", "arguments"} objects (or lists
    of them), bare or in ``` fences, as [{name: arguments string}]; None when there are none."""
    if not isinstance(text, str):
        return None
    blocks = re.findall(r"```(?:json)?\s*(.*?)```", text, re.S) or [text]
    calls = []
    for b in blocks:
        try:
            obj = json.loads(b)
        except ValueError:
            return None
        for o in obj if isinstance(obj, list) else [obj]:
            if not (isinstance(o, dict) and isinstance(o.get("name"), str) and isinstance(o.get("arguments"), dict)):
                return None
            calls.append({o["name"]: json.dumps(o["arguments"])})
    return calls or None


def grade(case, answer, handler):
    """BFCL's verdict plus our call-validity counts for one reply."""
    import jsonschema
    from bfcl_eval.constants.enums import Language, ReturnFormat
    from bfcl_eval.eval_checker.eval_runner import _evaluate_single_ast_entry

    out = {"id": answer["id"], "http_error": answer["status"] != 200, "calls": 0, "invalid": 0, "s": answer["s"]}
    if out["http_error"]:
        out.update(valid=False, valid_lenient=False, error=str(answer["response"])[:500])
        return out
    msg = answer["response"]["choices"][0]["message"]
    calls = msg.get("tool_calls") or []
    out["no_call"] = not calls
    out["finish_reason"] = answer["response"]["choices"][0].get("finish_reason")
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in case["tools"]}
    for c in calls:
        out["calls"] += 1
        fn = c.get("function") or {}
        try:
            args = json.loads(fn.get("arguments"))
            jsonschema.validate(args, schemas[fn.get("name")])
        except (TypeError, ValueError, KeyError, jsonschema.ValidationError) as e:
            out["invalid"] += 1
            out.setdefault("invalid_calls", []).append({"call": fn, "why": str(e)[:300]})
    # What BFCL's OpenAI Chat Completions handler records: [{name: arguments string}] or the text.
    result = [{c["function"]["name"]: c["function"]["arguments"]} for c in calls] if calls else msg.get("content")
    cat = out["id"].rsplit("_", 1)[0]
    try:
        verdict = _evaluate_single_ast_entry(handler, out["id"], result, case["truth"], case["entry"], CHECKER_MODEL,
                                             cat, Language.PYTHON, ReturnFormat.PYTHON)
    except Exception as e:  # the checker itself failed on this output: count it wrong, keep going
        verdict = {"valid": False, "error_type": f"checker raised {e!r}"}
    out["valid"] = out["valid_lenient"] = verdict["valid"]
    text_calls = None if calls else calls_in_text(msg.get("content"))
    if text_calls:  # not BFCL's score: what the checker says of calls written as JSON text
        out["valid_lenient"] = _evaluate_single_ast_entry(handler, out["id"], text_calls, case["truth"], case["entry"],
                                                          CHECKER_MODEL, cat, Language.PYTHON, ReturnFormat.PYTHON)["valid"]
    if not verdict["valid"]:
        out["error"] = verdict.get("error_type")
        out["model_result"] = result
    return out


def summarize(graded):
    n = len(graded)
    calls = sum(g["calls"] for g in graded)
    return {"questions": n, "accuracy": sum(g["valid"] for g in graded) / n,
            "accuracy_with_text_calls": sum(g["valid_lenient"] for g in graded) / n,
            "tool_calls": calls, "invalid_calls": sum(g["invalid"] for g in graded),
            "invalid_rate": sum(g["invalid"] for g in graded) / calls if calls else 0.0,
            "no_call_rate": sum(bool(g.get("no_call")) for g in graded) / n,
            "http_errors": sum(g["http_error"] for g in graded),
            "mean_s": sum(g["s"] for g in graded) / n}


# ---------------------------------------------------------------- cost of constraint

def decode_rate(port, body):
    """One streamed request: (completion tokens, decode tok/s from first token to the end, text)."""
    t0, arrivals, usage = stream(port, "/v1/chat/completions", body)
    n = (usage or {}).get("completion_tokens", 0)
    if not arrivals or n < 2:
        raise RuntimeError(f"stream gave {len(arrivals)} text chunks, usage {usage}")
    return n, (n - 1) / (usage["_end"] - arrivals[0])


def constraint_cost(port, server, repeats, max_tokens):
    constrained = {"model": "m", "messages": PROFILE_PROMPT, "temperature": 0, "max_tokens": max_tokens,
                   "response_format": {"type": "json_schema",
                                       "json_schema": {"name": "profile", "strict": True, "schema": PROFILE_SCHEMA}}}
    # Whether the grammar ends it (finish_reason stop) and its output parses: one non-streamed call.
    status, resp = post(port, constrained)
    if status != 200:
        raise RuntimeError(f"{server} constrained request: HTTP {status}: {str(resp)[:300]}")
    choice = resp["choices"][0]
    try:
        import jsonschema
        jsonschema.validate(json.loads(choice["message"]["content"]), PROFILE_SCHEMA)
        schema_ok = True
    except (ValueError, TypeError, jsonschema.ValidationError):
        schema_ok = False
    runs = [decode_rate(port, constrained) for _ in range(repeats)]
    r = {"finish_reason": choice.get("finish_reason"), "output_valid": schema_ok,
         "completion_tokens": runs[0][0], "constrained_tok_s": [x[1] for x in runs],
         "constrained_tok_s_median": statistics.median(x[1] for x in runs), "sample_output": choice["message"]["content"]}
    if server == "flywheel":
        plain = dict(constrained, max_tokens=r["completion_tokens"], ignore_eos=True)
        del plain["response_format"]
        runs = [decode_rate(port, plain) for _ in range(repeats)]
        r.update(unconstrained_completion_tokens=runs[0][0], unconstrained_tok_s=[x[1] for x in runs],
                 unconstrained_tok_s_median=statistics.median(x[1] for x in runs))
    return r


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--flywheel", required=True)
    ap.add_argument("--anchors", required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--sample", type=int, default=50, help="first N questions per category")
    ap.add_argument("--full", action="store_true", help="every question (1,000)")
    ap.add_argument("--max-tokens", type=int, default=512, help="per BFCL answer")
    ap.add_argument("--slots", type=int, default=1)
    ap.add_argument("--slot-context", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-bfcl", action="store_true")
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--venv", default=os.path.expanduser("~/.cache/flywheel/venv-bench-tools"))
    ap.add_argument("--in-venv", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if not a.in_venv:
        python = ensure_venv(a.venv)
        env = dict(os.environ, OPENAI_API_KEY="unused")  # the BFCL handler builds an (unused) client
        sys.exit(subprocess.run([python, os.path.abspath(__file__), *sys.argv[1:], "--in-venv"], env=env).returncode)

    from bfcl_eval.model_handler.api_inference.openai_completion import OpenAICompletionsHandler
    os.makedirs(a.work, exist_ok=True)
    start = time.time()
    sample = 0 if a.full else a.sample
    cases = {} if a.skip_bfcl else load_bfcl(sample)
    handler = OpenAICompletionsHandler(CHECKER_MODEL, 0.0, CHECKER_MODEL, True)
    report = {"gguf": os.path.basename(a.model), "bfcl_eval": BFCL, "threads": a.threads, "slots": a.slots,
              "slot_context": a.slot_context, "sample_per_category": sample or "all", "bfcl": {},
              "constraint": {}, "wall_s": {}}
    failures = {}
    for server in SERVERS:
        t0 = time.time()
        if server == "flywheel":
            proc, port = start_flywheel(a.flywheel, a.model, a.threads, a.slots, a.slot_context, a.work)
        else:
            proc, port, args = start_llama_server(a.anchors, a.model, a.threads, a.slots, a.slot_context, a.work)
            report["llama_server_args"] = args
        try:
            post(port, {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
            for cat, cs in cases.items():
                tc = time.time()
                graded = [grade(c, ask_bfcl(port, c, a.max_tokens), handler) for c in cs]
                s = summarize(graded)
                s["wall_s"] = time.time() - tc
                report["bfcl"].setdefault(cat, {})[server] = s
                failures.setdefault(server, {})[cat] = [g for g in graded if not g["valid"] or g["invalid"]]
                print(f"[tools] {server} {cat}: accuracy {s['accuracy']:.2f}, invalid {s['invalid_calls']}/"
                      f"{s['tool_calls']}, no call {s['no_call_rate']:.2f}, {s['wall_s']:.0f}s", file=sys.stderr)
            report["constraint"][server] = constraint_cost(port, server, a.repeats, 1024)
        finally:
            stop(proc)
        report["wall_s"][server] = time.time() - t0
    report["wall_s"]["total"] = time.time() - start
    with open(os.path.join(a.work, "bfcl-failures.json"), "w") as fh:
        json.dump(failures, fh, indent=1)

    ratios = {}
    for cat, pair in report["bfcl"].items():
        f, l = pair["flywheel"], pair["llama-server"]
        pair["accuracy_ratio"] = f["accuracy"] / l["accuracy"] if l["accuracy"] else None
        ratios[f"bfcl_{cat}_accuracy"] = pair["accuracy_ratio"]
    cf, cl = report["constraint"]["flywheel"], report["constraint"]["llama-server"]
    ratios["constrained_over_unconstrained_flywheel"] = cf["constrained_tok_s_median"] / cf["unconstrained_tok_s_median"]
    ratios["constrained_flywheel_over_llama_server"] = cf["constrained_tok_s_median"] / cl["constrained_tok_s_median"]
    report["ratios"] = ratios
    report["goals"] = {"bfcl_accuracy": "flywheel >= llama-server in every category", "invalid_rate": 0.0,
                       "constrained_over_unconstrained_flywheel": 0.9, "constrained_flywheel_over_llama_server": 1.0}

    print(f"| BFCL category (n/category: {sample or 'all'}) | Flywheel acc | llama-server acc | Flywheel invalid | "
          "llama-server invalid | Flywheel no_call | llama-server no_call | Flywheel HTTP errors | "
          "acc. counting calls written as text FW / LS |")
    print("|---|---|---|---|---|---|---|---|---|")
    for cat, pair in report["bfcl"].items():
        f, l = pair["flywheel"], pair["llama-server"]
        print(f"| {cat} | {f['accuracy']:.0%} | {l['accuracy']:.0%} | {f['invalid_rate']:.0%} ({f['invalid_calls']}/"
              f"{f['tool_calls']}) | {l['invalid_rate']:.0%} ({l['invalid_calls']}/{l['tool_calls']}) "
              f"| {f['no_call_rate']:.0%} | {l['no_call_rate']:.0%} | {f['http_errors']}/{f['questions']} "
              f"| {f['accuracy_with_text_calls']:.0%} / {l['accuracy_with_text_calls']:.0%} |")
    print("\n| constrained decode (median of 3) | tok/s | completion tokens | finish | ratio | goal |")
    print("|---|---|---|---|---|---|")
    print(f"| Flywheel, json_schema | {cf['constrained_tok_s_median']:.1f} | {cf['completion_tokens']} | "
          f"{cf['finish_reason']} | | |")
    print(f"| Flywheel, unconstrained (ignore_eos) | {cf['unconstrained_tok_s_median']:.1f} | "
          f"{cf['unconstrained_completion_tokens']} | | constrained/unconstrained "
          f"{ratios['constrained_over_unconstrained_flywheel']:.2f} | ≥ 0.9 |")
    print(f"| llama-server, json_schema | {cl['constrained_tok_s_median']:.1f} | {cl['completion_tokens']} | "
          f"{cl['finish_reason']} | Flywheel/llama-server {ratios['constrained_flywheel_over_llama_server']:.2f} | ≥ 1.0 |")
    print(f"\nwall time: {report['wall_s']['total']:.0f}s (Flywheel {report['wall_s']['flywheel']:.0f}s, "
          f"llama-server {report['wall_s']['llama-server']:.0f}s); failures in {a.work}/bfcl-failures.json")
    with open(a.out, "w") as fh:
        json.dump(report, fh, indent=2)


if __name__ == "__main__":
    sys.exit(main())
