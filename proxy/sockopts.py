"""Socket options the proxy relies on: source-address filters, source binding, resets.

**Dropping by source.** iptables DROPs traffic to a ``Local``-policy service on a node without a
local endpoint: the client's SYN is never answered and the client times out. A userspace
listener cannot refuse a SYN it has accepted, but a classic BPF socket filter
(``SO_ATTACH_FILTER``) on the listening socket runs on every packet before TCP sees it, SYNs
included: a packet the filter drops is as lost as one iptables drops, and the client retries its
SYN until it gives up. The same filter on a UDP socket drops datagrams. Accepted connections
inherit the filter they were accepted under, so changing a listener's filter never touches
established connections. ``source_filter`` builds the program from address ranges.

**Source address.** The upstream socket is bound to the address the backend should see before it
connects; ``IP_BIND_ADDRESS_NO_PORT`` defers the port choice to connect time, so one source
address can open as many connections as there are distinct 4-tuples. When the address is not
local (netns backend) ``IP_TRANSPARENT`` is tried.
"""
from __future__ import annotations

import ctypes
import errno
import ipaddress
import logging
import socket
import struct
from typing import Any, Iterable

from netemu.errors import ProxyError

log = logging.getLogger(__name__)

SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
SO_DETACH_FILTER = getattr(socket, "SO_DETACH_FILTER", 27)
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
_LINGER_RESET = struct.pack("ii", 1, 0)

# classic BPF opcodes (linux/filter.h)
_LD_W_ABS = 0x00 | 0x00 | 0x20   # BPF_LD | BPF_W | BPF_ABS
_ALU_AND_K = 0x04 | 0x50 | 0x00  # BPF_ALU | BPF_AND | BPF_K
_JEQ_K = 0x05 | 0x10 | 0x00      # BPF_JMP | BPF_JEQ | BPF_K
_RET_K = 0x06 | 0x00             # BPF_RET | BPF_K
_SKF_NET_OFF = -0x100000 & 0xFFFFFFFF  # loads relative to the network (IP) header
_IP_SRC = _SKF_NET_OFF + 12
_ACCEPT, _DROP = 0xFFFFFFFF, 0
_MAX_INSNS = 4096

Net = tuple[int, int]  # (network address, netmask) as integers


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def parse_nets(cidrs: Iterable[str]) -> list[Net]:
    nets = [ipaddress.IPv4Network(c, strict=False) for c in cidrs]
    return [(int(n.network_address), int(n.netmask)) for n in nets]


def drop_all_filter() -> bytes:
    return _insn(_RET_K, 0, 0, _DROP)


def source_filter(nets: list[Net], *, drop_listed: bool) -> bytes:
    """A program that drops packets whose IPv4 source is in ``nets`` (``drop_listed``) or, the
    other way round, accepts only those."""
    if 4 * len(nets) + 1 > _MAX_INSNS:
        raise ProxyError(f"source filter: too many address ranges ({len(nets)})")
    on_match, otherwise = (_DROP, _ACCEPT) if drop_listed else (_ACCEPT, _DROP)
    body = []
    for net, mask in nets:  # jump offsets are 8-bit, so each range decides on its own
        body += [_insn(_LD_W_ABS, 0, 0, _IP_SRC),
                 _insn(_ALU_AND_K, 0, 0, mask),
                 _insn(_JEQ_K, 0, 1, net),
                 _insn(_RET_K, 0, 0, on_match)]
    return b"".join(body) + _insn(_RET_K, 0, 0, otherwise)


def attach_filter(sock: Any, program: bytes | None) -> None:
    """Attach ``program`` to ``sock`` (replacing any), or detach with None."""
    if program is None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
        return
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)  # the kernel copies the program


def bind_source(sock: socket.socket, ip: str, *, stream: bool, transparent: bool = False) -> bool:
    """Bind ``sock`` to ``ip`` (for a stream, the port is chosen at connect time) so the peer
    sees that address; with IP_TRANSPARENT when the address is not local, or at once when the
    caller knows it is not (``transparent``). True when the bind was transparent."""
    if stream:
        sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    if not transparent:
        try:
            sock.bind((ip, 0))
            return False
        except OSError as exc:
            if exc.errno != errno.EADDRNOTAVAIL:
                raise
    sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
    sock.bind((ip, 0))
    return True


def reset(transport: Any) -> None:
    """Close a TCP transport with RST (SO_LINGER 0) instead of FIN."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass
    transport.abort()


def reset_socket(sock: socket.socket) -> None:
    """Close a TCP socket with RST (SO_LINGER 0) instead of FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    except OSError:
        pass
    sock.close()
