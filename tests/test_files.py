"""Files: the content-addressed store (meshhub.files) and the file actions over a real hub."""

from __future__ import annotations

import base64
import hashlib

import pytest

from meshhub.errors import InvalidRequest, NotFound, TooLarge
from meshhub.files import FileStore, safe_name

from .helpers import collect


def test_blobs_are_named_by_content_and_limited_in_size(tmp_path):
    store = FileStore(tmp_path / "files", max_bytes=100)
    first = store.put(b"hello", "a.txt")
    again = store.put(b"hello", "other name.txt")
    assert first.file == again.file == hashlib.sha256(b"hello").hexdigest()
    assert store.path_of(first.file) == tmp_path / "files" / first.file[:2] / first.file
    assert store.get(first.file) == b"hello" and first.mime == "text/plain"
    assert not list((tmp_path / "files").rglob(".incoming-*"))  # no temporary left behind
    with pytest.raises(TooLarge, match="limit is 100"):
        store.put(b"x" * 101, "big.bin")
    with pytest.raises(InvalidRequest):
        store.get("../../etc/passwd")
    with pytest.raises(NotFound):
        store.get("0" * 64)


@pytest.mark.parametrize(("given", "safe"), [
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\ann\\report.pdf", "report.pdf"),
    ("name with\x00nul\n.txt", "name with_nul_.txt"),
    ("...", "file"),
    ("a" * 300 + ".tar.gz", "a" * 117 + ".gz"),  # 120 characters, the extension kept
])
def test_safe_names(given, safe):
    assert safe_name(given) == safe


async def test_put_send_get_and_who_may_read(hub, people):
    ann, bob, carl = people("ann", "bob", "carl")
    data = bytes(range(256)) * 4
    async with ann.client(hub.url) as a, bob.client(hub.url) as b, carl.client(hub.url) as c:
        put = await a.call("file_put", content=base64.b64encode(data).decode(),
                           name="../dump.bin", to="bob", text="the dump")
        assert put["name"] == "dump.bin" and put["size"] == len(data)
        assert put["sent"]["recipients"] == ["bob"]
        got = (await collect(b, 1))[0]
        assert got["attachments"] == [{k: put[k] for k in ("file", "name", "size", "mime")}]
        fetched = await b.call("file_get", id=put["file"])
        assert base64.b64decode(fetched["content"]) == data
        with pytest.raises(NotFound):
            await c.call("file_get", id=put["file"])  # carl neither uploaded nor received it
        assert [f["file"] for f in await a.call("files")] == [put["file"]]
        assert [f["uploaded"] for f in await b.call("files")] == [False]
        # knowing the digest is not enough: not even by naming a file of one's own after it
        await c.call("file_put", content=base64.b64encode(b"decoy").decode(),
                     name=put["file"], to="bob", text="decoy")
        with pytest.raises(NotFound):
            await c.call("file_get", id=put["file"])
        with pytest.raises(InvalidRequest, match="base64"):
            await a.call("file_put", content="not base64!", name="x")
