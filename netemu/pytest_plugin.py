"""pytest plugin: emulated Kubernetes clusters as fixtures (registered through the pytest11 entry point).

    import pytest

    @pytest.mark.netemu(manifests=["k8s/app.yaml"], nodes=3)
    def test_app_answers(netemu_cluster):
        status, body = netemu_cluster.http_get(f"http://{netemu_cluster.pod_ip('app-*')}:8080/")
        assert status == 200

Fixtures:

- ``netemu_cluster`` (function scope): a fresh cluster per test, configured by the test's
  ``@pytest.mark.netemu(manifests=[...], nodes=1, backend="loopback", ready=True, timeout=30,
  **cluster_options)``. The cluster runs on its own event loop in a background thread, so the
  test may block freely (``requests``, ``subprocess``, ``time.sleep``) and needs no async
  plugin; the helpers are plain functions.
- ``netemu_session_cluster`` (session scope): one cluster shared by the whole session, the same
  kind of object, configured by the ``netemu_session_config`` fixture (override it in
  conftest.py to return the marker's keyword arguments as a dict).
- ``netemu_async_cluster`` (function scope, only with pytest-asyncio installed): the cluster on
  the test's own event loop, for ``async def`` tests; helpers are coroutines. Never block in
  such a test: the cluster's servers run on the same loop.

Manifest paths are relative to the test file. Each cluster gets a unique name and its own
address slot (``netemu.scenario.clusters``), so several clusters in one session — or in
parallel sessions — never collide; each is stopped when its test ends, also when it fails.
"""
from __future__ import annotations

import asyncio
import re
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, TypeVar

import pytest

from netemu.errors import NetemuError
from netemu.readiness import require_ready
from netemu.scenario import probes
from netemu.scenario.capabilities import cluster_capabilities
from netemu.scenario.clusters import start_cluster, unique_name
from netemu.scenario.refs import Resolver, dns_server

T = TypeVar("T")

MARKER_HELP = ("netemu(manifests=[...], nodes=1, backend='loopback', ready=True, timeout=30, **cluster_options): "
               "configure the netemu_cluster / netemu_async_cluster fixtures")


class HttpResponse(tuple):
    """``(status, body)`` — unpack it like a tuple; ``.headers`` holds the response headers."""

    headers: dict[str, str]

    def __new__(cls, status: int, body: str, headers: dict[str, str] | None = None) -> "HttpResponse":
        obj = super().__new__(cls, (status, body))
        obj.headers = dict(headers or {})
        return obj

    @property
    def status(self) -> int:
        return self[0]

    @property
    def body(self) -> str:
        return self[1]


_TRANSPORT_ERRORS: dict[str, type[OSError]] = {
    "refused": ConnectionRefusedError, "reset": ConnectionResetError, "timeout": TimeoutError,
    "closed": ConnectionAbortedError,
}


def _http_response(url: str, result: probes.HttpResult) -> HttpResponse:
    if result.outcome != "ok" or result.status is None:
        error = _TRANSPORT_ERRORS.get(result.outcome, ConnectionError)
        raise error(f"GET {url}: {result.outcome}: {result.stderr.strip() or f'curl exit {result.exit}'}")
    return HttpResponse(result.status, result.body, result.headers)


class _Tools:
    """What both handles compute the same way, on the cluster's loop."""

    @staticmethod
    async def http_get(cluster: Any, url: str, from_pod: str | None, namespace: str, headers: dict[str, str] | None,
                       timeout: float) -> HttpResponse:
        run: probes.Runner = probes.run_host
        source = None
        if from_pod is not None:
            pod = Resolver(cluster).pod(namespace, from_pod)
            source = pod.status.pod_ip

            async def run(argv: list[str], limit: float) -> tuple[int, str, str]:
                result = await cluster.exec(pod.metadata.name, argv, namespace=namespace, timeout=limit)
                return result.returncode, result.stdout, result.stderr
        settle = getattr(cluster, "settle", None)
        if settle is not None:
            await settle()
        result = await probes.curl(url, run, timeout=timeout, headers=headers, source_ip=source)
        return _http_response(url, result)

    @staticmethod
    async def lookup(cluster: Any, name: str, rtype: str, timeout: float) -> list[str]:
        if "cluster-dns" not in cluster_capabilities(cluster):
            raise NotImplementedError("cluster DNS is not available on this cluster yet (capability cluster-dns); "
                                      "use pod_ip / service_ip or the *_SERVICE_HOST variables meanwhile")
        code, out, err = await probes.run_host(probes.dig_argv(name, rtype, dns_server(cluster), timeout),
                                               timeout + 5)
        result = probes.parse_dig(code, out, err)
        if result.outcome != "ok":
            raise TimeoutError(f"no answer from the cluster DNS for {name}: {result.outcome}")
        return result.answers


class NetemuCluster:
    """A cluster running on its own event loop in a background thread, with blocking helpers.

    Every method may be called from any thread; work on the cluster happens on its loop.
    ``call(fn, ...)`` runs any function there and ``run(coroutine)`` any coroutine, for what the
    helpers do not cover (``.cluster`` is the ``netemu.Cluster`` itself).
    """

    def __init__(self, nodes: Any = 1, *, name: str, manifests: list[Any] | tuple[Any, ...] = (),
                 ready: bool = True, timeout: float = 30, **options: Any):
        self.loop = _new_loop()
        self._thread = threading.Thread(target=self._serve, name=f"netemu-{name}", daemon=True)
        self._thread.start()
        self.cluster: Any = None
        try:
            self.cluster = self.run(start_cluster(nodes, name=name, control_socket=False, **options))
            self.resolver = Resolver(self.cluster)
            if manifests:
                self.run(self.cluster.apply(*manifests))
                if ready:
                    self.run(require_ready(self.cluster, timeout))
        except BaseException:
            self.close()
            raise

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    # ------------------------------------------------------------------ plumbing

    def run(self, coroutine: Awaitable[T], timeout: float | None = None) -> T:
        """Run ``coroutine`` on the cluster's loop and return its result (or raise its error)."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(_as_coroutine(coroutine), self.loop)
        return future.result(timeout)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the cluster's loop thread (where its state lives)."""
        async def call() -> T:
            return fn(*args, **kwargs)
        return self.run(call())

    def close(self) -> None:
        """Stop the cluster, then the loop and its thread; safe to call twice."""
        if self.loop.is_closed():
            return
        try:
            if self.cluster is not None:
                self.run(self.cluster.stop(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=60)
            if not self._thread.is_alive():
                self.loop.close()

    def __enter__(self) -> "NetemuCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def name(self) -> str:
        return self.cluster.name

    @property
    def capabilities(self) -> frozenset[str]:
        return self.call(cluster_capabilities, self.cluster)

    # ------------------------------------------------------------------ the Cluster API, blocking

    def apply(self, *sources: Any, namespace: str | None = None) -> list[str]:
        return self.run(self.cluster.apply(*sources, namespace=namespace))

    def delete(self, kind: str, name: str, namespace: str = "default", *, wait: bool = False) -> str:
        return self.run(self.cluster.delete(kind, name, namespace, wait=wait))

    def scale(self, name: str, replicas: int, namespace: str = "default") -> str:
        return self.run(self.cluster.scale(name, replicas, namespace))

    def get(self, kind: str, name: str, namespace: str = "default") -> Any:
        return self.call(self.cluster.get, kind, name, namespace)

    def list(self, kind: str, namespace: str | None = None, selector: Any = None) -> list[Any]:
        return self.call(self.cluster.list, kind, namespace, selector)

    def pods(self, namespace: str | None = "default", selector: Any = None) -> list[Any]:
        return self.call(self.cluster.pods, namespace, selector)

    def wait_ready(self, timeout: float = 30) -> None:
        self.run(require_ready(self.cluster, timeout))

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
        """Wait until ``predicate()`` (called on the cluster's loop) is true."""
        self.run(self.cluster.wait_for(predicate, timeout, what))

    def exec(self, pod: str, argv: list[str], *, container: str | None = None, namespace: str = "default",
             input: bytes | None = None, timeout: float = 30) -> Any:
        """Run ``argv`` in a pod (a glob such as ``web-*`` picks the oldest match): ``.returncode``,
        ``.stdout``, ``.stderr``."""
        name = self.call(lambda: self.resolver.pod(namespace, pod).metadata.name)
        return self.run(self.cluster.exec(name, argv, container=container, namespace=namespace, input=input,
                                          timeout=timeout))

    def logs(self, pod: str, container: str | None = None, namespace: str = "default") -> str:
        name = self.call(lambda: self.resolver.pod(namespace, pod).metadata.name)
        return self.call(self.cluster.logs, name, container, namespace)

    # ------------------------------------------------------------------ addresses

    def pod_ip(self, pod: str, namespace: str = "default") -> str:
        """The IP of a pod (a glob such as ``web-*`` picks the oldest live match)."""
        return self.ref(f"pod.{'' if namespace == 'default' else namespace + '/'}{pod}.ip")

    def service_ip(self, name: str, namespace: str = "default") -> str:
        return self.call(self.cluster.service_ip, name, namespace)

    def node_ip(self, name: str) -> str:
        return self.call(self.cluster.node_ip, name)

    def ref(self, reference: str) -> Any:
        """Any scenario reference: ``svc.web.nodePort``, ``svc.web.ingress``, ``pods.app=web.ips`` …"""
        return self.call(self.resolver.value, reference.strip().removeprefix("{{").removesuffix("}}").strip())

    # ------------------------------------------------------------------ traffic

    def http_get(self, url: str, *, from_pod: str | None = None, namespace: str = "default",
                 headers: dict[str, str] | None = None, timeout: float = 5) -> HttpResponse:
        """GET ``url`` with the real curl: ``(status, body)``; from a pod, with its IP as the source.
        A connection that fails raises ConnectionRefusedError, ConnectionResetError or TimeoutError."""
        return self.run(_Tools.http_get(self.cluster, url, from_pod, namespace, headers, timeout))

    def lookup(self, name: str, type: str = "A", *, timeout: float = 5) -> list[str]:
        """DNS answers for ``name`` from the cluster DNS (NotImplementedError until it exists)."""
        return self.run(_Tools.lookup(self.cluster, name, type, timeout))


class AsyncNetemuCluster:
    """A started ``netemu.Cluster`` on the test's own loop, plus coroutine helpers; anything else
    is the Cluster's own attribute (``await c.apply(...)``, ``c.get(...)``)."""

    def __init__(self, cluster: Any):
        self.cluster = cluster
        self.resolver = Resolver(cluster)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cluster, name)

    @property
    def capabilities(self) -> frozenset[str]:
        return cluster_capabilities(self.cluster)

    def pod_ip(self, pod: str, namespace: str = "default") -> str:
        return self.ref(f"pod.{'' if namespace == 'default' else namespace + '/'}{pod}.ip")

    def ref(self, reference: str) -> Any:
        return self.resolver.value(reference.strip().removeprefix("{{").removesuffix("}}").strip())

    async def exec(self, pod: str, argv: list[str], **kwargs: Any) -> Any:
        name = self.resolver.pod(kwargs.get("namespace", "default"), pod).metadata.name
        return await self.cluster.exec(name, argv, **kwargs)

    async def http_get(self, url: str, *, from_pod: str | None = None, namespace: str = "default",
                       headers: dict[str, str] | None = None, timeout: float = 5) -> HttpResponse:
        return await _Tools.http_get(self.cluster, url, from_pod, namespace, headers, timeout)

    async def lookup(self, name: str, type: str = "A", *, timeout: float = 5) -> list[str]:
        return await _Tools.lookup(self.cluster, name, type, timeout)


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


# --------------------------------------------------------------------------- configuration


def _check_options(options: dict[str, Any]) -> None:
    """A marker's (or netemu_session_config's) keywords, checked before any cluster starts: an
    InvalidError naming the keyword and what it takes, not a TypeError from deep inside."""
    import dataclasses
    import math

    from netemu.config import ClusterConfig
    from netemu.errors import InvalidError
    known = {"manifests", "nodes", "ready", "timeout", "kube_api"} | {
        f.name for f in dataclasses.fields(ClusterConfig) if f.name not in ("name", "nodes")}
    where = "@pytest.mark.netemu"
    for key in options:
        if key not in known:
            raise InvalidError(f"{where}: unknown keyword {key}= (known: {', '.join(sorted(known))})")
    nodes = options.get("nodes", 1)
    if not (type(nodes) is int or (isinstance(nodes, (list, tuple)) and all(isinstance(n, str) for n in nodes))):
        raise InvalidError(f"{where}: nodes={nodes!r}: expected a number of nodes or a list of node names")
    timeout = options.get("timeout", 30)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 <= timeout < math.inf:
        raise InvalidError(f"{where}: timeout={timeout!r}: expected a number of seconds, 0 or more")
    if not isinstance(options.get("ready", True), bool):
        raise InvalidError(f"{where}: ready={options['ready']!r}: expected True or False")
    manifests = options.get("manifests", ())
    if not isinstance(manifests, (str, Path, dict, list, tuple)):
        raise InvalidError(f"{where}: manifests={manifests!r}: expected a path, inline YAML, a dict or a list of them")


def _options(kwargs: dict[str, Any], base: Path) -> dict[str, Any]:
    """Marker keyword arguments → NetemuCluster keyword arguments (paths made absolute)."""
    options = dict(kwargs)
    _check_options(options)
    manifests = options.get("manifests", ())
    if isinstance(manifests, (str, Path, dict)):
        manifests = [manifests]
    resolved = []
    for m in manifests:
        if isinstance(m, Path) or (isinstance(m, str) and "\n" not in m):  # a path, not inline YAML
            m = Path(m) if Path(m).is_absolute() else base / m
        resolved.append(m)
    options["manifests"] = resolved
    return options


def _marker_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker("netemu")
    kwargs: dict[str, Any] = {}
    if marker is not None:
        if marker.args:
            raise pytest.UsageError("@pytest.mark.netemu takes keyword arguments only, e.g. netemu(nodes=3)")
        kwargs = dict(marker.kwargs)
    return _options(kwargs, Path(str(request.node.fspath)).parent)


def _name_for(request: pytest.FixtureRequest) -> str:
    return unique_name(re.sub(r"\[.*", "", request.node.name).removeprefix("test_") or "test", limit=32)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)


@pytest.fixture
def netemu_cluster(request: pytest.FixtureRequest) -> Iterator[NetemuCluster]:
    """A fresh cluster for this test, on a background thread; see the module docstring."""
    try:
        options = _marker_options(request)
        nodes = options.pop("nodes", 1)
        handle = NetemuCluster(nodes, name=_name_for(request), **options)
    except NetemuError as exc:
        pytest.fail(f"netemu: the cluster did not start: {exc}", pytrace=False)
    try:
        yield handle
    finally:
        handle.close()


@pytest.fixture(scope="session")
def netemu_session_config() -> dict[str, Any]:
    """Options of ``netemu_session_cluster`` (the marker's keywords); override in conftest.py.
    Relative manifest paths are taken from the rootdir."""
    return {}


@pytest.fixture(scope="session")
def netemu_session_cluster(request: pytest.FixtureRequest, netemu_session_config: dict[str, Any]
                           ) -> Iterator[NetemuCluster]:
    """One cluster for the whole session, on a background thread."""
    try:
        options = _options(dict(netemu_session_config), Path(str(request.config.rootpath)))
        nodes = options.pop("nodes", 1)
        handle = NetemuCluster(nodes, name=unique_name("session"), **options)
    except NetemuError as exc:
        pytest.fail(f"netemu: the session cluster did not start: {exc}", pytrace=False)
    try:
        yield handle
    finally:
        handle.close()


try:
    import pytest_asyncio
except ImportError:  # the async fixture needs pytest-asyncio; the others do not
    pass
else:
    @pytest_asyncio.fixture
    async def netemu_async_cluster(request: pytest.FixtureRequest) -> Any:
        """The cluster on the test's own event loop (``async def`` tests; never block in them)."""
        try:
            options = _marker_options(request)
            nodes = options.pop("nodes", 1)
            manifests, ready, timeout = options.pop("manifests"), options.pop("ready", True), options.pop("timeout", 30)
            cluster = await start_cluster(nodes, name=_name_for(request), control_socket=False, **options)
        except NetemuError as exc:
            pytest.fail(f"netemu: the cluster did not start: {exc}", pytrace=False)
        try:
            if manifests:
                try:
                    await cluster.apply(*manifests)
                    if ready:
                        await require_ready(cluster, timeout)
                except NetemuError as exc:
                    pytest.fail(f"netemu: the cluster did not start: {exc}", pytrace=False)
            yield AsyncNetemuCluster(cluster)
        finally:
            await cluster.stop()
