"""Writes a tiny random-weight BERT cross-encoder (BertForSequenceClassification, one label) as
a Hugging Face directory (config.json, model.safetensors, tokenizer.json) for `flywheel convert`
to turn into a rank-pooling GGUF. Deterministic (fixed seed); the tokenizer is MiniLM's.

    python make_rank_model.py --tokenizer-from MINILM_DIR OUT_DIR
"""

import argparse
import json
import os
import shutil

import numpy as np
from safetensors.numpy import save_file

HIDDEN, FF, LAYERS, HEADS, POSITIONS = 32, 64, 2, 2, 512


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer-from", required=True, help="a directory with a WordPiece tokenizer.json")
    ap.add_argument("out")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    tok_src = os.path.join(args.tokenizer_from, "tokenizer.json")
    shutil.copy(tok_src, os.path.join(args.out, "tokenizer.json"))
    with open(tok_src) as f:
        vocab = len(json.load(f)["model"]["vocab"])
    config = {
        "architectures": ["BertForSequenceClassification"],
        "hidden_size": HIDDEN, "intermediate_size": FF, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "max_position_embeddings": POSITIONS, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "hidden_act": "gelu", "vocab_size": vocab,
        "id2label": {"0": "LABEL_0"}, "model_type": "bert",
    }
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f)
    rng = np.random.default_rng(7)

    def w(*shape):
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    t = {
        "bert.embeddings.word_embeddings.weight": w(vocab, HIDDEN),
        "bert.embeddings.position_embeddings.weight": w(POSITIONS, HIDDEN),
        "bert.embeddings.token_type_embeddings.weight": w(2, HIDDEN),
        "bert.embeddings.LayerNorm.weight": np.ones(HIDDEN, np.float32),
        "bert.embeddings.LayerNorm.bias": np.zeros(HIDDEN, np.float32),
        "bert.pooler.dense.weight": w(HIDDEN, HIDDEN),
        "bert.pooler.dense.bias": w(HIDDEN),
        "classifier.weight": w(1, HIDDEN),
        "classifier.bias": w(1),
    }
    for l in range(LAYERS):
        p = f"bert.encoder.layer.{l}."
        for name, (rows, cols) in {
            "attention.self.query": (HIDDEN, HIDDEN), "attention.self.key": (HIDDEN, HIDDEN),
            "attention.self.value": (HIDDEN, HIDDEN), "attention.output.dense": (HIDDEN, HIDDEN),
            "intermediate.dense": (FF, HIDDEN), "output.dense": (HIDDEN, FF),
        }.items():
            t[p + name + ".weight"] = w(rows, cols)
            t[p + name + ".bias"] = w(rows)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[p + norm + ".weight"] = np.ones(HIDDEN, np.float32)
            t[p + norm + ".bias"] = np.zeros(HIDDEN, np.float32)
    save_file(t, os.path.join(args.out, "model.safetensors"))


if __name__ == "__main__":
    main()
