"""The real kubectl against a netemu cluster's Kubernetes API (netemu.kubeapi).

One cluster for the module, started on its own loop (netemu's pytest plugin); kubectl reads the
cluster's own kubeconfig from its state directory (under the test's tmp dir), so the user's
``~/.kube`` is never read or written. Each test works in a namespace of its own.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from kubeapi_support import KUBECTL, api_fixtures
from netemu.kubeapi import KUBECONFIG

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")


api, kubectl, namespace = api_fixtures("kubeapi")


def test_version_names_the_server(kubectl):
    out = kubectl("version", "-o", "json").stdout
    server = json.loads(out)["serverVersion"]
    assert server["gitVersion"].endswith("-netemu") and server["major"] == "1"


def test_kubeconfig_and_keys_are_private(api):
    directory = api.cluster.state.directory
    for name in (KUBECONFIG, "ca.crt", "admin.key", "apiserver.key", "token"):
        assert (directory / name).stat().st_mode & 0o777 == 0o600, name
    config = yaml.safe_load((directory / KUBECONFIG).read_text())
    assert config["current-context"] == f"netemu-{api.name}"
    assert config["clusters"][0]["cluster"]["server"].startswith("https://127.0.0.1:")


def test_get_prints_netemus_columns(kubectl):
    nodes = kubectl("get", "nodes").stdout.splitlines()
    assert nodes[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert nodes[1].split()[:3] == ["node-1", "Ready", "<none>"]
    wide = kubectl("get", "pods", "-A", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[:6] == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert "NOMINATED NODE" in wide[0] and any(line.startswith("kube-system") for line in wide[1:])
    services = kubectl("get", "svc", "-n", "default").stdout.splitlines()
    assert services[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert services[1].split()[:2] == ["kubernetes", "ClusterIP"]
    assert "namespace/kube-system" in kubectl("get", "ns", "-o", "name").stdout.split()


def test_get_in_every_output_format(kubectl, api, namespace):
    kubectl("apply", "-n", namespace, "-f", str(REPO / "examples/my-nginx-deployment.yaml"))
    api.run(api.cluster.wait_ready(30))
    as_json = json.loads(kubectl("get", "deploy", "my-nginx", "-n", namespace, "-o", "json").stdout)
    assert as_json["kind"] == "Deployment" and as_json["spec"]["replicas"] == 2
    as_yaml = yaml.safe_load(kubectl("get", "deploy", "-n", namespace, "-o", "yaml").stdout)
    assert as_yaml["kind"] == "List" and as_yaml["items"][0]["metadata"]["name"] == "my-nginx"
    names = kubectl("get", "pods", "-n", namespace, "-o", "name").stdout.split()
    assert len(names) == 2 and all(n.startswith("pod/my-nginx-") for n in names)
    images = kubectl("get", "pods", "-n", namespace, "-o", "jsonpath={.items[*].spec.containers[0].image}").stdout
    assert images.split() == ["nginx", "nginx"]
    selected = kubectl("get", "pods", "-n", namespace, "-l", "run=my-nginx", "--field-selector",
                       "status.phase=Running", "-o", "name").stdout.split()
    assert sorted(selected) == sorted(names)
    deploy = kubectl("get", "deploy", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert deploy[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES",
                                 "SELECTOR"]
    assert deploy[1].split()[:2] == ["my-nginx", "2/2"]


def test_apply_creates_then_updates_in_place(kubectl, api, namespace, tmp_path):
    manifest = REPO / "examples/my-nginx-deployment.yaml"
    assert kubectl("apply", "-n", namespace, "-f", str(manifest)).stdout.strip() == \
        "deployment.apps/my-nginx created"
    uid = api.cluster.get("Deployment", "my-nginx", namespace).metadata.uid
    changed = tmp_path / "three.yaml"
    changed.write_text(manifest.read_text().replace("replicas: 2", "replicas: 3").replace("image: nginx",
                                                                                         "image: nginx:1.27"))
    assert kubectl("apply", "-n", namespace, "-f", str(changed)).stdout.strip() == \
        "deployment.apps/my-nginx configured"
    live = api.cluster.get("Deployment", "my-nginx", namespace)
    assert live.metadata.uid == uid and live.spec.replicas == 3
    assert [c.image for c in live.spec.template.spec.containers] == ["nginx:1.27"]
    assert [p.container_port for p in live.spec.template.spec.containers[0].ports] == [80]
    assert kubectl("apply", "-n", namespace, "-f", str(changed)).stdout.strip() == \
        "deployment.apps/my-nginx unchanged"


def test_delete_by_name_and_by_file(kubectl, api, namespace):
    manifest = str(REPO / "examples/my-nginx-service.yaml")
    kubectl("apply", "-n", namespace, "-f", manifest)
    assert kubectl("delete", "-n", namespace, "-f", manifest).stdout.strip() == 'service "my-nginx" deleted'
    assert api.cluster.store.get("Service", namespace, "my-nginx") is None
    kubectl("apply", "-n", namespace, "-f", manifest)
    assert kubectl("delete", "-n", namespace, "svc", "my-nginx").stdout.strip() == 'service "my-nginx" deleted'
    gone = kubectl("get", "-n", namespace, "svc", "my-nginx", check=False)
    assert gone.returncode == 1
    assert gone.stderr.strip() == 'Error from server (NotFound): services "my-nginx" not found'


def test_invalid_service_gets_the_api_servers_message(kubectl, namespace):
    bad = ("apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  selector: {app: x}\n"
           "  ports:\n  - port: 0\n    targetPort: 80\n")
    result = kubectl("apply", "-n", namespace, "-f", "-", input=bad, check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == ('The Service "x" is invalid: spec.ports[0].port: Invalid value: 0: '
                                     "must be between 1 and 65535, inclusive")


def test_server_side_dry_run_stores_nothing(kubectl, api, namespace):
    result = kubectl("apply", "-n", namespace, "--dry-run=server", "-f", str(REPO / "examples/my-nginx-service.yaml"))
    assert result.stdout.strip() == "service/my-nginx created (server dry run)"
    assert api.cluster.store.get("Service", namespace, "my-nginx") is None


def _pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}}


def test_get_pods_watch_sees_a_new_pod(kubectl, api, namespace):
    api.run(api.cluster.apply(_pod("listed"), namespace=namespace))
    with subprocess.Popen([KUBECTL, "get", "pods", "-n", namespace, "-w"], env=kubectl.env,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as watch:
        try:
            assert watch.stdout.readline().split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
            assert watch.stdout.readline().split()[0] == "listed"  # listed: the watch starts from here
            api.run(api.cluster.apply(_pod("watched"), namespace=namespace))
            names = []
            while "watched" not in names:
                line = watch.stdout.readline()
                assert line, f"kubectl ended before it saw the new pod (saw {names})"
                names.append(line.split()[0])
            assert set(names) <= {"listed", "watched"}
        finally:
            watch.kill()
            watch.wait()


def test_unknown_field_is_a_strict_decoding_error(kubectl, namespace):
    typo = ("apiVersion: v1\nkind: Service\nmetadata:\n  name: typo\nspec:\n  selector: {app: x}\n"
            "  portz:\n  - port: 80\n")
    result = kubectl("apply", "-n", namespace, "-f", "-", input=typo, check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == ('Error from server (BadRequest): error when creating "STDIN": Service in version '
                                     '"v1" cannot be handled as a Service: strict decoding error: unknown field '
                                     '"spec.portz"')


def test_listening_only_on_loopback(api):
    sockets = [s for s in api.cluster.kube_api._runner.addresses]
    assert sockets == [("127.0.0.1", api.cluster.kube_api.port)]


def test_scale_through_the_scale_subresource(kubectl, api, namespace):
    kubectl("create", "deployment", "web", "-n", namespace, "--image=nginx", "--replicas=1")
    assert kubectl("scale", "deploy/web", "-n", namespace, "--replicas=3").stdout.strip() == \
        "deployment.apps/web scaled"
    assert api.cluster.get("Deployment", "web", namespace).spec.replicas == 3
    refused = kubectl("scale", "deploy/web", "-n", namespace, "--replicas=-1", check=False)
    assert refused.returncode == 1
    assert "must be greater than or equal to 0" in refused.stderr


def test_label_and_set_image_patch_in_place(kubectl, api, namespace):
    kubectl("create", "deployment", "web", "-n", namespace, "--image=nginx")
    kubectl("label", "deploy", "web", "-n", namespace, "tier=front")
    kubectl("set", "image", "deploy/web", "-n", namespace, "nginx=nginx:1.27")
    live = api.cluster.get("Deployment", "web", namespace)
    assert live.metadata.labels == {"app": "web", "tier": "front"}
    assert [c.image for c in live.spec.template.spec.containers] == ["nginx:1.27"]


def test_the_everyday_imperative_commands(kubectl, api, namespace, tmp_path):
    """create, run, expose, annotate, edit, wait, and get's other printers, as a user types them."""
    n = ("-n", namespace)
    assert kubectl("create", "deployment", "web", "--image=nginx", "--replicas=2", *n).stdout == \
        "deployment.apps/web created\n"
    assert kubectl("expose", "deployment", "web", "--port=80", *n).stdout == "service/web exposed\n"
    assert kubectl("create", "service", "clusterip", "other", "--tcp=8080:80", *n).stdout == "service/other created\n"
    assert kubectl("run", "one", "--image=busybox", "--labels=tier=tools", *n, "--", "sleep", "3600").stdout == \
        "pod/one created\n"
    kubectl("wait", "--for=condition=Available", "deployment/web", "--timeout=60s", *n)
    kubectl("wait", "--for=condition=Ready", "pod/one", "--timeout=60s", *n)
    svc = json.loads(kubectl("get", "svc", "web", *n, "-o", "json").stdout)
    assert svc["spec"]["selector"] == {"app": "web"} and svc["spec"]["ports"][0]["port"] == 80
    assert kubectl("annotate", "svc", "web", "team=blue", *n).stdout == "service/web annotated\n"
    labelled = kubectl("get", "pod", "one", "--show-labels", *n).stdout.splitlines()
    assert labelled[0].split()[-1] == "LABELS" and labelled[1].split()[-1] == "tier=tools"
    columns = kubectl("get", "svc", *n, "--sort-by=.metadata.name",
                      "-o", "custom-columns=NAME:.metadata.name,PORT:.spec.ports[0].port").stdout.split()
    assert columns == ["NAME", "PORT", "other", "8080", "web", "80"]
    editor = tmp_path / "editor.sh"  # what an editor would do: change the replicas in the file it is given
    editor.write_text('#!/bin/sh\nsed -i "s/^  replicas: 2$/  replicas: 3/" "$1"\n')
    editor.chmod(0o755)
    edited = subprocess.run([KUBECTL, "edit", "deployment/web", *n], env={**kubectl.env, "KUBE_EDITOR": str(editor)},
                            capture_output=True, text=True, timeout=60)
    assert (edited.returncode, edited.stdout) == (0, "deployment.apps/web edited\n"), edited.stderr
    kubectl("wait", "--for=jsonpath={.status.readyReplicas}=3", "deployment/web", "--timeout=60s", *n)
    kubectl("delete", "pod", "one", "--wait=false", *n)
    kubectl("wait", "--for=delete", "pod/one", "--timeout=60s", *n)
