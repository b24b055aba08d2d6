"""Conversation logs: every accepted message also written to plain files under
``MESHHUB_HOME/logs/conversations/``, a human audit trail for ``grep``, ``less`` and ``jq``.

Each conversation has two files: ``<name>.log``, one readable line per message (UTC time, id,
sender, target, kind, text with terminal control sequences made visible and newlines written
as ``\\n``, so a line is a message and ``grep`` finds it whole), and ``<name>.jsonl``, the one
public message shape (docs/protocol.md) per line. Names: ``general`` for ``#general``,
``@backend`` for ``@backend`` (``/`` becomes ``+``), ``@all`` for ``*``, ``+multi`` for a send
to several kinds of target, and ``dm+ann+bob`` for the direct messages of one pair of peers
(a direct message to several peers is written to each pair's file). A whisper is marked
``[whisper: names]``: the files are the hub owner's (0600 in a 0700 directory), like the
database.

Files rotate by size (``[logs]`` ``max_bytes``, ``backups``), with the standard library's
:class:`~logging.handlers.RotatingFileHandler`. They are written by one writer thread fed by a
queue: a write, a rotation or a slow disk never holds the event loop, so a send never waits on
a log. The hook only builds the message's public view (the peer names are read on the loop,
where they change) and puts it on the queue; formatting and writing happen in the thread. A
queue that grows past :data:`MAX_PENDING` (a disk far slower than the sends) drops lines and
says so in the hub's log, rather than holding memory or slowing sends.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import io
import logging
import os
import queue
import re
import threading
import weakref
from collections import OrderedDict
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshhub import hookimpl
from meshhub.config import ConfigError
from meshhub.sanitize import for_json, for_terminal

if TYPE_CHECKING:
    from meshhub.hub import Hub
    from meshhub.models import Message

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 5
MAX_PENDING = 100_000
MAX_OPEN = 64  # conversations whose files stay open; the least recently written are closed
MAX_STEM = 120
_SAFE_STEM = re.compile(r"^[A-Za-z0-9@+][A-Za-z0-9_.@+-]*$")


def file_stem(conversation: str, pair: tuple[str, str] | None = None) -> str:
    """The file name (without extension) of a conversation, or of the direct messages of
    ``pair``; always one plain name inside the log directory, whatever it is given."""
    if conversation == "dm" and pair is not None:
        stem = "dm+" + "+".join(sorted(n.lower() for n in pair))
    elif conversation == "*":
        stem = "@all"
    elif conversation == "multi":
        stem = "+multi"
    else:
        stem = conversation.removeprefix("#").replace("/", "+")
    if _SAFE_STEM.match(stem) and len(stem) <= MAX_STEM:
        return stem
    digest = hashlib.sha256(stem.encode(errors="surrogatepass")).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9_.@+-]", "_", stem)[:MAX_STEM].lstrip(".") + "-" + digest


def log_line(view: dict[str, Any]) -> str:
    """One message (in the public shape) as one readable line."""
    when = datetime.datetime.fromtimestamp(view["created_at"], datetime.UTC)
    parts = [when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", view["id"],
             _one(view["from"]), "->", _one(view["to"])]
    if view["kind"] != "text":
        parts.append(f"[{_one(view['kind'])}]")
    if view["whisper"]:
        parts.append(f"[whisper: {_one(', '.join(view['whisper']))}]")
    if view["reply_to"]:
        parts.append(f"[reply to {view['reply_to']}]")
    if view["priority"] != "next":
        parts.append(f"[{view['priority']}]")
    files = ", ".join(str(a.get("name")) for a in view["attachments"] if isinstance(a, dict))
    if files:
        parts.append(f"[files: {_one(files)}]")
    # a backslash doubled first, so the escapes below are the only single ones
    text = for_terminal(str(view["text"]).replace("\\", "\\\\"))
    return " ".join(parts) + ": " + text.replace("\n", "\\n").replace("\t", "\\t")


def _one(value: str) -> str:
    return for_terminal(str(value), one_line=True)


class PrivateRotatingFile(RotatingFileHandler):
    """A rotating file only its owner can read: created 0600 (the rotated names keep it)."""

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return open(fd, "a", encoding="utf-8")

    def handleError(self, record: logging.LogRecord) -> None:
        log.warning("cannot write the conversation log %s", self.baseFilename, exc_info=True)


class LogWriter:
    """The writer thread of one hub: writes queued message views to their files."""

    def __init__(self, root: Path, max_bytes: int, backups: int) -> None:
        self.root, self.max_bytes, self.backups = root, max_bytes, backups
        self.pending: queue.Queue[tuple[dict[str, Any], list[str]] | None] = queue.Queue(
            MAX_PENDING)
        self.open: OrderedDict[str, tuple[RotatingFileHandler, RotatingFileHandler]] = (
            OrderedDict())
        self.dropped = 0
        self.thread = threading.Thread(target=self._run, name="meshhub-conversation-logs",
                                       daemon=True)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        self.thread.start()

    def put(self, view: dict[str, Any], stems: list[str]) -> None:
        """Queue a message for its files; never blocks (a full queue drops it, and says so)."""
        try:
            self.pending.put_nowait((view, stems))
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("conversation logs fall behind: %d message(s) not logged",
                            self.dropped)

    def close(self) -> None:
        """Write what is queued, then stop the thread and close the files (blocking: run it
        off the loop)."""
        self.pending.put(None)
        self.thread.join()

    def _run(self) -> None:
        while (item := self.pending.get()) is not None:
            view, stems = item
            try:
                line = log_line(view)
                as_json = for_json(view)
                for stem in stems:
                    text_file, json_file = self._files(stem)
                    text_file.emit(logging.makeLogRecord({"msg": line}))
                    json_file.emit(logging.makeLogRecord({"msg": as_json}))
            except Exception:
                log.exception("cannot log message %s", view.get("id"))
        for pair in self.open.values():
            for handler in pair:
                handler.close()

    def _files(self, stem: str) -> tuple[RotatingFileHandler, RotatingFileHandler]:
        files = self.open.get(stem)
        if files is None:
            files = self.open[stem] = (self._handler(stem + ".log"),
                                       self._handler(stem + ".jsonl"))
            while len(self.open) > MAX_OPEN:
                for handler in self.open.popitem(last=False)[1]:
                    handler.close()
        self.open.move_to_end(stem)
        return files

    def _handler(self, name: str) -> RotatingFileHandler:
        handler = PrivateRotatingFile(self.root / name, maxBytes=self.max_bytes,
                                      backupCount=self.backups, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        return handler


_writers: weakref.WeakKeyDictionary[Hub, LogWriter] = weakref.WeakKeyDictionary()


def settings(section: dict[str, Any]) -> tuple[bool, int, int]:
    """The ``[logs]`` table: ``conversations`` (on/off), ``max_bytes`` per file, ``backups``
    kept."""
    enabled = section.get("conversations", True)
    max_bytes = section.get("max_bytes", DEFAULT_MAX_BYTES)
    backups = section.get("backups", DEFAULT_BACKUPS)
    if not isinstance(enabled, bool):
        raise ConfigError("[logs] conversations must be true or false")
    if type(max_bytes) is not int or max_bytes < 1024:
        raise ConfigError("[logs] max_bytes must be a whole number of bytes, at least 1024")
    if type(backups) is not int or backups < 1:
        raise ConfigError("[logs] backups must be a whole number, at least 1")
    return enabled, max_bytes, backups


def stems_of(hub: Hub, message: Message) -> list[str]:
    """The files ``message`` goes to: its conversation's, or one per pair for a direct one."""
    if message.conversation != "dm":
        return [file_stem(message.conversation)]
    peers = hub.directory.peers

    def name(key: str) -> str:
        return peers[key].name if key in peers else key

    others = [k for k in message.recipients if k != message.sender] or [message.sender]
    return list(dict.fromkeys(file_stem("dm", (name(message.sender), name(k))) for k in others))


@hookimpl
def meshhub_startup(hub: Hub) -> None:
    enabled, max_bytes, backups = settings(hub.config.section("logs"))
    if enabled:
        writer = LogWriter(hub.config.home / "logs" / "conversations", max_bytes, backups)
        writer.start()
        _writers[hub] = writer


@hookimpl
async def meshhub_shutdown(hub: Hub) -> None:
    writer = _writers.pop(hub, None)
    if writer is not None:
        await asyncio.to_thread(writer.close)


@hookimpl
def meshhub_message_accepted(hub: Hub, message: Message) -> None:
    writer = _writers.get(hub)
    if writer is not None:
        writer.put(hub.message_view(message), stems_of(hub, message))
