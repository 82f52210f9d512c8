"""On the netns backend the cluster's thread is sealed in a namespace of its own, yet its
Kubernetes API listens in the host's network (like the node addresses), where kubectl runs."""
from __future__ import annotations

import os
import subprocess

import pytest

from kubeapi_support import cluster_with_api
from netemu.fabric import routes_outside_loopback
from netemu.kubeapi import KUBECONFIG
from test_netns_helpers import netns_ready  # noqa: F401 - fixture

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(bool(routes_outside_loopback()),
                       reason="the netns backend runs only in a namespace without outside routes (make test)"),
]


def test_kubectl_reaches_a_netns_cluster_from_the_host(netns_ready, tmp_path):  # noqa: F811
    with cluster_with_api(tmp_path / "state", "kubeapi-netns", backend="netns") as api:
        env = dict(os.environ, KUBECONFIG=str(api.cluster.state.directory / KUBECONFIG), HOME=str(tmp_path))
        nodes = subprocess.run(["kubectl", "get", "nodes", "-o", "wide"], env=env, capture_output=True, text=True,
                               timeout=60)
        assert nodes.returncode == 0, nodes.stderr
        assert "netemu (netns backend)" in nodes.stdout
