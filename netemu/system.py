"""System components every cluster runs: cluster DNS as the kube-dns Service in kube-system.

As in kubeadm and kind, cluster DNS is an ordinary Deployment (``coredns``) behind an ordinary
Service (``kube-dns``, ClusterIP ``.10``, ports ``dns`` 53/UDP and ``dns-tcp`` 53/TCP), so its
traffic goes through the service proxy like any other. The pod's container runs the built-in
image ``netemu.dev/cluster-dns``: netemu's DNS server, answering from an index that the cluster
keeps current from store events.
"""
from __future__ import annotations

import os
from typing import Any

from netemu.images.base import ContainerContext, EmulationBase, RunningEmulation

DNS_IMAGE = "netemu.dev/cluster-dns:0.1"


def dns_port() -> int:
    """53 where this process may bind it; otherwise a high port (resolvers in pods then cannot
    use cluster DNS, since resolv.conf has no port: the CLI says so)."""
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            unprivileged_start = int(f.read())
    except (OSError, ValueError):
        unprivileged_start = 1024
    return 53 if os.geteuid() == 0 or unprivileged_start <= 53 else 10053


def dns_manifests(dns_ip: str, port: int) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {{k8s-app: kube-dns, kubernetes.io/cluster-service: "true", kubernetes.io/name: CoreDNS}}
spec:
  selector: {{k8s-app: kube-dns}}
  clusterIP: {dns_ip}
  ports:
  - {{name: dns, port: {port}, protocol: UDP, targetPort: {port}}}
  - {{name: dns-tcp, port: {port}, protocol: TCP, targetPort: {port}}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {{matchLabels: {{k8s-app: kube-dns}}}}
  template:
    metadata:
      labels: {{k8s-app: kube-dns}}
    spec:
      dnsPolicy: Default
      containers:
      - name: coredns
        image: {DNS_IMAGE}
        ports:
        - {{name: dns, containerPort: {port}, protocol: UDP}}
        - {{name: dns-tcp, containerPort: {port}, protocol: TCP}}
"""


class ClusterDNSImage(EmulationBase):
    """The built-in image of the DNS pod; every replica serves from the cluster's one index."""

    name = "cluster-dns"

    def __init__(self, config: Any, index: Any, port: int, upstream_socket: Any = None):
        self.config = config
        self.index = index
        self.port = port
        self.upstream_socket = upstream_socket  # (family, type) -> socket, for forwarding upstream

    async def start(self, ctx: ContainerContext) -> RunningEmulation:
        from netemu.dns import ClusterDNS
        running = RunningEmulation(self.name)
        server = ClusterDNS(self.config, self.index)
        await server.start(ctx.start_server, ctx.datagram_socket, host=ctx.pod_ip, port=self.port,
                           make_socket=self.upstream_socket)
        ctx.log(f"[INFO] plugin/kubernetes: serving {self.config.zone} on {ctx.pod_ip}:{self.port} (udp, tcp)")
        running.add_datagram(server.udp_transport)  # closed with the container, however it ends
        running.add_server(server.tcp_server)
        running.on_stop(lambda: _close_soon(server))
        return running


def _close_soon(server: Any) -> None:
    import asyncio
    asyncio.ensure_future(server.close())
