"""``nft -f -`` batches inside a node namespace: what the NetworkPolicy enforcer
(``netemu.networkpolicy``) and the kernel service proxy (``netemu.proxy.nftables_proxier``) send
to keep their tables in step, each batch one atomic transaction.

A batch goes through ``libnftables`` (the library the ``nft`` command is built on, loaded with
ctypes) on a thread switched into the namespace: no process to start, so an EndpointSlice change
reaches the kernel in a few milliseconds even while the event loop is busy. Without the library
(``libnftables.so.1``) the ``nft`` command runs instead, the same text on its standard input.
"""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import os
import shutil

from netemu.errors import FabricError
from netemu.spawn import spawn

from . import namespaces

NFT_TIMEOUT = 10.0


def nft_binary() -> str:
    found = shutil.which("nft", path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin")
    if found is None:
        raise FabricError("nftables on the netns backend (NetworkPolicy, proxyMode nftables) needs `nft` "
                          "(Debian package nftables)")
    return found


class _Libnftables:
    """The few calls of libnftables(3) a batch needs. A context per batch, made on the thread
    switched into the namespace, so that its netlink socket is there (and gone with the batch)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.lib = lib

    def run(self, netns: str, script: str) -> None:
        """On a thread switched into ``netns``: apply ``script`` as one transaction."""
        lib = self.lib
        ctx = lib.nft_ctx_new(0)  # NFT_CTX_DEFAULT
        if not ctx:
            raise FabricError(f"nft in {netns}: libnftables could not make a context")
        try:
            lib.nft_ctx_buffer_output(ctx)
            lib.nft_ctx_buffer_error(ctx)
            if lib.nft_run_cmd_from_buffer(ctx, script.encode()) != 0:
                err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace").strip()
                raise FabricError(f"nft in {netns} failed: {err}")
        finally:
            lib.nft_ctx_free(ctx)


@functools.cache
def _libnftables() -> _Libnftables | None:
    name = ctypes.util.find_library("nftables") or "libnftables.so.1"
    try:
        return _Libnftables(ctypes.CDLL(name))
    except (OSError, AttributeError):
        return None


async def run_nft(netns: str, script: str) -> None:
    """``nft -f -`` with ``script`` inside the node namespace ``netns``."""
    lib = _libnftables()
    if lib is not None:
        try:
            await namespaces.acall_in(netns, lib.run, netns, script)
        except OSError as exc:  # the namespace is gone
            raise FabricError(f"nft in {netns}: {exc}") from exc
        return
    argv = [*namespaces.exec_prefix(netns), nft_binary(), "-f", "-"]
    try:
        proc = await spawn(*argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                           stderr=asyncio.subprocess.PIPE)
        _out, err = await asyncio.wait_for(proc.communicate(script.encode()), NFT_TIMEOUT)
    except (TimeoutError, OSError) as exc:
        raise FabricError(f"nft in {netns}: {exc!r}") from exc
    if proc.returncode != 0:
        raise FabricError(f"nft in {netns} failed with status {proc.returncode}: "
                          f"{err.decode(errors='replace').strip()}")
