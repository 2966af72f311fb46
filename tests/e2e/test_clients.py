"""Agent frameworks' own clients with tools bound (issue 16's client matrix): LangChain's
`ChatOpenAI` on chat completions and on the Responses API, and LlamaIndex's `OpenAILike` (in
its own venv: it pins openai<3). Each gets 200s and well-formed tool calls from Qwen 2.5.
"""

import json
import os
import subprocess

import pytest


def test_langchain_chat_openai_with_tools(server):
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        return f"The weather in {city}: 23.4 °C, sunny."

    ask = "What is the weather in Paris right now?"
    for responses_api in (False, True):
        llm = ChatOpenAI(model="qwen", base_url=server.url + "/v1", api_key=server.key, temperature=0,
                         max_tokens=128, max_retries=0, timeout=120, use_responses_api=responses_api)
        bound = llm.bind_tools([get_weather], tool_choice="required")
        message = bound.invoke(ask)
        [call] = message.tool_calls
        assert call["name"] == "get_weather" and call["args"]["city"].lower() == "paris", (responses_api, message)
        assert message.usage_metadata["input_tokens"] > 0
        streamed = None
        for chunk in bound.stream(ask):
            streamed = chunk if streamed is None else streamed + chunk
        assert [c["name"] for c in streamed.tool_calls] == ["get_weather"], (responses_api, streamed)
        # The tool's answer goes back in the framework's own message types.
        answer = llm.invoke([("human", ask), message, get_weather.invoke(call)])
        assert answer.content, (responses_api, answer)


def test_llamaindex_openai_like_with_tools(server):
    python = os.environ.get("FLYWHEEL_LLAMAINDEX_PYTHON")
    if not python:
        pytest.fail("FLYWHEEL_LLAMAINDEX_PYTHON is not set: run the suite through scripts/e2e.sh", pytrace=False)
    script = os.path.join(os.path.dirname(__file__), "clients", "llamaindex_tools.py")
    done = subprocess.run([python, script, server.url + "/v1", server.key, "qwen"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for calls in (out["calls"], out["stream_calls"]):
        assert [c["name"] for c in calls] == ["get_weather"], out
        assert calls[0]["args"]["city"].lower() == "paris", out
