"""Shared files end to end over a real hub on 127.0.0.1: share, list, fetch, status, delete,
attachment expiry, the streaming routes and the MCP tools."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os

import aiohttp
import pytest

from meshhub.builtins.file_sharing import sweep_expired
from meshhub.errors import Forbidden, MeshError, NotFound
from meshhub.files import sniff_mime
from meshhub.report import build_report

from .helpers import api_call, token_for
from .test_mcp import mcp_params, stdio_session

PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_types_are_sniffed_from_the_bytes_not_the_claim():
    assert sniff_mime(PNG, "text/plain") == "image/png"
    assert sniff_mime(b"<html><body>hi</body></html>", "text/plain") == "text/html"
    assert sniff_mime(b"just words", "text/html") == "text/plain"  # an active claim is dropped
    assert sniff_mime(b"\x00\x01\x02\xff", None) == "application/octet-stream"


async def test_share_list_fetch_status_and_delete(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob, carl = people("ann", "bob", "carl")
    secret = os.urandom(5000)
    async with ann.client(served.url) as a, bob.client(served.url) as b, \
            carl.client(served.url) as c:
        shared = await a.call("file_share", content=b64(secret), name="../../etc/passwd",
                              tags=["Ops", "#keys"], description="the deploy keys")
        assert shared["name"] == "passwd" and shared["tags"] == ["ops", "keys"]
        assert shared["shared_by"] == "ann" and shared["size"] == len(secret)
        files_root = served.hub.config.home / "files"
        assert not list(files_root.rglob("passwd"))  # a label, never a path
        png = await a.call("file_share", content=b64(PNG), name="photo.txt", tags=["pics"])
        assert png["mime"] == "image/png"

        assert [f["id"] for f in (await b.call("file_list"))["files"]] == \
            [png["id"], shared["id"]]
        assert [f["id"] for f in (await b.call("file_list", query="deploy"))["files"]] == \
            [shared["id"]]
        assert [f["id"] for f in (await b.call("file_list", tags=["keys"]))["files"]] == \
            [shared["id"]]
        assert (await b.call("file_list", shared_by="bob"))["files"] == []
        page = await b.call("file_list", shared_by="ann", limit=1)
        more = await b.call("file_list", shared_by="ann", limit=1, after=page["cursor"])
        assert [f["id"] for f in page["files"] + more["files"]] == [png["id"], shared["id"]]

        got = await b.call("file_get", id=shared["id"])
        assert base64.b64decode(got["content"]) == secret and got["name"] == "passwd"
        token = await token_for(c, cap="read")
        over_http = await api_call(served.url, token, "file_get", id=shared["file"])
        assert base64.b64decode(over_http["content"]) == secret
        await a.call("file_get", id=shared["id"])  # the sharer's own fetch is not counted

        status = await a.call("file_status", id=shared["id"])
        assert sorted(f["peer"] for f in status["fetched_by"]) == ["bob", "carl"]
        assert all(f["count"] == 1 and f["first"] <= f["last"] for f in status["fetched_by"])
        with pytest.raises(Forbidden):
            await b.call("file_status", id=shared["id"])
        with pytest.raises(Forbidden):
            await b.call("file_delete", id=shared["id"])
        refused = await api_call(served.url, await token_for(c), "file_delete", id=shared["id"])
        assert refused["code"] == "forbidden"

        deleted = await api_call(served.url, await token_for(a), "file_delete", id=shared["id"])
        assert deleted == {"id": shared["id"], "deleted": True, "blob_removed": True}
        assert not served.hub.config.home.joinpath("files", shared["file"][:2],
                                                   shared["file"]).exists()
        with pytest.raises(NotFound):
            await b.call("file_get", id=shared["id"])
        audit = await served.hub.audit.entries(event="file_deleted")
        assert [(e["subject"], e["details"]["name"]) for e in audit] == \
            [(shared["id"], "passwd")]
        assert all(secret.hex()[:16] not in str(e) for e in audit)

        viewer = served.hub.directory.find("bob")
        report = await build_report(served.hub, viewer, 0, 2e9)
        assert "## Files" in report and "deleted: passwd by ann" in report
        assert "shared: photo\\.txt" in report


async def test_unshared_attachments_expire_and_shared_ones_stay(inproc, people):
    served = await inproc(send_rate=0, raw={"files": {"attachment_ttl": 1}})
    ann, bob = people("ann", "bob")
    async with ann.client(served.url) as a, bob.client(served.url) as b:
        once = await a.call("file_put", content=b64(b"for a day"), name="a.txt", to="bob")
        kept = await a.call("file_put", content=b64(b"to keep"), name="k.txt", to="bob")
        share = await b.call("file_share", id=kept["file"], tags=["kept"])
        assert (await b.call("file_get", id=once["file"]))["size"] == 9
        await asyncio.sleep(1.2)
        with pytest.raises(MeshError, match="expired") as expired:
            await b.call("file_get", id=once["file"])
        assert expired.value.code == "expired"
        over_http = await api_call(served.url, await token_for(b), "file_get", id=once["file"])
        assert over_http["code"] == "expired"
        assert await sweep_expired(served.hub) == 1
        with pytest.raises(MeshError, match="expired"):
            await a.call("file_get", id=once["file"])
        assert base64.b64decode((await a.call("file_get", id=share["id"]))["content"]) == \
            b"to keep"


async def test_an_oversize_share_is_refused_with_the_limit_and_nothing_kept(inproc, people):
    served = await inproc(raw={"files": {"max_bytes": 1000}})
    (ann,) = people("ann")
    async with ann.client(served.url) as a:
        with pytest.raises(MeshError, match="limit is 1000") as refused:
            await a.call("file_share", content=b64(bytes(1001)), name="big.bin")
        assert refused.value.code == "too_large"
        over_http = await api_call(served.url, await token_for(a), "file_share",
                                   content=b64(bytes(1001)), name="big.bin")
        assert over_http["code"] == "too_large" and "1000" in over_http["message"]
        assert (await a.call("file_list"))["files"] == []
        assert not (served.hub.config.home / "files").exists() or not [
            p for p in (served.hub.config.home / "files").rglob("*") if p.is_file()]


async def test_streaming_routes_carry_big_files_and_refuse_oversize(inproc, people):
    limit = 4 * 1024 * 1024
    served = await inproc(send_rate=0, raw={"files": {"max_bytes": limit}})
    ann, bob = people("ann", "bob")
    big = os.urandom(3 * 1024 * 1024 + 17)
    async with ann.client(served.url) as a, bob.client(served.url) as b:
        source = served.hub.config.home.parent / "big.bin"
        source.write_bytes(big)
        up = await a.upload_file(source, share=True, tags=["big"])
        assert up["file"] == hashlib.sha256(big).hexdigest() and up["share"]["size"] == len(big)
        target = served.hub.config.home.parent / "fetched.bin"
        down = await b.download_file(up["share"]["id"], target)
        assert target.read_bytes() == big and down["file"] == up["file"]
        status = await a.call("file_status", id=up["share"]["id"])
        assert [f["peer"] for f in status["fetched_by"]] == ["bob"]

        token = await token_for(a)
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{served.url}/api/files/upload", params={"name": "x.bin"},
                                 data=os.urandom(limit + 1), headers=headers) as resp:
                assert resp.status == 413
                error = (await resp.json())["error"]
                assert error["code"] == "too_large" and str(limit) in error["message"]
            async with http.post(f"{served.url}/api/files/upload",
                                 params={"name": "page.html"}, headers=headers,
                                 data=b"<html><script>alert(1)</script></html>") as resp:
                page = (await resp.json())["result"]
            assert page["mime"] == "text/html"
            async with http.get(f"{served.url}/api/files/{page['file']}",
                                headers=headers) as resp:
                assert resp.status == 200
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
                assert resp.headers["Content-Disposition"].startswith("attachment;")
            async with http.get(f"{served.url}/api/files/{up['file']}") as resp:
                assert resp.status == 401
        blobs = [p for p in (served.hub.config.home / "files").rglob("*") if p.is_file()]
        assert sorted(p.name for p in blobs) == sorted([up["file"], page["file"]])


async def test_mcp_tools_share_and_fetch(hub, people):
    hub.stop()
    with (hub.home / "config.toml").open("a") as config:
        config.write("\n[files]\nmax_bytes = 1000\n")
    hub.start()
    ann, bob = people("ann", "bob")
    data = os.urandom(900)
    async with stdio_session(mcp_params(ann, hub.url, "--name", "ann-s")) as a, \
            stdio_session(mcp_params(bob, hub.url, "--name", "bob-s")) as b:
        shared = await a.call("mesh_file_share", content=b64(data),
                              name="../../etc/passwd", tags=["x"])
        assert shared["name"] == "passwd"
        too_big = await a.error("mesh_file_share", content=b64(bytes(1001)), name="big.bin")
        assert "limit is 1000" in too_big
        listed = await b.call("mesh_file_list", tags=["x"])
        assert [f["id"] for f in listed["files"]] == [shared["id"]]
        got = await b.call("mesh_file_get", id=shared["id"])
        assert base64.b64decode(got["content"]) == data
        status = await a.call("mesh_file_status", id=shared["id"])
        assert len(status["fetched_by"]) == 1
        assert "only the peer who shared" in await b.error("mesh_file_delete", id=shared["id"])
        assert (await a.call("mesh_file_delete", id=shared["id"]))["deleted"] is True
