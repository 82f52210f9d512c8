"""bench/_bare_relay.py, the userspace ceiling bench/proxy.py measures netemu's proxy against, has to
survive the new-connections load (every answer followed by the server's close, the client gone
as soon as it has the answer) and relay bulk data whole: a ceiling that crashes or drops bytes
would make the bench's ratios meaningless. (The uvloop abort the relay avoids by not keeping
half-closed connections open shows with nginx and wrk at ``-c2`` and more, not with these
Python peers; ``bench/proxy.py`` notes wrk's socket errors should it come back.)"""
from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

RELAY = Path(__file__).resolve().parent.parent / "bench" / "_bare_relay.py"
SERVER_IP, RELAY_IP, PORT = "127.87.0.1", "127.87.0.2", 18080
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"


async def answer_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """As nginx under ``Connection: close``: read one request, answer, half-close first (its
    lingering close), and close once the client has closed too."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(ANSWER)
    writer.write_eof()
    await reader.read()
    writer.close()


async def count_and_echo_total(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bulk: read until the client's request line says how much follows, then answer the count."""
    size = int(await reader.readline())
    await reader.readexactly(size)
    writer.write(f"{size}\n".encode())
    await writer.drain()
    writer.close()


async def start_relay(port: int) -> subprocess.Popen:
    relay = subprocess.Popen([sys.executable, str(RELAY), RELAY_IP, SERVER_IP, str(port)], stdout=subprocess.PIPE)
    line = await asyncio.wait_for(asyncio.to_thread(relay.stdout.readline), 10)
    assert line.strip() == b"ready"
    return relay


async def stop_relay(relay: subprocess.Popen) -> None:
    relay.terminate()
    await asyncio.to_thread(relay.wait, 10)
    relay.stdout.close()


async def test_bare_relay_survives_connection_churn() -> None:
    server = await asyncio.start_server(answer_and_close, SERVER_IP, PORT, backlog=1024)
    relay = await start_relay(PORT)
    try:
        async def client(n: int) -> int:
            answered = 0
            for _ in range(n):
                reader, writer = await asyncio.open_connection(RELAY_IP, PORT)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answered += (await reader.readexactly(len(ANSWER))) == ANSWER
                writer.transport.abort()  # as wrk does: done once the answer is in, without waiting for EOF
            return answered
        answered = sum(await asyncio.gather(*(client(60) for _ in range(50))))
        assert relay.poll() is None, f"the relay died (status {relay.returncode})"
        assert answered == 3000
    finally:
        await stop_relay(relay)
        server.close()
        await server.wait_closed()


async def test_bare_relay_passes_bulk_data_whole() -> None:
    server = await asyncio.start_server(count_and_echo_total, SERVER_IP, PORT + 1)
    relay = await start_relay(PORT + 1)
    try:
        size = 64 * 1024 * 1024
        reader, writer = await asyncio.open_connection(RELAY_IP, PORT + 1)
        writer.write(f"{size}\n".encode())
        chunk = b"x" * (1 << 20)
        for _ in range(size // len(chunk)):
            writer.write(chunk)
            await writer.drain()
        assert await asyncio.wait_for(reader.readline(), 30) == f"{size}\n".encode()
        writer.close()
    finally:
        await stop_relay(relay)
        server.close()
        await server.wait_closed()
