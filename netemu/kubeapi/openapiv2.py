"""OpenAPI v2 (``/openapi/v2``): one Swagger 2.0 document of every served group version, derived
from the OpenAPI v3 documents (``openapi``), so both say the same about the same types:
``definitions`` (with ``x-kubernetes-group-version-kind`` and the descriptions) and ``paths``
(operation ids as kube-apiserver names them: ``listAppsV1NamespacedDeployment``).

Served as JSON (the default) and, for a client that asks for it on ``Accept``, as protobuf
(``application/com.github.proto-openapi.spec.v2@v1.0+protobuf``, gnostic's ``openapi.v2.Document``,
encoded by ``openapiv2_proto``): client-go's ``OpenAPISchema`` asks for that, and kubectl's
client-side validation reads it (``kubectl apply -f`` of a ``kind: List``). Negotiated as
kube-openapi does: the Accept clauses by quality then specificity, the first one served wins; both
bodies carry the JSON body's ETag; a client that takes neither gets 406 Not Acceptable.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
from typing import Any

from aiohttp import web

from . import openapi
from .discovery import KUBE_VERSION, all_group_versions

JSON = "application/json"
PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
# the same with a dot for the ``@``: the Content-Type kube-openapi answers both with
PROTOBUF_DOTTED = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
_V3_REFS, _V2_REFS = "#/components/schemas/", "#/definitions/"
_VERB = re.compile(r"^(list|read|create|replace|patch|delete)(.*)$")


def _schema(value: Any) -> Any:
    """A v3 schema in v2's words: refs into ``definitions``; ``allOf: [ref]`` beside a description
    (v3's way to describe a referenced field) becomes the ref itself, as kube-apiserver's v2 has it."""
    if isinstance(value, list):
        return [_schema(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {key: _schema(v) for key, v in value.items()}
    if isinstance(out.get("$ref"), str):
        out["$ref"] = out["$ref"].replace(_V3_REFS, _V2_REFS)
    all_of = out.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and "$ref" in all_of[0]:
        del out["allOf"]
        out["$ref"] = all_of[0]["$ref"]
    return out


def _group_version_name(group: str, version: str) -> str:
    """``CoreV1``, ``AppsV1``, ``EventsV1``, ``DiscoveryV1`` (the first word of the group)."""
    word = group.split(".")[0] if group else "core"
    return word[:1].upper() + word[1:] + version[:1].upper() + version[1:]


def _operation_id(v3_id: str, group: str, version: str, path: str) -> str:
    match = _VERB.match(v3_id)
    if not match:
        return v3_id
    verb, rest = match.groups()
    namespaced = "Namespaced" if "{namespace}" in path else ""
    return f"{verb}{_group_version_name(group, version)}{namespaced}{rest}"


def _parameter(param: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in param.items() if k != "schema"}
    out |= param.get("schema", {})
    out.setdefault("uniqueItems", True)
    return out


def _operation(op: dict[str, Any], group: str, version: str, path: str) -> dict[str, Any]:
    out: dict[str, Any] = {key: value for key, value in op.items()
                           if key not in ("parameters", "requestBody", "responses", "operationId")}
    out["operationId"] = _operation_id(op["operationId"], group, version, path)
    out["tags"] = [_group_version_name(group, version)[:1].lower() + _group_version_name(group, version)[1:]]
    out["schemes"] = ["https"]
    parameters = [_parameter(p) for p in op.get("parameters", ())]
    body = op.get("requestBody")
    if body:
        content = body.get("content", {})
        out["consumes"] = list(content)
        schema = next(iter(content.values()), {}).get("schema", {})
        parameters.append({"name": "body", "in": "body", "required": True, "schema": _schema(schema)})
    out["parameters"] = parameters
    out["produces"] = [JSON]
    responses = {}
    for code, response in op.get("responses", {}).items():
        schema = response.get("content", {}).get(JSON, {}).get("schema")
        responses[code] = {"description": response.get("description", "OK")} | (
            {"schema": _schema(schema)} if schema else {})
    responses["401"] = {"description": "Unauthorized"}
    out["responses"] = responses
    return out


@functools.cache
def document() -> bytes:
    """The Swagger 2.0 document (JSON)."""
    definitions: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for group, version in all_group_versions():
        raw = openapi.document(group, version)
        if raw is None:
            continue
        v3 = json.loads(raw)
        for name, schema in v3.get("components", {}).get("schemas", {}).items():
            definitions.setdefault(name, _schema(schema))
        for path, item in v3.get("paths", {}).items():
            paths[path] = {method: _operation(op, group, version, path) for method, op in item.items()}
    doc = {"swagger": "2.0", "info": {"title": "Kubernetes", "version": KUBE_VERSION},
           "paths": dict(sorted(paths.items())), "definitions": dict(sorted(definitions.items())),
           "securityDefinitions": {"BearerToken": {"description": "Bearer Token authentication", "type": "apiKey",
                                                   "name": "authorization", "in": "header"}},
           "security": [{"BearerToken": []}]}
    return json.dumps(doc, sort_keys=True).encode()


@functools.cache
def protobuf_document() -> bytes:
    """The same document as gnostic's ``openapi.v2.Document`` message (the protobuf classes are
    built on the first request for it, not at start-up)."""
    from . import openapiv2_proto
    return openapiv2_proto.encode(json.loads(document()))


# media type asked for -> (Content-Type answered, body), in the order kube-openapi tries them for
# an equally good clause. The ``@`` spelling is answered with the dotted one: Go's mime package
# (client-go reads the Content-Type with it) refuses the ``@``.
_SERVED = {JSON: (JSON, document),
           PROTOBUF: (PROTOBUF_DOTTED, protobuf_document),
           PROTOBUF_DOTTED: (PROTOBUF_DOTTED, protobuf_document)}


def _clauses(accept: str) -> list[str]:
    """The media ranges of ``accept`` (empty: ``*/*``), best first: by quality, then the specific
    before the wildcard; those of quality 0 left out."""
    ranked = []
    for index, clause in enumerate((accept.strip() or "*/*").split(",")):
        media, *params = [part.strip() for part in clause.split(";")]
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media and quality > 0:
            ranked.append((-quality, media.count("*"), index, media.lower()))
    return [media for *_, media in sorted(ranked)]


def negotiate(accept: str) -> str | None:
    """The media type to answer ``accept`` with, or None when it takes none served."""
    for media in _clauses(accept):
        kind, _, subtype = media.partition("/")
        for served in _SERVED:
            served_kind, _, served_subtype = served.partition("/")
            if kind in (served_kind, "*") and subtype in (served_subtype, "*"):
                return served
    return None


def response(accept: str) -> web.Response:
    """The answer to ``GET /openapi/v2``: the document as ``accept`` wants it, or 406."""
    media = negotiate(accept)
    if media is None:
        return web.Response(status=406, text="")
    etag = '"' + hashlib.sha512(document()).hexdigest()[:32].upper() + '"'
    content_type, body = _SERVED[media]
    return web.Response(body=body(), headers={"Content-Type": content_type, "ETag": etag, "Vary": "Accept"})
