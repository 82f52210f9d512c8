"""``cluster.logs`` (process output, emulation lines, kubectl's multi-container rule) and
``cluster.exec`` (exit code, the container's environment, stdin)."""
from __future__ import annotations

import asyncio
import subprocess

import pytest

from netemu.errors import NetemuError, NotFoundError

TWO_CONTAINERS = """
apiVersion: v1
kind: Pod
metadata: {name: duo}
spec:
  containers:
  - name: a
    image: busybox
    command: [sh, -c, "echo out-a; echo err-a >&2; exec sleep 300"]
    env: [{name: MY_VAR, value: from-a}]
  - name: b
    image: busybox
    command: [sh, -c, "echo out-b; exec sleep 300"]
    env: [{name: MY_VAR, value: from-b}]
"""


async def test_process_output_in_logs(cluster):
    await cluster.apply(TWO_CONTAINERS)
    await cluster.wait_ready(10)
    await cluster.wait_for(lambda: "err-a" in cluster.logs("duo", "a") and "out-b" in cluster.logs("duo", "b"),
                           5, "both containers' output")
    assert cluster.logs("duo", "a").splitlines() == ["out-a", "err-a"]
    assert cluster.logs("duo", "b").splitlines() == ["out-b"]


@pytest.mark.parametrize("container, error, text", [
    (None, NetemuError, "a container name must be specified for pod duo, choose one of: [a b]"),
    ("c", NotFoundError, "container c is not valid for pod duo"),
], ids=["no-name", "unknown-name"])
async def test_logs_container_choice(cluster, container, error, text):
    await cluster.apply(TWO_CONTAINERS)
    await cluster.wait_ready(10)
    with pytest.raises(error) as info:
        cluster.logs("duo", container)
    assert str(info.value) == text


async def test_emulation_lines_in_logs(cluster):
    await cluster.apply("""
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - {name: nginx, image: nginx, ports: [{containerPort: 80}]}
""")
    await cluster.wait_ready(10)
    ip = cluster.pod_ip("web")
    result = await asyncio.to_thread(
        subprocess.run, ["curl", "-sS", "--max-time", "5", "-A", "netemu-test-agent", f"http://{ip}/"],
        capture_output=True, text=True)
    assert "Welcome to nginx!" in result.stdout, result.stderr
    await cluster.wait_for(lambda: "netemu-test-agent" in cluster.logs("web"), 5, "the access log line")
    line = next(x for x in cluster.logs("web").splitlines() if "netemu-test-agent" in x)
    assert line.startswith("127.") and '"GET / HTTP/1.1" 200' in line


@pytest.mark.parametrize("container, argv, stdin, code, out", [
    (None, ["sh", "-c", "echo $MY_VAR; exit 4"], None, 4, "from-a\n"),
    ("b", ["sh", "-c", "echo $MY_VAR $HOSTNAME"], None, 0, "from-b duo\n"),
    ("a", ["sh", "-c", "tr a-z A-Z"], b"shout\n", 0, "SHOUT\n"),
], ids=["exit-code-and-env", "other-container", "stdin"])
async def test_exec(cluster, container, argv, stdin, code, out):
    await cluster.apply(TWO_CONTAINERS)
    await cluster.wait_ready(10)
    result = await cluster.exec("duo", argv, container=container, input=stdin)
    assert (result.returncode, result.stdout) == (code, out)


async def test_exec_missing_binary(cluster):
    await cluster.apply(TWO_CONTAINERS)
    await cluster.wait_ready(10)
    result = await cluster.exec("duo", ["no-such-tool-netemu"], container="a")
    assert result.returncode == 127 and "no-such-tool-netemu" in result.stderr


async def test_recreated_pod_keeps_its_own_log(cluster):
    """A pod deleted at once (grace 0) and created again under the same name logs to its own file."""
    manifest = """
apiVersion: v1
kind: Pod
metadata: {name: again}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - {name: nginx, image: nginx}
"""
    await cluster.apply(manifest)
    await cluster.wait_ready(10)
    first_uid = cluster.get("pod", "again").metadata.uid
    await cluster.delete("pod", "again")
    await cluster.apply(manifest)
    await cluster.wait_for(lambda: cluster.get("pod", "again").metadata.uid != first_uid, 5, "the new pod")
    await cluster.wait_ready(10)
    ip = cluster.pod_ip("again")
    result = await asyncio.to_thread(
        subprocess.run, ["curl", "-sS", "--max-time", "5", "-A", "second-life", f"http://{ip}/"],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    await cluster.wait_for(lambda: "second-life" in cluster.logs("again"), 5, "the access log line")


async def test_exec_into_a_completed_pod_is_refused(cluster):
    await cluster.apply("""
apiVersion: v1
kind: Pod
metadata: {name: finished}
spec:
  restartPolicy: Never
  containers:
  - {name: main, image: busybox, command: ["true"]}
""")
    await cluster.wait_for(lambda: cluster.get("pod", "finished").status.phase == "Succeeded", 10, "Succeeded")
    with pytest.raises(NetemuError) as info:
        await cluster.exec("finished", ["true"])
    assert str(info.value) == "cannot exec into a container in a completed pod; current phase is Succeeded"
