"""The incremental state (``state.PolicyState``) always equals a from-scratch ``nftables.render``:
after every step of seeded random sequences of pod, namespace and policy changes, for every node."""
from __future__ import annotations

import random

import pytest

from netemu.api import codec
from netemu.api.defaults import apply_defaults
from netemu.api.networkpolicy import NetworkPolicy
from netemu.networkpolicy import nftables
from netemu.networkpolicy.model import PodFacts
from netemu.networkpolicy.state import PolicyState

NAMESPACES = ["a", "b", "c"]
APPS = ["web", "db", "dns", "client"]
NODES = ["node-1", "node-2"]


def _selector(rng: random.Random) -> dict:
    choice = rng.randrange(4)
    if choice == 0:
        return {}
    if choice == 1:
        return {"matchLabels": {"app": rng.choice(APPS)}}
    if choice == 2:
        return {"matchExpressions": [{"key": "app", "operator": "In", "values": rng.sample(APPS, 2)}]}
    return {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}


def _peer(rng: random.Random) -> dict:
    choice = rng.randrange(4)
    if choice == 0:
        return {"podSelector": _selector(rng)}
    if choice == 1:
        return {"namespaceSelector": rng.choice([{}, {"matchLabels": {"team": rng.choice(["x", "y"])}}])}
    if choice == 2:
        return {"namespaceSelector": {"matchLabels": {"team": "x"}}, "podSelector": _selector(rng)}
    return {"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.2.0/24"]}}


def _ports(rng: random.Random) -> list[dict]:
    return rng.choice([[], [{"port": 80}], [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                       [{"port": "http"}], [{"port": 8000, "endPort": 8010}], [{"protocol": "UDP"}]])


def _policy(rng: random.Random, namespace: str, name: str, uid: str) -> NetworkPolicy:
    ingress = [{"from": [_peer(rng) for _ in range(rng.randrange(3))], "ports": _ports(rng)}
               for _ in range(rng.randrange(3))]
    egress = [{"to": [_peer(rng) for _ in range(rng.randrange(3))], "ports": _ports(rng)}
              for _ in range(rng.randrange(3))]
    spec: dict = {"podSelector": _selector(rng), "ingress": ingress, "egress": egress,
                  "policyTypes": rng.choice([["Ingress"], ["Egress"], ["Ingress", "Egress"]])}
    obj, problems = codec.from_dict(NetworkPolicy, {"metadata": {"name": name, "namespace": namespace, "uid": uid},
                                                    "spec": spec})
    assert not problems, problems
    return apply_defaults(obj)


def _pod(rng: random.Random, namespace: str, name: str, ip: str) -> PodFacts:
    labels = {"app": rng.choice(APPS)}
    if rng.random() < 0.3:
        labels["tier"] = "1"
    named = {"http": (rng.choice([80, 8080]), "TCP")} if rng.random() < 0.5 else {}
    return PodFacts(namespace, name, labels, (ip,) if rng.random() < 0.95 else (), named)


@pytest.mark.parametrize("seed", range(8))
def test_incremental_state_equals_a_full_render_after_every_change(seed: int) -> None:
    rng = random.Random(seed)
    state = PolicyState()
    pods: dict[tuple[str, str], tuple[PodFacts, str]] = {}
    labels: dict[str, dict[str, str]] = {}
    policies: dict[tuple[str, str], NetworkPolicy] = {}
    serial = 0
    nonempty = 0
    for _step in range(120):
        serial += 1
        what = rng.random()
        if what < 0.45:  # a pod comes, changes or goes
            key = (rng.choice(NAMESPACES), f"p{rng.randrange(12)}")
            if key in pods and rng.random() < 0.3:
                del pods[key]
                state.set_pod(key, None)
            else:
                pod = _pod(rng, *key, f"10.244.{rng.randrange(1, 3)}.{serial}")
                pods[key] = (pod, rng.choice(NODES))
                state.set_pod(key, pod)
        elif what < 0.6:  # a namespace is labelled anew or goes
            name = rng.choice(NAMESPACES)
            if name in labels and rng.random() < 0.2:
                del labels[name]
                state.set_namespace(name, None)
            else:
                labels[name] = {"team": rng.choice(["x", "y"])}
                state.set_namespace(name, labels[name])
        else:  # a policy comes, changes or goes
            key = (rng.choice(NAMESPACES), f"np{rng.randrange(6)}")
            if key in policies and rng.random() < 0.3:
                del policies[key]
                state.set_policy(key, None)
            else:
                policies[key] = _policy(rng, *key, f"uid-{serial}")
                state.set_policy(key, policies[key])
        everything = [pod for pod, _node in pods.values()]
        for node in NODES:
            local = [pod for pod, on in pods.values() if on == node]
            expected = nftables.render(local, everything, labels, list(policies.values()))
            got = state.node_rules([(p.namespace, p.name) for p in local])
            assert got == expected, f"seed {seed}, step {_step}, {node}"
            nonempty += bool(expected.chains and expected.sets)
    assert nonempty > 20  # the sequence exercised chains and sets, not only empty tables


def test_state_of_everything_equals_render() -> None:
    rng = random.Random(99)
    pods = [_pod(rng, ns, f"p{i}", f"10.244.1.{i + 2}") for i, ns in enumerate(NAMESPACES * 4)]
    labels = {ns: {"team": rng.choice(["x", "y"])} for ns in NAMESPACES}
    policies = [_policy(rng, ns, f"np{i}", f"u{i}") for i, ns in enumerate(NAMESPACES * 3)]
    state = PolicyState.of(pods, labels, policies)
    assert state.node_rules([(p.namespace, p.name) for p in pods]) == nftables.render(pods, pods, labels, policies)
