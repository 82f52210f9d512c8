"""EndpointSlice controller: slice shape, readiness, per-pod port resolution, grouping, lifecycle."""
from __future__ import annotations

import dataclasses
import re

import pytest

from netemu.api.objects import EndpointSlice, ObjectMeta
from netemu.controllers import EndpointSliceController, podutil
from netemu.names import ALPHANUMS
from netemu.store import Store

from test_controllers_helpers import (FakeKubelet, endpoints_of, eventually, pod, service, set_ready,
                                      settle, slices_of)


@pytest.fixture
async def store():
    s = Store()
    controller = EndpointSliceController(s)
    controller.start()
    s.controller = controller  # for the tests that count writes
    yield s
    controller.stop()


def ports_by_pod(store: Store, svc: str) -> dict[str, list[tuple]]:
    return {e.target_ref.name: sorted((p.name, p.protocol, p.port) for p in s.ports)
            for s in slices_of(store, svc) for e in s.endpoints}


async def test_slice_shape_names_labels_and_owner(store: Store) -> None:
    svc = store.create(service("web", {"app": "web"}))
    store.create(pod("web-1", {"app": "web"}, node_name="n1", ip="10.244.0.5", ready=True))
    (s,) = await eventually(lambda: [s for s in slices_of(store, "web") if s.endpoints])
    assert re.fullmatch(f"web-[{ALPHANUMS}]{{5}}", s.metadata.name)
    assert s.metadata.generate_name == "web-"
    assert s.metadata.labels == {"kubernetes.io/service-name": "web",
                                 "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}
    (ref,) = s.metadata.owner_references
    assert (ref.api_version, ref.kind, ref.name, ref.uid, ref.controller) == (
        "v1", "Service", "web", svc.metadata.uid, True)
    assert s.address_type == "IPv4"
    (e,) = s.endpoints
    p = store.must_get("Pod", "default", "web-1")
    assert e.addresses == ("10.244.0.5",) and e.node_name == "n1"
    assert (e.target_ref.kind, e.target_ref.namespace, e.target_ref.name, e.target_ref.uid) == (
        "Pod", "default", "web-1", p.metadata.uid)
    assert [(x.name, x.protocol, x.port) for x in s.ports] == [("", "TCP", 8080)]


async def test_service_without_pods_gets_one_placeholder_slice(store: Store) -> None:
    store.create(service("web", {"app": "web"}))
    (s,) = await eventually(lambda: slices_of(store, "web"))
    assert s.endpoints == () and s.ports == ()
    name = s.metadata.name
    store.create(pod("web-1", {"app": "web"}, ip="10.244.0.5", ready=True))
    (s,) = await eventually(lambda: [s for s in slices_of(store, "web") if s.endpoints])
    assert s.metadata.name == name, "the placeholder is reused"
    store.delete("Pod", "default", "web-1")
    await eventually(lambda: [s.endpoints for s in slices_of(store, "web")] == [()])
    assert slices_of(store, "web")[0].metadata.name == name


@pytest.mark.parametrize("ready,terminating,publish,expected", [
    (True, False, False, (True, True, False)),
    (False, False, False, (False, False, False)),
    (True, True, False, (False, True, True)),
    (False, True, False, (False, False, True)),
    (False, False, True, (True, False, False)),
    (True, True, True, (True, True, True)),
], ids=["ready", "not-ready", "terminating", "terminating-not-ready", "publish-not-ready",
        "publish-terminating"])
async def test_endpoint_conditions(store: Store, ready, terminating, publish, expected) -> None:
    store.create(service("web", {"app": "web"}, publishNotReadyAddresses=publish))
    p = pod("web-1", {"app": "web"}, node_name="n1", ip="10.244.0.5", ready=ready)
    if terminating:
        p = dataclasses.replace(p, metadata=dataclasses.replace(p.metadata, deletion_timestamp="2030-01-01T00:00:00Z"))
    store.create(p)
    e = (await eventually(lambda: endpoints_of(store, "web")))["web-1"]
    assert (e.conditions.ready, e.conditions.serving, e.conditions.terminating) == expected


@pytest.mark.parametrize("phase,ip", [("Succeeded", "10.244.0.5"), ("Failed", "10.244.0.5"), ("Pending", "")],
                         ids=["succeeded", "failed", "no-ip"])
async def test_pods_that_cannot_serve_are_no_endpoints(store: Store, phase: str, ip: str) -> None:
    store.create(service("web", {"app": "web"}))
    store.create(pod("good", {"app": "web"}, ip="10.244.0.4", ready=True))
    p = pod("bad", {"app": "web"}, ip=ip)
    store.create(dataclasses.replace(p, status=dataclasses.replace(p.status, phase=phase)))
    await eventually(lambda: endpoints_of(store, "web"))
    await settle()
    assert set(endpoints_of(store, "web")) == {"good"}


async def test_named_target_port_is_resolved_per_pod(store: Store) -> None:
    store.create(service("web", {"app": "web"}, ports=[
        {"name": "http", "port": 80, "targetPort": "web"},
        {"name": "metrics", "port": 9100, "targetPort": 9100},
    ]))
    store.create(pod("a", {"app": "web"}, ip="10.244.0.1", ready=True, ports=[{"name": "web", "containerPort": 8080}]))
    store.create(pod("b", {"app": "web"}, ip="10.244.0.2", ready=True, ports=[{"name": "web", "containerPort": 9090}]))
    store.create(pod("c", {"app": "web"}, ip="10.244.0.3", ready=True, ports=[{"name": "other", "containerPort": 1}]))
    store.create(pod("d", {"app": "web"}, ip="10.244.0.4", ready=True,
                     ports=[{"name": "web", "containerPort": 8080, "protocol": "UDP"}]))
    store.create(pod("e", {"app": "web"}, ip="10.244.0.5", ready=True, ports=[{"name": "web", "containerPort": 8080}]))
    await eventually(lambda: len(endpoints_of(store, "web")) == 5)
    assert ports_by_pod(store, "web") == {
        "a": [("http", "TCP", 8080), ("metrics", "TCP", 9100)],
        "b": [("http", "TCP", 9090), ("metrics", "TCP", 9100)],
        "c": [("metrics", "TCP", 9100)],
        "d": [("metrics", "TCP", 9100)],  # same name, other protocol: no match
        "e": [("http", "TCP", 8080), ("metrics", "TCP", 9100)],
    }
    slices = slices_of(store, "web")
    assert sorted(len(s.endpoints) for s in slices) == [1, 2, 2], "grouped by port mapping"


async def test_multi_port_and_udp_service(store: Store) -> None:
    store.create(service("dns", {"app": "dns"}, ports=[
        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 5353, "appProtocol": "dns"},
    ]))
    store.create(pod("dns-1", {"app": "dns"}, ip="10.244.0.9", ready=True))
    (s,) = await eventually(lambda: [s for s in slices_of(store, "dns") if s.endpoints])
    assert [(p.name, p.protocol, p.port, p.app_protocol) for p in s.ports] == [
        ("dns", "UDP", 5353, None), ("dns-tcp", "TCP", 5353, "dns")]


async def test_hostname_only_when_subdomain_names_the_service(store: Store) -> None:
    store.create(service("db", {"app": "db"}, clusterIP="None"))
    store.create(pod("db-0", {"app": "db"}, ip="10.244.0.1", ready=True, hostname="db-0", subdomain="db"))
    store.create(pod("db-1", {"app": "db"}, ip="10.244.0.2", ready=True, hostname="db-1", subdomain="other"))
    eps = await eventually(lambda: endpoints_of(store, "db") if len(endpoints_of(store, "db")) == 2 else None)
    assert eps["db-0"].hostname == "db-0" and eps["db-1"].hostname is None
    assert slices_of(store, "db")[0].metadata.labels["service.kubernetes.io/headless"] == ""


async def test_readiness_change_updates_the_slice_and_nothing_else_writes(store: Store) -> None:
    store.create(service("web", {"app": "web"}))
    p = store.create(pod("web-1", {"app": "web"}, ip="10.244.0.5", ready=False))
    await eventually(lambda: endpoints_of(store, "web"))
    set_ready(store, p, True)
    await eventually(lambda: endpoints_of(store, "web")["web-1"].conditions.ready)
    writes = store.controller.writes
    current = store.must_get("Pod", "default", "web-1")
    store.update(dataclasses.replace(current, status=dataclasses.replace(current.status, message="noise")))
    store.update(dataclasses.replace(current, metadata=dataclasses.replace(current.metadata, annotations={"a": "b"})))
    await settle()
    assert store.controller.writes == writes


async def test_graceful_deletion_marks_endpoint_terminating_before_the_kubelet_acts() -> None:
    store = Store()
    kubelet = FakeKubelet(store)  # subscribed before the controller: it hears of the deletion first
    controller = EndpointSliceController(store)
    controller.start()
    store.create(service("web", {"app": "web"}))
    for i in range(3):
        store.create(pod(f"web-{i}", {"app": "web"}, node_name="n1", ip=f"10.244.0.{i + 1}", ready=True))
    await eventually(lambda: len(endpoints_of(store, "web")) == 3)
    seen: list[tuple] = []
    store.subscribe(lambda e: e.new is not None and seen.append(
        tuple((x.target_ref.name, x.conditions.terminating) for x in e.new.endpoints)), kinds=["EndpointSlice"])
    podutil.request_deletion(store, store.must_get("Pod", "default", "web-1"))
    await eventually(lambda: set(endpoints_of(store, "web")) == {"web-0", "web-2"})
    assert ("web-1", True) in seen[0], "terminating endpoint published first"
    assert not kubelet.violations
    kubelet.stop()
    controller.stop()


async def test_250_pods_make_3_slices_with_stable_names(store: Store) -> None:
    store.create(service("big", {"app": "big"}))
    for i in range(250):
        store.create(pod(f"big-{i:03}", {"app": "big"}, ip=f"10.244.{i // 200}.{i % 200 + 1}", ready=True))
    await eventually(lambda: len(endpoints_of(store, "big")) == 250)
    slices = slices_of(store, "big")
    assert sorted(len(s.endpoints) for s in slices) == [50, 100, 100]
    names = {s.metadata.name for s in slices}
    set_ready(store, store.must_get("Pod", "default", "big-007"), False)
    await eventually(lambda: not endpoints_of(store, "big")["big-007"].conditions.ready)
    assert {s.metadata.name for s in slices_of(store, "big")} == names
    for i in range(60):
        store.delete("Pod", "default", f"big-{i:03}")
    await eventually(lambda: len(endpoints_of(store, "big")) == 190)
    assert {s.metadata.name for s in slices_of(store, "big")} <= names


async def test_service_changes_selector_labels_and_deletion(store: Store) -> None:
    store.create(pod("a", {"app": "a"}, ip="10.244.0.1", ready=True))
    store.create(pod("b", {"app": "b"}, ip="10.244.0.2", ready=True))
    svc = store.create(service("web", {"app": "a"}))
    await eventually(lambda: set(endpoints_of(store, "web")) == {"a"})
    svc = store.update(dataclasses.replace(svc, spec=dataclasses.replace(svc.spec, selector={"app": "b"})))
    await eventually(lambda: set(endpoints_of(store, "web")) == {"b"})
    # the pod changes labels: it leaves the service
    b = store.must_get("Pod", "default", "b")
    store.update(dataclasses.replace(b, metadata=dataclasses.replace(b.metadata, labels={"app": "x"})))
    await eventually(lambda: endpoints_of(store, "web") == {} and slices_of(store, "web"))
    # service labels are copied to its slices
    svc = store.update(dataclasses.replace(svc, metadata=dataclasses.replace(svc.metadata, labels={"team": "t"})))
    await eventually(lambda: all(s.metadata.labels.get("team") == "t" for s in slices_of(store, "web")))
    store.delete("Service", "default", "web")
    await eventually(lambda: not slices_of(store, "web"))


@pytest.mark.parametrize("change", ["drop-selector", "external-name"])
async def test_service_that_stops_qualifying_loses_its_slices(store: Store, change: str) -> None:
    svc = store.create(service("web", {"app": "a"}))
    store.create(pod("a", {"app": "a"}, ip="10.244.0.1", ready=True))
    await eventually(lambda: endpoints_of(store, "web"))
    if change == "drop-selector":
        spec = dataclasses.replace(svc.spec, selector=None)
    else:
        spec = dataclasses.replace(svc.spec, selector=None, type="ExternalName", external_name="example.org",
                                   ports=())
    store.update(dataclasses.replace(svc, spec=spec))
    await eventually(lambda: not slices_of(store, "web"))


async def test_user_slices_are_left_alone_and_ours_are_restored(store: Store) -> None:
    store.create(service("manual", None))
    mine = store.create(EndpointSlice(
        metadata=ObjectMeta(name="manual-1", namespace="default",
                            labels={EndpointSlice.SERVICE_NAME_LABEL: "manual"}),
        address_type="IPv4"))
    store.create(service("web", {"app": "web"}))
    store.create(pod("a", {"app": "web"}, ip="10.244.0.1", ready=True))
    (ours,) = await eventually(lambda: [s for s in slices_of(store, "web") if s.endpoints])
    await settle()
    assert slices_of(store, "manual") == [mine]
    # someone else edits or deletes our slice: the controller puts it back
    store.update(dataclasses.replace(ours, endpoints=()))
    await eventually(lambda: [len(s.endpoints) for s in slices_of(store, "web")] == [1])
    store.delete("EndpointSlice", "default", ours.metadata.name)
    await eventually(lambda: [s.metadata.name for s in slices_of(store, "web") if s.endpoints] == [ours.metadata.name])


async def test_existing_objects_are_processed_at_start() -> None:
    s = Store()
    s.create(pod("a", {"app": "web"}, ip="10.244.0.1", ready=True))
    s.create(service("web", {"app": "web"}))
    stale = s.create(EndpointSlice(metadata=ObjectMeta(name="gone-abcde", namespace="default", labels={
        EndpointSlice.SERVICE_NAME_LABEL: "gone", EndpointSlice.MANAGED_BY_LABEL: EndpointSlice.CONTROLLER_NAME})))
    controller = EndpointSliceController(s)
    controller.start()
    await eventually(lambda: endpoints_of(s, "web"))
    assert s.get("EndpointSlice", "default", stale.metadata.name) is None
    controller.stop()


async def test_namespaces_are_separate(store: Store) -> None:
    store.create(service("web", {"app": "web"}, namespace="one"))
    store.create(pod("a", {"app": "web"}, namespace="one", ip="10.244.0.1", ready=True))
    store.create(pod("b", {"app": "web"}, namespace="two", ip="10.244.0.2", ready=True))
    await eventually(lambda: endpoints_of(store, "web", "one"))
    await settle()
    assert set(endpoints_of(store, "web", "one")) == {"a"}
    assert not store.list("EndpointSlice", "two")


async def test_slice_deleted_before_a_pod_event_is_delivered_is_made_again(store: Store, caplog) -> None:
    """A namespace being deleted removes slices and pods in one turn: the controller may sync a pod's
    removal (urgent) while the slice's own deletion event is still queued behind it. No failure is
    logged, and a slice with the remaining endpoint comes back while the Service exists."""
    store.create(service("web", {"app": "web"}))
    store.create(pod("web-1", {"app": "web"}, ip="10.244.0.5", ready=True))
    store.create(pod("web-2", {"app": "web"}, ip="10.244.0.6", ready=True))
    (s,) = await eventually(lambda: [s for s in slices_of(store, "web") if len(s.endpoints) == 2])
    store.delete("Pod", "default", "web-1")  # its event is delivered first, and syncs at once
    store.delete("EndpointSlice", "default", s.metadata.name)
    (again,) = await eventually(lambda: [s for s in slices_of(store, "web") if s.endpoints])
    assert [e.addresses for e in again.endpoints] == [("10.244.0.6",)]
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
