"""Real-browser testing of the web page: Debian's Chromium driven by Playwright, with every
console error and uncaught page error collected, so each test can end by asserting there were
none. Screenshots go to ``MESHHUB_SCREENSHOTS`` (default ``tests/screenshots``)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import async_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
WIDE = {"width": 1280, "height": 800}
NARROW = {"width": 360, "height": 740}


def screenshots_dir() -> Path:
    path = Path(os.environ.get("MESHHUB_SCREENSHOTS", "tests/screenshots"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class ConsoleWatch:
    """What a page complained about: console messages of type error and uncaught errors.

    ``allow`` takes patterns for errors a test causes on purpose: Chromium reports a refused
    connection while the hub restarts as a console error, and nothing in the page can stop it.
    """

    errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} ({message.location.get('url', '')})")

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]


@dataclass
class Browser:
    """One Chromium for a test; every page it opens is watched for errors."""

    browser: Any
    watches: list[ConsoleWatch] = field(default_factory=list)

    async def page(self, url: str | None = None, *, viewport: dict[str, int] | None = None,
                   color_scheme: str = "light") -> tuple[Any, ConsoleWatch]:
        context = await self.browser.new_context(
            viewport=viewport or WIDE, color_scheme=color_scheme, accept_downloads=True)
        page = await context.new_page()
        watch = ConsoleWatch()
        watch.attach(page)
        self.watches.append(watch)
        if url:
            await page.goto(url)
        return page, watch

    def assert_no_errors(self) -> None:
        found = [e for w in self.watches for e in w.unexpected()]
        assert not found, "the page logged errors:\n" + "\n".join(found)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A headless Chromium; at the end of the test, no page may have logged an error."""
    if not shutil.which(CHROMIUM):  # scripts/test-setup installs it: missing is a failure
        pytest.fail(f"the browser tests need Chromium at {CHROMIUM}: run scripts/test-setup "
                    "(it installs Debian's chromium package)")
    async with async_playwright() as driver:
        chromium = await driver.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        wrapper = Browser(chromium)
        try:
            yield wrapper
        finally:
            await chromium.close()
        wrapper.assert_no_errors()

