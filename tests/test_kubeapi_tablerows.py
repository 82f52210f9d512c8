"""Table rows made once per object version (``netemu.kubeapi.tables.TableRows``, issue 15:
``kubectl get pods -A`` over 10,000 pods): a row is the row ``netemu.printers`` makes at the
request's time (AGE and a RESTARTS "(… ago)" move on with the clock), a write shows in the next
LIST, and a deleted object's row is not kept."""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
from typing import Any

import pytest
import yaml

from kubeapi_support import KUBECTL, api_fixtures
from netemu import printers
from netemu.api import load_text
from netemu.kubeapi import tables
from netemu.kubeapi.resources import lookup
from netemu.kubeapi.rest import Query, Rest
from netemu.store import Store

PODS = lookup("", "v1", "pods")
NOW = datetime.datetime.now(datetime.timezone.utc)
LATER = [NOW, NOW + datetime.timedelta(seconds=1.5), NOW + datetime.timedelta(minutes=7, seconds=3),
         NOW + datetime.timedelta(days=3, hours=5), NOW + datetime.timedelta(days=800)]


def pod(name: str, status: str = "") -> Any:
    (manifest,) = load_text(f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, labels: {{app: web}}}}
spec: {{containers: [{{name: c, image: nginx}}]}}
{status}""", source="<test>")
    return manifest.obj


RUNNING = """status:
  phase: Running
  podIP: 10.244.0.7
  conditions: [{type: Ready, status: "True"}]
  containerStatuses:
  - name: c
    ready: true
    restartCount: 0
    state: {running: {startedAt: "2024-05-01T10:00:00Z"}}
"""
RESTARTED = RUNNING.replace("restartCount: 0", "restartCount: 2") + """    lastState:
      terminated: {exitCode: 1, finishedAt: "2024-05-01T09:59:00Z"}
"""


def cells(rows: tables.TableRows, objs: list[Any], now: datetime.datetime) -> list[list[str]]:
    return [json.loads(text)["cells"] for text in rows.texts(type(objs[0]), objs, now)]


def test_a_kept_row_is_the_printers_row_at_every_later_time() -> None:
    store = Store()
    for name, status in (("plain", ""), ("running", RUNNING), ("restarted", RESTARTED)):
        store.create(pod(name, status))
    store.drain()
    objs = store.list("Pod")
    rows = tables.TableRows(store)
    for now in LATER:  # made at NOW, kept, asked again later: AGE and "(… ago)" follow the clock
        assert cells(rows, objs, now) == [printers.table_cells(o, now) for o in objs]
    assert [o.metadata.name for o in objs] == ["plain", "restarted", "running"]
    then, now = cells(rows, objs, LATER[-1])[1][3], cells(rows, objs, NOW)[1][3]
    assert then.startswith("2 (") and then.endswith(" ago)") and then != now


def test_a_write_shows_in_the_next_list_and_a_deleted_row_is_not_kept() -> None:
    store = Store()
    store.create(pod("web"))
    store.drain()
    rest = Rest(store, None, None, None)
    query = Query(table=True)

    def listed() -> list[dict[str, Any]]:
        return json.loads(rest.list_json(PODS, "default", query))["rows"]  # type: ignore[no-any-return]

    first = listed()
    assert first[0]["cells"][2] == "" and first[0]["object"]["metadata"]["labels"] == {"app": "web"}
    live = store.get("Pod", "default", "web")
    store.update(dataclasses.replace(pod("web", RUNNING), metadata=dataclasses.replace(
        live.metadata, labels={"app": "web", "tier": "front"})))
    store.drain()
    (row,) = listed()
    assert row["cells"][1:3] == ["1/1", "Running"] and row["cells"][5] == "10.244.0.7"
    assert row["object"]["metadata"]["labels"] == {"app": "web", "tier": "front"}
    assert row["object"]["metadata"]["resourceVersion"] == store.get("Pod", "default", "web").metadata.resource_version
    store.delete("Pod", "default", "web")
    store.drain()
    assert listed() == [] and len(rest.rows) == 0
    store.create(pod("web"))  # the same name again: a new object, a new row
    store.drain()
    (again,) = listed()
    assert again["cells"][2] == "" and again["object"]["metadata"]["uid"] != row["object"]["metadata"]["uid"]


def test_a_listed_table_is_the_table_of_its_objects() -> None:
    store = Store()
    for i in range(30):
        store.create(pod(f"p-{i:02d}", RUNNING if i % 3 else RESTARTED))
    store.drain()
    rest = Rest(store, None, None, None)
    for _ in range(2):  # made, then kept
        fast = json.loads(rest.list_json(PODS, "", Query(table=True, limit=12)))
        whole = rest.list(PODS, "", Query(table=True, limit=12))
        for row in (*fast["rows"], *whole["rows"]):
            row["cells"][4] = "AGE"  # the two were made a moment apart
        assert fast == whole and len(fast["rows"]) == 12


api, kubectl, namespace = api_fixtures("tablerows")


@pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")
def test_kubectl_pages_show_each_pod_once_and_a_write_at_once(kubectl, api, namespace):
    docs = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p-{i:02d}", "labels": {"app": "web"}},
             "spec": {"containers": [{"name": "c", "image": "nginx"}]}} for i in range(23)]
    kubectl("create", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))
    listed = kubectl("get", "pods", "-n", namespace, "--chunk-size=5", "--no-headers").stdout.split("\n")
    assert sorted(line.split()[0] for line in listed if line) == [f"p-{i:02d}" for i in range(23)]
    kubectl("get", "pods", "-A", "--show-labels")  # every row made and kept
    kubectl("label", "pod", "p-07", "-n", namespace, "tier=front")
    labelled = kubectl("get", "pods", "-n", namespace, "--show-labels", "--chunk-size=5").stdout
    assert [line.split()[-1] for line in labelled.splitlines() if line.startswith("p-07")] == ["app=web,tier=front"]
    kubectl("delete", "pod", "p-03", "-n", namespace, "--wait=true")
    remaining = kubectl("get", "pods", "-n", namespace, "--no-headers", "--chunk-size=5").stdout.split()
    assert "p-03" not in remaining and "p-04" in remaining
