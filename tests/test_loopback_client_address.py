"""The source address a backend sees on the loopback backend (a deliberate difference the README
lists): every pod shares the host's network stack, so a program in a pod that does not bind its
pod IP (``netemu exec``, a container command) connects from 127.0.0.1, and a backend behind a
ClusterIP sees 127.0.0.1; a client that binds its pod IP (``curl --interface "$POD_IP"``) is seen
with the pod's IP, as on a real cluster. Real curl, agnhost netexec's ``/clientip``.
"""
from __future__ import annotations

from typing import Any

MANIFESTS = """
apiVersion: v1
kind: Pod
metadata: {name: netexec, labels: {app: netexec}}
spec:
  containers:
  - name: netexec
    image: registry.k8s.io/e2e-test-images/agnhost:2.47
    args: ["netexec", "--http-port=8080"]
    ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: netexec}
spec:
  selector: {app: netexec}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers: [{name: curl, image: "radial/busyboxplus:curl"}]
"""


async def clientip_seen(cluster: Any, *curl_options: str) -> str:
    """What netexec behind the ClusterIP says the client's address is, asked by curl run in the
    client pod (``$POD_IP`` is the pod's environment's)."""
    url = f"http://{cluster.service_ip('netexec')}/clientip"
    result = await cluster.exec("client", ["sh", "-c", " ".join(["curl -sS --max-time 5", *curl_options, url])])
    assert result.returncode == 0, result.stderr
    return result.stdout.rsplit(":", 1)[0]


async def test_a_program_that_binds_no_address_is_seen_as_127_0_0_1_and_one_that_binds_its_pod_ip_with_it(
        make_cluster: Any) -> None:
    cluster = await make_cluster(nodes=1, dns_upstreams=())
    await cluster.apply(MANIFESTS)
    await cluster.wait_ready(timeout=20)
    assert await clientip_seen(cluster) == "127.0.0.1"  # the difference
    assert await clientip_seen(cluster, '--interface "$POD_IP"') == cluster.pod_ip("client")  # the workaround
