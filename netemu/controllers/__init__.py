"""The control plane's controllers, run in-process against the Store.

``start_controllers`` creates the deployment, ReplicaSet and StatefulSet controllers, the
scheduler, the EndpointSlice controller and the load-balancer controller, subscribes them to the store and lets
each process the objects that exist already. Controllers react to store events by writing objects;
they batch work per loop turn (``workqueue.WorkQueue``) and keep label indexes, so a change costs
work in proportion to what it touches. The ClusterIP / NodePort allocators (``allocators.py``) are
not controllers: the API server calls them while admitting a Service.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable

from netemu.store import Store

from .deployment import DeploymentController
from .endpointslice import EndpointSliceController
from .loadbalancer import LoadBalancerController
from .replicaset import ReplicaSetController
from .scheduler import Scheduler
from .statefulset import StatefulSetController

__all__ = ["Controllers", "DeploymentController", "EndpointSliceController",
           "LoadBalancerController", "ReplicaSetController", "Scheduler", "StatefulSetController",
           "start_controllers"]


@dataclass
class Controllers:
    deployments: DeploymentController
    replicasets: ReplicaSetController
    scheduler: Scheduler
    endpointslices: EndpointSliceController
    loadbalancers: LoadBalancerController
    statefulsets: StatefulSetController

    @property
    def idle(self) -> bool:
        """No controller has work queued for the coming loop turns (delayed retries aside)."""
        return all(c._queue.idle for c in (self.deployments, self.replicasets, self.scheduler,
                                            self.endpointslices, self.loadbalancers, self.statefulsets))

    def stop(self) -> None:
        for controller in (self.loadbalancers, self.endpointslices, self.scheduler, self.statefulsets,
                           self.replicasets, self.deployments):
            controller.stop()


def start_controllers(store: Store, *, lb_pool: Iterable[str] | ipaddress.IPv4Network | str,
                      lb_delay: float = 0.05) -> Controllers:
    """Create, subscribe and start every controller; ``.stop()`` on the result unsubscribes them."""
    controllers = Controllers(
        deployments=DeploymentController(store),
        replicasets=ReplicaSetController(store),
        scheduler=Scheduler(store),
        endpointslices=EndpointSliceController(store),
        loadbalancers=LoadBalancerController(store, lb_pool, delay=lb_delay),
        statefulsets=StatefulSetController(store),
    )
    controllers.endpointslices.start()
    controllers.scheduler.start()
    controllers.replicasets.start()
    controllers.deployments.start()
    controllers.statefulsets.start()
    controllers.loadbalancers.start()
    return controllers
