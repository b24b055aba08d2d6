"""The documentation keeps up with the code (datasette-style meta-tests).

- every hook in :mod:`meshhub.hookspecs` has its own section in docs/hooks.md, and no section
  documents a hook that does not exist;
- every hook is exercised by at least one test;
- every error code the core raises and every ``MESHHUB_*`` variable it reads is documented;
- README.md shows the command CI runs.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from meshhub import hookspecs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TESTS = ROOT / "tests"
CORE = ROOT / "core"

HOOKS = sorted(
    name
    for name, obj in vars(hookspecs).items()
    if name.startswith("meshhub_") and inspect.isfunction(obj)
)
HEADING_RE = re.compile(r"^##\s+`(meshhub_\w+)`\s*$", re.MULTILINE)


def test_hookspecs_found() -> None:
    assert len(HOOKS) >= 10, HOOKS


def test_every_hook_has_a_section_in_hooks_md() -> None:
    documented = set(HEADING_RE.findall((DOCS / "hooks.md").read_text()))
    missing = [h for h in HOOKS if h not in documented]
    assert not missing, f"docs/hooks.md has no '## `<hook>`' section for: {', '.join(missing)}"


def test_hooks_md_documents_no_unknown_hook() -> None:
    documented = set(HEADING_RE.findall((DOCS / "hooks.md").read_text()))
    stale = sorted(documented - set(HOOKS))
    assert not stale, f"docs/hooks.md documents hooks that do not exist: {', '.join(stale)}"


def test_every_hook_is_used_by_a_test() -> None:
    test_text = "\n".join(
        p.read_text() for p in sorted(TESTS.rglob("*.py")) if p.name != "test_docs.py"
    )
    untested = [h for h in HOOKS if not re.search(rf"\b{h}\b", test_text)]
    assert not untested, (
        "these hooks are not named in any test under tests/ (write a test that implements or "
        f"exercises each): {', '.join(untested)}"
    )


def _core_error_codes() -> set[str]:
    codes: set[str] = set()
    for path in CORE.rglob("*.py"):
        text = path.read_text()
        codes |= set(re.findall(r'\bcode="([a-z_]+)"', text))
        codes |= set(re.findall(r'^\s+code = "([a-z_]+)"', text, re.MULTILINE))
    return codes


def test_every_error_code_is_in_protocol_md() -> None:
    protocol = (DOCS / "protocol.md").read_text()
    codes = _core_error_codes()
    assert "unknown_target" in codes  # the scan itself works
    missing = sorted(c for c in codes if f"`{c}`" not in protocol)
    assert not missing, f"docs/protocol.md does not list these error codes: {', '.join(missing)}"


def test_every_environment_variable_is_in_operations_md() -> None:
    operations = (DOCS / "operations.md").read_text()
    names: set[str] = set()
    for path in CORE.rglob("*.py"):
        names |= set(re.findall(r"\bMESHHUB_[A-Z_]*[A-Z]\b", path.read_text()))
    assert "MESHHUB_HOME" in names  # the scan itself works
    missing = sorted(n for n in names if f"`{n}`" not in operations)
    assert not missing, f"docs/operations.md does not list: {', '.join(missing)}"


def _ci_test_commands(script: str) -> list[str]:
    """The command lines of a CI script that set up or run the tests."""
    commands = []
    for raw in script.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith("set "):
            continue
        if "pytest" not in line and "test-setup" not in line:
            continue
        line = re.sub(r"^exec\s+", "", line)
        line = re.sub(r'\s+"?\$(@|\*)"?$', "", line)  # forwarded arguments
        commands.append(line)
    return commands


def test_readme_shows_the_command_ci_runs() -> None:
    ci = ROOT / ".ci" / "run"
    if not ci.exists():
        pytest.skip(".ci/run does not exist yet")
    commands = _ci_test_commands(ci.read_text())
    assert commands, ".ci/run runs no pytest or test-setup command"
    readme = (ROOT / "README.md").read_text()
    missing = [c for c in commands if c not in readme]
    assert not missing, f"README.md does not show the command(s) .ci/run runs: {missing}"


def test_readme_shows_setup_and_test_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    for line in (
        "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/hub start",
        "bash scripts/test-setup && .venv/bin/python -m pytest",
    ):
        assert f"```\n{line}\n```" in readme, f"README.md should show, in a code block: {line}"


def test_every_test_file_named_in_the_docs_exists() -> None:
    named: dict[str, str] = {}
    for doc in sorted([*DOCS.glob("*.md"), ROOT / "README.md"]):
        for name in re.findall(r"[\w./-]*\btest_\w+\.py\b", doc.read_text()):
            named[name] = doc.name
    assert named, "the scan found no test file named in the docs"
    missing = [f"{name} (in {doc})" for name, doc in named.items()
               if not ((ROOT / name).is_file() if "/" in name else (TESTS / name).is_file())]
    assert not missing, f"the docs name test files that do not exist: {', '.join(missing)}"
