"""OpenAPI v3 documents of the served group versions, generated from netemu's own types.

``/openapi/v3`` lists one document per group version; each holds the paths of its resources
(with the query parameters kube-apiserver has, ``fieldValidation`` among them: kubectl then
leaves validation to the server) and a schema per type. Only fields netemu decodes are
described; those it accepts and keeps without acting on (``IGNORED``) are listed with a
description saying so. The patch operations advertise JSON and merge patch, not strategic merge
patch, although the server accepts it: kubectl then computes its strategic patches from its own
built-in knowledge of these kinds, which is exactly Kubernetes'. Every type and field carries
its one-line description in the Kubernetes API reference's words (``descriptions``), which is what
``kubectl explain`` prints. ``openapiv2`` derives the OpenAPI v2 document from these.
"""
from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

from netemu.api.objects import stored_only

from .discovery import KUBE_VERSION, all_group_versions
from .resources import RESOURCES, Resource, resources_in
from .descriptions import DESCRIPTIONS
from .statusresource import has_status
from .typeinfo import MERGED_SETS, PATCH_MERGE_KEYS, FieldType, fields_of, ignored_fields

_META_TYPES = frozenset({"ObjectMeta", "LabelSelector", "LabelSelectorRequirement", "OwnerReference"})
IGNORED_NOTE = "Accepted and kept, but netemu does not act on this field."


def _schema_name(cls: type) -> str:
    explicit: str | None = getattr(cls, "SCHEMA_NAME", None)  # a type outside netemu.api.objects
    if explicit:
        return explicit
    name = cls.__name__
    if name in _META_TYPES:
        return f"io.k8s.apimachinery.pkg.apis.meta.v1.{name}"
    if name.startswith(("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "RollingUpdate")):
        return f"io.k8s.api.apps.v1.{name}"
    if name.startswith("Endpoint"):
        return f"io.k8s.api.discovery.v1.{name}"
    if cls.__module__ == "netemu.api.batch":  # Job, CronJob and the types inside them
        return f"io.k8s.api.batch.v1.{name}"
    if name.startswith(("Impairment", "Partition", "Capture")):  # netemu.dev/v1 and the types inside them
        return f"dev.netemu.v1.{name}"
    group, _, version = getattr(cls, "API_VERSION", "").rpartition("/")
    if group:  # a kind netemu stores as given: batch/v1 Job → io.k8s.api.batch.v1.Job
        return f"io.k8s.api.{group.split('.')[0]}.{version}.{name}"
    return f"io.k8s.api.core.v1.{name}"


schema_name = _schema_name


def describe_type(name: str) -> dict[str, str]:
    """``{"description": …}`` of the type named ``name`` (its schema name), or {} when none is known."""
    text = DESCRIPTIONS.get(name, ("", {}))[0]
    return {"description": text} if text else {}


def describe_field(name: str, field: str) -> dict[str, str]:
    text = DESCRIPTIONS.get(name, ("", {}))[1].get(field, "")
    return {"description": text} if text else {}


def served_types() -> list[type]:
    """Every type a served resource is made of (the resources' own first), each once."""
    found: list[type] = []

    def walk(cls: type) -> None:
        if cls in found:
            return
        found.append(cls)
        for ftype in fields_of(cls).values():
            while ftype is not None:
                if ftype.cls is not None:
                    walk(ftype.cls)
                ftype = ftype.item  # type: ignore[assignment]

    for r in RESOURCES:
        walk(r.cls)
    return found


def _ref(cls: type) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{_schema_name(cls)}"}


def _type_schema(ftype: FieldType, schemas: dict[str, Any]) -> dict[str, Any]:
    if ftype.shape == "object" and ftype.cls is not None:
        _add_schema(ftype.cls, schemas)
        return {"allOf": [_ref(ftype.cls)]}
    if ftype.shape == "array" and ftype.item is not None:
        return {"type": "array", "items": _type_schema(ftype.item, schemas)}
    if ftype.shape == "map":
        values = _type_schema(ftype.item, schemas) if ftype.item is not None else {}
        return {"type": "object", "additionalProperties": values}
    if ftype.shape == "int-or-string":
        return {"x-kubernetes-int-or-string": True}
    if ftype.shape == "integer":
        return {"type": "integer", "format": "int32"}
    if ftype.shape in ("string", "boolean", "number"):
        return {"type": ftype.shape}
    return {"x-kubernetes-preserve-unknown-fields": True}


def _add_schema(cls: type, schemas: dict[str, Any]) -> None:
    name = _schema_name(cls)
    if name in schemas:
        return
    schemas[name] = {}  # placeholder: types may refer to themselves
    properties: dict[str, Any] = {}
    for field, ftype in fields_of(cls).items():
        prop = _type_schema(ftype, schemas)
        merge_key = PATCH_MERGE_KEYS.get((cls.__name__, field))
        if merge_key:
            prop |= {"x-kubernetes-patch-merge-key": merge_key, "x-kubernetes-patch-strategy": "merge",
                     "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [merge_key]}
        elif (cls.__name__, field) in MERGED_SETS:
            prop |= {"x-kubernetes-patch-strategy": "merge", "x-kubernetes-list-type": "set"}
        properties[field] = prop | describe_field(name, field)
    for field in sorted(ignored_fields(cls)):
        kubernetes_says = describe_field(name, field).get("description")
        note = f"{IGNORED_NOTE} Kubernetes: {kubernetes_says}" if kubernetes_says else IGNORED_NOTE
        properties[field] = {"description": note, "x-kubernetes-preserve-unknown-fields": True}
    schema: dict[str, Any] = {"type": "object", "properties": properties} | describe_type(name)
    if stored_only(cls):  # everything but metadata is kept as given
        schema["x-kubernetes-preserve-unknown-fields"] = True
        schema["description"] = f"Stored as given; netemu does not emulate {cls.__name__} objects."
    api_version, kind = getattr(cls, "API_VERSION", None), getattr(cls, "KIND", None)
    if api_version and kind:
        group, _, version = api_version.rpartition("/")
        schema["x-kubernetes-group-version-kind"] = [{"group": group, "kind": kind, "version": version}]
    schemas[name] = schema


def _param(name: str, where: str = "query", type_: str = "string", required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": {"type": type_}}


_WRITE_PARAMS = [_param("dryRun"), _param("fieldManager"), _param("fieldValidation")]
_LIST_PARAMS = [_param("labelSelector"), _param("fieldSelector"), _param("resourceVersion"), _param("watch", type_="boolean"),
                _param("allowWatchBookmarks", type_="boolean"), _param("timeoutSeconds", type_="integer"),
                _param("limit", type_="integer"), _param("continue")]


def _operation(r: Resource, action: str, op_id: str, params: list[dict[str, Any]], body: list[str] | None,
               list_response: bool = False) -> dict[str, Any]:
    group, version = r.group, r.version
    ref = _ref(r.cls)
    response_schema: dict[str, Any] = (
        {"type": "object", "properties": {"items": {"type": "array", "items": ref}}} if list_response else ref)
    op: dict[str, Any] = {
        "operationId": op_id, "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": response_schema}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": group, "kind": r.kind, "version": version},
    }
    if body:
        op["requestBody"] = {"content": {media: {"schema": ref} for media in body}, "required": True}
    return op


def _paths(r: Resource) -> dict[str, Any]:
    prefix = f"/apis/{r.group}/{r.version}" if r.group else f"/api/{r.version}"
    scope = f"{prefix}/namespaces/{{namespace}}" if r.namespaced else prefix
    kind = r.kind
    path_params = [_param("namespace", "path", required=True)] if r.namespaced else []
    name_param = [_param("name", "path", required=True)]
    writes = "create" in r.verbs
    collection: dict[str, Any] = {"get": _operation(r, "list", f"list{kind}", path_params + _LIST_PARAMS, None, True)}
    item: dict[str, Any] = {"get": _operation(r, "get", f"read{kind}", path_params + name_param, None)}
    if writes:
        collection["post"] = _operation(r, "post", f"create{kind}", path_params + _WRITE_PARAMS, ["application/json"])
        item["put"] = _operation(r, "put", f"replace{kind}", path_params + name_param + _WRITE_PARAMS,
                                 ["application/json"])
        item["patch"] = _operation(r, "patch", f"patch{kind}", path_params + name_param + _WRITE_PARAMS,
                                   ["application/json-patch+json", "application/merge-patch+json"])
        item["delete"] = _operation(r, "delete", f"delete{kind}", path_params + name_param + [_param("dryRun")], None)
    paths = {f"{scope}/{r.plural}": collection, f"{scope}/{r.plural}/{{name}}": item}
    if has_status(r):
        paths[f"{scope}/{r.plural}/{{name}}/status"] = {
            "get": _operation(r, "get", f"read{kind}Status", path_params + name_param, None),
            "put": _operation(r, "put", f"replace{kind}Status", path_params + name_param + _WRITE_PARAMS,
                              ["application/json"]),
            "patch": _operation(r, "patch", f"patch{kind}Status", path_params + name_param + _WRITE_PARAMS,
                                ["application/json-patch+json", "application/merge-patch+json"])}
    if r.namespaced:
        paths[f"{prefix}/{r.plural}"] = {"get": _operation(r, "list", f"list{kind}ForAllNamespaces",
                                                           _LIST_PARAMS, None, True)}
    return paths


def _doc_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


@functools.cache
def document(group: str, version: str) -> bytes | None:
    """The OpenAPI v3 document of one group version (JSON), or None when it is not served."""
    served = resources_in(group, version)
    if not served:
        return None
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for r in served:
        _add_schema(r.cls, schemas)
        paths |= _paths(r)
    doc = {"openapi": "3.0.0", "info": {"title": "Kubernetes (netemu)", "version": KUBE_VERSION},
           "paths": paths, "components": {"schemas": schemas}}
    return json.dumps(doc, sort_keys=True).encode()


@functools.cache
def index() -> bytes:
    """``/openapi/v3``: where each group version's document is, with its content hash."""
    paths = {}
    for group, version in all_group_versions():
        digest = hashlib.sha512(document(group, version) or b"").hexdigest()[:32].upper()
        paths[_doc_path(group, version)] = {"serverRelativeURL": f"/openapi/v3/{_doc_path(group, version)}?hash={digest}"}
    return json.dumps({"paths": paths}).encode()


def lookup(path: str) -> bytes | None:
    """The document at ``/openapi/v3/<path>`` (``api/v1``, ``apis/apps/v1``)."""
    parts = path.strip("/").split("/")
    if parts[:1] == ["api"] and len(parts) == 2:
        return document("", parts[1])
    if parts[:1] == ["apis"] and len(parts) == 3:
        return document(parts[1], parts[2])
    return None
