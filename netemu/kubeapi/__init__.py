"""The Kubernetes API of a netemu cluster: what kubectl and the client libraries talk to.

Modules, one job each: ``certs`` (CA, serving and client certificates, token), ``kubeconfig``
(the cluster's kubeconfig and merging it into the user's), ``server`` (HTTPS listener,
authentication, routing), ``rest`` (the verbs on a resource), ``discovery``, ``openapi``,
``tables`` (server-side printing), ``patch`` (JSON, merge and strategic merge patch),
``selectors``, ``history`` (recent changes for WATCH), ``status`` (errors as Status objects),
``podlogs``, ``podexec``, ``podattach`` and ``podportforward`` (the ``pods/log``, ``pods/exec``,
``pods/attach`` and ``pods/portforward`` subresources; ``channels`` their channel WebSocket,
``spdy`` port-forward's SPDY framing), ``client`` (the
CLI's blocking client),
``resources`` and ``typeinfo`` (what is served, and the shape of its types), ``aggregated``
(aggregated discovery), ``openapiv2``, ``openapiv2_proto`` and ``descriptions`` (OpenAPI v2, as JSON
and as gnostic's protobuf; the fields' descriptions),
``statusresource`` (the ``status`` subresource), ``tokens`` and ``tokenrequest`` (service account
tokens and the ``serviceaccounts/token`` subresource), ``incluster`` (pods reach the API through
the ``kubernetes`` Service), ``views`` and ``eventsv1`` (``events.k8s.io/v1``
events, a view of core/v1 events), ``gojson`` (type errors in Go's decoder's words),
``operations`` and ``describing`` (netemu's own verbs as extension paths, for its CLI).
"""
from typing import Any

KUBECONFIG = "kubeconfig"  # the cluster's kubeconfig, in its state directory
# The credentials' files beside it (netemu.kubeapi.certs writes them).
CA_CERT, SERVER_CERT, SERVER_KEY = "ca.crt", "apiserver.crt", "apiserver.key"
CLIENT_CERT, CLIENT_KEY, TOKEN = "admin.crt", "admin.key", "token"

__all__ = ["KUBECONFIG", "KubeApiServer"]


def __getattr__(name: str) -> Any:
    """``KubeApiServer`` is imported when first asked for: the CLI's client needs no aiohttp."""
    if name == "KubeApiServer":
        from .server import KubeApiServer
        return KubeApiServer
    raise AttributeError(name)
