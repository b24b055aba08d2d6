"""The tasks and decisions panels in a real browser (Chromium through Playwright) against a
real hub process: a task created, claimed, blocked and completed in the panel, a decision
posted, its history opened and revoked, and another peer's changes (hostile text included)
shown live, as text. The ``browser`` fixture checks that the page logged no errors."""

from __future__ import annotations

from typing import Any

from .browser_support import browser
from .test_webui_browser import signed_in

__all__ = ["browser"]  # the fixture, imported for pytest to find

HOSTILE = "<img src=x onerror=alert(1)>"


def task(panel: Any, text: str) -> Any:
    return panel.get_by_test_id("task").filter(has_text=text)


def decision(panel: Any, key: str) -> Any:
    return panel.locator(f'[data-testid="decision"][data-key="{key}"]')


async def test_tasks_panel_creates_claims_blocks_and_completes(browser, hub, people):
    (bob,) = people("bob")
    async with bob.client(hub.url, receive=False) as b:
        page, _ = await signed_in(browser, hub)
        await page.get_by_test_id("panel-link-tasks").click()
        panel = page.get_by_test_id("panel-tasks")
        await panel.get_by_test_id("task-none").wait_for()

        await panel.get_by_test_id("task-title").fill("rotate the keys")
        await panel.get_by_test_id("task-assignee").fill("bob")
        await panel.locator('[data-testid="task-create"] button').click()
        made = task(panel, "rotate the keys")
        await made.wait_for()
        listed = (await b.call("tasks"))["tasks"]
        assert [(t["title"], t["created_by"], t["assignee"]) for t in listed] == [
            ("rotate the keys", "owner", "bob")]

        await made.get_by_test_id("task-claim").click()
        await panel.locator('[data-testid="task"][data-status="claimed"]').wait_for()
        await made.get_by_test_id("task-note").fill("waiting for ops")
        await made.get_by_test_id("task-block").click()
        await made.get_by_test_id("task-reason").wait_for()
        assert "waiting for ops" in await made.get_by_test_id("task-reason").text_content()
        await made.get_by_test_id("task-note").fill("all rotated")
        await made.get_by_test_id("task-complete").click()
        await made.get_by_test_id("task-result").wait_for()
        got = await b.call("task_get", id=listed[0]["id"])
        assert (got["status"], got["claimed_by"], got["result"]) == ("done", "owner",
                                                                     "all rotated")

        # another peer's task for the owner arrives live, its title shown as text
        await b.call("task_create", title=HOSTILE, assignee="owner")
        hostile = task(panel, HOSTILE)
        await hostile.wait_for()
        assert await panel.locator("img").count() == 0
        await panel.get_by_test_id("task-filter-status").select_option("done")
        await hostile.wait_for(state="detached")
        assert await panel.get_by_test_id("task").count() == 1


async def test_decisions_panel_posts_shows_history_and_revokes(browser, hub, people):
    (bob,) = people("bob")
    async with bob.client(hub.url, receive=False) as b:
        page, _ = await signed_in(browser, hub)
        await page.get_by_test_id("panel-link-decisions").click()
        panel = page.get_by_test_id("panel-decisions")
        await panel.get_by_test_id("decision-none").wait_for()

        await panel.get_by_test_id("decision-key").fill("db/engine")
        await panel.get_by_test_id("decision-value").fill("sqlite")
        await panel.get_by_test_id("decision-rationale").fill("one machine")
        await panel.get_by_test_id("decision-category").fill("architecture")
        await panel.locator('[data-testid="decision-post"] button').click()
        shown = decision(panel, "db/engine")
        await shown.wait_for()
        got = await b.call("decision_get", key="db/engine")
        assert (got["value"], got["author"], got["category"]) == ("sqlite", "owner",
                                                                  "architecture")

        # bob updates it: the panel follows, the value shown as text, the history has both
        await b.call("decision_post", key="db/engine", value=HOSTILE, category="architecture")
        value = shown.get_by_test_id("decision-value-text")
        await panel.get_by_test_id("decision-value-text").filter(has_text=HOSTILE).wait_for()
        assert await value.text_content() == HOSTILE
        assert await panel.locator("img").count() == 0
        category = panel.locator('[data-testid="decision-category"]'
                                 '[data-category="architecture"]')
        assert await category.get_by_test_id("decision").count() == 1
        await shown.get_by_test_id("decision-history-open").click()
        entries = shown.get_by_test_id("decision-history-entry")
        await entries.nth(1).wait_for()
        assert "sqlite (by owner" in await entries.nth(0).text_content()
        assert HOSTILE in await entries.nth(1).text_content()

        # the owner may revoke it (bob posted the current value)
        await shown.get_by_test_id("decision-reason").fill("too early")
        await shown.get_by_test_id("decision-revoke").click()
        await shown.wait_for(state="detached")
        assert (await b.call("decision_get", key="db/engine"))["revoke_reason"] == "too early"
        await panel.get_by_test_id("decision-show-revoked").check()
        await panel.locator('[data-testid="decision"][data-revoked]').wait_for()
