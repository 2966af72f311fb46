"""The counter test server (counter.py's tools) over stdio, as Flywheel runs stdio servers.

Usage: python stdio_counter.py
One process serves one MCP session, so `count` counts per session here. `pid` returns the
process id, so a test can kill the process in the middle of a call (`sleep`).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from counter import mcp  # noqa: E402  (the same tools)


@mcp.tool()
def pid() -> str:
    """Return this process's id."""
    return str(os.getpid())


if __name__ == "__main__":
    mcp.run(transport="stdio")
