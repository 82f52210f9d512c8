"""Steps that make traffic: curl, exec, connect (TCP/UDP), dig and nslookup, background loads.

``from:`` says where traffic starts: ``host`` (the default), a pod (``POD``, ``pod/POD``; a glob
picks the first live match) or ``node/NODE``. From a pod, tools run through ``Cluster.exec``
with the pod's environment; on the loopback backend pods share the host's network stack, so
curl is given ``--interface <pod IP>`` and connect probes bind the pod IP, and the server sees
the pod's address as it would in Kubernetes. From a node, the node's IP is the source.
"""
from __future__ import annotations

import asyncio
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from netemu.scenario import probes
from netemu.scenario.fields import describe, join
from netemu.scenario.matchers import Matcher, compile_matcher, show
from netemu.scenario.refs import dns_server
from netemu.scenario.steps import Context, Origin, Parse, StepKind, kinds, register, split_common

MAX_REPEAT = 100_000  # requests of one probe step: more is a typo that runs for days


def _truncate(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n… ({len(text) - limit} more characters)"


# --------------------------------------------------------------------------- curl


@dataclass
class CurlSpec:
    url: str = ""
    origin: str | None = None
    namespace: str = "default"
    container: str | None = None
    method: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    data: str | None = None
    args: list[str] = field(default_factory=list)
    repeat: int = 1
    status: Matcher | None = None
    body: Matcher | None = None
    header_matchers: dict[str, Matcher] = field(default_factory=dict)
    outcome: str | None = None
    distinct: dict[str, Matcher] = field(default_factory=dict)


@register
class Curl(StepKind):
    name = "curl"
    default_timeout = 5.0
    summary = "{url, from, method, headers, data, args, repeat, expect: {status, body, headers, outcome, distinct}}"

    def parse(self, p: Parse) -> CurlSpec:
        f = p.fields()
        s = CurlSpec()
        s.url = f.take("url", "str", required=True, default="")
        s.origin = f.take("from", "str")
        s.namespace = f.take("namespace", "str", default="default")
        s.container = f.take("container", "str")
        s.method = f.take("method", "str")
        headers = f.take("headers", "mapping", default={})
        s.headers = {str(k): str(v) for k, v in (headers or {}).items()}
        s.data = f.take("data", "str")
        s.args = f.take("args", "str-list", default=[])
        s.repeat = f.take("repeat", "int", default=1, minimum=1, maximum=MAX_REPEAT)
        f.finish()
        e = p.expect_fields()
        if e.has("status"):
            s.status = p.matcher(e.raw("status"), join(p.expect_path, "status"))
        if e.has("body"):
            s.body = p.matcher(e.raw("body"), join(p.expect_path, "body"))
        hm = e.take("headers", "mapping", default={}) or {}
        s.header_matchers = {str(k): p.matcher(v, join(join(p.expect_path, "headers"), str(k))) for k, v in hm.items()}
        s.outcome = e.take("outcome", "str", choices=probes.OUTCOMES)
        distinct = e.take("distinct", "mapping", default={}) or {}
        for key, value in distinct.items():
            if key not in ("body", "status"):
                p.problems.add(join(join(p.expect_path, "distinct"), str(key)), 'unknown field; use "body" or "status"')
                continue
            s.distinct[key] = p.matcher(value, join(join(p.expect_path, "distinct"), key))
        e.finish()
        if s.outcome not in (None, "ok") and (s.status or s.body or s.header_matchers):
            p.problems.add(p.expect_path, f"outcome {s.outcome} means no HTTP response: status, body and headers "
                                          "cannot be checked")
        return s

    async def run(self, ctx: Context, s: CurlSpec) -> None:
        await ctx.settle()
        origin = ctx.origin(s.origin, s.namespace)
        run = ctx.runner(origin, s.container, target=urllib.parse.urlsplit(s.url).hostname)
        results = []
        for attempt in range(s.repeat):
            result = await probes.curl(s.url, run, timeout=ctx.timeout, method=s.method, headers=s.headers,
                                       data=s.data, source_ip=origin.ip, args=s.args)
            results.append(result)
            failure = self.check(s, result)
            if failure:
                ctx.log(_truncate(result.transcript()))
                prefix = f"request {attempt + 1} of {s.repeat}: " if s.repeat > 1 else ""
                ctx.fail(prefix + failure)
        if s.repeat == 1:
            ctx.log(_truncate(results[0].transcript()))
        else:
            bodies = Counter(r.body.strip() for r in results)
            ctx.log(f"{s.repeat} requests; responses (count × body): " + "; ".join(
                f"{n} × {show(b, 80)}" for b, n in bodies.most_common()))
        for key, matcher in s.distinct.items():
            values = [getattr(r, key) if key == "status" else r.body.strip() for r in results]
            failure = matcher.check(len(set(values)))
            if failure:
                seen = show(sorted(set(map(str, values))))
                plural = "bodies" if key == "body" else "statuses"
                ctx.fail(f"distinct {plural} over {s.repeat} requests: {failure} (saw {seen})")

    @staticmethod
    def check(s: CurlSpec, result: probes.HttpResult) -> str | None:
        want = s.outcome or "ok"
        if result.outcome != want:
            detail = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.exit}"
            return f"expected outcome {want}, got {result.outcome} ({detail})"
        if want != "ok":
            return None
        if s.status is not None:
            failure = s.status.check(result.status)
            if failure:
                return f"status: {failure}"
        elif s.outcome is None and result.status is not None and result.status >= 400:
            return f"status: expected a success (below 400), got {result.status}"
        for name, matcher in s.header_matchers.items():
            value = next((v for k, v in result.headers.items() if k.lower() == name.lower()), None)
            failure = matcher.check(value)
            if failure:
                return f"header {name}: {failure}"
        if s.body is not None:
            failure = s.body.check(result.body)
            if failure:
                return f"body: {failure}"
        return None

    def title(self, s: CurlSpec) -> str:
        where = f" from {s.origin}" if s.origin not in (None, "host") else ""
        times = f" ×{s.repeat}" if s.repeat > 1 else ""
        return f"curl {s.method + ' ' if s.method else ''}{s.url}{where}{times}"


# --------------------------------------------------------------------------- exec


@register
class Exec(StepKind):
    name = "exec"
    default_timeout = 30.0
    summary = "{pod, container, command: [..] or \"shell line\", stdin, expect: {exit, output, stdout, stderr}}"

    def parse(self, p: Parse) -> Any:
        f = p.fields()
        pod = f.take("pod", "str", required=True)
        namespace = f.take("namespace", "str", default="default")
        container = f.take("container", "str")
        command = f.take("command", required=True)
        stdin = f.take("stdin", "str")
        f.finish()
        if isinstance(command, str):
            argv = ["sh", "-c", command]
        elif isinstance(command, list) and command and all(isinstance(a, (str, int, float)) for a in command):
            argv = [str(a) for a in command]
        else:
            if command is not None:
                p.problems.add(join(p.path, "command"), f"expected a list of arguments or a shell line, got "
                                                         f"{describe(command)}")
            argv = []
        e = p.expect_fields()
        checks = {key: p.matcher(e.raw(key), join(p.expect_path, key))
                  for key in ("exit", "output", "stdout", "stderr") if e.has(key)}
        e.finish()
        checks.setdefault("exit", compile_matcher(0, "", p.problems))
        return pod, namespace, container, argv, stdin, checks

    async def run(self, ctx: Context, spec: Any) -> None:
        pattern, namespace, container, argv, stdin, checks = spec
        pod = ctx.pod(pattern, namespace)
        result = await ctx.cluster.exec(pod.metadata.name, argv, container=container, namespace=namespace,
                                        input=stdin.encode() if stdin is not None else None, timeout=ctx.timeout)
        ctx.log(_truncate((result.stdout + result.stderr).rstrip("\n")))
        ctx.log(f"(exit status {result.returncode})")
        values = {"exit": result.returncode, "output": result.stdout + result.stderr, "stdout": result.stdout,
                  "stderr": result.stderr}
        for key, matcher in checks.items():
            failure = matcher.check(values[key])
            if failure:
                ctx.fail(f"{key}: {failure}")

    def title(self, spec: Any) -> str:
        argv = spec[3]
        shown = argv[2] if argv[:2] == ["sh", "-c"] and len(argv) == 3 else " ".join(argv)
        return f"exec {spec[0]} -- {shown}"


# --------------------------------------------------------------------------- connect


@register
class Connect(StepKind):
    name = "connect"
    default_timeout = 2.0
    summary = "{tcp | udp: HOST:PORT, from, send, expect: {outcome: ok|refused|reset|timeout, reply}}"

    def parse(self, p: Parse) -> Any:
        f = p.fields()
        tcp, udp = f.take("tcp", "str"), f.take("udp", "str")
        origin = f.take("from", "str")
        namespace = f.take("namespace", "str", default="default")
        send = f.take("send", "str")
        f.finish()
        if (tcp is None) == (udp is None) and f.ok:
            p.problems.add(p.path, "give exactly one of tcp: HOST:PORT or udp: HOST:PORT")
        protocol, target = ("tcp", tcp) if tcp is not None else ("udp", udp)
        host, port = "", 0
        if target is not None and not (p.templated and "{{" in target):
            host, sep, port_text = target.rpartition(":")
            if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
                p.problems.add(join(p.path, protocol), f'expected HOST:PORT such as 127.96.0.10:53, got "{target}"')
            else:
                port = int(port_text)
        e = p.expect_fields()
        outcome = e.take("outcome", "str", choices=probes.OUTCOMES, default="ok")
        reply = p.matcher(e.raw("reply"), join(p.expect_path, "reply")) if e.has("reply") else None
        e.finish()
        return protocol, host, port, origin, namespace, send, outcome, reply

    async def run(self, ctx: Context, spec: Any) -> None:
        protocol, host, port, where, namespace, send, outcome, reply = spec
        await ctx.settle()
        origin = ctx.origin(where, namespace)
        if not ctx.pods_share_host_network():  # a probe process in the right namespace
            code, out, err = await ctx.runner(origin, target=host)(probes.probe_argv(protocol, host, port, ctx.timeout, send),
                                                      ctx.timeout + 10)
            result = probes.parse_probe_output(code, out, err)
        else:
            probe = probes.tcp_probe if protocol == "tcp" else probes.udp_probe
            enough = (lambda text: reply.check(text) is None) if reply is not None else None
            result = await probe(host, port, source_ip=origin.ip, send=send, timeout=ctx.timeout, enough=enough)
        ctx.log(result.transcript())
        if result.outcome != outcome:
            detail = f" ({result.detail})" if result.detail else ""
            ctx.fail(f"expected outcome {outcome}, got {result.outcome}{detail}")
        if reply is not None:
            failure = reply.check(result.reply)
            if failure:
                ctx.fail(f"reply: {failure}")

    def title(self, spec: Any) -> str:
        protocol, host, port, where, *_ = spec
        return f"connect {protocol} {host}:{port}" + (f" from {where}" if where not in (None, "host") else "")


# --------------------------------------------------------------------------- DNS


RCODES = ("NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "FORMERR", "NOTIMP")


class _Lookup(StepKind):
    """dig and nslookup: the same fields, a different real tool."""

    default_timeout = 5.0
    summary = "{name, type, server, from, expect: {rcode, answers}}"

    def parse(self, p: Parse) -> Any:
        f = p.fields()
        name = f.take("name", "str", required=True)
        rtype = (f.take("type", "str", default="A") or "A").upper()
        server = f.take("server", "str")
        origin = f.take("from", "str")
        namespace = f.take("namespace", "str", default="default")
        search = f.take("search", "bool", default=True)
        f.finish()
        e = p.expect_fields()
        rcode = e.take("rcode", "str", choices=RCODES, default="NOERROR")
        answers = e.raw("answers") if e.has("answers") else None
        e.finish()
        matcher = None
        if isinstance(answers, list):
            matcher = compile_matcher(sorted(str(a) for a in answers), "", p.problems)
        elif answers is not None:
            matcher = p.matcher(answers, join(p.expect_path, "answers"))
        return name, rtype, server, origin, namespace, search, rcode, matcher

    async def run(self, ctx: Context, spec: Any) -> None:
        name, rtype, server, where, namespace, search, rcode, matcher = spec
        if server is None:
            if "cluster-dns" not in ctx.capabilities:
                ctx.fail("this cluster has no DNS server yet (capability cluster-dns): give server: HOST[:PORT], "
                         "or add requires: [cluster-dns] to the scenario so it is skipped")
            server = dns_server(ctx.cluster)
        await ctx.settle()
        origin = ctx.origin(where, namespace)
        candidates = self._candidates(ctx, name, origin) if search else [name]
        result = probes.DnsResult("error")
        for candidate in candidates:
            argv_for = probes.dig_argv if self.name == "dig" else probes.nslookup_argv
            parse = probes.parse_dig if self.name == "dig" else probes.parse_nslookup
            server_host = server.rsplit(":", 1)[0] if server.count(":") == 1 else server
            code, out, err = await ctx.runner(origin, target=server_host)(argv_for(candidate, rtype, server, ctx.timeout),
                                                                          ctx.timeout + 5)
            result = parse(code, out, err)
            if result.outcome != "ok" or (result.rcode == "NOERROR" and result.answers):
                break
        ctx.log(_truncate(result.transcript()))
        if result.outcome != "ok":
            ctx.fail(f"no answer from {server}: {result.outcome}")
        if result.rcode != rcode:
            ctx.fail(f"expected rcode {rcode}, got {result.rcode}")
        if matcher is not None:
            failure = matcher.check(sorted(result.answers))
            if failure:
                ctx.fail(f"answers: {failure}")

    @staticmethod
    def _candidates(ctx: Context, name: str, origin: Origin) -> list[str]:
        """The names a pod's resolver tries, in order (search list and ndots, as glibc does)."""
        if origin.kind != "pod" or name.endswith("."):
            return [name]
        pod = ctx.pod(origin.name, origin.namespace)
        zone = ctx.cluster.config.cluster_domain
        searches: list[str] = []
        ndots = 5
        if (pod.spec.dns_policy or "ClusterFirst") in ("ClusterFirst", "ClusterFirstWithHostNet"):
            searches = [f"{origin.namespace}.svc.{zone}", f"svc.{zone}", zone]
        config = pod.spec.dns_config
        if config is not None:
            searches += [s for s in config.searches if s not in searches]
            for option in config.options:
                if option.name == "ndots" and option.value and option.value.isdigit():
                    ndots = int(option.value)
        expanded = [f"{name}.{s}" for s in searches]
        return [name, *expanded] if name.count(".") >= ndots else [*expanded, name]

    def title(self, spec: Any) -> str:
        name, rtype, server, where, *_ = spec
        tool = f"{self.name} {name}" + (f" {rtype}" if rtype != "A" else "")
        return tool + (f" @{server}" if server else "") + (f" from {where}" if where not in (None, "host") else "")


@register
class Dig(_Lookup):
    name = "dig"


@register
class Nslookup(_Lookup):
    name = "nslookup"


# --------------------------------------------------------------------------- background load


PROBE_KINDS = ("curl", "connect", "exec")


@dataclass
class Background:
    """A probe repeated until stopped, with its tally."""

    name: str
    title: str
    task: asyncio.Task[None] | None = None
    successes: int = 0
    failures: int = 0
    failure_log: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.title}: {self.successes} succeeded, {self.failures} failed"]
        lines += [f"  {line}" for line in self.failure_log[:10]]
        if len(self.failure_log) > 10:
            lines.append(f"  … and {len(self.failure_log) - 10} more failures")
        return "\n".join(lines)


@register
class BackgroundStep(StepKind):
    name = "background"
    summary = "{name, every, curl | connect | exec: {...}}: repeat a probe until `stop: {background: NAME}`"

    def parse(self, p: Parse) -> Any:
        p.no_expect("background (its probe carries the expectation)")
        f = p.fields()
        label = f.take("name", "str", default="background")
        every = f.take("every", "duration", default=0.1)
        timeout = f.take("timeout", "duration")
        present = [k for k in PROBE_KINDS if f.has(k)]
        if len(present) != 1 and f.ok:
            p.problems.add(p.path, f"give exactly one probe: {', '.join(PROBE_KINDS)}")
        probe = None
        if present:
            kind = kinds()[present[0]]
            raw = f.raw(present[0])
            text = split_common(kind, raw, {}, p.path, p.problems)
            sub = Parse(text.value, text.expect, text.has_expect, text.path, text.expect_path, p.problems,
                        p.templated, p.base_dir)
            probe = (kind, kind.parse(sub), text.timeout)
        f.finish()
        return label, every, timeout, probe

    def lifts(self, value: Any) -> tuple[str, ...]:
        return ()

    async def run(self, ctx: Context, spec: Any) -> None:
        label, every, timeout, (kind, probe_spec, probe_timeout) = spec
        if label in ctx.backgrounds and not ctx.backgrounds[label].task.done():
            ctx.fail(f'background "{label}" is already running')
        bg = Background(label, kind.title(probe_spec))
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def repeat() -> None:
            while True:
                sub = type(ctx)(ctx.cluster, ctx.base_dir, timeout=probe_timeout or timeout or kind.default_timeout,
                                capabilities=ctx.capabilities)
                try:
                    await kind.run(sub, probe_spec)
                    bg.successes += 1
                except Exception as exc:  # noqa: BLE001 - any failure of one probe is counted, not fatal
                    bg.failures += 1
                    bg.failure_log.append(f"at {loop.time() - started:.2f}s: {exc}")
                await asyncio.sleep(every)
        bg.task = asyncio.ensure_future(repeat())
        ctx.backgrounds[label] = bg
        ctx.log(f"started {bg.title} every {every:g}s")

    def title(self, spec: Any) -> str:
        label, every, _timeout, (kind, probe_spec, _) = spec
        return f'background "{label}": {kind.title(probe_spec)} every {every:g}s'


async def stop_background(ctx: Context, label: str, failures: Matcher, successes: Matcher) -> None:
    bg = ctx.backgrounds.get(label)
    if bg is None:
        known = ", ".join(ctx.backgrounds) or "none"
        ctx.fail(f'no background named "{label}" (running: {known})')
    assert bg is not None and bg.task is not None
    bg.task.cancel()
    try:
        await bg.task
    except asyncio.CancelledError:
        pass
    del ctx.backgrounds[label]
    ctx.log(bg.summary())
    for what, matcher, value in (("failures", failures, bg.failures), ("successes", successes, bg.successes)):
        failure = matcher.check(value)
        if failure:
            ctx.fail(f'background "{label}" {what}: {failure}')
