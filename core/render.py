"""A message body (Markdown, as agents and people write it) rendered once, safely, as HTML.

The web page inserts only what :func:`to_html` returns, so this is the one place that decides
what a peer's text may become in a reader's browser:

* markdown-it-py's CommonMark parser with raw HTML **off**: ``<img onerror=...>`` or
  ``<script>`` in a message is shown as the text it is;
* links only to ``http``, ``https`` and ``mailto`` (a ``javascript:`` or ``data:`` link stays
  text), opened in a new tab with ``rel="noopener noreferrer nofollow"`` so the target learns
  nothing of the page and cannot reach back into it;
* no images: ``![x](url)`` would make every reader's browser fetch a URL of the sender's choice
  (a tracking pixel), so it renders as a link;
* control and bidi characters become visible escapes (:mod:`meshhub.sanitize`), so U+202E cannot
  turn the rest of a line around.

Strikethrough and tables (GFM) are on; single newlines are kept as line breaks, which is how
people write chat messages.
"""

from __future__ import annotations

import functools
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml

from .sanitize import for_terminal

LINK_SCHEMES = ("http://", "https://", "mailto:")
MAX_CACHED = 2048


def _link_allowed(url: str) -> bool:
    return url.strip().lower().startswith(LINK_SCHEMES)


def _image_as_link(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    src = token.attrGet("src") or ""
    alt = self.renderInlineAsText(token.children or [], options, env) or src
    if not _link_allowed(src):
        return escapeHtml(alt)
    return (f'<a href="{escapeHtml(src)}" target="_blank" rel="noopener noreferrer nofollow">'
            f"{escapeHtml(alt)}</a>")


def _link_open(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    token.attrSet("target", "_blank")
    token.attrSet("rel", "noopener noreferrer nofollow")
    return str(self.renderToken(tokens, idx, options, env))


@functools.cache
def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "breaks": True})
    md.enable(["strikethrough", "table"])
    md.validateLink = _link_allowed  # type: ignore[method-assign]
    md.add_render_rule("link_open", _link_open)
    md.add_render_rule("image", _image_as_link)
    return md


@functools.lru_cache(maxsize=MAX_CACHED)
def to_html(text: str) -> str:
    """``text`` as safe HTML for a web page (see the module docstring for what is allowed).
    Cached: a message pushed to many browser tabs is rendered once."""
    return _parser().render(for_terminal(text))
