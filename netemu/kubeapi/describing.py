"""``netemu describe``'s text, made where the cluster is: besides the object and its events it
shows what only the running cluster knows (a Service's last proxied connections and
impairment, a node's link impairments and partition, NetworkPolicy sections), reusing
``netemu.printers.describe``. Served by ``netemu.kubeapi.operations``.
"""
from __future__ import annotations

import datetime
import time
from typing import Any

from netemu.controllers.deployment import replica_sets_of

CONNECTIONS_SHOWN = 10  # newest connection-log records in ``describe svc``


def describe(cluster: Any, kind_arg: str, names: list[str], namespace: str | None) -> str:
    """The described objects (the named ones, else every one of the kind in the namespace)."""
    from netemu import printers
    from netemu.cluster import resolve_kind
    from netemu.events import events_for
    kind = resolve_kind(kind_arg)
    ns = namespace or "default"
    objs = [cluster.get(kind, n, ns) for n in names] if names else cluster.list(kind, ns)
    now = datetime.datetime.now(datetime.timezone.utc).astimezone()
    return "\n\n".join(printers.describe(o, events=events_for(cluster.store, o), related=related(cluster, o), now=now)
                       for o in objs)


def related(cluster: Any, obj: Any) -> dict[str, Any]:
    """What ``printers.describe`` shows beside the object itself."""
    store = cluster.store
    if obj.KIND == "Service":
        return {"endpoint_slices": store.list(
            "EndpointSlice", obj.metadata.namespace, {"kubernetes.io/service-name": obj.metadata.name}),
                "sections": _traffic_sections(cluster, obj)}
    if obj.KIND == "Deployment":
        new, old = replica_sets_of(store, obj)
        return {"new_replica_sets": new, "old_replica_sets": old}
    if obj.KIND in ("StatefulSet", "ReplicaSet", "DaemonSet"):
        return {"pods": [p for p in store.list("Pod", obj.metadata.namespace)
                         if any(r.uid == obj.metadata.uid for r in p.metadata.owner_references)]}
    if obj.KIND == "ServiceAccount":
        return {"secrets": store.list("Secret", obj.metadata.namespace)}
    if obj.KIND == "NetworkPolicy":
        from netemu.networkpolicy import describe_sections
        return {"sections": describe_sections(cluster)}
    if obj.KIND == "Pod":
        from netemu.networkpolicy import pod_sections
        sections = pod_sections(cluster, obj)
        return {"sections": sections} if sections else {}
    if obj.KIND == "Node":
        return {"pods": [p for p in store.list("Pod") if p.spec.node_name == obj.metadata.name],
                "sections": _node_sections(cluster, obj.metadata.name)}
    return {}


def _node_sections(cluster: Any, node: str) -> list[tuple[str, list[str]]]:
    """What is impaired on the node's links (wire: netns) or at its proxy, and the partition."""
    sections: list[tuple[str, list[str]]] = []
    wire = getattr(cluster.fabric, "wire", None)
    if wire is not None:
        lines = [f"{what}\t{setting}" for what, setting in wire.impairments().items()
                 if what == f"node {node}" or (what.startswith("link ") and node in what[5:].split("<->"))]
        if lines:
            sections.append(("Link impairments", lines))
        groups = wire.partitions()
        if groups:
            mine = next(g for g in groups if node in g)
            sections.append(("Partition", [f"hears only\t{', '.join(mine)}"]))
    impairment = cluster.proxy.impairments.by_node.get(node) if cluster.proxy is not None else None
    if impairment is not None:
        sections.append(("Impairment", [str(impairment)]))
    return sections


def _traffic_sections(cluster: Any, svc: Any) -> list[tuple[str, list[str]]]:
    """A Service's impairment (when set) and its last connections from the proxy's log."""
    namespace, name = svc.metadata.namespace, svc.metadata.name
    sections: list[tuple[str, list[str]]] = []
    impairment = cluster.proxy.impairments.by_service.get((namespace, name)) if cluster.proxy is not None else None
    if impairment is not None:
        sections.append(("Impairment", [str(impairment)]))
    records = cluster.connection_log(name, namespace) if cluster.proxy is not None else []
    shown = records[-CONNECTIONS_SHOWN:]
    lines = []
    if shown:
        from netemu.printers import human_duration
        now = time.time()
        lines = ["Client\tFrontend\tNode\tEndpoint\tBytes (up/down)\tOutcome\tAge",
                 "------\t--------\t----\t--------\t---------------\t-------\t---"]
        lines += [f"{r.client[0]}:{r.client[1]}\t{r.frontend}\t{r.node or '<none>'}\t{r.endpoint or '<none>'}"
                  f"\t{r.bytes_up}/{r.bytes_down}\t{r.outcome or 'open'}"
                  f"\t{human_duration(datetime.timedelta(seconds=max(0.0, now - r.time)))}" for r in shown]
    title = f"Connections (last {len(shown)} of {len(records)})" if len(records) > len(shown) else "Connections"
    sections.append((title, lines))
    return sections
