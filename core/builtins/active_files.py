"""Active files: which peer is editing which file, and a conflict event when two peers of one
team edit the same file.

A session reports the files it edits (``files_editing``; ``hub mcp`` does it for Claude Code's
Edit and Write tools through the PostToolUse hook). A file is named by a repository identity
and a path inside it (``repo``, as ``hub mcp`` derives it from the git remote, so two checkouts
of one repository on two machines name a file alike), or by its absolute path outside a
repository. Each (peer, file) is one document of ``active_files`` that lives ``[active_files]
ttl`` seconds (1800) after the peer's last report of it.

Two peers of one team editing one file make one ``file_conflicts`` document for the pair and
the file, kept ``[active_files] remember`` seconds (86400): while it is there, the pair is not
told again. Its creation reaches both peers as a ``record`` event (the collection's feed), and
the session report names it. Peers are in one team when one of them is in a group the other
is in, or in a subgroup of it; peers in no group at all are one team (a hub without groups is
one team), and they do not share one with a peer that has groups.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from meshhub import hookimpl
from meshhub.actions import Action, ActionContext, action
from meshhub.config import ConfigError
from meshhub.directory import check_group
from meshhub.errors import InvalidRequest, MeshError, TooLarge
from meshhub.fields import MAX_GROUP, MAX_PATH, MAX_REPO
from meshhub.records import Change, Collection, Conflict, Range
from meshhub.report import ReportSection, report_text

if TYPE_CHECKING:
    from meshhub.hub import Hub
    from meshhub.models import Peer

TTL = 1800.0  # seconds a report of a file counts as editing it
REMEMBER = 86400.0  # seconds a pair's conflict over a file is not told again
MAX_FILES = 20  # files one report names
MAX_ACTIVE = 200  # files one peer may have active at once (each is a document kept for ttl)
MAX_LISTED = 1000  # active files files_active shows
_ABSOLUTE = re.compile(r"^(/|[A-Za-z]:[\\/])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _conflict_audience(hub: Hub, change: Change) -> Iterable[str]:
    """The two peers of the conflict."""
    doc = change.value or change.previous or {}
    return [str(p.get("key")) for p in doc.get("peers", [])]


ACTIVE = Collection("active_files", indexes=("peer", "file"))
CONFLICTS = Collection("file_conflicts", indexes=("file", "at"), feed=True,
                       notify=_conflict_audience)


def settings(hub: Hub) -> tuple[float, float]:
    """``(ttl, remember)`` from ``[active_files]``; a setting that is not a number of seconds
    above 0 is a :class:`ConfigError` naming it (at start: the hub's log and ``hub plugins``
    name it; a call is answered that it cannot be made until it is fixed)."""
    section = hub.config.section("active_files")
    return _seconds(section, "ttl", TTL), _seconds(section, "remember", REMEMBER)


def _call_settings(hub: Hub) -> tuple[float, float]:
    try:
        return settings(hub)
    except ConfigError as exc:
        raise MeshError(f"files_editing is off: the hub's {exc}; its owner fixes the hub's "
                        "config") from exc


def _seconds(section: dict[str, Any], name: str, default: float) -> float:
    value = section.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e9:
        raise ConfigError(f"[active_files] {name} must be a number of seconds above 0, "
                          f"not {value!r}")
    return float(value)


def same_team(a: Peer, b: Peer) -> bool:
    """Whether two peers are in one team (the module's docstring says what that is)."""
    if not a.groups and not b.groups:
        return True
    return any(x == y or x.startswith(y + "/") or y.startswith(x + "/")
               for x in a.groups for y in b.groups)


def file_name(repo: str | None, path: str) -> tuple[str, str]:
    """``(file, path)``: the file's one name on the hub (``<repo>:<path>``, or the absolute
    path) and its path cleaned; a bad path is refused naming the field."""
    if not path or _CONTROL.search(path):
        raise InvalidRequest("paths: each path is a non-empty line of text", field="paths")
    if repo is None:
        if not _ABSOLUTE.match(path):
            raise InvalidRequest(f"paths: {path[:80]!r} is not absolute; give an absolute path, "
                                 "or repo and a path inside it", field="paths")
        return path, path
    if not repo.strip() or _CONTROL.search(repo):
        raise InvalidRequest("repo is a non-empty line of text", field="repo")
    inside = path.replace("\\", "/").lstrip("/")
    while inside.startswith("./"):
        inside = inside[2:]
    if not inside or ".." in inside.split("/"):
        raise InvalidRequest(f"paths: {path[:80]!r} is not a path inside the repository",
                             field="paths")
    return f"{repo}:{inside}", inside


def _party(hub: Hub, key: str, since: float) -> dict[str, Any]:
    peer = hub.directory.peers.get(key)
    return {"key": key, "name": peer.name if peer is not None else key, "since": since}


async def _touch(hub: Hub, me: str, repo: str | None, file: str, path: str, now: float,
                 ttl: float) -> float:
    """Mark ``me`` editing ``file`` now; the time it started editing it."""

    def change(old: dict[str, Any] | None) -> dict[str, Any]:
        since = old["since"] if old else now
        return {"peer": me, "file": file, "repo": repo, "path": path, "since": since,
                "last_at": now}

    record = await hub.records.modify(ACTIVE.name, f"{me} {file}", change, ttl=ttl)
    assert record is not None  # change always writes
    return float(record.value["since"])


async def _new_conflicts(hub: Hub, me: Peer, file: str, since: float,
                         remember: float) -> list[dict[str, Any]]:
    """The conflicts over ``file`` between ``me`` and its team's other editors that nobody has
    been told of yet; each is created here, which tells both peers."""
    found = []
    for other in await hub.records.all(ACTIVE.name, {"file": file}):
        key = other.value["peer"]
        peer = hub.directory.peers.get(key)
        if key == me.key or peer is None or not same_team(me, peer):
            continue
        pair = sorted([(me.key, since), (key, float(other.value["since"]))])
        doc = {"file": file, "repo": other.value.get("repo"), "path": other.value["path"],
               "at": time.time(), "peers": [_party(hub, k, s) for k, s in pair]}
        try:
            await hub.records.create(CONFLICTS.name, f"{pair[0][0]} {pair[1][0]} {file}", doc,
                                     ttl=remember)
        except Conflict:
            continue  # told already
        found.append(doc)
    return found


async def _check_room(hub: Hub, me: str, files: list[str]) -> None:
    """Refuse a report that would make the peer's active files more than :data:`MAX_ACTIVE`
    (each is kept for ``ttl``: without a bound, a peer could fill the store with them)."""
    active = await hub.records.count(ACTIVE.name, {"peer": me})
    if active + len(files) <= MAX_ACTIVE:
        return
    new = {f for f in files if await hub.records.get(ACTIVE.name, f"{me} {f}") is None}
    if active + len(new) > MAX_ACTIVE:
        raise TooLarge(f"you have {active} active files; at most {MAX_ACTIVE} at once: call "
                       "files_done for those you stopped editing", limit=MAX_ACTIVE,
                       size=active + len(new))


@action()
async def files_editing(
    ctx: ActionContext,
    paths: Annotated[list[Annotated[str, Field(max_length=MAX_PATH)]],
                     "the files being edited: paths inside repo, or absolute paths",
                     Field(min_length=1, max_length=MAX_FILES)],
    repo: Annotated[str | None, "the repository's identity (e.g. github.com/acme/app) the "
                                "paths are in; left out: the paths are absolute",
                    Field(max_length=MAX_REPO)] = None,
) -> dict[str, Any]:
    """Report that you are editing these files (again: the report keeps them active).

    Any peer may report its own, at most 200 at once. ``conflicts`` lists the peers of your
    team editing one of them that you had not been told of; both of you also get a ``record``
    event of ``file_conflicts``, once per pair and file."""
    named = [file_name(repo, p) for p in paths]  # all checked before anything is written
    await _check_room(ctx.hub, ctx.peer.key, [file for file, _ in named])
    ttl, remember = _call_settings(ctx.hub)
    now, conflicts = time.time(), []
    for file, path in dict(named).items():
        since = await _touch(ctx.hub, ctx.peer.key, repo, file, path, now, ttl)
        conflicts += await _new_conflicts(ctx.hub, ctx.peer, file, since, remember)
    return {"files": list(dict(named)), "conflicts": conflicts}


@action(read_only=True)
async def files_active(
    ctx: ActionContext,
    group: Annotated[str | None, "only peers in this group (or a subgroup of it)",
                     Field(max_length=MAX_GROUP)] = None,
) -> dict[str, Any]:
    """Who is editing which file, since when, by file (the first editor first). Every peer
    sees its own team's (the hub's owner sees everyone's)."""
    wanted = check_group(group) if group else None
    out = await _visible(ctx, wanted)
    out.sort(key=lambda f: (f["file"], f["since"]))
    return {"files": out[:MAX_LISTED], "more": len(out) > MAX_LISTED}


async def _visible(ctx: ActionContext, wanted: str | None) -> list[dict[str, Any]]:
    """Up to one more than :data:`MAX_LISTED` of the active files the caller may see, in file
    order: pages are read until that many are visible (other teams' files do not use up the
    limit)."""
    peers, cursor = ctx.hub.directory.peers, None
    out: list[dict[str, Any]] = []
    while len(out) <= MAX_LISTED:
        page = await ctx.hub.records.find(ACTIVE.name, {}, order="file", limit=MAX_LISTED,
                                          after=cursor)
        for record in page.records:
            peer = peers.get(record.value["peer"])
            if peer is None or (wanted is not None and not peer.in_group(wanted)):
                continue
            if peer.key == ctx.peer.key or ctx.is_admin or same_team(ctx.peer, peer):
                doc = record.value
                out.append({"file": doc["file"], "repo": doc.get("repo"), "path": doc["path"],
                            "peer": peer.name, "peer_key": peer.key, "since": doc["since"],
                            "last_at": doc["last_at"]})
        if page.cursor is None:
            break
        cursor = page.cursor
    return out


@action()
async def files_done(
    ctx: ActionContext,
    paths: Annotated[list[Annotated[str, Field(max_length=MAX_PATH)]] | None,
                     "the files you stopped editing; left out: all of yours",
                     Field(max_length=MAX_FILES)] = None,
    repo: Annotated[str | None, "the repository the paths are in, as files_editing had it",
                    Field(max_length=MAX_REPO)] = None,
) -> dict[str, Any]:
    """Stop reporting files as being edited (a session ending says so). Any peer may end its
    own. ``done`` counts the files that were active."""
    me = ctx.peer.key
    if paths is None:
        mine = await ctx.hub.records.all(ACTIVE.name, {"peer": me})
        keys = [r.key for r in mine]
    else:
        keys = [f"{me} {file_name(repo, p)[0]}" for p in paths]
    done = 0
    for key in keys:
        done += await ctx.hub.records.delete(ACTIVE.name, key)
    return {"done": done}


def clock(at: Any) -> str:
    """A time of day as the report and the sessions show it (``?``: none given)."""
    return time.strftime("%H:%M:%S UTC", time.gmtime(float(at))) if at else "?"


@hookimpl
async def meshhub_report_sections(hub: Hub, viewer: Peer, since: float,
                                  until: float) -> ReportSection | None:
    """Files two peers edited at once in the window, as either of them (or the owner) sees."""
    admin = hub.is_admin(viewer)
    lines = []
    for record in await hub.records.all(CONFLICTS.name, {"at": Range(ge=since, lt=until)},
                                        order="at"):
        doc = record.value
        if not admin and viewer.key not in {p["key"] for p in doc["peers"]}:
            continue
        who = " and ".join(f"{report_text(p['name'])} (since {clock(p['since'])})"
                           for p in doc["peers"])
        lines.append(f"- {report_text(doc['file'])}: {who}, seen {clock(doc['at'])}")
    return ReportSection("Active files", lines, 90) if lines else None


@hookimpl
def meshhub_startup(hub: Hub) -> None:
    settings(hub)


@hookimpl
def meshhub_register_collections(register: Callable[[Collection], None]) -> None:
    register(ACTIVE)
    register(CONFLICTS)


@hookimpl
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    for item in (files_editing, files_active, files_done):
        register(item)
