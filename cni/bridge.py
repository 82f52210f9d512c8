"""The bridge plugin: a pod's veth pair on its node's bridge, for netemu's netns backend.

Owns ADD/CHECK/DEL/GC of a CNI "bridge" network the way containernetworking/plugins'
``plugins/main/bridge`` does them. ADD ensures the bridge (``bridge``, default ``cni0``: up; with
``isGateway`` the gateway address on it and IP forwarding on), makes a veth pair whose host side
``veth<hash of container ID and ifname>`` joins the bridge (``hairpinMode``, ``mtu``) and whose
other side, named CNI_IFNAME, is created straight inside CNI_NETNS and gets the IPAM addresses,
the routes (plus a default route via the gateway with ``isDefaultGateway``) and ``lo`` up. The
result lists [bridge, host veth, container interface (with sandbox)], and every IP points at the
container interface (index 2). IPAM: ``host-local`` runs in-process (netemu's); any other
``ipam.type`` is executed from CNI_PATH. ``ipMasq: true`` (and ``vlan``, ``vlanTrunk``,
``macspoofchk``) is refused with code 2: netemu never NATs. DEL deletes the host veth (its peer
goes with it) and releases the addresses; it never enters CNI_NETNS and succeeds when things
are gone already. CHECK compares ``prevResult`` with the interfaces, addresses and routes found.

Guard. Like the reference, the plugin configures the namespace it runs in, so before anything
else ADD, CHECK and DEL check that the calling thread's network namespace
(``/proc/thread-self/ns/net``):
  1. is not pid 1's (when pid 1's can be read: some containers hide it),
  2. is one netemu created: the one bind-mounted at ``/run/netns/netemu-*``,
  3. holds no interface besides ``lo`` whose ``ifalias`` does not start with ``netemu`` (netemu
     marks every interface it makes; a host's ``eth0`` is never marked).
ADD checks CNI_NETNS the same way and that it is not the plugin's own namespace. A refusal is
error 100 (101 for CNI_NETNS) and leaves no trace: no IPAM reservation, no interface.

Run it as ``ip netns exec netemu-<cluster>-node-<name> netemu-cni-bridge``, or in-process
(``skel.invoke(PLUGIN, ...)``) on a worker thread switched into the node namespace
(``netemu.fabric.netns.namespaces.call_in``). ADD and DEL read and change links, addresses and
routes over rtnetlink (``Rtnetlink``, the requests ``ip`` sends, without an ``ip`` process per
pod): on a socket made in the calling thread's namespace, and for the pod's side on one made
while the thread steps into CNI_NETNS and straight back. CHECK reads addresses and routes with
``ip -j``. Blocking; never call it on an event-loop thread.
"""
from __future__ import annotations

import ctypes
import errno
import ipaddress
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import Any, NoReturn

from netemu.errors import CNIError

from . import host_local
from .skel import CmdArgs, Plugin, plugin_main
from .types import ErrorCode, Interface, IPAddress, IPConfig, NetConf, Result, Route, format_cni_args

PLUGIN_TYPE = "netemu-cni-bridge"
ABOUT = "netemu CNI bridge plugin (veth pairs on a node namespace's bridge, IPAM by host-local)"
DEFAULT_BRIDGE = "cni0"
NETNS_RUN_DIR = "/run/netns"
NETNS_PREFIX = "netemu-"
OWNED_ALIAS_PREFIX = "netemu"  # the ifalias prefix of every interface netemu makes
NOT_A_NODE_NAMESPACE = 100
NOT_A_POD_NAMESPACE = 101
IN_PROCESS_IPAM = ("host-local",)
IP_TIMEOUT = 30.0
PORT_UP_WAIT = 2.5  # seconds, as the reference waits for the bridge port

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")  # passes through an `ip -batch` line untouched
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_FALLBACK_PATH = "/usr/sbin:/sbin:/usr/bin:/bin"
_FORWARDING = {4: "/proc/sys/net/ipv4/ip_forward", 6: "/proc/sys/net/ipv6/conf/all/forwarding"}

NamespaceId = tuple[int, int]  # (st_dev, st_ino) of an nsfs file


def network_config(name: str, subnet: str, data_dir: str, *, bridge: str = DEFAULT_BRIDGE, mtu: int = 0,
                   cni_version: str = "1.0.0", port_isolation: bool = False) -> dict[str, Any]:
    """The network configuration netemu passes for one node's pod range, e.g.
    ``network_config("node-1", "10.244.1.0/24", "<state>/cni")``: gateway ``.1`` on the bridge,
    default route through it; with ``port_isolation`` (the reference plugin's ``portIsolation``)
    pods on the bridge reach each other only through the node's routing."""
    config: dict[str, Any] = {
        "cniVersion": cni_version, "name": name, "type": PLUGIN_TYPE, "bridge": bridge,
        "isGateway": True, "isDefaultGateway": True, **({"portIsolation": True} if port_isolation else {}),
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": data_dir},
    }
    if mtu:
        config["mtu"] = mtu
    return config


def host_veth_name(container_id: str, ifname: str) -> str:
    """``veth`` and 11 hex digits: stable, so DEL finds it without entering the pod."""
    return "veth" + sha256(f"{container_id}/{ifname}".encode()).hexdigest()[:11]


def _owned_alias(container_id: str, ifname: str) -> str:
    return f"{OWNED_ALIAS_PREFIX}-cni:{container_id[:200]}:{ifname}"


# ---------------------------------------------------------------- configuration

@dataclass(frozen=True)
class BridgeConfig:
    bridge: str = DEFAULT_BRIDGE
    is_gateway: bool = False
    is_default_gateway: bool = False
    force_address: bool = False
    mtu: int = 0
    hairpin_mode: bool = False
    promisc_mode: bool = False
    port_isolation: bool = False   # pods on the bridge reach each other only through the node
    mac: str = ""


def _decode_error(key: str, expected: str, value: Any) -> CNIError:
    return CNIError(ErrorCode.DECODING_FAILURE,
                    f"failed to load netconf: {key}: expected {expected}, got {type(value).__name__}")


def _flag(extra: Mapping[str, Any], key: str) -> bool:
    value = extra.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _decode_error(key, "boolean", value)
    return value


def _integer(extra: Mapping[str, Any], key: str) -> int:
    value = extra.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool):
        raise _decode_error(key, "integer", value)
    return value


def _mac(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _decode_error(where, "string", value)
    if value and not _MAC.match(value):
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"{where}: invalid MAC address {value!r}")
    return value.lower()


def _unsupported(key: str, value: Any, why: str) -> CNIError:
    return CNIError(ErrorCode.UNSUPPORTED_FIELD, f"unsupported field {key}: {json.dumps(value)}", why)


def load_config(netconf: NetConf, cni_args: Mapping[str, str]) -> BridgeConfig:
    """The plugin's own keys, checked; ``isDefaultGateway`` implies ``isGateway``."""
    extra = netconf.extra
    if _flag(extra, "ipMasq"):
        raise _unsupported("ipMasq", True, "netemu never NATs pod traffic: leave ipMasq out or set it to false")
    if _integer(extra, "vlan"):
        raise _unsupported("vlan", extra["vlan"], "netemu's bridge plugin has no VLAN support")
    if extra.get("vlanTrunk"):
        raise _unsupported("vlanTrunk", extra["vlanTrunk"], "netemu's bridge plugin has no VLAN support")
    if _flag(extra, "macspoofchk"):
        raise _unsupported("macspoofchk", True, "netemu's bridge plugin does not filter by MAC")
    bridge = extra.get("bridge") or DEFAULT_BRIDGE
    if not isinstance(bridge, str):
        raise _decode_error("bridge", "string", bridge)
    if len(bridge) > 15 or not _SAFE_NAME.match(bridge):
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"bridge name {bridge!r}: at most 15 letters, digits, '_', '.', '-'")
    mtu = _integer(extra, "mtu")
    if mtu and not 68 <= mtu <= 65535:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"invalid MTU {mtu}: must be 68-65535")
    hairpin, promisc = _flag(extra, "hairpinMode"), _flag(extra, "promiscMode")
    if hairpin and promisc:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "cannot set hairpin mode and promiscuous mode at the same time")
    mac = _mac(cni_args.get("MAC", ""), "CNI_ARGS MAC")
    cni = netconf.args.get("cni")
    if isinstance(cni, dict) and cni.get("mac"):
        mac = _mac(cni["mac"], "args.cni.mac")
    if netconf.runtime_config.get("mac"):
        mac = _mac(netconf.runtime_config["mac"], "runtimeConfig.mac")
    default_gateway = _flag(extra, "isDefaultGateway")
    return BridgeConfig(port_isolation=_flag(extra, "portIsolation"),
                        bridge=bridge, is_gateway=_flag(extra, "isGateway") or default_gateway,
                        is_default_gateway=default_gateway, force_address=_flag(extra, "forceAddress"),
                        mtu=mtu, hairpin_mode=hairpin, promisc_mode=promisc, mac=mac)


def _check_ifname(ifname: str) -> None:
    if not _SAFE_NAME.match(ifname):
        raise CNIError(ErrorCode.INVALID_ENVIRONMENT, f"interface name {ifname!r}: netemu's bridge plugin "
                       "accepts only letters, digits, '_', '.', '-'")


# ---------------------------------------------------------------- ip

def _ip_binary() -> str:
    found = shutil.which("ip", path=os.environ.get("PATH", "") + os.pathsep + _FALLBACK_PATH)
    if found is None:
        raise CNIError(ErrorCode.INTERNAL, "iproute2's `ip` was not found")
    return found


def _ip(args: Sequence[str], *, netns: str = "", commands: Sequence[str] = ()) -> str:
    """``ip [-n NETNS] ARGS`` (a batch when ``commands`` are given), for CHECK's queries.
    Without ``netns`` it acts on this thread's namespace: only ever called after the guard
    accepted it."""
    argv = [_ip_binary(), *(["-n", netns] if netns else []), *args]
    stdin = "".join(f"{line}\n" for line in commands) if commands else None
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=IP_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CNIError(ErrorCode.INTERNAL, f"{' '.join(argv)}: {exc}") from exc
    if proc.returncode != 0:
        where = f" in {netns}" if netns else ""
        raise CNIError(ErrorCode.INTERNAL, f"ip{where} failed: {' '.join(proc.stderr.split())}",
                       "; ".join(commands) if commands else " ".join(args))
    return proc.stdout


def _json(args: Sequence[str], netns: str = "") -> list[dict[str, Any]]:
    out = _ip(["-j", *args], netns=netns)
    return json.loads(out) if out.strip() else []


def _find(links: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    return next((link for link in links if link.get("ifname") == name), None)


def _kind(link: Mapping[str, Any]) -> str:
    return link.get("linkinfo", {}).get("info_kind", "")


# ---------------------------------------------------------------- rtnetlink

# ADD, CHECK and DEL read links and addresses, and ADD and DEL make their changes, over rtnetlink
# from this process: no ``ip`` process per pod. Each change is one request, the one ``ip`` sends
# for the command its error message names.
_NLMSG = struct.Struct("=IHHII")      # nlmsghdr: length, type, flags, sequence, port
_IFINFO = struct.Struct("=BxHiII")    # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")     # ifaddrmsg: family, prefix length, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst/src length, tos, table, protocol, scope, type, flags
_RTA = struct.Struct("=HH")           # rtattr: length, type
_U32 = struct.Struct("=I")
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP_INTR, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x1, 0x4, 0x10, 0x200, 0x400, 0x300
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR, RTM_NEWROUTE = 20, 21, 22, 24
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_NET_NS_FD, IFLA_EXT_MASK = 16, 18, 20, 28, 29
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA = 1, 2, 4, 5
VETH_INFO_PEER = 1
IFLA_BRPORT_MODE, IFLA_BRPORT_ISOLATED = 4, 33  # hairpin, isolated
IFA_ADDRESS, IFA_LOCAL, IFA_F_NODAD = 1, 2, 0x02
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
RT_TABLE_MAIN, RTPROT_BOOT, RTN_UNICAST = 254, 3, 1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_HOST = 0, 253, 254
RTEXT_FILTER_SKIP_STATS = 1 << 3
SOL_NETLINK, NETLINK_GET_STRICT_CHK = 270, 12
IFF_UP, IFF_PROMISC = 0x1, 0x100
CLONE_NEWNET = 0x40000000
DUMP_TRIES = 5  # a dump the kernel marks interrupted (links changed meanwhile) is asked again
_FLAG_WORDS = ((IFF_UP, "UP"), (IFF_PROMISC, "PROMISC"))
_OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")
_NLA_TYPE_MASK = 0x3FFF
_LINK_ATTRIBUTES = frozenset((IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER, IFLA_OPERSTATE,
                              IFLA_LINKINFO, IFLA_IFALIAS))
_NO_STATS = _RTA.pack(8, IFLA_EXT_MASK) + _U32.pack(RTEXT_FILTER_SKIP_STATS)
_libc = ctypes.CDLL(None, use_errno=True)


def _attributes(data: bytes, offset: int, wanted: frozenset[int] | None = None) -> dict[int, bytes]:
    """The attributes from ``offset`` on, by type (only the ``wanted`` ones when given)."""
    found = {}
    end = len(data) - 4
    unpack = _RTA.unpack_from
    while offset <= end:
        length, kind = unpack(data, offset)
        if length < 4:
            break
        kind &= _NLA_TYPE_MASK
        if wanted is None or kind in wanted:
            found[kind] = data[offset + 4:offset + length]
        offset += (length + 3) & ~3
    return found


def _attribute(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return _RTA.pack(length, kind) + value + b"\0" * (-length % 4)


def _name(kind: int, name: str) -> bytes:
    return _attribute(kind, name.encode() + b"\0")


def _text(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode(errors="replace")


def _ifinfo(flags: int = 0) -> bytes:
    """An ifinfomsg that names its link by IFLA_IFNAME and changes exactly the ``flags`` bits."""
    return _IFINFO.pack(socket.AF_UNSPEC, 0, 0, flags, flags)


class Rtnetlink:
    """A route netlink socket. It acts on the namespace that was the calling thread's when it
    was made, whichever thread uses it later."""

    def __init__(self) -> None:
        try:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
        except OSError as exc:
            raise CNIError(ErrorCode.INTERNAL, f"cannot open a netlink socket: {exc.strerror}") from exc
        try:
            self._sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)  # the kernel filters address dumps
        except OSError:
            pass  # an older kernel: the replies are filtered here anyway
        try:
            self._sock.bind((0, 0))
        except OSError as exc:
            self._sock.close()
            raise CNIError(ErrorCode.INTERNAL, f"cannot bind a netlink socket: {exc.strerror}") from exc
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Rtnetlink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _request(self, what: str, kind: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        """Sends one request; returns the (type, message) replies until the dump ends or the
        request is answered. A netlink error raises ``OSError`` with its errno."""
        tries = DUMP_TRIES if flags & NLM_F_DUMP else 1
        for attempt in range(1, tries + 1):
            try:
                return self._exchange(what, kind, flags, body)
            except InterruptedError:
                if attempt == tries:
                    raise
        raise AssertionError("unreachable")

    def _exchange(self, what: str, kind: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        self._seq += 1
        seq = self._seq
        self._sock.send(_NLMSG.pack(_NLMSG.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body)
        replies = []
        interrupted = False
        while True:
            data, _ancillary, msg_flags, _address = self._sock.recvmsg(1 << 16)
            if msg_flags & socket.MSG_TRUNC:  # the kernel sends at most 32 KiB at a time
                raise OSError(errno.EMSGSIZE, f"{what}: a reply did not fit in 64 KiB")
            offset = 0
            while offset + _NLMSG.size <= len(data):
                length, reply, reply_flags, reply_seq, _port = _NLMSG.unpack_from(data, offset)
                message = data[offset + _NLMSG.size:offset + length]
                offset += (length + 3) & ~3
                if reply_seq != seq:
                    continue  # left over from a request that failed half-way
                interrupted = interrupted or bool(reply_flags & NLM_F_DUMP_INTR)
                if reply in (NLMSG_DONE, NLMSG_ERROR):
                    code = -struct.unpack_from("=i", message)[0] if len(message) >= 4 else 0
                    if code:
                        raise OSError(code, f"{what}: {os.strerror(code)}")
                    if interrupted:  # a dump that may have missed something is no answer
                        raise InterruptedError(errno.EINTR, f"{what}: interrupted")
                    return replies
                replies.append((reply, message))
                if not flags & (NLM_F_DUMP | NLM_F_ACK):
                    return replies

    def _read(self, what: str, kind: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        try:
            return self._request(what, kind, flags, body)
        except OSError as exc:
            raise CNIError(ErrorCode.INTERNAL, f"netlink {what}: {os.strerror(exc.errno)}") from exc

    def _change(self, what: str, kind: int, body: bytes, flags: int = 0) -> None:
        try:
            self._request(what, kind, NLM_F_ACK | flags, body)
        except OSError as exc:
            raise CNIError(ErrorCode.INTERNAL, f"{what}: {os.strerror(exc.errno)}") from exc

    # ------------------------------------------------ reading

    def links(self) -> list[dict[str, Any]]:
        """Every link, with the keys of ``ip -j -d link show`` the plugin reads: ifindex,
        ifname, flags (UP, PROMISC), mtu, address, operstate, ifalias, master (a name),
        link_index (the peer's index) and linkinfo.info_kind."""
        replies = self._read("link dump", RTM_GETLINK, NLM_F_DUMP, _ifinfo() + _NO_STATS)
        found = [self._link(message) for kind, message in replies if kind == RTM_NEWLINK]
        names = {link["ifindex"]: link["ifname"] for link in found}
        for link in found:
            master = link.pop("master_index", None)
            if master is not None:
                link["master"] = names.get(master, f"if{master}")
        return found

    def link(self, name: str) -> dict[str, Any] | None:
        """One link by name (its master as ``master_index``), None when there is none."""
        try:
            replies = self._request(f"link {name}", RTM_GETLINK, 0, _ifinfo() + _name(IFLA_IFNAME, name) + _NO_STATS)
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise CNIError(ErrorCode.INTERNAL, f"netlink link {name}: {os.strerror(exc.errno)}") from exc
        return next((self._link(message) for kind, message in replies if kind == RTM_NEWLINK), None)

    @staticmethod
    def _link(message: bytes) -> dict[str, Any]:
        _family, _type, index, flags, _change = _IFINFO.unpack_from(message)
        attrs = _attributes(message, _IFINFO.size, _LINK_ATTRIBUTES)
        link: dict[str, Any] = {"ifindex": index, "ifname": _text(attrs.get(IFLA_IFNAME, b"")),
                                "flags": [word for bit, word in _FLAG_WORDS if flags & bit]}
        if IFLA_MTU in attrs:
            link["mtu"] = _U32.unpack_from(attrs[IFLA_MTU])[0]
        if IFLA_ADDRESS in attrs:
            link["address"] = attrs[IFLA_ADDRESS].hex(":")
        if IFLA_OPERSTATE in attrs:
            state = attrs[IFLA_OPERSTATE][0]
            link["operstate"] = _OPERSTATES[state] if state < len(_OPERSTATES) else "UNKNOWN"
        alias = _text(attrs.get(IFLA_IFALIAS, b""))
        if alias:
            link["ifalias"] = alias
        if IFLA_MASTER in attrs:
            link["master_index"] = _U32.unpack_from(attrs[IFLA_MASTER])[0]
        if IFLA_LINK in attrs:
            link["link_index"] = _U32.unpack_from(attrs[IFLA_LINK])[0]
        if IFLA_LINKINFO in attrs:
            kind = _attributes(attrs[IFLA_LINKINFO], 0).get(IFLA_INFO_KIND)
            link["linkinfo"] = {"info_kind": _text(kind)} if kind is not None else {}
        return link

    def addresses(self, index: int) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
        """The addresses of link ``index`` but its link-scope ones (``ip addr show dev``'s
        global and host ones)."""
        replies = self._read("address dump", RTM_GETADDR, NLM_F_DUMP, _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, index))
        found: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = []
        for kind, message in replies:
            family, prefixlen, _flags, scope, owner = _IFADDR.unpack_from(message)
            if kind != RTM_NEWADDR or owner != index or scope == RT_SCOPE_LINK:
                continue
            attrs = _attributes(message, _IFADDR.size)
            raw = attrs.get(IFA_LOCAL, attrs.get(IFA_ADDRESS))
            if raw is not None and family in (socket.AF_INET, socket.AF_INET6):
                found.append(ipaddress.ip_interface((ipaddress.ip_address(raw), prefixlen)))
        return found

    # ------------------------------------------------ changing

    def set_link(self, name: str, *, up: bool = False, promisc: bool = False, alias: str = "",
                 master: int = 0) -> None:
        """``ip link set NAME [up] [promisc on] [alias ALIAS] [master INDEX]``."""
        attrs = _name(IFLA_IFNAME, name)
        if alias:
            attrs += _attribute(IFLA_IFALIAS, alias.encode())
        if master:
            attrs += _attribute(IFLA_MASTER, _U32.pack(master))
        words = [word for word, wanted in (("up", up), ("promisc on", promisc), (f"alias {alias}", alias),
                                           (f"master if{master}", master)) if wanted]
        self._change(f"ip link set {name} {' '.join(words)}", RTM_NEWLINK,
                     _ifinfo((IFF_UP if up else 0) | (IFF_PROMISC if promisc else 0)) + attrs)

    def add_bridge(self, name: str, mac: str, mtu: int = 0) -> None:
        """``ip link add name NAME address MAC [mtu MTU] type bridge``."""
        attrs = (_name(IFLA_IFNAME, name) + _attribute(IFLA_ADDRESS, bytes.fromhex(mac.replace(":", "")))
                 + (_attribute(IFLA_MTU, _U32.pack(mtu)) if mtu else b"")
                 + _attribute(IFLA_LINKINFO, _name(IFLA_INFO_KIND, "bridge")))
        self._change(f"ip link add name {name} type bridge", RTM_NEWLINK, _ifinfo() + attrs, NLM_F_CREATE | NLM_F_EXCL)

    def add_veth(self, name: str, peer: str, peer_netns: int, *, mtu: int = 0, peer_mac: str = "") -> None:
        """``ip link add name NAME [mtu MTU] type veth peer name PEER [mtu MTU] [address MAC]
        netns FD``: the peer is made in the namespace of descriptor ``peer_netns``."""
        mtu_attr = _attribute(IFLA_MTU, _U32.pack(mtu)) if mtu else b""
        peer_body = (_ifinfo() + _name(IFLA_IFNAME, peer) + mtu_attr
                     + (_attribute(IFLA_ADDRESS, bytes.fromhex(peer_mac.replace(":", ""))) if peer_mac else b"")
                     + _attribute(IFLA_NET_NS_FD, _U32.pack(peer_netns)))
        info = _name(IFLA_INFO_KIND, "veth") + _attribute(IFLA_INFO_DATA, _attribute(VETH_INFO_PEER, peer_body))
        self._change(f"ip link add name {name} type veth peer name {peer}", RTM_NEWLINK,
                     _ifinfo() + _name(IFLA_IFNAME, name) + mtu_attr + _attribute(IFLA_LINKINFO, info),
                     NLM_F_CREATE | NLM_F_EXCL)

    def set_bridge_port(self, name: str, *, hairpin: bool, isolated: bool) -> None:
        """``ip link set NAME type bridge_slave hairpin on|off isolated on|off``."""
        data = _attribute(IFLA_BRPORT_MODE, bytes([hairpin])) + _attribute(IFLA_BRPORT_ISOLATED, bytes([isolated]))
        info = _name(IFLA_INFO_SLAVE_KIND, "bridge") + _attribute(IFLA_INFO_SLAVE_DATA, data)
        self._change(f"ip link set {name} type bridge_slave hairpin {'on' if hairpin else 'off'} "
                     f"isolated {'on' if isolated else 'off'}", RTM_NEWLINK,
                     _ifinfo() + _name(IFLA_IFNAME, name) + _attribute(IFLA_LINKINFO, info))

    def address(self, add: bool, index: int, name: str,
                address: ipaddress.IPv4Interface | ipaddress.IPv6Interface, *, nodad: bool = False) -> None:
        """``ip addr add|del ADDRESS dev NAME [nodad]`` (``index`` is NAME's)."""
        family = socket.AF_INET if address.version == 4 else socket.AF_INET6
        scope = RT_SCOPE_HOST if address.ip.is_loopback else RT_SCOPE_UNIVERSE  # as ip chooses it
        raw = address.ip.packed
        body = (_IFADDR.pack(family, address.network.prefixlen, IFA_F_NODAD if nodad else 0, scope, index)
                + _attribute(IFA_LOCAL, raw) + _attribute(IFA_ADDRESS, raw))
        self._change(f"ip addr {'add' if add else 'del'} {address} dev {name}{' nodad' if nodad else ''}",
                     RTM_NEWADDR if add else RTM_DELADDR, body, NLM_F_CREATE | NLM_F_EXCL if add else 0)

    def add_route(self, dst: ipaddress.IPv4Network | ipaddress.IPv6Network, gateway: IPAddress | None,
                  index: int, name: str) -> None:
        """``ip route add DST [via GATEWAY] dev NAME`` (main table; link scope without a gateway)."""
        family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
        scope = RT_SCOPE_UNIVERSE if gateway is not None else RT_SCOPE_LINK
        body = (_RTMSG.pack(family, dst.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, scope, RTN_UNICAST, 0)
                + (_attribute(RTA_DST, dst.network_address.packed) if dst.prefixlen else b"")
                + (_attribute(RTA_GATEWAY, gateway.packed) if gateway is not None else b"")
                + _attribute(RTA_OIF, _U32.pack(index)))
        self._change(f"ip route add {dst}{f' via {gateway}' if gateway is not None else ''} dev {name}",
                     RTM_NEWROUTE, body, NLM_F_CREATE | NLM_F_EXCL)

    def delete_link(self, name: str) -> bool:
        """``ip link del NAME``; False when there is none (gone already)."""
        try:
            self._request(f"ip link del {name}", RTM_DELLINK, NLM_F_ACK, _ifinfo() + _name(IFLA_IFNAME, name))
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return False
            raise CNIError(ErrorCode.INTERNAL, f"ip link del {name}: {os.strerror(exc.errno)}") from exc
        return True


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _open_namespace(path: str, expected: NamespaceId) -> int:
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


def _rtnetlink_in(path: str, expected: NamespaceId) -> Rtnetlink:
    """A netlink socket of namespace ``expected``, found at ``path``: this thread steps in to
    make it and straight back."""
    target = _open_namespace(path, expected)
    try:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                _setns(target)
            except OSError as exc:
                raise CNIError(ErrorCode.INTERNAL, f'failed to enter netns "{path}": {exc.strerror}') from exc
            try:
                return Rtnetlink()
            finally:
                try:
                    _setns(own)
                except OSError as exc:  # never go on working in the wrong namespace
                    raise CNIError(ErrorCode.INTERNAL, f"cannot return from netns {path}: {exc.strerror}") from exc
        finally:
            os.close(own)
    finally:
        os.close(target)


# ---------------------------------------------------------------- the guard

def _ns_id(path: str) -> NamespaceId:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def netemu_namespaces() -> dict[NamespaceId, str]:
    """Every namespace bind-mounted at ``/run/netns/netemu-*``, by identity."""
    found: dict[NamespaceId, str] = {}
    try:
        entries = list(os.scandir(NETNS_RUN_DIR))
    except OSError:
        return found
    for entry in entries:
        if entry.name.startswith(NETNS_PREFIX):
            try:
                found[_ns_id(entry.path)] = entry.name
            except OSError:
                continue
    return found


# Names found before, by identity: a hint only, each use checks it again (see netemu_name).
_NAMES: dict[NamespaceId, str] = {}


def _bound_at(name: str, ns: NamespaceId) -> bool:
    """Whether ``/run/netns/<name>`` is a netemu name and is namespace ``ns`` right now."""
    if not name.startswith(NETNS_PREFIX) or "/" in name:
        return False
    try:
        return _ns_id(os.path.join(NETNS_RUN_DIR, name)) == ns
    except OSError:
        return False


def netemu_name(ns: NamespaceId, path: str = "") -> str | None:
    """The name of namespace ``ns`` under ``/run/netns/netemu-*``, or None when it has none.
    Tries the name in ``path`` (when it is such a bind mount), then the name it had before,
    and scans ``/run/netns`` only when neither is (still) bound to ``ns``. Whatever the route,
    the answer is a name whose bind mount is ``ns`` when asked: identities of living
    namespaces are unique."""
    if os.path.dirname(path) == NETNS_RUN_DIR and _bound_at(os.path.basename(path), ns):
        name = os.path.basename(path)
    else:
        name = _NAMES.get(ns, "")
        if not _bound_at(name, ns):
            known = netemu_namespaces()
            name = known.get(ns, "")
            if not name:
                return None
    _NAMES[ns] = name
    return name


def _init_namespace() -> NamespaceId | None:
    try:
        return _ns_id("/proc/1/ns/net")
    except OSError:  # hidden from us (e.g. pid 1 is not dumpable): checks 2 and 3 still hold
        return None


def foreign_interfaces(links: Sequence[Mapping[str, Any]]) -> list[str]:
    """Interfaces besides ``lo`` that netemu did not make (no ``netemu…`` ifalias)."""
    return [str(link.get("ifname")) for link in links
            if link.get("ifname") != "lo" and not str(link.get("ifalias", "")).startswith(OWNED_ALIAS_PREFIX)]


@dataclass(frozen=True)
class Namespace:
    """A namespace the guard accepted: its identity, ``/run/netns`` name and interfaces."""

    id: NamespaceId
    name: str
    links: list[dict[str, Any]]


def guard_node_namespace(netlink: Rtnetlink) -> Namespace:
    """Checks 1-3 of the module docstring on this thread's namespace (``netlink`` is a socket
    made in it), reading only; raises error 100 on refusal."""
    own = _ns_id("/proc/thread-self/ns/net")

    def refuse(why: str) -> CNIError:
        return CNIError(NOT_A_NODE_NAMESPACE, f"refusing to run: {why}",
                        "netemu-cni-bridge configures the network namespace it runs in; run it inside a netemu "
                        "node namespace, e.g. `ip netns exec netemu-<cluster>-node-<name> netemu-cni-bridge`")

    if own == _init_namespace():
        raise refuse("this is the network namespace of pid 1 (the host's)")
    name = netemu_name(own)
    if name is None:
        raise refuse(f"this network namespace is not one netemu created (none of {NETNS_RUN_DIR}/{NETNS_PREFIX}*)")
    links = netlink.links()
    foreign = foreign_interfaces(links)
    if foreign:
        raise refuse(f"network namespace {name} holds interfaces netemu did not make: {', '.join(foreign)}")
    return Namespace(own, name, links)


def guard_pod_namespace(path: str, node: Namespace) -> tuple[Namespace, Rtnetlink]:
    """The same checks for CNI_NETNS, which must also differ from the node's namespace; returns
    it and a netlink socket made in it (the caller closes it). Raises error 101 on refusal."""
    try:
        sandbox = _ns_id(path)
    except OSError as exc:
        raise CNIError(ErrorCode.INTERNAL, f'failed to open netns "{path}": {exc.strerror}') from exc

    def refuse(why: str) -> CNIError:
        return CNIError(NOT_A_POD_NAMESPACE, f"refusing CNI_NETNS {path}: {why}",
                        f"CNI_NETNS must be a netemu pod namespace ({NETNS_RUN_DIR}/{NETNS_PREFIX}*)")

    if sandbox == node.id:
        raise refuse("it is the plugin's own (node) namespace")
    if sandbox == _init_namespace():
        raise refuse("it is the network namespace of pid 1 (the host's)")
    name = netemu_name(sandbox, path)
    if name is None:
        raise refuse("it is not a namespace netemu created")
    netlink = _rtnetlink_in(path, sandbox)
    try:
        links = netlink.links()
        foreign = foreign_interfaces(links)
        if foreign:
            raise refuse(f"it holds interfaces netemu did not make: {', '.join(foreign)}")
    except BaseException:
        netlink.close()
        raise
    return Namespace(sandbox, name, links), netlink


# ---------------------------------------------------------------- IPAM

def _ipam_type(netconf: NetConf) -> str:
    value = netconf.ipam.get("type", "") if netconf.ipam else ""
    if not isinstance(value, str):
        raise _decode_error("ipam.type", "string", value)
    if "/" in value or value in (".", ".."):
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"invalid ipam type {value!r}")
    return value


def _exec_ipam(command: str, args: CmdArgs, ipam_type: str) -> Result | None:
    """The IPAM executable ``ipam_type`` from CNI_PATH, given this plugin's config and
    environment with CNI_COMMAND replaced, as libcni's ``ipam.Exec*`` does."""
    plugin = next((os.path.join(d, ipam_type) for d in args.path
                   if os.access(os.path.join(d, ipam_type), os.X_OK)), None)
    if plugin is None:
        raise CNIError(ErrorCode.INTERNAL, f'failed to find plugin "{ipam_type}" in path {list(args.path)}')
    env = {**os.environ, "CNI_COMMAND": command, "CNI_CONTAINERID": args.container_id,
           "CNI_NETNS": args.netns, "CNI_IFNAME": args.ifname, "CNI_ARGS": format_cni_args(args.args),
           "CNI_PATH": os.pathsep.join(args.path)}
    try:
        proc = subprocess.run([plugin], input=json.dumps(dict(args.config)), env=env, capture_output=True, check=False,
                              text=True, timeout=IP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CNIError(ErrorCode.INTERNAL, f"{plugin}: {exc}") from exc
    try:
        out = json.loads(proc.stdout) if proc.stdout.strip() else None
    except ValueError as exc:
        raise CNIError(ErrorCode.DECODING_FAILURE, f"{plugin}: unreadable output: {proc.stdout[:200]!r}") from exc
    if proc.returncode != 0:
        if isinstance(out, dict) and isinstance(out.get("code"), int):
            raise CNIError(out["code"], str(out.get("msg", "")), str(out.get("details", "")))
        raise CNIError(ErrorCode.INTERNAL, f"{plugin} failed with status {proc.returncode}: {proc.stderr.strip()}")
    return Result.from_json(out) if command == "ADD" else None


def ipam_add(args: CmdArgs, ipam_type: str) -> Result:
    if ipam_type in IN_PROCESS_IPAM:
        config = host_local.load_config(args.netconf, args.args)
        return host_local.allocate(config, args.container_id, args.ifname, args.netconf.cni_version)
    result = _exec_ipam("ADD", args, ipam_type)
    assert result is not None
    return result


def ipam_del(args: CmdArgs, ipam_type: str) -> None:
    if ipam_type in IN_PROCESS_IPAM:
        host_local.release(host_local.load_config(args.netconf, args.args), args.container_id, args.ifname)
    elif ipam_type:
        _exec_ipam("DEL", args, ipam_type)


def ipam_check(args: CmdArgs, ipam_type: str) -> None:
    if ipam_type in IN_PROCESS_IPAM:
        host_local.verify(host_local.load_config(args.netconf, args.args), args.container_id, args.ifname,
                          args.netconf.prev_result)
    elif ipam_type:
        _exec_ipam("CHECK", args, ipam_type)


# ---------------------------------------------------------------- ADD

def _gateways(ipam_result: Result, conf: BridgeConfig) -> tuple[tuple[IPConfig, ...], tuple[Route, ...]]:
    """The reference's ``calcGateways``: every IP on the container interface (index 2), a
    gateway of ``.1`` when IPAM gave none and the bridge is the gateway, and a default route
    per family with ``isDefaultGateway`` unless IPAM routes one via a gateway already."""
    ips = []
    routes = list(ipam_result.routes)
    defaults_found: set[int] = set()
    for ipc in ipam_result.ips:
        gateway = ipc.gateway
        if gateway is None and conf.is_gateway:
            gateway = ipc.address.network.network_address + 1
        ips.append(IPConfig(ipc.address, gateway, interface=2))
        family = ipc.address.version
        if conf.is_default_gateway and family not in defaults_found:
            default = ipaddress.ip_network("0.0.0.0/0" if family == 4 else "::/0")
            if not any(r.dst == default and r.gw is not None for r in routes):
                routes.append(Route(default, gateway))
            defaults_found.add(family)
    return tuple(ips), tuple(routes)


AddressChange = tuple[bool, ipaddress.IPv4Interface | ipaddress.IPv6Interface]  # (add?, address)


def _gateway_changes(conf: BridgeConfig, ips: Sequence[IPConfig],
                     present: Sequence[ipaddress.IPv4Interface | ipaddress.IPv6Interface]) -> list[AddressChange]:
    """The reference's ``ensureAddr`` for each gateway: nothing when the bridge has it, an error
    (or, with ``forceAddress``, a replacement) when it has another address of that family that
    conflicts (any IPv4 one; an overlapping IPv6 one)."""
    changes: list[AddressChange] = []
    wanted: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = []
    for ipc in ips:
        if ipc.gateway is not None:
            gw = ipaddress.ip_interface(f"{ipc.gateway}/{ipc.address.network.prefixlen}")
            if gw not in wanted:
                wanted.append(gw)
    current = list(present)
    for gw in wanted:
        if gw in current:
            continue
        for other in list(current):
            conflict = other.version == gw.version and (
                gw.version == 4 or gw.ip in other.network or other.ip in gw.network)
            if not conflict:
                continue
            if not conf.force_address:
                raise CNIError(ErrorCode.INTERNAL, f'"{conf.bridge}" already has an IP address different from {gw}')
            changes.append((False, other))
            current.remove(other)
        changes.append((True, gw))
        current.append(gw)
    return changes


def _configure_node(netlink: Rtnetlink, conf: BridgeConfig, bridge: Mapping[str, Any] | None, veth: str,
                    args: CmdArgs, pod: Namespace, gateway_changes: Sequence[AddressChange]) -> None:
    """The node's side: the bridge (made when missing), the host veth on it, the gateways."""
    if bridge is None:
        netlink.add_bridge(conf.bridge, _random_mac(), conf.mtu)
        netlink.set_link(conf.bridge, alias=f"{OWNED_ALIAS_PREFIX}-cni:bridge")
        bridge = netlink.link(conf.bridge)
        if bridge is None:
            raise CNIError(ErrorCode.INTERNAL, f"bridge {conf.bridge} vanished after it was made")
    netlink.set_link(conf.bridge, up=True, promisc=conf.promisc_mode)
    pod_netns = _open_namespace(args.netns, pod.id)
    try:
        netlink.add_veth(veth, args.ifname, pod_netns, mtu=conf.mtu, peer_mac=conf.mac)
    finally:
        os.close(pod_netns)
    netlink.set_link(veth, alias=_owned_alias(args.container_id, args.ifname), master=bridge["ifindex"])
    netlink.set_bridge_port(veth, hairpin=conf.hairpin_mode, isolated=conf.port_isolation)
    netlink.set_link(veth, up=True)
    for add, address in gateway_changes:
        netlink.address(add, bridge["ifindex"], conf.bridge, address)


def _configure_pod(netlink: Rtnetlink, args: CmdArgs, ips: Sequence[IPConfig],
                   routes: Sequence[Route]) -> dict[str, Any]:
    """The reference's ``ConfigureIface``: addresses, link up, routes (a route without a
    gateway goes via the first gateway of its family), plus ``lo`` up. Returns the interface."""
    ifname = args.ifname
    netlink.set_link(ifname, alias=_owned_alias(args.container_id, ifname))
    netlink.set_link("lo", up=True)
    link = netlink.link(ifname)
    if link is None:
        raise CNIError(ErrorCode.INTERNAL, f"{ifname} vanished from the container after it was made")
    gateways: dict[int, Any] = {}
    for ipc in ips:
        netlink.address(True, link["ifindex"], ifname, ipc.address, nodad=ipc.address.version == 6)
        if ipc.gateway is not None:
            gateways.setdefault(ipc.gateway.version, ipc.gateway)
    netlink.set_link(ifname, up=True)
    for route in routes:
        gw = route.gw if route.gw is not None else gateways.get(route.dst.version)
        netlink.add_route(route.dst, gw, link["ifindex"], ifname)
    return link


def _random_mac() -> str:
    octets = bytearray(os.urandom(6))
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in octets)


def _enable_forwarding(families: set[int]) -> None:
    """IP forwarding in this thread's namespace (``/proc/sys/net`` follows the calling thread)."""
    for family in sorted(families):
        path = _FORWARDING[family]
        try:
            with open(path, "r+") as file:
                if file.read().strip() != "1":
                    file.seek(0)
                    file.write("1")
        except OSError as exc:
            raise CNIError(ErrorCode.INTERNAL, f"failed to enable forwarding ({path}): {exc.strerror}") from exc


def _wait_port_up(netlink: Rtnetlink, veth: str) -> dict[str, Any]:
    deadline = time.monotonic() + PORT_UP_WAIT
    pause = 0.0005
    while True:
        link = netlink.link(veth)
        state = link.get("operstate", "") if link is not None else "missing"
        if link is not None and state == "UP":
            return link
        if time.monotonic() >= deadline:
            raise CNIError(ErrorCode.INTERNAL, f"bridge port in error state: {state}")
        time.sleep(pause)
        pause = min(pause * 2, 0.01)


def _undo_add(args: CmdArgs, netlink: Rtnetlink, veth: str, ipam_type: str) -> None:
    """Removes what a failed ADD made (the veth made here, its peer goes with it; the IPAM
    reservation). A failure while undoing goes to stderr: the error to report is the first."""
    try:
        netlink.delete_link(veth)
    except CNIError as exc:
        print(f"netemu-cni-bridge: cleanup: {exc}", file=sys.stderr)
    try:
        if ipam_type:
            ipam_del(args, ipam_type)
    except CNIError as exc:
        print(f"netemu-cni-bridge: cleanup: {exc}", file=sys.stderr)


def cmd_add(args: CmdArgs) -> Result:
    with Rtnetlink() as netlink:
        node = guard_node_namespace(netlink)  # first: nothing happens before it accepts
        conf = load_config(args.netconf, args.args)
        _check_ifname(args.ifname)
        pod, pod_netlink = guard_pod_namespace(args.netns, node)
        with pod_netlink:
            return _add(args, conf, netlink, node, pod, pod_netlink)


def _add(args: CmdArgs, conf: BridgeConfig, netlink: Rtnetlink, node: Namespace, pod: Namespace,
         pod_netlink: Rtnetlink) -> Result:
    if _find(pod.links, args.ifname) is not None:
        raise CNIError(ErrorCode.INTERNAL, f"container veth name provided ({args.ifname}) already exists")
    veth = host_veth_name(args.container_id, args.ifname)
    if _find(node.links, veth) is not None:
        raise CNIError(ErrorCode.INTERNAL, f"host veth {veth} of container {args.container_id} exists already")
    bridge = _find(node.links, conf.bridge)
    if bridge is not None and _kind(bridge) != "bridge":
        raise CNIError(ErrorCode.INTERNAL, f'"{conf.bridge}" already exists but is not a bridge')
    bridge_addresses = netlink.addresses(bridge["ifindex"]) if bridge is not None and conf.is_gateway else []
    ipam_type = _ipam_type(args.netconf)

    ipam_result = ipam_add(args, ipam_type) if ipam_type else Result(args.netconf.cni_version)
    try:
        if ipam_type and not ipam_result.ips:
            raise CNIError(ErrorCode.INTERNAL, "IPAM plugin returned missing IP config")
        ips, routes = _gateways(ipam_result, conf)
        gateway_changes = _gateway_changes(conf, ips, bridge_addresses) if conf.is_gateway else []
        _configure_node(netlink, conf, bridge, veth, args, pod, gateway_changes)
        pod_link = _configure_pod(pod_netlink, args, ips, routes)
        if conf.is_gateway and ips:
            _enable_forwarding({ipc.address.version for ipc in ips})
        host_link = _wait_port_up(netlink, veth)
        bridge_link = netlink.link(conf.bridge)  # read again: a bridge without a MAC of its own takes its ports'
        if bridge_link is None:
            raise CNIError(ErrorCode.INTERNAL, f"bridge {conf.bridge} vanished")
    except BaseException:
        _undo_add(args, netlink, veth, ipam_type)
        raise
    interfaces = (Interface(conf.bridge, bridge_link.get("address", "")),
                  Interface(veth, host_link.get("address", "")),
                  Interface(args.ifname, pod_link.get("address", ""), sandbox=args.netns))
    dns = args.netconf.dns if not args.netconf.dns.is_empty() else ipam_result.dns
    return Result(args.netconf.cni_version, interfaces, ips, routes, dns)


# ---------------------------------------------------------------- DEL

def cmd_del(args: CmdArgs) -> None:
    """Idempotent. Checks only what it needs (no refusal of ipMasq and the like: whatever was
    never added is simply not there)."""
    with Rtnetlink() as netlink:
        node = guard_node_namespace(netlink)
        ipam_type = _ipam_type(args.netconf)
        veth = host_veth_name(args.container_id, args.ifname)
        if _find(node.links, veth) is not None:  # the guard vouched that every link here is netemu's
            netlink.delete_link(veth)  # gone meanwhile is fine
    if ipam_type:
        ipam_del(args, ipam_type)


# ---------------------------------------------------------------- CHECK

def _check_mac(expected: str, link: Mapping[str, Any], what: str) -> None:
    if expected and expected.lower() != str(link.get("address", "")).lower():
        raise CNIError(ErrorCode.INTERNAL, f"{what} {link.get('ifname')} Mac doesn't match: {expected}")


def _normal_dst(dst: str, family: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if dst == "default":
        return ipaddress.ip_network("0.0.0.0/0" if family == 4 else "::/0")
    return ipaddress.ip_network(dst, strict=False)


def _check_ips_and_routes(prev: Result, ifname: str, pod_index: int, pod_ns: str) -> None:
    held = set()
    for entry in _json(["addr", "show", "dev", ifname], pod_ns):
        for info in entry.get("addr_info", []):
            held.add(ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}"))
    for ipc in prev.ips:
        if ipc.interface == pod_index and ipc.address not in held:
            raise CNIError(ErrorCode.INTERNAL, f"Failed to match addr {ipc.address} on interface {ifname}")
    found = []
    for family, flag in ((4, "-4"), (6, "-6")):
        for route in _json([flag, "route", "show"], pod_ns):
            found.append((_normal_dst(route.get("dst", ""), family), route.get("gateway")))
    for route in prev.routes:
        if not any(dst == route.dst and (route.gw is None or gw == str(route.gw)) for dst, gw in found):
            raise CNIError(ErrorCode.INTERNAL, f"Failed to match route {route.to_json()} in the container")


def cmd_check(args: CmdArgs) -> None:
    with Rtnetlink() as netlink:
        node = guard_node_namespace(netlink)
    conf = load_config(args.netconf, args.args)
    prev = args.netconf.prev_result
    if prev is None:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "Required prevResult missing")
    ipam_type = _ipam_type(args.netconf)
    if ipam_type:
        ipam_check(args, ipam_type)
    pod, pod_netlink = guard_pod_namespace(args.netns, node)
    pod_netlink.close()

    bridge_entry = next((i for i in prev.interfaces if i.name == conf.bridge and not i.sandbox), None)
    pod_index, pod_entry = next(((n, i) for n, i in enumerate(prev.interfaces)
                                 if i.name == args.ifname and i.sandbox == args.netns), (-1, None))
    bridge = _find(node.links, conf.bridge)
    if bridge_entry is None or bridge is None or _kind(bridge) != "bridge":
        raise CNIError(ErrorCode.INTERNAL, f"CNI created bridge {conf.bridge} in host namespace was not found")
    _check_mac(bridge_entry.mac, bridge, "Bridge interface")
    if ("PROMISC" in bridge.get("flags", [])) != conf.promisc_mode:
        raise CNIError(ErrorCode.INTERNAL, f"Bridge interface {conf.bridge} configured Promisc Mode "
                       f"{conf.promisc_mode} doesn't match current state")
    if pod_entry is None:
        raise CNIError(ErrorCode.INTERNAL, f"Sandbox in prevResult doesn't match configured netns: {args.netns}")
    pod_link = _find(pod.links, args.ifname)
    if pod_link is None or _kind(pod_link) != "veth":
        raise CNIError(ErrorCode.INTERNAL, f"CNI created interface in container {args.ifname} not found")
    _check_mac(pod_entry.mac, pod_link, "Interface")
    host = None
    for entry in prev.interfaces:
        link = _find(node.links, entry.name) if entry is not bridge_entry and not entry.sandbox else None
        if (link is not None and _kind(link) == "veth" and link.get("master") == conf.bridge
                and link.get("link_index") == pod_link.get("ifindex") and pod_link.get("link_index") == link.get("ifindex")):
            _check_mac(entry.mac, link, "Interface")
            host = link
            break
    if host is None:
        raise CNIError(ErrorCode.INTERNAL, f"CNI veth created for bridge {conf.bridge} was not found")
    _check_ips_and_routes(prev, args.ifname, pod_index, pod.name)


# ---------------------------------------------------------------- GC

def cmd_gc(args: CmdArgs) -> None:
    """CNI 1.1 GC: releases addresses of attachments the runtime no longer knows (links die
    with their pod namespaces)."""
    ipam_type = _ipam_type(args.netconf)
    if ipam_type in IN_PROCESS_IPAM:
        host_local.cmd_gc(args)
    elif ipam_type:
        _exec_ipam("GC", args, ipam_type)


PLUGIN = Plugin(add=cmd_add, check=cmd_check, delete=cmd_del, about=ABOUT, gc=cmd_gc)


def main() -> NoReturn:
    plugin_main(cmd_add, cmd_check, cmd_del, PLUGIN.versions, ABOUT, gc=cmd_gc)


if __name__ == "__main__":
    main()
