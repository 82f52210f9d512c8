"""Container lifecycle as ``kubectl get pod -o yaml`` shows it: exit codes and restart policies,
images netemu cannot run, commands that do not exist, the loopback backend's wildcard-bind guard,
and init containers running first and in order."""
from __future__ import annotations

import json

import pytest

from netemu.api import objects as k8s


def _pod(name: str, command: list[str], *, restart: str = "Always", image: str = "busybox",
         extra: str = "") -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: {restart}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: {json.dumps(command)}
{extra}"""


def _main(cluster, name: str):
    """The first container's status (an empty one until the kubelet reports)."""
    statuses = cluster.get("pod", name).status.container_statuses
    return statuses[0] if statuses else k8s.ContainerStatus()


def _reason(state) -> str:
    for part in (state.waiting, state.running, state.terminated):
        if part is not None:
            return getattr(part, "reason", "")
    return ""


@pytest.mark.parametrize("restart, code, phase, reason", [
    ("Never", 0, "Succeeded", "Completed"),
    ("Never", 3, "Failed", "Error"),
    ("OnFailure", 0, "Succeeded", "Completed"),
], ids=["never-exit0", "never-exit3", "onfailure-exit0"])
async def test_terminal_exit(cluster, restart, code, phase, reason):
    await cluster.apply(_pod("job", ["sh", "-c", f"echo bye; exit {code}"], restart=restart))
    await cluster.wait_for(lambda: cluster.get("pod", "job").status.phase in ("Succeeded", "Failed"), 10,
                           "the pod to finish")
    pod = cluster.get("pod", "job")
    status = pod.status.container_statuses[0]
    assert (pod.status.phase, status.state.terminated.reason, status.state.terminated.exit_code) == \
        (phase, reason, code)
    assert status.restart_count == 0 and not status.ready
    assert {c.type: c.status for c in pod.status.conditions}["Ready"] == "False"
    assert "bye" in cluster.logs("job")


@pytest.mark.parametrize("restart, command", [
    ("Always", ["sh", "-c", "exit 0"]),
    ("Always", ["sh", "-c", "exit 2"]),
    ("OnFailure", ["sh", "-c", "exit 2"]),
], ids=["always-exit0", "always-exit2", "onfailure-exit2"])
async def test_restarts_with_back_off(cluster, restart, command):
    await cluster.apply(_pod("crasher", command, restart=restart))
    seen_backoff = []

    def crash_looping() -> bool:
        status = _main(cluster, "crasher")
        if status.state.waiting and status.state.waiting.reason == "CrashLoopBackOff":
            seen_backoff.append(status)
        return status.restart_count >= 2 and bool(seen_backoff)

    await cluster.wait_for(crash_looping, 10, "two restarts")
    waiting = seen_backoff[-1]
    assert "back-off" in waiting.state.waiting.message and "crasher" in waiting.state.waiting.message
    assert waiting.last_state.terminated is not None
    assert waiting.last_state.terminated.exit_code == int(command[-1].split()[-1])
    assert cluster.get("pod", "crasher").status.phase == "Running"


async def test_unknown_image_without_command(cluster):
    await cluster.apply("""
apiVersion: v1
kind: Pod
metadata: {name: mystery}
spec:
  containers:
  - {name: main, image: "example.org/team/mystery-app:1.2"}
---
apiVersion: v1
kind: Pod
metadata: {name: fine}
spec:
  containers:
  - {name: main, image: nginx}
""")
    await cluster.wait_for(lambda: _reason(_main(cluster, "mystery").state) == "ErrImagePull", 10,
                           "ErrImagePull")
    await cluster.wait_for(lambda: _main(cluster, "fine").ready, 10, "the nginx pod to be ready")
    pod = cluster.get("pod", "mystery")
    assert pod.status.phase == "Pending"
    assert "example.org/team/mystery-app:1.2" in _main(cluster, "mystery").state.waiting.message
    assert "mystery-app" in cluster.logs("mystery")


async def test_missing_binary_reports_start_error(cluster):
    await cluster.apply(_pod("nobin", ["no-such-binary-netemu", "--flag"], restart="Never"))
    await cluster.wait_for(lambda: _main(cluster, "nobin").state.terminated is not None, 10, "the start error")
    status = _main(cluster, "nobin")
    assert status.state.terminated.reason == "StartError"
    assert "no-such-binary-netemu" in status.state.terminated.message
    assert 'exec: "no-such-binary-netemu": executable file not found in $PATH' in cluster.logs("nobin")
    assert cluster.get("pod", "nobin").status.phase == "Failed"


async def test_wildcard_bind_is_killed_and_reported(cluster):
    await cluster.apply(_pod("wild", ["python3", "-m", "http.server", "18080"]))
    await cluster.wait_for(
        lambda: "WildcardBind" in (_reason(_main(cluster, "wild").state), _reason(_main(cluster, "wild").last_state)),
        10, "the WildcardBind kill")
    status = _main(cluster, "wild")
    terminated = status.state.terminated or status.last_state.terminated
    ip = cluster.pod_ip("wild")
    assert "0.0.0.0:18080" in terminated.message and ip in terminated.message
    assert "0.0.0.0:18080" in cluster.logs("wild")
    # Not a tight loop: the container waits (back-off) before any new start.
    await cluster.wait_for(lambda: _main(cluster, "wild").state.waiting is not None, 5, "the back-off")
    assert _main(cluster, "wild").state.waiting.reason == "CrashLoopBackOff"


async def test_init_containers_run_first_in_order(cluster, tmp_path):
    trace = tmp_path / "trace"
    await cluster.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: inits}}
spec:
  initContainers:
  - {{name: first, image: busybox, command: [sh, -c, "sleep 0.2; echo first >> {trace}"]}}
  - {{name: second, image: busybox, command: [sh, -c, "echo second >> {trace}"]}}
  containers:
  - {{name: app, image: busybox, command: [sh, -c, "echo app >> {trace}; exec sleep 30"]}}
""")
    await cluster.wait_ready(10)
    assert trace.read_text().split() == ["first", "second", "app"]
    pod = cluster.get("pod", "inits")
    assert [(s.name, s.state.terminated.reason) for s in pod.status.init_container_statuses] == \
        [("first", "Completed"), ("second", "Completed")]
    assert pod.status.phase == "Running"


async def test_failing_init_container_blocks_the_app(cluster, tmp_path):
    trace = tmp_path / "trace"
    await cluster.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: badinit}}
spec:
  restartPolicy: Never
  initContainers:
  - {{name: fails, image: busybox, command: [sh, -c, "exit 1"]}}
  containers:
  - {{name: app, image: busybox, command: [sh, -c, "echo app >> {trace}"]}}
""")
    await cluster.wait_for(lambda: cluster.get("pod", "badinit").status.phase == "Failed", 10, "phase Failed")
    assert not trace.exists()
    init = cluster.get("pod", "badinit").status.init_container_statuses[0]
    assert (init.state.terminated.reason, init.state.terminated.exit_code) == ("Error", 1)
