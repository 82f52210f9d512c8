"""Files that exist only in memory and only while netemu holds them (``memfd_create``).

Some libraries take secrets (a TLS key, a client certificate) only as a path to open. An anonymous
memory file is such a path, ``/proc/self/fd/N``, that no other user can open and that nothing
outlives: it goes when its descriptor is closed, or with the process however that ends, where a
file in a temporary directory stays behind after ``kill -9``.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator


def memory_file(name: str, data: bytes) -> int:
    """A new memory file holding ``data``: its descriptor (close-on-exec), the caller's to close.
    ``name`` is what /proc shows for it (``/memfd:NAME (deleted)``)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        raise
    return fd


def path_of(fd: int) -> str:
    """The path that opens the memory file ``fd`` from this process (any thread)."""
    return f"/proc/self/fd/{fd}"


@contextmanager
def memory_path(name: str, data: bytes) -> Iterator[str]:
    """The path of a memory file holding ``data``, for the ``with`` block."""
    fd = memory_file(name, data)
    try:
        yield path_of(fd)
    finally:
        os.close(fd)
