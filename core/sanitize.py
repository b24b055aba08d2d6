"""What a peer could use against a reader, neutralised: terminal control sequences and bidi
overrides in text that a person is shown (the CLI, MCP tool results, chat headers and buttons).

A peer's message, summary or name is untrusted input. Printed as is, ``ESC[2K ESC[1A`` erases
the line above and rewrites it, an OSC sequence retitles the window, and U+202E turns the rest
of a line around. :func:`for_terminal` shows each such character as a visible escape instead,
so the reader sees that something was there, and nothing happens to their screen.
"""

from __future__ import annotations

import json
import re
from typing import Any

# C0 controls but tab and newline, DEL, C1 controls, and the Unicode bidi controls
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# what a one-line value drops: those, tab and newline, and lone surrogates (no encoding takes them)
_NOT_IN_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
                          "\ud800-\udfff]")
_WHITESPACE_RUN = re.compile(r"\s+")
# what JSON text may carry unescaped but a reader's screen must not get: DEL, C1 controls, the
# bidi controls, and lone surrogates (which no encoding takes); JSON escapes C0 controls itself
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
                             "\ud800-\udfff]")


def one_line(text: str, limit: int = 200) -> str:
    """One line fit for a mail header, a name or a status detail: every whitespace run (line
    breaks included, so no value can start a new header) is one space, controls and bidi
    overrides (which make a name read differently than it is) are gone, and at most ``limit``
    characters, cut with "…"."""
    # spaces again after the controls go: "a \x1b b" is "a b", as it reads the next time
    line = _WHITESPACE_RUN.sub(" ", _NOT_IN_LINE.sub("", _WHITESPACE_RUN.sub(" ", text))).strip()
    if len(line) <= limit:
        return line
    return line[: max(limit - 1, 0)].rstrip() + "…"


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def for_terminal(text: str, *, one_line: bool = False) -> str:
    """``text`` safe to print: control and bidi characters shown as ``\\x1b``/``\\u202e``.
    ``one_line``: newlines and tabs become spaces too (a table cell, a name)."""
    safe = _UNSAFE.sub(_visible, text.replace("\r\n", "\n"))
    return safe.replace("\n", " ").replace("\t", " ") if one_line else safe
# the same characters in UTF-8 (JSON text from an encoder that refuses lone surrogates)
_UNSAFE_IN_JSON_UTF8 = re.compile(rb"\x7f|\xc2[\x80-\x9f]|\xd8\x9c|\xe2\x80[\x8e\x8f\xaa-\xae]"
                                  rb"|\xe2\x81[\xa6-\xa9]")


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def for_json(value: Any) -> str:
    """``value`` as compact JSON text fit to show (a tool result a person may read): non-ASCII
    text stays readable, but every control, bidi and lone surrogate character is a ``\\uXXXX``
    escape, so the text parses back to exactly ``value`` and does nothing to a screen."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return _UNSAFE_IN_JSON.sub(_json_escape, text)


def _json_escape_utf8(match: re.Match[bytes]) -> bytes:
    return f"\\u{ord(match.group().decode()):04x}".encode()


def json_bytes_for_screen(text: bytes) -> bytes:
    """UTF-8 JSON ``text`` (as orjson writes it) made as safe to show as :func:`for_json`'s:
    DEL, C1 and bidi characters written as ``\\uXXXX``; it parses back to the same value."""
    return _UNSAFE_IN_JSON_UTF8.sub(_json_escape_utf8, text)


ENGINE_MARKS = ("\x02", "\x03")  # where an engine's snippet marks its matched words


def shown_snippet(snippet: str, marks: tuple[str, str]) -> str:
    """A search snippet as a peer sees it: the text's own mark characters and backslashes
    escaped with a backslash, then the engine's marks (:data:`ENGINE_MARKS`, which no stored
    text holds) turned into ``marks``, so those are the only marks in it."""
    own = re.compile("([" + re.escape(marks[0] + marks[1]) + r"\\])")
    return own.sub(r"\\\1", snippet).replace(ENGINE_MARKS[0], marks[0]).replace(
        ENGINE_MARKS[1], marks[1])

