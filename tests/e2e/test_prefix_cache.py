"""Prefix (KV) reuse across requests, visible as usage.prompt_tokens_details.cached_tokens."""

import random

from fw import chat

NOUNS = "lighthouse ledger harbor lantern orchard compass violin glacier meadow anchor quarry beacon".split()
ADJS = "orange quiet ancient silver hidden narrow gentle crimson hollow northern patient".split()
VERBS = "keeps guards counts paints carries mends watches sorts".split()


def long_system_prompt() -> str:
    rng = random.Random(424242)
    lines = ["You are an archivist. These are the catalogue notes; answer questions about them briefly."]
    for i in range(1, 63):
        lines.append(
            f"Note {i}: the {rng.choice(ADJS)} {rng.choice(NOUNS)} {rng.choice(VERBS)} "
            f"{rng.randint(2, 99)} {rng.choice(ADJS)} {rng.choice(NOUNS)}s near the {rng.choice(NOUNS)}."
        )
    return "\n".join(lines)


def test_prefix_reuse(client, qwen_tokenizer):
    system = long_system_prompt()
    n_system = len(qwen_tokenizer.encode(system, add_special_tokens=False).ids)
    assert n_system >= 1000, f"test setup: the system prompt is only {n_system} tokens"
    qa = [{"role": "system", "content": system}, {"role": "user", "content": "What does note 3 say? One sentence."}]
    qb = [{"role": "system", "content": system}, {"role": "user", "content": "How many notes are there?"}]

    r1 = chat(client, "qwen", qa, max_tokens=24)
    r2 = chat(client, "qwen", qa, max_tokens=24)
    r3 = chat(client, "qwen", qb, max_tokens=8)
    c1 = r1.usage.prompt_tokens_details.cached_tokens
    c2 = r2.usage.prompt_tokens_details.cached_tokens
    c3 = r3.usage.prompt_tokens_details.cached_tokens
    assert r1.usage.prompt_tokens >= n_system
    assert c1 < 100, f"first request reports {c1} cached tokens for a prompt never seen before"
    assert c2 >= 1000, f"repeated request: cached_tokens={c2} of {r2.usage.prompt_tokens}"
    assert c2 <= r2.usage.prompt_tokens
    t1, t2 = r1.choices[0].message.content, r2.choices[0].message.content
    assert t1 == t2, f"the answer changed when served from reused KV:\nfresh:  {t1!r}\ncached: {t2!r}"
    assert c3 >= 1000, f"same system prompt, other question: cached_tokens={c3} of {r3.usage.prompt_tokens}"
