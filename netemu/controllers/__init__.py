"""The control plane's controllers, run in-process against the Store.

``start_controllers`` creates the deployment, ReplicaSet, StatefulSet and DaemonSet controllers, the
scheduler, the EndpointSlice controller and the load-balancer controller, subscribes them to the store and lets
each process the objects that exist already. Controllers react to store events by writing objects;
they batch work per loop turn (``workqueue.WorkQueue``) and keep label indexes, so a change costs
work in proportion to what it touches. What the API server itself does lives beside it, not
here (dependencies run one way, the API server below the controllers): the ClusterIP / NodePort
allocators (``netemu.allocators``), graceful pod deletion (``netemu.poddeletion``), generated
names (``netemu.names``) and the garbage collector's propagation policies (``netemu.garbagecollector``).
The serviceaccounts controller (``serviceaccount``) gives every namespace its ``default``
ServiceAccount; the root-ca-cert publisher (``rootcacert``) runs only with the Kubernetes API
(``netemu.kubeapi.incluster`` starts it).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable

from netemu.store import Store

from netemu.clock import Clock

from .cronjob import CronJobController
from .daemonset import DaemonSetController
from .deployment import DeploymentController
from .endpointslice import EndpointSliceController
from .job import DEFAULT_BACKOFF as DEFAULT_JOB_BACKOFF, JobController
from .loadbalancer import LoadBalancerController
from .replicaset import ReplicaSetController
from .scheduler import Scheduler
from .serviceaccount import ServiceAccountsController
from .statefulset import StatefulSetController

__all__ = ["Controllers", "DaemonSetController", "DeploymentController", "EndpointSliceController",
           "LoadBalancerController", "ReplicaSetController", "Scheduler", "ServiceAccountsController", "StatefulSetController",
           "start_controllers"]


@dataclass
class Controllers:
    deployments: DeploymentController
    replicasets: ReplicaSetController
    scheduler: Scheduler
    endpointslices: EndpointSliceController
    loadbalancers: LoadBalancerController
    statefulsets: StatefulSetController
    serviceaccounts: ServiceAccountsController
    daemonsets: DaemonSetController
    jobs: JobController
    cronjobs: CronJobController

    @property
    def idle(self) -> bool:
        """No controller has work queued for the coming loop turns (delayed retries aside)."""
        return all(c._queue.idle for c in (self.deployments, self.replicasets, self.scheduler,
                                            self.endpointslices, self.loadbalancers, self.statefulsets,
                                            self.daemonsets, self.jobs, self.cronjobs))

    def stop(self) -> None:
        for controller in (self.cronjobs, self.jobs, self.loadbalancers, self.endpointslices, self.scheduler,
                           self.daemonsets,
                           self.statefulsets, self.replicasets, self.deployments):
            controller.stop()
        self.serviceaccounts.stop()


def start_controllers(store: Store, *, lb_pool: Iterable[str] | ipaddress.IPv4Network | str,
                      lb_delay: float = 0.05, clock: Clock | None = None,
                      job_backoff: float = DEFAULT_JOB_BACKOFF) -> Controllers:
    """Create, subscribe and start every controller; ``.stop()`` on the result unsubscribes them.
    ``clock``: the time the Job and CronJob controllers go by (``netemu.clock``; a fresh one if none)."""
    clock = clock or Clock()
    controllers = Controllers(
        deployments=DeploymentController(store),
        replicasets=ReplicaSetController(store),
        scheduler=Scheduler(store),
        endpointslices=EndpointSliceController(store),
        loadbalancers=LoadBalancerController(store, lb_pool, delay=lb_delay),
        statefulsets=StatefulSetController(store),
        serviceaccounts=ServiceAccountsController(store),
        daemonsets=DaemonSetController(store),
        jobs=JobController(store, clock, backoff=job_backoff),
        cronjobs=CronJobController(store, clock),
    )
    controllers.serviceaccounts.start()  # first: a namespace has its default account before anything looks
    controllers.endpointslices.start()
    controllers.scheduler.start()
    controllers.replicasets.start()
    controllers.deployments.start()
    controllers.statefulsets.start()
    controllers.daemonsets.start()
    controllers.loadbalancers.start()
    controllers.jobs.start()
    controllers.cronjobs.start()
    return controllers
