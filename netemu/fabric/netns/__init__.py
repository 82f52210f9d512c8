"""The netns backend's parts (not wired into a ``Fabric`` yet).

- ``ipbatch``: iproute2 ``ip`` runs (a batch or a JSON query inside one named namespace,
  ``netns add/del`` batches), sync and async.
- ``namespaces``: cluster-prefixed named namespaces recorded in the ledger, node setup (``lo``
  up, a ``cni0`` bridge), switching one thread into a namespace, garbage collection.

The pod side (veth to the node's bridge, address, routes) is the CNI bridge plugin,
``netemu.cni.bridge``, run inside a node namespace.
"""
