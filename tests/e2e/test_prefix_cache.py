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


def test_running_sequence_prefix_is_shared(client):
    """A prompt that extends the prompt of a request still running reuses that request's KV
    (copied into another slot), not only the KV a finished request left behind."""
    import secrets
    import threading

    unique = secrets.token_hex(6)  # no finished slot can hold this prefix
    rng = random.Random(unique)
    prompt = f"[{unique}] " + " ".join(rng.choice(NOUNS + ADJS + VERBS) for _ in range(300))
    started = threading.Event()
    done = {}

    def long_runner():
        stream = client.completions.create(model="tiny", prompt=prompt, max_tokens=600, temperature=0,
                                           stream=True, stream_options={"include_usage": True})
        try:
            for ch in stream:
                if ch.choices and ch.choices[0].text:
                    started.set()
                if ch.usage is not None:
                    done["usage"] = ch.usage
        finally:
            stream.close()
            started.set()

    t = threading.Thread(target=long_runner)
    t.start()
    try:
        assert started.wait(60), "the long request never produced a token"
        assert "usage" not in done, "the long request ended before the second one could share it"
        r = client.completions.create(model="tiny", prompt=prompt + " and then", max_tokens=4, temperature=0)
        first = done.get("usage")
        assert first is None, "the long request ended too early for this test to mean anything"
        cached = r.usage.prompt_tokens_details.cached_tokens
        assert cached >= r.usage.prompt_tokens - 8, (
            f"only {cached} of {r.usage.prompt_tokens} prompt tokens were reused from the running request"
        )
    finally:
        t.join(120)
    assert done["usage"].completion_tokens == 600
