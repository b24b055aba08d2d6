"""Bad input gets a clear error and changes nothing; the connection stays usable."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import aiohttp
import pytest
from nacl.signing import SigningKey

from meshhub.builtins.hello_auth import sign_hello
from meshhub.client import MeshClient, audience, ws_url
from meshhub.errors import MeshError

from .helpers import collect


async def _stats(client) -> dict:
    return await client.call("hub_stats")


async def test_unknown_target_names_closest_peers_and_stores_nothing(hub, people):
    ann, bob = people("ann", "bobby")
    async with ann.client(hub.url) as a, bob.client(hub.url):
        before = await _stats(a)
        with pytest.raises(MeshError) as err:
            await a.send("bob", "hello?")
        assert err.value.code == "unknown_target"
        assert "bobby" in err.value.message
        with pytest.raises(MeshError) as err:
            await a.send(["bobby", "@nobody-here"], "hello?")  # one bad token spoils the list
        assert err.value.code == "unknown_target"
        with pytest.raises(MeshError) as err:
            await a.send("#no-such-room", "hello?")
        assert "#general" in err.value.message
        after = await _stats(a)
        assert after["messages"] == before["messages"]
        assert after["deliveries"] == before["deliveries"]


async def test_malformed_and_unknown_frames_get_errors_and_connection_survives(hub, people):
    ann, bob = people("ann", "bob")
    async with ann.client(hub.url) as a, bob.client(hub.url) as b:
        await a.send_frame("this is not json")
        err = await a.errors.get()
        assert err["code"] == "malformed"
        await a.send_frame("[1, 2, 3]")
        assert (await a.errors.get())["code"] == "malformed"
        await a.send_frame({"type": "teleport"})
        assert (await a.errors.get())["code"] == "unknown_frame"
        await a.send_frame({"type": "ack", "ids": "not-a-list"})
        assert (await a.errors.get())["code"] == "malformed"
        with pytest.raises(MeshError) as bad_params:
            await a.call("send", to="bob", text=123, priority="whenever")
        assert "priority" in bad_params.value.message
        with pytest.raises(MeshError) as unknown:
            await a.call("launch_missiles")
        assert unknown.value.code == "unknown_action"
        with pytest.raises(MeshError) as too_big:
            await a.send("bob", "x" * (64 * 1024 + 1))
        assert too_big.value.code == "too_large"
        assert (await _stats(a))["messages"] == 0
        # still usable
        await a.send("bob", "still here")
        assert (await collect(b, 1))[0]["text"] == "still here"


async def _raw_hello(url: str, build) -> tuple[dict, aiohttp.ClientWebSocketResponse, object]:
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(ws_url(url))
    challenge = await ws.receive_json(timeout=5)
    hello = build(challenge["nonce"])
    await ws.send_str(hello if isinstance(hello, str) else json.dumps(hello))
    answer = await ws.receive_json(timeout=5)
    return answer, ws, session


async def test_bad_signature_is_refused(hub):
    key = SigningKey.generate()

    def forged(nonce: str) -> dict:
        hello = sign_hello(key, {"type": "hello", "name": "mallory", "nonce": nonce,
                                 "audience": audience(hub.url)})
        hello["name"] = "admin"  # changed after signing
        return hello

    answer, ws, session = await _raw_hello(hub.url, forged)
    assert answer["type"] == "error" and answer["code"] == "bad_signature"
    await ws.close()
    await session.close()

    def other_key(nonce: str) -> dict:
        hello = sign_hello(key, {"type": "hello", "name": "mallory", "nonce": nonce,
                                 "audience": audience(hub.url)})
        hello["public_key"] = SigningKey.generate().verify_key.encode().hex()
        return hello

    answer, ws, session = await _raw_hello(hub.url, other_key)
    assert answer["code"] == "bad_signature"
    await ws.close()
    await session.close()
    assert hub.health()["peers"] == 0


async def test_replayed_and_timestamp_only_hellos_are_refused(hub):
    key = SigningKey.generate()
    async with MeshClient(hub.url, key, name="ann"):  # enrolled through the local socket
        pass
    captured: dict = {}

    def first(nonce: str) -> dict:
        captured["hello"] = sign_hello(key, {"type": "hello", "name": "ann", "nonce": nonce,
                                                        "audience": audience(hub.url)})
        return captured["hello"]

    answer, ws, session = await _raw_hello(hub.url, first)  # over TCP: a member's key
    assert answer["type"] == "welcome"
    await ws.close()
    await session.close()
    # the same signed hello on a new connection: bound to the old nonce
    answer, ws, session = await _raw_hello(hub.url, lambda nonce: captured["hello"])
    assert answer["code"] == "replayed"
    await ws.close()
    await session.close()

    # a hello bound only to a timestamp could be replayed after a restart: refused
    stamped = sign_hello(key, {"type": "hello", "name": "ann", "ts": int(time.time()),
                               "audience": audience(hub.url)})
    answer, ws, session = await _raw_hello(hub.url, lambda nonce: stamped)
    assert answer["code"] == "malformed" and "nonce" in answer["message"]
    await ws.close()
    await session.close()
    for ts in (time.time(), "123", True):  # ts is whole seconds when present
        answer, ws, session = await _raw_hello(hub.url, lambda nonce, ts=ts: sign_hello(
            key, {"type": "hello", "name": "ann", "nonce": nonce, "ts": ts,
                  "audience": audience(hub.url)}))
        assert answer["code"] == "malformed" and "ts" in answer["message"]
        await ws.close()
        await session.close()
    answer, ws, session = await _raw_hello(hub.url, lambda nonce: "{nope")
    assert answer["code"] == "malformed"
    await ws.close()
    await session.close()
    assert hub.health()["peers"] == 1  # only the one good hello registered anyone


async def test_http_api_requires_a_token_and_follows_openapi(hub, people):
    (ann,) = people("ann")
    async with ann.client(hub.url) as a:
        token = (await a.call("token_create", label="test"))["token"]
    async with aiohttp.ClientSession() as http:
        async with http.post(hub.url + "/api/whoami") as resp:
            assert resp.status == 401
        async with http.post(hub.url + "/api/whoami",
                             headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401
        auth = {"Authorization": f"Bearer {token}"}
        async with http.post(hub.url + "/api/whoami", headers=auth) as resp:
            assert resp.status == 200
            assert (await resp.json())["result"]["name"] == "ann"
        async with http.post(hub.url + "/api/send", headers=auth,
                             json={"to": "nobody", "text": "x"}) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "unknown_target"
        async with http.post(hub.url + "/api/send", headers=auth, data="{") as resp:
            assert resp.status == 400
        async with http.get(hub.url + "/openapi.json") as resp:
            doc = await resp.json()
        assert doc["openapi"].startswith("3.")
        assert "/api/send" in doc["paths"] and "/api/peers" in doc["paths"]
        schema = doc["paths"]["/api/send"]["post"]["requestBody"]["content"][
            "application/json"]["schema"]
        # text is optional since a structured kind's text is made from its fields
        assert {"text", "kind", "data"} <= schema["properties"].keys()
        assert schema["properties"]["kind"]["default"] == "text"


async def test_every_oversized_http_body_is_413_too_large_naming_the_limit(hub, people):
    (ann,) = people("ann")
    async with ann.client(hub.url) as a:
        token = (await a.call("token_create"))["token"]
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        for size in (70_000, 1_100_000, 2_000_000):
            async with http.post(hub.url + "/api/send", headers=auth,
                                 json={"to": "ann", "text": "x" * size}) as resp:
                assert resp.status == 413, size
                error = (await resp.json())["error"]
            assert error["code"] == "too_large", size
            assert "65536" in error["message"], error
        async with http.post(hub.url + "/api/send", headers=auth, data=b"\xff{") as resp:
            assert resp.status == 400  # not UTF-8: malformed, not a failure of the hub
    assert "Traceback" not in hub.log.read_text()


async def test_the_welcome_gives_the_limits_and_the_client_keeps_to_them(hub, people):
    ann, bob = people("ann", "bob")
    async with ann.client(hub.url) as a, bob.client(hub.url) as b:
        assert a.welcome["limits"] == {"max_body_bytes": 65536, "max_frame_bytes": 1 << 20}
        for text in ("x" * (64 * 1024 + 1), "x" * 2_000_000):
            with pytest.raises(MeshError) as too_big:
                await a.send("bob", text)
            assert too_big.value.code == "too_large"
            assert too_big.value.message == (f"the message is {len(text)} bytes; this hub "
                                             "accepts at most 65536")
        with pytest.raises(MeshError) as frame:
            await a.call("file_put", name="big.bin", content="A" * 2_000_000)
        assert frame.value.code == "too_large" and str(1 << 20) in frame.value.message
        # nothing went out, so the connection is still there
        await a.send("bob", "still here")
        assert (await collect(b, 1))[0]["id"]


async def test_a_frame_over_the_limit_closes_the_connection_with_a_logged_reason(hub, people):
    (ann,) = people("ann")
    async with ann.client(hub.url) as a:
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            await a.send_frame({"type": "call", "id": 1, "action": "send",
                                "params": {"to": "ann", "text": "y" * 1_100_000}})
        with pytest.raises(ConnectionError):
            await a.next_message(timeout=15)  # the hub closed it
    deadline = time.monotonic() + 15
    while "a frame over 1048576 bytes" not in hub.log.read_text():
        assert time.monotonic() < deadline, hub.log.read_text()[-2000:]
        await asyncio.sleep(0.05)
