"""A minimal content-addressed file store: blobs named by their sha256 under
``<MESHHUB_HOME>/files/<2 hex>/<64 hex>``.

The same content is stored once, whatever its name; a blob is written to a temporary file and
renamed into place, so a reader never sees half a file. The size limit is ``[files] max_bytes``
in the config (20 MB by default, Telegram's own download limit). Names are only labels, made safe
by :func:`safe_name`; a blob's path never depends on one.

A message carries a file as an attachment ``{"file": <sha256>, "name", "size", "mime"}``.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
import tempfile
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InvalidRequest, NotFound, TooLarge

if TYPE_CHECKING:
    from .config import Config

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def safe_name(name: str, default: str = "file") -> str:
    """A file name safe to show and to save: no directories, no control or odd characters,
    at most 120 characters, the extension kept."""
    base = unicodedata.normalize("NFKC", name).replace("\\", "/").rsplit("/", 1)[-1]
    base = re.sub(r"[^\w.\- ()+,@]+", "_", base).strip(" ._")
    if len(base) > 120:
        stem, dot, ext = base.rpartition(".")
        base = (stem[: 119 - len(ext)] + dot + ext) if dot and len(ext) <= 10 else base[:120]
    return base or default


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
        guessed = mimetypes.guess_type(clean)[0]
        return StoredFile(hashlib.sha256(data).hexdigest(), clean, len(data),
                          mime or guessed or "application/octet-stream")

    def write(self, stored: StoredFile, data: bytes) -> None:
        """Write the blob of ``data`` (described by :meth:`describe`) unless it is there."""
        path = self.path_of(stored.file)
        if not path.exists():
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

    def exists(self, sha256: str) -> bool:
        return self.path_of(sha256).exists()
