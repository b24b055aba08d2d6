"""``hub approvals`` and ``hub surfaces``: answering requests from a terminal, and choosing where
messages to you arrive. The rules are the hub's (:mod:`meshhub.builtins.approvals`,
:mod:`meshhub.reach`); these commands call its actions."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from meshhub.sanitize import for_terminal

from . import common as cli
from .common import JsonOpt, choice_option
from .output import emit_json, table

approvals_app = typer.Typer(
    help="Requests waiting for your answer; answer them from here.", invoke_without_command=True)
surfaces_app = typer.Typer(
    help="Where messages to you arrive: your sessions and linked chat accounts.",
    invoke_without_command=True)


def _line(a: dict[str, Any]) -> list[str]:
    what = a["question"] if a["kind"] != "permission" else f"{a['tool']}: {a['question']}"
    return [a["ref"] or a["id"], a["asker"], for_terminal(what, one_line=True)[:70],
            " / ".join(a["options"]) or "any text", a["label"]]


@approvals_app.callback()
def approvals(
    ctx: typer.Context,
    show_all: Annotated[bool, typer.Option("--all", help="Include settled ones.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Requests waiting for your answer (with --all: the settled ones too)."""
    if ctx.invoked_subcommand is not None:
        return
    rows = cli.call("approvals", role="approver", state="all" if show_all else "pending")
    if as_json:
        emit_json(rows)
        return
    if not rows:
        typer.echo("nothing waits for your answer")
        return
    typer.echo(table([_line(a) for a in rows], ["id", "from", "question", "answers", "state"]))
    typer.echo("answer with: hub approvals answer ID ANSWER [--reason TEXT]")


@approvals_app.command("answer")
def approvals_answer(
    ident: Annotated[str, typer.Argument(help="The request's id or short reference.")],
    answer: Annotated[str, typer.Argument(help="One of its answers (allow, deny...), or text.")],
    reason: Annotated[str | None, typer.Option(help="Why, shown to the asker.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer a request; the first answer from any surface wins."""
    result = cli.call("approval_answer", id=ident, answer=answer, reason=reason)
    if as_json:
        emit_json(result)
        return
    typer.echo(f"{result['label']}: {for_terminal(result['question'], one_line=True)}")


@approvals_app.command("policy")
def approvals_policy(
    member: Annotated[str | None, typer.Option(help="Another member's (owner only).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The approval policy in force: approvers, automatic answers, quiet hours."""
    policy = cli.call("approvals_policy", member=member)
    if as_json:
        emit_json(policy)
        return
    rows = [["approver", policy["approver"]],
            ["expire after", f"{policy['expire_after']:.0f} s"],
            ["quiet hours", policy["quiet_hours"] or "none"],
            ["auto allow", ", ".join(policy["auto_allow"]) or "none"],
            ["auto deny", ", ".join(policy["auto_deny"]) or "none"],
            ["urgent", ", ".join(policy["urgent"]) or "none"]]
    rows += [[f"session {k}", v] for k, v in policy["sessions"].items()]
    rows += [[f"tool {k}", v] for k, v in policy["tools"].items()]
    typer.echo(f"approval policy of {policy['member']} ([approvals] in the hub's config)")
    typer.echo(table(rows, ["setting", "value"]))


REACH_TEXT = {"auto": "while no terminal or web page of yours is live", "always": "always",
              "never": "never"}


def _show_surfaces(result: dict[str, Any]) -> None:
    typer.echo(f"{result['member']}: your linked accounts get messages sent to you "
               f"{REACH_TEXT[result['reach']]} (reach: {result['reach']})")
    typer.echo(table(
        [[s["name"], s["connector"], s["type"],
          "" if s["online"] is None else "online" if s["online"] else "offline",
          "on" if s["on"] else "off"] for s in result["surfaces"]],
        ["name", "connector", "type", "presence", "gets messages"]))


@surfaces_app.callback()
def surfaces(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Your sessions and linked chat accounts (`hub pair telegram` links one)."""
    if ctx.invoked_subcommand is not None:
        return
    result = cli.call("surfaces")
    if as_json:
        emit_json(result)
        return
    _show_surfaces(result)


@surfaces_app.command("set")
def surfaces_set(
    reach: Annotated[str, typer.Argument(
        help="auto, always or never", callback=choice_option("auto", "always", "never"))],
) -> None:
    """When your linked chat accounts get messages sent to you."""
    _show_surfaces(cli.call("surfaces_set", reach=reach))


@surfaces_app.command("on")
def surfaces_on(name: Annotated[str, typer.Argument(help="A linked account's name.")]) -> None:
    """Switch a linked chat account on: it gets messages sent to you again."""
    _show_surfaces(cli.call("surfaces_set", surface=name, on=True))


@surfaces_app.command("off")
def surfaces_off(name: Annotated[str, typer.Argument(help="A linked account's name.")]) -> None:
    """Switch a linked chat account off: it gets nothing sent to you (approvals included)."""
    _show_surfaces(cli.call("surfaces_set", surface=name, on=False))


def register(app: typer.Typer) -> None:
    app.add_typer(approvals_app, name="approvals")
    app.add_typer(surfaces_app, name="surfaces")
