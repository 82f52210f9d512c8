"""Readiness of the proxy's raw sockets: one epoll set, watched by the event loop as one descriptor.

The relays read and write raw non-blocking sockets on readiness callbacks. They do not register
those sockets with ``loop.add_reader`` / ``add_writer``: uvloop (libuv's ``uv_poll``) answers an
``EPOLLERR`` on a watched descriptor — what a TCP reset or an ICMP error on a connected UDP
socket raises — by stopping the watch for good and reporting ``EBADF`` to the loop's exception
handler, never calling the reader or the writer. A relay whose client reset would wait forever,
holding both of its sockets. Here every socket is registered in one epoll set of the proxy's own
(level-triggered, as the loops are), the loop watches only the epoll descriptor, and an error or
hang-up wakes the socket's reader and writer like readiness does, so their next call meets the
error; the proxy behaves the same on asyncio's loop and on uvloop.

A relay's socket (``watch``) is registered for EPOLLRDHUP too: when its peer's data and FIN are
both waiting (an answer followed by a close, the usual end of a short connection), the reader is
called a second time in the same wake-up and meets the EOF there, instead of on the next one.

A socket can also be watched for errors alone (``watch_errors``): a relay whose source has sent
EOF, or whose direction waits for the other socket to drain, still learns at once that the peer
reset. An error or hang-up with nothing to wake is reported to that callback once; the socket is
then no longer watched until a reader or writer is added again (epoll keeps reporting a hang-up,
and the loop would spin on it).

Callbacks run synchronously from one readiness callback of the loop, at most ``_BATCH`` events
per call. An event is not delivered to a registration made during the same call (its descriptor
may be a new socket under a just-closed one's number); being level-triggered, it comes back at
the next call if it still holds.
"""
from __future__ import annotations

import asyncio
import select
from typing import Callable

Callback = Callable[[], None]

_BATCH = 256
_IN, _OUT = select.EPOLLIN, select.EPOLLOUT
_ERR, _HUP, _RDHUP = select.EPOLLERR, select.EPOLLHUP, select.EPOLLRDHUP
_WAKES_READER = _IN | _ERR | _HUP | _RDHUP
_IN_RDHUP = _IN | _RDHUP
_WAKES_WRITER = _OUT | _ERR | _HUP


def _hung_up(fd: int) -> bool:
    """Whether ``fd`` itself has an error or hang-up pending (not a closed descriptor's event
    reported under its number, see ``Poller.closing``)."""
    probe = select.poll()
    probe.register(fd, 0)  # errors and hang-ups are always reported
    return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in probe.poll(0))


class _Watch:
    __slots__ = ("reader", "writer", "on_error", "mask", "since")

    def __init__(self, since: int) -> None:
        self.reader: Callback | None = None
        self.writer: Callback | None = None
        self.on_error: Callback | None = None
        self.mask: int | None = None   # what epoll has registered; None: not registered
        self.since = since             # the dispatch during which it was made


class Poller:
    """Reader, writer and error callbacks per descriptor; ``close`` when the proxy closes."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._epoll = select.epoll()   # close-on-exec
        self._watches: dict[int, _Watch] = {}
        self._dispatches = 0
        self.events = 0                # readiness events handled so far (how busy the proxy is)
        loop.add_reader(self._epoll.fileno(), self._dispatch)

    def __len__(self) -> int:
        return len(self._watches)

    # ------------------------------------------------------------------ registration

    def add_reader(self, fd: int, callback: Callback) -> None:
        watch = self._watch(fd)
        watch.reader = callback
        self._apply(fd, watch)

    def remove_reader(self, fd: int) -> None:
        watch = self._watches.get(fd)
        if watch is not None and watch.reader is not None:
            watch.reader = None
            self._apply(fd, watch)

    def add_writer(self, fd: int, callback: Callback) -> None:
        watch = self._watch(fd)
        watch.writer = callback
        self._apply(fd, watch)

    def remove_writer(self, fd: int) -> None:
        watch = self._watches.get(fd)
        if watch is not None and watch.writer is not None:
            watch.writer = None
            self._apply(fd, watch)

    def watch_errors(self, fd: int, callback: Callback) -> None:
        """Call ``callback`` (once) on an error or hang-up of ``fd`` that no reader or writer is
        there to meet; it should look at ``SO_ERROR``."""
        watch = self._watch(fd)
        watch.on_error = callback
        self._apply(fd, watch)

    def watch(self, fd: int, reader: Callback, on_error: Callback) -> None:
        """``add_reader`` and ``watch_errors`` at once (one system call: a relay's new socket), with
        EPOLLRDHUP: data and the peer's FIN are read to the EOF in one wake-up (see above)."""
        watch = self._watches.get(fd)
        if watch is None:  # the usual case, twice per connection: a new socket, registered here
            watch = self._watches[fd] = _Watch(self._dispatches)
            watch.reader, watch.on_error = reader, on_error
            try:
                self._epoll.register(fd, _IN_RDHUP)
            except FileExistsError:  # registered under a socket closed without ``forget``
                self._epoll.modify(fd, _IN_RDHUP)
            watch.mask = _IN_RDHUP
            return
        watch.reader = reader
        watch.on_error = on_error
        self._apply(fd, watch)

    def forget(self, fd: int) -> None:
        """Drop every callback of ``fd`` (before closing it)."""
        watch = self._watches.pop(fd, None)
        if watch is not None and watch.mask is not None:
            self._unregister(fd)

    def closing(self, fd: int) -> None:
        """Drop every callback of ``fd``, which the caller closes at once: closing a descriptor
        takes it out of the epoll set (no system call here). Should a forked child still hold
        it for a moment, its events come under the same number; being level-triggered and
        checked, a callback woken by them for a new socket under that number finds nothing."""
        self._watches.pop(fd, None)

    def close(self) -> None:
        if self._epoll.closed:
            return
        self.loop.remove_reader(self._epoll.fileno())
        self._epoll.close()
        self._watches.clear()

    # ------------------------------------------------------------------ internals

    def _watch(self, fd: int) -> _Watch:
        watch = self._watches.get(fd)
        if watch is None:
            watch = self._watches[fd] = _Watch(self._dispatches)
        return watch

    def _apply(self, fd: int, watch: _Watch) -> None:
        if watch.reader is None and watch.writer is None and watch.on_error is None:
            self.forget(fd)
            return
        mask = (_IN if watch.reader is not None else 0) | (_OUT if watch.writer is not None else 0)
        try:
            if watch.mask is None:
                self._epoll.register(fd, mask)
            elif mask != watch.mask:
                self._epoll.modify(fd, mask)
        except FileExistsError:    # registered under a socket closed without ``forget``
            self._epoll.modify(fd, mask)
        except FileNotFoundError:  # that socket's registration went with it
            self._epoll.register(fd, mask)
        watch.mask = mask

    def _unregister(self, fd: int) -> None:
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):  # already closed: the kernel dropped it
            pass

    def _dispatch(self) -> None:
        try:
            events = self._epoll.poll(0, _BATCH)
        except (InterruptedError, ValueError):  # ValueError: closed under us
            return
        self._dispatches += 1
        self.events += len(events)
        this = self._dispatches
        watches = self._watches
        for fd, ev in events:
            watch = watches.get(fd)
            if watch is None or watch.since == this:
                continue
            if ev == _IN:  # the usual event, readable and nothing else: its reader, if any
                reader = watch.reader
                if reader is not None:
                    reader()
                continue
            woken = False
            reader = watch.reader
            if ev & _WAKES_READER and reader is not None:
                woken = True
                reader()
                if watches.get(fd) is not watch:
                    continue
                if ev & _RDHUP and watch.reader is reader:  # data, then the peer's FIN: on to the EOF
                    reader()
                    if watches.get(fd) is not watch:
                        continue
            if ev & _WAKES_WRITER and watch.writer is not None:
                woken = True
                watch.writer()
                if watches.get(fd) is not watch:
                    continue
            if woken or not ev & (_ERR | _HUP):
                continue
            if watch.on_error is not None:
                watch.on_error()
                if watches.get(fd) is not watch:
                    continue
            if watch.reader is None and watch.writer is None and watch.mask is not None and _hung_up(fd):
                self._unregister(fd)  # park: a hang-up stays reported until a callback is added
                watch.mask = None
