"""`netemu up --detach` as scripts use it: it fails fast (and non-zero) on pods that will never be
ready, exits 0 when they are, and a second cluster comes up in a free address slot."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

NETEMU = str(Path(sys.executable).parent / "netemu")

POD = """\
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  containers:
  - name: main
    image: {image}
{extra}"""


def netemu(env, *args, timeout=90):
    return subprocess.run([NETEMU, *args], env=env, capture_output=True, text=True, timeout=timeout)


def pid_of(r: subprocess.CompletedProcess) -> int:
    return int(re.search(r"running in the background as pid (\d+)\)", r.stdout).group(1))


def gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def env(tmp_path):
    clean = {k: v for k, v in os.environ.items() if k != "NETEMU_CLUSTER"}
    return {**clean, "NETEMU_STATE_DIR": str(tmp_path / "state")}


@pytest.fixture
def started(env):
    """Detached clusters to stop when the test ends: append (name, pid)."""
    clusters: list[tuple[str, int]] = []
    yield clusters
    for name, pid in clusters:
        netemu(env, "down", "--name", name)
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)


def manifest(tmp_path: Path, name: str, image: str, extra: str = "") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(POD.format(name=name, image=image, extra=extra))
    return str(path)


def test_an_unknown_image_fails_fast_and_names_the_pod(env, tmp_path, started):
    t0 = time.monotonic()
    r = netemu(env, "up", "--detach", "--name", "img", "--dns-upstream", "none", "--timeout", "60",
               "-f", manifest(tmp_path, "web", "example.invalid/nosuch:1"))
    waited = time.monotonic() - t0
    assert r.returncode == 1, r.stdout + r.stderr
    started.append(("img", pid_of(r)))
    assert waited < 30  # it did not sit out the 60 s timeout
    lines = r.stderr.splitlines()
    assert lines[0] == "error: 1 pod will not become ready (restarting will not help):"
    assert lines[1].startswith('  pod default/web: container main: ErrImagePull: netemu has no built-in emulation '
                               'of image "example.invalid/nosuch:1"')
    assert lines[2] == (f'the cluster "img" is still up (pid {pid_of(r)}): inspect it with `netemu get pods '
                        "--name img` and `netemu describe pod web --name img`; stop it with `netemu down --name img`")
    assert "Traceback" not in r.stderr
    assert re.search(r"^web +0/1 +ErrImagePull", netemu(env, "get", "pods", "--name", "img").stdout, re.MULTILINE)


def test_a_refused_bind_fails_fast(env, tmp_path, started):
    with socket.socket() as taken:  # the port the pod wants, held on every address
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        extra = f"    args: [netexec, --http-port={port}]\n    ports: [{{containerPort: {port}}}]\n"
        r = netemu(env, "up", "--detach", "--name", "bind", "--dns-upstream", "none", "--timeout", "60",
                   "-f", manifest(tmp_path, "netexec", "registry.k8s.io/e2e-test-images/agnhost:2.53", extra))
    assert r.returncode == 1, r.stdout + r.stderr
    started.append(("bind", pid_of(r)))
    assert re.search(rf"  pod default/netexec: container main: .*cannot listen on [0-9.]+:{port}/TCP: "
                     "address already in use", r.stderr), r.stderr
    assert "is still up" in r.stderr


def test_a_pod_that_serves_its_port_exits_0(env, tmp_path, started):
    extra = "    args: [netexec, --http-port=8080]\n    ports: [{containerPort: 8080}]\n"
    r = netemu(env, "up", "--detach", "--name", "fine", "--dns-upstream", "none",
               "-f", manifest(tmp_path, "netexec", "registry.k8s.io/e2e-test-images/agnhost:2.53", extra))
    assert r.returncode == 0, r.stderr
    started.append(("fine", pid_of(r)))
    assert r.stderr == ""
    assert re.search(r"^netexec +1/1 +Running", netemu(env, "get", "pods", "--name", "fine").stdout, re.MULTILINE)


def test_a_timeout_exits_non_zero_and_says_what_is_not_ready(env, tmp_path, started):
    extra = "    readinessProbe: {exec: {command: [\"false\"]}, periodSeconds: 1}\n"
    r = netemu(env, "up", "--detach", "--name", "slow", "--dns-upstream", "none", "--timeout", "2",
               "-f", manifest(tmp_path, "never", "busybox", extra))
    assert r.returncode == 1, r.stdout + r.stderr
    started.append(("slow", pid_of(r)))
    lines = r.stderr.splitlines()
    assert lines[0] == "error: timed out after 2s waiting for pods to be ready: still waiting for pod default/never"
    assert lines[1].startswith('the cluster "slow" is still up')


def test_a_second_cluster_takes_a_free_address_slot(env, started):
    first = netemu(env, "up", "--detach", "--name", "one", "--dns-upstream", "none")
    assert first.returncode == 0, first.stderr
    started.append(("one", pid_of(first)))
    assert "address slot" not in first.stdout
    second = netemu(env, "up", "--detach", "--name", "two", "--dns-upstream", "none")
    assert second.returncode == 0, second.stderr
    started.append(("two", pid_of(second)))
    assert ("  address slot 1: nodes 127.11.0.0/16, pods 127.245.0.0/16, services 127.97.0.0/16, load balancers "
            "127.201.0.0/16 (the default ranges are in use by another cluster)") in second.stdout.splitlines()
    assert re.search(r"^  node node-1 +127\.11\.0\.1 ", second.stdout, re.MULTILINE)
    for name in ("one", "two"):
        pods = netemu(env, "get", "pods", "-A", "--name", name)
        assert pods.returncode == 0 and "coredns" in pods.stdout, pods.stderr
    for name, pid in started:
        assert netemu(env, "down", "--name", name).stdout == f'cluster "{name}" stopped\n'
        assert gone(pid)
    started.clear()


def test_a_cluster_of_another_state_directory_is_seen_by_its_listeners(env, started, tmp_path):
    """Another user's clusters live under another state root, which this one cannot read: a
    cluster listening on the default service range's `kubernetes` address (.1:443) still moves the
    next one to a free slot."""
    other = {**env, "NETEMU_STATE_DIR": str(tmp_path / "other-user")}
    first = netemu(other, "up", "--detach", "--name", "theirs", "--dns-upstream", "none")
    assert first.returncode == 0, first.stderr
    try:
        poll_until = time.monotonic() + 30
        while subprocess.run(["curl", "-sk", "-o", "/dev/null", "--max-time", "1", "https://127.96.0.1:443/"]).returncode:
            assert time.monotonic() < poll_until, "the first cluster never listened on 127.96.0.1:443"
            time.sleep(0.05)
        second = netemu(env, "up", "--detach", "--name", "mine", "--dns-upstream", "none")
        assert second.returncode == 0, second.stderr
        started.append(("mine", pid_of(second)))
        assert "  address slot 1: nodes 127.11.0.0/16" in second.stdout, second.stdout
        assert "warning" not in second.stdout + second.stderr
    finally:
        netemu(other, "down", "--name", "theirs")
        assert gone(pid_of(first))


def test_an_explicit_range_in_use_names_the_flag_and_a_free_range(env, started):
    first = netemu(env, "up", "--detach", "--name", "one", "--dns-upstream", "none")
    assert first.returncode == 0, first.stderr
    started.append(("one", pid_of(first)))
    r = netemu(env, "up", "--detach", "--name", "two", "--dns-upstream", "none", "--pod-cidr", "127.244.0.0/16")
    assert r.returncode == 1
    assert r.stderr == (f'error: --pod-cidr 127.244.0.0/16 overlaps 127.244.0.0/16, which the running cluster "one" '
                        f"(pid {pid_of(first)}) uses; choose a free range, e.g. --pod-cidr 127.245.0.0/16\n")
