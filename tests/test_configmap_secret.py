"""ConfigMaps and Secrets: the API server's validation and stringData merge, their printing, and
their consumers in the kubelet (``configMapKeyRef``, ``secretKeyRef``, ``envFrom``) seen by real
processes, including ``CreateContainerConfigError`` and its recovery once the object is applied."""
from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from netemu import printers
from netemu.api import from_dict, load_text, validate, validate_update
from netemu.api.defaults import apply_defaults
from netemu.api.objects import (
    ConfigMap, ContainerState, ContainerStateWaiting, ContainerStatus, ObjectMeta, Pod, PodStatus, Secret,
)
from netemu.errors import ManifestErrors
from netemu.readiness import stuck_pods

NETEMU = str(Path(sys.executable).parent / "netemu")
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
KEY_REGEX = ("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  "
             "or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')")


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def problems(kind: type, manifest: dict) -> list[str]:
    manifest = {**manifest, "metadata": {"namespace": "default", **manifest["metadata"]}}
    obj, decode = from_dict(kind, {"apiVersion": "v1", "kind": kind.KIND, **manifest})
    assert not decode, decode
    return [str(p) for p in validate(apply_defaults(obj))]


def defaulted(kind: type, manifest: dict):
    metadata = {"name": "x", "namespace": "default"}
    obj, decode = from_dict(kind, {"apiVersion": "v1", "kind": kind.KIND, "metadata": metadata, **manifest})
    assert not decode, decode
    return apply_defaults(obj)


# ---------------------------------------------------------------------------- API: validation tables


@pytest.mark.parametrize("manifest, expected", [
    ({"data": {"a": "1", "b.c-d_E": "2"}, "binaryData": {"bin": b64(b"\0\1")}}, []),
    ({"data": {"a b": "1"}}, [f'data[a b]: Invalid value: "a b": {KEY_REGEX}']),
    ({"data": {"..x": "1"}}, ["data[..x]: Invalid value: \"..x\": must not start with '..'"]),
    ({"data": {".": "1"}}, ["data[.]: Invalid value: \".\": must not be '.'"]),
    ({"data": {"k" * 254: "1"}},
     [f'data[{"k" * 254}]: Invalid value: "{"k" * 254}": must be no more than 253 characters']),
    ({"binaryData": {"a/b": b64("x")}}, [f'binaryData[a/b]: Invalid value: "a/b": {KEY_REGEX}']),
    ({"data": {"k": "1"}, "binaryData": {"k": b64("1")}},
     ['data[k]: Invalid value: "k": duplicate of key present in binaryData']),
    ({"data": {"big": "x" * (1024 * 1024)}, "binaryData": {"more": b64("y")}},
     ["[]: Too long: must have at most 1048576 bytes"]),
    ({"data": {"fits": "x" * (1024 * 1024)}}, []),
    ({"binaryData": {"bad": "not base64!"}},
     ['ConfigMap in version "v1" cannot be handled as a ConfigMap: illegal base64 data at input byte 3']),
], ids=["valid", "space", "dotdot", "dot", "too-long-key", "binary-key", "duplicate", "too-big", "1MiB-fits",
        "bad-base64"])
def test_configmap_validation(manifest, expected):
    assert problems(ConfigMap, {"metadata": {"name": "cfg"}, **manifest}) == expected


@pytest.mark.parametrize("manifest, expected", [
    ({"data": {"password": b64("s3cret")}}, []),
    ({"type": "kubernetes.io/tls", "data": {"tls.crt": b64("c")}}, ["data[tls.key]: Required value"]),
    ({"type": "kubernetes.io/tls", "stringData": {"tls.crt": "c", "tls.key": "k"}}, []),
    ({"type": "kubernetes.io/tls"}, ["data[tls.crt]: Required value", "data[tls.key]: Required value"]),
    ({"type": "kubernetes.io/dockerconfigjson"}, ["data[.dockerconfigjson]: Required value"]),
    ({"type": "kubernetes.io/dockerconfigjson", "stringData": {".dockerconfigjson": "{nope"}},
     ['data[.dockerconfigjson]: Invalid value: "<secret contents redacted>": '
      "invalid character 'n' looking for beginning of object key string"]),
    ({"type": "kubernetes.io/dockerconfigjson", "stringData": {".dockerconfigjson": '{"auths": {}}'}}, []),
    ({"type": "kubernetes.io/dockercfg", "stringData": {".dockercfg": "[]"}},
     ['data[.dockercfg]: Invalid value: "<secret contents redacted>": '
      "json: cannot unmarshal array into Go value of type map[string]interface {}"]),
    ({"type": "kubernetes.io/basic-auth"}, ["data[username]: Required value", "data[password]: Required value"]),
    ({"type": "kubernetes.io/basic-auth", "stringData": {"password": ""}}, []),
    ({"type": "kubernetes.io/ssh-auth", "data": {"ssh-privatekey": ""}}, ["data[ssh-privatekey]: Required value"]),
    ({"type": "kubernetes.io/service-account-token"},
     ["metadata.annotations[kubernetes.io/service-account.name]: Required value"]),
    ({"type": "example.com/anything"}, []),
    ({"stringData": {"bad key": "v"}}, [f'data[bad key]: Invalid value: "bad key": {KEY_REGEX}']),
    ({"data": {"big": b64(b"x" * (1024 * 1024 + 1))}}, ["data: Too long: must have at most 1048576 bytes"]),
    ({"data": {"k": "YWJj="}},
     ['Secret in version "v1" cannot be handled as a Secret: illegal base64 data at input byte 4']),
], ids=["opaque", "tls-no-key", "tls-stringdata", "tls-empty", "dockerconfigjson-missing", "dockerconfigjson-bad",
        "dockerconfigjson-ok", "dockercfg-array", "basic-auth-empty", "basic-auth-password", "ssh-auth-empty",
        "sa-token", "custom-type", "stringdata-key", "too-big", "bad-base64"])
def test_secret_validation(manifest, expected):
    assert problems(Secret, {"metadata": {"name": "sec"}, **manifest}) == expected


def test_secret_defaults_to_opaque_and_string_data_wins_and_is_dropped():
    secret = defaulted(Secret, {"data": {"a": b64("from data"), "b": b64("kept")},
                                "stringData": {"a": "from stringData"}})
    assert secret.type == "Opaque"
    assert secret.string_data == {}
    assert secret.data == {"a": b64("from stringData"), "b": b64("kept")}
    assert apply_defaults(secret) == secret  # idempotent
    wrapped = defaulted(Secret, {"data": {"a": "YWJj\nZGVm"}})  # Go skips line breaks in base64
    assert wrapped.data == {"a": b64("abcdef")}


@pytest.mark.parametrize("kind, old, new, expected", [
    (ConfigMap, {"data": {"a": "1"}, "immutable": True}, {"data": {"a": "2"}, "immutable": True},
     ["data: Forbidden: field is immutable when `immutable` is set"]),
    (ConfigMap, {"binaryData": {"b": b64("1")}, "immutable": True}, {"immutable": False},
     ["immutable: Forbidden: field is immutable when `immutable` is set",
      "binaryData: Forbidden: field is immutable when `immutable` is set"]),
    (ConfigMap, {"data": {"a": "1"}, "immutable": True}, {"data": {"a": "1"}, "immutable": True}, []),
    (ConfigMap, {"data": {"a": "1"}}, {"data": {"a": "2"}, "immutable": True}, []),
    (Secret, {"stringData": {"a": "1"}, "immutable": True}, {"stringData": {"a": "2"}, "immutable": True},
     ["data: Forbidden: field is immutable when `immutable` is set"]),
    (Secret, {"type": "Opaque"}, {"type": "example.com/other"},
     ['type: Invalid value: "example.com/other": field is immutable']),
], ids=["cm-data", "cm-unset-immutable", "cm-same", "cm-becomes-immutable", "secret-data", "secret-type"])
def test_immutable_updates_are_refused_in_the_api_servers_words(kind, old, new, expected):
    assert [str(p) for p in validate_update(defaulted(kind, old), defaulted(kind, new))] == expected


POD_ENV = """
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: c
    image: busybox
    env: %s
    envFrom: %s
"""


@pytest.mark.parametrize("env, env_from, expected", [
    ("[{name: A, valueFrom: {configMapKeyRef: {name: cfg, key: k}}}]", "[]", []),
    ("[{name: A, valueFrom: {configMapKeyRef: {name: cfg}}}]", "[]",
     ["spec.containers[0].env[0].valueFrom.configMapKeyRef.key: Required value"]),
    ("[{name: A, valueFrom: {secretKeyRef: {name: Bad_Name, key: 'a b'}}}]", "[]",
     ['spec.containers[0].env[0].valueFrom.secretKeyRef.name: Invalid value: "Bad_Name": a lowercase RFC 1123 '
      "subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an "
      "alphanumeric character (e.g. 'example.com', regex used for validation is "
      "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
      f'spec.containers[0].env[0].valueFrom.secretKeyRef.key: Invalid value: "a b": {KEY_REGEX}']),
    ("[{name: A, valueFrom: {configMapKeyRef: {name: c, key: k}, secretKeyRef: {name: s, key: k}}}]", "[]",
     ['spec.containers[0].env[0].valueFrom: Invalid value: "": may not have more than one field specified at a time']),
    ("[]", "[{prefix: P_, configMapRef: {name: cfg}}, {secretRef: {name: sec, optional: true}}]", []),
    ("[]", "[{prefix: P_}]", ['spec.containers[0].envFrom: Invalid value: "": must specify one of: '
                              "`configMapRef` or `secretRef`"]),
    ("[]", "[{configMapRef: {name: c}, secretRef: {name: s}}]",
     ["spec.containers[0].envFrom: Forbidden: may not have more than one field specified at a time"]),
    ("[]", "[{configMapRef: {name: ''}}]", ["spec.containers[0].envFrom[0].configMapRef.name: Required value"]),
    ("[]", "[{prefix: 'A=', secretRef: {name: s}}]",
     ['spec.containers[0].envFrom[0].prefix: Invalid value: "A=": a valid environment variable name must consist '
      "only of printable ASCII characters other than '='"]),
], ids=["cm-ref", "cm-ref-no-key", "secret-ref-bad", "two-sources", "env-from", "env-from-none", "env-from-two",
        "env-from-no-name", "env-from-bad-prefix"])
def test_pod_env_sources_are_validated(env, env_from, expected):
    try:
        load_text(POD_ENV % (env, env_from))
        found: list[str] = []
    except ManifestErrors as exc:
        found = [str(p) for e in exc.errors for p in e.problems]
    assert found == expected


# ---------------------------------------------------------------------------- printers


def test_get_and_describe_show_keys_and_sizes_never_secret_values():
    cm = defaulted(ConfigMap, {"data": {"b": "two", "a": "one"}, "binaryData": {"bin": b64(b"\0\1\2")}})
    secret = defaulted(Secret, {"type": "kubernetes.io/basic-auth", "stringData": {"username": "admin",
                                                                                   "password": "hunter22"}})
    table = printers.render_table("cm", [cm], now=NOW)
    assert table.splitlines()[0].split() == ["NAME", "DATA", "AGE"]
    assert table.splitlines()[1].split()[:2] == ["x", "3"]
    table = printers.render_table("secrets", [secret], now=NOW)
    assert table.splitlines()[0].split() == ["NAME", "TYPE", "DATA", "AGE"]
    assert table.splitlines()[1].split()[:3] == ["x", "kubernetes.io/basic-auth", "2"]
    text = printers.describe(secret, now=NOW)
    assert "hunter22" not in text and "admin" not in text
    assert re.search(r"^password:\s+8 bytes$", text, re.M) and re.search(r"^username:\s+5 bytes$", text, re.M)
    assert re.search(r"^Type:\s+kubernetes.io/basic-auth$", text, re.M)
    text = printers.describe(cm, now=NOW)
    assert "Data\n====\na:\n----\none\nb:\n----\ntwo\n" in text
    assert "BinaryData\n====\nbin: 3 bytes\n" in text


def test_create_container_config_error_is_not_stuck():
    waiting = ContainerState(waiting=ContainerStateWaiting(reason="CreateContainerConfigError",
                                                           message='configmap "x" not found'))
    pod = Pod(metadata=ObjectMeta(name="p", namespace="default"),
              status=PodStatus(container_statuses=(ContainerStatus(name="c", state=waiting),)))
    assert stuck_pods([pod]) == []


# ---------------------------------------------------------------------------- a real cluster

CONFIG = """
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data:
  GREETING: hello from a configmap
  1badkey: skipped
  mode: debug
---
apiVersion: v1
kind: Secret
metadata: {name: app-secret}
stringData:
  password: s3cr=t with spaces
"""

CONSUMER = """
apiVersion: v1
kind: Pod
metadata: {name: %(name)s}
spec:
  containers:
  - name: main
    image: busybox
    command: [sh, -c, 'echo "greeting=$GREETING"; sleep 3600']
    env:
    - {name: GREETING, valueFrom: {configMapKeyRef: {name: app-config, key: GREETING}}}
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: app-secret, key: password}}}
    - {name: MAYBE, valueFrom: {configMapKeyRef: {name: absent, key: k, optional: true}}}
    - {name: MAYBE_KEY, valueFrom: {secretKeyRef: {name: app-secret, key: nokey, optional: true}}}
    - {name: COMPOSED, value: "pw=$(PASSWORD)"}
    envFrom:
    - {prefix: CFG_, configMapRef: {name: app-config}}
    - {configMapRef: {name: app-config}}
    - {secretRef: {name: not-there, optional: true}}
"""


async def _printenv(cluster, pod: str, *names: str) -> dict[str, str]:
    result = await cluster.exec(pod, ["env"])
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return {n: env[n] for n in names if n in env}


async def _waiting(cluster, pod: str) -> ContainerStateWaiting | None:
    status = cluster.get("pod", pod).status
    states = [c.state.waiting for c in status.container_statuses]
    return states[0] if states else None


async def test_env_from_configmap_and_secret_reaches_the_process(cluster):
    await cluster.apply(CONFIG)
    await cluster.apply(CONSUMER % {"name": "consumer"})
    await cluster.wait_for(lambda: cluster.get("pod", "consumer").status.phase == "Running", 20, "consumer to run")
    env = await _printenv(cluster, "consumer", "GREETING", "PASSWORD", "COMPOSED", "CFG_GREETING", "CFG_mode",
                          "mode", "MAYBE", "MAYBE_KEY", "CFG_1badkey", "1badkey")
    assert env == {"GREETING": "hello from a configmap", "PASSWORD": "s3cr=t with spaces",
                   "COMPOSED": "pw=s3cr=t with spaces", "CFG_GREETING": "hello from a configmap",
                   "CFG_mode": "debug", "mode": "debug", "CFG_1badkey": "skipped"}
    await cluster.wait_for(lambda: "greeting=hello from a configmap" in cluster.logs("consumer"), 10, "the echo")
    log = cluster.logs("consumer")
    assert ("Keys [1badkey] from the EnvFrom configMap default/app-config were skipped since they are "
            "considered invalid environment variable names.") in log
    assert "CFG_1badkey" not in log  # with the prefix the name is valid: only the unprefixed source warns
    # env vars never change after start, as in Kubernetes
    await cluster.apply(CONFIG.replace("hello from a configmap", "changed"))
    assert (await _printenv(cluster, "consumer", "GREETING")) == {"GREETING": "hello from a configmap"}


async def test_missing_configmap_waits_in_create_container_config_error_then_starts(cluster):
    await cluster.apply(CONFIG.split("---")[1])  # the Secret only
    await cluster.apply(CONSUMER % {"name": "early"})
    await cluster.wait_for(lambda: cluster.get("pod", "early").status.container_statuses, 10, "a status")
    await cluster.wait_for(lambda: cluster.get("pod", "early").status.container_statuses[0].state.waiting is not None
                           and cluster.get("pod", "early").status.container_statuses[0].state.waiting.reason
                           == "CreateContainerConfigError", 10, "CreateContainerConfigError")
    waiting = await _waiting(cluster, "early")
    assert waiting.message == 'configmap "app-config" not found'
    pod = cluster.get("pod", "early")
    assert pod.status.phase == "Pending" and printers.pod_status(pod) == "CreateContainerConfigError"
    # a ConfigMap without the key: the kubelet's next message
    await cluster.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app-config}\ndata: {mode: x}\n")
    await cluster.wait_for(lambda: cluster.get("pod", "early").status.container_statuses[0].state.waiting.message
                           == "couldn't find key GREETING in ConfigMap default/app-config", 10, "the key message")
    await cluster.apply(CONFIG)
    await cluster.wait_for(lambda: cluster.get("pod", "early").status.phase == "Running", 10, "early to run")
    assert (await _printenv(cluster, "early", "GREETING")) == {"GREETING": "hello from a configmap"}
    assert cluster.get("pod", "early").status.container_statuses[0].restart_count == 0


async def test_missing_secret_key_is_named(cluster):
    await cluster.apply("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {other: x}\n---\n"
                        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n"
                        "  - {name: c, image: busybox, command: [sleep, '3600'], "
                        "env: [{name: X, valueFrom: {secretKeyRef: {name: s, key: k}}}]}\n")
    await cluster.wait_for(lambda: (cluster.get("pod", "p").status.container_statuses or [None])[0] is not None
                           and cluster.get("pod", "p").status.container_statuses[0].state.waiting is not None
                           and cluster.get("pod", "p").status.container_statuses[0].state.waiting.message
                           == "couldn't find key k in Secret default/s", 10, "the secret key message")


async def test_immutable_configmap_refuses_changes_and_stringdata_shows_as_data(cluster):
    await cluster.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: frozen}\nimmutable: true\ndata: {a: '1'}\n")
    with pytest.raises(ManifestErrors) as exc:
        await cluster.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: frozen}\nimmutable: true\n"
                            "data: {a: '2'}\n")
    assert "data: Forbidden: field is immutable when `immutable` is set" in str(exc.value)
    assert cluster.get("configmap", "frozen").data == {"a": "1"}
    await cluster.apply(CONFIG)
    doc = yaml.safe_load(printers.render_yaml([cluster.get("secret", "app-secret")], as_list=False))
    assert doc["data"] == {"password": b64("s3cr=t with spaces")} and "stringData" not in doc
    assert doc["type"] == "Opaque"


# ---------------------------------------------------------------------------- the command line


def netemu(env, *args, timeout=60):
    return subprocess.run([NETEMU, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def detached(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmsecret")
    env = {**{k: v for k, v in os.environ.items() if k != "NETEMU_CLUSTER"},
           "NETEMU_STATE_DIR": str(root / "state"), "NETEMU_CLUSTER": "cmsecret"}
    (root / "config.yaml").write_text(CONFIG)
    r = netemu(env, "up", "--detach", "--dns-upstream", "none", "-f", str(root / "config.yaml"))
    assert r.returncode == 0, r.stderr
    pid = int(re.search(r"pid (\d+)\)", r.stdout).group(1))
    yield env, root
    netemu(env, "down")
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)


def test_cli_get_configmaps_and_secrets(detached):
    env, _ = detached
    for kind in ("cm", "configmaps", "configmap"):
        r = netemu(env, "get", kind)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].split() == ["NAME", "DATA", "AGE"]
        assert lines[1].split()[:2] == ["app-config", "3"]
    r = netemu(env, "get", "secrets")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].split() == ["NAME", "TYPE", "DATA", "AGE"]
    assert r.stdout.splitlines()[1].split()[:3] == ["app-secret", "Opaque", "1"]
    r = netemu(env, "get", "secret", "app-secret", "-o", "yaml")
    doc = yaml.safe_load(r.stdout)
    assert doc["data"] == {"password": b64("s3cr=t with spaces")} and "stringData" not in doc
    r = netemu(env, "describe", "secret", "app-secret")
    assert r.returncode == 0 and "s3cr=t" not in r.stdout and "18 bytes" in r.stdout


def test_up_detach_with_a_missing_configmap_times_out_normally(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if k != "NETEMU_CLUSTER"},
           "NETEMU_STATE_DIR": str(tmp_path / "state"), "NETEMU_CLUSTER": "cmwait"}
    (tmp_path / "pod.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: waits}\nspec:\n  containers:\n"
        "  - {name: c, image: busybox, command: [sleep, '3600'], envFrom: [{configMapRef: {name: nope}}]}\n")
    try:
        r = netemu(env, "up", "--detach", "--dns-upstream", "none", "--timeout", "3", "-f", str(tmp_path / "pod.yaml"))
        assert r.returncode != 0
        assert "will not become ready" not in r.stderr + r.stdout
        assert "still waiting for" in r.stderr + r.stdout, r.stderr
    finally:
        netemu(env, "down")
