"""Record generation: the answer to one question, from the index (sans-I/O).

A faithful port of CoreDNS's ``kubernetes`` plugin as kubeadm configures it (``pods insecure``,
TTL 5) and of the generic backend lookups it uses (``plugin/backend_lookup.go``):

- ``parse_request`` splits a name into port, protocol, endpoint, service, namespace and
  ``svc``/``pod`` (``parse.go``); more labels than that is an invalid request (NXDOMAIN).
- ``_services`` returns backend items (CoreDNS ``msg.Service``: a host that is an IP or a name,
  a port, the owner name, a TTL): dns-version TXT, the zone's NS addresses, or what
  ``_find_services`` / ``_find_pods`` find (``kubernetes.go``); ``_NXDomain`` stands for
  ``errNoItems`` / ``errInvalidRequest`` / ``errNsNotExposed``.
- the per-type functions turn items into records (A/AAAA follow in-zone CNAMEs, SRV weights are
  100/n, glue goes to Additional). When they find none, ``name_exists`` decides, whatever the
  type: NODATA (NOERROR) for a name that owns records of some type or has names below it,
  NXDOMAIN otherwise, both with the zone SOA in Authority (RFC 8020; CoreDNS decides per type
  and answers some types NODATA for missing names, see the README).

Names are presentation text with a trailing dot. Matching is on the lowercased name; the query's
own spelling is echoed in owner names, and the zone part of generated names keeps the query's
case, as CoreDNS does (``zone = qname[len(qname)-len(zone):]``).
"""
from __future__ import annotations

import functools
import ipaddress
import math
from dataclasses import dataclass, field, replace
from collections.abc import Iterable
from typing import Protocol

from dnslib import AAAA, CNAME, NS, PTR, RR, SOA, SRV, TXT, A

from .config import DNSConfig
from .index import NO_PORT, SlimAddress, SlimPod, SlimPort, SlimService, Subset
from .wire import NOERROR, NXDOMAIN, REFUSED, label_of

DNS_SCHEMA_VERSION = "1.1.0"
DNS_VERSION_TTL = 28800
T_A, T_NS, T_CNAME, T_SOA, T_PTR, T_MX, T_TXT, T_AAAA, T_SRV = 1, 2, 5, 6, 12, 15, 16, 28, 33
T_IXFR, T_AXFR = 251, 252
T_CNAME_ITEM, T_TXT_ITEM = -T_CNAME, -T_TXT  # host kinds of an item (see _host_type)
MAX_CNAME_CHAIN = 7


class DNSIndexView(Protocol):
    """What record generation reads (``DNSIndex`` implements it)."""

    serial: int

    def namespace_exists(self, namespace: str) -> bool: ...

    def service(self, namespace: str, name: str) -> SlimService | None: ...

    def subsets(self, svc: SlimService) -> list[Subset]: ...

    def services_by_ip(self, ip: str) -> list[SlimService]: ...

    def endpoints_by_ip(self, ip: str) -> list[tuple[str, str, SlimAddress]]: ...

    def pods_by_ip(self, ip: str) -> list[SlimPod]: ...

    def published_ips(self) -> Iterable[str]: ...


@dataclass(slots=True)
class Chase:
    """A CNAME to a name outside the cluster's zones: its target is resolved upstream and the
    records found go right after ``cname`` in the answer (CoreDNS ``b.Lookup``)."""

    cname: RR
    target: str
    qtype: int


@dataclass(slots=True)
class Answer:
    rcode: int = NOERROR
    answer: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)
    authoritative: bool = True
    in_zone: bool = True          # False: not ours; forward upstream or refuse
    chases: list[Chase] = field(default_factory=list)


@dataclass(slots=True)
class _Item:
    """CoreDNS ``msg.Service``."""

    host: str = ""
    port: int = 0
    key: str = ""     # the owner / target name of records made from this item
    ttl: int = 0
    text: str = ""


@dataclass(slots=True)
class _State:
    qname: str        # as asked (case kept), FQDN
    name: str         # lowercased
    qtype: int
    zone: str         # the matched zone in the query's case


@dataclass(slots=True)
class Request:
    """CoreDNS ``recordRequest``."""

    port: str = ""
    protocol: str = ""
    endpoint: str = ""
    service: str = ""
    namespace: str = ""
    pod_or_svc: str = ""
    port_label: str = field(default="", compare=False)      # as asked, underscore kept
    protocol_label: str = field(default="", compare=False)


class _NXDomain(Exception):
    pass


def parse_request(name: str, zone: str) -> Request:
    """Split a lowercased FQDN inside ``zone`` (``parse.go``); raise ``_NXDomain`` when invalid."""
    r = Request()
    base = name[:len(name) - len(zone)].rstrip(".")
    if base in ("", "svc", "pod"):
        return r
    segs = base.split(".")
    last = len(segs) - 1
    r.pod_or_svc = segs[last]
    if r.pod_or_svc not in ("svc", "pod"):
        raise _NXDomain()
    last -= 1
    if last < 0:
        return r
    r.namespace = segs[last]
    last -= 1
    if last < 0:
        return r
    r.service = segs[last]
    last -= 1
    if last < 0:
        return r
    if last == 0:
        r.endpoint = segs[0]
    elif last == 1:
        r.protocol_label, r.port_label = segs[1], segs[0]
        r.protocol = segs[1].removeprefix("_")
        r.port = segs[0].removeprefix("_")
    else:
        raise _NXDomain()
    return r


def _is_underscored(label: str) -> bool:
    return len(label) > 1 and label.startswith("_")


def endpoint_hostname(addr: SlimAddress) -> str:
    """The endpoint's hostname, else its IP with dots (or colons) as dashes."""
    if addr.hostname:
        return addr.hostname
    if "." in addr.ip:
        return addr.ip.replace(".", "-")
    return addr.ip.replace(":", "-")


@functools.lru_cache(maxsize=4096)
def _parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not host or "%" in host:
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _host_type(item: _Item) -> tuple[int, str]:
    """``msg.Service.HostType``: (T_A | T_AAAA, canonical ip) or (T_CNAME_ITEM | T_TXT_ITEM, "")."""
    ip = _parse_ip(item.host)
    if ip is None:
        return (T_TXT_ITEM if item.text else T_CNAME_ITEM), ""
    return (T_A if ip.version == 4 else T_AAAA), str(ip)


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


def _is_subdomain(child: str, parent: str) -> bool:
    """Both lowercased FQDNs."""
    return child == parent or child.endswith("." + parent) or parent == "."


def _match_port(q_port: str, port: str, q_proto: str, proto: str) -> bool:
    return (not q_port or q_port == port.lower()) and (not q_proto or q_proto == proto.lower())


def extract_address_from_reverse(name: str) -> str:
    """``dnsutil.ExtractAddressFromReverse`` on a lowercased FQDN: the address, or ""."""
    if name.endswith(".in-addr.arpa."):
        parts = name[:-len(".in-addr.arpa.")].split(".")
        ip = _parse_ip(".".join(reversed(parts)))
        return str(ip) if ip is not None and ip.version == 4 else ""
    if name.endswith(".ip6.arpa."):
        parts = name[:-len(".ip6.arpa.")].split(".")
        if len(parts) != 32 or any(len(p) != 1 for p in parts):
            return ""
        nibbles = "".join(reversed(parts))
        ip = _parse_ip(":".join(nibbles[i:i + 4] for i in range(0, 32, 4)))
        return str(ip) if ip is not None else ""
    return ""


def _is_reverse(name: str) -> bool:
    return name.endswith((".in-addr.arpa.", ".ip6.arpa."))


def _address_rr(owner: str, rtype: int, ip: str, ttl: int) -> RR:
    return RR(label_of(owner), rtype, ttl=ttl, rdata=A(ip) if rtype == T_A else AAAA(ip))


class Resolver:
    """Answers questions for the cluster zone and the reverse zones from an index."""

    def __init__(self, config: DNSConfig, index: DNSIndexView) -> None:
        self.index = index
        self.zone = config.zone_fqdn
        self.ttl = config.ttl
        self.pod_mode = config.pod_mode
        self.ns_ips = config.ns_ips
        # longest first, so the most specific zone wins (plugin.Zones.Matches)
        self.zones = sorted({config.zone_fqdn, *config.reverse_zones}, key=len, reverse=True)
        self._reverse_cache: tuple[int, frozenset[str] | None] = (0, None)

    def match_zone(self, name: str) -> str | None:
        for zone in self.zones:
            if name == zone or name.endswith("." + zone) or zone == ".":
                return zone
        return None

    # ------------------------------------------------------------------ handler

    def answer(self, qname: str, qtype: int) -> Answer:
        """The answer to ``qname`` (presentation form, any case, trailing dot) and ``qtype``."""
        qname = _fqdn(qname)
        name = qname.lower()
        zone = self.match_zone(name)
        if zone is None:
            return Answer(authoritative=False, in_zone=False)
        st = _State(qname, name, qtype, qname[len(qname) - len(zone):])
        if qtype in (T_AXFR, T_IXFR):
            return Answer(rcode=REFUSED, authoritative=False)
        records: list[RR] = []
        extra: list[RR] = []
        chases: list[Chase] = []
        try:
            if qtype in (T_A, T_AAAA):
                records = self._address(st, [], chases)
            elif qtype == T_TXT:
                records = self._txt(st)
            elif qtype == T_CNAME:
                records = self._cname(st)
            elif qtype == T_PTR:
                records = self._ptr(st)
            elif qtype == T_SRV:
                records, extra = self._srv(st)
            elif qtype == T_SOA and name == zone:
                records = [self._soa(st)]
            elif qtype == T_NS and name == zone:
                records, extra = self._ns(st)
            # any other type (MX, SOA or NS below the apex, …) has no records here
        except _NXDomain:
            records, extra, chases = [], [], []
        if records:
            return Answer(answer=records, additional=extra, chases=chases)
        # No records: the name decides, whatever the type (RFC 8020) — NXDOMAIN when it does not
        # exist, NODATA when it does (it has records of another type, or names below it).
        return Answer(rcode=NOERROR if self.name_exists(st.qname) else NXDOMAIN, authority=[self._soa(st)])

    # ------------------------------------------------------------------ existence

    def name_exists(self, qname: str) -> bool:
        """Does ``qname`` (inside one of the zones) own records of any type, or is it an empty
        non-terminal above names that do? Every type's negative answer hangs on this."""
        name = _fqdn(qname).lower()
        zone = self.match_zone(name)
        if zone is None:
            return False
        if name == zone:
            return True
        if zone.endswith(("in-addr.arpa.", "ip6.arpa.")):
            ip = extract_address_from_reverse(name)
            if ip:
                return bool(self._service_records_for_ip(ip))
            return name in self._reverse_names()
        if parse_labels(name, zone) in (["dns-version"], ["dns"], ["ns", "dns"]):
            return True  # the schema TXT, the NS name (and the empty non-terminal above it)
        try:
            self._records(_State(name, name, T_A, zone))  # names exist independently of the type
        except _NXDomain:
            return False
        return True

    def _reverse_names(self) -> frozenset[str]:
        """Every name in the reverse zones at or above an address that has a PTR record (the
        empty non-terminals ``0.96.10.in-addr.arpa.`` …), rebuilt when the index changes."""
        serial, names = self._reverse_cache
        if serial != self.index.serial or names is None:
            found: set[str] = set()
            for ip in self.index.published_ips():
                try:
                    labels = ipaddress.ip_address(ip).reverse_pointer.split(".")
                except ValueError:
                    continue  # a load balancer's hostname
                found.update(".".join(labels[i:]) + "." for i in range(len(labels) - 1))
            names = frozenset(found)
            self._reverse_cache = (self.index.serial, names)
        return names

    # ------------------------------------------------------------------ items

    def _services(self, st: _State) -> list[_Item]:
        zone = st.zone.lower()
        if st.qtype == T_TXT:
            if parse_labels(st.name, zone) != ["dns-version"]:
                return []
            return [_Item(text=DNS_SCHEMA_VERSION, ttl=DNS_VERSION_TTL, key=st.qname)]
        if st.qtype == T_NS:
            return [_Item(host=ip, key="ns.dns." + st.zone, ttl=self.ttl) for ip in self.ns_ips]
        if st.name == "ns.dns." + zone:
            want = 4 if st.qtype == T_A else 6 if st.qtype == T_AAAA else 0
            return [_Item(host=ip, key=st.qname, ttl=self.ttl) for ip in self.ns_ips
                    if _parse_ip(ip).version == want]  # type: ignore[union-attr]
        items = self._records(st)
        if st.qtype == T_SRV:  # SRV for external services is not implemented (CoreDNS)
            items = [i for i in items if _host_type(i)[0] != T_CNAME_ITEM]
        return items

    def _records(self, st: _State) -> list[_Item]:
        r = parse_request(st.name, st.zone.lower())
        if not r.pod_or_svc:
            return []
        if _is_reverse(st.name):
            raise _NXDomain()
        if not self.index.namespace_exists(r.namespace):
            raise _NXDomain()
        if (r.port or r.protocol) and not (_is_underscored(r.port_label) and _is_underscored(r.protocol_label)):
            raise _NXDomain()  # SRV names are _<port>._<proto>.<service>… (RFC 2782), nothing else
        if r.pod_or_svc == "pod":
            return self._find_pods(r, st.zone)
        return self._find_services(r, st.zone)

    def _find_pods(self, r: Request, zone: str) -> list[_Item]:
        if self.pod_mode == "disabled":
            raise _NXDomain()
        if not r.service:
            return []  # NODATA
        if r.endpoint or r.port or r.protocol:
            raise _NXDomain()  # a pod name is a leaf: no name below it exists
        podname = r.service
        if podname.count("-") == 3 and "--" not in podname:
            ip_text = podname.replace("-", ".")
        else:
            ip_text = podname.replace("-", ":")
        key = f"{podname}.{r.namespace}.pod.{zone}"
        ip = _parse_ip(ip_text)
        if ip is None:
            raise _NXDomain()
        if self.pod_mode == "insecure":
            return [_Item(host=ip_text, key=key, ttl=self.ttl)]
        found = [_Item(host=ip_text, key=key, ttl=self.ttl)
                 for pod in self.index.pods_by_ip(str(ip))
                 if pod.namespace == r.namespace and pod.phase not in ("Succeeded", "Failed", "Unknown")]
        if not found:
            raise _NXDomain()
        return found

    def _find_services(self, r: Request, zone: str) -> list[_Item]:
        if not r.service:
            return []  # NODATA: the namespace exists
        svc = self.index.service(r.namespace, r.service)
        if svc is None:
            raise _NXDomain()
        domain = f"{svc.name}.{svc.namespace}.svc.{zone}"
        items: list[_Item] = []
        found = False
        if r.endpoint.startswith("_"):  # _<proto>.<service>…: the empty non-terminal of its SRV names
            if svc.external or not any(p.name and p.protocol.lower() == r.endpoint[1:] for p in self._srv_ports(svc)):
                raise _NXDomain()
            return []
        if svc.external:
            # an ExternalName is a CNAME: no endpoint, port or any other name exists below it
            if not (r.endpoint or r.port or r.protocol):
                item = _Item(host=svc.external_name, key=domain, ttl=self.ttl)
                if _host_type(item)[0] == T_CNAME_ITEM:  # an IP-looking externalName gives nothing
                    items.append(item)
                    found = True
        elif svc.headless or r.endpoint:
            for subset in self.index.subsets(svc):
                for addr in subset.addresses:
                    hostname = endpoint_hostname(addr)
                    if r.endpoint and r.endpoint != hostname.lower():
                        continue
                    for p in subset.ports:
                        if not _match_port(r.port, p.name, r.protocol, p.protocol):
                            continue
                        items.append(_Item(host=addr.ip, port=p.port, key=f"{hostname}.{domain}", ttl=self.ttl))
                        found = True
        else:
            for p in svc.ports:
                if not _match_port(r.port, p.name, r.protocol, p.protocol):
                    continue
                found = True
                items.extend(_Item(host=ip, port=p.port, key=domain, ttl=self.ttl)
                             for ip in svc.cluster_ips if ip)
        if not found:
            raise _NXDomain()
        return items

    def _srv_ports(self, svc: SlimService) -> list[SlimPort]:
        """The ports SRV names are made of: the service's, or (headless) those of published endpoints."""
        if not svc.headless:
            return list(svc.ports)
        return [p for subset in self.index.subsets(svc) if subset.addresses for p in subset.ports]

    def _service_records_for_ip(self, ip: str) -> list[_Item]:
        """``serviceRecordForIP``: the first service with that ClusterIP or external IP, else
        every endpoint with that address."""
        for svc in self.index.services_by_ip(ip):
            return [_Item(host=f"{svc.name}.{svc.namespace}.svc.{self.zone}", ttl=self.ttl)]
        return [_Item(host=f"{endpoint_hostname(addr)}.{service}.{namespace}.svc.{self.zone}", ttl=self.ttl)
                for namespace, service, addr in self.index.endpoints_by_ip(ip)]

    # ------------------------------------------------------------------ records by type

    def _address(self, st: _State, previous: list[RR], chases: list[Chase]) -> list[RR]:
        """``plugin.A`` / ``plugin.AAAA``."""
        records: list[RR] = []
        seen: set[str] = set()
        zone = st.zone.lower()
        for item in self._services(st):
            what, ip = _host_type(item)
            if what == T_CNAME_ITEM:
                target = _fqdn(item.host)
                if target.lower() == st.name:
                    continue  # x CNAME x is a direct loop
                cname = RR(label_of(st.qname), T_CNAME, ttl=item.ttl, rdata=CNAME(label_of(target)))
                if len(previous) > MAX_CNAME_CHAIN or any(
                        str(p.rname).lower() == st.name and str(p.rdata.label).lower() == target.lower()
                        for p in previous):
                    continue
                if _is_subdomain(target.lower(), zone):
                    inner = _State(target, target.lower(), st.qtype, st.zone)
                    try:
                        found = self._address(inner, previous + [cname], chases)
                    except _NXDomain:
                        continue
                    if found:
                        records.append(cname)
                        records.extend(found)
                    continue
                records.append(cname)
                chases.append(Chase(cname, target, st.qtype))
            elif what == st.qtype and ip not in seen:
                seen.add(ip)
                records.append(_address_rr(st.qname, what, ip, item.ttl))
        return records

    def _srv(self, st: _State) -> tuple[list[RR], list[RR]]:
        items = self._services(st)
        total = 100 * len(items)  # every item has priority 0 and the default weight 100
        records: list[RR] = []
        extra: list[RR] = []
        seen_srv: set[tuple[str, int]] = set()
        seen_addr: set[tuple[str, str]] = set()
        for item in items:
            if item.port == NO_PORT:
                continue
            weight = max(1, math.floor(100.0 / total * 100))
            what, ip = _host_type(item)
            if what not in (T_A, T_AAAA):
                continue
            target = item.key
            if (target, item.port) not in seen_srv:
                seen_srv.add((target, item.port))
                records.append(RR(label_of(st.qname), T_SRV, ttl=item.ttl,
                                  rdata=SRV(priority=0, weight=weight, port=item.port, target=label_of(target))))
            if (target, ip) not in seen_addr:
                seen_addr.add((target, ip))
                extra.append(_address_rr(target, what, ip, item.ttl))
        return records, extra

    def _txt(self, st: _State) -> list[RR]:
        return [RR(label_of(st.qname), T_TXT, ttl=item.ttl, rdata=TXT([item.text.encode()]))
                for item in self._services(st) if item.text]

    def _cname(self, st: _State) -> list[RR]:
        items = self._services(st)
        if items and _parse_ip(items[0].host) is None and not items[0].text:
            return [RR(label_of(st.qname), T_CNAME, ttl=items[0].ttl,
                       rdata=CNAME(label_of(_fqdn(items[0].host))))]
        return []

    def _ptr(self, st: _State) -> list[RR]:
        ip = extract_address_from_reverse(st.name)
        if not ip:
            self._records(st)
            return []
        items = self._service_records_for_ip(ip)
        if not items:
            raise _NXDomain()
        records, seen = [], set()
        for item in items:
            if item.host not in seen:
                seen.add(item.host)
                records.append(RR(label_of(st.qname), T_PTR, ttl=item.ttl, rdata=PTR(label_of(item.host))))
        return records

    def _ns(self, st: _State) -> tuple[list[RR], list[RR]]:
        records: list[RR] = []
        extra: list[RR] = []
        seen: set[str] = set()
        for item in self._services(replace(st, qtype=T_NS)):
            what, ip = _host_type(item)
            extra.append(_address_rr(item.key, what, ip, item.ttl))
            if item.key not in seen:
                seen.add(item.key)
                records.append(RR(label_of(st.qname), T_NS, ttl=item.ttl, rdata=NS(label_of(item.key))))
        return records, extra

    def _soa(self, st: _State) -> RR:
        zone = st.zone
        return RR(label_of(zone), T_SOA, ttl=min(self.ttl, 300),
                  rdata=SOA(label_of("ns.dns." + zone), label_of("hostmaster." + zone),
                            (self.index.serial, 7200, 1800, 86400, self.ttl)))


def parse_labels(name: str, zone: str) -> list[str]:
    """The labels of ``name`` left of ``zone`` (both lowercased FQDNs)."""
    base = name[:len(name) - len(zone)].rstrip(".")
    return base.split(".") if base else []


__all__ = ["Answer", "Chase", "DNSIndexView", "Request", "Resolver", "endpoint_hostname",
           "extract_address_from_reverse", "parse_request"]
