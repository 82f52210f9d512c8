"""Shared pieces for the controller tests: object builders, a polling helper and a fake kubelet.

(Named ``test_controllers_*`` to stay inside the controllers' test files; it holds no tests.)
"""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
from typing import Any, Callable

from netemu.api import codec
from netemu.api.objects import Deployment, EndpointSlice, Node, Pod, PodIP, Service
from netemu.controllers import podutil
from netemu.store import Event, Store


def decode(cls: type, data: dict[str, Any]) -> Any:
    obj, problems = codec.from_dict(cls, data)
    assert not problems, problems
    return obj


def node(name: str, labels: dict[str, str] | None = None, ready: bool = True,
         unschedulable: bool = False) -> Node:
    return decode(Node, {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": {"unschedulable": unschedulable},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    })


def pod(name: str, labels: dict[str, str], namespace: str = "default", ports: list[dict] | None = None,
        node_name: str = "", ip: str = "", ready: bool = False, **spec: Any) -> Pod:
    status: dict[str, Any] = {"phase": "Running" if ip else "Pending"}
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
        status["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
    return decode(Pod, {
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": node_name, "containers": [{"name": "c", "image": "nginx", "ports": ports or []}],
                 **spec},
        "status": status,
    })


def service(name: str, selector: dict[str, str] | None, ports: list[dict] | None = None,
            namespace: str = "default", **spec: Any) -> Service:
    body: dict[str, Any] = {"ports": ports if ports is not None else [{"port": 80, "targetPort": 8080}],
                            **spec}
    if selector is not None:
        body["selector"] = selector
    return decode(Service, {"metadata": {"name": name, "namespace": namespace}, "spec": body})


def deployment(name: str, replicas: int, labels: dict[str, str], namespace: str = "default",
               image: str = "nginx:1.25", **spec: Any) -> Deployment:
    return decode(Deployment, {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "web", "image": image}]}},
                 **spec},
    })


async def eventually(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.002)


async def settle(turns: int = 20) -> None:
    """Let a number of loop turns pass (for asserting that nothing more happens)."""
    for _ in range(turns):
        await asyncio.sleep(0)


def set_ready(store: Store, p: Pod, ready: bool) -> Pod:
    current = store.must_get("Pod", p.metadata.namespace, p.metadata.name)
    conditions = podutil.set_condition(current.status.conditions, "Ready", "True" if ready else "False")
    return store.update(dataclasses.replace(current, status=dataclasses.replace(current.status, conditions=conditions)))


def slices_of(store: Store, svc: str, namespace: str = "default") -> list[EndpointSlice]:
    return store.list("EndpointSlice", namespace, {EndpointSlice.SERVICE_NAME_LABEL: svc})


def endpoints_of(store: Store, svc: str, namespace: str = "default") -> dict[str, Any]:
    """pod name → endpoint, over every slice of the service."""
    return {e.target_ref.name: e for s in slices_of(store, svc, namespace) for e in s.endpoints}


class FakeKubelet:
    """Stands in for the kubelets: gives bound pods an IP and (optionally) readiness, and
    finishes graceful deletions one loop turn after the deletionTimestamp appears, checking
    first that the pod's endpoints were already marked terminating (what the proxy relies on)."""

    def __init__(self, store: Store, auto_ready: bool = True, stagger: float = 0.0) -> None:
        self.store = store
        self.auto_ready = auto_ready
        self.stagger = stagger  # start pods up to this many seconds apart (random), not all at once
        self._random = random.Random(7)
        self._ips = itertools.count(1)
        self.violations: list[str] = []
        self.started = 0
        self._unsubscribe = store.subscribe(self._on_event, kinds=["Pod"])

    def stop(self) -> None:
        self._unsubscribe()

    def _on_event(self, event: Event) -> None:
        p = event.new
        if p is None:
            return
        loop = asyncio.get_running_loop()
        newly_terminating = event.old is None or event.old.metadata.deletion_timestamp is None
        if p.metadata.deletion_timestamp is not None and newly_terminating:
            loop.call_soon(self._finish_deletion, p)
        elif p.spec.node_name and not p.status.pod_ip and podutil.is_active(p):
            if self.stagger:
                loop.call_later(self._random.uniform(0, self.stagger), self._start,
                                p.metadata.namespace, p.metadata.name)
            else:
                loop.call_soon(self._start, p.metadata.namespace, p.metadata.name)

    def _start(self, namespace: str, name: str) -> None:
        current = self.store.get("Pod", namespace, name)
        if current is None or current.status.pod_ip or not podutil.is_active(current):
            return
        n = next(self._ips)
        ip = f"10.244.{n // 250}.{n % 250 + 1}"
        conditions = current.status.conditions
        if self.auto_ready:
            conditions = podutil.set_condition(conditions, "Ready", "True")
        status = dataclasses.replace(current.status, phase="Running", pod_ip=ip, pod_ips=(PodIP(ip=ip),),
                                     conditions=conditions)
        self.started += 1
        self.store.update(dataclasses.replace(current, status=status))

    def _finish_deletion(self, p: Pod) -> None:
        key = p.metadata.namespace, p.metadata.name
        for s in self.store.list("EndpointSlice", p.metadata.namespace):
            for e in s.endpoints:
                if e.target_ref and e.target_ref.name == key[1] and not e.conditions.terminating:
                    self.violations.append(f"{s.metadata.name}: {key[1]} not terminating at signal time")
        if self.store.get("Pod", *key) is not None:
            self.store.delete("Pod", *key)
