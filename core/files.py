"""A minimal content-addressed file store: blobs named by their sha256 under
``<MESHHUB_HOME>/files/<2 hex>/<64 hex>``.

The same content is stored once, whatever its name; a blob is written to a temporary file and
renamed into place, so a reader never sees half a file; a large upload is streamed to its
temporary file and hashed as it comes (:meth:`FileStore.receive`). The size limit is
``[files] max_bytes`` in the config (50 MiB by default; a connector may keep a lower limit of
its platform's). Names are only labels, made safe by :func:`safe_name`; a blob's path never
depends on one. The media type is sniffed from the bytes (:func:`sniff_mime`), never taken from
the name or the uploader alone.

A message carries a file as an attachment ``{"file": <sha256>, "name", "size", "mime"}``.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
import tempfile
import time
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import puremagic

from .errors import InvalidRequest, NotFound, TooLarge

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Callable

    from .config import Config

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
SNIFF_BYTES = 8192  # what the type is sniffed from: magic numbers sit at the start
OCTET = "application/octet-stream"
# types a browser would run as a page if it showed them inline: never claimed on trust, and
# never served inline whatever was sniffed
ACTIVE_TYPES = ("text/html", "image/svg+xml", "application/xhtml+xml", "text/xml",
                "application/xml", "text/javascript", "application/javascript")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TOKEN = r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}"
_MEDIA_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}")
INCOMING_MAX_AGE = 3600.0  # an upload's temporary file untouched this long was left by a crash


def safe_name(name: str, default: str = "file") -> str:
    """A file name safe to show and to save: no directories, no control or odd characters,
    at most 120 characters, the extension kept."""
    base = unicodedata.normalize("NFKC", name).replace("\\", "/").rsplit("/", 1)[-1]
    base = re.sub(r"[^\w.\- ()+,@]+", "_", base).strip(" ._")
    if len(base) > 120:
        stem, dot, ext = base.rpartition(".")
        base = (stem[: 119 - len(ext)] + dot + ext) if dot and len(ext) <= 10 else base[:120]
    return base or default


def is_active(mime: str) -> bool:
    """Whether a browser could run ``mime`` as a page or a script."""
    return mime.split(";", 1)[0].strip().lower() in ACTIVE_TYPES


def claimed_type(claimed: str | None) -> str | None:
    """A claimed media type as it may be kept: ``type/subtype`` in lower case, its parameters
    dropped; ``None`` when it is no such token (a header injection, a list of types) or a type
    a browser could run or stream as pages (:func:`is_active`, ``multipart/*``)."""
    if not claimed:
        return None
    base = claimed.split(";", 1)[0].strip().lower()
    if not _MEDIA_TYPE.fullmatch(base) or is_active(base) or base.startswith("multipart/"):
        return None
    return base


def sniff_mime(head: bytes, claimed: str | None = None) -> str:
    """The media type of a file from its first bytes (magic numbers, by ``puremagic``). When the
    bytes say nothing, the claimed type (the uploader's, or the one its name suggests) is kept
    when :func:`claimed_type` accepts it: otherwise text that decodes as UTF-8 is then
    ``text/plain`` and anything else ``application/octet-stream``."""
    try:
        sniffed = puremagic.from_string(head, mime=True) if head else ""
    except (puremagic.PureError, ValueError):
        sniffed = ""
    if sniffed:
        return str(sniffed)
    kept = claimed_type(claimed)
    if kept:
        return kept
    if b"\x00" in head:
        return OCTET
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as bad:
        if bad.reason != "unexpected end of data" or len(head) < SNIFF_BYTES:
            return OCTET  # not text (a character cut by the sample's end is no sign of it)
    return "text/plain"


@dataclass
class StoredFile:
    file: str  # sha256 hex
    name: str
    size: int
    mime: str

    def attachment(self) -> dict[str, Any]:
        return asdict(self)


class FileStore:
    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes

    @classmethod
    def for_config(cls, config: Config) -> FileStore:
        section = config.section("files")
        return cls(config.home / "files", int(section.get("max_bytes", DEFAULT_MAX_BYTES)))

    def check_size(self, size: int) -> None:
        if size > self.max_bytes:
            raise TooLarge(f"the file is {size} bytes; the limit is {self.max_bytes}")

    def path_of(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise InvalidRequest(f"{sha256!r} is not a file id (64 hex digits)")
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes, name: str, mime: str | None = None) -> StoredFile:
        """Store ``data`` (idempotent: the same bytes land on the same blob)."""
        stored = self.describe(data, name, mime)
        self.write(stored, data)
        return stored

    def describe(self, data: bytes, name: str, mime: str | None = None) -> StoredFile:
        """What storing ``data`` under ``name`` gives, without storing anything: a caller can
        check the rest of a request before it keeps a byte (:meth:`write` stores it)."""
        self.check_size(len(data))
        clean = safe_name(name)
        return StoredFile(hashlib.sha256(data).hexdigest(), clean, len(data),
                          sniff_mime(data[:SNIFF_BYTES], mime or mimetypes.guess_type(clean)[0]))

    def write(self, stored: StoredFile, data: bytes) -> None:
        """Write the blob of ``data`` (described by :meth:`describe`) unless it is there."""
        path = self.path_of(stored.file)
        if path.exists():
            os.utime(path)  # stored again: its age, which the expiry sweep reads, starts anew
        else:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

    def get(self, sha256: str) -> bytes:
        path = self.path_of(sha256)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no file {sha256}") from None

    def describe_blob(self, sha256: str, name: str) -> StoredFile:
        """A stored blob under ``name``: its size and its type sniffed from its first bytes."""
        path = self.path_of(sha256)
        try:
            with path.open("rb") as fh:
                head = fh.read(SNIFF_BYTES)
            size = path.stat().st_size
        except FileNotFoundError:
            raise NotFound(f"no file {sha256}") from None
        clean = safe_name(name)
        return StoredFile(sha256, clean, size,
                          sniff_mime(head, mimetypes.guess_type(clean)[0]))

    def size_of(self, sha256: str) -> int:
        try:
            return self.path_of(sha256).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"no file {sha256}") from None

    def exists(self, sha256: str) -> bool:
        return self.path_of(sha256).exists()

    def delete(self, sha256: str) -> bool:
        """Remove a blob; ``False`` when it was not there."""
        try:
            self.path_of(sha256).unlink()
        except FileNotFoundError:
            return False
        return True

    async def receive(self, chunks: AsyncIterable[bytes], name: str, mime: str | None = None,
                      reserve: Callable[[int], None] | None = None) -> StoredFile:
        """Store a file arriving in chunks (an HTTP body): streamed to a temporary file and
        hashed as it comes, refused with :class:`TooLarge` as soon as it passes the limit
        (nothing kept), then renamed into place under its digest. ``reserve`` is told the
        bytes received so far before each chunk is kept, so a storage quota can refuse the
        upload (by raising) as the bytes arrive rather than after they are stored."""
        incoming = self.root / ".incoming"
        incoming.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=incoming, prefix="upload-")
        digest, size, head = hashlib.sha256(), 0, b""
        try:
            with os.fdopen(fd, "wb") as fh:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise TooLarge(f"the file is over the limit of {self.max_bytes} bytes",
                                       limit=self.max_bytes)
                    if reserve is not None:
                        reserve(size)
                    digest.update(chunk)
                    if len(head) < SNIFF_BYTES:
                        head += chunk[: SNIFF_BYTES - len(head)]
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            clean = safe_name(name)
            stored = StoredFile(digest.hexdigest(), clean, size,
                                sniff_mime(head, mime or mimetypes.guess_type(clean)[0]))
            path = self.path_of(stored.file)
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return stored

    def sweep_incoming(self, older_than: float = INCOMING_MAX_AGE) -> int:
        """Remove the temporary files of uploads untouched for ``older_than`` seconds (left by
        a crash: a live upload writes to its file as each chunk comes); how many went."""
        cutoff, gone = time.time() - older_than, 0
        leftovers = [*self.root.glob(".incoming/upload-*"), *self.root.glob("*/.incoming-*")]
        for path in leftovers:
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    gone += 1
            except FileNotFoundError:
                continue
        return gone
