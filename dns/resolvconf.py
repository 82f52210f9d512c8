"""A pod's /etc/resolv.conf from its dnsPolicy and dnsConfig (pure).

A port of the kubelet's ``pkg/kubelet/network/dns/dns.go`` (``GetPodDNS``):

- ``ClusterFirst`` (the default; ``Default`` for a hostNetwork pod) and
  ``ClusterFirstWithHostNet``: the cluster DNS as the only nameserver, search
  ``<ns>.svc.<zone> svc.<zone> <zone>`` followed by the node's search domains (duplicates
  removed), ``options ndots:5``; without a cluster DNS IP, ``Default``.
- ``Default``: the node's resolv.conf (nameservers, the last ``search`` line, the last ``options``
  line); with no node file at all (kubelet ``--resolv-conf=""``), ``nameserver 127.0.0.1`` and
  ``search .``.
- ``None``: only what ``dnsConfig`` gives.

``dnsConfig`` is then appended: nameservers and searches with duplicates removed, options merged
by name (a dnsConfig option replaces the one of the same name). Limits as the kubelet applies
them: at most 3 nameservers; at most 32 search domains, none over 253 characters, the line at
most 2048 characters (cut from the end).

The file is written as containerd's CRI plugin writes it (``parseDNSOptions``): the ``search``
line, then one ``nameserver`` line each, then the ``options`` line. The kubelet's own Go map
leaves the order of merged options random; here they keep their first-seen order.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from netemu.api.objects import Pod, PodDNSConfig

MAX_NAMESERVERS = 3
MAX_SEARCH_PATHS = 32
MAX_SEARCH_LINE_CHARS = 2048
MAX_SEARCH_DOMAIN_CHARS = 253  # DNS1123SubdomainMaxLength
DEFAULT_OPTIONS = ("ndots:5",)


@dataclass
class ResolvConfig:
    """What goes into a resolv.conf (the CRI ``DNSConfig``)."""

    servers: list[str] = field(default_factory=list)
    searches: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = []
        if self.searches:
            lines.append("search " + " ".join(self.searches))
        lines.extend("nameserver " + server for server in self.servers)
        if self.options:
            lines.append("options " + " ".join(self.options))
        return "".join(line + "\n" for line in lines)


def parse_resolv_conf(text: str) -> ResolvConfig:
    """``parseResolvConf``: nameservers accumulate; the last search and options lines win."""
    out = ResolvConfig()
    for line in text.split("\n"):
        trimmed = line.strip()
        if trimmed.startswith("#"):
            continue
        fields = trimmed.split()
        if not fields:
            continue
        if fields[0] == "nameserver" and len(fields) >= 2:
            out.servers.append(fields[1])
        elif fields[0] == "search":
            out.searches = [s.removesuffix(".") for s in fields[1:]]
        elif fields[0] == "options":
            out.options = fields[1:]
    return out


def _omit_duplicates(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _merge_options(existing: Sequence[str], extra: Sequence[tuple[str, str | None]]) -> list[str]:
    merged: dict[str, str] = {}
    for option in existing:
        name, _, value = option.partition(":")
        merged[name] = value
    for name, value in extra:
        merged[name] = value or ""
    return [f"{name}:{value}" if value else name for name, value in merged.items()]


def _fit_searches(searches: list[str]) -> list[str]:
    searches = [s for s in searches[:MAX_SEARCH_PATHS] if len(s) <= MAX_SEARCH_DOMAIN_CHARS]
    while searches and len(" ".join(searches)) > MAX_SEARCH_LINE_CHARS:
        searches.pop()
    return searches


def pod_dns_config(pod: Pod, dns_ip: str | Sequence[str], zone: str = "cluster.local",
                   node_resolv_conf_text: str | None = None) -> ResolvConfig:
    """``GetPodDNS``: the resolver configuration of ``pod``."""
    cluster_dns = [dns_ip] if isinstance(dns_ip, str) else list(dns_ip)
    cluster_dns = [ip for ip in cluster_dns if ip]
    zone = zone.rstrip(".")
    host = parse_resolv_conf(node_resolv_conf_text or "")
    policy = pod.spec.dns_policy or "ClusterFirst"
    if policy == "ClusterFirst" and pod.spec.host_network:
        policy = "Default"
    if policy == "None":
        config = ResolvConfig()
    elif policy != "Default" and cluster_dns:
        namespace = pod.metadata.namespace or "default"
        searches = host.searches
        if zone:
            searches = _omit_duplicates([f"{namespace}.svc.{zone}", f"svc.{zone}", zone, *host.searches])
        config = ResolvConfig(servers=cluster_dns, searches=searches, options=list(DEFAULT_OPTIONS))
    elif node_resolv_conf_text is None:
        config = ResolvConfig(servers=["127.0.0.1"], searches=["."])
    else:
        config = host
    extra: PodDNSConfig | None = pod.spec.dns_config
    if extra is not None:
        config = ResolvConfig(
            servers=_omit_duplicates([*config.servers, *extra.nameservers]),
            searches=_omit_duplicates([*config.searches, *extra.searches]),
            options=_merge_options(config.options, [(o.name, o.value) for o in extra.options]))
    config.servers = config.servers[:MAX_NAMESERVERS]
    config.searches = _fit_searches(config.searches)
    return config


def resolv_conf(pod: Pod, dns_ip: str | Sequence[str], zone: str = "cluster.local",
                node_resolv_conf_text: str | None = None) -> str:
    """The text of ``pod``'s /etc/resolv.conf."""
    return pod_dns_config(pod, dns_ip, zone, node_resolv_conf_text).render()
