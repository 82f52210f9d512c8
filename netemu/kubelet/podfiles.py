"""The files a container runtime gives every pod — /etc/resolv.conf, /etc/hosts, the hostname —
and the way a process is started so that it sees them.

The kubelet writes the pod's resolv.conf (from dnsPolicy and dnsConfig) and its hosts file under
the cluster's state directory. A process of the pod (a container's command, an exec, an exec
probe) is started through ``unshare --mount --uts``: in a private mount namespace the two files
are bind-mounted over /etc/resolv.conf and /etc/hosts, and the UTS namespace gets the pod's
hostname, so ``nslookup my-nginx`` and ``curl my-nginx`` resolve through cluster DNS with the
pod's search path, as in a real pod. A container's volumeMounts are presented in the same
namespace (``mountns``). The fork server's child does the same itself, without the prefix
(netemu.podsetup), when nothing else has to run before the command. That needs root
(CAP_SYS_ADMIN); without it processes see the host's files and no volume at its mountPath (their
files are in the directory ``$NETEMU_POD_VOLUMES`` names), and ``prefix_problem`` says so plainly.
"""
from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from netemu.podsetup import PodSetup

from . import mountns
from .volumes import VOLUMES_ENV, Mount

_ENTER = ('mount --bind "$0" /etc/resolv.conf && mount --bind "$1" /etc/hosts && hostname "$2" '
          '&& shift 2 && exec "$@"')


@dataclass(frozen=True)
class PodFiles:
    directory: Path
    hostname: str

    @property
    def resolv_conf(self) -> Path:
        return self.directory / "resolv.conf"

    @property
    def hosts(self) -> Path:
        return self.directory / "hosts"

    @property
    def volumes(self) -> Path:
        """One directory per volume of the pod (``volumes``)."""
        return self.directory / "volumes"

    @property
    def scratch(self) -> Path:
        """Where a container's copy-on-write root is mounted, in its own mount namespace only."""
        return self.directory / "root"


def hosts_file(pod_ip: str, hostname: str, fqdn: str = "") -> str:
    """The kubelet's managed /etc/hosts (pkg/kubelet/kubelet_pods.go managedHostsFileContent)."""
    names = f"{fqdn}\t{hostname}" if fqdn and fqdn != hostname else hostname
    return ("# Kubernetes-managed hosts file.\n"
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            "fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n"
            f"{pod_ip}\t{names}\n")


def write(directory: Path, *, resolv_conf: str, pod_ip: str, hostname: str, fqdn: str = "") -> PodFiles:
    directory.mkdir(parents=True, exist_ok=True)
    files = PodFiles(directory, hostname)
    files.resolv_conf.write_text(resolv_conf)
    files.hosts.write_text(hosts_file(pod_ip, hostname, fqdn))
    return files


@functools.cache
def prefix_problem() -> str:
    """Why processes cannot get the pod's files here ("" when they can)."""
    if os.geteuid() != 0:
        return ("not root: processes of pods see the host's /etc/resolv.conf, /etc/hosts and hostname, and no "
                f"volume at its mountPath (${VOLUMES_ENV} names the pod's volume directory; run as root for "
                "per-pod ones)")
    missing = [t for t in ("unshare", "mount", "hostname") if shutil.which(t) is None]
    if missing:
        return f"missing {', '.join(missing)}: processes of pods see the host's resolv.conf and hostname"
    if not (os.path.exists("/etc/resolv.conf") and os.path.exists("/etc/hosts")):
        return "the host has no /etc/resolv.conf or /etc/hosts to cover"
    return ""


def enter_setup(files: PodFiles | None, mounts: Sequence[Mount] = (),
                host_mounts: mountns.HostMountTable | None = None) -> PodSetup | None:
    """What gives a process the pod's files and hostname, and ``mounts`` (a container's volumes)
    at their mountPaths (None when it cannot be done here, see ``prefix_problem``), the host's
    mounts looked at through ``host_mounts`` when given; mountns.MountPointError when a mountPath
    cannot be presented."""
    if files is None or prefix_problem():
        return None
    if mounts:
        files.scratch.mkdir(exist_ok=True)
        return mountns.enter_setup(files.resolv_conf, files.hosts, files.hostname, files.scratch, mounts,
                                   host_mounts)
    return PodSetup(str(files.resolv_conf), str(files.hosts), files.hostname)


def shell_prefix(setup: PodSetup | None) -> list[str]:
    """argv to put before a command so that ``setup`` is carried out before it runs."""
    if setup is None:
        return []
    if setup.binds:
        return mountns.shell_argv(setup)
    return ["unshare", "--mount", "--uts", "--propagation", "private", "--", "sh", "-c", _ENTER,
            setup.resolv_conf, setup.hosts, setup.hostname]

