"""``labelSelector`` and ``fieldSelector`` query parameters → one predicate over objects.

Label selectors use kubectl's ``-l`` syntax (``netemu.api.labels.parse_selector``). Field
selectors support what kube-apiserver supports for the served kinds: ``metadata.name``,
``metadata.namespace`` for every kind, and ``status.phase``, ``spec.nodeName``,
``spec.restartPolicy``, ``spec.schedulerName``, ``spec.serviceAccountName``, ``status.podIP``
for pods; ``involvedObject.*``, ``reason``, ``type``, ``source`` … for events (what ``kubectl
describe`` asks for); ``=``, ``==`` and ``!=``, joined by commas.
"""
from __future__ import annotations

from typing import Any, Callable

from netemu.api.labels import parse_selector, selector_matches
from netemu.errors import InvalidError

from .status import bad_request

_COMMON_FIELDS: dict[str, Callable[[Any], str]] = {
    "metadata.name": lambda o: o.metadata.name,
    "metadata.namespace": lambda o: o.metadata.namespace if o.NAMESPACED else "",
}
_POD_FIELDS: dict[str, Callable[[Any], str]] = {
    "status.phase": lambda p: p.status.phase or "",
    "spec.nodeName": lambda p: p.spec.node_name or "",
    "spec.restartPolicy": lambda p: p.spec.restart_policy or "",
    "spec.schedulerName": lambda p: p.spec.scheduler_name or "",
    "spec.serviceAccountName": lambda p: p.spec.service_account_name or "",
    "status.podIP": lambda p: p.status.pod_ip or "",
}


_EVENT_FIELDS: dict[str, Callable[[Any], str]] = {
    **{f"involvedObject.{name}": (lambda e, a=attr: getattr(e.involved_object, a) or "")
       for name, attr in (("kind", "kind"), ("namespace", "namespace"), ("name", "name"), ("uid", "uid"),
                          ("apiVersion", "api_version"), ("resourceVersion", "resource_version"),
                          ("fieldPath", "field_path"))},
    "reason": lambda e: e.reason or "",
    "reportingComponent": lambda e: e.reporting_component or "",
    "source": lambda e: e.source.component or e.reporting_component or "",
    "type": lambda e: e.type or "",
}
_KIND_FIELDS = {"Pod": _POD_FIELDS, "Event": _EVENT_FIELDS}


def _field_getters(kind: str) -> dict[str, Callable[[Any], str]]:
    return _COMMON_FIELDS | _KIND_FIELDS.get(kind, {})


def _field_predicate(kind: str, text: str) -> Callable[[Any], bool]:
    getters = _field_getters(kind)
    tests: list[Callable[[Any], bool]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if "!=" in part:
            field, value = part.split("!=", 1)
            negate = True
        elif "=" in part:
            field, value = part.replace("==", "=", 1).split("=", 1)
            negate = False
        else:
            raise bad_request(f'invalid selector: \'{text}\'; can\'t understand \'{part}\'')
        getter = getters.get(field.strip())
        if getter is None:
            raise bad_request(f'field label not supported: {field.strip()}')
        tests.append(lambda obj, g=getter, v=value.strip(), n=negate: (g(obj) == v) != n)
    return lambda obj: all(t(obj) for t in tests)


def object_filter(kind: str, label_selector: str | None, field_selector: str | None) -> Callable[[Any], bool]:
    """One predicate for both selectors (absent ones match everything); BadRequest when unparsable."""
    checks: list[Callable[[Any], bool]] = []
    if label_selector:
        try:
            selector = parse_selector(label_selector)
        except InvalidError as exc:
            raise bad_request(str(exc)) from exc
        checks.append(lambda obj: selector_matches(selector, obj.metadata.labels))
    if field_selector:
        checks.append(_field_predicate(kind, field_selector))
    return lambda obj: all(check(obj) for check in checks)
