"""Bring-up benchmark: time from nothing to every pod Ready, and peak memory.

Two sizes, each in a fresh process (so peak RSS is its own): 3 nodes / 100 pods / 50 services and
10 nodes / 1,000 pods / 500 services, as Deployments of nginx (2 replicas each) with a ClusterIP
Service in front of each. Goals (issue 2): under 1 s and under 10 s on a 2-core machine; for
scale, kind takes about 30 s for an empty cluster. Not a test: `make bench` prints the numbers.
"""
from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

SIZES = [(3, 50), (10, 500)]  # (nodes, deployments); each deployment has 2 pods and 1 service
GOALS = {(3, 50): 1.0, (10, 500): 10.0}


def manifests(deployments: int) -> str:
    docs = []
    for i in range(deployments):
        name = f"app-{i}"
        docs.append(f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - {{name: web, image: nginx, ports: [{{containerPort: 8080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: 80, targetPort: 8080}}]""")
    return "\n---\n".join(docs)


async def one(nodes: int, deployments: int) -> dict:
    from netemu import Cluster
    text = manifests(deployments)
    t0 = time.perf_counter()
    async with Cluster(nodes=nodes, name=f"bench-{nodes}", control_socket=False) as cluster:
        t_up = time.perf_counter() - t0
        await cluster.apply(text)
        await cluster.wait_ready(timeout=120)
        t_ready = time.perf_counter() - t0
        pods = len(cluster.pods(None))
        slices = cluster.store.count("EndpointSlice")
    return {"nodes": nodes, "pods": pods, "services": deployments, "slices": slices,
            "cluster_up_s": round(t_up, 4), "all_ready_s": round(t_ready, 3),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def child(nodes: int, deployments: int) -> None:
    try:
        import uvloop
        result = uvloop.run(one(nodes, deployments))
    except ImportError:
        result = asyncio.run(one(nodes, deployments))
    print(json.dumps(result))


def main() -> int:
    print(f"{'nodes':>5} {'pods':>5} {'svcs':>5} {'up (s)':>8} {'all Ready (s)':>14} {'goal (s)':>9} "
          f"{'peak RSS (MiB)':>15}")
    failed = 0
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(dir=shm) as state:
        env = {**os.environ, "NETEMU_STATE_DIR": state}
        for nodes, deployments in SIZES:
            out = subprocess.run([sys.executable, __file__, "--child", str(nodes), str(deployments)],
                                 capture_output=True, text=True, env=env, timeout=300)
            if out.returncode != 0:
                print(out.stderr, file=sys.stderr)
                failed += 1
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            goal = GOALS[(nodes, deployments)]
            mark = "ok" if r["all_ready_s"] < goal else "SLOW"
            print(f"{r['nodes']:>5} {r['pods']:>5} {r['services']:>5} {r['cluster_up_s']:>8.3f} "
                  f"{r['all_ready_s']:>14.3f} {goal:>9.1f} {r['peak_rss_mib']:>15.1f}  {mark}")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit(main())
