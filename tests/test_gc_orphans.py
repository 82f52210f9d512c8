"""``netemu gc`` reports ``netemu-`` namespaces that no cluster accounts for, and ``gc --orphans``
removes them (with what runs inside), never one that a running cluster holds.

A real netns cluster runs (``up --backend netns --detach``) under one state root; ``gc`` runs under
another, as when each user or test run has its own ``NETEMU_STATE_DIR``: the running cluster's
namespaces are still its own (its ledger, held open, lists them). An orphan is a namespace made
as a killed test run leaves one: no state directory, a process still inside. Root only, inside
``scripts/isolated`` (a private ``/run/netns``).
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_netns_helpers import netns_ready, poll  # noqa: F401 - fixtures

from netemu.fabric import routes_outside_loopback
from netemu.fabric.netns import namespaces

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(bool(routes_outside_loopback()),
                       reason="the netns backend runs only in a namespace without outside routes (make test)"),
]

NETEMU = str(Path(sys.executable).parent / "netemu")
CLI_TIMEOUT = 120  # seconds: a guard against a hung command, not a performance bound


def _netemu(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([NETEMU, *args], env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT,
                       stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise AssertionError(f"netemu {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return r


def _present() -> set[str]:
    return set(os.listdir(namespaces.NETNS_RUN_DIR)) if namespaces.NETNS_RUN_DIR.exists() else set()


def test_gc_reports_and_removes_orphans_but_spares_a_running_clusters(netns_ready, tmp_path):
    tag = secrets.token_hex(3)
    cluster_env = {**os.environ, "NETEMU_STATE_DIR": str(tmp_path / "theirs"), "NETEMU_CLUSTER": f"live{tag}"}
    gc_env = {**os.environ, "NETEMU_STATE_DIR": str(tmp_path / "mine")}
    orphan = f"netemu-orphan{tag}-node-1"
    inside = None
    _netemu(cluster_env, "up", "--backend", "netns", "--detach", "--dns-upstream", "none", "--nodes", "2")
    try:
        theirs = {name for name in _present() if name.startswith(f"netemu-live{tag}-")}
        assert theirs, "the running cluster made no namespaces"
        namespaces.create([orphan])
        inside = subprocess.Popen([*namespaces.exec_prefix(orphan), "sleep", "300"], stdin=subprocess.DEVNULL)
        assert poll(lambda: inside.pid in namespaces.processes_in([orphan]))

        out = _netemu(gc_env, "gc").stdout
        assert f"orphan: netns {orphan} (no cluster accounts for it; `netemu gc --orphans` removes it)" in out
        assert not any(name in out for name in theirs)
        assert orphan in _present() and inside.poll() is None

        out = _netemu(gc_env, "gc", "--orphans").stdout.splitlines()
        assert f"orphan: netns {orphan}" in out
        assert f"orphan: process {inside.pid} (in netns {orphan})" in out
        assert inside.wait(CLI_TIMEOUT) is not None
        assert orphan not in _present()
        assert theirs <= _present(), "gc --orphans removed a running cluster's namespace"
        assert not any(name in line for name in theirs for line in out)
        assert _netemu(cluster_env, "get", "nodes").stdout.count(" Ready ") == 2
        assert _netemu(gc_env, "gc", "--orphans").stdout == "nothing to collect\n"
    finally:
        if inside is not None and inside.poll() is None:
            inside.kill()
            inside.wait()
        _netemu(cluster_env, "down", check=False)
        namespaces.collect([orphan])
    deadline = time.monotonic() + 30
    while any(name.startswith(f"netemu-live{tag}-") for name in _present()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(name.startswith(f"netemu-live{tag}-") for name in _present())


def test_dead_clusters_forged_ledger_never_reaches_a_running_clusters_namespace(netns_ready, tmp_path):
    """A dead cluster's ledger that lists a running cluster's namespace (forged, or stale) does
    not get it deleted, nor what runs inside it."""
    tag = secrets.token_hex(3)
    name = f"netemu-held{tag}-node-1"
    namespaces.create([name])
    held_dir = tmp_path / "running" / "held"
    held_dir.mkdir(parents=True)
    try:
        with open(held_dir / "ledger", "a") as held:  # a running cluster holds its ledger open
            held.write(f"netns {name}\n")
            held.flush()
            dead = tmp_path / "state" / "dead"
            dead.mkdir(parents=True, mode=0o700)
            (tmp_path / "state").chmod(0o700)
            (dead / "ledger").write_text(f"netns {name}\n")
            (dead / "ledger").chmod(0o600)
            removed = namespaces.collect_cluster_garbage(dead)
            assert name in _present()
            assert not any(name in line for line in removed)
    finally:
        namespaces.collect([name])
