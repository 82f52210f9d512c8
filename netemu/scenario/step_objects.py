"""Steps on API objects: apply, delete, scale, restart, wait, expect (object fields), logs, sleep.

Manifests named by path are read relative to the scenario file. Inline manifests are decoded
when the file is loaded (so a typo in one is reported before anything starts), unless the step
expects an error or the text holds references.
"""
from __future__ import annotations

import asyncio
import datetime
import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from netemu import api
from netemu.cluster import resolve_kind
from netemu.errors import ManifestErrors, NetemuError, NotFoundError, WaitTimeoutError
from netemu.scenario.fieldpath import get_field, parse_field_path
from netemu.scenario.fields import describe, is_templated, join
from netemu.scenario.matchers import Matcher, compile_operators, show
from netemu.scenario.selectors import parse_selector
from netemu.scenario.steps import (
    Context, Parse, StepKind, error_expectation, expect_outcome, poll, register,
)

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


# --------------------------------------------------------------------------- manifests


@dataclass
class Source:
    """One manifest source: a file (path) or inline YAML text (label names it in errors)."""

    path: Path | None = None
    text: str | None = None
    label: str = ""

    def load(self) -> list[api.Manifest]:
        if self.path is not None:
            return api.load_paths([str(self.path)])
        return api.load_text(self.text or "", source=self.label)

    def describe(self) -> str:
        if self.path is not None:
            return self.path.name
        try:
            return ", ".join(f"{m.obj.kind.lower()}/{m.obj.metadata.name}" for m in self.load()) or "nothing"
        except NetemuError:
            return "inline YAML"


def read_sources(p: Parse, value: Any, path: str, *, validate: bool) -> list[Source]:
    """Manifest sources written at ``path``: a path, inline YAML text, a manifest mapping, or a list."""
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not value:
        p.problems.add(path, "expected at least one manifest")
    sources = []
    for index, item in enumerate(items):
        where = join(path, index) if isinstance(value, list) else path
        if isinstance(item, dict):
            text = yaml.safe_dump(item, sort_keys=False)
            source = Source(text=text, label=where)
        elif isinstance(item, str) and ("\n" in item or item.lstrip().startswith(("apiVersion:", "kind:"))):
            source = Source(text=item, label=where)
        elif isinstance(item, str) and item.strip():
            file = (p.base_dir / item.strip()).resolve() if not Path(item.strip()).is_absolute() else Path(item.strip())
            if not (p.templated and is_templated(item)) and not file.exists():
                p.problems.add(where, f'the path "{item}" does not exist (paths are relative to the scenario file)')
                continue
            source = Source(path=file, label=where)
        else:
            p.problems.add(where, f"expected a manifest: a file path, inline YAML or a mapping; got {describe(item)}")
            continue
        if validate and not (source.text and is_templated(source.text)) and not (p.templated and is_templated(item)):
            try:
                source.load()
            except ManifestErrors as exc:
                for error in exc.errors:
                    for problem in error.problems:
                        text = str(problem)
                        if source.text is not None and text.startswith("line "):
                            text = "inline YAML, " + text  # lines count from the start of the inline text
                        p.problems.add(where, f"{_object_of(error.ref, source)}{text}")
        sources.append(source)
    return sources


def _object_of(ref: Any, source: Source) -> str:
    """How a manifest problem names its object: the file for files, the object for inline YAML."""
    if source.path is not None:
        return f"{ref}: "
    ident = f"{ref.namespace}/{ref.name}" if ref.namespace else ref.name
    doc = f"document {ref.doc}: " if ref.doc > 1 else ""
    return f"{doc}{ref.kind} {ident}: ".replace("  ", " ") if ref.kind else doc


@register
class Apply(StepKind):
    name = "apply"
    summary = "create or update objects: a path, inline YAML or a list of them"

    def lifts(self, value: Any) -> tuple[str, ...]:
        return ()

    def parse(self, p: Parse) -> Any:
        error, output = error_expectation(p)
        return read_sources(p, p.value, p.path, validate=error is None), error, output

    async def run(self, ctx: Context, spec: Any) -> None:
        sources, error, output = spec

        async def apply() -> list[str]:
            manifests = [m for s in sources for m in s.load()]
            return await ctx.cluster.apply(*manifests)
        await expect_outcome(ctx, apply(), error, output)

    def title(self, spec: Any) -> str:
        return "apply " + ", ".join(s.describe() for s in spec[0])


@dataclass
class DeleteSpec:
    kind: str = ""
    name: str = ""
    namespace: str = "default"
    selector: Any = None
    wait: bool = False
    sources: list[Source] = field(default_factory=list)


@register
class Delete(StepKind):
    name = "delete"
    summary = "delete objects: kind/name, {kind, name | selector, namespace, wait}, or manifests"
    default_timeout = 60.0

    def lifts(self, value: Any) -> tuple[str, ...]:
        return super().lifts(value) if isinstance(value, dict) and "apiVersion" not in value else ()

    def parse(self, p: Parse) -> Any:
        error, output = error_expectation(p)
        spec = DeleteSpec()
        value = p.value
        if isinstance(value, str) and "\n" not in value and "/" in value and not value.strip().endswith(
                MANIFEST_SUFFIXES) and _kind_of(value.split("/", 1)[0]):
            spec.kind, spec.name = _kind_of(value.split("/", 1)[0]), value.split("/", 1)[1].strip()
        elif isinstance(value, dict) and "apiVersion" not in value:
            f = p.fields()
            kind = f.take("kind", "str", required=True)
            spec.name = f.take("name", "str", default="")
            spec.namespace = f.take("namespace", "str", default="default")
            spec.selector = f.take("selector")
            spec.wait = f.take("wait", "bool", default=False)
            f.finish()
            if kind is not None:
                spec.kind = _kind_of(kind) or ""
                if not spec.kind:
                    p.problems.add(join(p.path, "kind"), f'unknown kind "{kind}"')
            if bool(spec.name) == (spec.selector is not None) and f.ok:
                p.problems.add(p.path, "give either name or selector")
            if spec.selector is not None:
                try:
                    parse_selector(spec.selector)
                except ValueError as exc:
                    p.problems.add(join(p.path, "selector"), str(exc))
        else:
            spec.sources = read_sources(p, value, p.path, validate=error is None)
        return spec, error, output

    async def run(self, ctx: Context, spec: Any) -> None:
        d, error, output = spec
        await expect_outcome(ctx, self._delete(ctx, d), error, output)

    async def _delete(self, ctx: Context, d: DeleteSpec) -> list[str]:
        cluster = ctx.cluster
        if d.sources:
            return await cluster.delete_manifests(*[m for s in d.sources for m in s.load()])
        if d.selector is not None:
            match = parse_selector(d.selector)
            names = sorted(o.metadata.name for o in cluster.list(d.kind, d.namespace) if match(o.metadata.labels))
            if not names:
                return ["No resources found"]
        elif any(c in d.name for c in "*?"):
            names = [_pick_object(ctx, d.kind, d.name, d.namespace).metadata.name]
        else:
            names = [d.name]
        lines = []
        for name in names:
            lines.append(await cluster.delete(d.kind, name, d.namespace, wait=d.wait, timeout=ctx.timeout))
        return lines

    def title(self, spec: Any) -> str:
        d = spec[0]
        if d.sources:
            return "delete " + ", ".join(s.describe() for s in d.sources)
        what = d.name if d.name else f"-l {d.selector if isinstance(d.selector, str) else d.selector}"
        return f"delete {d.kind.lower()} {what}"


def _kind_of(text: str) -> str | None:
    try:
        return resolve_kind(text.strip())
    except NetemuError:
        return None


def _pick_object(ctx: Context, kind: str, pattern: str, namespace: str) -> Any:
    if kind == "Pod":
        return ctx.pod(pattern, namespace)
    matches = sorted((o for o in ctx.cluster.list(kind, namespace) if fnmatch.fnmatchcase(o.metadata.name, pattern)),
                     key=lambda o: o.metadata.name)
    if not matches:
        raise NotFoundError(f'no {kind.lower()} matches "{pattern}"')
    return matches[0]


@register
class Scale(StepKind):
    name = "scale"
    summary = "{deployment | statefulset: NAME, replicas: N}"

    def parse(self, p: Parse) -> Any:
        f = p.fields()
        deployment, statefulset = f.take("deployment", "str"), f.take("statefulset", "str")
        replicas = f.take("replicas", "int", required=True, minimum=0)
        namespace = f.take("namespace", "str", default="default")
        f.finish()
        if (deployment is None) == (statefulset is None) and f.ok:
            p.problems.add(p.path, "give exactly one of deployment: NAME or statefulset: NAME")
        kind, name = ("deployment", deployment) if deployment is not None else ("statefulset", statefulset)
        return (name, replicas, namespace, kind), *error_expectation(p)

    async def run(self, ctx: Context, spec: Any) -> None:
        (name, replicas, namespace, kind), error, output = spec
        await expect_outcome(ctx, ctx.cluster.scale(name, replicas, namespace, kind=kind), error, output)

    def title(self, spec: Any) -> str:
        return f"scale {spec[0][3]}/{spec[0][0]} --replicas={spec[0][1]}"


@register
class Restart(StepKind):
    """``kubectl rollout restart``: stamp the pod template so the deployment rolls its pods."""

    name = "restart"
    summary = "{deployment: NAME}: a rolling restart"

    def parse(self, p: Parse) -> Any:
        f = p.fields()
        name = f.take("deployment", "str", required=True)
        namespace = f.take("namespace", "str", default="default")
        f.finish()
        return (name, namespace), *error_expectation(p)

    async def run(self, ctx: Context, spec: Any) -> None:
        (name, namespace), error, output = spec

        async def restart() -> list[str]:
            data = api.to_dict(ctx.cluster.get("Deployment", name, namespace))
            data.pop("status", None)
            meta = data.get("metadata", {})
            data["metadata"] = {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta}
            template_meta = data.setdefault("spec", {}).setdefault("template", {}).setdefault("metadata", {})
            stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            template_meta.setdefault("annotations", {})["kubectl.kubernetes.io/restartedAt"] = stamp
            await ctx.cluster.apply(data)
            return [f"deployment.apps/{name} restarted"]
        await expect_outcome(ctx, restart(), error, output)

    def title(self, spec: Any) -> str:
        return f"rollout restart deployment/{spec[0][0]}"


# --------------------------------------------------------------------------- observing objects


@dataclass
class Observe:
    """Which object(s) and which field: shared by ``expect`` and ``wait: {for: condition}``."""

    kind: str = ""
    name: str = ""
    many: bool = False
    selector: Any = None
    namespace: str = "default"
    path: str | None = None
    tokens: list[Any] = field(default_factory=list)
    matcher: Matcher = field(default_factory=Matcher)

    def describe(self) -> str:
        what = (f"{self.kind.lower()}s" + (f" -l {self.selector}" if self.selector is not None else "")
                if self.many else f"{self.kind.lower()}/{self.name}")
        return what + (f" {self.path}" if self.path else "")

    def value(self, ctx: Context) -> Any:
        cluster = ctx.cluster
        if self.many:
            match = parse_selector(self.selector) if self.selector is not None else (lambda labels: True)
            objs = sorted((o for o in cluster.list(self.kind, self.namespace) if match(o.metadata.labels)),
                          key=lambda o: o.metadata.name)
            datas = [api.to_dict(o) for o in objs]
            return [get_field(d, self.tokens) for d in datas] if self.path else datas
        try:
            obj = _pick_object(ctx, self.kind, self.name, self.namespace) if any(c in self.name for c in "*?") \
                else cluster.get(self.kind, self.name, self.namespace)
        except NotFoundError:
            return None
        data = api.to_dict(obj)
        return get_field(data, self.tokens) if self.path else data

    def check(self, ctx: Context) -> tuple[Any, str | None]:
        actual = self.value(ctx)
        return actual, self.matcher.check(actual)


def read_observe(p: Parse, f: Any, *, require_matcher: bool = True) -> Observe:
    obs = Observe()
    obj = f.take("object", "str")
    many = f.take("objects", "str")
    obs.selector = f.take("selector")
    obs.namespace = f.take("namespace", "str", default="default")
    obs.path = f.take("field", "str")
    if (obj is None) == (many is None) and f.ok:
        p.problems.add(p.path, "give object: KIND/NAME or objects: KIND (with an optional selector)")
    if obj is not None:
        kind, sep, name = obj.partition("/")
        obs.kind, obs.name = _kind_of(kind) or "", name.strip()
        if not sep or not name.strip():
            p.problems.add(join(p.path, "object"), f'expected KIND/NAME such as svc/my-nginx, got "{obj}"')
        elif not obs.kind:
            p.problems.add(join(p.path, "object"), f'unknown kind "{kind}"')
    if many is not None:
        obs.many = True
        obs.kind = _kind_of(many) or ""
        if not obs.kind:
            p.problems.add(join(p.path, "objects"), f'unknown kind "{many}"')
    if obs.selector is not None:
        if not obs.many:
            p.problems.add(join(p.path, "selector"), "a selector goes with objects: KIND")
        try:
            parse_selector(obs.selector)
        except ValueError as exc:
            p.problems.add(join(p.path, "selector"), str(exc))
    if obs.path is not None and not is_templated(obs.path):
        try:
            obs.tokens = parse_field_path(obs.path)
        except ValueError as exc:
            p.problems.add(join(p.path, "field"), str(exc))
    obs.matcher = compile_operators(f, p.problems, templated=p.templated, empty_ok=not require_matcher)
    return obs


@register
class Expect(StepKind):
    name = "expect"
    summary = "{object: KIND/NAME | objects: KIND, selector, field, equals | contains | ...}"

    def parse(self, p: Parse) -> Any:
        p.no_expect("expect")
        f = p.fields()
        obs = read_observe(p, f)
        f.finish()
        return obs

    async def run(self, ctx: Context, spec: Observe) -> None:
        actual, failure = spec.check(ctx)
        ctx.log(f"{spec.describe()}: {show(actual, 4000)}")
        if failure:
            ctx.fail(f"{spec.describe()}: {failure}")

    def title(self, spec: Observe) -> str:
        return f"expect {spec.describe()} {spec.matcher.text}".rstrip()


WAIT_FOR = ("pods-ready", "rollout", "endpoints", "lb-ingress", "condition", "deleted", "background")


@register
class Wait(StepKind):
    name = "wait"
    default_timeout = 30.0
    summary = "{for: " + " | ".join(WAIT_FOR) + ", ...}: until it holds or the timeout"

    def parse(self, p: Parse) -> Any:
        p.no_expect("wait")
        f = p.fields()
        what = f.take("for", "str", required=True, choices=WAIT_FOR)
        spec: dict[str, Any] = {"for": what}
        if what == "pods-ready":
            spec["selector"] = f.take("selector")
            spec["count"] = f.take("count", "int", minimum=0)
            spec["namespace"] = f.take("namespace", "str", default="default")
            if spec["selector"] is not None:
                try:
                    parse_selector(spec["selector"])
                except ValueError as exc:
                    p.problems.add(join(p.path, "selector"), str(exc))
        elif what == "rollout":
            spec["deployment"] = f.take("deployment", "str", required=True)
            spec["namespace"] = f.take("namespace", "str", default="default")
        elif what in ("endpoints", "lb-ingress"):
            spec["service"] = f.take("service", "str", required=True)
            spec["namespace"] = f.take("namespace", "str", default="default")
            if what == "endpoints":
                spec["count"] = f.take("count", "int", minimum=0)
        elif what == "background":
            spec["background"] = f.take("background", "str", required=True)
            spec["count"] = f.take("count", "int", required=True, minimum=1)
        elif what == "condition":
            spec["observe"] = read_observe(p, f)
        elif what == "deleted":
            spec["observe"] = read_observe(p, f, require_matcher=False)
        f.finish()
        return spec

    async def run(self, ctx: Context, spec: dict[str, Any]) -> None:
        if spec["for"] == "background":
            await self._background(ctx, spec["background"], spec["count"])
            return
        check, describe = self._check(ctx, spec)
        try:
            await ctx.cluster.wait_for(check, ctx.timeout, "a condition")
        except WaitTimeoutError:
            ctx.fail("\n".join([f"timed out after {ctx.timeout:g}s waiting for {describe()}",
                                *await ctx.timeout_details()]))
        ctx.log(describe())

    @staticmethod
    async def _background(ctx: Context, name: str, count: int) -> None:
        """Until the background probe ``name`` has run ``count`` more times."""
        bg = ctx.backgrounds.get(name)
        if bg is None or bg.task is None or bg.task.done():
            ctx.fail(f'no background named "{name}" is running (running: {", ".join(ctx.backgrounds) or "none"})')
        start = bg.successes + bg.failures
        done = await poll(lambda: bg.successes + bg.failures - start >= count, ctx.timeout, interval=0.01)
        ctx.log(bg.summary())
        if not done:
            ctx.fail(f'timed out after {ctx.timeout:g}s waiting for {count} more runs of background "{name}" '
                     f"(got {bg.successes + bg.failures - start})")

    def _check(self, ctx: Context, spec: dict[str, Any]) -> Any:
        cluster, what = ctx.cluster, spec["for"]
        if what == "pods-ready":
            ns = spec["namespace"]
            match = parse_selector(spec["selector"]) if spec["selector"] is not None else None

            def pods() -> list[Any]:
                return [p for p in cluster.pods(ns) if match is None or match(p.metadata.labels)]

            def check() -> bool:
                current = pods()
                if spec["count"] is not None and len(current) != spec["count"]:
                    return False
                if match is None and cluster.not_ready():
                    return False
                return all(is_ready(p) and not p.metadata.deletion_timestamp for p in current)

            def describe() -> str:
                current = pods()
                ready = sum(1 for p in current if is_ready(p) and not p.metadata.deletion_timestamp)
                want = f"{spec['count']} " if spec["count"] is not None else "all "
                sel = f" -l {spec['selector']}" if spec["selector"] is not None else ""
                return f"{want}pods{sel} ready (now {ready}/{len(current)} ready: " + \
                    ", ".join(f"{p.metadata.name} {pod_state(p)}" for p in current) + ")"
            return check, describe
        if what == "rollout":
            def state() -> tuple[bool, str]:
                try:
                    d = cluster.get("Deployment", spec["deployment"], spec["namespace"])
                except NotFoundError:
                    return False, "not found"
                want = d.spec.replicas if d.spec.replicas is not None else 1
                st = d.status
                done = (st.observed_generation >= d.metadata.generation and st.updated_replicas == want
                        and st.replicas == want and st.available_replicas == want)
                return done, (f"{st.updated_replicas} of {want} updated, {st.replicas} in all, "
                              f"{st.available_replicas} available")
            return (lambda: state()[0]), (lambda: f"deployment {spec['deployment']} to roll out ({state()[1]})")
        if what == "endpoints":
            def ready_addresses() -> list[str]:
                slices = [s for s in cluster.list("EndpointSlice", spec["namespace"])
                          if s.metadata.labels.get("kubernetes.io/service-name") == spec["service"]]
                return sorted(a for s in slices for e in s.endpoints if e.conditions.ready is not False
                              for a in e.addresses)

            def check() -> bool:
                n = len(ready_addresses())
                return n == spec["count"] if spec["count"] is not None else n > 0

            def describe() -> str:
                want = spec["count"] if spec["count"] is not None else "some"
                return f"{want} ready endpoints of service {spec['service']} (now {ready_addresses() or 'none'})"
            return check, describe
        if what == "lb-ingress":
            def ingress() -> list[str]:
                try:
                    svc = cluster.get("Service", spec["service"], spec["namespace"])
                except NotFoundError:
                    return []
                return [i.ip or i.hostname for i in svc.status.load_balancer.ingress]
            return (lambda: bool(ingress())), (lambda: f"a load-balancer ingress for service {spec['service']} "
                                                       f"(now {ingress() or '<pending>'})")
        obs: Observe = spec["observe"]
        if what == "deleted":
            obs.tokens, obs.path = [], None
            return (lambda: obs.value(ctx) in (None, [])), (lambda: f"{obs.describe()} to be deleted")
        last: list[Any] = [None, None]

        def check_condition() -> bool:
            last[0], last[1] = obs.check(ctx)
            return last[1] is None
        return check_condition, (lambda: f"{obs.describe()} {obs.matcher.text} (last: {last[1] or show(last[0])})")

    def title(self, spec: dict[str, Any]) -> str:
        what = spec["for"]
        if what == "pods-ready":
            sel = f" -l {spec['selector']}" if spec["selector"] is not None else ""
            return f"wait for {spec['count'] if spec['count'] is not None else 'all'} pods{sel} ready"
        if what == "rollout":
            return f"wait for deployment/{spec['deployment']} to roll out"
        if what == "background":
            return f'wait for {spec["count"]} more runs of background "{spec["background"]}"'
        if what == "endpoints":
            return f"wait for {spec['count'] if spec['count'] is not None else 'the'} endpoints of {spec['service']}"
        if what == "lb-ingress":
            return f"wait for the load balancer of {spec['service']}"
        obs = spec["observe"]
        if what == "deleted":
            return f"wait for {obs.describe()} to be deleted"
        return f"wait for {obs.describe()} {obs.matcher.text}"


def is_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


def pod_state(pod: Any) -> str:
    """What ``kubectl get pods`` would show in STATUS, near enough for a wait's message."""
    if pod.metadata.deletion_timestamp:
        return "Terminating"
    for status in pod.status.container_statuses:
        if status.state and status.state.waiting and status.state.waiting.reason:
            return status.state.waiting.reason
    return pod.status.phase or "Pending"


@register
class Logs(StepKind):
    name = "logs"
    default_timeout = 5.0
    summary = "{pod, container, expect: MATCHER}: retried until the log matches or the timeout"

    def parse(self, p: Parse) -> Any:
        f = p.fields()
        pod = f.take("pod", "str", required=True)
        container = f.take("container", "str")
        namespace = f.take("namespace", "str", default="default")
        f.finish()
        matcher = p.matcher(p.expect, p.expect_path) if p.has_expect else None
        return pod, container, namespace, matcher

    async def run(self, ctx: Context, spec: Any) -> None:
        pattern, container, namespace, matcher = spec
        pod = ctx.pod(pattern, namespace)
        name = pod.metadata.name
        text = ""

        async def check() -> bool:
            nonlocal text
            text = ctx.cluster.logs(name, container, namespace)
            if asyncio.iscoroutine(text):   # a cluster reached by its API fetches logs off the loop
                text = await text
            return matcher is None or matcher.check(text) is None
        ok = await poll(check, ctx.timeout if matcher is not None else 0, interval=0.05)
        ctx.log(text)
        if not ok and matcher is not None:
            ctx.fail(f"logs of {name}: {matcher.check(text)}")

    def title(self, spec: Any) -> str:
        return f"logs {spec[0]}" + (f" -c {spec[1]}" if spec[1] else "") + (f" {spec[3].text}" if spec[3] else "")


@register
class Sleep(StepKind):
    name = "sleep"
    summary = "DURATION: pause (prefer wait: it ends as soon as the condition holds)"

    def lifts(self, value: Any) -> tuple[str, ...]:
        return ()

    def parse(self, p: Parse) -> Any:
        p.no_expect("sleep")
        return p.fields({"sleep": p.value}, p.path.rsplit(".", 1)[0]).take("sleep", "duration", default=0.0)

    async def run(self, ctx: Context, spec: float) -> None:
        await asyncio.sleep(spec)

    def title(self, spec: float) -> str:
        return f"sleep {spec:g}s"
