"""The bridge plugin: a pod's veth pair on its node's bridge, for netemu's netns backend.

Owns ADD/CHECK/DEL/GC of a CNI "bridge" network the way containernetworking/plugins'
``plugins/main/bridge`` does them. ADD ensures the bridge (``bridge``, default ``cni0``: up; with
``isGateway`` the gateway address on it and IP forwarding on), makes a veth pair whose host side
``veth<hash of container ID and ifname>`` joins the bridge (``hairpinMode``, ``mtu``) and whose
other side, named CNI_IFNAME, is created straight inside CNI_NETNS and gets the IPAM addresses,
the routes (plus a default route via the gateway with ``isDefaultGateway``) and ``lo`` up. The
result lists [bridge, host veth, container interface (with sandbox)], and every IP points at the
container interface (index 2). IPAM: as an executable the plugin runs ``ipam.type`` from
CNI_PATH, ``host-local`` included, as the reference does (the IPAM plugin's stderr is passed on,
and a failed IPAM ADD is followed by an IPAM DEL, as the spec's delegation rules ask); called
in-process (``skel.invoke``), ``host-local`` is netemu's own, run in-process. ``ipMasq: true``
(and ``vlan``, ``vlanTrunk``, ``macspoofchk``) is refused with code 2: netemu never NATs. DEL
deletes the host veth (its peer goes with it) and releases the addresses; it never enters
CNI_NETNS and succeeds when things are gone already. CHECK compares ``prevResult`` with the
interfaces, addresses and routes found. STATUS (CNI 1.1) fails, code 50, wherever ADD would
refuse whatever the container: outside a netemu node namespace, with a configuration ADD
refuses, with an IPAM plugin that is missing or not ready (host-local: no free address).

Concurrency. ADD, CHECK and DEL of one node namespace take an exclusive ``flock`` on that
namespace itself (``/proc/thread-self/ns/net``: every opener of one namespace shares its inode),
so the guard never sees another call's half-made interface, and making the bridge, its gateway
address and the routes is idempotent as in the reference (a bridge, address or route that is
there already is used, not an error): 8 parallel ADDs on a node without a bridge all succeed. A
second attachment of one container (another CNI_IFNAME) keeps the first's default route.

Guard. Like the reference, the plugin configures the namespace it runs in, so before anything
else ADD, CHECK and DEL check that the calling thread's network namespace
(``/proc/thread-self/ns/net``):
  1. is not pid 1's (when pid 1's can be read: some containers hide it),
  2. is one netemu created: the one bind-mounted at ``/run/netns/netemu-*``,
  3. holds no interface besides ``lo`` whose ``ifalias`` does not start with ``netemu`` (netemu
     marks every interface it makes; a host's ``eth0`` is never marked). DEL skips this check:
     it removes only the veth that carries this attachment's own mark, and releases the
     addresses, whatever else the namespace holds.
ADD checks CNI_NETNS the same way and that it is not the plugin's own namespace. A refusal is
error 100 (101 for CNI_NETNS) and leaves no trace: no IPAM reservation, no interface.

Run it as ``ip netns exec netemu-<cluster>-node-<name> netemu-cni-bridge``, or in-process
(``skel.invoke(PLUGIN, ...)``) on a worker thread switched into the node namespace
(``netemu.fabric.netns.namespaces.call_in``). Links, addresses and routes are read and changed
over rtnetlink (``netlink.Rtnetlink``: the requests ``ip`` sends, built by pyroute2, without an
``ip`` process per pod), on a socket made in the calling thread's namespace and, for the pod's
side, on one made while the thread steps into CNI_NETNS and straight back; each lives for one
call. Blocking; never call it on an event-loop thread.
"""
from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import Any, Iterator, NoReturn

from netemu.errors import CNIError

from . import execplugin, host_local
from .netlink import BridgePort, NamespaceId, Rtnetlink, open_namespace
from .skel import CmdArgs, Plugin, plugin_main
from .types import (
    ErrorCode,
    Interface,
    IPConfig,
    NetConf,
    Result,
    Route,
)

PLUGIN_TYPE = "netemu-cni-bridge"
ABOUT = "netemu CNI bridge plugin (veth pairs on a node namespace's bridge, IPAM by host-local)"
DEFAULT_BRIDGE = "cni0"
NETNS_RUN_DIR = "/run/netns"
NETNS_PREFIX = "netemu-"
OWNED_ALIAS_PREFIX = "netemu"  # the ifalias prefix of every interface netemu makes
NOT_A_NODE_NAMESPACE = 100
NOT_A_POD_NAMESPACE = 101
NOT_AVAILABLE = 50  # CNI 1.1 STATUS: the plugin cannot service ADD requests
IN_PROCESS_IPAM = ("host-local",)
PORT_UP_WAIT = 2.5  # seconds, as the reference waits for the bridge port

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")  # interface names this plugin accepts
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_FORWARDING = {4: "/proc/sys/net/ipv4/ip_forward", 6: "/proc/sys/net/ipv6/conf/all/forwarding"}


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


# ---------------------------------------------------------------- links

def _find(links: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    return next((link for link in links if link.get("ifname") == name), None)


def _kind(link: Mapping[str, Any]) -> str:
    return link.get("linkinfo", {}).get("info_kind", "")


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


def guard_node_namespace(netlink: Rtnetlink, *, allow_foreign: bool = False) -> Namespace:
    """Checks 1-3 of the module docstring on this thread's namespace (``netlink`` is a socket
    made in it; ``allow_foreign`` skips check 3), reading only; raises error 100 on refusal."""
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
    if foreign and not allow_foreign:
        raise refuse(f"network namespace {name} holds interfaces netemu did not make: {', '.join(foreign)}")
    return Namespace(own, name, links)


@contextlib.contextmanager
def node_locked() -> Iterator[None]:
    """This thread's network namespace, locked against every other ADD/CHECK/DEL in it (see
    the module docstring); a descriptor of its own per call, so threads exclude each other too."""
    try:
        fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CNIError(ErrorCode.INTERNAL, f"cannot open this network namespace: {exc.strerror}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise CNIError(ErrorCode.INTERNAL, f"cannot lock this network namespace: {exc.strerror}") from exc
        yield
    finally:
        os.close(fd)  # releases the lock


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
    netlink = Rtnetlink.inside(path, sandbox)
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
    return execplugin.exec_plugin(command, args.config, container_id=args.container_id, netns=args.netns,
                                  ifname=args.ifname, path=args.path, args=args.args, plugin_type=ipam_type)


def _in_process(args: CmdArgs, ipam_type: str) -> bool:
    """netemu's own host-local runs in-process only when the plugin itself does; an executable
    looks its IPAM plugin up in CNI_PATH, whatever its type, as the reference does."""
    return args.in_process and ipam_type in IN_PROCESS_IPAM


def ipam_add(args: CmdArgs, ipam_type: str) -> Result:
    if _in_process(args, ipam_type):
        config = host_local.load_config(args.netconf, args.args)
        return host_local.allocate(config, args.container_id, args.ifname, args.netconf.cni_version)
    result = _exec_ipam("ADD", args, ipam_type)
    if result is None:
        raise CNIError(ErrorCode.INTERNAL, f"IPAM plugin {ipam_type} returned no result")
    return result


def ipam_del(args: CmdArgs, ipam_type: str) -> None:
    if _in_process(args, ipam_type):
        host_local.release(host_local.load_config(args.netconf, args.args), args.container_id, args.ifname)
    elif ipam_type:
        _exec_ipam("DEL", args, ipam_type)


def ipam_check(args: CmdArgs, ipam_type: str) -> None:
    if _in_process(args, ipam_type):
        host_local.verify(host_local.load_config(args.netconf, args.args), args.container_id, args.ifname,
                          args.netconf.prev_result)
    elif ipam_type:
        _exec_ipam("CHECK", args, ipam_type)


def ipam_status(args: CmdArgs, ipam_type: str) -> None:
    if _in_process(args, ipam_type):
        host_local.status(host_local.load_config(args.netconf, args.args))
    elif ipam_type:
        _exec_ipam("STATUS", args, ipam_type)


def _ipam_add_or_undo(args: CmdArgs, ipam_type: str) -> Result:
    """IPAM ADD; when it fails, IPAM DEL before the failure is reported (the spec: "If, on
    ADD, a delegated plugin fails, the upper plugin should execute again with DEL")."""
    try:
        return ipam_add(args, ipam_type)
    except CNIError:
        try:
            ipam_del(args, ipam_type)
        except CNIError as exc:
            print(f"netemu-cni-bridge: cleanup: {exc}", file=sys.stderr)
        raise


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
    """The node's side: the bridge (made when missing) up, the host veth on it, the gateways.
    Each request does as much as one ``ip`` command can, and what is so already is skipped."""
    wanted_flags = {"UP", "PROMISC"} if conf.promisc_mode else {"UP"}
    if bridge is None:
        made = netlink.add_bridge(conf.bridge, _random_mac(), conf.mtu)  # there already: use it, as the reference
        bridge = netlink.link(conf.bridge)
        if bridge is None:
            raise CNIError(ErrorCode.INTERNAL, f"bridge {conf.bridge} vanished after it was made")
        if not made and _kind(bridge) != "bridge":
            raise CNIError(ErrorCode.INTERNAL, f'"{conf.bridge}" already exists but is not a bridge')
        netlink.set_link(conf.bridge, up=True, promisc=conf.promisc_mode, alias=f"{OWNED_ALIAS_PREFIX}-cni:bridge")
    elif not wanted_flags <= set(bridge.get("flags", [])):
        netlink.set_link(conf.bridge, up=True, promisc=conf.promisc_mode)
    pod_netns = open_namespace(args.netns, pod.id)
    try:
        netlink.add_veth(veth, args.ifname, pod_netns, master=bridge["ifindex"], mtu=conf.mtu, peer_mac=conf.mac)
    finally:
        os.close(pod_netns)
    netlink.set_link(veth, up=True, alias=_owned_alias(args.container_id, args.ifname),
                     port=BridgePort(hairpin=conf.hairpin_mode, isolated=conf.port_isolation))
    for add, address in gateway_changes:
        netlink.address(add, bridge["ifindex"], conf.bridge, address, exist_ok=add)


def _configure_pod(netlink: Rtnetlink, args: CmdArgs, pod: Namespace, ips: Sequence[IPConfig],
                   routes: Sequence[Route]) -> dict[str, Any]:
    """The reference's ``ConfigureIface``: addresses, link up, routes (a route without a
    gateway goes via the first gateway of its family), plus ``lo`` up. Returns the interface."""
    ifname = args.ifname
    loopback = _find(pod.links, "lo")
    if loopback is None or "UP" not in loopback.get("flags", []):
        netlink.set_link("lo", up=True)
    link = netlink.link(ifname)
    if link is None:
        raise CNIError(ErrorCode.INTERNAL, f"{ifname} vanished from the container after it was made")
    gateways: dict[int, Any] = {}
    for ipc in ips:
        netlink.address(True, link["ifindex"], ifname, ipc.address, nodad=ipc.address.version == 6)
        if ipc.gateway is not None:
            gateways.setdefault(ipc.gateway.version, ipc.gateway)
    netlink.set_link(ifname, up=True, alias=_owned_alias(args.container_id, ifname))
    for route in routes:  # one there already (another attachment's default route) is kept: the first wins
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
    with node_locked(), Rtnetlink() as netlink:
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

    ipam_result = _ipam_add_or_undo(args, ipam_type) if ipam_type else Result(args.netconf.cni_version)
    try:
        if ipam_type and not ipam_result.ips:
            raise CNIError(ErrorCode.INTERNAL, "IPAM plugin returned missing IP config")
        ips, routes = _gateways(ipam_result, conf)
        gateway_changes = _gateway_changes(conf, ips, bridge_addresses) if conf.is_gateway else []
        _configure_node(netlink, conf, bridge, veth, args, pod, gateway_changes)
        pod_link = _configure_pod(pod_netlink, args, pod, ips, routes)
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
    never added is simply not there). Interfaces netemu did not make in the node namespace do
    not stop it: it deletes only the veth marked as this attachment's, then releases the IPs."""
    with node_locked(), Rtnetlink() as netlink:
        node = guard_node_namespace(netlink, allow_foreign=True)
        ipam_type = _ipam_type(args.netconf)
        veth = host_veth_name(args.container_id, args.ifname)
        link = _find(node.links, veth)
        if link is not None and str(link.get("ifalias", "")) == _owned_alias(args.container_id, args.ifname):
            netlink.delete_link(veth)  # gone meanwhile is fine
        elif link is not None:
            print(f"netemu-cni-bridge: leaving {veth} alone: it is not marked as {args.container_id}/{args.ifname}'s",
                  file=sys.stderr)
        if ipam_type:
            ipam_del(args, ipam_type)


# ---------------------------------------------------------------- CHECK

def _check_mac(expected: str, link: Mapping[str, Any], what: str) -> None:
    if expected and expected.lower() != str(link.get("address", "")).lower():
        raise CNIError(ErrorCode.INTERNAL, f"{what} {link.get('ifname')} Mac doesn't match: {expected}")


def _check_ips_and_routes(prev: Result, ifname: str, pod_index: int, pod_link: Mapping[str, Any],
                          pod_netlink: Rtnetlink) -> None:
    held = set(pod_netlink.addresses(pod_link["ifindex"], link_scope=True))
    for ipc in prev.ips:
        if ipc.interface == pod_index and ipc.address not in held:
            raise CNIError(ErrorCode.INTERNAL, f"Failed to match addr {ipc.address} on interface {ifname}")
    found = pod_netlink.routes()
    for route in prev.routes:
        if not any(dst == route.dst and (route.gw is None or gw == str(route.gw)) for dst, gw in found):
            raise CNIError(ErrorCode.INTERNAL, f"Failed to match route {route.to_json()} in the container")


def cmd_check(args: CmdArgs) -> None:
    with node_locked(), Rtnetlink() as netlink:
        node = guard_node_namespace(netlink)
    conf = load_config(args.netconf, args.args)
    prev = args.netconf.prev_result
    if prev is None:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "Required prevResult missing")
    ipam_type = _ipam_type(args.netconf)
    if ipam_type:
        ipam_check(args, ipam_type)
    pod, pod_netlink = guard_pod_namespace(args.netns, node)
    with pod_netlink:
        _check(args, conf, prev, node, pod, pod_netlink)


def _check(args: CmdArgs, conf: BridgeConfig, prev: Result, node: Namespace, pod: Namespace,
           pod_netlink: Rtnetlink) -> None:
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
    _check_ips_and_routes(prev, args.ifname, pod_index, pod_link, pod_netlink)


# ---------------------------------------------------------------- GC

def cmd_gc(args: CmdArgs) -> None:
    """CNI 1.1 GC: releases addresses of attachments the runtime no longer knows (links die
    with their pod namespaces)."""
    ipam_type = _ipam_type(args.netconf)
    if _in_process(args, ipam_type):
        host_local.cmd_gc(args)
    elif ipam_type:
        _exec_ipam("GC", args, ipam_type)


# ---------------------------------------------------------------- STATUS

def cmd_status(args: CmdArgs) -> None:
    """CNI 1.1 STATUS: success only where an ADD would not be refused whatever the container.
    Refusals for the place or the IPAM plugin are code 50 ("not available"); a configuration
    ADD refuses keeps its own code (2, 6, 7)."""
    conf_ipam = _ipam_type(args.netconf)
    load_config(args.netconf, args.args)
    try:
        with node_locked(), Rtnetlink() as netlink:
            guard_node_namespace(netlink)
        if conf_ipam:
            ipam_status(args, conf_ipam)
    except CNIError as exc:
        if exc.code in (ErrorCode.UNSUPPORTED_FIELD, ErrorCode.DECODING_FAILURE, ErrorCode.INVALID_NETWORK_CONFIG,
                        ErrorCode.INCOMPATIBLE_VERSION):
            raise
        raise CNIError(NOT_AVAILABLE, exc.msg, exc.details) from exc


PLUGIN = Plugin(add=cmd_add, check=cmd_check, delete=cmd_del, about=ABOUT, gc=cmd_gc, status=cmd_status)


def main() -> NoReturn:
    plugin_main(cmd_add, cmd_check, cmd_del, PLUGIN.versions, ABOUT, gc=cmd_gc, status=cmd_status)


if __name__ == "__main__":
    main()
