"""In-cluster access to the cluster's own Kubernetes API, switched on once the API serves.

What a pod needs to be a client of the API as on a real cluster:

- the ``kubernetes`` Service of ``default`` (bootstrapped with every cluster) gets its
  EndpointSlice, as kube-apiserver's endpoint reconciler writes it: one endpoint, the API
  server's listener (``127.0.0.1:<port>`` in the host's network); the service proxy relays
  ``KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT`` (the ClusterIP, 443) there;
- every namespace gets the ``kube-root-ca.crt`` ConfigMap (``controllers.rootcacert``);
- the ServiceAccount admission plugin mounts the token volume in new pods, and the kubelets get
  ``service_account_token``, which mints the pod's bound token (``tokens``).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from netemu.api.objects import Endpoint, EndpointConditions, EndpointPort, EndpointSlice, ObjectMeta
from netemu.controllers.rootcacert import RootCACertPublisher
from netemu.errors import NotFoundError

SERVICE_NAMESPACE, SERVICE_NAME = "default", "kubernetes"
API_HOST = "127.0.0.1"  # where KubeApiServer listens (the host's network)


def endpoint_slice(port: int) -> EndpointSlice:
    """The ``kubernetes`` Service's EndpointSlice: the API server's listener."""
    return EndpointSlice(
        metadata=ObjectMeta(name=SERVICE_NAME, namespace=SERVICE_NAMESPACE,
                            labels={EndpointSlice.SERVICE_NAME_LABEL: SERVICE_NAME}),
        address_type="IPv4",
        endpoints=(Endpoint(addresses=(API_HOST,), conditions=EndpointConditions(ready=True, serving=True,
                                                                                 terminating=False)),),
        ports=(EndpointPort(name="https", protocol="TCP", port=port),))


class InClusterAccess:
    """Turns in-cluster access on for one cluster whose KubeApiServer has started; ``stop`` undoes it."""

    def __init__(self, cluster: Any, kube_api: Any) -> None:
        self.cluster = cluster
        self.kube_api = kube_api
        self._publisher = RootCACertPublisher(cluster.store, kube_api.credentials.ca_cert.decode())

    def start(self) -> None:
        store = self.cluster.store
        self.cluster.apiserver.mount_service_account_tokens = True
        self._publisher.start()
        wanted = endpoint_slice(self.kube_api.port)
        live = store.get("EndpointSlice", SERVICE_NAMESPACE, SERVICE_NAME)
        if live is None:
            store.create(wanted)
        elif (live.endpoints, live.ports) != (wanted.endpoints, wanted.ports):
            store.update(dataclasses.replace(live, endpoints=wanted.endpoints, ports=wanted.ports))
        for kubelet in self.cluster.kubelets.values():
            self.equip(kubelet)

    def equip(self, kubelet: Any) -> None:
        """Give a kubelet the API server's token minting (and its sandbox helper the key to sign
        with)."""
        kubelet.service_account_token = self.pod_token
        if getattr(kubelet, "sandbox", None) is not None:
            kubelet.sandbox.use_signing_key(self.kube_api.tokens.key_pem())

    def stop(self) -> None:
        self._publisher.stop()
        self.cluster.apiserver.mount_service_account_tokens = False
        for kubelet in self.cluster.kubelets.values():
            if getattr(kubelet, "service_account_token", None) == self.pod_token:
                kubelet.service_account_token = None

    def pod_token(self, namespace: str, service_account: str, pod_name: str, pod_uid: str, audience: str,
                  expiration_seconds: int | None, *, signed: bool = True) -> str:
        """The kubelet's hook: a token for the pod's service account, bound to the pod
        (a TokenRequest with ``boundObjectRef``); with ``signed`` False its draft's signing input,
        for the sandbox helper to sign (netemu.kubeapi.tokens.sign). NotFoundError when either is
        gone."""
        store = self.cluster.store
        sa = store.get("ServiceAccount", namespace, service_account)
        if sa is None:
            raise NotFoundError(f'serviceaccounts "{service_account}" not found')
        pod = store.get("Pod", namespace, pod_name)
        if pod is None or (pod_uid and pod.metadata.uid != pod_uid):
            raise NotFoundError(f'pods "{pod_name}" not found')
        tokens = self.kube_api.tokens
        audiences = (audience,) if audience else ()
        if not signed:
            return tokens.draft(namespace, sa, audiences=audiences, expiration_seconds=expiration_seconds,
                                pod=pod).signing_input
        return str(tokens.issue(namespace, sa, audiences=audiences, expiration_seconds=expiration_seconds,
                                pod=pod).token)

    pod_token.drafts = True  # type: ignore[attr-defined]  # signed=False gives a draft (netemu.kubelet.volumes)


__all__ = ["InClusterAccess", "endpoint_slice"]
