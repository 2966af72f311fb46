"""Token log-probabilities (issue 15) on Qwen 2.5 at temperature 0: chat's `logprobs` /
`top_logprobs`, whole and streamed, and the legacy completions' `logprobs`, checked against a
second computation (the same prompt rendered by hand through `/v1/completions`) and through an
upstream server; bad values get their 400.
"""

import math

import openai
import pytest

MESSAGES = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Name three colours."}]
# Qwen 2.5's ChatML rendering of MESSAGES with the generation prompt.
RENDERED = ("<|im_start|>system\nYou are terse.<|im_end|>\n"
            "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n")
MAX = 12
TOL = 2e-3  # the same logits computed in another batch may differ in the last bits


def _chat(client, **kw):
    return client.chat.completions.create(model="qwen", messages=MESSAGES, temperature=0, max_tokens=MAX,
                                          logprobs=True, top_logprobs=5, **kw)


def test_chat_logprobs_are_the_greedy_tokens_own(client):
    r = _chat(client)
    entries = r.choices[0].logprobs.content
    # Every token has an entry but an end of turn (which has no text).
    ended = r.choices[0].finish_reason == "stop"
    assert len(entries) == r.usage.completion_tokens - (1 if ended else 0)
    assert "".join(e.token for e in entries) == r.choices[0].message.content
    for e in entries:
        assert len(e.top_logprobs) == 5
        # Greedy: the chosen token is the most likely one, with its log-probability.
        assert e.top_logprobs[0].token == e.token and e.top_logprobs[0].logprob == e.logprob
        assert e.logprob <= 0 and bytes(e.bytes).decode("utf-8", "replace") == e.token
        lps = [t.logprob for t in e.top_logprobs]
        assert lps == sorted(lps, reverse=True)
        assert sum(math.exp(x) for x in lps) <= 1 + 1e-4


def test_streamed_logprobs_equal_the_whole_ones(client):
    whole = _chat(client).choices[0].logprobs.content
    streamed, text = [], ""
    for chunk in _chat(client, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
            streamed += chunk.choices[0].logprobs.content
    assert [e.token for e in streamed] == [e.token for e in whole]
    assert "".join(e.token for e in streamed) == text
    for a, b in zip(streamed, whole):
        assert abs(a.logprob - b.logprob) < TOL


def test_completions_logprobs_match_chat_on_the_same_prompt(client):
    chat = _chat(client).choices[0].logprobs.content
    r = client.completions.create(model="qwen", prompt=RENDERED, temperature=0, max_tokens=MAX, logprobs=3)
    lp = r.choices[0].logprobs
    assert lp.tokens == [e.token for e in chat]
    for got, want in zip(lp.token_logprobs, chat):
        assert abs(got - want.logprob) < TOL
    assert all(len(top) == 3 for top in lp.top_logprobs)
    assert lp.text_offset == [sum(len(t.encode()) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    streamed = []
    for chunk in client.completions.create(model="qwen", prompt=RENDERED, temperature=0, max_tokens=MAX,
                                           logprobs=0, stream=True):
        if chunk.choices and chunk.choices[0].logprobs:
            streamed += chunk.choices[0].logprobs.tokens
    assert streamed == lp.tokens


def test_logprobs_pass_through_an_upstream(client, client2):
    direct = _chat(client).choices[0].logprobs.content
    r = client2.chat.completions.create(model="remote-qwen", messages=MESSAGES, temperature=0, max_tokens=MAX,
                                        logprobs=True, top_logprobs=2)
    through = r.choices[0].logprobs.content
    assert [e.token for e in through] == [e.token for e in direct]
    assert all(abs(a.logprob - b.logprob) < TOL and len(a.top_logprobs) == 2 for a, b in zip(through, direct))


@pytest.mark.parametrize("kw, param", [
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"logprobs": "yes"}, "logprobs"),
])
def test_bad_logprobs_are_refused_by_name(client, kw, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="qwen", messages=MESSAGES, max_tokens=1, **kw)
    assert e.value.body["param"] == param


def test_completions_logprobs_above_five_are_refused(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="qwen", prompt="Hi", max_tokens=1, logprobs=6)
    assert e.value.body["param"] == "logprobs"
