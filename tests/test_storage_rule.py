"""No SQL outside the storage engine (docs/storage.md, "The rule").

Feature code, in the core and in every plugin, keeps its data through the record API, so it runs
on any engine. SQL lives only in the SQLite engine's modules (``core/builtins/sqlite_*.py``), the
core schema (``core/builtins/migrations.py``), and the modules that move a feature's tables from
before the record API into its collections (``sqlite_upgrade*.py``), which hold migrations and
nothing else.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
ENGINE = {"core/builtins/migrations.py"}
SQL = re.compile(
    r"\b(SELECT\b|(INSERT|REPLACE)\s+(OR\s+\w+\s+)?INTO\b|UPDATE\s+\w+\s+SET\b|"
    r"DELETE\s+FROM\b|CREATE\s+(UNIQUE\s+)?(TABLE|INDEX|VIRTUAL)\b|ALTER\s+TABLE\b|"
    r"DROP\s+(TABLE|INDEX)\b|PRAGMA\s)|(?i:\bselect\b[^\n]*\bfrom\s+[a-z_]+\s+where\b)")
FORBIDDEN = [
    ("a raw transaction", re.compile(r"\btransact\(")),
    ("a statement run by hand", re.compile(r"\.(execute|executemany|executescript)\(")),
    ("the store's private writer or reader", re.compile(r"\bstore\._\w+")),
    ("the sqlite3 module", re.compile(r"^\s*(import sqlite3|from sqlite3\b)", re.M)),
    # (the ``Migrations`` type of the SQLite engine's migration hook excepted)
    ("sqlite-utils", re.compile(r"^\s*(import sqlite_utils|from sqlite_utils\b(?!"
                                r"\.migrations import Migrations$))", re.M)),
]


def _sources() -> list[Path]:
    return sorted([*ROOT.joinpath("core").rglob("*.py"), *ROOT.joinpath("plugins").rglob("*.py")])


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _is_engine(rel: str) -> bool:
    return rel in ENGINE or (rel.startswith("core/builtins/") and
                             Path(rel).name.startswith("sqlite_"))


def _is_upgrade(rel: str) -> bool:
    return Path(rel).name.startswith("sqlite_upgrade")


def test_no_sql_outside_the_engine() -> None:
    found = []
    for path in _sources():
        rel = _relative(path)
        if _is_engine(rel) or _is_upgrade(rel):
            continue
        text = path.read_text()
        for number, line in enumerate(text.splitlines(), 1):
            if SQL.search(line):
                found.append(f"{rel}:{number}: SQL: {line.strip()}")
        for what, pattern in FORBIDDEN:
            for match in pattern.finditer(text):
                number = text.count("\n", 0, match.start()) + 1
                found.append(f"{rel}:{number}: {what}")
    assert not found, ("feature code keeps its data through hub.records, not SQL "
                       "(docs/storage.md):\n" + "\n".join(found))


def test_upgrade_modules_hold_migrations_only() -> None:
    upgrades = [p for p in _sources() if _is_upgrade(_relative(p))]
    assert upgrades, "no sqlite_upgrade module found: has the layout changed?"
    for path in upgrades:
        rel = _relative(path)
        tree = ast.parse(path.read_text())
        assert "transact(" not in path.read_text(), f"{rel}: transact("
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                decorated = any(isinstance(d, ast.Call) and isinstance(d.func, ast.Name)
                                and d.func.id.endswith("migrations") for d in node.decorator_list)
                assert decorated, f"{rel}:{node.lineno}: {node.name} is not a migration"
            assert not isinstance(node, ast.ClassDef), f"{rel}:{node.lineno}: a class"


def test_the_rule_catches_what_it_is_meant_to() -> None:
    assert SQL.search('conn.execute("SELECT value FROM t WHERE key=?")')
    assert SQL.search('"INSERT OR IGNORE INTO reactions (a) VALUES (?)"')
    assert SQL.search('f"UPDATE approvals SET {sets} WHERE id=?"')
    assert SQL.search('"DELETE FROM bridge_links WHERE identity=?"')
    assert not SQL.search("# select the newest update, then delete it from the map")
    assert not SQL.search('"Select a conversation"')
    assert SQL.search('"REPLACE INTO t (a) VALUES (?)"')
    assert SQL.search('q = "SELECT"')
    assert SQL.search('"select name from things where id = ?"')
    assert not SQL.search('"select one of the files from the list"')
    rules = dict(FORBIDDEN)
    assert rules["a raw transaction"].search("await hub.store.transact(run)")
    assert rules["a statement run by hand"].search("conn.executemany(q, rows)")
    assert rules["the store's private writer or reader"].search("hub.store._call(fn)")
    assert rules["the sqlite3 module"].search("import sqlite3")
    assert rules["sqlite-utils"].search("from sqlite_utils import Database")
    assert not rules["sqlite-utils"].search("    from sqlite_utils.migrations import Migrations")
