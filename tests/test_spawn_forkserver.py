"""The fork server (netemu.forkserver) that starts containers' processes: each child leads its own
session, is in the ledger before its program runs, holds only 0/1/2, gets its env, cwd and
descriptors, reports its exit status, and dies with the server, which dies with the cluster
process (kill -9 of either takes the containers along). A missing program is an OSError."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from netemu.forkserver import ForkServer
from netemu.reaper import parse_ledger, read_stat

DEADLINE = 20.0  # seconds: a guard against a hang, not a performance bound


def _gone(pid: int) -> bool:
    st = read_stat(pid)
    return st is None or st.zombie


def wait_gone(pids: list[int]) -> list[int]:
    """Poll until none of ``pids`` lives; those still alive at the deadline."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        alive = [p for p in pids if not _gone(p)]
        if not alive:
            return []
        time.sleep(0.02)
    return [p for p in pids if not _gone(p)]


async def _reaped(pid: int) -> None:
    """Until ``pid`` has no /proc entry left, not even a zombie's (its parent reaped it)."""
    while os.path.exists(f"/proc/{pid}"):
        await asyncio.sleep(0.02)


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    path = tmp_path / "ledger"
    path.touch()
    return path


def make_server(ledger: Path) -> ForkServer:
    """A fork server whose own start is recorded (from its child, as the cluster's ledger does)
    in ``servers`` next to the ledger."""
    servers = ledger.with_name("servers")

    def record(pid: int) -> None:
        with open(servers, "a") as f:
            f.write(f"{pid}\n")
    return ForkServer(ledger, env=dict(os.environ), record=record)


async def run(server: ForkServer, argv: list[str], tmp_path: Path, **kwargs) -> tuple[int, str]:
    out = tmp_path / "out"
    with open(os.devnull, "rb") as stdin, open(out, "wb") as stdout:
        proc = await server.spawn(argv, env=kwargs.pop("env", dict(os.environ)), cwd=kwargs.pop("cwd", None),
                                  stdin=stdin.fileno(), stdout=stdout.fileno(), stderr=stdout.fileno())
    code = await asyncio.wait_for(proc.wait(), DEADLINE)
    return code, out.read_text()


async def test_child_runs_with_env_cwd_and_only_std_descriptors(ledger: Path, tmp_path: Path) -> None:
    server = make_server(ledger)
    leaked_read, leaked_write = os.pipe()
    os.set_inheritable(leaked_read, True)  # a descriptor the cluster process would hand on if it could
    try:
        code, out = await run(server, ["sh", "-c", 'echo "$FOO"; pwd; ls /proc/$$/fd; exit 3'], tmp_path,
                              env={"FOO": "bar", "PATH": os.environ["PATH"]}, cwd=str(tmp_path))
    finally:
        await server.close()
        os.close(leaked_read)
        os.close(leaked_write)
    lines = out.split()
    assert code == 3
    assert lines[:2] == ["bar", str(tmp_path)]
    assert sorted(lines[2:]) == ["0", "1", "2"]


async def test_child_leads_its_session_and_is_in_the_ledger_before_it_runs(ledger: Path, tmp_path: Path) -> None:
    server = make_server(ledger)
    marker = tmp_path / "ledger-seen"
    # The program itself looks at the ledger: its own line must already be there.
    script = f'grep -q "^process $$ " {ledger} && touch {marker}; ps -o sid= -p $$; ps -o pgid= -p $$'
    try:
        code, out = await run(server, ["sh", "-c", script], tmp_path)
        server_pid = server.pid
    finally:
        await server.close()
    assert code == 0
    assert marker.exists()
    recorded = parse_ledger(ledger.read_text().splitlines())
    assert len(recorded) == 1
    pid = recorded[0].pid
    assert recorded[0].session == pid
    assert [int(x) for x in out.split()] == [pid, pid]
    assert ledger.with_name("servers").read_text().split() == [str(server_pid)]  # by the cluster's record
    assert wait_gone([server_pid]) == []


async def test_missing_program_is_file_not_found_and_server_goes_on(ledger: Path, tmp_path: Path) -> None:
    server = make_server(ledger)
    try:
        with pytest.raises(FileNotFoundError):
            await run(server, ["netemu-no-such-program"], tmp_path)
        with pytest.raises(PermissionError):
            await run(server, [str(ledger)], tmp_path)  # not executable
        code, out = await run(server, ["echo", "still here"], tmp_path)
    finally:
        await server.close()
    assert (code, out) == (0, "still here\n")
    assert parse_ledger(ledger.read_text().splitlines()) != []


async def test_signalled_child_reports_the_signal(ledger: Path, tmp_path: Path) -> None:
    server = make_server(ledger)
    try:
        with open(os.devnull, "rb") as null:
            proc = await server.spawn(["sleep", "60"], env=dict(os.environ), cwd=None, stdin=null.fileno(),
                                      stdout=null.fileno(), stderr=null.fileno())
        os.killpg(proc.pid, signal.SIGTERM)  # the child leads its own process group
        assert await asyncio.wait_for(proc.wait(), DEADLINE) == -signal.SIGTERM
        assert proc.returncode == -signal.SIGTERM
    finally:
        await server.close()


async def test_children_die_with_a_killed_server_and_a_new_one_takes_over(ledger: Path, tmp_path: Path) -> None:
    server = make_server(ledger)
    try:
        with open(os.devnull, "rb") as null:
            procs = [await server.spawn(["sleep", "60"], env=dict(os.environ), cwd=None, stdin=null.fileno(),
                                        stdout=null.fileno(), stderr=null.fileno()) for _ in range(3)]
        first = server.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        codes = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), DEADLINE)
        assert codes == [-signal.SIGKILL] * 3
        assert wait_gone([p.pid for p in procs]) == []
        await asyncio.wait_for(_reaped(first), DEADLINE)  # not left a zombie until the next start
        assert server.pid is None
        code, out = await run(server, ["echo", "again"], tmp_path)
        assert (code, out) == (0, "again\n")
        assert server.pid not in (None, first)
    finally:
        await server.close()


CLUSTER_PROCESS = textwrap.dedent("""
    import asyncio, os, sys
    from pathlib import Path
    from netemu.forkserver import ForkServer

    async def main():
        server = ForkServer(Path(sys.argv[1]), env=dict(os.environ), record=lambda pid: None)
        with open(os.devnull, "rb") as null:
            procs = [await server.spawn(["sleep", "60"], env=dict(os.environ), cwd=None,
                                        stdin=null.fileno(), stdout=null.fileno(), stderr=null.fileno())
                     for _ in range(3)]
        print(server.pid, *(p.pid for p in procs), flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
""")


def test_killed_cluster_process_takes_server_and_containers_along(ledger: Path) -> None:
    """kill -9 of the process that runs the fork server: the server dies (PDEATHSIG), and with it
    every container it started (their own PDEATHSIG)."""
    with subprocess.Popen([sys.executable, "-c", CLUSTER_PROCESS, str(ledger)], stdout=subprocess.PIPE,
                          text=True) as cluster:
        try:
            pids = [int(p) for p in cluster.stdout.readline().split()]
            assert len(pids) == 4
            assert [p for p in pids if _gone(p)] == []
            for container in pids[1:]:
                assert read_stat(container).ppid == pids[0]
        finally:
            cluster.kill()
    assert wait_gone(pids) == []


PODS = """
apiVersion: v1
kind: Pod
metadata: {name: sleeper}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, image: busybox, command: [sleep, "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: once}
spec:
  restartPolicy: Never
  containers:
  - {name: main, image: busybox, command: [sh, -c, "exit 7"]}
"""


async def test_cluster_starts_containers_through_its_fork_server(make_cluster, process_gone) -> None:
    cluster = await make_cluster()
    await cluster.apply(PODS)
    await cluster.wait_for(lambda: cluster.get("Pod", "sleeper").status.phase == "Running" and
                           cluster.get("Pod", "once").status.phase == "Failed", 20, "the pods to run and end")
    exit_code = cluster.get("Pod", "once").status.container_statuses[0].state.terminated.exit_code
    server = cluster.forkserver.pid
    assert server is not None
    sleepers = [pid for pid in _children(server) if read_stat(pid) and not read_stat(pid).zombie]
    assert len(sleepers) == 1
    recorded = {rec.pid for rec in parse_ledger(cluster.state.path("ledger").read_text().splitlines())}
    assert {server, *sleepers} <= recorded
    await cluster.stop()
    assert exit_code == 7
    assert [pid for pid in [server, *sleepers] if not process_gone(pid)] == []


def _children(parent: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = read_stat(int(entry))
            if st is not None and st.ppid == parent:
                out.append(st.pid)
    return out


def test_the_server_is_started_small(ledger: Path, tmp_path: Path) -> None:
    """It runs without the site packages (``-S``) and loads none of the big modules: each fork
    copies its page tables and every page written afterwards, so what it imports costs every
    container start (about 1.2 ms a start with the 11 MiB that asyncio, ssl and dataclasses made)."""
    async def main() -> set[str]:
        server = make_server(ledger)
        try:
            await run(server, ["true"], tmp_path)
            pid = server.pid
            assert pid is not None
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert argv[1:3] == [b"-I", b"-S"]
            # what it holds: read from the outside, through the files its interpreter has mapped
            maps = Path(f"/proc/{pid}/maps").read_text()
            return {line.split("/")[-1] for line in maps.splitlines() if ".so" in line}
        finally:
            await server.close()

    mapped = asyncio.run(main())
    assert not [name for name in mapped if name.startswith(("_ssl", "_asyncio", "uvloop", "_cffi", "libssl"))], mapped
    probe = subprocess.run([sys.executable, "-I", "-S", "-c",
                            f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r}); "
                            "import netemu.forkserverd; print(' '.join(sorted(sys.modules)))"],
                           capture_output=True, text=True, check=True)
    loaded = set(probe.stdout.split())
    assert not loaded & {"asyncio", "dataclasses", "inspect", "ssl", "logging", "pathlib"}, loaded
