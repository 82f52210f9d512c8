"""In-process UDP endpoints: servers on the proxy's own event loop that a UDP flow may call.

A server that runs in this process (the cluster DNS) registers the address its UDP socket is
bound to with a ``Server``: a handler ``(data, client, reply)`` and, optionally, its answers at
hand. On a shared-stack backend a UDP flow whose
endpoint is a registered address hands each datagram to that handler instead of relaying it
through a socket of its own. The handler returns an answer it has at hand (a cached one) or None,
and gives any other through ``reply(data, client)``, at once or later; either way the answer leaves the service's listener
socket: the client sees what a DNAT'd exchange looks like (the answer comes from
ClusterIP:port to its own address and port), minus two socket hops per datagram. Only
unimpaired flows take this path; impaired ones are relayed, so delay, jitter, rate and loss
apply as before.

Only loopback addresses (127.0.0.0/8) are registered: on a shared stack the kernel lets one
socket at a time bind an address and port, so the key names exactly one server, while a pod
address inside a network namespace is never a loopback address and is never registered (the
netns backend's proxies relay as before).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Callable

Address = tuple[str, int]
Reply = Callable[[bytes, Address], None]
Handler = Callable[[bytes, Address, Reply], bytes | None]


def _never() -> bool:
    return False


@dataclass(frozen=True, slots=True)
class Server:
    """What a flow calls. ``handler`` answers any datagram. ``ready``, if given, looks up an
    answer at hand by the datagram minus its first two bytes (a DNS query's ID) — a C-level
    lookup such as a dict's ``get``, so a cached answer costs the flow no Python call; the answer
    is those two bytes followed by what it returns. ``closing`` says the server has stopped
    answering (its socket is closing), before its registration ends."""

    handler: Handler
    ready: Callable[[bytes], bytes | None] | None = None
    closing: Callable[[], bool] = _never


_servers: dict[Address, Server] = {}


def register(address: Address, server: Server) -> Callable[[], None]:
    """Let shared-stack flows to ``address`` call ``server``; returns the function that ends it
    (a no-op for an address that is not a loopback one, or once ended)."""
    try:
        loopback = ipaddress.IPv4Address(address[0]).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        return lambda: None
    key = (address[0], address[1])
    _servers[key] = server

    def unregister() -> None:
        if _servers.get(key) is server:
            del _servers[key]
    return unregister


lookup = _servers.get
"""The server registered for an address, or None."""
