"""The ``nginx`` image (and ``nginxinc/nginx-unprivileged``) as its stock configuration serves.

Owns: the stock document root (``/`` and ``/index.html`` = the real welcome page, ``/50x.html``),
nginx's response framing, status wording, error pages and the docker image's ``main`` access log
format, the entrypoint's start lines and the SIGQUIT shutdown lines. Listens on every declared TCP
containerPort, or on 80 (8080 for the unprivileged image) when none is declared.
"""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from urllib.parse import unquote

from netemu.images.base import (
    ContainerContext, EmulationBase, RunningEmulation, listen_tcp, start_or_roll_back,
)
from netemu.images.http import HttpStyle, Request, Response, body_allowed, http_date, reason
from netemu.images.http import render_head, serve_http

NGINX_VERSION = "1.27.3"
SERVER = f"nginx/{NGINX_VERSION}"

WELCOME_PAGE = b"""<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
<style>
html { color-scheme: light dark; }
body { width: 35em; margin: 0 auto;
font-family: Tahoma, Verdana, Arial, sans-serif; }
</style>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. Further configuration is required.</p>

<p>For online documentation and support please refer to
<a href="http://nginx.org/">nginx.org</a>.<br/>
Commercial support is available at
<a href="http://nginx.com/">nginx.com</a>.</p>

<p><em>Thank you for using nginx.</em></p>
</body>
</html>
"""

ERROR_50X_PAGE = b"""<!DOCTYPE html>
<html>
<head>
<title>Error</title>
<style>
html { color-scheme: light dark; }
body { width: 35em; margin: 0 auto;
font-family: Tahoma, Verdana, Arial, sans-serif; }
</style>
</head>
<body>
<h1>An error occurred.</h1>
<p>Sorry, the page you are looking for is currently unavailable.<br/>
Please try again later.</p>
<p>If you are the system administrator of this resource then you should check
the error log for details.</p>
<p><em>Faithfully yours, nginx.</em></p>
</body>
</html>
"""

# The files' mtime in the image; ETag is "<mtime hex>-<size hex>" as nginx makes it.
_MTIME = 0x6745EF54   # Tue, 26 Nov 2024 15:55:00 GMT
_LAST_MODIFIED = "Tue, 26 Nov 2024 15:55:00 GMT"

_STATUS_LINES = {
    302: "Moved Temporarily", 405: "Not Allowed", 408: "Request Time-out",
    413: "Request Entity Too Large", 414: "Request-URI Too Large",
    416: "Requested Range Not Satisfiable", 503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}
_PAGE_TITLES = {401: "401 Authorization Required", 501: "501 Not Implemented"}
_NO_PAGE = {505}
_LOG_UNSAFE = {c: f"\\x{c:02X}" for c in [*range(0x20), *range(0x7F, 0x100), ord('"'), ord("\\")]}


class _Page:
    __slots__ = ("body", "headers")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.headers = [("Content-Type", "text/html"), ("Last-Modified", _LAST_MODIFIED),
                        ("ETag", f'"{_MTIME:x}-{len(body):x}"'), ("Accept-Ranges", "bytes")]


_DOCROOT = {"/index.html": _Page(WELCOME_PAGE), "/50x.html": _Page(ERROR_50X_PAGE)}


def status_text(status: int) -> str:
    return _STATUS_LINES.get(status) or reason(status)


def error_page(status: int) -> bytes:
    if status in _NO_PAGE:
        return b""
    title = _PAGE_TITLES.get(status) or f"{status} {status_text(status)}"
    return (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>{SERVER}</center>\r\n"
            "</body>\r\n</html>\r\n").encode()


def _normalize(path: str) -> str | None:
    """Percent-decode, merge slashes and resolve dot segments; None for a path above the root."""
    decoded = unquote(path)
    if "\x00" in decoded:
        return None
    segments: list[str] = []
    for segment in decoded.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not segments:
                return None
            segments.pop()
        else:
            segments.append(segment)
    clean = "/" + "/".join(segments)
    if decoded.endswith(("/", "/.", "/..")) and clean != "/":
        clean += "/"
    return clean


def _log_escape(value: str) -> str:
    return value.translate(_LOG_UNSAFE)


class NginxStyle(HttpStyle):
    """nginx's header order, ``Connection`` header on every response, its pages and access log."""

    idle_timeout = 65.0     # keepalive_timeout 65 in the image's nginx.conf
    max_body = 1 << 20      # client_max_body_size 1m

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log

    def head(self, request: Request | None, response: Response, keep_alive: bool) -> bytes:
        status = response.status
        own = dict(response.headers)
        headers = [("Server", SERVER), ("Date", http_date())]
        if "Content-Type" in own:
            headers.append(("Content-Type", own.pop("Content-Type")))
        if body_allowed(status):
            headers.append(("Content-Length", str(len(response.body))))
        if "Last-Modified" in own:
            headers.append(("Last-Modified", own.pop("Last-Modified")))
        headers.append(("Connection", "keep-alive" if keep_alive else "close"))
        headers += own.items()
        return render_head(f"HTTP/1.1 {status} {status_text(status)}", headers)

    def error(self, status: int, request: Request | None) -> Response:
        body = error_page(status)
        # nginx drops keep-alive after these errors
        close = request is None or status in (400, 413, 414, 500, 501, 505)
        return Response(status, [("Content-Type", "text/html")] if body else [], body, close=close)

    def access(self, peer: tuple[str, int], request_line: str, request: Request | None,
               response: Response, body_bytes: int) -> None:
        referer = request.header("Referer") if request else None
        agent = request.header("User-Agent") if request else None
        forwarded = request.header("X-Forwarded-For") if request else None
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
        self._log(f'{peer[0]} - - [{stamp}] "{_log_escape(request_line)}" {response.status} '
                  f'{body_bytes} "{_log_escape(referer or "-")}" "{_log_escape(agent or "-")}" '
                  f'"{_log_escape(forwarded or "-")}"')


def _handle(request: Request, style: NginxStyle) -> Response:
    if request.method not in ("GET", "HEAD", "POST"):
        return style.error(405, request)
    path = _normalize(request.path)
    if path is None:
        return style.error(400, request)
    if path.endswith("/"):
        path += "index.html"   # index index.html; only / is a directory
    page = _DOCROOT.get(path)
    if page is None:
        return style.error(404, request)
    if request.method == "POST":
        return style.error(405, request)
    etag = page.headers[2][1]
    if request.header("If-None-Match") in (etag, "*") or \
            request.header("If-Modified-Since") == _LAST_MODIFIED:
        return Response(304, [("Last-Modified", _LAST_MODIFIED), ("ETag", etag)])
    return Response(200, page.headers, page.body)


def _nginx_time() -> str:
    return time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime())


def start_lines() -> list[str]:
    now = _nginx_time()
    entry = "/docker-entrypoint.sh"
    return [
        f"{entry}: /docker-entrypoint.d/ is not empty, will attempt to perform configuration",
        f"{entry}: Looking for shell scripts in /docker-entrypoint.d/",
        f"{entry}: Launching /docker-entrypoint.d/10-listen-on-ipv6-by-default.sh",
        "10-listen-on-ipv6-by-default.sh: info: Getting the checksum of "
        "/etc/nginx/conf.d/default.conf",
        "10-listen-on-ipv6-by-default.sh: info: Enabled listen on IPv6 in "
        "/etc/nginx/conf.d/default.conf",
        f"{entry}: Sourcing /docker-entrypoint.d/15-local-resolvers.envsh",
        f"{entry}: Launching /docker-entrypoint.d/20-envsubst-on-templates.sh",
        f"{entry}: Launching /docker-entrypoint.d/30-tune-worker-processes.sh",
        f"{entry}: Configuration complete; ready for start up",
        f'{now} [notice] 1#1: using the "epoll" event method',
        f"{now} [notice] 1#1: {SERVER}",
        f"{now} [notice] 1#1: built by gcc 12.2.0 (Debian 12.2.0-14)",
        f"{now} [notice] 1#1: OS: Linux {os.uname().release}",
        f"{now} [notice] 1#1: getrlimit(RLIMIT_NOFILE): 1048576:1048576",
        f"{now} [notice] 1#1: start worker processes",
        f"{now} [notice] 1#1: start worker process 29",
    ]


def stop_lines() -> list[str]:
    now = _nginx_time()
    return [
        f"{now} [notice] 1#1: signal 3 (SIGQUIT) received, shutting down",
        f"{now} [notice] 29#29: gracefully shutting down",
        f"{now} [notice] 29#29: exiting",
        f"{now} [notice] 29#29: exit",
        f"{now} [notice] 1#1: signal 17 (SIGCHLD) received from 29",
        f"{now} [notice] 1#1: worker process 29 exited with code 0",
        f"{now} [notice] 1#1: exit",
    ]


class Nginx(EmulationBase):
    """nginx with the image's default.conf: static welcome page on port 80 (or 8080)."""

    def __init__(self, default_port: int = 80, name: str = "nginx") -> None:
        self.default_port = default_port
        self.name = name

    async def start(self, ctx: ContainerContext) -> RunningEmulation:
        running = RunningEmulation(self.label(ctx), stop_code=0)
        style = NginxStyle(ctx.log)

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await serve_http(reader, writer, lambda request: _handle(request, style), style)

        ports = ctx.declared_ports("TCP") or (self.default_port,)
        steps = [lambda port=port: listen_tcp(ctx, running, port, on_client, running.name)
                 for port in ports]
        await start_or_roll_back(running, steps)
        ctx.log("\n".join(start_lines()))  # one write for the lot: 16 lines for every nginx pod
        running.on_stop(lambda: ctx.log("\n".join(stop_lines())))
        return running


__all__ = ["ERROR_50X_PAGE", "NGINX_VERSION", "Nginx", "NginxStyle", "WELCOME_PAGE", "error_page"]
