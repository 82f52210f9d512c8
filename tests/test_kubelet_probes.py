"""Readiness, liveness and startup probes (httpGet, tcpSocket, exec) as the kubelet runs them."""
from __future__ import annotations

from netemu.api import objects as k8s


def _status(cluster, name: str) -> k8s.ContainerStatus:
    statuses = cluster.get("pod", name).status.container_statuses
    return statuses[0] if statuses else k8s.ContainerStatus()


def _conditions(cluster, name: str) -> dict[str, str]:
    return {c.type: c.status for c in cluster.get("pod", name).status.conditions}


async def test_http_readiness_against_emulated_nginx(cluster):
    await cluster.apply("""
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: nginx
    image: nginx:1.27
    ports: [{name: http, containerPort: 80}]
    readinessProbe:
      httpGet: {path: /, port: http}
      periodSeconds: 1
""")
    await cluster.wait_for(lambda: _status(cluster, "web").ready, 10, "nginx to be ready")
    assert _conditions(cluster, "web")["Ready"] == "True"
    assert "kube-probe/" in cluster.logs("web")


async def test_failing_tcp_readiness_keeps_pod_running_unready(cluster):
    # "marker" turns ready one period after "closed" has had its first probe (no initial delay).
    await cluster.apply("""
apiVersion: v1
kind: Pod
metadata: {name: closed}
spec:
  containers:
  - name: main
    image: busybox
    command: [sleep, "30"]
    readinessProbe:
      tcpSocket: {port: 1}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {name: marker}
spec:
  containers:
  - name: main
    image: busybox
    command: [sleep, "30"]
    readinessProbe: {exec: {command: ["true"]}, periodSeconds: 1, initialDelaySeconds: 1}
""")
    await cluster.wait_for(lambda: _status(cluster, "marker").ready, 10, "the marker pod")
    pod = cluster.get("pod", "closed")
    assert pod.status.phase == "Running"
    assert _status(cluster, "closed").state.running is not None
    assert not _status(cluster, "closed").ready
    ready = next(c for c in pod.status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason, ready.message) == \
        ("False", "ContainersNotReady", "containers with unready status: [main]")


async def test_exec_readiness_follows_a_file(cluster, tmp_path):
    flag = tmp_path / "ready-flag"
    await cluster.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: execready}}
spec:
  containers:
  - name: main
    image: busybox
    command: [sleep, "30"]
    readinessProbe:
      exec: {{command: [sh, -c, "test -f {flag}"]}}
      periodSeconds: 1
      failureThreshold: 1
""")
    await cluster.wait_for(lambda: _status(cluster, "execready").state.running is not None, 10, "running")
    assert not _status(cluster, "execready").ready
    flag.write_text("")
    await cluster.wait_for(lambda: _status(cluster, "execready").ready, 10, "ready after the file appears")
    flag.unlink()
    await cluster.wait_for(lambda: not _status(cluster, "execready").ready, 10, "unready after it goes")


async def test_liveness_failure_restarts_the_container(cluster, tmp_path):
    alive = tmp_path / "alive"
    alive.write_text("")
    await cluster.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: live}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: [sleep, "30"]
    livenessProbe:
      exec: {{command: [sh, -c, "test -f {alive}"]}}
      periodSeconds: 1
      failureThreshold: 1
""")
    await cluster.wait_for(lambda: _status(cluster, "live").state.running is not None, 10, "running")
    alive.unlink()
    await cluster.wait_for(lambda: _status(cluster, "live").restart_count >= 1, 10, "a restart")
    alive.write_text("")  # the restarted container stays alive
    await cluster.wait_for(lambda: _status(cluster, "live").state.running is not None, 10, "running again")
    status = _status(cluster, "live")
    assert status.restart_count == 1
    assert status.last_state.terminated is not None
    assert status.last_state.terminated.exit_code == 143  # sleep dies of the SIGTERM: 128 + 15
    assert "Liveness probe failed" in cluster.logs("live")


async def test_startup_probe_gates_readiness(cluster, tmp_path):
    started = tmp_path / "started"
    await cluster.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: slowstart}}
spec:
  containers:
  - name: main
    image: busybox
    command: [sleep, "30"]
    startupProbe:
      exec: {{command: [sh, -c, "test -f {started}"]}}
      periodSeconds: 1
      failureThreshold: 30
    readinessProbe:
      exec: {{command: ["true"]}}
      periodSeconds: 1
""")
    await cluster.wait_for(lambda: _status(cluster, "slowstart").state.running is not None, 10, "running")
    status = _status(cluster, "slowstart")
    assert (status.started, status.ready) == (False, False)
    started.write_text("")
    await cluster.wait_for(lambda: _status(cluster, "slowstart").ready, 10, "ready after startup")
    assert _status(cluster, "slowstart").started is True
    assert _status(cluster, "slowstart").restart_count == 0


async def test_timed_out_exec_probe_leaves_no_process(cluster, tmp_path, process_gone):
    pids = tmp_path / "probe-children"
    await cluster.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: slowprobe}}
spec:
  containers:
  - name: main
    image: busybox
    command: [sleep, "30"]
    readinessProbe:
      exec: {{command: [sh, -c, "sleep 30 & echo $! >> {pids}; wait"]}}
      periodSeconds: 1
      timeoutSeconds: 1
""")
    await cluster.wait_for(lambda: pids.exists() and pids.read_text().strip(), 10, "the first probe run")
    first = int(pids.read_text().split()[0])
    await cluster.wait_for(lambda: process_gone(first), 5, "the probe's child to go with its timeout")
    assert not _status(cluster, "slowprobe").ready
