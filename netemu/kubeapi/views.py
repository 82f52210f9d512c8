"""Resources served as another version's view of a kind the store keeps in one version: today
``events.k8s.io/v1`` events, a view of core/v1 events (``eventsv1``).

``ViewedRest`` wraps ``rest.Rest``: a request about a viewed resource is turned into the same
request about the stored resource (its body converted to the stored version first), and the
answer converted back; every other request, and every other method, goes to ``Rest`` as it is.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, AsyncIterator, Callable

from netemu.errors import InvalidError

from . import eventsv1
from .patch import apply_patch
from .resources import Resource, lookup
from .serverapply import APPLY_PATCH
from .status import bad_request


@dataclass(frozen=True)
class View:
    stored: Resource  # the resource whose objects are shown
    out: Callable[[Any], Any]  # a response body of ``stored`` → this version
    into: Callable[[Any], Any]  # a request body in this version → ``stored``'s


def _views() -> dict[tuple[str, str, str], View]:
    return {(eventsv1.GROUP, eventsv1.VERSION, "events"):
            View(lookup("", "v1", "events"), eventsv1.object_to_v1, eventsv1.to_core)}


class ViewedRest:
    """``rest.Rest`` with the viewed resources; see the module's docstring."""

    def __init__(self, rest: Any) -> None:
        self.rest = rest
        self.views = _views()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.rest, name)

    def _view(self, r: Resource) -> View | None:
        return self.views.get((r.group, r.version, r.plural))

    def list(self, r: Resource, namespace: str, query: Any) -> dict[str, Any]:
        view = self._view(r)
        if view is None:
            return self.rest.list(r, namespace, query)  # type: ignore[no-any-return]
        return view.out(self.rest.list(view.stored, namespace, query))  # type: ignore[no-any-return]

    def list_json(self, r: Resource, namespace: str, query: Any) -> bytes:
        if self._view(r) is None:
            return self.rest.list_json(r, namespace, query)  # type: ignore[no-any-return]
        return json.dumps(self.list(r, namespace, query)).encode()

    def get(self, r: Resource, namespace: str, name: str, query: Any) -> dict[str, Any]:
        view = self._view(r)
        if view is None:
            return self.rest.get(r, namespace, name, query)  # type: ignore[no-any-return]
        return view.out(self.rest.get(view.stored, namespace, name, query))  # type: ignore[no-any-return]

    def watch(self, r: Resource, namespace: str, query: Any) -> AsyncIterator[dict[str, Any]]:
        view = self._view(r)
        if view is None:
            return self.rest.watch(r, namespace, query)  # type: ignore[no-any-return]
        return self._converted(self.rest.watch(view.stored, namespace, query), view, r)

    @staticmethod
    async def _converted(events: AsyncIterator[dict[str, Any]], view: View,
                         r: Resource) -> AsyncIterator[dict[str, Any]]:
        try:
            async for event in events:
                if event.get("type") == "BOOKMARK":
                    event = {**event, "object": {**event["object"], "apiVersion": r.api_version}}
                elif "object" in event:
                    event = {**event, "object": view.out(event["object"])}
                yield event
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    def create(self, r: Resource, namespace: str, body: Any, query: Any) -> dict[str, Any]:
        view = self._view(r)
        if view is None:
            return self.rest.create(r, namespace, body, query)  # type: ignore[no-any-return]
        stored = self.rest.create(view.stored, namespace, self._into(view, r, body), query)
        return view.out(stored)  # type: ignore[no-any-return]

    def update(self, r: Resource, namespace: str, name: str, body: Any, query: Any) -> dict[str, Any]:
        view = self._view(r)
        if view is None:
            return self.rest.update(r, namespace, name, body, query)  # type: ignore[no-any-return]
        stored = self.rest.update(view.stored, namespace, name, self._into(view, r, body), query)
        return view.out(stored)  # type: ignore[no-any-return]

    def patch(self, r: Resource, namespace: str, name: str, content_type: str, body: Any,
              query: Any) -> dict[str, Any]:
        view = self._view(r)
        if view is None:
            return self.rest.patch(r, namespace, name, content_type, body, query)  # type: ignore[no-any-return]
        if content_type == APPLY_PATCH:  # the applied configuration is a whole object: convert it
            applied = self.rest.patch(view.stored, namespace, name, content_type, self._into(view, r, body), query)
            return view.out(applied)  # type: ignore[no-any-return]
        live = view.out(self.rest.get(view.stored, namespace, name, _plain(query)))
        try:
            patched = apply_patch(content_type, live, body, r.cls)
        except InvalidError as exc:
            raise bad_request(str(exc)) from exc
        return self.update(r, namespace, name, patched, query)

    def delete(self, r: Resource, namespace: str, name: str, options: Any) -> dict[str, Any]:
        view = self._view(r)
        if view is None:
            return self.rest.delete(r, namespace, name, options)  # type: ignore[no-any-return]
        return view.out(self.rest.delete(view.stored, namespace, name, options))  # type: ignore[no-any-return]

    def delete_collection(self, r: Resource, namespace: str, query: Any, options: Any) -> dict[str, Any]:
        view = self._view(r)
        if view is None:
            return self.rest.delete_collection(r, namespace, query, options)  # type: ignore[no-any-return]
        deleted = self.rest.delete_collection(view.stored, namespace, query, options)
        return view.out(deleted)  # type: ignore[no-any-return]

    @staticmethod
    def _into(view: View, r: Resource, body: Any) -> Any:
        if isinstance(body, dict) and (body.get("apiVersion"), body.get("kind")) != (r.api_version, r.kind):
            raise bad_request(f'{body.get("kind")} in version "{body.get("apiVersion")}" cannot be handled as a '
                              f"{r.kind}")
        return view.into(body)


def _plain(query: Any) -> Any:
    """``query`` asking for the object itself (not a Table)."""
    return replace(query, table=False)
