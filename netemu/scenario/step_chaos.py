"""Steps that break things on purpose: kill, stop/start (nodes, or background loads), impair,
partition, heal.

Each calls one ``Cluster`` method; a cluster without it makes the step fail with "not supported
by this backend" (declare ``requires:`` to have the scenario skipped instead):

    kill      → cluster.kill_container(pod, container=None, namespace="default", signal="KILL")
    stop      → cluster.stop_node(name)          start → cluster.start_node(name)
    impair    → cluster.impair(service=None, node=None, link=None, delay=0.0, jitter=0.0, rate_kbit=0.0,
                               loss=0.0, reset=0.0, duplicate=0.0)
                               (seconds, kbit/s, fractions; all zero clears)
    partition → cluster.partition([[node, ...], [node, ...]])      heal → cluster.heal()
"""
from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

from netemu.errors import ClusterError
from netemu.scenario.fields import describe, join
from netemu.scenario.matchers import compile_matcher
from netemu.scenario.step_traffic import stop_background
from netemu.scenario.steps import Context, Parse, StepKind, error_expectation, expect_outcome, register

SIGNALS = ("KILL", "TERM", "INT", "HUP", "QUIT", "USR1", "USR2", "STOP", "CONT")


async def call_cluster_raw(ctx: Context, step: str, method: str, *args: Any, **kwargs: Any) -> Any:
    """``ctx.cluster.<method>(...)``, awaited if need be; a clear error when the cluster lacks it."""
    func = getattr(ctx.cluster, method, None)
    if func is None:
        raise ClusterError(f"{step} is not supported by this backend ({ctx.backend}): the cluster has no "
                           f"{method}(); add the matching requires: to skip this scenario where it cannot run")
    result = func(*args, **kwargs)
    return await result if inspect.isawaitable(result) else result


async def call_cluster(ctx: Context, step: str, method: str, *args: Any, **kwargs: Any) -> list[str]:
    """``call_cluster_raw``, its result as output lines."""
    result = await call_cluster_raw(ctx, step, method, *args, **kwargs)
    if isinstance(result, list):
        return [str(line) for line in result]
    return [str(result)] if result else []


@register
class Kill(StepKind):
    name = "kill"
    summary = "{pod, container, signal}: kill a container's process (the kubelet restarts it per restartPolicy)"

    def parse(self, p: Parse) -> Any:
        f = p.fields()
        pod = f.take("pod", "str", required=True)
        container = f.take("container", "str")
        namespace = f.take("namespace", "str", default="default")
        signal = (f.take("signal", "str", default="KILL") or "KILL").upper().removeprefix("SIG")
        if signal not in SIGNALS:
            p.problems.add(join(p.path, "signal"), f"must be one of {', '.join(SIGNALS)}; got {signal}")
        f.finish()
        return (pod, container, namespace, signal), *error_expectation(p)

    async def run(self, ctx: Context, spec: Any) -> None:
        (pattern, container, namespace, signal), error, output = spec

        async def kill() -> list[str]:
            pod = ctx.pod(pattern, namespace)
            return await call_cluster(ctx, "kill", "kill_container", pod.metadata.name, container=container,
                                      namespace=namespace, signal=signal)
        await expect_outcome(ctx, kill(), error, output)

    def title(self, spec: Any) -> str:
        pod, container, _ns, signal = spec[0]
        return f"kill -{signal} {pod}" + (f" -c {container}" if container else "")


@register
class Stop(StepKind):
    name = "stop"
    summary = ("{node: NAME}, {background: NAME, expect: {failures, successes}} or "
               "{capture: NAME, expect: {output}} (the capture's flows)")

    def parse(self, p: Parse) -> Any:
        f = p.fields()
        node = f.take("node", "str")
        background = f.take("background", "str")
        capture = f.take("capture", "str")
        f.finish()
        if sum(v is not None for v in (node, background, capture)) != 1 and f.ok:
            p.problems.add(p.path, "give node: NAME, background: NAME or capture: NAME")
        if capture is not None:
            return "capture", capture, *error_expectation(p)
        if background is not None:
            e = p.expect_fields()
            failures = p.matcher(e.raw("failures"), join(p.expect_path, "failures")) if e.has("failures") \
                else compile_matcher(0, "", p.problems)
            successes = p.matcher(e.raw("successes"), join(p.expect_path, "successes")) if e.has("successes") \
                else compile_matcher({"atLeast": 1}, "", p.problems)
            e.finish()
            return "background", background, failures, successes
        return "node", node, *error_expectation(p)

    async def run(self, ctx: Context, spec: Any) -> None:
        if spec[0] == "background":
            await stop_background(ctx, spec[1], spec[2], spec[3])
            return
        if spec[0] == "capture":
            await expect_outcome(ctx, stop_capture(ctx, spec[1]), spec[2], spec[3])
            return
        await expect_outcome(ctx, call_cluster(ctx, "stop", "stop_node", spec[1]), spec[2], spec[3])

    def title(self, spec: Any) -> str:
        return f'stop {spec[0]} "{spec[1]}"' if spec[0] in ("background", "capture") else f"stop node {spec[1]}"


async def stop_capture(ctx: Context, name: str) -> list[str]:
    capture = ctx.captures.pop(name, None)
    if capture is None:
        ctx.fail(f'no capture named "{name}" is running (running: {", ".join(ctx.captures) or "none"})')
    stopped = capture.stop()
    if inspect.isawaitable(stopped):   # a capture running in a cluster reached by its API
        await stopped
    return [f"{capture.frames} packets captured to {capture.path}", *ctx.cluster.capture_summary(capture)]


@register
class CaptureStep(StepKind):
    name = "capture"
    summary = ("{name, pod | node: NAME | link: [A, B], filter, file, count}: start a packet capture "
               "(netns); `stop: {capture: NAME}` ends it and lists its flows")

    def parse(self, p: Parse) -> Any:
        f = p.fields()
        label = f.take("name", "str", required=True)
        target = {"pod": f.take("pod", "str"), "node": f.take("node", "str"), "link": f.take("link", "str-list")}
        namespace = f.take("namespace", "str", default="default")
        options = {"filter": f.take("filter", "str", default=""), "count": f.take("count", "int", default=0)}
        path = f.take("file", "str")
        f.finish()
        if target["link"] is not None and len(target["link"]) != 2:
            p.problems.add(join(p.path, "link"), f"expected two node names, got {describe(target['link'])}")
        if sum(v is not None for v in target.values()) != 1 and f.ok:
            p.problems.add(p.path, "give one of pod: NAME, node: NAME or link: [A, B]")
        return label, {k: v for k, v in target.items() if v is not None}, namespace, options, path, \
            *error_expectation(p)

    async def run(self, ctx: Context, spec: Any) -> None:
        label, target, namespace, options, path, error, output = spec
        if label in ctx.captures:
            ctx.fail(f'a capture named "{label}" is running already')

        async def start() -> list[str]:
            await ctx.settle()
            where = Path(path) if path else ctx.cluster.state.path(f"capture-{label}.pcapng")
            pod = target.get("pod")
            if pod is not None:
                target["pod"] = ctx.pod(pod, namespace).metadata.name
            capture = await call_cluster_raw(ctx, "capture", "start_capture", where, namespace=namespace,
                                             **target, **options)
            ctx.captures[label] = capture
            return [f"capturing on {', '.join(t.label for t in capture.taps)} to {where}"]
        await expect_outcome(ctx, start(), error, output)

    def title(self, spec: Any) -> str:
        label, target = spec[0], spec[1]
        what = " ".join(f"link {v[0]}<->{v[1]}" if k == "link" else f"{k} {v}" for k, v in target.items())
        return f'capture "{label}" on {what}' + (f" ({spec[3]['filter']})" if spec[3]["filter"] else "")



@register
class Start(StepKind):
    name = "start"
    summary = "{node: NAME}: bring a stopped node back"

    def parse(self, p: Parse) -> Any:
        f = p.fields()
        node = f.take("node", "str", required=True)
        f.finish()
        return node, *error_expectation(p)

    async def run(self, ctx: Context, spec: Any) -> None:
        await expect_outcome(ctx, call_cluster(ctx, "start", "start_node", spec[0]), spec[1], spec[2])

    def title(self, spec: Any) -> str:
        return f"start node {spec[0]}"


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(kbit|mbit|gbit|bit)?\s*$", re.IGNORECASE)
_RATE_UNITS = {"bit": 0.001, "kbit": 1.0, "mbit": 1000.0, "gbit": 1_000_000.0}


def parse_rate(value: Any) -> float:
    """``1mbit``, ``500kbit`` (tc's units) or a number of kbit/s → kbit/s."""
    m = _RATE.match(str(value)) if not isinstance(value, bool) else None
    if not m:
        raise ValueError(f"expected a rate such as 1mbit or 500kbit, got {describe(value)}")
    return float(m.group(1)) * _RATE_UNITS[(m.group(2) or "kbit").lower()]


@register
class Impair(StepKind):
    name = "impair"
    summary = "{service | node: NAME | link: [A, B], delay, jitter, loss, reset, rate, duplicate, clear}"

    def parse(self, p: Parse) -> Any:
        f = p.fields()
        target = {"service": f.take("service", "str"), "node": f.take("node", "str"),
                  "link": f.take("link", "str-list")}
        settings = {
            "delay": f.take("delay", "duration", default=0.0), "jitter": f.take("jitter", "duration", default=0.0),
            "loss": f.take("loss", "fraction", default=0.0), "reset": f.take("reset", "fraction", default=0.0),
            "duplicate": f.take("duplicate", "fraction", default=0.0),
        }
        rate = f.take("rate")
        clear = f.take("clear", "bool", default=False)
        f.finish()
        settings["rate_kbit"] = 0.0
        if rate is not None:
            try:
                settings["rate_kbit"] = parse_rate(rate)
            except ValueError as exc:
                p.problems.add(join(p.path, "rate"), str(exc))
        if target["link"] is not None and len(target["link"]) != 2:
            p.problems.add(join(p.path, "link"), f"expected two node names, such as [node-1, node-2], got "
                           f"{describe(target['link'])}")
        if sum(v is not None for v in target.values()) != 1 and f.ok:
            p.problems.add(p.path, "give one of service: NAME, node: NAME or link: [A, B]")
        if clear and any(settings.values()):
            p.problems.add(join(p.path, "clear"), "clear takes no delay, jitter, loss, reset, rate or duplicate")
        if not clear and not any(settings.values()) and f.ok:
            p.problems.add(p.path, "give delay, jitter, loss, reset, rate or duplicate (or clear: true)")
        return {k: v for k, v in target.items() if v is not None}, settings, *error_expectation(p)

    async def run(self, ctx: Context, spec: Any) -> None:
        target, settings, error, output = spec
        await expect_outcome(ctx, call_cluster(ctx, "impair", "impair", **target, **settings), error, output)

    def title(self, spec: Any) -> str:
        target, settings = spec[0], spec[1]
        what = " ".join(f"link {v[0]}<->{v[1]}" if k == "link" else f"{k} {v}" for k, v in target.items())
        shown = ", ".join(_shown(k, v) for k, v in settings.items() if v) or "clear"
        return f"impair {what}: {shown}"


def _shown(key: str, value: float) -> str:
    if key in ("delay", "jitter"):
        return f"{key} {value * 1000:g}ms"
    if key == "rate_kbit":
        return f"rate {value:g}kbit"
    return f"{key} {value * 100:g}%"


@register
class Partition(StepKind):
    name = "partition"
    summary = "[[node-1], [node-2, node-3]]: nodes in different groups cannot reach each other"

    def lifts(self, value: Any) -> tuple[str, ...]:
        return ()

    def parse(self, p: Parse) -> Any:
        groups = p.value
        if not (isinstance(groups, list) and len(groups) >= 2 and all(
                isinstance(g, list) and g and all(isinstance(n, str) for n in g) for g in groups)):
            p.problems.add(p.path, f"expected a list of at least two lists of node names, got {describe(groups)}")
            groups = []
        return groups, *error_expectation(p)

    async def run(self, ctx: Context, spec: Any) -> None:
        await expect_outcome(ctx, call_cluster(ctx, "partition", "partition", spec[0]), spec[1], spec[2])

    def title(self, spec: Any) -> str:
        return "partition " + " | ".join(",".join(g) for g in spec[0])


@register
class Heal(StepKind):
    name = "heal"
    summary = "{}: undo every partition"

    def lifts(self, value: Any) -> tuple[str, ...]:
        return ()

    def parse(self, p: Parse) -> Any:
        if p.value not in (None, {}, True):
            p.problems.add(p.path, f"takes no value (write heal: {{}}), got {describe(p.value)}")
        return error_expectation(p)

    async def run(self, ctx: Context, spec: Any) -> None:
        await expect_outcome(ctx, call_cluster(ctx, "heal", "heal"), spec[0], spec[1])

    def title(self, spec: Any) -> str:
        return "heal partitions"
