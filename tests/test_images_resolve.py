"""Image names to emulations, and the sans-I/O pieces the emulations are built from (flag
parsing, Go formats, redis inline splitting, mysql packets); plus one run on uvloop."""
from __future__ import annotations

import asyncio
import os

import pytest
import uvloop

from netemu.errors import InvalidError
from netemu.images import ContainerContext, known_images, resolve
from netemu.images.agnhost import parse_args
from netemu.images.flags import parse_goflag, parse_pflag
from netemu.images.golang import go_duration, parse_go_duration, sniff_content_type
from netemu.images.mysql import MYSQL, handshake_v10, parse_handshake_response
from netemu.images.redis import RedisServer, split_inline
from netemu.images.registry import repository_path


@pytest.mark.parametrize("image, name", [
    ("nginx", "nginx"),
    ("nginx:1.27", "nginx"),
    ("docker.io/library/nginx:latest", "nginx"),
    ("nginx@sha256:0123abcd", "nginx"),
    ("localhost:5000/nginx:1.27@sha256:0123abcd", "nginx"),
    ("nginxinc/nginx-unprivileged", "nginx-unprivileged"),
    ("ghcr.io/nginxinc/nginx-unprivileged:stable", "nginx-unprivileged"),
    ("httpd", "httpd"),
    ("registry.k8s.io/e2e-test-images/agnhost:2.47", "agnhost"),
    ("k8s.gcr.io/serve_hostname", "serve_hostname"),
    ("registry.k8s.io/serve_hostname:1.4", "serve_hostname"),
    ("registry.k8s.io/pause:3.9", "pause"),
    ("busybox", "busybox"),
    ("busybox:1.36", "busybox"),
    ("radial/busyboxplus:curl", "busyboxplus"),
    ("curlimages/curl", "curl"),
    ("alpine", "alpine"),
    ("ubuntu:24.04", "ubuntu"),
    ("debian", "debian"),
    ("redis", "redis"),
    ("mysql", "mysql"),
    ("mariadb", "mariadb"),
    ("hashicorp/http-echo", "http-echo"),
    ("hashicorp/http-echo:1.0", "http-echo"),
    ("NGINX", "nginx"),
], ids=lambda value: value if isinstance(value, str) else "")
def test_resolve_by_repository(image, name):
    emulation = resolve(image)
    assert emulation is not None and emulation.name == name


@pytest.mark.parametrize("image", ["postgres", "example.com/team/app:1.0", "", "nginxfoo",
                                   "myorg/curl"])
def test_resolve_unknown_is_none(image):
    assert resolve(image) is None


def test_known_images_all_resolve():
    assert "nginx" in known_images() and "hashicorp/http-echo" in known_images()
    assert all(resolve(name) is not None for name in known_images())


@pytest.mark.parametrize("image, repository", [
    ("docker.io/library/nginx:1.27@sha256:ab", "library/nginx"),
    ("localhost:5000/a/b:c", "a/b"),
    ("registry.k8s.io/e2e-test-images/agnhost:2.47", "e2e-test-images/agnhost"),
    ("nginx", "nginx"),
])
def test_repository_path(image, repository):
    assert repository_path(image) == repository


@pytest.mark.parametrize("image, args, program", [
    ("busybox", ("sleep", "3600"), ("sleep", "3600")),
    ("busybox", (), None),
    ("curlimages/curl", ("-s", "http://web"), ("curl", "-s", "http://web")),
    ("curlimages/curl", ("sh", "-c", "true"), ("sh", "-c", "true")),
    ("nginx", ("nginx", "-g", "daemon off;"), None),
    ("registry.k8s.io/e2e-test-images/agnhost:2.47", ("netexec",), None),
], ids=["busybox-args", "busybox-none", "curl-flags", "curl-command", "nginx", "agnhost"])
def test_real_program_for_args(image, args, program):
    emulation = resolve(image)
    assert emulation is not None
    assert emulation.real_program(args) == program


# flags ---------------------------------------------------------------------------------------

PFLAG_DEFAULTS = {"http-port": 8080, "tcp": False, "text": ""}


@pytest.mark.parametrize("args, values, positional", [
    ([], {}, []),
    (["--http-port=9000"], {"http-port": 9000}, []),
    (["--http-port", "0x10"], {"http-port": 16}, []),
    (["--tcp"], {"tcp": True}, []),
    (["--tcp=false", "extra"], {"tcp": False}, ["extra"]),
    (["--v=4", "--logtostderr", "--text", "a b"], {"text": "a b"}, []),
    (["--", "--tcp"], {}, ["--tcp"]),
], ids=["none", "equals", "separate-hex", "bare-bool", "bool-false", "klog-ignored", "dashdash"])
def test_parse_pflag(args, values, positional):
    parsed, rest = parse_pflag(args, PFLAG_DEFAULTS, {"v": True, "logtostderr": False})
    assert parsed == {**PFLAG_DEFAULTS, **values}
    assert rest == positional


@pytest.mark.parametrize("args, message", [
    (["--nope"], "unknown flag: --nope"),
    (["--http-port"], "flag needs an argument: --http-port"),
    (["--http-port=x"], 'invalid argument "x" for "--http-port" flag'),
    (["-p"], "unknown shorthand flag: 'p' in -p"),
])
def test_parse_pflag_errors(args, message):
    with pytest.raises(InvalidError, match=message):
        parse_pflag(args, PFLAG_DEFAULTS)


def test_parse_goflag_stops_at_first_positional():
    parsed, rest = parse_goflag(["-text", "hi", "--tcp", "x", "-other"], PFLAG_DEFAULTS)
    assert parsed["text"] == "hi" and parsed["tcp"] is True
    assert rest == ["x", "-other"]
    with pytest.raises(InvalidError, match="flag provided but not defined: -nope"):
        parse_goflag(["-nope"], PFLAG_DEFAULTS)


@pytest.mark.parametrize("args, subcommand, rest", [
    ((), "pause", []),
    (("netexec", "--http-port=80"), "netexec", ["--http-port=80"]),
    (("--v", "2", "netexec"), "netexec", ["--v", "2"]),
    (("--logtostderr", "serve-hostname"), "serve-hostname", ["--logtostderr"]),
    (("--v=2",), "", ["--v=2"]),
], ids=["default-cmd", "plain", "klog-value-flag", "klog-bool-flag", "flags-only"])
def test_agnhost_picks_the_subcommand_like_cobra(args, subcommand, rest):
    assert parse_args(args) == (subcommand, rest)


# Go formats ----------------------------------------------------------------------------------

@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (0.0000412, "41.2µs"), (0.5, "500ms"), (1.5, "1.5s"), (123.5, "2m3.5s"),
    (3600, "1h0m0s"), (5e-9, "5ns"),
])
def test_go_duration(seconds, text):
    assert go_duration(seconds) == text


@pytest.mark.parametrize("text, seconds", [
    ("0", 0.0), ("1s", 1.0), ("1m30s", 90.0), ("250ms", 0.25), ("1.5h", 5400.0), ("-2s", -2.0),
])
def test_parse_go_duration(text, seconds):
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "s", "1x", "1.s5"])
def test_parse_go_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_go_duration(text)


@pytest.mark.parametrize("body, content_type", [
    (b"hello", "text/plain; charset=utf-8"),
    (b"  <html><body>", "text/html; charset=utf-8"),
    (b"\x00\x01\x02", "application/octet-stream"),
])
def test_sniff_content_type(body, content_type):
    assert sniff_content_type(body) == content_type


# redis and mysql, without sockets ------------------------------------------------------------

@pytest.mark.parametrize("line, args", [
    (b"SET a b", [b"SET", b"a", b"b"]),
    (b'  SET "a b" \'c d\'  ', [b"SET", b"a b", b"c d"]),
    (b'ECHO "x\\ny\\x41"', [b"ECHO", b"x\nyA"]),
    (b"", []),
    (b'ECHO "open', None),
    (b'ECHO "a"b', None),
], ids=["plain", "quotes", "escapes", "empty", "unbalanced", "quote-then-char"])
def test_redis_split_inline(line, args):
    assert split_inline(line) == args


def test_redis_expiry_follows_the_clock():
    now = [100.0]
    server = RedisServer(6379, clock=lambda: now[0])
    session = server.new_session()
    assert server.execute(session, [b"SET", b"k", b"v", b"PX", b"1500"]) == b"+OK\r\n"
    assert server.execute(session, [b"TTL", b"k"]) == b":2\r\n"
    now[0] += 1.0
    assert server.execute(session, [b"GET", b"k"]) == b"$1\r\nv\r\n"
    now[0] += 1.0
    assert server.execute(session, [b"GET", b"k"]) == b"$-1\r\n"
    assert server.execute(session, [b"TTL", b"k"]) == b":-2\r\n"


def test_mysql_handshake_round_trip():
    greeting = handshake_v10(MYSQL, 8, b"A" * 20)
    assert greeting[3] == 0 and greeting[4] == 10
    assert b"8.4.3\x00" in greeting and greeting.endswith(b"caching_sha2_password\x00")
    response = ((1 << 9 | 1 << 15).to_bytes(4, "little") + b"\x00" * 28 + b"app\x00\x00")
    assert parse_handshake_response(response) == ("app", False)
    assert parse_handshake_response(b"short") is None


# uvloop --------------------------------------------------------------------------------------

def test_emulations_run_on_uvloop():
    async def scenario() -> tuple[bytes, bytes]:
        ctx = ContainerContext.plain(pod_ip="127.244.202.1", image="nginx",
                                     ports=(("http", 0, "TCP"),))
        nginx = await resolve("nginx").start(ctx)          # type: ignore[union-attr]
        redis_ctx = ContainerContext.plain(pod_ip="127.244.202.1", image="redis",
                                           ports=(("redis", 0, "TCP"),))
        redis = await resolve("redis").start(redis_ctx)    # type: ignore[union-attr]
        try:
            env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
            proc = await asyncio.create_subprocess_exec(
                "curl", "--noproxy", "*", "-sS", "--max-time", "10",
                f"http://127.244.202.1:{nginx.port()}/", stdout=asyncio.subprocess.PIPE,
                env=env)
            page, _ = await proc.communicate()
            reader, writer = await asyncio.open_connection("127.244.202.1", redis.port())
            writer.write(b"PING\r\n")
            async with asyncio.timeout(5):
                pong = await reader.readline()
            writer.close()
            return page, pong
        finally:
            await nginx.stop()
            await redis.stop()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        page, pong = runner.run(scenario())
    assert b"<h1>Welcome to nginx!</h1>" in page
    assert pong == b"+PONG\r\n"
