"""Claude Code's tool-permission prompts, relayed to the member's people through the hub.

Claude Code (2.1.81+) sends a session that declares ``claude/channel/permission`` each prompt it
shows in the terminal as ``notifications/claude/channel/permission_request``; the first verdict,
from the terminal or from us (``notifications/claude/channel/permission``), wins, and the
terminal dialog stays open meanwhile. For each prompt :class:`PermissionRelay`:

* asks the hub with ``permission_request`` (the member's policy decides who answers; a tool the
  policy allows or denies comes back already answered and its verdict is sent at once);
* while the approval is pending, waits for it with ``approval_wait`` (across reconnects) and
  sends the answer once someone gave one; a prompt that was closed or expired gets nothing (the
  terminal dialog is still there);
* closes the cards the terminal made moot: the session's hooks say when
  (:meth:`PermissionRelay.hook_event`): after ``post-tool-use`` or ``post-tool-use-failure`` the
  oldest pending prompt of that tool was answered at the terminal, and ``stop`` or
  ``user-prompt-submit`` mean no prompt is open any more.

A prompt arriving while the hub is unreachable is logged and dropped (the terminal still asks);
one whose ``permission_request`` lost the connection midway is looked up by its ref once the
session is connected again. A session that ends cancels the cards it still has. Nothing here may
end the MCP session: failures are logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from meshhub.builtins.approvals import MAX_PREVIEW
from meshhub.errors import MeshError
from meshhub.fields import MAX_TOOL

from .sdk import ChannelClosed, ChannelSender, PermissionRequest

log = logging.getLogger("meshhub_mcp")

WAIT = 300  # seconds one approval_wait may block on the hub
BUSY_RETRY = 1.0  # seconds before waiting again when the hub had too many waits of ours
CLOSE_BUDGET = 1.0  # seconds a session that ends spends closing its prompts' cards
VERDICTS = ("allow", "deny")
TOOL_DONE = ("post-tool-use", "post-tool-use-failure")  # the oldest prompt of the tool is over
TURN_OVER = ("stop", "user-prompt-submit")  # every prompt of the session is over

Call = Callable[..., Awaitable[Any]]


@dataclass
class Relayed:
    """One prompt not yet settled, from the moment it arrived (its approval's id is known once
    the hub answered; until then the request id, the approval's ref, names it)."""

    request_id: str
    tool: str
    sender: ChannelSender
    approval_id: str | None = None

    @property
    def ident(self) -> str:
        return self.approval_id or self.request_id


def _cut(text: str) -> str:
    """At most what the hub takes: a long preview (a whole file to write) is shown cut, not
    refused with the prompt."""
    return text if len(text) <= MAX_PREVIEW else text[:MAX_PREVIEW - 1] + "\u2026"


class PermissionRelay:
    """The session's relayed prompts. ``call(action, **params)`` runs an action over the session's
    connection; ``connected`` is set while that connection is up."""

    def __init__(self, call: Call, connected: asyncio.Event) -> None:
        self._call = call
        self._connected = connected
        self._open: dict[str, Relayed] = {}  # request id -> prompt, oldest first
        # tool -> calls this relay allowed that have not reported yet: the PostToolUse of a
        # call allowed from a phone must not close the next open prompt of that tool
        self._allowed: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def on_request(self, request: PermissionRequest, sender: ChannelSender) -> None:
        """Ask the hub about one prompt; answer it at once if the policy did, else watch it.

        The prompt is open from the start, so a hook (or the session's end) that comes while
        the hub is still being asked closes it by its ref; the calls of one connection are
        served in order, so the close comes after the card exists."""
        if not self._connected.is_set():
            log.warning("permission prompt %s (%s) not relayed: the hub is not reachable",
                        request.request_id, request.tool_name)
            return
        relayed = Relayed(request.request_id, request.tool_name[:MAX_TOOL], sender)
        self._open[relayed.request_id] = relayed
        view = await self._ask(request)
        if view is not None and view.get("state") == "pending":
            relayed.approval_id = view["id"]
            self._spawn(self._watch(relayed))
            return
        self._forget(relayed)
        if view is not None:
            await self._settled(relayed, view)

    def _forget(self, relayed: Relayed) -> None:
        if self._open.get(relayed.request_id) is relayed:
            del self._open[relayed.request_id]

    async def _ask(self, request: PermissionRequest) -> dict[str, Any] | None:
        """The approval the hub made of the prompt; ``None`` when there is none."""
        try:
            return await self._call(
                "permission_request", tool=request.tool_name[:MAX_TOOL],
                description=_cut(request.description), input_preview=_cut(request.input_preview),
                request_id=request.request_id)
        except ConnectionError:  # lost with the call: the hub may have the card all the same
            return await self._find(request)
        except (MeshError, TimeoutError) as exc:
            log.warning("permission prompt %s (%s) not relayed: %s", request.request_id,
                        request.tool_name, exc)
            return None

    async def _find(self, request: PermissionRequest) -> dict[str, Any] | None:
        """The card of a prompt whose ``permission_request`` lost its connection, looked up by
        its ref once the session is connected again; ``None`` if the hub never made one."""
        try:
            await asyncio.wait_for(self._connected.wait(), WAIT)
            view = await self._call("approval_get", id=request.request_id)
        except (ConnectionError, MeshError, TimeoutError) as exc:
            log.warning("permission prompt %s (%s) not relayed: %s", request.request_id,
                        request.tool_name, exc)
            return None
        if view.get("kind") != "permission" or view.get("tool") != request.tool_name[:MAX_TOOL] \
                or view.get("state") != "pending":
            return None  # the ref of another prompt, or of an earlier one
        return view

    async def _watch(self, relayed: Relayed) -> None:
        """Wait on the hub until the approval is settled, then pass its verdict on."""
        try:
            view = await self._wait(relayed.ident)
        finally:
            self._forget(relayed)
        if view is not None:
            await self._settled(relayed, view)

    async def _wait(self, approval_id: str) -> dict[str, Any] | None:
        """The approval once it is not pending; ``None`` if the hub cannot say any more."""
        while True:
            try:
                view = await self._call("approval_wait", id=approval_id, timeout=WAIT)
            except ConnectionError:  # lost: ask again on the next connection
                await self._connected.wait()
                continue
            except MeshError as exc:
                if exc.code == "too_many_calls":  # the connection's waiting calls are all taken
                    await asyncio.sleep(BUSY_RETRY)
                    continue
                log.warning("stopped waiting for approval %s: %s", approval_id, exc)
                return None
            if view.get("state") != "pending":
                return view

    async def _settled(self, relayed: Relayed, view: dict[str, Any]) -> None:
        """Send the verdict of an answered approval; a closed or expired one gets none."""
        answer, request_id = view.get("answer"), relayed.request_id
        if view.get("state") != "answered":
            log.info("permission prompt %s: %s", request_id, view.get("label"))
            return
        if answer not in VERDICTS:
            log.warning("permission prompt %s answered %r: not a verdict", request_id, answer)
            return
        try:
            await relayed.sender.send_permission(request_id, answer)
        except ChannelClosed:
            log.info("permission prompt %s: the session is gone", request_id)
            return
        if answer == "allow":
            self._allowed[relayed.tool] = self._allowed.get(relayed.tool, 0) + 1

    # -- the terminal moved on ----------------------------------------------------------------
    def hook_event(self, event: str, tool: str | None) -> None:
        """A hook ran: close the prompts it shows were settled in the terminal (in the
        background: the hook's answer does not wait)."""
        if event in TOOL_DONE and tool is not None:
            if self._allowed.get(tool):  # the call a verdict of ours let run
                self._allowed[tool] -= 1
                return
            oldest = next((r for r in self._open.values() if r.tool == tool), None)
            done = [oldest] if oldest is not None else []
        elif event in TURN_OVER:
            self._allowed.clear()
            done = list(self._open.values())
        else:
            return
        for relayed in done:
            self._forget(relayed)
            self._spawn(self._close(relayed))

    async def _close(self, relayed: Relayed, why: str = "terminal") -> None:
        for attempt in (1, 2):
            try:
                await self._call("approval_close", id=relayed.ident, why=why)
                return
            except ConnectionError as exc:  # away: once more when the session is back
                if attempt == 2:
                    log.info("could not close approval %s: %s", relayed.ident, exc)
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._connected.wait(), WAIT)
            except (MeshError, TimeoutError) as exc:  # answered meanwhile
                log.info("could not close approval %s: %s", relayed.ident, exc)
                return

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("the permission relay failed", exc_info=task.exception())

    async def close(self) -> None:
        """The session ends, and its terminal with it: the cards still pending are cancelled
        (briefly, if the hub is there; else they expire), and the watching stops."""
        left, self._open = list(self._open.values()), {}
        if left and self._connected.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(self._close(r, "cancelled") for r in left)), CLOSE_BUDGET)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
