"""Files against the storage quota over a real hub on 127.0.0.1: uploads are held against the
quota before their bytes are kept (with or without a stated length, side by side), a blob counts
once for one owner, is given back when it goes and is counted again at a restart."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from meshhub.builtins.file_sharing import sweep_expired
from meshhub.errors import MeshError

from .helpers import api_call, eventually, token_for


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def blobs(served) -> list[str]:  # type: ignore[no-untyped-def]
    root = served.hub.config.home / "files"
    return sorted(p.name for p in root.glob("??/*")) if root.exists() else []


async def _chunked(data: bytes, gate: asyncio.Event | None = None) -> AsyncIterator[bytes]:
    """A body without a Content-Length (chunked); with ``gate``: the rest only once it is set."""
    yield data[:1024]
    if gate is not None:
        await gate.wait()
    for start in range(1024, len(data), 4096):
        yield data[start:start + 4096]


async def test_a_chunked_upload_is_refused_at_the_size_limit_and_the_quota(inproc, people):
    served = await inproc(send_rate=0, member_quota_bytes=10_000,
                          raw={"files": {"max_bytes": 20_000}})
    (ann,) = people("ann")
    async with ann.client(served.url) as a, aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {await token_for(a)}"}
        url = f"{served.url}/api/files/upload"
        async with http.post(url, params={"name": "big.bin"}, headers=headers,
                             data=_chunked(os.urandom(40_000))) as resp:
            assert resp.status == 413
            assert (await resp.json())["error"]["code"] == "too_large"
        async with http.post(url, params={"name": "quota.bin"}, headers=headers,
                             data=_chunked(os.urandom(15_000))) as resp:
            assert resp.status == 413
            error = (await resp.json())["error"]
            assert error["code"] == "quota_exceeded"
            assert error["details"]["quota"] == "member_quota_bytes"
        assert blobs(served) == []
        assert served.hub.limits.storage.total < 1000  # what was held is given back
        async with http.post(url, params={"name": "fits.bin"}, headers=headers,
                             data=_chunked(os.urandom(8_000))) as resp:
            assert resp.status == 200 and (await resp.json())["result"]["size"] == 8_000


async def test_uploads_side_by_side_cannot_pass_the_quota_together(inproc, people):
    served = await inproc(send_rate=0, member_quota_bytes=10_000)
    (ann,) = people("ann")
    first, second = os.urandom(6_000), os.urandom(6_000)
    async with ann.client(served.url) as a, aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {await token_for(a)}"}
        url = f"{served.url}/api/files/upload"
        quota = served.hub.limits.storage
        gate = asyncio.Event()
        held = asyncio.create_task(http.post(url, params={"name": "one.bin"}, headers=headers,
                                             data=_chunked(first, gate)))

        async def holding() -> bool:
            return quota.total >= 1024

        await eventually(holding)  # the first upload is streaming: part of it is held
        async with http.post(url, params={"name": "two.bin"}, headers=headers,
                             data=_chunked(second)) as resp:
            assert resp.status == 200
        gate.set()
        async with await held as resp:
            assert resp.status == 413
            assert (await resp.json())["error"]["code"] == "quota_exceeded"
        with pytest.raises(MeshError) as full:  # a stated length is held at once as well
            await a.call("file_put", content=b64(os.urandom(5_000)), name="three.bin")
        assert full.value.code == "quota_exceeded"
    assert len(blobs(served)) == 1


async def _expire_grants(served, digest: str) -> None:  # type: ignore[no-untyped-def]
    """Put every grant of ``digest`` past its lifetime (as the clock would)."""
    for found in await served.hub.records.all("files", {"file": digest}):
        await served.hub.records.modify("files", found.key,
                                        lambda v: v | {"expires": time.time() - 1})


async def test_a_blob_counts_once_is_given_back_and_is_counted_after_a_restart(inproc, people):
    served = await inproc(send_rate=0, member_quota_bytes=10_000)
    (ann,) = people("ann")
    data = os.urandom(6_000)
    async with ann.client(served.url) as a:
        share = await a.call("file_share", content=b64(data), name="kept.bin")
        again = await a.call("file_put", content=b64(data), name="same.bin")  # counted once
        assert again["file"] == share["file"]
        token = await token_for(a)
        same = await api_call(served.url, token, "file_put", content=b64(data), name="s.bin")
        assert same["file"] == share["file"]
        await _expire_grants(served, share["file"])
        assert await sweep_expired(served.hub) == 0  # shared: the blob stays
    await served.stop()
    served = await inproc(send_rate=0, member_quota_bytes=10_000)

    async def counted() -> bool:
        return served.hub.limits.storage.total >= 6_000

    await eventually(counted)  # the share's bytes, though its grant expired
    async with ann.client(served.url) as a:
        with pytest.raises(MeshError) as full:
            await a.call("file_put", content=b64(os.urandom(5_000)), name="more.bin")
        assert full.value.code == "quota_exceeded"
        deleted = await a.call("file_delete", id=share["id"])
        assert deleted["blob_removed"] is True
        assert (await a.call("file_put", content=b64(os.urandom(5_000)),
                             name="more.bin"))["size"] == 5_000
