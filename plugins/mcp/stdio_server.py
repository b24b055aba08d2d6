"""``hub mcp``: the stdio MCP server Claude Code starts, one process per session.

The process is one peer of the mesh: it connects to the running hub over the WebSocket protocol
with the member's key (from ``hub init``) and a session name, so its identity is
``mcp:<member public key>/<session name>``. Two sessions of one member are two peers; a restarted
session with the same name is the same peer again and gets its queued messages.

Tools are the hub's actions (fetched with the ``actions`` action, see :mod:`.tools`). A first
``tools/list`` waits for the first try to reach the hub; if the hub is away, the tools are the
actions this install serves itself, so a session started before the hub still has its tools.
Once the hub answers, its own list wins, and the client is told with
``notifications/tools/list_changed`` if that changed anything (the hub may run other plugins).
The hub is retried in the background for as long as the session lives; a tool called while it is
unreachable returns an error result saying so. Arriving messages are written as channel
notifications (see :mod:`.push`) and acked only after that; so are changes of the shared state
the session follows (``--state``) and its edit conflicts (see :mod:`.active_files`). Claude
Code's tool-permission prompts are relayed to the member's people (see :mod:`.permissions`), unless
``MESHHUB_PERMISSION_RELAY=off``. A structured message the session sends carries a snapshot
of its working directory (see :mod:`.context`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

import aiohttp

from meshhub import __version__
from meshhub.client import SHUT_OUT_CODES
from meshhub.config import load_config
from meshhub.errors import AuthFailed, MeshError

from .active_files import ActiveFiles
from .context import ContextSnapshot
from .hook_server import HookServer
from .permissions import PermissionRelay
from .push import Pusher, StateNotices
from .sdk import CHANNEL_CAPABILITY, ChannelClosed, ChannelSender, ToolSpec, build_server, run_stdio
from .session import SessionOptions, session_client
from .tools import INSTRUCTIONS, action_name, is_tool, run_tool, tool_specs

log = logging.getLogger("meshhub_mcp")

CONNECT_WAIT = 5.0  # how long a tool call waits for the first connection attempt to finish
RETRY_MAX = 5.0  # the longest pause between two attempts to reach the hub


def local_actions(opts: SessionOptions) -> list[dict[str, Any]]:
    """The actions this install's plugins serve, as the hub's ``actions`` action describes them
    (no hub needed: the plugins are loaded and asked, nothing is opened)."""
    from meshhub.hub import installed_actions

    try:
        return installed_actions(load_config(opts.home))
    except Exception as exc:  # a broken install: the tools appear once the hub is reached
        log.warning("cannot list this install's actions (%s); waiting for the hub", exc)
        return []


class StdioSession:
    def __init__(self, opts: SessionOptions) -> None:
        self.opts = opts
        self.client = session_client(opts, receive=opts.mode != "off", reconnect=True)
        self._links: asyncio.Queue[bool] = asyncio.Queue()  # the client's connections made/lost
        self.client.on_link = self._links.put_nowait
        self._described: list[dict[str, Any]] | None = None
        self._listed: list[ToolSpec] | None = None  # what the client saw since the last change
        self._sender: ChannelSender | None = None
        self._notices: StateNotices | None = None  # once the client is initialized
        self._tried = asyncio.Event()  # the first attempt to reach the hub has finished
        self._first_look = asyncio.Event()  # ...and, if it worked, the hub's tools are in
        self._state = "starting"  # "up", "down" or "refused" once known
        self._refusal = ""
        self.context = ContextSnapshot()
        self.relay = PermissionRelay(self.client.call, self.client.connected)
        self.files = ActiveFiles(self.client.call, lambda: str(self.client.peer.get("key", "")))
        self.hooks = HookServer(opts.home, opts.name, self.client.call,
                                self.client.connected.is_set, self.relay.hook_event, self.files)

    # -- the hub connection ----------------------------------------------------------------
    def _note(self, state: str, detail: str = "") -> None:
        """Record the hub connection's state; one log line per change."""
        if state == self._state:
            return
        before, self._state = self._state, state
        url = self.opts.url
        if state == "up":
            level = logging.WARNING if before in ("down", "refused") else logging.INFO
            log.log(level, "connected to the hub at %s as %s", url, self.client.peer.get("name"))
        elif state == "refused":
            self._refusal = detail
            log.warning("the hub at %s refused this session: %s", url, detail)
        else:
            log.warning("the hub at %s is not reachable (%s); retrying in the background",
                        url, detail)

    def unreachable(self) -> str:
        """What a tool call says while the hub cannot be used."""
        if self._state == "refused":
            return f"the hub at {self.opts.url} refused this session: {self._refusal}"
        return f"the hub at {self.opts.url} is not reachable; start it with `hub start`"

    async def _connect_first(self) -> None:
        """Dial until the hub answers; after that the client reconnects by itself."""
        delay = 0.1
        while True:
            try:
                await self.client.connect()
                return
            except AuthFailed as exc:
                self._first_look.set()
                self._note("refused", exc.message)
                if exc.code in SHUT_OUT_CODES:  # removed, not a member, another hub: final
                    self.client.shut_out = exc.message
                    return
            except (OSError, aiohttp.ClientError, TimeoutError, MeshError) as exc:
                self._first_look.set()
                self._note("down", str(exc) or type(exc).__name__)
            finally:
                self._tried.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def watch_hub(self) -> None:
        """Connect, then follow the connection: fetch the hub's tools each time it is (re)made."""
        await self._connect_first()
        while not self.client.shut_out:
            if await self._links.get():  # a new connection: the hub may have changed
                self._note("up")
                self.hooks.reconnected()
                await self._fetch_tools()
                self._first_look.set()
            elif not self.client.shut_out:
                self._note("down", "connection lost")
        self._note("refused", self.client.shut_out)

    async def _fetch_tools(self) -> None:
        try:
            described = await self.client.call("actions")
        except (ConnectionError, MeshError, TimeoutError) as exc:
            log.info("could not fetch the hub's actions: %s", exc)
            return
        await self._use(described)

    async def _use(self, described: list[dict[str, Any]]) -> None:
        """Serve ``described`` from now on; tell the client if its tool list is now stale."""
        self._described = described
        if self._listed is None or self._sender is None:
            return  # the client has not seen a list since the last change: nothing to say
        if _specs(described) != self._listed:
            self._listed = None
            with contextlib.suppress(ChannelClosed):
                await self._sender.send_tools_changed()

    async def connected(self) -> None:
        if self.client.connected.is_set():
            return
        if not self._tried.is_set():  # just started: give the first attempt its chance
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tried.wait(), CONNECT_WAIT)
        if not self.client.connected.is_set():
            raise ConnectionError(self.unreachable())

    # -- MCP callbacks ---------------------------------------------------------------------
    def described(self) -> list[dict[str, Any]]:
        if self._described is None:
            self._described = local_actions(self.opts)
        return self._described

    async def list_tools(self) -> list[ToolSpec]:
        if self._described is None:  # just started: the hub's own list, unless it is away
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._first_look.wait(), CONNECT_WAIT)
        self._listed = _specs(self.described())
        return self._listed

    async def call_tool(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        action = action_name(name)
        known = {a["name"]: a for a in self.described()}
        if action not in known and self.client.connected.is_set():
            await self._fetch_tools()  # connected a moment ago: the hub may know it
            known = {a["name"]: a for a in self.described()}
        if action not in known or not is_tool(known[action]):
            raise ValueError(f"unknown tool {name!r}")
        await self.connected()

        async def invoke(act: str, params: dict[str, Any]) -> Any:
            if act == "send":
                params = await self.context.attach(params, self._summary())
            result = await self.client.call(act, **params)
            if act == "set_summary" and isinstance(result, dict):
                self.client.peer["summary"] = result.get("summary", "")
            return result

        return await run_tool(invoke, action, args)

    def _summary(self) -> str:
        """The session's one-line summary, as the hub last told it."""
        return str(self.client.peer.get("summary") or "")

    async def _ack(self, ids: list[str], state: str) -> None:
        # the WS ack frame records "delivered"; reads are the model's own mesh_inbox calls
        await self.client.ack(*ids)

    async def _counts(self) -> dict[str, Any]:
        return await self.client.call("check")

    async def on_ready(self, sender: ChannelSender) -> None:
        """Runs once the MCP client is initialized: push arrivals until the session ends."""
        self._sender = sender
        self._notices = StateNotices(self.opts.state, sender.send_channel)
        self.files.channel(sender.send_channel)
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

    async def _follow_events(self) -> None:
        """Shared-state changes the session follows and its edit conflicts become
        notifications; the hub's other events (presence, settled approvals) are nothing the
        model is told. Every event is read, or the client's queue of them grows for as long as
        the session lives."""
        while True:
            event = await self.client.events.get()
            if self._notices is not None:
                self._notices.offer(event)
            self.files.offer(event)

    async def serve(self) -> None:
        await self.hooks.start()
        background = [asyncio.create_task(self.watch_hub()),
                      asyncio.create_task(self._follow_events())]
        server = build_server(
            "meshhub", __version__, INSTRUCTIONS, self.list_tools, self.call_tool,
            {CHANNEL_CAPABILITY: {}}, tools_change=True,
        )
        try:
            relay = self.relay.on_request if self.opts.permission_relay else None
            await run_stdio(server, self.on_ready, on_permission=relay)
        finally:
            await self.relay.close()
            if self._notices is not None:
                await self._notices.close()
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self.hooks.stop()
            await self._files_done()
            await self.client.close()

    async def _files_done(self) -> None:
        """The session's files are no longer being edited (they would expire anyway)."""
        if self.client.connected.is_set():
            try:
                await asyncio.wait_for(self.files.done(), CONNECT_WAIT)
            except (TimeoutError, ConnectionError, MeshError) as exc:
                log.info("could not end the session's active files: %s", exc)


def _specs(described: list[dict[str, Any]]) -> list[ToolSpec]:
    return [ToolSpec(*spec) for spec in tool_specs(described)]


def main(opts: SessionOptions) -> None:
    level = os.environ.get("MESHHUB_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(level=level, format="meshhub-mcp %(levelname)s %(message)s")
    asyncio.run(StdioSession(opts).serve())
