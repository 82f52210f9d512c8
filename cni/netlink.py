"""The bridge plugin's rtnetlink: requests built by pyroute2, sent on one plain netlink socket.

Owns the plugin's netlink work in one network namespace (``Rtnetlink``): the calling thread's,
or one that the thread steps into to open the socket and straight back out of (``inside``).
pyroute2's message classes (``ifinfmsg``, ``ifaddrmsg``, ``rtmsg``) encode every request, each
the one ``ip`` sends for the command its error names (a failure is ``CNIError`` 999), and decode
the address and route answers.

Not pyroute2's ``IPRoute``: opening one costs ~0.4 ms and each request 0.2-0.6 ms (an asyncio
loop of its own, argument filters) against ~0.05 ms here, and its decoder ~0.3 ms per link, while
the guard dumps every link of the node on each ADD and DEL. Through ``IPRoute`` an ADD took 6-21 ms
instead of ~3.5 ms, and bring-up of 10 nodes/501 pods (``bench/netns.py``) 8-35 s instead of
~5.3 s. So ``_exchange`` sends and receives, and link answers are decoded by hand (``_link``,
only the attributes the plugin reads). Blocking: worker threads or the executable only.
"""
from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import socket
import struct
from typing import Any, NamedTuple

from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_DUMP_INTR,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    nlmsg,
)
from pyroute2.netlink.rtnl import (
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
)
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD, ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import IFF_PROMISC, IFF_UP, ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from netemu.errors import CNIError

from .types import ErrorCode, IPAddress

NamespaceId = tuple[int, int]  # (st_dev, st_ino) of an nsfs file
Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class BridgePort(NamedTuple):
    """A bridge port's settings (``ip link set … type bridge_slave``)."""

    hairpin: bool
    isolated: bool


DUMP_TRIES = 5  # a dump the kernel marks interrupted (links changed meanwhile) is asked again
RT_TABLE_MAIN, RTPROT_BOOT, RTN_UNICAST = 254, 3, 1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_HOST = 0, 253, 254
RTEXT_FILTER_SKIP_STATS = 1 << 3
SOL_NETLINK, NETLINK_GET_STRICT_CHK = 270, 12
CLONE_NEWNET = 0x40000000
_CREATE = NLM_F_CREATE | NLM_F_EXCL
_FLAG_WORDS = ((IFF_UP, "UP"), (IFF_PROMISC, "PROMISC"))
_libc = ctypes.CDLL(None, use_errno=True)

# Link answers, decoded by hand (see the module docstring)
_NLMSG = struct.Struct("=IHHII")    # nlmsghdr: length, type, flags, sequence, port
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_RTA = struct.Struct("=HH")         # rtattr: length, type
_U32 = struct.Struct("=I")
IFLA_ADDRESS, IFLA_IFNAME, IFLA_LINK, IFLA_MASTER, IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_IFALIAS = 1, 3, 5, 10, 16, 18, 20
IFLA_INFO_KIND = 1
_OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")
_LINK_ATTRIBUTES = frozenset((IFLA_ADDRESS, IFLA_IFNAME, IFLA_LINK, IFLA_MASTER, IFLA_OPERSTATE, IFLA_LINKINFO,
                              IFLA_IFALIAS))


def _attributes(data: bytes, offset: int, wanted: frozenset[int] | None = None) -> dict[int, bytes]:
    """The attributes from ``offset`` on, by type (only the ``wanted`` ones when given)."""
    found = {}
    while offset <= len(data) - _RTA.size:
        length, kind = _RTA.unpack_from(data, offset)
        if length < _RTA.size:
            break
        kind &= 0x3FFF  # without the nested / byte-order flags
        if wanted is None or kind in wanted:
            found[kind] = data[offset + _RTA.size:offset + length]
        offset += (length + 3) & ~3
    return found


def _text(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode(errors="replace")


def _link(message: bytes) -> dict[str, Any]:
    """A link message as the keys of ``ip -j -d link show`` the plugin reads: ifindex, ifname,
    flags (UP, PROMISC), address, operstate, ifalias, master_index, link_index (the peer's index)
    and linkinfo.info_kind."""
    _family, _type, index, flags, _change = _IFINFO.unpack_from(message, _NLMSG.size)
    attrs = _attributes(message, _NLMSG.size + _IFINFO.size, _LINK_ATTRIBUTES)
    link: dict[str, Any] = {"ifindex": index, "ifname": _text(attrs.get(IFLA_IFNAME, b"")),
                            "flags": [word for bit, word in _FLAG_WORDS if flags & bit]}
    if IFLA_ADDRESS in attrs:
        link["address"] = attrs[IFLA_ADDRESS].hex(":")
    if IFLA_OPERSTATE in attrs:
        state = attrs[IFLA_OPERSTATE][0]
        link["operstate"] = _OPERSTATES[state] if state < len(_OPERSTATES) else "UNKNOWN"
    if _text(attrs.get(IFLA_IFALIAS, b"")):
        link["ifalias"] = _text(attrs[IFLA_IFALIAS])
    if IFLA_MASTER in attrs:
        link["master_index"] = _U32.unpack(attrs[IFLA_MASTER])[0]
    if IFLA_LINK in attrs:
        link["link_index"] = _U32.unpack(attrs[IFLA_LINK])[0]
    if IFLA_LINKINFO in attrs:
        kind = _attributes(attrs[IFLA_LINKINFO], 0).get(IFLA_INFO_KIND)
        link["linkinfo"] = {"info_kind": _text(kind)} if kind is not None else {}
    return link


def _decoded(cls: type[nlmsg], message: bytes) -> Any:
    msg = cls(message)
    msg.decode()
    return msg


def _ifinfo(*attrs: tuple[str, Any], flags: int = 0) -> ifinfmsg:
    """An ifinfomsg naming its link by IFLA_IFNAME, changing exactly the ``flags`` bits."""
    msg = ifinfmsg()
    msg["flags"] = msg["change"] = flags
    msg["attrs"] = list(attrs)
    return msg


class Rtnetlink:
    """A route netlink socket. It acts on the namespace that was the calling thread's when it
    was made, whichever thread uses it later."""

    def __init__(self) -> None:
        try:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        except OSError as exc:
            raise CNIError(ErrorCode.INTERNAL, f"cannot open a netlink socket: {exc.strerror}") from exc
        try:
            self._sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)  # the kernel filters the dumps
        except OSError:
            pass  # an older kernel: the answers are filtered here anyway
        try:
            self._sock.bind((0, 0))
        except OSError as exc:
            self._sock.close()
            raise CNIError(ErrorCode.INTERNAL, f"cannot bind a netlink socket: {exc.strerror}") from exc
        self._seq = 0

    @classmethod
    def inside(cls, path: str, expected: NamespaceId) -> Rtnetlink:
        """A socket of namespace ``expected``, found at ``path``: this thread steps in to make it
        and straight back."""
        target = open_namespace(path, expected)
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                try:
                    setns(target)
                except OSError as exc:
                    raise CNIError(ErrorCode.INTERNAL, f'failed to enter netns "{path}": {exc.strerror}') from exc
                try:
                    return cls()
                finally:
                    try:
                        setns(own)
                    except OSError as exc:  # never go on working in the wrong namespace
                        raise CNIError(ErrorCode.INTERNAL, f"cannot return from netns {path}: {exc.strerror}") from exc
            finally:
                os.close(own)
        finally:
            os.close(target)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Rtnetlink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------ the exchange

    def _request(self, request: nlmsg, kind: int, flags: int) -> list[bytes]:
        """Sends ``request`` as a message of type ``kind``; returns the messages answering it (a
        dump is asked again while the kernel marks it interrupted). A netlink error raises
        ``OSError`` with its errno."""
        self._seq += 1
        request["header"] = {"type": kind, "flags": NLM_F_REQUEST | flags, "sequence_number": self._seq, "pid": 0}
        request.encode()
        for _attempt in range(DUMP_TRIES):
            replies, interrupted = self._exchange(bytes(request.data), flags)
            if not interrupted:
                return replies
        raise OSError(errno.EINTR, os.strerror(errno.EINTR))

    def _exchange(self, request: bytes, flags: int) -> tuple[list[bytes], bool]:
        seq = self._seq
        self._sock.send(request)
        replies: list[bytes] = []
        interrupted = False
        while True:
            data, _ancillary, msg_flags, _address = self._sock.recvmsg(1 << 16)
            if msg_flags & socket.MSG_TRUNC:  # the kernel sends at most 32 KiB at a time
                raise OSError(errno.EMSGSIZE, "a netlink answer did not fit in 64 KiB")
            offset = 0
            while offset + _NLMSG.size <= len(data):
                length, reply, reply_flags, reply_seq, _port = _NLMSG.unpack_from(data, offset)
                message = data[offset:offset + length]
                offset += (length + 3) & ~3
                if reply_seq != seq:
                    continue  # left over from a request that failed half-way
                interrupted = interrupted or bool(reply_flags & NLM_F_DUMP_INTR)
                if reply in (NLMSG_DONE, NLMSG_ERROR):
                    code = -struct.unpack_from("=i", message, _NLMSG.size)[0] if length >= _NLMSG.size + 4 else 0
                    if code:
                        raise OSError(code, os.strerror(code))
                    return replies, interrupted
                replies.append(message)
                if not flags & (NLM_F_DUMP | NLM_F_ACK):
                    return replies, interrupted

    def _read(self, what: str, request: nlmsg, kind: int, flags: int = NLM_F_DUMP) -> list[bytes]:
        try:
            return self._request(request, kind, flags)
        except OSError as exc:
            raise CNIError(ErrorCode.INTERNAL, f"netlink {what}: {os.strerror(exc.errno or errno.EIO)}") from exc

    def _change(self, what: str, request: nlmsg, kind: int, flags: int = 0, *, exist_ok: bool = False) -> bool:
        """Sends a change; False when it is there already and ``exist_ok`` (EEXIST), True when made."""
        try:
            self._request(request, kind, NLM_F_ACK | flags)
        except OSError as exc:
            if exist_ok and exc.errno == errno.EEXIST:
                return False
            raise CNIError(ErrorCode.INTERNAL, f"{what}: {os.strerror(exc.errno or errno.EIO)}") from exc
        return True

    # ------------------------------------------------ reading

    def links(self) -> list[dict[str, Any]]:
        """Every link (see ``_link``), its master by name as ``master``."""
        request = _ifinfo(("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS))
        found = [_link(message) for message in self._read("link dump", request, RTM_GETLINK)]
        names = {link["ifindex"]: link["ifname"] for link in found}
        for link in found:
            master = link.pop("master_index", None)
            if master is not None:
                link["master"] = names.get(master, f"if{master}")
        return found

    def link(self, name: str) -> dict[str, Any] | None:
        """One link by name (its master as ``master_index``), None when there is none."""
        request = _ifinfo(("IFLA_IFNAME", name), ("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS))
        try:
            replies = self._request(request, RTM_GETLINK, 0)
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise CNIError(ErrorCode.INTERNAL, f"netlink link {name}: {os.strerror(exc.errno or errno.EIO)}") from exc
        return _link(replies[0]) if replies else None

    def addresses(self, index: int, *, link_scope: bool = False) -> list[Address]:
        """The addresses of link ``index``: global and host ones (``ip addr show dev``'s
        ``scope global`` and ``scope host``), link-scope ones too with ``link_scope``."""
        request = ifaddrmsg()
        request["family"] = socket.AF_UNSPEC
        request["index"] = index
        found: list[Address] = []
        for message in self._read("address dump", request, RTM_GETADDR):
            msg = _decoded(ifaddrmsg, message)
            if msg["index"] != index or (msg["scope"] == RT_SCOPE_LINK and not link_scope):
                continue
            ip = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if ip and msg["family"] in (socket.AF_INET, socket.AF_INET6):
                found.append(ipaddress.ip_interface(f"{ip}/{msg['prefixlen']}"))
        return found

    def routes(self) -> list[tuple[Network, str | None]]:
        """The main table's routes (``ip route show``'s) as (destination, gateway)."""
        request = rtmsg()
        request["family"] = socket.AF_UNSPEC  # both; pyroute2 would make it AF_INET
        request["table"] = RT_TABLE_MAIN
        found: list[tuple[Network, str | None]] = []
        for message in self._read("route dump", request, RTM_GETROUTE):
            msg = _decoded(rtmsg, message)
            table = msg.get_attr("RTA_TABLE") or msg["table"]
            if table != RT_TABLE_MAIN or msg["family"] not in (socket.AF_INET, socket.AF_INET6):
                continue
            dst = msg.get_attr("RTA_DST") or ("0.0.0.0" if msg["family"] == socket.AF_INET else "::")
            found.append((ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False), msg.get_attr("RTA_GATEWAY")))
        return found

    # ------------------------------------------------ changing

    def set_link(self, name: str, *, up: bool = False, promisc: bool = False, alias: str = "",
                 port: BridgePort | None = None) -> None:
        """``ip link set NAME [up] [promisc on] [alias ALIAS] [type bridge_slave hairpin on|off
        isolated on|off]``: the kernel applies the bridge port's settings before the rest, so a
        port goes up already isolated."""
        words = [word for word, wanted in (("up", up), ("promisc on", promisc), (f"alias {alias}", alias)) if wanted]
        attrs: list[tuple[str, Any]] = [("IFLA_IFNAME", name)]
        if alias:
            attrs.append(("IFLA_IFALIAS", alias))
        if port is not None:
            words.append(f"type bridge_slave hairpin {'on' if port.hairpin else 'off'} "
                         f"isolated {'on' if port.isolated else 'off'}")
            data = {"attrs": [("IFLA_BRPORT_MODE", int(port.hairpin)), ("IFLA_BRPORT_ISOLATED", int(port.isolated))]}
            attrs.append(("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_SLAVE_KIND", "bridge"),
                                                      ("IFLA_INFO_SLAVE_DATA", data)]}))
        request = _ifinfo(*attrs, flags=(IFF_UP if up else 0) | (IFF_PROMISC if promisc else 0))
        self._change(f"ip link set {name} {' '.join(words)}", request, RTM_NEWLINK)

    def add_bridge(self, name: str, mac: str, mtu: int = 0) -> bool:
        """``ip link add name NAME address MAC [mtu MTU] type bridge``; False when a link of
        that name exists already (the caller checks what it is)."""
        request = _ifinfo(("IFLA_IFNAME", name), ("IFLA_ADDRESS", mac), *([("IFLA_MTU", mtu)] if mtu else []),
                          ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge")]}))
        return self._change(f"ip link add name {name} type bridge", request, RTM_NEWLINK, _CREATE, exist_ok=True)

    def add_veth(self, name: str, peer: str, peer_netns: int, *, master: int = 0, mtu: int = 0,
                 peer_mac: str = "") -> None:
        """``ip link add name NAME [mtu MTU] [master INDEX] type veth peer name PEER [mtu MTU]
        [address MAC] netns FD``: the peer is made in the namespace of descriptor ``peer_netns``."""
        mtu_attr = [("IFLA_MTU", mtu)] if mtu else []
        peer_attrs = [("IFLA_IFNAME", peer), *mtu_attr, *([("IFLA_ADDRESS", peer_mac)] if peer_mac else []),
                      ("IFLA_NET_NS_FD", peer_netns)]
        info = {"attrs": [("IFLA_INFO_KIND", "veth"),
                          ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", {"attrs": peer_attrs})]})]}
        request = _ifinfo(("IFLA_IFNAME", name), *mtu_attr, *([("IFLA_MASTER", master)] if master else []),
                          ("IFLA_LINKINFO", info))
        self._change(f"ip link add name {name}{f' master if{master}' if master else ''} type veth peer name {peer}",
                     request, RTM_NEWLINK, _CREATE)

    def address(self, add: bool, index: int, name: str, address: Address, *, nodad: bool = False,
                exist_ok: bool = False) -> None:
        """``ip addr add|del ADDRESS dev NAME [nodad]`` (``index`` is NAME's); with ``exist_ok``
        an address that is there already is no error."""
        request = ifaddrmsg()
        request["family"] = socket.AF_INET if address.version == 4 else socket.AF_INET6
        request["prefixlen"] = address.network.prefixlen
        request["flags"] = IFA_F_NODAD if nodad else 0
        request["scope"] = RT_SCOPE_HOST if address.ip.is_loopback else RT_SCOPE_UNIVERSE  # as ip chooses it
        request["index"] = index
        request["attrs"] = [("IFA_LOCAL", str(address.ip)), ("IFA_ADDRESS", str(address.ip))]
        self._change(f"ip addr {'add' if add else 'del'} {address} dev {name}{' nodad' if nodad else ''}",
                     request, RTM_NEWADDR if add else RTM_DELADDR, _CREATE if add else 0, exist_ok=exist_ok)

    def add_route(self, dst: Network, gateway: IPAddress | None, index: int, name: str) -> bool:
        """``ip route prepend DST [via GATEWAY] dev NAME`` (main table; link scope without a
        gateway): a route to DST through another device stays, after the new one, as the
        reference plugins leave it; False when this very route exists already (the reference
        skips duplicates)."""
        request = rtmsg()
        request["family"] = socket.AF_INET if dst.version == 4 else socket.AF_INET6
        request["dst_len"] = dst.prefixlen
        request["table"] = RT_TABLE_MAIN
        request["proto"] = RTPROT_BOOT
        request["scope"] = RT_SCOPE_UNIVERSE if gateway is not None else RT_SCOPE_LINK
        request["type"] = RTN_UNICAST
        request["attrs"] = [*([("RTA_DST", str(dst.network_address))] if dst.prefixlen else []),
                            *([("RTA_GATEWAY", str(gateway))] if gateway is not None else []), ("RTA_OIF", index)]
        return self._change(f"ip route prepend {dst}{f' via {gateway}' if gateway is not None else ''} dev {name}",
                            request, RTM_NEWROUTE, NLM_F_CREATE, exist_ok=True)

    def delete_link(self, name: str) -> bool:
        """``ip link del NAME``; False when there is none (gone already)."""
        try:
            self._request(_ifinfo(("IFLA_IFNAME", name)), RTM_DELLINK, NLM_F_ACK)
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return False
            raise CNIError(ErrorCode.INTERNAL, f"ip link del {name}: {os.strerror(exc.errno or errno.EIO)}") from exc
        return True


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace ``fd`` refers to (Python 3.11 has no
    ``os.setns``). The one place netemu calls setns(2); OSError on failure."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def unshare_net() -> None:
    """Move the calling thread into a new, empty network namespace; OSError on failure."""
    if _libc.unshare(CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def open_namespace(path: str, expected: NamespaceId) -> int:
    """A descriptor of the namespace at ``path``, which must (still) be namespace ``expected``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CNIError(ErrorCode.INTERNAL, f'failed to open netns "{path}": {exc.strerror}') from exc
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != expected:
        os.close(fd)
        raise CNIError(ErrorCode.INTERNAL, f"netns {path} changed while the plugin was working")
    return fd
