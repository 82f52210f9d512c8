"""Aggregated discovery (``apidiscovery.k8s.io`` v2, and v2beta1 for older clients): ``/api`` and
``/apis`` answer every group version with its resources, verbs, short names, categories and
subresources in one document, when the client asks for it with
``Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList``.

kubectl (client-go) then needs two requests for discovery instead of one per group version; it
knows the answer is aggregated by its Content-Type, which carries the same parameters. A client
that does not ask (or asks for the legacy form first) gets legacy discovery (``discovery``).
"""
from __future__ import annotations

import functools
import json
from typing import Any

from .discovery import subresources
from .resources import Resource, group_versions, resources_in

GROUP, KIND = "apidiscovery.k8s.io", "APIGroupDiscoveryList"
VERSIONS = ("v2", "v2beta1")  # served, newest first


def _params(clause: str) -> tuple[str, dict[str, str]]:
    media, *params = (p.strip() for p in clause.split(";"))
    out = {}
    for param in params:
        key, _, value = param.partition("=")
        out[key.strip().lower()] = value.strip().strip('"')
    return media.lower(), out


def negotiate(accept: str) -> str | None:
    """The aggregated discovery version ``accept`` asks for before any legacy form (JSON
    without parameters, ``*/*``), or None: legacy discovery. Protobuf is not served."""
    for clause in accept.split(","):
        media, params = _params(clause)
        if media not in ("application/json", "*/*", "application/*"):
            continue
        if params.get("g") == GROUP and params.get("as") == KIND:
            if params.get("v") in VERSIONS and params.get("profile", "") in ("", "nopeer"):
                return params["v"]
            continue
        if "as" not in params and "g" not in params:
            return None  # the legacy form comes first
    return None


def content_type(version: str) -> str:
    return f"application/json;g={GROUP};v={version};as={KIND}"


def _resource(r: Resource) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resource": r.plural, "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": "Namespaced" if r.namespaced else "Cluster", "singularResource": r.singular, "verbs": list(r.verbs)}
    if r.short_names:
        out["shortNames"] = list(r.short_names)
    if r.categories:
        out["categories"] = list(r.categories)
    subs = [{"subresource": sub.name, "responseKind": sub.response_kind(r), "verbs": list(sub.verbs)}
            for sub in subresources(r)]
    if subs:
        out["subresources"] = subs
    return out


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "creationTimestamp": None} if name else {"creationTimestamp": None}
    return {"metadata": metadata, "versions": [
        {"version": v, "resources": [_resource(r) for r in resources_in(name, v)], "freshness": "Current"}
        for v in versions]}


@functools.cache
def document(root: str, version: str) -> bytes:
    """The ``APIGroupDiscoveryList`` at ``/api`` (``root`` "api": the core group) or ``/apis``
    (every named group), in ``version`` (one of ``VERSIONS``)."""
    groups = [_group(name, versions) for name, versions in group_versions().items() if (name == "") == (root == "api")]
    doc = {"kind": KIND, "apiVersion": f"{GROUP}/{version}", "metadata": {}, "items": groups}
    return json.dumps(doc).encode()
