"""A container's process set up by the fork server's child itself (netemu.podsetup: unshare,
mounts, hostname, chroot as system calls) sees what a process set up by the shell prefix sees
(exec, probes): the same hostname, resolv.conf, hosts, volumes, subPaths, read-only mounts, mount
table and working directory; a step that fails ends it with status 127 and the reason in its log,
as the shell's ``|| exit 127`` does. The new root's mounts computed in Python are the awk
program's, line for line."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from netemu import podsetup
from netemu.kubelet import mountns, runtime

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root")

CONFIG = """
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data: {app.properties: "color=blue\\n", LOG_LEVEL: info}
"""

# What a process sees; the container prints it once and sleeps, exec prints it again.
LOOK = ("hostname; pwd; cat /etc/resolv.conf /etc/hosts; cat /etc/netemu-test/config/LOG_LEVEL; echo; "
        "cat /etc/netemu-test/app.properties; ls /var/run/secrets/kubernetes.io/serviceaccount; "
        "touch /etc/netemu-test/config/x 2>/dev/null && echo config-writable || echo config-read-only; "
        "touch /netemu-test-scratch/w && echo scratch-writable; ls /; "
        "cut -d' ' -f5,6 /proc/self/mountinfo | sed 1d; echo END")

LOOKER = f"""
apiVersion: v1
kind: Pod
metadata: {{name: looker}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    workingDir: /etc
    command: [sh, -c, "{LOOK}; exec sleep 3600"]
    volumeMounts:
    - {{name: config, mountPath: /etc/netemu-test/config, readOnly: true}}
    - {{name: config, mountPath: /etc/netemu-test/app.properties, subPath: app.properties}}
    - {{name: scratch, mountPath: /netemu-test-scratch}}
  volumes:
  - {{name: config, configMap: {{name: app-config}}}}
  - {{name: scratch, emptyDir: {{}}}}
"""

# A mount point under a file: the plan is made, the step that makes it fails when it runs.
BROKEN = """
apiVersion: v1
kind: Pod
metadata: {name: NAME}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    command: [sleep, "3600"]
    volumeMounts: [{name: config, mountPath: /etc/passwd/netemu-test}]
  volumes: [{name: config, configMap: {name: app-config}}]
"""


@needs_root
async def test_direct_setup_shows_what_the_shell_prefix_shows(cluster, monkeypatch):
    monkeypatch.setattr(runtime, "DIRECT_SETUP", True)
    await cluster.apply(CONFIG, LOOKER)
    await cluster.wait_for(lambda: "END" in cluster.logs("looker"), 15, "the container to look around")
    seen_direct = cluster.logs("looker")
    result = await cluster.exec("looker", ["sh", "-c", LOOK])
    assert result.returncode == 0, result
    direct, shell = seen_direct.splitlines(), result.stdout.splitlines()
    assert direct[:2] == ["looker", "/etc"]
    assert "info" in direct and "color=blue" in direct and "token" in direct
    assert "config-read-only" in direct and "scratch-writable" in direct
    assert [line for line in direct if line.startswith("/etc/netemu-test/config ")][0].split()[1].startswith("ro,")
    assert direct == shell


@needs_root
async def test_a_failing_step_exits_127_with_its_reason_both_ways(cluster, monkeypatch):
    await cluster.apply(CONFIG)
    ended, said = {}, {}
    for direct in (True, False):
        name = f"broken-{'direct' if direct else 'shell'}"
        monkeypatch.setattr(runtime, "DIRECT_SETUP", direct)
        await cluster.apply(BROKEN.replace("NAME", name))
        await cluster.wait_for(lambda: cluster.get("pod", name).status.phase == "Failed", 15, f"{name} to fail")
        state = cluster.get("pod", name).status.container_statuses[0].state.terminated
        ended[direct], said[direct] = (state.exit_code, state.reason), cluster.logs(name)
    assert ended[True] == ended[False] == (127, "Error")
    # the fork server's child names the step (so it did run it), the shell's mkdir its own way
    assert said[True].startswith("netemu-pod: ") and said[False].startswith("mkdir: ")
    assert "/etc/passwd" in said[True] and "/etc/passwd" in said[False]


def _awk_lines(root: podsetup.NewRoot, mountinfo: str) -> list[str]:
    out = subprocess.run(["awk", "-v", f"o= {' '.join(root.overlays)} ", "-v", f"c= {' '.join(root.tops)} ",
                          "-v", f"w={' '.join(root.write_through)}", "-v", f"r={root.scratch}", mountns._AWK],
                         input=mountinfo, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def _as_shell(m: podsetup.Overlay | podsetup.RecursiveBind) -> str:
    if isinstance(m, podsetup.Overlay):
        return (f"mkdir '{m.upper}' '{m.work}' && mount -t overlay netemu -o "
                f"'lowerdir={m.lower},upperdir={m.upper},workdir={m.work}' '{m.target}' || exit 127")
    return f"mount --rbind '{m.source}' '{m.target}' || exit 127"


MOUNTINFO = """\
21 1 0:20 / / rw,relatime - overlay overlay rw
22 21 0:21 / /proc rw - proc proc rw
23 21 0:22 / /etc/resolv.conf rw - ext4 /dev/sda1 rw
24 21 0:23 / /etc/hosts rw - ext4 /dev/sda1 rw
25 21 0:24 / /run rw - tmpfs tmpfs rw
26 25 0:25 / /run/lock rw - tmpfs tmpfs rw
27 25 0:26 / /run/with\\040space rw - tmpfs tmpfs rw
28 21 0:27 / /usr rw - ext4 /dev/sda2 rw
29 26 0:28 / /run/lock/deeper rw - tmpfs tmpfs rw
"""


@pytest.mark.parametrize("overlays,tops", [(("/",), ("etc",)), (("/", "/run"), ("etc", "run")),
                                           (("/", "/run", "/run/lock"), ("run",))])
def test_new_root_mounts_are_the_awk_programs(overlays, tops):
    root = podsetup.NewRoot("/scratch/root", overlays, tops, ("/home", "/tmp"))
    for mountinfo in (MOUNTINFO, Path("/proc/self/mountinfo").read_text()):
        assert [_as_shell(m) for m in podsetup.root_mounts(root, mountinfo)] == _awk_lines(root, mountinfo)


def test_setup_goes_through_json_unchanged():
    setup = podsetup.PodSetup("/p/resolv.conf", "/p/hosts", "web-0",
                              podsetup.NewRoot("/p/root", ("/",), ("etc",), ("/tmp",)),
                              (podsetup.Bind("/p/volumes/config", "/etc/config", True, "d"),))
    assert podsetup.PodSetup.from_json(setup.to_json()) == setup
    assert mountns.shell_argv(setup)[-5:] == ["/tmp", "/p/volumes/config", "/etc/config", "rd", "--"]


def test_the_top_level_directories_are_listed_again_when_the_root_changes(tmp_path: Path) -> None:
    """What stays the host's own in a new root (``_write_through``) comes from a listing of "/"
    kept while its mtime stays the same and is at least a second old (a change in the same clock
    tick may leave the mtime as it was). Here on a directory of the test's own."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "usr").mkdir()
    (tmp_path / "file").touch()
    (tmp_path / "link").symlink_to(tmp_path / "usr")
    (tmp_path / "with space").mkdir()
    old = time.time() - 10
    os.utime(tmp_path, (old, old))
    assert mountns._top_directories(str(tmp_path)) == ("etc", "usr")
    os.utime(tmp_path / "usr", (old, old))  # not the root: the listing is kept
    assert mountns._top_directories(str(tmp_path)) == ("etc", "usr")
    (tmp_path / "home").mkdir()  # the root's mtime moves (now: too fresh to keep a listing)
    assert mountns._top_directories(str(tmp_path)) == ("etc", "home", "usr")
    (tmp_path / "srv").mkdir()
    assert mountns._top_directories(str(tmp_path)) == ("etc", "home", "srv", "usr")
    (tmp_path / "home").rmdir()
    os.utime(tmp_path, (old, old))  # the first listing's mtime again: that listing is gone, so listed again
    assert mountns._top_directories(str(tmp_path)) == ("etc", "srv", "usr")
