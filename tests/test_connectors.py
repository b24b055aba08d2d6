"""Connector states: what `hub doctor`, `hub pair` and the `connectors` action say about each
connector (running, idle and why, failed with its error), on real hub processes; the Telegram
bot runs against the fake Bot API (tests/fakes/telegram_api.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from meshhub import hookimpl
from meshhub.errors import MeshError

from .fakes.telegram_api import FakeTelegram
from .helpers import Identity, eventually, make_identity

IDLE = "no bot token: set MESHHUB_TELEGRAM_TOKEN or [telegram] token"


def _checks(result: Any) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in json.loads(result.stdout)}


async def _state(owner: Identity, url: str, wanted: str) -> dict[str, Any]:
    """The telegram connector's entry once it is in state ``wanted``."""

    async def reached() -> dict[str, Any] | None:
        async with owner.client(url, receive=False) as c:
            states = {s["name"]: s for s in await c.call("connectors")}
        entry = states.get("telegram")
        return entry if entry is not None and entry["state"] == wanted else None

    found: dict[str, Any] = await eventually(reached, timeout=20)
    return found


def test_idle_connector_in_doctor_pair_and_the_http_api(hub_factory):
    hub = hub_factory()  # no bot token anywhere
    owner = Identity(hub.home, "owner")

    doctor = owner.cli(hub.url, "doctor")
    assert doctor.returncode == 0, doctor.stdout  # idle by configuration is a warning
    assert f"warn  telegram: idle: {IDLE}\n" in doctor.stdout
    as_json = owner.cli(hub.url, "doctor", "--json")
    checks = _checks(as_json)
    assert checks["telegram"] == {"check": "telegram", "ok": True, "level": "warn",
                                  "detail": f"idle: {IDLE}", "state": "idle"}
    assert checks["hub"]["level"] == "ok" and checks["hub"]["ok"] is True
    assert all({"check", "ok", "level", "detail"} <= set(c) for c in checks.values())

    # the code is made all the same, with one warning line on stderr
    paired = owner.cli(hub.url, "pair", "telegram")
    code, how, links = paired.stdout.splitlines()
    assert len(code) == 9 and code[4] == "-"
    assert f"send /pair {code} to the telegram bot" in how
    assert "one more surface of owner" in links
    assert paired.stderr == (f"warning: the telegram bot is not running ({IDLE}); the code "
                             "works once it runs (within its 10 minutes)\n")
    as_json = json.loads(owner.cli(hub.url, "pair", "telegram", "--json").stdout)
    assert as_json["code"] != code and "not running" in as_json["warning"]

    unknown = owner.cli(hub.url, "pair", "discord", check=False)
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr == ("error: unknown connector 'discord'; this hub's connectors: "
                              "email, slack, telegram\n")

    # every surface has the action: here HTTP with a read-only bearer token
    token = owner.cli(hub.url, "token", "create", "--cap", "read").stdout.splitlines()[0]

    async def over_http() -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as http, http.post(
                hub.url + "/api/connectors", headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            return resp.status, await resp.json()

    status, body = asyncio.run(over_http())
    assert status == 200, body
    (telegram,) = [c for c in body["result"] if c["name"] == "telegram"]
    assert telegram["name"] == "telegram" and telegram["state"] == "idle"
    assert telegram["detail"] == IDLE and telegram["summary"] == f"idle: {IDLE}"
    assert telegram["since"] <= telegram["updated_at"]


def test_doctor_says_connector_state_is_unknown_without_a_hub(tmp_path):
    ann = make_identity(tmp_path, "ann")
    doctor = ann.cli("http://127.0.0.1:9", "doctor", "--json", check=False)
    assert doctor.returncode == 1
    checks = _checks(doctor)
    assert checks["hub"]["level"] == "fail" and checks["hub"]["ok"] is False
    assert checks["connectors"] == {"check": "connectors", "ok": True, "level": "warn",
                                    "detail": "state unknown: the hub is not running"}
    assert "telegram" not in checks


async def test_a_running_bot_is_ok_in_doctor_and_pairs_without_warning(hub_factory):
    async with FakeTelegram() as tg:
        hub = await asyncio.to_thread(hub_factory, **tg.env())
        owner = Identity(hub.home, "owner")
        running = await _state(owner, hub.url, "running")
        assert running["detail"] == "polling, bot @mesh_bot"
        doctor = await asyncio.to_thread(owner.cli, hub.url, "doctor")
        assert "ok    telegram: running (polling, bot @mesh_bot)\n" in doctor.stdout
        assert "warn  telegram" not in doctor.stdout and "FAIL" not in doctor.stdout
        paired = await asyncio.to_thread(owner.cli, hub.url, "pair", "telegram")
        assert paired.stderr == "" and len(paired.stdout.splitlines()[0]) == 9
        await asyncio.to_thread(hub.stop)


async def test_a_refused_token_fails_the_connector_and_never_shows_the_token(
        hub_factory, tmp_path):
    wrong = "424242:this-token-is-wrong"
    async with FakeTelegram() as tg:
        hub = await asyncio.to_thread(hub_factory, **{**tg.env(), "MESHHUB_TELEGRAM_TOKEN": wrong})
        owner = Identity(hub.home, "owner")
        failed = await _state(owner, hub.url, "failed")
        assert failed["detail"].startswith("Telegram refused the bot token (")
        assert "[telegram] token" in failed["detail"]

        doctor = await asyncio.to_thread(owner.cli, hub.url, "doctor", check=False)
        assert doctor.returncode == 1
        line = next(x for x in doctor.stdout.splitlines() if "telegram" in x)
        assert line.startswith("FAIL  telegram: failed: Telegram refused the bot token (")
        assert wrong not in doctor.stdout and "this-token-is-wrong" not in doctor.stdout
        assert "ok    plugins:" in doctor.stdout  # the plugin is fine; its bot is not

        # pairing still makes a code, and says why it will not work yet
        paired = await asyncio.to_thread(owner.cli, hub.url, "pair", "telegram")
        assert paired.stderr.startswith("warning: the telegram bot is not running (failed: "
                                        "Telegram refused the bot token")
        assert wrong not in paired.stderr

        # another member sees that it failed, not the error (which may name paths or hosts)
        carl = make_identity(tmp_path, "carl")
        async with carl.client(hub.url, receive=False) as c:
            (seen,) = [x for x in await c.call("connectors") if x["name"] == "telegram"]
        assert seen["state"] == "failed" and seen["detail"] is None
        assert seen["summary"] == "failed"
        await asyncio.to_thread(hub.stop)
    assert wrong not in hub.log.read_text()


def test_a_connector_whose_start_raises_is_failed_and_still_pairable(hub_factory):
    # webhook mode without a webhook URL: the connector's start() raises a settings error
    hub = hub_factory(MESHHUB_TELEGRAM_TOKEN="1:x", MESHHUB_TELEGRAM_MODE="webhook")
    owner = Identity(hub.home, "owner")
    checks = _checks(owner.cli(hub.url, "doctor", "--json", check=False))
    assert checks["telegram"]["level"] == "fail" and checks["telegram"]["ok"] is False
    assert checks["telegram"]["detail"].startswith(
        "failed: SettingsError: [telegram] mode = webhook needs webhook_url")
    assert checks["plugins"]["level"] == "fail"  # its start failed: the plugin is marked
    assert "telegram: SettingsError" in checks["plugins"]["detail"]
    paired = owner.cli(hub.url, "pair", "telegram")
    assert "failed: SettingsError" in paired.stderr and paired.stdout.strip()


# -- the core's mechanism, for any connector: plugins registered inline on a fresh manager ----
class Fixed:
    """No start(): nothing to wait for, so it is running as soon as the hub is."""


class Lazy:
    async def start(self, hub: Any) -> None:
        hub.report_connector("lazy", "idle", "no account configured: set [lazy] account")


class Broken:
    async def start(self, hub: Any) -> None:
        raise ConnectionError("cannot reach the pager gateway")


class Quiet:
    async def start(self, hub: Any) -> None:
        return None  # says nothing: the core takes a clean start as running

    async def stop(self) -> None:
        return None


class Connectors:
    @hookimpl
    def meshhub_register_connectors(self, register: Any) -> None:
        for name, connector in (("fixed", Fixed()), ("lazy", Lazy()), ("broken", Broken()),
                                ("quiet", Quiet())):
            register(name, connector)


async def test_the_core_tracks_each_connectors_start(tmp_path):
    from meshhub.config import init_home, load_config
    from meshhub.hub import Hub
    from meshhub.plugins import build_plugin_host
    from meshhub.server import serve

    home = tmp_path / "hub"
    init_home(home, "owner")
    cfg = load_config(home)
    host = build_plugin_host(cfg.disabled_plugins)
    host.register(Connectors(), "connectors_test", "0.0", "test")
    hub = Hub(cfg, plugins=host)
    runner, port = await serve(hub, "127.0.0.1", 0)
    try:
        owner = Identity(home, "owner")
        async with owner.client(f"http://127.0.0.1:{port}", receive=False) as c:
            states = {s["name"]: s for s in await c.call("connectors")}
            with pytest.raises(MeshError) as refused:
                await c.call("pair_create", connector="nope")
            paired = await c.call("pair_create", connector="broken")
    finally:
        await runner.cleanup()
    assert states["fixed"]["state"] == "running" and states["fixed"]["detail"] is None
    assert states["quiet"]["summary"] == "running"
    assert states["lazy"]["summary"] == "idle: no account configured: set [lazy] account"
    assert states["broken"]["state"] == "failed"
    assert states["broken"]["detail"] == "ConnectionError: cannot reach the pager gateway"
    assert host.records["connectors_test"].status == "failed"
    assert refused.value.code == "unknown_connector"
    assert "broken, email, fixed, lazy, quiet, slack, telegram" in refused.value.message
    assert paired["warning"].startswith("the broken bot is not running (failed: "
                                        "ConnectionError: cannot reach the pager gateway)")
    assert hub.connector_states.get("quiet").state == "stopped"  # type: ignore[union-attr]
