"""Cluster DNS under fuzzing gives back what it took: after malformed and random packets over UDP
and TCP (bounded in count), with an upstream that never answers, the server's descriptors return
to where they were, its answer caches stay within their byte bound, and memory stops growing
however long the fuzzing goes on (measured with tracemalloc: what later rounds allocate and keep)."""
from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import socket
import struct
import time
import tracemalloc

import pytest
from dnslib import DNSRecord

from netemu.dns.server import ENTRY_OVERHEAD

from test_dns_helpers import free_loopback, question, running

CACHE_BYTES = 64 << 10
MS = "my-service.default.svc.cluster.local."


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def cached_bytes(cache) -> int:
    return sum(len(k) + len(v) + ENTRY_OVERHEAD for k, v in cache.entries.items())


@contextlib.contextmanager
def silent_upstream():
    """A UDP socket and a TCP listener on one 127.53.x.y port that never answer."""
    host = free_loopback()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((host, 0))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind((host, udp.getsockname()[1]))
    tcp.listen(1024)
    try:
        yield f"{host}:{udp.getsockname()[1]}"
    finally:
        udp.close()
        tcp.close()


def fuzz_packets(rng: random.Random, count: int, tag: str) -> list[bytes]:
    """Random bytes, mutated valid queries, and well-formed queries for names never asked
    before — in the zone (NXDOMAIN, cached) and outside it (forwarded)."""
    base = [question(MS).pack(), question("example.com", "TXT", edns=1232).pack()]
    out = []
    for i in range(count):
        kind = (0, 1, 2, 2, 2, 2, 2, 3)[i % 8]
        if kind == 0:
            out.append(rng.randbytes(rng.randrange(0, 700)))
        elif kind == 1:
            packet = bytearray(rng.choice(base))
            for _ in range(rng.randrange(1, 6)):
                packet[rng.randrange(len(packet))] = rng.randrange(256)
            out.append(bytes(packet))
        elif kind == 2:
            out.append(question(f"n{i}-{tag}-{rng.randrange(10**9)}.default.svc.cluster.local",
                                rng.choice(["A", "AAAA", "TXT", "SRV"])).pack())
        else:
            out.append(question(f"n{i}-{tag}.fuzz.example", "A").pack())
    return out


async def fuzz_udp(host: str, port: int, packets: list[bytes]) -> None:
    """Bursts of 50 (within the socket buffers), each followed by a probe whose answer, which
    comes after theirs, says the server has read the burst."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        s.connect((host, port))
        for start in range(0, len(packets), 50):
            for p in packets[start:start + 50]:
                with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                    s.send(p)
            probe = question(MS)
            s.send(probe.pack())
            deadline = time.monotonic() + 5
            while (reply := await asyncio.wait_for(loop.sock_recv(s, 65535), 5))[:2] != probe.pack()[:2]:
                assert time.monotonic() < deadline, "the server stopped answering"


async def fuzz_tcp_client(host: str, port: int, rng: random.Random, n: int, packets: list[bytes]) -> None:
    """One TCP client of one of five behaviours, closing (or resetting) when done."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return
    sock = writer.get_extra_info("socket")
    try:
        behaviour = n % 5
        if behaviour == 0:    # garbage
            writer.write(rng.randbytes(rng.randrange(1, 3000)))
        elif behaviour == 1:  # a length prefix promising more than ever comes, then FIN
            writer.write(struct.pack("!H", 60000) + b"abc")
        elif behaviour == 2:  # framed fuzz packets, answers left unread
            writer.write(b"".join(struct.pack("!H", len(p)) + p for p in rng.sample(packets, 10)))
        elif behaviour == 3:  # half a length prefix, half-close
            writer.write(b"\x00")
            writer.write_eof()
        else:                 # part of a message, then RST
            writer.write(struct.pack("!H", 100) + b"x" * 40)
            await writer.drain()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await writer.drain()
        await asyncio.sleep(rng.random() * 0.05)
    except OSError:
        pass
    finally:
        writer.close()


async def fuzz_round(server, rng: random.Random, tag: str) -> None:
    packets = fuzz_packets(rng, 4000, tag)
    await fuzz_udp(server.host, server.port, packets)
    for wave in range(4):
        await asyncio.gather(*(fuzz_tcp_client(server.host, server.port, rng, n, packets)
                               for n in range(wave * 50, wave * 50 + 50)))


async def still_answers(server) -> None:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        wire = question(MS).pack()
        writer.write(struct.pack("!H", len(wire)) + wire)
        (size,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 2))
        reply = DNSRecord.parse(await asyncio.wait_for(reader.readexactly(size), 2))
        assert [str(rr.rdata) for rr in reply.rr] == ["10.96.0.11"]
    finally:
        writer.close()


async def wait_until(predicate, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what()
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_descriptors_return_to_baseline_and_memory_stops_growing_after_fuzzing() -> None:
    rng = random.Random(20251205)
    with silent_upstream() as upstream:
        async with running(upstreams=(upstream,), upstream_timeout=0.2, cache_bytes=CACHE_BYTES) as server:
            await still_answers(server)
            baseline = open_fds()
            await fuzz_round(server, rng, "r1")
            await wait_until(lambda: open_fds() <= baseline,
                             lambda: f"{open_fds() - baseline} descriptors more than before the fuzzing")
            tracing_already = tracemalloc.is_tracing()  # PYTHONTRACEMALLOC=…
            if not tracing_already:
                tracemalloc.start()
            try:
                before = tracemalloc.take_snapshot()
                for tag in ("r2", "r3", "r4"):
                    await fuzz_round(server, rng, tag)
                await wait_until(lambda: open_fds() <= baseline,
                                 lambda: f"{open_fds() - baseline} descriptors more than before the fuzzing")
                gc.collect()
                after = tracemalloc.take_snapshot()
            finally:
                if not tracing_already:
                    tracemalloc.stop()
            kept = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
            for cache in (server.responder.udp_cache, server.responder.tcp_cache):
                assert cached_bytes(cache) <= CACHE_BYTES
            assert kept < 1 << 20, f"three more rounds of fuzzing left {kept >> 10} KiB allocated"
            await still_answers(server)


async def test_tcp_clients_beyond_the_limit_are_closed_at_once() -> None:
    async with running(max_tcp_clients=20) as server:
        held = [await asyncio.open_connection(server.host, server.port) for _ in range(30)]
        try:
            async def closed_by_server(reader: asyncio.StreamReader) -> bool:
                try:
                    return await asyncio.wait_for(reader.read(1), 0.5) == b""
                except TimeoutError:
                    return False
                except ConnectionError:
                    return True
            closed = await asyncio.gather(*(closed_by_server(r) for r, _ in held))
            assert sum(closed) == 10  # the ten past the limit, each at once
        finally:
            for _, writer in held:
                writer.close()
        # once the idle ones are gone, new clients are served again
        await wait_until(lambda: len(server._writers) == 0, lambda: f"{len(server._writers)} tcp clients left")
        await still_answers(server)


async def test_a_start_cancelled_half_way_keeps_no_socket() -> None:
    """A DNS pod stopped while its server starts (UDP bound, TCP not yet) leaves nothing open."""
    from netemu.dns import ClusterDNS

    from test_dns_helpers import config
    tcp_started = asyncio.Event()

    async def never_listening(*args, **kwargs):
        tcp_started.set()
        await asyncio.Event().wait()

    baseline = open_fds()
    host = free_loopback()
    server = ClusterDNS(config())
    start = asyncio.create_task(server.start(never_listening, host=host, port=0))
    await tcp_started.wait()
    start.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await start
    assert open_fds() == baseline
