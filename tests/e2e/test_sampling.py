"""Sampling parameters: seeds, temperature, top_k / min_p extensions, penalties."""

from fw import chat, greedy

STORY = [{"role": "user", "content": "Tell me a short story about a cat who finds a key."}]
N = 40


def text(r):
    return r.choices[0].message.content


def test_same_seed_same_text(client):
    a = chat(client, "smol", STORY, max_tokens=N, temperature=0.8, seed=1234)
    b = chat(client, "smol", STORY, max_tokens=N, temperature=0.8, seed=1234)
    assert text(a) == text(b), f"same seed, different texts:\n{text(a)!r}\n{text(b)!r}"


def test_different_seeds_differ(client):
    a = chat(client, "smol", STORY, max_tokens=N, temperature=0.8, seed=1)
    b = chat(client, "smol", STORY, max_tokens=N, temperature=0.8, seed=2)
    c = chat(client, "smol", STORY, max_tokens=N, temperature=0.8, seed=3)
    assert len({text(a), text(b), text(c)}) >= 2, f"seeds 1, 2, 3 all gave {text(a)!r}"
    assert text(a) != text(b), f"seeds 1 and 2 both gave {text(a)!r}"


def test_sampling_is_not_greedy(client):
    """Temperature 1.5 over 40 tokens with three seeds: at least one differs from the greedy answer."""
    g = text(greedy(client, "smol", STORY, N))
    outs = [text(chat(client, "smol", STORY, max_tokens=N, temperature=1.5, seed=s)) for s in (7, 8, 9)]
    assert any(o != g for o in outs), f"temperature 1.5 always gave the greedy answer {g!r}"


def test_top_k_1_is_greedy(client):
    g = text(greedy(client, "smol", STORY, N))
    r = chat(client, "smol", STORY, max_tokens=N, temperature=1.5, seed=99, extra_body={"top_k": 1})
    assert text(r) == g, f"top_k=1 should be greedy:\n{text(r)!r}\n{g!r}"


def test_min_p_1_is_greedy(client):
    g = text(greedy(client, "smol", STORY, N))
    r = chat(client, "smol", STORY, max_tokens=N, temperature=1.5, seed=98, extra_body={"min_p": 1.0})
    assert text(r) == g, f"min_p=1 should be greedy:\n{text(r)!r}\n{g!r}"


def test_penalties_and_top_p_accepted(client):
    r = chat(
        client,
        "smol",
        STORY,
        max_tokens=12,
        temperature=0.7,
        top_p=0.9,
        seed=5,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        extra_body={"top_k": 40, "min_p": 0.05},
    )
    assert text(r)
    assert r.usage.completion_tokens <= 12


def test_frequency_penalty_changes_repetitive_output(client):
    """A strong frequency penalty must change a greedy answer that repeats itself."""
    msgs = [{"role": "user", "content": "Repeat the word 'apple' twenty times, separated by spaces."}]
    plain = text(chat(client, "qwen", msgs, max_tokens=30))
    assert plain.lower().count("apple") >= 5, f"test setup: qwen did not repeat: {plain!r}"
    pen = text(chat(client, "qwen", msgs, max_tokens=30, frequency_penalty=2.0))
    assert pen != plain, f"frequency_penalty=2 had no effect: {pen!r}"
    assert pen.lower().count("apple") < plain.lower().count("apple"), f"{pen!r} vs {plain!r}"


def test_ignore_eos_runs_to_max_tokens(client):
    """A short answer normally stops at end-of-sequence; with the ignore_eos extension it runs on."""
    short = chat(client, "qwen", [{"role": "user", "content": "Say only: hi"}], max_tokens=60, temperature=0)
    assert short.choices[0].finish_reason == "stop", short
    assert short.usage.completion_tokens < 60
    long = chat(client, "qwen", [{"role": "user", "content": "Say only: hi"}], max_tokens=60, temperature=0,
                extra_body={"ignore_eos": True})
    assert long.choices[0].finish_reason == "length", long
    assert long.usage.completion_tokens == 60
