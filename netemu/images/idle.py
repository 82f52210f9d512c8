"""Images that hold no server: the ``pause`` sandbox image and the tool images (busybox,
busyboxplus, curl, alpine, ubuntu, debian, netshoot).

They open no sockets and print nothing, as the real ones do. The tool images idle so that
``exec`` can run tools next to them (the real ones run a shell that would exit at once without a
TTY). ``real_program`` tells the kubelet what the real image runs when the container has args
but no command, so ``busybox`` + ``args: [sleep, "3600"]`` can run a real ``sleep``.
"""
from __future__ import annotations

import shutil
from collections.abc import Sequence

from netemu.images.base import ContainerContext, EmulationBase, RunningEmulation


class Pause(EmulationBase):
    """registry.k8s.io/pause: sleeps until stopped (exits 0 on SIGTERM)."""

    name = "pause"

    async def start(self, ctx: ContainerContext) -> RunningEmulation:
        return RunningEmulation(self.label(ctx), stop_code=0)


class Idle(EmulationBase):
    """A tool image kept alive for ``exec``.

    ``entrypoint`` is the image's ENTRYPOINT as far as args are concerned: empty when the args
    are the program themselves (busybox, alpine ...); ``("curl",)`` for curlimages/curl, whose
    entrypoint script runs ``curl "$@"`` unless the first arg is a command it can find.
    """

    def __init__(self, name: str, entrypoint: tuple[str, ...] = ()) -> None:
        self.name = name
        self.entrypoint = entrypoint

    async def start(self, ctx: ContainerContext) -> RunningEmulation:
        # a shell as PID 1 ignores SIGTERM and is killed after the grace period
        return RunningEmulation(self.label(ctx), stop_code=137)

    def real_program(self, args: Sequence[str]) -> tuple[str, ...] | None:
        if not args:
            return None
        if self.entrypoint and (args[0].startswith("-") or shutil.which(args[0]) is None):
            return (*self.entrypoint, *args)
        return tuple(args)


__all__ = ["Idle", "Pause"]
