"""The contract between the kubelet and the built-in image emulations.

Owns: ``ContainerContext`` (everything an emulation may know about its container and the only way
it may get sockets), the ``Emulation`` protocol, ``RunningEmulation`` (the sockets and tasks one
started container owns, how it ended, how it is stopped) and the listening helpers that turn bind
failures into ``NetemuError``s. ``resolve(image)`` picks the emulation for an image name.

Emulations run in-process on the cluster's event loop: no threads, no subprocesses. They get
sockets only through ``ctx.start_server`` / ``ctx.create_datagram_endpoint`` because a backend may
hand out sockets made inside network namespaces.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from netemu.errors import BackendError, ConflictError, InvalidError, NetemuError, NotFoundError
from netemu.fabric.base import bound_datagram_socket

logger = logging.getLogger(__name__)

StartServer = Callable[..., Awaitable[asyncio.AbstractServer]]
CreateDatagramEndpoint = Callable[..., Awaitable[tuple[Any, Any]]]
StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _default_datagram_endpoint(protocol_factory: Callable[[], asyncio.BaseProtocol],
                                     **kwargs: Any) -> tuple[Any, Any]:
    return await asyncio.get_running_loop().create_datagram_endpoint(protocol_factory, **kwargs)


def _plain_socket(family: int, type: int) -> socket.socket:
    sock = socket.socket(family, type)
    sock.setblocking(False)
    return sock


def _discard_line(line: str) -> None:
    logger.debug("container log: %s", line)


@dataclass(frozen=True)
class ContainerContext:
    """What an emulation knows about its container, and its only source of sockets."""

    pod_name: str
    namespace: str
    pod_ip: str
    hostname: str
    container_name: str
    image: str
    args: tuple[str, ...]                     # the container's args, after $(VAR) expansion
    env: Mapping[str, str]
    ports: tuple[tuple[str, int, str], ...]   # declared containerPorts: (name, port, protocol)
    log: Callable[[str], None]                # append one line to the container log
    start_server: StartServer                 # (client_connected_cb, host, port) -> server
    create_datagram_endpoint: CreateDatagramEndpoint  # (protocol_factory, local_addr=(h, p))
    # (family, type) -> a non-blocking socket in the pod's network, for connections it makes
    new_socket: Callable[[int, int], socket.socket] = _plain_socket
    # (host, port) -> a non-blocking UDP socket bound there in the pod's network, for a server
    # that reads its socket itself (the cluster DNS)
    datagram_socket: Callable[[tuple[str, int]], Awaitable[socket.socket]] = bound_datagram_socket

    @classmethod
    def plain(cls, *, pod_ip: str, image: str, pod_name: str = "pod", namespace: str = "default",
              hostname: str | None = None, container_name: str = "main",
              args: Sequence[str] = (), env: Mapping[str, str] | None = None,
              ports: Sequence[tuple[str, int, str]] = (),
              log: Callable[[str], None] | None = None) -> ContainerContext:
        """A context whose sockets come from plain asyncio calls (tests, loopback defaults)."""
        return cls(pod_name=pod_name, namespace=namespace, pod_ip=pod_ip,
                   hostname=hostname or pod_name, container_name=container_name, image=image,
                   args=tuple(args), env=dict(env or {}), ports=tuple(ports),
                   log=log or _discard_line, start_server=asyncio.start_server,
                   create_datagram_endpoint=_default_datagram_endpoint)

    def declared_ports(self, protocol: str = "TCP") -> tuple[int, ...]:
        """Declared containerPorts of one protocol, in order, without duplicates."""
        seen: dict[int, None] = {}
        for _name, port, proto in self.ports:
            if (proto or "TCP").upper() == protocol:
                seen.setdefault(port, None)
        return tuple(seen)


@dataclass(frozen=True)
class Listener:
    """One socket an emulation listens on (the port as bound, so port 0 reads back)."""

    protocol: str   # "TCP" or "UDP"
    host: str
    port: int


DRAIN_SECONDS = 1.0  # how long stop() lets connections in flight finish


class RunningEmulation:
    """One started container emulation.

    ``exited`` resolves with the exit code when the container ends by itself (``/exit`` on
    agnhost, a bad flag, a missing setting) and, after ``stop()``, with the code the real image
    exits with on its stop signal (``stop_code``); ``stopped_by_request`` tells the two apart.
    ``stop()`` closes every socket, cancels every task and is idempotent.
    ``exec_handler`` is reserved for in-process ``exec``; no built-in emulation sets it, so the
    kubelet runs exec commands as real processes.
    """

    def __init__(self, name: str, *, stop_code: int = 0) -> None:
        self.name = name
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.exec_handler: Callable[..., Awaitable[Any]] | None = None
        self.listeners: list[Listener] = []
        self.stopped_by_request = False
        self._stop_code = stop_code
        self._servers: list[asyncio.AbstractServer] = []
        self._transports: list[asyncio.BaseTransport] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._on_stop: list[Callable[[], None]] = []
        self._closing = False

    @property
    def closing(self) -> bool:
        return self._closing

    def add_server(self, server: asyncio.AbstractServer) -> None:
        self._servers.append(server)
        for sock in getattr(server, "sockets", None) or ():
            host, port = sock.getsockname()[:2]
            self.listeners.append(Listener("TCP", host, port))

    def add_datagram(self, transport: asyncio.BaseTransport) -> None:
        self._transports.append(transport)
        sockname = transport.get_extra_info("sockname")
        if sockname:
            self.listeners.append(Listener("UDP", sockname[0], sockname[1]))

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once when stopped by request (e.g. to log the shutdown lines)."""
        self._on_stop.append(callback)

    def port(self, protocol: str = "TCP") -> int:
        """The first bound port of a protocol (tests and logs)."""
        for listener in self.listeners:
            if listener.protocol == protocol:
                return listener.port
        raise NotFoundError(f"{self.name} listens on no {protocol} port")

    def exit(self, code: int) -> None:
        """The container ends by itself: close everything now, resolve ``exited``."""
        self._close()
        if not self.exited.done():
            self.exited.set_result(code & 0xFF)

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (up to ``DRAIN_SECONDS``: a server's
        graceful shutdown, so a connection the proxy handed over just before the endpoint was
        withdrawn still gets its answer), then close everything."""
        if not self._closing and not self.exited.done():
            self.stopped_by_request = True
            for callback in self._on_stop:
                callback()
            self._closing = True
            for server in self._servers:
                server.close()
            current = asyncio.current_task()
            in_flight = [t for t in self._tasks if t is not current]
            if in_flight:
                await asyncio.wait(in_flight, timeout=DRAIN_SECONDS)
            self._closing = False
        self._close()
        current = asyncio.current_task()
        pending = [t for t in self._tasks if t is not current]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        if not self.exited.done():
            self.exited.set_result(self._stop_code)

    def _close(self) -> None:
        if self._closing:
            return
        self._closing = True
        for server in self._servers:
            server.close()
        for transport in self._transports:
            transport.close()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)

    def _untrack(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)


class Emulation(Protocol):
    """A built-in stand-in for one container image."""

    name: str

    async def start(self, ctx: ContainerContext) -> RunningEmulation:
        """Start serving on ``ctx.pod_ip``; raise a ``NetemuError`` if a socket cannot be bound."""
        ...

    def real_program(self, args: Sequence[str]) -> tuple[str, ...] | None:
        """The argv the real image runs for these container args (no ``command:``), when that is
        a program rather than something this emulation plays (``busybox`` + ``args: [sleep, 1]``
        runs ``sleep 1``); None when the emulation handles the args itself."""
        ...


class EmulationBase:
    """Defaults shared by the emulations: args are theirs to interpret."""

    name = "emulation"

    def real_program(self, args: Sequence[str]) -> tuple[str, ...] | None:
        return None

    def label(self, ctx: ContainerContext) -> str:
        return f"{ctx.namespace}/{ctx.pod_name}/{ctx.container_name} ({self.name})"


def bind_error(what: str, protocol: str, host: str, port: int, exc: OSError) -> NetemuError:
    """Translate a failed bind into the error a user can act on."""
    where = f"{what}: cannot listen on {host}:{port}/{protocol}"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return InvalidError(f"{where}: permission denied (ports below 1024 need root or "
                            "CAP_NET_BIND_SERVICE)")
    if exc.errno == errno.EADDRINUSE:
        return ConflictError(f"{where}: address already in use")
    if exc.errno == errno.EADDRNOTAVAIL:
        return BackendError(f"{where}: address not available (is the pod IP configured?)")
    return BackendError(f"{where}: {exc.strerror or exc}")


async def listen_tcp(ctx: ContainerContext, running: RunningEmulation, port: int,
                     handler: StreamHandler, what: str) -> None:
    """Serve ``handler`` on ``ctx.pod_ip:port``; each connection is a task ``stop()`` cancels."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        running._track(task)
        try:
            await handler(reader, writer)
        except asyncio.CancelledError:
            # stop() cancels connections; end normally, since asyncio's stream callback in
            # Python 3.11 reports a cancelled connection task as an error
            pass
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception:  # a bug in one connection must not take the pod down
            logger.exception("%s: connection handler failed", what)
        finally:
            running._untrack(task)
            writer.close()

    try:
        server = await _opened(ctx.start_server(on_connect, ctx.pod_ip, port), lambda server: server.close())
    except OSError as exc:
        raise bind_error(what, "TCP", ctx.pod_ip, port, exc) from exc
    running.add_server(server)


async def _opened(opening: Awaitable[Any], close: Callable[[Any], None]) -> Any:
    """What ``opening`` opens (a listener); if the container's start is cancelled meanwhile (the
    pod deleted, the cluster stopping), the opening goes on and what it opens is closed at once
    rather than left for the garbage collector."""
    task = asyncio.ensure_future(opening)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(lambda t: close(t.result()) if not t.cancelled() and t.exception() is None else None)
        raise


async def listen_udp(ctx: ContainerContext, running: RunningEmulation, port: int,
                     protocol_factory: Callable[[], asyncio.DatagramProtocol], what: str) -> None:
    """Open a UDP socket on ``ctx.pod_ip:port`` owned by ``running``."""
    try:
        transport, _protocol = await _opened(ctx.create_datagram_endpoint(
            protocol_factory, local_addr=(ctx.pod_ip, port)), lambda opened: opened[0].close())
    except OSError as exc:
        raise bind_error(what, "UDP", ctx.pod_ip, port, exc) from exc
    running.add_datagram(transport)


async def start_or_roll_back(running: RunningEmulation,
                             steps: Sequence[Callable[[], Awaitable[None]]]) -> RunningEmulation:
    """Run the listen steps in order; on a failure close what was opened, then re-raise."""
    try:
        for step in steps:
            await step()
    except BaseException:
        await running.stop()
        raise
    return running


def format_hostport(host: str, port: int) -> str:
    """``ip:port`` as Go prints a net.Addr (IPv6 in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def resolve(image: str) -> Emulation | None:
    """The emulation for an image name, or None when netemu has none for it."""
    from netemu.images.registry import lookup  # the registry imports every emulation module

    return lookup(image)


__all__ = [
    "ContainerContext", "Emulation", "EmulationBase", "Listener", "RunningEmulation",
    "bind_error", "format_hostport", "listen_tcp", "listen_udp", "resolve", "start_or_roll_back",
]
