"""The web page's actions: sign-in links and web sessions, on every surface like any action
(``hub web`` calls ``web_login_create``; the sessions panel calls the other two)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from meshhub.actions import Action, ActionContext, action
from meshhub.errors import Forbidden, NotFound

from . import sessions
from .socket import WebConnection


@action()
async def web_login_create(
    ctx: ActionContext,
    member: Annotated[str | None, "sign in as this member (admins only); leave out for "
                      "yourself"] = None,
) -> dict[str, Any]:
    """A one-time link that signs a browser in as you (or, for an admin, as a member): open it
    within ten minutes. The browser becomes one more session of that member."""
    if ctx.token is not None and not isinstance(ctx.connection, WebConnection):
        # the page may make a link for another of the member's browsers; a token used as a
        # bearer (a script, /mcp, a token hello) may not turn itself into a browser session
        raise Forbidden("a bearer token cannot make sign-in links; run `hub web`")
    peer = sessions.peer_for_link(ctx.hub, ctx.peer, member)
    code, expires = sessions.links(ctx.hub).create(peer)
    path = f"/web/login?code={code}"
    return {"peer": peer.name, "path": path, "url": ctx.hub.config.listen_url + path,
            "expires_at": expires}


@action(read_only=True)
async def web_sessions(ctx: ActionContext) -> list[dict[str, Any]]:
    """Your web sessions (signed-in browsers): id, browser, since when, until when, and
    whether it is the one asking."""
    return [sessions.session_view(t, ctx.token)
            for t in await sessions.web_sessions(ctx.hub, ctx.peer)]


@action()
async def web_session_revoke(
    ctx: ActionContext, id: Annotated[str, "the session's id (web_sessions)"],
) -> dict[str, Any]:
    """Sign a browser out: its session ends and its page closes at once."""
    revoked = await sessions.end_session(ctx.hub, ctx.peer, id)
    if not revoked:
        raise NotFound(f"no web session {id!r} of yours (see web_sessions)")
    return {"id": id, "revoked": revoked}


ALL: list[Action] = [web_login_create, web_sessions, web_session_revoke]


def register_all(register: Callable[[Action], None]) -> None:
    for item in ALL:
        register(item)
