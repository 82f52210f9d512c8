"""Server-side printing: ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io`` answers a GET,
LIST or WATCH with a ``meta.k8s.io/v1 Table`` whose columns and cells are netemu's kubectl-exact
ones (``netemu.printers``), so ``kubectl get`` prints what ``netemu get`` prints.

A LIST's rows come from ``TableRows``: each object's row is made once per object version, as
JSON text around its AGE cell, and only the AGE cell is made per request (a row with any other
cell that changes with the clock, a RESTARTS "(5m ago)", is made whole each time). That is what
keeps a page of 500 pods (``kubectl get pods -A`` reads 10,000 in 21) in about a millisecond."""
from __future__ import annotations

import datetime
import json
from typing import Any, Callable, Sequence

from netemu import printers

from .livecache import LiveCache
from .wire import list_json

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


Cells = Callable[[Any, datetime.datetime], list[str]]


def _printer(cls: type) -> tuple[tuple[str, ...], tuple[str, ...], Cells]:
    """``cls``'s columns (always, ``-o wide`` only) and its row's cells."""
    try:
        columns, wide = printers.table_columns(cls)
        return columns, wide, printers.table_cells
    except KeyError:  # a kind netemu prints no table for: kube-apiserver's default columns
        return ("NAME", "AGE"), (), _default_cells


def _head(cls: type, resource_version: str, continue_token: str, headers: bool) -> dict[str, Any]:
    columns, wide, _ = _printer(cls)
    metadata: dict[str, Any] = {"resourceVersion": resource_version}
    if continue_token:
        metadata["continue"] = continue_token
    return {
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
        "columnDefinitions": ([_column(c, 0) for c in columns] + [_column(c, 1) for c in wide]) if headers else [],
    }


def table(cls: type, objs: Sequence[Any], *, resource_version: str = "", continue_token: str = "",
          headers: bool = True) -> dict[str, Any]:
    """A Table of ``objs`` (all of type ``cls``); ``headers`` False leaves the column
    definitions out (watch events after the first, as kube-apiserver sends them)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    cells = _printer(cls)[2]
    return {**_head(cls, resource_version, continue_token, headers),
            "rows": [{"cells": cells(obj, now), "object": _partial_metadata(obj)} for obj in objs]}


def table_json(cls: type, objs: Sequence[Any], rows: "TableRows", *, resource_version: str,
               continue_token: str = "") -> bytes:
    """``table(cls, objs, …)`` as the JSON a LIST's response carries, its rows from ``rows``."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return list_json(_head(cls, resource_version, continue_token, True), rows.texts(cls, objs, now), key="rows")


# Far enough from a row's first making to change every duration kubectl prints (seconds to years).
_PROBE = datetime.timedelta(days=401, seconds=7)
_AGE_MARK = "\0AGE\0"  # stands for the AGE cell in a row's text until it is cut there


def _age(created: datetime.datetime | None, now: datetime.datetime) -> str:
    """The AGE cell, as ``printers`` makes it (kubectl's translateTimestampSince)."""
    return printers.human_duration(now - created) if created is not None else "<unknown>"


class _Row:
    """An object's row as JSON text, cut where its AGE cell goes (``created``: when the object
    was made; None with ``tail`` None when the row has no AGE column)."""
    __slots__ = ("head", "tail", "created")

    def __init__(self, head: str, tail: str | None, created: datetime.datetime | None) -> None:
        self.head, self.tail, self.created = head, tail, created

    def text(self, now: datetime.datetime, ages: dict[datetime.datetime | None, str]) -> str:
        """The row at ``now``; ``ages``: the AGE cells made so far at ``now``, by creation time
        (a Deployment's pods share theirs, to the second)."""
        if self.tail is None:
            return self.head
        age = ages.get(self.created)
        if age is None:
            age = ages[self.created] = _age(self.created, now)
        return f'{self.head}"{age}"{self.tail}'  # a duration or <unknown>: nothing to escape


class TableRows:
    """Each live object's Table row, made once per object version (``livecache``)."""

    def __init__(self, store: Any) -> None:
        self._live: LiveCache[_Row | None] = LiveCache(store)  # None: a row made whole per request

    def texts(self, cls: type, objs: Sequence[Any], now: datetime.datetime) -> list[str]:
        columns, _, cells = _printer(cls)
        age = columns.index("AGE") if "AGE" in columns else None
        out = []
        ages: dict[datetime.datetime | None, str] = {}
        for obj in objs:
            row = self._live.get(obj, lambda o: _made_once(o, cells, age, now))
            out.append(row.text(now, ages) if row is not None else
                       json.dumps({"cells": cells(obj, now), "object": _partial_metadata(obj)}))
        return out

    def __len__(self) -> int:
        return len(self._live)


def _made_once(obj: Any, cells: Cells, age: int | None, now: datetime.datetime) -> _Row | None:
    """``obj``'s row for keeping, or None when a cell other than AGE changes with the clock
    (found by making the row at ``now`` and once more far later)."""
    at_now, later = cells(obj, now), cells(obj, now + _PROBE)
    created = printers.parse_time(obj.metadata.creation_timestamp)
    if age is not None:
        if (at_now[age], later[age]) != (_age(created, now), _age(created, now + _PROBE)):
            return None  # an AGE column that is not the object's age
        at_now[age] = later[age] = _AGE_MARK
    if at_now != later:
        return None
    text = json.dumps({"cells": at_now, "object": _partial_metadata(obj)})
    if age is None:
        return _Row(text, None, None)
    head, tail = text.split(json.dumps(_AGE_MARK))
    return _Row(head, tail, created)
