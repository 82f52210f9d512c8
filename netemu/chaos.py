"""netemu.dev Impairment and Partition objects, put in force on the running cluster.

The objects are the one way to impair and partition: ``netemu impair``/``partition``/``heal``,
kubectl and any client write them through the Kubernetes API. Two parts:

- **admission** (``problems``): what only the running cluster can judge — the nodes named exist,
  the backend has the layer the target needs (a link or a partition needs the netns backend's
  wire), each setting is one that layer applies (``reset`` acts at the proxy, ``duplicate`` on
  the wire), one Impairment per target and one Partition at a time. The API server calls it
  after validation, so a refusal is a 422 naming the field, and nothing is stored;
- **reconciling** (``Chaos``): an object created or changed is applied at the proxy or on the
  wire, and its status says what is in force (``applied``, ``layer``, ``observedGeneration``);
  a deleted one is cleared (a deleted Partition heals the underlay).

Which layer: a Service's traffic is impaired at the service proxy; a node's at the proxy on the
loopback backend and on the wire on netns; a link's on the wire.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from netemu.api import codec
from netemu.api.objects import (Impairment, ImpairmentSpec, ImpairmentTarget, ObjectMeta, Partition,
                                PartitionGroup, PartitionSpec)
from netemu.errors import FieldProblem, NetemuError
from netemu.printers import impairment_target
from netemu.store import DELETED

log = logging.getLogger(__name__)

SETTINGS = ("delay", "jitter", "rate", "loss", "reset", "duplicate")
_PROXY_ONLY = {"reset": "reset acts on new TCP connections at the service proxy; impair a service for that "
                        "(the wire carries frames, not connections)"}
_WIRE_ONLY = {"duplicate": "duplicate acts on frames on the netns backend's wire; the service proxy cannot "
                           "duplicate a stream"}


def _on_wire(cluster: Any, imp: Impairment) -> bool:
    target = imp.spec.target
    return bool(target.link) or (bool(target.node) and hasattr(cluster.fabric, "impair"))


def target_key(imp: Impairment) -> str:
    """What the Impairment acts on, the same for every object naming it (``service/ns/web``)."""
    t = imp.spec.target
    if t.service:
        return f"service/{imp.metadata.namespace}/{t.service}"
    return f"node/{t.node}" if t.node else "link/" + "<->".join(sorted(t.link))


def parsed_settings(cluster: Any, imp: Impairment) -> Any:
    """The proxy's ``Impairment`` or the wire's ``LinkImpairment`` the object asks for."""
    settings = {what: getattr(imp.spec, what) for what in SETTINGS if getattr(imp.spec, what)}
    if _on_wire(cluster, imp):
        from netemu.fabric.netns.wire import LinkImpairment
        settings.pop("reset", None)
        return LinkImpairment.parse(**settings)
    from netemu.proxy import Impairment as ProxyImpairment
    settings.pop("duplicate", None)
    return ProxyImpairment.parse(**settings)


def _impairment_problems(cluster: Any, imp: Impairment) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    target = imp.spec.target
    for path, name in ([("spec.target.node", target.node)] if target.node else []) + \
            [(f"spec.target.link[{i}]", n) for i, n in enumerate(target.link)]:
        if name not in cluster.nodes:
            problems.append(FieldProblem(path, f"Not found: {json.dumps(name)}"))
    if target.link and not hasattr(cluster.fabric, "impair"):
        problems.append(FieldProblem("spec.target.link", "Forbidden: links are impaired on the netns backend's "
                                     f"wire; this cluster uses the {cluster.config.backend} backend (impair a "
                                     "service or a node instead)"))
        return problems
    if target.service and getattr(cluster.config, "proxy_mode", "userspace") == "nftables":
        problems.append(FieldProblem("spec.target.service", "Forbidden: this cluster's proxyMode is nftables: "
                                     "the kernel serves ClusterIPs and NodePorts, the userspace proxy that "
                                     "impairs a service's connections does not see them (impair a node or a "
                                     "link, on the wire, instead)"))
        return problems
    foreign = _PROXY_ONLY if _on_wire(cluster, imp) else _WIRE_ONLY
    for what, why in foreign.items():
        if getattr(imp.spec, what):
            problems.append(FieldProblem(f"spec.{what}", f"Forbidden: {why}"))
    key = target_key(imp)
    for other in cluster.store.list("Impairment"):
        if (other.metadata.namespace, other.metadata.name) != (imp.metadata.namespace, imp.metadata.name) \
                and target_key(other) == key:
            problems.append(FieldProblem("spec.target", f"Duplicate value: {json.dumps(impairment_target(imp))}: "
                                         f"already impaired by Impairment {other.metadata.namespace}/"
                                         f"{other.metadata.name} (change that one, or delete it first)"))
    return problems


def _partition_problems(cluster: Any, part: Partition) -> list[FieldProblem]:
    if not hasattr(cluster.fabric, "partition"):
        return [FieldProblem("spec", f"Forbidden: a partition needs the netns backend (this cluster uses "
                             f"{cluster.config.backend}): on the loopback backend all pods share one network stack")]
    problems = [FieldProblem(f"spec.groups[{i}].nodes[{j}]", f"Not found: {json.dumps(node)}")
                for i, group in enumerate(part.spec.groups) for j, node in enumerate(group.nodes)
                if node not in cluster.nodes]
    for other in cluster.store.list("Partition"):
        if other.metadata.name != part.metadata.name:
            problems.append(FieldProblem("metadata.name", f"Forbidden: Partition {json.dumps(other.metadata.name)} "
                                         "is in force: one partition at a time (change that one, or delete it "
                                         "first)"))
    return problems


def problems(cluster: Any, obj: Any) -> list[FieldProblem]:
    """What the running cluster refuses in an Impairment or Partition (admission)."""
    if isinstance(obj, Impairment):
        return _impairment_problems(cluster, obj)
    if isinstance(obj, Partition):
        return _partition_problems(cluster, obj)
    return []


def _runtime_target(imp: Impairment) -> dict[str, Any]:
    """``put_impairment``'s target arguments for the object."""
    t = imp.spec.target
    if t.service:
        return {"service": (imp.metadata.namespace, t.service)}
    return {"node": t.node} if t.node else {"link": tuple(t.link)}


class Chaos:
    """Puts the cluster's Impairment and Partition objects in force (see the module's text)."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self._unsubscribe: Any = None

    def start(self) -> None:
        self.cluster.apiserver.admission["Impairment"] = self.cluster.apiserver.admission["Partition"] = \
            lambda obj: problems(self.cluster, obj)
        self._unsubscribe = self.cluster.store.subscribe(self._on_event, kinds=["Impairment", "Partition"])

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _on_event(self, event: Any) -> None:
        try:
            if event.type == DELETED:
                self._withdraw(event.old)
            elif event.new.status.observed_generation != event.new.metadata.generation:
                self._enforce(event.old, event.new)
        except NetemuError as exc:  # admission checked it; the cluster changed since (a node went)
            log.warning("%s %s: not in force: %s", event.kind, event.new.metadata.name if event.new else "", exc)

    def _withdraw(self, obj: Any) -> None:
        if isinstance(obj, Impairment):
            self.cluster.put_impairment(None, **_runtime_target(obj))
        else:
            self.cluster.put_heal()

    def _enforce(self, old: Any, new: Any) -> None:
        store = self.cluster.store
        if isinstance(new, Impairment):
            if old is not None and target_key(old) != target_key(new):
                self.cluster.put_impairment(None, **_runtime_target(old))
            settings = parsed_settings(self.cluster, new)
            self.cluster.put_impairment(settings, **_runtime_target(new))
            status = dataclasses.replace(new.status, observed_generation=new.metadata.generation,
                                         applied=str(settings), layer="wire" if _on_wire(self.cluster, new) else "proxy")
            store.modify("Impairment", new.metadata.namespace, new.metadata.name,
                         lambda o: dataclasses.replace(o, status=status))
        else:
            self.cluster.put_partition([list(g.nodes) for g in new.spec.groups])
            groups = " | ".join(",".join(g) for g in self.cluster.fabric.wire.partitions())
            status = dataclasses.replace(new.status, observed_generation=new.metadata.generation, groups=groups)
            store.modify("Partition", "", new.metadata.name, lambda o: dataclasses.replace(o, status=status))


# ---------------------------------------------------------------------------- writing the objects
# (the Python API's Cluster.impair/partition/heal; the CLI writes the same objects over HTTPS)


def impairment_name(target: dict[str, Any]) -> str:
    """The name ``netemu impair`` gives the Impairment of a target it makes: ``service-web``,
    ``node-node-1``, ``link-node-1-node-2`` (the link's nodes sorted)."""
    if target.get("service"):
        return f"service-{target['service']}"
    if target.get("node"):
        return f"node-{target['node']}"
    return "link-" + "-".join(sorted(target["link"]))


def spec_settings(impairment: Any = None, *, delay: float = 0.0, jitter: float = 0.0, rate_kbit: float = 0.0,
                  loss: float = 0.0, reset: float = 0.0, duplicate: float = 0.0) -> dict[str, str]:
    """An Impairment's settings as its spec spells them, from a proxy ``Impairment`` or wire
    ``LinkImpairment`` or from numbers (seconds, kbit/s, fractions); empty when all are zero."""
    if impairment is not None:
        delay, jitter = impairment.delay_ms / 1000, impairment.jitter_ms / 1000
        rate_kbit = impairment.rate_kbit
        loss = getattr(impairment, "udp_loss", getattr(impairment, "loss", 0.0))
        reset, duplicate = getattr(impairment, "tcp_reset", 0.0), getattr(impairment, "duplicate", 0.0)
    spelled = {"delay": f"{delay * 1000:g}ms" if delay else "", "jitter": f"{jitter * 1000:g}ms" if jitter else "",
               "rate": f"{rate_kbit:g}kbit" if rate_kbit else "", "loss": f"{loss * 100:g}%" if loss else "",
               "reset": f"{reset * 100:g}%" if reset else "", "duplicate": f"{duplicate * 100:g}%" if duplicate else ""}
    return {what: text for what, text in spelled.items() if text}


def write_impairment(cluster: Any, *, service: str | None, node: str | None, link: Any, namespace: str,
                     settings: dict[str, str]) -> str:
    """Create or change (empty ``settings``: delete) the target's Impairment through the API
    server, deliver it, and say what is in force, as ``netemu impair`` prints it."""
    store = cluster.store
    if service is not None:
        ns, _, name = service.rpartition("/")
        namespace, target, shown = ns or namespace, ImpairmentTarget(service=name), f"service/{service}"
    elif node is not None:
        target, shown = ImpairmentTarget(node=node), f"node/{node}"
    else:
        target, shown = ImpairmentTarget(link=tuple(link)), f"link {link[0]}<->{link[1]}"
    wanted = Impairment(metadata=ObjectMeta(namespace=namespace), spec=ImpairmentSpec(target=target))
    existing = next((o for o in store.list("Impairment") if target_key(o) == target_key(wanted)), None)
    if not settings:
        if existing is not None:
            cluster.apiserver.delete("Impairment", existing.metadata.namespace, existing.metadata.name)
            store.drain()
        return f"{shown}: impairment cleared"
    meta = (existing.metadata if existing is not None
            else ObjectMeta(name=impairment_name(codec.to_dict(target)), namespace=namespace))
    obj = Impairment(metadata=meta, spec=ImpairmentSpec(target=target, **settings))
    stored = cluster.apiserver.admit(obj, create=existing is None)
    store.drain()
    return f"{shown} impaired: {store.must_get('Impairment', stored.metadata.namespace, stored.metadata.name).status.applied}"


def write_partition(cluster: Any, groups: list[list[str]]) -> str:
    """Create or change the cluster's one Partition through the API server, deliver it, and say
    which groups are in force, as ``netemu partition`` prints it."""
    existing = cluster.store.list("Partition")
    meta = existing[0].metadata if existing else ObjectMeta(name="partition")
    obj = Partition(metadata=meta, spec=PartitionSpec(groups=tuple(PartitionGroup(nodes=tuple(g)) for g in groups)))
    stored = cluster.apiserver.admit(obj, create=not existing)
    cluster.store.drain()
    return "partitioned: " + cluster.store.must_get("Partition", "", stored.metadata.name).status.groups


def delete_partitions(cluster: Any) -> str:
    for obj in cluster.store.list("Partition"):
        cluster.apiserver.delete("Partition", "", obj.metadata.name)
    cluster.store.drain()
    return "healed: every node hears every other"
