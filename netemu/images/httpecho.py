"""The ``hashicorp/http-echo`` image: every path answers ``-text`` plus a newline.

Owns: its Go-style flags (``-text``, ``-listen`` default ``:5678``, ``-status-code``,
``-version``; ``ECHO_TEXT`` when ``-text`` is empty), ``/health``, the ``X-App-*`` headers, its
access log lines and exit codes (127 for a missing text or extra arguments, 2 for bad flags).
The listen host is ignored: it always serves on the pod IP.
"""
from __future__ import annotations

import asyncio
import time
from urllib.parse import unquote

from netemu.errors import InvalidError
from netemu.images.base import (
    ContainerContext, EmulationBase, RunningEmulation, format_hostport, listen_tcp,
    start_or_roll_back,
)
from netemu.images.flags import FlagValue, parse_goflag
from netemu.images.golang import GoStyle, go_duration, go_log_prefix, text_response
from netemu.images.http import Request, Response, serve_http

VERSION = "1.0.0"
APP_HEADERS = [("X-App-Name", "http-echo"), ("X-App-Version", VERSION)]
FLAGS: dict[str, FlagValue] = {"listen": ":5678", "text": "", "version": False,
                               "status-code": 200}
_GO = GoStyle()


def _listen_port(listen: str) -> int:
    _host, colon, port = listen.rpartition(":")
    if not colon or not port.isdigit() or int(port) > 65535:
        raise ValueError(listen)
    return int(port)


class HttpEcho(EmulationBase):
    name = "http-echo"

    async def start(self, ctx: ContainerContext) -> RunningEmulation:
        running = RunningEmulation(self.label(ctx), stop_code=2)
        try:
            flags, rest = parse_goflag(ctx.args, FLAGS)
        except InvalidError as exc:
            ctx.log(str(exc))
            ctx.log("Usage of /http-echo:")
            running.exit(2)
            return running
        if flags["version"]:
            ctx.log(f"http-echo v{VERSION}")
            running.exit(0)
            return running
        text = str(flags["text"]) or ctx.env.get("ECHO_TEXT", "")
        if not text:
            ctx.log("Missing -text option or ECHO_TEXT env var!")
            running.exit(127)
            return running
        if rest:
            ctx.log("Too many arguments!")
            running.exit(127)
            return running
        listen = str(flags["listen"])
        try:
            port = _listen_port(listen)
        except ValueError:
            ctx.log(f"{go_log_prefix()}[INFO] server is listening on {listen}")
            ctx.log(f"{go_log_prefix()}[ERR] server exited with: listen tcp: address {listen}: "
                    "missing port in address")
            running.exit(1)
            return running
        body = (text + "\n").encode()
        status = int(flags["status-code"])

        def handle(request: Request) -> Response:
            if request.path == "/health":
                return text_response(200, '{"status":"ok"}\n', list(APP_HEADERS))
            started = time.monotonic()
            response = text_response(status, body, list(APP_HEADERS))
            stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime())
            ctx.log(f'{stamp} {request.header("Host") or ""} {format_hostport(*request.peer)} '
                    f'"{request.method} {unquote(request.path)} {request.version}" {status} '
                    f'{len(body)} "{request.header("User-Agent") or ""}" '
                    f"{go_duration(time.monotonic() - started)}")
            return response

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await serve_http(reader, writer, handle, _GO)

        await start_or_roll_back(running, [
            lambda: listen_tcp(ctx, running, port, on_client, running.name)])
        ctx.log(f"{go_log_prefix()}[INFO] server is listening on {listen}")
        running.on_stop(lambda: ctx.log(
            f"{go_log_prefix()}[INFO] received interrupt, shutting down..."))
        return running


__all__ = ["APP_HEADERS", "FLAGS", "HttpEcho", "VERSION"]
