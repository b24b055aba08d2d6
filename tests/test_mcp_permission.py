"""The permission relay and mesh_ask end to end: a raw JSON-RPC client plays Claude Code against a
real `hub mcp` and a real hub on 127.0.0.1; the member's other peers answer with the CLI's
client, and the terminal's side is the real `hub hook` command."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from meshhub.client import MeshClient
from meshhub.errors import MeshError
from meshhub.presence import MAX_ASIDE
from meshhub_mcp.sdk import (
    CHANNEL_CAPABILITY,
    CHANNEL_METHOD,
    PERMISSION_CAPABILITY,
    PERMISSION_METHOD,
    PERMISSION_REQUEST_METHOD,
)

from .helpers import HUB_BIN, Identity, base_env, free_port, owner_home
from .test_mcp import http_session

WAIT = 20  # seconds any one step may take on a slow machine before the test fails


class Claude:
    """Claude Code's side of `hub mcp`'s stdio: JSON-RPC lines out, responses matched to their
    requests, every notification kept."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.ids = iter(range(1, 1 << 30))
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.notes: list[dict[str, Any]] = []
        self.capabilities: dict[str, Any] = {}  # what the server's initialize answered
        self.arrived = asyncio.Condition()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            message = json.loads(line)
            if "id" in message and message["id"] in self.waiting:
                self.waiting.pop(message["id"]).set_result(message)
            elif "method" in message:
                async with self.arrived:
                    self.notes.append(message)
                    self.arrived.notify_all()

    async def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", **message}).encode() + b"\n")
        await self.proc.stdin.drain()

    async def request(self, method: str, params: dict[str, Any] | None = None) -> Any:
        call_id = next(self.ids)
        future = self.waiting[call_id] = asyncio.get_running_loop().create_future()
        await self.send({"id": call_id, "method": method, "params": params or {}})
        answer = await asyncio.wait_for(future, WAIT * 4)  # mesh_ask may wait WAIT * 3
        assert "error" not in answer, answer
        return answer["result"]

    async def tool(self, name: str, **args: Any) -> dict[str, Any]:
        """A tool's shaped result ({"summary", "result"}); an error result raises."""
        result = await self.request("tools/call", {"name": name, "arguments": args})
        text = result["content"][0]["text"]
        if result.get("isError"):
            raise AssertionError(f"{name} failed: {text}")
        return json.loads(text)  # type: ignore[no-any-return]

    async def notification(self, method: str,
                           match: Callable[[dict[str, Any]], bool] = lambda p: True
                           ) -> dict[str, Any]:
        """The params of the first ``method`` notification whose params ``match``."""
        def found() -> dict[str, Any] | None:
            return next((n["params"] for n in self.notes
                         if n["method"] == method and match(n["params"])), None)

        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(found), WAIT)
        params = found()
        assert params is not None
        return params

    def verdicts(self) -> list[dict[str, Any]]:
        return [n["params"] for n in self.notes if n["method"] == PERMISSION_METHOD]

    async def prompt(self, request_id: str, tool: str, description: str = "",
                     preview: str = "") -> None:
        """Claude Code showing a permission dialog in the terminal."""
        await self.send({"method": PERMISSION_REQUEST_METHOD, "params": {
            "request_id": request_id, "tool_name": tool, "description": description,
            "input_preview": preview}})


@contextlib.asynccontextmanager
async def claude_session(who: Identity, hub_url: str, name: str, *, hub_up: bool = True,
                         **env: str) -> AsyncIterator[Claude]:
    """`hub mcp` started and initialized the way Claude Code does it, once its hub connection
    is up unless not ``hub_up`` (a prompt that comes earlier is not relayed, by design)."""
    proc = await asyncio.create_subprocess_exec(
        HUB_BIN, "mcp", env=base_env(who.home, MESHHUB_URL=hub_url,
                                     MESHHUB_SESSION_NAME=name, **env),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, limit=1 << 22)  # a result is one line
    claude = Claude(proc)
    try:
        init = await claude.request("initialize", {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "claude-code", "version": "2.1.81"}})
        claude.capabilities = init["capabilities"]
        await claude.send({"method": "notifications/initialized"})
        if hub_up:
            await until(lambda: _connected(claude))
        yield claude
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        claude.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await claude.reader


async def _connected(claude: Claude) -> bool:
    result = await claude.request("tools/call", {"name": "mesh_whoami", "arguments": {}})
    return not result.get("isError")


async def until(check: Callable[[], Any], timeout: float = WAIT) -> Any:
    """Poll ``check`` (sync or async) until it returns something true; that value."""
    async with asyncio.timeout(timeout):
        while True:
            value = check()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            await asyncio.sleep(0.05)


async def pending_card(approver: MeshClient, ref: str) -> dict[str, Any]:
    """The approval the approver sees for Claude Code's request ``ref``, once it is there."""
    async def look() -> dict[str, Any] | None:
        views = await approver.call("approvals", role="approver", state="pending")
        return next((v for v in views if v.get("ref") == ref), None)

    return await until(look)  # type: ignore[no-any-return]


def hook(who: Identity, session: str, event: str, **payload: Any) -> str:
    """`hub hook <event>` as Claude Code runs it for the session: the hook's JSON on stdin."""
    out = subprocess.run([HUB_BIN, "hook", event], input=json.dumps(payload), text=True,
                         capture_output=True, timeout=30,
                         env=base_env(who.home, MESHHUB_SESSION_NAME=session))
    assert out.returncode == 0, out
    return out.stdout


async def test_a_prompt_answered_by_another_peer_of_the_member_reaches_claude_code(hub, people):
    (ann,) = people("ann")
    async with claude_session(ann, hub.url, "ann-work") as claude, \
            ann.client(hub.url) as phone:
        assert claude.capabilities["experimental"] == {CHANNEL_CAPABILITY: {},
                                                       PERMISSION_CAPABILITY: {}}
        await claude.prompt("tbxkq", "Bash", "List the build directory", '{"command": "ls"}')
        card = await pending_card(phone, "tbxkq")
        assert (card["kind"], card["tool"], card["options"]) == ("permission", "Bash",
                                                                 ["allow", "deny"])
        assert card["asker"] == "ann-work" and "ls" in card["input_preview"]
        await phone.call("approval_answer", id="TBXKQ", answer="allow")  # the ref, any case
        verdict = await claude.notification(PERMISSION_METHOD,
                                            lambda p: p["request_id"] == "tbxkq")
        assert verdict == {"request_id": "tbxkq", "behavior": "allow"}

        await claude.prompt("qwert", "Write", "Write notes.md", "x" * 5000)  # a whole file
        card = await pending_card(phone, "qwert")
        assert card["input_preview"] == "x" * 1999 + "\u2026"  # cut to what the hub takes
        await phone.call("approval_answer", id=card["id"], answer="deny", reason="not now")
        verdict = await claude.notification(PERMISSION_METHOD,
                                            lambda p: p["request_id"] == "qwert")
        assert verdict == {"request_id": "qwert", "behavior": "deny"}
        assert len(claude.verdicts()) == 2  # one verdict per answered prompt


async def test_prompts_the_terminal_answered_are_closed_by_the_hooks(hub, people, tmp_path):
    (ann,) = people("ann")
    async with ann.client(hub.url) as phone:
        async with claude_session(ann, hub.url, "ann-term") as claude:
            await claude.prompt("aaaaa", "Bash", "first")
            first = await pending_card(phone, "aaaaa")
            await claude.prompt("bbbbb", "Bash", "second")
            second = await pending_card(phone, "bbbbb")
            await claude.prompt("ccccc", "Edit", "third")
            third = await pending_card(phone, "ccccc")

            # allowed at the terminal, the tool ran: the oldest Bash prompt is over
            assert hook(ann, "ann-term", "post-tool-use", tool_name="Bash", cwd=str(tmp_path)) == ""
            closed = await until(lambda: _settled(phone, first["id"]))
            assert closed["state"] == "closed" and closed["answered_on"] == "terminal"
            assert closed["label"] == "answered at the terminal"
            with pytest.raises(MeshError, match="already answered"):
                await phone.call("approval_answer", id=first["id"], answer="allow")
            assert (await phone.call("approval_get", id=second["id"]))["state"] == "pending"

            # the turn ended: every prompt of the session is over
            assert hook(ann, "ann-term", "stop", cwd=str(tmp_path)) == ""
            for view in (second, third):
                assert (await until(lambda v=view: _settled(phone, v["id"])))["state"] == "closed"
            await claude.request("ping")  # the session is alive, and sent no verdict for these
            assert claude.verdicts() == []
            await claude.prompt("ddddd", "Bash", "left open when Claude Code quits")
            left = await pending_card(phone, "ddddd")
        cancelled = await until(lambda: _settled(phone, left["id"]))
        assert (cancelled["state"], cancelled["label"]) == ("closed", "cancelled by ann-term")


async def test_the_call_a_phone_allowed_does_not_close_the_next_prompt(hub, people, tmp_path):
    (ann,) = people("ann")
    async with ann.client(hub.url) as phone, \
            claude_session(ann, hub.url, "ann-two") as claude:
        await claude.prompt("aaaaa", "Bash", "first")
        first = await pending_card(phone, "aaaaa")
        await claude.prompt("bbbbb", "Bash", "second")
        second = await pending_card(phone, "bbbbb")
        await phone.call("approval_answer", id=first["id"], answer="allow")
        await claude.notification(PERMISSION_METHOD, lambda p: p["request_id"] == "aaaaa")
        # the allowed call ran and reports: that is not the second prompt's answer
        hook(ann, "ann-two", "post-tool-use", tool_name="Bash", cwd=str(tmp_path))
        # a barrier: a hook for another tool is handled after it, in order
        await claude.prompt("ccccc", "Edit", "third")
        third = await pending_card(phone, "ccccc")
        hook(ann, "ann-two", "post-tool-use", tool_name="Edit", cwd=str(tmp_path))
        await until(lambda: _settled(phone, third["id"]))
        assert (await phone.call("approval_get", id=second["id"]))["state"] == "pending"
        # the next Bash call that reports is the second prompt's, answered in the terminal
        hook(ann, "ann-two", "post-tool-use", tool_name="Bash", cwd=str(tmp_path))
        closed = await until(lambda: _settled(phone, second["id"]))
        assert closed["label"] == "answered at the terminal"


def test_a_hook_names_the_session_of_its_project_not_of_the_directory_it_is_in(
        tmp_path, monkeypatch):
    from meshhub.cli.hook import member_name, session_names
    from meshhub.local import default_session_name

    project, inner = tmp_path / "work", tmp_path / "work" / "app"
    inner.mkdir(parents=True)
    member = member_name(tmp_path)
    walked = session_names(tmp_path, inner)  # without Claude Code's word: the nearest first
    assert walked[:2] == [default_session_name(member, inner),
                          default_session_name(member, project)]
    monkeypatch.setenv("CLAUDE_PROJECT_DIR", str(project))
    assert session_names(tmp_path, inner) == [default_session_name(member, project)]


async def _settled(client: MeshClient, approval_id: str) -> dict[str, Any] | None:
    view = await client.call("approval_get", id=approval_id)
    return view if view["state"] != "pending" else None


async def test_the_policy_answers_at_once_and_nobody_is_asked(hub_factory, people, tmp_path):
    with (owner_home(tmp_path) / "config.toml").open("a") as config:
        config.write('\n[approvals.members."*"]\nauto_allow = ["Read"]\n'
                     'auto_deny = ["WebFetch"]\n')
    hub = hub_factory()
    (ann,) = people("ann")
    async with claude_session(ann, hub.url, "ann-policy") as claude, \
            ann.client(hub.url) as phone:
        await claude.prompt("rdrdr", "Read", "Read README.md")
        await claude.prompt("wfwfw", "WebFetch", "Fetch a page")
        allowed = await claude.notification(PERMISSION_METHOD,
                                            lambda p: p["request_id"] == "rdrdr")
        denied = await claude.notification(PERMISSION_METHOD,
                                           lambda p: p["request_id"] == "wfwfw")
        assert (allowed["behavior"], denied["behavior"]) == ("allow", "deny")
        assert await phone.call("approvals", role="approver", state="all") == []


async def test_a_prompt_while_the_hub_is_away_stays_in_the_terminal(hub_factory, people):
    (ann,) = people("ann")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with claude_session(ann, url, "ann-away", hub_up=False) as claude:
        await claude.prompt("awayy", "Bash", "nobody to ask")
        await claude.request("ping")  # read and dropped: the session goes on
        hub = await asyncio.to_thread(hub_factory, port=port)
        await until(lambda: _connected(claude))
        async with ann.client(hub.url) as phone:
            assert await phone.call("approvals", role="approver", state="all") == []
            await claude.prompt("later", "Bash", "now there is")
            await phone.call("approval_answer", id=(await pending_card(phone, "later"))["id"],
                             answer="allow")
            verdict = await claude.notification(PERMISSION_METHOD)
        assert verdict == {"request_id": "later", "behavior": "allow"}
        assert len(claude.verdicts()) == 1


async def test_a_prompt_while_the_relay_is_off_stays_in_the_terminal(hub, people):
    (ann,) = people("ann")
    async with claude_session(ann, hub.url, "ann-quiet", MESHHUB_PERMISSION_RELAY="off") \
            as claude, ann.client(hub.url) as phone:
        assert claude.capabilities["experimental"] == {CHANNEL_CAPABILITY: {}}
        await claude.prompt("zzzzz", "Bash")
        await claude.request("ping")  # the notification was read before this answer
        assert await phone.call("approvals", role="approver", state="all") == []


async def test_mesh_ask_returns_the_answer_and_a_late_answer_is_pushed(hub, people):
    ann, bob = people("ann", "bob")
    async with claude_session(ann, hub.url, "ann-asks") as claude, bob.client(hub.url) as b:
        asking = asyncio.create_task(claude.tool(
            "mesh_ask", to="bob", question="deploy to prod now?", choices=["yes", "no"],
            wait=WAIT * 3))
        card = await until(lambda: _first_pending(b))
        assert card["question"] == "deploy to prod now?" and card["kind"] == "question"
        await b.call("approval_answer", id=card["id"], answer="yes")
        asked = await asking
        assert (asked["result"]["state"], asked["result"]["answer"]) == ("answered", "yes")
        assert asked["summary"].startswith("question ") and "answered" in asked["summary"]

        late = await claude.tool("mesh_ask", to="bob", question="and staging?",
                                 choices=["yes", "no"])
        assert late["result"]["state"] == "pending" and "mesh_approval_wait" in late["summary"]
        await b.call("approval_answer", id=late["result"]["id"], answer="no")
        # the first answer may come as a message too, if given before the ask began to wait
        pushed = await claude.notification(
            CHANNEL_METHOD, lambda p: p["meta"].get("kind") == "approval_answer"
            and "and staging?" in p["content"])
        assert 'bob answered "no" on cli to "and staging?"' in pushed["content"]


async def _first_pending(client: MeshClient) -> dict[str, Any] | None:
    views = await client.call("approvals", role="approver", state="pending")
    return views[0] if views else None



async def test_mesh_ask_waits_for_the_answer_over_the_http_endpoint(hub, people):
    ann, bob = people("ann", "bob")
    token = json.loads(ann.cli(hub.url, "token", "create", "--json").stdout)["token"]
    async with http_session(hub.url + "/mcp", token) as h, bob.client(hub.url) as b:
        asking = asyncio.create_task(h.call("mesh_ask", to="bob", question="ship it?",
                                            choices=["yes", "no"], wait=WAIT * 3))
        card = await until(lambda: _first_pending(b))
        await b.call("approval_answer", id=card["id"], answer="no")
        asked = await asking
        assert (asked["state"], asked["answer"], asked["answered_by"]) == ("answered", "no",
                                                                           "bob")


async def test_a_relayed_prompt_is_answered_across_a_hub_restart(hub, people):
    (ann,) = people("ann")
    async with claude_session(ann, hub.url, "ann-restart") as claude:
        async with ann.client(hub.url) as phone:  # a person of hers the hub can reach
            await claude.prompt("rrrrr", "Bash", "rebuild")
            await pending_card(phone, "rrrrr")
        await asyncio.to_thread(hub.stop)  # the session's wait breaks off...
        await asyncio.to_thread(hub.start)  # ...and resumes once it is connected again
        async with ann.client(hub.url) as phone:
            await phone.call("approval_answer", id="rrrrr", answer="allow")
        verdict = await claude.notification(PERMISSION_METHOD)
        assert verdict == {"request_id": "rrrrr", "behavior": "allow"}


async def test_more_open_prompts_than_one_connection_may_wait_on_are_all_relayed(hub, people):
    (ann,) = people("ann")
    refs = [f"many{letter}" for letter in "abcdefghijklmnopqrstuvwxyz"[:MAX_ASIDE + 2]]
    async with ann.client(hub.url) as phone, claude_session(ann, hub.url, "ann-busy") as claude:
        for ref in refs:
            await claude.prompt(ref, "Bash", f"step {ref}")
        for ref in reversed(refs):  # the last ones were refused a wait at first
            await phone.call("approval_answer", id=(await pending_card(phone, ref))["id"],
                             answer="deny")
        for ref in refs:
            verdict = await claude.notification(PERMISSION_METHOD,
                                                lambda p, r=ref: p["request_id"] == r)
            assert verdict["behavior"] == "deny"
