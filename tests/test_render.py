"""One Markdown parse written for every surface (meshhub.render): plain text, Slack mrkdwn, and
the claim that a message shows the same words and link targets on the web, Telegram, Slack and
in a terminal. Pure functions, no servers."""

from __future__ import annotations

import html
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshhub.bridge.markdown import markdown_to_html
from meshhub.render import to_html, to_mrkdwn, to_text
from meshhub.sanitize import one_line


@pytest.mark.parametrize(("source", "expected"), [
    ("**bold** and *it* and ~~gone~~", "bold and it and gone"),
    ("`a<b && **c**`", "a<b && **c**"),
    ("[docs](https://x.example/a?b=1&c=2)", "docs (https://x.example/a?b=1&c=2)"),
    ("<https://x.example> <ann@x.example>", "https://x.example ann@x.example"),
    ("[bad](javascript:alert(1))", "[bad](javascript:alert(1))"),
    ("![pixel](https://t.example/p.png)", "pixel (https://t.example/p.png)"),
    ("# Title\n* one\n  * nested\n2. two", "Title\n- one\n  - nested\n2. two"),
    ("> quoted\n> **lines**", "> quoted\n> lines"),
    ("```py\nif a < b:\n    **no**\n```", "if a < b:\n    **no**"),
    ("| a | b |\n|---|--:|\n| xyz | 1 |", "a   | b\n----+--\nxyz | 1"),
    ("<b>raw</b> & &amp;", "<b>raw</b> & &"),
    ("esc \x1b[2K and \u202e and &#x202e;", "esc \\x1b[2K and \\u202e and \\u202e"),
])
def test_to_text(source, expected):
    assert to_text(source) == expected


@pytest.mark.parametrize(("source", "expected"), [
    ("**bold** and *it* and ~~gone~~", "*bold* and _it_ and ~gone~"),
    ("`a<b && c`", "`a&lt;b &amp;&amp; c`"),
    ("[docs](https://x.example/a?b=1&c=2)", "<https://x.example/a?b=1&amp;c=2|docs>"),
    ("[a <b> & c](https://x.example)", "<https://x.example|a &lt;b&gt; &amp; c>"),
    ("<!channel> <@U123> <https://evil.example|x>",
     "&lt;!channel&gt; &lt;@U123&gt; <https://evil.example%7Cx|https://evil.example|x>"),
    ("[bad](javascript:alert(1))", "[bad](javascript:alert(1))"),
    ("# Title\n- one\n  - nested\n1. first", "*Title*\n• one\n  • nested\n1. first"),
    ("> quoted <x>", "> quoted &lt;x&gt;"),
    ("```sh\nls > out\n```", "```\nls &gt; out\n```"),
    ("\u202e", "\\u202e"),
])
def test_to_mrkdwn(source, expected):
    assert to_mrkdwn(source) == expected


SAMPLE = """# Release notes

Ship **v2** today: run `make deploy` and read [the guide](https://docs.example/deploy?v=2&x=1).

1. build
2. test *carefully*
   - unit
   - [flows](mailto:qa@example.org)
"""


WORD = re.compile(r"[^\W\d]\w*")  # list numbers are how a surface draws a list, not words


def _html_words(rendered: str) -> tuple[list[str], list[str]]:
    targets = [html.unescape(url) for url in re.findall(r'href="([^"]*)"', rendered)]
    return WORD.findall(html.unescape(re.sub(r"<[^>]*>", " ", rendered))), targets


def _mrkdwn_words(rendered: str) -> tuple[list[str], list[str]]:
    targets = [html.unescape(url) for url in re.findall(r"<([^|>]*)\|", rendered)]
    words = html.unescape(re.sub(r"<[^|>]*\||[*_~`]", " ", rendered))
    return WORD.findall(words), targets


def _text_words(rendered: str) -> tuple[list[str], list[str]]:
    targets = re.findall(r" \(((?:https?|mailto):[^)]*)\)", rendered)
    return WORD.findall(re.sub(r" \((?:https?|mailto):[^)]*\)", " ", rendered)), targets


def test_a_message_shows_the_same_words_and_links_on_every_surface():
    web = _html_words(to_html(SAMPLE))
    assert web[0][:4] == ["Release", "notes", "Ship", "v2"]
    assert web[1] == ["https://docs.example/deploy?v=2&x=1", "mailto:qa@example.org"]
    assert _html_words(markdown_to_html(SAMPLE)) == web
    assert _mrkdwn_words(to_mrkdwn(SAMPLE)) == web
    assert _text_words(to_text(SAMPLE)) == web


def test_every_surface_keeps_the_marks_it_has():
    telegram, slack, text = markdown_to_html(SAMPLE), to_mrkdwn(SAMPLE), to_text(SAMPLE)
    assert "<b>v2</b>" in telegram and "*v2*" in slack and "**" not in text
    assert "<code>make deploy</code>" in telegram and "`make deploy`" in slack
    assert "make deploy" in text
    assert "\n   • unit" in telegram and "\n   • unit" in slack and "\n   - unit" in text


def test_entities_cannot_smuggle_a_bidi_override_onto_the_web():
    assert to_html("a &#x202e; b") == "<p>a \\u202e b</p>\n"
    assert "\u202e" not in to_html("```&#x202e;\nx\n```")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_a_line_made_fit_for_a_header_stays_as_it_is(text: str) -> None:
    """What one_line gives back is what it would give again (a mail's subject reads back as it
    was written), and holds no line break, control or run of spaces."""
    line = one_line(text)
    assert one_line(line) == line
    assert "\n" not in line and "  " not in line and line == line.strip()
