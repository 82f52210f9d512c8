"""host-local's disk store finds what one container holds without reading every reservation
(each ADD asks; a node with hundreds of pods made that quadratic), and still sees what another
process wrote."""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from netemu.cni import disk_store
from netemu.cni.disk_store import DiskStore


def ip(text: str):
    return ipaddress.ip_address(text)


def test_get_by_id_looks_only_at_the_containers_own_reservations(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with DiskStore("pods", str(tmp_path)) as store, store.locked():
        for n in range(300):
            assert store.reserve(f"c{n}", "eth0", ip(f"127.244.{1 + n // 250}.{1 + n % 250}"), "0")
        store.allocations()  # the scan is cached from here on
        looked_at = []
        real = disk_store.owned_by
        monkeypatch.setattr(disk_store, "owned_by", lambda a, cid, ifname: looked_at.append(a) or real(a, cid, ifname))
        assert store.get_by_id("c299", "eth0") == [ip("127.244.2.50")]
        assert len(looked_at) == 1
        assert store.release_by_id("c7", "eth0") == [ip("127.244.1.8")]
        assert store.get_by_id("c7", "eth0") == [] and len(store.allocations()) == 299


def test_a_reservation_written_by_another_process_is_found(tmp_path: Path) -> None:
    with DiskStore("pods", str(tmp_path)) as store, store.locked():
        assert store.reserve("mine", "eth0", ip("127.244.1.2"), "0")
        assert store.get_by_id("mine", "eth0") == [ip("127.244.1.2")]
    (tmp_path / "pods" / "127.244.1.3").write_text("theirs\r\neth0")  # as another host-local writes it
    later = (tmp_path / "pods").stat().st_mtime_ns + 10**9  # in a later clock tick than our own write
    os.utime(tmp_path / "pods", ns=(later, later))
    with DiskStore("pods", str(tmp_path)) as store, store.locked():
        assert store.get_by_id("theirs", "eth0") == [ip("127.244.1.3")]
        assert store.get_by_id("theirs", "eth1") == []
        assert {a.container_id for a in store.allocations()} == {"mine", "theirs"}
