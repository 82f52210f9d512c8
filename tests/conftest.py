"""Shared fixtures: clusters started on the test's event loop, each in its own state directory.

``make_cluster(nodes=..., **overrides)`` starts a ``netemu.Cluster`` named after the test (with a
short restart back-off so crash loops are quick) and stops it when the test ends; ``cluster`` is
one started single-node cluster. The cluster runs on the test's loop: run real tools with
``asyncio.to_thread`` or asyncio subprocesses, never a blocking call. ``process_gone(pid,
start_time=None)`` tells whether a process has stopped (zombies count as stopped).

Under ``make test`` — as root inside ``scripts/isolated`` (``NETEMU_ISOLATED=1``), with every tool
``make tools`` installs — a test that skips is a test that cannot fail, so there every skip is
reported as a failure that names the skip's reason (``skips_must_fail``). Elsewhere (not root, not
isolated) a skip stays a skip.
"""
from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any

import pytest

from netemu.scenario.clusters import start_cluster

_serial = itertools.count(1)


def skips_must_fail() -> bool:
    """True under ``make test``: root inside ``scripts/isolated``, where every test can run."""
    return os.environ.get("NETEMU_ISOLATED") == "1" and os.geteuid() == 0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """Under ``make test`` a skipped test (a ``skipif`` mark, ``pytest.skip`` in the test or in a
    fixture such as ``netns_ready``) fails instead, with the reason it gave."""
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail") or not skips_must_fail():
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (f"{item.nodeid}: skipped under `make test` (root, scripts/isolated), where every test "
                       f"must run: {reason.removeprefix('Skipped: ')}")


@pytest.fixture(autouse=True)
def _kubeconfig_of_the_test(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """`netemu up` merges its kubectl context into $KUBECONFIG: in a test, never the user's file."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path_factory.mktemp("kube") / "config"))


def _cluster_name(request: pytest.FixtureRequest) -> str:
    """A DNS-1123 label of at most 32 characters, unique per test and per call."""
    digest = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]
    return f"t-{digest}-{next(_serial)}"


@pytest.fixture
async def make_cluster(tmp_path, monkeypatch, request) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    monkeypatch.setenv("NETEMU_STATE_DIR", str(tmp_path / "state"))
    started: list[Any] = []

    async def make(nodes: int | list[str] = 1, **overrides: Any) -> Any:
        overrides.setdefault("restart_backoff", 0.2)
        overrides.setdefault("restart_backoff_max", 1.0)
        # In the first free address slot: a module's cluster under another state root may be up.
        cluster = await start_cluster(nodes, name=_cluster_name(request), **overrides)
        started.append(cluster)
        return cluster

    yield make
    for cluster in reversed(started):
        await cluster.stop()


@pytest.fixture
async def cluster(make_cluster) -> Any:
    return await make_cluster(nodes=1)


def _process_gone(pid: int, start_time: int | None = None) -> bool:
    """No such process (or another one under a recycled pid), or only its zombie is left (an
    orphan whose reaper has not run yet has stopped all the same)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return True
    return fields[0] == b"Z" or (start_time is not None and int(fields[19]) != start_time)


@pytest.fixture
def process_gone() -> Callable[..., bool]:
    """``process_gone(pid, start_time=None)``: has that process stopped?"""
    return _process_gone
