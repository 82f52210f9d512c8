"""A cluster's shutdown leaves pod networks to the fabric's stop and the state directory's removal
(no CNI DEL per pod: issue 15, ``down`` over 10,000 pods); a stopped node still releases its
pods' networks one by one, since the cluster goes on without them."""
from __future__ import annotations

from typing import Any

import pytest

DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
              "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                       "template": {"metadata": {"labels": {"app": "web"}},
                                    "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}


def record_removals(cluster: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    removed: list[str] = []
    real = cluster.fabric.remove_pod

    async def remove_pod(node: str, container_id: str) -> None:
        removed.append(container_id)
        await real(node, container_id)
    monkeypatch.setattr(cluster.fabric, "remove_pod", remove_pod)
    return removed


def address_records(cluster: Any) -> set[str]:
    """The pod addresses the CNI plugin's IPAM holds (one file per address, named by it)."""
    return {p.name for p in cluster.state.path("cni").rglob("*") if p.is_file() and p.name[0].isdigit()}


async def test_shutdown_takes_every_pod_network_at_once(make_cluster, monkeypatch) -> None:
    cluster = await make_cluster(nodes=2)
    await cluster.apply(DEPLOYMENT)
    await cluster.wait_ready(timeout=20)
    ips = {p.status.pod_ip for p in cluster.pods(selector={"app": "web"})}
    assert len(ips) == 4 and ips <= address_records(cluster)
    removed = record_removals(cluster, monkeypatch)
    directory = cluster.state.directory
    await cluster.stop()
    assert removed == []
    assert not directory.exists()


async def test_a_stopped_node_releases_its_pods_addresses(make_cluster, monkeypatch) -> None:
    cluster = await make_cluster(nodes=2)
    await cluster.apply(DEPLOYMENT)
    await cluster.wait_ready(timeout=20)
    node = cluster.pods(selector={"app": "web"})[0].spec.node_name
    on_node = {p.metadata.uid: p.status.pod_ip for p in cluster.pods(selector={"app": "web"})
               if p.spec.node_name == node}
    removed = record_removals(cluster, monkeypatch)
    await cluster.stop_node(node)
    assert set(on_node) <= set(removed)
    assert not set(on_node.values()) & address_records(cluster)
