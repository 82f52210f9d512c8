"""NetworkPolicy benchmark: 1,000 policies over 500 pods (10 namespaces, 2 nodes), their nftables
form for one node, and a real kernel loading it in a fresh network namespace.

Prints: the time to compute one node's rules (``render``) and the full batch, the time ``nft``
takes to load it, and for one policy changed afterwards the time to recompute, the size of the
difference and the time to load just that. Goals (issue 13): all policies applied in under 2 s,
one change in the kernel in under 100 ms. Not a test; run it inside scripts/isolated (it needs
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

from netemu.api import codec
from netemu.api.defaults import apply_defaults
from netemu.api.networkpolicy import NetworkPolicy
from netemu.networkpolicy import nftables
from netemu.networkpolicy.model import PodFacts

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


def main() -> int:
    if shutil.which("nft") is None or shutil.which("unshare") is None:
        print("needs nft and unshare", file=sys.stderr)
        return 1
    pods, labels, policies = workload()
    local = [p for p in pods if p.ips[0].startswith("10.244.1.")]
    t0 = time.perf_counter()
    rules = nftables.render(local, pods, labels, policies)
    full = nftables.BASE + nftables.transition(nftables.NodeRules(), rules)
    t1 = time.perf_counter()
    changed = list(policies)
    changed[0] = replace(changed[0], spec=replace(changed[0].spec, ingress=changed[0].spec.ingress[:0]))
    t2 = time.perf_counter()
    delta = nftables.transition(rules, nftables.render(local, pods, labels, changed))
    t3 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "full.nft").write_text(full)
        Path(tmp, "delta.nft").write_text(delta)
        script = (f"a=$(date +%s%N); nft -f {tmp}/full.nft; b=$(date +%s%N); nft -f {tmp}/delta.nft; "
                  "c=$(date +%s%N); echo $((b-a)) $((c-b))")
        out = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        return 1
    load_full, load_delta = (int(x) / 1e9 for x in out.stdout.split())
    print(f"{POLICIES} policies, {PODS} pods, one node's table: {len(rules.chains)} chains, {len(rules.sets)} sets")
    print(f"  render + batch  {t1 - t0:7.3f} s   ({len(full) // 1024} KiB)")
    print(f"  nft load        {load_full:7.3f} s")
    print(f"  total           {t1 - t0 + load_full:7.3f} s   (goal < 2 s)")
    print("one policy changed:")
    print(f"  recompute       {t3 - t2:7.3f} s   ({len(delta.splitlines())} lines)")
    print(f"  nft load        {load_delta:7.3f} s")
    print(f"  total           {t3 - t2 + load_delta:7.3f} s   (goal < 0.1 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
