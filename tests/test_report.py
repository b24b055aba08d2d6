"""The session report over a real hub: participants and messages per conversation as each
viewer may see them (a whisper to others is never counted), the approvals' part, peer text kept
to one line of text; through the client library, the HTTP API, `hub report` and `hub mcp`."""

from __future__ import annotations

import json
import time

import pytest

from meshhub import hookimpl
from meshhub.errors import InvalidRequest
from meshhub.report import ReportSection, report_text

from .helpers import api_call, token_for
from .test_mcp import mcp_params, stdio_session

HOSTILE = "evil\n# Owned\x1b[2J\u202e [link](http://x) | cell"


class Hostile:
    """A plugin whose section quotes a peer's hostile text, as a task's title would be."""

    @hookimpl
    async def meshhub_report_sections(self, hub, viewer, since, until):
        return ReportSection("Tasks", [f"- {report_text(HOSTILE)}: open"], order=30)


def section(markdown: str, title: str) -> list[str]:
    """The lines of one ``## title`` section of a report."""
    lines = markdown.splitlines()
    start = lines.index(f"## {title}") + 2
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("- ")),
               len(lines))
    return lines[start:end]


async def test_report_counts_what_each_viewer_may_see(inproc, people):
    served = await inproc(("hostile", Hostile()), send_rate=0)
    ann, bob, carl, the_bold = people("ann", "bob", "carl", "b__old__")
    async with ann.client(served.url) as a, bob.client(served.url) as b, \
            carl.client(served.url) as c, the_bold.client(served.url) as d:
        for name in ("design", "ops"):
            await a.call("conversation_create", name=name)
        for peer in (b, c, d):
            await peer.call("conversation_join", name="design")
        await c.call("conversation_join", name="ops")
        root = (await a.send("#design", "plan v1"))["id"]
        await b.send(None, "looks good", reply_to=root)
        await a.send("#design", "plan v2")
        await d.send("#design", "bold move")
        await a.send("#design", "between us", whisper=["bob"])
        await a.send("#ops", "deploy at 5")
        await a.send("bob", "direct note")
        asked = await a.call("approval_request", to="bob", question="merge?")
        await b.call("approval_answer", id=asked["id"], answer="approve")

        carls = await c.call("report", since="2h")
        assert carls["until"] - carls["since"] == pytest.approx(7200, abs=5)
        markdown = carls["markdown"]
        assert markdown.startswith("# Mesh report: ")
        assert section(markdown, "Participants") == [
            "- ann: 3 messages", "- b\\_\\_old\\_\\_: 1 message", "- bob: 1 message"]
        assert section(markdown, "Messages") == [
            "- \\#design: 4 messages (1 reply in 1 thread)", "- \\#ops: 1 message"]
        assert "Approvals" not in markdown  # neither asked nor asked to answer
        tasks = section(markdown, "Tasks")
        assert len(tasks) == 1 and "\x1b" not in tasks[0] and "\u202e" not in tasks[0]
        assert "\\# Owned" in tasks[0] and "\\[link\\]" in tasks[0] and "\\|" in tasks[0]
        titles = [line for line in markdown.splitlines() if line.startswith("#")]
        assert titles[1:] == ["## Participants", "## Messages", "## Tasks"]

        bobs = (await api_call(served.url, await token_for(b), "report", since="2h"))["markdown"]
        # the whisper counts for bob, and so do the direct note and the approval's card to him
        # (with his answer in its thread)
        assert section(bobs, "Participants")[0] == "- ann: 5 messages"
        assert section(bobs, "Messages") == [
            "- \\#design: 5 messages (1 reply in 1 thread)",
            "- direct messages: 3 messages (1 reply in 1 thread)"]
        assert section(bobs, "Approvals") == [
            "- 1 for you to answer: 1 answered (1 answered by you)"]
        anns = (await a.call("report", since=time.time() - 3600))["markdown"]
        assert section(anns, "Approvals") == ["- 1 asked by you: 1 answered"]

        earlier = await c.call("report", since="3h", until="2h")
        assert "## Participants" not in earlier["markdown"]
        assert "## Messages" not in earlier["markdown"]
        with pytest.raises(InvalidRequest, match="since must be before until"):
            await c.call("report", since="1h", until="2h")
        with pytest.raises(InvalidRequest, match="cannot read"):
            await c.call("report", since="yesterday-ish")
        # times no date can show (found by tests/test_fuzz.py) are refused, not an error
        for far in (-6.776804060974081e16, 1e15, "9999999999w", "0001-01-01"):
            with pytest.raises(InvalidRequest, match="between 1970 and the year 9999"):
                await c.call("report", since=far)


async def test_hub_report_and_mesh_report(hub, people):
    ann, bob = people("ann", "bob")
    async with ann.client(hub.url) as a, bob.client(hub.url) as b:
        await a.call("conversation_create", name="design")
        await b.call("conversation_join", name="design")
        await a.send("#design", "plan")
        await a.send("bob", "hello")
    as_json = json.loads(ann.cli(hub.url, "report", "--since", "2h", "--json").stdout)
    assert as_json["since"] < as_json["until"]
    # the same window again, as text (a second "2h" could start a minute later)
    shown = ann.cli(hub.url, "report", "--since", repr(as_json["since"]),
                    "--until", repr(as_json["until"]))
    assert shown.stdout.startswith("# Mesh report: ")
    assert "- ann: 2 messages" in shown.stdout and "- \\#design: 1 message" in shown.stdout
    assert as_json["markdown"] in shown.stdout
    wrong = ann.cli(hub.url, "report", "--since", "soon", check=False)
    assert wrong.returncode == 1 and wrong.stderr.startswith("error: cannot read 'soon'")
    async with stdio_session(mcp_params(bob, hub.url)) as session:
        await session.call("mesh_send", to="ann", text="from a session")
        result = await session.call("mesh_report", since="2h")
    assert len(section(result["markdown"], "Participants")) == 1
    assert section(result["markdown"], "Messages") == ["- direct messages: 1 message"]
