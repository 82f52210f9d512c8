"""netemu's cluster DNS (import name ``netemu.dns``): CoreDNS's kubernetes plugin, emulated.

- ``DNSConfig``: zone, TTL, the kube-dns IP, reverse zones (as CIDRs), upstreams.
- ``DNSIndex``: the read-only slimmed index fed by ``on_service`` / ``on_endpointslice`` /
  ``on_pod`` / ``on_namespace`` (old, new) events.
- ``ClusterDNS``: the UDP+TCP server answering from cached wire bytes.
- ``resolv_conf``: a pod's /etc/resolv.conf from dnsPolicy and dnsConfig.
- ``host_upstreams``: the host's nameservers, for ``forward . /etc/resolv.conf``.
"""
from .config import DNSConfig
from .forward import Forwarder, host_upstreams, upstreams_from_resolv_conf
from .index import DNSIndex
from .records import Answer, Resolver
from .resolvconf import parse_resolv_conf, pod_dns_config, resolv_conf
from .server import ClusterDNS

__all__ = ["Answer", "ClusterDNS", "DNSConfig", "DNSIndex", "Forwarder", "Resolver", "host_upstreams",
           "parse_resolv_conf", "pod_dns_config", "resolv_conf", "upstreams_from_resolv_conf"]
