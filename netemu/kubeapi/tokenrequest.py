"""The ``serviceaccounts/token`` subresource: ``POST .../serviceaccounts/NAME/token`` with an
``authentication.k8s.io/v1`` TokenRequest answers it with a token (``kubectl create token``).

As kube-apiserver: ``spec.expirationSeconds`` defaults to 3600 and must be at least 600 and at
most 2^32; ``spec.audiences`` defaults to the API server's; ``spec.boundObjectRef`` may bind the
token to a Pod (it stops authenticating once that pod is gone). Secrets and Nodes as bound
objects are refused: netemu does not bind tokens to them.
"""
from __future__ import annotations

import datetime
import math
from typing import Any

from netemu.errors import FieldProblem

from .status import ApiError, bad_request, invalid
from .tokens import DEFAULT_EXPIRATION, MIN_EXPIRATION, TokenIssuer

GROUP, VERSION, KIND = "authentication.k8s.io", "v1", "TokenRequest"
API_VERSION = f"{GROUP}/{VERSION}"


def _timestamp(unix: int) -> str:
    return datetime.datetime.fromtimestamp(unix, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _not_found(resource: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{resource} "{name}" not found', {"name": name, "kind": resource})


def _spec(body: Any, name: str) -> dict[str, Any]:
    if not isinstance(body, dict) or body.get("kind", KIND) != KIND:
        raise bad_request(f"the body of the request was in an unknown format: expected a {API_VERSION} {KIND}")
    spec = body.get("spec") or {}
    if not isinstance(spec, dict):
        raise bad_request(f'{KIND} in version "{VERSION}" cannot be handled as a {KIND}: spec must be an object')
    seconds = spec.get("expirationSeconds")
    seconds = DEFAULT_EXPIRATION if seconds in (None, 0) else seconds
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        raise bad_request(f'{KIND} in version "{VERSION}" cannot be handled as a {KIND}: json: cannot unmarshal '
                          f"{type(seconds).__name__} into Go struct field TokenRequestSpec.spec.expirationSeconds "
                          "of type int64")
    problems = []
    if seconds < MIN_EXPIRATION:
        problems.append(FieldProblem("spec.expirationSeconds",
                                     f"Invalid value: {seconds}: may not specify a duration less than 10 minutes"))
    if seconds > math.pow(2, 32) - 1:
        problems.append(FieldProblem("spec.expirationSeconds",
                                     f"Too long: may not be longer than {2 ** 32 - 1}"))
    if problems:
        raise invalid(f"{KIND}.{GROUP}", name, "token", GROUP, problems)
    audiences = spec.get("audiences") or []
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise bad_request(f'{KIND} in version "{VERSION}" cannot be handled as a {KIND}: spec.audiences must be '
                          "a list of strings")
    return {"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": spec.get("boundObjectRef")}


def create_token(store: Any, issuer: TokenIssuer, namespace: str, name: str, body: Any) -> dict[str, Any]:
    """Answer one TokenRequest for the service account ``namespace/name``."""
    spec = _spec(body, name)
    sa = store.get("ServiceAccount", namespace, name)
    if sa is None:
        raise _not_found("serviceaccounts", name)
    pod = None
    ref = spec["boundObjectRef"]
    if ref:
        kind, ref_name, uid = ref.get("kind", ""), ref.get("name", ""), ref.get("uid", "")
        if kind != "Pod":
            raise bad_request(f"cannot bind token to object of type {kind or '<empty>'}: netemu binds tokens to "
                              "pods only")
        pod = store.get("Pod", namespace, ref_name)
        if pod is None:
            raise _not_found("pods", ref_name)
        if uid and uid != pod.metadata.uid:
            raise ApiError(409, "Conflict", f'the UID in the bound object reference ({uid}) does not match the UID '
                                            f"in record. The object might have been deleted and then recreated")
        spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1", "name": pod.metadata.name,
                                  "uid": pod.metadata.uid}
    issued = issuer.issue(namespace, sa, audiences=spec["audiences"], expiration_seconds=spec["expirationSeconds"],
                          pod=pod)
    out_spec = {"audiences": list(issued.audiences), "expirationSeconds": issued.expiration_seconds,
                "boundObjectRef": spec["boundObjectRef"]}
    return {"kind": KIND, "apiVersion": API_VERSION,
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
            "spec": out_spec,
            "status": {"token": issued.token, "expirationTimestamp": _timestamp(issued.expiration)}}


__all__ = ["create_token"]
