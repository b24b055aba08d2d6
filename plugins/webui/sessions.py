"""Who a browser is: one-time sign-in links, the session cookie, and people who join by web.

* A **sign-in link** (``hub web``) carries a one-time code, good for ten minutes, kept only as
  its SHA-256 in the hub's memory (a restarted hub forgets unused links: run ``hub web`` again).
* A **web session** is a bearer token of the member's peer (:mod:`meshhub.members`), labelled
  ``web: <browser>``, so a browser is one more session of that member: it acts as the member's
  peer, it is listed and revoked like any token (``hub token list``, the sessions panel), and
  removing the member ends it. The token is **split in two** and never whole outside the hub:
  the first half is an HttpOnly, SameSite=Strict cookie (Secure over TLS), the second comes in
  the sign-in answer itself and the page keeps it in its own origin's storage, sending it with
  each request (the ``X-Meshhub-Session`` header; the WebSocket's subprotocol
  ``session.<half>``). Browsers send cookies to every port of a host, so a server on another
  port of ``127.0.0.1`` the same browser visits gets the cookie; without the page's half it is
  worth nothing. Page storage is kept per origin (scheme, name and port: a hub reached under
  two names or ports needs a sign-in on each), and the cookie's half is out of reach of the
  page's scripts.
* **Invited people** open ``/web/join?code=CODE`` (``hub web invite``), choose a name and become
  a member with a key that no one holds: they sign in again only with a link made for them
  (``hub web --for NAME`` by an admin, or from one of their own sessions).
* Every state-changing request and the page's WebSocket must carry ``Origin`` equal to the
  hub's own origin: the cookie alone is never enough, since pages on other ports of the same
  host are "same site" to a browser and would send it.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from meshhub import members
from meshhub.admission import TOKEN_PREFIX, is_own_origin, origin_of
from meshhub.errors import AuthFailed, Forbidden, NotFound, Unauthorized
from meshhub.models import Member

if TYPE_CHECKING:
    from aiohttp import web

    from meshhub.hub import Hub
    from meshhub.models import Peer

LINK_TTL = 600.0
SESSION_TTL = 30 * 86400.0
LABEL_PREFIX = "web: "
MAX_LINKS_PER_PEER = 10
PAGE_HEADER = "X-Meshhub-Session"
PROTOCOL = "meshhub.v1"
PROTOCOL_KEY = "session."
SECRET_SPLIT = 22  # characters of the token's 43-character secret that go in the cookie


def _hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


@dataclass
class LoginLinks:
    """Unused sign-in codes of one hub: SHA-256 of the code -> (peer key, expiry)."""

    pending: dict[str, tuple[str, float]] = field(default_factory=dict)

    def create(self, peer: Peer) -> tuple[str, float]:
        now = time.time()
        self.pending = {h: v for h, v in self.pending.items() if v[1] > now}
        own = sorted((v[1], h) for h, v in self.pending.items() if v[0] == peer.key)
        for _expires, oldest in own[:max(0, len(own) - MAX_LINKS_PER_PEER + 1)]:
            del self.pending[oldest]  # a loop making links grows nothing, and nobody else's go
        code = secrets.token_urlsafe(24)
        expires = now + LINK_TTL
        self.pending[_hash(code)] = (peer.key, expires)
        return code, expires

    def redeem(self, code: str) -> str:
        """The peer key the code signs in; the code is used up either way."""
        found = self.pending.pop(_hash(code), None)
        if found is None:
            raise AuthFailed("this sign-in link is unknown or was used already; run `hub web` "
                             "for a new one", code="bad_link")
        peer_key, expires = found
        if expires < time.time():
            raise AuthFailed("this sign-in link has expired (they last ten minutes); run "
                             "`hub web` for a new one", code="bad_link")
        return peer_key


_links: weakref.WeakKeyDictionary[Hub, LoginLinks] = weakref.WeakKeyDictionary()


def links(hub: Hub) -> LoginLinks:
    """The hub's unused links (kept beside the hub, gone with it)."""
    return _links.setdefault(hub, LoginLinks())


def forget(hub: Hub) -> None:
    _links.pop(hub, None)


def cookie_name(hub: Hub) -> str:
    """Per hub (cookies are not kept apart by port): two hubs on one host keep their own
    sessions."""
    return f"meshhub_{(hub.owner_key or 'hub')[:8]}"


def is_tls(request: web.Request) -> bool:
    """Served over TLS, directly or through a proxy that says so (the cookie is then Secure)."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def check_page_origin(request: web.Request) -> None:
    """Refuse a state-changing request or WebSocket that does not come from the hub's page:
    its ``Origin`` must be there and be the hub's own (one merely allowed for tokens, in
    ``[hub] allowed_origins``, is not enough)."""
    origin = request.headers.get("Origin")
    if not origin:
        raise Forbidden("the web page's requests carry Origin; this one has none",
                        code="forbidden_origin")
    try:
        same = is_own_origin(request, origin_of(origin))
    except ValueError:
        same = False
    if not same:
        raise Forbidden(f"Origin {origin[:100]!r} is not this hub's page",
                        code="forbidden_origin")


def split_token(token: str) -> tuple[str, str]:
    """``(cookie half, page half)`` of a session token (``mh_<id>_<secret>``): 22 characters
    of the secret (132 bits) in the cookie, the other 21 (126 bits) with the page."""
    cut = token.index("_", len(TOKEN_PREFIX)) + 1 + SECRET_SPLIT  # the secret may hold "_"
    return token[:cut], token[cut:]


def page_half(request: web.Request) -> str:
    """The page's half of the session: its header, or the WebSocket's ``session.`` protocol."""
    header = request.headers.get(PAGE_HEADER, "")
    if header:
        return header.strip()
    offered = request.headers.get("Sec-WebSocket-Protocol", "")
    return next((p.strip()[len(PROTOCOL_KEY):] for p in offered.split(",")
                 if p.strip().startswith(PROTOCOL_KEY)), "")


async def session_of(hub: Hub, request: web.Request) -> tuple[Peer, str, str]:
    """``(peer, cap, token hash)`` of the browser's session: the cookie's half and the page's
    half together. :class:`Unauthorized` when either is missing, or the session was revoked
    or has expired."""
    cookie, page = request.cookies.get(cookie_name(hub), ""), page_half(request)
    if not cookie or not page:
        raise Unauthorized("not signed in: run `hub web` on the hub's machine for a sign-in link")
    try:
        return await members.token_peer(hub, cookie + page)
    except Unauthorized:
        raise Unauthorized("this session has ended (signed out, revoked or expired): run "
                           "`hub web` for a new sign-in link") from None


async def web_sessions(hub: Hub, peer: Peer) -> list[Any]:
    """The live web sessions of ``peer`` (its tokens labelled ``web: ...``)."""
    return [t for t in await hub.store.list_tokens([peer.key], time.time())
            if t.label.startswith(LABEL_PREFIX)]


async def end_session(hub: Hub, peer: Peer, session_id: str) -> int:
    """End one web session of ``peer`` (its pages close at once); how many ended, 0 or 1."""
    if not any(t.id == session_id for t in await web_sessions(hub, peer)):
        return 0
    return await members.revoke_tokens(hub, peer, token_id=session_id)


async def end_replaced(hub: Hub, peer: Peer, cookie: str) -> None:
    """End the web session of ``peer`` that this browser's cookie half names by its id (the
    browser is being signed in again). Only a web session of that same peer can end so."""
    if cookie.startswith(TOKEN_PREFIX):
        await end_session(hub, peer, cookie[len(TOKEN_PREFIX):].partition("_")[0])


async def open_session(hub: Hub, peer: Peer, user_agent: str) -> tuple[str, str]:
    """A new web session for ``peer``: the cookie's half and the page's half of its token."""
    label = LABEL_PREFIX + describe_browser(user_agent)
    cap = members.member_cap(hub, peer)
    token, _info = await members.create_token(hub, peer, label=label, cap=cap, held=cap,
                                              expires_in=SESSION_TTL)
    return split_token(token)


def session_view(info: Any, current: str | None = None) -> dict[str, Any]:
    return {"id": info.id, "label": info.label.removeprefix(LABEL_PREFIX),
            "created_at": info.created_at, "expires_at": info.expires_at,
            "current": current is not None and info.token_hash == current}


def describe_browser(user_agent: str) -> str:
    """A few words for a session list: ``Firefox on Linux``."""
    ua = user_agent or ""
    browser = next((name for key, name in (("Edg/", "Edge"), ("Firefox/", "Firefox"),
                                           ("Chrome/", "Chrome"), ("Safari/", "Safari"))
                    if key in ua), "a browser")
    system = next((name for key, name in (("Android", "Android"), ("iPhone", "iPhone"),
                                          ("iPad", "iPad"), ("Mac OS", "macOS"),
                                          ("Windows", "Windows"), ("Linux", "Linux"))
                   if key in ua), "")
    return f"{browser} on {system}" if system else browser


async def join_by_invite(hub: Hub, code: str, name: str) -> Peer:
    """A person without a key joins through the web page: a new member (its key is random and
    held by nobody) with one human peer on the ``web`` surface."""
    member_key = secrets.token_hex(32)
    member: Member = await members.redeem_invite(hub, code.strip(), member_key, name)
    peer, _created = await hub.directory.register(
        identity=f"web:{member_key[:32]}", name=name, kind="human", connector="web",
        member_key=member_key, role=member.role, groups=dict(member.groups))
    return peer


def peer_for_link(hub: Hub, asker: Peer, who: str | None) -> Peer:
    """The peer a new sign-in link is for: the asker's own, or (admins only) a member's."""
    if who is None:
        return asker
    if not hub.is_admin(asker):
        raise Forbidden("only an admin can make a sign-in link for someone else")
    member = members.find_member(hub, who)
    own = [p for p in hub.directory.peers_of(member.key)]
    named = next((p for p in own if p.name.lower() == who.strip().lstrip("@").lower()), None)
    web = next((p for p in own if p.connector == "web"), None)
    found = named or web or next((p for p in own if p.connector == "cli"), None) or (
        own[0] if own else None)
    if found is None:
        raise NotFound(f"member {member.name!r} has no peer to sign in as")
    return found
