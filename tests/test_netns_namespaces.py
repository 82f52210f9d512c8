"""Named network namespaces for the netns backend: names, create/delete with the ledger, node
setup, ``ip`` batches, switching a thread in (sockets stay where they were made), GC from a ledger.

Every namespace here is the test's own (``netemu-t<random>-…``, deleted in a finalizer), none
has a link to the namespace the tests run in, and the module checks that the namespace it runs
in (the host's when pytest runs directly) has the same links, addresses, routes, rules and
forwarding switches at the end as at the start. Traffic goes to 127.0.0.1 inside test namespaces
only.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from netemu.config import ClusterConfig
from netemu.errors import ClusterError, FabricError
from netemu.fabric.netns import ipbatch, namespaces
from netemu.state import ClusterState

from test_netns_helpers import netns_ready, new_names, own_network_unchanged, poll, thread_namespace


# ---------------------------------------------------------------- names (no privileges)

def test_namespace_name_has_the_cluster_prefix() -> None:
    assert namespaces.namespace_name("demo", "node", "node-1") == "netemu-demo-node-node-1"


@pytest.mark.parametrize("name", ["eth0", "", "netemu-", "netemu-../x", "netemu-a/b", "netemu-a b",
                                  "netemu-" + "x" * 300, "default"],
                         ids=["foreign", "empty", "prefix-only", "dotdot", "slash", "space", "too-long", "default"])
def test_check_name_refuses_anything_not_netemus(name: str) -> None:
    with pytest.raises(FabricError):
        namespaces.check_name(name)


@pytest.mark.parametrize("prefix", ["veth", "nd", "tap-"])
def test_interface_names_are_stable_and_fit(prefix: str) -> None:
    first = namespaces.interface_name(prefix, "pod-1/eth0")
    assert len(first) == 15 and first.startswith(prefix)
    assert first == namespaces.interface_name(prefix, "pod-1/eth0")
    assert first != namespaces.interface_name(prefix, "pod-2/eth0")


def test_ip_never_runs_in_the_callers_namespace() -> None:
    with pytest.raises(FabricError, match="refusing"):
        ipbatch.batch("", ["link set lo up"])
    with pytest.raises(FabricError, match="only `netns add/del`"):
        ipbatch.netns_batch(["link add x type bridge"])


# ---------------------------------------------------------------- create, delete, ledger

@pytest.mark.netns
def test_create_records_in_the_ledger_then_delete_is_idempotent(tmp_path: Path, new_names) -> None:
    state = ClusterState(ClusterConfig(name="t-ledger", state_dir=tmp_path))
    state.create()
    names = new_names(3)
    namespaces.create(names, state)
    ledger = (state.directory / "ledger").read_text().splitlines()
    assert ledger == [f"netns {name}" for name in names]
    for name in names:
        assert namespaces.exists(name)
        (lo,) = ipbatch.query(name, "link", "show")
        assert lo["ifname"] == "lo" and "UP" in lo["flags"]
    assert namespaces.delete(names) == names
    assert not any(namespaces.exists(name) for name in names)
    assert namespaces.delete(names) == []
    state.remove()


@pytest.mark.netns
def test_create_refuses_a_namespace_that_exists(new_names) -> None:
    (name,) = new_names(1)
    namespaces.create([name])
    with pytest.raises(FabricError, match="exist already"):
        namespaces.create([name])


@pytest.mark.netns
def test_node_setup_gives_lo_and_a_marked_bridge(new_names) -> None:
    (name,) = new_names(1)
    namespaces.create([name])
    namespaces.setup_node(name, mtu=1400)
    links = {link["ifname"]: link for link in ipbatch.query(name, "-d", "link", "show")}
    assert set(links) == {"lo", "cni0"}
    bridge = links["cni0"]
    assert bridge["linkinfo"]["info_kind"] == "bridge" and "UP" in bridge["flags"]
    assert bridge["ifalias"] == namespaces.OWNED_ALIAS and bridge["mtu"] == 1400


@pytest.mark.netns
def test_a_failing_batch_names_its_line(new_names) -> None:
    (name,) = new_names(1)
    namespaces.create([name])
    with pytest.raises(FabricError, match="line 2: link set nosuch0 up"):
        ipbatch.batch(name, ["link set lo up", "link set nosuch0 up", "link set lo down"])
    (lo,) = ipbatch.query(name, "link", "show")
    assert "UP" in lo["flags"]  # the batch stopped at the failure


@pytest.mark.netns
async def test_async_twins(new_names) -> None:
    names = new_names(2)
    await namespaces.acreate(names)
    await namespaces.asetup_node(names[0])
    assert {link["ifname"] for link in await ipbatch.aquery(names[0], "link", "show")} == {"lo", "cni0"}
    assert await namespaces.adelete(names) == names


@pytest.mark.netns
def test_etc_files_reach_commands_run_with_the_exec_prefix(new_names) -> None:
    (name,) = new_names(1)
    namespaces.create([name])
    namespaces.write_etc_file(name, "resolv.conf", "nameserver 10.96.0.10\n")
    out = subprocess.run([*namespaces.exec_prefix(name), "cat", "/etc/resolv.conf"],
                         capture_output=True, text=True, check=True, timeout=10).stdout
    assert out == "nameserver 10.96.0.10\n"
    namespaces.delete([name])
    assert not (namespaces.NETNS_ETC_DIR / name).exists()


# ---------------------------------------------------------------- switching a thread

@pytest.mark.netns
def test_call_in_runs_on_a_thread_inside_the_namespace(new_names) -> None:
    (name,) = new_names(1)
    namespaces.create([name])
    mine = thread_namespace()
    assert namespaces.call_in(name, thread_namespace) == namespaces.namespace_id(namespaces.namespace_path(name))
    assert thread_namespace() == mine


@pytest.mark.netns
def test_sockets_stay_in_the_namespace_they_were_made_in(new_names) -> None:
    a, b = new_names(2)
    namespaces.create([a, b])
    listener = namespaces.call_in(a, socket.create_server, ("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        # a's 127.0.0.1 answers from a socket made in a, even when used from this thread
        client = namespaces.call_in(a, socket.create_connection, ("127.0.0.1", port), 2)
        with client, listener.accept()[0] as served:
            client.sendall(b"ping")
            assert served.recv(4) == b"ping"
        # b has its own loopback: nothing listens there
        with pytest.raises(ConnectionRefusedError):
            namespaces.call_in(b, socket.create_connection, ("127.0.0.1", port), 2)
    finally:
        listener.close()


@pytest.mark.netns
def test_switched_to_returns_the_thread_to_its_namespace(new_names) -> None:
    (name,) = new_names(1)
    namespaces.create([name])
    seen: dict[str, tuple[int, int]] = {}

    def worker() -> None:
        seen["before"] = thread_namespace()
        with namespaces.switched_to(name):
            seen["inside"] = thread_namespace()
        seen["after"] = thread_namespace()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["inside"] == namespaces.namespace_id(namespaces.namespace_path(name))
    assert seen["before"] == seen["after"] == thread_namespace()


@pytest.mark.netns
async def test_the_event_loop_thread_is_never_switched(new_names) -> None:
    (name,) = new_names(1)
    await namespaces.acreate([name])
    with pytest.raises(FabricError, match="event-loop thread"), namespaces.switched_to(name):
        pass
    assert await namespaces.acall_in(name, thread_namespace) == namespaces.namespace_id(namespaces.namespace_path(name))


@pytest.mark.netns
def test_entering_a_missing_namespace_fails_cleanly(netns_ready: None) -> None:
    with pytest.raises(FabricError, match="cannot open network namespace"):
        namespaces.call_in(f"netemu-t{secrets.token_hex(4)}-missing", thread_namespace)


# ---------------------------------------------------------------- garbage collection

def _write_ledger(directory: Path, lines: list[str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ledger").write_text("".join(f"{line}\n" for line in lines))


@pytest.mark.netns
def test_gc_kills_processes_inside_and_deletes_exactly_the_recorded_namespaces(tmp_path: Path, new_names) -> None:
    busy, idle, unrecorded = new_names(3)
    namespaces.create([busy, idle, unrecorded])
    sleeper = subprocess.Popen([*namespaces.exec_prefix(busy), "sleep", "60"])
    try:
        assert poll(lambda: sleeper.pid in namespaces.processes_in([busy]))
        directory = tmp_path / "dead-cluster"
        _write_ledger(directory, [f"netns {busy}", "process 1 None", f"netns {idle}", f"netns {busy}",
                                  "netns eth0", "netns netemu-../etc", "netns"])
        assert namespaces.recorded(directory) == [busy, idle]
        removed = namespaces.collect_from_ledger(directory)
        assert removed == [f"process {sleeper.pid} (in netns {busy})", f"netns {busy}", f"netns {idle}"]
        assert sleeper.wait(timeout=10) == -signal.SIGKILL
        assert not namespaces.exists(busy) and not namespaces.exists(idle)
        assert namespaces.exists(unrecorded)
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


@pytest.mark.netns
def test_cluster_gc_refuses_a_live_cluster_and_collects_a_dead_one(tmp_path: Path, new_names) -> None:
    (name,) = new_names(1)
    namespaces.create([name])
    directory = tmp_path / "c"
    _write_ledger(directory, [f"netns {name}"])
    (directory / "state.json").write_text(json.dumps({"pid": os.getpid(), "start_time": _start_time(os.getpid())}))
    with pytest.raises(ClusterError, match="is running"):
        namespaces.collect_cluster_garbage(directory)
    assert namespaces.exists(name)
    (directory / "state.json").write_text(json.dumps({"pid": os.getpid(), "start_time": -1}))
    removed = namespaces.collect_cluster_garbage(directory)
    assert f"netns {name}" in removed and not namespaces.exists(name) and not directory.exists()


def _start_time(pid: int) -> int:
    from netemu.state import proc_start_time
    value = proc_start_time(pid)
    assert value is not None
    return value


__all__ = ["netns_ready", "new_names", "own_network_unchanged"]  # fixtures used by name
