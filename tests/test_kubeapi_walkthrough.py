"""The walkthrough's manifests through the real kubectl behave exactly as through ``netemu apply``:
the same objects (but for what the cluster allocates and records), the same refusals."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from kubeapi_support import KUBECTL, cluster_with_api, kubectl_runner, namespace_for
from netemu.api import to_dict
from netemu.errors import ManifestErrors
from netemu.kubeapi import KUBECONFIG

FIXTURES = Path(__file__).parent / "fixtures" / "manifests"
ACCEPTED = ["walkthrough-single-port-service.yaml", "walkthrough-multi-port-service.yaml",
            "walkthrough-nodeport-service.yaml", "walkthrough-my-nginx-deployment.yaml",
            "walkthrough-my-nginx-service.yaml", "walkthrough-dns-example-pod.yaml"]
KINDS = ("Service", "Deployment", "Pod")

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with cluster_with_api(tmp_path_factory.mktemp("state"), "walk") as handle:
        yield handle


@pytest.fixture
def kubectl(api, tmp_path):
    return kubectl_runner(api.cluster.state.directory / KUBECONFIG, tmp_path)


def _comparable(obj) -> dict:
    """What the user wrote and the API server defaulted; not what it allocated or recorded."""
    data = to_dict(obj)
    data.pop("status", None)
    meta = data["metadata"]
    data["metadata"] = {k: v for k, v in meta.items() if k in ("name", "labels")}
    spec = data.get("spec", {})
    for allocated in ("clusterIP", "clusterIPs", "nodeName"):
        spec.pop(allocated, None)
    for port in spec.get("ports", []):
        port.pop("nodePort", None)
    injected = "kube-api-access-"  # the token volume's name ends in 5 random characters
    for volume in spec.get("volumes", []):
        if volume["name"].startswith(injected):
            volume["name"] = injected
    for container in (*spec.get("containers", []), *spec.get("initContainers", [])):
        for mount in container.get("volumeMounts", []):
            if mount["name"].startswith(injected):
                mount["name"] = injected
    return data


def _made(api, namespace: str, before: dict[str, list[dict]] | None = None) -> dict[str, list[dict]]:
    """The objects users make (no owner) in ``namespace``, but those in ``before``."""
    now = {kind: sorted((_comparable(o) for o in api.list(kind, namespace) if not o.metadata.owner_references),
                        key=lambda d: d["metadata"]["name"]) for kind in KINDS}
    return {kind: [d for d in items if d not in (before or {}).get(kind, [])] for kind, items in now.items()}


@pytest.mark.parametrize("name", ACCEPTED, ids=lambda n: n[len("walkthrough-"):-len(".yaml")])
def test_kubectl_apply_makes_what_netemu_apply_makes(api, kubectl, request, name):
    """One after the other in one namespace (a fixed nodePort is the cluster's once; the DNS
    example names its namespace): netemu apply, look, delete; kubectl apply, look."""
    path = FIXTURES / name
    namespace = "default" if "namespace: default" in path.read_text() else namespace_for(kubectl, request)
    before = _made(api, namespace)  # "default" has the kubernetes Service
    lines = api.apply(path, namespace=namespace)
    api.wait_ready(60)
    by_netemu = _made(api, namespace, before)
    api.run(api.cluster.delete_manifests(path, namespace=namespace))
    made = [(kind, d["metadata"]["name"]) for kind, items in by_netemu.items() for d in items]
    api.wait_for(lambda: not any(api.cluster.store.get(kind, namespace, name) for kind, name in made)
                 and not any(p.metadata.owner_references for p in api.cluster.list("Pod", namespace)), 60)
    assert kubectl("apply", "-n", namespace, "-f", str(path)).stdout.splitlines() == lines
    api.wait_ready(60)
    assert _made(api, namespace, before) == by_netemu
    kubectl("delete", "-n", namespace, "-f", str(path))


def test_a_refusal_is_the_same_through_kubectl(api, kubectl, request):
    """The LoadBalancer example asks for a ClusterIP outside the cluster's range."""
    namespace = namespace_for(kubectl, request)
    name = FIXTURES / "walkthrough-loadbalancer-service.yaml"
    with pytest.raises(ManifestErrors) as refused:
        api.apply(name, namespace=namespace)
    ours = str(refused.value).split(": ", 1)[1]  # after "file[doc 1] Service ns/name"
    r = kubectl("apply", "-n", namespace, "-f", str(name), check=False)
    assert r.returncode == 1 and ours.split(": ", 1)[1] in r.stderr, (ours, r.stderr)
