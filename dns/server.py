"""ClusterDNS: netemu's cluster DNS server, UDP and TCP on asyncio.

The hot path is the cache: answers are kept as wire bytes (ID left out) per query form, so a
repeated query costs one dict lookup on the raw packet after its ID, then the ID and the cached
answer go back. The first two queries of a wake-up are read and answered one by one; a queue
beyond them is read and answered in a batch (``netemu.proxy.datagrams``: one recvmmsg for up to
64 queries, answers written over their queries and sent with one sendmmsg, no bytes object or
address tuple made for a query answered from the cache). A query whose raw form is not a key yet
(first time, EDNS options such as cookies, trailing bytes) is parsed (``wire.parse_query``),
looked up under its normalised key, and only on a miss answered by ``records.Resolver`` and
packed. The index's listeners clear the
cache on every real change, synchronously, so a change is visible to the very next query.

Sockets are never made by address alone: ``start`` takes the ``start_server`` and
``datagram_socket`` callables of a fabric (``functools.partial(fabric.start_server, where)``) or,
by default, asyncio's server and a plain bound socket; upstream sockets come from ``make_socket``.

The UDP socket's address is registered with the service proxy as an in-process endpoint
(``netemu.proxy.local``): on the loopback backend a query sent to the kube-dns ClusterIP is answered
by the proxy's flow from this server's UDP cache (the same dict the socket's reader reads), or
handed to ``UDPSocket.serve_local``, and the answer leaves the ClusterIP's socket, instead of
crossing a relay socket and this one. It is answered exactly as a datagram that arrives here is;
the flow stops using the server once its socket is closing, and the registration ends with the
socket.

No packet can stop the server: a packet too short for a header is dropped, a malformed one
gets FORMERR, an unexpected error while answering SERVFAIL, and the error is logged.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Self

from netemu.api.objects import EndpointSlice, Namespace, Pod, Service
from netemu.errors import DNSError
from netemu.proxy import local
from netemu.fabric.base import bound_datagram_socket
from netemu.proxy.datagrams import ONE_BY_ONE, SLOT_SIZE, DatagramBatch

from .config import DNSConfig
from .forward import Forwarder, SocketFactory
from .index import DNSIndex
from .records import Answer, Resolver
from .wire import BADVERS, REFUSED, SERVFAIL, Drop, Query, Reject, header_only, pack_response, parse_query

log = logging.getLogger(__name__)

StartServer = Callable[..., Awaitable[asyncio.AbstractServer]]
DatagramSocket = Callable[[tuple[str, int]], Awaitable[socket.socket]]  # bound, non-blocking
MAX_PENDING = 128  # concurrent upstream exchanges (each holds a socket); beyond that, SERVFAIL at once
ENTRY_OVERHEAD = 120  # bytes a cache entry costs besides its key and answer (dict slot, object headers)


class AnswerCache:
    """Wire answers without their ID, by key; the oldest go first when the cache holds
    ``max_entries`` answers or ``max_bytes`` bytes (so random names — a fuzzer, a scan — cost a
    bounded amount of memory, and evicting is O(1))."""

    def __init__(self, max_entries: int, max_bytes: int = 4 << 20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.entries: OrderedDict[bytes, bytes] = OrderedDict()
        self.bytes = 0

    def put(self, key: bytes, answer: bytes) -> None:
        cost = len(key) + len(answer) + ENTRY_OVERHEAD
        if self.max_entries <= 0 or cost > self.max_bytes:
            return
        old = self.entries.pop(key, None)
        if old is not None:
            self.bytes -= len(key) + len(old) + ENTRY_OVERHEAD
        while self.entries and (len(self.entries) >= self.max_entries or self.bytes + cost > self.max_bytes):
            gone_key, gone = self.entries.popitem(last=False)
            self.bytes -= len(gone_key) + len(gone) + ENTRY_OVERHEAD
        self.entries[key] = answer
        self.bytes += cost

    def clear(self) -> None:
        self.entries.clear()  # in place: the protocols hold the bound ``get``
        self.bytes = 0


@dataclass(slots=True)
class Pending:
    """A query that needs upstream work: forwarding (``answer`` None) or a CNAME chase."""

    query: Query
    data: bytes
    answer: Answer | None


class Responder:
    """Query bytes in, response bytes out (or ``Pending``, or None to drop); owns the caches."""

    def __init__(self, resolver: Resolver, cache_size: int, forwarder: Forwarder | None = None,
                 cache_bytes: int = 4 << 20) -> None:
        self.resolver = resolver
        self.forwarder = forwarder
        self.udp_cache = AnswerCache(cache_size, cache_bytes)
        self.tcp_cache = AnswerCache(cache_size, cache_bytes)

    def clear(self) -> None:
        self.udp_cache.clear()
        self.tcp_cache.clear()

    def respond(self, data: bytes, tcp: bool) -> bytes | Pending | None:
        try:
            return self._respond(data, tcp)
        except Exception:
            log.exception("dns: error answering a query")
            return header_only(data, SERVFAIL) if len(data) >= 12 else None

    def _respond(self, data: bytes, tcp: bool) -> bytes | Pending | None:
        cache = self.tcp_cache if tcp else self.udp_cache
        hit = cache.entries.get(data[2:])
        if hit is not None:
            return data[:2] + hit
        try:
            query = parse_query(data)
        except Drop:
            return None
        except Reject as reject:
            return reject.response
        hit = cache.entries.get(query.key)
        if hit is not None:
            if query.raw_key:
                cache.put(data[2:], hit)
            return data[:2] + hit
        limit = query.limit(tcp)
        if query.edns and query.edns_version != 0:
            return pack_response(query, BADVERS, limit=limit)
        answer = self.resolver.answer(query.name, query.qtype)
        if not answer.in_zone:
            if self.forwarder is not None:
                return Pending(query, data, None)
            response = pack_response(query, REFUSED, limit=limit)
        elif answer.chases and self.forwarder is not None:
            return Pending(query, data, answer)
        else:
            response = pack_response(query, answer.rcode, answer.answer, answer.authority, answer.additional,
                                     authoritative=answer.authoritative, limit=limit)
        answer_bytes = response[2:]  # one object for both keys
        cache.put(query.key, answer_bytes)
        if query.raw_key:
            cache.put(data[2:], answer_bytes)
        return response

    async def complete(self, pending: Pending, tcp: bool) -> bytes:
        """Finish a ``Pending`` with the upstream's help (never cached: upstream TTLs differ)."""
        query = pending.query
        limit = query.limit(tcp)
        assert self.forwarder is not None
        if pending.answer is None:
            reply = await self.forwarder.forward(pending.data, tcp, limit)
            return reply if reply is not None else pack_response(query, SERVFAIL, limit=limit)
        answer = pending.answer
        truncated = False
        for chase in reversed(answer.chases):
            found = await self.forwarder.lookup(chase.target, chase.qtype)
            if found is None:
                continue
            records, tc = found
            truncated = truncated or tc
            at = next(i for i, rr in enumerate(answer.answer) if rr is chase.cname)
            answer.answer[at + 1:at + 1] = records
        return pack_response(query, answer.rcode, answer.answer, answer.authority, answer.additional,
                             authoritative=answer.authoritative, limit=limit, truncated=truncated)


class UDPSocket:
    """The server's UDP socket: the first ``ONE_BY_ONE`` datagrams of a wake-up read and answered
    one by one, a queue beyond them in a batch (``DatagramBatch``), where a datagram whose answer
    is cached is answered in its slot and the batch's answers leave together; any other goes to
    ``ClusterDNS._udp_miss``. Closed like a datagram transport (``close``, ``is_closing``,
    ``get_extra_info("sockname")``), which is how its owner treats it."""

    def __init__(self, server: ClusterDNS, sock: socket.socket) -> None:
        self._server = server
        self._sock = sock
        self._fd = sock.fileno()
        self._cached = server.responder.udp_cache.entries.get
        self._batch = DatagramBatch(sock.family)
        self._sockname = sock.getsockname()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._readable)
        self._unregister = local.register(self._sockname[:2], local.Server(
            self.serve_local, ready=self._cached, closing=self.is_closing))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": self._sockname, "socket": self._sock}.get(name, default)

    def is_closing(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        if self._fd < 0:
            return
        self._loop.remove_reader(self._fd)
        self._fd = -1
        self._unregister()
        self._sock.close()

    def sendto(self, data: bytes, addr: Any) -> None:
        """An answer not sent from a slot (a miss, a forwarded query); dropped if the socket's
        buffer is full, as a full link drops it."""
        if self._fd >= 0:
            try:
                self._sock.sendto(data, addr)
            except OSError:
                pass

    def serve_local(self, data: bytes, addr: Any, reply: local.Reply) -> bytes | None:
        """A query the proxy took on the service address, answered as one that arrives here:
        a cached answer is returned, any other goes to ``reply``; nothing once this socket is
        closing."""
        if self._fd < 0:
            return None
        hit = self._cached(data[2:])
        if hit is not None:
            return data[:2] + hit
        self._server._udp_miss(data, addr, reply)
        return None

    def _readable(self) -> None:
        # A few datagrams the plain way, each answered as soon as it is read: queries that come
        # one or a few at a time never wait for a batch (recvmmsg looks for another datagram
        # before it returns, and sendmmsg costs more than sendto: 1.5 µs more per exchange).
        # More than that waiting is a queue: the rest is read in a batch.
        sock, cached = self._sock, self._cached
        recvfrom, sendto = sock.recvfrom, sock.sendto
        for _ in range(ONE_BY_ONE):
            try:
                data, addr = recvfrom(SLOT_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("dns: udp error: %r", exc)
                return
            hit = cached(data[2:])
            if hit is None:
                self._server._udp_miss(data, addr, self.sendto)
                if self._fd < 0:  # closed meanwhile
                    return
                continue
            try:
                sendto(data[:2] + hit, addr)
            except OSError:  # a full buffer: dropped, as a full link drops it
                pass
        batch = self._batch
        try:
            lengths = batch.receive(self._fd)
        except OSError as exc:
            log.debug("dns: udp error: %r", exc)
            return
        slots, answer = batch.data, batch.answer
        for i, length in enumerate(lengths):
            at = i * SLOT_SIZE
            hit = cached(bytes(slots[at + 2:at + length]))
            if hit is not None:
                answer(i, hit)
                continue
            batch.pass_over(i)  # the answers before it first: one client's stay in order
            self._server._udp_miss(batch.datagram(i, length), batch.address(i), self.sendto)
            if self._fd < 0:  # closed meanwhile
                return
        batch.send_answers()


class ClusterDNS:
    """The cluster's DNS server: the index, the resolver, the caches and the listeners."""

    def __init__(self, config: DNSConfig, index: DNSIndex | None = None) -> None:
        self.config = config
        self.index = index if index is not None else DNSIndex(watch_pods=config.pod_mode == "verified")
        self.resolver = Resolver(config, self.index)
        self.responder = Responder(self.resolver, config.cache_size, cache_bytes=config.cache_bytes)
        self.index.add_listener(self.responder.clear)
        self.host = ""
        self.port = 0
        self._udp: UDPSocket | None = None
        self._tcp: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._forwarding = 0  # upstream exchanges under way (UDP tasks and TCP clients waiting)

    # ------------------------------------------------------------------ index handlers

    def on_service(self, old: Service | None, new: Service | None) -> bool:
        return self.index.on_service(old, new)

    def on_endpointslice(self, old: EndpointSlice | None, new: EndpointSlice | None) -> bool:
        return self.index.on_endpointslice(old, new)

    def on_pod(self, old: Pod | None, new: Pod | None) -> bool:
        return self.index.on_pod(old, new)

    def on_namespace(self, old: Namespace | None, new: Namespace | None) -> bool:
        return self.index.on_namespace(old, new)

    # ------------------------------------------------------------------ lifecycle

    async def start(self, start_server: StartServer | None = None,
                    datagram_socket: DatagramSocket | None = None,
                    host: str = "127.0.0.1", port: int = 53, *,
                    make_socket: SocketFactory | None = None) -> None:
        """Listen on ``host:port`` over UDP and TCP (port 0: one free port for both)."""
        datagram_socket = datagram_socket or bound_datagram_socket
        start_server = start_server or asyncio.start_server
        if self.config.upstream_addrs:
            self.responder.forwarder = Forwarder(self.config.upstream_addrs, self.config.upstream_timeout,
                                                 make_socket)
        for _ in range(16 if port == 0 else 1):
            try:
                udp = UDPSocket(self, await datagram_socket((host, port)))
            except OSError as exc:
                raise DNSError(f"dns: cannot listen on {host}:{port}/udp: {exc.strerror or exc}") from exc
            bound = udp.get_extra_info("sockname")[1]
            # Shielded: a start cancelled inside asyncio.start_server (which awaits once more after
            # making the server) would drop the listening socket for the garbage collector.
            opening = asyncio.ensure_future(start_server(self._serve_tcp, host, bound))
            try:
                tcp = await asyncio.shield(opening)
            except OSError as exc:
                udp.close()
                if port == 0 and exc.errno == errno.EADDRINUSE:
                    continue
                raise DNSError(f"dns: cannot listen on {host}:{bound}/tcp: {exc.strerror or exc}") from exc
            except BaseException:  # cancelled (the pod stopped while starting): keep no socket
                udp.close()
                opening.add_done_callback(_close_opened_server)
                raise
            self._udp, self._tcp, self.host, self.port = udp, tcp, host, bound
            log.info("dns: serving %s on %s:%d (udp, tcp)", self.config.zone_fqdn, host, bound)
            return
        raise DNSError(f"dns: no free port on {host} for both udp and tcp")

    @property
    def udp_transport(self) -> UDPSocket | None:
        """The UDP socket while serving (its owner may close it, as a transport)."""
        return self._udp

    @property
    def tcp_server(self) -> asyncio.AbstractServer | None:
        """The TCP listener while serving (its owner may close it)."""
        return self._tcp

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        for task in list(self._tasks):
            task.cancel()
        if self._tcp is not None:
            self._tcp.close()
            for writer in list(self._writers):
                writer.close()
            await self._tcp.wait_closed()
            self._tcp = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ UDP

    def _udp_miss(self, data: bytes, addr: Any, sendto: Callable[..., None]) -> None:
        result = self.responder.respond(data, tcp=False)
        if result is None:
            return
        if isinstance(result, bytes):
            sendto(result, addr)
            return
        if self._forwarding >= MAX_PENDING:
            sendto(pack_response(result.query, SERVFAIL, limit=result.query.limit(False)), addr)
            return
        task = asyncio.get_running_loop().create_task(self._udp_complete(result, addr, sendto))
        self._tasks.add(task)
        self._forwarding += 1
        task.add_done_callback(self._udp_done)

    def _udp_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._forwarding -= 1

    async def _udp_complete(self, pending: Pending, addr: Any, sendto: Callable[..., None]) -> None:
        try:
            response = await self.responder.complete(pending, tcp=False)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("dns: error completing a forwarded query")
            response = pack_response(pending.query, SERVFAIL, limit=pending.query.limit(False))
        if self._udp is not None and not self._udp.is_closing():
            sendto(response, addr)

    # ------------------------------------------------------------------ TCP

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= self.config.max_tcp_clients:
            log.debug("dns: %d tcp clients already: closing a new one", len(self._writers))
            writer.transport.abort()  # its descriptor goes at once
            return
        self._writers.add(writer)
        idle = self.config.tcp_idle_timeout
        cached = self.responder.tcp_cache.entries.get
        try:
            while True:
                try:
                    size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), idle), "big")
                    data = await asyncio.wait_for(reader.readexactly(size), idle)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
                    break
                hit = cached(data[2:])
                if hit is not None:
                    response: bytes | None = data[:2] + hit
                else:
                    result = self.responder.respond(data, tcp=True)
                    if isinstance(result, Pending) and self._forwarding >= MAX_PENDING:
                        response = pack_response(result.query, SERVFAIL, limit=result.query.limit(True))
                    elif isinstance(result, Pending):
                        self._forwarding += 1
                        try:
                            response = await self.responder.complete(result, tcp=True)
                        except Exception:
                            log.exception("dns: error completing a forwarded query")
                            response = pack_response(result.query, SERVFAIL, limit=result.query.limit(True))
                        finally:
                            self._forwarding -= 1
                    else:
                        response = result
                if response is None:
                    continue
                writer.write(len(response).to_bytes(2, "big") + response)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        except Exception:
            log.exception("dns: tcp connection failed")
        finally:
            self._writers.discard(writer)
            writer.close()


def _close_opened_server(opening: asyncio.Future[asyncio.AbstractServer]) -> None:
    """The TCP server a cancelled start went on to open: closed at once."""
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()
