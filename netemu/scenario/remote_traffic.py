"""Traffic steps on a cluster reached by its API: every tool runs inside the cluster, via ``pods/exec``.

``RemoteContext`` is the steps' ``Context`` for a ``RemoteCluster``:

- from a pod (``from: POD``): the tool runs in that pod, as on netemu;
- from the host (the default): it runs in the runner's client pod (agnhost by default, which has
  curl, dig, nslookup and bash). Node ports and load-balancer addresses are reached at the node
  and ingress addresses, which is what a host on the node network would use;
- from ``node/NODE``: it runs in a client pod on that node's network (``hostNetwork``), started
  when a step first asks for it, with the node's IP as the source, as on netemu.
- ``connect`` probes run as a small bash script (``/dev/tcp``, ``/dev/udp``) in the pod, and its
  result is classified as netemu's in-process probe classifies: ok, refused, reset, timeout.

``RemoteResolver`` fills references in as netemu does, and then writes the scenario's
``default`` namespace in DNS names (``web-0.nginx.default.svc.cluster.local``) as the namespace
the scenario really runs in.
"""
from __future__ import annotations

import asyncio
import json
import re
from dataclasses import asdict
from typing import Any

from netemu.scenario.probes import ConnectResult, Runner
from netemu.scenario.refs import Resolver
from netemu.scenario.remote import CLIENT_POD, warning_events
from netemu.scenario.steps import Context, Origin, StepKind

# Step kinds that wait on the cluster: on a real cluster they get at least its wait timeout.
WAITING_KINDS = ("wait", "delete", "logs")
_DEFAULT_IN_DNS = re.compile(r"(?<![A-Za-z0-9-])default(?=\.svc\b)")

# connect's probe in a pod: open the connection with bash, say so on stderr, send, then read the
# reply until the peer closes or, once it has answered, goes quiet for QUIET seconds (as
# probes._read_reply does); the whole probe runs under `timeout`.
QUIET = 0.2
PROBE_SCRIPT = r"""
proto=$1 host=$2 port=$3 send=$4 hassend=$5 wait=$6 quiet=$7
exec 3<>"/dev/$proto/$host/$port" || exit 7
echo NETEMU-CONNECTED >&2
if [ "$hassend" = 1 ]; then printf '%s' "$send" >&3
elif [ "$proto" = udp ]; then printf '\n' >&3
else exit 0
fi
n=0
while [ "$n" -lt 65536 ] && IFS= read -r -d '' -n 1 -t "$wait" c <&3; do
  printf '%s' "$c"
  wait=$quiet n=$((n + 1))
done
"""
_MARK = "NETEMU-CONNECTED"


def probe_request(argv: list[str]) -> tuple[str, str, int, float, str | None] | None:
    """(protocol, host, port, timeout, send) when ``argv`` is netemu's in-pod connect probe
    (``probes.probe_argv``), else None."""
    if len(argv) < 7 or argv[1:3] != ["-m", "netemu.scenario.probes"]:
        return None
    protocol, host, port, timeout = argv[3], argv[4], int(argv[5]), float(argv[6])
    return protocol, host, port, timeout, (argv[7] if len(argv) > 7 else None)


def shell_probe_argv(protocol: str, host: str, port: int, timeout: float, send: str | None) -> list[str]:
    return ["timeout", f"{timeout:g}", "bash", "-c", PROBE_SCRIPT, "probe", protocol, host, str(port),
            send or "", "1" if send is not None else "0", f"{timeout:g}", f"{QUIET:g}"]


def classify_probe(protocol: str, timeout: float, code: int, out: str, err: str) -> ConnectResult:
    """The shell probe's result, named as ``probes.tcp_probe`` / ``udp_probe`` name theirs."""
    lines = [line for line in err.splitlines() if line.strip() and line.strip() != _MARK]
    detail = lines[-1].split(": ")[-1].strip() if lines else ""
    text = err.lower()
    if "command not found" in text or "executable file not found" in text or code in (126, 127):
        return ConnectResult("error", detail=f"the pod cannot run the probe (it needs bash and timeout): {detail}")
    if protocol == "udp":
        if out:
            return ConnectResult("ok", out)
        if "refused" in text:
            return ConnectResult("refused", detail=detail)
        return ConnectResult("timeout", detail=f"no reply within {timeout:g}s")
    if "reset" in text:
        return ConnectResult("reset", out, detail=detail)
    if _MARK in err:
        return ConnectResult("ok", out)
    if "refused" in text:
        return ConnectResult("refused", detail=detail)
    if "timed out" in text or not lines:   # killed by timeout while connecting
        return ConnectResult("timeout", detail=detail or f"no connection within {timeout:g}s")
    return ConnectResult("error", detail=detail)


def translating(run: Runner) -> Runner:
    """``run``, with netemu's Python connect probe replaced by the shell probe and its result."""
    async def wrapped(argv: list[str], timeout: float) -> tuple[int, str, str]:
        request = probe_request(argv)
        if request is None:
            return await run(argv, timeout)
        protocol, host, port, probe_timeout, send = request
        code, out, err = await run(shell_probe_argv(protocol, host, port, probe_timeout, send), timeout)
        return 0, json.dumps(asdict(classify_probe(protocol, probe_timeout, code, out, err))), ""
    return wrapped


class RemoteResolver(Resolver):
    """References as netemu fills them in, then ``.default.svc`` names in the scenario's namespace."""

    def resolve_text(self, text: str) -> Any:
        value = super().resolve_text(text)
        return _DEFAULT_IN_DNS.sub(self.cluster.namespace, value) if isinstance(value, str) else value


class RemoteContext(Context):
    """Steps' context on a ``RemoteCluster`` (see the module's docstring)."""

    def __post_init__(self) -> None:
        self.resolver = RemoteResolver(self.cluster)

    def default_timeout(self, kind: StepKind) -> float:
        if kind.name in WAITING_KINDS:
            return max(kind.default_timeout, self.cluster.wait_timeout)
        return kind.default_timeout

    async def timeout_details(self) -> list[str]:
        return await asyncio.to_thread(warning_events, self.cluster)

    def pods_share_host_network(self) -> bool:
        return False

    def from_node_namespace(self, origin: Origin, target: str | None) -> bool:
        return False

    def runner(self, origin: Origin, container: str | None = None, target: str | None = None) -> Runner:
        if origin.kind == "pod":
            return translating(super().runner(origin, container, target))
        cluster = self.cluster

        async def in_client_pod(argv: list[str], timeout: float) -> tuple[int, str, str]:
            pod = await cluster.node_client(origin.name) if origin.kind == "node" else CLIENT_POD
            result = await cluster.exec(pod, argv, namespace=cluster.namespace, timeout=timeout)
            return result.returncode, result.stdout, result.stderr
        return translating(in_client_pod)
