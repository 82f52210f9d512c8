"""netemu's verbs as clients of the cluster's Kubernetes API: ``get``, ``delete KIND NAME``,
``scale`` and ``logs``, each printing what kubectl prints; ``apply``/``delete -f``, ``describe``,
``wait``, ``exec``, ``capture`` and ``down`` through netemu's extension paths of the same API
(``netemu.kubeapi.operations``).

``get`` fetches (GET of named objects, LIST with the label selector otherwise) JSON, decodes it
into netemu's types and prints it here (``netemu.printers``: kubectl's columns, YAML, JSON), as
kubectl prints what it fetched. ``logs`` streams ``pods/log`` to standard output as it arrives.
"""
from __future__ import annotations

import datetime
from typing import Any

from netemu.errors import ClusterError, NetemuError


def _resource(kind: str) -> Any:
    from netemu.kubeapi.resources import BY_KIND
    return BY_KIND[kind]


def collection_path(kind: str, namespace: str | None) -> str:
    """``/api/v1/namespaces/NS/pods``, ``/apis/apps/v1/deployments`` (all namespaces, or cluster-scoped)."""
    r = _resource(kind)
    prefix = f"/apis/{r.group}/{r.version}" if r.group else f"/api/{r.version}"
    return f"{prefix}/namespaces/{namespace}/{r.plural}" if r.namespaced and namespace else f"{prefix}/{r.plural}"


def decode(data: dict[str, Any]) -> Any:
    """A netemu object from the API's JSON (as stored: no defaulting or validation again)."""
    from netemu.api import codec
    from netemu.api.objects import KINDS
    metadata = {k: v for k, v in (data.get("metadata") or {}).items() if k != "managedFields"}
    cls = KINDS[(data["apiVersion"], data["kind"])]
    obj, problems = codec.from_dict(cls, {**data, "metadata": metadata})
    if problems:
        raise NetemuError(f"the cluster answered a {data['kind']} netemu cannot read: {problems[0]}")
    return obj


def get(client: Any, kind_arg: str, names: list[str], *, namespace: str | None, all_namespaces: bool,
        output: str, selector: str) -> str:
    from netemu import printers
    from netemu.api.kinds import resolve_kind
    from netemu.api.objects import KIND_BY_NAME
    ns = None if all_namespaces else (namespace or "default")
    if output not in ("", "wide", "yaml", "json"):
        raise ClusterError(f"unable to match a printer suitable for the output format \"{output}\", "
                           "allowed formats are: json,wide,yaml")
    if kind_arg == "all":
        kinds = [cls.KIND for cls in printers.ALL_KINDS]
    else:
        kinds = [resolve_kind(k) for k in kind_arg.split(",")]
    namespaced = all(KIND_BY_NAME[k].NAMESPACED for k in kinds)
    if names:
        objs = [decode(client.get(f"{collection_path(kinds[0], ns or 'default')}/{n}")) for n in names]
    else:
        query = {"labelSelector": selector} if selector else None
        objs = []
        for kind in kinds:
            api_version = KIND_BY_NAME[kind].API_VERSION
            for item in client.request("GET", collection_path(kind, ns), query=query).get("items") or []:
                objs.append(decode({"apiVersion": api_version, "kind": kind, **item}))  # list items may omit them
    if output in ("yaml", "json"):
        render = printers.render_yaml if output == "yaml" else printers.render_json
        return render(objs, as_list=not (len(names) == 1 and len(objs) == 1))
    now = datetime.datetime.now(datetime.timezone.utc)
    table = printers.render_table(kind_arg, objs, wide=output == "wide", all_namespaces=all_namespaces, now=now)
    return table or printers.no_resources_message(ns or "default", all_namespaces, namespaced=namespaced)


def _singular(kind: str) -> str:
    """``pod``, ``deployment.apps``: how kubectl names a kind in its result lines."""
    r = _resource(kind)
    return f"{r.singular}.{r.group}" if r.group else r.singular


def delete(client: Any, kind_arg: str, names: list[str], namespace: str | None) -> list[str]:
    """DELETE each named object; kubectl's ``pod "x" deleted`` lines."""
    from netemu.api.kinds import resolve_kind
    kind = resolve_kind(kind_arg)
    path = collection_path(kind, namespace or "default")
    lines = []
    for name in names:
        client.delete(f"{path}/{name}")
        lines.append(f'{_singular(kind)} "{name}" deleted')
    return lines


def scale(client: Any, kind: str, name: str, replicas: int, namespace: str | None) -> str:
    """PATCH the scale subresource, as ``kubectl scale`` does."""
    client.request("PATCH", f"{collection_path(kind, namespace or 'default')}/{name}/scale",
                   {"spec": {"replicas": replicas}}, content_type="application/merge-patch+json")
    return f"{_singular(kind)}/{name} scaled"


def logs(client: Any, pod: str, *, container: str | None, namespace: str | None, follow: bool,
         out: Any) -> None:
    """``pods/log`` of the pod's container to ``out`` (a binary stream), as it arrives; with
    ``follow`` until the container ends or the pod goes."""
    query = {"container": container} if container else {}
    if follow:
        query["follow"] = "true"
    path = f"{collection_path('Pod', namespace or 'default')}/{pod}/log"
    for chunk in client.stream("GET", path, query=query):
        out.write(chunk)
        out.flush()


# ---------------------------------------------------------------------------- netemu's own operations
# The extension paths of netemu.kubeapi.operations: what no Kubernetes resource stands for.

_MIB = 1024 * 1024


def _operation(client: Any, method: str, what: str, body: Any = None) -> Any:
    from netemu.kubeapi.operations import PATH
    return client.request(method, f"{PATH}/{what}", body)


def apply_documents(client: Any, documents: list[dict[str, str]], namespace: str | None, *,
                    delete: bool = False) -> list[str]:
    """``apply -f`` / ``delete -f``: every document in one request, admitted (or deleted) all or
    nothing by the cluster; kubectl's ``kind/name created|configured|unchanged`` lines."""
    import json
    from netemu.kubeapi.operations import MAX_APPLY_BYTES
    body = {"documents": documents, "namespace": namespace, "delete": delete}
    size = len(json.dumps(body).encode())
    if size > MAX_APPLY_BYTES:
        sources = ", ".join(d["source"] for d in documents)
        raise ClusterError(f"{sources}: the apply request is {size / _MIB:.1f} MiB, more than the cluster's limit "
                           f"of {MAX_APPLY_BYTES // _MIB} MiB; apply the manifests in smaller files")
    client.timeout = max(client.timeout, 120)  # a big batch is admitted in slices
    return list(_operation(client, "POST", "apply", body)["lines"])


def describe(client: Any, kind: str, names: list[str], namespace: str | None) -> str:
    return str(_operation(client, "POST", "describe", {"kind": kind, "names": names, "namespace": namespace})["text"])


def wait_ready(client: Any, timeout: float) -> str:
    """Until every pod is ready (the cluster answers when its wait ends, or with why not)."""
    client.timeout = max(client.timeout, timeout + 30)
    return str(_operation(client, "POST", "wait", {"timeout": timeout})["status"])


def exec_plan(client: Any, pod: str, argv: list[str], *, container: str | None, namespace: str | None) -> Any:
    """How to run ``argv`` in the pod's container (``ExecPlan`` as a dict); the CLI runs it."""
    return _operation(client, "POST", "exec", {"pod": pod, "argv": argv, "container": container,
                                                "namespace": namespace})


def down(client: Any) -> None:
    _operation(client, "DELETE", "cluster")


def capture_start(client: Any, **target: Any) -> Any:
    return _operation(client, "POST", "captures", target)


def capture_status(client: Any, number: int) -> Any:
    return _operation(client, "GET", f"captures/{number}")


def capture_stop(client: Any, number: int) -> Any:
    return _operation(client, "DELETE", f"captures/{number}")
