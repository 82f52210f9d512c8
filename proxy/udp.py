"""UDP listeners and flows.

A listener owns one UDP socket on a service address (bound by the group). The datagrams of each
client address form a flow: the first one asks the dispatch function for a ``Route``, which
gives the flow its endpoint and an upstream socket of its own (made in the route's network,
bound to the source address the backend should see, connected to the endpoint). Replies read
from that socket are sent to the client from the listener's socket, so they come from the
service address. A flow ends after ``udp_idle_timeout`` seconds without a datagram either way,
when its endpoint is withdrawn (as kube-proxy clears conntrack entries of removed UDP
endpoints), or when the listener closes (closing breaks UDP flows, as in the userspace proxy).
At ``udp_max_flows`` flows the idlest one makes room.

Sockets are plain non-blocking sockets read on readiness callbacks, no transports. A flow's
connected socket is watched by the proxy's ``poller.Poller``, which, unlike uvloop's
``add_reader``, keeps calling its reader after an ICMP error (so a flow whose endpoint refused a
datagram still gets the replies once it answers again). The listener's socket is not connected, so
the kernel reports no ICMP errors on it: it is watched by the event loop itself, which saves a
second epoll call per wakeup. The first two datagrams of a wake-up are read one by one
(``recvfrom``); a queue beyond them is read in a batch (``datagrams.DatagramBatch``: one recvmmsg
for up to 64 datagrams), where flows are found by the client's address as the kernel wrote it,
so a datagram of a known flow costs no address tuple. A flow is set up synchronously; a relayed
datagram costs one receive (or its share of a batch's) and one ``send``. A datagram that does not
fit in a socket buffer is dropped, as a full link would drop it. Impaired flows lose and delay
datagrams per direction; jitter may reorder them, as on a real link.

On a shared-stack backend an unimpaired flow whose endpoint is an in-process server (``local``:
the cluster DNS) has no upstream socket: an answer the server has at hand (its cache) is looked up
by the flow itself, any other datagram goes to the server's handler, and the answers leave the
listener's socket, as relayed ones do, so the client sees the same exchange and the connection log
the same flow; the two hops through the kernel it saves halve the cost of a cached DNS answer.
An answer at hand is written over its query in the batch's slot, and a batch's answers leave
together (one sendmmsg), before any datagram of the batch that is not answered so. If that
server stops, the flow's datagrams are lost, as they would be refused, until a server listens
at the address again.
"""
from __future__ import annotations

import logging
import socket
import time
from typing import Any

from . import local
from .connlog import OK, REFUSED, TIMEOUT
from .datagrams import ONE_BY_ONE, SLOT_SIZE, sender_name
from .impair import Shaper
from .route import Dispatch, RelayContext, Route
from .serviceport import REJECT, SERVE
from .sockopts import attach_filter

log = logging.getLogger(__name__)

_MAX_DATAGRAM = 65535
_BATCH = 64                 # datagrams read per readiness callback of a flow's socket
_MAX_BACKLOG = 0.25         # rate-capped flows drop datagrams that would wait longer than this (s)
_monotonic = time.monotonic


class UDPListener:
    def __init__(self, ctx: RelayContext, sock: socket.socket, dispatch: Dispatch) -> None:
        self.ctx = ctx
        self.sock = sock
        self.dispatch = dispatch
        self.flows: dict[bytes, _Flow | _LocalFlow] = {}  # by the client's address as the kernel writes it
        self.clients: dict[tuple[str, int], _Flow | _LocalFlow] = {}  # the same, by address tuple
        self._sweeper: Any = None
        self._fd = sock.fileno()
        self._batch = ctx.datagrams  # shared by the group's listeners
        ctx.loop.add_reader(self._fd, self._readable)  # not the poller: see the module's docstring

    def set_filter(self, program: bytes | None) -> None:
        attach_filter(self.sock, program)

    def close(self) -> None:
        if self._fd < 0:
            return
        self.ctx.loop.remove_reader(self._fd)
        self._fd = -1
        for flow in list(self.flows.values()):
            flow.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self.sock.close()

    def drop_endpoint(self, address: tuple[str, int]) -> None:
        """End the flows that go to ``address`` (a withdrawn endpoint)."""
        for flow in [f for f in self.flows.values() if f.endpoint == address]:
            flow.close()

    def ended(self, flow: Any) -> None:
        """A flow has closed: it leaves the table and its connection record ends."""
        if self.flows.get(flow.key) is flow:
            del self.flows[flow.key]
        if self.clients.get(flow.client) is flow:
            del self.clients[flow.client]
        self.ctx.live.discard(flow)
        flow.record.finish(OK if flow.down else TIMEOUT, flow.up, flow.down)

    def reply(self, data: bytes, client: tuple[str, int]) -> None:
        try:
            self.sock.sendto(data, client)
        except OSError:
            pass

    def _readable(self) -> None:
        # A few datagrams the plain way, so that exchanges that come one or a few at a time never
        # wait for a batch (``dns.server.UDPSocket._readable`` says why); more waiting than that is
        # a queue, and the rest is read in a batch.
        recvfrom, clients = self.sock.recvfrom, self.clients
        for _ in range(ONE_BY_ONE):
            try:
                data, client = recvfrom(_MAX_DATAGRAM)
            except OSError:  # nothing waiting (BlockingIOError) or an error: nothing to read now
                return
            flow = clients.get(client)
            if flow is None:
                flow = self._open_flow(sender_name(client), client)
                if flow is None:
                    continue
            flow.last = _monotonic()
            ready = flow.ready
            hit = ready(data[2:]) if ready is not None and not flow.closing() else None
            if hit is not None:  # an in-process server's answer at hand (the cluster DNS's cache)
                flow.up += len(data)
                flow.down += len(hit) + 2
                self.reply(data[:2] + hit, client)
                continue
            flow.forward(data)
            if self._fd < 0:  # closed meanwhile
                return
        batch, flows = self._batch, self.flows
        try:
            lengths = batch.receive(self._fd)
        except OSError:
            return
        now = _monotonic()  # one reading per batch: when each flow last carried a datagram
        data, answer, sender = batch.data, batch.answer, batch.sender
        for i, length in enumerate(lengths):
            key = sender(i)
            flow = flows.get(key)
            if flow is None:
                flow = self._open_flow(key, batch.address(i))
                if flow is None:
                    batch.pass_over(i)
                    continue
            flow.last = now
            ready = flow.ready
            if ready is not None and not flow.closing():
                at = i * SLOT_SIZE
                hit = ready(bytes(data[at + 2:at + length]))
                if hit is not None:  # an in-process server's answer at hand (the cluster DNS's cache)
                    flow.up += length
                    flow.down += len(hit) + 2
                    answer(i, hit)
                    continue
            batch.pass_over(i)  # the answers before it first: one client's stay in order
            flow.forward(batch.datagram(i, length))
            if self._fd < 0:  # closed meanwhile
                return
        batch.send_answers()

    def _open_flow(self, key: bytes, client: tuple[str, int]) -> "_Flow | _LocalFlow | None":
        route = self.dispatch(client)
        if route.verdict is not SERVE or route.address is None:
            route.record.finish(REFUSED if route.verdict is REJECT else TIMEOUT)
            return None
        if len(self.flows) >= self.ctx.udp_max_flows:
            self._sweep(make_room=True)
        imp = route.impairment
        impaired = imp is not None and (imp.udp_loss or imp.shapes)
        server = local.lookup(route.address) if not impaired and self.ctx.in_process_udp else None
        if server is not None:
            return self._add(_LocalFlow(self, key, client, route, server))
        sock = self.ctx.datagram_socket(route.where)
        try:
            self.ctx.bind_upstream(sock, route, route.address, stream=False)
            sock.connect(route.address)
        except OSError as exc:
            sock.close()
            log.debug("%s: UDP flow to %s:%s failed: %s", route.record.service_port, *route.address, exc)
            route.record.finish(REFUSED)
            return None
        return self._add((_ImpairedFlow if impaired else _Flow)(self, sock, key, client, route))

    def _add(self, flow: "_Flow | _LocalFlow") -> "_Flow | _LocalFlow":
        self.flows[flow.key] = self.clients[flow.client] = flow
        self.ctx.live.add(flow)
        if self._sweeper is None:
            self._schedule_sweep()
        return flow

    def _schedule_sweep(self) -> None:
        self._sweeper = self.ctx.loop.call_later(max(self.ctx.udp_idle_timeout / 4, 0.01), self._sweep)

    def _sweep(self, make_room: bool = False) -> None:
        if not make_room:
            self._sweeper = None
        now, idle = _monotonic(), self.ctx.udp_idle_timeout
        for flow in [f for f in self.flows.values() if now - f.last >= idle]:
            flow.close()
        if make_room and len(self.flows) >= self.ctx.udp_max_flows:
            min(self.flows.values(), key=lambda f: f.last).close()
        if self.flows and self._sweeper is None and self._fd >= 0:
            self._schedule_sweep()


class _FlowState:
    """What every flow keeps: its listener, client, endpoint and connection record, when it last
    carried a datagram, and the bytes each way."""

    __slots__ = ("listener", "key", "client", "endpoint", "record", "last", "up", "down")

    def __init__(self, listener: UDPListener, key: bytes, client: tuple[str, int], route: Route) -> None:
        self.listener = listener
        self.key = key
        self.client = client
        self.endpoint = route.address
        self.record = route.record
        self.last = _monotonic()
        self.up = 0
        self.down = 0

    @property
    def node(self) -> str:
        return self.record.node


class _Flow(_FlowState):
    """One client address's datagrams to one endpoint, and the replies."""

    __slots__ = ("sock", "fd")
    ready = None  # relayed: no answers at hand (see _LocalFlow)

    def __init__(self, listener: UDPListener, sock: socket.socket, key: bytes, client: tuple[str, int],
                 route: Route) -> None:
        super().__init__(listener, key, client, route)
        self.sock = sock
        self.fd = sock.fileno()
        listener.ctx.poller.add_reader(self.fd, self.readable)

    def forward(self, data: bytes) -> None:
        self.up += len(data)
        self.send(data)

    def send(self, data: bytes) -> None:
        try:
            self.sock.send(data)
        except OSError:  # buffer full, or an ICMP error from the endpoint reported late
            pass

    def readable(self) -> None:
        sock = self.sock
        for _ in range(_BATCH):
            try:
                data = sock.recv(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:  # the endpoint's port is closed (ICMP); keep the flow
                continue
            except OSError:
                return
            self.last = _monotonic()
            self.down += len(data)
            self.deliver(data)

    def deliver(self, data: bytes) -> None:
        self.listener.reply(data, self.client)

    def close(self) -> None:
        if self.fd < 0:
            return
        listener = self.listener
        listener.ctx.poller.forget(self.fd)
        self.fd = -1
        self.sock.close()
        listener.ended(self)


class _ImpairedFlow(_Flow):
    __slots__ = ("loss", "rng", "loop", "shaper_up", "shaper_down")

    def __init__(self, listener: UDPListener, sock: socket.socket, key: bytes, client: tuple[str, int],
                 route: Route) -> None:
        super().__init__(listener, sock, key, client, route)
        imp = route.impairment
        assert imp is not None
        ctx = listener.ctx
        self.loss = imp.udp_loss
        self.rng = ctx.rng
        self.loop = ctx.loop
        shapes = imp.shapes
        self.shaper_up = Shaper(imp, ordered=False, rng=ctx.rng) if shapes else None
        self.shaper_down = Shaper(imp, ordered=False, rng=ctx.rng) if shapes else None

    def forward(self, data: bytes) -> None:
        self.up += len(data)
        self._pass(data, self.shaper_up, self.send)

    def deliver(self, data: bytes) -> None:
        self._pass(data, self.shaper_down, self._reply)

    def _reply(self, data: bytes) -> None:
        if self.fd >= 0:
            self.listener.reply(data, self.client)

    def send(self, data: bytes) -> None:
        if self.fd >= 0:
            super().send(data)

    def _pass(self, data: bytes, shaper: Shaper | None, out: Any) -> None:
        if self.loss and self.rng.random() < self.loss:
            return
        if shaper is None:
            out(data)
            return
        now = self.loop.time()
        if shaper.backlog(now) > _MAX_BACKLOG:
            return
        self.loop.call_at(shaper.departure(len(data), now), out, data)


class _LocalFlow(_FlowState):
    """One client address's datagrams to an in-process server, and its answers.

    The flow keeps the server it found: the listener answers from ``Server.ready`` itself (no
    Python call); any other datagram is one call of the handler here. Once that server is
    closing, the flow looks the address up again and, if another server has registered it since
    (a restarted DNS pod at the same address), hands its datagrams to that one, as a relayed
    flow's would reach whatever now listens at the endpoint; otherwise they are lost, as they
    would be refused."""

    __slots__ = ("open", "server", "ready", "closing", "answer_to")

    def __init__(self, listener: UDPListener, key: bytes, client: tuple[str, int], route: Route,
                 server: local.Server) -> None:
        super().__init__(listener, key, client, route)
        self.open = True
        self.answer_to = self.answer          # bound once, not per datagram
        self._use(server)

    def _use(self, server: local.Server) -> None:
        self.server = server
        self.ready = server.ready
        self.closing = server.closing

    def forward(self, data: bytes) -> None:
        self.up += len(data)
        if self.closing():
            server = local.lookup(self.endpoint)  # type: ignore[arg-type]
            if server is None or server is self.server:
                return
            self._use(server)
        answer = self.server.handler(data, self.client, self.answer_to)  # a cached answer too
        if answer is not None:
            self.answer(answer, self.client)

    def answer(self, data: bytes, _client: tuple[str, int]) -> None:
        """An answer of the server (at once, or later through ``reply``): to the client, from the
        service address."""
        if self.open:
            self.down += len(data)
            self.listener.reply(data, self.client)

    def close(self) -> None:
        if not self.open:
            return
        self.open = False
        self.listener.ended(self)
