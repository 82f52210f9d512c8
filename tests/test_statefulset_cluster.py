"""The classic headless Service + StatefulSet example on a real cluster: pods web-0 then web-1,
stable DNS names answered by the cluster DNS (real dig), re-creation under the same name,
ordered scale-down, and ``get statefulsets`` output."""
from __future__ import annotations

import asyncio
import re
import shutil
from datetime import UTC, datetime

import pytest

from netemu import printers
from netemu.controllers import podutil
from netemu.errors import WaitTimeoutError

pytestmark = pytest.mark.skipif(not shutil.which("dig"), reason="dig (bind9-dnsutils) is not installed")

WEB = """
apiVersion: v1
kind: Service
metadata:
  name: nginx
  labels:
    app: nginx
spec:
  ports:
  - port: 80
    name: web
  clusterIP: None
  selector:
    app: nginx
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  selector:
    matchLabels:
      app: nginx
  serviceName: "nginx"
  replicas: 2
  minReadySeconds: 0
  template:
    metadata:
      labels:
        app: nginx
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: nginx
        image: nginx
        ports:
        - containerPort: 80
          name: web
        volumeMounts:
        - name: www
          mountPath: /usr/share/nginx/html
  volumeClaimTemplates:
  - metadata:
      name: www
    spec:
      accessModes: [ "ReadWriteOnce" ]
      resources:
        requests:
          storage: 1Gi
"""
ZONE = "default.svc.cluster.local"


async def dig(cluster, *args: str) -> list[str]:
    proc = await asyncio.create_subprocess_exec(
        "dig", f"@{cluster.config.dns_ip}", "-p", str(cluster.dns_port), "+time=2", "+tries=1", "+short", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    return out.decode().split("\n")[:-1]


def published(cluster, hostnames: set[str]) -> bool:
    """The headless service's ready endpoints carry exactly these hostnames."""
    ready = {e.hostname for s in cluster.list("endpointslice", "default")
             if s.metadata.labels.get("kubernetes.io/service-name") == "nginx"
             for e in s.endpoints if e.conditions.ready}
    return ready == hostnames


async def start_web(make_cluster):
    cluster = await make_cluster(nodes=2)
    created: list[tuple[str, bool]] = []  # (pod, web-0 Running and Ready at that moment)

    def on_pod(event) -> None:
        if event.old is None and event.new.metadata.labels.get("app") == "nginx":
            web0 = cluster.store.get("Pod", "default", "web-0")
            created.append((event.new.metadata.name, web0 is not None and web0.status.phase == "Running"
                            and podutil.is_ready(web0)))
    unsubscribe = cluster.store.subscribe(on_pod, kinds=["Pod"])
    assert await cluster.apply(WEB) == ["service/nginx created", "statefulset.apps/web created"]
    try:
        await cluster.wait_for(lambda: published(cluster, {"web-0", "web-1"}), 20, "web-0 and web-1 in DNS")
    except WaitTimeoutError as exc:
        pods = [(p.metadata.name, p.spec.node_name, p.status.pod_ip, printers.pod_status(p))
                for p in cluster.list("pod", "default")]
        raise AssertionError(f"{exc}; pods: {pods}; slices: {cluster.list('endpointslice', 'default')}") from None
    finally:
        unsubscribe()
    return cluster, created


async def test_pods_start_in_order_with_stable_dns_names(make_cluster) -> None:
    cluster, created = await start_web(make_cluster)
    assert [name for name, _ in created] == ["web-0", "web-1"]
    assert created[1][1], "web-1 was created before web-0 was Running and Ready"
    for name in ("web-0", "web-1"):
        pod = cluster.get("pod", name)
        assert (pod.spec.hostname, pod.spec.subdomain, pod.status.phase) == (name, "nginx", "Running")
    ips = {name: cluster.pod_ip(name) for name in ("web-0", "web-1")}
    assert await dig(cluster, f"web-0.nginx.{ZONE}") == [ips["web-0"]]
    assert await dig(cluster, f"web-1.nginx.{ZONE}") == [ips["web-1"]]
    assert sorted(await dig(cluster, f"nginx.{ZONE}")) == sorted(ips.values())
    srv = sorted(line.split() for line in await dig(cluster, "SRV", f"_web._tcp.nginx.{ZONE}"))
    assert srv == [["0", "50", "80", f"web-0.nginx.{ZONE}."], ["0", "50", "80", f"web-1.nginx.{ZONE}."]]

    if "pod-resolv-conf" in cluster.capabilities:  # root: pods get their own hostname, hosts and resolv.conf
        assert (await cluster.exec("web-0", ["hostname"])).stdout == "web-0\n"
        hosts = (await cluster.exec("web-0", ["cat", "/etc/hosts"])).stdout
        assert f"{ips['web-0']}\tweb-0.nginx.{ZONE}\tweb-0\n" in hosts
        if "dns-port-53" in cluster.capabilities:  # a peer by its short name, through the search path
            found = await cluster.exec("web-0", ["getent", "hosts", "web-1.nginx"])
            assert found.stdout.split() == [ips["web-1"], f"web-1.nginx.{ZONE}"], found

    await cluster.wait_for(lambda: cluster.get("sts", "web").status.ready_replicas == 2, 10, "status")
    now = datetime.now(UTC)
    table = printers.render_table("statefulsets", cluster.list("statefulsets.apps", "default"), now=now)
    assert re.fullmatch(r"NAME   READY   AGE\nweb    2/2     \d+s\n", table), table
    wide = printers.render_table("sts", cluster.list("sts", "default"), wide=True, now=now)
    assert re.fullmatch(r"NAME   READY   AGE +CONTAINERS   IMAGES\nweb    2/2     \d+s +nginx        nginx\n",
                        wide), wide
    everything = printers.render_table("all", cluster.list("pod", "default") + cluster.list("svc", "default")
                                       + cluster.list("sts", "default"), now=now)
    assert "\nstatefulset.apps/web   2/2 " in everything


async def test_a_deleted_pod_returns_under_its_name_and_scale_down_is_ordered(make_cluster) -> None:
    cluster, _ = await start_web(make_cluster)
    old = cluster.get("pod", "web-0")
    assert await dig(cluster, f"web-0.nginx.{ZONE}") == [old.status.pod_ip]  # (now in the DNS cache)
    await cluster.delete("pod", "web-0")

    def back() -> bool:
        pod = cluster.store.get("Pod", "default", "web-0")
        return (pod is not None and pod.metadata.uid != old.metadata.uid and podutil.is_ready(pod)
                and published(cluster, {"web-0", "web-1"}))
    await cluster.wait_for(back, 20, "web-0 to come back")
    assert await dig(cluster, f"web-0.nginx.{ZONE}") == [cluster.pod_ip("web-0")]

    assert cluster.apiserver.scale("statefulset", "default", "web", 0) == "statefulset.apps/web scaled"
    order: list[str] = []
    unsubscribe = cluster.store.subscribe(
        lambda e: e.new is None and order.append(e.old.metadata.name), kinds=["Pod"])
    await cluster.wait_for(lambda: not cluster.list("pod", "default", {"app": "nginx"}), 30, "the pods to go")
    unsubscribe()
    assert order == ["web-1", "web-0"]
    assert await dig(cluster, f"web-0.nginx.{ZONE}") == []
