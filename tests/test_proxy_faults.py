"""The proxy under client and backend faults: whatever one end of a relayed connection does (FIN,
RST with or without data in flight, RST in the middle of a download, half-close then silence or
then RST, idling, a backend's RST), the relay lets go of both of its sockets, and the cluster
process's descriptors return to what they were. Also the poller that makes errors reach the
relays on every event loop.

The backend is a real process in a real pod behind a real Service of a cluster on the loopback
backend; the clients are plain blocking sockets in a thread. Each case runs on uvloop (what netemu
runs on, and where an error on a socket watched with ``add_reader`` used to silence the watch for
good) and on asyncio's loop, through the zero-copy relay and through the shaped one (a delayed
service). Descriptors are counted in ``/proc/self/fd``: the cluster runs in this process. The
poll for the baseline gives up after a generous deadline; that deadline tells a leak from a
relay that is merely still closing, not how fast the proxy is.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import time
from typing import Any, Callable

import pytest
import uvloop

import netemu
from netemu.proxy.poller import Poller

CLIENTS = 8                # connections per case
DOWNLOAD_SEEN = 256 * 1024  # bytes a downloading client reads before it resets
LEAK_DEADLINE = 15.0       # seconds: a relay still open after this has leaked
LOOPS = pytest.mark.parametrize("loop_factory", [uvloop.new_event_loop, None], ids=["uvloop", "asyncio"])
RELAYS = pytest.mark.parametrize("delay", [0.0, 0.001], ids=["zero-copy", "shaped"])

# Per connection: a first read says what the client wants. "download": send until the peer goes
# away. "reset": answer with RST at once. "hold": read until EOF (or a reset), then keep the
# connection open without a word. Anything else: read until EOF (or a reset), then close.
BACKEND = r"""
import socket, struct, sys, threading, time
server = socket.create_server((sys.argv[1], 7000), backlog=256)
def serve(conn):
    with conn:
        try:
            data = conn.recv(65536)
            if data.startswith(b"download"):
                chunk = b"d" * 65536
                while True:
                    conn.sendall(chunk)
            if data.startswith(b"reset"):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            hold = data.startswith(b"hold")
            while data:
                data = conn.recv(65536)
            if hold:
                time.sleep(3600)
        except OSError:
            pass
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""

SINK = f"""
apiVersion: v1
kind: Pod
metadata: {{name: sink, labels: {{app: sink}}}}
spec:
  containers:
  - name: main
    image: python
    command: {json.dumps(["python3", "-c", BACKEND, "$(POD_IP)"])}
    readinessProbe: {{tcpSocket: {{port: 7000}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: sink}}
spec:
  selector: {{app: sink}}
  ports: [{{port: 80, targetPort: 7000}}]
"""


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def reset_close(sock: socket.socket) -> None:
    """Close with RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# ---------------------------------------------------------------------------- client behaviours
# Each takes the service address and returns the sockets it still holds (closed after the check).

def connect_then_reset(address: tuple[str, int]) -> list[socket.socket]:
    for _ in range(CLIENTS):
        reset_close(socket.create_connection(address, timeout=10))
    return []


def send_then_reset(address: tuple[str, int]) -> list[socket.socket]:
    for _ in range(CLIENTS):
        sock = socket.create_connection(address, timeout=10)
        sock.sendall(b"x" * 100_000)
        reset_close(sock)
    return []


def half_close_then_reset(address: tuple[str, int]) -> list[socket.socket]:
    """Send, shut the sending side, then reset, to a backend that holds its side open after EOF:
    the relay must pass the reset on (a FIN alone leaves the backend's side open, and the relay's
    with it), whether the reset comes with the FIN or after the relay has passed the FIN on."""
    for _ in range(CLIENTS):
        sock = socket.create_connection(address, timeout=10)
        sock.sendall(b"hold" + b"x" * 100_000)
        sock.shutdown(socket.SHUT_WR)
        reset_close(sock)
    return []


def reset_mid_download(address: tuple[str, int]) -> list[socket.socket]:
    for _ in range(CLIENTS):
        sock = socket.create_connection(address, timeout=10)
        sock.sendall(b"download")
        seen = 0
        while seen < DOWNLOAD_SEEN:
            data = sock.recv(65536)
            assert data, "the backend's download ended early"
            seen += len(data)
        reset_close(sock)
    return []


def send_then_close(address: tuple[str, int]) -> list[socket.socket]:
    for _ in range(CLIENTS):
        with socket.create_connection(address, timeout=10) as sock:
            sock.sendall(b"x" * 100_000)
    return []


def half_close_then_stall(address: tuple[str, int]) -> list[socket.socket]:
    """Send, shut the sending side, then neither read nor close while the check runs."""
    held = []
    for _ in range(CLIENTS):
        sock = socket.create_connection(address, timeout=10)
        sock.sendall(b"x" * 100_000)
        sock.shutdown(socket.SHUT_WR)
        held.append(sock)
    return held


def backend_resets_while_client_waits(address: tuple[str, int]) -> list[socket.socket]:
    """The backend resets; the client neither reads nor closes while the check runs."""
    held = []
    for _ in range(CLIENTS):
        sock = socket.create_connection(address, timeout=10)
        sock.sendall(b"reset")
        held.append(sock)
    return held


BEHAVIOURS: dict[str, Callable[[tuple[str, int]], list[socket.socket]]] = {
    "connect+RST": connect_then_reset,
    "data+RST": send_then_reset,
    "half-close+RST": half_close_then_reset,
    "download+RST": reset_mid_download,
    "FIN": send_then_close,
    "half-close+stall": half_close_then_stall,
    "backend-RST": backend_resets_while_client_waits,
}


# ---------------------------------------------------------------------------- the poller

def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected (client, server side) pair on loopback; the server side is non-blocking."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    server.setblocking(False)
    return client, server


async def until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + LEAK_DEADLINE
    while not predicate():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.01)


@LOOPS
def test_the_poller_wakes_a_reader_when_its_peer_resets(loop_factory):
    """uvloop's own add_reader never calls the reader again after an error on the descriptor."""
    async def main() -> None:
        poller = Poller(asyncio.get_running_loop())
        client, server = tcp_pair()
        seen: list[Any] = []

        def readable() -> None:
            try:
                seen.append(server.recv(100))
            except OSError as exc:
                seen.append(type(exc))
                poller.forget(server.fileno())
        try:
            poller.add_reader(server.fileno(), readable)
            client.sendall(b"data")
            reset_close(client)
            await until(lambda: ConnectionResetError in seen, "the reader met the reset")
            assert seen[0] == b"data"
        finally:
            poller.close()
            server.close()
    run(loop_factory, main)


@LOOPS
@pytest.mark.parametrize("fin", [True, False], ids=["data and FIN", "data alone"])
def test_a_watched_socket_whose_peer_sent_data_and_its_fin_is_read_to_the_eof_in_one_wake_up(loop_factory, fin):
    """``Poller.watch`` (a relay's socket) asks for EPOLLRDHUP: when the data and the peer's FIN
    are both there, the reader is called again at once and meets the EOF, one wake-up instead of
    two; data alone calls it once."""
    async def main() -> None:
        poller = Poller(asyncio.get_running_loop())
        client, server = tcp_pair()
        reads: list[tuple[int, bytes]] = []  # (events the poller has handled, what one call read)

        def readable() -> None:
            data = server.recv(100)
            reads.append((poller.events, data))
            if not data:
                poller.forget(server.fileno())
        try:
            poller.watch(server.fileno(), readable, lambda: None)
            client.sendall(b"answer")
            if fin:
                client.shutdown(socket.SHUT_WR)
            await until(lambda: bool(reads), "the reader was called")
            if fin:
                assert reads == [(1, b"answer"), (1, b"")]
            else:
                assert reads == [(1, b"answer")]
        finally:
            poller.close()
            server.close()
            client.close()
    run(loop_factory, main)


@LOOPS
def test_the_poller_reports_errors_and_hang_ups_that_nothing_reads(loop_factory):
    async def main() -> None:
        poller = Poller(asyncio.get_running_loop())
        reset_client, reset_side = tcp_pair()
        closing_client, closed_side = tcp_pair()
        calls = {"reset": 0, "hang-up": 0}
        try:
            poller.watch_errors(reset_side.fileno(), lambda: calls.__setitem__("reset", calls["reset"] + 1))
            poller.watch_errors(closed_side.fileno(), lambda: calls.__setitem__("hang-up", calls["hang-up"] + 1))
            reset_close(reset_client)
            await until(lambda: calls["reset"], "the reset reported")
            assert reset_side.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0
            poller.forget(reset_side.fileno())
            closed_side.shutdown(socket.SHUT_WR)  # both directions shut: a hang-up, no error
            closing_client.close()
            await until(lambda: calls["hang-up"], "the hang-up reported")
            for _ in range(20):  # reported once, not on every turn of the loop
                await asyncio.sleep(0)
            assert calls == {"reset": 1, "hang-up": 1}
        finally:
            poller.close()
            reset_side.close()
            closed_side.close()
    run(loop_factory, main)


@LOOPS
def test_a_closed_descriptors_events_never_unwatch_the_socket_that_takes_its_number(loop_factory):
    """A relay closes its sockets without telling epoll (``Poller.closing``). Should a forked child
    hold one of them a moment longer, epoll goes on reporting it under the old number, which a new
    socket may have taken; a hang-up reported so must not end the new socket's watch."""
    async def main() -> None:
        poller = Poller(asyncio.get_running_loop())
        old_client, old_side = tcp_pair()
        number = old_side.fileno()
        poller.watch_errors(number, lambda: None)
        held = socket.socket(fileno=os.dup(number))  # the child's copy
        poller.closing(number)
        old_side.close()
        new_client, new_side = tcp_pair()
        new_side = socket.socket(fileno=os.dup2(new_side.detach(), number))  # the new socket under that number
        errors: list[int] = []
        try:
            poller.watch_errors(number, lambda: errors.append(new_side.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)))
            held.shutdown(socket.SHUT_WR)
            old_client.close()  # the old socket hangs up: reported under ``number``
            await until(lambda: errors, "the old socket's hang-up reported under its number")
            held.close()  # the child lets go: the old socket leaves the epoll set
            reset_close(new_client)
            await until(lambda: any(errors), "the new socket's reset reported")
        finally:
            poller.close()
            new_side.close()
            held.close()
    run(loop_factory, main)


# ---------------------------------------------------------------------------- harness

def run(loop_factory: Any, main: Callable[[], Any]) -> Any:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())


async def sink_cluster(name: str, delay: float) -> netemu.Cluster:
    cluster = netemu.Cluster(nodes=1, name=name, dns_upstreams=(),
                             restart_backoff=0.2, restart_backoff_max=1.0)
    await cluster.start()
    try:
        await cluster.apply(SINK)
        await cluster.wait_ready(timeout=30)
        if delay:
            cluster.impair(service="sink", delay=delay)
    except BaseException:
        await cluster.stop()
        raise
    return cluster


async def settle_to(baseline: int, what: str) -> None:
    """Poll until this process holds no more descriptors than ``baseline``."""
    deadline = time.monotonic() + LEAK_DEADLINE
    while (now := open_fds()) > baseline:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: {now - baseline} descriptors still open after {LEAK_DEADLINE:g}s "
                                 f"({baseline} before, {now} now)")
        await asyncio.sleep(0.05)


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


# ---------------------------------------------------------------------------- tests

@LOOPS
@RELAYS
@pytest.mark.parametrize("behaviour", list(BEHAVIOURS))
def test_every_client_behaviour_releases_both_ends(loop_factory, delay, behaviour, tmp_path, monkeypatch):
    monkeypatch.setenv("NETEMU_STATE_DIR", str(tmp_path / "state"))

    async def main() -> None:
        cluster = await sink_cluster("faults", delay)
        try:
            address = (cluster.get("Service", "sink").spec.cluster_ip, 80)
            baseline = open_fds()
            held = await asyncio.to_thread(BEHAVIOURS[behaviour], address)
            try:  # the sockets the clients still hold are this process's too
                await settle_to(baseline + len(held), behaviour)
            finally:
                close_all(held)
        finally:
            await cluster.stop()

    run(loop_factory, main)


@LOOPS
def test_idle_clients_that_close_release_their_relays(loop_factory, tmp_path, monkeypatch):
    """Connections held idle until each is relayed, then closed."""
    monkeypatch.setenv("NETEMU_STATE_DIR", str(tmp_path / "state"))

    async def main() -> None:
        cluster = await sink_cluster("idle", 0.0)
        try:
            address = (cluster.get("Service", "sink").spec.cluster_ip, 80)
            baseline = open_fds()
            held = [await asyncio.to_thread(socket.create_connection, address, 10) for _ in range(CLIENTS)]
            try:
                deadline = time.monotonic() + LEAK_DEADLINE
                # counted as relays, not descriptors: a probe's socket open when ``baseline`` was
                # taken would leave the count one short for ever
                while len([item for item in cluster.proxy.ctx.live if hasattr(item, "upstream")]) < CLIENTS:
                    assert time.monotonic() < deadline, "the idle connections were never relayed"
                    await asyncio.sleep(0.05)
            finally:
                close_all(held)
            await settle_to(baseline, "idle then close")
        finally:
            await cluster.stop()

    run(loop_factory, main)
