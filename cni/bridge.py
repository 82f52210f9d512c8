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
(``netemu.fabric.netns.namespaces.call_in``): it runs ``ip`` as child processes, which inherit
the calling thread's namespace. Blocking; never call it on an event-loop thread.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
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
from .types import ErrorCode, Interface, IPConfig, NetConf, Result, Route, format_cni_args

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
    """``ip [-n NETNS] ARGS`` (a batch when ``commands`` are given). Without ``netns`` it acts
    on this thread's namespace: only ever called after the guard accepted it."""
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


def _batch(commands: Sequence[str], netns: str = "") -> None:
    if commands:
        _ip(["-batch", "-"], netns=netns, commands=commands)


def _json(args: Sequence[str], netns: str = "") -> list[dict[str, Any]]:
    out = _ip(["-j", *args], netns=netns)
    return json.loads(out) if out.strip() else []


def _links(netns: str = "") -> list[dict[str, Any]]:
    return _json(["-d", "link", "show"], netns)


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


def guard_node_namespace() -> tuple[Namespace, dict[NamespaceId, str]]:
    """Checks 1-3 of the module docstring on this thread's namespace, reading only; returns it
    and the netemu namespaces found. Raises error 100 on refusal."""
    own = _ns_id("/proc/thread-self/ns/net")

    def refuse(why: str) -> CNIError:
        return CNIError(NOT_A_NODE_NAMESPACE, f"refusing to run: {why}",
                        "netemu-cni-bridge configures the network namespace it runs in; run it inside a netemu "
                        "node namespace, e.g. `ip netns exec netemu-<cluster>-node-<name> netemu-cni-bridge`")

    if own == _init_namespace():
        raise refuse("this is the network namespace of pid 1 (the host's)")
    known = netemu_namespaces()
    name = known.get(own)
    if name is None:
        raise refuse(f"this network namespace is not one netemu created (none of {NETNS_RUN_DIR}/{NETNS_PREFIX}*)")
    links = _links()
    foreign = foreign_interfaces(links)
    if foreign:
        raise refuse(f"network namespace {name} holds interfaces netemu did not make: {', '.join(foreign)}")
    return Namespace(own, name, links), known


def guard_pod_namespace(path: str, node: Namespace, known: Mapping[NamespaceId, str]) -> Namespace:
    """The same checks for CNI_NETNS, which must also differ from the node's namespace.
    Raises error 101 on refusal."""
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
    name = known.get(sandbox)
    if name is None:
        raise refuse("it is not a namespace netemu created")
    links = _links(name)
    foreign = foreign_interfaces(links)
    if foreign:
        raise refuse(f"it holds interfaces netemu did not make: {', '.join(foreign)}")
    return Namespace(sandbox, name, links)


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


def _bridge_addresses(bridge: str) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    found = []
    for entry in _json(["addr", "show", "dev", bridge]):
        for info in entry.get("addr_info", []):
            if info.get("family") in ("inet", "inet6") and info.get("scope") != "link":
                found.append(ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}"))
    return found


def _gateway_commands(conf: BridgeConfig, ips: Sequence[IPConfig],
                      present: Sequence[ipaddress.IPv4Interface | ipaddress.IPv6Interface]) -> list[str]:
    """The reference's ``ensureAddr`` for each gateway: nothing when the bridge has it, an error
    (or, with ``forceAddress``, a replacement) when it has another address of that family that
    conflicts (any IPv4 one; an overlapping IPv6 one)."""
    commands: list[str] = []
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
            commands.append(f"addr del {other} dev {conf.bridge}")
            current.remove(other)
        commands.append(f"addr add {gw} dev {conf.bridge}")
        current.append(gw)
    return commands


def _node_commands(conf: BridgeConfig, create_bridge: bool, veth: str, args: CmdArgs, pod_ns: str) -> list[str]:
    mtu = f" mtu {conf.mtu}" if conf.mtu else ""
    commands = []
    if create_bridge:
        from_mac = f" address {_random_mac()}"
        commands += [f"link add name {conf.bridge}{from_mac}{mtu} type bridge",
                     f"link set {conf.bridge} alias {OWNED_ALIAS_PREFIX}-cni:bridge"]
    if conf.promisc_mode:
        commands.append(f"link set {conf.bridge} promisc on")
    peer_mac = f" address {conf.mac}" if conf.mac else ""
    commands += [
        f"link set {conf.bridge} up",
        f"link add name {veth}{mtu} type veth peer name {args.ifname}{mtu}{peer_mac} netns {pod_ns}",
        f"link set {veth} alias {_owned_alias(args.container_id, args.ifname)}",
        f"link set {veth} master {conf.bridge}",
        f"link set {veth} type bridge_slave hairpin {'on' if conf.hairpin_mode else 'off'}"
        f" isolated {'on' if conf.port_isolation else 'off'}",
        f"link set {veth} up",
    ]
    return commands


def _pod_commands(args: CmdArgs, ips: Sequence[IPConfig], routes: Sequence[Route]) -> list[str]:
    """The reference's ``ConfigureIface``: addresses, link up, routes (a route without a
    gateway goes via the first gateway of its family), plus ``lo`` up."""
    ifname = args.ifname
    commands = [f"link set {ifname} alias {_owned_alias(args.container_id, ifname)}", "link set lo up"]
    gateways: dict[int, Any] = {}
    for ipc in ips:
        commands.append(f"addr add {ipc.address} dev {ifname}" + (" nodad" if ipc.address.version == 6 else ""))
        if ipc.gateway is not None:
            gateways.setdefault(ipc.gateway.version, ipc.gateway)
    commands.append(f"link set {ifname} up")
    for route in routes:
        gw = route.gw if route.gw is not None else gateways.get(route.dst.version)
        commands.append(f"route add {route.dst}" + (f" via {gw}" if gw is not None else "") + f" dev {ifname}")
    return commands


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


def _wait_port_up(veth: str) -> dict[str, Any]:
    deadline = time.monotonic() + PORT_UP_WAIT
    while True:
        links = _json(["link", "show", "dev", veth])
        state = links[0].get("operstate", "") if links else "missing"
        if state == "UP":
            return links[0]
        if time.monotonic() >= deadline:
            raise CNIError(ErrorCode.INTERNAL, f"bridge port in error state: {state}")
        time.sleep(0.01)


def _delete_link(name: str) -> None:
    try:
        _batch([f"link del {name}"])
    except CNIError:
        if _find(_links(), name) is not None:  # gone meanwhile is fine
            raise


def _undo_add(args: CmdArgs, veth: str, ipam_type: str) -> None:
    """Removes what a failed ADD made (the veth made here, its peer goes with it; the IPAM
    reservation). A failure while undoing goes to stderr: the error to report is the first."""
    try:
        if _find(_links(), veth) is not None:
            _delete_link(veth)
    except CNIError as exc:
        print(f"netemu-cni-bridge: cleanup: {exc}", file=sys.stderr)
    try:
        if ipam_type:
            ipam_del(args, ipam_type)
    except CNIError as exc:
        print(f"netemu-cni-bridge: cleanup: {exc}", file=sys.stderr)


def cmd_add(args: CmdArgs) -> Result:
    node, known = guard_node_namespace()  # first: nothing happens before it accepts
    conf = load_config(args.netconf, args.args)
    _check_ifname(args.ifname)
    pod = guard_pod_namespace(args.netns, node, known)
    if _find(pod.links, args.ifname) is not None:
        raise CNIError(ErrorCode.INTERNAL, f"container veth name provided ({args.ifname}) already exists")
    veth = host_veth_name(args.container_id, args.ifname)
    if _find(node.links, veth) is not None:
        raise CNIError(ErrorCode.INTERNAL, f"host veth {veth} of container {args.container_id} exists already")
    bridge = _find(node.links, conf.bridge)
    if bridge is not None and _kind(bridge) != "bridge":
        raise CNIError(ErrorCode.INTERNAL, f'"{conf.bridge}" already exists but is not a bridge')
    bridge_addresses = _bridge_addresses(conf.bridge) if bridge is not None else []
    ipam_type = _ipam_type(args.netconf)

    ipam_result = ipam_add(args, ipam_type) if ipam_type else Result(args.netconf.cni_version)
    try:
        if ipam_type and not ipam_result.ips:
            raise CNIError(ErrorCode.INTERNAL, "IPAM plugin returned missing IP config")
        ips, routes = _gateways(ipam_result, conf)
        gateway_commands = _gateway_commands(conf, ips, bridge_addresses) if conf.is_gateway else []
        _batch(_node_commands(conf, bridge is None, veth, args, pod.name) + gateway_commands)
        _batch(_pod_commands(args, ips, routes), pod.name)
        if conf.is_gateway and ips:
            _enable_forwarding({ipc.address.version for ipc in ips})
        host_link = _wait_port_up(veth)
        bridge_link = _json(["link", "show", "dev", conf.bridge])[0]
        pod_link = _json(["link", "show", "dev", args.ifname], pod.name)[0]
    except BaseException:
        _undo_add(args, veth, ipam_type)
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
    node, _ = guard_node_namespace()
    ipam_type = _ipam_type(args.netconf)
    veth = host_veth_name(args.container_id, args.ifname)
    if _find(node.links, veth) is not None:  # the guard vouched that every link here is netemu's
        _delete_link(veth)
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
    node, known = guard_node_namespace()
    conf = load_config(args.netconf, args.args)
    prev = args.netconf.prev_result
    if prev is None:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "Required prevResult missing")
    ipam_type = _ipam_type(args.netconf)
    if ipam_type:
        ipam_check(args, ipam_type)
    pod = guard_pod_namespace(args.netns, node, known)

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
