"""Reversible edits of another program's JSON config files (Claude Code's), in their own style.

``edit`` changes a file the way its owner wrote it: the indent (spaces, tabs or one line), the
separators of a one-line file, the line ending, the trailing newline, ``\\u`` escapes and key
order are detected and kept. The first edit of a file that holds none of our entries saves it to
``<file>.meshhub.bak`` first; a file that did not exist is created, with no backup.

``revert`` undoes that without leaving anything behind when it can: if the file, with our entries
removed, holds exactly what the backup holds, the backup's bytes are put back and the backup is
deleted; a file we created that holds nothing else is deleted. Otherwise (the owner changed the
file since) only our entries are removed, in the file's style, and the backup is kept.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BACKUP_SUFFIX = ".meshhub.bak"

Data = dict[str, Any]


@dataclass(frozen=True)
class JsonStyle:
    indent: str | None  # None: everything on one line
    compact: bool  # one line without spaces after , and :
    newline: str  # "\n" or "\r\n"
    final_newline: bool
    ascii_only: bool  # non-ASCII written as \u escapes

    @classmethod
    def of(cls, text: str) -> JsonStyle:
        body = text.strip()
        newline = "\r\n" if "\r\n" in text else "\n"
        ascii_only = text.isascii() and "\\u" in text
        final = text.endswith("\n")
        if "\n" not in body:
            return cls(None, not re.search(r'[,:] ', body), newline, final, ascii_only)
        first = re.search(r"\n([ \t]*)\S", body)
        indent = first.group(1) if first and first.group(1) else "  "
        return cls(indent, False, newline, final, ascii_only)

    def dumps(self, data: Data) -> str:
        separators = (",", ":") if self.compact else None
        text = json.dumps(data, indent=self.indent, separators=separators,
                          ensure_ascii=self.ascii_only)
        if self.newline != "\n":
            text = text.replace("\n", self.newline)
        return text + (self.newline if self.final_newline else "")


NEW_FILE = JsonStyle("  ", False, "\n", True, False)  # how Claude Code writes its files


def style_of(text: str | None) -> JsonStyle:
    return JsonStyle.of(text) if text and text.strip() else NEW_FILE


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + BACKUP_SUFFIX)


def parse(text: str, path: Path) -> Data:
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); fix or move it first") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


def read(path: Path) -> tuple[str | None, Data]:
    """The file's text (``None`` when it does not exist) and its data."""
    if not path.exists():
        return None, {}
    text = path.read_text(encoding="utf-8")
    return text, parse(text, path)


def same(a: Any, b: Any) -> bool:
    """Equal, key order included."""
    return json.dumps(a) == json.dumps(b)


def _write_text(path: Path, text: str, *, like: Path | None = None) -> None:
    """Replace ``path`` atomically. It gets the permissions of ``like`` (by default of ``path``
    itself), or 0600 when that does not exist: a backup of a private file stays private, from
    the moment it exists. A symlink (a dotfiles checkout, say) stays one: its target is
    written."""
    if path.is_symlink():
        path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    source = like or path
    mode = source.stat().st_mode & 0o777 if source.exists() else 0o600
    tmp = path.with_name(path.name + ".meshhub.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # left by an interrupted run
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    os.chmod(tmp, mode)  # the umask may have narrowed it
    os.replace(tmp, path)


def edit(path: Path, change: Callable[[Data], object], holds_ours: Callable[[Data], bool]) -> bool:
    """Apply ``change`` to the file's data and write it in the file's style; back it up first
    when it holds none of our entries yet. Returns whether the file changed."""
    text, data = read(path)
    new = copy.deepcopy(data)
    try:
        change(new)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    if text is not None and same(new, data):
        return False
    if text is not None and not holds_ours(data):
        _write_text(backup_path(path), text, like=path)
    _write_text(path, style_of(text).dumps(new))
    return True


def revert(path: Path, remove: Callable[[Data, Data | None], bool]) -> str | None:
    """Take our entries out of ``path`` (see the module docstring); ``remove(data, before)``
    removes them in place, keeping what ``before`` (the backed-up data, if any) had, and says
    whether there were any. Returns what was done, or ``None`` when nothing of ours was there."""
    text, data = read(path)
    if text is None:
        return None
    bak = backup_path(path)
    before_text = bak.read_text(encoding="utf-8") if bak.exists() else None
    before = None
    if before_text is not None:
        with contextlib.suppress(ValueError):
            before = parse(before_text, bak)
    if not remove(data, before):
        return None
    if before_text is not None and before is not None and same(data, before):
        _write_text(path, before_text)  # byte for byte what was there
        bak.unlink()
        return f"restored {path} as it was before `hub install`"
    if before_text is None and not data:
        path.unlink()  # `hub install` created it and nothing else was put in it since
        return f"removed {path} (`hub install` created it)"
    _write_text(path, style_of(text).dumps(data))
    kept = f"; kept {bak} (the file changed since `hub install`)" if before_text is not None else ""
    return f"removed the meshhub entries from {path}{kept}"
