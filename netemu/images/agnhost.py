"""The Kubernetes test image ``agnhost`` (registry.k8s.io/e2e-test-images/agnhost) and the old
``serve_hostname`` image.

Owns: choosing the subcommand from the container args as the real cobra binary does (no args:
the image's ``CMD ["pause"]``), and the emulated subcommands:

- ``netexec``: HTTP on ``--http-port`` (8080) with ``/``, ``/clientip``, ``/echo``, ``/exit``,
  ``/healthz``, ``/hostname``, ``/hostName``, ``/redirect``, ``/shutdown``; ``/shell`` is refused
  (403), ``/dial`` and ``/upload`` are not emulated (501). UDP on ``--udp-port`` (8081):
  ``hostname``, ``echo <msg>``, ``clientip`` - like the real server it lower-cases what it gets.
  ``--sctp-port`` and ``--udp-listen-addresses`` are accepted and ignored; ``--http-override``
  works; TLS flags make it exit 1 (no TLS here).
- ``serve-hostname``: ``--port`` (9376), ``--http`` (default true), ``--tcp``, ``--udp``,
  ``--close``.
- ``liveness``: 8080; ``/healthz`` is 200 for 10 seconds after start, then 500.
- ``pause``: prints ``Paused`` and idles.

Every other subcommand exits 1 with a message naming it (the real binary prints cobra's error
and exits 0; failing is the clearer signal here).
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import parse_qs, unquote

from netemu.errors import InvalidError
from netemu.images.base import (
    ContainerContext, EmulationBase, RunningEmulation, format_hostport, listen_tcp, listen_udp,
    start_or_roll_back,
)
from netemu.images.flags import FlagValue, parse_goflag, parse_pflag
from netemu.images.golang import (
    GoStyle, go_duration, go_error, go_log_prefix, go_not_found, go_time_now,
    parse_go_duration, text_response,
)
from netemu.images.http import Request, Response, serve_http

Clock = Callable[[], float]

# klog's flags, persistent on agnhost's root command: name -> takes a value
_KLOG_FLAGS = {
    "v": True, "vmodule": True, "log_dir": True, "log_file": True, "log_file_max_size": True,
    "stderrthreshold": True, "log_backtrace_at": True, "logtostderr": False,
    "alsologtostderr": False, "add_dir_header": False, "skip_headers": False,
    "skip_log_headers": False, "one_output": False,
}
_NOT_EMULATED = frozenset({
    "audit-proxy", "connect", "crd-conversion-webhook", "dns-server-list", "dns-suffix",
    "entrypoint-tester", "etc-hosts", "fake-gitserver", "fake-registry-server",
    "grpc-health-checking", "guestbook", "h2c-server", "http-echo", "inclusterclient",
    "logs-generator", "mounttest", "mtlsclient", "mtlsserver", "net", "nettest", "no-snat-test",
    "no-snat-test-proxy", "podcertificatesigner", "port-forward-tester", "porter",
    "resource-consumer-controller", "test-service-account-issuer-discovery", "test-webserver",
    "webhook",
})
_EMULATED = ("liveness", "netexec", "pause", "serve-hostname")

_GO = GoStyle()

NETEXEC_FLAGS: dict[str, FlagValue] = {
    "http-port": 8080, "udp-port": 8081, "sctp-port": -1, "tls-cert-file": "",
    "tls-private-key-file": "", "http-override": "", "udp-listen-addresses": "",
}
SERVE_HOSTNAME_FLAGS: dict[str, FlagValue] = {
    "tcp": False, "udp": False, "http": True, "close": False, "port": 9376,
}


def _go_log(ctx: ContainerContext, message: str) -> None:
    ctx.log(go_log_prefix() + message.rstrip("\n"))


def _form(request: Request) -> dict[str, list[str]]:
    """r.Form: the POST form body's values first, then the query's."""
    values: dict[str, list[str]] = {}
    content_type = (request.header("Content-Type") or "").split(";")[0].strip().lower()
    if request.body and content_type == "application/x-www-form-urlencoded":
        values = parse_qs(request.body.decode("latin-1"), keep_blank_values=True)
    for key, items in parse_qs(request.query, keep_blank_values=True).items():
        values.setdefault(key, []).extend(items)
    return values


def _form_value(form: dict[str, list[str]], name: str) -> str:
    items = form.get(name)
    return items[0] if items else ""


def _go_atoi(text: str) -> int:
    if not text or not text.lstrip("+-").isdigit():
        raise ValueError(text)
    return int(text)


def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_STATUS_WORD = {301: "Moved Permanently", 302: "Found", 303: "See Other",
                307: "Temporary Redirect", 308: "Permanent Redirect"}


def _redirect(request: Request, location: str, code: int) -> Response:
    """http.Redirect: Location header, and a short HTML body for GET and HEAD."""
    if not location.startswith(("/", "http://", "https://")):
        base = request.path.rsplit("/", 1)[0]
        location = f"{base}/{location}"
    body = b""
    if request.method in ("GET", "HEAD"):
        body = f'<a href="{location}">{_STATUS_WORD.get(code, "")}</a>.\n\n'.encode()
    return Response(code, [("Content-Type", "text/html; charset=utf-8"), ("Location", location)],
                    body)


class _Netexec:
    """agnhost netexec: the HTTP routes and the UDP command server."""

    def __init__(self, ctx: ContainerContext, running: RunningEmulation,
                 flags: dict[str, FlagValue]) -> None:
        self.ctx = ctx
        self.running = running
        self.flags = flags
        self.started = time.monotonic()
        self.udp_ready = False
        self.routes: dict[str, Callable[[Request], Response | Awaitable[Response]]] = {
            "/clientip": self.clientip, "/dial": self.not_emulated, "/echo": self.echo,
            "/exit": self.exit, "/healthz": self.healthz, "/hostname": self.hostname,
            "/hostName": self.hostname, "/redirect": self.redirect, "/shell": self.shell,
            "/shutdown": self.shutdown, "/upload": self.not_emulated,
        }
        override = str(flags["http-override"])
        self.override = override.partition("?") if override else None

    def log(self, message: str) -> None:
        _go_log(self.ctx, message)

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        if self.override is not None:
            path, _, query = self.override
            request = Request("GET", str(self.flags["http-override"]), path, query,
                              request.version, request.headers, b"", request.peer,
                              request.keep_alive)
        return self.routes.get(request.path, self.root)(request)

    def root(self, request: Request) -> Response:
        self.log("GET /")
        return text_response(200, "NOW: " + go_time_now(self.started))

    def clientip(self, request: Request) -> Response:
        self.log("GET /clientip")
        return text_response(200, format_hostport(*request.peer))

    def hostname(self, request: Request) -> Response:
        self.log(f"GET {request.path}")
        return text_response(200, self.ctx.hostname)

    def healthz(self, request: Request) -> Response:
        self.log("GET /healthz")
        return Response(200 if self.udp_ready else 412)

    def echo(self, request: Request) -> Response:
        form = _form(request)
        msg, code_text = _form_value(form, "msg"), _form_value(form, "code")
        self.log(f"GET /echo?msg={msg}&code={code_text}")
        status = 200
        if code_text:
            try:
                status = _go_atoi(code_text)
            except ValueError:
                return text_response(200, "argument 'code' must be an integer or empty, "
                                          f"got {_go_quote(code_text)}\n")
            if not 100 <= status <= 999:   # Go panics on such a WriteHeader: no reply
                return Response(0, abort=True)
        return text_response(status, msg)

    async def exit(self, request: Request) -> Response:
        form = _form(request)
        wait_text, timeout_text = _form_value(form, "wait"), _form_value(form, "timeout")
        code_text = _form_value(form, "code")
        self.log(f"GET /exit?code={code_text}&timeout={timeout_text}&wait={wait_text}")
        try:
            timeout = parse_go_duration(timeout_text) if timeout_text else 0.0
        except ValueError:
            return text_response(200, "argument 'timeout' must be a valid golang duration or "
                                      f"empty, got {_go_quote(timeout_text)}\n")
        try:
            wait = parse_go_duration(wait_text) if wait_text else 0.0
        except ValueError:
            return text_response(200, "argument 'wait' must be a valid golang duration or "
                                      f"empty, got {_go_quote(wait_text)}\n")
        try:
            code = _go_atoi(code_text) if code_text else 0
        except ValueError:
            return text_response(200, "argument 'code' must be an integer [0-127] or empty, "
                                      f"got {_go_quote(code_text)}\n")
        self.log(f"Will begin shutdown in {go_duration(wait)}, allowing {go_duration(timeout)} "
                 f"for connections to close, then will exit with {code}")
        if wait > 0:
            await asyncio.sleep(wait)
        exit_now = lambda: self.running.exit(code)  # noqa: E731
        if timeout == 0:   # os.Exit at once: the client gets no answer
            return Response(0, abort=True, after=exit_now)
        return Response(200, close=True, after=exit_now)

    def redirect(self, request: Request) -> Response:
        form = _form(request)
        location, code_text = _form_value(form, "location"), _form_value(form, "code")
        self.log(f"{request.method} /redirect?msg={location}&code={code_text}")
        code = 302
        if code_text:
            try:
                code = _go_atoi(code_text)
            except ValueError:
                return text_response(200, "argument 'code' must be an integer or empty, "
                                          f"got {_go_quote(code_text)}\n")
        return _redirect(request, location, code)

    def shell(self, request: Request) -> Response:
        form = _form(request)
        command = _form_value(form, "shellCommand") or _form_value(form, "cmd")
        self.log(f"GET /shell?cmd={command}")
        return go_error(403, "netemu: /shell is not supported by the built-in agnhost "
                             "emulation; give the container a command to run the real image")

    def not_emulated(self, request: Request) -> Response:
        self.log(f"GET {request.path}")
        return go_error(501, f"netemu: {request.path} is not emulated by the built-in agnhost "
                             "emulation")

    def shutdown(self, request: Request) -> Response:
        self.log("GET /shutdown")
        return Response(0, abort=True, after=lambda: self.running.exit(0))

    def udp_protocol(self) -> asyncio.DatagramProtocol:
        return _NetexecUdp(self)


class _NetexecUdp(asyncio.DatagramProtocol):
    def __init__(self, netexec: _Netexec) -> None:
        self.netexec = netexec
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        text = data[:2048].decode("utf-8", "replace").strip().lower()
        client = format_hostport(addr[0], addr[1])
        if text == "hostname":
            self.netexec.log("Sending udp hostName response")
            reply = self.netexec.ctx.hostname
        elif text.startswith("echo "):
            reply = text.split(" ", 1)[1]
            self.netexec.log(f"Echoing {reply} to UDP client {client}")
        elif text == "clientip":
            self.netexec.log(f"Sending clientip back to UDP client {client}")
            reply = client
        else:
            if text:
                self.netexec.log(f"Unknown UDP command received from {client}: {text}")
            return
        self.transport.sendto(reply.encode(), addr)

    def error_received(self, exc: Exception) -> None:
        pass   # ICMP errors for earlier replies; the Go server ignores them too


def _http_server(handler: Callable[[Request], Response | Awaitable[Response]],
                 ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_http(reader, writer, handler, _GO)
    return on_client


async def _start_netexec(ctx: ContainerContext, running: RunningEmulation,
                         flags: dict[str, FlagValue]) -> None:
    if flags["tls-cert-file"]:
        raise InvalidError("netemu: netexec with --tls-cert-file is not emulated (no TLS in "
                           "the built-in agnhost)")
    netexec = _Netexec(ctx, running, flags)
    http_port, udp_port = int(flags["http-port"]), int(flags["udp-port"])
    steps: list[Callable[[], Awaitable[None]]] = []
    if udp_port != -1:
        steps.append(lambda: listen_udp(ctx, running, udp_port, netexec.udp_protocol,
                                        running.name))
    steps.append(lambda: listen_tcp(ctx, running, http_port, _http_server(netexec.handle),
                                    running.name))
    await start_or_roll_back(running, steps)
    netexec.log(f"Started HTTP server on port {http_port}")
    if udp_port != -1:
        netexec.log(f"Started UDP server on port  {udp_port}")
        netexec.udp_ready = True


async def start_serve_hostname(ctx: ContainerContext, running: RunningEmulation,
                               flags: dict[str, FlagValue]) -> None:
    """serve-hostname (agnhost) and the old serve_hostname image share this behaviour."""
    if flags["http"] and (flags["tcp"] or flags["udp"]):
        raise InvalidError("Can't server TCP/UDP mode and HTTP mode at the same time")
    hostname = ctx.hostname
    port = int(flags["port"])
    close_each = bool(flags["close"])

    def on_http(request: Request) -> Response:
        _go_log(ctx, f"HTTP request from {format_hostport(*request.peer)}")
        if close_each:
            return text_response(200, hostname, [("Connection", "close")])
        return text_response(200, hostname)

    async def on_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        _go_log(ctx, f"TCP request from {format_hostport(peer[0], peer[1])}")
        writer.write(hostname.encode())
        await writer.drain()

    class Udp(asyncio.DatagramProtocol):
        transport: asyncio.DatagramTransport

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            _go_log(ctx, f"UDP request from {format_hostport(addr[0], addr[1])}")
            self.transport.sendto(hostname.encode(), addr)

        def error_received(self, exc: Exception) -> None:
            pass

    steps: list[Callable[[], Awaitable[None]]] = []
    if flags["tcp"]:
        steps.append(lambda: listen_tcp(ctx, running, port, on_tcp, running.name))
    if flags["udp"]:
        steps.append(lambda: listen_udp(ctx, running, port, Udp, running.name))
    if flags["http"]:
        steps.append(lambda: listen_tcp(ctx, running, port, _http_server(on_http),
                                        running.name))
    await start_or_roll_back(running, steps)
    _go_log(ctx, f"Serving on port {port}.")
    running.on_stop(lambda: (_go_log(ctx, "Shutting down after receiving signal: terminated."),
                             _go_log(ctx, "Awaiting pod deletion.")))


async def _start_liveness(ctx: ContainerContext, running: RunningEmulation,
                          clock: Clock) -> None:
    started = clock()

    def handle(request: Request) -> Response:
        elapsed = clock() - started
        if request.path == "/healthz":
            if elapsed > 10:
                return text_response(500, f"error: {elapsed!r}")
            return text_response(200, "ok")
        if request.path == "/started":
            return text_response(200, go_duration(elapsed))
        if request.path == "/redirect":
            values = parse_qs(request.query, keep_blank_values=True).get("loc", [""])
            return _redirect(request, unquote(values[0]), 302)
        return go_not_found()

    await start_or_roll_back(running, [
        lambda: listen_tcp(ctx, running, 8080, _http_server(handle), running.name)])


class Agnhost(EmulationBase):
    """agnhost: the subcommand is the first non-flag arg; no args means ``pause``."""

    name = "agnhost"

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock

    async def start(self, ctx: ContainerContext) -> RunningEmulation:
        subcommand, rest = parse_args(ctx.args)
        stop_codes = {"pause": 2, "serve-hostname": 137}
        running = RunningEmulation(self.label(ctx), stop_code=stop_codes.get(subcommand, 143))
        if not subcommand:
            ctx.log("Usage:")
            ctx.log("  app [command]")
            running.exit(0)   # cobra prints help and the program ends
            return running
        if subcommand not in _EMULATED:
            if subcommand in _NOT_EMULATED:
                ctx.log(f"netemu: agnhost subcommand {subcommand!r} is not emulated (emulated: "
                        f"{', '.join(_EMULATED)}); give the container a command to run it")
            else:
                ctx.log(f'Error: unknown command "{subcommand}" for "app"')
                ctx.log("Run 'app --help' for usage.")
            running.exit(1)
            return running
        defaults = {"netexec": NETEXEC_FLAGS, "serve-hostname": SERVE_HOSTNAME_FLAGS}
        try:
            flags, positional = parse_pflag(rest, defaults.get(subcommand, {}), _KLOG_FLAGS)
            if positional:
                raise InvalidError(f"accepts at most 0 arg(s), received {len(positional)}")
        except InvalidError as exc:
            ctx.log(f"Error: {exc}")
            ctx.log(f"Run 'app {subcommand} --help' for usage.")
            running.exit(1)
            return running
        try:
            if subcommand == "netexec":
                await _start_netexec(ctx, running, flags)
            elif subcommand == "serve-hostname":
                await start_serve_hostname(ctx, running, flags)
            elif subcommand == "liveness":
                await _start_liveness(ctx, running, self.clock)
            else:
                ctx.log("Paused")
        except InvalidError as exc:
            if exc.__cause__ is not None:   # a socket could not be bound
                raise
            _go_log(ctx, str(exc))        # log.Fatal: the message, then exit 1
            running.exit(1)
        return running


class ServeHostname(EmulationBase):
    """The old k8s.gcr.io/serve_hostname image: Go flags (``-port``, ``-tcp`` ...), HTTP on
    9376 by default."""

    name = "serve_hostname"

    async def start(self, ctx: ContainerContext) -> RunningEmulation:
        running = RunningEmulation(self.label(ctx), stop_code=137)
        try:
            flags, _rest = parse_goflag(ctx.args, SERVE_HOSTNAME_FLAGS)
        except InvalidError as exc:
            ctx.log(str(exc))
            running.exit(2)
            return running
        try:
            await start_serve_hostname(ctx, running, flags)
        except InvalidError as exc:
            if exc.__cause__ is not None:
                raise
            _go_log(ctx, str(exc))
            running.exit(1)
        return running


def parse_args(args: Sequence[str]) -> tuple[str, list[str]]:
    """(subcommand, remaining args) as agnhost's cobra root picks them; for tests and docs."""
    items = list(args) or ["pause"]
    i = 0
    while i < len(items):
        arg = items[i]
        if not arg.startswith("-"):
            return arg, items[:i] + items[i + 1:]
        if _KLOG_FLAGS.get(arg.lstrip("-")):   # a root flag whose value is the next arg
            i += 1
        i += 1
    return "", items


__all__ = ["Agnhost", "NETEXEC_FLAGS", "SERVE_HOSTNAME_FLAGS", "ServeHostname", "parse_args"]
