"""What the object types of ``netemu.api.objects`` say about their JSON shape, for the OpenAPI
documents and strategic merge patch: each field's JSON name and type, and Kubernetes' patch
strategy for the lists that have one (``containers`` merge by ``name`` …)."""
from __future__ import annotations

import collections.abc
import dataclasses
import functools
import types
import typing
from typing import Any, Mapping

from netemu.api import objects
from netemu.api.objects import json_name

# (type name, JSON field) → merge key, from Kubernetes' ``patchMergeKey`` struct tags (one table
# for the server's strategic merge patch and the OpenAPI extensions that tell clients).
PATCH_MERGE_KEYS: dict[tuple[str, str], str] = {
    ("PodSpec", "containers"): "name", ("PodSpec", "initContainers"): "name",
    ("PodSpec", "ephemeralContainers"): "name", ("PodSpec", "volumes"): "name",
    ("PodSpec", "imagePullSecrets"): "name", ("PodSpec", "hostAliases"): "ip",
    ("Container", "ports"): "containerPort", ("Container", "env"): "name",
    ("Container", "volumeMounts"): "mountPath", ("Container", "volumeDevices"): "devicePath",
    ("ServiceSpec", "ports"): "port", ("ServiceAccount", "secrets"): "name", ("ObjectMeta", "ownerReferences"): "uid",
    ("PodStatus", "conditions"): "type", ("NodeStatus", "conditions"): "type", ("NodeStatus", "addresses"): "type",
    ("DeploymentStatus", "conditions"): "type", ("ReplicaSetStatus", "conditions"): "type", ("DaemonSetStatus", "conditions"): "type", ("PodStatus", "podIPs"): "ip", ("NamespaceStatus", "conditions"): "type",
}
# Lists of scalars merged as sets (``patchStrategy:"merge"`` without a key).
MERGED_SETS: frozenset[tuple[str, str]] = frozenset({("ObjectMeta", "finalizers")})

# Fields Kubernetes always writes (no ``omitempty``) that netemu's manifest form leaves out when
# empty or false; clients that check required fields (the Python client) need them.
ALWAYS_WRITTEN: dict[tuple[str, str], Any] = {
    ("ContainerStatus", "ready"): False, ("ContainerStatus", "image"): "", ("ContainerStatus", "imageID"): "",
    ("ContainerStatus", "restartCount"): 0, ("ContainerStateTerminated", "exitCode"): 0,
    ("Endpoint", "addresses"): [], ("StatefulSetStatus", "replicas"): 0, ("ReplicaSetStatus", "replicas"): 0,
    ("DaemonSetStatus", "currentNumberScheduled"): 0, ("DaemonSetStatus", "numberMisscheduled"): 0,
    ("DaemonSetStatus", "desiredNumberScheduled"): 0, ("DaemonSetStatus", "numberReady"): 0,
}


@dataclasses.dataclass(frozen=True)
class FieldType:
    """One field's type, unwrapped: ``shape`` is object, array, map, string, integer, boolean,
    int-or-string or any; ``cls`` the dataclass of an object (or of an array's items)."""
    shape: str
    cls: type | None = None
    item: "FieldType | None" = None  # the items of an array or the values of a map


def field_type(hint: Any) -> FieldType:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if set(args) == {int, str}:
            return FieldType("int-or-string")
        return field_type(args[0])
    if hint is str:
        return FieldType("string")
    if hint is int:
        return FieldType("integer")
    if hint is bool:
        return FieldType("boolean")
    if hint is float:
        return FieldType("number")
    if origin is tuple:
        (item,) = [a for a in typing.get_args(hint) if a is not Ellipsis]
        inner = field_type(item)
        return FieldType("array", inner.cls, inner)
    if origin in (Mapping, dict, collections.abc.Mapping) or hint is dict:
        args = typing.get_args(hint)
        return FieldType("map", None, field_type(args[1]) if args else FieldType("any"))
    if dataclasses.is_dataclass(hint):
        return FieldType("object", hint)  # type: ignore[arg-type]
    return FieldType("any")


@functools.cache
def fields_of(cls: type) -> dict[str, FieldType]:
    """JSON name → type of every manifest field of ``cls`` (``extra`` left out)."""
    hints = typing.get_type_hints(cls, vars(objects))
    return {f.metadata.get("json", json_name(f.name)): field_type(hints[f.name])
            for f in dataclasses.fields(cls) if f.name != "extra"}


def ignored_fields(cls: type) -> frozenset[str]:
    """Fields ``cls`` accepts and keeps but netemu does not act on."""
    return cls.IGNORED  # type: ignore[attr-defined, no-any-return]


@functools.cache
def attributes_of(cls: type) -> dict[str, str]:
    """JSON name → attribute name of every manifest field of ``cls``."""
    return {f.metadata.get("json", json_name(f.name)): f.name for f in dataclasses.fields(cls) if f.name != "extra"}
