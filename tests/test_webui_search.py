"""The search panel in a real browser (Chromium through Playwright) against a real hub process:
the signed-in person and a client-library peer exchange messages, the person searches and sees
the hits best first with the matched words marked (a peer's markup and brackets shown as text),
a whisper to someone else is never found, the filters narrow the hits, and clicking a hit opens
its message in its thread."""

from __future__ import annotations

from .browser_support import Browser, browser
from .helpers import HubProcess
from .test_webui_browser import owner_of, signed_in

__all__ = ["browser"]  # the fixture, imported for pytest to find

HOSTILE = "<b>hostile</b>"


async def test_search_finds_what_you_may_see_and_opens_it(browser: Browser, hub: HubProcess,
                                                         people):
    bob, carol = people("bob", "carol")
    async with bob.client(hub.url) as b, carol.client(hub.url), \
            owner_of(hub).client(hub.url, receive=False) as owner:
        root = await b.send("#general", f"The deploy finished, see [notes] \\o/ {HOSTILE}")
        reply = await owner.send(None, "thanks, the deploy looks right", reply_to=root["id"])
        await b.send("owner", "lunch at noon?")
        await b.send("#general", "the deploy password is swordfish", whisper=["carol"])

        page, _ = await signed_in(browser, hub)
        await page.get_by_test_id("panel-link-search").click()
        panel = page.get_by_test_id("panel-search")
        await panel.get_by_test_id("search-query").fill("deploying")  # stemmed: finds deploy
        await panel.get_by_role("button", name="Search").click()
        hits = panel.get_by_test_id("search-hit")
        await hits.first.wait_for()
        assert sorted(await hits.evaluate_all("(hs) => hs.map((h) => h.dataset.id)")) == \
            sorted([root["id"], reply["id"]])  # never bob's whisper to carol
        assert await panel.get_by_text("swordfish").count() == 0

        bobs = hits.filter(has=page.get_by_test_id("search-from").filter(has_text="bob"))
        snippet = bobs.get_by_test_id("search-snippet")
        assert await snippet.text_content() == f"The deploy finished, see [notes] \\o/ {HOSTILE}"
        assert await snippet.locator("mark").all_text_contents() == ["deploy"]
        assert await panel.locator("b").count() == 0  # a peer's markup is only text
        assert await bobs.get_by_test_id("search-where").text_content() == "#general"

        await panel.get_by_test_id("search-sender").fill("owner")
        await panel.get_by_role("button", name="Search").click()
        await bobs.wait_for(state="detached")
        assert await hits.evaluate_all("(hs) => hs.map((h) => h.dataset.id)") == [reply["id"]]
        assert await hits.get_by_test_id("search-where").all_text_contents() == [
            "#general · in a thread"]

        await panel.get_by_test_id("search-sender").fill("")
        await panel.get_by_test_id("search-conversation").fill("dm:bob")
        await panel.get_by_role("button", name="Search").click()
        await panel.get_by_test_id("search-none").wait_for()
        await panel.get_by_test_id("search-query").fill("lunch")
        await panel.get_by_role("button", name="Search").click()
        lunch = hits.filter(has_text="lunch at noon?")
        await lunch.wait_for()
        assert await lunch.locator("mark").all_text_contents() == ["lunch"]

        await panel.get_by_test_id("search-conversation").fill("")
        await panel.get_by_test_id("search-since").fill("1h")
        await panel.get_by_test_id("search-query").fill("deploy")
        await panel.get_by_role("button", name="Search").click()
        found = hits.filter(has_text="looks right")
        await found.wait_for()
        await found.get_by_test_id("search-open").click()
        thread = page.get_by_test_id("thread-panel")
        await thread.locator(f'.message.found[data-id="{reply["id"]}"]').wait_for()
        assert "The deploy finished" in await page.get_by_test_id("thread-root").text_content()
        assert await page.get_by_test_id("view-title").text_content() == "#general"


MOUNT_WITH_ANSWER = """async (answer) => {
  const { mount } = await import("/web/panels/search.js");
  const { el } = await import("/web/static/dom.js");
  const box = document.createElement("section");
  document.body.append(box);
  const api = { el, me: { name: "owner" }, call: async () => answer, on: () => () => {},
                toast: () => {}, openMessage: () => {} };
  await mount(box, api);
  box.querySelector("[data-testid=search-query]").value = "deploy";
  box.querySelector("form").requestSubmit();
  await new Promise((r) => setTimeout(r, 0));
  const note = box.querySelector("[data-testid=search-note]");
  const snippet = box.querySelector("[data-testid=search-snippet]");
  const result = { note: note.hidden ? null : note.textContent,
                   marks: [...box.querySelectorAll("mark")].map((m) => m.textContent),
                   snippet: snippet?.textContent ?? null };
  box.remove();
  return result;
}"""


def hit(snippet: str) -> dict[str, object]:
    return {"score": 1.0, "snippet": snippet, "message": {
        "id": "m1", "from": "bob", "conversation": "#ops", "whisper": [], "created_at": 0}}


async def test_the_panel_reads_snippets_and_shows_an_incomplete_search(browser: Browser,
                                                                     hub: HubProcess):
    page, _ = await signed_in(browser, hub)
    partial = await page.evaluate(MOUNT_WITH_ANSWER, {
        "query": "deploy", "hits": [hit("[deploy]ed at \\[2\\] with a\\\\b and [x")],
        "complete": False, "note": "older messages are still being indexed"})
    assert partial == {"note": "older messages are still being indexed", "marks": ["deploy"],
                       "snippet": "deployed at [2] with a\\b and x"}
    whole = await page.evaluate(MOUNT_WITH_ANSWER, {
        "query": "deploy", "hits": [hit("a [deploy] b ] [two words]")]})
    assert whole == {"note": None, "marks": ["deploy", "two words"],
                     "snippet": "a deploy b ] two words"}
