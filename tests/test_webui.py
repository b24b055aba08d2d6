"""The web page's server side against a real hub: sign-in links, the session cookie, who may
open the page's WebSocket, sessions listed and revoked, joining by invite, rendering, panels.
(The page itself, in a real browser: test_webui_browser.py.)"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import pytest
from yarl import URL

from meshhub import hookimpl
from meshhub.render import to_html

from .helpers import HubProcess, Identity, free_port

BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/150.0 Safari/537.36"


def sign_in_link(person: Identity, hub: HubProcess) -> str:
    out = person.cli(hub.url, "web", "--no-open")
    link = out.stdout.strip()
    assert link.startswith(hub.url + "/web/login?code="), out.stdout
    return link


@dataclass
class Session:
    """A signed-in browser: the cookie (header form) and the page's half of the session."""

    cookie: str
    page: str

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Cookie": self.cookie, "X-Meshhub-Session": self.page, **extra}

    def socket(self, http: aiohttp.ClientSession, url: str, **extra: str) -> Any:
        return http.ws_connect(url + "/web/ws", protocols=("meshhub.v1", "session." + self.page),
                               headers={"Cookie": self.cookie, "Origin": url, **extra})


async def sign_in(link: str, **headers: str) -> tuple[int, Session | None, str]:
    """Open a sign-in link as a browser would: (status, session, Set-Cookie)."""
    async with aiohttp.ClientSession() as http, http.get(
            link, allow_redirects=False,
            headers={"User-Agent": BROWSER_UA, "Sec-Fetch-Site": "none", **headers}) as resp:
        raw = resp.headers.get("Set-Cookie", "")
        jar: SimpleCookie = SimpleCookie()
        jar.load(raw)
        cookie = next((f"{k}={m.value}" for k, m in jar.items()), None)
        if cookie is None:
            return resp.status, None, raw
        return resp.status, Session(cookie, page_half(await resp.text())), raw


def page_half(answer: str) -> str:
    """The page's half of a new session, from the sign-in answer (never from an address)."""
    found = re.search(r'<meta name=meshhub-session content="([A-Za-z0-9_-]+)">', answer)
    assert found, answer
    return found.group(1)


async def get_json(url: str, **headers: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        return resp.status, await resp.json()


async def post(url: str, **headers: str) -> tuple[int, Any, str]:
    async with aiohttp.ClientSession() as http, http.post(url, json={}, headers=headers) as resp:
        return resp.status, await resp.json(), resp.headers.get("Set-Cookie", "")


async def next_frame(ws: aiohttp.ClientWebSocketResponse, kind: str,
                     timeout: float = 10.0) -> dict[str, Any]:
    async def wait() -> dict[str, Any]:
        while True:
            frame: dict[str, Any] = await ws.receive_json()
            if frame.get("type") == kind:
                return frame

    return await asyncio.wait_for(wait(), timeout)


async def test_a_link_signs_in_once_with_a_strict_http_only_cookie(hub, people):
    (ann,) = people("ann")
    link = sign_in_link(ann, hub)
    status, session, raw = await sign_in(link)
    assert status == 200 and session is not None
    attributes = raw.lower()
    assert "httponly" in attributes and "samesite=strict" in attributes
    assert "secure" not in attributes  # plain http on loopback: a Secure cookie would be lost
    status, body = await get_json(hub.url + "/web/api/session", **session.headers())
    assert status == 200 and body["peer"]["name"] == "ann"
    assert body["session"]["label"] == "Chrome on Linux" and body["session"]["current"]
    assert [p["name"] for p in body["panels"]] == ["approvals", "artifacts", "decisions",
                                                  "files", "memory", "plugins", "proposals",
                                                  "search", "sessions", "state", "tasks"]
    again, second, _ = await sign_in(link)  # one use only
    assert again == 400 and second is None
    # over TLS (a proxy in front says so), the cookie is Secure too
    status, _session, raw = await sign_in(sign_in_link(ann, hub),
                                          **{"X-Forwarded-Proto": "https"})
    assert status == 200 and "secure" in raw.lower()


async def test_a_link_another_site_sends_the_browser_to_is_refused_and_still_works(hub, people):
    (ann,) = people("ann")
    link = sign_in_link(ann, hub)
    status, session, _ = await sign_in(link, **{"Sec-Fetch-Site": "cross-site"})
    assert status == 403 and session is None
    status, session, _ = await sign_in(link)  # not used up by the refused attempt
    assert status == 200 and session


async def test_without_a_session_the_api_and_the_socket_refuse(hub, people):
    (ann,) = people("ann")
    _status, session, _ = await sign_in(sign_in_link(ann, hub))
    assert session is not None
    status, body = await get_json(hub.url + "/web/api/session")  # the page asks: nobody
    assert status == 200 and body["peer"] is None and "hub web" in body["reason"]
    cookie_name = session.cookie.split("=", 1)[0]
    forged = Session(f"{cookie_name}=mh_00000000_{'x' * 22}", "y" * 21)
    # the cookie alone is half a session: what a server on another port of this host, which
    # the browser also sends it to, could replay
    half = Session(session.cookie, "")
    other_half = Session("", session.page)  # and the page's half alone
    for who in (forged, half, other_half):
        status, body = await get_json(hub.url + "/web/api/session", **who.headers())
        assert status == 200 and body["peer"] is None
    async with aiohttp.ClientSession() as http:
        for who in (forged, half, other_half):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await who.socket(http, hub.url)
            assert refused.value.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(hub.url + "/web/ws", headers={"Origin": hub.url})
        assert refused.value.status == 401
        # the cookie is the page's alone: the HTTP API and /mcp still want a bearer token
        for path in ("/api/whoami", "/mcp"):
            async with http.post(hub.url + path, json={},
                                 headers=session.headers(Origin=hub.url)) as resp:
                assert resp.status == 401, path


async def test_the_socket_wants_the_pages_own_origin_even_with_a_valid_session(
        hub_factory, people):
    other_port = free_port()
    port = next(p for p in iter(free_port, None) if p != other_port)
    other = f"http://127.0.0.1:{other_port}"  # same site to a browser: the cookie goes along
    hub = hub_factory(port=port, MESHHUB_ALLOWED_ORIGINS=other)  # even one allowed for tokens
    (ann,) = people("ann")
    _status, session, _ = await sign_in(sign_in_link(ann, hub))
    assert session is not None
    async with aiohttp.ClientSession() as http:
        for origin in (other, "https://evil.example"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.socket(http, hub.url, Origin=origin)
            assert refused.value.status == 403
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(hub.url + "/web/ws", headers=session.headers(),
                                  protocols=("meshhub.v1", "session." + session.page))
        assert refused.value.status == 403  # no Origin at all
        status, body, _ = await post(hub.url + "/web/logout", **session.headers(Origin=other))
        assert status == 403 and body["error"]["code"] == "forbidden_origin"
        async with session.socket(http, hub.url) as ws:
            welcome = await next_frame(ws, "welcome")
            assert welcome["peer"]["name"] == "ann"


async def test_the_page_socket_speaks_the_peer_protocol_with_safe_html(hub, people):
    ann, bob = people("ann", "bob")
    _status, session, _ = await sign_in(sign_in_link(ann, hub))
    assert session is not None
    hostile = "<img src=x onerror=alert(1)> [x](javascript:alert(1)) **bold** `code`"
    async with aiohttp.ClientSession() as http, session.socket(http, hub.url) as ws, \
            bob.client(hub.url) as bob_client:
        await next_frame(ws, "welcome")
        await bob_client.send("ann", hostile)
        pushed = await next_frame(ws, "message")
        assert pushed["message"]["text"] == hostile  # the one message shape, untouched
        html = pushed["html"]
        assert "&lt;img src=x onerror=alert(1)&gt;" in html and "href" not in html
        assert "<strong>bold</strong>" in html and "<code>code</code>" in html
        await ws.send_json({"type": "ack", "ids": [pushed["message"]["id"]]})
        await ws.send_json({"type": "call", "id": 1, "action": "send",
                            "params": {"to": "bob", "text": "hi *bob*"}})
        sent = await next_frame(ws, "result")
        got = await bob_client.next_message(10)
        assert got["id"] == sent["result"]["id"] and got["from"] == "ann"
        await ws.send_json({"type": "call", "id": 2, "action": "history",
                            "params": {"conversation": "dm:bob"}})
        page = await next_frame(ws, "result")
        ids = [m["id"] for m in page["result"]["messages"]]
        assert ids == [pushed["message"]["id"], sent["result"]["id"]]
        assert page["html"][sent["result"]["id"]] == to_html("hi *bob*")


async def test_sessions_are_listed_and_revoking_one_closes_its_page(hub, people):
    (ann,) = people("ann")
    _s, first, _ = await sign_in(sign_in_link(ann, hub))
    _s, second, _ = await sign_in(sign_in_link(ann, hub))
    assert first is not None and second is not None
    async with aiohttp.ClientSession() as http, first.socket(http, hub.url) as ws1, \
            second.socket(http, hub.url) as ws2:
        await next_frame(ws1, "welcome")
        await next_frame(ws2, "welcome")
        await ws1.send_json({"type": "call", "id": 1, "action": "web_sessions", "params": {}})
        listed = (await next_frame(ws1, "result"))["result"]
        assert len(listed) == 2 and sum(s["current"] for s in listed) == 1
        other = next(s for s in listed if not s["current"])
        await ws1.send_json({"type": "call", "id": 2, "action": "web_session_revoke",
                             "params": {"id": other["id"]}})
        assert (await next_frame(ws1, "result"))["result"]["revoked"] == 1
        closed = await asyncio.wait_for(ws2.receive(), 10)
        assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 4001
    _status, body = await get_json(hub.url + "/web/api/session", **second.headers())
    assert body["peer"] is None
    # signing out needs the page's Origin, ends the session and drops the cookie
    status, _b, _c = await post(hub.url + "/web/logout", **first.headers())
    assert status == 403
    status, body, cleared = await post(hub.url + "/web/logout", **first.headers(Origin=hub.url))
    assert status == 200 and body == {"ok": True} and "max-age=0" in cleared.lower()
    _status, body = await get_json(hub.url + "/web/api/session", **first.headers())
    assert body["peer"] is None
    assert "web:" not in ann.cli(hub.url, "token", "list").stdout


async def test_an_invited_person_joins_in_the_browser(hub):
    owner = Identity(hub.home, "owner")
    out = owner.cli(hub.url, "web", "invite")
    link = out.stdout.strip()
    assert "/web/join?code=" in link
    code = link.split("code=", 1)[1]
    async with aiohttp.ClientSession() as http:
        async with http.get(link) as resp:
            page = await resp.text()
            assert resp.status == 200 and code in page and "form" in page
        form = {"code": code, "name": "carol"}
        async with http.post(hub.url + "/web/join", data=form, allow_redirects=False) as resp:
            assert resp.status == 403  # no Origin: not the hub's page
        async with http.post(hub.url + "/web/join", data=form, allow_redirects=False,
                             headers={"Origin": hub.url}) as resp:
            assert resp.status == 200
            jar: SimpleCookie = SimpleCookie()
            jar.load(resp.headers["Set-Cookie"])
            carol = Session(next(f"{k}={m.value}" for k, m in jar.items()),
                            page_half(await resp.text()))
        async with http.post(hub.url + "/web/join", data=form, allow_redirects=False,
                             headers={"Origin": hub.url}) as resp:
            assert resp.status == 401 and "used" in (await resp.text())  # one use
    status, body = await get_json(hub.url + "/web/api/session", **carol.headers())
    assert status == 200 and body["peer"]["name"] == "carol"
    assert body["peer"]["connector"] == "web" and body["peer"]["kind"] == "human"
    members = owner.cli(hub.url, "members", "list").stdout
    assert "carol" in members
    # an admin can make carol a link for another browser
    link = owner.cli(hub.url, "web", "--no-open", "--for", "carol").stdout.strip()
    _status, again, _ = await sign_in(link)
    assert again is not None
    status, body = await get_json(hub.url + "/web/api/session", **again.headers())
    assert body["peer"]["name"] == "carol"
    # removing the member ends her sessions: her page closes, her session is gone
    async with aiohttp.ClientSession() as http, again.socket(http, hub.url) as ws:
        await next_frame(ws, "welcome")
        owner.cli(hub.url, "members", "remove", "carol")
        closed = await asyncio.wait_for(ws.receive(), 10)
        assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 4003
    for who in (carol, again):
        _status, body = await get_json(hub.url + "/web/api/session", **who.headers())
        assert body["peer"] is None


async def test_the_page_and_its_files_are_served_with_a_strict_policy(hub):
    async with aiohttp.ClientSession() as http:
        async with http.get(hub.url + "/") as resp:
            assert resp.status == 200 and "text/html" in resp.headers["Content-Type"]
            policy = resp.headers["Content-Security-Policy"]
            assert "script-src 'self'" in policy and "unsafe-inline" not in policy
            assert resp.headers["Referrer-Policy"] == "no-referrer"
        async with http.get(hub.url + "/web/panels/approvals.js") as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith(
                "text/javascript")
        for path in ("/web/static/../../__init__.py", "/web/static/%2e%2e/routes.py",
                     "/web/static/..%2f..%2f__init__.py", "/web/static/nope.js",
                     "/web/panels/nope.js"):
            # sent as written: a client would resolve the dots before the hub saw them
            async with http.get(URL(hub.url + path, encoded=True)) as resp:
                assert resp.status == 404, path
        async with http.get(hub.url + "/", headers={"Host": "evil.example"}) as resp:
            assert resp.status == 403  # the core's Host check runs first, as everywhere


class ExtraPanel:
    @hookimpl
    def meshhub_register_routes(self, register):
        async def module(request):
            from aiohttp import web

            return web.Response(text="export const title = 'Extra';",
                                content_type="text/javascript")

        register("GET", "/web/panels/extra.js", module)


async def test_a_plugin_adds_a_panel_by_serving_it(inproc):
    from meshhub_webui import routes

    served = await inproc(("extra", ExtraPanel()))
    assert [p["name"] for p in routes.panels(served.hub)] == [
        "approvals", "artifacts", "decisions", "files", "memory", "plugins", "proposals",
        "search", "sessions", "state", "tasks", "extra"]


def test_markdown_renders_safely():
    assert to_html("<script>alert(1)</script>") == "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>\n"
    for hostile in ("[x](javascript:alert(1))", "[x](JAVASCRIPT:alert(1))",
                    "[x](data:text/html,<b>)", "![p](javascript:x)", "[x](vbscript:y)"):
        assert "href" not in to_html(hostile), hostile
    image = to_html("![pixel](https://t.example/p.png)")
    assert "<img" not in image and 'href="https://t.example/p.png"' in image
    link = to_html("[docs](https://docs.example/a?b=1&c=2)")
    assert 'rel="noopener noreferrer nofollow"' in link and 'target="_blank"' in link
    assert "\u202e" not in to_html("abc\u202edef") and "\\u202e" in to_html("abc\u202edef")
    assert "<pre><code" in to_html("```\nx < 1\n```") and "x &lt; 1" in to_html("```\nx < 1\n```")


async def test_a_member_on_the_web_page_shows_as_live_on_the_web(hub, people):
    ann, bob = people("ann", "bob")
    _status, session, _ = await sign_in(sign_in_link(ann, hub))
    assert session is not None

    async def presence_of(name: str) -> dict[str, Any]:
        while True:
            event = await asyncio.wait_for(watcher.events.get(), 10)
            if event["peer"]["name"] == name:
                return event

    async with bob.client(hub.url) as watcher, aiohttp.ClientSession() as http:
        async with session.socket(http, hub.url) as ws:
            welcome = await next_frame(ws, "welcome")
            assert welcome["peer"]["surfaces"] == ["web"]
            online = await presence_of("ann")
            assert online["change"] == "online" and online["peer"]["surfaces"] == ["web"]
            async with ann.client(hub.url):  # her terminal beside the page
                more = await presence_of("ann")
                assert more["change"] == "surfaces" and more["peer"]["surfaces"] == ["cli", "web"]
                listed = {p["name"]: p for p in await watcher.call("peers")}
                assert listed["ann"]["surfaces"] == ["cli", "web"]
                assert listed["ann"]["connector"] == "cli"  # the surface she joined on
            fewer = await presence_of("ann")
            assert fewer["change"] == "surfaces" and fewer["peer"]["surfaces"] == ["web"]


async def test_only_a_key_or_the_page_makes_sign_in_links(hub, people):
    (ann,) = people("ann")
    _status, session, _ = await sign_in(sign_in_link(ann, hub))
    assert session is not None
    async with ann.client(hub.url) as a:
        token = (await a.call("token_create", label="web: looks like a browser"))["token"]
        made = [(await a.call("web_login_create"))["url"] for _ in range(12)]
    async with aiohttp.ClientSession() as http:
        # a bearer token, over HTTP or a token hello, is refused whatever its label says
        async with http.post(hub.url + "/api/web_login_create", json={},
                             headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 403 and "bearer token" in (await resp.json())["error"]["message"]
        async with http.ws_connect(hub.url + "/ws") as scripted:  # a token hello
            await next_frame(scripted, "challenge")
            await scripted.send_json({"type": "hello", "token": token})
            await next_frame(scripted, "welcome")
            await scripted.send_json({"type": "call", "id": 1, "action": "web_login_create",
                                      "params": {}})
            assert (await next_frame(scripted, "error"))["code"] == "forbidden"
        async with session.socket(http, hub.url) as ws:  # the page itself may
            await next_frame(ws, "welcome")
            await ws.send_json({"type": "call", "id": 1, "action": "web_login_create",
                                "params": {}})
            result = (await next_frame(ws, "result"))["result"]
            assert "/web/login?code=" in result["url"]
    # ten unused links at most per member: the 13th (the page's) dropped ann's oldest three
    outcomes = [(await sign_in(link))[0] for link in made]
    assert outcomes == [400] * 3 + [200] * 9


async def test_signing_in_again_in_a_browser_ends_its_previous_session(hub, people):
    (ann,) = people("ann")
    _status, first, _ = await sign_in(sign_in_link(ann, hub))
    assert first is not None
    _status, second, _ = await sign_in(sign_in_link(ann, hub), Cookie=first.cookie)
    assert second is not None
    _status, body = await get_json(hub.url + "/web/api/session", **first.headers())
    assert body["peer"] is None
    _status, body = await get_json(hub.url + "/web/api/session", **second.headers())
    assert body["peer"]["name"] == "ann"


def test_history_reads_indexes_not_every_message(hub):
    import sqlite3

    with sqlite3.connect(hub.home / "meshhub.db") as db:
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"messages_conversation", "messages_sender"} <= names
