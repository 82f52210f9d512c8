"""The smallest uvloop TCP relay, the ceiling for any userspace proxy on this machine in this run.

    python bench/_bare_relay.py LISTEN_IP TARGET_IP PORT [PORT ...]

Relays LISTEN_IP:PORT to TARGET_IP:PORT for each port; prints ``ready`` once it listens. No
balancing, no state, no logging, no half-close kept open (see ``eof_received``): what is left is
the event loop's own cost per byte and per connection. bench/proxy.py runs it as a child process.
"""
import asyncio
import sys

import uvloop


class Side(asyncio.Protocol):
    """One side of a relayed connection: what it reads, its peer writes; while the peer's buffer is
    full, this side stops reading. The client side buffers until the upstream is connected."""

    def __init__(self, target=None, peer=None):
        self.target, self.peer, self.transport, self.pending, self.eof = target, peer, None, [], False

    def connection_made(self, transport):
        self.transport = transport
        if self.peer is None:  # the client side: connect upstream
            asyncio.get_running_loop().create_task(self.connect())
        else:  # the upstream side: flush what the client sent meanwhile
            self.peer.peer = self
            for data in self.peer.pending:
                transport.write(data)
            if self.peer.eof:
                transport.write_eof()

    async def connect(self):
        try:
            await asyncio.get_running_loop().create_connection(lambda: Side(peer=self), *self.target)
        except OSError:
            self.transport.close()

    def data_received(self, data):
        if self.peer is None or self.peer.transport is None:
            self.pending.append(data)
        elif not self.peer.transport.is_closing():
            self.peer.transport.write(data)

    def eof_received(self):
        if self.peer is None or self.peer.transport is None:
            self.eof = True
        elif not self.peer.transport.is_closing():
            self.peer.transport.write_eof()
        # None: this side closes once its buffer is written. Keeping it open (True) would relay a
        # true half-close, but uvloop 0.23 then aborts ("double free or corruption") under
        # connection churn; HTTP and iperf3 never half-close before their last answer.

    def pause_writing(self):
        if self.peer is not None and not self.peer.transport.is_closing():
            self.peer.transport.pause_reading()

    def resume_writing(self):
        if self.peer is not None and not self.peer.transport.is_closing():
            self.peer.transport.resume_reading()

    def connection_lost(self, exc):
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def main(listen_ip: str, target_ip: str, ports: list[int]) -> None:
    loop = asyncio.get_running_loop()
    for port in ports:
        await loop.create_server(lambda port=port: Side(target=(target_ip, port)), listen_ip, port, backlog=4096)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3:]]))
