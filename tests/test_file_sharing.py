"""Shared files end to end over a real hub on 127.0.0.1: share, list, fetch, status, delete,
attachment expiry, the streaming routes and the MCP tools."""

from __future__ import annotations

import base64
import hashlib
import os
import time

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


async def expire(served, digest: str, peer_key: str | None = None) -> None:
    """Put the grants of ``digest`` (of one peer, or all) past their lifetime, as the clock
    would: written through the record API, no waiting."""
    where = {"file": digest} if peer_key is None else {"file": digest, "peer": peer_key}
    for found in await served.hub.records.all("files", where):
        await served.hub.records.modify("files", found.key,
                                        lambda v: v | {"expires": time.time() - 1})


async def test_unshared_attachments_expire_and_shared_ones_stay(inproc, people):
    served = await inproc(send_rate=0, raw={"files": {"attachment_ttl": 3600}})
    ann, bob = people("ann", "bob")
    async with ann.client(served.url) as a, bob.client(served.url) as b:
        once = await a.call("file_put", content=b64(b"for a day"), name="a.txt", to="bob")
        kept = await a.call("file_put", content=b64(b"to keep"), name="k.txt", to="bob")
        share = await b.call("file_share", id=kept["file"], tags=["kept"])
        assert (await b.call("file_get", id=once["file"]))["size"] == 9
        await expire(served, once["file"])
        await expire(served, kept["file"])
        with pytest.raises(MeshError, match="expired") as expired:
            await b.call("file_get", id=once["file"])
        assert expired.value.code == "expired"
        over_http = await api_call(served.url, await token_for(b), "file_get", id=once["file"])
        assert over_http["code"] == "expired"
        # the sweep keeps a blob stored again within the attachment lifetime: age it
        for digest in (once["file"], kept["file"]):
            path = served.hub.config.home / "files" / digest[:2] / digest
            os.utime(path, (time.time() - 7200, time.time() - 7200))
        assert await sweep_expired(served.hub) == 1
        with pytest.raises(MeshError, match="expired"):
            await a.call("file_get", id=once["file"])
        assert base64.b64decode((await a.call("file_get", id=share["id"]))["content"]) == \
            b"to keep"


async def test_an_expired_attachment_stays_expired_while_its_bytes_are_kept(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob, carl = people("ann", "bob", "carl")
    data = b"a private note"
    async with ann.client(served.url) as a, bob.client(served.url) as b, \
            carl.client(served.url) as c:
        sent = await a.call("file_put", content=b64(data), name="n.txt", to="bob")
        await c.call("file_put", content=b64(data), name="mine.txt")  # carl keeps the bytes
        await expire(served, sent["file"], b.peer["key"])
        await expire(served, sent["file"], a.peer["key"])
        path = served.hub.config.home / "files" / sent["file"][:2] / sent["file"]
        os.utime(path, (time.time() - 2e5, time.time() - 2e5))
        assert await sweep_expired(served.hub) == 0  # carl's live upload names the blob
        with pytest.raises(MeshError) as expired:
            await b.call("file_get", id=sent["file"])
        assert expired.value.code == "expired"
        over_http = await api_call(served.url, await token_for(b), "file_get", id=sent["file"])
        assert over_http["code"] == "expired"
        assert (await c.call("file_get", id=sent["file"]))["name"] == "mine.txt"
        assert await b.call("files") == []


async def test_fetches_are_counted_on_the_share_they_went_through(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob, carl, dan, eve = people("ann", "bob", "carl", "dan", "eve")
    data = os.urandom(300)
    async with ann.client(served.url) as a, bob.client(served.url) as b, \
            carl.client(served.url) as c, dan.client(served.url) as d, \
            eve.client(served.url) as e:
        share = await a.call("file_share", content=b64(data), name="s.bin")
        await c.call("file_put", content=b64(data), name="private.bin", to="bob")
        assert (await b.call("file_get", id=share["file"]))["name"] == "private.bin"
        await d.call("file_get", id=share["id"])
        again = await e.call("file_share", content=b64(data), name="mine.bin")
        assert again["file"] == share["file"]
        assert (await e.call("file_status", id=again["id"]))["fetched_by"] == []
        token = await token_for(a)
        status = await api_call(served.url, token, "file_status", id=share["id"])
        assert [f["peer"] for f in status["fetched_by"]] == ["dan"]


async def test_claimed_types_are_kept_only_as_plain_type_tokens(inproc, people):
    assert sniff_mime(b"words", "text/plain\r\nX-Evil: 1") == "text/plain"
    assert sniff_mime(b"words", "text/html,text/plain") == "text/plain"
    assert sniff_mime(b"\x00\x01", "multipart/x-mixed-replace;boundary=x") == \
        "application/octet-stream"
    assert sniff_mime(b"a,b", "Text/CSV; charset=utf-8") == "text/csv"
    served = await inproc(send_rate=0)
    (ann,) = people("ann")
    async with ann.client(served.url) as a, aiohttp.ClientSession() as http:
        token = await token_for(a)
        evil = await a.call("file_put", content=b64(b"words"), name="e.txt",
                            mime="text/plain\r\nX-Evil: 1")
        listed = await api_call(served.url, token, "file_put", content=b64(b"more words"),
                                name="l", mime="text/html,text/plain")
        mixed = await a.call("file_put", content=b64(b"\x00\x01\x02"), name="m",
                             mime="multipart/x-mixed-replace;boundary=x")
        assert (evil["mime"], listed["mime"], mixed["mime"]) == \
            ("text/plain", "text/plain", "application/octet-stream")
        async with http.get(f"{served.url}/api/files/{evil['file']}",
                            headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200 and await resp.read() == b"words"
            assert "X-Evil" not in resp.headers


async def test_file_get_refuses_a_file_larger_than_one_response(inproc, people):
    served = await inproc(send_rate=0, raw={"files": {"max_bytes": 4 * 1024 * 1024}})
    ann, bob = people("ann", "bob")
    big = os.urandom(1024 * 1024 + 1)
    async with ann.client(served.url) as a, bob.client(served.url) as b:
        source = served.hub.config.home.parent / "big.bin"
        source.write_bytes(big)
        up = await a.upload_file(source, share=True)
        with pytest.raises(MeshError, match="token_file_transfer") as refused:
            await b.call("file_get", id=up["share"]["id"])
        assert refused.value.code == "too_large" and "GET /api/files/" in str(refused.value)
        over_http = await api_call(served.url, await token_for(b), "file_get", id=up["file"])
        assert over_http["code"] == "too_large"
        target = served.hub.config.home.parent / "got.bin"
        assert (await b.download_file(up["share"]["id"], target))["size"] == len(big)


async def test_a_shared_file_gone_from_the_store_is_expired_410(inproc, people):
    served = await inproc(send_rate=0)
    (ann,) = people("ann")
    async with ann.client(served.url) as a, aiohttp.ClientSession() as http:
        share = await a.call("file_share", content=b64(b"soon gone"), name="g.txt")
        served.hub.config.home.joinpath("files", share["file"][:2], share["file"]).unlink()
        async with http.get(f"{served.url}/api/files/{share['id']}",
                            headers={"Authorization": f"Bearer {await token_for(a)}"}) as resp:
            assert resp.status == 410
            assert (await resp.json())["error"]["code"] == "expired"


async def test_deleting_a_share_keeps_the_sharers_attachment(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob = people("ann", "bob")
    async with ann.client(served.url) as a, bob.client(served.url) as b:
        sent = await b.call("file_put", content=b64(b"for ann"), name="f.txt", to="ann")
        share = await a.call("file_share", id=sent["file"])
        deleted = await api_call(served.url, await token_for(a), "file_delete", id=share["id"])
        assert deleted["deleted"] is True and deleted["blob_removed"] is False
        assert [f["file"] for f in await a.call("files")] == [sent["file"]]
        assert (await a.call("file_get", id=sent["file"]))["name"] == "f.txt"


async def test_the_sweep_removes_uploads_a_crash_left_behind(inproc, people):
    served = await inproc(send_rate=0)
    incoming = served.hub.config.home / "files" / ".incoming"
    incoming.mkdir(parents=True)
    old, live = incoming / "upload-old", incoming / "upload-live"
    old.write_bytes(b"half")
    live.write_bytes(b"arriving")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    await sweep_expired(served.hub)
    assert not old.exists() and live.exists()


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


async def test_delete_keeps_a_blob_stored_again_while_it_looked(inproc, people):
    served = await inproc(send_rate=0)
    (ann,) = people("ann")
    async with ann.client(served.url) as a:
        share = await a.call("file_share", content=b64(b"landing again"), name="l.txt")
        path = served.hub.config.home / "files" / share["file"][:2] / share["file"]
        records, count = served.hub.records, served.hub.records.count

        async def upload_meanwhile(*args, **kwargs):  # type: ignore[no-untyped-def]
            os.utime(path, (time.time() + 5, time.time() + 5))  # as write() does
            return await count(*args, **kwargs)

        records.count = upload_meanwhile  # type: ignore[method-assign]
        try:
            deleted = await a.call("file_delete", id=share["id"])
        finally:
            del records.count
        assert deleted["blob_removed"] is False and path.exists()


async def test_mcp_file_get_points_a_large_file_to_the_download_route(hub, people):
    hub.stop()
    with (hub.home / "config.toml").open("a") as config:
        config.write("\n[files]\nmax_bytes = 4194304\n")
    hub.start()
    ann, bob = people("ann", "bob")
    big = hub.home.parent / "big.bin"
    big.write_bytes(os.urandom(1024 * 1024 + 1))
    async with ann.client(hub.url) as a:
        up = await a.upload_file(big, share=True)
    async with stdio_session(mcp_params(bob, hub.url, "--name", "bob-s")) as b:
        refused = await b.error("mesh_file_get", id=up["share"]["id"])
        assert "GET /api/files/" in refused and "token_file_transfer" in refused
