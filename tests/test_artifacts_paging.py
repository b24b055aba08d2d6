"""Artifacts over a real hub on 127.0.0.1, the edges of storage: the list pages by name
with ``after`` (client library, HTTP API, MCP tools), a version dropped under a reader is
``not_found`` rather than empty content, and a create that fails leaves no version behind."""

from __future__ import annotations

from typing import Any

import pytest

from meshhub.builtins import artifacts as artifacts_mod
from meshhub.errors import MeshError, NotFound

from .helpers import api_call, token_for
from .test_mcp import mcp_params, stdio_session


async def test_the_list_pages_by_name_with_after(inproc, people, monkeypatch):
    monkeypatch.setattr(artifacts_mod, "MAX_LIST", 2)
    served = await inproc(send_rate=0)
    (ann,) = people("ann")
    async with ann.client(served.url, receive=False) as a:
        await a.call("conversation_create", name="ops")
        for name in ("c.md", "a.md", "e.md", "b.md", "d.md"):
            await a.call("artifact_create", conversation="ops", name=name, content="x")
        names: list[str] = []
        page = await a.call("artifacts", conversation="ops")
        while True:
            names += [x["name"] for x in page["artifacts"]]
            if not page["more"]:
                break
            page = await a.call("artifacts", conversation="ops", after=page["cursor"])
        assert names == ["a.md", "b.md", "c.md", "d.md", "e.md"]
        token = await token_for(a, cap="read")
        first = await api_call(served.url, token, "artifacts", conversation="#ops")
        second = await api_call(served.url, token, "artifacts", conversation="#ops",
                                after=first["cursor"])
        assert [x["name"] for x in second["artifacts"]] == ["c.md", "d.md"]
        bad = await api_call(served.url, token, "artifacts", conversation="#ops", after="zz")
        assert bad["code"] == "malformed"
    async with stdio_session(mcp_params(ann, served.url, "--name", "ann-s")) as s:
        await s.call("mesh_conversation_join", name="ops")
        got = await s.call("mesh_artifacts", conversation="#ops", after=first["cursor"])
        assert [x["name"] for x in got["artifacts"]] == ["c.md", "d.md"]


async def test_a_dropped_version_is_not_found_not_empty(inproc, people):
    served = await inproc(send_rate=0)
    (ann,) = people("ann")
    async with ann.client(served.url, receive=False) as a:
        await a.call("conversation_create", name="ops")
        made = await a.call("artifact_create", conversation="ops", name="p.md", content="x")
        head = await served.hub.records.get("artifacts", made["id"])
        assert head is not None
        await served.hub.records.delete("artifact_versions", head.value["versions"][0]["key"])
        with pytest.raises(NotFound, match="dropped"):
            await a.call("artifact_get", id=made["id"])


async def test_a_failed_create_leaves_no_version(inproc, people, monkeypatch):
    served = await inproc(send_rate=0)
    (ann,) = people("ann")
    records = served.hub.records
    create = records.create

    async def failing(collection: str, key: str, value: dict[str, Any], **kw: Any) -> Any:
        if collection == "artifacts":
            raise RuntimeError("the head could not be written")
        return await create(collection, key, value, **kw)

    async with ann.client(served.url, receive=False) as a:
        await a.call("conversation_create", name="ops")
        monkeypatch.setattr(records, "create", failing)
        with pytest.raises(MeshError):
            await a.call("artifact_create", conversation="ops", name="p.md", content="x")
        monkeypatch.setattr(records, "create", create)
        assert await records.count("artifact_versions") == 0
        assert await records.count("artifact_names") == 0
        made = await a.call("artifact_create", conversation="ops", name="p.md", content="y")
        assert made["version"] == 1
