"""Kubernetes' generated names: ``metadata.generateName`` expansion and ``rand.SafeEncodeString``.

The alphabet (k8s.io/apimachinery/pkg/util/rand) has no vowels, so no words, and no confusable
characters; both random suffixes and pod-template hashes are drawn from it.
"""
from __future__ import annotations

import os
import random

ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"
RANDOM_LENGTH = 5
MAX_GENERATED_NAME_BASE = 63 - RANDOM_LENGTH  # names.SimpleNameGenerator truncates the base


_VARIANT = "89ab" * 4  # the top two bits of the clock_seq byte: 10 (RFC 4122)


def new_uid() -> str:
    """A random (version 4) UUID as text, as kube-apiserver gives each object (``uuid.NewUUID``):
    what ``str(uuid.uuid4())`` returns, from the same source, at a third of its cost."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16)]}{h[17:20]}-{h[20:]}"


def safe_encode(text: str) -> str:
    """``rand.SafeEncodeString``: each character mapped into ALPHANUMS."""
    return "".join(ALPHANUMS[ord(c) % len(ALPHANUMS)] for c in text)


def random_suffix(length: int = RANDOM_LENGTH) -> str:
    return "".join(random.choices(ALPHANUMS, k=length))


def generated_name(base: str) -> str:
    """The name the API server gives an object with ``generateName: base``."""
    return base[:MAX_GENERATED_NAME_BASE] + random_suffix()
