"""Endpoint choice for one service port, one node and one kind of traffic (no I/O).

As the userspace proxy's ``roundrobin.go``: round robin over the endpoint list, which is shuffled
and restarted whenever the set of endpoints changes (an unchanged set keeps its order and
position); ``random`` picks uniformly, as iptables mode does. ClientIP session affinity pins a
client address to its endpoint until the affinity has been unused for its timeout; affinities
to endpoints that left are dropped (``removeStaleAffinity``). Time is passed in (``now``, in
seconds of any monotonic clock) or read from ``time.monotonic`` when affinity needs it: plain
round robin, what most connections get, reads no clock.
"""
from __future__ import annotations

import random
import time
from typing import Collection

from netemu.errors import InvalidError

from .serviceport import EndpointInfo

ROUND_ROBIN = "round-robin"
RANDOM = "random"
MODES = (ROUND_ROBIN, RANDOM)

_AFFINITY_SWEEP_AT = 4096  # sweep expired affinities when the table grows past this
_SHARED_RNG = random.Random()


class Balancer:
    __slots__ = ("mode", "affinity_timeout", "endpoints", "_index", "_affinity", "_rng")

    def __init__(self, mode: str = ROUND_ROBIN, affinity_timeout: float = 0.0,
                 rng: random.Random | None = None) -> None:
        if mode not in MODES:
            raise InvalidError(f"balancing mode {mode!r}: expected one of {', '.join(MODES)}")
        self.mode = ROUND_ROBIN if mode == ROUND_ROBIN else RANDOM  # the constants: compared by identity
        self.affinity_timeout = affinity_timeout
        self.endpoints: list[EndpointInfo] = []
        self._index = 0
        self._affinity: dict[str, tuple[EndpointInfo, float]] = {}
        self._rng = rng or _SHARED_RNG  # one generator for all: a Random each is 2.5 KB and a seeding

    def update(self, endpoints: Collection[EndpointInfo], affinity_timeout: float | None = None) -> None:
        """New endpoint set (and affinity timeout); an unchanged set keeps order and position."""
        if affinity_timeout is not None and affinity_timeout != self.affinity_timeout:
            self.affinity_timeout = affinity_timeout
            self._affinity.clear()
        if sorted(endpoints, key=_order) == sorted(self.endpoints, key=_order):
            return
        self.endpoints = list(endpoints)
        self._rng.shuffle(self.endpoints)
        self._index = 0
        if self._affinity:
            present = {e.address for e in self.endpoints}
            self._affinity = {c: v for c, v in self._affinity.items() if v[0].address in present}

    def pick(self, client_ip: str, now: float | None = None,
             exclude: Collection[tuple[str, int]] = ()) -> EndpointInfo | None:
        """The endpoint for a new connection or flow from ``client_ip``; None if there is none.

        ``now`` (default: ``time.monotonic()``) matters only with affinity. ``exclude`` lists
        endpoints that just failed to connect: the client's affinity is reset and another
        endpoint is chosen (the userspace proxy's ``tryConnect``)."""
        endpoints = self.endpoints
        if not endpoints:
            return None
        sticky = self.affinity_timeout > 0
        if not sticky and not exclude and self.mode is ROUND_ROBIN:  # per connection: the short way
            index = self._index
            self._index = index + 1 if index + 1 < len(endpoints) else 0
            return endpoints[index]
        if now is None:
            now = time.monotonic()
        if sticky:
            held = self._affinity.get(client_ip)
            if held is not None:
                endpoint, last = held
                if now - last < self.affinity_timeout and endpoint.address not in exclude:
                    self._affinity[client_ip] = (endpoint, now)
                    return endpoint
                del self._affinity[client_ip]
        endpoint = self._next(exclude)
        if endpoint is not None and sticky:
            if len(self._affinity) >= _AFFINITY_SWEEP_AT:
                self._sweep(now)
            self._affinity[client_ip] = (endpoint, now)
        return endpoint

    def _next(self, exclude: Collection[tuple[str, int]]) -> EndpointInfo | None:
        endpoints = self.endpoints
        if exclude:
            candidates = [e for e in endpoints if e.address not in exclude]
            if not candidates:
                return None
        else:
            candidates = endpoints
        if self.mode == RANDOM:
            return self._rng.choice(candidates)
        for _ in range(len(endpoints)):
            endpoint = endpoints[self._index]
            self._index = (self._index + 1) % len(endpoints)
            if not exclude or endpoint.address not in exclude:
                return endpoint
        return None

    def _sweep(self, now: float) -> None:
        timeout = self.affinity_timeout
        self._affinity = {c: v for c, v in self._affinity.items() if now - v[1] < timeout}


def _order(e: EndpointInfo) -> tuple[str, int, str]:
    return (e.ip, e.port, e.node or "")
