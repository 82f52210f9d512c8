"""The root-ca-cert publisher: a ConfigMap ``kube-root-ca.crt`` in every namespace holding the API
server's CA certificate (``ca.crt``), which the pods' token volumes project.

As kube-controller-manager's: made when a namespace appears, made again when deleted and put
back when changed. It runs only while the cluster serves its Kubernetes API (there is no CA
otherwise); never in a namespace being terminated.
"""
from __future__ import annotations

import dataclasses

from netemu.api.objects import ConfigMap, ObjectMeta
from netemu.errors import AlreadyExistsError
from netemu.store import Event, Store

from .pernamespace import PerNamespaceController

CONFIGMAP_NAME = "kube-root-ca.crt"
CA_KEY = "ca.crt"
DESCRIPTION_ANNOTATION = "kubernetes.io/description"
DESCRIPTION = ("Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints "
               "such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across "
               "distributions of Kubernetes clusters.")


class RootCACertPublisher(PerNamespaceController):
    KIND = "ConfigMap"

    def __init__(self, store: Store, ca_pem: str) -> None:
        super().__init__(store)
        self._data = {CA_KEY: ca_pem}

    def namespace_of(self, event: Event) -> str | None:
        return event.obj.metadata.namespace if event.obj.metadata.name == CONFIGMAP_NAME else None

    def sync(self, namespace: str) -> None:
        ns = self._store.get("Namespace", "", namespace)
        if ns is None or ns.metadata.deletion_timestamp is not None:
            return
        live = self._store.get("ConfigMap", namespace, CONFIGMAP_NAME)
        if live is None:
            try:
                self._store.create(ConfigMap(metadata=ObjectMeta(
                    name=CONFIGMAP_NAME, namespace=namespace, annotations={DESCRIPTION_ANNOTATION: DESCRIPTION}),
                    data=dict(self._data)))
            except AlreadyExistsError:
                pass
        elif dict(live.data) != self._data or live.binary_data:
            self._store.update(dataclasses.replace(live, data=dict(self._data), binary_data={}))


__all__ = ["CONFIGMAP_NAME", "RootCACertPublisher"]
