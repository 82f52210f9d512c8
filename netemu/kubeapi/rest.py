"""The verbs on one resource: GET, LIST, WATCH, CREATE, UPDATE, PATCH and DELETE, in the
Kubernetes API's JSON shapes.

Reads come from the store; every write goes through ``ApiServer.admit`` or ``ApiServer.delete``,
the admission the Python API and ``netemu apply`` use (defaults, validation, allocation, caps).
Request bodies are decoded by ``netemu.api.load_data``, as manifests are, after ``fieldValidation``
(``fieldvalidation``) dropped or refused unknown fields; every write records its manager in
``metadata.managedFields`` (``managedfields``), and server-side apply is ``serverapply``'s.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import string
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from netemu.api import load_data
from netemu.api.defaults import apply_defaults
from netemu.errors import InvalidError, ManifestErrors, NetemuError

from . import fieldvalidation, managedfields, serverapply, tables
from .deletion import DeleteOptions
from .gojson import unmarshal_error
from .history import ChangeLog, TooOld
from .patch import apply_patch
from .resources import Resource
from .selectors import object_filter
from .status import ApiError, bad_request, from_error, method_not_allowed
from .wire import EncodedObjects, encode, list_json

BOOKMARK_INTERVAL = 5.0  # seconds between BOOKMARK events on a watch that asked for them
_GENERATED = string.ascii_lowercase + string.digits
SCALABLE = frozenset({"Deployment", "ReplicaSet", "StatefulSet"})


@dataclass
class Query:
    """What a request asked besides its path."""
    label_selector: str = ""
    field_selector: str = ""
    resource_version: str = ""
    limit: int = 0
    continue_token: str = ""
    dry_run: bool = False
    bookmarks: bool = False
    timeout: float | None = None
    table: bool = False
    field_manager: str = ""  # the fieldManager parameter
    force: bool = False  # server-side apply takes over conflicting fields
    field_validation: str = fieldvalidation.WARN
    user_agent: str = ""
    warnings: list[str] = field(default_factory=list)  # Warning headers for the answer
    applied: bool = False  # the write is a server-side apply's (its managedFields are set)
    created: bool = False  # a PATCH (server-side apply) created the object: 201, as kube-apiserver answers

    @property
    def manager(self) -> str:
        return managedfields.manager_name(self.field_manager, self.user_agent)

    @classmethod
    def parse(cls, params: Any, accept: str) -> "Query":
        def number(name: str) -> int:
            text = params.get(name, "") or "0"
            try:
                return int(text)
            except ValueError:
                raise bad_request(f"invalid value for {name}: {text!r}") from None
        timeout = number("timeoutSeconds")
        return cls(label_selector=params.get("labelSelector", ""), field_selector=params.get("fieldSelector", ""),
                   resource_version=params.get("resourceVersion", ""), limit=number("limit"),
                   continue_token=params.get("continue", ""), dry_run="All" in params.getall("dryRun", []),
                   bookmarks=params.get("allowWatchBookmarks") == "true", timeout=float(timeout) if timeout else None,
                   table=tables.wants_table(accept), field_manager=params.get("fieldManager", ""),
                   force=params.get("force") == "true", field_validation=fieldvalidation.mode(params))


def _continue_token(last: Any) -> str:
    key = json.dumps([last.metadata.namespace if last.NAMESPACED else "", last.metadata.name])
    return base64.urlsafe_b64encode(key.encode()).decode()


def _after_token(token: str) -> tuple[str, str]:
    try:
        ns, name = json.loads(base64.urlsafe_b64decode(token.encode()))
        return str(ns), str(name)
    except (ValueError, TypeError, binascii.Error):
        raise bad_request("continue key is not valid") from None


class Rest:
    """The verbs, over one cluster's store, admission and change log."""

    def __init__(self, store: Any, apiserver: Any, changes: ChangeLog, stopping: asyncio.Event) -> None:
        self.store = store
        self.apiserver = apiserver
        self.changes = changes
        self.stopping = stopping
        self.encoded = EncodedObjects(store)
        self.rows = tables.TableRows(store)

    # ------------------------------------------------------------------ helpers

    def _error(self, exc: NetemuError, r: Resource, name: str) -> ApiError:
        return from_error(exc, kind=r.kind, name=name, plural=r.plural, group=r.group, version=r.version)

    def _live(self, r: Resource, namespace: str, name: str) -> Any:
        obj = self.store.get(r.kind, namespace if r.namespaced else "", name)
        if obj is None:
            raise ApiError(404, "NotFound", f'{r.qualified} "{name}" not found',
                           {"name": name, "kind": r.plural, **({"group": r.group} if r.group else {})})
        return obj

    def render(self, r: Resource, obj: Any, query: Query) -> dict[str, Any]:
        if query.table:
            return tables.table(r.cls, [obj], resource_version=obj.metadata.resource_version)
        return encode(obj)

    def _decode(self, r: Resource, body: Any, namespace: str, name: str = "") -> Any:
        """The object a request body describes, decoded and validated as a manifest."""
        if not isinstance(body, dict):
            raise bad_request(f"the body of the request was in an unknown format: expected a {r.kind} object")
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if kind != r.kind or api_version != r.api_version:
            raise bad_request(f'the API version in the data ({api_version}) does not match the expected API version '
                              f'({r.api_version})' if kind == r.kind else
                              f"{kind} in version \"{api_version}\" cannot be handled as a {r.kind}")
        type_error = unmarshal_error(r.cls, body)
        if type_error:  # kube-apiserver's decoder refuses it before anything else looks: 400
            raise bad_request(f'{r.kind} in version "{r.version}" cannot be handled as a {r.kind}: {type_error}')
        meta = body.get("metadata")
        if not isinstance(meta, dict):
            meta = {}
            body = {**body, "metadata": meta}
        if r.namespaced:
            given = meta.get("namespace")
            if given and namespace and given != namespace:
                raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                                  "request")
            body = {**body, "metadata": {**meta, "namespace": given or namespace or "default"}}
        meta = body["metadata"]
        if name and meta.get("name") and meta["name"] != name:
            raise bad_request("the name of the object "
                              f"({meta['name']}) does not match the name on the URL ({name})")
        if not meta.get("name"):
            if name:
                body = {**body, "metadata": {**meta, "name": name}}
            elif meta.get("generateName"):
                suffix = "".join(secrets.choice(_GENERATED) for _ in range(5))
                body = {**body, "metadata": {**meta, "name": str(meta["generateName"]) + suffix}}
            else:
                raise ApiError(422, "Invalid", f"{r.kind} \"\" is invalid: metadata.name: Required value: name or "
                               "generateName is required",
                               {"kind": r.kind, "causes": [{"reason": "FieldValueRequired", "field": "metadata.name",
                                                            "message": "Required value: name or generateName is "
                                                                       "required"}]})
        try:
            (manifest,) = load_data(body, source="<api>")
        except ManifestErrors as exc:
            raise self._error(exc, r, str(body["metadata"].get("name", ""))) from exc
        except RecursionError:
            raise bad_request("the request body nests too deeply") from None
        return manifest.obj

    # ------------------------------------------------------------------ reads

    def get(self, r: Resource, namespace: str, name: str, query: Query) -> dict[str, Any]:
        return self.render(r, self._live(r, namespace, name), query)

    def _selected(self, r: Resource, namespace: str, query: Query) -> tuple[list[Any], str]:
        """The objects a list asks for (selectors, one page of ``limit``) and the continue token.
        A page reads from where the token points and stops one past ``limit`` (``Store.scan``):
        paging through N objects costs N, not N per page."""
        accept = object_filter(r.kind, query.label_selector, query.field_selector)
        after = _after_token(query.continue_token) if query.continue_token else None
        objs: list[Any] = []
        for obj in self.store.scan(r.kind, namespace if r.namespaced and namespace else None, after):
            if accept(obj):
                objs.append(obj)
                if query.limit and len(objs) > query.limit:
                    break
        token = ""
        if query.limit and len(objs) > query.limit:
            objs = objs[:query.limit]
            token = _continue_token(objs[-1])
        return objs, token

    def list(self, r: Resource, namespace: str, query: Query) -> dict[str, Any]:
        objs, token = self._selected(r, namespace, query)
        rv = str(self.store.resource_version)
        if query.table:
            return tables.table(r.cls, objs, resource_version=rv, continue_token=token)
        metadata: dict[str, Any] = {"resourceVersion": rv}
        if token:
            metadata["continue"] = token
        return {"kind": f"{r.kind}List", "apiVersion": r.api_version, "metadata": metadata,
                "items": [encode(o) for o in objs]}

    def list_json(self, r: Resource, namespace: str, query: Query) -> bytes:
        """``list`` as the JSON a response carries, each item's text made once per object version
        (``wire.EncodedObjects``), or each Table row (``tables.TableRows``): what keeps a LIST of
        1,000 pods in a few milliseconds."""
        objs, token = self._selected(r, namespace, query)
        if query.table:
            return tables.table_json(r.cls, objs, self.rows, resource_version=str(self.store.resource_version),
                                     continue_token=token)
        metadata: dict[str, Any] = {"resourceVersion": str(self.store.resource_version)}
        if token:
            metadata["continue"] = token
        head = {"kind": f"{r.kind}List", "apiVersion": r.api_version, "metadata": metadata}
        return list_json(head, [self.encoded.text(o) for o in objs])

    def watch(self, r: Resource, namespace: str, query: Query) -> AsyncIterator[dict[str, Any]]:
        """The events of a watch, one dict each, until the timeout, the server's stop or the caller's
        (an empty dict now and then: a turn without news, for the caller to check its client).
        A bad request raises here, before any event."""
        accept = object_filter(r.kind, query.label_selector, query.field_selector)
        in_scope: Callable[[Any], bool] = (
            (lambda o: o.metadata.namespace == namespace and accept(o)) if r.namespaced and namespace else accept)
        since: int | None = None
        if query.resource_version not in ("", "0"):
            try:
                since = int(query.resource_version)
            except ValueError:
                raise bad_request(f"invalid resource version: {query.resource_version!r}") from None
        return self._events(r, namespace, query, in_scope, since)

    async def _events(self, r: Resource, namespace: str, query: Query, in_scope: Callable[[Any], bool],
                      since: int | None) -> AsyncIterator[dict[str, Any]]:
        try:
            watcher = self.changes.watch(r.kind, in_scope, since)
        except TooOld as exc:
            yield {"type": "ERROR", "object": ApiError(410, "Expired", str(exc)).status()}
            return
        headers = True

        def event(kind: str, obj: Any) -> dict[str, Any]:
            nonlocal headers
            if query.table:
                body = tables.table(r.cls, [obj], resource_version=obj.metadata.resource_version, headers=headers)
                headers = False
            else:
                body = self.encoded.shared(obj)  # one encoding for every watcher of this change
            return {"type": kind, "object": body}

        try:
            if since is None:
                for obj in self.store.list(r.kind, namespace if r.namespaced and namespace else None):
                    if in_scope(obj):
                        yield event("ADDED", obj)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + query.timeout if query.timeout else None
            next_bookmark = loop.time() + BOOKMARK_INTERVAL
            stop = asyncio.ensure_future(self.stopping.wait())
            try:
                while True:
                    now = loop.time()
                    if deadline is not None and now >= deadline:
                        return
                    if query.bookmarks and now >= next_bookmark:
                        next_bookmark = now + BOOKMARK_INTERVAL
                        yield {"type": "BOOKMARK", "object": {
                            "kind": r.kind, "apiVersion": r.api_version,
                            "metadata": {"resourceVersion": str(max(watcher.since, self.store.resource_version))}}}
                    wait = min(x for x in (deadline, next_bookmark if query.bookmarks else None, now + 1.0)
                               if x is not None) - now
                    get = asyncio.ensure_future(watcher.queue.get())
                    done, _ = await asyncio.wait({get, stop}, timeout=max(wait, 0),
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if get not in done:
                        get.cancel()
                        if stop in done:
                            return
                        yield {}  # a turn without news: the caller checks its client is still there
                        continue
                    change = get.result()
                    yield event(change.type, change.obj)
            finally:
                stop.cancel()
        finally:
            self.changes.stop(watcher)

    # ------------------------------------------------------------------ writes

    def _known_fields(self, r: Resource, body: Any, query: Query) -> Any:
        """``body`` as ``fieldValidation`` wants it: unknown fields dropped (Warn: with a warning
        each), or left for the strict decoder to refuse (Strict)."""
        if query.field_validation == fieldvalidation.STRICT or not isinstance(body, dict):
            return body
        known, unknown = fieldvalidation.without_unknown(r.cls, body)
        if query.field_validation == fieldvalidation.WARN:
            query.warnings += [f'unknown field "{path}"' for path in unknown if f'unknown field "{path}"'
                               not in query.warnings]
        return known

    def _managed(self, r: Resource, obj: Any, query: Query) -> Any:
        """``obj`` with its managedFields after this write (an Update by the request's manager)."""
        if query.applied:
            return obj
        live = self.store.get(r.kind, obj.metadata.namespace if r.namespaced else "", obj.metadata.name)
        managed = managedfields.after_update(r, encode(live) if live is not None else None,
                                             encode(apply_defaults(obj)), query.manager)
        return managedfields.with_managed_fields(obj, managed)

    def create(self, r: Resource, namespace: str, body: Any, query: Query) -> dict[str, Any]:
        self._writable(r)
        obj = self._managed(r, self._decode(r, self._known_fields(r, body, query), namespace), query)
        try:
            stored = self.apiserver.admit(obj, create=True, dry_run=query.dry_run)
        except NetemuError as exc:
            raise self._error(exc, r, obj.metadata.name) from exc
        query.warnings += self.apiserver.warnings_for(stored)
        return encode(stored)

    def update(self, r: Resource, namespace: str, name: str, body: Any, query: Query) -> dict[str, Any]:
        self._writable(r, "update")
        obj = self._managed(r, self._decode(r, self._known_fields(r, body, query), namespace, name), query)
        try:
            stored = self.apiserver.admit(obj, create=False, expect_rv=obj.metadata.resource_version or None,
                                          dry_run=query.dry_run)
        except NetemuError as exc:
            raise self._error(exc, r, name) from exc
        query.warnings += self.apiserver.warnings_for(stored)
        return encode(stored)

    def patch(self, r: Resource, namespace: str, name: str, content_type: str, body: Any,
              query: Query) -> dict[str, Any]:
        self._writable(r, "patch")
        if content_type == serverapply.APPLY_PATCH:
            return self._server_side_apply(r, namespace, name, body, query)
        live = self._live(r, namespace, name)
        try:
            patched = apply_patch(content_type, encode(live), body, r.cls)
        except InvalidError as exc:
            raise bad_request(str(exc)) from exc
        meta = patched.get("metadata") if isinstance(patched.get("metadata"), dict) else {}
        if meta.get("name", name) != name or (r.namespaced and meta.get("namespace", namespace) != namespace):
            raise bad_request("the patch may not change the object's name or namespace")
        return self.update(r, namespace, name, patched, query)

    def _server_side_apply(self, r: Resource, namespace: str, name: str, body: Any, query: Query) -> dict[str, Any]:
        """Server-side apply: creates the object when it is absent, else merges into it
        (``serverapply``); then admitted like any write."""
        managedfields.require_apply_manager(query.field_manager)
        config = self._known_fields(r, body, query)
        meta = config.get("metadata") if isinstance(config.get("metadata"), dict) else {}
        config = {**config, "metadata": {**meta, "name": meta.get("name") or name}}
        live = self.store.get(r.kind, namespace if r.namespaced else "", name)
        merged = serverapply.apply(r, encode(live) if live is not None else None, config, query.field_manager,
                                   query.force)
        query.applied = True
        if live is None:
            query.created = True
            return self.create(r, namespace, merged, query)
        return self.update(r, namespace, name, merged, query)

    def delete(self, r: Resource, namespace: str, name: str, options: DeleteOptions) -> dict[str, Any]:
        """DELETE of one object: the object while its deletion goes on (a pod in its grace period,
        an owner in foreground deletion, a namespace emptying), else a ``Status`` Success naming
        it (a pod: its last state, as kube-apiserver answers)."""
        self._writable(r)
        live = self._live(r, namespace, name)
        options.check_preconditions(r, live)
        if options.dry_run:
            return encode(live)
        self._delete_one(r, live, options)
        after = self.store.get(r.kind, namespace if r.namespaced else "", name)
        if after is not None and after.metadata.uid == live.metadata.uid:
            return encode(after)
        if r.kind == "Pod":
            return encode(live)
        details = {"name": name, "kind": r.plural, "uid": live.metadata.uid, **({"group": r.group} if r.group else {})}
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    def delete_collection(self, r: Resource, namespace: str, query: Query, options: DeleteOptions) -> dict[str, Any]:
        """DELETE of a collection (``deletecollection``): every object the list selectors pick,
        each deleted as a DELETE of it would be; answers the list of them as they were listed.
        The preconditions are checked on every object first: one that fails deletes nothing."""
        self._writable(r)
        if r.kind == "Namespace":
            raise method_not_allowed()
        objs, _ = self._selected(r, namespace, query)
        for obj in objs:
            options.check_preconditions(r, obj)
        rv = str(self.store.resource_version)
        if not options.dry_run:
            for obj in objs:
                current = self.store.get(r.kind, obj.metadata.namespace if r.namespaced else "", obj.metadata.name)
                if current is not None and current.metadata.uid == obj.metadata.uid:  # not taken along already
                    self._delete_one(r, current, options)
        return {"kind": f"{r.kind}List", "apiVersion": r.api_version, "metadata": {"resourceVersion": rv},
                "items": [encode(o) for o in objs]}

    def _delete_one(self, r: Resource, obj: Any, options: DeleteOptions) -> None:
        name = obj.metadata.name
        try:
            self.apiserver.delete(r.kind, obj.metadata.namespace if r.namespaced else "", name,
                                  grace_period_seconds=options.grace, propagation=options.propagation)
        except NetemuError as exc:
            raise self._error(exc, r, name) from exc

    # ------------------------------------------------------------------ the scale subresource

    def scale(self, r: Resource, namespace: str, name: str) -> dict[str, Any]:
        """``autoscaling/v1 Scale`` of a Deployment or StatefulSet."""
        if r.kind not in SCALABLE:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        obj = self._live(r, namespace, name)
        meta = {k: v for k, v in encode(obj)["metadata"].items()
                if k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")}
        selector = ",".join(f"{k}={v}" for k, v in (obj.spec.selector.match_labels if obj.spec.selector else {}).items())
        replicas = obj.spec.replicas if obj.spec.replicas is not None else 1
        return {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": meta, "spec": {"replicas": replicas},
                "status": {"replicas": obj.status.replicas, "selector": selector}}

    def rescale(self, r: Resource, namespace: str, name: str, content_type: str | None, body: Any,
                query: Query) -> dict[str, Any]:
        """PUT (``content_type`` None) or PATCH of the Scale: the new ``spec.replicas``, through
        ``ApiServer.scale`` (its bounds and the pod cap)."""
        current = self.scale(r, namespace, name)
        wanted = apply_patch(content_type, current, body, None) if content_type else body
        replicas = wanted.get("spec", {}).get("replicas") if isinstance(wanted, dict) else None
        if not isinstance(replicas, int) or isinstance(replicas, bool):
            raise bad_request("the Scale must set spec.replicas to an integer")
        if not query.dry_run:
            try:
                self.apiserver.scale(r.kind, namespace, name, replicas,
                                     record=lambda live, scaled: self._scaled(r, live, scaled, query))
            except NetemuError as exc:
                raise self._error(exc, r, name) from exc
        return self.scale(r, namespace, name) | ({"spec": {"replicas": replicas}} if query.dry_run else {})

    @staticmethod
    def _scaled(r: Resource, live: Any, scaled: Any, query: Query) -> Any:
        """``scaled`` with its managedFields: the Scale's writer updates ``spec.replicas`` through
        the ``scale`` subresource."""
        managed = managedfields.after_update(r, encode(live), encode(scaled), query.manager, subresource="scale")
        return managedfields.with_managed_fields(scaled, managed)

    @staticmethod
    def _writable(r: Resource, verb: str = "create") -> None:
        if verb not in r.verbs:
            raise method_not_allowed(f"{r.qualified} are made by the cluster (its configuration), not through the API")
