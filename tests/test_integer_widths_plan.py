"""The integer-width check every write goes through (``validation.integer_width_problems``)
plans each dataclass once: checking another object of the same kinds makes no field list and no
JSON name (it cost a millisecond per object: issue 15), and still finds what it found before."""
from __future__ import annotations

import dataclasses

import pytest

from netemu.api import load_text, objects, validation
from netemu.api.defaults import apply_defaults

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata: {{name: web-{i}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 30
      containers:
      - name: web
        image: nginx
        ports: [{{containerPort: 8080}}]
        readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 5}}
"""


def deployment(i: int) -> object:
    (manifest,) = load_text(DEPLOYMENT.format(i=i), source="<test>")
    return apply_defaults(manifest.obj)


def test_a_class_is_planned_once(monkeypatch: pytest.MonkeyPatch) -> None:
    assert validation.integer_width_problems(deployment(0)) == []  # plans every class a Deployment holds
    others = [deployment(i) for i in range(1, 20)]
    named: list[str] = []
    real = objects.json_name
    monkeypatch.setattr(objects, "json_name", lambda attr: named.append(attr) or real(attr))
    fields = dataclasses.fields
    listed: list[type] = []
    monkeypatch.setattr(validation.dataclasses, "fields", lambda cls: listed.append(cls) or fields(cls))
    for obj in others:
        assert validation.integer_width_problems(obj) == []
    assert named == [] and listed == []


def with_spec(obj: object, **changes: object) -> object:
    return dataclasses.replace(obj, spec=dataclasses.replace(obj.spec, **changes))  # type: ignore[attr-defined]


def with_grace(obj: object, grace: int) -> object:
    template = obj.spec.template  # type: ignore[attr-defined]
    spec = dataclasses.replace(template.spec, termination_grace_period_seconds=grace)
    return with_spec(obj, template=dataclasses.replace(template, spec=spec))


def test_a_planned_class_still_reports_the_innermost_struct_and_path() -> None:
    validation.integer_width_problems(deployment(0))
    (problem,) = validation.integer_width_problems(with_spec(deployment(1), replicas=2**31))
    assert problem.message.endswith("json: cannot unmarshal number 2147483648 into Go struct field "
                                    "DeploymentSpec.spec.replicas of type int32")
    assert validation.integer_width_problems(with_grace(deployment(2), 2**31)) == []  # an int64 field
    (problem,) = validation.integer_width_problems(with_grace(deployment(3), 2**63))
    assert problem.message.endswith(f"json: cannot unmarshal number {2**63} into Go struct field "
                                    "PodSpec.spec.template.spec.terminationGracePeriodSeconds of type int64")
