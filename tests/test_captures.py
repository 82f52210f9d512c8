"""netemu.dev Capture objects through the real kubectl (netemu.captures): validation and admission
in the API server's words, `kubectl get/explain`, and on the netns backend a real recording of a
pod's traffic into a pcapng file, completed at ``count`` frames or stopped by deleting it."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kubeapi_support import KUBECTL, api_fixtures, cluster_with_api, kubectl_runner, poll
from netemu.fabric import routes_outside_loopback
from netemu.kubeapi import KUBECONFIG
from test_netns_helpers import netns_ready  # noqa: F401 - fixture

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")

api, kubectl, namespace = api_fixtures("captures")
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


def capture(name: str, target: dict, **spec: object) -> str:
    return json.dumps({"apiVersion": "netemu.dev/v1", "kind": "Capture", "metadata": {"name": name},
                       "spec": {"target": target, **spec}})


def test_invalid_captures_are_refused_with_field_paths(kubectl, namespace) -> None:
    both = kubectl("apply", "-n", namespace, "-f", "-", input=capture("both", {"pod": "a", "node": "node-1"}),
                   check=False)
    assert both.returncode == 1
    assert 'The Capture "both" is invalid: spec.target: Invalid value: ["pod", "node"]: name exactly one of pod, ' \
           'node or link' in both.stderr
    link = kubectl("apply", "-n", namespace, "-f", "-",
                   input=capture("loop", {"link": ["node-1", "node-1"]}, count=-1), check=False)
    assert "spec.target.link: Invalid value" in link.stderr and "spec.count: Invalid value: -1" in link.stderr


def test_the_loopback_backend_refuses_a_capture(kubectl, namespace) -> None:
    refused = kubectl("apply", "-n", namespace, "-f", "-", input=capture("web", {"node": "node-1"}), check=False)
    assert refused.returncode == 1
    assert "spec: Forbidden: a capture needs the netns backend (this cluster uses loopback)" in refused.stderr
    assert kubectl("get", "captures", "-n", namespace).stderr.startswith("No resources found")
    explained = kubectl("explain", "capture.spec").stdout
    assert "count" in explained and "tcpdump-style filter" in explained


@pytest.mark.netns
@pytest.mark.skipif(bool(routes_outside_loopback()),
                    reason="the netns backend runs only in a namespace without outside routes (make test)")
def test_a_capture_records_a_pods_traffic_on_netns(netns_ready, tmp_path) -> None:  # noqa: F811
    with cluster_with_api(tmp_path / "state", "captures-netns", backend="netns", nodes=2) as handle:
        run = kubectl_runner(handle.cluster.state.directory / KUBECONFIG, tmp_path)
        for name, node in (("pinger", "node-1"), ("target", "node-2")):
            run("run", name, "--image=busybox", f"--overrides={json.dumps({'spec': {'nodeName': node}})}",
                "--", "sleep", "3600")
        run("wait", "--for=condition=Ready", "pod/pinger", "pod/target", "--timeout=60s")
        target_ip = run("get", "pod", "target", "-o", "jsonpath={.status.podIP}").stdout
        run("apply", "-f", "-", input=capture("four", {"pod": "pinger"}, filter="icmp", count=4))
        poll(lambda: run("get", "capture", "four", "-o", "jsonpath={.status.phase}").stdout == "Running",
             "the capture running")
        run("exec", "pinger", "--", "ping", "-c", "3", "-i", "0.2", target_ip)
        poll(lambda: run("get", "capture", "four", "-o", "jsonpath={.status.phase}").stdout == "Completed",
             "the capture completed at its count")
        status = json.loads(run("get", "capture", "four", "-o", "json").stdout)["status"]
        assert status["frames"] == 4 and "eth0" in status["recording"]
        recorded = Path(status["file"])
        assert recorded.parent == handle.cluster.state.directory / "captures"
        assert recorded.read_bytes()[:4] == PCAPNG_MAGIC
        row = run("get", "capture", "four").stdout.splitlines()[1].split()
        assert row[:4] == ["four", "pod/pinger", "Completed", "4"]
        changed = run("patch", "capture", "four", "--type=merge", "-p", '{"spec":{"count":9}}', check=False)
        assert changed.returncode == 1 and "spec: Forbidden: a Capture's spec cannot change" in changed.stderr
        # without a count it records until deleted
        run("apply", "-f", "-", input=capture("open", {"node": "node-2"}))
        poll(lambda: run("get", "capture", "open", "-o", "jsonpath={.status.phase}").stdout == "Running",
             "the open capture running")
        run("delete", "capture", "open")
        poll(lambda: not handle.run(_recordings()), "the deleted capture's recording to end")


async def _recordings() -> list:
    import asyncio
    return [t for t in asyncio.all_tasks() if "Captures._record" in repr(t)]
