"""Pod volumes as real files (issue 12): configMap, secret, downwardAPI, projected and emptyDir
volumes written by the kubelet with its atomic-writer layout, seen by real processes at their
mountPaths (root: a private mount namespace), kept up to date, and refused or reported in the
API server's and the kubelet's words."""
from __future__ import annotations

import base64
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from kubeapi_support import KUBECTL, api_fixtures
from test_netns_helpers import netns_ready  # noqa: F401 - fixture
from netemu import printers
from netemu.api import from_dict, validate
from netemu.api.codec import to_dict
from netemu.api.defaults import apply_defaults
from netemu.api.objects import Pod
from netemu.errors import NetemuError
from netemu.kubelet import atomicwriter, volumes as kubelet_volumes
from netemu.kubelet.atomicwriter import FileProjection

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root")

BINARY = bytes([0, 1, 2, 255, 254, 10])

CONFIG = f"""
apiVersion: v1
kind: ConfigMap
metadata: {{name: app-config}}
data: {{app.properties: "color=blue\\n", LOG_LEVEL: info}}
binaryData: {{blob: {base64.b64encode(b"bin").decode()}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: app-secret}}
data: {{password: {base64.b64encode(BINARY).decode()}}}
stringData: {{user: admin}}
"""

# A pod that mounts everything and then sleeps; tests look with exec and at the host's files.
MOUNTER = """
apiVersion: v1
kind: Pod
metadata: {name: mounter, labels: {app: web, tier: front}, annotations: {note: hi}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: [sleep, "3600"]
    env:
    - name: LOG_LEVEL
      valueFrom: {configMapKeyRef: {name: app-config, key: LOG_LEVEL}}
    volumeMounts:
    - {name: config, mountPath: /etc/netemu-test/config, readOnly: true}
    - {name: picked, mountPath: /etc/netemu-test/picked}
    - {name: secret, mountPath: /etc/netemu-test/secret}
    - {name: pod, mountPath: /etc/netemu-test/pod}
    - {name: config, mountPath: /etc/netemu-test/app.properties, subPath: app.properties}
    - {name: scratch, mountPath: /netemu-test-scratch}
  volumes:
  - {name: config, configMap: {name: app-config}}
  - name: picked
    configMap:
      name: app-config
      defaultMode: 0600
      items: [{key: LOG_LEVEL, path: conf/level}, {key: app.properties, path: props, mode: 0444}]
  - {name: secret, secret: {secretName: app-secret, defaultMode: 0400}}
  - name: pod
    downwardAPI:
      items:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: name, fieldRef: {fieldPath: metadata.name}}
      - {path: annotations, fieldRef: {fieldPath: metadata.annotations}}
      - {path: cpu_limit, resourceFieldRef: {containerName: main, resource: limits.cpu}}
  - {name: scratch, emptyDir: {}}
"""


def volume_dir(cluster, pod: str, volume: str) -> Path:
    """The pod's directory for ``volume`` in the cluster's state (the kubelet's pods/<uid>/volumes)."""
    uid = cluster.get("pod", pod).metadata.uid
    return cluster.state.path("pods") / uid / "volumes" / volume


async def sh(cluster, pod: str, script: str, container: str | None = None) -> str:
    result = await cluster.exec(pod, ["sh", "-c", script], container=container)
    assert result.returncode == 0, result
    return result.stdout


async def running(cluster, pod: str, timeout: float = 15) -> None:
    await cluster.wait_for(lambda: cluster.get("pod", pod).status.phase == "Running", timeout, f"pod {pod} to run")


def kubelet_events(cluster, pod: str, reason: str) -> list:
    return [e for e in cluster.list("Event") if e.involved_object.name == pod and e.reason == reason]


# ---------------------------------------------------------------------------- files and their modes


@needs_root
async def test_volumes_are_files_at_their_mount_paths_with_their_modes(cluster):
    await cluster.apply(CONFIG, MOUNTER)
    await running(cluster, "mounter")
    out = await sh(cluster, "mounter", "cd /etc/netemu-test && cat config/app.properties config/LOG_LEVEL; echo; "
                                       "stat -c '%n %a' picked/..data/conf/level picked/..data/props "
                                       "secret/..data/password secret/..data/user config/..data/blob; "
                                       "cat picked/conf/level; echo; cat app.properties; cat config/blob; echo; "
                                       "cat pod/name; echo; cat pod/labels; echo; cat pod/annotations; echo; "
                                       "cat pod/cpu_limit; echo; ls config")
    lines = out.splitlines()
    assert lines[:2] == ["color=blue", "info"]
    assert lines[2:7] == ["picked/..data/conf/level 600", "picked/..data/props 444", "secret/..data/password 400",
                          "secret/..data/user 400", "config/..data/blob 644"]
    assert lines[7:10] == ["info", "color=blue", "bin"]
    assert lines[10:14] == ["mounter", 'app="web"', 'tier="front"', 'note="hi"']
    assert lines[14] == str(os.cpu_count())  # no limit: the node's allocatable, as the kubelet gives
    assert lines[15:] == ["LOG_LEVEL", "app.properties", "blob"]
    # the secret's bytes, decoded, in the pod and in the pod's volume directory on the host
    assert (await sh(cluster, "mounter", "od -An -tx1 /etc/netemu-test/secret/password")).split() == \
        [f"{b:02x}" for b in BINARY]
    host = volume_dir(cluster, "mounter", "secret")
    assert (host / "password").read_bytes() == BINARY and (host / "user").read_bytes() == b"admin"
    # the kubelet's layout: ..data -> a timestamped directory, one symlink per key
    config = volume_dir(cluster, "mounter", "config")
    assert os.readlink(config / "..data").startswith("..20")
    assert os.readlink(config / "LOG_LEVEL") == "..data/LOG_LEVEL"


@needs_root
async def test_read_only_mount_refuses_writes_and_a_writable_one_takes_them(cluster, tmp_path):
    await cluster.apply(CONFIG, MOUNTER)
    await running(cluster, "mounter")
    result = await cluster.exec("mounter", ["sh", "-c", "echo x > /etc/netemu-test/config/new"])
    assert result.returncode != 0 and "Read-only file system" in result.stderr
    await sh(cluster, "mounter", "echo kept > /netemu-test-scratch/written")  # the emptyDir
    assert (volume_dir(cluster, "mounter", "scratch") / "written").read_text() == "kept\n"
    # new mount points are made in a copy-on-write view of /etc and /: nothing reaches the host;
    # other directories (here the test's own) are the host's, as for any process of a pod
    await sh(cluster, "mounter", f"echo cow > /etc/netemu-test-cow && echo through > {tmp_path}/from-pod")
    assert (tmp_path / "from-pod").read_text() == "through\n"
    # where the volumes are, for a process that cannot see them at their mountPaths (not root)
    assert (await sh(cluster, "mounter", "echo $NETEMU_POD_VOLUMES")).strip() == \
        str(volume_dir(cluster, "mounter", "config").parent)
    for made in ("/etc/netemu-test", "/etc/netemu-test-cow", "/netemu-test-scratch"):
        assert not os.path.exists(made)


@needs_root
async def test_emptydir_is_shared_by_the_containers_of_a_pod(cluster):
    await cluster.apply("""
apiVersion: v1
kind: Pod
metadata: {name: pair}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: writer
    image: busybox
    command: [sh, -c, "echo from-writer > /shared/note; sleep 3600"]
    volumeMounts: [{name: shared, mountPath: /shared}]
  - name: reader
    image: busybox
    command: [sh, -c, "while [ ! -f /data/note ]; do sleep 0.05; done; cat /data/note; sleep 3600"]
    volumeMounts: [{name: shared, mountPath: /data}]
  volumes: [{name: shared, emptyDir: {}}]
""")
    await cluster.wait_for(lambda: "from-writer" in cluster.logs("pair", "reader"), 15, "the reader to see the note")


# ---------------------------------------------------------------------------- updates


@needs_root
async def test_configmap_update_reaches_the_files_through_a_new_data_dir_but_not_the_env(cluster):
    await cluster.apply(CONFIG, MOUNTER)
    await running(cluster, "mounter")
    config = volume_dir(cluster, "mounter", "config")
    before = os.readlink(config / "..data")
    await cluster.apply(CONFIG.replace("LOG_LEVEL: info", "LOG_LEVEL: debug"))

    async def file_level() -> str:
        return await sh(cluster, "mounter", "cat /etc/netemu-test/config/LOG_LEVEL")

    for _ in range(200):
        if await file_level() == "debug":
            break
    assert await file_level() == "debug"
    after = os.readlink(config / "..data")
    assert after != before and not (config / before).exists()  # a new version; the old one removed
    assert (await sh(cluster, "mounter", "echo $LOG_LEVEL")).strip() == "info"  # env vars never change
    # a subPath mount is bound to the file of the version it started with, as in Kubernetes
    assert (await sh(cluster, "mounter", "cat /etc/netemu-test/app.properties")) == "color=blue\n"


# ---------------------------------------------------------------------------- missing sources


@needs_root
async def test_missing_configmap_fails_the_mount_until_it_is_created(cluster):
    await cluster.apply("""
apiVersion: v1
kind: Pod
metadata: {name: early}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, image: busybox, command: [sleep, "3600"], volumeMounts: [{name: config, mountPath: /etc/app}]}
  volumes: [{name: config, configMap: {name: app-config}}]
""")
    await cluster.wait_for(lambda: kubelet_events(cluster, "early", "FailedMount"), 10, "a FailedMount event")
    event = kubelet_events(cluster, "early", "FailedMount")[0]
    assert event.type == "Warning" and event.source.component == "kubelet"
    assert event.message == 'MountVolume.SetUp failed for volume "config" : configmap "app-config" not found'
    pod = cluster.get("pod", "early")
    assert pod.status.phase == "Pending"
    assert pod.status.container_statuses[0].state.waiting.reason == "ContainerCreating"
    await cluster.apply(CONFIG)
    await running(cluster, "early")
    assert (await sh(cluster, "early", "cat /etc/app/LOG_LEVEL")) == "info"


@needs_root
async def test_missing_key_names_it_and_optional_missing_gives_an_empty_volume(cluster):
    await cluster.apply(CONFIG, """
apiVersion: v1
kind: Pod
metadata: {name: nokey}
spec:
  containers:
  - {name: main, image: busybox, command: [sleep, "3600"]}
  volumes: [{name: s, secret: {secretName: app-secret, items: [{key: nope, path: x}]}}]
---
apiVersion: v1
kind: Pod
metadata: {name: relaxed}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, image: busybox, command: [sleep, "3600"], volumeMounts: [{name: opt, mountPath: /etc/opt-config}]}
  volumes: [{name: opt, configMap: {name: absent, optional: true}}]
""")
    await running(cluster, "relaxed")
    # an empty payload, written as the kubelet writes one: only ..data and its directory
    assert (await sh(cluster, "relaxed", "ls /etc/opt-config")) == ""
    assert (await sh(cluster, "relaxed", "ls -A /etc/opt-config")).split()[1] == "..data"
    await cluster.wait_for(lambda: kubelet_events(cluster, "nokey", "FailedMount"), 10, "a FailedMount event")
    assert kubelet_events(cluster, "nokey", "FailedMount")[0].message == \
        'MountVolume.SetUp failed for volume "s" : references non-existent secret key: nope'


async def test_projected_token_without_an_issuer_fails_the_mount_and_with_one_is_refreshed(cluster, monkeypatch):
    manifest = """
apiVersion: v1
kind: Pod
metadata: {name: %s}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: busybox, command: [sleep, "3600"]}]
  volumes:
  - name: token
    projected:
      sources:
      - serviceAccountToken: {path: token, audience: vault, expirationSeconds: 600}
      - configMap: {name: app-config, items: [{key: LOG_LEVEL, path: level}]}
"""
    for kubelet in cluster.kubelets.values():  # no issuer (the API's in-cluster access sets one)
        monkeypatch.setattr(kubelet, "service_account_token", None)
    await cluster.apply(CONFIG, manifest % "unissued")
    await cluster.wait_for(lambda: kubelet_events(cluster, "unissued", "FailedMount"), 10, "a FailedMount event")
    assert kubelet_events(cluster, "unissued", "FailedMount")[0].message == (
        'MountVolume.SetUp failed for volume "token" : failed to fetch token: netemu has no service account '
        "token issuer")
    minted = []

    def issue(namespace, service_account, pod_name, pod_uid, audience, expiration_seconds):
        minted.append((namespace, service_account, pod_name, audience, expiration_seconds))
        return f"jwt-{len(minted)}"

    monkeypatch.setattr(kubelet_volumes, "TOKEN_REFRESH_FRACTION", 0.0005)  # 0.3 s of the 600 s lifetime
    for kubelet in cluster.kubelets.values():
        monkeypatch.setattr(kubelet, "service_account_token", issue)
    await cluster.apply(manifest % "issued")
    await running(cluster, "issued")
    token = volume_dir(cluster, "issued", "token") / "token"
    assert minted[0] == ("default", "default", "issued", "vault", 600)
    await cluster.wait_for(lambda: token.read_text() not in ("jwt-1", "") and len(minted) >= 2, 10, "a refresh")
    assert (token.parent / "level").read_text() == "info"
    assert oct(token.stat().st_mode & 0o777) == oct(0o644)


# ---------------------------------------------------------------------------- pod lifetime


@needs_root
async def test_volume_directories_go_with_the_pod(cluster):
    await cluster.apply(CONFIG, MOUNTER)
    await running(cluster, "mounter")
    pod_dir = volume_dir(cluster, "mounter", "config").parent.parent
    assert (pod_dir / "volumes" / "scratch").is_dir() and (pod_dir / "subpaths").is_dir()
    await cluster.delete("pod", "mounter", wait=True)
    assert (pod_dir / "root").is_dir() is False and not pod_dir.exists()  # volumes, scratch root, subpaths


async def test_unemulated_source_gets_an_empty_directory_and_says_so(cluster):
    await cluster.apply("""
apiVersion: v1
kind: Pod
metadata: {name: claims}
spec:
  containers:
  - {name: main, image: busybox, command: [sleep, "3600"], volumeMounts: [{name: data, mountPath: /var/lib/data}]}
  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]
""")
    await running(cluster, "claims")
    data = volume_dir(cluster, "claims", "data")
    assert data.is_dir() and list(data.iterdir()) == []
    text = printers.describe(cluster.get("pod", "claims"), now=datetime.now(timezone.utc))
    assert "    Type:       PersistentVolumeClaim (a reference to a PersistentVolumeClaim in the same namespace)\n" \
           "    ClaimName:  data\n    ReadOnly:   false\n" in text
    assert "persistentVolumeClaim is not emulated: the pod gets an empty directory" in text


# ---------------------------------------------------------------------------- API: validation and defaults


def pod_problems(spec: dict) -> list[str]:
    obj, decode = from_dict(Pod, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
                                  "spec": spec})
    assert not decode, decode
    return [str(p) for p in validate(apply_defaults(obj))]


def with_mounts(*mounts: dict) -> list[dict]:
    return [{"name": "c", "image": "busybox", "volumeMounts": list(mounts)}]


@pytest.mark.parametrize("spec, expected", [
    ({"containers": with_mounts({"name": "x", "mountPath": "/a"}), "volumes": [{"configMap": {"name": "a"}}]},
     ["spec.volumes[0].name: Required value", 'spec.containers[0].volumeMounts[0].name: Not found: "x"']),
    ({"containers": with_mounts(), "volumes": [{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]},
     ['spec.volumes[1].name: Duplicate value: "v"']),
    ({"containers": with_mounts({"name": "v", "mountPath": "/a"}, {"name": "v", "mountPath": "/a", "subPath": "../x"}),
      "volumes": [{"name": "v", "emptyDir": {}}]},
     ['spec.containers[0].volumeMounts[1].mountPath: Invalid value: "/a": must be unique',
      "spec.containers[0].volumeMounts.subPath: Invalid value: \"../x\": must not contain '..'"]),
    ({"containers": with_mounts({"name": "v", "mountPath": "/a", "subPath": "/abs"}),
      "volumes": [{"name": "v", "emptyDir": {}}]},
     ['spec.containers[0].volumeMounts.subPath: Invalid value: "/abs": must be a relative path']),
    ({"containers": with_mounts(), "volumes": [{"name": "v", "configMap": {
        "name": "a", "defaultMode": 1000,
        "items": [{"key": "k", "path": "/abs"}, {"key": "", "path": "..x", "mode": -1}]}}]},
     ["spec.volumes[0].configMap.defaultMode: Invalid value: 1000: must be a number between 0 and 0777 (octal), "
      "both inclusive",
      'spec.volumes[0].configMap.items[0].path: Invalid value: "/abs": must be a relative path',
      "spec.volumes[0].configMap.items[1].key: Required value",
      "spec.volumes[0].configMap.items[1].path: Invalid value: \"..x\": must not start with '..'",
      "spec.volumes[0].configMap.items[1].mode: Invalid value: -1: must be a number between 0 and 0777 (octal), "
      "both inclusive"]),
    ({"containers": with_mounts(),
      "volumes": [{"name": "v", "configMap": {"name": "a"}, "secret": {"secretName": "s"}}]},
     ["spec.volumes[0].configMap: Forbidden: may not specify more than 1 volume type"]),
    ({"containers": with_mounts(), "volumes": [{"name": "v", "secret": {}}]},
     ["spec.volumes[0].secret.secretName: Required value"]),
    ({"containers": with_mounts(), "volumes": [{"name": "v", "downwardAPI": {"items": [
        {"path": "n", "fieldRef": {"fieldPath": "spec.nodeName"}}, {"path": "x"}]}}]},
     ['spec.volumes[0].downwardAPI.fieldRef.fieldPath: Unsupported value: "spec.nodeName": supported values: '
      '"metadata.annotations", "metadata.labels", "metadata.name", "metadata.namespace", "metadata.uid"',
      "spec.volumes[0].downwardAPI: Required value: one of fieldRef and resourceFieldRef is required"]),
    ({"containers": with_mounts(), "volumes": [{"name": "v", "projected": {"sources": [
        {"serviceAccountToken": {"path": "t", "expirationSeconds": 60}}]}}]},
     ["spec.volumes[0].projected.sources[0].serviceAccountToken.expirationSeconds: Invalid value: 60: may not "
      "specify a duration less than 10 minutes"]),
    ({"containers": with_mounts(), "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}, []),
])
def test_volume_validation_in_the_api_servers_words(spec, expected):
    assert pod_problems(spec) == expected


def test_volume_defaults_as_the_api_server_sets_them():
    obj, _ = from_dict(Pod, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {
        "containers": with_mounts(), "volumes": [
            {"name": "bare"}, {"name": "c", "configMap": {"name": "a"}}, {"name": "s", "secret": {"secretName": "s"}},
            {"name": "p", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}]}})
    volumes = to_dict(apply_defaults(obj))["spec"]["volumes"]
    assert volumes == [
        {"name": "bare", "emptyDir": {}},
        {"name": "c", "configMap": {"name": "a", "defaultMode": 420}},
        {"name": "s", "secret": {"secretName": "s", "defaultMode": 420}},
        {"name": "p", "projected": {"sources": [{"serviceAccountToken": {"expirationSeconds": 3600, "path": "t"}}],
                                    "defaultMode": 420}}]


def test_describe_shows_volumes_and_mounts_as_kubectl_does():
    obj, _ = from_dict(Pod, yaml.safe_load(MOUNTER.replace("name: mounter,", "name: mounter, namespace: default,", 1)))
    text = printers.describe(apply_defaults(obj), now=datetime.now(timezone.utc))
    assert ("    Mounts:\n"
            "      /etc/netemu-test/app.properties from config (rw,path=\"app.properties\")\n"
            "      /etc/netemu-test/config from config (ro)\n") in text
    assert ("  config:\n"
            "    Type:      ConfigMap (a volume populated by a ConfigMap)\n"
            "    Name:      app-config\n"
            "    Optional:  false\n") in text
    assert ("    Type:  DownwardAPI (a volume populated by information about the pod)\n"
            "    Items:\n"
            "      metadata.labels -> labels\n") in text
    assert "    Type:        EmptyDir (a temporary directory that shares a pod's lifetime)\n" in text


# ---------------------------------------------------------------------------- the atomic writer


def test_atomic_writer_swaps_data_and_prunes_names(tmp_path):
    assert atomicwriter.write(tmp_path, {"a": FileProjection(b"1", 0o644), "d/b": FileProjection(b"2", 0o600)})
    first = os.readlink(tmp_path / "..data")
    assert not atomicwriter.write(tmp_path, {"a": FileProjection(b"1", 0o644), "d/b": FileProjection(b"2", 0o600)})
    assert atomicwriter.write(tmp_path, {"a": FileProjection(b"3", 0o644)})
    assert os.readlink(tmp_path / "..data") != first and not (tmp_path / first).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["..data", os.readlink(tmp_path / "..data"), "a"])
    assert (tmp_path / "a").read_text() == "3"
    with pytest.raises(NetemuError, match="must not contain '..'"):
        atomicwriter.write(tmp_path, {"x/../y": FileProjection(b"", 0o644)})


# ---------------------------------------------------------------------------- kubectl


api, kubectl, namespace = api_fixtures("volumes")


@pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")
def test_kubectl_apply_refuses_a_bad_mount_in_kube_apiservers_words(kubectl, namespace, tmp_path):
    manifest = tmp_path / "pod.yaml"
    manifest.write_text("""
apiVersion: v1
kind: Pod
metadata: {name: bad}
spec:
  containers:
  - {name: main, image: busybox, volumeMounts: [{name: nope, mountPath: /x}]}
  volumes: [{name: config, configMap: {name: app-config, defaultMode: 4095}}]
""")
    result = kubectl("apply", "-n", namespace, "-f", str(manifest), check=False)
    assert result.returncode == 1
    assert 'The Pod "bad" is invalid: ' in result.stderr
    assert "spec.volumes[0].configMap.defaultMode: Invalid value: 4095: must be a number between 0 and 0777 " \
           "(octal), both inclusive" in result.stderr
    assert 'spec.containers[0].volumeMounts[0].name: Not found: "nope"' in result.stderr


@needs_root
@pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")
def test_kubectl_label_reaches_the_downward_api_file_and_get_shows_defaults(api, kubectl, namespace, tmp_path):
    manifest = tmp_path / "pod.yaml"
    manifest.write_text("""
apiVersion: v1
kind: Pod
metadata: {name: labelled, labels: {app: web}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: [sleep, "3600"]
    volumeMounts: [{name: info, mountPath: /etc/podinfo}]
  volumes:
  - name: info
    downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}
""")
    kubectl("apply", "-n", namespace, "-f", str(manifest))
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod/labelled", "--timeout=20s")
    shown = yaml.safe_load(kubectl("get", "pod", "labelled", "-n", namespace, "-o", "yaml").stdout)
    assert shown["spec"]["volumes"][0]["downwardAPI"]["defaultMode"] == 420
    assert shown["spec"]["volumes"][0]["downwardAPI"]["items"][0]["fieldRef"]["apiVersion"] == "v1"
    assert shown["spec"]["containers"][0]["volumeMounts"][0] == {"name": "info", "mountPath": "/etc/podinfo"}
    assert kubectl("exec", "-n", namespace, "labelled", "--", "cat", "/etc/podinfo/labels").stdout == 'app="web"'
    kubectl("label", "-n", namespace, "pod", "labelled", "tier=db")
    api.wait_for(lambda: api.cluster.get("pod", "labelled", namespace).metadata.labels.get("tier") == "db", 10)
    for _ in range(100):
        text = kubectl("exec", "-n", namespace, "labelled", "--", "cat", "/etc/podinfo/labels").stdout
        if text == 'app="web"\ntier="db"':
            break
    assert text == 'app="web"\ntier="db"'


# ---------------------------------------------------------------------------- the netns backend


@needs_root
async def test_netns_backend_presents_the_same_mounts(netns_ready, make_cluster):  # noqa: F811
    cluster = await make_cluster(nodes=1, backend="netns")
    await cluster.apply(CONFIG, MOUNTER)
    await running(cluster, "mounter", 30)
    out = await sh(cluster, "mounter", "cat /etc/netemu-test/config/LOG_LEVEL; echo; cat /etc/netemu-test/secret/user; "
                                       "echo; ip -o addr show")  # in the pod's own network namespace
    assert out.splitlines()[:2] == ["info", "admin"] and f" {cluster.pod_ip('mounter')}/" in out


# ---------------------------------------------------------------------------- stateful sets


@needs_root
async def test_statefulset_claim_templates_become_pvc_volumes_of_each_pod(cluster):
    await cluster.apply("""
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox
        command: [sh, -c, "echo row > /var/lib/netemu-test-db/table; sleep 3600"]
        volumeMounts: [{name: data, mountPath: /var/lib/netemu-test-db}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
""")
    await running(cluster, "db-0")
    volume = cluster.get("pod", "db-0").spec.volumes[0]
    assert (volume.name, volume.extra) == ("data", {"persistentVolumeClaim": {"claimName": "data-db-0"}})
    table = volume_dir(cluster, "db-0", "data") / "table"
    await cluster.wait_for(table.exists, 10, "the pod to write to its claim's directory")
    assert table.read_text() == "row\n"
