"""Graceful pod deletion (endpoints withdrawn before SIGTERM, SIGKILL after the grace period) and
cluster shutdown leaving nothing behind: no process, no listening socket, no state directory."""
from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

import netemu
from netemu.state import is_alive, proc_start_time

SIGTERM_RECORDER = """
import os, signal, sys, time
out = sys.argv[1]
def on_term(signum, frame):
    with open(out + ".term", "w") as f:
        f.write(repr(time.monotonic()))
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
with open(out + ".pid", "w") as f:
    f.write(str(os.getpid()))
while True:
    time.sleep(0.05)
"""

SIGTERM_IGNORER = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(sys.argv[1] + ".pid", "w") as f:
    f.write(str(os.getpid()))
while True:
    time.sleep(0.05)
"""


def _pod(name: str, script: str, out: str, grace: int = 1) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  terminationGracePeriodSeconds: {grace}
  containers:
  - name: main
    image: python
    command: [python3, -c, {json.dumps(script)}, {json.dumps(out)}]
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: 80}}]
"""


def _ledger_pids(cluster) -> list[tuple[int, int | None]]:
    out = []
    for line in (cluster.state.directory / "ledger").read_text().splitlines():
        kind, *values = line.split()
        if kind == "process":
            out.append((int(values[0]), None if values[1] == "None" else int(values[1])))
    return out


def _endpoint(cluster, pod_name: str):
    uid = cluster.get("pod", pod_name).metadata.uid
    for eps in cluster.list("endpointslice", "default"):
        for ep in eps.endpoints:
            if ep.target_ref is not None and ep.target_ref.uid == uid:
                return ep
    return None


def _endpoint_ready(cluster, pod_name: str) -> bool:
    endpoint = _endpoint(cluster, pod_name)
    return endpoint is not None and bool(endpoint.conditions.ready)


async def test_endpoint_withdrawn_before_sigterm(cluster, tmp_path, process_gone):
    out = str(tmp_path / "graceful")
    await cluster.apply(_pod("graceful", SIGTERM_RECORDER, out))
    await cluster.wait_for(lambda: os.path.exists(out + ".pid") and _endpoint_ready(cluster, "graceful"), 10,
                           "a ready endpoint")
    pid = int(Path(out + ".pid").read_text())
    start = proc_start_time(pid)
    uid = cluster.get("pod", "graceful").metadata.uid
    withdrawn: list[float] = []

    def on_slice(event) -> None:
        if withdrawn or event.new is None:
            return
        for ep in event.new.endpoints:
            if ep.target_ref is not None and ep.target_ref.uid == uid and not ep.conditions.ready \
                    and ep.conditions.terminating:
                withdrawn.append(time.monotonic())

    unsubscribe = cluster.store.subscribe(on_slice, kinds=["EndpointSlice"])
    try:
        await cluster.delete("pod", "graceful")
        pod = cluster.store.get("Pod", "default", "graceful")
        assert pod is not None and pod.metadata.deletion_timestamp is not None
        await cluster.wait_for(lambda: cluster.store.get("Pod", "default", "graceful") is None, 10, "the pod to go")
    finally:
        unsubscribe()
    sigterm_at = float(Path(out + ".term").read_text())
    assert withdrawn, "the endpoint never turned ready=false/terminating=true"
    assert withdrawn[0] < sigterm_at
    assert process_gone(pid, start)
    assert _endpoint_gone(cluster, uid)


def _endpoint_gone(cluster, uid: str) -> bool:
    return not any(ep.target_ref is not None and ep.target_ref.uid == uid
                   for eps in cluster.list("endpointslice", "default") for ep in eps.endpoints)


async def test_sigterm_ignored_means_sigkill_after_grace(cluster, tmp_path, process_gone):
    out = str(tmp_path / "stubborn")
    await cluster.apply(_pod("stubborn", SIGTERM_IGNORER, out, grace=1))
    await cluster.wait_for(lambda: os.path.exists(out + ".pid"), 10, "the process to start")
    pid = int(Path(out + ".pid").read_text())
    start = proc_start_time(pid)
    final: list = []

    def on_pod(event) -> None:
        if event.new is not None and event.new.metadata.name == "stubborn":
            final[:] = [event.new.status.container_statuses[0]]

    unsubscribe = cluster.store.subscribe(on_pod, kinds=["Pod"])
    try:
        await cluster.delete("pod", "stubborn")
        await cluster.wait_for(lambda: cluster.store.get("Pod", "default", "stubborn") is None, 10, "the pod to go")
    finally:
        unsubscribe()
    assert process_gone(pid, start)
    assert final[0].state.terminated is not None and final[0].state.terminated.exit_code == 137  # SIGKILL


async def _refused(ip: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(ip, port)
    except ConnectionRefusedError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


WORKLOAD = """
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - {name: nginx, image: nginx, ports: [{containerPort: 80}]}
---
apiVersion: v1
kind: Pod
metadata: {name: py}
spec:
  containers:
  - name: main
    image: python
    command: [python3, -u, -m, http.server, "18081", --bind, "$(POD_IP)"]
---
apiVersion: v1
kind: Pod
metadata: {name: stubborn}
spec:
  terminationGracePeriodSeconds: 30
  containers:
  - name: main
    image: python
    command: [python3, -c, "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"]
"""


async def _workload_facts(cluster) -> tuple[list[tuple[int, int | None]], list[tuple[str, int]]]:
    await cluster.apply(WORKLOAD)
    await cluster.wait_ready(10)
    await cluster.wait_for(lambda: "Serving HTTP" in cluster.logs("py"), 10, "the python server to listen")
    pids = _ledger_pids(cluster)
    assert len(pids) >= 2 and all(is_alive(pid, start) for pid, start in pids)
    sockets = [(cluster.pod_ip("web"), 80), (cluster.pod_ip("py"), 18081)]
    for ip, port in sockets:
        assert not await _refused(ip, port)
    return pids, sockets


async def _assert_nothing_left(pids, sockets, directory, process_gone) -> None:
    assert [pid for pid, start in pids if not process_gone(pid, start)] == []
    for ip, port in sockets:
        assert await _refused(ip, port), f"{ip}:{port} still accepts connections"
    assert not directory.exists()


async def test_stop_leaves_nothing_behind(make_cluster, process_gone):
    cluster = await make_cluster(nodes=1)
    pids, sockets = await _workload_facts(cluster)
    directory = cluster.state.directory
    await cluster.stop()
    await _assert_nothing_left(pids, sockets, directory, process_gone)


class Boom(Exception):
    pass


async def test_exception_inside_async_with_cleans_up(tmp_path, monkeypatch, process_gone):
    monkeypatch.setenv("NETEMU_STATE_DIR", str(tmp_path / "state"))
    facts = {}
    with pytest.raises(Boom):
        async with netemu.Cluster(nodes=1, name="boom", restart_backoff=0.2) as cluster:
            facts["pids"], facts["sockets"] = await _workload_facts(cluster)
            facts["directory"] = cluster.state.directory
            raise Boom()
    await _assert_nothing_left(facts["pids"], facts["sockets"], facts["directory"], process_gone)


async def test_sidecars_stop_after_the_app_containers(cluster, tmp_path):
    out = str(tmp_path / "order")
    recorder = json.dumps(SIGTERM_RECORDER)
    await cluster.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: ordered}}
spec:
  terminationGracePeriodSeconds: 5
  initContainers:
  - {{name: side, image: python, restartPolicy: Always, command: [python3, -c, {recorder}, "{out}-side"]}}
  containers:
  - {{name: app, image: python, command: [python3, -c, {recorder}, "{out}-app"]}}
""")
    await cluster.wait_for(lambda: os.path.exists(out + "-side.pid") and os.path.exists(out + "-app.pid"), 10,
                           "both processes")
    await cluster.delete("pod", "ordered")
    await cluster.wait_for(lambda: cluster.store.get("Pod", "default", "ordered") is None, 10, "the pod to go")
    assert float(Path(out + "-app.term").read_text()) < float(Path(out + "-side.term").read_text())
