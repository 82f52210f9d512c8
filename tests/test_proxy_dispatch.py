"""The proxy's per-connection dispatch: what a listener gets for each accepted connection, and
what it costs (the derived values of service ports and endpoints are made once, not per call).

A ``ProxyGroup`` on the loopback fabric with a ClusterIP Service of two endpoints; its ClusterIP
listener is bound (127.96.253.1) but no client connects: the listener's own dispatch function is
called as the listener calls it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
import pickle
import subprocess
import sys
from typing import Any

from netemu.api.objects import (Endpoint, EndpointConditions, EndpointPort, EndpointSlice, ObjectMeta, Service,
                                ServicePort, ServiceSpec)
from netemu.config import ClusterConfig
from netemu.fabric.base import NodeNetwork
from netemu.fabric.loopback import LoopbackFabric
from netemu.proxy import Impairment, ProxyGroup, ProxyOptions
from netemu.proxy.balancer import ROUND_ROBIN, Balancer
from netemu.proxy.serviceport import EndpointInfo, ServicePortInfo, ServicePortName, Verdict
from netemu.state import ClusterState

CLUSTER_IP, NODE_IP, POD_NET = "127.96.253.1", "127.10.253.1", "127.244.253.0/26"
PODS = ("127.244.253.10", "127.244.253.11")
HOST_CLIENT = ("127.0.0.1", 40001)  # outside every node: handled by the first node


async def cluster_ip_group(tmp_path: Any) -> tuple[ProxyGroup, Any]:
    config = ClusterConfig(state_dir=tmp_path)
    group = ProxyGroup(LoopbackFabric(config, ClusterState(config)), ProxyOptions())
    group.add_node(NodeNetwork("node-1", NODE_IP, POD_NET))
    group.on_synced()
    group.on_service(None, Service(metadata=ObjectMeta(name="web", namespace="default"),
                                   spec=ServiceSpec(cluster_ip=CLUSTER_IP, ports=(ServicePort(port=80),))))
    group.on_endpointslice(None, EndpointSlice(
        metadata=ObjectMeta(name="web-a", namespace="default", labels={EndpointSlice.SERVICE_NAME_LABEL: "web"}),
        address_type="IPv4", ports=(EndpointPort(name="", port=8080),),
        endpoints=tuple(Endpoint(addresses=(ip,), node_name="node-1", conditions=EndpointConditions(ready=True))
                        for ip in PODS)))
    await group.settle()
    (fe,) = group._frontends.values()
    return group, fe.listener.dispatch


def test_a_cluster_ip_connection_gets_its_route_and_record(tmp_path):
    async def main() -> None:
        group, dispatch = await cluster_ip_group(tmp_path)
        try:
            routes = [dispatch(HOST_CLIENT) for _ in range(4)]
            assert [r.verdict for r in routes] == [Verdict.SERVE] * 4
            addresses = [r.address for r in routes]
            assert set(addresses) == {(ip, 8080) for ip in PODS} and addresses[:2] == addresses[2:]  # round robin
            first = routes[0]
            assert (first.source_ip, first.where, first.impairment) == ("127.0.0.1", "node-1", None)
            records = group.connection_log("default", "web")
            assert records == [r.record for r in routes]
            assert (records[0].client, records[0].service_port, records[0].frontend, records[0].node,
                    records[0].endpoint) == (HOST_CLIENT, "default/web:80/TCP", "cluster-ip", "node-1",
                                             f"{addresses[0][0]}:8080")
            other = first.retry([first.address])  # the connect failed: the other endpoint, recorded
            assert other != first.address and first.record.endpoint == f"{other[0]}:{other[1]}"

            group.set_impairment(Impairment(delay_ms=5), service="default/web")
            assert dispatch(HOST_CLIENT).impairment == Impairment(delay_ms=5)
            group.set_impairment(None, service="default/web")
            assert dispatch(HOST_CLIENT).impairment is None
        finally:
            await group.close()

    asyncio.run(main())


def test_a_dispatch_makes_few_python_calls(tmp_path):
    """The cost of choosing an endpoint, counted deterministically: Python-level calls (builtins
    not counted) per dispatch of a ClusterIP connection. Labels, service keys, hashes and
    endpoint texts are made when services change; before, each dispatch made them again (16)."""
    async def main() -> int:
        group, dispatch = await cluster_ip_group(tmp_path)
        try:
            dispatch(HOST_CLIENT)  # caches warm
            calls = 0

            def count(frame: Any, event: str, arg: Any) -> None:
                nonlocal calls
                calls += event == "call"

            sys.setprofile(count)
            try:
                dispatch(HOST_CLIENT)
            finally:
                sys.setprofile(None)
            return calls
        finally:
            await group.close()

    # _dispatch, NodeRanges.node_of, route, ServicePortName.__hash__, ConnectionRecord.__init__,
    # ConnectionLog.add, Balancer.pick, Route.__init__
    assert asyncio.run(main()) <= 8


def test_a_service_port_name_pickled_elsewhere_finds_its_service_port():
    """The cached hash is not carried across processes (string hashes differ per process)."""
    code = ("import pickle, sys; from netemu.proxy.serviceport import ServicePortName; "
            "sys.stdout.buffer.write(pickle.dumps(ServicePortName('default', 'web', 'http', 'TCP')))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    data = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, env=env).stdout
    theirs = pickle.loads(data)
    mine = ServicePortName("default", "web", "http", "TCP")
    assert theirs == mine and hash(theirs) == hash(mine) and {mine: 1}.get(theirs) == 1
    assert theirs.service == ("default", "web")


def test_derived_texts_follow_their_fields_and_do_not_count_in_equality():
    spn = ServicePortName("default", "web", "", "TCP")
    info = ServicePortInfo(name=spn, cluster_ip=CLUSTER_IP, port=80)
    assert info.label == "default/web:80/TCP" and dataclasses.replace(info, port=81).label == "default/web:81/TCP"
    assert "label" not in repr(info) and dataclasses.replace(info) == info
    endpoint = EndpointInfo("127.244.253.10", 8080, "node-1")
    assert (endpoint.address, endpoint.text, str(endpoint)) == (("127.244.253.10", 8080),) + ("127.244.253.10:8080",) * 2
    assert endpoint == EndpointInfo("127.244.253.10", 8080, "node-1")
    assert hash(endpoint) == hash(EndpointInfo("127.244.253.10", 8080, "node-1"))
    assert pickle.loads(pickle.dumps(endpoint)).text == "127.244.253.10:8080"


def test_balancer_without_a_clock_keeps_affinity_and_rotation():
    b = Balancer(ROUND_ROBIN, affinity_timeout=100)
    b.update([EndpointInfo(ip, 8080) for ip in PODS])
    pinned = b.pick("127.0.0.7")
    assert all(b.pick("127.0.0.7") == pinned for _ in range(5))
    plain = Balancer(ROUND_ROBIN)
    plain.update([EndpointInfo(ip, 8080) for ip in PODS])
    picks = [plain.pick("c").ip for _ in range(6)]
    assert picks[:2] == picks[2:4] == picks[4:] and set(picks) == set(PODS)
    plain.update([EndpointInfo(PODS[0], 8080)])  # fewer endpoints: the position starts over
    assert [plain.pick("c").ip for _ in range(3)] == [PODS[0]] * 3


def test_only_the_nodes_that_route_give_their_balancer_the_endpoints(tmp_path):
    """A sync hands a service's endpoints to every node's proxier; a node's balancer takes them
    at that node's next connection (20 nodes while 10,000 pods start: most never route one)."""
    async def main() -> None:
        group, dispatch = await cluster_ip_group(tmp_path)
        try:
            group.add_node(NodeNetwork("node-2", "127.10.253.2", "127.244.253.64/26"))
            await group.settle()
            spn = next(iter(group.proxiers["node-1"]._ports))
            lanes = {name: p._ports[spn].internal for name, p in group.proxiers.items()}
            assert lanes["node-2"].pending is not None and lanes["node-2"].balancer.endpoints == []
            dispatch(HOST_CLIENT)     # a host client's connection is node-1's
            assert lanes["node-1"].pending is None and len(lanes["node-1"].balancer.endpoints) == 2
            assert lanes["node-2"].pending is not None and lanes["node-2"].balancer.endpoints == []
            route = dispatch(("127.244.253.70", 40002))   # from a pod of node-2
            assert route.address in {(ip, 8080) for ip in PODS}
            assert lanes["node-2"].pending is None and len(lanes["node-2"].balancer.endpoints) == 2
        finally:
            await group.close()

    asyncio.run(main())
