"""NetworkPolicy's nftables form: what a node holds (``render``), the batches between two states
(``transition``: only what differs), and a real kernel accepting every batch in a fresh namespace."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from netemu.api import codec
from netemu.api.defaults import apply_defaults
from netemu.api.networkpolicy import NetworkPolicy
from netemu.networkpolicy import nftables
from netemu.networkpolicy.model import PodFacts

LABELS = {"x": {"ns": "x"}, "y": {"ns": "y"}}
A = PodFacts("x", "a", {"app": "web"}, ("10.244.1.5",), {"http": (8080, "TCP")})
B = PodFacts("y", "b", {"app": "client"}, ("10.244.2.7",))
C = PodFacts("y", "c", {"app": "client"}, ("10.244.2.8",))


def policy(namespace: str, name: str, spec: dict) -> NetworkPolicy:
    obj, problems = codec.from_dict(NetworkPolicy, {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                                    "metadata": {"name": name, "namespace": namespace}, "spec": spec})
    assert not problems
    return apply_defaults(obj)


FROM_CLIENTS = policy("x", "from-clients", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{
    "from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "client"}}},
             {"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"]}}],
    "ports": [{"port": "http"}, {"protocol": "UDP", "port": 5000, "endPort": 5010}]}]})
DENY_EGRESS = policy("y", "deny-egress", {"podSelector": {}, "policyTypes": ["Egress"],
                                          "egress": [{"ports": [{"protocol": "UDP", "port": 53}]}]})


def test_render_a_chain_per_isolated_local_pod() -> None:
    rules = nftables.render([A, B], [A, B], LABELS, [FROM_CLIENTS, DENY_EGRESS])
    assert rules.ingress == {"10.244.1.5": "in-0af40105"}
    assert rules.egress == {"10.244.2.7": "out-0af40207"}
    (peer_set,) = rules.sets
    assert rules.sets[peer_set] == {"10.244.2.7"}
    assert rules.chains["in-0af40105"] == (
        f"ip saddr @{peer_set} meta l4proto tcp th dport 8080 return",
        f"ip saddr @{peer_set} meta l4proto udp th dport 5000-5010 return",
        "ip saddr 192.0.2.0/24 ip saddr != { 192.0.2.128/25 } meta l4proto tcp th dport 8080 return",
        "ip saddr 192.0.2.0/24 ip saddr != { 192.0.2.128/25 } meta l4proto udp th dport 5000-5010 return",
        "drop")
    assert rules.chains["out-0af40207"] == ("meta l4proto udp th dport 53 return", "drop")


def test_a_new_peer_pod_only_adds_a_set_element() -> None:
    before = nftables.render([A], [A, B], LABELS, [FROM_CLIENTS])
    after = nftables.render([A], [A, B, C], LABELS, [FROM_CLIENTS])
    (peer_set,) = after.sets
    assert nftables.transition(before, after) == f"add element inet netemu-policy {peer_set} {{ 10.244.2.8 }}\n"
    assert nftables.transition(after, after) == ""


def test_removing_the_policy_removes_its_chain_map_element_and_set() -> None:
    before = nftables.render([A], [A, B], LABELS, [FROM_CLIENTS])
    (peer_set,) = before.sets
    assert nftables.transition(before, nftables.NodeRules()).splitlines() == [
        "delete element inet netemu-policy ingress { 10.244.1.5 }",
        "delete chain inet netemu-policy in-0af40105",
        f"delete set inet netemu-policy {peer_set}",
    ]


@pytest.mark.skipif(shutil.which("nft") is None or shutil.which("unshare") is None, reason="needs nft and unshare")
def test_the_kernel_accepts_every_batch(tmp_path: Path) -> None:
    states = [nftables.NodeRules(),
              nftables.render([A, B], [A, B], LABELS, [FROM_CLIENTS, DENY_EGRESS]),
              nftables.render([A, B, C], [A, B, C], LABELS, [FROM_CLIENTS, DENY_EGRESS]),
              nftables.render([A, C], [A, C], LABELS, [DENY_EGRESS]),
              nftables.NodeRules()]
    files = [tmp_path / "0.nft"]
    files[0].write_text(nftables.BASE)
    for i, (old, new) in enumerate(zip(states, states[1:]), 1):
        files.append(tmp_path / f"{i}.nft")
        files[-1].write_text(nftables.transition(old, new))
    script = " && ".join(f"nft -f {f}" for f in files) + " && nft list table inet netemu-policy"
    result = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "in-" not in result.stdout and "out-" not in result.stdout
    assert "chain forward" in result.stdout and "fib saddr type local accept" in result.stdout
