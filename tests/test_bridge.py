"""The shared connector machinery in meshhub.bridge: Markdown to HTML, splitting, retries,
rate limits, loop prevention, command parsing. Pure functions, no servers."""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshhub.bridge.chat import parse_call, parse_command, split_address
from meshhub.bridge.loops import LoopGuard, is_echo, origin
from meshhub.bridge.markdown import markdown_to_html, split_html, visible_length
from meshhub.bridge.retry import ErrorKinds, GiveUp, RateLimiter, RetryPolicy, call_with_retries
from meshhub.models import Message

from .fakes.telegram_api import check_html


@pytest.mark.parametrize(("source", "expected"), [
    ("plain & simple <tag>", "plain &amp; simple &lt;tag&gt;"),
    ("**bold** and *it* and _it2_ and ~~gone~~", "<b>bold</b> and <i>it</i> and <i>it2</i> and "
     "<s>gone</s>"),
    ("`a<b && c`", "<code>a&lt;b &amp;&amp; c</code>"),
    ("[docs](https://x.example/?a=1&b=\"2\")",
     '<a href="https://x.example/?a=1&amp;b=%222%22">docs</a>'),
    ("[me](tg://user?id=42)", '<a href="tg://user?id=42">me</a>'),
    ("[bad](javascript:alert(1))", "[bad](javascript:alert(1))"),
    ("snake_case_name and 2*3*4 and 2\\*3\\*4", "snake_case_name and 2<i>3</i>4 and 2*3*4"),
    ("unbalanced **bold and *star", "unbalanced **bold and *star"),
    ("# Title\n- one\n> quoted <x>", "<b>Title</b>\n• one\n<blockquote>quoted &lt;x&gt;"
     "</blockquote>"),
    ("```py\nif a < b:\n    print('**no**')\n```", '<pre><code class="language-py">if a &lt; b:\n'
     "    print('**no**')</code></pre>"),
    ("- a\n  - b\n    1. c\n- d", "• a\n  • b\n    1. c\n• d"),
    ("3. x\n4. y\n\n- loose\n\n- list", "3. x\n4. y\n\n• loose\n\n• list"),
    ("| name | n |\n|---|--:|\n| ann <1> | 1 |",
     "<pre>name    | n\n--------+--\nann &lt;1&gt; | 1</pre>"),
    ("a\n\n***\nb", "a\n\n──────────\nb"),
    ("![pixel](https://t.example/p.png)", '<a href="https://t.example/p.png">pixel</a>'),
    ("> a\n>\n> > b", "<blockquote>a\n\n&gt; b</blockquote>"),
    ("~~~ &#x202e;\nx\n~~~\nrtl &#x202e;", "<pre>x</pre>\nrtl \\u202e"),
])
def test_markdown_to_html(source, expected):
    html = markdown_to_html(source)
    assert html == expected
    assert check_html(html) is None  # Telegram's rules, as the fake enforces them


def test_markdown_never_yields_html_telegram_refuses():
    nasty = ["<<>>&&;", "**a *b** c*", "`unclosed", "[x](https://a)<b>", "*_~`[]()#>",
             "&amp; &lt;", "**" * 50, "_a_b_c_", "```\n<pre>\n", "> > > deep", "\u202e rtl 🎉"]
    for text in nasty:
        assert check_html(markdown_to_html(text)) is None, text


MARKDOWN_PIECES = ["*", "**", "_", "__", "~~", "`", "```", "~~~", "[", "]", "(", ")", "<", ">",
                   "&", "&amp;", "&#x202e;", "\\", "#", "> ", "- ", "1. ", "|", "---", "\n",
                   "\n\n", "  ", "![", "https://a.example/?q=1&r=<2>", "tg://user?id=1",
                   "javascript:", "\x1b", "\u202e", "🎉"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(MARKDOWN_PIECES) | st.text(max_size=4), max_size=60)
       .map("".join))
def test_markdown_to_html_of_any_text_is_accepted_by_telegram(text: str) -> None:
    assert check_html(markdown_to_html(text)) is None


def test_split_html_keeps_tags_balanced_and_under_the_limit():
    body = "<b>" + "word &amp; more " * 700 + "</b>\n" + "<code>" + "x" * 5000 + "</code>"
    chunks = split_html(body, 4096)
    assert len(chunks) >= 4
    for chunk in chunks:
        assert visible_length(chunk) <= 4096
        assert check_html(chunk) is None
    joined = "".join(c.replace("<b>", "").replace("</b>", "").replace("<code>", "")
                     .replace("</code>", "") for c in chunks)
    assert joined.count("word") == 700 and joined.count("x") == 5000 + 0
    assert split_html("short", 4096) == ["short"]
    emoji = "🎉" * 3000  # 2 UTF-16 units each
    assert all(visible_length(c) <= 4096 for c in split_html(emoji, 4096))


def test_commands_and_addresses():
    assert parse_command("/peers") == ("peers", "")
    assert parse_command("/To@mesh_bot ann hello there") == ("to", "ann hello there")
    assert parse_command("not a command") is None
    assert split_address("@ann: hi") == ("ann", "hi")
    assert split_address("#ops deploy now") == ("#ops", "deploy now")
    assert split_address("hello @ann") is None
    assert parse_call('approval_answer id=abc answer=approve reason="looks good"') == (
        "approval_answer", {"id": "abc", "answer": "approve", "reason": "looks good"})
    assert parse_call("peers online_only=true") == ("peers", {"online_only": True})


def test_loop_guard_and_origins():
    guard = LoopGuard(size=2)
    guard.posted("1:1")
    guard.posted("1:2")
    guard.posted("1:3")
    assert guard.is_own("1:3") and not guard.is_own("1:1")  # bounded
    message = Message(id="m", sender="s", target="#ops", conversation="#ops", body="x",
                      recipients=[], data=origin("telegram", -100))
    assert is_echo(message, "telegram", "-100")
    assert not is_echo(message, "telegram", "-200") and not is_echo(message, "slack", "-100")


class Flaky(Exception):
    def __init__(self, retry_after: float | None = None, transient: bool = True) -> None:
        self.retry_after, self.transient = retry_after, transient


KINDS = ErrorKinds(retry_after=lambda e: getattr(e, "retry_after", None),
                   transient=lambda e: getattr(e, "transient", False))


async def test_retries_honour_retry_after_then_back_off():
    script = [Flaky(retry_after=0.3), Flaky(), None]
    waits: list[float] = []
    paused: list[float] = []

    async def call() -> str:
        error = script.pop(0)
        if error:
            raise error
        return "ok"

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    result = await call_with_retries(call, KINDS, RetryPolicy(base_delay=0.1),
                                     on_retry_after=paused.append, sleep=sleep)
    assert result == "ok" and paused == [0.3]
    assert 0.3 <= waits[0] < 0.4 and 0.1 <= waits[1] <= 0.2


async def test_retries_stop_on_permanent_errors_and_give_up_eventually():
    async def permanent() -> None:
        raise Flaky(transient=False)

    async def always() -> None:
        raise Flaky()

    async def no_sleep(seconds: float) -> None:
        return None

    with pytest.raises(Flaky):
        await call_with_retries(permanent, KINDS, sleep=no_sleep)
    with pytest.raises(GiveUp):
        await call_with_retries(always, KINDS, RetryPolicy(attempts=3), sleep=no_sleep)
    with pytest.raises(GiveUp):  # a retry_after longer than the budget is not waited out
        await call_with_retries(lambda: _raise(Flaky(retry_after=500)), KINDS, sleep=no_sleep)


async def _raise(exc: Exception) -> None:
    raise exc


async def test_rate_limiter_spaces_calls_per_key_and_pauses():
    limiter = RateLimiter(rate=20.0, burst=2.0, global_rate=1000.0, global_burst=1000.0)
    started = time.monotonic()
    for _ in range(4):
        await limiter.acquire("chat")
    assert time.monotonic() - started >= 0.09  # two beyond the burst at 20/s
    await asyncio.wait_for(limiter.acquire("other"), 0.05)  # another chat is not held up
    limiter.pause("other", 0.2)
    started = time.monotonic()
    await limiter.acquire("other")
    assert time.monotonic() - started >= 0.19
