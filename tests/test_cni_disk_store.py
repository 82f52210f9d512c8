"""host-local's disk store: the reference's file layout, ownership matching, and concurrent
allocation from two processes through the flock (no address handed out twice)."""
from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from netemu.cni.disk_store import DiskStore
from netemu.cni.store import FakeStore, Store

ip = ipaddress.ip_address


@pytest.fixture(params=["disk", "fake"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "fake":
        return FakeStore()
    disk = DiskStore("net1", str(tmp_path))
    request.addfinalizer(disk.close)
    return disk


def test_store_contract(store: Store) -> None:
    with store.locked():
        assert store.reserve("c1", "eth0", ip("127.244.1.2"), "0")
        assert not store.reserve("c2", "eth0", ip("127.244.1.2"), "0")
        assert store.reserve("c1", "eth1", ip("127.244.1.3"), "0")
        assert store.last_reserved_ip("0") == ip("127.244.1.3")
        assert store.last_reserved_ip("1") is None
        assert store.get_by_id("c1", "eth0") == [ip("127.244.1.2")]
        assert store.release_by_id("c1", "eth0") == [ip("127.244.1.2")]
        assert store.release_by_id("c1", "eth0") == []
        assert [(a.ip, a.container_id, a.ifname) for a in store.allocations()] == [
            (ip("127.244.1.3"), "c1", "eth1")]
        store.release(ip("127.244.1.3"))
        store.release(ip("127.244.1.3"))
        assert store.allocations() == []


def test_disk_layout_matches_reference(tmp_path: Path) -> None:
    with DiskStore("net1", str(tmp_path)) as store, store.locked():
        store.reserve("c1", "eth0", ip("127.244.1.2"), "0")
    net = tmp_path / "net1"
    assert sorted(p.name for p in net.iterdir()) == ["127.244.1.2", "last_reserved_ip.0", "lock"]
    assert (net / "127.244.1.2").read_bytes() == b"c1\r\neth0"
    assert (net / "last_reserved_ip.0").read_text() == "127.244.1.2"


def test_disk_reads_old_id_only_files(tmp_path: Path) -> None:
    net = tmp_path / "net1"
    net.mkdir()
    (net / "127.244.1.9").write_text("old-container")
    (net / "127.244.1.10").write_text("c2\neth0\n")  # a plain newline works too
    with DiskStore("net1", str(tmp_path)) as store, store.locked():
        assert store.get_by_id("old-container", "eth3") == [ip("127.244.1.9")]
        assert store.get_by_id("c2", "eth0") == [ip("127.244.1.10")]
        assert store.release_by_id("old-container", "eth0") == [ip("127.244.1.9")]


WORKER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from netemu.cni.skel import invoke
    from netemu.cni import host_local

    data_dir, name, count, ready, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5])
    config = {"cniVersion": "1.0.0", "name": "pods", "type": "host-local",
              "ipam": {"type": "host-local", "ranges": [[{"subnet": "127.244.7.0/24"}]], "dataDir": data_dir}}
    ready.touch()
    deadline = time.monotonic() + 30
    while not go.exists():
        if time.monotonic() > deadline:
            sys.exit("never told to go")
        time.sleep(0.005)
    got = []
    for n in range(count):
        result = invoke(host_local.PLUGIN, "ADD", config, f"{name}-{n}", "/x", "eth0")
        got.append(str(result.ips[0].address.ip))
    print(json.dumps(got))
""")


def test_two_processes_never_get_the_same_address(tmp_path: Path) -> None:
    count = 60
    go = tmp_path / "go"
    workers = []
    for name in ("a", "b"):
        ready = tmp_path / f"ready-{name}"
        workers.append((ready, subprocess.Popen(
            [sys.executable, "-c", WORKER, str(tmp_path / "data"), name, str(count), str(ready), str(go)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    try:
        deadline = time.monotonic() + 30
        while not all(ready.exists() for ready, _ in workers):
            assert time.monotonic() < deadline, "workers did not start"
            assert all(proc.poll() is None for _, proc in workers), "a worker died before starting"
            time.sleep(0.005)
        go.touch()
        outputs = [proc.communicate(timeout=60) for _, proc in workers]
    finally:
        for _, proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for (_, proc), (out, err) in zip(workers, outputs):
        assert proc.returncode == 0, err
    handed = [address for out, _ in outputs for address in json.loads(out)]
    assert len(handed) == 2 * count
    assert len(set(handed)) == 2 * count, "an address was handed out twice"
    on_disk = [p.name for p in (tmp_path / "data" / "pods").iterdir() if p.name.startswith("127.")]
    assert sorted(on_disk) == sorted(handed)
