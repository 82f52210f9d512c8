"""How a container's processes see its volumes at their mountPaths: the argv prefix that sets up
a private mount namespace (root only, like the pod's resolv.conf and hostname, see ``podfiles``).

Every process of a pod already starts through ``unshare --mount --uts``. For a container with
volumeMounts the shell that follows also bind-mounts each volume (or its subPath) at its
mountPath, read-only when asked (a bind remount: writes fail with EROFS). Mounts are made parent
first, so a mount inside another volume's mountPath lands in that volume, as in Kubernetes.

- When every mountPath exists on the host (a directory for a directory, a file for a file), the
  volume is bound straight over it, in the private namespace only.
- When one does not (``/data``, ``/etc/config``, the service account token's
  ``/var/run/secrets/...``), the missing mount points are made in copy-on-write layers built in
  the pod's scratch directory (a tmpfs there, in the private namespace only), so nothing is
  created in the host's filesystem. Each top-level directory on the way to a new mount point
  (``/etc`` for ``/etc/config``, ``/run`` for ``/var/run/secrets``) gets an overlay whose
  writable layer is in that tmpfs, as does every host mount on the way inside it; the host's
  mounts in it are bound back in, and the whole is moved over the host's directory. What the
  process writes in those directories is discarded when it exits, like a container's writable
  layer, while what it writes anywhere else reaches the host's files as any process of a pod
  does.
- When a new mount point lies right in ``/`` (``/data``), ``/`` itself needs the overlay: the
  command then runs chrooted in a new root made of an overlay of the host's ``/`` with every
  other top-level directory of the host (``/tmp``, ``/home``, ``/proc``, ``/dev``, ...) bound in
  recursively, and any host mount on the way overlaid as above. That costs a start about a
  millisecond more than moving one directory over (tens of mounts instead of a few). Either way
  the process starts in its working directory.

``enter_setup`` decides all of this once, as data (netemu.podsetup.PodSetup); it is carried out
either by the shell prefix ``shell_argv`` renders (exec, probes, the netns backend) or by the fork
server's child itself (netemu.podsetup.apply: the same steps as system calls). Both go by
``/proc/self/mountinfo`` as it is where they run (the netns backend's ``ip netns exec`` has made
its own mounts by then): the shell prefix with an awk program, podsetup.root_mounts in Python
(from the fork server's copy of the table, planned before it forks), the same mounts in the same
order (tests compare them).
"""
from __future__ import annotations

import functools
import os
import posixpath
import shutil
import time
from pathlib import Path
from typing import NamedTuple, Sequence

from netemu.errors import NetemuError
from netemu.podsetup import (Bind, MountEntry, MountTable, NewRoot, PodSetup, containing_mount, lies_in,
                             read_mountinfo)

from .volumes import Mount

# Filesystems an overlay cannot stand on: a mount point inside one of these cannot be made.
PSEUDO_FILESYSTEMS = frozenset({
    "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "mqueue", "debugfs", "tracefs", "securityfs",
    "pstore", "bpf", "configfs", "fusectl", "hugetlbfs", "binfmt_misc", "nsfs", "autofs", "efivarfs"})

# awk over /proc/self/mountinfo: shell commands that mount, for each mount point or top-level
# directory in `o` (parents first), an overlay of it at r/r<point>, and bind in every mount that
# sits right on one of them or on "/" and lies in a directory on the way to a new mount point
# (top-level name in `c`); then each write-through top-level directory of `w`, recursively.
_AWK = (r'function q(s) { return "\047" s "\047" } '
        r'index($5, "\\") == 0 && index($5, "\047") == 0 { mp[$1] = $5; par[NR] = $2; pt[NR] = $5 } '
        r'END { n = split(o, L, " "); for (k = 1; k <= n; k++) { m = L[k]; t = (m == "/") ? "" : m; '
        r'print "mkdir -p " q(r "/u" k) " " q(r "/w" k) " " q(r "/r" t) " && mount -t overlay netemu -o " '
        r'q("lowerdir=" m ",upperdir=" r "/u" k ",workdir=" r "/w" k) " " q(r "/r" t) " || exit 127" } '
        r'for (i = 1; i <= NR; i++) { p = pt[i]; split(p, a, "/"); '
        r'if (p != "" && (index(o, " " mp[par[i]] " ") || mp[par[i]] == "/") && !index(o, " " p " ") && '
        r'index(c, " " a[2] " ")) '
        r'print "mount --rbind " q(p) " " q(r "/r" p) " || exit 127" } '
        r'n = split(w, D, " "); for (k = 1; k <= n; k++) '
        r'print "mount --rbind " q(D[k]) " " q(r "/r" D[k]) " || exit 127" }')

# $1 resolv.conf, $2 hosts, $3 hostname, $4 scratch directory ("" without the overlay), $5 the
# mount points and top-level directories to overlay ("/" among them: a new root, chrooted into),
# $6 the top-level names on the way to new mount points (without a new root: each moved over the
# host's), $7 the top-level directories to bind in a new root; then (source, target, flags)
# triples up to "--", then the command. flags: "r" or "w", then "-" (target exists), "d" (make a
# directory) or "f" (a file). A target is made in the new layer ($P) when there is a new root or
# its top-level directory is one of $6, where it is otherwise.
_ENTER = r'''W=$PWD
mount --bind "$1" /etc/resolv.conf && mount --bind "$2" /etc/hosts && hostname "$3" || exit 127
R=$4 P= O=" $5 " T=$6 C=" $6 "
if [ -n "$R" ]; then
  S=$(awk -v o=" $5 " -v c=" $6 " -v w="$7" -v r="$R" '__AWK__' /proc/self/mountinfo) &&
  mount -t tmpfs netemu "$R" && mkdir "$R/r" && eval "$S" || exit 127
  P=$R/r
fi
shift 7
while [ "$1" != -- ]; do
  t=$2 x=${2#/}
  case $O$C in *" / "*|*" ${x%%/*} "*) t=$P$2 ;; esac
  case $3 in ?d) mkdir -p "$t" ;; ?f) mkdir -p "${t%/*}" && : >>"$t" ;; esac &&
  mount --bind "$1" "$t" && { [ "${3%?}" = w ] || mount -o remount,bind,ro "$t"; } || exit 127
  shift 3
done
shift
[ -z "$R" ] && exec "$@"
case $O in *" / "*) cd "$P" && exec chroot . /bin/sh -c 'cd "$0" 2>/dev/null || cd /; exec "$@"' "$W" "$@" ;; esac
for t in $T; do mount --move "$P/$t" "/$t" || exit 127; done
cd "$W" 2>/dev/null || cd /
exec "$@"'''.replace("__AWK__", _AWK)


class MountPointError(NetemuError):
    """A mountPath netemu cannot present (it would have to be made in a pseudo filesystem, or
    it has the wrong type), in the container runtime's words."""


class _HostMount(NamedTuple):
    point: str
    fstype: str


def _unescape(field: str) -> str:
    """A mountinfo path field (octal escapes for space, tab, newline, backslash)."""
    return field.encode().decode("unicode_escape") if "\\" in field else field


class HostMounts:
    """The mounts this process sees at one moment, in /proc/self/mountinfo's order, with what
    ``enter_setup`` asks of them kept per path (the same few paths come up for every pod)."""

    def __init__(self, entries: Sequence[MountEntry]) -> None:
        self.entries = tuple(_HostMount(_unescape(e.point), e.fstype) for e in entries)
        self._containing: dict[str, _HostMount] = {}
        self._ancestors: dict[str, tuple[str, ...]] = {}

    def containing(self, path: str) -> _HostMount:
        """The mount ``path`` lies in (the last one mounted at the deepest mount point above it)."""
        found = self._containing.get(path)
        if found is None:
            found = self._containing[path] = containing_mount(path, self.entries) or _HostMount("/", "")
        return found

    def ancestors(self, point: str) -> tuple[str, ...]:
        """``point`` and every mount point above it, parents first."""
        found = self._ancestors.get(point)
        if found is None:
            points = {m.point for m in self.entries if lies_in(point, m.point)}
            found = self._ancestors[point] = tuple(sorted(points | {"/", point}, key=_parents_first))
        return found


def _parents_first(point: str) -> tuple[bool, int, str]:
    return point != "/", point.count("/"), point


class HostMountTable:
    """This process's mounts as ``HostMounts``, looked at through a netemu.podsetup.MountTable
    (read again only when they have changed) and made again only then. The cluster keeps one for
    its kubelets (every pod with the service account's token needs a look, and reading and
    parsing the file each time took a fifth of a millisecond of the cluster's loop); ``close``
    gives its file up. For the cluster's loop."""

    def __init__(self) -> None:
        self._table = MountTable()
        self._seen: tuple[MountEntry, ...] | None = None
        self._mounts = HostMounts(())

    def mounts(self) -> HostMounts:
        entries = self._table.entries()
        if entries is not self._seen:
            self._seen = entries
            self._mounts = HostMounts(entries)
        return self._mounts

    def close(self) -> None:
        self._table.close()


@functools.cache
def overlay_problem() -> str:
    """Why the copy-on-write root cannot be made here ("" when it can)."""
    missing = [t for t in ("awk", "chroot") if shutil.which(t) is None]
    return f"missing {', '.join(missing)}" if missing else ""


def _deepest_existing(path: str) -> str:
    while not os.path.isdir(path):
        path = posixpath.dirname(path)
    return path


def _chain(path: str) -> list[str]:
    """``path`` and its ancestors, "/" first."""
    parts = [p for p in path.split("/") if p]
    return ["/"] + ["/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _write_through(tops: set[str]) -> list[str]:
    """The host's top-level directories (not symlinks) that stay the host's own in the new root:
    all but those on the way to a new mount point."""
    return ["/" + n for n in _top_directories() if n not in tops]


_TRUSTED_AGE_NS = 1_000_000_000  # a directory's mtime this old can no longer hide a change made in its tick
_tops_seen: tuple[tuple[int, int, int], tuple[str, ...]] | None = None  # ((dev, ino, mtime), names)


def _top_directories(root: str = "/") -> tuple[str, ...]:
    """The names of the host's top-level directories (``root``'s, for tests), sorted: no symlinks,
    none with a space or a quote. Listed again only when "/" has changed (its mtime moves with
    every entry added, removed or renamed; a type cannot change in place): a pod whose volume
    needs a new root asked for 20 stat calls. A listing is kept only once the mtime it saw is a
    second old, since a change within the same clock tick can leave the mtime as it was."""
    global _tops_seen
    base = root.rstrip("/") + "/"
    try:
        st = os.stat(base)
        key = (st.st_dev, st.st_ino, st.st_mtime_ns)
        if _tops_seen is not None and _tops_seen[0] == key:
            return _tops_seen[1]
        names = tuple(n for n in sorted(os.listdir(base)) if " " not in n and "'" not in n
                      and os.path.isdir(base + n) and not os.path.islink(base + n))
    except OSError:
        return ()
    # the newest listing only: one whose mtime comes back (set back by hand) is not trusted again
    _tops_seen = (key, names) if time.time_ns() - st.st_mtime_ns > _TRUSTED_AGE_NS else None
    return names


def enter_setup(resolv_conf: Path, hosts: Path, hostname: str, scratch: Path,
                mounts: Sequence[Mount], host_mounts: HostMountTable | None = None) -> PodSetup:
    """What gives a process the pod's files and hostname and ``mounts`` at their mountPaths (see
    the module's docstring), as data (netemu.podsetup), with the host's mounts looked at through
    ``host_mounts`` (or read here). MountPointError when a mountPath cannot be presented."""
    host: HostMounts | None = None  # looked at once a mount point must be made
    binds: list[Bind] = []
    overlays: set[str] = set()
    chain: set[str] = set()
    in_root = False  # a new mount point right in "/": the whole root is overlaid, and chrooted into
    for m in sorted(mounts, key=lambda m: posixpath.normpath("/" + m.target).count("/")):
        target = os.path.realpath(posixpath.normpath("/" + m.target.lstrip("/")))
        is_dir = m.source.is_dir()
        make = ""
        if os.path.lexists(target):
            if is_dir and not os.path.isdir(target):
                raise MountPointError(f'mount point "{m.target}" for volume "{m.volume}" is not a directory')
            if not is_dir and os.path.isdir(target):
                raise MountPointError(f'cannot mount the file "{m.source.name}" of volume "{m.volume}" over the '
                                      f'directory "{m.target}"')
        else:
            make = "d" if is_dir else "f"
            existing = _deepest_existing(posixpath.dirname(target))
            if host is None:
                host = host_mounts.mounts() if host_mounts is not None else HostMounts(read_mountinfo())
            where = host.containing(existing)
            if where.fstype in PSEUDO_FILESYSTEMS:
                raise MountPointError(f'cannot make mount point "{m.target}" for volume "{m.volume}": it lies in '
                                      f"the host's {where.point} ({where.fstype})")
            chain.update(_chain(existing))
            in_root = in_root or existing == "/"
        binds.append(Bind(str(m.source), target, m.read_only, make))
    if not chain:
        return PodSetup(str(resolv_conf), str(hosts), hostname, None, tuple(binds))
    assert host is not None  # looked at for every new mount point
    tops = {d.split("/")[1] for d in chain if d != "/"}
    for directory in chain:
        overlays.update(host.ancestors(host.containing(directory).point))
    if not in_root:  # the top-level directories on the way are overlaid where they are; "/" stays
        overlays = {p for p in overlays if p != "/"} | {"/" + t for t in tops}
    if overlay_problem():
        raise MountPointError(f"cannot make mount points for volumes: {overlay_problem()}")
    root = NewRoot(str(scratch), tuple(sorted(overlays, key=_parents_first)), tuple(sorted(tops)),
                   tuple(_write_through(tops)) if in_root else ())
    return PodSetup(str(resolv_conf), str(hosts), hostname, root, tuple(binds))


def shell_argv(setup: PodSetup) -> list[str]:
    """``setup`` as the ``unshare ... sh -c`` prefix that carries it out before a command."""
    root = setup.root
    triples = [field for b in setup.binds
               for field in (b.source, b.target, ("r" if b.read_only else "w") + (b.make or "-"))]
    return ["unshare", "--mount", "--uts", "--propagation", "private", "--", "sh", "-c", _ENTER, "netemu-pod",
            setup.resolv_conf, setup.hosts, setup.hostname, root.scratch if root else "",
            " ".join(root.overlays) if root else "", " ".join(root.tops) if root else "",
            " ".join(root.write_through) if root else "", *triples, "--"]
