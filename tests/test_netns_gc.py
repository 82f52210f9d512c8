"""Acceptance: ``kill -9`` of a running netns cluster, then ``netemu gc``, leaves nothing of it.

A real two-node cluster runs as its own process (``netemu up --backend netns --detach``, a tmp
``NETEMU_STATE_DIR``, a unique name), with a Deployment of two ``pause`` pods and a pod whose
command leaves a background ``sleep`` in its namespace (a grandchild loses PR_SET_PDEATHSIG, so
it outlives the cluster, as a real leftover would). The test records what the cluster made —
its namespaces (``/run/netns/netemu-<cluster>-…``), their interfaces, ``/etc/netns`` entries,
the processes inside them and the cluster process's own tree, every file of the state directory
— then SIGKILLs the cluster process (its pid from ``state.json``, checked against ``netemu
clusters``), checks that leftovers exist, runs ``netemu gc`` and checks that none of it is left,
that a second ``gc`` has nothing to do, and that the namespace the test runs in has the same
links, addresses, routes and rules as before bring-up.

Everything runs through the CLI in subprocesses (cwd is the tmp dir, so the repo's ``dns/``
folder never shadows dnspython). If the test fails half-way, its fixture kills what it started
(by recorded pid and start time) and collects the cluster's namespaces, by the cluster's own name.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from netemu.cni.bridge import NETNS_PREFIX
from test_netns_helpers import netns_ready, network_snapshot, own_network_unchanged, poll  # noqa: F401 - fixtures

from netemu.fabric import routes_outside_loopback
from netemu.fabric.netns import ipbatch, namespaces
from netemu.fabric.netns.namespaces import collect_cluster_garbage
from netemu.state import gc_all, proc_start_time

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(bool(routes_outside_loopback()),
                       reason="the netns backend runs only in a namespace without outside routes (make test)"),
]

CLI_TIMEOUT = 120  # seconds: a guard against a hung command, not a performance bound
# Places where a file named after the cluster would be a leak (the state root is checked whole).
SHARED_PLACES = (Path("/run"), Path("/run/netns"), Path("/etc/netns"), Path("/var/lib/cni/networks"),
                 Path("/dev/shm"), Path("/tmp"))

WORKLOAD = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: pauses}
spec:
  replicas: 2
  selector: {matchLabels: {app: pauses}}
  template:
    metadata: {labels: {app: pauses}}
    spec:
      containers:
      - {name: pause, image: "registry.k8s.io/pause:3.9"}
---
apiVersion: v1
kind: Pod
metadata: {name: sleeper}
spec:
  nodeName: node-2
  containers:
  - name: sleeper
    image: busybox
    command: ["/bin/sh", "-c", "sleep 3600 & exec sleep 3600"]
"""


@dataclass(frozen=True)
class Process:
    pid: int
    start_time: int


@dataclass
class ClusterRun:
    """One cluster started by this test: its name, state root and CLI environment."""

    name: str
    workdir: Path
    state_root: Path
    env: dict[str, str]
    main: Process | None = None
    processes: set[Process] = field(default_factory=set)

    @property
    def prefix(self) -> str:
        return f"{NETNS_PREFIX}{self.name}-"

    def netemu(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "netemu", *args], check=False, env=self.env, cwd=self.workdir,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CLI_TIMEOUT)

    def ok(self, *args: str) -> str:
        result = self.netemu(*args)
        assert result.returncode == 0, \
            f"netemu {' '.join(args)}: exit {result.returncode}\n{result.stdout}{result.stderr}"
        return result.stdout

    def namespaces(self) -> list[str]:
        return sorted(p.name for p in namespaces.NETNS_RUN_DIR.glob(f"{self.prefix}*"))

    def etc_entries(self) -> list[str]:
        return sorted(p.name for p in namespaces.NETNS_ETC_DIR.glob(f"{self.prefix}*"))

    def named_files(self) -> list[str]:
        """Files named after the cluster in ``SHARED_PLACES`` (one level deep)."""
        return sorted(str(p) for place in SHARED_PLACES for p in place.glob(f"*{self.name}*"))

    def mounts(self) -> list[str]:
        """Mount points of this cluster's namespaces (``ip netns add`` bind-mounts them)."""
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
        return [line.split()[4] for line in lines if f"/{self.prefix}" in line.split()[4]]

    def state_files(self) -> list[str]:
        if not self.state_root.exists():
            return []
        return sorted(str(p.relative_to(self.state_root)) for p in self.state_root.rglob("*"))

    def state_info(self) -> dict:
        return json.loads((self.state_root / self.name / "state.json").read_text())


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, session id, start time) of ``pid``, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    return fields[0].decode(), int(fields[1]), int(fields[3]), int(fields[19])


def _netns_id(path: str | Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _live_processes() -> dict[int, tuple[str, int, int, int]]:
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None and stat[0] not in ("Z", "X"):
            table[int(entry)] = stat
    return table


def _process_tree(main: int) -> set[Process]:
    """``main``, its descendants and the members of its session (it leads one: ``--detach``)."""
    table = _live_processes()
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    ours = {main} | {pid for pid, (_, _, sid, _) in table.items() if sid == main}
    todo = list(ours)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in ours:
                ours.add(child)
                todo.append(child)
    return {Process(pid, table[pid][3]) for pid in ours if pid in table}


def _processes_in(netns_names: list[str]) -> set[Process]:
    """Every process inside one of these namespaces (identified by their files under
    ``/run/netns``, which must exist while this runs)."""
    ids = {i for i in (_netns_id(namespaces.NETNS_RUN_DIR / n) for n in netns_names) if i is not None}
    table = _live_processes()
    return {Process(pid, stat[3]) for pid, stat in table.items()
            if pid != os.getpid() and _netns_id(f"/proc/{pid}/ns/net") in ids}


def _alive(processes: set[Process], process_gone: Callable[..., bool]) -> list[Process]:
    return sorted((p for p in processes if not process_gone(p.pid, p.start_time)), key=lambda p: p.pid)


def _links(netns: str) -> list[str]:
    return [link["ifname"] for link in ipbatch.query(netns, "link", "show")]


@pytest.fixture
def cluster_run(netns_ready: None, tmp_path: Path) -> Iterator[ClusterRun]:  # noqa: F811
    env = {k: v for k, v in os.environ.items() if k != "NETEMU_CLUSTER"}
    env["NETEMU_STATE_DIR"] = str(tmp_path / "state")
    run = ClusterRun(name=f"gc-{secrets.token_hex(4)}", workdir=tmp_path, state_root=tmp_path / "state", env=env)
    yield run
    # Safety net for a failed test: only what this run started, checked by pid and start time.
    for process in [*([run.main] if run.main else []), *run.processes]:
        if proc_start_time(process.pid) == process.start_time:
            os.kill(process.pid, signal.SIGKILL)
    if run.main is not None:
        poll(lambda: proc_start_time(run.main.pid) != run.main.start_time)
    gc_all(run.state_root, collect_cluster_garbage)
    namespaces.collect(run.namespaces())


def test_kill_9_then_gc_leaves_nothing(cluster_run: ClusterRun, process_gone: Callable[..., bool]) -> None:
    run = cluster_run
    network_before = network_snapshot()

    run.ok("up", "--backend", "netns", "--nodes", "2", "--name", run.name, "--dns-upstream", "none",
           "--detach", "--timeout", "60")
    info = run.state_info()
    run.main = Process(info["pid"], info["start_time"])
    manifest = run.workdir / "workload.yaml"
    manifest.write_text(WORKLOAD)
    run.ok("apply", "-f", str(manifest), "--name", run.name)
    run.ok("wait", "--timeout", "60", "--name", run.name)

    # the pid comes from the state directory; `netemu clusters` agrees it is this cluster's
    assert f"{run.name}\trunning\tpid {run.main.pid}" in run.ok("clusters").splitlines()
    assert proc_start_time(run.main.pid) == run.main.start_time

    # what the cluster made
    made_namespaces = run.namespaces()
    assert len(made_namespaces) >= 2 + 3, made_namespaces  # two nodes, three pods at least
    links = {ns: _links(ns) for ns in made_namespaces}
    assert any(len(names) > 1 for names in links.values()), links  # not just lo
    made_etc = run.etc_entries()
    made_files = run.state_files()
    assert f"{run.name}/state.json" in made_files and f"{run.name}/ledger" in made_files, made_files
    in_namespaces = _processes_in(made_namespaces)
    assert in_namespaces, "the sleeper pod's processes are inside the cluster's namespaces"
    run.processes = _process_tree(run.main.pid) | in_namespaces

    os.kill(run.main.pid, signal.SIGKILL)
    assert poll(lambda: process_gone(run.main.pid, run.main.start_time), timeout=10), "the cluster survived SIGKILL"

    # processes started (or found) since the recording, still inside the namespaces, count too
    run.processes |= _processes_in(made_namespaces)
    # leftovers: the namespaces stay (bind-mounted), so do the sleeper's orphan and the state
    assert run.namespaces() == made_namespaces
    assert _alive(in_namespaces, process_gone), "no process outlived the cluster in its pod namespaces"
    assert (run.state_root / run.name / "state.json").exists()
    assert f"{run.name}\tdead (run netemu gc)\tpid {run.main.pid}" in run.ok("clusters").splitlines()

    collected = run.ok("gc")
    assert all(line.startswith(f"{run.name}: ") for line in collected.splitlines()), collected
    for ns in made_namespaces:
        assert f"{run.name}: netns {ns}" in collected.splitlines(), collected

    leftovers = {
        "namespaces": run.namespaces(),
        "netns mounts": run.mounts(),
        "/etc/netns entries": sorted({*run.etc_entries(),
                                      *(e for e in made_etc if (namespaces.NETNS_ETC_DIR / e).exists())}),
        "processes": _alive(run.processes, process_gone),
        "state files": run.state_files(),
        "files named after the cluster": run.named_files(),
    }
    assert leftovers == {key: [] for key in leftovers}, "left after netemu gc"
    assert run.ok("clusters").strip() == "no clusters"

    again = run.netemu("gc")
    assert (again.returncode, again.stdout.strip()) == (0, "nothing to collect"), again
    assert network_snapshot() == network_before, "the namespace the test runs in changed"
