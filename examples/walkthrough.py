"""The walkthrough's "Connecting applications with services" on a 3-node cluster.

Brings up the cluster, applies the my-nginx Deployment, then its Service, and shows what a user of a real cluster
would check: pods Running on distinct nodes with their own IPs, real curl to each pod IP, the
service variables a pod started after the Service sees, and the NodePort/LoadBalancer
allocations. Every check prints ✓ or ✗; the exit status is 0 only when all pass.
"""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from netemu import Cluster
from netemu.errors import NetemuError

HERE = Path(__file__).parent
failures = 0


def check(ok: bool, what: str, detail: str = "") -> None:
    global failures
    failures += not ok
    print(f" {'✓' if ok else '✗'} {what}" + (f"  ({detail})" if detail else ""), flush=True)


async def curl(url: str) -> tuple[int, str]:
    """Real curl, in a thread: the cluster serves on this process's event loop."""
    p = await asyncio.to_thread(subprocess.run, ["curl", "-sS", "--max-time", "5", url],
                                capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


async def main() -> int:
    t0 = time.monotonic()
    async with Cluster(nodes=3, name="walkthrough") as cluster:
        print(f"cluster up with nodes {', '.join(f'{n} {ip.ip}' for n, ip in cluster.nodes.items())}")
        for line in await cluster.apply(HERE / "my-nginx-deployment.yaml"):
            print("  " + line)
        await cluster.wait_ready(timeout=30)
        pods = cluster.pods(selector={"run": "my-nginx"})
        check(len(pods) == 2 and all(p.status.phase == "Running" for p in pods),
              "kubectl get pods -l run=my-nginx: 2 pods Running", ", ".join(p.metadata.name for p in pods))
        nodes = {p.spec.node_name for p in pods}
        check(len(nodes) == 2, "the replicas run on distinct nodes", ", ".join(sorted(nodes)))
        for p in pods:
            code, body = await curl(f"http://{p.status.pod_ip}/")
            check(code == 0 and "Welcome to nginx!" in body, f"curl http://{p.status.pod_ip}/ (pod {p.metadata.name})")
        for line in await cluster.apply(HERE / "my-nginx-service.yaml"):
            print("  " + line)
        svc = cluster.get("svc", "my-nginx")
        print(f"  service my-nginx has ClusterIP {svc.spec.cluster_ip}")
        old = pods[0].metadata.name
        env_old = (await cluster.exec(old, ["printenv"])).stdout
        check("MY_NGINX_SERVICE_HOST" not in env_old, f"{old} (created before the Service) has no MY_NGINX_* variables")
        await cluster.delete("pod", old)
        await cluster.wait_for(lambda: len([p for p in cluster.pods(selector={"run": "my-nginx"})
                                            if p.metadata.name != old]) == 2 and not cluster.not_ready(), 30,
                               "the replacement pod")
        new = next(p for p in cluster.pods(selector={"run": "my-nginx"}) if p.metadata.name != old
                   and p.metadata.name != pods[1].metadata.name)
        env_new = (await cluster.exec(new.metadata.name, ["printenv"])).stdout
        host = [line for line in env_new.splitlines() if line.startswith("MY_NGINX_SERVICE_HOST=")]
        check(host == [f"MY_NGINX_SERVICE_HOST={svc.spec.cluster_ip}"],
              f"its replacement {new.metadata.name} sees MY_NGINX_SERVICE_HOST", host[0] if host else "missing")
        await cluster.apply("""
apiVersion: v1
kind: Service
metadata:
  name: my-nginx-np
spec:
  type: NodePort
  selector:
    run: my-nginx
  ports:
    - port: 80
      nodePort: 30007
---
apiVersion: v1
kind: Service
metadata:
  name: my-nginx-lb
spec:
  type: LoadBalancer
  selector:
    run: my-nginx
  ports:
    - port: 80
""")
        np = cluster.get("svc", "my-nginx-np")
        check(np.spec.ports[0].node_port == 30007, "NodePort 30007 honoured")
        await cluster.wait_for(lambda: bool(cluster.get("svc", "my-nginx-lb").status.load_balancer.ingress), 10,
                               "the load balancer")
        lb = cluster.get("svc", "my-nginx-lb")
        ingress = lb.status.load_balancer.ingress[0].ip
        code, body = await curl(f"http://{ingress}/")
        check(code == 0 and "Welcome to nginx!" in body, f"curl http://{ingress}/ through the LoadBalancer",
              f"nodePort {lb.spec.ports[0].node_port}")
    print(f"{'all checks passed' if not failures else f'{failures} check(s) failed'} "
          f"in {time.monotonic() - t0:.2f}s; the cluster is gone")
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except NetemuError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
