"""The connection log: a bounded record of recent connections and UDP flows per service.

A record is added when the proxy takes a connection (or sees a flow's first datagram) and is
completed in place when it ends: byte counts and ``outcome`` are final once ``outcome`` is set.

Outcomes: ``ok`` (relayed and closed; a UDP flow that got replies), ``refused`` (no endpoint
took it: every connect attempt was refused, or the service had none), ``reset`` (either side
reset, or a ``tcp_reset`` impairment), ``timeout`` (connect attempts timed out, a dropped
connection held until the client gave up, or a UDP flow that expired without a reply).
Connections the kernel refuses because a listener is closed never reach the proxy and are not
logged.
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

from .serviceport import ServiceKey

OK, REFUSED, RESET, TIMEOUT = "ok", "refused", "reset", "timeout"

CLUSTER_IP, NODE_PORT, LOAD_BALANCER = "cluster-ip", "node-port", "load-balancer"


@dataclass(slots=True)
class ConnectionRecord:
    client: tuple[str, int]
    service_port: str               # ns/name:port/PROTO
    frontend: str                   # cluster-ip, node-port or load-balancer
    node: str                       # the node that proxied it
    endpoint: str | None = None     # ip:port chosen (the NodePort hop for load-balancer records)
    time: float = field(default_factory=time.time)   # wall clock when it began
    bytes_up: int = 0               # client → endpoint
    bytes_down: int = 0             # endpoint → client
    outcome: str | None = None      # None while open
    ended: float | None = None

    def finish(self, outcome: str, bytes_up: int | None = None, bytes_down: int | None = None) -> None:
        if self.outcome is not None:
            return
        self.outcome = outcome
        if bytes_up is not None:
            self.bytes_up = bytes_up
        if bytes_down is not None:
            self.bytes_down = bytes_down
        self.ended = time.time()


class ConnectionLog:
    """Per service, the last ``size`` records (oldest first)."""

    def __init__(self, size: int = 1000) -> None:
        self.size = size
        self._logs: dict[ServiceKey, collections.deque[ConnectionRecord]] = {}

    def add(self, service: ServiceKey, record: ConnectionRecord) -> ConnectionRecord:
        log = self._logs.get(service)
        if log is None:
            log = self._logs[service] = collections.deque(maxlen=self.size)
        log.append(record)
        return record

    def records(self, service: ServiceKey, node: str | None = None) -> list[ConnectionRecord]:
        log = self._logs.get(service, ())
        return [r for r in log if node is None or r.node == node]

    def forget(self, service: ServiceKey) -> None:
        self._logs.pop(service, None)
