"""Datagrams in batches: many received with one recvmmsg(2), the answers sent with one sendmmsg(2).

A UDP server that answers from a table (the cluster DNS's cache of wire answers) spends most of
a query's cost on what surrounds the lookup: a system call to receive, one to send, and in
Python a bytes object and an address tuple per datagram, made and parsed again. A
``DatagramBatch`` receives up to ``slots`` datagrams with one call into slots of its own
memory, and the caller writes each answer over its query, in the same slot (a DNS answer keeps
its query's ID, the slot's first two bytes). Consecutive answered slots then leave with one
``sendmmsg``, each to the address its query came from, which is reused as the kernel wrote it
(no address tuple is made). A datagram the caller does not answer at once is taken out as bytes
and its sender as an address tuple, as ``recvfrom`` gives them; answers to it are sent on the
socket as usual, after the answered slots before it (``pass_over``), so one client's answers keep
their order. ``bench/dns.py``, queries per second against dnsmasq's: the server itself 0.99 before,
1.42–1.46 after; through the kube-dns ClusterIP (the proxy's listener) 0.97–0.99 before, 1.21
after.

Slots are 64 KiB each (any UDP datagram fits, nothing is truncated), in an anonymous mapping: the
kernel gives it memory only where datagrams are written, so 64 slots of small queries hold 64
pages. The calls go through ``ctypes`` (the standard library has no recvmmsg); one batch is one
call each way whatever its size. Only the thread that made a batch may use it.
"""
from __future__ import annotations

import ctypes
import errno
import mmap
import os
import socket
import sys

SLOTS = 64            # datagrams per batch: what one readiness callback reads at most
ONE_BY_ONE = 2        # datagrams a reader takes the plain way (recvfrom, sendto) before a batch
SLOT_SIZE = 1 << 16   # bytes per slot: the largest UDP datagram fits
_MSG_DONTWAIT = 0x40  # MSG_DONTWAIT (Linux)
_NAME_SIZES = {socket.AF_INET: 16, socket.AF_INET6: 28}  # sizeof(struct sockaddr_in / _in6)


class _IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.c_void_p),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


# PyDLL: the calls keep the GIL (they never block: MSG_DONTWAIT), which saves releasing and taking
# it back twice per batch. No argtypes: converting five arguments per call by declared types
# doubles a call's cost; the arguments are plain ints (descriptor, count, flags) and pointers
# made once (``c_void_p``).
_libc = ctypes.PyDLL(None, use_errno=True)
_recvmmsg = _libc.recvmmsg
_sendmmsg = _libc.sendmmsg
_MMSG_SIZE = ctypes.sizeof(_MMsgHdr)
_LEN_INDEX = _MMsgHdr.len.offset // 4   # msg_len of message i: lengths view [i * stride + this]
_LEN_STRIDE = _MMSG_SIZE // 4
_RETRY = (errno.EINTR,)


class DatagramBatch:
    """``slots`` slots for datagrams on sockets of ``family``.

    ``receive(fd)`` fills them and returns the datagrams' lengths; slot ``i`` is
    ``data[i * SLOT_SIZE:]``. Each slot is then either answered, ``answer(i, tail)`` writing
    ``tail`` after the slot's first two bytes, or passed over, ``pass_over(i)``, before it is
    taken out and handled otherwise; ``send_answers()`` sends what is left to send, each answer
    to its sender. ``datagram(i)``, ``sender(i)`` and ``address(i)`` give a slot's datagram as
    bytes, its sender's address as the kernel wrote it (bytes: a key) and as an address tuple."""

    def __init__(self, family: int = socket.AF_INET, slots: int = SLOTS) -> None:
        if family not in _NAME_SIZES:
            raise ValueError(f"datagram batches take IPv4 or IPv6 sockets, not family {family}")
        self.family = family
        self.slots = slots
        self.name_size = name_size = _NAME_SIZES[family]
        self._memory = mmap.mmap(-1, slots * SLOT_SIZE)  # pages are given as they are written
        self._names = ctypes.create_string_buffer(slots * name_size)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self._memory))
        names = ctypes.addressof(self._names)
        self._in_iov, self._in = (_IOVec * slots)(), (_MMsgHdr * slots)()
        self._out_iov, self._out_msgs = (_IOVec * slots)(), (_MMsgHdr * slots)()
        for i in range(slots):
            for iov, msg in ((self._in_iov, self._in), (self._out_iov, self._out_msgs)):
                iov[i].base = base + i * SLOT_SIZE
                iov[i].len = SLOT_SIZE
                msg[i].hdr.name = names + i * name_size
                msg[i].hdr.namelen = name_size  # the kernel writes the same size back, every time
                msg[i].hdr.iov = ctypes.addressof(iov[i])
                msg[i].hdr.iovlen = 1
        self._in_at = ctypes.c_void_p(ctypes.addressof(self._in))
        # where sending from each slot starts
        self._out = [ctypes.c_void_p(ctypes.addressof(self._out_msgs) + i * _MMSG_SIZE) for i in range(slots)]
        self.data = memoryview(self._memory)
        self.names = memoryview(self._names).cast("B")
        self._lengths = memoryview(self._in).cast("B").cast("I")
        self._answer_lengths = memoryview(self._out_iov).cast("B").cast("Q")  # [2 * i + 1]: iov_len
        self._fd = -1       # the socket of the batch received last: its answers leave there
        self._received = 0  # datagrams in that batch
        self._unsent = 0    # its first slot whose answer has not been sent

    def receive(self, fd: int) -> list[int]:
        """Read what is waiting on ``fd``, up to ``slots`` datagrams, without blocking: their
        lengths (none: nothing was waiting). Raises OSError on a socket error."""
        while True:
            n = _recvmmsg(fd, self._in_at, self.slots, _MSG_DONTWAIT, None)
            if n >= 0:
                break
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK):
                return []
            if err not in _RETRY:
                raise OSError(err, os.strerror(err))
        self._fd, self._received, self._unsent = fd, n, 0
        lengths, index, stride = self._lengths, _LEN_INDEX, _LEN_STRIDE
        return [lengths[i * stride + index] for i in range(n)]

    def answer(self, i: int, tail: bytes) -> None:
        """Slot ``i``'s answer: its first two bytes (the query's ID), then ``tail``."""
        at = i * SLOT_SIZE + 2
        self.data[at:at + len(tail)] = tail
        self._answer_lengths[2 * i + 1] = len(tail) + 2

    def pass_over(self, i: int) -> None:
        """Slot ``i`` gets no answer here (it is taken out and handled otherwise): the answers
        before it leave now, so that one client's answers keep their order."""
        self._send(self._unsent, i)
        self._unsent = i + 1

    def send_answers(self) -> None:
        """The answers not sent yet leave (every slot since the last passed over is answered)."""
        self._send(self._unsent, self._received)
        self._unsent = self._received

    def _send(self, first: int, end: int) -> None:
        """Send the answers of slots ``first`` … ``end - 1``, each to its sender. One the socket
        cannot take (a full buffer) is dropped, as a full link drops it; the others still go."""
        out, fd = self._out, self._fd
        while first < end:
            sent = _sendmmsg(fd, out[first], end - first, _MSG_DONTWAIT)
            if sent > 0:
                first += sent
            elif sent < 0 and ctypes.get_errno() in _RETRY:
                continue
            else:
                first += 1  # that one could not be sent: drop it

    def datagram(self, i: int, length: int) -> bytes:
        at = i * SLOT_SIZE
        return bytes(self.data[at:at + length])

    def sender(self, i: int) -> bytes:
        size = self.name_size
        return bytes(self.names[i * size:(i + 1) * size])

    def address(self, i: int) -> tuple:
        """Slot ``i``'s sender as ``recvfrom`` gives it: (host, port), or for IPv6 (host, port,
        flowinfo, scope_id)."""
        name = self.sender(i)
        port = int.from_bytes(name[2:4], "big")
        if self.family == socket.AF_INET:
            return socket.inet_ntop(socket.AF_INET, name[4:8]), port
        return (socket.inet_ntop(socket.AF_INET6, name[8:24]), port, int.from_bytes(name[4:8], "big"),
                int.from_bytes(name[24:28], sys.byteorder))


def sender_name(address: tuple) -> bytes:
    """``address`` (as ``recvfrom`` gives it) as the kernel writes a sender's name into a batch
    (``DatagramBatch.sender``): struct sockaddr_in or sockaddr_in6."""
    if len(address) == 2:
        return (socket.AF_INET.to_bytes(2, sys.byteorder) + address[1].to_bytes(2, "big")
                + socket.inet_pton(socket.AF_INET, address[0]) + bytes(8))
    host, port, flowinfo, scope_id = address
    return (socket.AF_INET6.to_bytes(2, sys.byteorder) + port.to_bytes(2, "big") + flowinfo.to_bytes(4, "big")
            + socket.inet_pton(socket.AF_INET6, host.partition("%")[0]) + scope_id.to_bytes(4, sys.byteorder))

