"""Which wildcard addresses a container's processes listen on.

On the loopback backend every pod shares the host's network stack, so a program that binds the
wildcard address (0.0.0.0 or ::) would take the port on every pod IP at once. The kubelet catches
that (``wildcard_sockets_this_turn``, then ``held_listeners`` for a container's processes) and
reports it plainly instead of letting pods collide.

The kernel is asked for the wildcard TCP listeners of the network namespace with sock_diag
(``NETLINK_SOCK_DIAG``, as ``ss -lt 'src 0.0.0.0'`` does): the request asks for listening sockets
only and carries a filter (inet_diag bytecode) that keeps those bound to 0.0.0.0 or ::, so the
answer holds a handful of sockets whatever else the host has open, and the kernel does not walk
the connections at all. Only when there is such a listener are the container's descriptors read,
to see whether it holds one. pyroute2's ``DiagSocket`` sends no filter, so the request is packed
here. Where sock_diag is not there (a sandbox without it), /proc/net/tcp and tcp6 are read
instead: they list every TCP socket of the host, TIME_WAIT included, which under a load of short
connections is 100,000s of lines for every check.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from typing import Iterable

log = logging.getLogger(__name__)

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_INET_DIAG_REQ_BYTECODE = 1
_INET_DIAG_BC_S_COND = 7
_TCP_LISTEN = 10

_HEADER = struct.Struct("=IHHII")                 # nlmsghdr: length, type, flags, sequence, port id
_REQUEST = struct.Struct("=BBBBI48x")             # inet_diag_req_v2, its socket id left zero
_OP = struct.Struct("=BBH")                       # inet_diag_bc_op: code, yes, no
_HOSTCOND = struct.Struct("=BBxxi")               # inet_diag_hostcond: family, prefix length, port
_ATTR = struct.Struct("=HH")                      # rtattr: length, type
_PORT = struct.Struct(">H")
_INODE = struct.Struct("=I")
_INODE_OFFSET = 68                                # of idiag_inode in inet_diag_msg
_WILDCARDS = ((socket.AF_INET, bytes(4), "0.0.0.0:{}"), (socket.AF_INET6, bytes(16), "[::]:{}"))

_sock_diag_works = True                           # until the kernel says otherwise
_turn: "tuple[asyncio.AbstractEventLoop, asyncio.Future[dict[int, str]]] | None" = None  # this turn's look


def _request(family: int, address: bytes, sequence: int) -> bytes:
    """A dump request for TCP listeners of ``family`` bound to exactly ``address``."""
    cond = _HOSTCOND.pack(family, 8 * len(address), -1) + address
    yes = _OP.size + len(cond)
    bytecode = _OP.pack(_INET_DIAG_BC_S_COND, yes, yes + 4) + cond  # no: past the end, rejected
    body = (_REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN)
            + _ATTR.pack(_ATTR.size + len(bytecode), _INET_DIAG_REQ_BYTECODE) + bytecode)
    return _HEADER.pack(_HEADER.size + len(body), SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP,
                        sequence, 0) + body


def _dump(sock: socket.socket, request: bytes, template: str, found: dict[int, str]) -> None:
    """Send one dump request and add each socket of the answer to ``found`` (inode: host:port)."""
    sock.send(request)
    while True:
        data = sock.recv(65536)
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, kind = _HEADER.unpack_from(data, offset)[:2]
            if kind == _NLMSG_DONE:
                return
            if kind == _NLMSG_ERROR:
                err = -struct.unpack_from("=i", data, offset + _HEADER.size)[0]
                if not err:  # an acknowledgement: nothing more comes
                    return
                raise OSError(err, os.strerror(err))
            body = offset + _HEADER.size
            port = _PORT.unpack_from(data, body + 4)[0]
            found[_INODE.unpack_from(data, body + _INODE_OFFSET)[0]] = template.format(port)
            offset += (length + 3) & ~3


def _wildcard_sockets_diag() -> dict[int, str]:
    found: dict[int, str] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG) as sock:
        for sequence, (family, address, template) in enumerate(_WILDCARDS, 1):
            _dump(sock, _request(family, address, sequence), template, found)
    return found


def _wildcard_sockets_proc() -> dict[int, str]:
    found: dict[int, str] = {}
    for (_, address, template), path in zip(_WILDCARDS, ("/proc/net/tcp", "/proc/net/tcp6")):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] != "0A":  # TCP_LISTEN
                        continue
                    host, port = fields[1].split(":")
                    if int(host, 16) == 0:
                        found[int(fields[9])] = template.format(int(port, 16))
        except OSError:
            pass
    return found


def wildcard_sockets_this_turn() -> "asyncio.Future[dict[int, str]]":
    """``wildcard_sockets`` as a future shared by every caller during one turn of the running
    event loop: the guards of all the containers whose checks fall due together (a thousand
    process pods start within seconds, each checked six times in its first five) share one look,
    a fact about the network namespace that every cluster of this process shares. With sock_diag
    the look is made at once, on the loop: it costs less than handing it to a thread. Reading
    /proc/net/tcp instead is done in a thread."""
    global _turn
    loop = asyncio.get_running_loop()
    if _turn is not None and _turn[0] is loop:
        return _turn[1]
    if _sock_diag_works:  # should the kernel refuse it now, the /proc read it falls back to is made here, once
        future: asyncio.Future[dict[int, str]] = loop.create_future()
        future.set_result(wildcard_sockets())
    else:
        future = asyncio.ensure_future(asyncio.to_thread(_wildcard_sockets_proc))
    _turn = (loop, future)
    loop.call_soon(_end_turn, future)
    return future


def _end_turn(future: "asyncio.Future[dict[int, str]]") -> None:
    global _turn
    if _turn is not None and _turn[1] is future:
        _turn = None


def wildcard_sockets() -> dict[int, str]:
    """The TCP sockets of this network namespace listening on 0.0.0.0 or ::, by inode:
    ``0.0.0.0:PORT`` or ``[::]:PORT``."""
    global _sock_diag_works
    if _sock_diag_works:
        try:
            return _wildcard_sockets_diag()
        except OSError as exc:
            log.debug("sock_diag: %s; reading /proc/net/tcp instead", exc)
            _sock_diag_works = False
    return _wildcard_sockets_proc()


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return out


def _socket_inodes(pids: Iterable[int]) -> set[int]:
    inodes = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def wildcard_listeners(pid: int) -> list[str]:
    """``host:port`` of every wildcard TCP listener held by ``pid`` or its descendants."""
    return held_listeners(pid, wildcard_sockets())


def held_listeners(pid: int, listening: dict[int, str]) -> list[str]:
    """Which of ``listening`` (``wildcard_sockets``) ``pid`` or its descendants hold."""
    if not listening:
        return []
    held = _socket_inodes(_descendants(pid))
    return [where for inode, where in listening.items() if inode in held]
