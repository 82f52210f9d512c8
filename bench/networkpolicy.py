"""NetworkPolicy benchmark: 1,000 policies over 500 pods (10 namespaces, 2 nodes), their nftables
form for one node, and a real kernel loading it in a fresh network namespace.

Prints: the time to compute one node's rules (``render``, and the enforcer's incremental
``PolicyState`` built from the same objects) and the full batch, the time ``nft`` takes to load it,
and for one change afterwards (a policy, a pod's labels, a namespace's labels) the time the
incremental state takes to recompute the node's rules and their difference, the size of the
difference and the time to load it (a from-scratch ``render`` is shown for comparison). Goals
(issue 13): all policies applied in under 2 s, one change in the kernel in under 100 ms. Not a test; run it inside scripts/isolated (it needs
root, ``nft`` and ``unshare``).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from netemu.api import codec
from netemu.api.defaults import apply_defaults
from netemu.api.networkpolicy import NetworkPolicy
from netemu.networkpolicy import nftables
from netemu.networkpolicy.model import PodFacts
from netemu.networkpolicy.state import PolicyState, pod_key, policy_key

PODS, POLICIES, NAMESPACES, APPS = 500, 1000, 10, 50


def workload() -> tuple[list[PodFacts], dict[str, dict[str, str]], list[NetworkPolicy]]:
    pods = [PodFacts(f"ns{i % NAMESPACES}", f"p{i}", {"app": f"a{i % APPS}"}, (f"10.244.{i % 2 + 1}.{i // 2 + 2}",))
            for i in range(PODS)]
    labels = {f"ns{i}": {"ns": f"ns{i}"} for i in range(NAMESPACES)}
    policies = []
    for i in range(POLICIES):
        obj, problems = codec.from_dict(NetworkPolicy, {
            "metadata": {"name": f"p{i}", "namespace": f"ns{i % NAMESPACES}", "uid": f"uid-{i}"},
            "spec": {"podSelector": {"matchLabels": {"app": f"a{i % APPS}"}},
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": f"a{(i + 1) % APPS}"}}},
                                           {"namespaceSelector": {"matchLabels": {"ns": f"ns{(i + 3) % NAMESPACES}"}}}],
                                  "ports": [{"port": 80}, {"protocol": "UDP", "port": 53}]}]}})
        assert not problems
        policies.append(apply_defaults(obj))
    return pods, labels, policies


def _load_times(batches: list[str]) -> list[float]:
    """Seconds ``nft -f`` takes for each batch, applied in order in a fresh network namespace."""
    with tempfile.TemporaryDirectory() as tmp:
        steps = []
        for i, batch in enumerate(batches):
            Path(tmp, f"{i}.nft").write_text(batch)
            steps.append(f"a=$(date +%s%N); nft -f {tmp}/{i}.nft || exit 1; b=$(date +%s%N); echo $((b-a))")
        out = subprocess.run(["unshare", "--net", "sh", "-c", "; ".join(steps)],
                             capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return [int(x) / 1e9 for x in out.stdout.split()]


def main() -> int:
    if shutil.which("nft") is None or shutil.which("unshare") is None:
        print("needs nft and unshare", file=sys.stderr)
        return 1
    pods, labels, policies = workload()
    local = [p for p in pods if p.ips[0].startswith("10.244.1.")]
    local_keys = [pod_key(p) for p in local]
    t0 = time.perf_counter()
    rules = nftables.render(local, pods, labels, policies)
    full = nftables.BASE + nftables.transition(nftables.NodeRules(), rules)
    t1 = time.perf_counter()
    state = PolicyState.of(pods, labels, policies)
    assert state.node_rules(local_keys) == rules
    t2 = time.perf_counter()

    changes = []  # (what, seconds to recompute incrementally, seconds for a full render, batch)
    current, current_pods, current_labels, current_policies = rules, list(pods), dict(labels), list(policies)

    def measure(what: str, apply_change: Callable[[], None]) -> None:
        nonlocal current
        t_a = time.perf_counter()
        apply_change()
        wanted = state.node_rules(local_keys)
        delta = nftables.transition(current, wanted)
        t_b = time.perf_counter()
        local_now = [p for p in current_pods if p.ips[0].startswith("10.244.1.")]
        assert nftables.render(local_now, current_pods, current_labels, current_policies) == wanted
        t_c = time.perf_counter()
        changes.append((what, t_b - t_a, t_c - t_b, delta))
        current = wanted

    def change_policy() -> None:
        old = current_policies[0]
        current_policies[0] = replace(old, spec=replace(old.spec, ingress=old.spec.ingress[:0]))
        state.set_policy(policy_key(old), current_policies[0])

    def change_pod() -> None:
        old = current_pods[0]
        current_pods[0] = replace(old, labels={"app": "a1"})
        state.set_pod(pod_key(old), current_pods[0])

    def change_namespace() -> None:
        current_labels["ns1"] = {"ns": "ns3"}
        state.set_namespace("ns1", current_labels["ns1"])

    measure("a policy's rules", change_policy)
    measure("a pod's labels", change_pod)
    measure("a namespace's labels", change_namespace)
    load_full, *load_deltas = _load_times([full] + [delta for *_rest, delta in changes])
    print(f"{POLICIES} policies, {PODS} pods, one node's table: {len(rules.chains)} chains, {len(rules.sets)} sets")
    print(f"  render + batch  {t1 - t0:7.3f} s   ({len(full) // 1024} KiB; "
          f"the incremental state built in {t2 - t1:.3f} s)")
    print(f"  nft load        {load_full:7.3f} s")
    print(f"  total           {t1 - t0 + load_full:7.3f} s   (goal < 2 s)")
    for (what, incremental, from_scratch, delta), load in zip(changes, load_deltas):
        print(f"one change, {what}:")
        print(f"  recompute       {incremental:7.3f} s   ({len(delta.splitlines())} lines; "
              f"a full render takes {from_scratch:.3f} s)")
        print(f"  nft load        {load:7.3f} s")
        print(f"  total           {incremental + load:7.3f} s   (goal < 0.1 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
