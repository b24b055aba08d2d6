"""The SQLite engine's tables for who may get in: members, invites and bearer tokens.

A mixin of :class:`meshhub.builtins.sqlite_store.SQLiteStore` (kept apart so each module stays
about one responsibility); it uses that class's writer queue (``_call``) and read connection
(``_read``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from meshhub.models import Invite, Member
from meshhub.store import TokenInfo

T = TypeVar("T")

_TOKEN_COLUMNS = "token_id, peer, label, cap, created_at, expires_at, token_hash"


def _token(row: tuple[Any, ...]) -> TokenInfo:
    return TokenInfo(id=row[0] or row[6][:8], peer=row[1], label=row[2], cap=row[3],
                     created_at=row[4], expires_at=row[5], token_hash=row[6])


class MemberTables:
    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    # -- members ----------------------------------------------------------------------------
    async def load_members(self) -> list[Member]:
        def run(conn: sqlite3.Connection) -> list[Member]:
            rows = conn.execute(
                "SELECT key, name, via, role, groups_json, invite, created_at, removed_at, "
                "prefs_json FROM members ORDER BY created_at"
            ).fetchall()
            return [Member(key=r[0], name=r[1], via=r[2], role=r[3], groups=json.loads(r[4]),
                           invite=r[5], created_at=r[6], removed_at=r[7],
                           prefs=json.loads(r[8])) for r in rows]

        return await self._call(run)

    async def save_member(self, member: Member) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO members (key, name, via, role, groups_json, invite, "
                "created_at, removed_at, prefs_json) VALUES (?,?,?,?,?,?,?,?,?)",
                (member.key, member.name, member.via, member.role, json.dumps(member.groups),
                 member.invite, member.created_at, member.removed_at,
                 json.dumps(member.prefs)),
            )

        await self._call(run)

    async def delete_peer(self, peer: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM peers WHERE key=?", (peer,))
            conn.execute("DELETE FROM conversation_members WHERE peer=?", (peer,))

        await self._call(run)

    # -- invites ----------------------------------------------------------------------------
    async def load_invites(self) -> list[Invite]:
        def run(conn: sqlite3.Connection) -> list[Invite]:
            rows = conn.execute(
                "SELECT id, code_hash, created_by, uses, used, role, groups_json, expires_at, "
                "revoked_at, created_at FROM invites ORDER BY created_at"
            ).fetchall()
            return [Invite(id=r[0], code_hash=r[1], created_by=r[2], uses=r[3], used=r[4],
                           role=r[5], groups=json.loads(r[6]), expires_at=r[7],
                           revoked_at=r[8], created_at=r[9]) for r in rows]

        return await self._call(run)

    async def save_invite(self, invite: Invite) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO invites (id, code_hash, created_by, uses, used, role, "
                "groups_json, expires_at, revoked_at, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (invite.id, invite.code_hash, invite.created_by, invite.uses, invite.used,
                 invite.role, json.dumps(invite.groups), invite.expires_at, invite.revoked_at,
                 invite.created_at),
            )

        await self._call(run)

    # -- tokens -----------------------------------------------------------------------------
    async def save_token(self, token: TokenInfo) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO tokens (token_hash, token_id, peer, label, cap, created_at, "
                "expires_at) VALUES (?,?,?,?,?,?,?)",
                (token.token_hash, token.id, token.peer, token.label, token.cap,
                 token.created_at, token.expires_at),
            )

        await self._call(run)

    async def token_info(self, token_hash: str, now: float) -> TokenInfo | None:
        def run(conn: sqlite3.Connection) -> TokenInfo | None:
            row = conn.execute(
                f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE token_hash=? AND revoked=0 "
                "AND (expires_at IS NULL OR expires_at > ?)", (token_hash, now),
            ).fetchone()
            return _token(row) if row else None

        return self._read(run)

    async def list_tokens(self, peers: list[str], now: float) -> list[TokenInfo]:
        def run(conn: sqlite3.Connection) -> list[TokenInfo]:
            marks = ",".join("?" * len(peers))
            rows = conn.execute(
                f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE peer IN ({marks}) AND revoked=0 "
                "AND (expires_at IS NULL OR expires_at > ?) ORDER BY created_at",
                (*peers, now),
            ).fetchall()
            return [_token(r) for r in rows]

        return self._read(run) if peers else []

    async def revoke_tokens(self, peer: str, *, label: str | None = None,
                            token_id: str | None = None) -> list[str]:
        def run(conn: sqlite3.Connection) -> list[str]:
            where, args = "peer=? AND revoked=0", [peer]
            if label is not None:
                where += " AND label=?"
                args.append(label)
            if token_id is not None:  # tokens from before ids are listed by their hash's start
                where += (" AND (token_id=? OR (token_id IS NULL AND "
                          "substr(token_hash, 1, 8)=?))")
                args += [token_id, token_id]
            hashes = [r[0] for r in conn.execute(
                f"SELECT token_hash FROM tokens WHERE {where}", args).fetchall()]
            conn.executemany("UPDATE tokens SET revoked=1 WHERE token_hash=?",
                             [(h,) for h in hashes])
            return hashes

        return await self._call(run)
