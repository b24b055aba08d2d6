"""Conversation logs: every accepted message also written to plain files under
``MESHHUB_HOME/logs/conversations/``, a human audit trail for ``grep``, ``less`` and ``jq``.

Each conversation has two files: ``<name>.log``, one readable line per message (UTC time, id,
sender, target, kind, text with terminal control sequences made visible and newlines written
as ``\\n``, so a line is a message and ``grep`` finds it whole; a text past
:data:`MAX_LINE_CHARS` is cut there), and ``<name>.jsonl``, the one public message shape
(docs/protocol.md) per line, whole. Names: ``general`` for ``#general``,
``@backend`` for ``@backend`` (``/`` becomes ``+``), ``@all`` for ``*``, ``+multi`` for a send
to several kinds of target, and ``dm+ann+bob`` for the direct messages of one pair of peers
(a direct message to several peers is written to each pair's file). A whisper is marked
``[whisper: names]``: the files are the hub owner's (0600 in a 0700 directory), like the
database.

Files rotate by size (``[logs]`` ``max_bytes``, ``backups``), as the standard library's
:class:`~logging.handlers.RotatingFileHandler` rotates them (:class:`RotatingFile`). They are
written by one writer thread fed by a :class:`queue.SimpleQueue`: a write, a rotation or a
slow disk never holds the event loop, so a send never waits on a log. The hook only builds the
message's public view (the peer names are read on the loop, where they change) and puts it on
the queue; formatting and writing happen in the thread, which wakes, lets messages gather for
:data:`GATHER_SECONDS` and writes them all, one write per file: on a busy hub it takes the
interpreter's lock a few times a second, not once a message. A
queue that grows past :data:`MAX_PENDING` messages or :data:`MAX_PENDING_BYTES` of their text
(a disk far slower than the sends) drops lines and says so in the hub's log, rather than
holding memory or slowing sends. The hub lets the sends in flight commit before it stops its
plugins, so the writer, closed at ``meshhub_shutdown``, has the last messages too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import io
import logging
import os
import queue
import re
import threading
import time
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshhub import codec, hookimpl, memory
from meshhub.config import ConfigError
from meshhub.sanitize import for_terminal, json_bytes_for_screen

if TYPE_CHECKING:
    from meshhub.hub import Hub
    from meshhub.models import Message

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 5
MAX_PENDING = 100_000
MAX_PENDING_BYTES = 64 * 1024 * 1024  # of queued text, counted as characters
VIEW_OVERHEAD = 1024  # what a queued view holds besides its text: ids, names, data
MAX_OPEN = 128  # files kept open; the least recently written are closed
MAX_BATCH = 5000  # queued messages written at once
GATHER_SECONDS = 0.05
RELEASE_AFTER = 4 * 1024 * 1024  # bytes written before the heap is handed back
MAX_STEM = 120
MAX_LINE_CHARS = 4000  # of a text in the .log; the .jsonl has it whole
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
    # "_" first: never a hidden file, nor one a command takes for an option
    return "_" + re.sub(r"[^A-Za-z0-9_.@+-]", "_", stem)[:MAX_STEM] + "-" + digest


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
    text = str(view["text"])
    cut = f" [... {len(text) - MAX_LINE_CHARS} more characters in the .jsonl]" \
        if len(text) > MAX_LINE_CHARS else ""
    # a backslash doubled first, so the escapes below are the only single ones
    text = for_terminal(text[:MAX_LINE_CHARS].replace("\\", "\\\\"))
    return " ".join(parts) + ": " + text.replace("\n", "\\n").replace("\t", "\\t") + cut


def _one(value: str) -> str:
    return for_terminal(str(value), one_line=True)


class RotatingFile:
    """An append-only file only its owner can read (0600), renamed ``.1`` (the older ones moving
    up, ``backups`` kept) before a write would take it past ``max_bytes``: what the standard
    library's :class:`~logging.handlers.RotatingFileHandler` does, for a batch of lines at once
    (that handler formats, locks, checks and flushes per line: about 30 us a line here, against
    about 2 us for a batch's write)."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path, self.max_bytes, self.backups = path, max_bytes, backups
        self.file = self._open()
        self.size = os.fstat(self.file.fileno()).st_size

    def _open(self) -> io.BufferedWriter:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return open(fd, "ab")

    def write(self, lines: list[bytes]) -> None:
        """Append ``lines`` (each ending in a newline), rotating where the size says so; a line
        longer than ``max_bytes`` gets a file of its own."""
        for line in lines:
            if self.size and self.size + len(line) > self.max_bytes:
                self.rotate()
            self.file.write(line)
            self.size += len(line)
        self.file.flush()

    def rotate(self) -> None:
        self.file.close()
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self.file, self.size = self._open(), 0

    def close(self) -> None:
        self.file.close()


class LogWriter:
    """The writer thread of one hub: writes queued message views to their files, a batch (all
    that is queued) at a time."""

    def __init__(self, root: Path, max_bytes: int, backups: int,
                 max_pending_bytes: int = MAX_PENDING_BYTES) -> None:
        self.root, self.max_bytes, self.backups = root, max_bytes, backups
        self.pending: queue.SimpleQueue[tuple[dict[str, Any], list[str]] | None] = (
            queue.SimpleQueue())
        self.max_pending_bytes = max_pending_bytes
        self.pending_bytes = 0  # of the views queued: added on the loop, taken off in the thread
        self._bytes_lock = threading.Lock()
        self.open: OrderedDict[str, RotatingFile] = OrderedDict()
        self.dropped = 0
        self.thread = threading.Thread(target=self._run, name="meshhub-conversation-logs",
                                       daemon=True)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        self.thread.start()

    def put(self, view: dict[str, Any], stems: list[str]) -> None:
        """Queue a message for its files; never blocks (a full queue drops it, and says so)."""
        size = _weight(view)
        with self._bytes_lock:
            fits = (self.pending.qsize() < MAX_PENDING
                    and self.pending_bytes + size <= self.max_pending_bytes)
            if fits:
                self.pending_bytes += size
        if fits:
            self.pending.put((view, stems))
        else:
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
        running = True
        unreleased = 0  # bytes of text written since the heap was last handed back
        while running:
            batch = [self.pending.get()]
            time.sleep(GATHER_SECONDS)  # let a busy hub's messages gather: fewer, larger writes
            with contextlib.suppress(queue.Empty):
                while len(batch) < MAX_BATCH:
                    batch.append(self.pending.get_nowait())
            running = None not in batch
            items = [item for item in batch if item is not None]
            self._write(items)
            written = sum(_weight(view) for view, _ in items)
            with self._bytes_lock:  # after the write: a batch being written counts too
                self.pending_bytes -= written
            unreleased += written
            batch, items = [], []  # the views are freed before the heap is handed back
            if unreleased > RELEASE_AFTER and self.pending.empty():
                # the lines of a burst of large messages were made in this thread's own heap,
                # which keeps its freed pages (megabytes after 60 KB messages) until asked
                memory.release()
                unreleased = 0
        for file in self.open.values():
            file.close()

    def _write(self, batch: list[tuple[dict[str, Any], list[str]]]) -> None:
        lines: dict[str, list[bytes]] = {}
        for view, stems in batch:
            try:
                text = (log_line(view) + "\n").encode(errors="surrogatepass")
                as_json = json_bytes_for_screen(codec.dumps_line(view))
            except Exception:
                log.exception("cannot log message %s", view.get("id"))
                continue
            for stem in stems:
                lines.setdefault(stem + ".log", []).append(text)
                lines.setdefault(stem + ".jsonl", []).append(as_json)
        for name, chunk in lines.items():
            try:
                self._file(name).write(chunk)
            except OSError as exc:
                log.warning("cannot write the conversation log %s: %s", name, exc)
                self.open.pop(name, None)

    def _file(self, name: str) -> RotatingFile:
        file = self.open.get(name)
        if file is None:
            file = self.open[name] = RotatingFile(self.root / name, self.max_bytes,
                                                  self.backups)
            while len(self.open) > MAX_OPEN:
                self.open.popitem(last=False)[1].close()
        self.open.move_to_end(name)
        return file


def _weight(view: dict[str, Any]) -> int:
    """What a queued view counts towards :data:`MAX_PENDING_BYTES`."""
    return len(view["text"]) + VIEW_OVERHEAD


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
