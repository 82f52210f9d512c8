"""``pytest --netemu-kubeconfig FILE``: the pytest plugin's fixtures on a cluster reached by its API.

The same switch as ``netemu run --kubeconfig``, over the same pieces: ``RemoteTarget`` is the
session's link to the cluster (one ``KubeTarget`` and one ``TargetProfile``, which finds out once
what the cluster offers), and ``RemoteNetemuCluster`` is the fixtures' handle with the helpers of
``NetemuCluster`` (apply, get/list, waits, exec, curl, addresses), backed by a ``RemoteCluster``:
each handle works in a namespace of its own, ``netemu-<test>-<5 chars>``, labelled
``netemu.dev/scenario`` (so that ``netemu run --kubeconfig … --cleanup`` finds what a killed
session left) and deleted when the handle closes. Traffic "from the host" starts in the
namespace's client pod (agnhost), through ``pods/exec``.

Helpers that need what the cluster lacks (impair, partition, kill, node stop/start, capture,
or a marker's ``requires=``) skip the test with the runner's reason. This module does not import
pytest: the plugin (``netemu.pytest_plugin``) asks ``RemoteTarget.unmet`` and skips.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from netemu.config import ClusterConfig
from netemu.pytest_plugin import NetemuCluster
from netemu.scenario.capabilities import missing
from netemu.scenario.refs import Resolver
from netemu.scenario.remote import (
    DEFAULT_CLIENT_IMAGE, DEFAULT_WAIT_TIMEOUT, RemoteCluster, namespace_name, scenario_slug,
)
from netemu.scenario.remote_api import KubeTarget
from netemu.scenario.remote_runner import TargetProfile
from netemu.scenario.remote_traffic import RemoteContext
from netemu.scenario.steps import Origin

# Keywords of @pytest.mark.netemu that choose a netemu cluster, meaningless on a given one.
NETEMU_ONLY_OPTIONS = {"backend": "it names a netemu backend"}


class RemoteTarget:
    """The cluster a pytest session drives (``--netemu-kubeconfig``), and what it offers."""

    def __init__(self, kubeconfig: str, context: str | None = None, *, client_image: str = DEFAULT_CLIENT_IMAGE,
                 wait_timeout: float = DEFAULT_WAIT_TIMEOUT):
        self.target = KubeTarget(kubeconfig, context)
        self.profile = TargetProfile(self.target, client_image=client_image, wait_timeout=wait_timeout)

    def close(self) -> None:
        self.target.close()

    async def unmet(self, requires: list[str], nodes: Any, options: dict[str, Any]) -> tuple[frozenset[str], str]:
        """(what the cluster offers for ``requires``, why a test asking this cannot run here or "")."""
        caps = await self.profile.capabilities(list(requires))
        lacking = missing(requires, caps)
        if lacking:
            return caps, self.profile.explain(lacking)
        for key, why in NETEMU_ONLY_OPTIONS.items():
            if key in options:
                return caps, f"@pytest.mark.netemu({key}=...): {why}; the cluster is given (--netemu-kubeconfig)"
        have = await self.profile.node_names()
        wanted = ClusterConfig.node_names(nodes)
        if len(have) < len(wanted):
            return caps, f"needs {len(wanted)} nodes (nodes={nodes!r}), and this cluster has {len(have)}"
        if not isinstance(nodes, int):
            absent = [n for n in wanted if n not in have]
            if absent:
                return caps, (f"names nodes this cluster lacks: {', '.join(absent)} "
                              f"(its nodes: {', '.join(sorted(have))})")
        return caps, ""

    def cluster_for(self, name: str, capabilities: frozenset[str]) -> RemoteCluster:
        """A handle's namespace on the cluster (not created yet: ``open()`` it)."""
        slug = scenario_slug(name)
        return RemoteCluster(self.target, namespace_name(slug), slug, capabilities=capabilities,
                             client_image=self.profile.client_image, wait_timeout=self.profile.wait_timeout,
                             dns_ip=self.profile.dns_ip)


def host_runner(cluster: RemoteCluster) -> Any:
    """Where "from the host" traffic starts on that cluster: the namespace's client pod."""
    return RemoteContext(cluster, Path.cwd()).runner(Origin("host"))


class RemoteNetemuCluster(NetemuCluster):
    """``NetemuCluster``'s helpers in a namespace of their own on a cluster reached by its API.

    ``.cluster`` is the ``RemoteCluster``; reads (``get``, ``list``, ``pods``, ``pod_ip``, ``ref``)
    LIST the cluster again first, so they see what changed since; waits default to the session's
    ``--netemu-wait-timeout`` (real clusters pull images), at least as long as the marker's.
    """

    def __init__(self, remote: RemoteTarget, capabilities: frozenset[str], *, name: str,
                 manifests: list[Any] | tuple[Any, ...] = (), ready: bool = True, timeout: float = 30):
        self._start_loop(name)
        profile = remote.profile
        self.remote = remote
        self.wait_timeout = profile.wait_timeout
        self.close_timeout = profile.wait_timeout + 30
        self.cluster = remote.cluster_for(name, capabilities)
        self.resolver = Resolver(self.cluster)
        self.host_run = host_runner(self.cluster)
        try:
            self.run(self.cluster.open())
            if manifests:
                self.run(self.cluster.apply(*manifests))
                if ready:
                    self.run(self.cluster.wait_ready(max(timeout, self.wait_timeout)))
        except BaseException:
            self.close()
            raise

    async def _stop_cluster(self) -> None:
        await self.cluster.close()

    @property
    def namespace(self) -> str:
        return self.cluster.namespace

    @property
    def capabilities(self) -> frozenset[str]:
        return self.cluster.capabilities

    def explain(self, lacking: list[str]) -> str:
        return self.remote.profile.explain(lacking)

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` on the loop, after a fresh LIST of what the handle reads."""
        async def call() -> Any:
            await self.cluster.refresh()
            return fn(*args, **kwargs)
        return self.run(call())

    def logs(self, pod: str, container: str | None = None, namespace: str = "default") -> str:
        name = self.call(lambda: self.resolver.pod(namespace, pod).metadata.name)
        return self.run(self.cluster.logs(name, container, namespace))
