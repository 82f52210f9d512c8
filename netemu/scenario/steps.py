"""What every step kind shares: the kind protocol, the registry, and the context a step runs in.

A ``StepKind`` reads its part of the file (``parse``: once at load time with references left as
they are, once at run time with their values filled in) and runs (``run``), adding what it saw
to ``ctx.output`` and raising ``AssertionFailed`` when an expectation does not hold. Kinds live
in ``step_objects`` (API objects), ``step_traffic`` (curl, exec, connect, DNS, background loads)
and ``step_chaos`` (failures injected into the cluster).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NoReturn

from netemu.errors import AssertionFailed, NetemuError, NotFoundError
from netemu.scenario.fields import Fields, Problems, describe, is_templated, join, parse_duration
from netemu.scenario.matchers import Matcher, compile_matcher
from netemu.scenario.probes import Runner, run_host
from netemu.scenario.refs import Resolver

COMMON = ("name", "timeout", "expect")
INNER = ("timeout", "expect")


@dataclass
class Parse:
    """One step's text, for a kind to read."""

    value: Any
    expect: Any
    has_expect: bool
    path: str                 # where the value sits: steps[3].curl
    expect_path: str          # where expect sits: steps[3].expect or steps[3].curl.expect
    problems: Problems
    templated: bool
    base_dir: Path

    def fields(self, data: Any = None, path: str | None = None) -> Fields:
        reader = Fields(self.value if data is None else data, self.path if path is None else path, self.problems,
                        templated=self.templated)
        reader.suggestible.update(COMMON)
        return reader

    def expect_fields(self) -> Fields:
        return Fields(self.expect if self.has_expect else {}, self.expect_path, self.problems,
                      templated=self.templated)

    def matcher(self, value: Any, path: str) -> Matcher:
        return compile_matcher(value, path, self.problems, templated=self.templated)

    def no_expect(self, kind: str) -> None:
        if self.has_expect:
            self.problems.add(self.expect_path, f"{kind} takes no expect (its fields are the expectation)")


class StepKind:
    """One kind of step; subclasses set ``name`` and implement ``parse`` and ``run``."""

    name: ClassVar[str] = ""
    default_timeout: ClassVar[float] = 10.0
    summary: ClassVar[str] = ""

    def lifts(self, value: Any) -> tuple[str, ...]:
        """Which of timeout/expect may sit inside this step's own mapping as well as beside it (name:
        always goes beside: inside, it is often the name of a thing, as in dig or delete)."""
        return INNER if isinstance(value, dict) else ()

    def parse(self, p: Parse) -> Any:
        raise NotImplementedError

    async def run(self, ctx: "Context", spec: Any) -> None:
        raise NotImplementedError

    def title(self, spec: Any) -> str:
        return self.name


KINDS: dict[str, StepKind] = {}


@dataclass
class StepText:
    """A step as written, its common fields separated from the kind's own."""

    kind: str
    value: Any
    path: str
    name: Any = None
    timeout: Any = None
    expect: Any = None
    has_expect: bool = False
    expect_path: str = ""


def split_common(kind: StepKind, value: Any, outer: dict[str, Any], step_path: str, problems: Problems) -> StepText:
    """Take name/timeout/expect from the step (``outer``) or from inside the kind's own mapping."""
    kind_path = join(step_path, kind.name)
    found = {key: (outer[key], join(step_path, key)) for key in COMMON if key in outer}
    liftable = kind.lifts(value)
    if liftable:
        inner = {k: v for k, v in value.items() if k in liftable}
        for key, v in inner.items():
            if key in found:
                problems.add(join(kind_path, key), f"given twice (also at {found[key][1]})")
            else:
                found[key] = (v, join(kind_path, key))
        value = {k: v for k, v in value.items() if k not in liftable}
    text = StepText(kind.name, value, kind_path)
    if "name" in found:
        text.name = found["name"][0]
        if not isinstance(text.name, str) or not text.name.strip():
            problems.add(found["name"][1], f"expected a string, got {describe(text.name)}")
            text.name = None
    if "timeout" in found:
        text.timeout = found["timeout"][0]
        if not is_templated(text.timeout):
            try:
                text.timeout = parse_duration(text.timeout)
            except ValueError as exc:
                problems.add(found["timeout"][1], str(exc))
                text.timeout = None
    if "expect" in found:
        text.expect, text.expect_path, text.has_expect = found["expect"][0], found["expect"][1], True
    else:
        text.expect_path = join(kind_path, "expect")
    return text


def register(cls: type[StepKind]) -> type[StepKind]:
    KINDS[cls.name] = cls()
    return cls


def kinds() -> dict[str, StepKind]:
    """Every step kind by name (importing the modules that define them)."""
    from netemu.scenario import step_chaos, step_objects, step_traffic  # noqa: F401 - they register
    return KINDS


@dataclass
class Origin:
    """Where traffic starts: the host, a pod (its IP as source), or a node (its IP)."""

    kind: str                      # host | pod | node
    name: str = ""
    namespace: str = "default"
    ip: str | None = None

    def __str__(self) -> str:
        return "host" if self.kind == "host" else f"{self.kind} {self.name}"


@dataclass
class Context:
    """A running scenario as its steps see it."""

    cluster: Any
    base_dir: Path
    timeout: float = 10.0
    capabilities: frozenset[str] = frozenset()
    output: list[str] = field(default_factory=list)
    backgrounds: dict[str, Any] = field(default_factory=dict)
    captures: dict[str, Any] = field(default_factory=dict)   # name -> a running Capture
    resolver: Resolver = field(init=False)

    def __post_init__(self) -> None:
        self.resolver = Resolver(self.cluster)

    @property
    def backend(self) -> str:
        return self.cluster.config.backend

    def default_timeout(self, kind: StepKind) -> float:
        """A step's timeout when the scenario gives none (a remote cluster waits longer)."""
        return kind.default_timeout

    async def timeout_details(self) -> list[str]:
        """What to add when a wait times out (a remote cluster's Warning events)."""
        return []

    async def settle(self) -> None:
        """Before traffic: let the cluster bring its listeners in line with the latest changes,
        when it offers a way (``Cluster.settle()``), so a step right after a change sees it."""
        settle = getattr(self.cluster, "settle", None)
        if settle is not None:
            result = settle()
            if asyncio.iscoroutine(result):
                await result

    def log(self, text: str) -> None:
        if text:
            self.output.append(text.rstrip("\n"))

    def fail(self, message: str) -> NoReturn:
        raise AssertionFailed(message)

    # ------------------------------------------------------------------ pods and origins

    def pod(self, pattern: str, namespace: str = "default") -> Any:
        """The pod named ``pattern`` (a glob picks the oldest live match)."""
        try:
            return self.resolver.pod(namespace, pattern)
        except LookupError as exc:
            raise NotFoundError(exc.args[0]) from None

    def origin(self, where: str | None, namespace: str = "default") -> Origin:
        """``host`` (default), ``POD``, ``pod/POD`` or ``node/NODE``."""
        if where in (None, "", "host"):
            return Origin("host")
        if where.startswith("node/"):
            name = where[5:]
            names = sorted(n.metadata.name for n in self.cluster.list("node"))
            if name not in names:
                raise NotFoundError(f'node "{name}" not found (nodes: {", ".join(names)})')
            return Origin("node", name, ip=self.cluster.node_ip(name))
        name = where[4:] if where.startswith("pod/") else where
        pod = self.pod(name, namespace)
        if not pod.status.pod_ip:
            raise AssertionFailed(f"pod {pod.metadata.name} has no IP yet (phase {pod.status.phase or 'Pending'})")
        return Origin("pod", pod.metadata.name, pod.metadata.namespace, pod.status.pod_ip)

    def runner(self, origin: Origin, container: str | None = None, target: str | None = None) -> Runner:
        """Run a tool on the host, or inside a pod (its environment and network) through exec.

        On a backend whose pods live in namespaces of their own, netemu's thread is sealed off
        from the host's network: traffic "from the host" to a 127.x address (node and
        load-balancer addresses, which netemu maps) starts in the host's namespace; to a cluster
        address, and traffic from a node, it starts inside a node's namespace (the first node's
        for the host)."""
        if origin.kind != "pod":
            if self.pods_share_host_network():
                return run_host
            node = ""
            if self.from_node_namespace(origin, target):
                node = origin.name if origin.kind == "node" else sorted(self.cluster.nodes)[0]

            async def in_namespace(argv: list[str], timeout: float) -> tuple[int, str, str]:
                return await run_host(await self.process_prefix(node) + argv, timeout)
            return in_namespace

        async def in_pod(argv: list[str], timeout: float) -> tuple[int, str, str]:
            result = await self.cluster.exec(origin.name, argv, container=container, namespace=origin.namespace,
                                             timeout=timeout)
            return result.returncode, result.stdout, result.stderr
        return in_pod

    async def process_prefix(self, node: str) -> list[str]:
        """What runs a process in ``node``'s network namespace ("": where host traffic starts):
        the cluster's API says (``ApiCluster.process_prefix``), or an in-process cluster's fabric."""
        asked = getattr(self.cluster, "process_prefix", None)
        if asked is not None:
            return list(await asked(node))
        return list(self.cluster.fabric.process_prefix(node))

    def from_node_namespace(self, origin: Origin, target: str | None) -> bool:
        """Whether traffic from ``origin`` (host or node) to ``target`` must start in a node's
        namespace rather than in netemu's own."""
        return (origin.kind != "pod" and not self.pods_share_host_network()
                and not (target or "").startswith("127."))

    def pods_share_host_network(self) -> bool:
        """On the loopback backend a pod's processes use the host's stack (its IP is just bound)."""
        return self.backend == "loopback"


async def poll(check: Any, timeout: float, interval: float = 0.05) -> Any:
    """Call ``check()`` (sync or async) until it returns a truthy value or ``timeout`` passes;
    returns the last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value or loop.time() >= deadline:
            return value
        await asyncio.sleep(min(interval, max(0.0, deadline - loop.time())))


def error_expectation(p: Parse) -> tuple[Matcher | None, Matcher | None]:
    """``expect: {error: MATCHER, output: MATCHER}`` for steps that change the cluster."""
    if not p.has_expect:
        return None, None
    e = p.expect_fields()
    error = e.raw("error") if e.has("error") else None
    output = e.raw("output") if e.has("output") else None
    e.finish()
    return (p.matcher(error, join(p.expect_path, "error")) if error is not None else None,
            p.matcher(output, join(p.expect_path, "output")) if output is not None else None)


async def expect_outcome(ctx: Context, action: Any, error: Matcher | None, output: Matcher | None) -> None:
    """Run ``action`` (a coroutine giving output lines); check the error or output expectation."""
    try:
        lines = await action
    except NetemuError as exc:
        if error is None:
            raise
        ctx.log(f"error: {exc}")
        failure = error.check(str(exc))
        if failure:
            ctx.fail(f"the error was not the one expected: {failure}")
        return
    text = "\n".join(lines) if isinstance(lines, list) else str(lines or "")
    ctx.log(text)
    if error is not None:
        ctx.fail(f"expected an error ({error.text}), but it succeeded")
    if output is not None:
        failure = output.check(text)
        if failure:
            ctx.fail(f"output: {failure}")
