"""Several answers per request, `n` (issue 15), on Qwen 2.5: chat and completions, whole and
streamed. The answers share the prompt's KV (the engine computes it once, the other answers
copy it) and the prompt is billed once; `n` above the limit and `n` through an upstream server
get their 400.
"""

import secrets

import openai
import pytest

from fw import metric, settled_bill

MESSAGES = [{"role": "user", "content": "Write a one-line poem about the sea."}]
MAX = 12


def test_three_chat_answers_bill_the_prompt_once(client, server):
    # A prompt no earlier request left in the cache: only the first answer computes it.
    fresh = [{"role": "user", "content": f"Write a one-line poem about the sea, number {secrets.token_hex(8)}."}]
    cached_before = metric(server.metrics(), "flywheel_prompt_tokens_cached_total", 0, model="qwen")
    r = client.chat.completions.create(model="qwen", messages=fresh, n=3, max_tokens=MAX,
                                       temperature=1.0, seed=11)
    cached = metric(server.metrics(), "flywheel_prompt_tokens_cached_total", 0, model="qwen") - cached_before
    assert [c.index for c in r.choices] == [0, 1, 2]
    texts = [c.message.content for c in r.choices]
    assert all(texts) and len(set(texts)) > 1, texts  # drawn with different seeds
    assert all(c.finish_reason in ("stop", "length") for c in r.choices)
    assert 3 <= r.usage.completion_tokens <= 3 * MAX
    # The second and third answers copied the first one's prompt KV: all of it but the last token.
    assert cached >= 2 * (r.usage.prompt_tokens - 1), (cached, r.usage)
    bill = settled_bill(server, r.id)
    assert bill["state"] == "settled", bill
    assert bill["billed"]["prompt_tokens"] == r.usage.prompt_tokens, bill
    assert bill["billed"]["completion_tokens"] == r.usage.completion_tokens, bill
    one = client.chat.completions.create(model="qwen", messages=fresh, max_tokens=1, temperature=0)
    assert r.usage.prompt_tokens == one.usage.prompt_tokens


def test_greedy_answers_are_equal_and_stream_by_index(client):
    whole = client.chat.completions.create(model="qwen", messages=MESSAGES, n=2, max_tokens=MAX, temperature=0)
    assert whole.choices[0].message.content == whole.choices[1].message.content
    texts, finished, usage = {0: "", 1: ""}, {}, None
    for chunk in client.chat.completions.create(model="qwen", messages=MESSAGES, n=2, max_tokens=MAX,
                                                temperature=0, stream=True,
                                                stream_options={"include_usage": True}):
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            if c.finish_reason:
                finished[c.index] = c.finish_reason
    assert texts == {0: whole.choices[0].message.content, 1: whole.choices[1].message.content}
    assert set(finished) == {0, 1}
    assert usage.prompt_tokens == whole.usage.prompt_tokens
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_completions_answer_n_times(client):
    r = client.completions.create(model="qwen", prompt="The sea is", n=2, max_tokens=MAX, temperature=0,
                                  logprobs=1)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].text == r.choices[1].text
    assert r.choices[0].logprobs.tokens == r.choices[1].logprobs.tokens
    streamed = {0: "", 1: ""}
    for chunk in client.completions.create(model="qwen", prompt="The sea is", n=2, max_tokens=MAX,
                                           temperature=0, stream=True):
        for c in chunk.choices:
            streamed[c.index] += c.text
    assert streamed == {0: r.choices[0].text, 1: r.choices[1].text}


def test_too_many_answers_are_refused(client, client2):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="qwen", messages=MESSAGES, n=17, max_tokens=1)
    assert e.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as e:
        client2.chat.completions.create(model="remote-qwen", messages=MESSAGES, n=2, max_tokens=1)
    assert e.value.body["param"] == "n"
