"""Which emulation plays which image.

Owns: reducing an image reference to its repository path (no registry host, tag or digest) and
the table from the repository's last one or two path components to an emulation. Two-component
keys (``nginxinc/nginx-unprivileged``) win over one-component keys (``nginx``).
"""
from __future__ import annotations

from netemu.images.agnhost import Agnhost, ServeHostname
from netemu.images.base import Emulation
from netemu.images.httpd import Httpd
from netemu.images.httpecho import HttpEcho
from netemu.images.idle import Idle, Pause
from netemu.images.mysql import MARIADB, MYSQL, MySQL
from netemu.images.nginx import Nginx
from netemu.images.redis import Redis

_UNPRIVILEGED_NGINX = Nginx(default_port=8080, name="nginx-unprivileged")

EMULATIONS: dict[str, Emulation] = {
    "nginx": Nginx(),
    "nginx-slim": Nginx(),  # registry.k8s.io/nginx-slim, the Kubernetes docs' StatefulSet example
    "nginxinc/nginx-unprivileged": _UNPRIVILEGED_NGINX,
    "nginx-unprivileged": _UNPRIVILEGED_NGINX,
    "httpd": Httpd(),
    "agnhost": Agnhost(),
    "serve_hostname": ServeHostname(),
    "pause": Pause(),
    "busybox": Idle("busybox"),
    "radial/busyboxplus": Idle("busyboxplus"),
    "busyboxplus": Idle("busyboxplus"),
    "curlimages/curl": Idle("curl", entrypoint=("curl",)),
    "alpine": Idle("alpine"),
    "ubuntu": Idle("ubuntu"),
    "debian": Idle("debian"),
    "nicolaka/netshoot": Idle("netshoot"),
    "redis": Redis(),
    "mysql": MySQL(MYSQL),
    "mariadb": MySQL(MARIADB),
    "hashicorp/http-echo": HttpEcho(),
    "http-echo": HttpEcho(),
}


def repository_path(image: str) -> str:
    """``docker.io/library/nginx:1.27@sha256:…`` → ``library/nginx``."""
    ref = image.strip().lower().split("@", 1)[0]
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        ref = ref[:colon]
    parts = [part for part in ref.split("/") if part]
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    return "/".join(parts)


def lookup(image: str) -> Emulation | None:
    parts = repository_path(image).split("/")
    for width in (2, 1):
        if len(parts) >= width:
            emulation = EMULATIONS.get("/".join(parts[-width:]))
            if emulation is not None:
                return emulation
    return None


def known_images() -> list[str]:
    """The repository names netemu emulates, for messages."""
    return sorted(EMULATIONS)


__all__ = ["EMULATIONS", "known_images", "lookup", "repository_path"]
