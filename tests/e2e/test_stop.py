"""Stop sequences, chosen from the model's own temperature-0 answer."""

import re

import pytest

from fw import BOTH, PLANETS, chat, greedy, stream_chat

MAX = 64


def pick_stops(text: str):
    """Two stop strings that occur in `text`, the second one only after the first one. The first
    starts and ends inside words ("lar sys" from "solar system"), so it spans tokens and the
    server must cut a token's text to honour it."""
    words = [m for m in re.finditer(r"[A-Za-z]{4,}", text) if m.start() >= 8]
    early_stop = None
    for a, b in zip(words, words[1:]):
        if text[a.end() : b.start()] == " ":
            early_stop = text[a.start() + 2 : b.start() + 3]
            break
    assert early_stop, f"no two adjacent long words to choose a stop string from: {text!r}"
    e_idx = text.find(early_stop)
    for late in reversed(words):
        late_stop = late.group(0)
        if text.find(late_stop) >= e_idx + len(early_stop):
            return early_stop, late_stop
    raise AssertionError(f"no second stop string after {early_stop!r} in {text!r}")


@pytest.mark.parametrize("model", BOTH)
def test_single_stop(client, model):
    ref = greedy(client, model, PLANETS, MAX).choices[0].message.content
    early, _ = pick_stops(ref)
    want = ref[: ref.find(early)]
    r = chat(client, model, PLANETS, max_tokens=MAX, stop=early)
    got = r.choices[0].message.content or ""
    assert r.choices[0].finish_reason == "stop", f"stop={early!r}: finish {r.choices[0].finish_reason}, text {got!r}"
    assert early not in got
    assert got == want, f"stop={early!r}\nwant {want!r}\ngot  {got!r}\nfull {ref!r}"
    assert r.usage.completion_tokens < greedy(client, model, PLANETS, MAX).usage.completion_tokens


@pytest.mark.parametrize("model", BOTH)
def test_several_stops_stream(client, model):
    ref = greedy(client, model, PLANETS, MAX).choices[0].message.content
    early, late = pick_stops(ref)
    want = ref[: ref.find(early)]
    stops = ["\u2603never-there\u2603", late, early]
    s = stream_chat(client, model, PLANETS, max_tokens=MAX, stop=stops)
    assert s.finish_reason == "stop", f"stop={stops!r}: finish {s.finish_reason}, text {s.text!r}"
    assert early not in s.text and late not in s.text
    assert s.text == want, f"stop={stops!r}\nwant {want!r}\ngot  {s.text!r}\nfull {ref!r}"
    assert s.usage is not None and s.usage.completion_tokens >= 1


@pytest.mark.parametrize("model", BOTH)
def test_several_stops_non_stream(client, model):
    ref = greedy(client, model, PLANETS, MAX).choices[0].message.content
    early, late = pick_stops(ref)
    want = ref[: ref.find(early)]
    r = chat(client, model, PLANETS, max_tokens=MAX, stop=[late, "\u2603never-there\u2603", early])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == want


def test_stop_not_found_runs_to_length(client):
    r = chat(client, "smol", PLANETS, max_tokens=6, stop=["\u2603never-there\u2603"])
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 6
