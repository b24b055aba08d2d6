"""Report sections read by the viewer and by the window, over a real hub on 127.0.0.1: the
approvals' counts come from the viewer's own rows (others' many requests neither hide them
nor show through an "at least"), and file deletions in the window survive many later ones."""

from __future__ import annotations

import base64
import time

from meshhub.builtins import approval_report
from meshhub.report import build_report

from .test_report import section


async def test_approvals_count_the_viewers_rows_only(inproc, people, monkeypatch):
    monkeypatch.setattr(approval_report, "MAX_READ", 3)
    served = await inproc(send_rate=0)
    ann, bob, carl = people("ann", "bob", "carl")
    async with ann.client(served.url, receive=False) as a, \
            bob.client(served.url, receive=False) as b, \
            carl.client(served.url, receive=False):
        since = time.time() - 1
        await a.call("approval_request", to="carl", question="mine")
        for n in range(5):  # others' requests, past the cap, made after ann's
            await b.call("approval_request", to="carl", question=f"theirs {n}")
        until = time.time() + 1
        hub = served.hub
        anns = await build_report(hub, hub.directory.find("ann"), since, until)
        assert section(anns, "Approvals") == ["- 1 asked by you: 1 pending"]
        carls = await build_report(hub, hub.directory.find("carl"), since, until)
        assert section(carls, "Approvals") == [
            "- at least 3 for you to answer: 3 pending (0 answered by you)"]


async def test_deletions_in_the_window_survive_many_later_ones(inproc, people):
    served = await inproc(send_rate=0)
    (ann,) = people("ann")
    async with ann.client(served.url, receive=False) as a:
        since = time.time() - 1
        shared = await a.call("file_share", content=base64.b64encode(b"x").decode(),
                              name="early.txt")
        await a.call("file_delete", id=shared["id"])
        until = time.time()
        hub = served.hub
        peer = hub.directory.find("ann")
        assert peer is not None
        for n in range(501):
            await hub.audit.append("file_deleted", peer, subject=f"later{n}", name=f"late{n}")
        report = await build_report(hub, peer, since, until)
        assert section(report, "Files") == ["- deleted: early\\.txt by ann"]
