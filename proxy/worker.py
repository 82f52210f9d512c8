"""A proxy worker process: a ``ProxyGroup`` of its own, fed by the cluster over a channel.

``python -m netemu.proxy.worker`` with the channel (a Unix stream socket, see ``channel``) as its
standard input. It makes the same calls on its group that the cluster's group gets, on uvloop,
with ``secondary`` set: it listens, with SO_REUSEPORT, only on what may be shared (TCP service
ports without ClientIP affinity), so the kernel gives it a share of their new connections.
Its connection records go back to the cluster in batches (``RecordReporter``). It ends when
the channel closes (the cluster stopped or closed it) and dies with the cluster's process.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import socket
import sys
from typing import Any, Callable

from netemu.fabric.base import NodeNetwork

from . import channel
from .connlog import ConnectionLog, ConnectionRecord
from .group import ProxyGroup, ProxyOptions
from .serviceport import ServiceKey

log = logging.getLogger("netemu.proxy.worker")
REPORT_INTERVAL = 0.25  # seconds between batches of connection records


class SharedStackSockets:
    """The worker's fabric: the loopback backend's sockets (one shared network stack)."""

    name = "loopback"
    shared_stack = True

    def socket(self, where: str, family: int, type: int) -> socket.socket:
        return socket.socket(family, type | socket.SOCK_NONBLOCK)  # non-blocking in one call

    def sockets(self, where: str, family: int, type: int, count: int) -> list[socket.socket]:
        return [self.socket(where, family, type) for _ in range(count)]


class RecordReporter(ConnectionLog):
    """The worker's connection log: records go to the cluster, not into a log here.

    A record is sent with the next batch as it is then; one still open is sent again, as an
    ``ended`` row, with the batch after it ends. A batch holds at most the newest ``size``
    records of each service (the cluster's log keeps no more of one service); the others are
    only counted, so that under a load of new connections the reports stay a small cost."""

    def __init__(self, send: Callable[[list[Any]], None], size: int) -> None:
        super().__init__(size)
        self._send = send
        self._new: list[tuple[ServiceKey, ConnectionRecord]] = []
        self._open: dict[int, ConnectionRecord] = {}
        self._next_id = 0
        self._timer: asyncio.TimerHandle | None = None

    def add(self, service: ServiceKey, record: ConnectionRecord) -> ConnectionRecord:
        self._new.append((service, record))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(REPORT_INTERVAL, self.flush)
        return record

    def records(self, service: ServiceKey, node: str | None = None) -> list[ConnectionRecord]:
        return []

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        ended = [channel.ended_row(i, r) for i, r in self._open.items() if r.outcome is not None]
        for row in ended:
            del self._open[row[0]]
        rows = []
        new, self._new = self._new, []
        kept = collections.Counter()
        for service, record in reversed(new):  # the newest first
            if kept[service] >= self.size:
                continue
            kept[service] += 1
            ident = self._next_id = self._next_id + 1
            rows.append(channel.record_row(ident, service, record))
            if record.outcome is None:
                self._open[ident] = record
        if new:
            rows.reverse()
            self._send(["records", rows, len(new) - len(rows)])
        if ended:
            self._send(["ended", ended])
        if self._open:  # look again for those that end
            self._timer = asyncio.get_running_loop().call_later(REPORT_INTERVAL, self.flush)


class Worker:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, options: ProxyOptions) -> None:
        self.reader = reader
        self.writer = writer
        self.group = ProxyGroup(SharedStackSockets(), options)  # type: ignore[arg-type]
        self.reporter = self.group.log = RecordReporter(self.send, options.connection_log_size)

    def send(self, message: list[Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(channel.frame(message))

    async def run(self) -> None:
        try:
            while (message := await channel.read_message(self.reader)) is not None:
                await self.handle(message)
        finally:
            await self.group.close()
            self.reporter.flush()
            self.writer.close()

    async def handle(self, message: list[Any]) -> None:
        op, *args = message
        group = self.group
        if op == "service":
            group.on_service(channel.decode_object("service", args[0]), channel.decode_object("service", args[1]))
        elif op == "slice":
            group.on_endpointslice(channel.decode_object("slice", args[0]), channel.decode_object("slice", args[1]))
        elif op == "node":
            group.add_node(NodeNetwork(name=args[0], ip=args[1], pod_cidr=args[2]))
        elif op == "node-gone":
            await group.remove_node(args[0])
        elif op == "synced":
            group.on_synced()
        elif op == "impair":
            service = tuple(args[1]) if args[1] is not None else None
            group.set_impairment(channel.decode_impairment(args[0]), service=service, node=args[2])
        elif op == "settle":
            await group.settle()
            self.reporter.flush()
            self.send(["settled", args[0]])
            await self.writer.drain()
        else:
            log.warning("proxy worker: unknown message %r", op)


async def serve(sock: socket.socket) -> None:
    reader, writer = await asyncio.open_connection(sock=sock)
    first = await channel.read_message(reader)
    if first is None:
        return
    if first[0] != "options":
        raise SystemExit(f"proxy worker: expected the options first, got {first[0]!r}")
    options = channel.decode_options(ProxyOptions, first[1])
    await Worker(reader, writer, options).run()


def main() -> None:
    import uvloop
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s proxy worker %(process)d: %(message)s")
    sock = socket.socket(fileno=0)  # the channel, handed over as standard input
    uvloop.run(serve(sock))


if __name__ == "__main__":
    sys.exit(main())
