"""The plugin system, seen through `hub plugins list` of a real hub process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshhub import hookimpl
from meshhub.plugins import build_plugin_host

from .helpers import collect

FIXTURES = Path(__file__).parent / "fixtures"


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                   check=True, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def third_party_plugins() -> Iterator[None]:
    """Install two throwaway distributions into this venv; uninstall them afterwards."""
    for name in ("throwaway_plugin", "broken_plugin"):
        _pip("install", "--no-deps", "--no-build-isolation", str(FIXTURES / name))
    try:
        yield
    finally:
        _pip("uninstall", "-y", "meshhub-throwaway", "meshhub-broken")


def _plugins(identity, hub_url: str) -> dict[str, dict]:
    out = identity.cli(hub_url, "plugins", "list", "--json").stdout
    return {row["name"]: row for row in json.loads(out)}


async def test_builtins_are_listed_with_their_hooks(hub, people):
    (ann,) = people("ann")
    plugins = _plugins(ann, hub.url)
    assert plugins["sqlite_store"]["hooks"] == ["meshhub_provide_store"]
    assert plugins["sqlite_store"]["source"] == "built-in"
    assert "meshhub_register_actions" in plugins["core_actions"]["hooks"]
    assert "send" in plugins["core_actions"]["registered"]["actions"]
    assert plugins["hello_auth"]["hooks"] == ["meshhub_authenticate_hello"]
    assert all(p["status"] == "active" for p in plugins.values()), plugins
    text = ann.cli(hub.url, "plugins", "list").stdout
    assert "sqlite_store" in text and "provide_store" in text


async def test_third_party_plugin_runs_and_a_broken_one_is_isolated(
    third_party_plugins, hub_factory, people, tmp_path
):
    log = tmp_path / "throwaway.log"
    hub = hub_factory(THROWAWAY_LOG=str(log))
    ann, bob = people("ann", "bob")
    plugins = _plugins(ann, hub.url)
    throwaway = plugins["throwaway"]
    assert throwaway["status"] == "active"
    assert throwaway["version"] == "1.2.3"
    assert throwaway["source"] == "meshhub-throwaway (installed)"
    assert set(throwaway["hooks"]) == {
        "meshhub_register_actions", "meshhub_startup", "meshhub_message_accepted",
        "meshhub_register_commands"}
    broken = plugins["broken"]
    assert broken["status"] == "failed"
    assert "RuntimeError: this plugin is broken on purpose" in broken["error"]
    # the hub serves, the plugin's action and hooks run
    async with ann.client(hub.url) as a, bob.client(hub.url) as b:
        assert await a.call("throwaway_echo", text="hi") == {"echo": "hi", "peer": "ann"}
        sent = await a.send("bob", "seen by the plugin")
        await collect(b, 1)
    # meshhub_register_commands: the plugin's command group is part of `hub`
    assert ann.cli(hub.url, "throwaway", "hello", "--name", "ann").stdout.strip() == (
        "hello ann from a plugin")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert {"hook": "startup"} in lines
    assert {"hook": "message_accepted", "id": sent["id"], "body": "seen by the plugin"} in lines


async def test_disabling_a_plugin_by_environment(third_party_plugins, hub_factory, people):
    hub = hub_factory(MESHHUB_DISABLE_PLUGINS="throwaway")
    (ann,) = people("ann")
    plugins = _plugins(ann, hub.url)
    assert plugins["throwaway"]["status"] == "disabled"


def test_plugin_failing_at_startup_is_marked_failed_in_process():
    host = build_plugin_host(load=False)

    class Exploding:
        @hookimpl
        def meshhub_startup(self, hub):
            raise ValueError("no database for me")

    host.register(Exploding(), "exploding", "0.1", "test")
    assert host.records["exploding"].status == "active"

    class Misspelled:
        @hookimpl
        def meshhub_statup(self, hub):  # a typo of a hook name
            return None

    host.register(Misspelled(), "misspelled", "0.1", "test")
    record = host.records["misspelled"]
    assert record.status == "failed" and "meshhub_statup" in (record.error or "")
    assert host.pm.get_plugin("misspelled") is None


def test_core_imports_no_connector_package():
    code = (
        "import sys, meshhub, meshhub.hub, meshhub.server, meshhub.client, meshhub.cli.main, "
        "meshhub.plugins, meshhub.builtins.sqlite_store, meshhub.builtins.core_actions\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'telegram', 'slack_bolt', 'slack_sdk', 'aiosmtpd', 'aiosmtplib', 'mcp'} "
        "or m.startswith('meshhub_'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == ""
    # and no source file of the core names one
    core = Path(__file__).parent.parent / "core"
    for path in core.rglob("*.py"):
        text = path.read_text()
        for name in ("import telegram", "slack_bolt", "aiosmtpd", "import mcp", "from mcp",
                     "meshhub_mcp", "meshhub_telegram"):
            assert name not in text, f"{path.name} mentions {name}"
