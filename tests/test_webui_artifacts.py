"""The artifacts panel in a real browser (Chromium through Playwright) against a real hub
process: an artifact created in the panel reaches a client-library peer, that peer's update
shows live, a hostile content is shown as text, an edit from a version someone else beat is
refused with a clear conflict, and the history lists the versions. The ``browser`` fixture
checks that the page logged no errors."""

from __future__ import annotations

from typing import Any

from .browser_support import browser
from .test_webui_browser import my_name, signed_in

__all__ = ["browser"]  # the fixture, imported for pytest to find


def entry(panel: Any, artifact_id: str) -> Any:
    return panel.locator(f'[data-testid="artifact-entry"][data-id="{artifact_id}"]')


async def test_create_follow_edit_conflict_and_history(browser, hub, people):
    (bob,) = people("bob")
    async with bob.client(hub.url) as b:
        page, _ = await signed_in(browser, hub)
        me = await my_name(page)
        await b.call("conversation_create", name="ops")
        await b.call("conversation_invite", name="#ops", peers=[me])
        await page.get_by_test_id("panel-link-artifacts").click()
        panel = page.get_by_test_id("panel-artifacts")
        await panel.get_by_test_id("artifacts-conversation").locator(
            'option[value="#ops"]').wait_for(state="attached")
        await panel.get_by_test_id("artifacts-conversation").select_option("#ops")
        await panel.get_by_test_id("artifacts-none").wait_for()

        await panel.get_by_test_id("artifact-name").fill("plan.md")
        await panel.get_by_test_id("artifact-kind").fill("plan")
        await panel.get_by_test_id("artifact-content").fill("step one")
        await panel.get_by_test_id("artifact-create").click()
        await panel.get_by_test_id("artifact-entry").wait_for()
        (made,) = (await b.call("artifacts", conversation="#ops"))["artifacts"]
        assert made["created_by"] == me and made["kind"] == "plan"
        assert (await b.call("artifact_get", id=made["id"]))["content"] == "step one"

        hostile = "<img src=x onerror=alert(1)>"
        await b.call("artifact_update", id=made["id"], content=hostile, base_version=1)
        shown = entry(panel, made["id"])
        await shown.get_by_text("version 2").wait_for()
        await shown.get_by_test_id("artifact-open").click()
        text = panel.get_by_test_id("artifact-text")
        await text.get_by_text(hostile).wait_for()
        assert await panel.locator("img").count() == 0

        await panel.get_by_test_id("artifact-edit").click()
        await b.call("artifact_update", id=made["id"], content="bob's", base_version=2)
        await panel.get_by_test_id("artifact-editor").fill("mine")
        await panel.get_by_test_id("artifact-save").click()
        conflict = panel.get_by_test_id("artifact-conflict")
        await conflict.wait_for()
        assert "at version 3 now (by bob" in (await conflict.text_content() or "")
        assert (await b.call("artifact_get", id=made["id"]))["content"] == "bob's"

        await shown.get_by_test_id("artifact-history").click()
        await panel.get_by_test_id("artifact-version").nth(2).wait_for()
        numbers = [await v.get_attribute("data-n")
                   for v in await panel.get_by_test_id("artifact-version").all()]
        assert numbers == ["3", "2", "1"]
