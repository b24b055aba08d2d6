"""What each connector is doing: the hub's small registry of connector states.

Every connector registered through ``meshhub_register_connectors`` has one entry, which the
``connectors`` action, ``hub doctor`` and ``pair_create`` read. A connector reports its own
state with :meth:`meshhub.hub.Hub.report_connector`; the core fills in what it knows by itself:

* ``starting`` just before it awaits the connector's ``start(hub)``;
* ``running`` once ``start`` returned, unless the connector reported something in the meantime
  (a connector that connects in the background reports ``starting`` and later ``running``
  itself, one that has nothing to do without its settings reports ``idle``);
* ``failed`` with ``ExceptionType: message`` when ``start`` raised;
* ``stopped`` once the hub stopped it.

States:

``starting``  connecting; the detail says to what, or why the last try did not work
``running``   serving; the detail says how (``polling, bot @mesh_bot``)
``idle``      not started on purpose, by configuration; the detail says what to set
``failed``    given up until the hub restarts; the detail is the error
``stopped``   the hub stopped it

A detail is one line shown to people. It must never hold a secret (a connector scrubs its own
tokens out of its platform's error texts), but it may hold a host name or a path, so the
``connectors`` action shows the detail of a ``starting`` or ``failed`` connector to the hub's
owner only (everyone else sees the state).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from .sanitize import one_line

log = logging.getLogger(__name__)

STATES = ("starting", "running", "idle", "failed", "stopped")
PRIVATE_DETAIL = frozenset({"starting", "failed"})  # details that come from errors
MAX_DETAIL = 300


@dataclass(frozen=True)
class ConnectorState:
    name: str
    state: str
    detail: str
    since: float  # when the connector entered this state (a new detail keeps it)
    updated_at: float

    @property
    def is_running(self) -> bool:
        return self.state == "running"

    def shown_detail(self, *, full: bool) -> str:
        """The detail, unless it came from an error and ``full`` is off (not the owner)."""
        return self.detail if full or self.state not in PRIVATE_DETAIL else ""

    def summary(self, *, full: bool = True) -> str:
        """``running (polling, bot @x)``, ``idle: no bot token ...``, ``failed: <error>``."""
        detail = self.shown_detail(full=full)
        if not detail:
            return self.state
        if self.state == "running":
            return f"running ({detail})"
        return f"{self.state}: {detail}"

    def view(self, *, full: bool) -> dict[str, Any]:
        """The public dict; ``full=False`` leaves out a detail that came from an error."""
        return {"name": self.name, "state": self.state,
                "detail": self.shown_detail(full=full) or None,
                "summary": self.summary(full=full), "since": self.since,
                "updated_at": self.updated_at}


class ConnectorStates:
    """Connector name -> its current :class:`ConnectorState`; in memory, per hub."""

    def __init__(self) -> None:
        self._states: dict[str, ConnectorState] = {}

    def report(self, name: str, state: str, detail: str = "") -> ConnectorState:
        if state not in STATES:
            raise ValueError(f"connector state must be one of {', '.join(STATES)}, "
                             f"not {state!r}")
        now = time.time()
        old = self._states.get(name)
        since = old.since if old is not None and old.state == state else now
        entry = ConnectorState(name, state, one_line(detail, MAX_DETAIL), since, now)
        self._states[name] = entry
        if old is None or old.state != state or old.detail != entry.detail:
            log.debug("connector %s: %s", name, entry.summary())
        return entry

    def get(self, name: str) -> ConnectorState | None:
        return self._states.get(name)

    def all(self) -> list[ConnectorState]:
        return [self._states[name] for name in sorted(self._states)]

    def names(self) -> list[str]:
        return sorted(self._states)
