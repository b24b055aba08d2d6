"""The plugin manager: loading, isolation, and the record ``hub plugins list`` prints.

Load order (tox/datasette style): the built-in default plugins by dotted name, then every entry
point in the ``meshhub`` group (the built-in connectors are registered there exactly as a
third-party package would be), each load in its own ``try``. A plugin that fails to import, fails
validation or fails to start is recorded with its error and left out; the hub keeps going.

``MESHHUB_PLUGINS`` (comma-separated) is an allow-list for entry-point plugins;
``MESHHUB_DISABLE_PLUGINS`` and ``[plugins] disabled`` in the config are a block-list.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from meshhub import PROJECT_NAME, __version__, hookspecs

from .builtins import DEFAULT_PLUGINS

log = logging.getLogger(__name__)


@dataclass
class PluginRecord:
    name: str
    version: str
    source: str
    status: str = "active"  # active | disabled | failed
    error: str | None = None
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "status": self.status,
            "error": self.error,
            "hooks": self.hooks,
            "registered": self.registered,
        }


def short_error(exc: BaseException) -> str:
    """``ExceptionType: message``, the way failures are shown to people."""
    return f"{type(exc).__name__}: {exc}"


class PluginHost:
    """A pluggy manager plus the bookkeeping around it; built by :func:`build_plugin_host`."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self.records: dict[str, PluginRecord] = {}

    # -- loading -----------------------------------------------------------------------------
    def register(self, plugin: object, name: str, version: str, source: str) -> PluginRecord:
        record = PluginRecord(name=name, version=version, source=source)
        self.records[name] = record
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except Exception as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            self.fail(name, exc)
            return record
        record.hooks = sorted(c.name for c in self.pm.get_hookcallers(plugin) or [])
        return record

    def fail(self, name: str, exc: BaseException) -> None:
        """Record ``name`` as failed and stop calling its hooks."""
        record = self.records.get(name)
        if record is None:
            record = self.records[name] = PluginRecord(name=name, version="?", source="?")
        record.status = "failed"
        record.error = short_error(exc)
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        log.error("plugin %s failed: %s", name, record.error)
        log.debug("".join(traceback.format_exception(exc)))

    def load(self, disabled: list[str] | None = None, *, builtins: bool = True) -> None:
        blocked = set(disabled or [])
        allow_env = os.environ.get("MESHHUB_PLUGINS")
        allowed = {p.strip() for p in allow_env.split(",")} if allow_env else None
        for dotted in DEFAULT_PLUGINS if builtins else ():
            short = dotted.rsplit(".", 1)[-1]
            if short in blocked:
                self.records[short] = PluginRecord(
                    short, __version__, "built-in", status="disabled"
                )
                continue
            try:
                module = importlib.import_module(dotted)
            except Exception as exc:
                self.records[short] = PluginRecord(short, __version__, "built-in")
                self.fail(short, exc)
                continue
            self.register(module, short, __version__, "built-in")
        for ep in entry_points(group=PROJECT_NAME):
            if ep.name in self.records:
                continue  # the same distribution installed twice (editable + regular)
            dist = ep.dist
            dist_name = dist.name if dist is not None else "?"
            version = dist.version if dist is not None else "?"
            source = "built-in" if dist_name == PROJECT_NAME else f"{dist_name} (installed)"
            if ep.name in blocked or (allowed is not None and ep.name not in allowed):
                self.records[ep.name] = PluginRecord(ep.name, version, source, status="disabled")
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                self.records[ep.name] = PluginRecord(ep.name, version, source)
                self.fail(ep.name, exc)
                continue
            self.register(plugin, ep.name, version, source)

    # -- calling -----------------------------------------------------------------------------
    def _impls(self, hook_name: str) -> Iterator[pluggy.HookImpl]:
        caller = getattr(self.pm.hook, hook_name)
        # pluggy calls the last registered first; keep that order (tryfirst/trylast honoured)
        yield from reversed(caller.get_hookimpls())

    def implementations(self, hook_name: str) -> list[pluggy.HookImpl]:
        """The implementations of a hook in call order (last registered first)."""
        return list(self._impls(hook_name))

    def has_impls(self, hook_name: str) -> bool:
        return bool(getattr(self.pm.hook, hook_name).get_hookimpls())

    @staticmethod
    def _invoke(impl: pluggy.HookImpl, kwargs: dict[str, Any]) -> Any:
        return impl.function(**{arg: kwargs[arg] for arg in impl.argnames})

    async def first(self, hook_name: str, **kwargs: Any) -> Any:
        """Call a ``firstresult`` hook: the first non-``None`` (awaited) answer wins.

        Errors propagate: for these hooks (store, identity, auth) the error is the answer.
        """
        for impl in self._impls(hook_name):
            value = self._invoke(impl, kwargs)
            if inspect.isawaitable(value):
                value = await value
            if value is not None:
                return value
        return None

    async def each(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call a fan-out hook on every plugin in isolation: one failure never stops the rest."""
        results = []
        for impl in self._impls(hook_name):
            try:
                value = self._invoke(impl, kwargs)
                if inspect.isawaitable(value):
                    value = await value
            except Exception:
                log.exception("plugin %s failed in %s", impl.plugin_name, hook_name)
                continue
            if value is not None:
                results.append(value)
        return results

    def collect(self, hook_name: str, kind: str, accept: Callable[..., str]) -> None:
        """Run a ``meshhub_register_*`` hook, giving each plugin a ``register`` callback.

        ``accept(*args)`` does the registering and returns the registered name, which is
        recorded against the plugin; an error inside one plugin's hook marks that plugin failed.
        Plugins are asked in load order, so on a name clash the built-in keeps its name and the
        later plugin is the one marked failed.
        """
        for impl in reversed(list(self._impls(hook_name))):
            name = impl.plugin_name

            def register(*args: Any, _plugin: str = name, **kw: Any) -> None:
                registered = accept(*args, plugin=_plugin, **kw)
                record = self.records.get(_plugin)
                if record is not None:
                    record.registered.setdefault(kind, []).append(registered)

            try:
                self._invoke(impl, {"register": register})
            except Exception as exc:
                self.fail(name, exc)

    def table(self) -> list[dict[str, Any]]:
        return [r.as_dict() for r in sorted(self.records.values(), key=lambda r: r.name)]


def build_plugin_host(
    disabled: list[str] | None = None, *, load: bool = True, builtins: bool = True
) -> PluginHost:
    """A fresh plugin manager with the hookspecs added and (by default) every plugin loaded;
    ``builtins=False`` loads the entry-point plugins only."""
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    host = PluginHost(pm)
    if load:
        host.load(disabled, builtins=builtins)
    return host
