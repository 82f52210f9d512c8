"""Worker processes of a cluster's proxy (``proxy_workers`` > 1 or ``auto``, loopback backend).

One Python process relays at most one core's worth of connections. With ``proxy_workers: N`` the
cluster starts N-1 worker processes (``worker``) as it starts; with ``auto`` they start while the
proxy is busy (``autoscale``). Each runs a ``ProxyGroup`` of its own on uvloop; the cluster's group
forwards them every call it gets (services, EndpointSlices, nodes, impairments, ``on_synced``) over
a socketpair (``channel``), and a worker that starts late is first given the calls that bring it to
where the group is (``_catch_up``), encoded a slice of the loop's time at a time so that the proxy
keeps serving meanwhile; calls forwarded during the catch-up follow it. TCP listeners in every
process set SO_REUSEPORT before they bind: the processes run as the same user, so the kernel puts
their sockets for one address in one group and spreads new connections over them by a hash of the
4-tuple. No privilege is needed.

What is not shared stays in the cluster's process: UDP listeners (a flow's datagrams would be
spread over processes, each with its own flow state; cluster DNS on UDP is one such) and
services with ``sessionAffinity: ClientIP`` (the kernel's hash takes the client's port too, so
one client would reach several processes, each with its own affinity table). Impairments are
forwarded: each process applies the same settings to the connections it takes. Round-robin
balancing runs per process, so endpoints see an even spread overall but not a strict rotation.

Each worker's connection records come back in batches (every ``worker.REPORT_INTERVAL`` and at
each ``settle``) into the cluster's connection log, so ``describe service`` lists every
connection. A worker is recorded in the cluster's ledger and carries the cluster's token
(``netemu gc`` finds it after a crash), leads its own session, dies with the cluster's process
(PR_SET_PDEATHSIG), ends when its channel closes, and is killed by pid if it does not.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from netemu.fabric.base import NodeNetwork
from netemu.spawn import cluster_child_setup, end_helper, spawn

from . import channel
from .connlog import ConnectionRecord
from .impair import Impairment
from .serviceport import ServiceKey

log = logging.getLogger(__name__)
STOP_GRACE = 2.0  # seconds a worker has to end after its channel closes, before SIGKILL
WORK_SLICE = 0.02  # seconds of a late worker's catch-up before the loop gets a turn


class _Worker:
    """One worker process and the cluster's end of its channel."""

    def __init__(self, proc: asyncio.subprocess.Process, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, group: Any) -> None:
        self.proc = proc
        self.reader = reader
        self.writer = writer
        self.group = group
        self.settles: dict[int, asyncio.Future[None]] = {}
        self.open: dict[int, ConnectionRecord] = {}    # records it sent open, by its id
        self.connections = 0                           # records it has sent
        self.stopping = False
        self.backlog: list[bytes] | None = None      # calls that wait while it catches up
        self.task = asyncio.get_running_loop().create_task(self._receive())

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, data: bytes) -> None:
        if self.backlog is not None:  # still being brought up to date: after that
            self.backlog.append(data)
        elif not self.writer.is_closing():
            self.writer.write(data)

    async def catch_up(self, messages: list[Callable[[], list[Any]]]) -> None:
        """Send ``messages`` (each made when its turn comes), in slices of the loop's time; calls
        forwarded meanwhile wait in the backlog and follow them."""
        self.backlog = []
        deadline = time.monotonic() + WORK_SLICE
        for make in messages:
            if not self.writer.is_closing():
                self.writer.write(channel.frame(make()))
            if time.monotonic() > deadline:
                await asyncio.sleep(0)
                deadline = time.monotonic() + WORK_SLICE
        backlog, self.backlog = self.backlog, None
        for data in backlog:
            self.send(data)

    async def _receive(self) -> None:
        try:
            while (message := await channel.read_message(self.reader)) is not None:
                op, payload, *more = message
                if op == "records":
                    self._records(payload, more[0])
                elif op == "ended":
                    for row in payload:
                        record = self.open.pop(row[0], None)
                        if record is not None:
                            channel.apply_ended(record, row)
                elif op == "settled":
                    future = self.settles.pop(payload, None)
                    if future is not None and not future.done():
                        future.set_result(None)
        except Exception:
            log.exception("proxy worker %s: channel failed", self.pid)
        finally:
            if not self.stopping:
                log.warning("proxy worker %s: channel closed; its connections now go to the other processes",
                            self.pid)
            self.writer.close()
            self.open.clear()
            for future in self.settles.values():  # nothing left to wait for
                if not future.done():
                    future.set_result(None)
            self.settles.clear()

    def _records(self, rows: list[list[Any]], skipped: int) -> None:
        add = self.group.log.add
        for row in rows:
            ident, service, record = channel.row_record(row)
            add(service, record)
            if record.outcome is None:
                self.open[ident] = record
        self.connections += len(rows) + skipped

    async def stop(self) -> None:
        """Close the channel for writing; the worker closes its group, sends its last records
        and exits, or is killed by pid."""
        self.stopping = True
        if not self.writer.is_closing():
            self.writer.write_eof()
        await end_helper(self.proc, STOP_GRACE)
        await self.task  # it has read to the end: the worker's side is closed


class ProxyWorkers:
    """The worker processes of one proxy group: the group's calls, forwarded to each."""

    def __init__(self, group: Any, *, env: Mapping[str, str], record: Callable[[int], None],
                 log_path: Path) -> None:
        """No process yet (``add`` starts them). Each gets ``env`` added to this process's
        environment and calls ``record`` with its pid before it runs Python."""
        import dataclasses
        self.group = group
        self.workers: list[_Worker] = []
        self._seq = 0
        options = dataclasses.replace(group.options, reuse_port=True, secondary=True)
        self._hello = channel.frame(["options", channel.encode_options(options)])
        self._env = env
        self._record = record
        self._log_path = log_path

    async def add(self) -> int:
        """Start one more worker; it is brought up to date with the group (its nodes, services,
        slices and impairments) and gets every call from then on. Returns its pid."""
        worker = await _start_one(self.group, self._hello, env=self._env, record=self._record,
                                  log_path=self._log_path)
        # Where the group is now, and from then on every call: nothing missed or repeated. A big
        # cluster's objects are encoded a slice at a time, so the proxy keeps serving meanwhile.
        messages = _catch_up(self.group)
        self.workers.append(worker)
        await worker.catch_up(messages)
        return worker.pid

    def __len__(self) -> int:
        return len(self.workers)

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers if w.proc.returncode is None]

    def connections(self) -> dict[int, int]:
        """Per worker pid, the connections and flows it has reported."""
        return {w.pid: w.connections for w in self.workers}

    def _send(self, message: list[Any]) -> None:
        data = channel.frame(message)
        for w in self.workers:
            w.send(data)

    # ------------------------------------------------------------------ the group's calls

    def on_service(self, old: Any, new: Any) -> None:
        # the tracker takes a service from ``new`` alone, or from ``old`` when it is deleted
        self._send(["service", None if new is not None else channel.encode_object(old, metadata_only=True),
                    channel.encode_object(new)])

    def on_endpointslice(self, old: Any, new: Any) -> None:
        self._send(["slice", channel.encode_object(old, metadata_only=True), channel.encode_object(new)])

    def on_synced(self) -> None:
        self._send(["synced"])

    def add_node(self, node: NodeNetwork) -> None:
        self._send(channel.encode_node(node))

    def remove_node(self, name: str) -> None:
        self._send(["node-gone", name])

    def set_impairment(self, impairment: Impairment | None, *, service: ServiceKey | None, node: str | None) -> None:
        self._send(["impair", channel.encode_impairment(impairment), list(service) if service else None, node])

    async def settle(self) -> None:
        """Wait until every worker has applied all sent so far and reported its connections."""
        self._seq += 1
        loop = asyncio.get_running_loop()
        waits = []
        for w in self.workers:
            if w.writer.is_closing():
                continue
            future = w.settles[self._seq] = loop.create_future()
            w.send(channel.frame(["settle", self._seq]))
            waits.append(future)
        await asyncio.gather(*waits)

    async def close(self) -> None:
        await asyncio.gather(*(w.stop() for w in self.workers))


def _catch_up(group: Any) -> list[Callable[[], list[Any]]]:
    """The calls that bring a new worker to where ``group`` is now, each encoded when sent (the
    objects are immutable: what is taken now is what is sent)."""
    messages: list[Callable[[], list[Any]]] = [functools.partial(channel.encode_node, node)
                                               for node in group.nodes.values()]
    services, slices = group.tracker.objects()
    messages += [functools.partial(_added, "service", svc) for svc in services]
    messages += [functools.partial(_added, "slice", eps) for eps in slices]
    impairments = group.impairments
    messages += [_ready(["impair", channel.encode_impairment(imp), list(key), None])
                 for key, imp in impairments.by_service.items()]
    messages += [_ready(["impair", channel.encode_impairment(imp), None, node])
                 for node, imp in impairments.by_node.items()]
    if group.synced:
        messages.append(_ready(["synced"]))
    return messages


def _added(kind: str, obj: Any) -> list[Any]:
    return [kind, None, channel.encode_object(obj)]


def _ready(message: list[Any]) -> Callable[[], list[Any]]:
    """A message made already (small: nothing to spread over the loop's turns)."""
    return lambda: message


async def _start_one(group: Any, hello: bytes, *, env: Mapping[str, str], record: Callable[[int], None],
                     log_path: Path) -> _Worker:
    # Not spawn.start_helper: that runs a module of netemu's own directory first on the path
    # (``-I``), where netemu.proxy, installed from proxy/, is not; and the channel is a stream.
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)  # both close-on-exec
    try:
        with open(log_path, "ab") as logf:
            proc = await spawn(sys.executable, "-m", "netemu.proxy.worker", stdin=theirs, stdout=logf,
                               stderr=asyncio.subprocess.STDOUT, env={**os.environ, **env},
                               setup=cluster_child_setup(os.getpid(), record))
    except BaseException:
        mine.close()
        raise
    finally:
        theirs.close()
    reader, writer = await asyncio.open_connection(sock=mine)
    writer.write(hello)
    return _Worker(proc, reader, writer, group)
