"""All controllers together at benchmark size: 10 nodes, 1,000 pods, 500+ services.

Proves the work is linear: the number of store writes (EndpointSlices, deployment statuses,
every event) is bounded by a small multiple of pods + services, never their product.
"""
from __future__ import annotations

import collections

from netemu.controllers import podutil, start_controllers
from netemu.store import Store

from test_controllers_helpers import FakeKubelet, deployment, eventually, node, service, settle

NAMESPACES = [f"team-{i}" for i in range(5)]
APPS_PER_NAMESPACE = 100
REPLICAS = 2


async def test_thousand_pods_five_hundred_services_settle_with_linear_writes() -> None:
    store = Store()
    events: collections.Counter[str] = collections.Counter()
    store.subscribe(lambda e: events.update([e.kind]))
    for i in range(10):
        store.create(node(f"node-{i}"))
    controllers = start_controllers(store, lb_pool="127.200.0.0/16", lb_delay=0.01)
    kubelet = FakeKubelet(store, stagger=0.3)  # pods turn ready one by one, not in one batch
    for ns in NAMESPACES:
        for i in range(APPS_PER_NAMESPACE):
            labels = {"app": f"app-{i}", "tier": "web"}
            store.create(deployment(f"app-{i}", REPLICAS, labels, namespace=ns))
            kind = "LoadBalancer" if i % 50 == 0 else "ClusterIP"
            store.create(service(f"app-{i}", {"app": f"app-{i}"}, namespace=ns, type=kind))
        store.create(service("all-web", {"tier": "web"}, namespace=ns))  # 200 pods: 2 slices
    pods_total = len(NAMESPACES) * APPS_PER_NAMESPACE * REPLICAS
    services_total = len(NAMESPACES) * (APPS_PER_NAMESPACE + 1)

    def ready_endpoints() -> int:
        return sum(1 for s in store.list("EndpointSlice") for e in s.endpoints
                   if e.conditions.ready and not s.metadata.labels["kubernetes.io/service-name"] == "all-web")

    await eventually(lambda: ready_endpoints() == pods_total, timeout=60, what="every pod ready in its service")
    await eventually(lambda: all(d.status.available_replicas == REPLICAS for d in store.list("Deployment")),
                     timeout=30, what="every deployment available")
    await settle(50)

    pods = store.list("Pod")
    assert len(pods) == pods_total and all(podutil.is_ready(p) for p in pods)
    per_node = collections.Counter(p.spec.node_name for p in pods)
    assert len(per_node) == 10 and max(per_node.values()) - min(per_node.values()) <= 2
    for ns in NAMESPACES:
        wide = store.list("EndpointSlice", ns, {"kubernetes.io/service-name": "all-web"})
        assert sorted(len(s.endpoints) for s in wide) == [100, 100]
    assert sum(1 for s in store.list("Service") if s.status.load_balancer.ingress) == 10

    es_writes = controllers.endpointslices.writes
    assert es_writes <= 2 * pods_total + 2 * services_total, es_writes
    assert events["Deployment"] <= 5 * len(NAMESPACES) * APPS_PER_NAMESPACE, events
    assert events["Pod"] <= 6 * pods_total, events
    assert sum(events.values()) <= 10 * (pods_total + services_total), events
    assert not kubelet.violations
    kubelet.stop()
    controllers.stop()
