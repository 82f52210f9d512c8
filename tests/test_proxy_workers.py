"""Proxy worker processes (``proxy_workers: 2``, loopback backend): a second process shares the
TCP service listeners through SO_REUSEPORT and takes a share of the new connections.

Real clusters, real curl, real processes: the worker's share is seen both in the kernel (the
worker's pid owns a listening socket on the ClusterIP, found through /proc/net/tcp inodes) and in
the connection records it reports back. It follows endpoint changes, leaves ClientIP-affinity
services to the cluster's own process, and is gone (process and descriptors) once the cluster
stops.
"""
from __future__ import annotations

import asyncio
import collections
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from netemu.config import ClusterConfig
from netemu.errors import ClusterError
from netemu.proxy import channel
from netemu.proxy.connlog import ConnectionRecord
from netemu.proxy.worker import RecordReporter
from netemu.reaper import TOKEN_VARIABLE

OUTSIDE = "127.77.0.9"  # a client outside every node
NETEMU = str(Path(sys.executable).parent / "netemu")


def pod(name: str, app: str) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {app}}}}}
spec:
  containers:
  - name: netexec
    image: registry.k8s.io/e2e-test-images/agnhost:2.47
    args: ["netexec", "--http-port=9376"]
    ports: [{{containerPort: 9376}}]
"""


def service(name: str, app: str, **spec: str) -> str:
    extra = "".join(f"\n  {key}: {value}" for key, value in spec.items())
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {app}}}
  ports: [{{port: 80, targetPort: 9376}}]{extra}
"""


async def start(make_cluster: Any, *manifests: str) -> Any:
    cluster = await make_cluster(nodes=1, dns_upstreams=(), proxy_workers=2)
    await cluster.apply(*manifests)
    await cluster.wait_ready(timeout=20)
    await cluster.settle()
    return cluster


async def answers(url: str, count: int, *extra: str) -> collections.Counter:
    """``count`` requests from one curl, each on a connection of its own, counted by answer."""
    r = await asyncio.to_thread(subprocess.run, ["curl", "-sS", "--max-time", "5", "-H", "Connection: close",
                                                 "-w", "\\n", *extra, *[url] * count],
                                capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return collections.Counter(r.stdout.splitlines())


def worker_pid(cluster: Any) -> int:
    pids = cluster.proxy.workers.pids
    assert len(pids) == 1, pids
    return pids[0]


def listening_pids(ip: str, port: int) -> set[int]:
    """The processes holding a TCP socket listening on ip:port (/proc/net/tcp, then fd owners)."""
    local = f"{struct.unpack('<I', socket.inet_aton(ip))[0]:08X}:{port:04X}"
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in list(f)[1:]:
            fields = line.split()
            if fields[1] == local and fields[3] == "0A":  # TCP_LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    owners = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
            if any(os.readlink(f"/proc/{entry}/fd/{fd}") in inodes for fd in fds):
                owners.add(int(entry))
        except OSError:
            continue
    return owners


def socket_fds() -> set[str]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            out.add(target)
    return out


def test_more_than_one_worker_needs_the_loopback_backend():
    with pytest.raises(ClusterError, match=r"^proxyWorkers 2: needs the loopback backend"):
        ClusterConfig(backend="netns", proxy_workers=2).validate()
    with pytest.raises(ClusterError, match=r'^proxyWorkers 0: must be 1-16 or "auto"$'):
        ClusterConfig(proxy_workers=0).validate()
    with pytest.raises(ClusterError, match=r"^proxyWorkers 'many': must be 1-16"):
        ClusterConfig(proxy_workers="many").validate()
    assert ClusterConfig().proxy_workers == "auto"  # the default, on both backends
    ClusterConfig(backend="netns").validate()     # where it means one process


@pytest.mark.parametrize("flags, message", [
    (["--backend", "netns", "--proxy-workers", "2"],
     "error: proxyWorkers 2: needs the loopback backend (the netns backend's proxy runs in one process)\n"),
    (["--proxy-workers", "0"], 'error: proxyWorkers 0: must be 1-16 or "auto"\n'),
])
def test_up_refuses_a_proxy_workers_flag_it_cannot_honour_in_one_line(tmp_path, flags, message):
    env = {**os.environ, "NETEMU_STATE_DIR": str(tmp_path / "state"), "KUBECONFIG": str(tmp_path / "kubeconfig")}
    r = subprocess.run([NETEMU, "up", *flags], capture_output=True, text=True, env=env, timeout=60)
    assert (r.returncode, r.stderr, r.stdout) == (1, message, "")


async def test_a_report_holds_the_newest_records_the_log_keeps_and_counts_the_rest():
    sent: list[list[Any]] = []
    reporter = RecordReporter(sent.append, size=2)
    web = [ConnectionRecord(("127.0.0.1", 1000 + i), "default/web:80/TCP", "cluster-ip", "node-1") for i in range(5)]
    db = ConnectionRecord(("127.0.0.1", 2000), "default/db:5432/TCP", "cluster-ip", "node-1")
    for record in web[:4] + [db]:
        record.finish("ok", 10, 20)
    for record in web:
        reporter.add(("default", "web"), record)
    reporter.add(("default", "db"), db)
    reporter.flush()
    (message,) = sent
    assert message[0] == "records" and message[2] == 3  # web's three oldest: counted, not sent
    rows = [channel.row_record(row) for row in message[1]]
    assert [(service, record.client[1], record.outcome) for _, service, record in rows] == [
        (("default", "web"), 1003, "ok"), (("default", "web"), 1004, None), (("default", "db"), 2000, "ok")]
    web[4].finish("reset", 1, 0)  # the one sent open ends: the next batch says so
    reporter.flush()
    assert sent[1] == ["ended", [[rows[1][0], "reset", 1, 0, web[4].ended, "node-1", None]]]
    reporter.flush()
    assert len(sent) == 2  # nothing new, nothing open


def test_up_names_what_proxy_workers_takes(tmp_path):
    env = {**os.environ, "NETEMU_STATE_DIR": str(tmp_path / "state"), "KUBECONFIG": str(tmp_path / "kubeconfig")}
    r = subprocess.run([NETEMU, "up", "--proxy-workers", "lots"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines()[-1].endswith("argument --proxy-workers: 'lots': a number of processes or \"auto\"")


async def test_auto_starts_a_worker_once_the_proxy_is_busy_and_brings_it_up_to_date(make_cluster):
    cluster = await make_cluster(nodes=1, dns_upstreams=())  # proxy_workers "auto", the default
    await cluster.apply(pod("web", "web"), service("web", "web"), pod("other", "other"), service("flaky", "other"))
    await cluster.wait_ready(timeout=20)
    cluster.impair(service="flaky", reset=1.0)  # set before the worker exists: it must learn of it
    await cluster.settle()
    ip, url = cluster.service_ip("web"), f"http://{cluster.service_ip('web')}/hostname"
    assert await answers(url, 30) == {"web": 30}  # light traffic: one process
    assert cluster.proxy.workers.pids == [] and listening_pids(ip, 80) == {os.getpid()}
    scaler = cluster.proxy_autoscaler
    scaler.busy_cpu, scaler.busy_events, scaler.check_interval = 0.0, 100, 0.1  # "busy" within reach of curl
    scaler.limit = 2  # whatever this machine's CPU count
    for _ in range(100):  # batches of load until the worker is there (each is a busy check's worth)
        if cluster.proxy.workers.pids:
            break
        assert await answers(url, 100) == {"web": 100}
    assert cluster.proxy.workers.pids, "no worker started under load"
    worker = worker_pid(cluster)
    await cluster.settle()
    assert listening_pids(ip, 80) == {os.getpid(), worker}  # the worker was given the services there were
    before = cluster.proxy.workers.connections()[worker]
    assert await answers(url, 60) == {"web": 60}  # and their endpoints
    await cluster.settle()
    assert cluster.proxy.workers.connections()[worker] > before
    before = cluster.proxy.workers.connections()[worker]
    flaky = f"http://{cluster.service_ip('flaky')}/hostname"
    results = [await asyncio.to_thread(subprocess.run, ["curl", "-sS", "--max-time", "5", flaky],
                                       capture_output=True, text=True) for _ in range(30)]
    assert {r.returncode for r in results} <= {7, 55, 56}, [r.stderr for r in results]  # and the impairment
    await cluster.settle()
    assert cluster.proxy.workers.connections()[worker] > before, "the worker took none of the resets"
    assert {r.outcome for r in cluster.connection_log("flaky")} == {"reset"}


async def test_connections_through_a_cluster_ip_spread_over_both_processes(make_cluster):
    cluster = await start(make_cluster, pod("web", "web"), service("web", "web"))
    ip, worker = cluster.service_ip("web"), worker_pid(cluster)
    assert listening_pids(ip, 80) == {os.getpid(), worker}  # one reuseport group, two processes
    seen = await answers(f"http://{ip}/hostname", 60)
    assert seen == {"web": 60}
    await cluster.settle()  # the worker's records are in the log after a settle ...
    assert len(cluster.connection_log("web")) == 60
    # ... and complete once its relays have seen both sides close (curl may be done before)
    await cluster.wait_for(lambda: {r.outcome for r in cluster.connection_log("web")} == {"ok"}, 10,
                           "every connection recorded as ended")
    records = cluster.connection_log("web")
    by_worker = cluster.proxy.workers.connections()[worker]
    assert 0 < by_worker < 60, f"the worker took {by_worker} of 60 connections"
    assert all(r.bytes_down > 0 and r.endpoint == f"{cluster.pod_ip('web')}:9376" for r in records)


async def test_the_worker_follows_an_endpoint_change(make_cluster):
    cluster = await start(make_cluster, pod("one", "one"), pod("two", "two"), service("web", "one"))
    url = f"http://{cluster.service_ip('web')}/hostname"
    assert await answers(url, 20) == {"one": 20}
    await cluster.apply(service("web", "two"))
    await cluster.settle()
    before = cluster.proxy.workers.connections()[worker_pid(cluster)]
    assert await answers(url, 40) == {"two": 40}  # the old endpoint is reached by neither process
    await cluster.settle()
    assert cluster.proxy.workers.connections()[worker_pid(cluster)] > before


async def test_an_impairment_reaches_the_worker_too(make_cluster):
    cluster = await start(make_cluster, pod("web", "web"), service("web", "web"))
    cluster.impair(service="web", reset=1.0)  # every new connection reset, whichever process takes it
    await cluster.settle()
    url = f"http://{cluster.service_ip('web')}/hostname"
    results = [await asyncio.to_thread(subprocess.run, ["curl", "-sS", "--max-time", "5", url],
                                       capture_output=True, text=True) for _ in range(20)]
    # reset as curl connects (7), sends (55) or waits for the answer (56): "Connection reset by peer"
    assert {r.returncode for r in results} <= {7, 55, 56}, [r.stderr for r in results]
    await cluster.settle()
    assert [r.outcome for r in cluster.connection_log("web")] == ["reset"] * 20
    assert cluster.proxy.workers.connections()[worker_pid(cluster)] > 0


async def test_client_ip_affinity_stays_in_the_clusters_process(make_cluster):
    cluster = await start(make_cluster, pod("one", "web"), pod("two", "web"),
                          service("sticky", "web", sessionAffinity="ClientIP"), service("plain", "web"))
    assert listening_pids(cluster.service_ip("sticky"), 80) == {os.getpid()}
    seen = await answers(f"http://{cluster.service_ip('sticky')}/hostname", 30, "--interface", OUTSIDE)
    assert len(seen) == 1 and sum(seen.values()) == 30
    await cluster.settle()
    assert cluster.proxy.workers.connections()[worker_pid(cluster)] == 0
    # Turning affinity off shares the listener with the worker; on again, it is the cluster's alone.
    await cluster.apply(service("sticky", "web"))
    await cluster.settle()
    assert listening_pids(cluster.service_ip("sticky"), 80) == {os.getpid(), worker_pid(cluster)}
    await cluster.apply(service("sticky", "web", sessionAffinity="ClientIP"))
    await cluster.settle()
    assert listening_pids(cluster.service_ip("sticky"), 80) == {os.getpid()}


def fd_targets(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return out


async def test_the_worker_is_recorded_holds_none_of_ours_and_is_gone_after_the_cluster_stops(make_cluster):
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)  # as `up --detach` hands the cluster its ready pipe
    sockets_before = socket_fds()
    try:
        cluster = await make_cluster(nodes=1, dns_upstreams=(), proxy_workers=2, kube_api=False)
        worker = worker_pid(cluster)
        assert os.readlink(f"/proc/self/fd/{write_end}") not in fd_targets(worker)
    finally:
        os.close(read_end)
        os.close(write_end)
    ledger = cluster.state.path("ledger").read_text().splitlines()
    assert any(line.split()[:2] == ["process", str(worker)] for line in ledger), ledger
    with open(f"/proc/{worker}/environ", "rb") as f:  # what `netemu gc` proves it by
        assert f"{TOKEN_VARIABLE}={cluster.state.token}".encode() in f.read().split(b"\0")
    await cluster.stop()
    assert not os.path.exists(f"/proc/{worker}")  # stopped and waited for: not even a zombie
    assert socket_fds() <= sockets_before  # the channel and every listener are closed
