"""What a process of a pod has set up before its program runs, as data: a private mount and UTS
namespace, the pod's resolv.conf and hosts bound over the host's, the pod's hostname, and its
container's volumes at their mountPaths (in a copy-on-write root when a mount point has to be
made; see netemu.kubelet.mountns, which decides all of it).

``PodSetup`` is made by netemu.kubelet.mountns / podfiles only. Two things carry it out:

- the shell prefix (``unshare ... sh -c SCRIPT``, netemu.kubelet.podfiles.shell_prefix), for
  what starts behind another program (exec, exec probes, the netns backend's ``ip netns exec``);
- ``apply``, here, in the fork server's child just before it runs the program: the same steps
  as system calls (``unshare(2)``, ``mount(2)``, ``sethostname(2)``, ``chroot(2)``). The new
  layer's mounts come from the mount table as the shell's awk reads it where it runs: planned
  by the fork server before it forks (``planned_mounts``, from the ``MountTable`` it keeps, with
  the two binds the child makes first), or read in the child. A step that fails raises
  ``StepError``; the child then says so on its standard error and exits 127, as the shell's
  ``|| exit 127`` does.

This module is imported by the fork server (netemu.forkserverd), so it imports little.
"""
from __future__ import annotations

import ctypes
import os
import select
import socket
from typing import Any, NamedTuple, Sequence

from netemu.errors import NetemuError

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
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
    """The copy-on-write layer made in ``scratch`` (a tmpfs): an overlay of each of ``overlays``
    (mount points, and top-level directories, parents first) and the host's mounts inside them on
    the way to a new mount point (top-level names ``tops``) bound in, all built in ``scratch``/r.
    When ``overlays`` begins with "/", that is a new root: ``write_through`` (top-level
    directories) is bound in recursively and the process is chrooted into it. Otherwise each
    top-level directory of ``tops`` is moved over the host's where it is and "/" stays the host's.
    """
    scratch: str
    overlays: tuple[str, ...]
    tops: tuple[str, ...]
    write_through: tuple[str, ...]

    @property
    def chrooted(self) -> bool:
        return self.overlays[:1] == ("/",)

    def holds(self, path: str) -> bool:
        """Whether ``path`` is made in the new layer (all of them with a new root; otherwise
        those in a top-level directory of ``tops``) rather than where it is."""
        return self.chrooted or path.split("/")[1] in self.tops


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


class MountEntry(NamedTuple):
    """One line of /proc/self/mountinfo: its mount point and that of the mount it sits on ("" for
    the namespace's root), both as the file writes them (octal escapes for space, tab, newline and
    backslash), and its filesystem type."""
    point: str
    parent: str
    fstype: str


def parse_mountinfo(text: str) -> tuple[MountEntry, ...]:
    points: dict[str, str] = {}
    lines: list[tuple[str, str, str]] = []  # (parent id, point, fstype)
    for line in text.splitlines():
        before, _, after = line.partition(" - ")
        fields = before.split(" ")
        if len(fields) >= 5 and after:
            points[fields[0]] = fields[4]
            lines.append((fields[1], fields[4], after.split(" ", 1)[0]))
    return tuple(MountEntry(point, points.get(parent, ""), fstype) for parent, point, fstype in lines)


def read_mountinfo(fd: int = -1) -> tuple[MountEntry, ...]:
    """This process's mounts now, from /proc/self/mountinfo (``fd``, open on it, read from its
    start; or opened here)."""
    own = fd < 0
    if own:
        fd = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        if own:
            os.close(fd)
    return parse_mountinfo(b"".join(chunks).decode("utf-8", "surrogateescape"))


class MountTable:
    """This process's mounts (/proc/self/mountinfo), parsed again only when they have changed.

    The file stays open: the kernel marks an open mountinfo file with POLLPRI after any mount or
    unmount in its namespace (proc(5)), so a look is a poll with no wait, and the file is read
    again only after such a change. ``close`` gives the file up; later looks read it afresh each
    time. A process made by ``fork`` opens it again (the two would share one file position). For
    one thread: a change one look reports is not reported to the next."""

    def __init__(self) -> None:
        self._fd = -1
        self._pid = 0
        self._poll: Any = None
        self._entries: tuple[MountEntry, ...] = ()
        self._closed = False

    def entries(self) -> tuple[MountEntry, ...]:
        """The mounts now (none when /proc cannot be read)."""
        try:
            if self._closed:
                return read_mountinfo()
            if self._pid != os.getpid():
                self._open()
            elif self._poll.poll(0):
                self._entries = read_mountinfo(self._fd)
        except OSError:
            return ()
        return self._entries

    def close(self) -> None:
        self._closed = True
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _open(self) -> None:
        if self._fd >= 0:  # inherited through fork: the parent's file, and its position
            os.close(self._fd)
            self._fd = -1
        self._pid = os.getpid()
        self._fd = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLPRI)
        self._entries = read_mountinfo(self._fd)


def root_mounts(root: NewRoot, mounts: Sequence[MountEntry]) -> list[Overlay | RecursiveBind]:
    """The mounts that make ``root`` in ``root.scratch``/r, given ``mounts`` (/proc/self/mountinfo
    where they are made): the same ones, in the same order, as the shell prefix's awk program
    prints (netemu.kubelet.mountns). A host mount is bound in when it lies in a top-level
    directory of ``root.tops``, is not overlaid itself, and sits right on an overlaid mount or on
    "/" (what sits on another host mount comes with that one). Mount points with an escape or a
    quote are left out."""
    r = root.scratch
    found: list[Overlay | RecursiveBind] = []
    for k, point in enumerate(root.overlays, 1):
        found.append(Overlay(point, f"{r}/u{k}", f"{r}/w{k}", f"{r}/r{'' if point == '/' else point}"))
    overlays, tops = set(root.overlays), set(root.tops)
    for point, on, _ in mounts:
        if not point or "\\" in point or "'" in point or "\\" in on or "'" in on:
            continue
        parts = point.split("/")
        if (on in overlays or on == "/") and point not in overlays and parts[1] in tops:
            found.append(RecursiveBind(point, f"{r}/r{point}"))
    found += [RecursiveBind(d, f"{r}/r{d}") for d in root.write_through]
    return found


def planned_mounts(setup: PodSetup, mounts: Sequence[MountEntry]) -> list[Overlay | RecursiveBind]:
    """``root_mounts`` for a process about to carry ``setup`` out in a namespace copied from one
    whose mounts are ``mounts``: with the binds of the pod's resolv.conf and hosts it makes first,
    as they will then be in its /proc/self/mountinfo (the fork server plans before it forks, so
    the child reads and parses nothing)."""
    assert setup.root is not None
    ours = [MountEntry(target, getattr(containing_mount(target, mounts), "point", "/"), "none")
            for target in ("/etc/resolv.conf", "/etc/hosts")]
    return root_mounts(setup.root, (*mounts, *ours))


def lies_in(path: str, point: str) -> bool:
    """Whether ``path`` is the mount point ``point`` or lies under it."""
    return path == point or path.startswith(point.rstrip("/") + "/")


def containing_mount(path: str, mounts: Sequence[Any]) -> Any:
    """Of ``mounts`` (anything with a ``point``), the one ``path`` lies in: the last one mounted
    at the deepest mount point above it; None when there is none (no "/" among them)."""
    found = None
    for m in mounts:
        if lies_in(path, m.point) and (found is None or len(m.point) >= len(found.point)):
            found = m
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


def _make_new_root(root: NewRoot, planned: Sequence[Overlay | RecursiveBind] | None) -> str:
    if planned is None:
        planned = root_mounts(root, read_mountinfo())  # as the mounts are here and now
    _mount("netemu", root.scratch, "tmpfs", 0, None, f"mount -t tmpfs netemu {root.scratch}")
    os.mkdir(f"{root.scratch}/r")
    for m in planned:
        if isinstance(m, Overlay):
            os.mkdir(m.upper)
            os.mkdir(m.work)
            os.makedirs(m.target, exist_ok=True)  # a top-level directory overlaid where it is
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


def _steps(setup: PodSetup, planned: Sequence[Overlay | RecursiveBind] | None) -> None:
    if _libc.unshare(CLONE_NEWNS | CLONE_NEWUTS) != 0:
        raise StepError(f"unshare --mount --uts: {os.strerror(ctypes.get_errno())}")
    _mount("none", "/", None, MS_REC | MS_PRIVATE, None, "mount --make-rprivate /")
    _bind(setup.resolv_conf, "/etc/resolv.conf")
    _bind(setup.hosts, "/etc/hosts")
    socket.sethostname(setup.hostname)
    workdir = os.getcwd()
    new_root = _make_new_root(setup.root, planned) if setup.root is not None else ""
    for bind in setup.binds:
        target = new_root + bind.target if new_root and setup.root.holds(bind.target) else bind.target
        _make_target(bind, target)
        _bind(bind.source, target)
        if bind.read_only:
            _read_only(target)
    if not new_root:
        return
    assert setup.root is not None
    if setup.root.chrooted:
        os.chdir(new_root)
        os.chroot(".")
    else:
        for top in setup.root.tops:
            _mount(f"{new_root}/{top}", f"/{top}", None, MS_MOVE, None, f"mount --move {new_root}/{top} /{top}")
    try:
        os.chdir(workdir)  # within the new root, or through what was moved over the host's
    except OSError:
        os.chdir("/")


def apply(setup: PodSetup, planned: Sequence[Overlay | RecursiveBind] | None = None) -> None:
    """Carry ``setup`` out in this process (a fresh child, about to run its program), with the
    new layer's mounts ``planned`` (``planned_mounts``) or else as /proc/self/mountinfo says here;
    StepError when a step fails."""
    try:
        _steps(setup, planned)
    except StepError:
        raise
    except OSError as exc:
        raise StepError(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)) from exc
