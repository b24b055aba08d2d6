"""The SQLite engine's tables for who may get in: bearer tokens, and taking a removed member's
peers out (members and invites are records: :mod:`meshhub.directory`).

A mixin of :class:`meshhub.builtins.sqlite_store.SQLiteStore` (kept apart so each module stays
about one responsibility); it uses that class's writer queue (``_call``) and read connection
(``_read``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

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

    async def delete_peer(self, peer: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM peers WHERE key=?", (peer,))
            conn.execute("DELETE FROM conversation_members WHERE peer=?", (peer,))

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
