"""The sandbox helper (netemu.sandbox): a process of the cluster's own that does the file work of
setting up pods — the CNI plugin's IP reservation, the pod's resolv.conf and hosts, each volume's
files — on the loopback backend. Each test starts it at once (``start_after`` 0) and checks what a
user sees: pods with their addresses, files and volumes, addresses released on deletion, the same
errors as without it, the helper recorded and gone with the cluster, and the cluster doing the
work itself once the helper is gone or for a request too big to hand over."""
from __future__ import annotations

import os
import signal

import pytest

from netemu import sandbox
from netemu.kubelet import atomicwriter
from netemu.sandbox import SandboxHelper
from netemu.state import LEDGER

DEPLOYMENT = """
apiVersion: v1
kind: ConfigMap
metadata: {name: site}
data: {index.html: "hello from the helper\\n"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx
        volumeMounts: [{name: site, mountPath: /usr/share/nginx/html}]
      volumes: [{name: site, configMap: {name: site, defaultMode: 0640}}]
"""


async def helped(make_cluster, **overrides):
    """A started cluster whose sandbox helper serves from the first pod on."""
    cluster = await make_cluster(nodes=1, **overrides)
    cluster.sandbox.start_after = 0
    cluster.sandbox.start()
    await cluster.wait_for(lambda: cluster.sandbox.ready, 30, "the sandbox helper to serve")
    return cluster


def ipam_files(cluster) -> dict[str, str]:
    """host-local's reservations: address -> container id (the pod's uid)."""
    found = {}
    for path in cluster.state.path("cni").rglob("*"):
        if path.is_file() and path.name.count(".") == 3:
            found[path.name] = path.read_text().splitlines()[0]
    return found


async def test_pods_set_up_by_the_helper_have_addresses_files_and_volumes(make_cluster, monkeypatch):
    cluster = await helped(make_cluster)
    before = cluster.sandbox.answered

    def signed_here(*args, **kwargs):
        raise AssertionError("a pod's token signed in the cluster's process, not by the helper")
    monkeypatch.setattr(cluster.kube_api.tokens, "issue", signed_here)
    await cluster.apply(DEPLOYMENT)
    await cluster.wait_ready(timeout=30)
    pods = cluster.pods()
    assert len(pods) == 3
    assert cluster.sandbox.answered - before >= 3 * 3  # CNI, pod files, a volume: each pod's, by the helper
    reserved = ipam_files(cluster)
    for pod in pods:
        ip, uid = pod.status.pod_ip, pod.metadata.uid
        assert reserved[ip] == uid
        directory = cluster.state.path("pods") / uid
        assert f"{ip}\t" in (directory / "hosts").read_text()
        assert "nameserver " in (directory / "resolv.conf").read_text()
        site = directory / "volumes" / "site"
        assert (site / "index.html").read_text() == "hello from the helper\n"
        assert os.stat(site / "..data" / "index.html").st_mode & 0o777 == 0o640
        (token,) = (directory / "volumes").glob("kube-api-access-*")
        assert (token / "namespace").read_text() == "default"
        claims = cluster.kube_api.tokens.claims((token / "token").read_text())  # signed by the helper, with the cluster's key
        assert claims["kubernetes.io"]["pod"] == {"name": pod.metadata.name, "uid": uid}
    assert len({p.status.pod_ip for p in pods}) == 3
    assert cluster.sandbox.can_sign


async def test_a_deleted_pod_gives_its_address_back_through_the_helper(make_cluster):
    cluster = await helped(make_cluster)
    await cluster.apply(DEPLOYMENT)
    await cluster.wait_ready(timeout=30)
    pod = cluster.pods()[0]
    assert pod.status.pod_ip in ipam_files(cluster)
    await cluster.delete("pod", pod.metadata.name, wait=True)
    await cluster.wait_for(lambda: pod.status.pod_ip not in ipam_files(cluster), 30, "the address to be released")


async def test_an_exhausted_range_reads_the_same_through_the_helper(make_cluster):
    """A /30 per node holds one pod address: the second pod's sandbox fails with the plugin's own
    error, as it does when the cluster runs the plugin itself."""
    cluster = await helped(make_cluster, node_cidr_mask_size=30)
    await cluster.apply(DEPLOYMENT.replace("replicas: 3", "replicas: 2"))

    def failed_sandbox() -> str:
        for pod in cluster.pods():
            for status in pod.status.container_statuses:
                waiting = status.state.waiting
                if waiting is not None and "FailedCreatePodSandBox" in waiting.message:
                    return waiting.message
        return ""
    await cluster.wait_for(failed_sandbox, 30, "a pod sandbox to fail")
    assert "no IP addresses available in range set" in failed_sandbox()


async def test_the_helper_is_a_recorded_process_that_goes_with_the_cluster(make_cluster, process_gone):
    cluster = await helped(make_cluster)
    pid = cluster.sandbox.pid
    assert pid is not None
    ledger = cluster.state.path(LEDGER).read_text().splitlines()
    assert any(line.split()[:2] == ["process", str(pid)] for line in ledger)  # killed by `netemu gc` if orphaned
    await cluster.stop()
    assert process_gone(pid)


async def test_once_the_helper_is_gone_the_cluster_does_the_work_itself(make_cluster):
    cluster = await helped(make_cluster)
    pid = cluster.sandbox.pid
    os.kill(pid, signal.SIGKILL)
    await cluster.wait_for(lambda: not cluster.sandbox.ready, 30, "the cluster to notice")
    await cluster.wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 30, "its process to be reaped, not left a zombie")
    await cluster.apply(DEPLOYMENT)
    await cluster.wait_ready(timeout=30)
    assert len({p.status.pod_ip for p in cluster.pods()}) == 3


async def test_a_request_too_big_for_one_message_is_done_here(tmp_path):
    helper = SandboxHelper(record=lambda pid: None, start_after=0)
    try:
        assert await helper.wait_ready()
        big = os.urandom(sandbox.MAX_REQUEST)
        answered = helper.answered
        await sandbox.run(helper, "volume_files", str(tmp_path / "big"), 0o755, {"blob": (big, 0o644)})
        assert (tmp_path / "big" / "blob").read_bytes() == big and helper.answered == answered  # not by the helper
        await sandbox.run(helper, "volume_files", str(tmp_path / "small"), 0o755, {"a": (b"x", 0o600)})
        assert (tmp_path / "small" / "a").read_bytes() == b"x" and helper.answered == answered + 1
        with pytest.raises(atomicwriter.PayloadError):  # the helper's refusal, raised here
            await sandbox.run(helper, "volume_files", str(tmp_path / "bad"), 0o755, {"../x": (b"x", 0o600)})
        assert helper.answered == answered + 2 and not (tmp_path / "x").exists()
    finally:
        await helper.close()


async def test_the_helper_serves_the_piece_of_work_that_starts_it(tmp_path):
    """Started then and there (a fork and exec), not in the background: the ``start_after``-th
    piece of work is already the helper's, whatever the loop has to do meanwhile."""
    helper = SandboxHelper(record=lambda pid: None, start_after=2)
    try:
        await sandbox.run(helper, "volume_files", str(tmp_path / "first"), 0o755, {"a": (b"1", 0o644)})
        assert not helper.ready and helper.pid is None and helper.answered == 0  # done here
        await sandbox.run(helper, "volume_files", str(tmp_path / "second"), 0o755, {"a": (b"2", 0o644)})
        assert helper.ready and helper.pid is not None and helper.answered == 1  # done by the helper
        assert (tmp_path / "first" / "a").read_bytes() == b"1" and (tmp_path / "second" / "a").read_bytes() == b"2"
    finally:
        await helper.close()
    assert helper.pid is None and not helper.ready


def big_stream(count: int, bad: int | None = None) -> str:
    """Enough ConfigMaps for more than ``PARALLEL_READ`` bytes of YAML; ``bad`` gets a bad name."""
    filler = "x" * 400
    return "---\n".join(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {'Bad_Name' if i == bad else f'c{i}'}}}\n"
        f"data: {{filler: {filler}}}\n" for i in range(count))


async def test_a_big_text_is_read_in_two_processes_as_it_is_read_in_one(make_cluster):
    from netemu import api
    from netemu.cluster import PARALLEL_READ
    from netemu.errors import ManifestErrors

    cluster = await make_cluster(nodes=1)
    assert await cluster.sandbox.wait_ready()  # up before the first part is read, however fast that is
    text = big_stream(2500)
    assert len(text) > PARALLEL_READ
    await cluster.apply(text)
    assert cluster._reads == 1  # its second half by the helper
    assert sorted(c.metadata.name for c in cluster.list("ConfigMap", "default") if c.metadata.name.startswith("c")) \
        == sorted(f"c{i}" for i in range(2500))

    bad = big_stream(2500, bad=2400)  # in the second half
    with pytest.raises(ManifestErrors) as read_whole:
        api.load_text(bad, source="<text>")
    with pytest.raises(ManifestErrors) as applied:
        await cluster.apply(bad)
    assert str(applied.value) == str(read_whole.value) and "[doc 2401]" in str(applied.value)
    assert cluster._reads == 2
    assert not list(cluster.state.path("").glob("read-*"))  # the parts' files are gone


async def test_an_add_the_helper_did_before_it_went_is_undone_and_done_again(make_cluster):
    """The helper reserved the pod's address, then died before answering: the cluster releases
    that reservation (CNI DEL) before its own ADD, instead of failing the sandbox with host-local's
    duplicate allocation."""
    from netemu.sandbox import Lost
    from netemu.sandboxd import OPERATIONS

    class DoneThenGone:
        ready = True

        def note_use(self) -> None:
            pass

        async def call(self, operation, *args):
            OPERATIONS[operation](*args)  # done in the helper's stead, as a helper would
            raise Lost("the sandbox helper exited")

    cluster = await make_cluster(nodes=1)
    cluster.fabric.sandbox = DoneThenGone()
    await cluster.apply(DEPLOYMENT.replace("replicas: 3", "replicas: 1"))
    await cluster.wait_ready(timeout=30)
    (pod,) = cluster.pods()
    reserved = ipam_files(cluster)
    assert reserved[pod.status.pod_ip] == pod.metadata.uid and list(reserved.values()).count(pod.metadata.uid) == 1
