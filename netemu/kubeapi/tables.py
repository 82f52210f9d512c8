"""Server-side printing: ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io`` answers a GET,
LIST or WATCH with a ``meta.k8s.io/v1 Table`` whose columns and cells are netemu's kubectl-exact
ones (``netemu.printers``), so ``kubectl get`` prints what ``netemu get`` prints."""
from __future__ import annotations

import datetime
from typing import Any, Sequence

from netemu import printers

TABLE_MEDIA = "as=Table"

# Column types and formats, as kube-apiserver describes them (kubectl right-aligns nothing, but
# ``--sort-by`` and custom printers read them).
_FORMATS = {"NAME": ("string", "name")}


def wants_table(accept: str) -> bool:
    return any(TABLE_MEDIA in part and "g=meta.k8s.io" in part for part in accept.split(","))


def _column(name: str, priority: int) -> dict[str, Any]:
    type_, format_ = _FORMATS.get(name, ("string", ""))
    return {"name": name.title() if name != "NAME" else "Name", "type": type_, "format": format_,
            "description": "", "priority": priority}


def _partial_metadata(obj: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": obj.metadata.name, "uid": obj.metadata.uid,
                            "resourceVersion": obj.metadata.resource_version,
                            "creationTimestamp": obj.metadata.creation_timestamp}
    if obj.NAMESPACED:
        meta["namespace"] = obj.metadata.namespace
    if obj.metadata.labels:
        meta["labels"] = dict(obj.metadata.labels)
    if obj.metadata.deletion_timestamp:
        meta["deletionTimestamp"] = obj.metadata.deletion_timestamp
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta}


def _default_cells(obj: Any, now: datetime.datetime) -> list[str]:
    created = printers.parse_time(obj.metadata.creation_timestamp)
    return [obj.metadata.name, printers.human_duration(now - created) if created else "<unknown>"]


def table(cls: type, objs: Sequence[Any], *, resource_version: str = "", continue_token: str = "",
          headers: bool = True) -> dict[str, Any]:
    """A Table of ``objs`` (all of type ``cls``); ``headers`` False leaves the column
    definitions out (watch events after the first, as kube-apiserver sends them)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    try:
        columns, wide = printers.table_columns(cls)
        cells: Any = printers.table_cells
    except KeyError:  # a kind netemu prints no table for: kube-apiserver's default columns
        columns, wide = ("NAME", "AGE"), ()
        cells = _default_cells
    metadata: dict[str, Any] = {"resourceVersion": resource_version}
    if continue_token:
        metadata["continue"] = continue_token
    return {
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
        "columnDefinitions": ([_column(c, 0) for c in columns] + [_column(c, 1) for c in wide]) if headers else [],
        "rows": [{"cells": cells(obj, now), "object": _partial_metadata(obj)} for obj in objs],
    }
