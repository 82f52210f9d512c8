"""The loopback-alias plugin: a pod's address for netemu's loopback backend.

Owns handing a pod an address inside 127.0.0.0/8 and taking it back. IPAM is delegated
in-process to host-local (the same code, config field ``ipam`` as usual; ``ipam.type`` must be
``host-local`` or absent). Nothing is configured on the host: on Linux all of 127/8 is already
local on ``lo``, so a pod's processes can bind its address at once. The result names one host
interface, ``lo`` (no sandbox), and every IP refers to it. DEL releases (idempotent); CHECK
needs ``prevResult`` and checks its addresses are still held. Usable in-process (``PLUGIN``
with ``skel.invoke``, config from ``network_config``) and as ``netemu-cni-loopback-alias``.
"""
from __future__ import annotations

import ipaddress
from typing import Any, NoReturn

from netemu.errors import CNIError

from . import host_local
from .skel import CmdArgs, Plugin, plugin_main
from .types import ErrorCode, Interface, IPConfig, Result

PLUGIN_TYPE = "netemu-cni-loopback-alias"
ABOUT = "netemu CNI loopback-alias plugin (pod addresses on lo, IPAM by host-local)"
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
INTERFACE = Interface(name="lo")
OUTSIDE_LOOPBACK = "ipam range must be inside 127.0.0.0/8 for the loopback backend"


def network_config(name: str, subnet: str, data_dir: str, *, range_start: str = "", range_end: str = "",
                   gateway: str = "", cni_version: str = "1.0.0") -> dict[str, Any]:
    """The network configuration netemu passes for one node's pod range, e.g.
    ``network_config("node-1", "127.244.1.0/24", "<state>/cni")``."""
    pod_range: dict[str, str] = {"subnet": subnet}
    for key, value in (("rangeStart", range_start), ("rangeEnd", range_end), ("gateway", gateway)):
        if value:
            pod_range[key] = value
    return {
        "cniVersion": cni_version,
        "name": name,
        "type": PLUGIN_TYPE,
        "ipam": {"type": "host-local", "ranges": [[pod_range]], "dataDir": data_dir},
    }


# Checked host-local configs by the text of what they are read from: the loopback backend calls
# ADD with the same network config for every pod of a node, and parsing and checking it again
# (range sets, subnets, requested IPs) was a good part of a pod's start. Failures are not kept.
_CONFIGS: dict[str, host_local.HostLocalConfig] = {}
_CONFIGS_KEPT = 256


def _load(args: CmdArgs) -> host_local.HostLocalConfig:
    netconf = args.netconf
    key = repr((netconf.name, netconf.ipam, netconf.args, netconf.runtime_config, sorted(args.args.items())))
    config = _CONFIGS.get(key)
    if config is None:
        config = _check(args)
        if len(_CONFIGS) >= _CONFIGS_KEPT:
            _CONFIGS.pop(next(iter(_CONFIGS)))
        _CONFIGS[key] = config
    return config


def _check(args: CmdArgs) -> host_local.HostLocalConfig:
    ipam_type = args.netconf.ipam.get("type", "host-local") if args.netconf.ipam else "host-local"
    if ipam_type != "host-local":
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"unsupported ipam type {ipam_type!r}",
                       "the loopback-alias plugin delegates in-process to host-local only")
    config = host_local.load_config(args.netconf, args.args)
    for range_set in config.range_sets:
        for pod_range in range_set:
            if pod_range.subnet.version != 4 or not pod_range.subnet.subnet_of(LOOPBACK):
                raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, OUTSIDE_LOOPBACK, str(pod_range.subnet))
    return config


def cmd_add(args: CmdArgs) -> Result:
    config = _load(args)
    ipam_result = host_local.allocate(config, args.container_id, args.ifname, args.netconf.cni_version)
    outside = [ip.address for ip in ipam_result.ips if ip.address.ip not in LOOPBACK]
    if outside:  # unreachable while _load checks the ranges; kept so no stray address escapes
        host_local.release(config, args.container_id, args.ifname)
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, OUTSIDE_LOOPBACK, ", ".join(map(str, outside)))
    dns = args.netconf.dns if not args.netconf.dns.is_empty() else ipam_result.dns
    ips = tuple(IPConfig(ip.address, ip.gateway, interface=0) for ip in ipam_result.ips)
    return Result(args.netconf.cni_version, (INTERFACE,), ips, ipam_result.routes, dns)


def cmd_del(args: CmdArgs) -> None:
    host_local.release(_load(args), args.container_id, args.ifname)


def cmd_check(args: CmdArgs) -> None:
    config = _load(args)
    prev = args.netconf.prev_result
    if prev is None:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "required prevResult missing")
    if INTERFACE.name not in {i.name for i in prev.interfaces}:
        raise CNIError(ErrorCode.INTERNAL, f"prevResult has no interface {INTERFACE.name!r}")
    for ip in prev.ips:
        if ip.address.ip not in LOOPBACK:
            raise CNIError(ErrorCode.INTERNAL, f"prevResult address {ip.address} is outside {LOOPBACK}")
    host_local.verify(config, args.container_id, args.ifname, prev)


def cmd_gc(args: CmdArgs) -> None:
    host_local.cmd_gc(args)


def cmd_status(args: CmdArgs) -> None:
    host_local.status(_load(args))


PLUGIN = Plugin(add=cmd_add, check=cmd_check, delete=cmd_del, about=ABOUT, gc=cmd_gc, status=cmd_status)


def main() -> NoReturn:
    plugin_main(cmd_add, cmd_check, cmd_del, PLUGIN.versions, ABOUT, gc=cmd_gc, status=cmd_status)


if __name__ == "__main__":
    main()
