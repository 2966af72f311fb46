"""External OpenAI-compatible backend: server 2 proxies `remote-smol` to server 1's `smol`."""

import openai
import pytest

from fw import CAPITAL, PLANETS, chat, greedy, metric, stream_chat

MAX = 32


def test_models_list(client2):
    ids = [m.id for m in client2.models.list().data]
    assert "remote-smol" in ids, ids


def test_stream_through_upstream(client, client2):
    ref = greedy(client, "smol", PLANETS, MAX)
    s = stream_chat(client2, "remote-smol", PLANETS, max_tokens=MAX)
    want = ref.choices[0].message.content
    assert s.text == want, f"via upstream: {s.text!r}\ndirect:       {want!r}"
    assert s.finish_reason == ref.choices[0].finish_reason
    assert s.usage is not None, "no usage chunk through the upstream"
    assert (s.usage.prompt_tokens, s.usage.completion_tokens, s.usage.total_tokens) == (
        ref.usage.prompt_tokens,
        ref.usage.completion_tokens,
        ref.usage.total_tokens,
    ), f"{s.usage} vs {ref.usage}"
    assert s.chunks[-1].choices == []


def test_non_stream_through_upstream(client, client2):
    ref = greedy(client, "smol", CAPITAL, MAX)
    r = chat(client2, "remote-smol", CAPITAL, max_tokens=MAX)
    assert r.choices[0].message.content == ref.choices[0].message.content
    assert r.model == "remote-smol", f"response names model {r.model!r}"
    assert r.usage.prompt_tokens == ref.usage.prompt_tokens
    assert r.usage.completion_tokens == ref.usage.completion_tokens


def test_completions_through_upstream(client, client2):
    ref = client.completions.create(model="smol", prompt="The capital of France is", max_tokens=8, temperature=0)
    r = client2.completions.create(model="remote-smol", prompt="The capital of France is", max_tokens=8, temperature=0)
    assert r.choices[0].text == ref.choices[0].text
    assert r.usage.completion_tokens == ref.usage.completion_tokens


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_error_passes_through(client2, stream):
    with pytest.raises(openai.BadRequestError) as e:
        client2.chat.completions.create(
            model="remote-smol", messages=[{"role": "user", "content": "hello " * 5000}], max_tokens=4, stream=stream
        )
    assert e.value.code == "context_length_exceeded", e.value.body


def test_unknown_model_on_server2(client2):
    with pytest.raises(openai.NotFoundError) as e:
        chat(client2, "smol-not-here", CAPITAL, max_tokens=4)
    assert e.value.code == "model_not_found", e.value.body


def _upstream_requests(server) -> float:
    return sum(
        metric(server.metrics(), "flywheel_http_requests_total", 0, endpoint="/v1/chat/completions", model="smol", status=s)
        for s in ("200", "400", "402", "403", "429")
    )


@pytest.mark.parametrize("stream", [False, True])
def test_a_tenant_that_cannot_pay_never_reaches_the_upstream(server, upstream_server, stream):
    broke = upstream_server.new_tenant(f"broke-upstream-{stream}", grant_tokens=0, free_tier_only=True)
    key = upstream_server.new_key(broke)["key"]
    before = _upstream_requests(server)
    with pytest.raises(openai.PermissionDeniedError):
        upstream_server.client(api_key=key).chat.completions.create(
            model="remote-smol", messages=CAPITAL, max_tokens=4, stream=stream
        )
    assert _upstream_requests(server) == before, "the upstream served a request nobody can pay for"

