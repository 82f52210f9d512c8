"""Manifests are defaulted and validated once, where they are read; the API server checks again
only what it did not get from a manifest (objects built in Python, kube API writes) and what its
own steps change."""
from __future__ import annotations

import random

import pytest

from netemu import apiserver as apiserver_module
from netemu.api import defaults, load_text, objects
from netemu.apiserver import ApiServer
from netemu.errors import ManifestErrors
from netemu.store import Store

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: nginx
"""


def new_server() -> ApiServer:
    server = ApiServer(Store(), service_cidr="10.96.0.0/12", node_port_range="30000-32767", rng=random.Random(7))
    server.bootstrap()
    return server


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often the API server validates and defaults (the functions it calls, wrapped)."""
    calls = {"validate": 0, "apply_defaults": 0}

    def counting(name: str, real):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(apiserver_module, "validate", counting("validate", apiserver_module.validate))
    monkeypatch.setattr(apiserver_module, "apply_defaults",
                        counting("apply_defaults", apiserver_module.apply_defaults))
    return calls


def test_a_manifest_is_not_defaulted_or_validated_again(counted: dict[str, int]) -> None:
    api = new_server()
    counted.update(validate=0, apply_defaults=0)
    assert api.apply(load_text(DEPLOYMENT.format(replicas=2), source="web.yaml")) == ["deployment.apps/web created"]
    assert counted == {"validate": 0, "apply_defaults": 0}
    stored = api.store.must_get("Deployment", "default", "web")
    assert stored.spec.strategy.type == "RollingUpdate"  # defaulted where it was read
    assert stored.metadata.uid and stored.metadata.generation == 1


def test_an_invalid_manifest_is_named_once_with_file_object_and_field_path() -> None:
    with pytest.raises(ManifestErrors) as err:
        load_text(DEPLOYMENT.format(replicas=-1), source="web.yaml")
    assert str(err.value).splitlines() == [
        "web.yaml[doc 1] Deployment default/web: spec.replicas: Invalid value: -1: "
        "must be greater than or equal to 0"]


def test_an_object_built_in_python_is_still_defaulted_and_validated(counted: dict[str, int]) -> None:
    api = new_server()
    (manifest,) = load_text(DEPLOYMENT.format(replicas=1))
    obj = manifest.obj
    bad = type(obj)(metadata=objects.ObjectMeta(name="bad"), spec=type(obj.spec)(
        replicas=-1, selector=obj.spec.selector, template=obj.spec.template))
    counted.update(validate=0, apply_defaults=0)
    with pytest.raises(ManifestErrors) as err:
        api.admit(bad, create=True)
    assert counted["apply_defaults"] == 1 and counted["validate"] == 1
    assert "spec.replicas: Invalid value: -1: must be greater than or equal to 0" in str(err.value)
    good = type(obj)(metadata=objects.ObjectMeta(name="good"), spec=type(obj.spec)(
        replicas=1, selector=obj.spec.selector, template=obj.spec.template))
    stored = api.admit(good, create=True)
    assert stored.metadata.namespace == "default"
    assert stored.spec.strategy == defaults.apply_defaults(good).spec.strategy
