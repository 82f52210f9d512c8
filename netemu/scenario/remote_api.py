"""A blocking client of any Kubernetes cluster's API, for ``netemu run --kubeconfig``.

It is built on the official Python client (``kubernetes``): the kubeconfig (one file, one
context) gives the server and the credentials (kept in memory, never left on disk:
``kubeconfig_client``); requests go through the client's own
``ApiClient`` by resource path, so every kind netemu knows (``netemu.kubeapi.resources``) is
reached the same way, and answers are decoded into netemu's own types (``decode``) so that the
scenario steps, references and matchers work on them unchanged. ``pods/exec`` goes through
``kubernetes.stream``. Every method blocks: the runner calls them in worker threads.

Errors come back as the API server words them (its ``Status`` message), as NetemuError
subclasses: NotFoundError for 404, ConflictError for 409, ClusterError when the server cannot be
reached.
"""
from __future__ import annotations

import copy
import json
import re
import time
from typing import Any

from netemu.errors import ClusterError, ConflictError, NetemuError, NotFoundError, WaitTimeoutError
from netemu.scenario.kubeconfig_client import KubeconfigClient

FIELD_MANAGER = "netemu"
REQUEST_TIMEOUT = 30.0
_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def resource(kind: str) -> Any:
    from netemu.kubeapi.resources import BY_KIND
    return BY_KIND[kind]


def collection_path(kind: str, namespace: str | None) -> str:
    """``/api/v1/namespaces/NS/pods``, ``/apis/apps/v1/deployments``, ``/api/v1/nodes``."""
    r = resource(kind)
    prefix = f"/apis/{r.group}/{r.version}" if r.group else f"/api/{r.version}"
    return f"{prefix}/namespaces/{namespace}/{r.plural}" if r.namespaced and namespace else f"{prefix}/{r.plural}"


def qualified_name(kind: str) -> str:
    """``pod``, ``deployment.apps``: how kubectl names a kind in its result lines."""
    r = resource(kind)
    return f"{r.singular}.{r.group}" if r.group else r.singular


# --------------------------------------------------------------------------- decoding


def _drop_field(data: Any, path: str) -> bool:
    """Remove the field at ``path`` (``spec.containers[0].foo``) from ``data``; whether it was there."""
    tokens = [(m.group(1), m.group(2)) for m in _PATH_TOKEN.finditer(path)]
    node = data
    for key, index in tokens[:-1]:
        if index is not None and isinstance(node, list) and int(index) < len(node):
            node = node[int(index)]
        elif key is not None and isinstance(node, dict) and key in node:
            node = node[key]
        else:
            return False
    if not tokens:
        return False
    key, index = tokens[-1]
    if index is not None and isinstance(node, list) and int(index) < len(node):
        node.pop(int(index))
        return True
    if key is not None and isinstance(node, dict) and key in node:
        del node[key]
        return True
    return False


def decode(data: dict[str, Any], kind: str | None = None) -> Any:
    """A netemu object from the API's JSON. A real cluster's objects carry fields netemu does not
    model (newer fields, other controllers' status): those are left out, the rest decoded as is
    (no defaulting or validation again)."""
    from netemu.api import codec
    from netemu.api.objects import KINDS
    data = copy.deepcopy(data)
    if kind is not None:
        data.setdefault("kind", kind)
        data.setdefault("apiVersion", resource(kind).api_version)
    data.get("metadata", {}).pop("managedFields", None)
    cls = KINDS.get((data.get("apiVersion"), data.get("kind")))
    if cls is None:
        raise ClusterError(f"netemu cannot read {data.get('kind')} objects of {data.get('apiVersion')}")
    for _ in range(100):
        obj, problems = codec.from_dict(cls, data)
        if not problems:
            return obj
        if not any([_drop_field(data, p.path) for p in problems]):
            break
    raise ClusterError(f"the cluster answered a {data.get('kind')} netemu cannot read: {problems[0]}")


def _status_error(code: int, text: str, what: str) -> NetemuError:
    """The API server's ``Status`` as the error kubectl would print."""
    try:
        status = json.loads(text)
        message = status.get("message") or text
    except (ValueError, AttributeError):
        message = text.strip() or f"HTTP {code}"
    if code == 404:
        return NotFoundError(message)
    if code == 409:
        return ConflictError(message)
    if code in (401, 403):
        return ClusterError(f"{what}: {message}")
    return NetemuError(message)


# --------------------------------------------------------------------------- the client


class KubeTarget:
    """One cluster's API, from a kubeconfig file (and a context in it)."""

    def __init__(self, kubeconfig: str, context: str | None = None):
        from kubernetes.config.config_exception import ConfigException
        self.kubeconfig = kubeconfig
        try:
            self._kubeconfig_client = KubeconfigClient(kubeconfig, context)
        except ConfigException as exc:
            raise ClusterError(f"kubeconfig {kubeconfig}: {exc}") from None
        except OSError as exc:
            raise ClusterError(f"kubeconfig {kubeconfig}: {exc.strerror or exc}") from None
        except (ValueError, TypeError, KeyError) as exc:  # a file that is not a kubeconfig
            raise ClusterError(f"kubeconfig {kubeconfig}: not a kubeconfig ({exc})") from None
        self.client = self._kubeconfig_client.api_client
        self.host = self.client.configuration.host
        self.context = context

    def close(self) -> None:
        self._kubeconfig_client.close()

    # ------------------------------------------------------------------ raw requests

    def request(self, method: str, path: str, *, query: dict[str, str] | None = None, body: Any = None,
                content_type: str = "application/json", raw: bool = False,
                timeout: float = REQUEST_TIMEOUT) -> Any:
        """One request; the decoded JSON answer (``raw``: its text). Errors as NetemuError."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        method, url, headers, body, _ = self.client.param_serialize(
            method, path, query_params=list((query or {}).items()), header_params=headers, body=body,
            auth_settings=["BearerToken"])
        try:
            response = self.client.call_api(method, url, headers, body, _request_timeout=timeout)
            response.read()
        except Exception as exc:  # noqa: BLE001 - urllib3's transport errors, whatever their class
            raise ClusterError(f"the Kubernetes API at {self.host} did not answer {method} {path}: {exc}") from None
        text = (response.data or b"").decode(errors="replace")
        if not 200 <= response.status < 300:
            raise _status_error(response.status, text, f"the Kubernetes API at {self.host} refused {method} {path}")
        return text if raw else (json.loads(text) if text.strip() else None)

    # ------------------------------------------------------------------ objects

    def get(self, kind: str, namespace: str, name: str) -> Any:
        return decode(self.request("GET", f"{collection_path(kind, namespace)}/{name}"), kind)

    def list(self, kind: str, namespace: str | None = None, selector: str | None = None) -> list[Any]:
        query = {"labelSelector": selector} if selector else None
        answer = self.request("GET", collection_path(kind, namespace), query=query)
        return [decode(item, kind) for item in answer.get("items") or []]

    def list_raw(self, kind: str, namespace: str | None = None, selector: str | None = None) -> list[dict[str, Any]]:
        query = {"labelSelector": selector} if selector else None
        return self.request("GET", collection_path(kind, namespace), query=query).get("items") or []

    def apply(self, kind: str, namespace: str, name: str, data: dict[str, Any]) -> Any:
        """Server-side apply (field manager ``netemu``, forcing conflicts): create or update."""
        path = f"{collection_path(kind, namespace)}/{name}"
        answer = self.request("PATCH", path, query={"fieldManager": FIELD_MANAGER, "force": "true"}, body=data,
                              content_type="application/apply-patch+yaml")
        return decode(answer, kind)

    def delete(self, kind: str, namespace: str, name: str, propagation: str = "Background") -> None:
        self.request("DELETE", f"{collection_path(kind, namespace)}/{name}",
                     body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation})

    def scale(self, kind: str, namespace: str, name: str, replicas: int) -> None:
        self.request("PATCH", f"{collection_path(kind, namespace)}/{name}/scale",
                     body={"spec": {"replicas": replicas}}, content_type="application/merge-patch+json")

    def logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        query = {"container": container} if container else None
        return self.request("GET", f"{collection_path('Pod', namespace)}/{pod}/log", query=query, raw=True)

    def namespace_labels(self, name: str) -> dict[str, str] | None:
        """The labels of namespace ``name``, None when there is none."""
        try:
            return dict(self.get("Namespace", "", name).metadata.labels)
        except NotFoundError:
            return None

    def has_resource(self, group: str, plural: str) -> bool:
        """Whether discovery lists ``plural`` in API group ``group`` (a CRD's kind, e.g. Chaos Mesh's)."""
        try:
            versions = self.request("GET", f"/apis/{group}").get("versions") or []
            for version in versions:
                found = self.request("GET", f"/apis/{version['groupVersion']}").get("resources") or []
                if any(r.get("name") == plural for r in found):
                    return True
        except NetemuError:   # not served, or not ours to see: as good as absent
            return False
        return False

    # ------------------------------------------------------------------ exec

    def exec(self, namespace: str, pod: str, argv: list[str], container: str | None = None,
             stdin: bytes | None = None, timeout: float = 30) -> tuple[int, str, str]:
        """Run ``argv`` in the pod through ``pods/exec``: (exit status, stdout, stderr)."""
        from kubernetes import client as kube_client
        from kubernetes.client.exceptions import ApiException
        from kubernetes.stream import stream
        from kubernetes.stream.ws_client import ERROR_CHANNEL, STDERR_CHANNEL, STDIN_CHANNEL, STDOUT_CHANNEL
        options: dict[str, Any] = {"command": argv, "stdin": stdin is not None, "stdout": True, "stderr": True,
                                   "tty": False, "_preload_content": False}
        if container:
            options["container"] = container
        # stream() swaps the ApiClient's transport while it connects: an ApiClient of its own keeps
        # the requests of other threads (background probes, refreshes) on the plain one.
        with kube_client.ApiClient(configuration=self.client.configuration) as own_client:
            try:
                ws = stream(kube_client.CoreV1Api(own_client).connect_get_namespaced_pod_exec, pod, namespace,
                            **options)
            except ApiException as exc:
                code, detail = _handshake_refusal(exc)
                raise _status_error(code, detail, f"exec in pod {namespace}/{pod}") from None
        try:
            if stdin is not None:
                ws.write_stdin(stdin.decode(errors="replace"))
                try:
                    ws.close_channel(STDIN_CHANNEL)   # the end of input (v5.channel.k8s.io)
                except Exception:  # noqa: BLE001 - an older protocol cannot say it
                    pass
            deadline = time.monotonic() + timeout
            while ws.is_open():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeoutError(f"exec {argv[0]} in {pod} timed out after {timeout:g}s")
                ws.update(timeout=min(left, 1.0))
            out = ws.read_channel(STDOUT_CHANNEL)
            err = ws.read_channel(STDERR_CHANNEL)
            status_text = ws.read_channel(ERROR_CHANNEL)
        finally:
            ws.close()
        code, message = exit_status(status_text)
        return code, out, err + message


def _handshake_refusal(exc: Any) -> tuple[int, str]:
    """(HTTP status, body) of a refused WebSocket upgrade, which the client reports as one line:
    ``Handshake status 400 Bad Request -+-+- {headers} -+-+- {Status}``."""
    text = exc.body or exc.reason or str(exc)
    found = re.search(r"Handshake status (\d+)", text)
    return (int(found.group(1)) if found else exc.status or 0), text.rsplit("-+-+-", 1)[-1].strip()


def exit_status(text: str) -> tuple[int, str]:
    """The exit status in ``pods/exec``'s error channel (a ``Status``), and what to add to stderr."""
    if not text.strip():
        return 1, "exec: the connection closed without an exit status\n"
    try:
        status = json.loads(text)
    except ValueError:
        return 1, text if text.endswith("\n") else text + "\n"
    if status.get("status") == "Success":
        return 0, ""
    if status.get("reason") == "NonZeroExitCode":
        for cause in (status.get("details") or {}).get("causes") or []:
            if cause.get("reason") == "ExitCode":
                try:
                    return int(cause.get("message")), ""
                except (TypeError, ValueError):
                    break
    message = status.get("message") or text
    return (127 if "not found" in message else 126), message.rstrip("\n") + "\n"
