"""kubectl-style output for ``netemu get`` and ``netemu describe``: tables, YAML/JSON and describe text.

Pure functions: objects (and ``now``) in, text out. The layouts follow kubectl's own sources:
tables from ``pkg/printers/internalversion/printers.go`` printed through cli-runtime's tabwriter
(minimum width 6, padding 3), describe text from ``staging/src/k8s.io/kubectl/pkg/describe/describe.go``
(tabwriter padding 2), ages from apimachinery's ``duration.HumanDuration``. Both tab layouts run
through a port of Go's ``text/tabwriter`` so column blocks break exactly where kubectl's do.

Objects are printed as given: pass list results in the API server's order (namespace, then name).
Timestamps in describe text are shown in the time zone of ``now``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Mapping, Sequence, TypedDict

import yaml

from netemu.api import codec
from netemu.api.validation import base64_error, decoded
from netemu.api.objects import (
    ConfigMap, Container, ContainerState, ContainerStatus, Deployment, Endpoint, EndpointSlice, EnvVar,
    Impairment, LabelSelector, Namespace, Node, Partition, Pod, PodSpec, PodTemplateSpec, Probe, Secret, Service,
    StatefulSet, ReplicaSet, DaemonSet, STORED_ONLY, STORED_ONLY_TYPES, stored_only,
)
from netemu.api.objects import Capture, ServiceAccount
from netemu.api.batch import CronJob, Job
from netemu.api.ingress import Ingress, IngressClass
from netemu.api.networkpolicy import NetworkPolicy
from netemu.api.kinds import group_of, plural
from netemu.api.objects import Event as EventObject
from netemu.api.objects import UNEMULATED_VOLUME_SOURCES
from netemu.errors import InvalidError, NotFoundError

KUBELET_VERSION = "v1.31.0-netemu"
CONTAINER_RUNTIME_VERSION = "netemu://0.1.0"
NODE_ROLE_LABEL_PREFIX = "node-role.kubernetes.io/"
NODE_ROLE_LABEL = "kubernetes.io/role"
LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"

# --------------------------------------------------------------------------- resource names


@dataclass(frozen=True)
class _Resource:
    cls: type
    plural: str
    singular: str
    short: str
    group: str

    @property
    def kind_prefix(self) -> str:
        """What kubectl puts before ``/name`` when several kinds are listed (``deployment.apps``)."""
        return f"{self.singular}.{self.group}" if self.group else self.singular


_RESOURCES: tuple[_Resource, ...] = (
    _Resource(Pod, "pods", "pod", "po", ""),
    _Resource(Service, "services", "service", "svc", ""),
    _Resource(Deployment, "deployments", "deployment", "deploy", "apps"),
    _Resource(ReplicaSet, "replicasets", "replicaset", "rs", "apps"),
    _Resource(StatefulSet, "statefulsets", "statefulset", "sts", "apps"),
    _Resource(DaemonSet, "daemonsets", "daemonset", "ds", "apps"),
    _Resource(EndpointSlice, "endpointslices", "endpointslice", "", "discovery.k8s.io"),
    _Resource(Node, "nodes", "node", "no", ""),
    _Resource(Namespace, "namespaces", "namespace", "ns", ""),
    _Resource(ConfigMap, "configmaps", "configmap", "cm", ""),
    _Resource(Secret, "secrets", "secret", "", ""),
    _Resource(ServiceAccount, "serviceaccounts", "serviceaccount", "sa", ""),
    _Resource(EventObject, "events", "event", "ev", ""),
    _Resource(Impairment, "impairments", "impairment", "", "netemu.dev"),
    _Resource(Partition, "partitions", "partition", "", "netemu.dev"),
    _Resource(Capture, "captures", "capture", "", "netemu.dev"),
    _Resource(Job, "jobs", "job", "", "batch"),
    _Resource(CronJob, "cronjobs", "cronjob", "cj", "batch"),
    _Resource(Ingress, "ingresses", "ingress", "ing", "networking.k8s.io"),
    _Resource(IngressClass, "ingressclasses", "ingressclass", "", "networking.k8s.io"),
    _Resource(NetworkPolicy, "networkpolicies", "networkpolicy", "netpol", "networking.k8s.io"),
    *(_Resource(cls, plural(cls.KIND), cls.KIND.lower(), next(iter(shorts), ""), group_of(cls.API_VERSION))
      for cls, (_, _, _, shorts) in zip(STORED_ONLY_TYPES, STORED_ONLY)),
)
_BY_CLASS = {r.cls: r for r in _RESOURCES}
# kubectl's "all" category, restricted to what netemu has, in kubectl's order.
ALL_KINDS: tuple[type, ...] = (Pod, Service, DaemonSet, Deployment, ReplicaSet, StatefulSet, CronJob, Job)  # what `get all` lists


def resolve_kind(name: str) -> type:
    """The object type a kubectl resource name means (``po``, ``pods``, ``svc``, ``deployment.apps``, ``Pod`` ...)."""
    from netemu.api.kinds import resolve_kind as kind_of
    from netemu.api.objects import KIND_BY_NAME
    return KIND_BY_NAME[kind_of(name.strip())]


def resolve_kinds(request: str) -> tuple[list[type], bool]:
    """Types for a ``get`` argument (``pods``, ``all``, ``pods,svc``) and whether rows carry a kind prefix."""
    parts = [p for p in request.split(",") if p.strip()]
    if not parts:
        raise NotFoundError('the server doesn\'t have a resource type ""')
    kinds: list[type] = []
    for part in parts:
        for cls in ALL_KINDS if part.strip().lower() == "all" else (resolve_kind(part),):
            if cls not in kinds:
                kinds.append(cls)
    # kubectl prefixes names with the kind whenever the request names several types or "all".
    return kinds, len(parts) > 1 or request.strip().lower() == "all"


# --------------------------------------------------------------------------- time


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 timestamp (``2024-05-01T10:00:00Z``) as an aware datetime; None if absent or invalid."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def human_duration(delta: timedelta) -> str:
    """apimachinery's ``duration.HumanDuration``: ``5s``, ``2m10s``, ``3h4m``, ``2d3h``, ``400d``, ``3y2d``."""
    micros = delta // timedelta(microseconds=1)
    seconds = micros // 1_000_000 if micros >= 0 else -((-micros) // 1_000_000)
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 60 * 2:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        s = seconds % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def _aware(now: datetime) -> datetime:
    """``now`` with a zone; a naive value is taken as UTC."""
    return now if now.tzinfo else now.replace(tzinfo=timezone.utc)


def _since(value: str | None, now: datetime) -> str:
    """kubectl's translateTimestampSince."""
    when = parse_time(value)
    return "<unknown>" if when is None else human_duration(now - when)


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _rfc1123z(value: str | None, now: datetime) -> str:
    """Go's ``time.RFC1123Z`` in the zone of ``now``; an absent time prints as Go's zero time."""
    when = parse_time(value)
    if when is None:
        return "Mon, 01 Jan 0001 00:00:00 +0000"
    when = when.astimezone(now.tzinfo or timezone.utc)
    offset = when.strftime("%z") or "+0000"
    return (f"{_DAYS[when.weekday()]}, {when.day:02d} {_MONTHS[when.month - 1]} {when.year:04d} "
            f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} {offset}")


# --------------------------------------------------------------------------- Go's text/tabwriter


def tabwrite(text: str, *, minwidth: int, padding: int) -> str:
    """Go ``text/tabwriter`` (pad char ' ', no flags): tab-terminated cells aligned in column blocks.

    A column block is a run of consecutive lines that all have a cell in that column; the last
    cell of a line is never part of a column. Each cell of a block is padded to the widest + padding.
    """
    lines = [line.split("\t") for line in text.split("\n")]
    out: list[str] = []
    widths: list[int] = []

    def write_lines(first: int, end: int) -> None:
        for i in range(first, end):
            for j, cell in enumerate(lines[i]):
                out.append(cell)
                if j < len(widths):
                    out.append(" " * (widths[j] - len(cell)))
            if i + 1 < len(lines):
                out.append("\n")

    def format_block(line0: int, line1: int) -> None:
        column = len(widths)
        this = line0
        while this < line1:
            if column >= len(lines[this]) - 1:
                this += 1
                continue
            write_lines(line0, this)
            line0 = this
            width = minwidth
            while this < line1 and column < len(lines[this]) - 1:
                width = max(width, len(lines[this][column]) + padding)
                this += 1
            widths.append(width)
            format_block(line0, this)
            widths.pop()
            line0 = this
        write_lines(line0, line1)

    format_block(0, len(lines))
    return "".join(out)


# --------------------------------------------------------------------------- small formatters


def _format_labels(labels: Mapping[str, str] | None) -> str:
    """apimachinery ``labels.FormatLabels``."""
    if not labels:
        return "<none>"
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


def _selector_string(selector: LabelSelector | None) -> str:
    """``metav1.LabelSelectorAsSelector(sel).String()``: requirements sorted by key."""
    if selector is None:
        return ""
    reqs: list[tuple[str, str]] = [(k, f"{k}={v}") for k, v in selector.match_labels.items()]
    for expr in selector.match_expressions:
        values = ",".join(sorted(expr.values))
        text = {"In": f"{expr.key} in ({values})", "NotIn": f"{expr.key} notin ({values})",
                "Exists": expr.key, "DoesNotExist": f"!{expr.key}"}.get(expr.operator, expr.key)
        reqs.append((expr.key, text))
    return ",".join(text for _, text in sorted(reqs, key=lambda r: r[0]))


def _list_with_more(items: Iterable[str], limit: int = 3, empty: str = "<unset>") -> str:
    """kubectl's ``a,b,c + N more...`` list."""
    items = list(items)
    if len(items) > limit:
        return ",".join(items[:limit]) + f" + {len(items) - limit} more..."
    return ",".join(items) or empty


def _host_port(host: str, port: Any) -> str:
    """Go ``net.JoinHostPort``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _find_node_roles(node: Node) -> list[str]:
    roles = set()
    for key, value in node.metadata.labels.items():
        if key.startswith(NODE_ROLE_LABEL_PREFIX) and key[len(NODE_ROLE_LABEL_PREFIX):]:
            roles.add(key[len(NODE_ROLE_LABEL_PREFIX):])
        elif key == NODE_ROLE_LABEL and value:
            roles.add(value)
    return sorted(roles)


def _node_info(node: Node) -> dict[str, str]:
    """status.nodeInfo (kept verbatim in ``extra``), with netemu's kubelet and runtime versions."""
    info = dict(node.status.extra.get("nodeInfo") or {})
    info.setdefault("kubeletVersion", KUBELET_VERSION)
    info.setdefault("containerRuntimeVersion", CONTAINER_RUNTIME_VERSION)
    return {k: str(v) for k, v in info.items()}


def _pod_ips(pod: Pod) -> list[str]:
    ips = [p.ip for p in pod.status.pod_ips if p.ip]
    return ips or ([pod.status.pod_ip] if pod.status.pod_ip else [])


def _cluster_ips(svc: Service) -> list[str]:
    return list(svc.spec.cluster_ips) or ([svc.spec.cluster_ip] if svc.spec.cluster_ip else [])


def _condition_true(conditions: Iterable[Any], kind: str) -> bool:
    return any(c.type == kind and c.status == "True" for c in conditions)


def _controller_of(owner_references: Iterable[Any]) -> str:
    for ref in owner_references:
        if ref.controller:
            return f"{ref.kind}/{ref.name}"
    return ""


def _replicas(obj: Deployment | ReplicaSet | StatefulSet) -> int:
    return 1 if obj.spec.replicas is None else obj.spec.replicas


# --------------------------------------------------------------------------- pod status


def _is_restartable(container: Container | None) -> bool:
    return container is not None and container.restart_policy == "Always"


def _finished_at(status: ContainerStatus) -> datetime | None:
    term = status.last_state.terminated
    return parse_time(term.finished_at) if term is not None else None


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if b is None:
        return a
    return b if a is None or a < b else a


@dataclass(frozen=True)
class _PodSummary:
    ready: int
    total: int
    reason: str
    restarts: int
    last_restart: datetime | None


def _summarize_pod(pod: Pod) -> _PodSummary:
    """kubectl printPod: READY counts, STATUS reason and RESTARTS."""
    spec, status = pod.spec, pod.status
    restarts = restartable_restarts = ready = 0
    total = len(spec.containers)
    last_restart: datetime | None = None
    last_restartable_restart: datetime | None = None
    reason = status.reason or status.phase
    for cond in status.conditions:
        if cond.type == "PodScheduled" and cond.reason == "SchedulingGated":
            reason = "SchedulingGated"

    init_specs = {c.name: c for c in spec.init_containers}
    total += sum(1 for c in spec.init_containers if _is_restartable(c))
    initializing = False
    for i, cs in enumerate(status.init_container_statuses):
        restarts += cs.restart_count
        last_restart = _later(last_restart, _finished_at(cs))
        restartable = _is_restartable(init_specs.get(cs.name))
        if restartable:
            restartable_restarts += cs.restart_count
            last_restartable_restart = _later(last_restartable_restart, _finished_at(cs))
        term, wait = cs.state.terminated, cs.state.waiting
        if term is not None and term.exit_code == 0:
            continue
        if restartable and cs.started:
            ready += 1 if cs.ready else 0
            continue
        if term is not None:
            if term.reason:
                reason = "Init:" + term.reason
            elif term.signal:
                reason = f"Init:Signal:{term.signal}"
            else:
                reason = f"Init:ExitCode:{term.exit_code}"
        elif wait is not None and wait.reason and wait.reason != "PodInitializing":
            reason = "Init:" + wait.reason
        else:
            reason = f"Init:{i}/{len(spec.init_containers)}"
        initializing = True
        break

    if not initializing or _condition_true(status.conditions, "Initialized"):
        restarts, last_restart = restartable_restarts, last_restartable_restart
        has_running = False
        for cs in reversed(status.container_statuses):
            restarts += cs.restart_count
            last_restart = _later(last_restart, _finished_at(cs))
            term, wait = cs.state.terminated, cs.state.waiting
            if wait is not None and wait.reason:
                reason = wait.reason
            elif term is not None and term.reason:
                reason = term.reason
            elif term is not None:
                reason = f"Signal:{term.signal}" if term.signal else f"ExitCode:{term.exit_code}"
            elif cs.ready and cs.state.running is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running" if _condition_true(status.conditions, "Ready") else "NotReady"

    if pod.metadata.deletion_timestamp and status.reason == "NodeLost":
        reason = "Unknown"
    elif pod.metadata.deletion_timestamp and status.phase not in ("Succeeded", "Failed"):
        reason = "Terminating"
    return _PodSummary(ready, total, reason, restarts, last_restart)


def pod_status(pod: Pod) -> str:
    """The STATUS column of ``kubectl get pods`` (Running, ContainerCreating, CrashLoopBackOff, Terminating ...)."""
    return _summarize_pod(pod).reason


# --------------------------------------------------------------------------- tables


def _pod_cells(pod: Pod, now: datetime, wide: bool) -> list[str]:
    s = _summarize_pod(pod)
    restarts = str(s.restarts)
    if s.restarts and s.last_restart is not None:
        restarts = f"{s.restarts} ({human_duration(now - s.last_restart)} ago)"
    cells = [pod.metadata.name, f"{s.ready}/{s.total}", s.reason, restarts,
             _since(pod.metadata.creation_timestamp, now)]
    if wide:
        ips = _pod_ips(pod)
        gates = pod.spec.extra.get("readinessGates") or []
        gates_cell = "<none>"
        if gates:
            by_type = {c.type: c.status for c in pod.status.conditions}
            true = sum(1 for g in gates if by_type.get(g.get("conditionType")) == "True")
            gates_cell = f"{true}/{len(gates)}"
        cells += [ips[0] if ips else "<none>", pod.spec.node_name or "<none>",
                  pod.status.extra.get("nominatedNodeName") or "<none>", gates_cell]
    return cells


def _load_balancer_ips(svc: Service, wide: bool) -> str:
    found = sorted({i.ip or i.hostname for i in svc.status.load_balancer.ingress if i.ip or i.hostname})
    text = ",".join(found)
    if not wide and len(text) > 16:
        text = text[:13] + "..."
    return text


def _external_ip(svc: Service, wide: bool) -> str:
    kind, external = svc.spec.type, list(svc.spec.external_ips)
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) or "<none>"
    if kind == "LoadBalancer":
        lb = _load_balancer_ips(svc, wide)
        if external:
            return ",".join(([*lb.split(",")] if lb else []) + external)
        return lb or "<pending>"
    if kind == "ExternalName":
        return svc.spec.external_name
    return "<unknown>"


def _service_cells(svc: Service, now: datetime, wide: bool) -> list[str]:
    ports = ",".join(f"{p.port}:{p.node_port}/{p.protocol}" if p.node_port else f"{p.port}/{p.protocol}"
                     for p in svc.spec.ports)
    cluster_ips = _cluster_ips(svc)
    cells = [svc.metadata.name, svc.spec.type, cluster_ips[0] if cluster_ips else "<none>",
             _external_ip(svc, wide), ports or "<none>", _since(svc.metadata.creation_timestamp, now)]
    if wide:
        cells.append(_format_labels(svc.spec.selector))
    return cells


def _deployment_cells(d: Deployment, now: datetime, wide: bool) -> list[str]:
    cells = [d.metadata.name, f"{d.status.ready_replicas}/{_replicas(d)}", str(d.status.updated_replicas),
             str(d.status.available_replicas), _since(d.metadata.creation_timestamp, now)]
    if wide:
        containers = d.spec.template.spec.containers
        cells += [",".join(c.name for c in containers), ",".join(c.image for c in containers),
                  _selector_string(d.spec.selector)]
    return cells


def _replicaset_cells(rs: ReplicaSet, now: datetime, wide: bool) -> list[str]:
    cells = [rs.metadata.name, str(_replicas(rs)), str(rs.status.replicas), str(rs.status.ready_replicas),
             _since(rs.metadata.creation_timestamp, now)]
    if wide:
        containers = rs.spec.template.spec.containers
        cells += [",".join(c.name for c in containers), ",".join(c.image for c in containers),
                  _selector_string(rs.spec.selector)]
    return cells


def _statefulset_cells(sts: StatefulSet, now: datetime, wide: bool) -> list[str]:
    cells = [sts.metadata.name, f"{sts.status.ready_replicas}/{_replicas(sts)}",
             _since(sts.metadata.creation_timestamp, now)]
    if wide:
        containers = sts.spec.template.spec.containers
        cells += [",".join(c.name for c in containers), ",".join(c.image for c in containers)]
    return cells


def _daemonset_cells(ds: DaemonSet, now: datetime, wide: bool) -> list[str]:
    """kubectl's printDaemonSet."""
    status = ds.status
    cells = [ds.metadata.name, str(status.desired_number_scheduled), str(status.current_number_scheduled),
             str(status.number_ready), str(status.updated_number_scheduled), str(status.number_available),
             _format_labels(ds.spec.template.spec.node_selector), _since(ds.metadata.creation_timestamp, now)]
    if wide:
        containers = ds.spec.template.spec.containers
        cells += [",".join(c.name for c in containers), ",".join(c.image for c in containers),
                  _selector_string(ds.spec.selector)]
    return cells


def _endpointslice_cells(eps: EndpointSlice, now: datetime, wide: bool) -> list[str]:
    ports = [str(p.port) if p.port is not None else (p.name if p.name is not None else "*") for p in eps.ports]
    addresses = [a for e in eps.endpoints for a in e.addresses]
    return [eps.metadata.name, eps.address_type, _list_with_more(ports), _list_with_more(addresses),
            _since(eps.metadata.creation_timestamp, now)]


def _node_cells(node: Node, now: datetime, wide: bool) -> list[str]:
    status = [("Ready" if c.status == "True" else "NotReady") for c in node.status.conditions if c.type == "Ready"][:1]
    status = status or ["Unknown"]
    if node.spec.unschedulable:
        status.append("SchedulingDisabled")
    info = _node_info(node)
    cells = [node.metadata.name, ",".join(status), ",".join(_find_node_roles(node)) or "<none>",
             _since(node.metadata.creation_timestamp, now), info["kubeletVersion"]]
    if wide:
        def address(kind: str) -> str:
            return next((a.address for a in node.status.addresses if a.type == kind), "<none>")
        cells += [address("InternalIP"), address("ExternalIP"), info.get("osImage") or "<unknown>",
                  info.get("kernelVersion") or "<unknown>", info.get("containerRuntimeVersion") or "<unknown>"]
    return cells


def _namespace_cells(ns: Namespace, now: datetime, wide: bool) -> list[str]:
    return [ns.metadata.name, ns.status.phase, _since(ns.metadata.creation_timestamp, now)]


def _configmap_cells(cm: ConfigMap, now: datetime, wide: bool) -> list[str]:
    return [cm.metadata.name, str(len(cm.data) + len(cm.binary_data)), _since(cm.metadata.creation_timestamp, now)]


def _secret_cells(secret: Secret, now: datetime, wide: bool) -> list[str]:
    return [secret.metadata.name, secret.type, str(len(secret.data)), _since(secret.metadata.creation_timestamp, now)]


def _service_account_cells(sa: ServiceAccount, now: datetime, wide: bool) -> list[str]:
    return [sa.metadata.name, str(len(sa.secrets)), _since(sa.metadata.creation_timestamp, now)]


def _event_cells(event: EventObject, now: datetime, wide: bool) -> list[str]:
    """kube-apiserver's printEvent. Its wide columns sit between the others (SUBOBJECT and SOURCE
    before MESSAGE); netemu's tables add wide columns at the end, so MESSAGE comes before them."""
    first = _since(event.first_timestamp or event.event_time, now)
    last = _since(event.last_timestamp, now) if event.last_timestamp else first
    count = event.count or 1
    ref = event.involved_object
    target = f"{ref.kind.lower()}/{ref.name}" if ref.name else ref.kind.lower()
    cells = [f"{last} (x{count} over {first})" if count > 1 else last, event.type, event.reason, target,
             event.message.strip()]
    if wide:
        component = event.source.component or event.reporting_component
        host = event.source.host or event.reporting_instance
        cells += [ref.field_path, f"{component}, {host}" if host else component, first, str(count),
                  event.metadata.name]
    return cells


def event_order(events: Iterable[Any]) -> list[Any]:
    """Events by when they last happened, as ``netemu get events`` lists them (oldest first)."""
    return sorted(events, key=lambda e: (parse_time(e.last_timestamp or e.first_timestamp or e.event_time)
                                         or datetime.min.replace(tzinfo=timezone.utc), e.metadata.name))


def impairment_target(imp: Impairment) -> str:
    """``service/web``, ``node/node-1``, ``link/node-1<->node-2``."""
    t = imp.spec.target
    return (f"service/{t.service}" if t.service else f"node/{t.node}" if t.node
            else f"link/{'<->'.join(t.link)}")


def _impairment_cells(imp: Impairment, now: datetime, wide: bool) -> list[str]:
    settings = " ".join(f"{what} {getattr(imp.spec, what)}" for what in ("delay", "jitter", "rate", "loss", "reset",
                                                                           "duplicate") if getattr(imp.spec, what))
    cells = [imp.metadata.name, impairment_target(imp), settings, imp.status.applied or "<pending>",
             _since(imp.metadata.creation_timestamp, now)]
    return cells + [imp.status.layer or "<none>"] if wide else cells


def _partition_cells(part: Partition, now: datetime, wide: bool) -> list[str]:
    asked = " | ".join(",".join(g.nodes) for g in part.spec.groups)
    return [part.metadata.name, asked, part.status.groups or "<pending>", _since(part.metadata.creation_timestamp, now)]


def capture_target(cap: Capture) -> str:
    """``pod/web``, ``node/node-1``, ``link/node-1<->node-2``."""
    t = cap.spec.target
    return f"pod/{t.pod}" if t.pod else f"node/{t.node}" if t.node else f"link/{'<->'.join(t.link)}"


def _capture_cells(cap: Capture, now: datetime, wide: bool) -> list[str]:
    cells = [cap.metadata.name, capture_target(cap), cap.status.phase or "<pending>", str(cap.status.frames),
             _since(cap.metadata.creation_timestamp, now)]
    return cells + [cap.spec.filter or "<none>", cap.status.file or "<none>"] if wide else cells


def _stored_only_cells(obj: Any, now: datetime, wide: bool) -> list[str]:
    return [obj.metadata.name, _since(obj.metadata.creation_timestamp, now)]


@dataclass(frozen=True)
class _Table:
    columns: tuple[str, ...]
    wide_columns: tuple[str, ...]
    cells: Callable[[Any, datetime, bool], list[str]]


_TABLES: dict[type, _Table] = {
    Pod: _Table(("NAME", "READY", "STATUS", "RESTARTS", "AGE"),
                ("IP", "NODE", "NOMINATED NODE", "READINESS GATES"), _pod_cells),
    Service: _Table(("NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"), ("SELECTOR",), _service_cells),
    Deployment: _Table(("NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"),
                       ("CONTAINERS", "IMAGES", "SELECTOR"), _deployment_cells),
    ReplicaSet: _Table(("NAME", "DESIRED", "CURRENT", "READY", "AGE"), ("CONTAINERS", "IMAGES", "SELECTOR"),
                       _replicaset_cells),
    StatefulSet: _Table(("NAME", "READY", "AGE"), ("CONTAINERS", "IMAGES"), _statefulset_cells),
    DaemonSet: _Table(("NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR", "AGE"),
                      ("CONTAINERS", "IMAGES", "SELECTOR"), _daemonset_cells),
    EndpointSlice: _Table(("NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"), (), _endpointslice_cells),
    Node: _Table(("NAME", "STATUS", "ROLES", "AGE", "VERSION"),
                 ("INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"), _node_cells),
    Namespace: _Table(("NAME", "STATUS", "AGE"), (), _namespace_cells),
    ConfigMap: _Table(("NAME", "DATA", "AGE"), (), _configmap_cells),
    Secret: _Table(("NAME", "TYPE", "DATA", "AGE"), (), _secret_cells),
    ServiceAccount: _Table(("NAME", "SECRETS", "AGE"), (), _service_account_cells),
    EventObject: _Table(("LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"),
                        ("SUBOBJECT", "SOURCE", "FIRST SEEN", "COUNT", "NAME"), _event_cells),
    Impairment: _Table(("NAME", "TARGET", "SETTINGS", "APPLIED", "AGE"), ("LAYER",), _impairment_cells),
    Partition: _Table(("NAME", "GROUPS", "IN FORCE", "AGE"), (), _partition_cells),
    Capture: _Table(("NAME", "TARGET", "PHASE", "FRAMES", "AGE"), ("FILTER", "FILE"), _capture_cells),
    **{cls: _Table(("NAME", "AGE"), (), _stored_only_cells) for cls in STORED_ONLY_TYPES},
    Job: _Table(("NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"), ("CONTAINERS", "IMAGES", "SELECTOR"),
                lambda obj, now, wide: _batch_printers().job_cells(obj, now, wide)),
    CronJob: _Table(("NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "AGE"),
                    ("CONTAINERS", "IMAGES", "SELECTOR"),
                    lambda obj, now, wide: _batch_printers().cron_job_cells(obj, now, wide)),
    Ingress: _Table(("NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"), (),
                    lambda obj, now, wide: _ingress_printers().ingress_cells(obj, now, wide)),
    IngressClass: _Table(("NAME", "CONTROLLER", "PARAMETERS", "AGE"), (),
                         lambda obj, now, wide: _ingress_printers().ingress_class_cells(obj, now, wide)),
    NetworkPolicy: _Table(("NAME", "POD-SELECTOR", "AGE"), (),
                          lambda obj, now, wide: _netpol_printers().network_policy_cells(obj, now, wide)),
}


def _netpol_printers() -> Any:
    """netemu.netpolprinters (NetworkPolicy), which builds on this module."""
    from netemu import netpolprinters
    return netpolprinters


def _ingress_printers() -> Any:
    """netemu.ingressprinters (Ingress and IngressClass), which builds on this module."""
    from netemu import ingressprinters
    return ingressprinters


def _batch_printers() -> Any:
    """netemu.batchprinters (Job and CronJob), which builds on this module."""
    from netemu import batchprinters
    return batchprinters


def table_columns(cls: type) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The columns ``kubectl get`` prints for ``cls``: (always, only with ``-o wide``)."""
    return _TABLES[cls].columns, _TABLES[cls].wide_columns


def table_cells(obj: Any, now: datetime) -> list[str]:
    """Every cell of ``obj``'s row, the ``-o wide`` ones included (the API server's Table rows)."""
    return _TABLES[type(obj)].cells(obj, _aware(now), True)


# cli-runtime's printers.GetNewTabWriter settings.
_TABLE_MIN_WIDTH = 6
_TABLE_PADDING = 3


def _render_section(cls: type, objs: Sequence[Any], *, wide: bool, all_namespaces: bool,
                    with_kind: bool, now: datetime) -> str:
    table = _TABLES[cls]
    with_namespace = all_namespaces and cls.NAMESPACED
    header = [*table.columns, *(table.wide_columns if wide else ())]
    if with_namespace:
        header.insert(0, "NAMESPACE")
    rows = ["\t".join(header)]
    for obj in objs:
        cells = table.cells(obj, now, wide)
        if with_kind:
            cells[0] = f"{_BY_CLASS[cls].kind_prefix}/{cells[0]}"
        if with_namespace:
            cells.insert(0, obj.metadata.namespace)
        rows.append("\t".join(cells))
    return tabwrite("\n".join(rows) + "\n", minwidth=_TABLE_MIN_WIDTH, padding=_TABLE_PADDING)


def render_table(kind: str, objs: Sequence[Any], *, wide: bool = False, all_namespaces: bool = False,
                 now: datetime) -> str:
    """``kubectl get <kind>`` output (ending in a newline), or "" when there is nothing to print.

    ``kind`` is what the user typed: a resource name (``pods``, ``svc``, ``deploy`` ...), ``all``
    or a comma list (``pods,svc``); the latter two print one section per kind with ``pod/``,
    ``service/``, ``deployment.apps/`` name prefixes, a blank line between sections. ``wide`` is
    ``-o wide``, ``all_namespaces`` is ``-A`` (a leading NAMESPACE column for namespaced kinds).
    When "" is returned, print ``no_resources_message`` to stderr instead.
    """
    kinds, with_kind = resolve_kinds(kind)
    now = _aware(now)
    stray = [o for o in objs if type(o) not in kinds]
    if stray:
        raise TypeError(f"render_table({kind!r}) got a {type(stray[0]).__name__}")
    sections = []
    for cls in kinds:
        items = [o for o in objs if type(o) is cls]
        if cls is EventObject:
            items = event_order(items)
        if items:
            sections.append(_render_section(cls, items, wide=wide, all_namespaces=all_namespaces,
                                            with_kind=with_kind, now=now))
    return "\n".join(sections)


def no_resources_message(namespace: str, all_namespaces: bool, *, namespaced: bool = True) -> str:
    """kubectl's stderr line for an empty ``get`` (no trailing newline); ``namespaced`` False for nodes/namespaces."""
    if all_namespaces or not namespaced:
        return "No resources found"
    return f"No resources found in {namespace} namespace."


# --------------------------------------------------------------------------- YAML and JSON


class _KubectlDumper(yaml.SafeDumper):
    """PyYAML emitting like kubectl's go-yaml: double quotes where quoting is needed."""

    def choose_scalar_style(self) -> str:
        style = super().choose_scalar_style()
        return '"' if style == "'" else style


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None  # go-yaml writes multi-line strings as literal blocks
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_KubectlDumper.add_representer(str, _represent_str)


def _document(objs: Sequence[Any], as_list: bool | None) -> dict[str, Any]:
    if as_list is None:
        as_list = len(objs) != 1
    if not as_list:
        return codec.to_dict(objs[0])
    return {"apiVersion": "v1", "items": [codec.to_dict(o) for o in objs], "kind": "List",
            "metadata": {"resourceVersion": ""}}


def render_yaml(objs: Sequence[Any], *, as_list: bool | None = None) -> str:
    """``-o yaml``: one object as itself, otherwise a ``kind: List``; keys sorted as kubectl prints them.

    kubectl prints a List for every list request, even with one item: pass ``as_list=True`` then.
    """
    return yaml.dump(_document(objs, as_list), Dumper=_KubectlDumper, sort_keys=True,
                     default_flow_style=False, allow_unicode=True)


def render_json(objs: Sequence[Any], *, as_list: bool | None = None) -> str:
    """``-o json``: like ``render_yaml``, 4-space indent and Go's HTML-safe escapes."""
    text = json.dumps(_document(objs, as_list), indent=4, sort_keys=True, ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text + "\n"


# --------------------------------------------------------------------------- describe: inputs


@dataclass(frozen=True)
class Event:
    """One event about the described object, as ``kubectl describe`` lists it.

    Any object with these attributes works (``source`` may also be an object with ``component``).
    """

    type: str = "Normal"
    reason: str = ""
    message: str = ""
    source: str = ""
    first_timestamp: str | None = None
    last_timestamp: str | None = None
    count: int = 1


class Related(TypedDict, total=False):
    """Other objects or text a description shows, all optional.

    endpoint_slices: a Service's EndpointSlices; Endpoints per port is computed as kubectl does.
    endpoints: a Service's ready ``ip:port`` list, used for every port when slices are not given.
    pods: a Node's non-terminated pods (the "Non-terminated Pods" table); a StatefulSet's or
        ReplicaSet's pods (its "Pods Status" line counts them by phase).
    old_replica_sets, new_replica_sets: a Deployment's ReplicaSets (its "OldReplicaSets" and
        "NewReplicaSet" lines, printed when either is given).
    secrets: a ServiceAccount's namespace's Secrets (its missing secrets and its token Secrets).
    sections: extra ``(title, lines)`` sections printed before Events; a line may hold tabs to
        make columns (``"10.244.1.5:41234\\t-> 10.244.2.7:80\\tOK"``).
    """

    endpoint_slices: Sequence[EndpointSlice]
    endpoints: Sequence[str]
    pods: Sequence[Pod]
    old_replica_sets: Sequence[ReplicaSet]
    new_replica_sets: Sequence[ReplicaSet]
    sections: Sequence[tuple[str, Sequence[str]]]
    secrets: Sequence[Secret]


class _Writer:
    """kubectl's PrefixWriter over a tabwriter (padding 2); ``flush`` ends all column blocks."""

    def __init__(self) -> None:
        self._chunks: list[list[str]] = [[]]

    def write(self, level: int, text: str) -> None:
        self._chunks[-1].append("  " * level + text)

    def flush(self) -> None:
        self._chunks.append([])

    def render(self) -> str:
        return "".join(tabwrite("".join(chunk), minwidth=0, padding=2) for chunk in self._chunks if chunk)


# --------------------------------------------------------------------------- describe: shared parts


def _labels_multiline(w: _Writer, title: str, labels: Mapping[str, str] | None, initial_indent: str = "") -> None:
    w.write(0, f"{initial_indent}{title}:\t")
    if not labels:
        w.write(0, "<none>\n")
        return
    for i, key in enumerate(sorted(labels)):
        if i:
            w.write(0, initial_indent + "\t")
        w.write(0, f"{key}={labels[key]}\n")


_MAX_ANNOTATION_LEN = 140


def _annotations_multiline(w: _Writer, title: str, annotations: Mapping[str, str] | None) -> None:
    w.write(0, f"{title}:\t")
    keys = sorted(k for k in (annotations or {}) if k != LAST_APPLIED_ANNOTATION)
    if not keys:
        w.write(0, "<none>\n")
        return
    assert annotations is not None
    for i, key in enumerate(keys):
        if i:
            w.write(0, "\t")
        value = annotations[key].removesuffix("\n")
        if len(value.encode()) + len(key.encode()) + 2 > _MAX_ANNOTATION_LEN or "\n" in value:
            w.write(0, f"{key}:\n")
            for line in value.split("\n"):
                short = line if len(line) <= _MAX_ANNOTATION_LEN - 2 else line[:_MAX_ANNOTATION_LEN - 2] + "..."
                w.write(0, f"\t  {short}\n")
        else:
            w.write(0, f"{key}: {value}\n")


def _tolerations_multiline(w: _Writer, title: str, tolerations: Sequence[Mapping[str, Any]]) -> None:
    w.write(0, f"{title}:\t")
    if not tolerations:
        w.write(0, "<none>\n")
        return
    for i, t in enumerate(sorted(tolerations, key=lambda t: t.get("key", ""))):
        if i:
            w.write(0, "\t")
        text = t.get("key", "")
        if t.get("value"):
            text += f"={t['value']}"
        if t.get("effect"):
            text += f":{t['effect']}"
        if t.get("operator") == "Exists" and not t.get("value"):
            text += " op=Exists" if t.get("key") or t.get("effect") else "op=Exists"
        if t.get("tolerationSeconds") is not None:
            text += f" for {t['tolerationSeconds']}s"
        w.write(0, text + "\n")


def _events(w: _Writer, events: Sequence[Any] | None, now: datetime) -> None:
    if events is None:
        return
    if not events:
        w.write(0, "Events:\t<none>\n")
        return
    w.flush()
    w.write(0, "Events:\n  Type\tReason\tAge\tFrom\tMessage\n")
    w.write(1, "----\t------\t----\t----\t-------\n")

    def last_seen(e: Any) -> datetime:
        return parse_time(e.last_timestamp) or parse_time(e.first_timestamp) or datetime.min.replace(tzinfo=timezone.utc)

    for e in sorted(events, key=last_seen):
        first = _since(e.first_timestamp, now)
        interval = f"{_since(e.last_timestamp, now)} (x{e.count} over {first})" if e.count > 1 else first
        source = e.source if isinstance(e.source, str) else getattr(e.source, "component", "")
        w.write(1, f"{e.type}\t{e.reason}\t{interval}\t{source}\t{e.message.strip()}\n")


def _extra_sections(w: _Writer, related: Related) -> None:
    for title, lines in related.get("sections", ()):
        if not lines:
            w.write(0, f"{title}:\t<none>\n")
            continue
        w.write(0, f"{title}:\n")
        for line in lines:
            w.write(1, f"{line}\n")


def _resources(w: _Writer, resources: Mapping[str, Any] | None, level: int) -> None:
    for title, key in (("Limits", "limits"), ("Requests", "requests")):
        values = (resources or {}).get(key) or {}
        if values:
            w.write(level, f"{title}:\n")
        for name in sorted(values):
            w.write(level + 1, f"{name}:\t{values[name]}\n")


# --------------------------------------------------------------------------- describe: containers


def _describe_probe(probe: Probe) -> str:
    attrs = (f"delay={probe.initial_delay_seconds}s timeout={probe.timeout_seconds}s "
             f"period={probe.period_seconds}s #success={probe.success_threshold} #failure={probe.failure_threshold}")
    if probe.exec is not None:
        return f"exec [{' '.join(probe.exec.command)}] {attrs}"
    if probe.http_get is not None:
        get = probe.http_get
        port = str(get.port)
        host = _host_port(get.host, port) if port else get.host
        path = get.path
        if path and not path.startswith("/") and host:
            path = "/" + path
        return f"http-get {get.scheme.lower()}://{host}{path} {attrs}"
    if probe.tcp_socket is not None:
        return f"tcp-socket {probe.tcp_socket.host}:{probe.tcp_socket.port} {attrs}"
    if "grpc" in probe.extra:
        grpc = probe.extra["grpc"] or {}
        return f"grpc <pod>:{grpc.get('port', 0)} {grpc.get('service', '')} {attrs}"
    return f"unknown {attrs}"


def _field_value(pod: Pod, path: str) -> str:
    """kubectl's EnvValueRetriever for a downward-API fieldRef."""
    simple = {
        "metadata.name": pod.metadata.name,
        "metadata.namespace": pod.metadata.namespace,
        "metadata.uid": pod.metadata.uid,
        "spec.nodeName": pod.spec.node_name,
        "spec.serviceAccountName": pod.spec.service_account_name,
        "status.hostIP": pod.status.host_ip,
        "status.hostIPs": ",".join(p.ip for p in pod.status.host_ips),
        "status.podIP": pod.status.pod_ip,
        "status.podIPs": ",".join(_pod_ips(pod)),
    }
    if path in simple:
        return simple[path]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.*)'\]", path)
    if match:
        source = pod.metadata.labels if match.group(1) == "labels" else pod.metadata.annotations
        return source.get(match.group(2), "")
    return ""


def _describe_env(w: _Writer, container: Container, pod: Pod | None) -> None:
    w.write(2, "Environment:" + ("" if container.env else "\t<none>") + "\n")
    for e in container.env:
        _describe_env_var(w, e, container, pod)


def _describe_env_var(w: _Writer, e: EnvVar, container: Container, pod: Pod | None) -> None:
    source = e.value_from
    if source is None:
        for i, line in enumerate((e.value or "").split("\n")):
            w.write(3, f"{e.name}:\t{line}\n" if i == 0 else f"\t{line}\n")
        return
    if source.field_ref is not None:
        value = _field_value(pod, source.field_ref.field_path) if pod is not None else ""
        w.write(3, f"{e.name}:\t{value} ({source.field_ref.api_version}:{source.field_ref.field_path})\n")
    elif "resourceFieldRef" in source.extra:
        ref = source.extra["resourceFieldRef"] or {}
        resource = ref.get("resource", "")
        limits = (container.extra.get("resources") or {}).get("limits") or {}
        value = str(limits.get(resource.removeprefix("limits."), "")) if resource.startswith("limits.") else ""
        if resource in ("limits.cpu", "limits.memory") and value in ("", "0"):
            value = "node allocatable"
        w.write(3, f"{e.name}:\t{value} ({resource})\n")
    elif source.secret_key_ref is not None:
        ref = source.secret_key_ref
        w.write(3, f"{e.name}:\t<set to the key '{ref.key}' in secret '{ref.name}'>"
                   f"\tOptional: {str(bool(ref.optional)).lower()}\n")
    elif source.config_map_key_ref is not None:
        ref = source.config_map_key_ref
        w.write(3, f"{e.name}:\t<set to the key '{ref.key}' of config map '{ref.name}'>"
                   f"\tOptional: {str(bool(ref.optional)).lower()}\n")


def _describe_env_from(w: _Writer, container: Container) -> None:
    if not container.env_from:
        return
    w.write(2, "Environment Variables from:\n")
    for s in container.env_from:
        ref, kind = (s.config_map_ref, "ConfigMap") if s.config_map_ref is not None else (s.secret_ref, "Secret")
        name, optional = (ref.name, str(bool(ref.optional)).lower()) if ref is not None else ("", "false")
        prefix = f" with prefix '{s.prefix}'" if s.prefix else ""
        w.write(3, f"{name}\t{kind}{prefix}\tOptional: {optional}\n")


def _describe_state(w: _Writer, title: str, state: ContainerState, now: datetime) -> None:
    if state.running is not None:
        w.write(2, f"{title}:\tRunning\n")
        w.write(3, f"Started:\t{_rfc1123z(state.running.started_at, now)}\n")
    elif state.terminated is not None:
        term = state.terminated
        w.write(2, f"{title}:\tTerminated\n")
        if term.reason:
            w.write(3, f"Reason:\t{term.reason}\n")
        if term.message:
            w.write(3, f"Message:\t{term.message}\n")
        w.write(3, f"Exit Code:\t{term.exit_code}\n")
        if term.signal:
            w.write(3, f"Signal:\t{term.signal}\n")
        w.write(3, f"Started:\t{_rfc1123z(term.started_at, now)}\n")
        w.write(3, f"Finished:\t{_rfc1123z(term.finished_at, now)}\n")
    else:
        w.write(2, f"{title}:\tWaiting\n")
        if state.waiting is not None and state.waiting.reason:
            w.write(3, f"Reason:\t{state.waiting.reason}\n")


def _describe_containers(w: _Writer, label: str, containers: Sequence[Container],
                         statuses: Sequence[ContainerStatus], pod: Pod | None, space: str, now: datetime) -> None:
    by_name = {s.name: s for s in statuses}
    w.write(0, f"{space}{label}:{'' if containers else ' <none>'}\n")
    name_indent = " " if space else ""
    for c in containers:
        status = by_name.get(c.name)
        w.write(1, f"{name_indent}{c.name}:\n")
        if status is not None:
            w.write(2, f"Container ID:\t{status.container_id}\n")
        w.write(2, f"Image:\t{c.image}\n")
        if status is not None:
            w.write(2, f"Image ID:\t{status.image_id}\n")
        ports = ", ".join(f"{p.container_port}/{p.protocol}" for p in c.ports)
        host_ports = ", ".join(f"{p.host_port or 0}/{p.protocol}" for p in c.ports)
        w.write(2, f"Ports:\t{ports}\n" if "," in ports else f"Port:\t{ports or '<none>'}\n")
        w.write(2, f"Host Ports:\t{host_ports}\n" if "," in host_ports else f"Host Port:\t{host_ports or '<none>'}\n")
        seccomp = (c.extra.get("securityContext") or {}).get("seccompProfile")
        if seccomp:
            w.write(2, f"SeccompProfile:\t{seccomp.get('type', '')}\n")
            if seccomp.get("type") == "Localhost":
                w.write(3, f"LocalhostProfile:\t{seccomp.get('localhostProfile', '')}\n")
        for title, parts in (("Command", c.command), ("Args", c.args)):
            if parts:
                w.write(2, f"{title}:\n")
                for part in parts:
                    for line in part.split("\n"):
                        w.write(3, f"{line}\n")
        if status is not None:
            _describe_state(w, "State", status.state, now)
            if status.last_state.terminated is not None:
                _describe_state(w, "Last State", status.last_state, now)
            w.write(2, f"Ready:\t{'True' if status.ready else 'False'}\n")
            w.write(2, f"Restart Count:\t{status.restart_count}\n")
        _resources(w, c.extra.get("resources"), 2)
        for title, probe in (("Liveness", c.liveness_probe), ("Readiness", c.readiness_probe),
                             ("Startup", c.startup_probe)):
            if probe is not None:
                w.write(2, f"{title}:\t{_describe_probe(probe)}\n")
        _describe_env_from(w, c)
        _describe_env(w, c, pod)
        mounts = sorted((codec.to_dict(m) for m in c.volume_mounts), key=lambda m: m.get("mountPath", ""))
        w.write(2, "Mounts:" + ("" if mounts else "\t<none>") + "\n")
        for m in mounts:
            flags = ["ro" if m.get("readOnly") else "rw"]
            if m.get("subPath"):
                flags.append(f'path="{m["subPath"]}"')
            w.write(3, f"{m.get('mountPath', '')} from {m.get('name', '')} ({','.join(flags)})\n")


def _describe_volumes(w: _Writer, volumes: Sequence[Mapping[str, Any]], space: str) -> None:
    if not volumes:
        w.write(0, f"{space}Volumes:\t<none>\n")
        return
    w.write(0, f"{space}Volumes:\n")
    for v in volumes:
        w.write(1, f"{' ' if space else ''}{v.get('name', '')}:\n")
        if "emptyDir" in v:
            source = v["emptyDir"] or {}
            w.write(2, "Type:\tEmptyDir (a temporary directory that shares a pod's lifetime)\n"
                       f"    Medium:\t{source.get('medium', '')}\n"
                       f"    SizeLimit:\t{source.get('sizeLimit') or '<unset>'}\n")
        elif "hostPath" in v:
            source = v["hostPath"] or {}
            w.write(2, "Type:\tHostPath (bare host directory volume)\n"
                       f"    Path:\t{source.get('path', '')}\n"
                       f"    HostPathType:\t{source.get('type') or '<none>'}\n")
        elif "configMap" in v:
            source = v["configMap"] or {}
            w.write(2, "Type:\tConfigMap (a volume populated by a ConfigMap)\n"
                       f"    Name:\t{source.get('name', '')}\n"
                       f"    Optional:\t{str(bool(source.get('optional'))).lower()}\n")
        elif "secret" in v:
            source = v["secret"] or {}
            w.write(2, "Type:\tSecret (a volume populated by a Secret)\n"
                       f"    SecretName:\t{source.get('secretName', '')}\n"
                       f"    Optional:\t{str(bool(source.get('optional'))).lower()}\n")
        elif "downwardAPI" in v:
            w.write(2, "Type:\tDownwardAPI (a volume populated by information about the pod)\n    Items:\n")
            for item in (v["downwardAPI"] or {}).get("items") or []:
                for ref, key in (("fieldRef", "fieldPath"), ("resourceFieldRef", "resource")):
                    if item.get(ref) is not None:
                        w.write(3, f"{item[ref].get(key, '')} -> {item.get('path', '')}\n")
        elif "projected" in v:
            _describe_projected(w, v["projected"] or {})
        elif "persistentVolumeClaim" in v:
            source = v["persistentVolumeClaim"] or {}
            w.write(2, "Type:\tPersistentVolumeClaim (a reference to a PersistentVolumeClaim in the same namespace)\n"
                       f"    ClaimName:\t{source.get('claimName', '')}\n"
                       f"    ReadOnly:\t{str(bool(source.get('readOnly'))).lower()}\n")
        else:
            w.write(1, "<unknown>\n")
        unemulated = next((k for k in v if k in UNEMULATED_VOLUME_SOURCES), "")
        if unemulated:  # netemu's own line: what the pod gets instead
            w.write(2, f"netemu:\t{unemulated} is not emulated: the pod gets an empty directory\n")


def _describe_projected(w: _Writer, projected: Mapping[str, Any]) -> None:
    """kubectl's printProjectedVolumeSource."""
    w.write(2, "Type:\tProjected (a volume that contains injected data from multiple sources)\n")
    for source in projected.get("sources") or []:
        if source.get("secret") is not None:
            w.write(2, f"SecretName:\t{source['secret'].get('name', '')}\n"
                       f"    Optional:\t{str(bool(source['secret'].get('optional'))).lower()}\n")
        elif source.get("downwardAPI") is not None:
            w.write(2, "DownwardAPI:\ttrue\n")
        elif source.get("configMap") is not None:
            w.write(2, f"ConfigMapName:\t{source['configMap'].get('name', '')}\n"
                       f"    Optional:\t{str(bool(source['configMap'].get('optional'))).lower()}\n")
        elif source.get("serviceAccountToken") is not None:
            w.write(2, f"TokenExpirationSeconds:\t{source['serviceAccountToken'].get('expirationSeconds', 3600)}\n")


def _qos_class(pod: Pod) -> str:
    """Status qosClass, else computed from container requests and limits as kubectl's qos.GetPodQOS."""
    if pod.status.qos_class:
        return pod.status.qos_class
    resources = [c.extra.get("resources") or {} for c in (*pod.spec.init_containers, *pod.spec.containers)]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        all(name in (r.get("limits") or {}) for name in ("cpu", "memory"))
        and all((r.get("requests") or {}).get(k, v) == v for k, v in (r.get("limits") or {}).items())
        for r in resources)
    return "Guaranteed" if guaranteed else "Burstable"


def _describe_pod_template(w: _Writer, template: PodTemplateSpec, now: datetime) -> None:
    spec: PodSpec = template.spec
    w.write(0, "Pod Template:\n")
    _labels_multiline(w, "  Labels", template.metadata.labels)
    if template.metadata.annotations:
        _annotations_multiline(w, "  Annotations", template.metadata.annotations)
    if spec.service_account_name:
        w.write(1, f"Service Account:\t{spec.service_account_name}\n")
    if spec.init_containers:
        _describe_containers(w, "Init Containers", spec.init_containers, (), None, "  ", now)
    _describe_containers(w, "Containers", spec.containers, (), None, "  ", now)
    _describe_volumes(w, [codec.to_dict(v) for v in spec.volumes], "  ")
    if spec.extra.get("priorityClassName"):
        w.write(1, f"Priority Class Name:\t{spec.extra['priorityClassName']}\n")
    _labels_multiline(w, "  Node-Selectors", spec.node_selector)
    _tolerations_multiline(w, "  Tolerations", [codec.to_dict(t) for t in spec.tolerations])


# --------------------------------------------------------------------------- describe: per kind


def _describe_pod(w: _Writer, pod: Pod, events: Sequence[Any] | None, related: Related, now: datetime) -> None:
    meta, spec, status = pod.metadata, pod.spec, pod.status
    w.write(0, f"Name:\t{meta.name}\n")
    w.write(0, f"Namespace:\t{meta.namespace}\n")
    if spec.extra.get("priority") is not None:
        w.write(0, f"Priority:\t{spec.extra['priority']}\n")
    if spec.extra.get("priorityClassName"):
        w.write(0, f"Priority Class Name:\t{spec.extra['priorityClassName']}\n")
    if spec.extra.get("runtimeClassName"):
        w.write(0, f"Runtime Class Name:\t{spec.extra['runtimeClassName']}\n")
    if spec.service_account_name:
        w.write(0, f"Service Account:\t{spec.service_account_name}\n")
    w.write(0, f"Node:\t{spec.node_name}/{status.host_ip}\n" if spec.node_name else "Node:\t<none>\n")
    if status.start_time:
        w.write(0, f"Start Time:\t{_rfc1123z(status.start_time, now)}\n")
    _labels_multiline(w, "Labels", meta.labels)
    _annotations_multiline(w, "Annotations", meta.annotations)
    if meta.deletion_timestamp and status.phase not in ("Failed", "Succeeded"):
        w.write(0, f"Status:\tTerminating (lasts {_since(meta.deletion_timestamp, now)})\n")
        w.write(0, f"Termination Grace Period:\t{meta.deletion_grace_period_seconds or 0}s\n")
    else:
        w.write(0, f"Status:\t{status.phase}\n")
    if status.reason:
        w.write(0, f"Reason:\t{status.reason}\n")
    if status.message:
        w.write(0, f"Message:\t{status.message}\n")
    seccomp = (spec.extra.get("securityContext") or {}).get("seccompProfile")
    if seccomp:
        w.write(0, f"SeccompProfile:\t{seccomp.get('type', '')}\n")
        if seccomp.get("type") == "Localhost":
            w.write(0, f"LocalhostProfile:\t{seccomp.get('localhostProfile', '')}\n")
    w.write(0, f"IP:\t{status.pod_ip}\n")
    ips = _pod_ips(pod)
    if ips:
        w.write(0, "IPs:\n")
        for ip in ips:
            w.write(1, f"IP:\t{ip}\n")
    else:
        w.write(0, "IPs:\t<none>\n")
    controller = _controller_of(meta.owner_references)
    if controller:
        w.write(0, f"Controlled By:\t{controller}\n")
    if status.extra.get("nominatedNodeName"):
        w.write(0, f"NominatedNodeName:\t{status.extra['nominatedNodeName']}\n")
    if spec.extra.get("resources") is not None:
        w.write(0, "Resources:\n")
        _resources(w, spec.extra["resources"], 1)
    if spec.init_containers:
        _describe_containers(w, "Init Containers", spec.init_containers, status.init_container_statuses, pod, "", now)
    _describe_containers(w, "Containers", spec.containers, status.container_statuses, pod, "", now)
    gates = spec.extra.get("readinessGates") or []
    if gates:
        w.write(0, "Readiness Gates:\n  Type\tStatus\n")
        by_type = {c.type: c.status for c in status.conditions}
        for gate in gates:
            w.write(1, f"{gate.get('conditionType', '')} \t{by_type.get(gate.get('conditionType'), '<none>')} \n")
    if status.conditions:
        w.write(0, "Conditions:\n  Type\tStatus\n")
        for c in status.conditions:
            w.write(1, f"{c.type} \t{c.status} \n")
    _describe_volumes(w, [codec.to_dict(v) for v in spec.volumes], "")
    w.write(0, f"QoS Class:\t{_qos_class(pod)}\n")
    _labels_multiline(w, "Node-Selectors", spec.node_selector)
    _tolerations_multiline(w, "Tolerations", [codec.to_dict(t) for t in spec.tolerations])
    _extra_sections(w, related)
    _events(w, events, now)


def _service_endpoints(svc: Service, port_name: str, related: Related) -> str:
    """kubectl formatEndpointSlices for one service port (or the caller's ready list)."""
    if "endpoint_slices" not in related:
        given = list(related.get("endpoints", ()))
        return _list_with_more(given, empty="") if given else "<none>"
    slices = list(related["endpoint_slices"])
    if not slices:
        return "<none>"
    found: list[str] = []
    limit, more, count = 3, False, 0

    def ready(e: Endpoint) -> bool:
        return e.conditions.ready is None or e.conditions.ready

    for eps in slices:
        targets = [(None, e) for e in eps.endpoints] if not eps.ports else [
            (p, e) for p in eps.ports if (p.name or "") == port_name for e in eps.endpoints]
        for port, endpoint in targets:
            if len(found) == limit:
                more = True
            if not ready(endpoint) or not endpoint.addresses:
                continue
            if not more:
                address = endpoint.addresses[0]
                # kubectl would crash on a port without a number; netemu shows the bare address.
                found.append(address if port is None or port.port is None else _host_port(address, port.port))
            count += 1
    text = ",".join(found)
    return f"{text} + {count - limit} more..." if more else text


def _describe_service(w: _Writer, svc: Service, events: Sequence[Any] | None, related: Related,
                      now: datetime) -> None:
    meta, spec = svc.metadata, svc.spec
    w.write(0, f"Name:\t{meta.name}\n")
    w.write(0, f"Namespace:\t{meta.namespace}\n")
    _labels_multiline(w, "Labels", meta.labels)
    _annotations_multiline(w, "Annotations", meta.annotations)
    w.write(0, f"Selector:\t{_format_labels(spec.selector)}\n")
    w.write(0, f"Type:\t{spec.type}\n")
    if spec.ip_family_policy:
        w.write(0, f"IP Family Policy:\t{spec.ip_family_policy}\n")
    w.write(0, f"IP Families:\t{','.join(spec.ip_families) or '<none>'}\n")
    w.write(0, f"IP:\t{spec.cluster_ip}\n")
    w.write(0, f"IPs:\t{','.join(_cluster_ips(svc)) or '<none>'}\n")
    if spec.external_ips:
        w.write(0, f"External IPs:\t{','.join(spec.external_ips)}\n")
    if spec.load_balancer_ip:
        w.write(0, f"Desired LoadBalancer IP:\t{spec.load_balancer_ip}\n")
    if spec.external_name:
        w.write(0, f"External Name:\t{spec.external_name}\n")
    ingress = svc.status.load_balancer.ingress
    if ingress:
        shown = [(f"{i.ip} ({i.ip_mode})" if i.ip_mode else i.ip) if i.ip else i.hostname for i in ingress]
        w.write(0, f"LoadBalancer Ingress:\t{', '.join(shown)}\n")
    for p in spec.ports:
        name = p.name or "<unset>"
        target = p.port if p.target_port is None else p.target_port  # the API server defaults it to port
        w.write(0, f"Port:\t{name}\t{p.port}/{p.protocol}\n")
        w.write(0, f"TargetPort:\t{target}/{p.protocol}\n")
        if p.node_port:
            w.write(0, f"NodePort:\t{name}\t{p.node_port}/{p.protocol}\n")
        w.write(0, f"Endpoints:\t{_service_endpoints(svc, p.name, related)}\n")
    w.write(0, f"Session Affinity:\t{spec.session_affinity}\n")
    if spec.external_traffic_policy:
        w.write(0, f"External Traffic Policy:\t{spec.external_traffic_policy}\n")
    if spec.internal_traffic_policy:
        w.write(0, f"Internal Traffic Policy:\t{spec.internal_traffic_policy}\n")
    if spec.health_check_node_port:
        w.write(0, f"HealthCheck NodePort:\t{spec.health_check_node_port}\n")
    if spec.load_balancer_source_ranges:
        w.write(0, f"LoadBalancer Source Ranges:\t{','.join(spec.load_balancer_source_ranges)}\n")
    _extra_sections(w, related)
    _events(w, events, now)


def _describe_deployment(w: _Writer, d: Deployment, events: Sequence[Any] | None, related: Related,
                         now: datetime) -> None:
    meta, spec, status = d.metadata, d.spec, d.status
    w.write(0, f"Name:\t{meta.name}\n")
    w.write(0, f"Namespace:\t{meta.namespace}\n")
    w.write(0, f"CreationTimestamp:\t{_rfc1123z(meta.creation_timestamp, now)}\n")
    _labels_multiline(w, "Labels", meta.labels)
    _annotations_multiline(w, "Annotations", meta.annotations)
    w.write(0, f"Selector:\t{_selector_string(spec.selector)}\n")
    w.write(0, f"Replicas:\t{_replicas(d)} desired | {status.updated_replicas} updated | {status.replicas} total | "
               f"{status.available_replicas} available | {status.unavailable_replicas} unavailable\n")
    strategy = spec.strategy
    w.write(0, f"StrategyType:\t{strategy.type if strategy else 'RollingUpdate'}\n")
    w.write(0, f"MinReadySeconds:\t{spec.min_ready_seconds}\n")
    rolling = strategy.rolling_update if strategy else None
    if rolling is not None:
        def text(v: Any) -> str:
            return "<nil>" if v is None else str(v)
        w.write(0, f"RollingUpdateStrategy:\t{text(rolling.max_unavailable)} max unavailable, "
                   f"{text(rolling.max_surge)} max surge\n")
    _describe_pod_template(w, spec.template, now)
    _conditions_table(w, status.conditions)
    if "old_replica_sets" in related or "new_replica_sets" in related:
        w.write(0, f"OldReplicaSets:\t{_replica_sets_line(related.get('old_replica_sets', ()))}\n")
        w.write(0, f"NewReplicaSet:\t{_replica_sets_line(related.get('new_replica_sets', ()))}\n")
    _extra_sections(w, related)
    _events(w, events, now)


def _conditions_table(w: _Writer, conditions: Sequence[Any]) -> None:
    if conditions:
        w.write(0, "Conditions:\n  Type\tStatus\tReason\n")
        w.write(1, "----\t------\t------\n")
        for c in conditions:
            w.write(1, f"{c.type} \t{c.status}\t{c.reason}\n")


def _replica_sets_line(replica_sets: Sequence[ReplicaSet]) -> str:
    """kubectl's printReplicaSetsByLabels."""
    return ", ".join(f"{rs.metadata.name} ({rs.status.replicas}/{_replicas(rs)} replicas created)"
                     for rs in replica_sets) or "<none>"


def _pods_status(pods: Sequence[Pod]) -> str:
    phases = [p.status.phase for p in pods]
    return (f"{phases.count('Running')} Running / {phases.count('Pending')} Waiting / "
            f"{phases.count('Succeeded')} Succeeded / {phases.count('Failed')} Failed")


def _describe_replicaset(w: _Writer, rs: ReplicaSet, events: Sequence[Any] | None, related: Related,
                         now: datetime) -> None:
    meta = rs.metadata
    w.write(0, f"Name:\t{meta.name}\n")
    w.write(0, f"Namespace:\t{meta.namespace}\n")
    w.write(0, f"Selector:\t{_selector_string(rs.spec.selector)}\n")
    _labels_multiline(w, "Labels", meta.labels)
    _annotations_multiline(w, "Annotations", meta.annotations)
    controller = _controller_of(meta.owner_references)
    if controller:
        w.write(0, f"Controlled By:\t{controller}\n")
    w.write(0, f"Replicas:\t{rs.status.replicas} current / {_replicas(rs)} desired\n")
    w.write(0, f"Pods Status:\t{_pods_status(related.get('pods', ()))}\n")
    _describe_pod_template(w, rs.spec.template, now)
    _conditions_table(w, rs.status.conditions)
    _extra_sections(w, related)
    _events(w, events, now)


def _describe_volume_claim_templates(w: _Writer, templates: Sequence[Mapping[str, Any]]) -> None:
    if not templates:
        w.write(0, "Volume Claims:\t<none>\n")
        return
    w.write(0, "Volume Claims:\n")
    for pvc in templates:
        meta, spec = pvc.get("metadata") or {}, pvc.get("spec") or {}
        annotations = meta.get("annotations") or {}
        storage_class = annotations.get("volume.beta.kubernetes.io/storage-class") or spec.get("storageClassName") or ""
        w.write(1, f"Name:\t{meta.get('name', '')}\n")
        w.write(1, f"StorageClass:\t{storage_class}\n")
        _labels_multiline(w, "Labels", meta.get("labels"), "  ")
        _labels_multiline(w, "Annotations", annotations, "  ")
        capacity = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
        w.write(1, f"Capacity:\t{capacity if capacity is not None else '<default>'}\n")
        w.write(1, f"Access Modes:\t[{' '.join(spec.get('accessModes') or [])}]\n")


def _describe_statefulset(w: _Writer, sts: StatefulSet, events: Sequence[Any] | None, related: Related,
                          now: datetime) -> None:
    meta, spec, status = sts.metadata, sts.spec, sts.status
    w.write(0, f"Name:\t{meta.name}\n")
    w.write(0, f"Namespace:\t{meta.namespace}\n")
    w.write(0, f"CreationTimestamp:\t{_rfc1123z(meta.creation_timestamp, now)}\n")
    w.write(0, f"Selector:\t{_selector_string(spec.selector)}\n")
    _labels_multiline(w, "Labels", meta.labels)
    _annotations_multiline(w, "Annotations", meta.annotations)
    w.write(0, f"Replicas:\t{_replicas(sts)} desired | {status.replicas} total\n")
    w.write(0, f"Update Strategy:\t{spec.update_strategy.type}\n")
    rolling = spec.update_strategy.rolling_update
    if rolling is not None and rolling.partition is not None:
        w.write(1, f"Partition:\t{rolling.partition}\n")
        if rolling.max_unavailable is not None:
            w.write(1, f"MaxUnavailable:\t{rolling.max_unavailable}\n")
    w.write(0, f"Pods Status:\t{_pods_status(related.get('pods', ()))}\n")
    _describe_pod_template(w, spec.template, now)
    _describe_volume_claim_templates(w, spec.extra.get("volumeClaimTemplates") or [])
    _extra_sections(w, related)
    _events(w, events, now)


def _describe_daemonset(w: _Writer, ds: DaemonSet, events: Sequence[Any] | None, related: Related,
                        now: datetime) -> None:
    """kubectl's describeDaemonSet."""
    meta, spec, status = ds.metadata, ds.spec, ds.status
    w.write(0, f"Name:\t{meta.name}\n")
    w.write(0, f"Namespace:\t{meta.namespace}\n")
    w.write(0, f"Selector:\t{_selector_string(spec.selector)}\n")
    w.write(0, f"Node-Selector:\t{_format_labels(spec.template.spec.node_selector)}\n")
    _labels_multiline(w, "Labels", meta.labels)
    _annotations_multiline(w, "Annotations", meta.annotations)
    w.write(0, f"Desired Number of Nodes Scheduled: {status.desired_number_scheduled}\n")
    w.write(0, f"Current Number of Nodes Scheduled: {status.current_number_scheduled}\n")
    w.write(0, f"Number of Nodes Scheduled with Up-to-date Pods: {status.updated_number_scheduled}\n")
    w.write(0, f"Number of Nodes Scheduled with Available Pods: {status.number_available}\n")
    w.write(0, f"Number of Nodes Misscheduled: {status.number_misscheduled}\n")
    w.write(0, f"Pods Status:\t{_pods_status(related.get('pods', ()))}\n")
    _describe_pod_template(w, spec.template, now)
    _extra_sections(w, related)
    _events(w, events, now)


def _describe_endpointslice(w: _Writer, eps: EndpointSlice, events: Sequence[Any] | None, related: Related,
                            now: datetime) -> None:
    w.write(0, f"Name:\t{eps.metadata.name}\n")
    w.write(0, f"Namespace:\t{eps.metadata.namespace}\n")
    _labels_multiline(w, "Labels", eps.metadata.labels)
    _annotations_multiline(w, "Annotations", eps.metadata.annotations)
    w.write(0, f"AddressType:\t{eps.address_type}\n")
    if not eps.ports:
        w.write(0, "Ports: <unset>\n")
    else:
        w.write(0, "Ports:\n")
        w.write(1, "Name\tPort\tProtocol\n")
        w.write(1, "----\t----\t--------\n")
        for p in eps.ports:
            port = "<unset>" if p.port is None else str(p.port)
            w.write(1, f"{p.name or '<unset>'}\t{port}\t{p.protocol}\n")
    if not eps.endpoints:
        w.write(0, "Endpoints: <none>\n")
    else:
        w.write(0, "Endpoints:\n")
        for e in eps.endpoints:
            w.write(1, f"- Addresses:\t{', '.join(e.addresses) or '<none>'}\n")
            w.write(2, "Conditions:\n")
            ready = "<unset>" if e.conditions.ready is None else str(e.conditions.ready).lower()
            w.write(3, f"Ready:\t{ready}\n")
            w.write(2, f"Hostname:\t{'<unset>' if e.hostname is None else e.hostname}\n")
            if e.target_ref is not None:
                w.write(2, f"TargetRef:\t{e.target_ref.kind}/{e.target_ref.name}\n")
            w.write(2, f"NodeName:\t{'<unset>' if e.node_name is None else e.node_name}\n")
            w.write(2, f"Zone:\t{'<unset>' if e.zone is None else e.zone}\n")
    _extra_sections(w, related)
    _events(w, events, now)


def _describe_node(w: _Writer, node: Node, events: Sequence[Any] | None, related: Related, now: datetime) -> None:
    meta, spec, status = node.metadata, node.spec, node.status
    w.write(0, f"Name:\t{meta.name}\n")
    w.write(0, f"Roles:\t{','.join(_find_node_roles(node)) or '<none>'}\n")
    _labels_multiline(w, "Labels", meta.labels)
    _annotations_multiline(w, "Annotations", meta.annotations)
    w.write(0, f"CreationTimestamp:\t{_rfc1123z(meta.creation_timestamp, now)}\n")
    taints = sorted([codec.to_dict(t) for t in spec.taints], key=lambda t: f"{t.get('effect', '')},{t.get('key', '')}")
    w.write(0, "Taints:\t")
    if not taints:
        w.write(0, "<none>\n")
    for i, t in enumerate(taints):
        if i:
            w.write(0, "\t")
        text = t.get("key", "") + (f"={t['value']}" if t.get("value") else "")
        w.write(0, (f"{text}:{t['effect']}" if t.get("effect") else text) + "\n")
    w.write(0, f"Unschedulable:\t{str(spec.unschedulable).lower()}\n")
    # netemu has no Lease objects: the kubelet's lease is shown as held by the node, renewed at its heartbeat.
    heartbeat = next((c.last_heartbeat_time for c in status.conditions if c.type == "Ready" and c.last_heartbeat_time),
                     None)
    w.write(0, "Lease:\n")
    w.write(1, f"HolderIdentity:\t{meta.name}\n")
    w.write(1, "AcquireTime:\t<unset>\n")
    w.write(1, f"RenewTime:\t{_rfc1123z(heartbeat, now) if heartbeat else '<unset>'}\n")
    if status.conditions:
        w.write(0, "Conditions:\n  Type\tStatus\tLastHeartbeatTime\tLastTransitionTime\tReason\tMessage\n")
        w.write(1, "----\t------\t-----------------\t------------------\t------\t-------\n")
        for c in status.conditions:
            w.write(1, f"{c.type} \t{c.status} \t{_rfc1123z(c.last_heartbeat_time, now)} \t"
                       f"{_rfc1123z(c.last_transition_time, now)} \t{c.reason} \t{c.message}\n")
    w.write(0, "Addresses:\n")
    for a in status.addresses:
        w.write(1, f"{a.type}:\t{a.address}\n")
    for title, key in (("Capacity", "capacity"), ("Allocatable", "allocatable")):
        values = status.extra.get(key) or {}
        if values:
            w.write(0, f"{title}:\n")
            for name in sorted(values):
                w.write(0, f"  {name}:\t{values[name]}\n")
    info = _node_info(node)
    w.write(0, "System Info:\n")
    for title, key in (("Machine ID", "machineID"), ("System UUID", "systemUUID"), ("Boot ID", "bootID"),
                       ("Kernel Version", "kernelVersion"), ("OS Image", "osImage"),
                       ("Operating System", "operatingSystem"), ("Architecture", "architecture"),
                       ("Container Runtime Version", "containerRuntimeVersion"),
                       ("Kubelet Version", "kubeletVersion"), ("Kube-Proxy Version", "kubeProxyVersion")):
        w.write(0, f"  {title}:\t{info.get(key, '')}\n")
    if spec.pod_cidr:
        w.write(0, f"PodCIDR:\t{spec.pod_cidr}\n")
    if spec.pod_cidrs:
        w.write(0, f"PodCIDRs:\t{','.join(spec.pod_cidrs)}\n")
    if spec.extra.get("providerID"):
        w.write(0, f"ProviderID:\t{spec.extra['providerID']}\n")
    # netemu emulates no resource requests or allocatable: every figure is zero.
    pods = list(related.get("pods", ()))
    w.write(0, f"Non-terminated Pods:\t({len(pods)} in total)\n")
    w.write(1, "Namespace\tName\t\tCPU Requests\tCPU Limits\tMemory Requests\tMemory Limits\tAge\n")
    w.write(1, "---------\t----\t\t------------\t----------\t---------------\t-------------\t---\n")
    for pod in pods:
        w.write(1, f"{pod.metadata.namespace}\t{pod.metadata.name}\t\t0 (0%)\t0 (0%)\t0 (0%)\t0 (0%)\t"
                   f"{_since(pod.metadata.creation_timestamp, now)}\n")
    w.write(0, "Allocated resources:\n  (Total limits may be over 100 percent, i.e., overcommitted.)\n")
    w.write(1, "Resource\tRequests\tLimits\n")
    w.write(1, "--------\t--------\t------\n")
    for resource in ("cpu", "memory", "ephemeral-storage"):
        w.write(1, f"{resource}\t0 (0%)\t0 (0%)\n")
    _extra_sections(w, related)
    _events(w, events, now)


def _describe_namespace(w: _Writer, ns: Namespace, events: Sequence[Any] | None, related: Related,
                        now: datetime) -> None:
    # kubectl shows no events for namespaces; netemu has no quotas or limit ranges.
    w.write(0, f"Name:\t{ns.metadata.name}\n")
    _labels_multiline(w, "Labels", ns.metadata.labels)
    _annotations_multiline(w, "Annotations", ns.metadata.annotations)
    w.write(0, f"Status:\t{ns.status.phase}\n")
    w.write(0, "\n")
    w.write(0, "No resource quota.\n")
    w.write(0, "\n")
    w.write(0, "No LimitRange resource.\n")
    _extra_sections(w, related)


def _describe_configmap(w: _Writer, cm: ConfigMap, events: Sequence[Any] | None, related: Related,
                        now: datetime) -> None:
    """kubectl's describeConfigMap (keys sorted; kubectl ranges over the map)."""
    w.write(0, f"Name:\t{cm.metadata.name}\n")
    w.write(0, f"Namespace:\t{cm.metadata.namespace}\n")
    _labels_multiline(w, "Labels", cm.metadata.labels)
    _annotations_multiline(w, "Annotations", cm.metadata.annotations)
    w.write(0, "\nData\n====\n")
    for key in sorted(cm.data):
        w.write(0, f"{key}:\n----\n")
        w.write(0, f"{cm.data[key]}\n")
    w.write(0, "\nBinaryData\n====\n")
    for key in sorted(cm.binary_data):
        w.write(0, f"{key}: {_decoded_size(cm.binary_data[key])} bytes\n")
    w.write(0, "\n")
    _extra_sections(w, related)
    _events(w, events, now)


def _describe_secret(w: _Writer, secret: Secret, events: Sequence[Any] | None, related: Related,
                     now: datetime) -> None:
    """kubectl's describeSecret: sizes only, never a value (but a service account token's)."""
    w.write(0, f"Name:\t{secret.metadata.name}\n")
    w.write(0, f"Namespace:\t{secret.metadata.namespace}\n")
    _labels_multiline(w, "Labels", secret.metadata.labels)
    _annotations_multiline(w, "Annotations", secret.metadata.annotations)
    w.write(0, f"\nType:\t{secret.type}\n")
    w.write(0, "\nData\n====\n")
    for key in sorted(secret.data):
        if key == "token" and secret.type == "kubernetes.io/service-account-token":
            w.write(0, f"{key}:\t{_decoded(secret.data[key]).decode('utf-8', 'replace')}\n")
        else:
            w.write(0, f"{key}:\t{_decoded_size(secret.data[key])} bytes\n")
    _extra_sections(w, related)


SERVICE_ACCOUNT_TOKEN_TYPE = "kubernetes.io/service-account-token"
SERVICE_ACCOUNT_NAME_ANNOTATION = "kubernetes.io/service-account.name"


def _describe_service_account(w: _Writer, sa: ServiceAccount, events: Sequence[Any] | None, related: Related,
                              now: datetime) -> None:
    """kubectl's describeServiceAccount: its pull and mountable secrets (``(not found)`` when
    missing from the namespace) and the legacy token Secrets that name it; ``related["secrets"]``
    are the namespace's Secrets."""
    w.write(0, f"Name:\t{sa.metadata.name}\n")
    w.write(0, f"Namespace:\t{sa.metadata.namespace}\n")
    _labels_multiline(w, "Labels", sa.metadata.labels)
    _annotations_multiline(w, "Annotations", sa.metadata.annotations)
    secrets = related.get("secrets", ())
    present = {s.metadata.name for s in secrets}
    tokens = [s.metadata.name for s in secrets if s.type == SERVICE_ACCOUNT_TOKEN_TYPE
              and s.metadata.annotations.get(SERVICE_ACCOUNT_NAME_ANNOTATION) == sa.metadata.name]
    sections = (("Image pull secrets:", [r.name for r in sa.image_pull_secrets]),
                ("Mountable secrets: ", [r.name for r in sa.secrets]),
                ("Tokens:            ", tokens))
    for header, names in sections:
        if not names:
            w.write(0, f"{header}\t<none>\n")
        for i, name in enumerate(names):
            missing = " (not found)" if name not in present and "secrets" in related else ""
            w.write(0, f"{header if i == 0 else ' ' * len(header)}\t{name}{missing}\n")
    _extra_sections(w, related)
    _events(w, events, now)


def _decoded(text: str) -> bytes:
    return b"" if base64_error(text) else decoded(text)


def _decoded_size(text: str) -> int:
    return len(_decoded(text))


def _describe_fields(w: _Writer, level: int, value: Any) -> None:
    """kubectl's generic describer for custom resources: fields as indented ``Name:  value`` lines."""
    for key, sub in value.items():
        title = key[:1].upper() + key[1:]
        if isinstance(sub, dict):
            w.write(level, f"{title}:\n")
            _describe_fields(w, level + 1, sub)
        elif isinstance(sub, list):
            w.write(level, f"{title}:\n")
            for item in sub:
                if isinstance(item, dict):
                    _describe_fields(w, level + 1, item)
                else:
                    w.write(level + 1, f"{item}\n")
        else:
            w.write(level, f"{title}:\t{sub}\n")


def _describe_custom(w: _Writer, obj: Any, events: Sequence[Any] | None, related: Related, now: datetime) -> None:
    """kubectl's GenericDescriber, as it describes a custom resource (Impairment, Partition)."""
    w.write(0, f"Name:\t{obj.metadata.name}\n")
    if obj.NAMESPACED:
        w.write(0, f"Namespace:\t{obj.metadata.namespace}\n")
    _labels_multiline(w, "Labels", obj.metadata.labels)
    _annotations_multiline(w, "Annotations", obj.metadata.annotations)
    w.write(0, f"API Version:\t{obj.api_version}\nKind:\t{obj.kind}\n")
    data = codec.to_dict(obj)
    for part in ("spec", "status") if not stored_only(obj) else sorted(set(data) - _ENVELOPE):
        if data.get(part):
            w.write(0, f"{part[:1].upper() + part[1:]}:\n")
            _describe_fields(w, 1, data[part] if isinstance(data[part], dict) else {"value": data[part]})
    if stored_only(obj):
        w.write(0, f"Note:\t{STORED_ONLY_NOTE.format(kind=obj.KIND)}\n")
    _extra_sections(w, related)
    _events(w, events, now)


_ENVELOPE = frozenset({"apiVersion", "kind", "metadata"})
STORED_ONLY_NOTE = "stored as given; netemu does not emulate {kind} objects (they have no effect)"

_DESCRIBERS: dict[type, Callable[[_Writer, Any, Sequence[Any] | None, Related, datetime], None]] = {
    **{cls: _describe_custom for cls in STORED_ONLY_TYPES},
    Impairment: _describe_custom,
    Partition: _describe_custom,
    Capture: _describe_custom,
    Pod: _describe_pod,
    Service: _describe_service,
    Deployment: _describe_deployment,
    ReplicaSet: _describe_replicaset,
    StatefulSet: _describe_statefulset,
    DaemonSet: _describe_daemonset,
    EndpointSlice: _describe_endpointslice,
    Node: _describe_node,
    Namespace: _describe_namespace,
    ConfigMap: _describe_configmap,
    Secret: _describe_secret,
    ServiceAccount: _describe_service_account,
    Job: lambda *args: _batch_printers().describe_job(*args),
    CronJob: lambda *args: _batch_printers().describe_cron_job(*args),
    Ingress: lambda *args: _ingress_printers().describe_ingress(*args),
    IngressClass: lambda *args: _ingress_printers().describe_ingress_class(*args),
    NetworkPolicy: lambda *args: _netpol_printers().describe_network_policy(*args),
}


def describe(obj: Any, *, events: Sequence[Any] | None = (), related: Related | None = None,
             now: datetime) -> str:
    """``kubectl describe`` text for a Pod, Service, Deployment, StatefulSet, Node, Namespace or EndpointSlice.

    ``events`` are the object's events (``Event`` or alike); None leaves the Events section out
    (``--show-events=false``). ``related`` carries other objects and extra sections, see ``Related``.
    The text ends with a newline; kubectl separates several descriptions with two more newlines.
    """
    describer = _DESCRIBERS.get(type(obj))
    if describer is None:
        raise InvalidError(f"no description has been implemented for {type(obj).__name__}")
    w = _Writer()
    describer(w, obj, events, related or {}, _aware(now))
    return w.render()


__all__ = [
    "CONTAINER_RUNTIME_VERSION", "Event", "KUBELET_VERSION", "Related", "describe", "human_duration",
    "no_resources_message", "parse_time", "pod_status", "render_json", "render_table", "render_yaml",
    "resolve_kind", "resolve_kinds", "tabwrite",
]
