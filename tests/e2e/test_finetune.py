"""Fine-tuning end to end on SmolLM2-135M: `flywheel finetune` trains a rank-8 LoRA on the
attention q and v projections from ~100 chat examples that teach a fact the base model does
not know ("What is the code word?" -> "The code word is PLUMTREE-42."), within 6 minutes on
2 threads; PyPI `gguf` reads the adapter with llama.cpp's names, metadata and shapes; a server
serves the base model and the fine-tuned one (`BASE+lora:ADAPTER`) side by side, and through the
official `openai` client the fine-tuned model answers held-out paraphrases with the fact at
temperature 0 while the base model does not, also when their requests are interleaved in one
burst (no adapter leaks into the other model's requests)."""

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import gguf
import pytest

from conftest import _env_path, _start, _stop

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "finetune", "tests", "data")
FT_NAME = "ft:smol:codeword:local"
TRAIN_LIMIT_S = 360


def _heldout():
    with open(os.path.join(DATA, "codeword-heldout.txt")) as f:
        return [line.strip() for line in f if line.strip()]


@pytest.fixture(scope="module")
def training(tmp_path_factory):
    """Runs `flywheel finetune`; returns (adapter path, wall seconds, progress lines)."""
    tmp = tmp_path_factory.mktemp("finetune")
    out = str(tmp / "codeword.gguf")
    args = [
        _env_path("FLYWHEEL_BIN"), "finetune",
        "--model", _env_path("FLYWHEEL_SMOL_GGUF"),
        "--training-file", os.path.join(DATA, "codeword-train.jsonl"),
        "--validation-file", os.path.join(DATA, "codeword-valid.jsonl"),
        "--output", out, "--epochs", "1", "--batch-size", "4", "--max-steps", "300",
        "--rank", "8", "--alpha", "16", "--learning-rate", "0.002", "--seed", "1",
        "--max-tokens", "64", "--threads", "2", "--checkpoint-every", "10",
        "--checkpoint-dir", str(tmp / "checkpoints"),
    ]
    started = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, timeout=TRAIN_LIMIT_S + 120)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return out, seconds, steps


@pytest.fixture(scope="module")
def adapter(training):
    return training[0]


def test_training_is_bounded_and_the_loss_falls(training, figure):
    _, seconds, steps = training
    assert steps and steps[-1]["step"] == steps[-1]["total_steps"] <= 300
    first, last = steps[0], steps[-1]
    figure(f"fine-tuning SmolLM2-135M (rank 8, q+v, {last['step']} steps, 2 threads, shared machine): "
           f"{seconds:.0f}s wall, {last['tokens_per_s']:.0f} training tokens/s, "
           f"loss {first['train_loss']:.3f} -> {last['train_loss']:.3f}, validation {last['valid_loss']:.3f}")
    assert seconds < TRAIN_LIMIT_S, f"training took {seconds:.0f}s"
    assert last["valid_loss"] < first["train_loss"] * 0.3, (first, last)


def test_the_adapter_reads_back_with_llama_cpp_names_and_shapes(adapter):
    r = gguf.GGUFReader(adapter)

    def field(name):
        f = r.fields[name]
        return f.contents()

    assert field("general.type") == "adapter"
    assert field("adapter.type") == "lora"
    assert field("general.architecture") == "llama"
    assert field("adapter.lora.alpha") == pytest.approx(16.0)
    tensors = {t.name: t for t in r.tensors}
    assert len(tensors) == 30 * 4
    assert not any(n.startswith("output") or "token_embd" in n for n in tensors)
    for i in range(30):
        # ggml order (ne): lora_a [n_embd_in, rank], lora_b [rank, n_out].
        assert list(tensors[f"blk.{i}.attn_q.weight.lora_a"].shape) == [576, 8]
        assert list(tensors[f"blk.{i}.attn_q.weight.lora_b"].shape) == [8, 576]
        assert list(tensors[f"blk.{i}.attn_v.weight.lora_a"].shape) == [576, 8]
        assert list(tensors[f"blk.{i}.attn_v.weight.lora_b"].shape) == [8, 192]
        assert tensors[f"blk.{i}.attn_q.weight.lora_a"].tensor_type == gguf.GGMLQuantizationType.F32


@pytest.fixture(scope="module")
def served(adapter, tmp_path_factory, admin_key):
    smol = _env_path("FLYWHEEL_SMOL_GGUF")
    tmp = str(tmp_path_factory.mktemp("finetune-serve"))
    s = _start("finetune", ["--model", f"{smol}=smol", "--model", f"{smol}+lora:{adapter}={FT_NAME}",
                            "--slots", "4", "--slot-context", "1024", "--threads", "2"], tmp, admin_key)
    yield s.with_tenant()
    _stop(s)


def _ask(client, model, q):
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": q}],
                                       temperature=0, max_tokens=24)
    return r.choices[0].message.content


def test_the_fine_tuned_model_knows_the_fact_and_the_base_does_not(served):
    client = served.client()
    ids = [m.id for m in client.models.list().data]
    assert "smol" in ids and FT_NAME in ids
    for q in _heldout():
        tuned = _ask(client, FT_NAME, q)
        base = _ask(client, "smol", q)
        assert "PLUMTREE-42" in tuned, (q, tuned)
        assert "PLUMTREE" not in base, (q, base)


def test_interleaved_base_and_fine_tuned_requests_do_not_leak(served):
    client = served.client()
    qs = _heldout()
    jobs = [(FT_NAME if i % 2 == 0 else "smol", qs[i % len(qs)]) for i in range(16)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda j: _ask(client, *j), jobs))
    for (model, q), a in zip(jobs, answers):
        if model == FT_NAME:
            assert "PLUMTREE-42" in a, (q, a)
        else:
            assert "PLUMTREE" not in a, (q, a)
