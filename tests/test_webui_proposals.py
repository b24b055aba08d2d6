"""The proposals panel in a real browser (Chromium through Playwright) against a real hub
process: a proposal from a client-library peer shows in the panel, is voted on there with a
reason, and resolves for the proposer; one made in the panel reaches that peer. Titles and
reasons are shown as text. The ``browser`` fixture checks that the page logged no errors."""

from __future__ import annotations

from .browser_support import browser
from .test_webui_browser import my_name, signed_in

__all__ = ["browser"]  # the fixture, imported for pytest to find


async def test_vote_and_propose_in_the_panel(browser, hub, people):
    (bob,) = people("bob")
    async with bob.client(hub.url) as b:
        page, _ = await signed_in(browser, hub)
        me = await my_name(page)
        await page.get_by_test_id("panel-link-proposals").click()
        panel = page.get_by_test_id("panel-proposals")
        await panel.get_by_test_id("proposals-none").wait_for()

        hostile = "<img src=x onerror=alert(1)> ship"
        made = await b.call("propose", title=hostile, to=[me], threshold=1)
        card = panel.locator(f'[data-testid="proposal"][data-id="{made["id"]}"]')
        await card.wait_for()
        assert hostile in await card.text_content()
        assert await panel.locator("img").count() == 0
        await card.get_by_test_id("proposal-reason").fill("looks good")
        await card.get_by_test_id("proposal-approve").click()
        await card.get_by_test_id("proposal-state").filter(has_text="approved").wait_for()
        got = await b.call("proposal_get", id=made["id"])
        assert got["state"] == "approved"
        assert [(v["voter"], v["reason"]) for v in got["votes"]] == [(me, "looks good")]

        await panel.get_by_test_id("proposal-title").fill("tabs over spaces")
        await panel.get_by_test_id("proposal-to").fill("bob")
        await panel.get_by_test_id("proposal-create").click()
        await panel.get_by_test_id("proposal").filter(has_text="tabs over spaces").wait_for()
        [theirs] = await b.call("proposals", state="open")
        assert (theirs["title"], theirs["proposer"]) == ("tabs over spaces", me)
