"""The DaemonSet REST strategy's own steps: the template generation.

apps/v1 keeps ``DaemonSetSpec.templateGeneration`` in the annotation
``deprecated.daemonset.template.generation``: 1 on create, one more each time an update changes
``spec.template`` (``daemonSetStrategy.PrepareForCreate/PrepareForUpdate``). The controller
labels each pod it makes with it (``pod-template-generation``).
"""
from __future__ import annotations

import dataclasses

from .objects import DaemonSet

TEMPLATE_GENERATION_ANNOTATION = "deprecated.daemonset.template.generation"


def template_generation(ds: DaemonSet) -> int | None:
    """The DaemonSet's template generation; None when it has none (or an unreadable one)."""
    text = ds.metadata.annotations.get(TEMPLATE_GENERATION_ANNOTATION)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _with_generation(ds: DaemonSet, generation: int) -> DaemonSet:
    annotations = {**ds.metadata.annotations, TEMPLATE_GENERATION_ANNOTATION: str(generation)}
    return dataclasses.replace(ds, metadata=dataclasses.replace(ds.metadata, annotations=annotations))


def prepare_daemon_set_for_create(ds: DaemonSet) -> DaemonSet:
    return _with_generation(ds, 1)


def prepare_daemon_set_for_update(live: DaemonSet, ds: DaemonSet) -> DaemonSet:
    generation = template_generation(live) or 1
    if ds.spec.template != live.spec.template:
        generation += 1
    return _with_generation(ds, generation)
