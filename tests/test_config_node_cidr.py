"""node_cidr_mask_size: each node's share of pod_cidr (kube-controller-manager's
--node-cidr-mask-size). The default /24 holds 254 pods a node; 10,000 pods on 20 nodes need a /23."""
from __future__ import annotations

import ipaddress

import pytest

from netemu import Cluster
from netemu.config import ClusterConfig
from netemu.errors import ClusterError


def test_default_is_a_slash_24_per_node() -> None:
    config = ClusterConfig(nodes=ClusterConfig.node_names(3))
    assert [config.node_pod_cidr(i) for i in range(3)] == ["127.244.1.0/24", "127.244.2.0/24", "127.244.3.0/24"]


def test_a_slash_23_per_node() -> None:
    config = ClusterConfig(nodes=ClusterConfig.node_names(3), node_cidr_mask_size=23)
    config.validate()
    assert [config.node_pod_cidr(i) for i in range(3)] == ["127.244.2.0/23", "127.244.4.0/23", "127.244.6.0/23"]


@pytest.mark.parametrize("overrides, message", [
    ({"node_cidr_mask_size": 15}, "node_cidr_mask_size: must be an integer from 16 to 30, got 15"),
    ({"node_cidr_mask_size": 31}, "node_cidr_mask_size: must be an integer from 16 to 30, got 31"),
    ({"node_cidr_mask_size": "23"}, "node_cidr_mask_size: must be an integer from 16 to 30, got '23'"),
    ({"node_cidr_mask_size": 20, "nodes": ClusterConfig.node_names(16)},
     "node_cidr_mask_size 20: pod_cidr 127.244.0.0/16 holds 15 node ranges of that size, not 16"),
    ({"node_cidr_mask_size": 23, "backend": "netns"}, "node_cidr_mask_size: the netns backend gives each node a /24"),
])
def test_refused_with_a_message(overrides: dict, message: str) -> None:
    with pytest.raises(ClusterError) as info:
        ClusterConfig(**overrides).validate()
    assert str(info.value) == message


async def test_a_pod_gets_an_address_of_its_nodes_slash_23(tmp_path) -> None:
    async with Cluster(nodes=1, name="cidr23", node_cidr_mask_size=23, state_dir=tmp_path) as cluster:
        await cluster.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\n"
                            "spec: {containers: [{name: web, image: nginx}]}")
        await cluster.wait_ready(timeout=30)
        cidr = cluster.get("Node", "node-1").spec.pod_cidr
        assert cidr == "127.244.2.0/23"
        assert ipaddress.ip_address(cluster.pod_ip("web")) in ipaddress.ip_network(cidr)
