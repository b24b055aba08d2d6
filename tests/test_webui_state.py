"""The state panel in a real browser (Chromium through Playwright) against a real hub process:
a key set in the panel reaches a client-library peer, and changes made by that peer (a set, a
hostile value, a delete) show in the panel live, as text. The ``browser`` fixture checks that
the page logged no errors."""

from __future__ import annotations

import asyncio
from typing import Any

from .browser_support import browser
from .test_webui_browser import signed_in

__all__ = ["browser"]  # the fixture, imported for pytest to find


def entry(panel: Any, key: str) -> Any:
    return panel.locator(f'[data-testid="state-entry"][data-key="{key}"]')


async def test_set_a_key_in_the_panel_and_follow_another_peers_changes(browser, hub, people):
    (bob,) = people("bob")
    async with bob.client(hub.url) as b:
        page, _ = await signed_in(browser, hub)
        await page.get_by_test_id("panel-link-state").click()
        panel = page.get_by_test_id("panel-state")
        await panel.get_by_test_id("state-none").wait_for()
        assert await panel.get_by_test_id("state-more").is_hidden()

        await panel.get_by_test_id("state-key").fill("build/status")
        await panel.get_by_test_id("state-value").fill('{"green": true}')
        await panel.get_by_test_id("state-set").click()
        await entry(panel, "build/status").wait_for()
        got = await b.call("state_get", key="build/status")
        assert got["value"] == {"green": True} and got["author"] == "owner"

        plain = "not json <b>"  # not JSON: taken as a string
        await panel.get_by_test_id("state-key").fill("note")
        await panel.get_by_test_id("state-value").fill(plain)
        await panel.get_by_test_id("state-set").click()
        await entry(panel, "note").wait_for()
        assert (await b.call("state_get", key="note"))["value"] == plain

        # another peer's changes arrive live, shown as text
        hostile = "<img src=x onerror=alert(1)>"
        await b.call("state_set", key="deploy/lock", value={"by": hostile})
        shown = entry(panel, "deploy/lock")
        await shown.wait_for()
        assert hostile in await shown.get_by_test_id("state-entry-value").text_content()
        assert "by bob" in await shown.text_content()
        assert await panel.locator("img").count() == 0
        await b.call("state_set", key="build/status", value="red")
        status = entry(panel, "build/status").get_by_test_id("state-entry-value")
        for _ in range(200):
            if (await status.text_content()) == '"red"':
                break
            await asyncio.sleep(0.05)
        assert await status.text_content() == '"red"'
        await b.call("state_delete", key="deploy/lock")
        await shown.wait_for(state="detached")

        # deleting in the panel deletes for everyone
        await entry(panel, "note").get_by_test_id("state-delete").click()
        await entry(panel, "note").wait_for(state="detached")
        assert (await b.call("state_get", key="note"))["revision"] == 0


async def test_the_panel_says_when_there_are_more_keys_than_it_lists(browser, hub_factory,
                                                                    people):
    hub = hub_factory(MESHHUB_ACTION_RATE="0")
    (bob,) = people("bob")
    async with bob.client(hub.url, receive=False) as b:
        await asyncio.gather(*(b.call("state_set", key=f"k{n:04}", value=n)
                               for n in range(1001)))
        page, _ = await signed_in(browser, hub)
        await page.get_by_test_id("panel-link-state").click()
        panel = page.get_by_test_id("panel-state")
        await panel.get_by_test_id("state-more").wait_for()
        assert await panel.get_by_test_id("state-entry").count() == 1000
        await b.call("state_delete", key="k1000")
        await b.call("state_delete", key="k0999")
        await page.reload()
        await page.get_by_test_id("panel-link-state").click()
        await entry(page.get_by_test_id("panel-state"), "k0998").wait_for()
        assert await page.get_by_test_id("state-more").is_hidden()
