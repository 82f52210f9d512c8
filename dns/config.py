"""DNSConfig: the settings of netemu's cluster DNS, validated once at construction.

Mirrors the options of CoreDNS's ``kubernetes`` plugin that netemu uses (zone, ``ttl``,
``pods insecure|verified|disabled``, reverse zones given as CIDRs) plus the ``forward`` plugin's
upstream list. Reverse zones are derived from CIDRs the way CoreDNS expands a CIDR zone: a prefix
that is not on an octet (IPv4) or nibble (IPv6) boundary becomes several classful zones
(``10.96.0.0/12`` → ``96.10.in-addr.arpa.`` … ``111.10.in-addr.arpa.``).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from netemu.errors import DNSError

POD_MODES = ("insecure", "verified", "disabled")
MAX_REVERSE_ZONES = 4096
DEFAULT_PORT = 53


@dataclass(frozen=True)
class DNSConfig:
    zone: str = "cluster.local"
    ttl: int = 5
    dns_ip: str | tuple[str, ...] = ""        # the kube-dns ClusterIP(s): NS glue, ns.dns.<zone>
    reverse_cidrs: tuple[str, ...] = ()       # service and pod ranges served as reverse zones
    upstreams: tuple[str, ...] = ()           # "ip" or "ip:port" ("[v6]:port"); () → REFUSED
    pod_mode: str = "insecure"                # kubeadm's `pods insecure`
    upstream_timeout: float = 2.0             # seconds per upstream try
    cache_size: int = 65536                   # answers kept as wire bytes, per transport
    cache_bytes: int = 4 << 20                # and at most this many bytes of them, per transport
    max_tcp_clients: int = 256                # TCP connections served at once; more are closed at once
    tcp_idle_timeout: float = 10.0            # seconds a TCP client may stay silent

    zone_fqdn: str = field(init=False)
    reverse_zones: tuple[str, ...] = field(init=False)
    ns_ips: tuple[str, ...] = field(init=False)
    upstream_addrs: tuple[tuple[str, int], ...] = field(init=False)

    def __post_init__(self) -> None:
        zone = self.zone.strip().rstrip(".").lower()
        if not zone or any(not label or len(label) > 63 for label in zone.split(".")):
            raise DNSError(f"dns: invalid zone {self.zone!r}")
        if not 0 <= self.ttl <= 3600:
            raise DNSError(f"dns: ttl must be in range [0, 3600]: {self.ttl}")
        if self.pod_mode not in POD_MODES:
            raise DNSError(f"dns: pod mode must be one of {', '.join(POD_MODES)}: {self.pod_mode!r}")
        if self.upstream_timeout <= 0 or self.tcp_idle_timeout <= 0:
            raise DNSError("dns: timeouts must be positive")
        if self.cache_size < 0 or self.cache_bytes < 0:
            raise DNSError(f"dns: cache_size and cache_bytes must not be negative: {self.cache_size}, "
                           f"{self.cache_bytes}")
        if self.max_tcp_clients < 1:
            raise DNSError(f"dns: max_tcp_clients must be at least 1: {self.max_tcp_clients}")
        ips = (self.dns_ip,) if isinstance(self.dns_ip, str) else tuple(self.dns_ip)
        ns_ips = tuple(_canonical_ip(ip, "dns_ip") for ip in ips if ip)
        zones: list[str] = []
        for cidr in self.reverse_cidrs:
            zones.extend(z for z in reverse_zones_of(cidr) if z not in zones)
        set_ = object.__setattr__
        set_(self, "zone_fqdn", zone + ".")
        set_(self, "reverse_zones", tuple(zones))
        set_(self, "ns_ips", ns_ips)
        set_(self, "upstream_addrs", tuple(parse_hostport(u) for u in self.upstreams))


def _canonical_ip(text: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError as exc:
        raise DNSError(f"dns: {what}: not an IP address: {text!r}") from exc


def parse_hostport(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``1.2.3.4`` / ``1.2.3.4:5353`` / ``::1`` / ``[::1]:5353`` → (ip, port)."""
    value = text.strip()
    host, port = value, default_port
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise DNSError(f"dns: invalid upstream {text!r}")
        if rest:
            port = _port(rest[1:], text)
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
        port = _port(port_text, text)
    return _canonical_ip(host, "upstream"), port


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise DNSError(f"dns: invalid port in upstream {whole!r}")
    return int(text)


def reverse_zones_of(cidr: str) -> list[str]:
    """The classful reverse zones (FQDN, lowercase) that together cover ``cidr``."""
    try:
        net = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError as exc:
        raise DNSError(f"dns: reverse zone: not a CIDR: {cidr!r}") from exc
    step = 8 if net.version == 4 else 4
    prefix = -(-net.prefixlen // step) * step
    if 2 ** (prefix - net.prefixlen) > MAX_REVERSE_ZONES:
        raise DNSError(f"dns: reverse zone {cidr} expands to more than {MAX_REVERSE_ZONES} zones")
    zones = []
    for sub in net.subnets(new_prefix=prefix):
        labels = sub.network_address.reverse_pointer.split(".")
        # reverse_pointer names the full address; keep the labels of the prefix only
        keep = prefix // step
        arpa = labels[-2:]
        digits = labels[:-2][len(labels) - 2 - keep:]
        zones.append(".".join(digits + arpa) + ".")
    return zones
