"""Reasoning split from the answer (issues 15 and 16), on `tiny-think`: a random-weight model whose
template thinks as DeepSeek-R1 distills' does (its generation prompt opens `<think>`), and which
writes random words and `</think>` (a user-defined token); at temperature 0 it thinks a few words,
closes the block and goes on.

The same generation, as a raw completion of the rendered prompt, is the reference: what comes
before its first `</think>` is the reasoning and what follows is the answer, on chat
(`reasoning_content`, whole and streamed), the Responses API (a `reasoning` item) and the
Messages API (a `thinking` block); completion tokens count both.
"""

import anthropic
import pytest

MODEL = "tiny-think"
ASK = [{"role": "user", "content": "Think, then say something."}]
# What the template renders for ASK: BOS, the user turn, the assistant turn that opens <think>.
PROMPT = ("<|endoftext|><|start_header_id|>user<|end_header_id|>\n\nThink, then say something.<|eot_id|>"
          "<|start_header_id|>assistant<|end_header_id|>\n\n<think>\n")
SAMPLING = {"temperature": 0, "max_tokens": 64}


@pytest.fixture(scope="module")
def reference(client):
    """The raw generation: (reasoning, answer, completion tokens)."""
    raw = client.completions.create(model=MODEL, prompt=PROMPT, **SAMPLING)
    text = raw.choices[0].text
    assert "</think>" in text, f"the model must close its thinking: {text!r}"
    thought, answer = text.split("</think>", 1)
    assert thought.strip() and answer.strip(), f"the model must write both parts: {text!r}"
    return thought.strip(), answer.lstrip(), raw.usage.completion_tokens


def test_chat_splits_reasoning_from_content(client, reference):
    thought, answer, tokens = reference
    r = client.chat.completions.create(model=MODEL, messages=ASK, **SAMPLING)
    message = r.choices[0].message
    assert message.reasoning_content == thought
    assert message.content == answer
    assert r.usage.completion_tokens == tokens


def test_streamed_chat_sends_reasoning_deltas_first(client, reference):
    thought, answer, tokens = reference
    stream = client.chat.completions.create(model=MODEL, messages=ASK, stream=True,
                                            stream_options={"include_usage": True}, **SAMPLING)
    reasoning, content, order, usage = "", "", [], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        piece = getattr(delta, "reasoning_content", None)
        if piece:
            reasoning += piece
            order.append("r")
        if delta.content:
            content += delta.content
            order.append("c")
    assert (reasoning, content) == (thought, answer)
    assert order == sorted(order, key=lambda k: k != "r"), "every reasoning delta comes before the content"
    assert usage.completion_tokens == tokens


def test_a_thinking_history_keeps_only_the_answer(client, reference):
    """An assistant turn sent back with its thinking renders as the answer alone (the template
    drops what precedes `</think>`), so the next turn's prompt is the same either way."""
    thought, answer, _ = reference
    turns = [ASK[0], None, {"role": "user", "content": "Again."}]
    counts = []
    for past in (f"<think>{thought}</think>{answer}", answer):
        turns[1] = {"role": "assistant", "content": past}
        r = client.chat.completions.create(model=MODEL, messages=turns, max_tokens=1, temperature=0)
        counts.append(r.usage.prompt_tokens)
    assert counts[0] == counts[1]


def test_responses_put_reasoning_in_a_reasoning_item(client, reference):
    thought, answer, tokens = reference
    kw = {"temperature": 0, "max_output_tokens": SAMPLING["max_tokens"]}
    r = client.responses.create(model=MODEL, input=ASK[0]["content"], store=False, **kw)
    kinds = [item.type for item in r.output]
    assert kinds == ["reasoning", "message"], kinds
    assert r.output[0].content[0].type == "reasoning_text"
    assert r.output[0].content[0].text == thought
    assert r.output_text == answer
    assert r.usage.output_tokens == tokens

    events = list(client.responses.create(model=MODEL, input=ASK[0]["content"], store=False, stream=True, **kw))
    deltas = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    assert deltas == thought
    done = [e for e in events if e.type == "response.output_item.done"]
    assert [e.item.type for e in done] == ["reasoning", "message"]
    assert [e.output_index for e in done] == [0, 1]
    # The model never stops by itself: the answer ends at max_output_tokens.
    ended = events[-1]
    assert ended.type == "response.incomplete" and r.status == "incomplete"
    assert ended.response.output_text == answer


def test_messages_put_reasoning_in_a_thinking_block(server, reference):
    thought, answer, tokens = reference
    claude = anthropic.Anthropic(base_url=server.url, api_key=server.key, max_retries=0, timeout=120)
    kw = {"model": MODEL, "messages": ASK, "max_tokens": SAMPLING["max_tokens"],
          "extra_body": {"temperature": 0}}
    try:
        m = claude.messages.create(**kw)
        assert [b.type for b in m.content] == ["thinking", "text"]
        assert m.content[0].thinking == thought
        assert m.content[1].text == answer
        assert m.usage.output_tokens == tokens
        with claude.messages.stream(**kw) as stream:
            final = stream.get_final_message()
        assert [b.type for b in final.content] == ["thinking", "text"]
        assert (final.content[0].thinking, final.content[1].text) == (thought, answer)
    finally:
        claude.close()
