"""``hub mcp``: the stdio MCP server Claude Code starts, one process per session.

The process is one peer of the mesh: it connects to the running hub over the WebSocket protocol
with the member's key (from ``hub init``) and a session name, so its identity is
``mcp:<member public key>/<session name>``. Two sessions of one member are two peers; a restarted
session with the same name is the same peer again and gets its queued messages.

Tools are the hub's actions (fetched with the ``actions`` action, see :mod:`.tools`); arriving
messages are written as channel notifications (see :mod:`.push`) and acked only after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

import aiohttp

from meshhub import __version__
from meshhub.errors import MeshError

from .push import Pusher
from .sdk import CHANNEL_CAPABILITY, ChannelClosed, ChannelSender, ToolSpec, build_server, run_stdio
from .session import SessionOptions, session_client
from .tools import INSTRUCTIONS, action_name, is_tool, run_tool, tool_specs

log = logging.getLogger("meshhub_mcp")

CONNECT_WAIT = 5.0  # how long a tool call waits for the hub before giving up


class StdioSession:
    def __init__(self, opts: SessionOptions) -> None:
        self.opts = opts
        self.client = session_client(opts, receive=opts.mode != "off", reconnect=True)
        self._described: list[dict[str, Any]] | None = None
        self._tools: list[ToolSpec] | None = None

    async def connect_forever(self) -> None:
        delay = 0.1
        while True:
            try:
                await self.client.connect()
                log.info("connected to %s as %s", self.opts.url, self.client.peer.get("name"))
                return
            except (OSError, aiohttp.ClientError, TimeoutError, MeshError) as exc:
                log.warning("cannot reach the hub at %s (%s); retrying", self.opts.url, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def connected(self) -> None:
        try:
            await asyncio.wait_for(self.client.connected.wait(), CONNECT_WAIT)
        except TimeoutError:
            raise ConnectionError(
                f"not connected to the meshhub hub at {self.opts.url}; is it running? "
                "(start it with `hub start`)"
            ) from None

    async def described(self) -> list[dict[str, Any]]:
        if self._described is None:
            await self.connected()
            self._described = await self.client.call("actions")
        return self._described

    async def list_tools(self) -> list[ToolSpec]:
        if self._tools is None:
            self._tools = [ToolSpec(*spec) for spec in tool_specs(await self.described())]
        return self._tools

    async def call_tool(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        action = action_name(name)
        known = {a["name"]: a for a in await self.described()}
        if action not in known or not is_tool(known[action]):
            raise ValueError(f"unknown tool {name!r}")
        await self.connected()

        async def invoke(act: str, params: dict[str, Any]) -> Any:
            return await self.client.call(act, **params)

        return await run_tool(invoke, action, args)

    async def _ack(self, ids: list[str], state: str) -> None:
        # the WS ack frame records "delivered"; reads are the model's own mesh_inbox calls
        await self.client.ack(*ids)

    async def _counts(self) -> dict[str, Any]:
        return await self.client.call("check")

    async def on_ready(self, sender: ChannelSender) -> None:
        """Runs once the MCP client is initialized: push arrivals until the session ends."""
        if self.opts.mode == "off":
            return
        pusher = Pusher(self.opts.mode, sender.send_channel, self._ack, self._counts)
        try:
            async for message in self.client.messages():
                try:
                    await pusher.deliver(message)
                except ChannelClosed:
                    return  # the client is gone; the hub pushes it again to the next session
                except (ConnectionError, MeshError) as exc:
                    log.warning("could not ack %s: %s", message.get("id"), exc)
        finally:
            await pusher.close()

    async def serve(self) -> None:
        connecting = asyncio.create_task(self.connect_forever())
        server = build_server(
            "meshhub", __version__, INSTRUCTIONS, self.list_tools, self.call_tool,
            {CHANNEL_CAPABILITY: {}},
        )
        try:
            await run_stdio(server, self.on_ready)
        finally:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await connecting
            await self.client.close()


def main(opts: SessionOptions) -> None:
    level = os.environ.get("MESHHUB_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(level=level, format="meshhub-mcp %(levelname)s %(message)s")
    asyncio.run(StdioSession(opts).serve())
