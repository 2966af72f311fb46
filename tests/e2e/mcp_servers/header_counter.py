"""counter.py plus a `header(name)` tool that returns a header of the request that called it.

Usage: python header_counter.py PORT [--stateless] [--json]     (as counter.py)
Lets a test check which HTTP headers the gateway sends upstream (e.g. a registered API key).
"""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from counter import main, mcp  # noqa: E402  (the same server and tools)
from mcp.server.mcpserver import Context  # noqa: E402


@mcp.tool()
def header(name: str, ctx: Context) -> str:
    """Return the value of the request header `name`, or "<absent>"."""
    headers = ctx.headers or {}
    return headers.get(name.lower(), "<absent>")


if __name__ == "__main__":
    asyncio.run(main())
