"""The memory panel in a real browser (Chromium through Playwright) against a real hub
process: remember something with tags, recall it (the matched words marked, a peer's markup
shown as text), forget it and restore it; a client-library peer sees each step."""

from __future__ import annotations

from .browser_support import Browser, browser
from .helpers import HubProcess
from .test_webui_browser import signed_in

__all__ = ["browser"]  # the fixture, imported for pytest to find

XSS = "<img src=x onerror=alert(1)>"


async def test_remember_recall_forget_and_restore_in_the_panel(browser: Browser,
                                                               hub: HubProcess, people):
    (bob,) = people("bob")
    async with bob.client(hub.url) as b:
        await b.call("remember", content=f"Rollback needs the release tag. {XSS}",
                     tags=["deploy"])
        page, _ = await signed_in(browser, hub)
        await page.get_by_test_id("panel-link-memory").click()
        panel = page.get_by_test_id("panel-memory")
        bobs = panel.get_by_test_id("memory").filter(has_text="release tag")
        await bobs.wait_for()  # the newest memories, before any query
        assert XSS in await bobs.get_by_test_id("memory-text").text_content()
        assert await panel.locator("img").count() == 0  # a peer's markup is only text

        await panel.get_by_test_id("memory-content").fill("The staging database is db-2.\n"
                                                          "Ask ops before wiping it.")
        await panel.get_by_test_id("memory-tags").fill("db, Staging")
        await panel.get_by_role("button", name="Remember").click()
        mine = panel.get_by_test_id("memory").filter(has_text="staging database")
        await mine.wait_for()
        assert await mine.get_by_test_id("memory-tag").all_text_contents() == ["db", "staging"]
        found = await b.call("recall", query="staging database", tags=["db"])
        assert [m["content"] for m in found] == [
            "The staging database is db-2.\nAsk ops before wiping it."]

        await panel.get_by_test_id("memory-query").fill("deploy")  # found by its tag only
        await panel.get_by_role("button", name="Recall").click()
        await mine.wait_for(state="detached")
        assert (await bobs.get_by_test_id("memory-text").text_content()).startswith("Rollback")
        assert await bobs.locator("mark").count() == 0

        await panel.get_by_test_id("memory-query").fill("wiping")
        await panel.get_by_role("button", name="Recall").click()
        await bobs.wait_for(state="detached")
        await mine.wait_for()
        assert await mine.locator("mark").all_text_contents() == ["wiping"]

        await mine.get_by_test_id("memory-forget").click()
        await panel.get_by_test_id("memory-none").wait_for()
        assert await b.call("recall", query="wiping") == []
        await panel.get_by_test_id("memory-show-forgotten").check()
        await panel.get_by_role("button", name="Recall").click()
        await mine.filter(has_text="forgotten by").wait_for()
        await mine.get_by_test_id("memory-restore").click()
        await mine.get_by_test_id("memory-forget").wait_for()
        assert [m["id"] for m in await b.call("recall", query="wiping")] == [found[0]["id"]]


async def test_a_memory_holding_the_marks_shows_them_as_text(browser: Browser, hub: HubProcess,
                                                             people):
    (bob,) = people("bob")
    async with bob.client(hub.url, receive=False) as b:
        await b.call("remember", content="see ⟦approved⟧ and a\\b before the rollback")
        page, _ = await signed_in(browser, hub)
        await page.get_by_test_id("panel-link-memory").click()
        panel = page.get_by_test_id("panel-memory")
        await panel.get_by_test_id("memory-query").fill("rollback")
        await panel.get_by_role("button", name="Recall").click()
        found = panel.get_by_test_id("memory").filter(has=page.locator("mark"))
        await found.wait_for()
        assert await found.locator("mark").all_text_contents() == ["rollback"]
        assert await found.get_by_test_id("memory-text").text_content() == (
            "see ⟦approved⟧ and a\\b before the rollback")
