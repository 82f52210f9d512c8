"""The ingress proxy alone (netemu.ingress.proxy) in front of a real aiohttp backend, driven by
real curl: forwarded headers, the client's Host, streamed chunked bodies both ways, 404 / 503 /
502, and the route table's precedence (netemu.ingress.routes)."""
from __future__ import annotations

import asyncio
import json
import shutil
import socket

import pytest
from aiohttp import web

from netemu.api.objects import ObjectMeta, Service, ServicePort, ServiceSpec
from netemu.ingress.proxy import IngressProxy
from netemu.ingress.routes import Backend, PathRule, RouteTable, build, strip_port

CURL = shutil.which("curl") or "/usr/bin/curl"


async def _backend() -> tuple[web.AppRunner, int]:
    async def headers(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(json.dumps({"headers": dict(request.headers), "body": body.decode(),
                                         "path": request.path_qs}).encode())
        await response.write(b"\n")
        return response
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", headers)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def _curl(port: int, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        CURL, "-s", "-m", "5", "-w", "\n%{http_code}", *args[:-1], f"http://127.0.0.1:{port}{args[-1]}",
        stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    body, _, code = out.decode().rpartition("\n")
    return int(code), body


async def _proxy(table: RouteTable) -> tuple[IngressProxy, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    proxy = IngressProxy(lambda: table)
    await proxy.serve(sock)
    return proxy, sock.getsockname()[1]


async def test_proxy_forwards_headers_and_streams_bodies() -> None:
    runner, backend_port = await _backend()
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()  # nothing listens there: 502
    table = RouteTable(exact={"app.test": (
        PathRule("/", "Prefix", Backend("ns", "app", "80", (("127.0.0.1", backend_port),))),
        PathRule("/empty", "Prefix", Backend("ns", "empty", "80")),
        PathRule("/dead", "Prefix", Backend("ns", "dead", "80", (("127.0.0.1", dead_port),))),
    )})
    proxy, port = await _proxy(table)
    try:
        code, body = await _curl(port, "-H", "Host: app.test", "-H", "X-Forwarded-For: 10.9.9.9",
                                 "-H", "Transfer-Encoding: chunked", "--data-binary", "payload", "/p?q=1")
        seen = json.loads(body)
        assert code == 200 and seen["body"] == "payload" and seen["path"] == "/p?q=1"
        h = seen["headers"]
        assert h["Host"] == "app.test" and h["X-Forwarded-Host"] == "app.test" and h["X-Forwarded-Proto"] == "http"
        assert h["X-Forwarded-For"] == "10.9.9.9, 127.0.0.1" and h["X-Real-IP"] == "127.0.0.1"
        # a field the Connection field names is hop-by-hop too (RFC 9110 §7.6.1): not forwarded
        code, body = await _curl(port, "-H", "Host: app.test", "-H", "Connection: keep-alive, X-Secret",
                                 "-H", "X-Secret: 1", "-H", "X-Kept: 2", "/named")
        seen = json.loads(body)["headers"]
        assert code == 200 and "X-Secret" not in seen and seen["X-Kept"] == "2" and "Connection" not in seen
        assert (await _curl(port, "-H", "Host: other.test", "/"))[0] == 404
        code, body = await _curl(port, "-H", "Host: app.test", "/empty")
        assert code == 503 and "Service Temporarily Unavailable" in body
        assert (await _curl(port, "-H", "Host: app.test", "/dead"))[0] == 502
    finally:
        await proxy.close()
        await runner.cleanup()


def _backend_at(name: str) -> Backend:
    return Backend("ns", name, "80", ((name, 80),))


@pytest.mark.parametrize("host,path,expected", [
    ("foo.com", "/app", "exact"), ("foo.com", "/app/", "prefix"), ("foo.com", "/app/v2/x", "v2"),
    ("foo.com", "/apple", "root"), ("x.foo.com", "/any", "wild"), ("a.b.foo.com", "/", "catchall"),
    ("FOO.com", "/app", "exact"), ("bar.com", "/", "catchall"),
])
def test_route_precedence(host: str, path: str, expected: str) -> None:
    table = RouteTable(
        exact={"foo.com": (PathRule("/", "Prefix", _backend_at("root")), PathRule("/app", "Prefix", _backend_at("prefix")),
                           PathRule("/app", "Exact", _backend_at("exact")),
                           PathRule("/app/v2", "Prefix", _backend_at("v2")))},
        wildcard={"foo.com": (PathRule("/", "Prefix", _backend_at("wild")),)},
        any_host=(PathRule("/", "Prefix", _backend_at("catchall")),))
    found = table.match(host, path)
    assert found is not None and found.service == expected


def test_strip_port() -> None:
    assert [strip_port(h) for h in ("a.test:8080", "a.test", "[::1]:80", "::1")] == ["a.test", "a.test", "::1", "::1"]


def test_build_resolves_port_names_and_ready_endpoints() -> None:
    svc = Service(metadata=ObjectMeta(name="web", namespace="ns"),
                  spec=ServiceSpec(ports=(ServicePort(name="http", port=80),)))
    from netemu.api.ingress import (Ingress, IngressBackend, IngressServiceBackend, IngressSpec,
                                    ServiceBackendPort)
    from netemu.api.objects import Endpoint, EndpointConditions, EndpointPort, EndpointSlice
    ingress = Ingress(metadata=ObjectMeta(name="i", namespace="ns"), spec=IngressSpec(default_backend=IngressBackend(
        service=IngressServiceBackend(name="web", port=ServiceBackendPort(name="http")))))
    eps = EndpointSlice(metadata=ObjectMeta(name="web-x", namespace="ns"), ports=(EndpointPort(name="http", port=8080),),
                        endpoints=(Endpoint(addresses=("10.0.0.1",), conditions=EndpointConditions(ready=True)),
                                   Endpoint(addresses=("10.0.0.2",), conditions=EndpointConditions(ready=False))))
    table = build([ingress], {("ns", "web"): svc}, {("ns", "web"): [eps]})
    assert table.default is not None and table.default.endpoints == (("10.0.0.1", 8080),)
    assert table.match("any", "/") is table.default


def test_printers_rows_and_description() -> None:
    from datetime import datetime, timezone

    from netemu import printers
    from netemu.api import codec
    from netemu.api.ingress import Ingress
    ing, problems = codec.from_dict(Ingress, {
        "metadata": {"name": "web", "namespace": "shop", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"ingressClassName": "netemu", "tls": [{"hosts": ["a.test"], "secretName": "tls"}],
                 "rules": [{"host": h, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
                     "service": {"name": "web", "port": {"number": 80}}}}]}} for h in ("a.test", "b.test", "c.test",
                                                                                      "d.test")]},
        "status": {"loadBalancer": {"ingress": [{"ip": "127.200.0.1"}]}}})
    assert not problems
    now = datetime(2026, 1, 1, 0, 5, tzinfo=timezone.utc)
    assert printers.table_cells(ing, now) == ["web", "netemu", "a.test,b.test,c.test + 1 more...", "127.200.0.1",
                                              "80, 443", "5m"]
    text = printers.describe(ing, events=None, related={"ingress_endpoints": {"web:80": "10.0.0.1:8080"}}, now=now)
    assert "Ingress Class:    netemu" in text and "tls terminates a.test" in text
    assert "/  web:80 (10.0.0.1:8080)" in text


async def _raw_exchange(port: int, request: bytes, expect_close: bool) -> bytes:
    """Send ``request`` (possibly several pipelined) on one connection; read until the proxy
    closes (``expect_close``) or until the reads go quiet after at least one answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    received = b""
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 10 if expect_close or not received else 0.5)
            except asyncio.TimeoutError:
                assert not expect_close, f"the proxy kept the connection open: {received!r}"
                return received
            if not chunk:
                return received
            received += chunk
    finally:
        writer.close()


async def test_pipelining_head_http10_close_and_large_bodies() -> None:
    """HTTP/1.1 details of the httptools path: pipelined requests answered in order, a HEAD answer
    without its body followed by a GET on the same connection, ``Connection: close`` and HTTP/1.0
    (a chunked endpoint answer becomes close-delimited), 100-continue and a 2 MB body both ways."""
    async def sized(request: web.Request) -> web.Response:
        return web.Response(body=(await request.read()) or request.path.encode())

    async def streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b"one,", b"two,", b"three"):
            await response.write(part)
        return response
    app = web.Application(client_max_size=8 << 20)
    app.router.add_route("*", "/sized/{tail:.*}", sized)
    app.router.add_get("/streamed", streamed)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    backend_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    table = RouteTable(exact={"app.test": (
        PathRule("/", "Prefix", Backend("ns", "app", "80", (("127.0.0.1", backend_port),))),)})
    proxy, port = await _proxy(table)
    try:
        get = b"GET /sized/%d HTTP/1.1\r\nHost: app.test\r\n\r\n"
        answer = await _raw_exchange(port, get % 1 + get % 2 + get % 3, expect_close=False)
        assert answer.count(b"HTTP/1.1 200 OK") == 3
        assert answer.index(b"/sized/1") < answer.index(b"/sized/2") < answer.index(b"/sized/3")

        answer = await _raw_exchange(port, b"HEAD /sized/abc HTTP/1.1\r\nHost: app.test\r\n\r\n" + get % 4,
                                     expect_close=False)
        head, _, rest = answer.partition(b"\r\n\r\n")
        assert b"Content-Length: 10" in head and rest.startswith(b"HTTP/1.1 200 OK") and rest.endswith(b"/sized/4")

        answer = await _raw_exchange(port, b"GET /sized/x HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
                                     expect_close=True)
        assert b"Connection: close" in answer and answer.endswith(b"/sized/x")

        answer = await _raw_exchange(port, b"GET /streamed HTTP/1.0\r\nHost: app.test\r\n\r\n", expect_close=True)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert body == b"one,two,three" and b"chunked" not in head.lower()
        answer = await _raw_exchange(port, b"GET /streamed HTTP/1.1\r\nHost: app.test\r\n\r\n", expect_close=False)
        assert b"Transfer-Encoding: chunked" in answer and answer.endswith(b"0\r\n\r\n")

        big = bytes(range(256)) * (2 << 12)   # 2 MiB; curl sends Expect: 100-continue for it
        proc = await asyncio.create_subprocess_exec(
            CURL, "-s", "-m", "20", "-H", "Host: app.test", "--data-binary", "@-",
            f"http://127.0.0.1:{port}/sized/big", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate(big)
        assert out == big
    finally:
        await proxy.close()
        await runner.cleanup()
