"""Issue 14's acceptance: the whole scenario library through the Kubernetes API only, against a
netemu cluster in another process (`netemu up --detach`), with the runner given nothing but that
cluster's kubeconfig (its own netemu state root is empty, so it cannot reach the cluster's state).

Every scenario passes or is skipped for a reason a real cluster would give; the skips are listed
here with those reasons, so that a scenario that stops working remotely fails this test."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

NETEMU = str(Path(sys.executable).parent / "netemu")
LIBRARY = Path(__file__).resolve().parent.parent / "scenarios"

# Scenario name → why it cannot run through the API alone (words of the skip reason). The
# in-process run skips the same ones on the loopback backend, except the two marked *.
SKIPPED_REMOTELY = {
    "Container to container over localhost": "names a netemu backend",
    "LoadBalancer with externalTrafficPolicy Local, a client on the host": "names a netemu backend",  # *
    "NetworkPolicy, deny all ingress then allow frontend to backend": "the Kubernetes API does not tell",
    "NetworkPolicy, deny all egress but allow DNS": "the Kubernetes API does not tell",
    "Delay on a node's links, seen as round-trip time": "Chaos Mesh",
    "A node goes down, the Service keeps answering": "not offered by the Kubernetes API",  # *
    "A network partition between nodes, then heal": "Chaos Mesh",
    "Pod to pod without NAT, seen on the wire": "packet capture is netemu's own",
}


def netemu(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NETEMU, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A 3-node netemu cluster in its own process; yields its kubeconfig."""
    root = tmp_path_factory.mktemp("cluster")
    kubeconfig = root / "kubeconfig"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("NETEMU_")},
           "NETEMU_STATE_DIR": str(root / "state"), "KUBECONFIG": str(root / "user-kubeconfig")}
    up = netemu(env, "up", "--detach", "--nodes", "3", "--name", "library", "--dns-upstream", "none",
                "--kubeconfig", str(kubeconfig))
    assert up.returncode == 0, up.stderr
    pid = int(re.search(r"pid (\d+)\)", up.stdout).group(1))
    try:
        yield kubeconfig
    finally:
        down = netemu(env, "down", "--name", "library")
        if down.returncode != 0:
            os.kill(pid, signal.SIGKILL)


def test_the_library_passes_through_the_api_of_a_cluster_in_another_process(cluster, tmp_path):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("NETEMU_")},
           "KUBECONFIG": str(cluster), "NETEMU_STATE_DIR": str(tmp_path / "no-state"), "HOME": str(tmp_path)}
    started = time.monotonic()
    run = subprocess.run([NETEMU, "run", "--kubeconfig", str(cluster), str(LIBRARY), "--junit",
                          str(tmp_path / "remote.xml")], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=1800)
    out = run.stdout + run.stderr
    suites = ET.parse(tmp_path / "remote.xml").getroot()
    cases = list(suites.iter("testcase"))
    failed = [c.get("name") for c in cases if c.find("failure") is not None or c.find("error") is not None]
    assert failed == [], out
    skipped = {c.get("name"): c.find("skipped").get("message", "") + (c.find("skipped").text or "")
               for c in cases if c.find("skipped") is not None}
    assert set(skipped) == set(SKIPPED_REMOTELY), out
    for name, word in SKIPPED_REMOTELY.items():
        assert word in skipped[name], (name, skipped[name])
    assert len(cases) == len(list(LIBRARY.glob("*.yaml")))
    assert run.returncode == 0, out
    assert not (tmp_path / "no-state").exists() or not any((tmp_path / "no-state").iterdir())
    print(f"{len(cases)} scenarios in {time.monotonic() - started:.0f} s")
