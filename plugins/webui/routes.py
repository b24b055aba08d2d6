"""The web page's HTTP routes and its WebSocket, all on the hub's own port.

| route | what |
|---|---|
| ``GET /`` | the page (the shell; it asks ``/web/api/session`` who is signed in) |
| ``GET /web/static/<file>`` | its scripts and style sheet |
| ``GET /web/panels/<name>.js`` | a panel module; the page loads every one the hub serves |
| ``GET /web/login?code=`` | sign in with a one-time link: the session's two halves |
| ``GET|POST /web/join`` | an invited person chooses a name and joins |
| ``GET /web/api/session`` | who is signed in (``peer`` null: nobody), limits, panels |
| ``POST /web/logout`` | end this session |
| ``GET /web/ws`` | the page's WebSocket: the peer protocol, admitted by the session |

The core's middleware has checked ``Host`` and ``Origin`` before any of these run; the page's
own checks (:mod:`.sessions`) come on top. Every page is sent with a Content-Security-Policy
that allows only the hub's own scripts, styles and connections, so even a rendering mistake
could not run a peer's script.
"""

from __future__ import annotations

import html
import mimetypes
import re
from pathlib import Path
from typing import Any

from aiohttp import web

from meshhub import __version__
from meshhub.errors import MeshError
from meshhub.server import HUB_KEY, frame_limit, json_error, limits, serve_frames, welcome

from . import sessions
from .socket import WebConnection

STATIC = Path(__file__).parent / "static"
PANEL_PATH = re.compile(r"^/web/panels/([a-z][a-z0-9_-]{0,39})\.js$")
BUILTIN_PANELS = (
    "approvals",
    "artifacts",
    "decisions",
    "files",
    "memory",
    "plugins",
    "proposals",
    "search",
    "sessions",
    "state",
    "tasks",
)
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # a sign-in code in the address must not leak onwards
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def _static_file(relative: str) -> web.StreamResponse:
    path = (STATIC / relative).resolve()
    if not path.is_relative_to(STATIC.resolve()) or not path.is_file():
        raise web.HTTPNotFound()
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if path.suffix == ".js":
        content_type = "text/javascript"
    return web.FileResponse(path, headers={**PAGE_HEADERS, "Content-Type": content_type})


async def index(request: web.Request) -> web.StreamResponse:
    return _static_file("index.html")


async def static(request: web.Request) -> web.StreamResponse:
    return _static_file(request.match_info["path"])


async def builtin_panel(request: web.Request) -> web.StreamResponse:
    match = PANEL_PATH.match(request.path)
    if match is None:
        raise web.HTTPNotFound()
    return _static_file(f"panels/{match.group(1)}.js")


def panels(hub: Any) -> list[dict[str, str]]:
    """The panels the hub serves: every ``GET /web/panels/<name>.js`` route any plugin
    registered (built-ins first, in their order, then the others by name)."""
    found = {m.group(1): path for method, path, _h in hub.routes
             if method in ("GET", "*") and (m := PANEL_PATH.match(path))}
    order = [n for n in BUILTIN_PANELS if n in found] + sorted(set(found) - set(BUILTIN_PANELS))
    return [{"name": name, "module": found[name]} for name in order]


def _message_page(title: str, text: str, status: int) -> web.Response:
    body = (f"<!doctype html><meta charset=utf-8><meta name=viewport "
            f"content='width=device-width'><title>{html.escape(title)}</title>"
            f"<link rel=stylesheet href=/web/static/style.css><main class=notice>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>"
            f"<p><a href=/>Open meshhub</a></p></main>")
    return web.Response(text=body, status=status, content_type="text/html",
                        headers=PAGE_HEADERS)


def _join_page(code: str) -> web.Response:
    body = ("<!doctype html><meta charset=utf-8><meta name=viewport content='width=device-width'>"
            "<title>Join meshhub</title><link rel=stylesheet href=/web/static/style.css>"
            "<main class=notice><h1>Join this meshhub</h1>"
            "<p>You were invited. Choose the name others will see you by (letters, digits, "
            "<code>_.-</code>).</p>"
            "<form method=post action=/web/join data-testid=join-form>"
            f"<input type=hidden name=code value=\"{html.escape(code)}\">"
            "<label>Name <input name=name required maxlength=40 autocomplete=nickname "
            "data-testid=join-name></label> <button type=submit>Join</button></form></main>")
    return web.Response(text=body, content_type="text/html", headers=PAGE_HEADERS)


async def _signed_in(request: web.Request, peer: Any) -> web.Response:
    """A new session: its cookie half set, its page half in the answer itself (a ``<meta>``
    that ``signin.js`` moves to the page's storage before going to ``/``). The half never
    travels in an address, so no other site can hand the page one; it only ever comes in the
    answer to a valid one-time code. The browser's previous session of the same peer, if its
    cookie names one, ends: this browser holds the new one now."""
    hub = request.app[HUB_KEY]
    await sessions.end_replaced(hub, peer, request.cookies.get(sessions.cookie_name(hub), ""))
    cookie, page = await sessions.open_session(hub, peer, request.headers.get("User-Agent", ""))
    body = ("<!doctype html><meta charset=utf-8><title>Signing in</title>"
            f"<meta name=meshhub-session content=\"{html.escape(page)}\">"
            "<script type=module src=/web/static/signin.js></script>"
            "<p>Signing in… <a href=/>continue</a></p>")
    response = web.Response(text=body, content_type="text/html",
                            headers={**PAGE_HEADERS, "Cache-Control": "no-store"})
    response.set_cookie(sessions.cookie_name(hub), cookie, max_age=int(sessions.SESSION_TTL),
                        path="/", httponly=True, samesite="Strict",
                        secure=sessions.is_tls(request))
    return response


async def login(request: web.Request) -> web.StreamResponse:
    """Sign in with a one-time link. It must be opened directly (typed, pasted, or opened by
    ``hub web``): a link another site sends the browser to is refused, so a page cannot sign
    a visitor into someone else's session."""
    hub = request.app[HUB_KEY]
    if request.headers.get("Sec-Fetch-Site", "none") not in ("none", "same-origin"):
        return _message_page("Open the link directly",
                             "Sign-in links work when pasted into the address bar or opened "
                             "by `hub web`, not from another site.", 403)
    try:
        peer_key = sessions.links(hub).redeem(request.query.get("code", ""))
        peer = hub.directory.peers.get(peer_key)
        if peer is None or hub.directory.member(peer.member_key) is None:
            raise MeshError("the member this link was made for is no longer on the hub",
                            code="removed")
        return await _signed_in(request, peer)
    except MeshError as exc:
        return _message_page("Cannot sign in", exc.message, 400)


async def join(request: web.Request) -> web.StreamResponse:
    """An invited person's first visit: a name, then a member and a session."""
    hub = request.app[HUB_KEY]
    if request.method == "GET":
        return _join_page(request.query.get("code", ""))
    try:
        sessions.check_page_origin(request)
        form = await _form(request)
        code, name = str(form.get("code", "")), str(form.get("name", "")).strip()
        peer = await sessions.join_by_invite(hub, code, name)
        return await _signed_in(request, peer)
    except MeshError as exc:
        return _message_page("Cannot join", exc.message, exc.http_status)


async def _form(request: web.Request) -> Any:
    """The posted form; one that is not URL-encoded UTF-8 text is the sender's error."""
    try:
        return await request.post()
    except ValueError:  # UnicodeDecodeError among them
        raise MeshError("the form is not UTF-8 text", code="malformed") from None


async def session(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    try:
        peer, _cap, token_hash = await sessions.session_of(hub, request)
    except MeshError as exc:
        # an answer, not a 401: the page asks this to learn whether to show the sign-in
        # screen, and a browser logs every 4xx of a fetch as a console error
        return web.json_response({"peer": None, "session": None, "reason": exc.message,
                                  "hub": {"version": __version__}},
                                 headers={"Cache-Control": "no-store"})
    current = await _current(hub, peer, token_hash)
    return web.json_response({
        "peer": hub.peer_view(peer, peer),
        "session": sessions.session_view(current, token_hash) if current else None,
        "hub": {"version": __version__},
        "limits": limits(hub),
        "panels": panels(hub),
    }, headers={"Cache-Control": "no-store"})


async def _current(hub: Any, peer: Any, token_hash: str) -> Any:
    """The web session a request came with (its token's record)."""
    return next((t for t in await sessions.web_sessions(hub, peer)
                 if t.token_hash == token_hash), None)


async def logout(request: web.Request) -> web.Response:
    """End this session (its token is revoked, so its sockets close too) and drop the cookie;
    a session that had already ended is signed out all the same."""
    hub = request.app[HUB_KEY]
    try:
        sessions.check_page_origin(request)
    except MeshError as exc:
        return json_error(exc)
    try:
        peer, _cap, token_hash = await sessions.session_of(hub, request)
    except MeshError:
        pass
    else:
        current = await _current(hub, peer, token_hash)
        if current is not None:
            await sessions.end_session(hub, peer, current.id)
    response = web.json_response({"ok": True})
    response.del_cookie(sessions.cookie_name(hub), path="/")
    return response


async def page_socket(request: web.Request) -> web.StreamResponse:
    """The page's WebSocket: admitted by the session (both halves) and the page's own Origin, then
    the peer protocol as every client speaks it (the hub sends ``welcome`` first)."""
    hub = request.app[HUB_KEY]
    try:
        sessions.check_page_origin(request)
        peer, cap, token_hash = await sessions.session_of(hub, request)
        hub.limits.open_websocket()  # the same caps as the peer protocol's sockets
    except MeshError as exc:
        return json_error(exc)
    try:
        hub.limits.join(peer)
    except MeshError as exc:
        hub.limits.close_websocket()
        return json_error(exc)
    try:
        ws = web.WebSocketResponse(autoping=False, max_msg_size=frame_limit(hub),
                                   protocols=(sessions.PROTOCOL,))
        await ws.prepare(request)
        conn = WebConnection(ws, peer, receive=True, transport=request.transport)
        conn.token_hash, conn.cap = token_hash, cap
        await welcome(hub, conn)
        await serve_frames(hub, conn)
    finally:
        hub.limits.leave(peer)
        hub.limits.close_websocket()
    return ws


def register_all(register: Any) -> None:
    register("GET", "/", index)
    register("GET", "/web/static/{path:.+}", static)
    for name in BUILTIN_PANELS:
        register("GET", f"/web/panels/{name}.js", builtin_panel)
    register("GET", "/web/login", login)
    register("GET", "/web/join", join)
    register("POST", "/web/join", join)
    register("GET", "/web/api/session", session)
    register("POST", "/web/logout", logout)
    register("GET", "/web/ws", page_socket)
