"""``events.k8s.io/v1`` Event: the events netemu records (core/v1 ``Event`` in the store, written by
``netemu.events``) seen with that version's field names, as kube-apiserver converts between the
two: ``involvedObject`` is ``regarding``, ``message`` is ``note``, ``source``, ``count`` and the
first/last timestamps are ``deprecatedSource``, ``deprecatedCount`` …

``EventV1`` describes the shape (discovery, OpenAPI, strategic merge patch read it); objects of
this version are never stored: ``to_v1`` and ``to_core`` convert the JSON forms both ways.
"""
# No ``from __future__ import annotations``: typeinfo resolves the field types in netemu.api.objects.
import datetime
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from netemu.api.objects import EventSource, ObjectMeta, ObjectReference

GROUP, VERSION = "events.k8s.io", "v1"
API_VERSION = f"{GROUP}/{VERSION}"

# events.k8s.io/v1 field → core/v1 field; the others (metadata, reason, type, action, series,
# related, eventTime, reportingInstance) have one name in both.
_RENAMED = {"regarding": "involvedObject", "note": "message", "reportingController": "reportingComponent",
            "deprecatedSource": "source", "deprecatedFirstTimestamp": "firstTimestamp",
            "deprecatedLastTimestamp": "lastTimestamp", "deprecatedCount": "count"}
_TO_V1 = {core: v1 for v1, core in _RENAMED.items()}


@dataclass(frozen=True, kw_only=True)
class EventV1:
    """events.k8s.io/v1 Event (the same fields netemu keeps for core/v1 Event, renamed)."""
    API_VERSION: ClassVar[str] = API_VERSION
    KIND: ClassVar[str] = "Event"
    NAMESPACED: ClassVar[bool] = True
    SCHEMA_NAME: ClassVar[str] = "io.k8s.api.events.v1.Event"
    api_version: str = API_VERSION
    kind: str = "Event"
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    event_time: str | None = None
    reporting_controller: str = ""
    reporting_instance: str = ""
    action: str = ""
    reason: str = ""
    regarding: ObjectReference = field(default_factory=ObjectReference)
    note: str = ""
    type: str = ""
    deprecated_source: EventSource = field(default_factory=EventSource)
    deprecated_first_timestamp: str | None = None
    deprecated_last_timestamp: str | None = None
    deprecated_count: int = 0
    IGNORED: ClassVar[frozenset[str]] = frozenset({"series", "related"})
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


def to_v1(core: dict[str, Any]) -> dict[str, Any]:
    """The events.k8s.io/v1 form of a core/v1 Event (its JSON form, as the API writes it)."""
    out: dict[str, Any] = {"kind": "Event", "apiVersion": API_VERSION}
    for key, value in core.items():
        if key not in ("kind", "apiVersion"):
            out[_TO_V1.get(key, key)] = value
    out.setdefault("eventTime", None)  # a MicroTime without omitempty: null when the recorder set none
    return out


def to_core(v1: Any) -> Any:
    """The core/v1 form of an events.k8s.io/v1 Event (a request body); anything but an
    events.k8s.io/v1 Event object is returned as it is, for the core decoder to refuse."""
    if not isinstance(v1, dict) or v1.get("apiVersion") != API_VERSION or v1.get("kind") != "Event":
        return v1
    out: dict[str, Any] = {"kind": "Event", "apiVersion": "v1"}
    for key, value in v1.items():
        if key not in ("kind", "apiVersion") and not (key == "eventTime" and value is None):
            out[_RENAMED.get(key, key)] = value
    if isinstance(out.get("eventTime"), str):
        out["eventTime"] = micro_time(out["eventTime"])
    return out


def micro_time(text: str) -> str:
    """``text`` (an RFC 3339 time) as Kubernetes writes a MicroTime (``2006-01-02T15:04:05.000000Z``),
    which is the only form clients read back (kubectl parses it with that layout); ``text``
    itself when it is no time."""
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return text
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def object_to_v1(body: Any) -> Any:
    """A response body of the core resource in this version: an Event or an EventList is
    converted; a Table, a Status or anything else is left as it is."""
    if not isinstance(body, dict):
        return body
    if body.get("kind") == "Event" and body.get("apiVersion") == "v1":
        return to_v1(body)
    if body.get("kind") == "EventList":
        return {**body, "apiVersion": API_VERSION, "items": [to_v1(item) for item in body.get("items", ())]}
    return body
