"""Micro-benchmark: the proxy's per-connection dispatch (choosing an endpoint), no packets sent.

    scripts/isolated .venv/bin/python bench/proxy_dispatch.py [--calls N] [--kind cluster-ip|node-port]

A ``ProxyGroup`` on the loopback fabric with one node and a ClusterIP Service (and a NodePort)
with two ready endpoints; the ClusterIP listener is bound (so it runs isolated) but no client
connects: the group's real dispatch function, the one its TCP listener calls once per accepted
connection, is called ``--calls`` times for one host client (as wrk in ``bench/proxy.py``; with
``--pod-clients``, clients in the node's pod range), and the time per call printed
(perf_counter, median of 5 runs). For a deterministic count, run it under callgrind twice
(``--calls 0`` and ``--calls N``) and divide the difference of instructions by N:

    scripts/isolated valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python bench/proxy_dispatch.py --calls 20000 --runs 1
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from netemu.api.objects import (Endpoint, EndpointConditions, EndpointPort, EndpointSlice, ObjectMeta, Service,
                                ServicePort, ServiceSpec)
from netemu.config import ClusterConfig
from netemu.fabric.base import NodeNetwork
from netemu.fabric.loopback import LoopbackFabric
from netemu.proxy import ProxyGroup, ProxyOptions
from netemu.state import ClusterState

CLUSTER_IP, NODE_IP, POD_NET = "127.96.251.1", "127.10.251.1", "127.244.251.0/26"
PODS = ("127.244.251.10", "127.244.251.11")


async def measure(calls: int, runs: int, kind: str, pod_clients: bool, state_dir: Path) -> list[float]:
    config = ClusterConfig(state_dir=state_dir)
    group = ProxyGroup(LoopbackFabric(config, ClusterState(config)), ProxyOptions())
    try:
        group.add_node(NodeNetwork("node-1", NODE_IP, POD_NET))
        group.on_synced()
        service = Service(metadata=ObjectMeta(name="web", namespace="default"),
                          spec=ServiceSpec(type="NodePort", cluster_ip=CLUSTER_IP,
                                           ports=(ServicePort(port=80, node_port=30080),)))
        endpoints = EndpointSlice(
            metadata=ObjectMeta(name="web-abc", namespace="default",
                                labels={EndpointSlice.SERVICE_NAME_LABEL: "web"}),
            address_type="IPv4", ports=(EndpointPort(name="", port=8080),),
            endpoints=tuple(Endpoint(addresses=(ip,), node_name="node-1", conditions=EndpointConditions(ready=True))
                            for ip in PODS))
        group.on_service(None, service)
        group.on_endpointslice(None, endpoints)
        await group.settle()
        (fe,) = [f for f in group._frontends.values() if f.kind == kind]
        dispatch = fe.listener.dispatch  # what the listener calls per accepted connection
        host = "127.0.0.1"
        clients = [(f"127.244.251.{20 + i % 40}" if pod_clients else host, 40000 + i % 20000)
                   for i in range(min(calls, 4096) or 1)]
        n = len(clients)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            for i in range(calls):
                dispatch(clients[i % n])
            times.append((time.perf_counter() - start) / max(calls, 1))
        return times
    finally:
        await group.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--kind", choices=("cluster-ip", "node-port"), default="cluster-ip")
    parser.add_argument("--pod-clients", action="store_true", help="clients in the node's pod range")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        times = asyncio.run(measure(args.calls, args.runs, args.kind, args.pod_clients, Path(tmp)))
    if args.calls:
        print(f"{args.kind} dispatch: {statistics.median(times) * 1e9:.0f} ns per call "
              f"(median of {args.runs} runs of {args.calls})")


if __name__ == "__main__":
    main()
