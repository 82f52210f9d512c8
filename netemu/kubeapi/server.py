"""The Kubernetes API over HTTPS, in the cluster's process and event loop (aiohttp).

Listens on ``127.0.0.1:<free port>`` in the host's network (on the netns backend too: the socket
is made in the host's namespace through the fabric, like the node addresses' listeners). TLS
with the cluster's own CA; a client proves itself with the admin client certificate (checked by
the TLS handshake), the bearer token, or a service account's token (``tokens``: authenticated as
``system:serviceaccount:NS:NAME``; nothing is authorized per user); anything else gets a 401
Status. ``POST .../serviceaccounts/NAME/token`` is ``tokenrequest``'s. Requests are routed by
path as kube-apiserver routes them, to discovery, OpenAPI or ``rest.Rest``.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
import ssl
from typing import Any, Awaitable, Callable

from aiohttp import web

from netemu import statedir
from netemu.errors import NetemuError

from . import (KUBECONFIG, aggregated, certs, deletion, discovery, fieldvalidation, kubeconfig, openapi, openapiv2,
               operations, serverapply, tokenrequest, tokens)
from .history import ChangeLog
from .patch import PATCH_TYPES
from .podattach import PodAttach
from .podexec import PodExec
from .podlogs import PodLogs
from .podportforward import PodPortForward
from .resources import Resource, lookup
from .rest import Query, Rest
from .statusresource import StatusSubresource
from .views import ViewedRest
from .status import ApiError, bad_request, from_error, method_not_allowed, unauthorized

log = logging.getLogger(__name__)

_JSON = "application/json"
_NOT_FOUND = "the server could not find the requested resource"
# Who a service account token's holder is (tokens.ServiceAccountUser); unset for the admin.
USER = web.RequestKey("user", tokens.ServiceAccountUser)
WATCH_STOP_TIMEOUT = 2.0  # seconds the watches get to end their streams when the cluster stops


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(data).encode(), status=status, content_type=_JSON)


def _warned(data: Any, query: Query, status: int = 200) -> web.Response:
    """A write's answer, with a ``Warning`` header for each of its warnings (fieldValidation=Warn)."""
    response = _json(data, status)
    for warning in query.warnings:
        response.headers.add("Warning", fieldvalidation.warning_header(warning))
    return response


def _status_response(error: ApiError) -> web.Response:
    return _json(error.status(), error.code)


class KubeApiServer:
    """One cluster's API endpoint: credentials, kubeconfig, listener and request routing."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.stopping = asyncio.Event()
        self.changes = ChangeLog(cluster.store)
        self.rest = ViewedRest(Rest(cluster.store, cluster.apiserver, self.changes, self.stopping))
        self.status_subresource = StatusSubresource(self.rest.rest)
        self.credentials: certs.Credentials | None = None
        self.tokens: tokens.TokenIssuer | None = None  # service account tokens (netemu.kubeapi.tokens)
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._watches: set[asyncio.Future[None]] = set()  # one per watch streaming now, done when it ends
        self.pod_logs = PodLogs(cluster, self.stopping)
        self.pod_exec = PodExec(cluster)
        self._pod_streams = {"log": self.pod_logs.serve, "exec": self.pod_exec.serve,  # pods/… subresources
                             "portforward": PodPortForward(cluster).serve,
                             "attach": PodAttach(cluster, self.stopping).serve}
        self.operations = operations.Operations(cluster)  # netemu's own verbs (apply, describe, exec, down …)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> dict[str, Any]:
        assert self.credentials is not None
        c = self.credentials
        return kubeconfig.build(self.cluster.name, self.url, c.ca_cert, c.client_cert, c.client_key)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        directory = self.cluster.state.directory
        self.credentials = await asyncio.to_thread(
            certs.make_credentials, self.cluster.name, service_ip=self.cluster.apiserver.kubernetes_ip,
            cluster_domain=self.cluster.config.cluster_domain)
        self.credentials.save(directory)
        self.tokens = tokens.TokenIssuer(await asyncio.to_thread(tokens.load_or_make_key, directory),
                                         self.cluster.store)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=self.credentials.ca_cert.decode())
        context.load_cert_chain(directory / certs.SERVER_CERT, directory / certs.SERVER_KEY)
        context.verify_mode = ssl.CERT_OPTIONAL
        app = web.Application(middlewares=[self._errors, self._authenticate],
                              client_max_size=self.cluster.apiserver.max_request_bytes)
        app.router.add_route("*", "/{path:.*}", self._route)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = self.cluster.fabric.socket("", socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            sock.listen(128)
            self.port = sock.getsockname()[1]
            await web.SockSite(self._runner, sock, ssl_context=context).start()
        except BaseException:
            sock.close()
            raise
        statedir.write_file(directory, KUBECONFIG, kubeconfig.dump(self.kubeconfig).encode())
        log.info("Kubernetes API of cluster %s at %s", self.cluster.name, self.url)

    async def stop(self) -> None:
        self.stopping.set()  # every watch ends its stream; wait for them before the server closes
        if self._watches:
            await asyncio.wait(set(self._watches), timeout=WATCH_STOP_TIMEOUT)
        if self._runner is not None:
            server = self._runner.server
            transports = [h.transport for h in server.connections] if server is not None else []
            await self._runner.cleanup()
            self._runner = None
            # A client that keeps its connection open and never answers TLS's close_notify (an
            # idle keep-alive pool) would keep the socket, and so the event loop, from closing.
            for transport in transports:
                if transport is not None:
                    transport.abort()
        self.changes.close()
        self.operations.stop()

    # ------------------------------------------------------------------ middleware

    @web.middleware
    async def _errors(self, request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]) -> Any:
        try:
            return await handler(request)
        except ApiError as exc:
            return _status_response(exc)
        except NetemuError as exc:
            return _status_response(from_error(exc))
        except web.HTTPRequestEntityTooLarge as exc:
            return _status_response(ApiError(413, "RequestEntityTooLarge", f"Request entity too large: {exc.text}"))
        except web.HTTPException:
            raise
        except Exception as exc:  # a bug: answered as kube-apiserver answers one, and logged
            log.exception("internal error serving %s %s", request.method, request.path)
            return _status_response(ApiError(500, "InternalError", f"Internal error occurred: {exc}"))

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]) -> Any:
        if not self._authenticated(request):
            raise unauthorized()
        return await handler(request)

    def _authenticated(self, request: web.Request) -> bool:
        transport = request.transport
        if transport is not None and transport.get_extra_info("peercert"):
            return True  # a client certificate our CA signed (the handshake verified it)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        assert self.credentials is not None
        if scheme.lower() != "bearer":
            return False
        if hmac.compare_digest(token.strip().encode(), self.credentials.token.encode()):
            return True
        if self.tokens is None:
            return False
        try:  # a service account's token: authenticated as system:serviceaccount:NS:NAME (no RBAC follows)
            request[USER] = self.tokens.authenticate(token.strip())
        except tokens.InvalidTokenError:
            return False
        return True

    # ------------------------------------------------------------------ routing

    async def _route(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if request.method != "GET" and parts[:1] not in (["api"], ["apis"]):
            raise method_not_allowed()
        if parts == ["version"]:
            return _json(discovery.version())
        if parts[:2] == ["openapi", "v3"]:
            body = openapi.index() if len(parts) == 2 else openapi.lookup("/".join(parts[2:]))
            if body is None:
                raise ApiError(404, "NotFound", _NOT_FOUND)
            return web.Response(body=body, content_type=_JSON)
        if parts == ["openapi", "v2"]:
            return openapiv2.response(request.headers.get("Accept", ""))
        if parts in (["api"], ["apis"]) and (wanted := aggregated.negotiate(request.headers.get("Accept", ""))):
            return web.Response(body=aggregated.document(parts[0], wanted),
                                headers={"Content-Type": aggregated.content_type(wanted), "Vary": "Accept"})
        if parts == ["api"]:
            return _json(discovery.core_versions(f"127.0.0.1:{self.port}"))
        if parts == ["apis"]:
            return _json(discovery.groups())
        if parts[:1] == ["api"] and len(parts) >= 2:
            return await self._resource(request, "", parts[1], parts[2:])
        if parts[:1] == ["apis"] and len(parts) == 2:
            group = discovery.group(parts[1])
            if group is None:
                raise ApiError(404, "NotFound", _NOT_FOUND)
            return _json(group)
        if tuple(parts[:4]) == operations.PREFIX:
            if request.get(USER) is not None:  # the cluster's owner only: never a pod's service account
                raise ApiError(403, "Forbidden", f'User "{request[USER].username}" cannot use netemu\'s operations')
            return await self.operations.serve(request, parts[4:])
        if parts[:1] == ["apis"] and len(parts) >= 3:
            return await self._resource(request, parts[1], parts[2], parts[3:])
        if parts in (["healthz"], ["livez"], ["readyz"]):
            return web.Response(text="ok")
        raise ApiError(404, "NotFound", _NOT_FOUND)

    async def _resource(self, request: web.Request, group: str, version: str,
                        rest: list[str]) -> web.StreamResponse:
        if not rest:
            listing = discovery.resource_list(group, version)
            if listing is None or request.method != "GET":
                raise ApiError(404, "NotFound", _NOT_FOUND)
            return _json(listing)
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        try:
            resource = lookup(group, version, rest[0])
        except NetemuError:
            raise ApiError(404, "NotFound", _NOT_FOUND) from None
        if namespace and not resource.namespaced:
            raise ApiError(404, "NotFound", _NOT_FOUND)
        if resource.kind == "Pod" and namespace and len(rest) == 3 and rest[2] in self._pod_streams:
            return await self._pod_streams[rest[2]](request, namespace, rest[1])
        query = Query.parse(request.query, request.headers.get("Accept", ""))
        query.user_agent = request.headers.get("User-Agent", "")
        name = rest[1] if len(rest) >= 2 else ""
        if len(rest) == 3 and rest[2] == "scale":
            return await self._scale(request, resource, namespace, name, query)
        if len(rest) == 3 and rest[2] == "status":
            return await self._status(request, resource, namespace, name, query)
        if len(rest) == 3 and rest[2] == "token" and resource.kind == "ServiceAccount" and namespace:
            if request.method != "POST":
                raise method_not_allowed()
            assert self.tokens is not None
            return _json(tokenrequest.create_token(self.cluster.store, self.tokens, namespace, name,
                                                   await self._body(request)), 201)
        if len(rest) >= 3:
            raise ApiError(404, "NotFound", _NOT_FOUND)  # other subresources
        return await self._verb(request, resource, namespace, name, query)

    async def _verb(self, request: web.Request, r: Resource, namespace: str, name: str,
                    query: Query) -> web.StreamResponse:
        method = request.method
        if r.namespaced and not namespace and method not in ("GET",):
            raise ApiError(404, "NotFound", _NOT_FOUND)
        if method == "GET" and not name:
            if request.query.get("watch") in ("true", "1"):
                return await self._watch(request, r, namespace, query)
            return web.Response(body=self.rest.list_json(r, namespace, query), content_type=_JSON)
        if method == "GET":
            return _json(self.rest.get(r, namespace, name, query))
        if method == "POST" and not name:
            return _warned(self.rest.create(r, namespace, await self._body(request), query), query, 201)
        if method == "PUT" and name:
            return _warned(self.rest.update(r, namespace, name, await self._body(request), query), query)
        if method == "PATCH" and name:
            patch_type = self._patch_type(request)
            body = (serverapply.decode_body(await request.read()) if patch_type == serverapply.APPLY_PATCH
                    else await self._body(request))
            answer = self.rest.patch(r, namespace, name, patch_type, body, query)
            return _warned(answer, query, 201 if query.created else 200)
        if method == "DELETE":
            options = deletion.parse(request.query, await self._optional_body(request), dry_run=query.dry_run)
            if name:
                return _json(self.rest.delete(r, namespace, name, options))
            return _json(self.rest.delete_collection(r, namespace, query, options))
        raise method_not_allowed()

    async def _scale(self, request: web.Request, r: Resource, namespace: str, name: str,
                     query: Query) -> web.StreamResponse:
        if request.method == "GET":
            return _json(self.rest.scale(r, namespace, name))
        if request.method == "PUT":
            return _json(self.rest.rescale(r, namespace, name, None, await self._body(request), query))
        if request.method == "PATCH":
            return _json(self.rest.rescale(r, namespace, name, self._patch_type(request), await self._body(request),
                                           query))
        raise method_not_allowed()

    async def _status(self, request: web.Request, r: Resource, namespace: str, name: str,
                      query: Query) -> web.StreamResponse:
        if r.namespaced and not namespace:
            raise ApiError(404, "NotFound", _NOT_FOUND)
        status = self.status_subresource
        if request.method == "GET":
            return _json(status.get(r, namespace, name, query))
        if request.method == "PUT":
            return _json(status.replace(r, namespace, name, await self._body(request), query))
        if request.method == "PATCH":
            return _json(status.patch(r, namespace, name, self._patch_type(request), await self._body(request), query))
        raise method_not_allowed()

    @staticmethod
    def _patch_type(request: web.Request) -> str:
        if request.content_type not in (*PATCH_TYPES, serverapply.APPLY_PATCH):
            raise ApiError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format - accepted media types include: "
                           f"{', '.join(PATCH_TYPES)}")
        return request.content_type

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            return json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise bad_request(f"the body of the request was in an unknown format: {exc}") from None

    async def _optional_body(self, request: web.Request) -> Any:
        return await self._body(request) if request.can_read_body else None

    async def _watch(self, request: web.Request, r: Resource, namespace: str, query: Query) -> web.StreamResponse:
        events = self.rest.watch(r, namespace, query)
        finished = asyncio.get_running_loop().create_future()
        self._watches.add(finished)
        try:
            return await self._stream(request, events)
        finally:
            self._watches.discard(finished)
            finished.set_result(None)

    async def _stream(self, request: web.Request, events: Any) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": _JSON, "Cache-Control": "no-cache, private"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            async for event in events:
                if request.transport is None or request.transport.is_closing():
                    return response  # the client went away
                if event:
                    await response.write(json.dumps(event).encode() + b"\n")
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away while we wrote
        finally:
            await events.aclose()
        return response
