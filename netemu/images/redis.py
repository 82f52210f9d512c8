"""The ``redis`` image: a RESP2 server with per-container in-memory strings.

Owns: reading commands (multibulk and inline, with redis's quoting rules), a command table with
redis's arities and error wording (PING, ECHO, SET with NX/XX/GET/EX/PX/EXAT/PXAT/KEEPTTL, GET,
DEL, EXISTS, INCR/DECR/INCRBY/DECRBY, APPEND, STRLEN, MGET, MSET, KEYS, TYPE, EXPIRE, TTL, PTTL,
SELECT, DBSIZE, FLUSHALL, FLUSHDB, INFO, COMMAND, CLIENT, CONFIG, HELLO, AUTH, QUIT), lazy key
expiry, ``redis-server`` args (``--port``, ``--requirepass``) and the start/stop log lines.
Port: ``--port`` from the args, else every declared TCP containerPort, else 6379.

``RedisServer.execute`` is sans-I/O: argv in, reply bytes out.
"""
from __future__ import annotations

import asyncio
import fnmatch
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from netemu.images.base import (
    ContainerContext, EmulationBase, RunningEmulation, listen_tcp, start_or_roll_back,
)

REDIS_VERSION = "7.4.1"
DATABASES = 16
MAX_MULTIBULK = 1024 * 1024
MAX_BULK = 64 * 1024 * 1024
CRLF = b"\r\n"
OK = b"+OK\r\n"
NIL = b"$-1\r\n"

_INT64 = re.compile(rb"-?(0|[1-9][0-9]{0,18})")
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_SPACE = frozenset(b" \n\r\t\x0b\x0c")
_ESCAPES = {ord("n"): ord("\n"), ord("r"): ord("\r"), ord("t"): ord("\t"), ord("b"): 8,
            ord("a"): 7}


def error(message: str) -> bytes:
    return b"-" + message.encode("utf-8", "replace") + CRLF


def integer(value: int) -> bytes:
    return b":%d\r\n" % value


def bulk(value: bytes | None) -> bytes:
    return NIL if value is None else b"$%d\r\n%s\r\n" % (len(value), value)


def array(items: Sequence[bytes | None]) -> bytes:
    return b"*%d\r\n" % len(items) + b"".join(bulk(item) for item in items)


def _parse_int64(value: bytes) -> int | None:
    if not _INT64.fullmatch(value):
        return None
    number = int(value)
    return number if _INT64_MIN <= number <= _INT64_MAX else None


def split_inline(line: bytes) -> list[bytes] | None:
    """redis's sdssplitargs: words, "double quotes" with escapes, 'single quotes'; None when
    quotes are unbalanced."""
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in _SPACE:
            i += 1
        if i >= n:
            return args
        current = bytearray()
        in_double = in_single = done = False
        while not done:
            if in_double:
                if i >= n:
                    return None
                char = line[i]
                if (char == 0x5C and i + 3 < n and line[i + 1] == ord("x")
                        and chr(line[i + 2]) in "0123456789abcdefABCDEF"
                        and chr(line[i + 3]) in "0123456789abcdefABCDEF"):
                    current.append(int(line[i + 2:i + 4], 16))
                    i += 3
                elif char == 0x5C and i + 1 < n:
                    i += 1
                    current.append(_ESCAPES.get(line[i], line[i]))
                elif char == ord('"'):
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        return None
                    done = True
                else:
                    current.append(char)
            elif in_single:
                if i >= n:
                    return None
                char = line[i]
                if char == 0x5C and i + 1 < n and line[i + 1] == ord("'"):
                    i += 1
                    current.append(ord("'"))
                elif char == ord("'"):
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        return None
                    done = True
                else:
                    current.append(char)
            else:
                if i >= n:
                    break
                char = line[i]
                if char in _SPACE:
                    done = True
                elif char == ord('"'):
                    in_double = True
                elif char == ord("'"):
                    in_single = True
                else:
                    current.append(char)
            if i < n:
                i += 1
        args.append(bytes(current))


async def read_command(reader: asyncio.StreamReader) -> list[bytes] | str | None:
    """One command's argv; a str is a protocol error to report before closing; None at EOF."""
    line = await reader.readline()
    if not line.endswith(b"\n"):
        return None
    if line[:1] != b"*":
        args = split_inline(line.rstrip(b"\r\n"))
        return "Protocol error: unbalanced quotes in request" if args is None else args
    count = _parse_int64(line[1:].rstrip(b"\r\n"))
    if count is None or count > MAX_MULTIBULK:
        return "Protocol error: invalid multibulk length"
    args = []
    for _ in range(count):
        header = await reader.readline()
        if not header.endswith(b"\n"):
            return None
        if header[:1] != b"$":
            got = header[:1].decode("latin-1")
            return f"Protocol error: expected '$', got '{got}'"
        size = _parse_int64(header[1:].rstrip(b"\r\n"))
        if size is None or size < 0 or size > MAX_BULK:
            return "Protocol error: invalid bulk length"
        data = await reader.readexactly(size + 2)
        args.append(data[:-2])
    return args


@dataclass
class Session:
    """One client connection's state."""

    client_id: int
    authenticated: bool
    db: int = 0
    name: bytes | None = None
    closing: bool = False


Command = Callable[["RedisServer", Session, list[bytes]], bytes]


class RedisServer:
    """The keyspace and the command table, without I/O."""

    def __init__(self, port: int, password: bytes | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.port = port
        self.password = password
        self.clock = clock
        self.started = clock()
        self.data: list[dict[bytes, bytes]] = [{} for _ in range(DATABASES)]
        self.expires: list[dict[bytes, float]] = [{} for _ in range(DATABASES)]
        self.clients = 0
        self._next_client_id = 0

    def new_session(self) -> Session:
        self._next_client_id += 1
        return Session(self._next_client_id, authenticated=self.password is None)

    def execute(self, session: Session, argv: list[bytes]) -> bytes:
        name = argv[0].lower()
        entry = COMMANDS.get(name)
        if entry is None:
            shown = ""
            for arg in argv[1:]:
                if len(shown) >= 128:
                    break
                shown += "'%s' " % arg[:128 - len(shown)].decode("utf-8", "replace")
            return error(f"ERR unknown command '{argv[0][:128].decode('utf-8', 'replace')}', "
                         f"with args beginning with: {shown}")
        handler, arity = entry
        if (arity > 0 and len(argv) != arity) or len(argv) < -arity:
            return error(f"ERR wrong number of arguments for '{name.decode()}' command")
        if not session.authenticated and name not in (b"auth", b"hello", b"quit"):
            return error("NOAUTH Authentication required.")
        return handler(self, session, argv)

    # keyspace helpers

    def get(self, session: Session, key: bytes) -> bytes | None:
        expires = self.expires[session.db]
        deadline = expires.get(key)
        if deadline is not None and deadline <= self.clock():
            del expires[key]
            self.data[session.db].pop(key, None)
            return None
        return self.data[session.db].get(key)

    def put(self, session: Session, key: bytes, value: bytes, keep_ttl: bool = False) -> None:
        self.data[session.db][key] = value
        if not keep_ttl:
            self.expires[session.db].pop(key, None)

    def delete(self, session: Session, key: bytes) -> bool:
        present = self.get(session, key) is not None
        self.data[session.db].pop(key, None)
        self.expires[session.db].pop(key, None)
        return present

    def live_keys(self, session: Session) -> list[bytes]:
        return [key for key in list(self.data[session.db]) if self.get(session, key) is not None]

    def info(self, section: str) -> bytes:
        uptime = int(self.clock() - self.started)
        sections = {
            "server": ["# Server", f"redis_version:{REDIS_VERSION}", "redis_git_sha1:00000000",
                       "redis_mode:standalone", "os:Linux", "arch_bits:64",
                       "process_id:1", f"tcp_port:{self.port}",
                       f"uptime_in_seconds:{uptime}", f"uptime_in_days:{uptime // 86400}"],
            "clients": ["# Clients", f"connected_clients:{self.clients}"],
            "replication": ["# Replication", "role:master", "connected_slaves:0"],
            "keyspace": ["# Keyspace"] + [
                f"db{i}:keys={len(db)},expires={len(self.expires[i])},avg_ttl=0"
                for i, db in enumerate(self.data) if db],
        }
        chosen = sections if section in ("", "all", "default", "everything") else \
            {k: v for k, v in sections.items() if k == section}
        return "\r\n".join("\r\n".join(lines) + "\r\n" for lines in chosen.values()).encode()


def _ping(server: RedisServer, session: Session, argv: list[bytes]) -> bytes:
    if len(argv) > 2:
        return error("ERR wrong number of arguments for 'ping' command")
    return bulk(argv[1]) if len(argv) == 2 else b"+PONG\r\n"


def _set(server: RedisServer, session: Session, argv: list[bytes]) -> bytes:
    key, value = argv[1], argv[2]
    nx = xx = want_old = keep_ttl = False
    deadline: float | None = None
    i = 3
    while i < len(argv):
        option = argv[i].upper()
        if option == b"NX" and not xx:
            nx = True
        elif option == b"XX" and not nx:
            xx = True
        elif option == b"GET":
            want_old = True
        elif option == b"KEEPTTL" and deadline is None:
            keep_ttl = True
        elif option in (b"EX", b"PX", b"EXAT", b"PXAT") and deadline is None and not keep_ttl \
                and i + 1 < len(argv):
            amount = _parse_int64(argv[i + 1])
            if amount is None:
                return error("ERR value is not an integer or out of range")
            if amount <= 0:
                return error("ERR invalid expire time in 'set' command")
            now = server.clock()
            if option == b"EX":
                deadline = now + amount
            elif option == b"PX":
                deadline = now + amount / 1000
            else:
                unit = 1.0 if option == b"EXAT" else 0.001
                deadline = now + (amount * unit - time.time())
            i += 1
        else:
            return error("ERR syntax error")
        i += 1
    old = server.get(session, key)
    if (nx and old is not None) or (xx and old is None):
        return bulk(old) if want_old else NIL
    server.put(session, key, value, keep_ttl=keep_ttl)
    if deadline is not None:
        server.expires[session.db][key] = deadline
    return bulk(old) if want_old else OK


def _get(server: RedisServer, session: Session, argv: list[bytes]) -> bytes:
    return bulk(server.get(session, argv[1]))


def _del(server: RedisServer, session: Session, argv: list[bytes]) -> bytes:
    return integer(sum(server.delete(session, key) for key in argv[1:]))


def _exists(server: RedisServer, session: Session, argv: list[bytes]) -> bytes:
    return integer(sum(server.get(session, key) is not None for key in argv[1:]))


def _incr_by(server: RedisServer, session: Session, key: bytes, delta: int) -> bytes:
    current = server.get(session, key)
    number = 0 if current is None else _parse_int64(current)
    if number is None:
        return error("ERR value is not an integer or out of range")
    result = number + delta
    if not _INT64_MIN <= result <= _INT64_MAX:
        return error("ERR increment or decrement would overflow")
    server.put(session, key, b"%d" % result, keep_ttl=True)
    return integer(result)


def _incr(server: RedisServer, session: Session, argv: list[bytes]) -> bytes:
    return _incr_by(server, session, argv[1], 1)


def _decr(server: RedisServer, session: Session, argv: list[bytes]) -> bytes:
    return _incr_by(server, session, argv[1], -1)


def _incrby(server: RedisServer, session: Session, argv: list[bytes]) -> bytes:
    delta = _parse_int64(argv[2])
    if delta is None:
        return error("ERR value is not an integer or out of range")
    return _incr_by(server, session, argv[1], -delta if argv[0].lower() == b"decrby" else delta)


def _append(server: RedisServer, session: Session, argv: list[bytes]) -> bytes:
    value = (server.get(session, argv[1]) or b"") + argv[2]
    server.put(session, argv[1], value, keep_ttl=True)
    return integer(len(value))


def _strlen(server: RedisServer, session: Session, argv: list[bytes]) -> bytes:
    return integer(len(server.get(session, argv[1]) or b""))


def _mget(server: RedisServer, session: Session, argv: list[bytes]) -> bytes:
    return array([server.get(session, key) for key in argv[1:]])


def _mset(server: RedisServer, session: Session, argv: list[bytes]) -> bytes:
    if len(argv) % 2 == 0:
        return error("ERR wrong number of arguments for 'mset' command")
    for i in range(1, len(argv), 2):
        server.put(session, argv[i], argv[i + 1])
    return OK


def _keys(server: RedisServer, session: Session, argv: list[bytes]) -> bytes:
    pattern = argv[1].decode("latin-1").replace("[^", "[!")
    return array([key for key in server.live_keys(session)
                  if fnmatch.fnmatchcase(key.decode("latin-1"), pattern)])


def _type(server: RedisServer, session: Session, argv: list[bytes]) -> bytes:
    return b"+string\r\n" if server.get(session, argv[1]) is not None else b"+none\r\n"


def _expire(server: RedisServer, session: Session, argv: list[bytes]) -> bytes:
    seconds = _parse_int64(argv[2])
    if seconds is None:
        return error("ERR value is not an integer or out of range")
    if server.get(session, argv[1]) is None:
        return integer(0)
    if seconds <= 0:
        server.delete(session, argv[1])
    else:
        server.expires[session.db][argv[1]] = server.clock() + seconds
    return integer(1)


def _ttl(server: RedisServer, session: Session, argv: list[bytes]) -> bytes:
    if server.get(session, argv[1]) is None:
        return integer(-2)
    deadline = server.expires[session.db].get(argv[1])
    if deadline is None:
        return integer(-1)
    remaining = deadline - server.clock()
    if argv[0].lower() == b"pttl":
        return integer(max(0, round(remaining * 1000)))
    return integer(max(0, int((remaining * 1000 + 500) // 1000)))


def _select(server: RedisServer, session: Session, argv: list[bytes]) -> bytes:
    index = _parse_int64(argv[1])
    if index is None:
        return error("ERR value is not an integer or out of range")
    if not 0 <= index < DATABASES:
        return error("ERR DB index is out of range")
    session.db = index
    return OK


def _dbsize(server: RedisServer, session: Session, argv: list[bytes]) -> bytes:
    return integer(len(server.live_keys(session)))


def _flushall(server: RedisServer, session: Session, argv: list[bytes]) -> bytes:
    if len(argv) > 2 or (len(argv) == 2 and argv[1].upper() not in (b"ASYNC", b"SYNC")):
        return error("ERR syntax error")
    dbs = range(DATABASES) if argv[0].lower() == b"flushall" else [session.db]
    for db in dbs:
        server.data[db].clear()
        server.expires[db].clear()
    return OK


def _info(server: RedisServer, session: Session, argv: list[bytes]) -> bytes:
    section = argv[1].decode("latin-1").lower() if len(argv) > 1 else ""
    return bulk(server.info(section))


def _command(server: RedisServer, session: Session, argv: list[bytes]) -> bytes:
    if len(argv) > 1 and argv[1].upper() == b"COUNT":
        return integer(len(COMMANDS))
    return b"*0\r\n"


def _client(server: RedisServer, session: Session, argv: list[bytes]) -> bytes:
    sub = argv[1].upper()
    if sub == b"SETNAME" and len(argv) == 3:
        session.name = argv[2] or None
        return OK
    if sub == b"GETNAME":
        return bulk(session.name)
    if sub == b"ID":
        return integer(session.client_id)
    if sub in (b"SETINFO", b"NO-EVICT", b"NO-TOUCH", b"REPLY"):
        return OK
    return error(f"ERR unknown subcommand '{argv[1].decode('utf-8', 'replace')}'. "
                 "Try CLIENT HELP.")


def _config(server: RedisServer, session: Session, argv: list[bytes]) -> bytes:
    sub = argv[1].upper()
    if sub == b"GET" and len(argv) >= 3:
        settings = {"databases": str(DATABASES), "port": str(server.port), "maxmemory": "0",
                    "appendonly": "no", "save": "3600 1 300 100 60 10000"}
        reply: list[bytes | None] = []
        for pattern in argv[2:]:
            for name, value in settings.items():
                if fnmatch.fnmatchcase(name, pattern.decode("latin-1").lower()):
                    reply += [name.encode(), value.encode()]
        return array(reply)
    if sub in (b"SET", b"RESETSTAT", b"REWRITE"):
        return OK
    return error(f"ERR unknown subcommand '{argv[1].decode('utf-8', 'replace')}'. "
                 "Try CONFIG HELP.")


def _auth(server: RedisServer, session: Session, argv: list[bytes]) -> bytes:
    if len(argv) > 3:
        return error("ERR syntax error")
    if server.password is None:
        return error("ERR AUTH <password> called without any password configured for the "
                     "default user. Are you sure your configuration is correct?")
    user, password = (argv[1], argv[2]) if len(argv) == 3 else (b"default", argv[1])
    if user != b"default" or password != server.password:
        return error("WRONGPASS invalid username-password pair or user is disabled.")
    session.authenticated = True
    return OK


def _hello(server: RedisServer, session: Session, argv: list[bytes]) -> bytes:
    if len(argv) > 1 and argv[1] != b"2":
        return error("NOPROTO unsupported protocol version")
    i = 2
    while i < len(argv):
        option = argv[i].upper()
        if option == b"AUTH" and i + 2 < len(argv):
            reply = _auth(server, session, [b"auth", argv[i + 1], argv[i + 2]])
            if reply != OK:
                return reply
            i += 3
        elif option == b"SETNAME" and i + 1 < len(argv):
            session.name = argv[i + 1]
            i += 2
        else:
            return error(f"ERR Syntax error in HELLO option '{argv[i].decode('latin-1')}'")
    if not session.authenticated:
        return error("NOAUTH HELLO must be called with the client already authenticated, "
                     "otherwise the HELLO <proto> AUTH <user> <pass> option can be used to "
                     "authenticate the client and select the RESP protocol version at the "
                     "same time")
    return (b"*14\r\n" + bulk(b"server") + bulk(b"redis") + bulk(b"version")
            + bulk(REDIS_VERSION.encode()) + bulk(b"proto") + integer(2) + bulk(b"id")
            + integer(session.client_id) + bulk(b"mode") + bulk(b"standalone")
            + bulk(b"role") + bulk(b"master") + bulk(b"modules") + b"*0\r\n")


def _echo(server: RedisServer, session: Session, argv: list[bytes]) -> bytes:
    return bulk(argv[1])


def _quit(server: RedisServer, session: Session, argv: list[bytes]) -> bytes:
    session.closing = True
    return OK


COMMANDS: dict[bytes, tuple[Command, int]] = {
    b"ping": (_ping, -1), b"echo": (_echo, 2), b"set": (_set, -3), b"get": (_get, 2),
    b"del": (_del, -2), b"unlink": (_del, -2), b"exists": (_exists, -2), b"incr": (_incr, 2),
    b"decr": (_decr, 2), b"incrby": (_incrby, 3), b"decrby": (_incrby, 3),
    b"append": (_append, 3), b"strlen": (_strlen, 2), b"mget": (_mget, -2),
    b"mset": (_mset, -3), b"keys": (_keys, 2), b"type": (_type, 2), b"expire": (_expire, 3),
    b"ttl": (_ttl, 2), b"pttl": (_ttl, 2), b"select": (_select, 2), b"dbsize": (_dbsize, 1),
    b"flushall": (_flushall, -1), b"flushdb": (_flushall, -1), b"info": (_info, -1),
    b"command": (_command, -1), b"client": (_client, -2), b"config": (_config, -2),
    b"auth": (_auth, -2), b"hello": (_hello, -1), b"quit": (_quit, -1),
}


def parse_server_args(args: Sequence[str]) -> dict[str, list[str]]:
    """``redis-server [config-file] --name value ...`` → {name: values}."""
    items = list(args)
    if items and items[0] in ("redis-server", "/usr/local/bin/redis-server"):
        items = items[1:]
    options: dict[str, list[str]] = {}
    current: list[str] | None = None
    for item in items:
        if item.startswith("--"):
            current = options.setdefault(item[2:].lower(), [])
            current.clear()
        elif current is not None:
            current.append(item)
    return options


def _redis_time(role: str) -> str:
    now = time.time()
    stamp = time.strftime("%d %b %Y %H:%M:%S", time.gmtime(now))
    return f"1:{role} {stamp}.{int(now * 1000) % 1000:03d}"


class Redis(EmulationBase):
    name = "redis"

    async def start(self, ctx: ContainerContext) -> RunningEmulation:
        running = RunningEmulation(self.label(ctx), stop_code=0)
        options = parse_server_args(ctx.args)
        if options.get("port"):
            ports: tuple[int, ...] = (int(options["port"][0]),)
        else:
            ports = ctx.declared_ports("TCP") or (6379,)
        password = options.get("requirepass")
        server = RedisServer(ports[0], password[0].encode() if password else None)

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            session = server.new_session()
            server.clients += 1
            try:
                while not session.closing:
                    argv = await read_command(reader)
                    if argv is None:
                        return
                    if isinstance(argv, str):
                        writer.write(error("ERR " + argv))
                        await writer.drain()
                        return
                    if argv:
                        writer.write(server.execute(session, argv))
                        await writer.drain()
            finally:
                server.clients -= 1

        await start_or_roll_back(running, [
            lambda port=port: listen_tcp(ctx, running, port, on_client, running.name)
            for port in ports if port != 0 or not options.get("port")])
        for line in [
            f"{_redis_time('C')} * oO0OoO0OoO0Oo Redis is starting oO0OoO0OoO0Oo",
            f"{_redis_time('C')} * Redis version={REDIS_VERSION}, bits=64, commit=00000000, "
            "modified=0, pid=1, just started",
            f"{_redis_time('C')} * Configuration loaded" if ctx.args else
            f"{_redis_time('C')} # Warning: no config file specified, using the default "
            "config. In order to specify a config file use redis-server /path/to/redis.conf",
            f"{_redis_time('M')} * monotonic clock: POSIX clock_gettime",
            f"{_redis_time('M')} * Running mode=standalone, port={ports[0]}.",
            f"{_redis_time('M')} * Server initialized",
            f"{_redis_time('M')} * Ready to accept connections tcp",
        ]:
            ctx.log(line)
        running.on_stop(lambda: [ctx.log(line) for line in (
            f"1:signal-handler ({int(time.time())}) Received SIGTERM scheduling shutdown...",
            f"{_redis_time('M')} * User requested shutdown...",
            f"{_redis_time('M')} # Redis is now ready to exit, bye bye...")])
        return running


__all__ = ["COMMANDS", "REDIS_VERSION", "Redis", "RedisServer", "Session", "array", "bulk",
           "error", "integer", "parse_server_args", "read_command", "split_inline"]
