"""The ``mysql`` and ``mariadb`` images: a server greeting and a refusal.

Owns: the MySQL protocol v10 initial handshake (``8.4.3`` with ``caching_sha2_password``;
MariaDB ``11.4.4`` with ``mysql_native_password``, no TLS offered), reading the client's
handshake response and answering ERR 1045 ``Access denied for user '<user>'@'<client ip>'`` -
always, whatever the password: there is no database behind it. That is enough for TCP readiness
checks, ``mysqladmin ping`` (which counts "access denied" as alive) and clients that show the
server greeting.

Like the real entrypoint it refuses to start (exit 1) without one of the root password
variables (``MYSQL_ROOT_PASSWORD``, ``MYSQL_ALLOW_EMPTY_PASSWORD``, ``MYSQL_RANDOM_ROOT_PASSWORD``;
MariaDB also ``MARIADB_*``). Port: every declared TCP containerPort, else 3306.
"""
from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from netemu.images.base import (
    ContainerContext, EmulationBase, RunningEmulation, listen_tcp, start_or_roll_back,
)

# capability flags (include/mysql_com.h)
CLIENT_LONG_PASSWORD = 1
CLIENT_CONNECT_WITH_DB = 1 << 3
CLIENT_PROTOCOL_41 = 1 << 9
CLIENT_SSL = 1 << 11
CLIENT_TRANSACTIONS = 1 << 13
CLIENT_SECURE_CONNECTION = 1 << 15
CLIENT_MULTI_STATEMENTS = 1 << 16
CLIENT_MULTI_RESULTS = 1 << 17
CLIENT_PS_MULTI_RESULTS = 1 << 18
CLIENT_PLUGIN_AUTH = 1 << 19
CLIENT_CONNECT_ATTRS = 1 << 20
CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21
CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS = 1 << 22
CLIENT_SESSION_TRACK = 1 << 23
CLIENT_DEPRECATE_EOF = 1 << 24

SERVER_CAPABILITIES = (
    CLIENT_LONG_PASSWORD | 1 << 1 | 1 << 2 | CLIENT_CONNECT_WITH_DB | 1 << 4 | 1 << 6 | 1 << 7
    | 1 << 8 | CLIENT_PROTOCOL_41 | 1 << 10 | 1 << 12 | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION | CLIENT_MULTI_STATEMENTS | CLIENT_MULTI_RESULTS
    | CLIENT_PS_MULTI_RESULTS | CLIENT_PLUGIN_AUTH | CLIENT_CONNECT_ATTRS
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS
    | CLIENT_SESSION_TRACK | CLIENT_DEPRECATE_EOF
)   # no CLIENT_SSL and no compression: clients go on in plain text
SERVER_STATUS_AUTOCOMMIT = 0x0002
ER_ACCESS_DENIED_ERROR = 1045
MAX_CLIENT_PACKET = 1 << 20
CONNECT_TIMEOUT = 10.0   # connect_timeout


@dataclass(frozen=True)
class Flavor:
    name: str
    version: str
    auth_plugin: str
    charset: int
    password_variables: tuple[str, ...]
    missing_password: tuple[str, ...]
    entrypoint_version: str
    ready_lines: tuple[str, ...]


MYSQL = Flavor(
    name="mysql", version="8.4.3", auth_plugin="caching_sha2_password", charset=255,
    password_variables=("MYSQL_ROOT_PASSWORD", "MYSQL_ROOT_PASSWORD_FILE",
                        "MYSQL_ALLOW_EMPTY_PASSWORD", "MYSQL_RANDOM_ROOT_PASSWORD"),
    missing_password=(
        "Database is uninitialized and password option is not specified",
        "    You need to specify one of the following as an environment variable:",
        "    - MYSQL_ROOT_PASSWORD",
        "    - MYSQL_ALLOW_EMPTY_PASSWORD",
        "    - MYSQL_RANDOM_ROOT_PASSWORD"),
    entrypoint_version="MySQL Server 8.4.3-1.el9",
    ready_lines=(
        "{iso} 0 [System] [MY-015015] [Server] MySQL Server - start.",
        "{iso} 0 [System] [MY-010116] [Server] /usr/sbin/mysqld (mysqld 8.4.3) starting as "
        "process 1",
        "{iso} 0 [System] [MY-010931] [Server] /usr/sbin/mysqld: ready for connections. "
        "Version: '8.4.3'  socket: '/var/run/mysqld/mysqld.sock'  port: {port}  MySQL "
        "Community Server - GPL."),
)

MARIADB = Flavor(
    name="mariadb", version="5.5.5-11.4.4-MariaDB-ubu2404", auth_plugin="mysql_native_password",
    charset=45,
    password_variables=("MARIADB_ROOT_PASSWORD", "MARIADB_ROOT_PASSWORD_HASH",
                        "MARIADB_ROOT_PASSWORD_FILE", "MARIADB_ALLOW_EMPTY_ROOT_PASSWORD",
                        "MARIADB_RANDOM_ROOT_PASSWORD", "MYSQL_ROOT_PASSWORD",
                        "MYSQL_ROOT_PASSWORD_FILE", "MYSQL_ALLOW_EMPTY_PASSWORD",
                        "MYSQL_RANDOM_ROOT_PASSWORD"),
    missing_password=(
        "Database is uninitialized and password option is not specified",
        "\tYou need to specify one of MARIADB_ROOT_PASSWORD, MARIADB_ROOT_PASSWORD_HASH, "
        "MARIADB_ALLOW_EMPTY_ROOT_PASSWORD and MARIADB_RANDOM_ROOT_PASSWORD"),
    entrypoint_version="MariaDB Server 1:11.4.4+maria~ubu2404",
    ready_lines=(
        "{plain} 0 [Note] Starting MariaDB 11.4.4-MariaDB-ubu2404 source revision "
        "0000000000000000000000000000000000000000 as process 1",
        "{plain} 0 [Note] mariadbd: ready for connections.",
        "Version: '11.4.4-MariaDB-ubu2404'  socket: '/run/mysqld/mysqld.sock'  port: {port}  "
        "mariadb.org binary distribution"),
)


def packet(sequence: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([sequence & 0xFF]) + payload


def scramble() -> bytes:
    """20 bytes of auth challenge, printable-ish and never NUL, as the server makes them."""
    return bytes(secrets.randbelow(94) + 33 for _ in range(20))


def handshake_v10(flavor: Flavor, connection_id: int, challenge: bytes) -> bytes:
    """The server's first packet (Protocol::HandshakeV10), sequence 0."""
    payload = b"".join([
        b"\x0a", flavor.version.encode() + b"\x00", connection_id.to_bytes(4, "little"),
        challenge[:8], b"\x00",
        (SERVER_CAPABILITIES & 0xFFFF).to_bytes(2, "little"), bytes([flavor.charset]),
        SERVER_STATUS_AUTOCOMMIT.to_bytes(2, "little"),
        (SERVER_CAPABILITIES >> 16).to_bytes(2, "little"),
        bytes([len(challenge) + 1]), b"\x00" * 10,
        challenge[8:] + b"\x00", flavor.auth_plugin.encode() + b"\x00",
    ])
    return packet(0, payload)


def err_packet(sequence: int, code: int, sql_state: str, message: str) -> bytes:
    return packet(sequence, b"\xff" + code.to_bytes(2, "little") + b"#" + sql_state.encode()
                  + message.encode("utf-8", "replace"))


def _lenenc(data: bytes, pos: int) -> tuple[int, int]:
    first = data[pos]
    if first < 0xFB:
        return first, pos + 1
    width = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first, 0)
    return int.from_bytes(data[pos + 1:pos + 1 + width], "little"), pos + 1 + width


def parse_handshake_response(payload: bytes) -> tuple[str, bool] | None:
    """(user, sent a password) from Protocol::HandshakeResponse41; None if not one."""
    if len(payload) < 32:
        return None
    capabilities = int.from_bytes(payload[:4], "little")
    if not capabilities & CLIENT_PROTOCOL_41:
        return None
    end = payload.find(b"\x00", 32)
    if end < 0:
        return None
    user = payload[32:end].decode("utf-8", "replace")
    pos = end + 1
    if pos >= len(payload):
        return user, False
    if capabilities & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        length, _ = _lenenc(payload, pos)
    elif capabilities & CLIENT_SECURE_CONNECTION:
        length = payload[pos]
    else:
        length = max(0, payload.find(b"\x00", pos) - pos)
    return user, length > 0


def _missing_password(env: Mapping[str, str], flavor: Flavor) -> bool:
    return not any(env.get(name) for name in flavor.password_variables)


class MySQL(EmulationBase):
    def __init__(self, flavor: Flavor = MYSQL) -> None:
        self.flavor = flavor
        self.name = flavor.name

    async def start(self, ctx: ContainerContext) -> RunningEmulation:
        flavor = self.flavor
        running = RunningEmulation(self.label(ctx), stop_code=0)
        note = time.strftime("%Y-%m-%d %H:%M:%S+00:00", time.gmtime())
        for line in (f"Entrypoint script for {flavor.entrypoint_version} started.",
                     "Switching to dedicated user 'mysql'",
                     f"Entrypoint script for {flavor.entrypoint_version} started."):
            ctx.log(f"{note} [Note] [Entrypoint]: {line}")
        if _missing_password(ctx.env, flavor):
            first, *rest = flavor.missing_password
            ctx.log(f"{note} [ERROR] [Entrypoint]: {first}")
            for line in rest:
                ctx.log(line)
            running.exit(1)
            return running
        connection_ids = itertools.count(8)

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            challenge = scramble()
            writer.write(handshake_v10(flavor, next(connection_ids), challenge))
            await writer.drain()
            async with asyncio.timeout(CONNECT_TIMEOUT):
                header = await reader.readexactly(4)
                length = int.from_bytes(header[:3], "little")
                if length > MAX_CLIENT_PACKET:
                    return
                payload = await reader.readexactly(length)
            parsed = parse_handshake_response(payload)
            if parsed is None:
                return
            user, with_password = parsed
            client_ip = writer.get_extra_info("peername")[0]
            message = (f"Access denied for user '{user}'@'{client_ip}' "
                       f"(using password: {'YES' if with_password else 'NO'})")
            writer.write(err_packet(header[3] + 1, ER_ACCESS_DENIED_ERROR, "28000", message))
            await writer.drain()

        ports = ctx.declared_ports("TCP") or (3306,)
        await start_or_roll_back(running, [
            lambda port=port: listen_tcp(ctx, running, port, on_client, running.name)
            for port in ports])
        now = time.time()
        iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + \
            f".{int(now * 1e6) % 1000000:06d}Z"
        plain = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now))
        for line in flavor.ready_lines:
            ctx.log(line.format(iso=iso, plain=plain, port=running.port()))
        return running


__all__ = ["MARIADB", "MYSQL", "MySQL", "SERVER_CAPABILITIES", "err_packet", "handshake_v10",
           "packet", "parse_handshake_response"]
