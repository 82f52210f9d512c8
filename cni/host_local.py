"""The host-local IPAM plugin: ADD/CHECK/DEL/GC over the allocator and the disk store.

Owns turning a network configuration (plus CNI_ARGS, ``args.cni.ips`` and
``runtimeConfig.ips``/``ipRanges``) into a ``HostLocalConfig``, and the plugin commands, with
the reference plugin's semantics: one IP per range set per ``(container, ifname)``, requested
IPs honoured or refused, partial allocations undone, DEL idempotent; STATUS (CNI 1.1) fails with
code 50 when the store cannot be used or a range set has no address left. The result has ``ips``
(CIDR address and gateway, no interface index), the configured ``routes`` and, when
``resolvConf`` is set, ``dns``. Usable in-process (``PLUGIN`` with ``skel.invoke``; or
``load_config`` + ``allocate``/``release``/``verify`` from another plugin) and as the
executable ``netemu-cni-host-local``.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NoReturn, Sequence

from netemu.errors import CNIError

from .allocator import IPAllocator, RangeSet, allocation_order, canonical_range_sets, range_for, range_set_str
from .disk_store import DiskStore
from .skel import CmdArgs, Plugin, plugin_main
from .store import Store, owned_by
from .types import (DNS, ErrorCode, IPAddress, IPAMConfig, NetConf, Result, Route, check_known_args,
                    range_sets_from_json)

KNOWN_ARGS = {"IP"}
NOT_AVAILABLE = 50  # CNI 1.1 STATUS: the plugin cannot service ADD requests
ABOUT = "netemu CNI host-local IPAM plugin"
# CNI 1.1 GC: the attachments the runtime still knows; everything else is released.
VALID_ATTACHMENTS_KEY = "cni.dev/valid-attachments"


@dataclass(frozen=True)
class HostLocalConfig:
    """Everything one host-local call needs, canonical and checked."""

    network: str
    range_sets: tuple[RangeSet, ...]
    routes: tuple[Route, ...]
    data_dir: str
    resolv_conf: str
    requested_ips: tuple[IPAddress, ...]


def _requested_ip(text: Any, path: str) -> IPAddress:
    """An IP from CNI_ARGS/args/runtimeConfig; a CIDR form is accepted and its prefix dropped."""
    if not isinstance(text, str):
        raise CNIError(ErrorCode.DECODING_FAILURE, f"error unmarshall network config: {path}: expected string")
    try:
        return ipaddress.ip_interface(text.strip()).ip
    except ValueError as exc:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"cannot understand ip: {text}") from exc


def _list_at(data: Mapping[str, Any], keys: Sequence[str]) -> list[Any]:
    for key in keys[:-1]:
        value = data.get(key)
        if not isinstance(value, dict):
            return []
        data = value
    value = data.get(keys[-1])
    if value is None:
        return []
    if not isinstance(value, list):
        raise CNIError(ErrorCode.DECODING_FAILURE, f"error unmarshall network config: {'.'.join(keys)}: expected array")
    return value


def load_config(netconf: NetConf, cni_args: Mapping[str, str]) -> HostLocalConfig:
    """The reference's ``LoadIPAMConfig``: ``ipam`` required, requested IPs from CNI_ARGS
    ``IP`` (comma-separated), ``args.cni.ips`` and ``runtimeConfig.ips``; range sets from
    ``runtimeConfig.ipRanges``, the single-``subnet`` form, then ``ranges``."""
    if not netconf.ipam:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "IPAM config missing 'ipam' key")
    ipam = IPAMConfig.from_json(dict(netconf.ipam))
    check_known_args(cni_args, KNOWN_ARGS)
    requested = [_requested_ip(ip, "CNI_ARGS IP") for ip in cni_args.get("IP", "").split(",") if ip.strip()]
    requested += [_requested_ip(ip, "args.cni.ips") for ip in _list_at(netconf.args, ("cni", "ips"))]
    requested += [_requested_ip(ip, "runtimeConfig.ips") for ip in _list_at(netconf.runtime_config, ("ips",))]
    runtime_ranges = range_sets_from_json(netconf.runtime_config.get("ipRanges"), "runtimeConfig.ipRanges")
    return HostLocalConfig(
        network=netconf.name,
        range_sets=canonical_range_sets(runtime_ranges + ipam.ranges),
        routes=ipam.routes,
        data_dir=ipam.data_dir,
        resolv_conf=ipam.resolv_conf,
        requested_ips=tuple(dict.fromkeys(requested)),
    )


def parse_resolv_conf(path: str) -> DNS:
    """nameserver/domain/search/options lines of a resolv.conf file, as the reference reads them."""
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except OSError as exc:
        raise CNIError(ErrorCode.IO_FAILURE, f"host-local: cannot read resolvConf {path}: {exc}") from exc
    nameservers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    domain = ""
    for line in lines:
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(fields) < 2:
            continue
        keyword, values = fields[0], fields[1:]
        if keyword == "nameserver":
            nameservers.append(values[0])
        elif keyword == "domain":
            domain = values[0]
        elif keyword == "search":
            search = values
        elif keyword == "options":
            options += values
    return DNS(tuple(nameservers), domain, tuple(search), tuple(options))


def open_store(config: HostLocalConfig) -> DiskStore:
    return DiskStore(config.network, config.data_dir)


def _with_store(config: HostLocalConfig, store: Store | None, action: Callable[[Store], Any]) -> Any:
    """Runs ``action`` under the store's lock; opens (and closes) the disk store if none is given."""
    own = store is None
    active: Store = open_store(config) if store is None else store
    try:
        with active.locked():
            return action(active)
    finally:
        if own:
            active.close()


def allocate(config: HostLocalConfig, container_id: str, ifname: str, cni_version: str,
             store: Store | None = None) -> Result:
    """One IP from every range set (the requested one where a request falls in the set); on
    any failure everything this call reserved is released again."""
    dns = parse_resolv_conf(config.resolv_conf) if config.resolv_conf else DNS()

    def reserve(active: Store) -> Result:
        pending = list(config.requested_ips)
        ips = []
        try:
            for index, range_set in enumerate(config.range_sets):
                requested = next((ip for ip in pending if range_for(range_set, ip) is not None), None)
                if requested is not None:
                    pending.remove(requested)
                try:
                    ips.append(IPAllocator(range_set, active, index).get(container_id, ifname, requested))
                except CNIError as exc:
                    raise CNIError(exc.code, f"failed to allocate for range {index}: {exc.msg}", exc.details) from exc
            if pending:
                raise CNIError(ErrorCode.INTERNAL,
                               "failed to allocate all requested IPs: " + " ".join(str(ip) for ip in pending))
        except CNIError:
            for ip_config in ips:
                active.release(ip_config.address.ip)
            raise
        return Result(cni_version, ips=tuple(ips), routes=config.routes, dns=dns)

    return _with_store(config, store, reserve)


def release(config: HostLocalConfig, container_id: str, ifname: str, store: Store | None = None) -> list[IPAddress]:
    """Frees what ``(container_id, ifname)`` holds in this network; holding nothing is fine."""
    return _with_store(config, store, lambda active: active.release_by_id(container_id, ifname))


def verify(config: HostLocalConfig, container_id: str, ifname: str, prev_result: Result | None = None,
           store: Store | None = None) -> None:
    """CHECK: the container holds an address here, and still holds every address of
    ``prev_result`` that lies in one of this network's range sets."""

    def check(active: Store) -> None:
        held = set(active.get_by_id(container_id, ifname))
        if not held:
            raise CNIError(ErrorCode.INTERNAL, f"host-local: Failed to find address added by container {container_id}")
        for ip_config in prev_result.ips if prev_result else ():
            ip = ip_config.address.ip
            ours = any(range_for(rs, ip) is not None for rs in config.range_sets)
            if ours and ip not in held:
                raise CNIError(ErrorCode.INTERNAL,
                               f"host-local: address {ip} of prevResult is not held by container {container_id}")

    _with_store(config, store, check)


def status(config: HostLocalConfig, store: Store | None = None) -> None:
    """STATUS: the store can be used and every range set has an address left (else an ADD
    would fail: code 50, in the allocator's words)."""

    def check(active: Store) -> None:
        held = {a.ip for a in active.allocations()}
        for index, range_set in enumerate(config.range_sets):
            last = active.last_reserved_ip(str(index))
            if all(ip in held for _range, ip in allocation_order(range_set, last)):
                raise CNIError(NOT_AVAILABLE, f"no IP addresses available in range set: {range_set_str(range_set)}")

    try:
        _with_store(config, store, check)
    except CNIError as exc:
        raise CNIError(NOT_AVAILABLE, exc.msg, exc.details) from exc


def collect_garbage(config: HostLocalConfig, valid: set[tuple[str, str]], store: Store | None = None) -> list[IPAddress]:
    """Frees every reservation whose ``(container ID, ifname)`` is not in ``valid``."""

    def sweep(active: Store) -> list[IPAddress]:
        stale = [a.ip for a in active.allocations()
                 if not any(owned_by(a, cid, ifname) for cid, ifname in valid)]
        for ip in stale:
            active.release(ip)
        return stale

    return _with_store(config, store, sweep)


def _valid_attachments(netconf: NetConf) -> set[tuple[str, str]]:
    attachments = netconf.extra.get(VALID_ATTACHMENTS_KEY, [])
    if not isinstance(attachments, list):
        raise CNIError(ErrorCode.DECODING_FAILURE, f"error unmarshall network config: {VALID_ATTACHMENTS_KEY}: expected array")
    valid = set()
    for item in attachments:
        if not isinstance(item, dict) or not isinstance(item.get("containerID"), str):
            raise CNIError(ErrorCode.DECODING_FAILURE,
                           f"error unmarshall network config: {VALID_ATTACHMENTS_KEY}: expected {{containerID, ifname}}")
        valid.add((item["containerID"], str(item.get("ifname", ""))))
    return valid


# ---------------------------------------------------------------- plugin commands

def cmd_add(args: CmdArgs) -> Result:
    config = load_config(args.netconf, args.args)
    return allocate(config, args.container_id, args.ifname, args.netconf.cni_version)


def cmd_del(args: CmdArgs) -> None:
    release(load_config(args.netconf, args.args), args.container_id, args.ifname)


def cmd_check(args: CmdArgs) -> None:
    verify(load_config(args.netconf, args.args), args.container_id, args.ifname, args.netconf.prev_result)


def cmd_gc(args: CmdArgs) -> None:
    collect_garbage(load_config(args.netconf, args.args), _valid_attachments(args.netconf))


def cmd_status(args: CmdArgs) -> None:
    status(load_config(args.netconf, args.args))


PLUGIN = Plugin(add=cmd_add, check=cmd_check, delete=cmd_del, about=ABOUT, gc=cmd_gc, status=cmd_status)


def main() -> NoReturn:
    plugin_main(cmd_add, cmd_check, cmd_del, PLUGIN.versions, ABOUT, gc=cmd_gc, status=cmd_status)


if __name__ == "__main__":
    main()
