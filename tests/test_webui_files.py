"""The files panel's shared files in a real browser (Chromium through Playwright) against a real
hub process: a peer's share is listed and found by tag, the page shares a file with tags through
the streaming route, sees who fetched it and deletes it; a client-library peer sees each step."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from meshhub.errors import NotFound

from .browser_support import Browser, browser
from .helpers import HubProcess
from .test_webui_browser import signed_in

__all__ = ["browser"]  # the fixture, imported for pytest to find

XSS = "<img src=x onerror=alert(1)>"


async def test_share_find_status_and_delete_in_the_panel(browser: Browser, hub: HubProcess,
                                                         people):
    (bob,) = people("bob")
    async with bob.client(hub.url, receive=False) as b:
        await b.call("file_share", content=base64.b64encode(b"runbook").decode(),
                     name="runbook.md", tags=["ops"], description=XSS)
        page, _ = await signed_in(browser, hub)
        await page.get_by_test_id("panel-link-files").click()
        panel = page.get_by_test_id("panel-files")
        bobs = panel.get_by_test_id("shared-file").filter(has_text="runbook.md")
        await bobs.wait_for()
        assert XSS in await bobs.text_content()
        assert await panel.locator("img").count() == 0  # a peer's markup is only text
        assert await bobs.get_by_test_id("shared-delete").count() == 0  # not the page's own
        async with page.expect_download() as info:
            await bobs.get_by_test_id("shared-download").click()
        assert Path(await (await info.value).path()).read_bytes() == b"runbook"

        await panel.get_by_test_id("share-input").set_input_files(
            files=[{"name": "plan.txt", "mimeType": "text/html", "buffer": b"the plan\n"}])
        await panel.get_by_test_id("share-tags").fill("plans, Q3")
        await panel.get_by_role("button", name="Share with the mesh").click()
        mine = panel.get_by_test_id("shared-file").filter(has_text="plan.txt")
        await mine.wait_for()
        assert await mine.get_by_test_id("shared-tag").all_text_contents() == ["plans", "q3"]
        listed = (await b.call("file_list", tags=["q3"]))["files"]
        assert [(f["name"], f["mime"]) for f in listed] == [("plan.txt", "text/plain")]
        await b.call("file_get", id=listed[0]["id"])

        await panel.get_by_test_id("shared-query-tags").fill("ops")
        await panel.get_by_role("button", name="Find").click()
        await mine.wait_for(state="detached")
        await bobs.wait_for()
        await panel.get_by_test_id("shared-query-tags").fill("")
        await panel.get_by_role("button", name="Find").click()
        await mine.wait_for()

        await mine.get_by_test_id("shared-status-button").click()
        await mine.get_by_test_id("shared-fetcher").filter(has_text="bob").wait_for()
        await mine.get_by_test_id("shared-delete").click()
        await mine.wait_for(state="detached")
        with pytest.raises(NotFound):
            await b.call("file_get", id=listed[0]["id"])
