"""``netemu run --kubeconfig FILE``: the scenario library on any cluster, through its API only.

For each scenario: work out what it needs (its ``requires:``, plus what its steps and manifests
imply: ``impair`` needs impairments, a LoadBalancer Service needs a provisioner …), skip it with
the reason when the cluster lacks it (``TargetProfile``), create its namespace and client pod
(``RemoteCluster.open``), apply its manifests and wait until their pods are ready (the cluster's
wait timeout: real clusters pull images), run its steps as ``netemu run`` does, and delete the
namespace — also when a step fails, unless ``--keep`` asks to leave it for inspection.
``cleanup`` (``--cleanup``) deletes every namespace a crashed run left, found by its label.
"""
from __future__ import annotations

import asyncio
import re
import time
from typing import Any, TextIO

from netemu.config import ClusterConfig
from netemu.errors import NetemuError, WaitTimeoutError
from netemu.scenario.capabilities import KNOWN, host_capabilities, missing
from netemu.scenario.model import Scenario, load_scenarios
from netemu.scenario.remote import (
    DEFAULT_CLIENT_IMAGE, DEFAULT_WAIT_TIMEOUT, SCENARIO_LABEL, RemoteCluster, namespace_name,
    scenario_slug,
)
from netemu.scenario.remote_api import KubeTarget
from netemu.scenario.remote_traffic import RemoteContext
from netemu.scenario.report import ScenarioResult, StepResult, TextReporter
from netemu.scenario.runner import _stop_backgrounds, run_loop, run_scenarios, run_step, select
from netemu.scenario.step_objects import Source

# Step kinds that need a power only netemu has (or a chaos tool), by the capability they need.
STEP_NEEDS = {"kill": "kill", "impair": "impair", "partition": "partition", "heal": "partition",
              "capture": "capture", "start": "node-lifecycle"}
NETEMU_ONLY = {
    "kill": "killing a container's process is not offered by the Kubernetes API",
    "node-lifecycle": "stopping and starting nodes is not offered by the Kubernetes API",
    "capture": "packet capture is netemu's own",
    "loopback": "it names a netemu backend",
    "netns": "it names a netemu backend",
}
CHAOS_MAPPED_LATER = ("impair", "partition")
CHAOS_MESH = ("chaos-mesh.org", "networkchaos")


def _scenario_text(scenario: Scenario) -> str:
    try:
        return scenario.path.read_text(encoding="utf-8")
    except OSError:
        return ""


def node_mismatch(scenario: Scenario, nodes: list[str]) -> str:
    """Why the cluster's nodes cannot stand for the scenario's (``cluster: {nodes: ...}``): too few,
    or names the scenario uses (``nodeName: node-2``, ``node/node-3``) that the cluster lacks; ""
    when they can."""
    wanted = ClusterConfig.node_names(scenario.nodes)
    if len(nodes) < len(wanted):
        return f"needs {len(wanted)} nodes (cluster: nodes), and this cluster has {len(nodes)}"
    text = _scenario_text(scenario)
    named = [n for n in wanted if n not in nodes and re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", text)]
    if named:
        return (f"names nodes this cluster lacks: {', '.join(named)} (its nodes: {', '.join(sorted(nodes))}); "
                "node names are not mapped yet")
    return ""


def implied_requirements(scenario: Scenario) -> list[str]:
    """What a scenario needs beyond its ``requires:``, from its steps and its text."""
    needs = []
    for step in scenario.steps:
        cap = STEP_NEEDS.get(step.kind.name)
        if step.kind.name == "stop" and step.spec[0] == "node":
            cap = "node-lifecycle"
        elif step.kind.name == "stop" and step.spec[0] == "capture":
            cap = "capture"
        if cap:
            needs.append(cap)
    text = _scenario_text(scenario)
    if "LoadBalancer" in text or "lb-ingress" in text:
        needs.append("load-balancer")
    if "NetworkPolicy" in text:
        needs.append("network-policy")
    return needs


class TargetProfile:
    """What one cluster offers, found once per run through its API (load balancers only when asked)."""

    def __init__(self, target: KubeTarget, *, client_image: str, wait_timeout: float):
        self.target = target
        self.client_image = client_image
        self.wait_timeout = wait_timeout
        self.base: frozenset[str] | None = None
        self.dns_ip = ""
        self.chaos_mesh = False
        self.load_balancer: bool | None = None
        self.notes: dict[str, str] = {}
        self.nodes: list[str] | None = None

    async def node_names(self) -> list[str]:
        if self.nodes is None:
            self.nodes = [n.metadata.name for n in await asyncio.to_thread(self.target.list, "Node")]
        return self.nodes

    async def capabilities(self, needs: list[str]) -> frozenset[str]:
        if self.base is None:
            self.base = await asyncio.to_thread(self._discover)
        caps = set(self.base)
        if "load-balancer" in needs:
            if self.load_balancer is None:
                self.load_balancer = await self._probe_load_balancer()
            if self.load_balancer:
                caps.add("load-balancer")
        return frozenset(caps)

    def _discover(self) -> frozenset[str]:
        caps = {"service-proxy", "pod-resolv-conf", "privileged-ports", "pod-volume-mounts"} | set(host_capabilities())
        try:
            dns = self.target.get("Service", "kube-system", "kube-dns")
            self.dns_ip = dns.spec.cluster_ip
            caps.add("cluster-dns")
            if any(p.port == 53 for p in dns.spec.ports):
                caps.add("dns-port-53")
        except NetemuError:
            self.notes["cluster-dns"] = "there is no Service kube-system/kube-dns"
            self.notes["dns-port-53"] = self.notes["cluster-dns"]
        self.chaos_mesh = self.target.has_resource(*CHAOS_MESH)
        self.notes["network-policy"] = ("whether this cluster enforces NetworkPolicy depends on its network plugin, "
                                        "which the Kubernetes API does not tell")
        return frozenset(caps)

    async def _probe_load_balancer(self) -> bool:
        """Does a LoadBalancer Service get an ingress within the wait? (in a namespace of its own)"""
        slug = "lb-probe"
        cluster = RemoteCluster(self.target, namespace_name(slug), slug, wait_timeout=self.wait_timeout)
        service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "netemu-lb-probe"},
                   "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "targetPort": 8080}]}}
        try:
            await asyncio.to_thread(self.target.apply, "Namespace", "", cluster.namespace, {
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": cluster.namespace, "labels": {SCENARIO_LABEL: slug}}})
            await cluster.apply(service)
            await cluster.wait_for(lambda: bool(cluster.get("Service", "netemu-lb-probe").status.load_balancer.ingress),
                                   self.wait_timeout, "a load-balancer ingress")
            return True
        except WaitTimeoutError:
            self.notes["load-balancer"] = (f"a LoadBalancer Service got no ingress within {self.wait_timeout:g}s "
                                           "(no load-balancer provisioner, such as a cloud controller or MetalLB?)")
            return False
        finally:
            await cluster.close()

    def explain(self, lacking: list[str]) -> str:
        parts = []
        for cap in lacking:
            what = f"{cap} ({KNOWN.get(cap, 'unknown capability')})"
            if cap in CHAOS_MAPPED_LATER:
                why = ("this cluster has Chaos Mesh (networkchaos.chaos-mesh.org), but netemu does not map "
                       f"{cap} onto NetworkChaos yet" if self.chaos_mesh else
                       "netemu's own; on a real cluster it needs a chaos tool such as Chaos Mesh's NetworkChaos, "
                       "which this cluster does not have")
            else:
                why = NETEMU_ONLY.get(cap) or self.notes.get(cap) or "this cluster lacks it"
            parts.append(f"{what}: {why}")
        return "needs " + "; and ".join(parts)


async def _apply_manifests(ctx: RemoteContext, scenario: Scenario, cluster: RemoteCluster) -> StepResult:
    """The scenario's manifests, then every pod ready (stuck pods end the wait at once)."""
    started = time.monotonic()
    manifests: list[Any] = []
    try:
        sources = [Source(text=ctx.resolver.resolve(s.text, s.label), label=s.label) if s.text is not None else s
                   for s in scenario.manifests]
        manifests = [m for source in sources for m in source.load()]
        lines = await cluster.apply(*manifests)
        await cluster.wait_ready(cluster.wait_timeout)
    except NetemuError as exc:
        return StepResult("manifests", "apply manifests", False, time.monotonic() - started, str(exc))
    names = ", ".join(f"{m.obj.kind.lower()}/{m.obj.metadata.name}" for m in manifests)
    return StepResult("manifests", f"apply manifests: {names}; all pods ready", True, time.monotonic() - started,
                      "", "\n".join(lines))


async def run_remote_scenario(scenario: Scenario, reporter: TextReporter, *, keep: bool = False,
                              profile: TargetProfile) -> ScenarioResult:
    started = time.monotonic()
    reporter.scenario_started(scenario)
    result = ScenarioResult(scenario, "passed")

    def finish(status: str, reason: str = "", short: str = "") -> ScenarioResult:
        result.status, result.reason, result.short = status, reason, short
        result.duration = time.monotonic() - started
        reporter.scenario_finished(result)
        return result

    needs = list(dict.fromkeys([*scenario.requires, *implied_requirements(scenario)]))
    try:
        caps = await profile.capabilities(needs)
        mismatch = node_mismatch(scenario, await profile.node_names())
    except NetemuError as exc:
        return finish("error", f"the cluster's capabilities could not be read: {exc}")
    lacking = missing(needs, caps)
    if lacking:
        return finish("skipped", profile.explain(lacking), "needs " + ", ".join(lacking))
    if mismatch:
        return finish("skipped", mismatch, "its nodes")
    slug = scenario_slug(scenario.name)
    cluster = RemoteCluster(profile.target, namespace_name(slug), slug, capabilities=caps,
                            client_image=profile.client_image, wait_timeout=profile.wait_timeout,
                            dns_ip=profile.dns_ip)
    result.cluster = cluster.namespace
    ctx = RemoteContext(cluster, scenario.base_dir, capabilities=caps)
    failed = False
    try:
        try:
            await cluster.open()
        except NetemuError as exc:
            failed = True
            return finish("error", f"namespace {cluster.namespace}: {exc}")
        if scenario.manifests:
            step_result = await _apply_manifests(ctx, scenario, cluster)
            result.steps.append(step_result)
            reporter.step_finished(step_result)
        if all(s.passed for s in result.steps):
            for step in scenario.steps:
                await cluster.refresh()
                step_result = await run_step(ctx, scenario, step)
                result.steps.append(step_result)
                reporter.step_finished(step_result)
                if not step_result.passed:
                    break
        failed = not all(s.passed for s in result.steps)
        await _stop_backgrounds(ctx)
        if failed and keep:
            reporter.note(f"the namespace {cluster.namespace} is kept for inspection "
                          f"(kubectl --kubeconfig {profile.target.kubeconfig} -n {cluster.namespace} get all); "
                          "remove it with `netemu run --kubeconfig ... --cleanup`")
        return finish("failed" if failed else "passed")
    finally:
        await _stop_backgrounds(ctx)
        if not (failed and keep):
            try:
                for line in await cluster.close():
                    if line.startswith("still"):
                        reporter.note(line)
            except NetemuError as exc:
                reporter.note(f"could not delete namespace {cluster.namespace}: {exc}")


def cleanup(target: KubeTarget) -> list[str]:
    """Delete every namespace labelled ``netemu.dev/scenario`` (what crashed runs left)."""
    lines = []
    for item in target.list_raw("Namespace", None, selector=SCENARIO_LABEL):
        name = item["metadata"]["name"]
        if (item.get("status") or {}).get("phase") == "Terminating":
            lines.append(f'namespace "{name}" is terminating already')
            continue
        target.delete("Namespace", "", name)
        lines.append(f'namespace "{name}" deleted')
    return lines or ["No leftover netemu namespaces found"]


def run_remote_files(paths: list[str], out: TextIO, *, kubeconfig: str, context: str | None = None,
                     junit: str | None = None, keep: bool = False, pattern: str | None = None,
                     client_image: str = DEFAULT_CLIENT_IMAGE, wait_timeout: float = DEFAULT_WAIT_TIMEOUT) -> int:
    """``netemu run --kubeconfig``: validate every file, run the selected ones on that cluster, report."""
    scenarios = select(load_scenarios([str(p) for p in paths]), pattern)
    target = KubeTarget(kubeconfig, context)
    profile = TargetProfile(target, client_image=client_image, wait_timeout=wait_timeout)

    async def run_one(scenario: Scenario, reporter: TextReporter, *, keep: bool) -> ScenarioResult:
        return await run_remote_scenario(scenario, reporter, keep=keep, profile=profile)
    try:
        return run_loop(run_scenarios(scenarios, out, junit=junit, keep=keep, run_one=run_one))
    finally:
        target.close()


def run_command(paths: list[str], out: TextIO, *, kubeconfig: str, context: str | None = None,
                cleanup_only: bool = False, junit: str | None = None, keep: bool = False,
                pattern: str | None = None, client_image: str | None = None,
                wait_timeout: float | None = None) -> int:
    """``netemu run --kubeconfig FILE [--cleanup] ...``: the exit status."""
    if wait_timeout is not None and not 0 < wait_timeout < float("inf"):
        raise NetemuError(f"error: --wait-timeout {wait_timeout:g}: must be a number of seconds above 0")
    if cleanup_only:
        if paths:
            raise NetemuError("error: --cleanup takes no scenario files")
        target = KubeTarget(kubeconfig, context)
        try:
            out.write("\n".join(cleanup(target)) + "\n")
        finally:
            target.close()
        return 0
    if not paths:
        raise NetemuError("error: run: the following arguments are required: FILE|DIR")
    return run_remote_files(paths, out, kubeconfig=kubeconfig, context=context, junit=junit, keep=keep,
                            pattern=pattern, client_image=client_image or DEFAULT_CLIENT_IMAGE,
                            wait_timeout=wait_timeout or DEFAULT_WAIT_TIMEOUT)
