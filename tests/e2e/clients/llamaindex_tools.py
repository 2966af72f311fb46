"""LlamaIndex's `OpenAILike` with a tool bound, against a Flywheel server (run in the
LlamaIndex venv by test_clients.py): prints the tool calls it got, as JSON.

usage: llamaindex_tools.py BASE_URL API_KEY MODEL
"""

import json
import sys

from llama_index.core.tools import FunctionTool
from llama_index.llms.openai_like import OpenAILike


def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"The weather in {city}: 23.4 °C, sunny."


def main() -> None:
    base_url, api_key, model = sys.argv[1:4]
    llm = OpenAILike(model=model, api_base=base_url, api_key=api_key, is_chat_model=True,
                     is_function_calling_model=True, context_window=4096, temperature=0, max_tokens=128,
                     max_retries=0, timeout=120)
    tool = FunctionTool.from_defaults(fn=get_weather)
    response = llm.chat_with_tools([tool], user_msg="What is the weather in Paris right now?",
                                   tool_required=True)
    calls = llm.get_tool_calls_from_response(response, error_on_no_tool_call=False)
    streamed = list(llm.stream_chat_with_tools([tool], user_msg="What is the weather in Paris right now?",
                                               tool_required=True))
    stream_calls = llm.get_tool_calls_from_response(streamed[-1], error_on_no_tool_call=False)
    print(json.dumps({
        "calls": [{"name": c.tool_name, "args": c.tool_kwargs} for c in calls],
        "stream_calls": [{"name": c.tool_name, "args": c.tool_kwargs} for c in stream_calls],
    }))


if __name__ == "__main__":
    main()
