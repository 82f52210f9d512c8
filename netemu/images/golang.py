"""What Go programs look like from outside: the net/http response style shared by agnhost and
http-echo, Go's time and duration formats, its content sniffing and its log line prefix.
"""
from __future__ import annotations

import re
import time
from datetime import datetime, timezone

from netemu.images.http import HttpStyle, Request, Response, body_allowed, http_date, reason
from netemu.images.http import render_head

TEXT_PLAIN = "text/plain; charset=utf-8"

_HTML_SIGNATURES = (
    b"<!doctype html", b"<html", b"<head", b"<script", b"<iframe", b"<h1", b"<div", b"<font",
    b"<table", b"<a", b"<style", b"<title", b"<b", b"<body", b"<br", b"<p", b"<!--",
)
_BINARY_BYTES = frozenset(set(range(0x00, 0x09)) | {0x0B, 0x0E, 0x0F} | set(range(0x10, 0x1B))
                          | set(range(0x1C, 0x20)))
_DURATION_PART = re.compile(r"(\d*\.?\d*)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
                   "m": 60.0, "h": 3600.0}


def sniff_content_type(body: bytes) -> str:
    """A cut-down http.DetectContentType: HTML, XML, plain text or octet-stream."""
    head = body[:512].lstrip(b"\t\n\x0c\r ")
    lowered = head[:16].lower()
    for signature in _HTML_SIGNATURES:
        after = head[len(signature):len(signature) + 1]
        if lowered.startswith(signature) and after in (b" ", b">"):
            return "text/html; charset=utf-8"
    if head.startswith(b"<?xml"):
        return "text/xml; charset=utf-8"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if any(byte in _BINARY_BYTES for byte in head):
        return "application/octet-stream"
    return TEXT_PLAIN


def go_log_prefix() -> str:
    """The standard log package's default prefix: ``2006/01/02 15:04:05 ``."""
    return time.strftime("%Y/%m/%d %H:%M:%S ", time.gmtime())


def go_time_now(started_monotonic: float) -> str:
    """``time.Now()`` printed with %v, as a process started at ``started_monotonic`` shows it."""
    now = time.time_ns()
    stamp = datetime.fromtimestamp(now // 1_000_000_000, tz=timezone.utc)
    fraction = f"{now % 1_000_000_000:09d}".rstrip("0")
    since = time.monotonic() - started_monotonic
    return (stamp.strftime("%Y-%m-%d %H:%M:%S") + (f".{fraction}" if fraction else "")
            + f" +0000 UTC m=+{since:.9f}")


def _fraction(value: int, unit: int) -> str:
    whole, rest = divmod(value, unit)
    digits = f"{rest:0{len(str(unit)) - 1}d}".rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)


def go_duration(seconds: float) -> str:
    """time.Duration.String(): ``41.2µs``, ``1.5s``, ``2m3.5s``, ``0s``."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_fraction(ns, 1_000)}µs"
    if ns < 1_000_000_000:
        return f"{sign}{_fraction(ns, 1_000_000)}ms"
    hours, ns = divmod(ns, 3600 * 1_000_000_000)
    minutes, ns = divmod(ns, 60 * 1_000_000_000)
    out = f"{hours}h" if hours else ""
    if hours or minutes:
        out += f"{minutes}m"
    return f"{sign}{out}{_fraction(ns, 1_000_000_000)}s"


def parse_go_duration(text: str) -> float:
    """time.ParseDuration, in seconds; raises ValueError on bad input."""
    body = text.lstrip("+-")
    sign = -1.0 if text.startswith("-") else 1.0
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(text)
    total = 0.0
    pos = 0
    while pos < len(body):
        matched = _DURATION_PART.match(body, pos)
        if not matched or matched.group(1) in ("", "."):
            raise ValueError(text)
        total += float(matched.group(1)) * _DURATION_UNITS[matched.group(2)]
        pos = matched.end()
    return sign * total


def text_response(status: int, body: str | bytes, headers: list[tuple[str, str]] | None = None,
                  ) -> Response:
    """A handler's plain write: Go sniffs the Content-Type when the handler set none."""
    data = body.encode() if isinstance(body, str) else body
    return Response(status, headers or [], data)


def go_error(status: int, message: str) -> Response:
    """http.Error(w, message, status)."""
    return Response(status, [("Content-Type", TEXT_PLAIN), ("X-Content-Type-Options", "nosniff")],
                    (message + "\n").encode())


def go_not_found() -> Response:
    return go_error(404, "404 page not found")


class GoStyle(HttpStyle):
    """net/http.Server with default settings."""

    idle_timeout = None         # Go's default server never times out idle connections
    max_body = 10 << 20

    def head(self, request: Request | None, response: Response, keep_alive: bool) -> bytes:
        status = response.status
        if request is None:      # rejected before a handler ran: Go's bare error reply
            return render_head(f"HTTP/1.1 {status} {reason(status)}",
                               [("Content-Type", TEXT_PLAIN), ("Connection", "close")])
        is11 = request.version == "HTTP/1.1"
        headers = sorted(response.headers, key=lambda item: item[0])
        has_type = any(name == "Content-Type" for name, _ in headers)
        headers.append(("Date", http_date()))
        if body_allowed(status):
            headers.append(("Content-Length", str(len(response.body))))
            if not has_type and response.body:
                headers.append(("Content-Type", sniff_content_type(response.body)))
        if not keep_alive:
            if is11 and not any(name == "Connection" for name, _ in headers):
                headers.append(("Connection", "close"))
        elif not is11:
            headers.append(("Connection", "keep-alive"))
        version = "HTTP/1.1" if is11 else "HTTP/1.0"
        return render_head(f"{version} {status} {reason(status)}", headers)

    def error(self, status: int, request: Request | None) -> Response:
        return Response(status, [], f"{status} {reason(status)}".encode(), close=True)


__all__ = [
    "GoStyle", "TEXT_PLAIN", "go_duration", "go_error", "go_log_prefix", "go_not_found",
    "go_time_now", "parse_go_duration", "sniff_content_type", "text_response",
]
