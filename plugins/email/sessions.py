"""How many SMTP clients the listener serves at once: a limit in all and one per client address,
and a deadline for a whole session, so clients that connect and stall (or trickle a byte now and
then, which resets aiosmtpd's idle timer) cannot take every socket and every buffer of the hub.
A client over a limit is answered ``421`` (try later) and closed before anything else. The MTA
in front of a gateway connects from one address: the per-address limit (20) is as many sessions
as Postfix opens to one destination by default; raise it with the MTA's."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import SMTP

log = logging.getLogger(__name__)
SESSION_SECONDS = 1800.0  # the longest a session may last, whatever it does


def client_of(host: str) -> str:
    """Whom a connection counts against: its IPv4 address, or its IPv6 /64 (one machine can
    take a whole /64)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class SessionGate:
    """The sessions open now: in all, and per client address."""

    def __init__(self, most: int, most_per_address: int) -> None:
        self.most = most
        self.most_per_address = most_per_address
        self.open: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.open.values())

    def factory(self, make: Callable[[SessionGate], SMTP]) -> Callable[[], asyncio.Protocol]:
        """The protocol factory for ``loop.create_server``: a session, or a refusal when the
        listener is full."""

        def protocol() -> asyncio.Protocol:
            if self.total >= self.most:
                return Busy("421 4.7.0 the gateway is busy; try again later")
            return make(self)

        return protocol


class Busy(asyncio.Protocol):
    """Says ``reply`` and hangs up."""

    def __init__(self, reply: str) -> None:
        self.reply = reply

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self.reply.encode() + b"\r\n")
        transport.close()


class Session(SMTP):
    """aiosmtpd's protocol, counted by a :class:`SessionGate` and ended at its deadline."""

    def __init__(self, gate: SessionGate, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = gate
        self.address: str | None = None  # counted under this client address
        self.refused = False
        self.deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.address is not None or self.refused:  # again, after STARTTLS
            super().connection_made(transport)
            return
        peer = transport.get_extra_info("peername")
        address = client_of(str(peer[0]) if isinstance(peer, tuple) and peer else "?")
        if self.gate.open[address] >= self.gate.most_per_address:
            self.refused = True
            log.warning("email: %s has %d SMTP sessions open already; refused", address,
                        self.gate.open[address])
            Busy("421 4.7.0 too many connections from your address; try again later"
                 ).connection_made(transport)
            return
        self.address = address
        self.gate.open[address] += 1
        self.deadline = asyncio.get_running_loop().call_later(SESSION_SECONDS, transport.close)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self.refused:
            return  # never started
        if self.deadline is not None:
            self.deadline.cancel()
        if self.address is not None:
            self.gate.open[self.address] -= 1
            if self.gate.open[self.address] <= 0:
                del self.gate.open[self.address]
            self.address = None
        super().connection_lost(error)
