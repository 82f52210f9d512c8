"""The wildcard-bind guard's look at the kernel (``netemu.kubelet.sockets``): sock_diag with a
filter answers with the namespace's wildcard TCP listeners and nothing else, agrees with
/proc/net/tcp, and says which of them a process holds."""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

import pytest

from netemu.kubelet import sockets


def _inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


@pytest.fixture
def listeners():
    """A wildcard listener on IPv4 and on IPv6, one on 127.0.0.1 with 20 connections to it."""
    opened: list[socket.socket] = []
    try:
        wild4 = socket.socket()
        opened.append(wild4)
        wild4.bind(("0.0.0.0", 0))
        wild4.listen()
        wild6 = socket.socket(socket.AF_INET6)
        opened.append(wild6)
        wild6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        wild6.bind(("::", 0))
        wild6.listen()
        local = socket.socket()
        opened.append(local)
        local.bind(("127.0.0.1", 0))
        local.listen(64)
        for _ in range(20):
            opened.append(socket.create_connection(local.getsockname()))
            opened.append(local.accept()[0])
        yield wild4, wild6, local, opened[3:]
    finally:
        for sock in opened:
            sock.close()


def test_sock_diag_answers_with_wildcard_listeners_only(listeners) -> None:
    wild4, wild6, local, connections = listeners
    found = sockets._wildcard_sockets_diag()
    assert found[_inode(wild4)] == f"0.0.0.0:{wild4.getsockname()[1]}"
    assert found[_inode(wild6)] == f"[::]:{wild6.getsockname()[1]}"
    assert not {_inode(s) for s in [local, *connections]} & found.keys()


def test_sock_diag_and_proc_net_tcp_agree(listeners) -> None:
    assert sockets._wildcard_sockets_diag() == sockets._wildcard_sockets_proc()


def test_the_listeners_a_process_holds(listeners) -> None:
    wild4, wild6, _, _ = listeners
    held = sockets.wildcard_listeners(os.getpid())
    assert f"0.0.0.0:{wild4.getsockname()[1]}" in held and f"[::]:{wild6.getsockname()[1]}" in held
    with subprocess.Popen(["sleep", "60"]) as sleeper:  # holds none: the guard leaves it alone
        try:
            assert sockets.wildcard_listeners(sleeper.pid) == []
        finally:
            sleeper.kill()


def test_a_listener_held_by_a_child_process_counts() -> None:
    program = ("import socket, sys; s = socket.socket(); s.bind(('0.0.0.0', 0)); s.listen(); "
               "print(s.getsockname()[1], flush=True); sys.stdin.read()")
    # the listener is the shell's child's; leaving the block closes its standard input, so it ends
    with subprocess.Popen(["sh", "-c", f'{sys.executable} -c "{program}"; :'], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as parent:
        port = int(parent.stdout.readline())
        assert sockets.wildcard_listeners(parent.pid) == [f"0.0.0.0:{port}"]


def test_without_sock_diag_proc_net_tcp_is_read(listeners, monkeypatch) -> None:
    wild4, _, _, _ = listeners
    monkeypatch.setattr(sockets, "NETLINK_SOCK_DIAG", 31)  # a netlink family no kernel has: refused
    monkeypatch.setattr(sockets, "_sock_diag_works", True)
    assert f"0.0.0.0:{wild4.getsockname()[1]}" in sockets.wildcard_listeners(os.getpid())
    assert sockets._sock_diag_works is False


def test_one_look_per_turn_of_the_loop(listeners) -> None:
    """The guards whose checks fall due in one turn of the event loop share one look; the next
    turn looks again and sees a listener opened meanwhile."""
    wild4, _, _, _ = listeners

    async def main() -> None:
        first = sockets.wildcard_sockets_this_turn()
        assert sockets.wildcard_sockets_this_turn() is first
        assert _inode(wild4) in await first
        with socket.socket() as later:
            later.bind(("0.0.0.0", 0))
            later.listen()
            assert _inode(later) not in await sockets.wildcard_sockets_this_turn()  # still this turn
            await asyncio.sleep(0)
            again = sockets.wildcard_sockets_this_turn()
            assert again is not first and _inode(later) in await again

    asyncio.run(main())
