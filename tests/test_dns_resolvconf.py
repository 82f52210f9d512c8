"""A pod's resolv.conf from dnsPolicy and dnsConfig (kubelet dns.go; containerd's line order)."""
from __future__ import annotations

from pathlib import Path

import pytest

from netemu import api
from netemu.api.objects import ObjectMeta, Pod, PodDNSConfig, PodDNSConfigOption, PodSpec
from netemu.dns import parse_resolv_conf, resolv_conf

FIXTURES = Path(__file__).parent / "fixtures" / "manifests"
DNS_IP = "10.96.0.10"
NODE = ("# the node's file\nnameserver 10.255.255.53\nnameserver 10.255.255.54\nsearch corp.example.\n"
        "options timeout:2\n")


def pod(policy: str = "ClusterFirst", *, ns: str = "default", host_network: bool = False,
        nameservers: tuple[str, ...] = (), searches: tuple[str, ...] = (),
        options: tuple[tuple[str, str | None], ...] = (), dns_config: bool | None = None) -> Pod:
    config = None
    if dns_config or nameservers or searches or options:
        config = PodDNSConfig(nameservers=nameservers, searches=searches,
                              options=tuple(PodDNSConfigOption(name=n, value=v) for n, v in options))
    return Pod(metadata=ObjectMeta(name="p", namespace=ns),
               spec=PodSpec(dns_policy=policy, host_network=host_network, dns_config=config))


LONG = "x" * 60 + ".example"  # 68 characters
CASES = [
    ("cluster-first", pod(), NODE,
     ("search default.svc.cluster.local svc.cluster.local cluster.local corp.example\n"
      "nameserver 10.96.0.10\noptions ndots:5\n")),
    ("cluster-first-other-namespace", pod(ns="prod"), "",
     "search prod.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"),
    ("cluster-first-node-search-duplicates", pod(), "search cluster.local a.example\n",
     ("search default.svc.cluster.local svc.cluster.local cluster.local a.example\n"
      "nameserver 10.96.0.10\noptions ndots:5\n")),
    ("cluster-first-last-search-line-wins", pod(), "search old.example\nsearch new.example\noptions ndots:1\n",
     ("search default.svc.cluster.local svc.cluster.local cluster.local new.example\n"
      "nameserver 10.96.0.10\noptions ndots:5\n")),
    ("cluster-first-host-network-is-default", pod(host_network=True), NODE,
     "search corp.example\nnameserver 10.255.255.53\nnameserver 10.255.255.54\noptions timeout:2\n"),
    ("cluster-first-with-host-net", pod("ClusterFirstWithHostNet", host_network=True), NODE,
     ("search default.svc.cluster.local svc.cluster.local cluster.local corp.example\n"
      "nameserver 10.96.0.10\noptions ndots:5\n")),
    ("default", pod("Default"), NODE,
     "search corp.example\nnameserver 10.255.255.53\nnameserver 10.255.255.54\noptions timeout:2\n"),
    ("default-without-node-file", pod("Default"), None, "search .\nnameserver 127.0.0.1\n"),
    ("none-without-config", pod("None", dns_config=True), NODE, ""),
    ("cluster-first-merges-dns-config",
     pod(nameservers=("1.1.1.1", DNS_IP), searches=("x.example", "svc.cluster.local"),
         options=(("ndots", "1"), ("single-request", None))), NODE,
     ("search default.svc.cluster.local svc.cluster.local cluster.local corp.example x.example\n"
      "nameserver 10.96.0.10\nnameserver 1.1.1.1\noptions ndots:1 single-request\n")),
    ("default-merges-options-by-name", pod("Default", options=(("timeout", "5"), ("edns0", None))), NODE,
     "search corp.example\nnameserver 10.255.255.53\nnameserver 10.255.255.54\noptions timeout:5 edns0\n"),
    ("at-most-three-nameservers", pod("Default", nameservers=("1.1.1.1", "8.8.8.8")), NODE,
     ("search corp.example\nnameserver 10.255.255.53\nnameserver 10.255.255.54\nnameserver 1.1.1.1\n"
      "options timeout:2\n")),
    ("at-most-32-search-domains", pod("None", nameservers=("1.2.3.4",),
                                      searches=tuple(f"s{i}.example" for i in range(40))), "",
     "search " + " ".join(f"s{i}.example" for i in range(32)) + "\nnameserver 1.2.3.4\n"),
    ("search-line-at-most-2048-chars", pod("None", nameservers=("1.2.3.4",),
                                           searches=tuple(f"{i:02d}{LONG}" for i in range(31))), "",
     "search " + " ".join(f"{i:02d}{LONG}" for i in range(28)) + "\nnameserver 1.2.3.4\n"),
    ("search-domain-over-253-chars-dropped", pod("None", nameservers=("1.2.3.4",),
                                                 searches=("a" * 254, "ok.example")), "",
     "search ok.example\nnameserver 1.2.3.4\n"),
]


@pytest.mark.parametrize("case_pod,node,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_resolv_conf(case_pod: Pod, node: str | None, expected: str) -> None:
    assert resolv_conf(case_pod, DNS_IP, "cluster.local", node) == expected


def test_without_a_cluster_dns_ip_cluster_first_falls_back_to_default() -> None:
    assert resolv_conf(pod(), "", "cluster.local", NODE) == resolv_conf(pod("Default"), DNS_IP, "cluster.local", NODE)


def test_walkthrough_dns_example_pod() -> None:
    (m,) = api.load_paths([str(FIXTURES / "walkthrough-dns-example-pod.yaml")])
    text = resolv_conf(m.obj, DNS_IP, "cluster.local", NODE)
    assert text.splitlines() == ["search ns1.svc.cluster-domain.example my.dns.search.suffix",
                                 "nameserver 1.2.3.4",
                                 "options ndots:2 edns0"]


def test_custom_cluster_domain() -> None:
    text = resolv_conf(pod(ns="ns1"), DNS_IP, "cluster-domain.example.", "")
    assert text.splitlines()[0] == ("search ns1.svc.cluster-domain.example svc.cluster-domain.example "
                                    "cluster-domain.example")


def test_parse_resolv_conf_follows_the_kubelet() -> None:
    parsed = parse_resolv_conf("nameserver 1.1.1.1\n  # comment\nnameserver\nsearch a. b\noptions x y:1\n"
                               "nameserver 2.2.2.2 extra\n")
    assert (parsed.servers, parsed.searches, parsed.options) == (["1.1.1.1", "2.2.2.2"], ["a", "b"], ["x", "y:1"])
