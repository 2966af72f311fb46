"""Tiny MCP test server (PyPI `mcp` 2.x) for Flywheel's MCP gateway e2e tests.

Usage: python counter.py PORT [--stateless] [--json]
Serves Streamable HTTP at http://127.0.0.1:PORT/mcp and prints "ready" once listening.
Default is STATEFUL (initialize handshake + Mcp-Session-Id); `count` keeps one counter
per MCP session. With --stateless (or for requests carrying no Mcp-Session-Id, e.g. the
2026-07-28 per-request revision, which the SDK serves on either mode) `count` uses one
global counter. --json answers with application/json instead of text/event-stream.
Also a prompt (`greet`), a resource (`counter://motd`) and a template (`counter://notes/{topic}`),
for the gateway's pass-through of prompts and resources.
"""

import argparse
import asyncio
import socket
import sys
from collections import defaultdict

import uvicorn
from mcp.server.mcpserver import Context, MCPServer

mcp = MCPServer("flywheel-counter", version="1.0.0")
_counters: defaultdict[str, int] = defaultdict(int)


@mcp.tool()
def count(ctx: Context) -> str:
    """Return the next integer of a per-session counter, starting at 1."""
    headers = ctx.headers or {}
    key = headers.get("mcp-session-id") or "<global>"
    _counters[key] += 1
    return str(_counters[key])


@mcp.tool()
def echo(text: str) -> str:
    """Return `text` unchanged."""
    return text


@mcp.tool()
async def sleep(seconds: float) -> str:
    """Sleep for `seconds`, then return "slept"."""
    await asyncio.sleep(seconds)
    return "slept"


@mcp.prompt()
def greet(name: str) -> str:
    """A greeting for `name`."""
    return f"Say hello to {name}."


@mcp.resource("counter://motd")
def motd() -> str:
    """The message of the day."""
    return "flywheel motd"


@mcp.resource("counter://notes/{topic}")
def note(topic: str) -> str:
    """A note about `topic`."""
    return f"note about {topic}"


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--stateless", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    app = mcp.streamable_http_app(stateless_http=args.stateless, json_response=args.json)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: a response's head and body are not held back by Nagle
    # until the client's delayed ACK (40 ms a call otherwise).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", args.port))  # bound before "ready", so the port accepts at once
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    serve = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not serve.done():
        await asyncio.sleep(0.02)
    if serve.done():
        await serve  # re-raise the startup failure
        sys.exit(1)
    print("ready", flush=True)
    await serve


if __name__ == "__main__":
    asyncio.run(main())
