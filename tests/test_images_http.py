"""The HTTP emulations (nginx, httpd, agnhost, http-echo) seen through the real curl binary."""
from __future__ import annotations

import asyncio
import os
import re
import socket

import pytest

from netemu.images import ContainerContext, RunningEmulation, resolve
from netemu.images.agnhost import Agnhost
from netemu.images.httpd import INDEX_PAGE
from netemu.images.nginx import WELCOME_PAGE, error_page

_NO_PROXY_ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


async def curl(*args: str) -> tuple[int, str, str]:
    """Run curl (never through a proxy); returns (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        "curl", "--noproxy", "*", "-sS", "--max-time", "10", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_NO_PROXY_ENV)
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode("latin-1"), err.decode("latin-1")


def split_response(text: str) -> tuple[str, dict[str, str], str]:
    """curl -i output → (status line, headers, body) of the last response."""
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return lines[0], headers, body


class Pods:
    """Starts emulations for one test and stops every one of them afterwards."""

    def __init__(self) -> None:
        self.running: list[RunningEmulation] = []

    async def start(self, image: str, ip: str, *, args: tuple[str, ...] = (),
                    ports: tuple[tuple[str, int, str], ...] = (("http", 0, "TCP"),),
                    env: dict[str, str] | None = None, emulation=None,
                    ) -> tuple[RunningEmulation, list[str]]:
        logs: list[str] = []
        ctx = ContainerContext.plain(pod_ip=ip, image=image, pod_name="web-0",
                                     hostname="web-0", args=args, ports=ports, env=env,
                                     log=logs.append)
        running = await (emulation or resolve(image)).start(ctx)
        self.running.append(running)
        return running, logs


@pytest.fixture
async def pods():
    pods = Pods()
    yield pods
    for running in pods.running:
        await running.stop()


# nginx ---------------------------------------------------------------------------------------

async def test_nginx_serves_the_stock_welcome_page(pods):
    running, _ = await pods.start("nginx:1.27", "127.244.200.1")
    code, out, err = await curl("-i", f"http://127.244.200.1:{running.port()}/")
    assert code == 0, err
    status, headers, body = split_response(out)
    assert status == "HTTP/1.1 200 OK"
    assert body.encode() == WELCOME_PAGE
    assert headers["Server"] == "nginx/1.27.3"
    assert headers["Content-Type"] == "text/html"
    assert headers["Content-Length"] == "615"
    assert headers["Connection"] == "keep-alive"
    assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", headers["Date"])
    assert list(headers)[:2] == ["Server", "Date"]


@pytest.mark.parametrize("path, status", [
    ("/missing", 404), ("/index.html", 200), ("/a/../index.html", 200), ("/..", 400),
], ids=["missing", "index-html", "dot-segments", "above-root"])
async def test_nginx_paths(pods, path, status):
    running, _ = await pods.start("nginx", "127.244.200.2")
    code, out, err = await curl("--path-as-is", "-o", "/dev/null", "-w", "%{http_code}",
                                f"http://127.244.200.2:{running.port()}{path}")
    assert code == 0, err
    assert out == str(status)


async def test_nginx_404_is_the_stock_error_page(pods):
    running, _ = await pods.start("nginx", "127.244.200.3")
    code, out, err = await curl("-i", f"http://127.244.200.3:{running.port()}/nope")
    status, headers, body = split_response(out)
    assert status == "HTTP/1.1 404 Not Found"
    assert body.encode() == error_page(404)
    assert "<hr><center>nginx/1.27.3</center>" in body
    assert headers["Content-Length"] == str(len(error_page(404)))


async def test_nginx_head_has_headers_and_no_body(pods):
    running, _ = await pods.start("nginx", "127.244.200.4")
    code, out, err = await curl("-I", f"http://127.244.200.4:{running.port()}/")
    assert code == 0, err
    status, headers, body = split_response(out)
    assert status == "HTTP/1.1 200 OK"
    assert headers["Content-Length"] == "615"
    assert body == ""


async def test_nginx_keeps_the_connection_alive(pods):
    running, logs = await pods.start("nginx", "127.244.200.5")
    base = f"http://127.244.200.5:{running.port()}"
    code, out, err = await curl("-v", f"{base}/", f"{base}/index.html")
    assert code == 0, err
    assert "Re-using existing connection" in err
    assert out.encode() == WELCOME_PAGE * 2
    access = [line for line in logs if '"GET /' in line]
    assert len(access) == 2
    assert re.fullmatch(
        r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET / HTTP/1\.1" 200 615 '
        r'"-" "curl/[\d.]+" "-"', access[0])


@pytest.mark.parametrize("method, status", [("DELETE", 405), ("POST", 405), ("PUT", 405)],
                         ids=["delete", "post", "put"])
async def test_nginx_refuses_other_methods(pods, method, status):
    running, _ = await pods.start("nginx", "127.244.200.6")
    code, out, err = await curl("-i", "-X", method, f"http://127.244.200.6:{running.port()}/")
    status_line, _, body = split_response(out)
    assert status_line == "HTTP/1.1 405 Not Allowed"
    assert "<title>405 Not Allowed</title>" in body


async def test_nginx_http10_and_connection_close(pods):
    running, _ = await pods.start("nginx", "127.244.200.7")
    url = f"http://127.244.200.7:{running.port()}/"
    for extra in (["--http1.0"], ["-H", "Connection: close"]):
        code, out, err = await curl("-v", "-i", *extra, url)
        assert code == 0, err
        status, headers, body = split_response(out)
        assert status == "HTTP/1.1 200 OK"
        assert headers["Connection"] == "close"
        assert body.encode() == WELCOME_PAGE
        assert "Closing connection" in err


async def test_nginx_serves_every_declared_port(pods):
    ports = (("http", 28080, "TCP"), ("alt", 28081, "TCP"), ("dns", 28082, "UDP"))
    running, _ = await pods.start("nginx", "127.244.200.8", ports=ports)
    assert [(l.protocol, l.port) for l in running.listeners] == [("TCP", 28080), ("TCP", 28081)]
    for listener in running.listeners:
        code, out, _ = await curl(f"http://127.244.200.8:{listener.port}/")
        assert out.encode() == WELCOME_PAGE


async def test_nginx_answers_garbage_with_400_and_closes(pods):
    running, logs = await pods.start("nginx", "127.244.200.9")
    reader, writer = await asyncio.open_connection("127.244.200.9", running.port())
    writer.write(b"\x00\x01 garbage\r\n\r\n")
    async with asyncio.timeout(5):
        reply = await reader.read()   # until the server closes
    writer.close()
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close\r\n" in reply
    assert reply.endswith(error_page(400))


async def test_nginx_missing_host_on_http11_is_400(pods):
    running, _ = await pods.start("nginx", "127.244.200.10")
    reader, writer = await asyncio.open_connection("127.244.200.10", running.port())
    writer.write(b"GET / HTTP/1.1\r\n\r\n")
    async with asyncio.timeout(5):
        reply = await reader.read()
    writer.close()
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="binding port 80 needs root")
async def test_nginx_defaults_to_port_80_and_unprivileged_to_8080(pods):
    plain, _ = await pods.start("nginx", "127.244.200.11", ports=())
    unprivileged, _ = await pods.start("nginxinc/nginx-unprivileged", "127.244.200.12",
                                       ports=())
    assert plain.port() == 80
    assert unprivileged.port() == 8080
    code, out, _ = await curl("http://127.244.200.12:8080/")
    assert out.encode() == WELCOME_PAGE


# httpd ---------------------------------------------------------------------------------------

async def test_httpd_says_it_works(pods):
    running, logs = await pods.start("httpd:2.4", "127.244.200.20")
    url = f"http://127.244.200.20:{running.port()}"
    code, out, err = await curl("-i", f"{url}/")
    status, headers, body = split_response(out)
    assert status == "HTTP/1.1 200 OK"
    assert body.encode() == INDEX_PAGE == b"<html><body><h1>It works!</h1></body></html>\n"
    assert headers["Server"] == "Apache/2.4.62 (Unix)"
    assert headers["Content-Length"] == "45"
    code, out, err = await curl("-i", f"{url}/nope")
    status, headers, body = split_response(out)
    assert status == "HTTP/1.1 404 Not Found"
    assert "<p>The requested URL was not found on this server.</p>" in body
    assert any("AH00094: Command line: 'httpd -D FOREGROUND'" in line for line in logs)
    assert any(re.search(r'"GET / HTTP/1\.1" 200 45$', line) for line in logs)


# agnhost netexec -----------------------------------------------------------------------------

NETEXEC = ("netexec", "--http-port=0", "--udp-port=0")
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.47"


async def test_netexec_hostname_echo_and_root(pods):
    running, logs = await pods.start(AGNHOST, "127.244.200.30", args=NETEXEC)
    base = f"http://127.244.200.30:{running.port('TCP')}"
    assert (await curl(f"{base}/hostname"))[1] == "web-0"
    assert (await curl(f"{base}/echo?msg=hello%20there"))[1] == "hello there"
    assert re.fullmatch(r"NOW: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \+0000 UTC m=\+\d+\.\d{9}",
                        (await curl(f"{base}/"))[1])
    code, out, _ = await curl("-i", f"{base}/echo?msg=teapot&code=418")
    status, headers, body = split_response(out)
    assert status == "HTTP/1.1 418 I'm a Teapot" and body == "teapot"
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert any(line.endswith("Started HTTP server on port 0") for line in logs)


async def test_netexec_clientip_is_the_peer_address(pods):
    running, _ = await pods.start(AGNHOST, "127.244.200.31", args=NETEXEC)
    code, out, err = await curl("--interface", "127.0.0.7", "-w", "\n%{local_ip}:%{local_port}",
                                f"http://127.244.200.31:{running.port('TCP')}/clientip")
    assert code == 0, err
    body, seen_by_curl = out.split("\n")
    assert body == seen_by_curl
    assert body.startswith("127.0.0.7:")


@pytest.mark.parametrize("args, status", [
    (NETEXEC, 200), (("netexec", "--http-port=0", "--udp-port=-1"), 412),
], ids=["udp-ready", "udp-disabled"])
async def test_netexec_healthz_follows_the_udp_server(pods, args, status):
    running, _ = await pods.start(AGNHOST, "127.244.200.32", args=args)
    code, out, _ = await curl("-o", "/dev/null", "-w", "%{http_code}",
                              f"http://127.244.200.32:{running.port('TCP')}/healthz")
    assert out == str(status)


async def test_netexec_refuses_shell(pods):
    running, _ = await pods.start(AGNHOST, "127.244.200.33", args=NETEXEC)
    code, out, _ = await curl("-o", "/dev/null", "-w", "%{http_code}",
                              f"http://127.244.200.33:{running.port('TCP')}/shell?cmd=id")
    assert out == "403"


async def test_netexec_exit_ends_the_container_with_the_code(pods):
    running, logs = await pods.start(AGNHOST, "127.244.200.34", args=NETEXEC)
    port = running.port("TCP")
    code, _, err = await curl(f"http://127.244.200.34:{port}/exit?code=3")
    assert code == 52, err          # os.Exit at once: "Empty reply from server"
    async with asyncio.timeout(5):
        assert await running.exited == 3
    assert not running.stopped_by_request
    with socket.create_server(("127.244.200.34", port)):
        pass                        # the port is free again


async def test_netexec_exit_with_timeout_answers_first(pods):
    running, _ = await pods.start(AGNHOST, "127.244.200.35", args=NETEXEC)
    url = f"http://127.244.200.35:{running.port('TCP')}/exit?code=7&timeout=1s"
    code, out, err = await curl("-o", "/dev/null", "-w", "%{http_code}", url)
    assert (code, out) == (0, "200"), err
    async with asyncio.timeout(5):
        assert await running.exited == 7


async def test_netexec_http_override(pods):
    running, _ = await pods.start(
        AGNHOST, "127.244.200.36", args=NETEXEC + ("--http-override=/echo?msg=fixed",))
    assert (await curl(f"http://127.244.200.36:{running.port('TCP')}/anything"))[1] == "fixed"


# serve-hostname and liveness -----------------------------------------------------------------

@pytest.mark.parametrize("image, args", [
    (AGNHOST, ("serve-hostname", "--port=0")),
    ("k8s.gcr.io/serve_hostname", ("-port=0",)),
], ids=["agnhost", "legacy-image"])
async def test_serve_hostname_over_http(pods, image, args):
    running, logs = await pods.start(image, "127.244.200.40", args=args)
    assert (await curl(f"http://127.244.200.40:{running.port()}/any"))[1] == "web-0"
    assert any("HTTP request from 127.0.0.1:" in line for line in logs)


async def test_liveness_turns_unhealthy_after_ten_seconds(pods):
    now = [1000.0]
    ip = "127.244.200.41"
    await pods.start(AGNHOST, ip, args=("liveness",), emulation=Agnhost(clock=lambda: now[0]))  # port 8080
    url = f"http://{ip}:8080/healthz"
    assert (await curl("-w", " %{http_code}", url))[1] == "ok 200"
    now[0] += 10.5
    code, out, _ = await curl("-w", " %{http_code}", url)
    assert out == "error: 10.5 500"


# http-echo -----------------------------------------------------------------------------------

async def test_http_echo_answers_every_path_with_its_text(pods):
    running, logs = await pods.start("hashicorp/http-echo", "127.244.200.50",
                                     args=("-text=hello world", "-listen=:0"))
    url = f"http://127.244.200.50:{running.port()}"
    code, out, err = await curl("-i", f"{url}/some/path")
    status, headers, body = split_response(out)
    assert (status, body) == ("HTTP/1.1 200 OK", "hello world\n")
    assert headers["X-App-Name"] == "http-echo"
    assert list(headers) == ["X-App-Name", "X-App-Version", "Date", "Content-Length",
                             "Content-Type"]
    assert (await curl(f"{url}/health"))[1] == '{"status":"ok"}\n'
    assert any(line.endswith("[INFO] server is listening on :0") for line in logs)
    assert any('"GET /some/path HTTP/1.1" 200 12 "curl/' in line for line in logs)


@pytest.mark.parametrize("image, args, env, code, message", [
    ("hashicorp/http-echo", (), None, 127, "Missing -text option or ECHO_TEXT env var!"),
    ("hashicorp/http-echo", ("-bogus",), None, 2, "flag provided but not defined: -bogus"),
    ("hashicorp/http-echo", ("-text=x", "extra"), None, 127, "Too many arguments!"),
    (AGNHOST, ("frobnicate",), None, 1, 'Error: unknown command "frobnicate" for "app"'),
    (AGNHOST, ("netexec", "--bogus"), None, 1, "Error: unknown flag: --bogus"),
    (AGNHOST, ("porter",), None, 1, "agnhost subcommand 'porter' is not emulated"),
    (AGNHOST, ("serve-hostname", "--tcp"), None, 1,
     "Can't server TCP/UDP mode and HTTP mode at the same time"),
], ids=["echo-no-text", "echo-bad-flag", "echo-extra-arg", "agnhost-unknown",
        "agnhost-bad-flag", "agnhost-not-emulated", "serve-hostname-conflict"])
async def test_bad_args_end_the_container(pods, image, args, env, code, message):
    running, logs = await pods.start(image, "127.244.200.51", args=args, env=env)
    assert running.exited.done() and running.exited.result() == code
    assert any(message in line for line in logs), logs
    assert running.listeners == []


async def test_http_echo_takes_text_from_env(pods):
    running, _ = await pods.start("hashicorp/http-echo", "127.244.200.52", args=("-listen=:0",),
                                  env={"ECHO_TEXT": "from env"})
    assert (await curl(f"http://127.244.200.52:{running.port()}/"))[1] == "from env\n"
