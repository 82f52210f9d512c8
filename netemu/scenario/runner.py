"""Running scenarios: one fresh cluster each, steps in order, stop at the first failure.

For each scenario: skip it when the host lacks a required capability; start a cluster with a
unique name in a free address slot (``clusters.start_cluster``); skip it when the cluster lacks
a required capability; connect to the cluster's Kubernetes API (``ApiCluster``: from here on
the steps reach the cluster only through it, as any client would, never through the in-process
``Cluster``); apply ``manifests`` and wait for every pod to be ready; run the steps —
references filled in at the moment each step starts — until one fails; stop the cluster. With
``keep``, a failed scenario's cluster stays up (with its control socket) until
``netemu down --name NAME`` or Ctrl-C, so ``netemu get/exec/logs --name NAME`` can inspect it.

``run_files`` is the whole ``netemu run``: load and validate every file first (one
``ScenarioError`` for all problems, nothing run), run, print, write JUnit; it returns the exit
status (0 only when nothing failed; skips do not fail).
"""
from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

from netemu.errors import AssertionFailed, BackendUnavailableError, ClusterError, NetemuError, ScenarioError
from netemu.scenario.api_cluster import ApiCluster, ClientNamespace
from netemu.scenario.capabilities import cluster_capabilities, explain, host_capabilities, missing
from netemu.scenario.clusters import start_cluster, unique_name
from netemu.scenario.fields import Problems, is_templated, parse_duration
from netemu.scenario.model import Scenario, Step, load_scenarios
from netemu.scenario.report import ScenarioResult, StepResult, TextReporter, write_junit
from netemu.scenario.step_objects import Source
from netemu.scenario.steps import Context, Parse

MANIFESTS_READY_TIMEOUT = 30.0


class Aborted(Exception):
    """The user pressed Ctrl-C while a kept cluster waited: stop the whole run."""


async def run_step(ctx: Context, scenario: Scenario, step: Step) -> StepResult:
    """Fill the step's references in, read it again with their values, run it."""
    started = time.monotonic()
    ctx.output = []
    text = step.text
    title = text.name or _safe_title(step, step.spec)
    try:
        resolver = ctx.resolver
        try:
            value, expect = resolver.resolve(text.value, text.path), resolver.resolve(text.expect, text.expect_path)
        except ScenarioError as exc:
            raise ScenarioError(f"{scenario.label}: {exc}") from None
        problems = Problems()
        spec = step.kind.parse(Parse(value, expect, text.has_expect, text.path, text.expect_path, problems,
                                     False, scenario.base_dir))
        if problems:
            raise ScenarioError("\n".join(problems))
        title = text.name or _safe_title(step, spec)
        timeout = resolver.resolve(text.timeout) if is_templated(text.timeout) else text.timeout
        ctx.timeout = parse_duration(timeout) if timeout is not None else ctx.default_timeout(step.kind)
        await step.kind.run(ctx, spec)
    except (AssertionFailed, NetemuError) as exc:
        return StepResult(step.path, title, False, time.monotonic() - started, str(exc), "\n".join(ctx.output))
    except ValueError as exc:  # a reference filled in a value of the wrong shape (a bad duration ...)
        return StepResult(step.path, title, False, time.monotonic() - started, str(exc), "\n".join(ctx.output))
    except Exception as exc:  # noqa: BLE001 - a bug here must not hide the other scenarios
        output = "\n".join([*ctx.output, traceback.format_exc()])
        return StepResult(step.path, title, False, time.monotonic() - started,
                          f"internal error: {type(exc).__name__}: {exc} (please report it)", output)
    return StepResult(step.path, title, True, time.monotonic() - started, "", "\n".join(ctx.output))


def _safe_title(step: Step, spec: Any) -> str:
    try:
        return step.kind.title(spec)
    except Exception:  # noqa: BLE001 - a title is decoration
        return step.kind.name


async def _apply_manifests(ctx: Context, scenario: Scenario) -> StepResult:
    started = time.monotonic()
    manifests = []
    try:
        sources = [Source(text=ctx.resolver.resolve(s.text, s.label), label=s.label) if s.text is not None else s
                   for s in scenario.manifests]   # inline YAML may hold references (cluster.dns ...)
        manifests = [m for source in sources for m in source.load()]
        lines = await ctx.cluster.apply(*manifests)
        await ctx.cluster.wait_ready(MANIFESTS_READY_TIMEOUT)
    except NetemuError as exc:
        return StepResult("manifests", "apply manifests", False, time.monotonic() - started, str(exc))
    names = ", ".join(f"{m.obj.kind.lower()}/{m.obj.metadata.name}" for m in manifests)
    return StepResult("manifests", f"apply manifests: {names}; all pods ready", True, time.monotonic() - started,
                      "", "\n".join(lines))


async def _hold(cluster: Any, reporter: TextReporter) -> None:
    """Keep a failed scenario's cluster up until `netemu down` (go on) or Ctrl-C (abort the run)."""
    name = cluster.name
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, or `kill`: stop the cluster, then the run
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, interrupted.set)
            handled.append(sig)
    reporter.note(
        f'the cluster "{name}" is kept for inspection (state in {cluster.state.directory}):\n'
        f"  netemu get all --name {name}\n"
        f"  netemu exec --name {name} POD -- sh\n"
        f"  netemu logs --name {name} POD\n"
        f"go on with `netemu down --name {name}`; Ctrl-C stops it and the run")
    waiters = [asyncio.ensure_future(interrupted.wait())]
    if cluster.kube_api is not None:  # `netemu down`, through the cluster's API
        waiters.append(asyncio.ensure_future(cluster.kube_api.operations.wait_for_down()))
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        for sig in handled:
            loop.remove_signal_handler(sig)
    if interrupted.is_set():
        raise Aborted()


async def run_scenario(scenario: Scenario, reporter: TextReporter, *, keep: bool = False) -> ScenarioResult:
    started = time.monotonic()
    reporter.scenario_started(scenario)
    result = ScenarioResult(scenario, "passed")

    def finish(status: str, reason: str = "", short: str = "") -> ScenarioResult:
        result.status, result.reason, result.short = status, reason, short
        result.duration = time.monotonic() - started
        reporter.scenario_finished(result)
        return result

    lacking = missing([r for r in scenario.requires if r in ("root", "privileged-ports")], host_capabilities())
    if lacking:
        return finish("skipped", explain(lacking, "this machine"), "needs " + ", ".join(lacking))
    result.cluster = unique_name(scenario.name)
    client_net = ClientNamespace()   # where the steps' API requests leave from: here, not the cluster's seal
    try:
        cluster = await start_cluster(scenario.nodes, name=result.cluster, backend=scenario.backend,
                                      **scenario.overrides)
    except ClusterError as exc:
        client_net.close()
        if isinstance(exc, BackendUnavailableError):
            return finish("skipped", str(exc), f"no {scenario.backend} backend")
        return finish("error", f"the cluster did not start: {exc}")
    aborted = False
    client: ApiCluster | None = None
    ctx = Context(None, scenario.base_dir)
    try:
        ctx.capabilities = cluster_capabilities(cluster)  # the runner's own view (it started the cluster)
        lacking = missing(scenario.requires, ctx.capabilities)
        if lacking:
            return finish("skipped", explain(lacking), "needs " + ", ".join(lacking))
        try:  # from here on, the steps reach the cluster only through its API
            client = await ApiCluster.connect(cluster.name, cluster.state.directory, client_net)
        except NetemuError as exc:
            return finish("error", f"the cluster's API did not answer: {exc}")
        client.follow_kinds(_scenario_text(scenario))
        await client.refresh()
        ctx = Context(client, scenario.base_dir, capabilities=ctx.capabilities)
        if scenario.manifests:
            step_result = await _apply_manifests(ctx, scenario)
            result.steps.append(step_result)
            reporter.step_finished(step_result)
        if all(s.passed for s in result.steps):
            for step in scenario.steps:
                await client.refresh()
                step_result = await run_step(ctx, scenario, step)
                result.steps.append(step_result)
                reporter.step_finished(step_result)
                if not step_result.passed:
                    break
        failed = not all(s.passed for s in result.steps)
        await _stop_backgrounds(ctx)
        if failed and keep:
            try:
                await _hold(cluster, reporter)
            except Aborted:
                aborted = True
        return finish("failed" if failed else "passed")
    finally:
        await _stop_backgrounds(ctx)
        if client is not None:
            client.close_client()
        await cluster.stop()
        client_net.close()
        if aborted:
            raise Aborted()


def _scenario_text(scenario: Scenario) -> str:
    """The scenario's file and its manifests' files: every kind its steps can read is named there."""
    texts = []
    for path in (scenario.path, *(s.path for s in scenario.manifests if getattr(s, "path", None))):
        with contextlib.suppress(OSError, TypeError):
            texts.append(Path(path).read_text(encoding="utf-8"))
    texts += [s.text for s in scenario.manifests if getattr(s, "text", None)]
    return "\n".join(texts)


async def _stop_backgrounds(ctx: Context) -> None:
    for bg in list(ctx.backgrounds.values()):
        if bg.task is not None and not bg.task.done():
            bg.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await bg.task
    ctx.backgrounds.clear()
    for capture in ctx.captures.values():
        with contextlib.suppress(NetemuError):  # the cluster may be going already
            stopped = capture.stop()
            if asyncio.iscoroutine(stopped):   # a capture running in a cluster reached by its API
                await stopped
    ctx.captures.clear()


def select(scenarios: list[Scenario], pattern: str | None) -> list[Scenario]:
    """``-k PATTERN``: scenarios whose name or file name contains PATTERN (case-insensitive)."""
    if not pattern:
        return scenarios
    needle = pattern.lower()
    chosen = [s for s in scenarios if needle in s.name.lower() or needle in s.path.name.lower()]
    if not chosen:
        raise ScenarioError(f'no scenario matches -k "{pattern}" (names: {", ".join(s.name for s in scenarios)})')
    return chosen


async def run_scenarios(scenarios: list[Scenario], out: TextIO, *, junit: str | None = None,
                        keep: bool = False, run_one: Any = None) -> int:
    """Run, report, write JUnit; ``run_one`` runs one scenario (default: ``run_scenario``, on a
    fresh netemu cluster)."""
    run_one = run_one or run_scenario
    reporter = TextReporter(out)
    started = time.monotonic()
    results: list[ScenarioResult] = []
    for scenario in scenarios:
        try:
            results.append(await run_one(scenario, reporter, keep=keep))
        except Aborted:
            reporter.write("interrupted: the remaining scenarios did not run")
            break
        except asyncio.CancelledError:  # Ctrl-C: the scenario's cluster is already gone; say how far we got
            reporter.write("\ninterrupted")
            if results:
                reporter.summary(results, time.monotonic() - started)
            raise
    elapsed = time.monotonic() - started
    if results:
        reporter.summary(results, elapsed)
    if junit:
        write_junit(results, junit, elapsed)
        reporter.write(f"JUnit XML written to {junit}")
    bad = any(r.status in ("failed", "error") for r in results) or len(results) < len(scenarios)
    return 1 if bad else 0


def run_loop(coro: Any) -> Any:
    """Run ``coro`` on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def run_files(paths: list[str], out: TextIO, junit: str | None = None, keep: bool = False,
              pattern: str | None = None, backend: str | None = None, proxy_mode: str | None = None) -> int:
    """``netemu run``: validate every file, run the selected scenarios, report; the exit status.
    ``backend`` runs every scenario on that backend, whatever its file says; so does ``proxy_mode``
    with that service proxy mode."""
    scenarios = select(load_scenarios([str(p) for p in paths]), pattern)
    for scenario in scenarios:
        if backend is not None:
            scenario.backend = backend
        if proxy_mode is not None:
            scenario.overrides["proxy_mode"] = proxy_mode
    return run_loop(run_scenarios(scenarios, out, junit=junit, keep=keep))
