"""The load-balancer controller: ingress IPs for ``type: LoadBalancer`` Services.

It plays the cloud provider (or MetalLB) for services without ``spec.loadBalancerClass``:
provisioning is asynchronous, so ``status.loadBalancer.ingress`` stays empty (kubectl's
``<pending>``) for ``delay`` seconds, then gets ``[{ip, ipMode: VIP}]`` with the lowest free
address of the pool. ``spec.loadBalancerIP`` is honoured when it lies in the pool and is free;
otherwise the service stays pending with a warning, as MetalLB does. A service keeps its address
across updates; the address goes back to the pool (and the status is cleared) when the service
is deleted or stops being a LoadBalancer. With the pool exhausted services wait, pending, and are
served in order as addresses are released.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import logging
from typing import Iterable

from netemu import events
from netemu.api.objects import LoadBalancerIngress, Service
from netemu.errors import InvalidError
from netemu.store import ADDED, DELETED, Event, Store

from .workqueue import WorkQueue

log = logging.getLogger(__name__)

ServiceKey = tuple[str, str]


CONTROLLER_NAME = "netemu-lb-controller"  # the source of its events (MetalLB's reasons and wording)


def wants_load_balancer(service: Service | None) -> bool:
    return (service is not None and service.spec.type == "LoadBalancer"
            and service.spec.load_balancer_class is None)


class AddressPool:
    """IPv4 addresses to hand out, lowest free first; a network gives its host addresses."""

    def __init__(self, pool: Iterable[str] | ipaddress.IPv4Network | str) -> None:
        try:
            if isinstance(pool, str):
                pool = ipaddress.IPv4Network(pool)
            if isinstance(pool, ipaddress.IPv4Network):
                first, last = int(pool.network_address), int(pool.broadcast_address)
                if pool.prefixlen < 31:
                    first, last = first + 1, last - 1
                self._first, self._size, self._list = first, last - first + 1, None
                self._text = str(pool)
            else:
                self._list = [str(ipaddress.IPv4Address(a)) for a in pool]
                self._index = {ip: i for i, ip in enumerate(self._list)}
                self._first, self._size = 0, len(self._list)
                self._text = ", ".join(self._list)
        except ValueError as exc:
            raise InvalidError(f"load balancer address pool: {exc}") from exc
        self._taken: set[int] = set()
        self._lowest_maybe_free = 0

    def __str__(self) -> str:
        return self._text

    def _position(self, ip: str) -> int | None:
        if self._list is not None:
            return self._index.get(ip)
        try:
            pos = int(ipaddress.IPv4Address(ip)) - self._first
        except ValueError:
            return None
        return pos if 0 <= pos < self._size else None

    def _address(self, pos: int) -> str:
        if self._list is not None:
            return self._list[pos]
        return str(ipaddress.IPv4Address(self._first + pos))

    def __contains__(self, ip: str) -> bool:
        return self._position(ip) is not None

    def is_free(self, ip: str) -> bool:
        pos = self._position(ip)
        return pos is not None and pos not in self._taken

    def take(self, ip: str) -> bool:
        pos = self._position(ip)
        if pos is None or pos in self._taken:
            return False
        self._taken.add(pos)
        return True

    def take_lowest(self) -> str | None:
        pos = self._lowest_maybe_free
        while pos < self._size and pos in self._taken:
            pos += 1
        self._lowest_maybe_free = pos
        if pos >= self._size:
            return None
        self._taken.add(pos)
        return self._address(pos)

    def release(self, ip: str) -> None:
        pos = self._position(ip)
        if pos is not None and pos in self._taken:
            self._taken.discard(pos)
            self._lowest_maybe_free = min(self._lowest_maybe_free, pos)


class LoadBalancerController:
    def __init__(self, store: Store, pool: Iterable[str] | ipaddress.IPv4Network | str,
                 delay: float = 0.05) -> None:
        self._store = store
        self._pool = AddressPool(pool)
        self._delay = delay
        self._assigned: dict[ServiceKey, str] = {}
        self._waiting: dict[ServiceKey, None] = {}  # pending for lack of an address, in order
        self._warned: set[ServiceKey] = set()
        self._to_clear: dict[ServiceKey, str] = {}  # released addresses still in a status
        self._queue: WorkQueue[ServiceKey] = WorkQueue(self._sync, "loadbalancer-controller")
        self._unsubscribe = None

    def start(self) -> None:
        self._unsubscribe = self._store.subscribe(self._on_service, kinds=("Service",))
        services = self._store.list("Service")
        for service in services:  # keep addresses already published (a restart)
            if wants_load_balancer(service):
                for ingress in service.status.load_balancer.ingress:
                    if ingress.ip and self._pool.take(ingress.ip):
                        self._assigned[_key(service)] = ingress.ip
                        break
        for service in services:
            self._on_service(Event(ADDED, None, service))

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._queue.stop()

    def assigned(self, namespace: str, name: str) -> str | None:
        """The ingress address given to a service, if any."""
        return self._assigned.get((namespace, name))

    # ------------------------------------------------------------------ events

    def _on_service(self, event: Event) -> None:
        key = _key(event.obj)
        service = event.new
        if event.type == DELETED or not wants_load_balancer(service):
            self._queue.cancel_timer(key)
            self._waiting.pop(key, None)
            self._warned.discard(key)
            released = self._release(key)
            if released is not None and service is not None:
                self._to_clear[key] = released
                self._queue.add(key)
            return
        ip = self._assigned.get(key)
        requested = service.spec.load_balancer_ip
        if ip is not None and requested and requested != ip:
            self._release(key)  # a different address was asked for: provision again
            ip = None
        if ip is None:
            self._queue.add_after(key, self._delay)
        elif service.status.load_balancer.ingress != _ingress(ip):
            self._queue.add(key)

    # ------------------------------------------------------------------ sync

    def _sync(self, key: ServiceKey) -> None:
        service = self._store.get("Service", *key)
        if service is None:
            return
        if not wants_load_balancer(service):
            released = self._to_clear.pop(key, None)
            ingress = service.status.load_balancer.ingress
            if released is not None and any(i.ip == released for i in ingress):
                self._write_status(service, tuple(i for i in ingress if i.ip != released))
            return
        ip = self._assigned.get(key) or self._allocate(key, service)
        if ip is None:
            return
        self._waiting.pop(key, None)
        self._warned.discard(key)
        if service.status.load_balancer.ingress != _ingress(ip):
            self._write_status(service, _ingress(ip))

    def _allocate(self, key: ServiceKey, service: Service) -> str | None:
        requested = service.spec.load_balancer_ip
        if requested:
            if requested not in self._pool:
                return self._pending(key, f'requested loadBalancerIP "{requested}" is not in the pool ({self._pool})')
            if not self._pool.take(requested):
                return self._pending(key, f'requested loadBalancerIP "{requested}" is already in use')
            ip = requested
        else:
            ip = self._pool.take_lowest()
            if ip is None:
                return self._pending(key, f"no available IPs in pool {self._pool}")
        self._assigned[key] = ip
        log.info("service %s/%s: load balancer ingress %s", *key, ip)
        events.recorder(self._store).normal(service, "IPAllocated", f'Assigned IP ["{ip}"]', component=CONTROLLER_NAME)
        return ip

    def _pending(self, key: ServiceKey, why: str) -> None:
        service = self._store.get("Service", *key)
        if service is not None:  # MetalLB's event; a retry bumps its count
            events.recorder(self._store).warning(
                service, "AllocationFailed", f'Failed to allocate IP for "{key[0]}/{key[1]}": {why}',
                component=CONTROLLER_NAME)
        self._waiting[key] = None
        if key not in self._warned:
            self._warned.add(key)
            log.warning("Warning AllocationFailed service/%s in %s: Failed to allocate IP: %s",
                        key[1], key[0], why)
        return None

    def _release(self, key: ServiceKey) -> str | None:
        """Give the service's address back to the pool (and to the first waiting service)."""
        ip = self._assigned.pop(key, None)
        if ip is None:
            return None
        self._pool.release(ip)
        for waiting in self._waiting:
            self._queue.add_after(waiting, self._delay)
        return ip

    def _write_status(self, service: Service, ingress: tuple[LoadBalancerIngress, ...]) -> None:
        status = dataclasses.replace(
            service.status, load_balancer=dataclasses.replace(service.status.load_balancer, ingress=ingress))
        self._store.modify("Service", service.metadata.namespace, service.metadata.name,
                           lambda s: dataclasses.replace(s, status=status))


def _key(service: Service) -> ServiceKey:
    return (service.metadata.namespace, service.metadata.name)


def _ingress(ip: str) -> tuple[LoadBalancerIngress, ...]:
    return (LoadBalancerIngress(ip=ip, ip_mode="VIP"),)
