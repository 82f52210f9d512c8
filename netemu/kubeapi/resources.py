"""The REST resources netemu serves: which kind answers at which group, version and plural.

One ``Resource`` per kind in ``netemu.api.objects``; discovery, the OpenAPI documents and the
request router all read this table, so a kind added there is served everywhere at once.
"""
from __future__ import annotations

from dataclasses import dataclass

from netemu.api.kinds import plural
from netemu.api.objects import INGRESS_KINDS, STORED_ONLY, TOP_LEVEL_TYPES
from netemu.errors import NotFoundError

from .eventsv1 import GROUP as EVENTS_GROUP, VERSION as EVENTS_VERSION, EventV1

READ_VERBS = ("get", "list", "watch")
WRITE_VERBS = ("create", "delete", "patch", "update")

# kubectl's short names and categories for the built-in kinds.
_SHORT_NAMES = {"Pod": ("po",), "Service": ("svc",), "Deployment": ("deploy",), "StatefulSet": ("sts",),
                "ReplicaSet": ("rs",), "DaemonSet": ("ds",),
                "Namespace": ("ns",), "Node": ("no",), "EndpointSlice": (), "ConfigMap": ("cm",), "ServiceAccount": ("sa",),
                "Event": ("ev",), "CronJob": ("cj",), "NetworkPolicy": ("netpol",), **{kind: shorts for _, kind, _, shorts in (*STORED_ONLY, *INGRESS_KINDS)}}
_CATEGORIES = {"Pod": ("all",), "Service": ("all",), "Deployment": ("all",), "StatefulSet": ("all",),
               "ReplicaSet": ("all",), "DaemonSet": ("all",),
               "Job": ("all",), "CronJob": ("all",),
               "Impairment": ("netemu",), "Partition": ("netemu",), "Capture": ("netemu",)}
# Kinds the cluster makes itself: created and deleted only by its own components; users may
# update them (label, taint, cordon a node).
_UPDATE_ONLY = frozenset({"Node"})
# Kinds kube-apiserver serves no DELETE of a collection for.
_NO_COLLECTION_DELETE = frozenset({"Namespace"})


@dataclass(frozen=True)
class Resource:
    cls: type
    group: str
    version: str
    plural: str

    @property
    def kind(self) -> str:
        return self.cls.KIND  # type: ignore[attr-defined, no-any-return]

    @property
    def namespaced(self) -> bool:
        return self.cls.NAMESPACED  # type: ignore[attr-defined, no-any-return]

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def short_names(self) -> tuple[str, ...]:
        return _SHORT_NAMES.get(self.kind, ())

    @property
    def categories(self) -> tuple[str, ...]:
        return _CATEGORIES.get(self.kind, ())

    @property
    def verbs(self) -> tuple[str, ...]:
        if self.kind in _UPDATE_ONLY:
            return tuple(sorted((*READ_VERBS, "patch", "update")))
        collection = () if self.kind in _NO_COLLECTION_DELETE else ("deletecollection",)
        return tuple(sorted((*READ_VERBS, *WRITE_VERBS, *collection)))

    @property
    def qualified(self) -> str:
        """``pods``, ``deployments.apps``: the resource as messages name it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _plural(kind: str) -> str:
    return plural(kind)


RESOURCES: tuple[Resource, ...] = tuple(
    Resource(cls, *(cls.API_VERSION.split("/") if "/" in cls.API_VERSION else ("", cls.API_VERSION)),
             _plural(cls.KIND))
    for cls in TOP_LEVEL_TYPES) + (
    Resource(EventV1, EVENTS_GROUP, EVENTS_VERSION, "events"),  # a view of core/v1 events (``views``)
)
_BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
BY_KIND = {r.kind: r for r in RESOURCES if r.cls in TOP_LEVEL_TYPES}  # the stored version of each kind


def group_versions() -> dict[str, list[str]]:
    """Every served group (core is "") → its versions."""
    out: dict[str, list[str]] = {}
    for r in RESOURCES:
        versions = out.setdefault(r.group, [])
        if r.version not in versions:
            versions.append(r.version)
    return out


def resources_in(group: str, version: str) -> list[Resource]:
    return [r for r in RESOURCES if (r.group, r.version) == (group, version)]


def lookup(group: str, version: str, plural: str) -> Resource:
    resource = _BY_PATH.get((group, version, plural))
    if resource is None:
        raise NotFoundError("the server could not find the requested resource")
    return resource
