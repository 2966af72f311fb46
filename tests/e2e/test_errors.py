"""OpenAI-shaped errors: status, `code`, `param`, through the SDK and raw HTTP."""

import time

import openai
import pytest
import requests

from fw import CAPITAL, chat

LONG = [{"role": "user", "content": "hello " * 5000}]  # > 4096 tokens for every model here


def check_shape(err: openai.APIStatusError):
    body = err.body
    assert isinstance(body, dict), f"error body is not the OpenAI error object: {err.response.text!r}"
    for key in ("message", "type", "code", "param"):
        assert key in body, f"error object lacks {key!r}: {body}"
    assert isinstance(body["message"], str) and body["message"], body
    assert isinstance(body["type"], str) and body["type"], body


def raw_error(resp: requests.Response) -> dict:
    try:
        body = resp.json()
    except ValueError:
        pytest.fail(f"error response is not JSON: {resp.status_code} {resp.text[:300]!r}")
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    err = body["error"]
    for key in ("message", "type", "code", "param"):
        assert key in err, f"error object lacks {key!r}: {body}"
    assert isinstance(err["message"], str) and err["message"], body
    return err


@pytest.mark.parametrize("stream", [False, True])
def test_unknown_model(client, stream):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=CAPITAL, max_tokens=4, stream=stream)
    assert e.value.status_code == 404
    assert e.value.code == "model_not_found", e.value.body
    check_shape(e.value)


def test_unknown_model_completions(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="no-such-model", prompt="hi", max_tokens=4)
    assert e.value.code == "model_not_found", e.value.body


@pytest.mark.parametrize("stream", [False, True])
def test_context_length_exceeded(client, stream):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="smol", messages=LONG, max_tokens=4, stream=stream)
    assert e.value.code == "context_length_exceeded", e.value.body
    check_shape(e.value)


def test_context_length_exceeded_completions(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="qwen", prompt="hello " * 5000, max_tokens=4)
    assert e.value.code == "context_length_exceeded", e.value.body


@pytest.mark.parametrize(
    "param,value",
    [
        ("temperature", 5),
        ("temperature", -0.5),
        ("top_p", 1.5),
        ("max_tokens", 0),
        ("max_tokens", -3),
        ("presence_penalty", 3.0),
        ("frequency_penalty", -2.5),
        ("n", 17),
        ("tools", [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]),
        ("response_format", "json"),
        ("min_p", 1.5),
        ("top_k", "many"),
        ("foo_bar_unknown", 1),
        ("messages", []),
    ],
    ids=lambda v: str(v)[:20],
)
def test_bad_parameter(client, param, value):
    kw = {"model": "smol", "messages": CAPITAL, "max_tokens": 4}
    if param in ("temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty", "n", "tools",
                 "response_format", "messages"):
        kw[param] = value
    else:
        kw["extra_body"] = {param: value}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**kw)
    check_shape(e.value)
    assert e.value.param == param, f"400 for {param}={value!r} should name it in `param`: {e.value.body}"


@pytest.mark.parametrize("param,value", [("temperature", 5), ("n", 17), ("foo_bar_unknown", True)])
def test_bad_parameter_completions(client, param, value):
    kw = {"model": "smol", "prompt": "hi", "max_tokens": 4}
    if param == "foo_bar_unknown":
        kw["extra_body"] = {param: value}
    else:
        kw[param] = value
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(**kw)
    assert e.value.param == param, e.value.body


def test_malformed_json(server):
    r = requests.post(
        server.url + "/v1/chat/completions",
        data=b'{"model": "smol", "messages": [',
        headers={**server.auth(), "Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 400, f"{r.status_code} {r.text[:300]}"
    err = raw_error(r)
    assert err["type"] == "invalid_request_error", err


def test_wrong_json_type(server):
    body = {"model": "smol", "messages": CAPITAL, "temperature": "hot"}
    r = requests.post(server.url + "/v1/chat/completions", json=body, headers=server.auth(), timeout=30)
    assert r.status_code == 400, f"{r.status_code} {r.text[:300]}"
    assert raw_error(r)["param"] == "temperature", r.text


def test_bad_role(client):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, "smol", [{"role": "wizard", "content": "hi"}], max_tokens=4)
    check_shape(e.value)


def test_template_exception_is_a_client_error(client):
    """The tiny model's own template raises for a system message that is not first: 400, not 500."""
    messages = [{"role": "user", "content": "hi"}, {"role": "system", "content": "late system"}]
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, "tiny", messages, max_tokens=2)
    check_shape(e.value)


def test_metrics_need_admin_key(server):
    r = requests.get(server.url + "/metrics", timeout=10)
    assert r.status_code == 401, r.text[:300]
    assert raw_error(r)["code"] == "invalid_api_key"
    r = requests.get(server.url + "/metrics", headers={"Authorization": "Bearer not-the-admin-key"}, timeout=10)
    assert r.status_code == 401, r.text[:300]
    assert raw_error(r)["code"] == "invalid_api_key"
    r = requests.get(server.url + "/metrics", headers={"Authorization": f"Bearer {server.admin_key}"}, timeout=10)
    assert r.status_code == 200
    assert "flywheel_" in r.text


def test_stop_sequence_flood_is_refused(client):
    """Long stop sequences cost every token of every tenant on the engine thread: bounded in bytes."""
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, "smol", CAPITAL, max_tokens=4, stop=["x" * 1_000_000] * 15)
    check_shape(e.value)
    assert e.value.param == "stop[0]", e.value.body
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, "smol", CAPITAL, max_tokens=4, stop=["y" * 200] * 16)
    assert e.value.param == "stop", e.value.body


def test_big_prompts_from_a_tenant_that_cannot_pay_or_is_over_rpm_are_refused_before_tokenizing(server):
    """Prompts of about a megabyte (tokenizing one takes a second or more) from a tenant that
    cannot pay or is over its RPM are refused at once, before the engine sees them; one too big
    for the model's context is refused as such, whoever sends it."""
    models = requests.get(server.url + "/v1/models", headers=server.auth(server.admin_key), timeout=30).json()
    context = next((m.get("context_length") for m in models["data"] if m["id"] == "smol"), None) or 4096
    # Just under the byte bound (256 bytes per context token), so only pre-admission refuses it.
    big = "hello " * (min(1024 * 1024, context * 256 * 9 // 10) // 6)
    huge = "hello " * (8 * 1024 * 1024 // 6)
    broke = server.new_tenant("broke-e2e", grant_tokens=0, free_tier_only=True)
    broke_key = server.new_key(broke, rpm=1)["key"]
    limited = server.new_tenant("limited-e2e", grant_tokens=1_000_000)
    limited_key = server.new_key(limited, rpm=1)["key"]
    url = server.url + "/v1/completions"
    ok = requests.post(url, json={"model": "smol", "prompt": "hi", "max_tokens": 1}, headers=server.auth(limited_key), timeout=60)
    assert ok.status_code == 200, ok.text[:300]
    r = requests.post(url, json={"model": "smol", "prompt": huge, "max_tokens": 1}, headers=server.auth(broke_key), timeout=60)
    assert r.status_code == 400 and raw_error(r)["code"] == "context_length_exceeded", r.text[:300]
    started = time.monotonic()
    for key, status, code in [(broke_key, 403, "permission_denied"), (limited_key, 429, "rate_limit_exceeded")]:
        for _ in range(4):
            r = requests.post(url, json={"model": "smol", "prompt": big, "max_tokens": 1}, headers=server.auth(key), timeout=60)
            assert r.status_code == status, f"{r.status_code} {r.text[:300]}"
            assert raw_error(r)["code"] == code, r.text[:300]
    elapsed = time.monotonic() - started
    assert elapsed < 8, f"8 refusals of ~1 MB prompts took {elapsed:.1f} s: were they tokenized?"
