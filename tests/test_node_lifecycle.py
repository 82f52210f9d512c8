"""Stopping and starting nodes, killing containers: what a user sees afterwards."""
from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from netemu.errors import NotFoundError

EXAMPLES = Path(__file__).parent.parent / "examples"


def node_ready(cluster, name: str) -> str:
    return cluster.get("node", name).status.conditions[0].status


async def test_stop_node_evicts_its_pods_and_start_brings_it_back(make_cluster):
    cluster = await make_cluster(nodes=3)
    await cluster.apply(EXAMPLES / "my-nginx-deployment.yaml", EXAMPLES / "my-nginx-service.yaml")
    await cluster.wait_ready(timeout=20)
    victim = cluster.pods(selector={"run": "my-nginx"})[0]
    node = victim.spec.node_name
    await cluster.stop_node(node)
    assert node_ready(cluster, node) == "Unknown"
    assert cluster.store.get("Pod", "default", victim.metadata.name) is None
    await cluster.wait_ready(timeout=20)
    pods = cluster.pods(selector={"run": "my-nginx"})
    assert len(pods) == 2 and node not in {p.spec.node_name for p in pods}
    addresses = {a for s in cluster.list("endpointslice", "default", {"kubernetes.io/service-name": "my-nginx"})
                 for e in s.endpoints for a in e.addresses}
    assert victim.status.pod_ip not in addresses
    r = await asyncio.to_thread(subprocess.run, ["curl", "-sS", "--max-time", "2", f"http://{victim.status.pod_ip}/"],
                                capture_output=True)
    assert r.returncode != 0  # the stopped node's pod no longer answers
    await cluster.start_node(node)
    assert node_ready(cluster, node) == "True"
    await cluster.scale("my-nginx", 3)
    await cluster.wait_ready(timeout=20)
    assert len(cluster.pods(selector={"run": "my-nginx"})) == 3


async def test_stop_unknown_node(make_cluster):
    cluster = await make_cluster()
    with pytest.raises(NotFoundError, match='nodes "nope" not found'):
        await cluster.stop_node("nope")


@pytest.mark.parametrize("command", [None, ["sleep", "300"]], ids=["emulation", "process"])
async def test_killed_container_is_restarted(make_cluster, command):
    cluster = await make_cluster()
    container = {"name": "main", "image": "nginx", "ports": [{"containerPort": 8080}]}
    if command:
        container["command"] = command
    await cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "victim"},
                         "spec": {"containers": [container]}})
    await cluster.wait_ready(timeout=20)
    await cluster.kill_container("victim")

    def restarted() -> bool:
        status = cluster.get("pod", "victim").status.container_statuses[0]
        return status.restart_count == 1 and status.state.running is not None
    await cluster.wait_for(restarted, 10, "the restart")
    last = cluster.get("pod", "victim").status.container_statuses[0].last_state.terminated
    assert last.exit_code == 137
