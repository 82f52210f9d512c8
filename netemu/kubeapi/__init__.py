"""The Kubernetes API of a netemu cluster: what kubectl and the client libraries talk to.

Modules, one job each: ``certs`` (CA, serving and client certificates, token), ``kubeconfig``
(the cluster's kubeconfig and merging it into the user's), ``server`` (HTTPS listener,
authentication, routing), ``rest`` (the verbs on a resource), ``discovery``, ``openapi``,
``tables`` (server-side printing), ``patch`` (JSON, merge and strategic merge patch),
``selectors``, ``history`` (recent changes for WATCH), ``status`` (errors as Status objects),
``podlogs`` and ``podexec`` (the ``pods/log`` and ``pods/exec`` subresources),
``resources`` and ``typeinfo`` (what is served, and the shape of its types).
"""
from .server import KUBECONFIG, KubeApiServer

__all__ = ["KUBECONFIG", "KubeApiServer"]
