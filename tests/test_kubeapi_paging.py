"""LIST in pages (``limit`` + ``continue``, as kubectl reads every list): each page reads from
where the previous one stopped, so paging through N objects looks at N objects, not N per page
(issue 15: ``kubectl get pods -A`` over 10,000 pods)."""
from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from netemu.api import load_text
from netemu.kubeapi import rest as rest_module
from netemu.kubeapi.resources import lookup
from netemu.kubeapi.rest import Query, Rest
from netemu.store import Store

PODS = lookup("", "v1", "pods")


def pod(namespace: str, name: str, app: str = "web") -> Any:
    (manifest,) = load_text(f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}, labels: {{app: {app}}}}}
spec: {{containers: [{{name: c, image: nginx}}]}}
""", source="<test>")
    return manifest.obj


def store_with(pods: list[tuple[str, str]]) -> Store:
    store = Store()
    for ns, name in pods:
        store.create(pod(ns, name))
    store.drain()
    return store


def names(page: dict[str, Any]) -> list[tuple[str, str]]:
    return [(item["metadata"]["namespace"], item["metadata"]["name"]) for item in page["items"]]


def all_pages(rest: Rest, namespace: str, limit: int, **query: Any) -> tuple[list[tuple[str, str]], int]:
    seen: list[tuple[str, str]] = []
    token, pages = "", 0
    while True:
        page = rest.list(PODS, namespace, Query(limit=limit, continue_token=token, **query))
        pages += 1
        seen += names(page)
        token = page["metadata"].get("continue", "")
        if not token:
            return seen, pages


KEYS = [(ns, f"p-{i:03d}") for ns in ("a", "default", "zz") for i in range(120)]


def test_pages_cover_every_object_once_in_list_order() -> None:
    store = store_with(list(reversed(KEYS)))
    rest = Rest(store, None, None, None)
    seen, pages = all_pages(rest, "", 50)
    assert seen == sorted(KEYS) == [(o.metadata.namespace, o.metadata.name) for o in store.list("Pod")]
    assert pages == 8  # 360 objects: 7 full pages and one of 10
    in_default, _ = all_pages(rest, "default", 50)
    assert in_default == [k for k in sorted(KEYS) if k[0] == "default"]


def test_each_page_looks_only_at_its_own_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    store = store_with(KEYS)
    rest = Rest(store, None, None, None)
    looked_at = 0
    real_filter = rest_module.object_filter

    def counting_filter(*args: Any) -> Any:
        accept = real_filter(*args)

        def counted(obj: Any) -> bool:
            nonlocal looked_at
            looked_at += 1
            return bool(accept(obj))
        return counted

    monkeypatch.setattr(rest_module, "object_filter", counting_filter)
    seen, pages = all_pages(rest, "", 30)
    assert len(seen) == len(KEYS)
    assert looked_at <= len(KEYS) + pages  # one object past each page's limit, never a re-read of the list


def test_a_label_selector_fills_pages_from_further_on() -> None:
    store = Store()
    for i, (ns, name) in enumerate(KEYS):
        store.create(pod(ns, name, app="db" if i % 7 == 0 else "web"))
    store.drain()
    seen, _ = all_pages(Rest(store, None, None, None), "", 10, label_selector="app=db")
    assert seen == sorted(k for i, k in enumerate(KEYS) if i % 7 == 0)


def test_writes_between_pages_show_as_a_fresh_list_would() -> None:
    store = store_with(KEYS)
    rest = Rest(store, None, None, None)
    first = rest.list(PODS, "", Query(limit=100))
    token = first["metadata"]["continue"]
    store.delete("Pod", "a", "p-110")  # not read yet: gone from the next page
    store.create(pod("a", "p-105x"))  # after the token: on the next page
    store.create(pod("a", "p-000x"))  # before the token: not repeated
    live = store.get("Pod", "default", "p-000")
    store.update(dataclasses.replace(live, metadata=dataclasses.replace(live.metadata, labels={"app": "other"})))
    rest_of_it = []
    while token:
        page = rest.list(PODS, "", Query(limit=100, continue_token=token))
        rest_of_it += names(page)
        token = page["metadata"].get("continue", "")
    expected = sorted([k for k in KEYS if k[0] != "a" or k[1] > "p-099"] + [("a", "p-105x")])
    expected.remove(("a", "p-110"))
    assert rest_of_it == expected
