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

The handles offer netemu's faults too (``impair``, ``partition``/``heal``, ``kill``,
``stop_node``/``start_node``, ``capture``); where the cluster lacks one, the helper skips the
test with the reason, as the marker's ``requires=[...]`` (a scenario's ``requires:``) does.

``pytest --netemu-kubeconfig=FILE [--netemu-context NAME]`` (or ``NETEMU_KUBECONFIG``) runs the
same fixtures on the cluster that kubeconfig names, through its API only
(``netemu.pytest_remote``): each handle is a labelled namespace there, deleted afterwards.
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
from netemu.scenario.capabilities import cluster_capabilities, explain, missing
from netemu.scenario.clusters import start_cluster, unique_name
from netemu.scenario.refs import Resolver, dns_server

T = TypeVar("T")

MARKER_HELP = ("netemu(manifests=[...], nodes=1, backend='loopback', ready=True, timeout=30, requires=[...], "
               "**cluster_options): configure the netemu_cluster / netemu_async_cluster fixtures")


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
                       timeout: float, host_run: probes.Runner = probes.run_host) -> HttpResponse:
        """GET ``url`` with curl: from a pod (exec, its IP as the source), else with ``host_run``
        (this host's curl; on a cluster reached by its API, the client pod's)."""
        run, source = host_run, None
        if from_pod is not None:
            pod = Resolver(cluster).pod(namespace, from_pod)
            source = pod.status.pod_ip

            async def in_pod(argv: list[str], limit: float) -> tuple[int, str, str]:
                result = await cluster.exec(pod.metadata.name, argv, namespace=namespace, timeout=limit)
                return result.returncode, result.stdout, result.stderr
            run = in_pod
        settle = getattr(cluster, "settle", None)
        if settle is not None:
            await settle()
        result = await probes.curl(url, run, timeout=timeout, headers=headers, source_ip=source)
        return _http_response(url, result)

    @staticmethod
    async def lookup(cluster: Any, name: str, rtype: str, timeout: float,
                     host_run: probes.Runner = probes.run_host) -> list[str]:
        if "cluster-dns" not in cluster_capabilities(cluster):
            raise NotImplementedError("cluster DNS is not available on this cluster yet (capability cluster-dns); "
                                      "use pod_ip / service_ip or the *_SERVICE_HOST variables meanwhile")
        code, out, err = await host_run(probes.dig_argv(name, rtype, dns_server(cluster), timeout), timeout + 5)
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

    host_run: probes.Runner = staticmethod(probes.run_host)   # where "from the host" traffic starts
    wait_timeout: float = 30                                  # how long waits take unless told
    close_timeout: float = 60

    def __init__(self, nodes: Any = 1, *, name: str, manifests: list[Any] | tuple[Any, ...] = (),
                 ready: bool = True, timeout: float = 30, **options: Any):
        self._start_loop(name)
        try:
            self.cluster = self.run(start_cluster(nodes, name=name, **options))
            self.resolver = Resolver(self.cluster)
            if manifests:
                self.run(self.cluster.apply(*manifests))
                if ready:
                    self.run(require_ready(self.cluster, timeout))
        except BaseException:
            self.close()
            raise

    def _start_loop(self, name: str) -> None:
        self.loop = _new_loop()
        self._thread = threading.Thread(target=self._serve, name=f"netemu-{name}", daemon=True)
        self._thread.start()
        self.cluster: Any = None

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
                self.run(self._stop_cluster(), timeout=self.close_timeout)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=60)
            if not self._thread.is_alive():
                self.loop.close()

    async def _stop_cluster(self) -> None:
        await self.cluster.stop()

    def __enter__(self) -> "NetemuCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def name(self) -> str:
        return self.cluster.name

    @property
    def namespace(self) -> str:
        """Where objects that name no namespace go (and what ``namespace="default"`` means)."""
        return "default"

    @property
    def capabilities(self) -> frozenset[str]:
        return self.call(cluster_capabilities, self.cluster)

    def explain(self, lacking: list[str]) -> str:
        return explain(lacking)

    def require(self, *capabilities: str) -> None:
        """Skip the test (pytest.skip, with the reason) unless the cluster offers ``capabilities``
        (the names of a scenario's ``requires:``)."""
        lacking = missing(capabilities, self.capabilities)
        if lacking:
            pytest.skip(self.explain(lacking))

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

    def wait_ready(self, timeout: float | None = None) -> None:
        """Until every pod is ready; fails at once when one never will be (ErrImagePull …)."""
        self.run(self.cluster.wait_ready(self._limit(timeout)))

    def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None, what: str = "condition") -> None:
        """Wait until ``predicate()`` (called on the cluster's loop) is true."""
        self.run(self.cluster.wait_for(predicate, self._limit(timeout), what))

    def wait_rollout(self, deployment: str, namespace: str = "default", timeout: float | None = None) -> None:
        """Until the deployment has all its replicas updated and available (``kubectl rollout status``)."""
        self._wait({"for": "rollout", "deployment": deployment, "namespace": namespace}, timeout)

    def wait_endpoints(self, service: str, count: int | None = None, namespace: str = "default",
                       timeout: float | None = None) -> None:
        """Until the Service has ``count`` ready endpoints (any, without ``count``)."""
        self._wait({"for": "endpoints", "service": service, "count": count, "namespace": namespace}, timeout)

    def _limit(self, timeout: float | None) -> float:
        return self.wait_timeout if timeout is None else timeout

    def _wait(self, spec: dict[str, Any], timeout: float | None) -> None:
        """A scenario's ``wait:`` step (its check and its description of what is pending)."""
        from netemu.errors import WaitTimeoutError
        from netemu.scenario.step_objects import Wait
        from netemu.scenario.steps import Context
        limit = self._limit(timeout)
        check, describe = Wait()._check(Context(self.cluster, Path.cwd()), spec)
        try:
            self.run(self.cluster.wait_for(check, limit, "a condition"))
        except WaitTimeoutError:
            raise WaitTimeoutError(f"timed out after {limit:g}s waiting for {self.call(describe)}") from None

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
        return self.run(_Tools.http_get(self.cluster, url, from_pod, namespace, headers, timeout, self.host_run))

    def lookup(self, name: str, type: str = "A", *, timeout: float = 5) -> list[str]:
        """DNS answers for ``name`` from the cluster DNS (NotImplementedError until it exists)."""
        return self.run(_Tools.lookup(self.cluster, name, type, timeout, self.host_run))

    # ------------------------------------------------------------------ faults (netemu's own: skip elsewhere)

    def impair(self, **settings: Any) -> str:
        """``Cluster.impair`` (``service=``/``node=``/``link=``, ``delay=`` …); skips the test
        where the cluster cannot impair."""
        self.require("impair")
        return self.call(lambda: self.cluster.impair(**settings))

    def partition(self, groups: Any) -> str:
        self.require("partition")
        return self.call(self.cluster.partition, groups)

    def heal(self) -> str:
        self.require("partition")
        return self.call(self.cluster.heal)

    def kill(self, pod: str, container: str | None = None, namespace: str = "default", signal: str = "KILL") -> None:
        """Kill a container's process (a glob such as ``web-*`` picks the oldest pod)."""
        self.require("kill")
        name = self.call(lambda: self.resolver.pod(namespace, pod).metadata.name)
        self.run(self.cluster.kill_container(name, container, namespace, signal))

    def stop_node(self, name: str) -> None:
        self.require("node-lifecycle")
        self.run(self.cluster.stop_node(name))

    def start_node(self, name: str) -> None:
        self.require("node-lifecycle")
        self.run(self.cluster.start_node(name))

    def capture(self, path: Any, *, duration: float = 0.0, **target: Any) -> list[str]:
        """``Cluster.capture``: a pcapng file and its flow summary (netns backend)."""
        self.require("capture")
        return self.run(self.cluster.capture(path, duration=duration, **target))


class AsyncNetemuCluster:
    """A started ``netemu.Cluster`` on the test's own loop, plus coroutine helpers; anything else
    is the Cluster's own attribute (``await c.apply(...)``, ``c.get(...)``)."""

    def __init__(self, cluster: Any, host_run: probes.Runner = probes.run_host):
        self.cluster = cluster
        self.resolver = Resolver(cluster)
        self.host_run = host_run

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
        return await _Tools.http_get(self.cluster, url, from_pod, namespace, headers, timeout, self.host_run)

    async def lookup(self, name: str, type: str = "A", *, timeout: float = 5) -> list[str]:
        return await _Tools.lookup(self.cluster, name, type, timeout, self.host_run)


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _run_apart(coroutine: Awaitable[T]) -> T:
    """Run ``coroutine`` to its end on a loop of its own, leaving the thread's event loop alone."""
    loop = _new_loop()
    try:
        return loop.run_until_complete(_as_coroutine(coroutine))
    finally:
        loop.close()


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
    known = {"manifests", "nodes", "ready", "timeout", "kube_api", "requires"} | {
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
    requires = options.get("requires", ())
    if not (isinstance(requires, (list, tuple)) and all(isinstance(r, str) for r in requires)):
        raise InvalidError(f"{where}: requires={requires!r}: expected a list of capabilities, such as ['impair']")


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


def _test_name(request: pytest.FixtureRequest) -> str:
    return re.sub(r"\[.*", "", request.node.name).removeprefix("test_") or "test"


def _name_for(request: pytest.FixtureRequest) -> str:
    return unique_name(_test_name(request), limit=32)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("netemu")
    group.addoption("--netemu-kubeconfig", metavar="FILE", default=None,
                    help="run the netemu fixtures on the cluster this kubeconfig names, through its API, each in "
                         "a namespace of its own (default: $NETEMU_KUBECONFIG; without either, an emulated cluster)")
    group.addoption("--netemu-context", metavar="NAME", default=None, help="the kubeconfig context to use")
    group.addoption("--netemu-client-image", metavar="IMAGE", default=None,
                    help="with --netemu-kubeconfig: the image of the client pod that traffic from the host starts in")
    group.addoption("--netemu-wait-timeout", metavar="SECONDS", type=float, default=None,
                    help="with --netemu-kubeconfig: how long waits take at least (default 120)")


_REMOTE = pytest.StashKey[Any]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    import os
    kubeconfig = config.getoption("netemu_kubeconfig", None) or os.environ.get("NETEMU_KUBECONFIG") or None
    if kubeconfig is None:
        return
    from netemu.pytest_remote import RemoteTarget
    from netemu.scenario.remote import DEFAULT_CLIENT_IMAGE, DEFAULT_WAIT_TIMEOUT
    wait_timeout = config.getoption("netemu_wait_timeout", None)
    if wait_timeout is not None and not 0 < wait_timeout < float("inf"):
        raise pytest.UsageError(f"--netemu-wait-timeout {wait_timeout:g}: must be a number of seconds above 0")
    try:
        config.stash[_REMOTE] = RemoteTarget(kubeconfig, config.getoption("netemu_context", None),
                                             client_image=config.getoption("netemu_client_image", None)
                                             or DEFAULT_CLIENT_IMAGE,
                                             wait_timeout=wait_timeout or DEFAULT_WAIT_TIMEOUT)
    except NetemuError as exc:
        raise pytest.UsageError(f"netemu: {exc}") from None


def pytest_unconfigure(config: pytest.Config) -> None:
    remote = config.stash.get(_REMOTE, None)
    if remote is not None:
        remote.close()


def _open(config: pytest.Config, options: dict[str, Any], name: str, what: str) -> NetemuCluster:
    """A handle for ``options`` (the marker's): an emulated cluster named ``unique_name(name)``, or
    with --netemu-kubeconfig a namespace ``netemu-<name>-<5 chars>`` on that cluster; the test is
    skipped, with the reason, when it requires what the cluster lacks."""
    options = dict(options)
    nodes, requires = options.pop("nodes", 1), list(options.pop("requires", ()))
    remote = config.stash.get(_REMOTE, None)
    try:
        if remote is None:
            handle = NetemuCluster(nodes, name=unique_name(name, limit=32), **options)
        else:
            from netemu.pytest_remote import RemoteNetemuCluster
            capabilities, why = _run_apart(remote.unmet(requires, nodes, options))
            if why:
                pytest.skip(why)
            what = f"{what} (a namespace on {remote.target.host})"
            handle = RemoteNetemuCluster(remote, capabilities, name=name, manifests=options.get("manifests", ()),
                                         ready=options.get("ready", True), timeout=options.get("timeout", 30))
    except NetemuError as exc:
        pytest.fail(f"netemu: {what} did not start: {exc}", pytrace=False)
    try:
        handle.require(*requires)
    except BaseException:
        handle.close()
        raise
    return handle


@pytest.fixture
def netemu_cluster(request: pytest.FixtureRequest) -> Iterator[NetemuCluster]:
    """A fresh cluster for this test, on a background thread; see the module docstring."""
    try:
        options = _marker_options(request)
    except NetemuError as exc:
        pytest.fail(f"netemu: the cluster did not start: {exc}", pytrace=False)
    handle = _open(request.config, options, _test_name(request), "the cluster")
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
    except NetemuError as exc:
        pytest.fail(f"netemu: the session cluster did not start: {exc}", pytrace=False)
    handle = _open(request.config, options, "session", "the session cluster")
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
        except NetemuError as exc:
            pytest.fail(f"netemu: the cluster did not start: {exc}", pytrace=False)
        remote = request.config.stash.get(_REMOTE, None)
        if remote is not None:
            async for handle in _remote_async_cluster(remote, options, _test_name(request)):
                yield handle
            return
        try:
            nodes, requires = options.pop("nodes", 1), list(options.pop("requires", ()))
            manifests, ready, timeout = options.pop("manifests"), options.pop("ready", True), options.pop("timeout", 30)
            cluster = await start_cluster(nodes, name=_name_for(request), **options)
        except NetemuError as exc:
            pytest.fail(f"netemu: the cluster did not start: {exc}", pytrace=False)
        try:
            lacking = missing(requires, cluster_capabilities(cluster))
            if lacking:
                pytest.skip(explain(lacking))
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

    async def _remote_async_cluster(remote: Any, options: dict[str, Any], name: str) -> Any:
        """``netemu_async_cluster`` with --netemu-kubeconfig: a namespace on that cluster, used from
        the test's loop (its reads are as fresh as the last change or ``await c.settle()``)."""
        from netemu.pytest_remote import host_runner
        capabilities, why = await remote.unmet(list(options.get("requires", ())), options.get("nodes", 1), options)
        if why:
            pytest.skip(why)
        cluster = remote.cluster_for(name, capabilities)
        try:
            try:
                await cluster.open()
                if options["manifests"]:
                    await cluster.apply(*options["manifests"])
                    if options.get("ready", True):
                        await cluster.wait_ready(max(options.get("timeout", 30), cluster.wait_timeout))
            except NetemuError as exc:
                pytest.fail(f"netemu: the cluster (a namespace on {remote.target.host}) did not start: {exc}",
                            pytrace=False)
            yield AsyncNetemuCluster(cluster, host_runner(cluster))
        finally:
            await cluster.close()
