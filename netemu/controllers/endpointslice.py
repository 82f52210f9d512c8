"""The EndpointSlice controller: Services with a selector → EndpointSlices of their pods.

For each Service with a non-empty selector (and not ExternalName) it keeps IPv4 EndpointSlices
named ``<svc>-<5 chars>`` (``generateName: <svc>-``), labelled ``kubernetes.io/service-name``
and ``endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`` (plus the
service's own labels and ``service.kubernetes.io/headless`` for headless services), owned by the
Service. As in Kubernetes:

- an endpoint is a matching pod in the namespace with an IPv4 pod IP that has not finished;
  ``ready`` = Ready and not terminating (always true with ``publishNotReadyAddresses``),
  ``serving`` = Ready, ``terminating`` = deletionTimestamp set; ``hostname`` when the pod's
  ``subdomain`` names the service; ``nodeName``, ``zone`` (node label) and ``targetRef``;
- ports are resolved per pod (a named ``targetPort`` is looked up in the pod's container ports
  with the same protocol; a pod lacking it has no port for it) and pods are grouped into slices
  by their resolved ports, at most 100 endpoints a slice;
- a service without endpoints keeps one empty placeholder slice;
- slices keep their names across updates (an emptied slice is reused before a new one is made)
  and are written only when their content changes.

Slices without the managed-by label are never touched (users make them for selector-less
services). The controller deletes its slices when the service goes or stops qualifying (netemu
has no garbage collector), and at start removes managed slices whose service is gone.

Speed: pods and services are indexed by label, so an event costs work proportional to the
services it touches; pod changes are collected and applied once per loop turn, except a pod
starting to terminate (or vanishing), which is applied inside the event delivery, so proxies see
the endpoint withdrawn before the kubelet stops the pod.
"""
from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

from netemu.api.labels import service_selector_matches
from netemu.api.objects import (Endpoint, EndpointConditions, EndpointPort, EndpointSlice,
                                ObjectMeta, ObjectReference, OwnerReference, Pod, Service)
from netemu.errors import NotFoundError
from netemu.frozen import evolve
from netemu.store import ADDED, Event, Store

from . import podutil
from netemu.names import generated_name
from .workqueue import WorkQueue

log = logging.getLogger(__name__)

MAX_ENDPOINTS_PER_SLICE = 100
SERVICE_NAME_LABEL = EndpointSlice.SERVICE_NAME_LABEL
MANAGED_BY_LABEL = EndpointSlice.MANAGED_BY_LABEL
CONTROLLER_NAME = EndpointSlice.CONTROLLER_NAME
HEADLESS_LABEL = "service.kubernetes.io/headless"
ZONE_LABEL = "topology.kubernetes.io/zone"
_RESERVED_LABELS = frozenset({SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL})

ServiceKey = tuple[str, str]
PortKey = tuple[EndpointPort, ...]
LabelPair = tuple[str, str]


@dataclass
class SliceRecord:
    """One slice the controller owns: its desired content and the object last written or seen."""

    name: str
    ports: PortKey
    endpoints: dict[str, Endpoint] = field(default_factory=dict)  # pod name → endpoint
    written: EndpointSlice | None = None
    dirty: bool = True


@dataclass
class ServiceState:
    service: Service
    members: set[str] = field(default_factory=set)        # pods matching the selector
    slices: dict[str, SliceRecord] = field(default_factory=dict)
    slice_of_pod: dict[str, str] = field(default_factory=dict)
    dirty_pods: set[str] = field(default_factory=set)
    all_dirty: bool = True
    index_pair: LabelPair | None = None  # the selector pair the service is indexed under

    @property
    def selector(self) -> Mapping[str, str]:
        return self.service.spec.selector or {}


def manages(service: Service | None) -> bool:
    """The controller keeps slices for services with a non-empty selector, except ExternalName."""
    return service is not None and service.spec.type != "ExternalName" and bool(service.spec.selector)


def _endpoint_facts(pod: Pod) -> tuple[Any, ...]:
    """Everything about a pod its endpoints depend on (labels aside)."""
    spec = pod.spec
    return (pod.metadata.uid, pod.status.pod_ip, pod.status.pod_ips, podutil.is_terminal(pod),
            podutil.is_ready(pod), pod.metadata.deletion_timestamp is not None, spec.node_name,
            spec.hostname, spec.subdomain, spec.containers, spec.init_containers)


def _ipv4_addresses(pod: Pod) -> tuple[str, ...]:
    ips = [p.ip for p in pod.status.pod_ips] or ([pod.status.pod_ip] if pod.status.pod_ip else [])
    return tuple(ip for ip in ips if ip and ":" not in ip)


def _find_container_port(pod: Pod, name: str, protocol: str) -> int | None:
    """podutil.FindPort for a named port: app containers, then sidecar (restartable) init containers."""
    sidecars = (c for c in pod.spec.init_containers if c.restart_policy == "Always")
    for container in (*pod.spec.containers, *sidecars):
        for port in container.ports:
            if port.name == name and port.protocol == protocol:
                return port.container_port
    return None


def endpoint_ports(service: Service, pod: Pod | None) -> PortKey:
    """The EndpointPorts of ``service`` for ``pod`` (for no pod: only the numeric target ports)."""
    out = []
    for sp in service.spec.ports:
        target = sp.target_port if sp.target_port is not None else sp.port
        if isinstance(target, str):
            number = _find_container_port(pod, target, sp.protocol) if pod is not None else None
            if number is None:
                continue
        else:
            number = target
        out.append(EndpointPort(name=sp.name, protocol=sp.protocol, port=number,
                                app_protocol=sp.app_protocol))
    return tuple(out)


def _slice_labels(service: Service) -> dict[str, str]:
    labels = {k: v for k, v in service.metadata.labels.items() if k not in _RESERVED_LABELS}
    if service.is_headless:
        labels[HEADLESS_LABEL] = ""
    labels[SERVICE_NAME_LABEL] = service.metadata.name
    labels[MANAGED_BY_LABEL] = CONTROLLER_NAME
    return labels


def _owner_reference(service: Service) -> OwnerReference:
    return OwnerReference(api_version="v1", kind="Service", name=service.metadata.name,
                          uid=service.metadata.uid, controller=True, block_owner_deletion=True)


def _is_managed_slice(obj: EndpointSlice) -> bool:
    return obj.metadata.labels.get(MANAGED_BY_LABEL) == CONTROLLER_NAME


def _rv(obj: Any) -> int:
    try:
        return int(obj.metadata.resource_version)
    except ValueError:
        return 0


class EndpointSliceController:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._services: dict[ServiceKey, ServiceState] = {}
        self._pod_labels: dict[tuple[str, str], Mapping[str, str]] = {}
        self._pods_by_label: dict[str, dict[LabelPair, set[str]]] = collections.defaultdict(dict)
        self._services_by_label: dict[str, dict[LabelPair, set[str]]] = collections.defaultdict(dict)
        self._services_of_pod: dict[tuple[str, str], set[str]] = {}
        self._queue: WorkQueue[ServiceKey] = WorkQueue(self._sync, "endpointslice-controller")
        self._unsubscribe = None
        self.writes = 0  # slice creations, updates and deletions, for tests and diagnostics

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._unsubscribe = self._store.subscribe(
            self._on_event, kinds=("Pod", "Service", "EndpointSlice"))
        for pod in self._store.list("Pod"):
            self._on_pod(Event(ADDED, None, pod))
        for service in self._store.list("Service"):
            self._on_service(Event(ADDED, None, service))
        for obj in self._store.list("EndpointSlice"):
            if _is_managed_slice(obj):
                self._adopt(obj)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._queue.stop()

    def _adopt(self, obj: EndpointSlice) -> None:
        """A managed slice found at start: reuse it for its service, or delete it (GC)."""
        key = (obj.metadata.namespace, obj.metadata.labels.get(SERVICE_NAME_LABEL, ""))
        state = self._services.get(key)
        owner = next((r for r in obj.metadata.owner_references if r.kind == "Service"), None)
        if state is None or (owner is not None and owner.uid != state.service.metadata.uid):
            self._delete_object(obj.metadata.namespace, obj.metadata.name)
            return
        state.slices[obj.metadata.name] = SliceRecord(name=obj.metadata.name, ports=obj.ports, written=obj)
        self._queue.add(key)

    # ------------------------------------------------------------------ events

    def _on_event(self, event: Event) -> None:
        kind = event.kind
        if kind == "Pod":
            self._on_pod(event)
        elif kind == "Service":
            self._on_service(event)
        else:
            self._on_slice(event)

    def _on_pod(self, event: Event) -> None:
        old, new = event.old, event.new
        ns, name = event.obj.metadata.namespace, event.obj.metadata.name
        pod_key = (ns, name)
        before = self._services_of_pod.get(pod_key, set())
        if old is None or new is None or old.metadata.labels != new.metadata.labels:
            self._index_pod(ns, name, new.metadata.labels if new is not None else None)
            after = self._matching_services(ns, new.metadata.labels) if new is not None else set()
            relevant = True
        else:
            after = before
            relevant = _endpoint_facts(old) != _endpoint_facts(new)
        if after:
            self._services_of_pod[pod_key] = after
        else:
            self._services_of_pod.pop(pod_key, None)
        touched = (before | after) if relevant else (before ^ after)
        if not touched:
            return
        urgent = new is None or (old is not None and old.metadata.deletion_timestamp is None
                                 and new.metadata.deletion_timestamp is not None)
        for svc_name in touched:
            key = (ns, svc_name)
            state = self._services[key]
            if svc_name in after:
                state.members.add(name)
            else:
                state.members.discard(name)
            state.dirty_pods.add(name)
            if urgent:
                self._sync(key)
            else:
                self._queue.add(key)

    def _on_service(self, event: Event) -> None:
        key = (event.obj.metadata.namespace, event.obj.metadata.name)
        service = event.new
        state = self._services.get(key)
        if not manages(service):
            if state is not None:
                self._teardown(key, state)
            return
        if state is None or state.service.metadata.uid != service.metadata.uid:
            if state is not None:
                self._teardown(key, state)
            state = ServiceState(service=service)
            self._services[key] = state
            self._set_members(key, state)
            self._queue.add(key)
            return
        previous, state.service = state.service, service
        if previous.spec.selector != service.spec.selector:
            self._set_members(key, state)
        if (previous.spec.ports != service.spec.ports or previous.metadata.labels != service.metadata.labels
                or previous.spec.publish_not_ready_addresses != service.spec.publish_not_ready_addresses
                or previous.is_headless != service.is_headless):
            state.all_dirty = True
        if state.all_dirty or state.dirty_pods:
            self._queue.add(key)

    def _on_slice(self, event: Event) -> None:
        """Undo other writers' changes to our slices (ours arrive here too, and are recognised)."""
        obj = event.obj
        key = (obj.metadata.namespace, obj.metadata.labels.get(SERVICE_NAME_LABEL, ""))
        state = self._services.get(key)
        record = state.slices.get(obj.metadata.name) if state is not None else None
        if record is None or record.written is None:
            return
        if event.new is None and _rv(obj) >= _rv(record.written):
            record.written = None  # deleted behind our back: recreate it
        elif event.new is not None and _rv(obj) > _rv(record.written):
            record.written = event.new
        else:
            return
        record.dirty = True
        self._queue.add(key)

    # ------------------------------------------------------------------ indexes

    def _index_pod(self, ns: str, name: str, labels: Mapping[str, str] | None) -> None:
        index = self._pods_by_label[ns]
        old = self._pod_labels.pop((ns, name), None)
        for pair in (old or {}).items():
            members = index.get(pair)
            if members is not None:
                members.discard(name)
                if not members:
                    del index[pair]
        if labels is None:
            return
        self._pod_labels[(ns, name)] = labels
        for pair in labels.items():
            index.setdefault(pair, set()).add(name)

    def _matching_services(self, ns: str, labels: Mapping[str, str]) -> set[str]:
        index = self._services_by_label.get(ns)
        if not index or not labels:
            return set()
        out = set()
        for pair in labels.items():
            for svc_name in index.get(pair, ()):
                if service_selector_matches(self._services[(ns, svc_name)].selector, labels):
                    out.add(svc_name)
        return out

    def _matching_pods(self, ns: str, selector: Mapping[str, str]) -> set[str]:
        index = self._pods_by_label.get(ns, {})
        smallest = min((index.get(pair, set()) for pair in selector.items()), key=len)
        return {name for name in smallest if service_selector_matches(selector, self._pod_labels[(ns, name)])}

    def _set_members(self, key: ServiceKey, state: ServiceState) -> None:
        """(Re)compute the service's members from its selector and update both indexes."""
        ns, svc_name = key
        by_label = self._services_by_label[ns]
        self._unindex_service(ns, svc_name, state)
        # Index under the selector's rarest pair, so a pod's lookup meets few candidates.
        state.index_pair = min(state.selector.items(), key=lambda p: (len(by_label.get(p, ())), p))
        by_label.setdefault(state.index_pair, set()).add(svc_name)
        members = self._matching_pods(ns, state.selector)
        for pod in state.members - members:
            self._services_of_pod[(ns, pod)].discard(svc_name)
            if not self._services_of_pod[(ns, pod)]:
                del self._services_of_pod[(ns, pod)]
        for pod in members - state.members:
            self._services_of_pod.setdefault((ns, pod), set()).add(svc_name)
        state.dirty_pods |= state.members ^ members
        state.members = members

    def _unindex_service(self, ns: str, svc_name: str, state: ServiceState) -> None:
        if state.index_pair is None:
            return
        by_label = self._services_by_label[ns]
        names = by_label.get(state.index_pair)
        if names is not None:
            names.discard(svc_name)
            if not names:
                del by_label[state.index_pair]
        state.index_pair = None

    def _teardown(self, key: ServiceKey, state: ServiceState) -> None:
        ns, svc_name = key
        self._unindex_service(ns, svc_name, state)
        for pod in state.members:
            services = self._services_of_pod.get((ns, pod))
            if services is not None:
                services.discard(svc_name)
                if not services:
                    del self._services_of_pod[(ns, pod)]
        del self._services[key]
        for record in state.slices.values():
            if record.written is not None:
                self._delete_object(ns, record.name)

    # ------------------------------------------------------------------ sync

    def _sync(self, key: ServiceKey) -> None:
        state = self._services.get(key)
        if state is None:
            return
        if state.all_dirty:
            dirty = state.members | set(state.slice_of_pod)
            for record in state.slices.values():
                record.dirty = True
            state.all_dirty = False
        else:
            dirty = state.dirty_pods
        state.dirty_pods = set()
        ns = key[0]
        service = state.service
        static_ports = None if any(isinstance(p.target_port, str) for p in service.spec.ports) \
            else endpoint_ports(service, None)
        for pod_name in sorted(dirty):
            pod = self._store.get("Pod", ns, pod_name) if pod_name in state.members else None
            endpoint = self._endpoint(service, pod) if pod is not None else None
            current = state.slice_of_pod.get(pod_name)
            record = state.slices[current] if current is not None else None
            if endpoint is None:
                if record is not None:
                    del record.endpoints[pod_name]
                    del state.slice_of_pod[pod_name]
                    record.dirty = True
                continue
            ports = static_ports if static_ports is not None else endpoint_ports(service, pod)
            if record is not None and record.ports == ports:
                if record.endpoints[pod_name] != endpoint:
                    record.endpoints[pod_name] = endpoint
                    record.dirty = True
                continue
            if record is not None:
                del record.endpoints[pod_name]
                record.dirty = True
            record = self._slice_for(state, ports)
            record.endpoints[pod_name] = endpoint
            record.dirty = True
            state.slice_of_pod[pod_name] = record.name
        self._write(key, state)

    def _endpoint(self, service: Service, pod: Pod) -> Endpoint | None:
        if podutil.is_terminal(pod):
            return None
        addresses = _ipv4_addresses(pod)
        if not addresses:
            return None
        serving = podutil.is_ready(pod)
        terminating = pod.metadata.deletion_timestamp is not None
        ready = service.spec.publish_not_ready_addresses or (serving and not terminating)
        spec = pod.spec
        zone = None
        if spec.node_name:
            node = self._store.get("Node", "", spec.node_name)
            zone = node.metadata.labels.get(ZONE_LABEL) if node is not None else None
        return Endpoint(
            addresses=addresses,
            conditions=EndpointConditions(ready=ready, serving=serving, terminating=terminating),
            hostname=spec.hostname if spec.hostname and spec.subdomain == service.metadata.name else None,
            target_ref=ObjectReference(kind="Pod", namespace=pod.metadata.namespace,
                                       name=pod.metadata.name, uid=pod.metadata.uid),
            node_name=spec.node_name or None, zone=zone)

    def _slice_for(self, state: ServiceState, ports: PortKey) -> SliceRecord:
        """A slice with these ports and room, else an emptied slice (renamed never), else a new one."""
        empty = None
        for record in state.slices.values():
            if record.ports == ports and len(record.endpoints) < MAX_ENDPOINTS_PER_SLICE:
                return record
            if empty is None and not record.endpoints:
                empty = record
        if empty is not None:
            empty.ports = ports
            return empty
        return self._new_record(state, ports)

    def _new_record(self, state: ServiceState, ports: PortKey) -> SliceRecord:
        ns = state.service.metadata.namespace
        while True:
            name = generated_name(f"{state.service.metadata.name}-")
            if name not in state.slices and self._store.get("EndpointSlice", ns, name) is None:
                break
        record = SliceRecord(name=name, ports=ports)
        state.slices[name] = record
        return record

    def _write(self, key: ServiceKey, state: ServiceState) -> None:
        ns = key[0]
        empties = [r for r in state.slices.values() if not r.endpoints]
        if len(empties) == len(state.slices):
            # No endpoints at all: keep one placeholder (no ports), preferably one that exists.
            if not empties:
                empties = [self._new_record(state, ())]
            empties.sort(key=lambda r: (r.written is None, r.name))
            placeholder, empties = empties[0], empties[1:]
            if placeholder.ports:
                placeholder.ports = ()
                placeholder.dirty = True
        for record in empties:
            del state.slices[record.name]
            if record.written is not None:
                self._delete_object(ns, record.name)
        for record in state.slices.values():
            if record.dirty:
                self._write_record(state, record)

    def _write_record(self, state: ServiceState, record: SliceRecord) -> None:
        service = state.service
        labels = _slice_labels(service)
        owners = (_owner_reference(service),)
        endpoints = tuple(record.endpoints[name] for name in sorted(record.endpoints))
        record.dirty = False
        current = record.written
        if current is None:
            desired = EndpointSlice(
                metadata=ObjectMeta(name=record.name, generate_name=f"{service.metadata.name}-",
                                    namespace=service.metadata.namespace, labels=labels,
                                    owner_references=owners),
                address_type="IPv4", endpoints=endpoints, ports=record.ports)
            record.written = self._store.create(desired)
            self.writes += 1
            return
        if (current.endpoints == endpoints and current.ports == record.ports
                and current.metadata.labels == labels and current.metadata.owner_references == owners
                and current.address_type == "IPv4"):
            return
        meta = evolve(current.metadata, labels=labels, owner_references=owners)
        try:
            record.written = self._store.update(evolve(
                current, metadata=meta, address_type="IPv4", endpoints=endpoints, ports=record.ports))
        except NotFoundError:
            # Deleted under us (a namespace going away, or by hand) before its event reached us: the
            # next sync makes it again if the Service is still there.
            record.written, record.dirty = None, True
            self._queue.add((service.metadata.namespace, service.metadata.name))
            return
        self.writes += 1

    def _delete_object(self, ns: str, name: str) -> None:
        try:
            self._store.delete("EndpointSlice", ns, name)
            self.writes += 1
        except NotFoundError:
            pass
