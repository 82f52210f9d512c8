"""Link impairments applied by the proxy to service traffic: settings, lookup, and timing (no I/O).

An ``Impairment`` is set per service and per node at run time. A connection or UDP flow takes,
when it starts, the combination of its service's impairment and those of the node that proxies
it and the node its endpoint runs on (each node counted once): delays and jitters add, the lowest
rate wins, loss and reset probabilities combine as independent events. Connections and flows
already running keep what they started with. With nothing set, ``lookup`` returns None and the
relays run their plain path, which pays nothing for this feature.

Delay, jitter and rate act on each direction separately (as netem on both ends of a link), so a
round trip gains twice the delay. A ``Shaper`` says when a chunk or datagram leaves one direction:
after the previous one has been serialised at the rate, plus the delay, plus a uniform jitter in
[-jitter, +jitter]; on a TCP stream chunks never overtake each other.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable

from netemu.errors import InvalidError
from netemu.units import PERCENT_UNITS, RATE_UNITS, TIME_UNITS, parse_quantity

from .serviceport import ServiceKey


@dataclass(frozen=True, slots=True)
class Impairment:
    delay_ms: float = 0.0    # one-way delay added to each direction
    jitter_ms: float = 0.0   # uniform variation of that delay, ± this much
    rate_kbit: float = 0.0   # bandwidth cap per direction in kbit/s; 0 = none
    udp_loss: float = 0.0    # probability that a datagram is lost (each direction)
    tcp_reset: float = 0.0   # probability that a new TCP connection is reset at once

    def __post_init__(self) -> None:
        problems = [f"{name} must be >= 0, got {getattr(self, name)}"
                    for name in ("delay_ms", "jitter_ms", "rate_kbit") if getattr(self, name) < 0]
        problems += [f"{name} must be between 0 and 1, got {getattr(self, name)}"
                     for name in ("udp_loss", "tcp_reset") if not 0 <= getattr(self, name) <= 1]
        if problems:
            raise InvalidError("impairment: " + "; ".join(problems))

    @classmethod
    def parse(cls, *, delay: str | None = None, jitter: str | None = None, rate: str | None = None,
              loss: str | None = None, reset: str | None = None) -> "Impairment":
        """An impairment from tc-netem-style text: delay and jitter ``50ms``, ``1.5s``, ``200us``
        (a bare number is milliseconds), rate ``1mbit``, ``512kbit``, ``2mbps`` (bytes; a bare
        number is bit/s), loss and reset ``10%`` (a bare number is a percentage)."""
        return cls(delay_ms=parse_quantity(delay, TIME_UNITS, "ms", "delay"),
                   jitter_ms=parse_quantity(jitter, TIME_UNITS, "ms", "jitter"),
                   rate_kbit=parse_quantity(rate, RATE_UNITS, "bit", "rate"),
                   udp_loss=parse_quantity(loss, PERCENT_UNITS, "%", "loss"),
                   tcp_reset=parse_quantity(reset, PERCENT_UNITS, "%", "reset"))

    def __str__(self) -> str:
        """The settings in the form ``parse`` reads (``delay 50ms jitter 5ms rate 1mbit``)."""
        parts = []
        if self.delay_ms:
            parts.append(f"delay {self.delay_ms:g}ms")
        if self.jitter_ms:
            parts.append(f"jitter {self.jitter_ms:g}ms")
        if self.rate_kbit:
            rate = self.rate_kbit
            parts.append(f"rate {rate / 1000:g}mbit" if rate >= 1000 and rate % 1000 == 0 else f"rate {rate:g}kbit")
        if self.udp_loss:
            parts.append(f"loss {self.udp_loss * 100:g}%")
        if self.tcp_reset:
            parts.append(f"reset {self.tcp_reset * 100:g}%")
        return " ".join(parts) or "none"

    @property
    def active(self) -> bool:
        return bool(self.delay_ms or self.jitter_ms or self.rate_kbit or self.udp_loss or self.tcp_reset)

    @property
    def shapes(self) -> bool:
        """True when data must be timed (delay, jitter or rate), not just dropped or reset."""
        return bool(self.delay_ms or self.jitter_ms or self.rate_kbit)

    def combine(self, other: "Impairment") -> "Impairment":
        rates = [r for r in (self.rate_kbit, other.rate_kbit) if r]
        return Impairment(
            delay_ms=self.delay_ms + other.delay_ms,
            jitter_ms=self.jitter_ms + other.jitter_ms,
            rate_kbit=min(rates) if rates else 0.0,
            udp_loss=1 - (1 - self.udp_loss) * (1 - other.udp_loss),
            tcp_reset=1 - (1 - self.tcp_reset) * (1 - other.tcp_reset))




class Impairments:
    """The impairments currently set, per service (namespace, name) and per node name."""

    def __init__(self) -> None:
        self.by_service: dict[ServiceKey, Impairment] = {}
        self.by_node: dict[str, Impairment] = {}

    def set(self, impairment: Impairment | None, *, service: ServiceKey | None = None,
            node: str | None = None) -> None:
        """Set (or with None or an inactive impairment, clear) one service's or one node's."""
        if (service is None) == (node is None):
            raise InvalidError("impairment: name exactly one of a service or a node")
        table: dict = self.by_service if service is not None else self.by_node
        key = service if service is not None else node
        if impairment is None or not impairment.active:
            table.pop(key, None)
        else:
            table[key] = impairment

    def lookup(self, service: ServiceKey, nodes: Iterable[str | None]) -> Impairment | None:
        """The combined impairment for a connection, or None when nothing applies."""
        if not self.by_service and not self.by_node:
            return None
        found = [self.by_service[service]] if service in self.by_service else []
        for node in dict.fromkeys(nodes):
            if node is not None and node in self.by_node:
                found.append(self.by_node[node])
        if not found:
            return None
        total = found[0]
        for more in found[1:]:
            total = total.combine(more)
        return total


class Shaper:
    """Departure times for one direction of one connection or flow."""

    __slots__ = ("_delay", "_jitter", "_bytes_per_s", "_ordered", "_rng", "_link_free", "_last")

    def __init__(self, impairment: Impairment, *, ordered: bool, rng: random.Random) -> None:
        self._delay = impairment.delay_ms / 1000
        self._jitter = impairment.jitter_ms / 1000
        self._bytes_per_s = impairment.rate_kbit * 125  # kbit/s → bytes/s
        self._ordered = ordered
        self._rng = rng
        self._link_free = 0.0
        self._last = 0.0

    def departure(self, nbytes: int, now: float) -> float:
        """When ``nbytes`` handed over at ``now`` come out at the far end."""
        done = now
        if self._bytes_per_s:
            done = max(now, self._link_free) + nbytes / self._bytes_per_s
            self._link_free = done
        at = done + self._delay
        if self._jitter:
            at = max(done, at + self._rng.uniform(-self._jitter, self._jitter))
        if self._ordered:
            at = max(at, self._last)
            self._last = at
        return at

    def backlog(self, now: float) -> float:
        """Seconds until everything handed over so far has been serialised at the rate."""
        return max(0.0, self._link_free - now)
