"""Container lifecycle as ``kubectl get pod -o yaml`` shows it: exit codes, restart policies and
the crash-loop back-off, images netemu cannot run, commands that do not exist, the loopback
backend's wildcard-bind guard, init containers running first and in order, native sidecars."""
from __future__ import annotations

import json
import socket

import pytest

from netemu.api import objects as k8s


def _pod(name: str, command: list[str], *, restart: str = "Always", image: str = "busybox") -> str:
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
"""


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
---
apiVersion: v1
kind: Pod
metadata: {name: half}
spec:
  containers:
  - {name: main, image: busybox, command: [sleep, "30"]}
  - {name: other, image: "example.org/team/mystery-app:1.2"}
""")
    await cluster.wait_for(lambda: _reason(_main(cluster, "mystery").state) == "ErrImagePull", 10,
                           "ErrImagePull")
    await cluster.wait_for(lambda: _main(cluster, "fine").ready, 10, "the nginx pod to be ready")
    pod = cluster.get("pod", "mystery")
    assert pod.status.phase == "Pending"
    # One container running, one that cannot start: still Pending, as the kubelet's getPhase says.
    await cluster.wait_for(lambda: _main(cluster, "half").state.running is not None, 10, "half's first container")
    assert cluster.get("pod", "half").status.phase == "Pending"
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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_wildcard_bind_is_killed_and_reported(cluster):
    port = _free_port()
    kills: list[k8s.ContainerStateTerminated] = []

    def record(event) -> None:
        if event.new is None or event.new.metadata.name != "wild" or not event.new.status.container_statuses:
            return
        status = event.new.status.container_statuses[0]
        for state in (status.state, status.last_state):
            if state.terminated is not None and state.terminated.reason == "WildcardBind":
                kills.append(state.terminated)

    unsubscribe = cluster.store.subscribe(record, kinds=["Pod"])
    try:
        await cluster.apply(_pod("wild", ["python3", "-m", "http.server", str(port)]))
        await cluster.wait_for(lambda: bool(kills), 10, "the WildcardBind kill")
        # Not a tight loop: after the kubelet's one immediate restart, the container waits.
        await cluster.wait_for(lambda: _reason(_main(cluster, "wild").state) == "CrashLoopBackOff", 10,
                               "the back-off")
    finally:
        unsubscribe()
    ip = cluster.pod_ip("wild")
    assert f"0.0.0.0:{port}" in kills[0].message and ip in kills[0].message
    assert f"0.0.0.0:{port}" in cluster.logs("wild")


async def test_init_containers_run_first_in_order(cluster, tmp_path):
    trace = tmp_path / "trace"
    app_reasons: list[str] = []

    def record(event) -> None:
        if event.new is not None and event.new.metadata.name == "inits" and event.new.status.container_statuses:
            app_reasons.append(_reason(event.new.status.container_statuses[0].state))

    unsubscribe = cluster.store.subscribe(record, kinds=["Pod"])
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
    unsubscribe()
    assert app_reasons[0] == "PodInitializing"
    await cluster.wait_for(lambda: "app" in trace.read_text(), 5, "the app container's line")
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


async def test_crash_loop_counts_like_the_kubelet(cluster):
    """The first restart is immediate; later ones wait a doubling back-off. While waiting, the
    status shows the restarts done so far (the dead instance's attempt number), not the next."""
    seen: list[tuple[str, int, str]] = []

    def record(event) -> None:
        pod = event.new
        if pod is None or pod.metadata.name != "looper" or not pod.status.container_statuses:
            return
        status = pod.status.container_statuses[0]
        if status.state.running is None and status.state.waiting is None:
            return  # terminated: shown only for a moment, not what this test follows
        entry = (_reason(status.state), status.restart_count,
                 status.state.waiting.message.split(" restarting")[0] if status.state.waiting else "")
        if not seen or seen[-1] != entry:
            seen.append(entry)

    unsubscribe = cluster.store.subscribe(record, kinds=["Pod"])
    try:
        await cluster.apply(_pod("looper", ["sh", "-c", "exit 1"]))
        await cluster.wait_for(lambda: _main(cluster, "looper").restart_count >= 3, 10, "three restarts")
    finally:
        unsubscribe()
    backoffs = [(count, message) for reason, count, message in seen if reason == "CrashLoopBackOff"]
    assert backoffs[:2] == [(1, "back-off 200ms"), (2, "back-off 400ms")]  # the restarts done, not the next
    # Each back-off follows the death of an instance that ran, never of one still to come. (An
    # instance that dies in the loop turn it started in is never shown running: the kubelet writes
    # one status per turn.)
    last_running = None
    for reason, count, _ in seen:
        if reason == "CrashLoopBackOff":
            assert last_running is not None and last_running <= count, seen
        elif reason == "" and count is not None:  # running (no reason)
            last_running = count


async def test_terminated_container_is_not_started_and_init_is_ready(cluster):
    await cluster.apply("""
apiVersion: v1
kind: Pod
metadata: {name: done}
spec:
  restartPolicy: Never
  initContainers:
  - {name: init, image: busybox, command: ["true"]}
  containers:
  - {name: main, image: busybox, command: ["true"]}
""")
    await cluster.wait_for(lambda: cluster.get("pod", "done").status.phase == "Succeeded", 10, "Succeeded")
    pod = cluster.get("pod", "done")
    init, main = pod.status.init_container_statuses[0], pod.status.container_statuses[0]
    assert (init.ready, init.started) == (True, False)
    assert (main.ready, main.started) == (False, False)


async def test_background_children_die_with_the_main_process(cluster, tmp_path, process_gone):
    pidfile = tmp_path / "child.pid"
    await cluster.apply(_pod("parent", ["sh", "-c", f"sleep 60 & echo $! > {pidfile}; exit 0"], restart="Never"))
    await cluster.wait_for(lambda: cluster.get("pod", "parent").status.phase == "Succeeded", 10, "Succeeded")
    child = int(pidfile.read_text())
    await cluster.wait_for(lambda: process_gone(child), 5, "the orphan to die")


async def test_sidecar_runs_beside_a_job_and_stops_after_it(cluster, tmp_path):
    trace = tmp_path / "trace"
    await cluster.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: job}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: side
    image: busybox
    restartPolicy: Always
    command: [sh, -c, "echo side >> {trace}; trap 'echo side-term >> {trace}; exit 0' TERM; while true; do sleep 0.05; done"]
    startupProbe:  # the next init container waits for this one to have started
      exec: {{command: [grep, -q, side, "{trace}"]}}
      periodSeconds: 1
  - {{name: setup, image: busybox, command: [sh, -c, "echo setup >> {trace}"]}}
  containers:
  - {{name: main, image: busybox, command: [sh, -c, "sleep 0.2; echo main >> {trace}"]}}
""")
    await cluster.wait_for(lambda: cluster.get("pod", "job").status.phase == "Succeeded", 10, "the job to finish")
    assert trace.read_text().split() == ["side", "setup", "main", "side-term"]
    pod = cluster.get("pod", "job")
    side, setup = pod.status.init_container_statuses
    assert side.state.terminated is not None and setup.state.terminated.reason == "Completed"
    conditions = {c.type: (c.status, c.reason) for c in pod.status.conditions}
    assert conditions["Ready"] == ("False", "PodCompleted")
    assert conditions["Initialized"] == ("True", "PodCompleted")


async def test_sidecar_readiness_gates_the_pod(cluster, tmp_path):
    flag = tmp_path / "sidecar-ready"
    await cluster.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: meshed}}
spec:
  initContainers:
  - name: proxy
    image: busybox
    restartPolicy: Always
    command: [sleep, "30"]
    readinessProbe:
      exec: {{command: [sh, -c, "test -f {flag}"]}}
      periodSeconds: 1
  containers:
  - {{name: app, image: busybox, command: [sleep, "30"]}}
""")
    await cluster.wait_for(lambda: cluster.get("pod", "meshed").status.phase == "Running", 10, "Running")
    await cluster.wait_for(lambda: _main(cluster, "meshed").ready, 10, "the app container to be ready")
    ready = next(c for c in cluster.get("pod", "meshed").status.conditions if c.type == "Ready")
    assert (ready.status, ready.message) == ("False", "containers with unready status: [proxy]")
    flag.write_text("")
    await cluster.wait_ready(10)
