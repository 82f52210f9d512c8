"""Helpers for the tests that make network namespaces (no tests here).

Import the fixtures by name into a test module (``from test_netns_helpers import
own_network_unchanged, new_names, netns_ready``): ``own_network_unchanged`` (module-scoped,
autouse once imported) checks that the namespace the tests run in — the host's when pytest runs
directly — has the same links, addresses, routes, rules and forwarding switches at the end of
the module as at its start; ``netns_ready`` skips unless namespaces can be made (root and a
working ``ip netns``), a skip that fails the test under ``make test`` (see conftest.py);
``new_names(n)`` gives n namespace names of the test's own
(``netemu-t<random>-<i>``), collected (processes killed, namespaces deleted) when it ends
(``NameBook`` does the same for wider-scoped fixtures).
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from netemu.errors import FabricError
from netemu.fabric.netns import ipbatch, namespaces

_VOLATILE = {"valid_life_time", "preferred_life_time", "expires"}
_FORWARDING = ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")


def _scrub(value: object) -> object:
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def network_snapshot() -> dict[str, object]:
    """The current namespace's links, addresses, routes (all tables), rules and forwarding."""

    def ip_json(*args: str) -> object:
        out = subprocess.run([ipbatch.ip_binary(), "-j", *args], capture_output=True, text=True, check=True).stdout
        return json.loads(out or "[]")

    return _scrub({
        "link": ip_json("link", "show"), "addr": ip_json("addr", "show"),
        "route4": ip_json("-4", "route", "show", "table", "all"),
        "route6": ip_json("-6", "route", "show", "table", "all"),
        "rule4": ip_json("-4", "rule", "show"), "rule6": ip_json("-6", "rule", "show"),
        "forwarding": {p: Path(p).read_text().strip() for p in _FORWARDING if Path(p).exists()},
    })


@pytest.fixture(scope="module", autouse=True)
def own_network_unchanged() -> Iterator[None]:
    before = network_snapshot()
    yield
    assert network_snapshot() == before, "the network namespace the tests run in changed"


@pytest.fixture(scope="module")
def netns_ready() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)")
    probe = f"netemu-t{secrets.token_hex(4)}-probe"
    try:
        namespaces.create([probe])
    except FabricError as exc:
        pytest.skip(f"ip netns does not work here: {exc}")
    finally:
        namespaces.delete([probe])


class NameBook:
    """Hands out fresh namespace names (``netemu-t<random>-<i>``) and collects them all."""

    def __init__(self) -> None:
        self.prefix = f"netemu-t{secrets.token_hex(4)}-"
        self.made: list[str] = []

    def __call__(self, count: int) -> list[str]:
        names = [f"{self.prefix}{len(self.made) + i}" for i in range(count)]
        self.made.extend(names)
        return names

    def collect(self) -> None:
        namespaces.collect(self.made)


@pytest.fixture
def new_names(netns_ready: None) -> Iterator[NameBook]:
    book = NameBook()
    yield book
    book.collect()


def thread_namespace() -> tuple[int, int]:
    return namespaces.namespace_id("/proc/thread-self/ns/net")


def poll(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """True as soon as ``condition()`` holds, False when it still does not after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()
