"""Built-in emulations of common container images, run in-process on the cluster's event loop.

``resolve(image)`` returns the ``Emulation`` for an image name (or None); ``await
emulation.start(ctx)`` serves on ``ctx.pod_ip`` and returns a ``RunningEmulation``. See
``netemu.images.base`` for the contract and ``netemu.images.registry`` for the image table.
"""
from netemu.images.base import (
    ContainerContext, Emulation, Listener, RunningEmulation, resolve,
)
from netemu.images.registry import known_images

__all__ = ["ContainerContext", "Emulation", "Listener", "RunningEmulation", "known_images",
           "resolve"]
