"""Chat templates come from the model's GGUF: prompt_tokens equals our own Jinja render of the
template stored in the file, tokenised with the Qwen tokenizer (tiny uses Qwen's vocabulary)."""

import functools
import os

import gguf
import jinja2
import jinja2.ext
import jinja2.sandbox
import pytest

from fw import chat

MESSAGES = [
    {"role": "system", "content": "  You are a terse assistant. Answer in one word.\n"},
    {"role": "user", "content": "What colour is the sky on a clear day?  "},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "\nAnd grass?"},
]


@functools.lru_cache(maxsize=None)
def template_and_bos(path: str):
    reader = gguf.GGUFReader(path)

    def scalar(key):
        f = reader.get_field(key)
        assert f is not None, f"{path}: no {key}"
        return f.contents()

    template = scalar("tokenizer.chat_template")
    bos_id = scalar("tokenizer.ggml.bos_token_id")
    eos_id = scalar("tokenizer.ggml.eos_token_id")
    tokens = reader.get_field("tokenizer.ggml.tokens")
    return template, tokens.contents(bos_id), tokens.contents(eos_id)


def render(template: str, messages, bos: str, eos: str) -> str:
    """Render like Hugging Face transformers does."""

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=True, bos_token=bos, eos_token=eos
    )


@pytest.mark.parametrize("model,env", [("tiny", "FLYWHEEL_TINY_GGUF"), ("qwen", "FLYWHEEL_QWEN_GGUF")])
def test_prompt_tokens_match_gguf_template(client, qwen_tokenizer, model, env):
    template, bos, eos = template_and_bos(os.environ[env])
    if model == "tiny":
        assert "<|start_header_id|>" in template and "<|im_start|>" not in template, "test setup: not the Llama-3 template"
    prompt = render(template, MESSAGES, bos, eos)
    want = len(qwen_tokenizer.encode(prompt, add_special_tokens=False).ids)
    r = chat(client, model, MESSAGES, max_tokens=1)
    assert r.usage.prompt_tokens == want, (
        f"{model}: server counted {r.usage.prompt_tokens} prompt tokens, the GGUF's template renders to {want}:\n{prompt!r}"
    )


def test_chatml_template_would_differ(qwen_tokenizer):
    """Guard: the two templates really tokenise differently, so the test above can tell them apart."""
    t_tiny, bos_tiny, eos_tiny = template_and_bos(os.environ["FLYWHEEL_TINY_GGUF"])
    t_qwen, bos_qwen, eos_qwen = template_and_bos(os.environ["FLYWHEEL_QWEN_GGUF"])
    a = render(t_tiny, MESSAGES, bos_tiny, eos_tiny)
    b = render(t_qwen, MESSAGES, bos_qwen, eos_qwen)
    assert a.startswith(bos_tiny) and "<|start_header_id|>assistant<|end_header_id|>\n\n" in a
    assert "You are a terse assistant. Answer in one word.<|eot_id|>" in a  # content | trim
    assert len(qwen_tokenizer.encode(a, add_special_tokens=False).ids) != len(
        qwen_tokenizer.encode(b, add_special_tokens=False).ids
    )
