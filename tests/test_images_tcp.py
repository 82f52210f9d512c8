"""Raw TCP and UDP emulations (redis, mysql, agnhost's UDP and TCP modes) and the lifecycle
every emulation shares: stop frees the ports, bind failures are NetemuErrors, exit codes."""
from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import pytest

from netemu.errors import ConflictError, InvalidError, NetemuError
from netemu.images import ContainerContext, RunningEmulation, resolve
from netemu.images.mysql import CLIENT_PLUGIN_AUTH, CLIENT_PROTOCOL_41, CLIENT_SECURE_CONNECTION
from netemu.images.mysql import packet

AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.47"


class Pods:
    def __init__(self) -> None:
        self.running: list[RunningEmulation] = []

    async def start(self, image: str, ip: str, *, args: tuple[str, ...] = (),
                    ports: tuple[tuple[str, int, str], ...] = (("main", 0, "TCP"),),
                    env: dict[str, str] | None = None) -> tuple[RunningEmulation, list[str]]:
        logs: list[str] = []
        ctx = ContainerContext.plain(pod_ip=ip, image=image, pod_name="db-0", args=args,
                                     ports=ports, env=env, log=logs.append)
        emulation = resolve(image)
        assert emulation is not None
        running = await emulation.start(ctx)
        self.running.append(running)
        return running, logs


@pytest.fixture
async def pods():
    pods = Pods()
    yield pods
    for running in pods.running:
        await running.stop()


async def udp_ask(host: str, port: int, message: bytes,
                  source: tuple[str, int] = ("127.0.0.1", 0)) -> tuple[bytes, str]:
    """Send one datagram, wait for one reply; returns (reply, our address as ip:port)."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.bind(source)
        await loop.sock_sendto(sock, message, (host, port))
        async with asyncio.timeout(5):
            data, _ = await loop.sock_recvfrom(sock, 4096)
        local = sock.getsockname()
        return data, f"{local[0]}:{local[1]}"


# redis ---------------------------------------------------------------------------------------

def resp(*args: bytes | str) -> bytes:
    parts = [arg.encode() if isinstance(arg, str) else arg for arg in args]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


REDIS_EXCHANGE = [
    (resp("PING"), b"+PONG\r\n"),
    (b"PING\r\n", b"+PONG\r\n"),                                 # inline
    (resp("ECHO", "hi there"), b"$8\r\nhi there\r\n"),
    (resp("SET", "k", "v1", "EX", "100"), b"+OK\r\n"),
    (resp("GET", "k"), b"$2\r\nv1\r\n"),
    (resp("GET", "missing"), b"$-1\r\n"),
    (resp("SET", "k", "v2", "NX"), b"$-1\r\n"),
    (resp("INCR", "n"), b":1\r\n"),
    (b'INCRBY n "41"\r\n', b":42\r\n"),
    (resp("INCR", "k"), b"-ERR value is not an integer or out of range\r\n"),
    (resp("EXISTS", "k", "n", "nope"), b":2\r\n"),
    (resp("KEYS", "*"), None),                                  # order-free, checked below
    (resp("DEL", "k", "nope"), b":1\r\n"),
    (resp("DBSIZE"), b":1\r\n"),
    (resp("GET"), b"-ERR wrong number of arguments for 'get' command\r\n"),
    (resp("FROB", "a", "b"),
     b"-ERR unknown command 'FROB', with args beginning with: 'a' 'b' \r\n"),
    (resp("COMMAND", "DOCS"), b"*0\r\n"),
    (resp("FLUSHALL"), b"+OK\r\n"),
    (resp("KEYS", "*"), b"*0\r\n"),
]


async def test_redis_speaks_resp2(pods):
    running, logs = await pods.start("redis:7", "127.244.201.1")
    reader, writer = await asyncio.open_connection("127.244.201.1", running.port())
    try:
        for request, expected in REDIS_EXCHANGE:
            writer.write(request)
            async with asyncio.timeout(5):
                if expected is None:
                    header = await reader.readline()
                    assert header == b"*2\r\n"
                    keys = {(await reader.readline(), await reader.readline())[1]
                            for _ in range(2)}
                    assert keys == {b"k\r\n", b"n\r\n"}
                    continue
                got = await reader.readexactly(len(expected))
            assert got == expected, request
        writer.write(resp("INFO"))
        async with asyncio.timeout(5):
            size = int((await reader.readline())[1:])
            info = await reader.readexactly(size + 2)
        assert b"redis_version:7.4.1\r\n" in info
        writer.write(resp("QUIT"))
        async with asyncio.timeout(5):
            assert await reader.read() == b"+OK\r\n"     # then the server closes
    finally:
        writer.close()
    assert any("Ready to accept connections tcp" in line for line in logs)


async def test_redis_keeps_data_per_container(pods):
    first, _ = await pods.start("redis", "127.244.201.2")
    second, _ = await pods.start("redis", "127.244.201.3")

    async def ask(host: str, port: int, request: bytes, size: int) -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        async with asyncio.timeout(5):
            reply = await reader.readexactly(size)
        writer.close()
        return reply

    assert await ask("127.244.201.2", first.port(), resp("SET", "x", "1"), 5) == b"+OK\r\n"
    assert await ask("127.244.201.2", first.port(), resp("GET", "x"), 7) == b"$1\r\n1\r\n"
    assert await ask("127.244.201.3", second.port(), resp("GET", "x"), 5) == b"$-1\r\n"


async def test_redis_args_port_and_password(pods):
    running, _ = await pods.start("redis", "127.244.201.4",
                                  args=("redis-server", "--port", "26379", "--requirepass", "s3"))
    assert running.port() == 26379
    reader, writer = await asyncio.open_connection("127.244.201.4", 26379)
    try:
        writer.write(resp("GET", "a") + resp("AUTH", "nope") + resp("AUTH", "s3") + resp("PING"))
        expected = (b"-NOAUTH Authentication required.\r\n"
                    b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
                    b"+OK\r\n+PONG\r\n")
        async with asyncio.timeout(5):
            assert await reader.readexactly(len(expected)) == expected
    finally:
        writer.close()


async def test_redis_protocol_error_closes(pods):
    running, _ = await pods.start("redis", "127.244.201.5")
    reader, writer = await asyncio.open_connection("127.244.201.5", running.port())
    writer.write(b"*1\r\n+oops\r\n")
    async with asyncio.timeout(5):
        assert await reader.read() == b"-ERR Protocol error: expected '$', got '+'\r\n"
    writer.close()


# mysql / mariadb -----------------------------------------------------------------------------

def parse_greeting(data: bytes) -> dict[str, object]:
    length = int.from_bytes(data[:3], "little")
    assert data[3] == 0 and len(data) == 4 + length
    payload = data[4:]
    assert payload[0] == 10                                  # protocol version
    end = payload.index(b"\x00", 1)
    version = payload[1:end].decode()
    pos = end + 1
    connection_id = int.from_bytes(payload[pos:pos + 4], "little")
    part1 = payload[pos + 4:pos + 12]
    assert payload[pos + 12] == 0
    caps = int.from_bytes(payload[pos + 13:pos + 15], "little")
    caps |= int.from_bytes(payload[pos + 18:pos + 20], "little") << 16
    data_len = payload[pos + 20]
    assert payload[pos + 21:pos + 31] == b"\x00" * 10
    part2 = payload[pos + 31:pos + 31 + max(13, data_len - 8)]
    plugin = payload[pos + 31 + len(part2):].rstrip(b"\x00").decode()
    return {"version": version, "id": connection_id, "caps": caps,
            "scramble": part1 + part2[:-1], "plugin": plugin}


def handshake_response(user: str, auth: bytes) -> bytes:
    caps = CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH
    return (caps.to_bytes(4, "little") + (1 << 24).to_bytes(4, "little") + bytes([255])
            + b"\x00" * 23 + user.encode() + b"\x00" + bytes([len(auth)]) + auth
            + b"caching_sha2_password\x00")


@pytest.mark.parametrize("image, env, version, plugin", [
    ("mysql:8.4", {"MYSQL_ROOT_PASSWORD": "pw"}, "8.4.3", "caching_sha2_password"),
    ("mariadb", {"MARIADB_ROOT_PASSWORD": "pw"}, "5.5.5-11.4.4-MariaDB-ubu2404",
     "mysql_native_password"),
], ids=["mysql", "mariadb"])
async def test_mysql_greets_then_denies_access(pods, image, env, version, plugin):
    running, logs = await pods.start(image, "127.244.201.10", env=env)
    reader, writer = await asyncio.open_connection("127.244.201.10", running.port(),
                                                   local_addr=("127.0.0.9", 0))
    try:
        async with asyncio.timeout(5):
            header = await reader.readexactly(4)
            greeting = parse_greeting(header + await reader.readexactly(
                int.from_bytes(header[:3], "little")))
        assert greeting["version"] == version
        assert greeting["plugin"] == plugin
        assert len(greeting["scramble"]) == 20 and b"\x00" not in greeting["scramble"]
        assert greeting["caps"] & CLIENT_PROTOCOL_41 and not greeting["caps"] & (1 << 11)
        writer.write(packet(1, handshake_response("root", b"x" * 32)))
        async with asyncio.timeout(5):
            err = await reader.read()
    finally:
        writer.close()
    assert err[3] == 2 and err[4] == 0xFF
    assert int.from_bytes(err[5:7], "little") == 1045
    assert err[7:13] == b"#28000"
    assert err[13:] == b"Access denied for user 'root'@'127.0.0.9' (using password: YES)"
    assert any("ready for connections" in line for line in logs)


@pytest.mark.parametrize("image", ["mysql", "mariadb:11"])
async def test_mysql_without_a_root_password_exits_like_the_image(pods, image):
    running, logs = await pods.start(image, "127.244.201.11")
    assert running.exited.result() == 1
    assert any("[ERROR] [Entrypoint]: Database is uninitialized" in line for line in logs)
    assert running.listeners == []


# agnhost UDP and raw TCP ---------------------------------------------------------------------

@pytest.mark.parametrize("message, expected", [
    (b"hostname", "db-0"), (b"echo Hello There\n", "hello there"), (b"clientip", None),
], ids=["hostname", "echo-lowercases", "clientip"])
async def test_netexec_udp_commands(pods, message, expected):
    running, _ = await pods.start(AGNHOST, "127.244.201.20",
                                  args=("netexec", "--http-port=0", "--udp-port=0"))
    reply, local = await udp_ask("127.244.201.20", running.port("UDP"), message,
                                 source=("127.0.0.8", 0))
    assert reply.decode() == (expected or local)


async def test_serve_hostname_raw_tcp_and_udp(pods):
    tcp, _ = await pods.start(AGNHOST, "127.244.201.21",
                              args=("serve-hostname", "--tcp", "--http=false", "--port=0"))
    reader, writer = await asyncio.open_connection("127.244.201.21", tcp.port())
    async with asyncio.timeout(5):
        assert await reader.read() == b"db-0"   # writes the hostname and closes
    writer.close()
    udp, _ = await pods.start(AGNHOST, "127.244.201.22",
                              args=("serve-hostname", "--udp", "--http=false", "--port=0"))
    assert (await udp_ask("127.244.201.22", udp.port("UDP"), b"x"))[0] == b"db-0"


# lifecycle -----------------------------------------------------------------------------------

@pytest.mark.parametrize("image, args, env", [
    ("nginx", (), None),
    ("httpd", (), None),
    (AGNHOST, ("netexec", "--http-port=0", "--udp-port=0"), None),
    ("redis", (), None),
    ("mysql", (), {"MYSQL_ALLOW_EMPTY_PASSWORD": "yes"}),
    ("hashicorp/http-echo", ("-text=x", "-listen=:0"), None),
], ids=["nginx", "httpd", "netexec", "redis", "mysql", "http-echo"])
async def test_stop_frees_every_port(pods, image, args, env):
    running, _ = await pods.start(image, "127.244.201.30", args=args, env=env)
    # an open client connection must not keep anything alive
    tcp_port = running.port("TCP")
    _reader, writer = await asyncio.open_connection("127.244.201.30", tcp_port)
    listeners = list(running.listeners)
    await running.stop()
    await running.stop()                       # idempotent
    assert running.stopped_by_request and running.exited.done()
    for listener in listeners:
        kind = socket.SOCK_STREAM if listener.protocol == "TCP" else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, kind) as sock:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((listener.host, listener.port))
    writer.close()


async def test_address_in_use_is_a_conflict_and_rolls_back(pods):
    with socket.create_server(("127.244.201.31", 0)) as taken:
        busy = taken.getsockname()[1]
        ports = (("a", 28090, "TCP"), ("b", busy, "TCP"))
        with pytest.raises(ConflictError, match=rf"127\.244\.201\.31:{busy}/TCP: address "
                                                "already in use"):
            await pods.start("nginx", "127.244.201.31", ports=ports)
    with socket.create_server(("127.244.201.31", 28090)):
        pass                                   # the first port was closed again


async def test_netexec_udp_port_in_use(pods):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.244.201.32", 0))
        busy = taken.getsockname()[1]
        with pytest.raises(NetemuError, match="UDP: address already in use"):
            await pods.start(AGNHOST, "127.244.201.32",
                             args=("netexec", "--http-port=0", f"--udp-port={busy}"))


LOW_PORT_CHILD = """
import asyncio, sys
from netemu.errors import InvalidError
from netemu.images import ContainerContext, resolve


async def main() -> str:
    ctx = ContainerContext.plain(pod_ip=sys.argv[1], image="nginx", pod_name="db-0", args=(), ports=(),
                                 env=None, log=print)
    try:
        running = await resolve("nginx").start(ctx)
    except InvalidError as exc:
        return f"InvalidError: {exc}"
    await running.stop()
    return "started"

print(asyncio.run(main()))
"""


def without_low_port_privilege() -> list[str]:
    """The argv prefix that runs a program unable to bind ports below 1024: none for an ordinary
    user; as root, util-linux's setpriv drops CAP_NET_BIND_SERVICE (bounding and inheritable)."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--bounding-set=-net_bind_service", "--inh-caps=-net_bind_service"]


async def test_low_port_without_privilege_is_a_clear_error(tmp_path):
    """nginx's port 80 in a process without the privilege (a child without CAP_NET_BIND_SERVICE
    when the suite runs as root); its cwd is a tmp dir, so the repo's dns/ never shadows dnspython."""
    child = await asyncio.create_subprocess_exec(
        *without_low_port_privilege(), sys.executable, "-c", LOW_PORT_CHILD, "127.244.201.33", cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await child.communicate()
    assert child.returncode == 0, err.decode()
    unprivileged_from = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text().strip()
    assert out.decode().startswith("InvalidError: ") and out.decode().strip().endswith(
        "cannot listen on 127.244.201.33:80/TCP: permission denied (ports below 1024 need root or "
        "CAP_NET_BIND_SERVICE)"), f"{out.decode()} (ip_unprivileged_port_start here: {unprivileged_from})"


@pytest.mark.parametrize("image, stop_code", [
    ("registry.k8s.io/pause:3.9", 0), ("busybox", 137), ("radial/busyboxplus:curl", 137),
    ("curlimages/curl", 137), ("alpine", 137), ("ubuntu", 137), ("debian", 137),
], ids=["pause", "busybox", "busyboxplus", "curl", "alpine", "ubuntu", "debian"])
async def test_idle_images_hold_no_sockets_until_stopped(pods, image, stop_code):
    running, logs = await pods.start(image, "127.244.201.40")
    await asyncio.sleep(0)
    assert running.listeners == [] and logs == [] and not running.exited.done()
    await running.stop()
    assert running.exited.result() == stop_code


async def test_agnhost_without_args_pauses(pods):
    running, logs = await pods.start(AGNHOST, "127.244.201.41")
    assert logs == ["Paused"] and not running.exited.done()
    await running.stop()
    assert running.exited.result() == 2       # agnhost pause exits 2 on SIGTERM
