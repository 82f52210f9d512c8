"""CNI data types: network configuration, host-local IPAM configuration, results, CNI_ARGS.

Owns the JSON shapes of the CNI spec (containernetworking/cni SPEC.md, 1.0.0 and 1.1.0) and
their translation to and from Python objects. No I/O. Wrong JSON types raise ``CNIError`` code 6
(decoding failure, as a Go ``json.Unmarshal`` would); values that parse but make no sense raise
code 7 (invalid network configuration).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Mapping

from netemu.errors import CNIError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

# The first version whose result has no per-IP "version" field.
_UNVERSIONED_IPS = (1, 0, 0)
# Results older than this (0.1.0/0.2.0 "ip4"/"ip6" shape) are not produced by netemu.
_OLDEST_RESULT = (0, 3, 0)


class ErrorCode(IntEnum):
    """Well-known CNI error codes; 100+ are plugin-specific (999 is libcni's "internal")."""

    INCOMPATIBLE_VERSION = 1
    UNSUPPORTED_FIELD = 2
    UNKNOWN_CONTAINER = 3
    INVALID_ENVIRONMENT = 4
    IO_FAILURE = 5
    DECODING_FAILURE = 6
    INVALID_NETWORK_CONFIG = 7
    TRY_AGAIN_LATER = 11
    INTERNAL = 999


def parse_version(version: str) -> tuple[int, int, int]:
    """``"1.0.0"`` -> ``(1, 0, 0)``; anything else is a decoding failure (code 6)."""
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise CNIError(ErrorCode.DECODING_FAILURE, f"invalid version {version!r}: must be major.minor.patch")
    major, minor, patch = (int(p) for p in parts)
    return major, minor, patch


# ---------------------------------------------------------------- decoding helpers

def _decode_error(path: str, expected: str, got: Any) -> CNIError:
    return CNIError(
        ErrorCode.DECODING_FAILURE,
        f"error unmarshall network config: {path}: expected {expected}, got {type(got).__name__}",
    )


def _str(data: Mapping[str, Any], key: str, path: str, default: str = "") -> str:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _decode_error(f"{path}{key}", "string", value)
    return value


def _obj(data: Mapping[str, Any], key: str, path: str) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _decode_error(f"{path}{key}", "object", value)
    return value


def _list(data: Mapping[str, Any], key: str, path: str) -> list[Any]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _decode_error(f"{path}{key}", "array", value)
    return value


def _str_list(data: Mapping[str, Any], key: str, path: str) -> list[str]:
    values = _list(data, key, path)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise _decode_error(f"{path}{key}[{i}]", "string", value)
    return values


def parse_ip(text: str, path: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError as exc:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"{path}: invalid IP address: {text}") from exc


def parse_network(text: str, path: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"{path}: invalid CIDR address: {text}") from exc


def _opt_ip(data: Mapping[str, Any], key: str, path: str) -> IPAddress | None:
    text = _str(data, key, path)
    return parse_ip(text, f"{path}{key}") if text else None


# ---------------------------------------------------------------- result types

@dataclass(frozen=True)
class DNS:
    """The ``dns`` object of a configuration or a result."""

    nameservers: tuple[str, ...] = ()
    domain: str = ""
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        return not (self.nameservers or self.domain or self.search or self.options)

    @classmethod
    def from_json(cls, data: Any, path: str = "dns") -> DNS:
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise _decode_error(path, "object", data)
        p = f"{path}."
        return cls(
            nameservers=tuple(_str_list(data, "nameservers", p)),
            domain=_str(data, "domain", p),
            search=tuple(_str_list(data, "search", p)),
            options=tuple(_str_list(data, "options", p)),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.nameservers:
            out["nameservers"] = list(self.nameservers)
        if self.domain:
            out["domain"] = self.domain
        if self.search:
            out["search"] = list(self.search)
        if self.options:
            out["options"] = list(self.options)
        return out


@dataclass(frozen=True)
class Route:
    """A route: ``dst`` (CIDR), optional ``gw``; 1.1 fields (mtu, advmss, priority, table,
    scope) are carried through untouched in ``extra``."""

    dst: IPNetwork
    gw: IPAddress | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any, path: str) -> Route:
        if not isinstance(data, dict):
            raise _decode_error(path, "object", data)
        dst_text = _str(data, "dst", f"{path}.")
        if not dst_text:
            raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"{path}.dst: required")
        extra = {k: v for k, v in data.items() if k not in ("dst", "gw")}
        return cls(parse_network(dst_text, f"{path}.dst"), _opt_ip(data, "gw", f"{path}."), extra)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dst": str(self.dst)}
        if self.gw is not None:
            out["gw"] = str(self.gw)
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class Interface:
    """An entry of ``interfaces``; ``sandbox`` is empty for host interfaces."""

    name: str
    mac: str = ""
    sandbox: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any, path: str) -> Interface:
        if not isinstance(data, dict):
            raise _decode_error(path, "object", data)
        p = f"{path}."
        extra = {k: v for k, v in data.items() if k not in ("name", "mac", "sandbox")}
        return cls(_str(data, "name", p), _str(data, "mac", p), _str(data, "sandbox", p), extra)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.mac:
            out["mac"] = self.mac
        if self.sandbox:
            out["sandbox"] = self.sandbox
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class IPConfig:
    """An entry of ``ips``: the address in CIDR form, its gateway, and the index of the
    interface in ``interfaces`` it belongs to (None from IPAM plugins)."""

    address: IPInterface
    gateway: IPAddress | None = None
    interface: int | None = None

    @classmethod
    def from_json(cls, data: Any, path: str) -> IPConfig:
        if not isinstance(data, dict):
            raise _decode_error(path, "object", data)
        p = f"{path}."
        text = _str(data, "address", p)
        try:
            address = ipaddress.ip_interface(text)
        except ValueError as exc:
            raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"{p}address: invalid CIDR address: {text}") from exc
        index = data.get("interface")
        if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
            raise _decode_error(f"{p}interface", "integer", index)
        return cls(address, _opt_ip(data, "gateway", p), index)

    def to_json(self, version: tuple[int, int, int]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if version < _UNVERSIONED_IPS:
            out["version"] = str(self.address.version)
        if self.interface is not None:
            out["interface"] = self.interface
        out["address"] = str(self.address)
        if self.gateway is not None:
            out["gateway"] = str(self.gateway)
        return out


@dataclass(frozen=True)
class Result:
    """The success result of ADD (and the ``prevResult`` of CHECK/DEL)."""

    cni_version: str
    interfaces: tuple[Interface, ...] = ()
    ips: tuple[IPConfig, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: DNS = DNS()

    @classmethod
    def from_json(cls, data: Any, path: str = "") -> Result:
        """Decodes a 0.3.0 to 1.1.0 result; the per-IP ``version`` of pre-1.0 results is dropped."""
        if not isinstance(data, dict):
            raise _decode_error(path or "result", "object", data)
        p = f"{path}." if path else ""
        return cls(
            cni_version=_str(data, "cniVersion", p),
            interfaces=tuple(Interface.from_json(v, f"{p}interfaces[{i}]")
                             for i, v in enumerate(_list(data, "interfaces", p))),
            ips=tuple(IPConfig.from_json(v, f"{p}ips[{i}]") for i, v in enumerate(_list(data, "ips", p))),
            routes=tuple(Route.from_json(v, f"{p}routes[{i}]") for i, v in enumerate(_list(data, "routes", p))),
            dns=DNS.from_json(data.get("dns"), f"{p}dns"),
        )

    def to_json(self, version: str | None = None) -> dict[str, Any]:
        """The result as JSON for ``version`` (default: its own); empty lists and dns are
        omitted, as libcni does."""
        version = version or self.cni_version
        parsed = parse_version(version)
        if parsed < _OLDEST_RESULT:
            raise CNIError(ErrorCode.INCOMPATIBLE_VERSION, f"cannot convert result to version {version}",
                           "netemu produces results of version 0.3.0 and later")
        out: dict[str, Any] = {"cniVersion": version}
        if self.interfaces:
            out["interfaces"] = [i.to_json() for i in self.interfaces]
        if self.ips:
            out["ips"] = [ip.to_json(parsed) for ip in self.ips]
        if self.routes:
            out["routes"] = [r.to_json() for r in self.routes]
        if not self.dns.is_empty():
            out["dns"] = self.dns.to_json()
        return out


# ---------------------------------------------------------------- network configuration

_NETCONF_KEYS = ("cniVersion", "name", "type", "ipam", "dns", "prevResult", "runtimeConfig", "args",
                 "capabilities")


@dataclass(frozen=True)
class NetConf:
    """One plugin's network configuration as given on stdin. ``ipam`` stays a dict (its shape
    belongs to the IPAM plugin); plugin-specific keys are kept in ``extra``."""

    cni_version: str
    name: str
    type: str = ""
    ipam: Mapping[str, Any] = field(default_factory=dict)
    dns: DNS = DNS()
    prev_result: Result | None = None
    runtime_config: Mapping[str, Any] = field(default_factory=dict)
    args: Mapping[str, Any] = field(default_factory=dict)
    capabilities: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any) -> NetConf:
        if not isinstance(data, dict):
            raise _decode_error("network config", "object", data)
        prev = data.get("prevResult")
        return cls(
            # libcni reads a config without cniVersion as 0.1.0
            cni_version=_str(data, "cniVersion", "", default="0.1.0") or "0.1.0",
            name=_str(data, "name", ""),
            type=_str(data, "type", ""),
            ipam=_obj(data, "ipam", ""),
            dns=DNS.from_json(data.get("dns")),
            prev_result=Result.from_json(prev, "prevResult") if prev is not None else None,
            runtime_config=_obj(data, "runtimeConfig", ""),
            args=_obj(data, "args", ""),
            capabilities=_obj(data, "capabilities", ""),
            extra={k: v for k, v in data.items() if k not in _NETCONF_KEYS},
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": self.cni_version, "name": self.name}
        if self.type:
            out["type"] = self.type
        if self.capabilities:
            out["capabilities"] = dict(self.capabilities)
        if self.ipam:
            out["ipam"] = dict(self.ipam)
        if not self.dns.is_empty():
            out["dns"] = self.dns.to_json()
        if self.runtime_config:
            out["runtimeConfig"] = dict(self.runtime_config)
        if self.args:
            out["args"] = dict(self.args)
        if self.prev_result is not None:
            out["prevResult"] = self.prev_result.to_json()
        out.update(self.extra)
        return out


# ---------------------------------------------------------------- host-local IPAM configuration

@dataclass(frozen=True)
class RangeSpec:
    """One range as written in ``ipam.ranges``; unset bounds are filled in by the allocator."""

    subnet: IPNetwork
    range_start: IPAddress | None = None
    range_end: IPAddress | None = None
    gateway: IPAddress | None = None

    @classmethod
    def from_json(cls, data: Any, path: str) -> RangeSpec:
        if not isinstance(data, dict):
            raise _decode_error(path, "object", data)
        p = f"{path}."
        subnet = _str(data, "subnet", p)
        if not subnet:
            raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"{p}subnet: required")
        return cls(
            subnet=parse_network(subnet, f"{p}subnet"),
            range_start=_opt_ip(data, "rangeStart", p),
            range_end=_opt_ip(data, "rangeEnd", p),
            gateway=_opt_ip(data, "gateway", p),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"subnet": str(self.subnet)}
        for key, value in (("rangeStart", self.range_start), ("rangeEnd", self.range_end),
                           ("gateway", self.gateway)):
            if value is not None:
                out[key] = str(value)
        return out


def range_sets_from_json(value: Any, path: str) -> tuple[tuple[RangeSpec, ...], ...]:
    """``[[{subnet, rangeStart, rangeEnd, gateway}, ...], ...]``: a list of range sets."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _decode_error(path, "array", value)
    sets = []
    for i, range_set in enumerate(value):
        if not isinstance(range_set, list):
            raise _decode_error(f"{path}[{i}]", "array", range_set)
        sets.append(tuple(RangeSpec.from_json(r, f"{path}[{i}][{j}]") for j, r in enumerate(range_set)))
    return tuple(sets)


@dataclass(frozen=True)
class IPAMConfig:
    """The ``ipam`` section for host-local. The older single-range form (``subnet``,
    ``rangeStart``, ``rangeEnd``, ``gateway`` directly in ``ipam``) becomes the first range set."""

    type: str
    ranges: tuple[tuple[RangeSpec, ...], ...]
    routes: tuple[Route, ...] = ()
    data_dir: str = ""
    resolv_conf: str = ""

    @classmethod
    def from_json(cls, data: Any, path: str = "ipam") -> IPAMConfig:
        if not isinstance(data, dict):
            raise _decode_error(path, "object", data)
        p = f"{path}."
        ranges = range_sets_from_json(data.get("ranges"), f"{p}ranges")
        if _str(data, "subnet", p):
            ranges = ((RangeSpec.from_json(data, path),),) + ranges
        return cls(
            type=_str(data, "type", p),
            ranges=ranges,
            routes=tuple(Route.from_json(r, f"{p}routes[{i}]") for i, r in enumerate(_list(data, "routes", p))),
            data_dir=_str(data, "dataDir", p),
            resolv_conf=_str(data, "resolvConf", p),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type,
                               "ranges": [[r.to_json() for r in rs] for rs in self.ranges]}
        if self.routes:
            out["routes"] = [r.to_json() for r in self.routes]
        if self.data_dir:
            out["dataDir"] = self.data_dir
        if self.resolv_conf:
            out["resolvConf"] = self.resolv_conf
        return out


# ---------------------------------------------------------------- CNI_ARGS

def parse_cni_args(text: str) -> dict[str, str]:
    """``"K=V;K2=V2"`` -> ``{"K": "V", "K2": "V2"}``; a pair without exactly one ``=`` is an
    invalid environment (code 4), worded like libcni's ``LoadArgs``."""
    if not text:
        return {}
    args: dict[str, str] = {}
    for pair in text.split(";"):
        key_value = pair.split("=")
        if len(key_value) != 2:
            raise CNIError(ErrorCode.INVALID_ENVIRONMENT, f'ARGS: invalid pair "{pair}"')
        args[key_value[0]] = key_value[1]
    return args


def format_cni_args(args: Mapping[str, str]) -> str:
    return ";".join(f"{k}={v}" for k, v in args.items())


def check_known_args(args: Mapping[str, str], known: set[str]) -> None:
    """Refuses keys a plugin does not know unless ``IgnoreUnknown`` is 1/true, as libcni does
    (container runtimes pass ``IgnoreUnknown=1`` along with the ``K8S_POD_*`` keys)."""
    ignore = args.get("IgnoreUnknown", "false").lower()
    if ignore not in ("1", "true", "0", "false"):
        raise CNIError(ErrorCode.INVALID_ENVIRONMENT,
                       f'ARGS: error parsing value of pair "IgnoreUnknown={args["IgnoreUnknown"]}"')
    unknown = [f"{k}={v}" for k, v in args.items() if k not in known and k != "IgnoreUnknown"]
    if unknown and ignore in ("0", "false"):
        raise CNIError(ErrorCode.INVALID_ENVIRONMENT, f"ARGS: unknown args {unknown}")
