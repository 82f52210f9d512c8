"""The zero-copy relay's per-connection path: options set once on the listener and inherited,
the connect completed by a second connect instead of a readiness wait, one epoll registration
per socket, and the last direction's end closing both sockets without a shutdown of its own.

Each test runs a ``TCPListener`` of its own (no cluster) in front of a backend served by the same
event loop, on real loopback sockets.
"""
from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import socket
import struct
from typing import Any, Awaitable, Callable

import pytest
import uvloop

from netemu.proxy.connlog import OK, REFUSED, RESET, ConnectionRecord
from netemu.proxy.route import RelayContext, Route
from netemu.proxy.serviceport import Verdict
from netemu.proxy.sockopts import IP_TRANSPARENT
from netemu.proxy.splice import SpliceRelay, tune_for_relay
from netemu.proxy.tcp import TCPListener
from netemu.proxy.worker import SharedStackSockets

LOOPS = pytest.mark.parametrize("loop_factory", [uvloop.new_event_loop, None], ids=["uvloop", "asyncio"])
DEADLINE = 15.0  # seconds for anything that should happen at once

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def run(loop_factory: Any, main: Callable[[], Any]) -> Any:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(asyncio.wait_for(main(), DEADLINE * 2))


async def until(predicate: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not predicate():
        assert loop.time() < deadline, f"never: {what}"
        await asyncio.sleep(0.005)


class Relay:
    """A listener on 127.0.0.1 relaying to ``addresses`` in turn (the first, then each retry)."""

    def __init__(self, addresses: list[tuple[str, int]], source: str = "127.0.0.1") -> None:
        self.ctx = RelayContext(asyncio.get_running_loop(), SharedStackSockets(), dial_timeouts=(0.5, 0.5, 0.5),
                                shared_stack=True)
        self.addresses = addresses
        self.source = source
        self.records: list[ConnectionRecord] = []
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        self.address = sock.getsockname()
        self.listener = TCPListener(self.ctx, sock, self.dispatch)

    def dispatch(self, client: tuple[str, int]) -> Route:
        record = ConnectionRecord(client=client, service_port="default/test:80/TCP", frontend="cluster-ip",
                                  node="node-1")
        self.records.append(record)
        candidates = list(self.addresses)

        def retry(tried: list[tuple[str, int]]) -> tuple[str, int] | None:
            return next((a for a in candidates if a not in tried), None)
        return Route(Verdict.SERVE, record, address=candidates[0], source_ip=self.source, where="node-1",
                     retry=retry)

    def relays(self) -> list[SpliceRelay]:
        return [item for item in self.ctx.live if isinstance(item, SpliceRelay)]

    def close(self) -> None:
        self.ctx.close_all()
        self.listener.close()
        self.ctx.close()


async def backend(handler: Handler) -> tuple[asyncio.AbstractServer, tuple[str, int]]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[:2]


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    """Everything until a FIN; a reset fails the test (``read`` raises it)."""
    chunks = []
    while chunk := await reader.read(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def closed_port() -> tuple[str, int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()


# ---------------------------------------------------------------------------- options


@LOOPS
def test_the_listener_is_tuned_once_and_accepted_and_upstream_sockets_carry_the_options(loop_factory):
    async def main() -> None:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.read(100))
            await writer.drain()
            await reader.read()
            writer.close()
        server, address = await backend(echo)
        relay = Relay([address])
        with socket.socket() as probe:
            tune_for_relay(probe)
            tuned_buffer = probe.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        with socket.socket() as plain:
            default_buffer = plain.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert tuned_buffer != default_buffer
        try:
            listening = relay.listener.sock
            assert listening.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert listening.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == tuned_buffer
            reader, writer = await asyncio.open_connection(*relay.address)
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            (spliced,) = relay.relays()
            for sock in (spliced.client, spliced.upstream):  # the client's inherited from the listener
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == tuned_buffer
            writer.close()
            await until(lambda: relay.records[0].outcome == OK, "the connection recorded as ok")
        finally:
            relay.close()
            server.close()
    run(loop_factory, main)


# ---------------------------------------------------------------------------- connecting


@LOOPS
@pytest.mark.parametrize("source", ["127.0.0.1", "127.0.0.9"])
def test_the_backend_sees_the_source_whether_or_not_the_relay_binds_it(loop_factory, source):
    """127.0.0.1 is the address the kernel gives a connection to a 127.x backend anyway, so the
    relay does not bind it; another source address is bound. The backend sees each."""
    async def main() -> None:
        peers: list[str] = []

        async def note_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peers.append(writer.get_extra_info("peername")[0])
            writer.close()
        server, address = await backend(note_peer)
        relay = Relay([address], source=source)
        try:
            assert relay.ctx.kernel_source("node-1", address[0]) == "127.0.0.1"
            assert relay.ctx.sources == {address[0]: "127.0.0.1"}  # one stack: by address alone
            for _ in range(3):
                reader, writer = await asyncio.open_connection(*relay.address)
                assert await reader.read() == b""
                writer.close()
            assert peers == [source] * 3
        finally:
            relay.close()
            server.close()
    run(loop_factory, main)


class NotedBinds(socket.socket):
    """A real socket that notes each address it is asked to bind, and whether IP_TRANSPARENT
    was on by then."""

    binds: list[tuple[str, int]] = []

    def bind(self, address: Any) -> None:
        NotedBinds.binds.append((address[0], self.getsockopt(socket.SOL_IP, IP_TRANSPARENT)))
        super().bind(address)


@pytest.mark.skipif(os.geteuid() != 0, reason="IP_TRANSPARENT needs CAP_NET_ADMIN (make test runs as root)")
def test_an_address_found_not_local_is_bound_transparently_at_once_the_next_time() -> None:
    """A source the network does not own (a client pod's address, in a netns node) is bound with
    IP_TRANSPARENT after a plain bind is refused; the relay remembers it, so the next connection
    from there binds transparently at once instead of failing first."""
    async def main() -> None:
        ctx = RelayContext(asyncio.get_running_loop(), SharedStackSockets(), shared_stack=True)
        route = Route(Verdict.SERVE, None, source_ip="10.244.7.9", where="node-1")
        local = Route(Verdict.SERVE, None, source_ip="127.0.0.9", where="node-1")
        NotedBinds.binds = []
        made = [NotedBinds(socket.AF_INET, socket.SOCK_STREAM) for _ in range(3)]
        try:
            for sock, how in zip(made, (route, route, local)):
                ctx.bind_upstream(sock, how, ("127.0.0.1", 80), stream=True)
            assert NotedBinds.binds == [("10.244.7.9", 0), ("10.244.7.9", 1),  # refused, then transparent
                                        ("10.244.7.9", 1),                     # transparent at once
                                        ("127.0.0.9", 0)]                      # local: plain
            assert ctx.foreign == {("node-1", "10.244.7.9")}
            assert made[1].getsockname()[0] == "10.244.7.9"
        finally:
            for sock in made:
                sock.close()
            ctx.close()
    run(None, main)


@LOOPS
def test_a_refused_endpoint_moves_on_at_once_and_none_left_resets_the_client(loop_factory):
    async def main() -> None:
        async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"hello")
            writer.close()
        server, address = await backend(hello)
        dead = closed_port()
        relay, hopeless = Relay([dead, address]), Relay([dead])
        try:
            reader, writer = await asyncio.open_connection(*relay.address)
            assert await read_to_eof(reader) == b"hello"
            writer.close()
            await until(lambda: relay.records[0].outcome == OK, "the retried connection recorded as ok")
            assert relay.records[0].bytes_down == 5

            with pytest.raises(ConnectionResetError):  # while connecting or at the first read
                reader, writer = await asyncio.open_connection(*hopeless.address)
                await read_to_eof(reader)
            assert hopeless.records[0].outcome == REFUSED
            assert not hopeless.ctx.live
        finally:
            relay.close()
            hopeless.close()
            server.close()
    run(loop_factory, main)


# ---------------------------------------------------------------------------- ends


@LOOPS
def test_a_short_connection_ends_with_fins_and_leaves_nothing_watched(loop_factory):
    """The common case of a ``Connection: close`` request: the backend answers and closes, the
    client reads to EOF and closes; the relay's last direction then closes both sockets. An
    ended relay is freed at once (no reference cycle is left for the collector)."""
    async def main() -> None:
        backend_saw: list[bytes] = []

        async def answer_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            backend_saw.append(await reader.readexactly(7))
            writer.write(b"answer")
            await writer.drain()
            writer.close()
        server, address = await backend(answer_and_close)
        relay = Relay([address])
        try:
            for n in range(20):
                reader, writer = await asyncio.open_connection(*relay.address)
                writer.write(b"request")
                assert await read_to_eof(reader) == b"answer"
                writer.close()
                await until(lambda: relay.records[n].outcome is not None, "the relay ended")
                assert (relay.records[n].outcome, relay.records[n].bytes_up, relay.records[n].bytes_down) == \
                    (OK, 7, 6)
            assert backend_saw == [b"request"] * 20
            assert not relay.ctx.live
            assert len(relay.ctx.poller) == 1  # the listener only
            assert not [o for o in gc.get_objects() if isinstance(o, SpliceRelay)]
        finally:
            relay.close()
            server.close()
    gc.collect()
    gc.disable()
    try:
        run(loop_factory, main)
    finally:
        gc.enable()


@LOOPS
@pytest.mark.parametrize("first", ["client", "backend"])
def test_half_close_either_way_first_is_byte_exact(loop_factory, first):
    """Megabytes each way, one side ending its direction first while the other keeps sending:
    the relay's first EOF becomes a shutdown, the second closes both, and nothing is reset."""
    up, down = os.urandom(3 << 20), os.urandom(2 << 20)
    backend_got: list[bytes] = []

    async def main() -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if first == "client":          # read the whole request, then answer and close
                backend_got.append(await read_to_eof(reader))
                writer.write(down)
                await writer.drain()
                writer.close()
            else:                          # speak first and half-close, then read to the end
                writer.write(down)
                writer.write_eof()
                backend_got.append(await read_to_eof(reader))
                writer.close()
        server, address = await backend(serve)
        relay = Relay([address])
        try:
            reader, writer = await asyncio.open_connection(*relay.address)
            if first == "client":
                writer.write(up)
                writer.write_eof()
                got = await read_to_eof(reader)
            else:
                got = await read_to_eof(reader)
                writer.write(up)
                writer.write_eof()
                await writer.drain()
                assert await reader.read() == b""
            writer.close()
            await until(lambda: relay.records[0].outcome is not None, "the relay ended")
            record = relay.records[0]
            assert (record.outcome, record.bytes_up, record.bytes_down) == (OK, len(up), len(down))
            assert hashlib.sha256(got).digest() == hashlib.sha256(down).digest()
            await until(lambda: bool(backend_got), "the backend read to its EOF")
            assert hashlib.sha256(backend_got[0]).digest() == hashlib.sha256(up).digest()
            assert not relay.ctx.live and len(relay.ctx.poller) == 1
        finally:
            relay.close()
            server.close()
    run(loop_factory, main)


@LOOPS
@pytest.mark.parametrize("when", ["after the relay saw the FIN", "with the FIN"])
def test_a_reset_after_the_clients_fin_reaches_the_backend_as_a_reset(loop_factory, when):
    """A client that half-closes and then resets (SO_LINGER 0): the backend, still sending, sees
    its connection reset, as through a DNAT, whether the reset reaches the relay after it relayed
    the FIN or together with it (splice reads EOF either way; the error watch meets the reset)."""
    async def main() -> None:
        backend_eof = asyncio.Event()
        backend_reset: list[BaseException] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await read_to_eof(reader)  # the reset may come before the EOF's shutdown does
                backend_eof.set()
                while True:  # keep talking until the reset comes through
                    writer.write(b"x" * 1024)
                    await writer.drain()
                    await asyncio.sleep(0.005)
            except ConnectionError as exc:
                backend_reset.append(exc)
            finally:
                writer.close()
        server, address = await backend(serve)
        relay = Relay([address])
        try:
            client = socket.create_connection(relay.address)
            client.sendall(b"request")
            client.shutdown(socket.SHUT_WR)
            if when == "after the relay saw the FIN":
                await asyncio.wait_for(backend_eof.wait(), DEADLINE)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            await until(lambda: bool(backend_reset), "the backend's connection reset")
            await until(lambda: relay.records[0].outcome is not None, "the relay ended")
            assert relay.records[0].outcome == RESET
            assert not relay.ctx.live and len(relay.ctx.poller) == 1
        finally:
            relay.close()
            server.close()
    run(loop_factory, main)

