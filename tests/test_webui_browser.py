"""The web page in a real browser (Chromium through Playwright) against a real hub process:
sign in with a link, talk with a client-library peer live, threads, reactions, approvals from
the panel (and the panel following an approval answered elsewhere), presence changing live,
untrusted markup that runs nothing, paged history, the narrow layout, and reconnecting after a
hub restart. Every test ends with no console errors (the ``browser`` fixture checks), and one
test saves screenshots of both themes and widths."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from playwright.async_api import Error as PlaywrightError

from .browser_support import NARROW, WIDE, Browser, browser, screenshots_dir
from .helpers import HubProcess, Identity, collect

__all__ = ["browser"]  # the fixture, imported for pytest to find

TWO_FRAMES = "() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))"
XSS_IMG = "<img src=x onerror=alert(1)>"
XSS_LINK = "[x](javascript:alert(1))"
# what a person dropping a file on an element makes the browser do
DROP_FILE = """(zone, [name, text]) => {
  const data = new DataTransfer();
  data.items.add(new File([text], name, { type: "text/plain" }));
  for (const type of ["dragenter", "dragover", "drop"]) {
    const init = { bubbles: true, cancelable: true, dataTransfer: data };
    zone.dispatchEvent(new DragEvent(type, init));
  }
}"""


def owner_of(hub: HubProcess) -> Identity:
    return Identity(hub.home, "owner")


async def sign_in_link(hub: HubProcess) -> str:
    """A one-time sign-in link for the hub's owner, as `hub web --no-open` prints it."""
    async with owner_of(hub).client(hub.url, receive=False) as owner:
        return str((await owner.call("web_login_create"))["url"])


async def signed_in(browser: Browser, hub: HubProcess, **options: Any) -> tuple[Any, Any]:
    page, watch = await browser.page(await sign_in_link(hub), **options)
    await page.get_by_test_id("app").wait_for()
    await page.get_by_test_id("composer-input").wait_for()
    # the page's half of the session went from the address to the page's storage
    assert page.url == hub.url + "/"
    assert await page.evaluate("localStorage.getItem('meshhub.session')")
    return page, watch


async def my_name(page: Any) -> str:
    session = await page.evaluate("""fetch('/web/api/session', {headers: {
        'X-Meshhub-Session': localStorage.getItem('meshhub.session')}}).then((r) => r.json())""")
    return str(session["peer"]["name"])


def message(page: Any, text: str, where: str = "messages") -> Any:
    return page.get_by_test_id(where).get_by_test_id("message").filter(has_text=text)


async def send_from_page(page: Any, text: str) -> None:
    box = page.get_by_test_id("composer-input")
    await box.fill(text)
    await box.press("Enter")
    await message(page, text).wait_for()


async def test_talk_thread_react_and_presence_live(browser, hub, people):
    bob, agent = people("bob", "claude-api")
    async with bob.client(hub.url) as b:
        page, _ = await signed_in(browser, hub)
        assert await page.get_by_test_id("view-title").text_content() == "#general"

        await send_from_page(page, "hello from the web")
        got = (await collect(b, 1))[0]
        assert got["text"] == "hello from the web" and got["conversation"] == "#general"

        sent = await b.send("#general", "hi from **bob**, see `make test`")
        from_bob = message(page, "hi from bob")
        await from_bob.wait_for()  # pushed, no reload
        assert await from_bob.locator("strong").text_content() == "bob"
        assert await from_bob.locator("code").text_content() == "make test"

        # a newline with Shift+Enter, then Enter sends
        box = page.get_by_test_id("composer-input")
        await box.fill("two")
        await box.press("Shift+Enter")
        await box.type("lines")
        assert await box.input_value() == "two\nlines"
        await box.press("Enter")
        assert (await collect(b, 1))[0]["text"] == "two\nlines"

        # a whisper in #general: only the named recipient may read it
        await page.get_by_test_id("composer-whisper-toggle").click()
        await page.get_by_test_id("composer-whisper-input").fill("bob")
        await box.fill("just between us")
        await box.press("Enter")
        whispered = (await collect(b, 1))[0]
        assert whispered["text"] == "just between us" and whispered["whisper"] == ["bob"]
        await message(page, "just between us").get_by_test_id("whisper-tag").wait_for()
        await page.get_by_test_id("composer-whisper-toggle").click()

        # reply in a thread
        await from_bob.hover()
        await from_bob.get_by_test_id("reply-button").click()
        thread = page.get_by_test_id("thread-panel")
        await thread.get_by_test_id("thread-root").get_by_text("hi from").wait_for()
        reply_box = thread.get_by_test_id("thread-composer-input")
        await reply_box.fill("on it")
        await reply_box.press("Enter")
        reply = (await collect(b, 1))[0]
        assert reply["text"] == "on it" and reply["reply_to"] == sent["id"]
        await message(page, "on it", "thread-replies").wait_for()
        await from_bob.get_by_test_id("thread-link").filter(has_text="1 reply").wait_for()
        answer = await b.send(None, "thanks", reply_to=sent["id"])
        await message(page, "thanks", "thread-replies").wait_for()
        assert answer["id"]
        await page.keyboard.press("Escape")
        await thread.wait_for(state="hidden")

        # react from the page; bob's reaction to the page's message shows up too
        await from_bob.hover()
        await from_bob.get_by_test_id("react-button").click()
        await from_bob.get_by_test_id("emoji-option").and_(
            page.locator("[data-emoji='👍']")).click()
        chip = from_bob.get_by_test_id("reaction").filter(has_text="👍")
        await chip.filter(has_text="1").wait_for()
        told = (await collect(b, 1))[0]
        assert told["kind"] == "reaction" and told["data"]["emoji"] == "👍"
        mine = message(page, "hello from the web")
        await b.call("react", id=got["id"], emoji="🎉")
        await mine.get_by_test_id("reaction").filter(has_text="🎉").wait_for()

        # presence: an agent comes online, works, goes idle, all live
        people_list = page.get_by_test_id("presence")
        async with agent.client(hub.url, kind="agent", connector="mcp") as a:
            person = people_list.locator("[data-testid=peer][data-name=claude-api]")
            await person.get_by_test_id("peer-status").filter(has_text="online").wait_for()
            assert await person.get_by_test_id("peer-surface").text_content() == "Claude Code"
            await a.set_status("working")
            await person.get_by_test_id("peer-status").filter(has_text="working").wait_for()
            await a.call("set_summary", summary="fixing the flaky test")
            await person.get_by_test_id("peer-summary").filter(
                has_text="fixing the flaky test").wait_for()
            await a.set_status("idle")
            await person.get_by_test_id("peer-status").filter(has_text="idle").wait_for()
        bob_row = people_list.locator("[data-testid=peer][data-name=bob]")
        assert await bob_row.get_by_test_id("peer-surface").text_content() == "CLI"

        # read receipts on the page's own message, once bob reads it
        await b.call("mark_read", ids=[got["id"]])
        await page.reload()
        await mine.get_by_test_id("receipt").filter(has_text="Read").click()
        details = mine.get_by_test_id("receipt-details")
        await details.locator("li[data-state=read]").filter(has_text="bob").wait_for()
        await mine.get_by_test_id("receipt").click()
        await details.wait_for(state="hidden")

        await b.send("#general", "the fix, see [the docs](https://example.com/docs):\n\n"
                     "```\npytest -q tests/test_flaky.py\n```")
        await message(page, "the fix").locator("pre").wait_for()

        await save_screenshots(page)


async def save_screenshots(page: Any) -> None:
    """Both themes at 1280 and at 360 px wide, with the sidebar open once on the narrow one."""
    folder = screenshots_dir()
    await page.emulate_media(reduced_motion="reduce")  # no half-finished slides in a picture
    await page.mouse.move(0, 0)
    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme)
        await page.set_viewport_size(WIDE)
        await page.screenshot(path=str(folder / f"web-1280-{scheme}.png"))
        await page.set_viewport_size(NARROW)
        sidebar = page.get_by_test_id("sidebar")
        await sidebar.wait_for(state="hidden")  # collapsed behind the menu button
        await page.screenshot(path=str(folder / f"web-360-{scheme}.png"))
        await page.get_by_test_id("menu-button").click()
        await sidebar.wait_for()
        await page.screenshot(path=str(folder / f"web-360-{scheme}-sidebar.png"))
        await page.get_by_test_id("scrim").click(position={"x": NARROW["width"] - 20, "y": 300})
        await sidebar.wait_for(state="hidden")
        await page.set_viewport_size(WIDE)


async def test_approve_from_the_panel(browser, hub, people):
    (bob,) = people("bob")
    async with bob.client(hub.url) as b:
        page, _ = await signed_in(browser, hub)
        asked = await b.call("approval_request", to=await my_name(page),
                             question="deploy 1.4 to production?")
        dm = page.locator("[data-testid=dm][data-view='dm:bob']")
        await dm.get_by_test_id("unread-badge").filter(has_text="1").wait_for()
        await dm.click()
        request = message(page, "deploy 1.4 to production?")
        await request.get_by_test_id("approval-link").click()  # the request, then its panel
        card = page.get_by_test_id("panel-approvals").get_by_test_id("approval").filter(
            has_text="deploy 1.4 to production?")
        await card.get_by_test_id("approval-reason").fill("tests are green")
        await card.locator("[data-testid=approval-answer][data-answer=approve]").click()
        told = (await collect(b, 1))[0]
        assert told["kind"] == "approval_answer"
        assert told["data"]["approval_id"] == asked["id"]
        assert (told["data"]["answer"], told["data"]["reason"]) == ("approve", "tests are green")
        await page.get_by_test_id("approvals-none").wait_for()

        # a file bob sends arrives as an attachment the page downloads
        await b.call("file_put", name="report.txt", content="cmVwb3J0Cg==", to=asked["approver"])
        await page.locator("[data-testid=dm][data-view='dm:bob']").click()
        attachment = page.get_by_test_id("attachment").filter(has_text="report.txt")
        async with page.expect_download() as info:
            await attachment.click()
        download = await info.value
        assert download.suggested_filename == "report.txt"
        assert Path(await download.path()).read_bytes() == b"report\n"

        # the other built-in panels open and show their lists
        await page.get_by_test_id("panel-link-plugins").click()
        await page.get_by_test_id("plugin-row").filter(has_text="approvals").first.wait_for()
        await page.get_by_test_id("panel-link-sessions").click()
        await page.get_by_test_id("session").first.wait_for()
        await page.get_by_test_id("panel-link-files").click()
        await page.get_by_test_id("file-input").set_input_files(
            files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"ship it\n"}])
        await page.get_by_test_id("file").filter(has_text="notes.txt").wait_for()
        await page.get_by_test_id("file-drop").evaluate(DROP_FILE, ["dropped.txt", "hello"])
        await page.get_by_test_id("file").filter(has_text="dropped.txt").wait_for()


async def test_an_approval_answered_elsewhere_leaves_the_panel_at_once(browser, hub, people):
    (bob,) = people("bob")
    async with bob.client(hub.url) as b:
        page, _ = await signed_in(browser, hub)
        await page.get_by_test_id("panel-link-approvals").click()
        panel = page.get_by_test_id("panel-approvals")
        await panel.get_by_test_id("approvals-none").wait_for()
        asked = await b.call("approval_request", to=await my_name(page),
                             question="rotate the keys?")
        waiting = panel.get_by_test_id("approval").filter(has_text="rotate the keys?")
        await waiting.wait_for()
        async with owner_of(hub).client(hub.url, receive=False) as owner:
            view = await owner.call("approval_answer", id=asked["id"], answer="approve")
        # no reload: the hub's approval event moves the card
        await waiting.wait_for(state="detached")
        await panel.get_by_test_id("approvals-none").wait_for()
        settled = panel.get_by_test_id("approval-settled").filter(has_text="rotate the keys?")
        label = settled.get_by_test_id("approval-label")
        await label.wait_for()
        assert "answered by" in view["label"]
        assert await label.inner_text() == view["label"]


async def test_untrusted_markup_runs_nothing(browser, hub, people):
    (bob,) = people("bob")
    async with bob.client(hub.url) as b:
        page, _ = await signed_in(browser, hub)
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), asyncio.ensure_future(d.dismiss())))
        await b.send("#general", f"look {XSS_IMG} here")
        await b.send("#general", f"and {XSS_LINK} there")
        img = message(page, "look")
        link = message(page, "there")
        await img.wait_for()
        await link.wait_for()
        body = img.get_by_test_id("message-body")
        assert await body.locator("img").count() == 0
        assert XSS_IMG in (await body.text_content() or "")
        text = link.get_by_test_id("message-body")
        assert await text.locator("a").count() == 0  # the link is shown as the text it was
        assert XSS_LINK in (await text.text_content() or "")
        await text.click()
        await page.wait_for_timeout(300)  # what an injected handler would need to fire
        assert dialogs == []
        assert await page.get_by_test_id("messages").locator("img").count() == 0
        # an aligned table: alignment as classes, no inline style for the page's policy to
        # refuse (a refused style would be a console error, which the fixture fails on)
        await b.send("#general", "| tool | runs |\n|:--|--:|\n| pytest | 240 |")
        table = message(page, "pytest").locator("table")
        await table.wait_for()
        assert await table.locator("td.align-right").text_content() == "240"
        assert await table.locator("[style]").count() == 0


async def test_a_summary_with_bidi_and_control_characters_shows_them(browser, hub, people):
    """A summary that would read backwards (U+202E) or carries a terminal escape is shown with
    those characters as visible escapes, in the people list and in the conversation's header."""
    (bob,) = people("bob")
    async with bob.client(hub.url) as b:
        page, _ = await signed_in(browser, hub)
        await b.call("set_summary", summary="ok \u202edesrever\x1b[2K")
        row = page.get_by_test_id("presence").locator("[data-testid=peer][data-name=bob]")
        summary = row.get_by_test_id("peer-summary")
        await summary.filter(has_text="desrever").wait_for()
        assert await summary.text_content() == "ok \\u202edesrever\\x1b[2K"


async def test_paged_history_and_signed_out_screen(browser, hub_factory, people):
    hub = hub_factory(MESHHUB_SEND_RATE="0")  # 1,000 sends at once from one member
    (bob,) = people("bob")
    link = await sign_in_link(hub)  # the owner's peer exists from here on, in #general
    async with bob.client(hub.url, receive=False) as b:
        pending = [await b.call_nowait("send", to="#general", text=f"note {i:04d}")
                   for i in range(1000)]
        await asyncio.gather(*pending)
    page, page_watch = await browser.page(link)
    shown = page.get_by_test_id("messages").get_by_test_id("message")
    await shown.filter(has_text="note 0999").wait_for()
    assert await shown.count() == 50  # one page; the rest on scrolling up
    at_bottom = "(list) => list.scrollHeight - list.scrollTop - list.clientHeight < 2"
    messages = page.get_by_test_id("messages")
    # the page opens at the bottom (once its layout settles: a loaded machine takes frames)
    await page.wait_for_function(at_bottom, arg=await messages.element_handle(),
                                 timeout=10_000)
    async with bob.client(hub.url) as b:  # at the bottom, arriving messages stay in view
        for i in range(5):
            await b.send("#general", f"late {i}\nwith a second line")
        await shown.filter(has_text="late 4").wait_for()
        await page.wait_for_function(at_bottom, arg=await messages.element_handle(),
                                     timeout=10_000)
        await messages.evaluate("(list) => { list.scrollTop = 0; }")
        await shown.filter(has_text="note 0900").wait_for()
        assert await shown.count() == 105
        # reading older ones, a new message does not pull the person down
        await b.send("#general", "while you read")
        await shown.filter(has_text="while you read").wait_for()
        await page.evaluate(TWO_FRAMES)  # the page scrolls, when it does, at the next frame
        assert not await messages.evaluate(at_bottom)

    # a browser without the cookie gets the sign-in screen, never a form
    other, watch = await browser.page()
    await other.goto(hub.url)
    signin = other.get_by_test_id("signin")
    await signin.wait_for()
    assert "hub web" in (await signin.text_content() or "")
    assert await other.locator("input, form").count() == 0

    # signing out from the sessions panel ends the session
    await page.get_by_test_id("panel-link-sessions").click()
    await page.get_by_test_id("sign-out").click()
    await page.get_by_test_id("signin").wait_for()
    await page.reload()
    await page.get_by_test_id("signin").wait_for()


async def test_narrow_layout_and_keyboard(browser, hub, people):
    (bob,) = people("bob")
    async with bob.client(hub.url) as b:
        page, _ = await signed_in(browser, hub, viewport=NARROW, color_scheme="dark")
        sidebar = page.get_by_test_id("sidebar")
        assert not await sidebar.is_visible()
        await page.get_by_test_id("menu-button").click()
        await sidebar.wait_for()
        await page.get_by_test_id("new-conversation-button").click()
        await page.get_by_test_id("new-conversation-name").fill("release")
        await page.get_by_test_id("new-conversation-name").press("Enter")
        await sidebar.wait_for(state="hidden")
        assert await page.get_by_test_id("view-title").text_content() == "#release"
        await page.get_by_test_id("menu-button").click()
        await sidebar.locator("[data-testid=dm][data-view='dm:bob']").click()
        await sidebar.wait_for(state="hidden")
        assert await page.get_by_test_id("view-title").text_content() == "bob"

        # @mention autocomplete: pick with Enter, then Enter sends
        box = page.get_by_test_id("composer-input")
        await box.type("ping @bo")
        await page.get_by_test_id("autocomplete-option").filter(has_text="bob").wait_for()
        await box.press("Enter")
        assert await box.input_value() == "ping @bob "
        await box.press("Enter")
        got = (await collect(b, 1))[0]
        assert got["text"] == "ping @bob" and got["conversation"] == "dm"
        await b.send(await my_name(page), f"pong @{await my_name(page)}")
        await message(page, "pong").and_(page.locator(".mentioned")).wait_for()
        assert await page.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]


async def test_reconnects_after_a_hub_restart(browser, hub, people):
    (bob,) = people("bob")
    page, watch = await signed_in(browser, hub)
    # while the hub is down Chromium reports the refused connections; the page can't stop that
    watch.allow(r"ERR_CONNECTION_REFUSED|WebSocket connection to .* failed")
    hub.stop()
    banner = page.get_by_test_id("reconnecting")
    await banner.wait_for()
    hub.start()
    async with bob.client(hub.url, receive=False) as b:
        await b.send("#general", "said while you were away")
    await banner.wait_for(state="hidden", timeout=15_000)
    await message(page, "said while you were away").wait_for()
    await send_from_page(page, "back again")


async def test_a_session_revoked_elsewhere_signs_the_page_out(browser, hub):
    first, _ = await signed_in(browser, hub)
    second, watch = await signed_in(browser, hub)
    await first.get_by_test_id("panel-link-sessions").click()
    other = first.get_by_test_id("session").filter(has_not_text="this browser")
    await other.get_by_test_id("session-revoke").click()
    await second.get_by_test_id("signin").wait_for()  # closed with 4001: no reconnecting
    assert "signed out" in (await second.get_by_test_id("signin-reason").text_content() or "")
    assert not await second.get_by_test_id("reconnecting").is_visible()
    await first.get_by_test_id("session").first.wait_for()
    assert await first.get_by_test_id("session").count() == 1


async def test_an_address_cannot_hand_the_page_a_session(browser, hub):
    """Another site can send the browser to any address of the hub; none of them changes
    which session the page holds (its half comes only in the answer to a sign-in link)."""
    page, _ = await signed_in(browser, hub)
    held = await page.evaluate("localStorage.getItem('meshhub.session')")
    await page.goto(hub.url + "/#session=planted")
    await page.reload()
    await page.get_by_test_id("composer-input").wait_for()  # still signed in
    assert await page.evaluate("localStorage.getItem('meshhub.session')") == held
    assert await my_name(page) == "owner"
    # signed in again from a second tab: the first tab's session ends, and the tab follows
    # the browser's new one instead of showing the sign-in screen
    await page.evaluate("window.beforeSecondSignIn = true")
    second = await page.context.new_page()
    await second.goto(await sign_in_link(hub))
    await second.get_by_test_id("composer-input").wait_for()
    for _ in range(100):  # the first tab reloads: a new document, without the mark
        with contextlib.suppress(PlaywrightError):
            if await page.evaluate("!window.beforeSecondSignIn && !!document.querySelector("
                                   "'[data-testid=composer-input]')"):
                break
        await asyncio.sleep(0.1)
    # its socket works, on the new session; the old one was ended, not left behind
    await page.get_by_test_id("panel-link-sessions").click()
    sessions = page.get_by_test_id("sessions-list").get_by_test_id("session")
    await sessions.first.wait_for()
    assert await sessions.count() == 1
