"""The ``httpd`` image (Apache 2.4) as its stock configuration serves.

Owns: the stock ``index.html`` ("It works!"), Apache's header order, keep-alive wording, error
pages and common-format access log, and the start/stop lines the image prints. Listens on every
declared TCP containerPort, or on 80 when none is declared.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timezone

from netemu.images.base import (
    ContainerContext, EmulationBase, RunningEmulation, listen_tcp, start_or_roll_back,
)
from netemu.images.http import HttpStyle, Request, Response, body_allowed, http_date, reason
from netemu.images.http import render_head, serve_http

SERVER = "Apache/2.4.62 (Unix)"
INDEX_PAGE = b"<html><body><h1>It works!</h1></body></html>\n"
_LAST_MODIFIED = "Mon, 11 Jun 2007 18:53:14 GMT"
_ETAG = '"2d-432a5e4a73a80"'
_ALLOW = "GET,POST,OPTIONS,HEAD"
_ERROR_TYPE = "text/html; charset=iso-8859-1"
_EXPLANATIONS = {
    400: "<p>Your browser sent a request that this server could not understand.<br />\n</p>",
    404: "<p>The requested URL was not found on this server.</p>",
    413: "The requested resource does not allow request data with {method} requests, or the "
         "amount of data provided in\nthe request exceeds the capacity limit.",
    414: "<p>The requested URL's length exceeds the capacity\nlimit for this server.<br />\n</p>",
    500: "<p>The server encountered an internal error or\nmisconfiguration and was unable to "
         "complete\nyour request.</p>",
    501: "<p>{method} not supported for current URL.<br />\n</p>",
}
_CLOSING_ERRORS = {400, 408, 413, 414, 500, 501, 503}


def error_page(status: int, method: str = "GET") -> bytes:
    if status == 405:
        text = f"<p>The requested method {method} is not allowed for this URL.</p>"
    else:
        text = _EXPLANATIONS.get(status, "").format(method=method)
    phrase = reason(status)
    return ('<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n'
            f"<title>{status} {phrase}</title>\n</head><body>\n<h1>{phrase}</h1>\n"
            f"{text}\n</body></html>\n").encode()


class ApacheStyle(HttpStyle):
    idle_timeout = 5.0       # KeepAliveTimeout 5
    max_body = 1 << 20

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log

    def head(self, request: Request | None, response: Response, keep_alive: bool) -> bytes:
        status = response.status
        content_type = [h for h in response.headers if h[0] == "Content-Type"]
        headers = [("Date", http_date()), ("Server", SERVER)]
        headers += [h for h in response.headers if h[0] != "Content-Type"]
        if body_allowed(status):
            headers.append(("Content-Length", str(len(response.body))))
        asked_keep_alive = request is not None and any(
            name.lower() == "connection" and "keep-alive" in value.lower()
            for name, value in request.headers)
        if keep_alive and asked_keep_alive:
            headers += [("Keep-Alive", "timeout=5, max=100"), ("Connection", "Keep-Alive")]
        elif not keep_alive and (asked_keep_alive or request is None
                                 or request.version == "HTTP/1.1"):
            headers.append(("Connection", "close"))
        headers += content_type
        return render_head(f"HTTP/1.1 {status} {reason(status)}", headers)

    def error(self, status: int, request: Request | None) -> Response:
        method = request.method if request else "GET"
        headers = [("Allow", _ALLOW)] if status == 405 else []
        headers.append(("Content-Type", _ERROR_TYPE))
        return Response(status, headers, error_page(status, method),
                        close=request is None or status in _CLOSING_ERRORS)

    def access(self, peer: tuple[str, int], request_line: str, request: Request | None,
               response: Response, body_bytes: int) -> None:
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
        sent = str(body_bytes) if body_bytes else "-"
        self._log(f'{peer[0]} - - [{stamp}] "{request_line}" {response.status} {sent}')


def _handle(request: Request, style: ApacheStyle) -> Response:
    path = request.path.split(";", 1)[0]
    if request.method == "OPTIONS":
        return Response(200, [("Allow", _ALLOW), ("Content-Type", "text/html")])
    if request.method not in ("GET", "HEAD", "POST"):
        return style.error(501 if request.method not in ("PUT", "DELETE", "TRACE") else 405,
                           request)
    if path not in ("/", "/index.html"):
        return style.error(404, request)
    if request.method == "POST":
        return style.error(405, request)
    if request.header("If-None-Match") in (_ETAG, "*") or \
            request.header("If-Modified-Since") == _LAST_MODIFIED:
        return Response(304, [("Last-Modified", _LAST_MODIFIED), ("ETag", _ETAG)])
    return Response(200, [("Last-Modified", _LAST_MODIFIED), ("ETag", _ETAG),
                          ("Accept-Ranges", "bytes"), ("Content-Type", "text/html")], INDEX_PAGE)


def _apache_time() -> str:
    now = datetime.now(timezone.utc)
    return now.strftime("%a %b %d %H:%M:%S.%f %Y")


class Httpd(EmulationBase):
    """Apache httpd with the image's httpd.conf: "It works!" on port 80."""

    name = "httpd"

    async def start(self, ctx: ContainerContext) -> RunningEmulation:
        running = RunningEmulation(self.label(ctx), stop_code=0)
        style = ApacheStyle(ctx.log)

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await serve_http(reader, writer, lambda request: _handle(request, style), style)

        ports = ctx.declared_ports("TCP") or (80,)
        await start_or_roll_back(running, [
            lambda port=port: listen_tcp(ctx, running, port, on_client, running.name)
            for port in ports])
        fqdn_warning = ("AH00558: httpd: Could not reliably determine the server's fully "
                        f"qualified domain name, using {ctx.pod_ip}. Set the 'ServerName' "
                        "directive globally to suppress this message")
        ctx.log(fqdn_warning)
        ctx.log(fqdn_warning)
        now = _apache_time()
        ctx.log(f"[{now}] [mpm_event:notice] [pid 1:tid 1] AH00489: {SERVER} configured -- "
                "resuming normal operations")
        ctx.log(f"[{now}] [core:notice] [pid 1:tid 1] AH00094: Command line: "
                "'httpd -D FOREGROUND'")
        running.on_stop(lambda: ctx.log(
            f"[{_apache_time()}] [mpm_event:notice] [pid 1:tid 1] AH00492: caught SIGWINCH, "
            "shutting down gracefully"))
        return running


__all__ = ["ApacheStyle", "Httpd", "INDEX_PAGE", "SERVER", "error_page"]
