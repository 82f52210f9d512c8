"""What a process of a pod has set up before its program runs, as data: a private mount and UTS
namespace, the pod's resolv.conf and hosts bound over the host's, the pod's hostname, and its
container's volumes at their mountPaths (in a copy-on-write root when a mount point has to be
made; see netemu.kubelet.mountns, which decides all of it).

``PodSetup`` is made by netemu.kubelet.mountns / podfiles only. Two things carry it out:

- the shell prefix (``unshare ... sh -c SCRIPT``, netemu.kubelet.podfiles.shell_prefix), for
  what starts behind another program (exec, exec probes, the netns backend's ``ip netns exec``);
- ``apply``, here, in the fork server's child just before it runs the program: the same steps
  as system calls (``unshare(2)``, ``mount(2)``, ``sethostname(2)``, ``chroot(2)``), with
  ``/proc/self/mountinfo`` read where it runs, as the shell's awk does. A step that fails raises
  ``StepError``; the child then says so on its standard error and exits 127, as the shell's
  ``|| exit 127`` does.

This module is imported by the fork server (netemu.forkserverd), so it imports little.
"""
from __future__ import annotations

import ctypes
import os
import socket
from typing import Any, NamedTuple

from netemu.errors import NetemuError

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
# Per-mount flags a read-only bind remount keeps (statvfs's ST_* have the same values).
_KEPT_FLAGS = 2 | 4 | 8 | 1024 | 2048 | 4096  # nosuid, nodev, noexec, noatime, nodiratime, relatime

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.unshare.argtypes = [ctypes.c_int]


class StepError(NetemuError):
    """A setup step failed (the message names it and the system's reason)."""


class Bind(NamedTuple):
    """A volume (or its subPath) bound at ``target``; ``make``: "" (the target exists), "d" (make
    a directory) or "f" (make a file), in the new root."""
    source: str
    target: str
    read_only: bool
    make: str = ""


class NewRoot(NamedTuple):
    """The copy-on-write root in ``scratch`` (a tmpfs): an overlay of each of ``overlays`` (mount
    points, parents first), the host's mounts inside them on the way to a new mount point (top-level
    names ``tops``) bound in, and ``write_through`` (top-level directories) bound in recursively."""
    scratch: str
    overlays: tuple[str, ...]
    tops: tuple[str, ...]
    write_through: tuple[str, ...]


class PodSetup(NamedTuple):
    resolv_conf: str
    hosts: str
    hostname: str
    root: NewRoot | None = None
    binds: tuple[Bind, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"resolv_conf": self.resolv_conf, "hosts": self.hosts, "hostname": self.hostname,
                "root": self.root._asdict() if self.root is not None else None,
                "binds": [b._asdict() for b in self.binds]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PodSetup:
        root = data.get("root")
        return cls(data["resolv_conf"], data["hosts"], data["hostname"],
                   NewRoot(root["scratch"], tuple(root["overlays"]), tuple(root["tops"]), tuple(root["write_through"]))
                   if root else None,
                   tuple(Bind(**b) for b in data.get("binds", ())))


# ------------------------------------------------------------------------ the new root's mounts


class Overlay(NamedTuple):
    lower: str
    upper: str
    work: str
    target: str


class RecursiveBind(NamedTuple):
    source: str
    target: str


def root_mounts(root: NewRoot, mountinfo: str) -> list[Overlay | RecursiveBind]:
    """The mounts that make ``root`` in ``root.scratch``/r, given ``mountinfo`` (the text of
    /proc/self/mountinfo where they are made): the same ones, in the same order, as the shell
    prefix's awk program prints (netemu.kubelet.mountns)."""
    r = root.scratch
    found: list[Overlay | RecursiveBind] = []
    for k, point in enumerate(root.overlays, 1):
        found.append(Overlay(point, f"{r}/u{k}", f"{r}/w{k}", f"{r}/r{'' if point == '/' else point}"))
    points: dict[str, str] = {}
    entries: list[tuple[str, str]] = []  # (parent id, mount point), in the file's order
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) < 5 or "\\" in fields[4] or "'" in fields[4]:
            continue
        points[fields[0]] = fields[4]
        entries.append((fields[1], fields[4]))
    overlays, tops = set(root.overlays), set(root.tops)
    for parent, point in entries:
        parts = point.split("/")
        top = parts[1] if len(parts) > 1 else ""
        if point and points.get(parent) in overlays and point not in overlays and top in tops:
            found.append(RecursiveBind(point, f"{r}/r{point}"))
    found += [RecursiveBind(d, f"{r}/r{d}") for d in root.write_through]
    return found


# ------------------------------------------------------------------------ carrying it out here


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None, what: str) -> None:
    if _libc.mount(source.encode() if source is not None else None, target.encode(),
                   fstype.encode() if fstype else None, flags, data.encode() if data else None) != 0:
        raise StepError(f"{what}: {os.strerror(ctypes.get_errno())}")


def _bind(source: str, target: str, flags: int = 0) -> None:
    option = "--rbind" if flags & MS_REC else "--bind"
    _mount(source, target, None, MS_BIND | flags, None, f"mount {option} {source} {target}")


def _read_only(target: str) -> None:
    kept = os.statvfs(target).f_flag & _KEPT_FLAGS
    _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | kept, None, f"mount -o remount,bind,ro {target}")


def _make_new_root(root: NewRoot) -> str:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        mountinfo = f.read()
    _mount("netemu", root.scratch, "tmpfs", 0, None, f"mount -t tmpfs netemu {root.scratch}")
    os.mkdir(f"{root.scratch}/r")
    for m in root_mounts(root, mountinfo):
        if isinstance(m, Overlay):
            os.mkdir(m.upper)
            os.mkdir(m.work)
            _mount("netemu", m.target, "overlay", 0, f"lowerdir={m.lower},upperdir={m.upper},workdir={m.work}",
                   f"mount -t overlay netemu {m.target}")
        else:
            _bind(m.source, m.target, MS_REC)
    return f"{root.scratch}/r"


def _make_target(bind: Bind, target: str) -> None:
    if bind.make == "d":
        os.makedirs(target, exist_ok=True)
    elif bind.make == "f":
        os.makedirs(os.path.dirname(target) or "/", exist_ok=True)
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666))


def _steps(setup: PodSetup) -> None:
    if _libc.unshare(CLONE_NEWNS | CLONE_NEWUTS) != 0:
        raise StepError(f"unshare --mount --uts: {os.strerror(ctypes.get_errno())}")
    _mount("none", "/", None, MS_REC | MS_PRIVATE, None, "mount --make-rprivate /")
    _bind(setup.resolv_conf, "/etc/resolv.conf")
    _bind(setup.hosts, "/etc/hosts")
    socket.sethostname(setup.hostname)
    workdir = os.getcwd()
    new_root = _make_new_root(setup.root) if setup.root is not None else ""
    for bind in setup.binds:
        target = new_root + bind.target
        _make_target(bind, target)
        _bind(bind.source, target)
        if bind.read_only:
            _read_only(target)
    if new_root:
        os.chdir(new_root)
        os.chroot(".")
        try:
            os.chdir(workdir)
        except OSError:
            os.chdir("/")


def apply(setup: PodSetup) -> None:
    """Carry ``setup`` out in this process (a fresh child, about to run its program); StepError
    when a step fails."""
    try:
        _steps(setup)
    except StepError:
        raise
    except OSError as exc:
        raise StepError(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)) from exc
