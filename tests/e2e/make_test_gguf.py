#!/usr/bin/env python3
"""Write a tiny random-weight GGUF that proves chat templates come from the model.

    make_test_gguf.py [--tokenizer-from QWEN.gguf] [--template llama3|llama31-tools] OUT.gguf

* architecture `qwen2`, 2 layers, n_embd 64, 4 heads / 2 KV heads, ff 128, ctx 4096,
  F16 matrices and F32 norms/biases (every tensor llama.cpp's qwen2 loader needs,
  including the attention q/k/v biases);
* the tokenizer (`tokenizer.ggml.*`) copied verbatim from the real Qwen GGUF;
* a Llama-3-style (NOT ChatML) `tokenizer.chat_template`; with `--template llama31-tools`,
  one that offers tools as Llama 3.1's does (JSON calls `{"name", "parameters"}`), for
  grammar-constrained calls on a model that cannot call tools by itself.

The output layer only has weight on plain-word tokens (e.g. "Ġhello"); every other row,
including all special / end-of-generation tokens, is zero. The model therefore emits
readable words and practically never stops on its own: always bound max_tokens.

Deterministic (fixed seed): the same inputs give the same bytes. The file is written to
OUT.tmp and renamed, so reruns are idempotent and never leave a half-written model.
"""

import argparse
import os
import re
import sys

import numpy as np
import gguf

# Llama-3-style template. Only `{%-`/`-%}` whitespace control, so it renders the same
# with and without trim_blocks/lstrip_blocks.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{- raise_exception('Unsupported role: ' ~ message['role']) }}"
    "{%- endif %}"
    "{%- if message['role'] == 'system' and not loop.first %}"
    "{{- raise_exception('The system message must come first') }}"
    "{%- endif %}"
    "{{- '<|start_header_id|>' ~ message['role'] ~ '<|end_header_id|>\\n\\n' }}"
    "{{- message['content'] | trim }}"
    "{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)

# Llama-3.1-style tool template: the tools' JSON in the system turn, calls as JSON objects with
# "parameters", tool answers in `ipython` turns.
TOOLS_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if tools %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'To call a function, respond with JSON for a function call: "
    "{\"name\": function name, \"parameters\": dictionary of argument name and its value}.\\n\\n' }}"
    "{%- for t in tools %}{{- t | tojson }}{{- '\\n\\n' }}{%- endfor %}"
    "{{- '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'tool' %}"
    "{{- '<|start_header_id|>ipython<|end_header_id|>\\n\\n' ~ message['content'] ~ '<|eot_id|>' }}"
    "{%- elif message.tool_calls %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- for c in message.tool_calls %}"
    "{{- '{\"name\": \"' ~ c.function.name ~ '\", \"parameters\": ' ~ (c.function.arguments | tojson) ~ '}' }}"
    "{%- endfor %}"
    "{{- '<|eot_id|>' }}"
    "{%- else %}"
    "{{- '<|start_header_id|>' ~ message['role'] ~ '<|end_header_id|>\\n\\n' ~ (message['content'] | trim) ~ '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)
# A template that thinks, as DeepSeek-R1 distills' do: the generation prompt opens a `<think>`
# block, and past answers keep only what follows `</think>`.
THINK_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- set content = message['content'] %}"
    "{%- if message['role'] == 'assistant' and '</think>' in content %}"
    "{%- set content = content.split('</think>')[-1] %}"
    "{%- endif %}"
    "{{- '<|start_header_id|>' ~ message['role'] ~ '<|end_header_id|>\\n\\n' ~ (content | trim) ~ '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n<think>\\n' }}"
    "{%- endif %}"
)
TEMPLATES = {"llama3": CHAT_TEMPLATE, "llama31-tools": TOOLS_TEMPLATE, "think": THINK_TEMPLATE}

# The thinking model's `<think>` / `</think>` tokens take the places of two of Qwen's unused
# control tokens (`<|repo_name|>`, `<|file_sep|>`), as user-defined tokens (their text is output).
THINK_TOKENS = {151663: b"<think>", 151664: b"</think>"}
USER_DEFINED = 4
# The thinking model writes one of THINK_WORDS words or `</think>`, greedily a varied sequence
# (found by trying): every token embedding carries a constant in dimension 0, so the final norm's
# output is large there and the output rows' weight in it (THINK_BIAS) lifts these tokens far
# above every zero row; the rest of each row (THINK_SPREAD) varies the choice with the context.
THINK_WORDS = 24
THINK_CONSTANT = 8.0
THINK_BIAS = 3.0
THINK_SPREAD = 0.4

N_LAYER = 2
N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 2
N_FF = 128
N_CTX = 4096
SEED = 20240611

TOKENIZER_KEYS = [
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.add_bos_token",
]

WORD_TOKEN = re.compile(rb"^(\xc4\xa0)?[A-Za-z]{2,}$")  # optional "Ġ" (space) + letters


def default_qwen() -> str:
    cache = os.environ.get("FLYWHEEL_CACHE", os.path.expanduser("~/.cache/flywheel"))
    return os.environ.get(
        "FLYWHEEL_QWEN_GGUF", os.path.join(cache, "models", "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf")
    )


def read_tokenizer(path: str) -> dict:
    reader = gguf.GGUFReader(path)
    out = {}
    for key in TOKENIZER_KEYS:
        field = reader.get_field(key)
        if field is None:
            sys.exit(f"{path}: missing {key}")
        if key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"):
            out[key] = [bytes(field.parts[i]) for i in field.data]  # raw bytes, no re-decoding
        elif key == "tokenizer.ggml.token_type":
            out[key] = [int(field.parts[i][0]) for i in field.data]
        elif key in ("tokenizer.ggml.model", "tokenizer.ggml.pre"):
            out[key] = bytes(field.parts[field.data[0]]).decode("utf-8")
        elif key == "tokenizer.ggml.add_bos_token":
            out[key] = bool(field.parts[field.data[0]][0])
        else:
            out[key] = int(field.parts[field.data[0]][0])
    return out


def build(tok: dict, out_path: str, template: str = CHAT_TEMPLATE) -> None:
    rng = np.random.default_rng(SEED)
    thinks = template is THINK_TEMPLATE
    tokens = list(tok["tokenizer.ggml.tokens"])
    types = list(tok["tokenizer.ggml.token_type"])
    if thinks:
        for i, text in THINK_TOKENS.items():
            tokens[i], types[i] = text, USER_DEFINED
    n_vocab = len(tokens)
    head_dim = N_EMBD // N_HEAD
    kv_dim = head_dim * N_HEAD_KV

    def mat(rows: int, cols: int, std: float) -> np.ndarray:
        # numpy shape (rows, cols) is GGUF ne = [cols, rows]: llama.cpp's {n_in, n_out}.
        return (rng.standard_normal((rows, cols), dtype=np.float32) * std).astype(np.float16)

    def vec(n: int, std: float) -> np.ndarray:
        return (rng.standard_normal(n, dtype=np.float32) * std).astype(np.float32)

    tmp = out_path + ".tmp"
    w = gguf.GGUFWriter(tmp, "qwen2")
    w.add_name("Flywheel tiny random qwen2 with a Llama-3 template")
    w.add_description("Random weights for end-to-end tests; not a trained model.")
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_freq_base(1_000_000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)

    w.add_tokenizer_model(tok["tokenizer.ggml.model"])
    w.add_tokenizer_pre(tok["tokenizer.ggml.pre"])
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(tok["tokenizer.ggml.merges"])
    w.add_bos_token_id(tok["tokenizer.ggml.bos_token_id"])
    w.add_eos_token_id(tok["tokenizer.ggml.eos_token_id"])
    w.add_pad_token_id(tok["tokenizer.ggml.padding_token_id"])
    w.add_add_bos_token(tok["tokenizer.ggml.add_bos_token"])
    w.add_chat_template(template)

    embd = mat(n_vocab, N_EMBD, 1.0)
    if thinks:
        embd[:, 0] = THINK_CONSTANT
    w.add_tensor("token_embd.weight", embd)
    for i in range(N_LAYER):
        b = f"blk.{i}"
        w.add_tensor(f"{b}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(f"{b}.attn_q.weight", mat(N_EMBD, N_EMBD, 0.2))
        w.add_tensor(f"{b}.attn_q.bias", vec(N_EMBD, 0.1))
        w.add_tensor(f"{b}.attn_k.weight", mat(kv_dim, N_EMBD, 0.2))
        w.add_tensor(f"{b}.attn_k.bias", vec(kv_dim, 0.1))
        w.add_tensor(f"{b}.attn_v.weight", mat(kv_dim, N_EMBD, 0.2))
        w.add_tensor(f"{b}.attn_v.bias", vec(kv_dim, 0.1))
        w.add_tensor(f"{b}.attn_output.weight", mat(N_EMBD, N_EMBD, 0.2))
        w.add_tensor(f"{b}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(f"{b}.ffn_gate.weight", mat(N_FF, N_EMBD, 0.2))
        w.add_tensor(f"{b}.ffn_up.weight", mat(N_FF, N_EMBD, 0.2))
        w.add_tensor(f"{b}.ffn_down.weight", mat(N_EMBD, N_FF, 0.2))
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))

    # Output layer: weight only on ordinary plain-word tokens, so specials (EOS, EOT, ...)
    # get logit 0 against word logits spread ~N(0, 8): the model never ends on its own.
    words = np.array(
        [i for i, (t, ty) in enumerate(zip(tokens, types)) if ty == 1 and WORD_TOKEN.match(t)], dtype=np.int64
    )
    out = np.zeros((n_vocab, N_EMBD), dtype=np.float16)
    if thinks:
        chosen = np.append(words[:: len(words) // THINK_WORDS][:THINK_WORDS], max(THINK_TOKENS))
        rows = rng.standard_normal((len(chosen), N_EMBD), dtype=np.float32) * THINK_SPREAD
        rows[:, 0] = THINK_BIAS
        out[chosen] = rows.astype(np.float16)
        words = chosen
    else:
        out[words] = rng.standard_normal((len(words), N_EMBD), dtype=np.float32).astype(np.float16)
    w.add_tensor("output.weight", out)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, out_path)
    print(f"wrote {out_path} ({os.path.getsize(out_path):,} bytes, {len(words):,} word tokens)", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="output .gguf path")
    ap.add_argument("--tokenizer-from", default=default_qwen(), help="the real Qwen GGUF to copy the tokenizer from")
    ap.add_argument("--template", choices=sorted(TEMPLATES), default="llama3", help="the chat template to embed")
    args = ap.parse_args()
    build(read_tokenizer(args.tokenizer_from), args.out, TEMPLATES[args.template])


if __name__ == "__main__":
    main()
