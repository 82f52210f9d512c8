"""Load-balancer controller: asynchronous ingress IPs from a pool, release, reuse, exhaustion."""
from __future__ import annotations

import dataclasses
import ipaddress
import logging

import pytest

from netemu.api.objects import LoadBalancerIngress, LoadBalancerStatus, ServiceStatus
from netemu.controllers import LoadBalancerController
from netemu.controllers.loadbalancer import AddressPool
from netemu.errors import InvalidError
from netemu.store import Store

from test_controllers_helpers import eventually, service, settle


def lb(name: str, **spec) -> object:
    return service(name, {"app": name}, type="LoadBalancer", **spec)


def ingress(store: Store, name: str) -> list[tuple[str, str | None]]:
    svc = store.get("Service", "default", name)
    return [(i.ip, i.ip_mode) for i in svc.status.load_balancer.ingress] if svc else []


def start(pool, delay: float = 0.01) -> tuple[Store, LoadBalancerController]:
    store = Store()
    controller = LoadBalancerController(store, pool, delay=delay)
    controller.start()
    return store, controller


@pytest.mark.parametrize("pool,addresses", [
    (ipaddress.IPv4Network("127.200.0.0/29"), [f"127.200.0.{i}" for i in range(1, 7)]),
    ("127.200.0.0/30", ["127.200.0.1", "127.200.0.2"]),
    ("127.200.0.8/31", ["127.200.0.8", "127.200.0.9"]),
    (["127.200.9.9", "127.200.1.1"], ["127.200.9.9", "127.200.1.1"]),
], ids=["network", "cidr-string", "slash-31", "list"])
def test_address_pool_hands_out_lowest_free_first(pool, addresses: list[str]) -> None:
    p = AddressPool(pool)
    handed = []
    while (ip := p.take_lowest()) is not None:
        handed.append(ip)
    assert handed == addresses
    p.release(addresses[1])
    assert p.take_lowest() == addresses[1]
    assert not p.take(addresses[0]) and "10.0.0.1" not in p


def test_bad_pool_is_refused() -> None:
    with pytest.raises(InvalidError):
        AddressPool(["not-an-ip"])


async def test_ingress_appears_asynchronously() -> None:
    store, controller = start("127.200.0.0/16", delay=0.05)
    store.create(lb("web"))
    await settle(5)
    assert ingress(store, "web") == [], "pending at first, as a cloud provider is"
    await eventually(lambda: ingress(store, "web"))
    assert ingress(store, "web") == [("127.200.0.1", "VIP")]
    store.create(lb("api"))
    await eventually(lambda: ingress(store, "api"))
    assert ingress(store, "api") == [("127.200.0.2", "VIP")]
    controller.stop()


async def test_ip_is_kept_across_updates_and_released_on_delete() -> None:
    store, controller = start("127.200.0.0/29")
    store.create(lb("a"))
    store.create(lb("b"))
    await eventually(lambda: ingress(store, "a") and ingress(store, "b"))
    a_ip = ingress(store, "a")[0][0]
    svc = store.must_get("Service", "default", "a")
    store.update(dataclasses.replace(svc, spec=dataclasses.replace(svc.spec, ports=(
        dataclasses.replace(svc.spec.ports[0], port=8080),))))
    await settle()
    assert ingress(store, "a")[0][0] == a_ip
    store.delete("Service", "default", "a")
    store.create(lb("c"))
    await eventually(lambda: ingress(store, "c"))
    assert ingress(store, "c")[0][0] == a_ip, "the released address is reused"
    controller.stop()


async def test_type_change_releases_and_clears_status() -> None:
    store, controller = start(["127.200.0.7"])
    svc = store.create(lb("a"))
    await eventually(lambda: ingress(store, "a"))
    svc = store.must_get("Service", "default", "a")
    store.update(dataclasses.replace(svc, spec=dataclasses.replace(svc.spec, type="ClusterIP")))
    await eventually(lambda: ingress(store, "a") == [])
    store.create(lb("b"))
    await eventually(lambda: ingress(store, "b") == [("127.200.0.7", "VIP")])
    controller.stop()


async def test_pool_exhaustion_leaves_pending_until_an_address_frees(caplog) -> None:
    store, controller = start("127.200.0.0/30")  # two addresses
    for name in ("a", "b", "c"):
        store.create(lb(name))
    with caplog.at_level(logging.WARNING, logger="netemu.controllers.loadbalancer"):
        await eventually(lambda: ingress(store, "a") and ingress(store, "b"))
        await eventually(lambda: "AllocationFailed" in caplog.text)
    assert ingress(store, "c") == []
    assert caplog.text.count("AllocationFailed") == 1
    freed = ingress(store, "b")[0][0]
    store.delete("Service", "default", "b")
    await eventually(lambda: ingress(store, "c"))
    assert ingress(store, "c")[0][0] == freed
    controller.stop()


@pytest.mark.parametrize("requested,expected", [
    ("127.200.0.3", [("127.200.0.3", "VIP")]),
    ("10.1.2.3", []),
], ids=["in-pool", "outside-pool"])
async def test_load_balancer_ip_is_honoured_only_inside_the_pool(requested: str, expected) -> None:
    store, controller = start("127.200.0.0/29")
    store.create(lb("a", loadBalancerIP=requested))
    store.create(lb("b"))
    await eventually(lambda: ingress(store, "b"))
    await settle()
    assert ingress(store, "a") == expected
    controller.stop()


async def test_services_with_a_class_or_another_type_are_ignored() -> None:
    store, controller = start("127.200.0.0/29")
    store.create(lb("classy", loadBalancerClass="example.com/lb"))
    store.create(service("plain", {"app": "x"}))
    store.create(lb("mine"))
    await eventually(lambda: ingress(store, "mine"))
    await settle()
    assert ingress(store, "classy") == [] and ingress(store, "plain") == []
    controller.stop()


async def test_addresses_published_before_start_are_kept() -> None:
    store = Store()
    old = lb("old")
    published = LoadBalancerStatus(ingress=(LoadBalancerIngress(ip="127.200.0.1", ip_mode="VIP"),))
    store.create(dataclasses.replace(old, status=ServiceStatus(load_balancer=published)))
    store.create(lb("new"))
    controller = LoadBalancerController(store, "127.200.0.0/29", delay=0.01)
    controller.start()
    await eventually(lambda: ingress(store, "new"))
    assert ingress(store, "old") == [("127.200.0.1", "VIP")]
    assert ingress(store, "new") == [("127.200.0.2", "VIP")]
    controller.stop()


async def test_pending_service_is_retried_when_its_request_changes(caplog) -> None:
    store, controller = start("127.200.0.0/29")
    svc = store.create(lb("a", loadBalancerIP="10.1.2.3"))
    with caplog.at_level(logging.WARNING, logger="netemu.controllers.loadbalancer"):
        await eventually(lambda: "is not in the pool" in caplog.text)
    store.update(dataclasses.replace(svc, spec=dataclasses.replace(svc.spec, load_balancer_ip="127.200.0.5")))
    await eventually(lambda: ingress(store, "a") == [("127.200.0.5", "VIP")])
    controller.stop()
