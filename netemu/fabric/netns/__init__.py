"""The netns backend: nodes and pods in network namespaces.

- ``ipbatch``: iproute2 ``ip`` runs (a batch or a JSON query inside one named namespace,
  ``netns add/del`` batches), sync and async.
- ``namespaces``: cluster-prefixed named namespaces recorded in the ledger, node setup (``lo``
  up, a ``cni0`` bridge), switching one thread into a namespace, garbage collection.
- ``fabric``: ``NetnsFabric``, the ``Fabric`` of this backend: an underlay bridge namespace,
  node namespaces on it with host-gw routes, pod namespaces set up by the CNI bridge plugin,
  sockets and processes placed in a node's or pod's namespace, ClusterIPs on each node's
  ``svc0`` (``add_service_ip``/``remove_service_ip``). Selected by ``backend="netns"``.

The pod side (veth to the node's bridge, address, routes) is the CNI bridge plugin,
``netemu.cni.bridge``, run inside a node namespace.
"""
from .fabric import DEFAULT_POD_CIDR, UNDERLAY_CIDR, NetnsFabric

__all__ = ["DEFAULT_POD_CIDR", "UNDERLAY_CIDR", "NetnsFabric"]
