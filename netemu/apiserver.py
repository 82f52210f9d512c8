"""The emulated API server's write path: every user change (apply, delete, scale) goes through here.

Owns admission (namespace lifecycle, Service cluster IP / node port allocation, what a create or
update may set), the all-or-nothing batch, the kubectl-style result lines, and cascading deletion
(owner references, namespaces). Reads go straight to the store; controllers write the store
directly (they are the cluster's own components, not users).

A batch is planned first against an overlay of the store, with every allocation recorded in a
``Transaction``; only when every object passed is the store written, in order. On any problem the
allocations are rolled back and the store has seen no write at all.

Caps (``ClusterConfig.max_pods``, ``max_objects``, ``max_request_bytes``) refuse work before
memory is at risk, the way a ResourceQuota refuses it: an apply or scale that would make the
workloads and bare pods ask for more pods than ``max_pods`` all together (a Deployment's or
StatefulSet's ``replicas``, 1 per pod without a controller) is refused, naming what was asked,
what is used and the cap; so is an object that would make the cluster hold more than
``max_objects``, and a request (manifest text or files) larger than ``max_request_bytes``.
Nothing is capped silently: a refused object is not stored at all.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from netemu.api.kinds import qualified, resolve_kind
from netemu.api import merge_server_fields, validate, validate_update
from netemu.api.validation import MAX_INT32, service_ip_family_problems
from netemu.api.yamlload import manifest_files
from netemu.config import DEFAULT_MAX_OBJECTS, DEFAULT_MAX_PODS, DEFAULT_MAX_REQUEST_BYTES
from netemu.api.defaults import apply_defaults
from netemu.api.ingress import admit_default_class
from netemu.api.objects import (
    KIND_BY_NAME, STORED_ONLY, INGRESS_KINDS, Namespace, stored_only, NamespaceStatus, ObjectMeta, PodStatus, Service, ServicePort,
    ServiceSpec, key_of,
)
from netemu.allocators import ClusterIPAllocator, NodePortAllocator, Transaction
from netemu.frozen import evolve
from netemu.garbagecollector import GarbageCollector
from netemu.poddeletion import request_deletion
from netemu import serviceaccount_admission
from netemu.errors import (
    AlreadyExistsError, ConflictError, FieldProblem, InvalidError, ManifestError, ManifestErrors, NetemuError, NotFoundError,
    ObjectRef,
)
from netemu.store import DELETED, RESOURCE_NAMES, Event, Store, now_rfc3339

if TYPE_CHECKING:
    import random

    from netemu.api.yamlload import Manifest

# kubectl's singular resource names, for result lines (``service/x created``, ``pod "x" deleted``).
SINGULAR = {
    "Pod": "pod", "Service": "service", "Deployment": "deployment.apps", "StatefulSet": "statefulset.apps",
    "ReplicaSet": "replicaset.apps", "DaemonSet": "daemonset.apps",
    "EndpointSlice": "endpointslice.discovery.k8s.io", "Namespace": "namespace", "Node": "node",
    "ConfigMap": "configmap", "Secret": "secret", "ServiceAccount": "serviceaccount", "Event": "event",
    "Impairment": "impairment.netemu.dev", "Partition": "partition.netemu.dev", "Capture": "capture.netemu.dev",
    "Job": "job.batch", "CronJob": "cronjob.batch", "NetworkPolicy": "networkpolicy.networking.k8s.io",
    **{kind: qualified(kind, version, kind.lower()) for version, kind, _, _ in (*STORED_ONLY, *INGRESS_KINDS)},
}


SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
IMMORTAL_NAMESPACES = frozenset({"default", "kube-system", "kube-public"})
# deletion order in a namespace
NAMESPACED_KINDS = ("CronJob", "Job", "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Service", "EndpointSlice", "Pod", "ConfigMap", "Secret",
                    "ServiceAccount", "Impairment", "Capture", "Ingress", "NetworkPolicy", *(kind for _, kind, namespaced, _ in STORED_ONLY if namespaced))

NODE_REFUSED = ("nodes are made by the cluster (its configuration), not by manifests: "
                "add or remove nodes through the cluster")

KUBE_DNS_OWNER = "kube-system/kube-dns"

NODE_PORT_TYPES = frozenset({"NodePort", "LoadBalancer"})

SCALABLE_KINDS = frozenset({"Deployment", "ReplicaSet", "StatefulSet"})

PLAN_SLICE = 0.02  # seconds of planning between two yields to the event loop (apply_async)


def _pod_demand(obj: Any | None) -> int:
    """How many pods an object asks for: a workload its replicas, a pod without a controller 1
    (a controller's pods are its workload's)."""
    if obj is None:
        return 0
    if obj.KIND == "ReplicaSet" and any(ref.controller for ref in obj.metadata.owner_references):
        return 0  # a Deployment's ReplicaSet: its pods are the Deployment's
    if obj.KIND in SCALABLE_KINDS:
        return obj.spec.replicas if obj.spec.replicas is not None else 1
    if obj.KIND == "Pod":
        return 0 if any(ref.controller for ref in obj.metadata.owner_references) else 1
    return 0


def _pod_cap_exceeded(kind: str, name: str, requested: int, used: int, limit: int) -> str:
    return (f'{RESOURCE_NAMES.get(kind, kind.lower())} "{name}" is forbidden: exceeded the cluster\'s pod cap: '
            f"requested: pods={requested}, used: pods={used}, limited: pods={limit} "
            "(max_pods in the cluster configuration)")


def _object_cap_exceeded(kind: str, name: str, limit: int) -> str:
    return (f'{RESOURCE_NAMES.get(kind, kind.lower())} "{name}" is forbidden: exceeded the cluster\'s object cap: '
            f"limited: objects={limit} (max_objects in the cluster configuration)")


def request_bytes(source: Any) -> int:
    """The size of what an apply reads from ``source``: text (a str), or a file or directory of
    manifests (a Path)."""
    if isinstance(source, str):
        return len(source.encode())
    path = Path(source)
    try:
        files = manifest_files(path) if path.is_dir() else [path]
        return sum(os.stat(file).st_size for file in files)
    except OSError:
        return 0  # the reader names the problem


def _immortal(namespace: str) -> str:
    return f'namespaces "{namespace}" is forbidden: this namespace may not be deleted'


def _owner(obj: Any) -> str:
    return f"{obj.metadata.namespace}/{obj.metadata.name}"


# ------------------------------------------------------------------------ service field helpers


def _needs_cluster_ip(svc: Service) -> bool:
    return svc.spec.type != "ExternalName"


def _is_headless(svc: Service) -> bool:
    return svc.spec.cluster_ip == "None" or svc.spec.cluster_ips[:1] == ("None",)


def _needs_node_ports(svc: Service) -> bool:
    return svc.spec.type in NODE_PORT_TYPES


def _allocates_node_ports(svc: Service) -> bool:
    """Automatic node ports: NodePort always, LoadBalancer unless allocateLoadBalancerNodePorts is false."""
    if svc.spec.type == "NodePort":
        return True
    return svc.spec.type == "LoadBalancer" and svc.spec.allocate_load_balancer_node_ports is not False


def _needs_health_check(svc: Service) -> bool:
    """Kubernetes' NeedsHealthCheck: a LoadBalancer with externalTrafficPolicy Local."""
    return svc.spec.type == "LoadBalancer" and svc.spec.external_traffic_policy == "Local"


def _node_ports(svc: Service) -> list[int]:
    return [p.node_port for p in svc.spec.ports if p.node_port]


def _requested_cluster_ip(spec: ServiceSpec) -> str:
    return spec.cluster_ip or (spec.cluster_ips[0] if spec.cluster_ips else "")


def _cluster_ips_value(spec: ServiceSpec) -> str:
    """``spec.clusterIPs`` as the API server prints a bad value: ``["10.0.171.239"]``."""
    ips = list(spec.cluster_ips) or ([spec.cluster_ip] if spec.cluster_ip else [])
    return json.dumps(ips)


def drop_type_dependent_fields(old: Service, new: Service) -> Service:
    """Clear fields the new type no longer uses when the user left them as they were.

    Kubernetes' ``dropTypeDependentFields`` (PrepareForUpdate): after ``kubectl apply`` keeps the
    server-filled clusterIP and nodePorts, a type change (LoadBalancer → ClusterIP, ClusterIP →
    ExternalName) would otherwise carry values the new type forbids.
    """
    spec = new.spec
    if _needs_cluster_ip(old) and not _needs_cluster_ip(new):
        if spec.cluster_ip == old.spec.cluster_ip and spec.cluster_ips in (old.spec.cluster_ips, ()):
            spec = evolve(spec, cluster_ip="", cluster_ips=())
        if spec.ip_families in (old.spec.ip_families, ()):
            spec = evolve(spec, ip_families=())
        if spec.ip_family_policy in (old.spec.ip_family_policy, ""):
            spec = evolve(spec, ip_family_policy="")
    if _needs_node_ports(old) and not _needs_node_ports(new):
        if all(not p.node_port or p.node_port in _node_ports(old) for p in spec.ports):
            spec = evolve(
                spec, ports=tuple(evolve(p, node_port=None) for p in spec.ports))
    if _needs_health_check(old) and not _needs_health_check(new) \
            and spec.health_check_node_port in (old.spec.health_check_node_port, None):
        spec = evolve(spec, health_check_node_port=None)
    if old.spec.type == "LoadBalancer" and new.spec.type != "LoadBalancer":
        if spec.allocate_load_balancer_node_ports == old.spec.allocate_load_balancer_node_ports:
            spec = evolve(spec, allocate_load_balancer_node_ports=None)
        if spec.load_balancer_class == old.spec.load_balancer_class:
            spec = evolve(spec, load_balancer_class=None)
    if spec.type not in NODE_PORT_TYPES and old.spec.type in NODE_PORT_TYPES \
            and spec.external_traffic_policy == old.spec.external_traffic_policy:
        spec = evolve(spec, external_traffic_policy="")
    return evolve(new, spec=spec) if spec is not new.spec else new


# ------------------------------------------------------------------------ the batch


@dataclass
class _Planned:
    verb: str  # "created", "configured" or "unchanged"
    obj: Any
    applied_keys: tuple[frozenset[str], frozenset[str]]  # label and annotation keys the manifest set


class _Overlay:
    """The store as it will be once the planned writes are done (reads only)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._planned: dict[tuple[str, str, str], Any] = {}

        self._read: dict[tuple[str, str, str], str | None] = {}  # key -> resourceVersion seen
        # ServiceAccounts anywhere in the batch, by (namespace, name): a pod admitted before its
        # account is planned still finds it (the batch is one write).
        self.accounts: dict[tuple[str, str], Any] = {}

    def get(self, kind: str, namespace: str, name: str) -> Any | None:
        key = (kind, namespace, name)
        if key in self._planned:
            return self._planned[key]
        obj = self._store.get(kind, namespace, name)
        self._read.setdefault(key, obj.metadata.resource_version if obj is not None else None)
        return obj

    def put(self, obj: Any) -> None:
        self._planned[key_of(obj)] = obj

    def list(self, kind: str) -> list[Any]:
        """Every object of a cluster-scoped ``kind``, planned ones included."""
        found = {key_of(obj): obj for obj in self._store.list(kind)}
        found.update({key: obj for key, obj in self._planned.items() if key[0] == kind})
        return [obj for obj in found.values() if obj is not None]

    def unchanged(self) -> bool:
        """Every store object read is still as it was read (absent ones still absent)."""
        for key, rv in self._read.items():
            obj = self._store.get(*key)
            if (obj.metadata.resource_version if obj is not None else None) != rv:
                return False
        return True


class _Refused(NetemuError):
    """Internal: the object being planned is refused for these problems (never escapes apply)."""

    def __init__(self, problems: Sequence[FieldProblem | str]) -> None:
        super().__init__()
        self.problems = [p if isinstance(p, FieldProblem) else FieldProblem("", p) for p in problems]


def _dedupe(problems: Iterable[FieldProblem]) -> list[FieldProblem]:
    seen: set[str] = set()
    out = []
    for p in problems:
        if str(p) not in seen:
            seen.add(str(p))
            out.append(p)
    return out


def _meta_keys(obj: Any) -> tuple[frozenset[str], frozenset[str]]:
    return frozenset(obj.metadata.labels), frozenset(obj.metadata.annotations)


def _same_content(live: Any, new: Any) -> bool:
    """Everything a user sets (spec and friends, labels, annotations) equals the live object."""
    if live.metadata.labels != new.metadata.labels or live.metadata.annotations != new.metadata.annotations:
        return False
    if live.metadata.extra.get("managedFields") != new.metadata.extra.get("managedFields"):
        return False  # a server-side apply that only changes who owns what
    if {k: v for k, v in live.extra.items() if k != "status"} != {k: v for k, v in new.extra.items() if k != "status"}:
        return False  # fields kept as given (a stored-only kind's whole content, a type's IGNORED ones)
    for f in dataclasses.fields(new):
        if f.name in ("metadata", "status", "extra", "api_version", "kind"):
            continue
        if getattr(live, f.name) != getattr(new, f.name):
            return False
    return True


class ApiServer:
    """The write path of the emulated API server over one store."""

    def __init__(self, store: Store, *, service_cidr: str, node_port_range: str = "30000-32767",
                 rng: random.Random | None = None, max_pods: int = DEFAULT_MAX_PODS,
                 max_objects: int = DEFAULT_MAX_OBJECTS, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> None:
        self.store = store
        self.max_pods = max_pods
        self.max_objects = max_objects
        self.max_request_bytes = max_request_bytes
        self.cluster_ips = ClusterIPAllocator(service_cidr, rng=rng)
        self.node_ports = NodePortAllocator(node_port_range, rng=rng)
        # Label and annotation keys each object's last apply set, for kubectl apply's three-way
        # merge: keys others added (controllers) survive a re-apply, keys the user dropped go.
        self._applied_keys: dict[tuple[str, str, str], tuple[frozenset[str], frozenset[str]]] = {}
        self._unsubscribe = store.subscribe(self._on_pod_event, kinds=["Pod"])
        # Validating admission that needs the running cluster, by kind (netemu.chaos registers
        # Impairment and Partition): the problems it finds refuse the object like validation's.
        self.admission: dict[str, Callable[[Any], list[FieldProblem]]] = {}
        # Warnings a write of an admitted object answers with, by kind (netemu.networkpolicy on
        # the loopback backend): kubectl prints them as ``Warning: …``, ``netemu apply`` too.
        self.warnings: dict[str, Callable[[Any], list[str]]] = {}
        # The ServiceAccount admission plugin mounts a token only while the cluster serves its
        # Kubernetes API (the cluster sets this once the API is up: tokens and CA exist then).
        self.mount_service_account_tokens = False
        store.admission["Pod"] = self._admit_component_pod  # a controller's pods are admitted too
        self.garbage_collector = GarbageCollector(  # a foreground deletion waits on the dependents' dependents too
            store, NAMESPACED_KINDS, lambda obj: self._delete_object(obj, propagation="Foreground"), self._remove)

    # ------------------------------------------------------------------ well-known addresses

    @property
    def kubernetes_ip(self) -> str:
        """ClusterIP of the ``kubernetes`` service: the first usable address of the range."""
        return self.cluster_ips.nth(1)

    @property
    def dns_ip(self) -> str:
        """ClusterIP kept for ``kube-system/kube-dns``: the tenth address (10.96.0.10)."""
        return self.cluster_ips.nth(10)

    def reserve(self, owner: str, ip: str) -> str:
        """Keep ``ip`` for the service ``owner`` (``namespace/name``) until it is created."""
        return self.cluster_ips.reserve(owner, ip)

    def close(self) -> None:
        self._unsubscribe()
        if self.store.admission.get("Pod") == self._admit_component_pod:
            del self.store.admission["Pod"]
        self.garbage_collector.close()

    # ------------------------------------------------------------------ bootstrap

    def bootstrap(self) -> list[str]:
        """The objects every cluster starts with: system namespaces and the ``kubernetes`` service.

        Also keeps the cluster DNS IP for ``kube-system/kube-dns``. Idempotent.
        """
        self.cluster_ips.reserve(KUBE_DNS_OWNER, self.dns_ip)
        objects: list[Any] = [Namespace(metadata=ObjectMeta(name=ns)) for ns in SYSTEM_NAMESPACES]
        objects.append(Service(
            metadata=ObjectMeta(name="kubernetes", namespace="default",
                                labels={"component": "apiserver", "provider": "kubernetes"}),
            spec=ServiceSpec(
                type="ClusterIP", cluster_ip=self.kubernetes_ip, cluster_ips=(self.kubernetes_ip,),
                ports=(ServicePort(name="https", protocol="TCP", port=443, target_port=6443),),
                session_affinity="None", internal_traffic_policy="Cluster",
                ip_families=(self.cluster_ips.family,), ip_family_policy="SingleStack")))
        return self._apply([(obj, ObjectRef(source="<bootstrap>")) for obj in objects])

    # ------------------------------------------------------------------ apply

    def apply(self, manifests: Sequence[Manifest]) -> list[str]:
        """Create or update every manifest's object, all or nothing; kubectl-style result lines.

        Raises ManifestErrors naming every refused object; then neither the store nor the
        allocators have changed.
        """
        return self._apply([(m.obj, m.ref) for m in manifests], from_manifests=True)

    async def apply_async(self, manifests: Sequence[Manifest], *, slice_seconds: float = PLAN_SLICE) -> list[str]:
        """``apply`` that leaves the event loop free while it plans: planning (defaults,
        validation, allocation) yields every ``slice_seconds``, so a batch of thousands never
        stalls cluster DNS or the proxy. The store is then written in one step, after a check that
        nothing the plan read has changed meanwhile; if something has, the batch is planned again
        (and, should that keep happening, at once)."""
        items = [(m.obj, m.ref) for m in manifests]
        for _ in range(3):
            steps = self._plan_batch(items, slice_seconds, from_manifests=True)
            try:
                while True:
                    try:
                        next(steps)
                    except StopIteration as done:
                        batch, planned, overlay = done.value
                        break
                    await asyncio.sleep(0)
            finally:
                steps.close()  # cancelled while planning: the generator rolls its allocations back
            if overlay.unchanged():
                return self._commit(batch, planned)
            batch.rollback()
        return self._apply(items, from_manifests=True)

    # ------------------------------------------------------------------ one object (the Kubernetes API)

    def admit(self, obj: Any, *, create: bool, expect_rv: str | None = None, dry_run: bool = False) -> Any:
        """Create (``create``) or replace one object, as a POST or PUT of the Kubernetes API does,
        through the same admission as ``apply`` (defaults, validation, allocation, caps); returns
        the object as stored, or as it would be with ``dry_run`` (nothing stored, nothing kept).

        A replace sets labels and annotations as given (no three-way merge) and, with
        ``expect_rv``, refuses a stale object (ConflictError). AlreadyExistsError / NotFoundError
        when the object is there / missing; ManifestErrors when admission refuses it."""
        obj = apply_defaults(self._with_namespace(obj))
        key = key_of(obj)
        live = self.store.get(*key)
        resource = RESOURCE_NAMES.get(obj.KIND, obj.KIND.lower())
        if create and live is not None:
            raise AlreadyExistsError(f'{resource} "{obj.metadata.name}" already exists')
        if not create:
            if live is None:
                raise NotFoundError(f'{resource} "{obj.metadata.name}" not found')
            if expect_rv and live.metadata.resource_version != expect_rv:
                raise ConflictError(f'Operation cannot be fulfilled on {resource} "{obj.metadata.name}": the object '
                                    "has been modified; please apply your changes to the latest version and try again")
        had = self._applied_keys.get(key)
        if live is not None:
            self._applied_keys[key] = _meta_keys(live)  # every live key may go: labels are replaced
        try:
            steps = self._plan_batch([(obj, ObjectRef(source="<api>"))], defaulted=True)
            try:
                while True:
                    next(steps)
            except StopIteration as done:
                batch, planned, _overlay = done.value
        finally:
            if had is None:
                self._applied_keys.pop(key, None)
            else:
                self._applied_keys[key] = had
        if dry_run:
            batch.rollback()
            return planned[0].obj
        self._commit(batch, planned)
        return self.store.get(*key)

    def check_request_size(self, source: Any, name: str = "") -> None:
        """Refuses a request (manifest text, or a file or directory of them) over
        ``max_request_bytes`` before a byte of it is parsed, as kube-apiserver refuses a body
        over its 3 MiB limit."""
        size = request_bytes(source)
        if size > self.max_request_bytes:
            raise InvalidError(f"{name or source}: Request entity too large: limit is {self.max_request_bytes} "
                               f"bytes (max_request_bytes in the cluster configuration), got {size}")

    def pods_demanded(self) -> int:
        """The pods every workload and bare pod asks for, all together (see ``max_pods``)."""
        return sum(_pod_demand(obj) for kind in (*SCALABLE_KINDS, "Pod") for obj in self.store.list(kind))

    def objects_held(self) -> int:
        return sum(self.store.count(kind) for kind in KIND_BY_NAME if kind != "Event")  # events: netemu.events

    def _check_caps(self, plan: _Planned, live: Any | None, pods_used: int, objects_held: int) -> int:
        """Refuses ``plan`` over a cap; returns its change of the pods demanded."""
        if plan.verb == "unchanged":
            return 0
        obj = plan.obj
        asked, had = _pod_demand(obj), _pod_demand(live)
        if asked > had and pods_used - had + asked > self.max_pods:
            raise _Refused([_pod_cap_exceeded(obj.KIND, obj.metadata.name, asked, pods_used - had, self.max_pods)])
        if live is None and objects_held + 1 > self.max_objects:
            raise _Refused([_object_cap_exceeded(obj.KIND, obj.metadata.name, self.max_objects)])
        return asked - had

    def _apply(self, items: Sequence[tuple[Any, ObjectRef]], *, from_manifests: bool = False) -> list[str]:
        steps = self._plan_batch(items, from_manifests=from_manifests)
        try:
            while True:
                next(steps)  # without a slice it never yields
        except StopIteration as done:
            batch, planned, _overlay = done.value
        return self._commit(batch, planned)

    def _plan_batch(self, items: Sequence[tuple[Any, ObjectRef]], slice_seconds: float | None = None, *,
                    defaulted: bool = False, from_manifests: bool = False
                    ) -> Generator[None, None, tuple[Transaction, list[_Planned], _Overlay]]:
        """Plan every item against an overlay of the store, allocations in one transaction; yields
        after every ``slice_seconds`` of work when given. Returns (transaction, plans, overlay);
        raises ManifestErrors, allocations rolled back, when any object is refused.

        Items are defaulted here unless ``defaulted`` says they already are. ``from_manifests``:
        they are ``Manifest`` objects (yamlload has set their namespace, defaulted and validated
        them), so neither is done again; a create whose object the server's own steps change
        (admission, the Job and DaemonSet strategies) is still validated."""
        defaulted = defaulted or from_manifests
        overlay = _Overlay(self.store)
        overlay.accounts = {(sa.metadata.namespace, sa.metadata.name): sa for sa in (
            self._with_namespace(obj) for obj, _ in items if obj.KIND == "ServiceAccount")}
        batch = Transaction()
        planned: list[_Planned] = []
        errors: list[ManifestError] = []
        deadline = time.monotonic() + slice_seconds if slice_seconds is not None else None
        pods_used, objects_held = self.pods_demanded(), self.objects_held()
        try:
            for obj, ref in items:
                if deadline is not None and time.monotonic() > deadline:
                    yield
                    deadline = time.monotonic() + slice_seconds  # type: ignore[operator]
                if not defaulted:  # objects built in Python need it
                    obj = apply_defaults(self._with_namespace(obj))
                ref = self._complete_ref(ref, obj)
                step = batch.child()
                try:
                    live = overlay.get(*key_of(obj))
                    plan = self._plan(obj, overlay, step, validated=from_manifests)
                    pods_used += self._check_caps(plan, live, pods_used, objects_held)
                except _Refused as refused:
                    step.rollback()
                    errors.append(ManifestError(ref, refused.problems))
                    continue
                step.commit()
                objects_held += plan.verb == "created"
                if plan.verb != "unchanged":
                    overlay.put(plan.obj)
                planned.append(plan)
        except BaseException:
            batch.rollback()
            raise
        if errors:
            batch.rollback()
            raise ManifestErrors(errors)
        return batch, planned, overlay

    def _commit(self, batch: Transaction, planned: list[_Planned]) -> list[str]:
        """Write the planned objects to the store, in order."""
        batch.commit()
        lines = []
        for plan in planned:
            if plan.verb == "created":
                self.store.create(plan.obj, admitted=True)  # admitted while planned
            elif plan.verb == "configured":
                self.store.update(plan.obj)
            self._applied_keys[key_of(plan.obj)] = plan.applied_keys
            note = " (stored only: netemu does not emulate this kind)" if stored_only(plan.obj) else ""
            lines.append(f"{SINGULAR[plan.obj.KIND]}/{plan.obj.metadata.name} {plan.verb}{note}")
            if plan.verb != "unchanged":
                lines += [f"Warning: {text}" for text in self.warnings_for(plan.obj)]
        return lines

    def warnings_for(self, obj: Any) -> list[str]:
        """What a write of ``obj`` warns about (``warnings``)."""
        warn = self.warnings.get(obj.KIND)
        return warn(obj) if warn is not None else []

    @staticmethod
    def _with_namespace(obj: Any) -> Any:
        if obj.NAMESPACED and not obj.metadata.namespace:
            return evolve(obj, metadata=evolve(obj.metadata, namespace="default"))
        if not obj.NAMESPACED and obj.metadata.namespace:
            return evolve(obj, metadata=evolve(obj.metadata, namespace=""))
        return obj

    @staticmethod
    def _complete_ref(ref: ObjectRef, obj: Any) -> ObjectRef:
        return ref._replace(
            kind=ref.kind or obj.KIND, name=ref.name or obj.metadata.name,
            namespace=ref.namespace or (obj.metadata.namespace if obj.NAMESPACED else ""))

    def _plan(self, obj: Any, overlay: _Overlay, txn: Transaction, *, validated: bool = False) -> _Planned:
        """``validated``: ``obj`` passed ``validate`` as given (a ``Manifest``'s object)."""
        given = obj
        kind = obj.KIND
        if kind not in KIND_BY_NAME:
            raise _Refused([f"kind {kind} is not served by netemu"])
        live = overlay.get(*key_of(obj))
        if kind == "Node" and live is None:  # an existing node may be labelled, tainted, cordoned
            raise _Refused([NODE_REFUSED])
        if obj.NAMESPACED:
            self._admit_namespace(obj, overlay, creating=live is None)
        if live is None:
            if kind == "Pod":
                obj = self._admit_service_account(obj, overlay)
            elif kind == "Ingress":
                obj = admit_default_class(obj, overlay.list("IngressClass"))
            return self._plan_create(obj, txn, validated=validated and obj is given)
        if kind == "Pod":
            obj = serviceaccount_admission.keep_admitted(live, obj)
        return self._plan_update(live, obj, txn)

    def _admit_service_account(self, pod: Any, overlay: _Overlay) -> Any:
        """The ServiceAccount admission plugin, against the batch as planned: an account anywhere
        in the batch counts (the batch is one write), and so does ``default`` in a namespace that
        exists (the serviceaccounts controller makes it as the namespace is written)."""
        def find(namespace: str, name: str) -> Any:
            sa = overlay.get("ServiceAccount", namespace, name) or overlay.accounts.get((namespace, name))
            if sa is None and name == serviceaccount_admission.DEFAULT_SERVICE_ACCOUNT:
                ns = overlay.get("Namespace", "", namespace)
                if ns is not None and ns.metadata.deletion_timestamp is None:
                    sa = KIND_BY_NAME["ServiceAccount"](metadata=ObjectMeta(name=name, namespace=namespace))
            return sa
        try:
            return serviceaccount_admission.admit_pod(pod, find, mount_token=self.mount_service_account_tokens)
        except serviceaccount_admission.ServiceAccountForbiddenError as exc:
            raise _Refused([str(exc)]) from exc

    def _admit_component_pod(self, pod: Any) -> Any:
        """The ServiceAccount admission of a pod a controller creates (``Store.admission``):
        refused with the same words when its account is missing (the controller records
        FailedCreate and tries again)."""
        def find(namespace: str, name: str) -> Any:
            sa = self.store.get("ServiceAccount", namespace, name)
            if sa is None and name == serviceaccount_admission.DEFAULT_SERVICE_ACCOUNT:
                sa = serviceaccount_admission.ensure_default(self.store, namespace)
            return sa
        return serviceaccount_admission.admit_pod(pod, find, mount_token=self.mount_service_account_tokens)

    @staticmethod
    def _admit_namespace(obj: Any, overlay: _Overlay, *, creating: bool) -> None:
        """NamespaceLifecycle admission: the namespace must exist and, for a create, not be terminating."""
        ns = obj.metadata.namespace
        namespace = overlay.get("Namespace", "", ns)
        if namespace is None:
            raise _Refused([f'namespaces "{ns}" not found'])
        if creating and namespace.metadata.deletion_timestamp is not None:
            resource = RESOURCE_NAMES.get(obj.KIND, obj.KIND.lower())
            raise _Refused([f'{resource} "{obj.metadata.name}" is forbidden: unable to create new content '
                            f"in namespace {ns} because it is being terminated"])

    def _admission_problems(self, obj: Any) -> list[FieldProblem]:
        check = self.admission.get(obj.KIND)
        return check(obj) if check is not None else []

    def _ip_family_problems(self, obj: Any) -> list[FieldProblem]:
        """The service allocator's refusals, before validation as in the API server."""
        return service_ip_family_problems(obj, (self.cluster_ips.family,)) if isinstance(obj, Service) else []

    def _plan_create(self, obj: Any, txn: Transaction, *, validated: bool = False) -> _Planned:
        """``validated``: ``obj`` as given passed ``validate``; what ``_prepare_for_create`` changes
        (server-set metadata, status) cannot make it invalid, so only the strategies' changes
        call for validating again."""
        obj = self._prepare_for_create(obj)
        if obj.KIND == "Job":  # the Job strategy: a uid at once, and the selector generated from it
            from netemu.api.batchrules import prepare_job_for_create
            obj = prepare_job_for_create(obj)
            validated = False
        if obj.KIND == "DaemonSet":  # the DaemonSet strategy: template generation 1
            from netemu.api.daemonsetrules import prepare_daemon_set_for_create
            obj = prepare_daemon_set_for_create(obj)
            validated = False
        problems = (self._ip_family_problems(obj) or ([] if validated else validate(obj))
                    or self._admission_problems(obj))
        if problems:
            raise _Refused(problems)
        if isinstance(obj, Service):
            obj = self._allocate_create(obj, txn)
        return _Planned("created", obj, _meta_keys(obj))

    @staticmethod
    def _prepare_for_create(obj: Any) -> Any:
        """Drop what only the server sets: identity, resourceVersion, deletion state and all status."""
        meta = evolve(
            obj.metadata, uid="", resource_version="", generation=0, creation_timestamp=None,
            deletion_timestamp=None, deletion_grace_period_seconds=None)
        changes: dict[str, Any] = {"metadata": meta}
        if hasattr(obj, "status"):
            status = type(obj.status)()
            if isinstance(status, PodStatus):
                status = PodStatus(phase="Pending")
            elif isinstance(status, NamespaceStatus):
                status = NamespaceStatus(phase="Active")
            changes["status"] = status
        return evolve(obj, **changes)

    def _plan_update(self, live: Any, obj: Any, txn: Transaction) -> _Planned:
        applied_keys = _meta_keys(obj)
        obj = merge_server_fields(live, obj)  # what kubectl apply's patch keeps: clusterIP, nodePorts, nodeName
        if isinstance(obj, Service):
            obj = drop_type_dependent_fields(live, obj)
        obj = self._prepare_for_update(live, obj)
        if obj.KIND == "DaemonSet":  # the DaemonSet strategy: a new template generation per template change
            from netemu.api.daemonsetrules import prepare_daemon_set_for_update
            obj = prepare_daemon_set_for_update(live, obj)
        problems = (self._ip_family_problems(obj) or _dedupe(validate_update(live, obj))
                    or self._admission_problems(obj))
        if problems:
            raise _Refused(problems)
        if isinstance(obj, Service):
            obj = self._allocate_update(live, obj, txn)
        if _same_content(live, obj):
            return _Planned("unchanged", live, applied_keys)
        return _Planned("configured", obj, applied_keys)

    def _prepare_for_update(self, live: Any, obj: Any) -> Any:
        """Keep the server's metadata and the live status (a user update never changes status).

        Labels and annotations merge three ways: live keys the previous apply did not set (a
        controller's) are kept; keys it set and this manifest drops are removed.
        """
        old = live.metadata
        prev_labels, prev_annotations = self._applied_keys.get(key_of(live), (frozenset(), frozenset()))
        labels = {k: v for k, v in old.labels.items() if k not in prev_labels} | dict(obj.metadata.labels)
        annotations = ({k: v for k, v in old.annotations.items() if k not in prev_annotations}
                       | dict(obj.metadata.annotations))
        meta = evolve(
            obj.metadata, labels=labels, annotations=annotations, uid=old.uid,
            resource_version=old.resource_version, generation=old.generation,
            creation_timestamp=old.creation_timestamp, deletion_timestamp=old.deletion_timestamp,
            deletion_grace_period_seconds=old.deletion_grace_period_seconds,
            owner_references=obj.metadata.owner_references or old.owner_references,
            finalizers=obj.metadata.finalizers or old.finalizers)
        if "managedFields" not in meta.extra and "managedFields" in old.extra:  # a write that does not track them
            meta = evolve(meta, extra={**meta.extra, "managedFields": old.extra["managedFields"]})
        changes: dict[str, Any] = {"metadata": meta}
        if hasattr(live, "status"):
            changes["status"] = live.status
        return evolve(obj, **changes)

    # ------------------------------------------------------------------ service allocation

    def _allocate_create(self, svc: Service, txn: Transaction) -> Service:
        owner = _owner(svc)
        spec = self._allocate_cluster_ip(svc.spec, owner, txn)
        if svc.spec.type in NODE_PORT_TYPES:
            spec = evolve(spec, ports=self._init_node_ports(svc, owner, txn))
        svc = evolve(svc, spec=spec)
        if _needs_health_check(svc):
            svc = self._allocate_health_check(svc, owner, txn)
        return svc

    def _allocate_cluster_ip(self, spec: ServiceSpec, owner: str, txn: Transaction) -> ServiceSpec:
        if spec.type == "ExternalName":
            return spec
        if spec.cluster_ip == "None" or spec.cluster_ips[:1] == ("None",):
            return evolve(
                spec, cluster_ip="None", cluster_ips=("None",),
                ip_families=spec.ip_families or (self.cluster_ips.family,),
                ip_family_policy=spec.ip_family_policy or "SingleStack")
        wanted = _requested_cluster_ip(spec)
        try:
            ip = self.cluster_ips.allocate(owner, wanted or None, txn)
        except (InvalidError, ConflictError) as exc:
            if wanted:
                raise _Refused([FieldProblem(
                    "spec.clusterIPs",
                    f"Invalid value: {_cluster_ips_value(spec)}: failed to allocate IP {wanted}: {exc}")]) from exc
            raise _Refused([f"Internal error occurred: failed to allocate a serviceIP: {exc}"]) from exc
        return evolve(
            spec, cluster_ip=ip, cluster_ips=(ip,) + tuple(spec.cluster_ips[1:]),
            ip_families=spec.ip_families or (self.cluster_ips.family,),
            ip_family_policy=spec.ip_family_policy or "SingleStack")

    def _claim_node_port(self, owner: str, index: int, port: int, txn: Transaction) -> int:
        try:
            return self.node_ports.allocate(owner, port, txn)
        except (InvalidError, ConflictError) as exc:
            raise _Refused([FieldProblem(f"spec.ports[{index}].nodePort", f"Invalid value: {port}: {exc}")]) from exc

    def _next_node_port(self, owner: str, txn: Transaction) -> int:
        try:
            return self.node_ports.allocate_next(owner, txn)
        except ConflictError as exc:
            raise _Refused([f"Internal error occurred: failed to allocate a nodePort: {exc}"]) from exc

    def _init_node_ports(self, svc: Service, owner: str, txn: Transaction) -> tuple[ServicePort, ...]:
        """Kubernetes' initNodePorts: ports with the same port number (TCP and UDP 53) share a node port."""
        ports = list(svc.spec.ports)
        automatic = _allocates_node_ports(svc)
        by_port_number: dict[int, int] = {}
        for i, port in enumerate(ports):
            if not port.node_port and not automatic:
                continue  # no automatic node ports, but explicit requests are honoured
            shared = by_port_number.get(port.port)
            if shared is None:
                requested = next((p.node_port for p in ports if p.port == port.port and p.node_port), None)
                if requested:
                    node_port = self._claim_node_port(owner, i, requested, txn)
                else:
                    node_port = self._next_node_port(owner, txn)
                by_port_number[port.port] = node_port
                ports[i] = evolve(port, node_port=node_port)
            elif port.node_port != shared:
                if not port.node_port:
                    ports[i] = evolve(port, node_port=shared)
                else:
                    self._claim_node_port(owner, i, port.node_port, txn)
        return tuple(ports)

    def _allocate_health_check(self, svc: Service, owner: str, txn: Transaction) -> Service:
        wanted = svc.spec.health_check_node_port
        try:
            if wanted:
                if wanted in _node_ports(svc):
                    raise ConflictError("provided port is already allocated")
                port = self.node_ports.allocate(owner, wanted, txn)
            else:
                port = self.node_ports.allocate_next(owner, txn)
        except (InvalidError, ConflictError) as exc:
            what = f"requested HealthCheck NodePort {wanted}" if wanted else "a HealthCheck NodePort"
            raise _Refused([f"Internal error occurred: failed to allocate {what}: {exc}"]) from exc
        return evolve(svc, spec=evolve(svc.spec, health_check_node_port=port))

    def _allocate_update(self, old: Service, new: Service, txn: Transaction) -> Service:
        owner = _owner(new)
        spec = new.spec
        # Cluster IP: allocated when leaving ExternalName, released when becoming ExternalName.
        if old.spec.type == "ExternalName" and new.spec.type != "ExternalName":
            spec = self._allocate_cluster_ip(spec, owner, txn)
        elif not _is_headless(old) and _needs_cluster_ip(old):
            if not _needs_cluster_ip(new):
                self.cluster_ips.release(old.spec.cluster_ip, owner, txn)
            elif _requested_cluster_ip(spec) not in ("", old.spec.cluster_ip):
                raise _Refused([FieldProblem(
                    "spec.clusterIPs[0]", f"Invalid value: {json.dumps(_requested_cluster_ip(spec))}: "
                                          "may not change once set")])
            elif not spec.cluster_ip:
                spec = evolve(spec, cluster_ip=old.spec.cluster_ip, cluster_ips=old.spec.cluster_ips)
        new = evolve(new, spec=spec)
        # Node ports: released when the type drops them, else kept, added and released per port.
        old_node_ports = _node_ports(old)
        if _needs_node_ports(old) and not _needs_node_ports(new):
            for port in old_node_ports:
                self.node_ports.release(port, owner, txn)
        if _needs_node_ports(new):
            ports = list(new.spec.ports)
            automatic = _allocates_node_ports(new)
            for i, port in enumerate(ports):
                if not port.node_port and not automatic:
                    continue
                if port.node_port:
                    if port.node_port not in old_node_ports:
                        self._claim_node_port(owner, i, port.node_port, txn)
                else:
                    ports[i] = evolve(port, node_port=self._next_node_port(owner, txn))
            new = evolve(new, spec=evolve(new.spec, ports=tuple(ports)))
            kept = set(_node_ports(new))
            for port in old_node_ports:
                if port not in kept:
                    self.node_ports.release(port, owner, txn)
        # Health check node port (LoadBalancer with externalTrafficPolicy Local).
        needed, needs = _needs_health_check(old), _needs_health_check(new)
        if needs and not needed:
            new = self._allocate_health_check(new, owner, txn)
        elif needed and not needs and old.spec.health_check_node_port:
            if old.spec.health_check_node_port not in _node_ports(new):
                self.node_ports.release(old.spec.health_check_node_port, owner, txn)
        return new

    def _release_service(self, svc: Service) -> None:
        owner = _owner(svc)
        if _needs_cluster_ip(svc) and not _is_headless(svc) and svc.spec.cluster_ip:
            self.cluster_ips.release(svc.spec.cluster_ip, owner)
        for port in _node_ports(svc):
            self.node_ports.release(port, owner)
        if _needs_health_check(svc) and svc.spec.health_check_node_port:
            self.node_ports.release(svc.spec.health_check_node_port, owner)

    # ------------------------------------------------------------------ delete

    def delete(self, kind: str, namespace: str, name: str, *, grace_period_seconds: int | None = None,
               propagation: str | None = None) -> str:
        """Delete one object as ``kubectl delete`` does; returns ``service "x" deleted``.

        Pods terminate gracefully (``grace_period_seconds``, else their own; 0 removes them at
        once); services free their IP and node ports; objects owned by the deleted one
        (ownerReferences) follow as ``propagation`` says: ``Background`` (the default: the owner
        goes first), ``Foreground`` (the owner stays, marked, until they are gone) or ``Orphan``
        (they stay, without the reference). A namespace takes everything in it along. An object
        already being deleted is left as it is (a pod may have its grace period shortened).
        """
        kind = resolve_kind(kind)
        if kind == "Node":
            raise InvalidError(NODE_REFUSED)
        if kind == "Namespace":
            self._delete_namespace(name)
        else:
            obj = self.store.must_get(kind, (namespace or "default") if KIND_BY_NAME[kind].NAMESPACED else "", name)
            if kind == "Pod" or obj.metadata.deletion_timestamp is None:
                self._delete_object(obj, grace_period_seconds, propagation)
        return f'{SINGULAR[kind]} "{name}" deleted'

    def delete_manifests(self, manifests: Sequence[Manifest]) -> list[str]:
        """``kubectl delete -f``: every object must exist (checked first, nothing deleted otherwise)."""
        targets: list[tuple[str, str, str]] = []
        errors: list[ManifestError] = []
        for m in manifests:
            obj = self._with_namespace(m.obj)
            ref = self._complete_ref(m.ref, obj)
            kind, ns, name = key_of(obj)
            if kind == "Node":
                errors.append(ManifestError(ref, [NODE_REFUSED]))
            elif kind == "Namespace" and name in IMMORTAL_NAMESPACES:
                errors.append(ManifestError(ref, [_immortal(name)]))
            elif self.store.get(kind, ns, name) is None:
                errors.append(ManifestError(ref, [f'{RESOURCE_NAMES.get(kind, kind.lower())} "{name}" not found']))
            else:
                targets.append((kind, ns, name))
        if errors:
            raise ManifestErrors(errors)
        lines = []
        for kind, ns, name in targets:
            try:
                lines.append(self.delete(kind, ns, name))
            except NotFoundError:  # taken along by an earlier deletion (its namespace or owner)
                lines.append(f'{SINGULAR[kind]} "{name}" deleted')
        return lines

    def _delete_object(self, obj: Any, grace_period_seconds: int | None = None, propagation: str | None = None) -> None:
        self._applied_keys.pop(key_of(obj), None)
        if obj.KIND == "Pod":
            request_deletion(self.store, obj, grace_period_seconds)
            return
        if propagation == "Foreground":
            self.garbage_collector.delete_foreground(obj)
            return
        if propagation == "Orphan":
            self.garbage_collector.orphan(obj)
        self._remove(obj)

    def _remove(self, obj: Any) -> None:
        """The last step of a deletion: the object leaves the store, its dependents follow."""
        self.store.delete(*key_of(obj))
        if isinstance(obj, Service):
            self._release_service(obj)
        self._delete_dependents(obj)

    def _delete_dependents(self, owner: Any) -> None:
        """The garbage collector's background cascade: objects whose ownerReferences name ``owner``."""
        uid = owner.metadata.uid
        if not uid or not owner.NAMESPACED:
            return
        for kind in NAMESPACED_KINDS:
            for obj in self.store.list(kind, owner.metadata.namespace):
                if any(ref.uid == uid for ref in obj.metadata.owner_references):
                    if self.store.get(*key_of(obj)) is not None:
                        self._delete_object(obj)

    def _delete_namespace(self, name: str) -> None:
        if name in IMMORTAL_NAMESPACES:
            raise InvalidError(_immortal(name))
        namespace = self.store.must_get("Namespace", "", name)
        if namespace.metadata.deletion_timestamp is None:
            self.store.update(evolve(
                namespace, metadata=evolve(namespace.metadata, deletion_timestamp=now_rfc3339()),
                status=evolve(namespace.status, phase="Terminating")))
        for kind in NAMESPACED_KINDS:
            for obj in self.store.list(kind, name):
                if self.store.get(*key_of(obj)) is not None:
                    self._delete_object(obj)
        self._finish_namespace(name)

    def _finish_namespace(self, name: str) -> None:
        """Remove a terminating namespace once its last pod is gone."""
        namespace = self.store.get("Namespace", "", name)
        if namespace is None or namespace.metadata.deletion_timestamp is None:
            return
        if self.store.list("Pod", name):
            return
        for kind in NAMESPACED_KINDS:  # anything a controller wrote meanwhile goes too
            for obj in self.store.list(kind, name):
                self._delete_object(obj)
        self.store.delete("Namespace", "", name)
        self._applied_keys.pop(("Namespace", "", name), None)

    def _on_pod_event(self, event: Event) -> None:
        if event.type == DELETED:
            self._finish_namespace(event.old.metadata.namespace)

    # ------------------------------------------------------------------ scale

    def scale(self, kind: str, namespace: str, name: str, replicas: int,
              record: Callable[[Any, Any], Any] | None = None) -> str:
        """``kubectl scale`` of a deployment or statefulset; returns ``deployment.apps/x scaled``.
        ``record(live, scaled)``, when given, returns the scaled object as it is written (the
        Kubernetes API adds its managed fields)."""
        kind = resolve_kind(kind)
        if kind not in SCALABLE_KINDS:
            raise InvalidError(f'{RESOURCE_NAMES.get(kind, kind.lower())} "{name}" cannot be scaled: '
                               "only deployments, replicasets and statefulsets have replicas")
        if not -MAX_INT32 - 1 <= replicas <= MAX_INT32:
            raise InvalidError(f'Scale in version "v1" cannot be handled as a Scale: json: cannot unmarshal number '
                               f"{replicas} into Go struct field ScaleSpec.spec.replicas of type int32")
        if replicas < 0:
            raise InvalidError(f'The {kind} "{name}" is invalid: spec.replicas: Invalid value: {replicas}: '
                               "must be greater than or equal to 0")
        obj = self.store.must_get(kind, namespace or "default", name)
        had, used = _pod_demand(obj), self.pods_demanded()
        if replicas > had and used - had + replicas > self.max_pods:
            raise InvalidError(_pod_cap_exceeded(kind, name, replicas, used - had, self.max_pods))
        if obj.spec.replicas != replicas:
            scaled = evolve(obj, spec=evolve(obj.spec, replicas=replicas))
            self.store.update(record(obj, scaled) if record is not None else scaled)
        return f"{SINGULAR[kind]}/{name} scaled"
