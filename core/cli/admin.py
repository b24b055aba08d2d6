"""``hub invite``, ``hub invites``, ``hub join``, ``hub members`` and ``hub token``: who may get
into a hub. The rules are the hub's (:mod:`meshhub.members`); these commands call its actions."""

from __future__ import annotations

import datetime
from typing import Annotated, Any

import typer

from meshhub.config import home_dir, init_home, load_config, load_signing_key
from meshhub.directory import parse_groups

from . import common as cli
from .common import JsonOpt
from .output import emit_json, table

invites_app = typer.Typer(help="The hub's invites (owner only).", no_args_is_help=True)
members_app = typer.Typer(help="The hub's members.", no_args_is_help=True)
token_app = typer.Typer(help="Bearer tokens for the HTTP API and /mcp.", no_args_is_help=True)


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


# -- invites ------------------------------------------------------------------------------------
def invite(
    uses: Annotated[int, typer.Option(help="How many people may join with it.")] = 1,
    expires: Annotated[str, typer.Option(help="How long it works: 24h, 7d, 90m or never.")]
    = "24h",
    role: Annotated[str, typer.Option(help="The role its members' peers start with.")] = "",
    groups: Annotated[str | None, typer.Option(
        help="Groups its members start in: backend:lead,ops")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an invite code for someone to join this hub (owner only; the code is shown once)."""
    result = cli.call("invite_create", uses=uses, expires=expires, role=role,
                   groups=parse_groups(groups) or {})
    if as_json:
        emit_json(result)
        return
    typer.echo(result["code"])
    typer.echo(f"  invite {result['id']}: {result['uses']} use(s), expires "
               f"{_when(result['expires_at'])}")
    typer.echo(f"  they run: hub join {result['code']} --hub {cli.config().url} --name NAME")
    typer.echo("  (give them the hub's address as they reach it: see docs/operations.md)")


@invites_app.command("list")
def invites_list(
    show_all: Annotated[bool, typer.Option("--all", help="Include used, expired and revoked.")]
    = False,
    as_json: JsonOpt = False,
) -> None:
    """The hub's invites (owner only)."""
    rows = cli.call("invites", state="all" if show_all else "usable")
    if as_json:
        emit_json(rows)
        return
    if not rows:
        typer.echo("no usable invites" if not show_all else "no invites")
        return
    typer.echo(table(
        [[i["id"], f"{i['used']}/{i['uses']}", _when(i["expires_at"]), i["role"],
          ",".join("@" + g for g in i["groups"]), i["problem"] or "usable"] for i in rows],
        ["id", "used", "expires", "role", "groups", "state"],
    ))


@invites_app.command("revoke")
def invites_revoke(
    invite_id: Annotated[str, typer.Argument(help="The invite's id (hub invites list) or code.")],
) -> None:
    """Revoke an invite: nobody else can join with it."""
    result = cli.call("invite_revoke", invite=invite_id)
    typer.echo(f"revoked invite {result['id']} ({result['used']}/{result['uses']} used)")


# -- joining ------------------------------------------------------------------------------------
def join(
    code: Annotated[str, typer.Argument(help="The invite code you were given.")],
    hub: Annotated[str, typer.Option(
        "--hub", help="The hub's URL, e.g. https://hub.example or 10.0.0.5:7420",
        callback=cli.hub_url_option)],
    name: Annotated[str, typer.Option("--name", help="Your name on the mesh.")],
) -> None:
    """Join a hub with an invite code: become a member under NAME, and remember the hub."""
    from meshhub.client import MeshClient

    cli.check_name_or_fail(name)
    home = home_dir()
    if not (home / "identity.key").exists():
        init_home(home, name)
    before = load_config(home)
    key = load_signing_key(home)

    async def go() -> dict[str, Any]:
        async with MeshClient(hub, key, name=name, kind="human", connector="cli",
                              receive=False, invite=code) as client:
            return client.peer

    cli.state.hub_url = hub  # so an error names the hub being joined
    peer = cli.run(go())
    init_home(home, name, hub_url=hub)
    for what, old, new in (("name", before.name, name), ("hub", before.hub_url, hub)):
        if old and old != new:
            typer.echo(f"note: this identity's {what} was {old}; it is now {new}", err=True)
    typer.echo(f"joined {hub} as {peer['name']} ({peer['key']}); try: hub peers")


# -- members ------------------------------------------------------------------------------------
@members_app.command("list")
def members_list(
    removed: Annotated[bool, typer.Option("--removed", help="Include removed members.")]
    = False,
    as_json: JsonOpt = False,
) -> None:
    """The hub's members, how each got in, and their peers."""
    rows = cli.call("members_list", removed=removed)
    if as_json:
        emit_json(rows)
        return
    typer.echo(table(
        [[("* " if m["owner"] else "  ") + m["name"], m["key"][:16], m["via"],
          _when(m["created_at"]), f"{m['online']}/{len(m['peers'])}",
          "removed " + _when(m["removed_at"]) if m["removed_at"] else ", ".join(m["peers"])]
         for m in rows],
        ["member", "key", "via", "since", "online", "peers"],
    ))


@members_app.command("remove")
def members_remove(
    member: Annotated[str, typer.Argument(help="The member's name, key, or one of its peers.")],
) -> None:
    """Remove a member (owner only): its connections close, its tokens end, its key is
    refused."""
    result = cli.call("member_remove", member=member)
    peers = ", ".join(result["peers"]) or "no peers"
    typer.echo(f"removed {result['member']} ({peers}; {result['tokens_revoked']} token(s) "
               "revoked)")


# -- tokens -------------------------------------------------------------------------------------
@token_app.command("create")
def token_create(
    label: Annotated[str, typer.Option(help="What the token is for.")] = "default",
    cap: Annotated[str, typer.Option(
        help="The most it may do: read, send, or admin (owner actions too).",
        callback=cli.choice_option("read", "send", "admin"))] = "send",
    expires: Annotated[str | None, typer.Option(help="How long it works: 30d, 24h or never.")]
    = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a bearer token acting as you (shown once)."""
    result = cli.call("token_create", label=label, cap=cap, expires=expires)
    if as_json:
        emit_json(result)
    else:
        typer.echo(result["token"])


@token_app.command("list")
def token_list(as_json: JsonOpt = False) -> None:
    """Your live tokens (never the tokens themselves)."""
    rows = cli.call("token_list")
    if as_json:
        emit_json(rows)
        return
    if not rows:
        typer.echo("no tokens")
        return
    typer.echo(table([[t["id"], t["label"], t["cap"], _when(t["created_at"]),
                       _when(t["expires_at"])] for t in rows],
                     ["id", "label", "cap", "created", "expires"]))


@token_app.command("revoke")
def token_revoke(
    label: Annotated[str | None, typer.Option(help="Only tokens with this label.")] = None,
    token_id: Annotated[str | None, typer.Option("--id", help="Only the token with this id.")]
    = None,
) -> None:
    """Revoke your bearer tokens (all, or by label or id); their connections close at once."""
    result = cli.call("token_revoke", label=label, id=token_id)
    typer.echo(f"revoked {result['revoked']} token(s)")


def register(app: typer.Typer) -> None:
    app.command("invite")(invite)
    app.command("join")(join)
    app.add_typer(invites_app, name="invites")
    app.add_typer(members_app, name="members")
    app.add_typer(token_app, name="token")

