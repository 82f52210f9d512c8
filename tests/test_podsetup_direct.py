"""A container's process set up by the fork server's child itself (netemu.podsetup: unshare,
mounts, hostname, chroot as system calls) sees what a process set up by the shell prefix sees
(exec, probes): the same hostname, resolv.conf, hosts, volumes, subPaths, read-only mounts, mount
table and working directory; a step that fails ends it with status 127 and the reason in its log,
as the shell's ``|| exit 127`` does. The new root's mounts computed in Python are the awk
program's, line for line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netemu import podsetup
from netemu.kubelet import mountns, runtime
from netemu.kubelet.volumes import Mount

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root")

CONFIG = """
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data: {app.properties: "color=blue\\n", LOG_LEVEL: info}
"""

# A directory every host has, for a volume bound over an existing path outside the overlaid ones.
EXISTING = next(d for d in ("/srv", "/mnt", "/opt", "/media") if os.path.isdir(d) and not os.path.islink(d))

# What a process sees; the container prints it once and sleeps, exec prints it again.
LOOK = (f"hostname; pwd; cat /etc/resolv.conf /etc/hosts; cat /etc/netemu-test/config/LOG_LEVEL; echo; "
        f"ls {EXISTING}; "
        "cat /etc/netemu-test/app.properties; ls /var/run/secrets/kubernetes.io/serviceaccount; "
        "touch /etc/netemu-test/config/x 2>/dev/null && echo config-writable || echo config-read-only; "
        "touch /netemu-test-scratch/w 2>/dev/null && echo scratch-writable; ls /; "
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
    - {{name: config, mountPath: {EXISTING}, readOnly: true}}
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
@pytest.mark.parametrize("new_root", [True, False], ids=["new-root", "etc-moved-over"])
async def test_direct_setup_shows_what_the_shell_prefix_shows(cluster, monkeypatch, new_root):
    """With a mountPath right in "/" the process runs in a new root; without one, only /etc (the
    top-level directory on the way to the new mount points) is overlaid, where it is."""
    monkeypatch.setattr(runtime, "DIRECT_SETUP", True)
    looker = LOOKER if new_root else LOOKER.replace("    - {name: scratch, mountPath: /netemu-test-scratch}\n", "")
    await cluster.apply(CONFIG, looker)
    await cluster.wait_for(lambda: "END" in cluster.logs("looker"), 15, "the container to look around")
    seen_direct = cluster.logs("looker")
    result = await cluster.exec("looker", ["sh", "-c", LOOK])
    assert result.returncode == 0, result
    direct, shell = seen_direct.splitlines(), result.stdout.splitlines()
    assert direct[:2] == ["looker", "/etc"]
    assert "info" in direct and "color=blue" in direct and "token" in direct
    assert direct[direct.index("color=blue") - 2:direct.index("color=blue")] == ["LOG_LEVEL", "app.properties"]
    assert "config-read-only" in direct and ("scratch-writable" in direct) == new_root
    assert [line for line in direct if line.startswith("/etc/netemu-test/config ")][0].split()[1].startswith("ro,")
    mount_points = {line.split()[0] for line in direct if line.startswith("/") and len(line.split()) == 2}
    if new_root:
        assert "netemu-test-scratch" in direct and "/netemu-test-scratch" in mount_points
    else:  # "/" is the host's; /etc and /run are overlays moved over the host's
        assert {n for n in os.listdir("/") if not n.startswith(".")} <= set(direct)
        assert "/etc" in mount_points and "/run" in mount_points
        assert not os.path.exists("/etc/netemu-test") and not os.path.exists("/run/secrets/kubernetes.io")
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
        return (f"mkdir -p '{m.upper}' '{m.work}' '{m.target}' && mount -t overlay netemu -o "
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


@pytest.mark.parametrize("overlays,tops,write_through", [
    (("/",), ("etc",), ("/home", "/tmp")), (("/", "/run"), ("etc", "run"), ("/home", "/tmp")),
    (("/", "/run", "/run/lock"), ("run",), ("/home", "/tmp")),
    # no new root: the top-level directories themselves are overlaid (and moved over the host's)
    (("/etc",), ("etc",), ()), (("/etc", "/run"), ("etc", "run"), ()), (("/run", "/run/lock"), ("run",), ())])
def test_new_root_mounts_are_the_awk_programs(overlays, tops, write_through):
    root = podsetup.NewRoot("/scratch/pod", overlays, tops, write_through)
    for mountinfo in (MOUNTINFO, Path("/proc/self/mountinfo").read_text()):
        mounts = podsetup.parse_mountinfo(mountinfo)
        assert [_as_shell(m) for m in podsetup.root_mounts(root, mounts)] == _awk_lines(root, mountinfo)


def test_without_a_new_root_the_top_level_directories_are_overlaid_where_they_are():
    """Mounts in the host's /run and /etc that sit on "/" or on an overlaid mount are bound back
    in; one that sits on another host mount comes with it; one with an escape is left out."""
    r = "/scratch/pod/r"
    MOUNTS = podsetup.parse_mountinfo(MOUNTINFO)
    assert podsetup.root_mounts(podsetup.NewRoot("/scratch/pod", ("/etc",), ("etc",), ()), MOUNTS) == [
        podsetup.Overlay("/etc", "/scratch/pod/u1", "/scratch/pod/w1", f"{r}/etc"),
        podsetup.RecursiveBind("/etc/resolv.conf", f"{r}/etc/resolv.conf"),
        podsetup.RecursiveBind("/etc/hosts", f"{r}/etc/hosts")]
    assert podsetup.root_mounts(podsetup.NewRoot("/scratch/pod", ("/run", "/run/lock"), ("run",), ()), MOUNTS) == [
        podsetup.Overlay("/run", "/scratch/pod/u1", "/scratch/pod/w1", f"{r}/run"),
        podsetup.Overlay("/run/lock", "/scratch/pod/u2", "/scratch/pod/w2", f"{r}/run/lock"),
        podsetup.RecursiveBind("/run/lock/deeper", f"{r}/run/lock/deeper")]


def test_a_new_root_only_for_a_mount_point_right_in_the_root(tmp_path: Path) -> None:
    """The service account token's mount point (in /run) overlays /run alone; one in "/" makes
    a new root."""
    (tmp_path / "token").mkdir()
    token = Mount(tmp_path / "token", "/var/run/secrets/kubernetes.io/serviceaccount", True, "token")
    data = Mount(tmp_path / "token", "/netemu-test-data", False, "data")
    files = (tmp_path / "resolv.conf", tmp_path / "hosts", "web-0", tmp_path / "scratch")
    moved = mountns.enter_setup(*files, [token]).root
    assert moved is not None and not moved.chrooted and moved.tops == ("run",) and moved.write_through == ()
    assert moved.overlays[0] == "/run"
    rooted = mountns.enter_setup(*files, [token, data]).root
    assert rooted is not None and rooted.chrooted and rooted.tops == ("run",) and "/tmp" in rooted.write_through


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


# In a mount namespace of its own: the fork server's plan, made from its own mount table before
# the child binds the pod's resolv.conf and hosts, is what the child's mount table says after.
_PLANNED = """
import json, subprocess, sys
from netemu import podsetup
table = podsetup.MountTable()
first = table.entries()
setup = podsetup.PodSetup(*sys.argv[1:4], podsetup.NewRoot("/scratch", ("/etc", "/run"), ("etc", "run"), ()))
planned = podsetup.planned_mounts(setup, first)
same = table.entries() is first
subprocess.run(["mount", "--bind", setup.resolv_conf, "/etc/resolv.conf"], check=True)
subprocess.run(["mount", "--bind", setup.hosts, "/etc/hosts"], check=True)
after = table.entries()
real = podsetup.root_mounts(setup.root, podsetup.read_mountinfo())
table.close()
print(json.dumps({"same": same, "changed": after is not first, "seen": after == podsetup.read_mountinfo(),
                  "planned": planned == real, "binds": [m[0] for m in planned if m[0].startswith("/etc/")]}))
"""


@needs_root
def test_the_fork_servers_plan_is_the_childs_mount_table(tmp_path: Path) -> None:
    (tmp_path / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n")
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", _PLANNED,
                          str(tmp_path / "resolv.conf"), str(tmp_path / "hosts"), "web-0"],
                         capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout)
    # an unchanged table is not read again; a mount is seen at once
    assert seen["same"] and seen["changed"] and seen["seen"]
    assert seen["planned"] and {"/etc/resolv.conf", "/etc/hosts"} <= set(seen["binds"])
