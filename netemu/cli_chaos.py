"""``netemu impair``, ``partition`` and ``heal``: clients of the cluster's Kubernetes API.

Each writes or deletes the netemu.dev object that ``kubectl apply`` could write (``Impairment``,
``Partition``; see netemu.chaos), waits until the cluster reports it in force (its status'
``observedGeneration``), and prints what is in force. An impairment for a target that already
has one (made by this command or by kubectl) changes that object.
"""
from __future__ import annotations

import time
from typing import Any

from netemu.errors import ClusterError, NetemuError, NotFoundError

API = "/apis/netemu.dev/v1"
IN_FORCE_TIMEOUT = 30.0  # seconds the cluster gets to put a written object in force


def _target(args: Any) -> tuple[dict[str, Any], str, str, str]:
    """(spec.target, namespace, object name, how the result line names it) for impair's flags."""
    from netemu.chaos import impairment_name
    namespace = args.namespace or "default"
    if args.service:
        ns, _, service = args.service.rpartition("/")
        target, namespace, shown = {"service": service}, ns or namespace, f"service/{args.service}"
    elif args.node:
        target, shown = {"node": args.node}, f"node/{args.node}"
    else:
        a, b = args.link
        target, shown = {"link": [a, b]}, f"link {a}<->{b}"
    return target, namespace, impairment_name(target), shown


def _same_target(obj: dict[str, Any], target: dict[str, Any], namespace: str) -> bool:
    theirs = obj.get("spec", {}).get("target", {})
    if "service" in target:
        return theirs.get("service") == target["service"] and obj["metadata"].get("namespace") == namespace
    if "node" in target:
        return theirs.get("node") == target["node"]
    return sorted(theirs.get("link") or []) == sorted(target["link"])


def _in_force(client: Any, path: str) -> dict[str, Any]:
    """The object once its status says the cluster applied its current generation."""
    deadline = time.monotonic() + IN_FORCE_TIMEOUT
    while True:
        obj = client.get(path)
        if obj.get("status", {}).get("observedGeneration") == obj["metadata"].get("generation"):
            return obj  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise ClusterError(f"{path.rpartition('/')[2]}: the cluster did not put it in force within "
                               f"{IN_FORCE_TIMEOUT:g}s")
        time.sleep(0.02)


def impair(client: Any, args: Any, settings: dict[str, str] | None) -> str:
    """Impair (or with ``settings`` None, clear) the service, node or link ``args`` names."""
    target, namespace, name, shown = _target(args)
    if "service" in target:  # it must exist (kubectl may name one before it is made; this command may not)
        client.get(f"/api/v1/namespaces/{namespace}/services/{target['service']}")
    existing = next((o for o in client.list(f"{API}/impairments") if _same_target(o, target, namespace)), None)
    if settings is None:
        if existing is not None:
            meta = existing["metadata"]
            client.delete(f"{API}/namespaces/{meta['namespace']}/impairments/{meta['name']}")
            client.list(f"{API}/impairments")  # answered once the cluster has cleared it (see heal)
        return f"{shown}: impairment cleared"
    if existing is not None:
        namespace, name = existing["metadata"]["namespace"], existing["metadata"]["name"]
    body = {"apiVersion": "netemu.dev/v1", "kind": "Impairment",
            "metadata": {"name": name, "namespace": namespace}, "spec": {"target": target, **settings}}
    path = f"{API}/namespaces/{namespace}/impairments"
    if existing is None:
        client.create(path, body)
    else:
        body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        client.replace(f"{path}/{name}", body)
    applied = _in_force(client, f"{path}/{name}")["status"].get("applied", "")
    return f"{shown} impaired: {applied}"


def partition(client: Any, groups: list[str]) -> str:
    """Cut the underlay between groups (``node-1`` ``node-2,node-3``): the cluster's one Partition."""
    spec = {"groups": [{"nodes": [n for n in group.split(",") if n]} for group in groups]}
    existing = client.list(f"{API}/partitions")
    name = existing[0]["metadata"]["name"] if existing else "partition"
    body = {"apiVersion": "netemu.dev/v1", "kind": "Partition", "metadata": {"name": name}, "spec": spec}
    if existing:
        body["metadata"]["resourceVersion"] = existing[0]["metadata"]["resourceVersion"]
        client.replace(f"{API}/partitions/{name}", body)
    else:
        client.create(f"{API}/partitions", body)
    return "partitioned: " + _in_force(client, f"{API}/partitions/{name}")["status"].get("groups", "")


def heal(client: Any, backend: str) -> str:
    """Delete every Partition: every node hears every other again."""
    if backend != "netns":
        raise NetemuError(f"heal: needs the netns backend (this cluster uses {backend})")
    for obj in client.list(f"{API}/partitions"):
        try:
            client.delete(f"{API}/partitions/{obj['metadata']['name']}")
        except NotFoundError:
            pass  # healed by someone else meanwhile
    # The cluster heals while it delivers the deletion, before it serves a later request: once
    # this list answers, the underlay is whole.
    if client.list(f"{API}/partitions"):
        raise ClusterError("heal: a partition was made again meanwhile")
    return "healed: every node hears every other"
