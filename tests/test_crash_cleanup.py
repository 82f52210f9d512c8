"""Crash cleanup: ``kill -9`` during bring-up, then ``netemu gc``, leaves no process behind; and
``gc`` never signals a process it cannot prove is the cluster's.

The acceptance trials start ``netemu up`` (foreground, as a child of the test) with a Deployment
of 200 pods whose command forks (``sh -c "sleep 3600 & exec sleep 3601"``), SIGKILL it at a
random moment of the bring-up (a seeded RNG picks how many new processes to wait for first), run
``netemu gc`` and count what is left by scanning ``/proc`` for processes in the test's own network
namespace that were not there before the trial — not by netemu's bookkeeping.

The ownership tests plant ledgers by hand in a dead cluster's directory: a line naming an unrelated
process (with its true start time), the same with a wrong start time (a recycled pid), and a
session of a container whose descendant cleared its environment.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netemu.reaper import TOKEN_VARIABLE, read_stat
from netemu.state import gc_all

NETEMU = str(Path(sys.executable).parent / "netemu")
CLI_TIMEOUT = 180  # seconds: a guard against a hung command, not a performance bound
PODS = 200
TRIALS = 10
SEED = 20240610

DEPLOYMENT = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: forkers}}
spec:
  replicas: {PODS}
  selector: {{matchLabels: {{app: forkers}}}}
  template:
    metadata: {{labels: {{app: forkers}}}}
    spec:
      containers:
      - name: main
        image: busybox
        command: [sh, -c, "sleep 3600 & exec sleep 3601"]
"""

Identity = tuple[int, int]  # pid, start time


def _netns(pid: int | str) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def processes_here() -> set[Identity]:
    """Every live (non-zombie) process in this test's network namespace, by pid and start time."""
    mine = _netns("self")
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _netns(entry) == mine:
            st = read_stat(int(entry))
            if st is not None and not st.zombie:
                out.add((st.pid, st.start_time))
    return out


def _alive(ident: Identity) -> bool:
    st = read_stat(ident[0])
    return st is not None and not st.zombie and st.start_time == ident[1]


def _kill_all(idents: set[Identity]) -> None:
    """Safety net of the test itself, so a failure leaves nothing running: by pidfd, after
    checking the start time on that very process."""
    for pid, start in idents:
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            st = read_stat(pid)
            if st is not None and st.start_time == start:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        except OSError:
            pass
        finally:
            os.close(fd)


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {**os.environ, "NETEMU_STATE_DIR": str(tmp_path / "state"), "NETEMU_CLUSTER": "crash"}


def _gc(env: dict[str, str]) -> str:
    r = subprocess.run([NETEMU, "gc"], env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.slow
def test_kill_9_at_random_moments_of_bring_up_then_gc_leaves_nothing(env, tmp_path):
    manifest = tmp_path / "forkers.yaml"
    manifest.write_text(DEPLOYMENT)
    rng = random.Random(SEED)
    leftovers: dict[int, int] = {}
    for trial in range(TRIALS):
        before = processes_here()
        wait_for = rng.randint(0, 2 * PODS)  # new processes (two sleeps per pod) to wait for before the kill
        up = subprocess.Popen([NETEMU, "up", "--dns-upstream", "none", "--timeout", str(CLI_TIMEOUT),
                               "-f", str(manifest)], env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + CLI_TIMEOUT
            while len(processes_here() - before) < wait_for and up.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            assert up.poll() is None, f"trial {trial}: netemu up exited by itself ({up.returncode})"
            up.send_signal(signal.SIGKILL)
            up.wait(CLI_TIMEOUT)
            _gc(env)
            left = processes_here() - before
            leftovers[trial] = len(left)
        finally:
            if up.poll() is None:
                up.kill()
                up.wait()
            _kill_all(processes_here() - before)
    assert leftovers == {trial: 0 for trial in range(TRIALS)}
    assert [p.name for p in (tmp_path / "state").iterdir()] == []


# ---------------------------------------------------------------------------- ownership


def _start(argv: list[str], **env: str) -> subprocess.Popen[bytes]:
    """A process of the test's own, leading its own session, reaped by the test."""
    return subprocess.Popen(argv, env={"PATH": os.environ["PATH"], **env}, start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _dead_cluster(root: Path, name: str, ledger: list[str], token: str = "a" * 32) -> Path:
    """A cluster directory as a killed cluster leaves it: its owner pid is gone."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    directory = root / name
    directory.mkdir(parents=True, mode=0o700)
    root.chmod(0o700)
    info = {"name": name, "pid": gone.pid, "start_time": 1, "backend": "loopback", "ranges": [], "token": token}
    (directory / "state.json").write_text(json.dumps(info))
    (directory / "ledger").write_text("".join(line + "\n" for line in ledger))
    for f in directory.iterdir():
        f.chmod(0o600)
    return directory


def _wait_started(proc: subprocess.Popen[bytes], children: int = 0) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        members = [st for st in map(read_stat, _pids()) if st is not None and st.session == proc.pid]
        if len(members) >= 1 + children:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {proc.pid} did not start its children")


def _pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def _session(pid: int) -> list[int]:
    return sorted(st.pid for st in map(read_stat, _pids()) if st is not None and st.session == pid and not st.zombie)


def test_forged_ledger_line_never_kills_a_foreign_process(tmp_path, started):
    foreign = _start(["sh", "-c", "sleep 300 & exec sleep 301"])  # no token: not the cluster's
    started.append(foreign)
    _wait_started(foreign, children=1)
    members = _session(foreign.pid)
    start = read_stat(foreign.pid).start_time
    root = tmp_path / "state"
    _dead_cluster(root, "forged", [f"process {foreign.pid} {start} {foreign.pid}",  # its true start time
                                   f"process {foreign.pid} {start}"])  # the older two-field form
    out = gc_all(root)
    assert _session(foreign.pid) == members
    assert f"forged: process {foreign.pid} left alone: not provably the cluster's" in out
    assert not any(line.startswith(f"forged: process {pid}") and "left alone" not in line
                   for pid in members for line in out)


def test_recycled_pid_is_never_killed(tmp_path, started):
    other = _start(["sleep", "300"])
    started.append(other)
    _wait_started(other)
    start = read_stat(other.pid).start_time
    # The ledger's process had this pid once, with another start time; the token is not in `other`.
    _dead_cluster(tmp_path / "state", "recycled", [f"process {other.pid} {start - 1} {other.pid}"])
    out = gc_all(tmp_path / "state")
    assert _session(other.pid) == [other.pid]
    assert not any(f"process {other.pid}" in line for line in out)


def test_token_of_another_cluster_proves_nothing(tmp_path, started):
    theirs = _start(["sleep", "300"], **{TOKEN_VARIABLE: "b" * 32})
    started.append(theirs)
    _wait_started(theirs)
    start = read_stat(theirs.pid).start_time
    _dead_cluster(tmp_path / "state", "mine", [f"process {theirs.pid} {start} {theirs.pid}"], token="a" * 32)
    gc_all(tmp_path / "state")
    assert _session(theirs.pid) == [theirs.pid]


def test_gc_kills_a_dead_clusters_session_including_a_descendant_without_the_token(tmp_path, started):
    token = "c" * 32
    # A container as netemu starts it: session leader, the cluster's token in its environment; one
    # child keeps the token, one clears its environment (env -i) but stays in the session.
    container = _start(["sh", "-c", "sleep 300 & env -i sleep 302 & exec sleep 301"], **{TOKEN_VARIABLE: token})
    _wait_started(container, children=2)
    members = _session(container.pid)
    assert len(members) == 3
    start = read_stat(container.pid).start_time
    _dead_cluster(tmp_path / "state", "dead", [f"process {container.pid} {start} {container.pid}"], token=token)
    out = gc_all(tmp_path / "state")
    container.wait()
    assert _session(container.pid) == []
    assert sorted(int(line.split()[2]) for line in out if line.startswith("dead: process ")) == members
