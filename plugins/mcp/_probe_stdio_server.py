"""Tiny stdio MCP server used by tests/test_mcp_sdk.py (run as a subprocess).

Tools: ``echo`` (dict result), ``text`` (str result), ``fail`` (raises),
``push`` (asks the background task to send a channel notification and returns
once it was written), ``noisy`` (print()s to stdout, which must not hit the wire).
On ready it sends one channel notification unprompted.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

try:
    import meshhub_mcp  # noqa: F401
except ImportError:  # not installed: expose this directory as the package
    _pkg = types.ModuleType("meshhub_mcp")
    _pkg.__path__ = [str(Path(__file__).resolve().parent)]
    sys.modules["meshhub_mcp"] = _pkg

import anyio

from meshhub_mcp.sdk import ChannelSender, ToolSpec, build_server, run_stdio

SCHEMA = {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]}
requests: tuple[Any, Any] = anyio.create_memory_object_stream[tuple[str, anyio.Event]](10)


def list_tools() -> list[ToolSpec]:
    return [
        ToolSpec(n, f"probe tool {n}", SCHEMA) for n in ("echo", "text", "fail", "push", "noisy")
    ]


async def call_tool(name: str, args: dict[str, Any]) -> dict[str, Any] | str:
    if name == "echo":
        return {"you_said": args["x"], "n": 1}
    if name == "text":
        return f"plain {args['x']}"
    if name == "fail":
        raise ValueError("boom")
    if name == "push":
        done = anyio.Event()
        await requests[0].send((args["x"], done))
        await done.wait()
        return {"acked": True}
    if name == "noisy":
        print("STRAY OUTPUT ON STDOUT")
        return "ok"
    raise KeyError(name)


async def on_ready(sender: ChannelSender) -> None:
    await sender.send_channel("hello from server", {"kind": "greeting"})
    async for content, done in requests[1]:  # background loop, not a request handler
        await sender.send_channel(content, {"kind": "push", "seq": "1"})
        done.set()


async def main() -> None:
    server = build_server(
        "probe", "0.0.1", "Probe instructions.", list_tools, call_tool, {"claude/channel": {}}
    )
    await run_stdio(server, on_ready)


if __name__ == "__main__":
    anyio.run(main)
