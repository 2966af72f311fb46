#!/usr/bin/env python3
"""The PyTorch + peft anchor of bench/finetune.py (run in its own venv: torch, transformers, peft,
gguf). Trains the same rank-R LoRA on attention q and v of the same GGUF (dequantized to F32 by
transformers' GGUF loader), on the same chat examples rendered with the model's own template, loss
on the assistant tokens only, right-padded batches, AdamW, one epoch; prints one JSON object:
{"steps", "tokens_seen", "seconds", "tokens_per_s", "first_loss", "last_loss", "versions"}.
Tokens seen are the unpadded example tokens of every step, as Flywheel counts them."""

import argparse
import json
import os
import random
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--learning-rate", type=float, default=2e-3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    import peft
    import torch
    import transformers

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    folder, name = os.path.split(os.path.abspath(a.gguf))
    tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
    model = peft.get_peft_model(model, peft.LoraConfig(r=a.rank, lora_alpha=a.alpha, lora_dropout=0.0,
                                                       target_modules=["q_proj", "v_proj"], bias="none"))
    examples = []
    with open(a.data) as f:
        for line in f:
            if not line.strip():
                continue
            messages = json.loads(line)["messages"]
            prompt = tok.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True)
            full = tok.apply_chat_template(messages, tokenize=True)
            full = full[: a.max_tokens]
            labels = [-100] * min(len(prompt), len(full)) + full[len(prompt):]
            examples.append((full, labels))
    random.Random(a.seed).shuffle(examples)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=a.learning_rate)
    model.train()
    seen, losses = 0, []
    started = time.monotonic()
    for i in range(0, len(examples), a.batch_size):
        batch = examples[i:i + a.batch_size]
        t = max(len(ids) for ids, _ in batch)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        ids = torch.tensor([x + [pad] * (t - len(x)) for x, _ in batch])
        labels = torch.tensor([y + [-100] * (t - len(y)) for _, y in batch])
        mask = torch.tensor([[1] * len(x) + [0] * (t - len(x)) for x, _ in batch])
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        seen += sum(len(x) for x, _ in batch)
        losses.append(float(out.loss))
    seconds = time.monotonic() - started
    print(json.dumps({
        "steps": len(losses), "tokens_seen": seen, "seconds": round(seconds, 2),
        "tokens_per_s": round(seen / seconds, 1), "first_loss": round(losses[0], 4), "last_loss": round(losses[-1], 4),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
    }))


if __name__ == "__main__":
    main()
