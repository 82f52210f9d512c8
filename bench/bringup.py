"""Bring-up benchmark: time from nothing to every pod Ready, and peak memory.

Two sizes, each in a fresh process (so peak RSS is its own): 3 nodes / 100 pods / 50 services and
10 nodes / 1,000 pods / 500 services, as Deployments of nginx (2 replicas each) with a ClusterIP
Service in front of each; the clock starts once netemu and its API server are imported (the
import is reported beside it). Each size runs twice: plain, and with a ConfigMap and a Secret mounted
as volumes in every pod (issue 12: the kubelet writes both with its atomic-writer layout before
the container starts). Goals (issue 2): under 1 s and under 10 s on a 2-core machine, either way;
for scale, kind takes about 30 s for an empty cluster. Not a test: `make bench` prints the numbers.
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


CONFIG = """apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data: {app.properties: "color=blue\\n", LOG_LEVEL: info}
---
apiVersion: v1
kind: Secret
metadata: {name: app-secret}
stringData: {password: s3cr3t}"""

MOUNTS = """
        volumeMounts:
        - {name: config, mountPath: /etc/app, readOnly: true}
        - {name: secret, mountPath: /etc/secret, readOnly: true}
      volumes:
      - {name: config, configMap: {name: app-config}}
      - {name: secret, secret: {secretName: app-secret}}"""


def manifests(deployments: int, mounted: bool = False) -> str:
    docs = [CONFIG] if mounted else []
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
      - name: web
        image: nginx
        ports: [{{containerPort: 8080}}]{MOUNTS if mounted else ""}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: 80, targetPort: 8080}}]""")
    return "\n---\n".join(docs)


async def one(nodes: int, deployments: int, mounted: bool) -> dict:
    # The code a cluster runs is imported before the clock starts, and timed on its own: netemu
    # itself, and the Kubernetes API server every cluster serves (aiohttp; imported lazily by
    # Cluster.start, so that commands which start no cluster do not pay for it).
    t_import = time.perf_counter()
    from netemu import Cluster
    import netemu.kubeapi.server  # noqa: F401
    t_import = time.perf_counter() - t_import
    text = manifests(deployments, mounted)
    t0 = time.perf_counter()
    async with Cluster(nodes=nodes, name=f"bench-{nodes}") as cluster:
        t_up = time.perf_counter() - t0
        await cluster.apply(text)
        await cluster.wait_ready(timeout=120)
        t_ready = time.perf_counter() - t0
        pods = len(cluster.pods(None))
        slices = cluster.store.count("EndpointSlice")
    return {"nodes": nodes, "pods": pods, "services": deployments, "slices": slices, "mounted": mounted,
            "import_s": round(t_import, 3), "cluster_up_s": round(t_up, 4), "all_ready_s": round(t_ready, 3),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def child(nodes: int, deployments: int, mounted: bool) -> None:
    try:
        import uvloop
        result = uvloop.run(one(nodes, deployments, mounted))
    except ImportError:
        result = asyncio.run(one(nodes, deployments, mounted))
    print(json.dumps(result))


def main() -> int:
    print(f"{'nodes':>5} {'pods':>5} {'svcs':>5} {'volumes':>8} {'import (s)':>10} {'up (s)':>8} "
          f"{'all Ready (s)':>14} {'goal (s)':>9} {'peak RSS (MiB)':>15}")
    failed = 0
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(dir=shm) as state:
        env = {**os.environ, "NETEMU_STATE_DIR": state}
        for (nodes, deployments), mounted in ((size, mounted) for size in SIZES for mounted in (False, True)):
            out = subprocess.run([sys.executable, __file__, "--child", str(nodes), str(deployments),
                                  "mounted" if mounted else "plain"],
                                 capture_output=True, text=True, env=env, timeout=300)
            if out.returncode != 0:
                print(out.stderr, file=sys.stderr)
                failed += 1
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            goal = GOALS[(nodes, deployments)]
            mark = "ok" if r["all_ready_s"] < goal else "SLOW"
            volumes = "CM+Secret" if mounted else "none"
            print(f"{r['nodes']:>5} {r['pods']:>5} {r['services']:>5} {volumes:>8} {r['import_s']:>10.3f} "
                  f"{r['cluster_up_s']:>8.3f} "
                  f"{r['all_ready_s']:>14.3f} {goal:>9.1f} {r['peak_rss_mib']:>15.1f}  {mark}")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "mounted")
    else:
        sys.exit(main())
