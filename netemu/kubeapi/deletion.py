"""DeleteOptions as kube-apiserver reads them, and the preconditions they carry.

A DELETE (one object or a collection) says how to delete in a ``DeleteOptions`` body
(``meta.k8s.io/v1``, what kubectl and the client libraries send) or, without a body, in query
parameters: ``gracePeriodSeconds`` (a pod's grace; 0 removes it at once), ``propagationPolicy``
(``Background``, ``Foreground`` or ``Orphan``; the deprecated ``orphanDependents`` maps onto it),
``preconditions`` (``uid`` and ``resourceVersion`` the live object must still have, else 409) and
``dryRun``. Validation and messages follow apimachinery's ``ValidateDeleteOptions`` and
``rest.BeforeDelete``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .resources import Resource
from .status import ApiError, bad_request

POLICIES = ("Foreground", "Background", "Orphan")
_OPTION_VERSIONS = (None, "v1", "meta.k8s.io/v1")


@dataclass
class DeleteOptions:
    grace_period_seconds: int | None = None
    propagation_policy: str | None = None
    orphan_dependents: bool | None = None
    uid: str | None = None               # preconditions
    resource_version: str | None = None
    dry_run: bool = False

    @property
    def propagation(self) -> str | None:
        """The policy asked for, the deprecated ``orphanDependents`` included (None: the default)."""
        if self.propagation_policy is not None:
            return self.propagation_policy
        if self.orphan_dependents is not None:
            return "Orphan" if self.orphan_dependents else "Background"
        return None

    @property
    def grace(self) -> int | None:
        """The grace period to use: a negative one counts as 1 second, as in kube-apiserver."""
        if self.grace_period_seconds is None:
            return None
        return max(self.grace_period_seconds, 1) if self.grace_period_seconds < 0 else self.grace_period_seconds

    def check_preconditions(self, r: Resource, obj: Any) -> None:
        """409 Conflict when the live ``obj`` is not the one the preconditions name."""
        meta = obj.metadata
        what = f"{r.kind}.{r.group}" if r.group else r.kind
        if self.uid is not None and self.uid != meta.uid:
            raise _conflict(r, what, meta.name, f"the UID in the precondition ({self.uid}) does not match the UID in "
                                                f"record ({meta.uid}). The object might have been deleted and then "
                                                "recreated")
        if self.resource_version is not None and self.resource_version != meta.resource_version:
            raise _conflict(r, what, meta.name, f"the ResourceVersion in the precondition ({self.resource_version}) "
                                                f"does not match the ResourceVersion in record "
                                                f"({meta.resource_version}). The object might have been modified")


def _conflict(r: Resource, what: str, name: str, reason: str) -> ApiError:
    details: dict[str, Any] = {"name": name, "kind": r.kind, **({"group": r.group} if r.group else {})}
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {what} "{name}": {reason}', details)


def parse(params: Mapping[str, str], body: Any, *, dry_run: bool = False) -> DeleteOptions:
    """The options of a DELETE: from its body when it has one, else from the query ``params``
    (``dry_run``: the query already asked for a dry run)."""
    options = _from_body(body) if body is not None else _from_query(params)
    options.dry_run = options.dry_run or dry_run
    _validate(options)
    return options


def _from_query(params: Mapping[str, str]) -> DeleteOptions:
    options = DeleteOptions(propagation_policy=params.get("propagationPolicy") or None)
    grace = params.get("gracePeriodSeconds")
    if grace not in (None, ""):
        try:
            options.grace_period_seconds = int(grace)
        except ValueError:
            raise bad_request(f"invalid value for gracePeriodSeconds: {grace!r}") from None
    orphan = params.get("orphanDependents")
    if orphan not in (None, ""):
        if orphan not in ("true", "false"):
            raise bad_request(f"invalid value for orphanDependents: {orphan!r}")
        options.orphan_dependents = orphan == "true"
    return options


def _typed(body: Mapping[str, Any], field: str, kind: type, go_type: str) -> Any:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        found = type(value).__name__.replace("str", "string").replace("dict", "object").replace("list", "array")
        raise bad_request(f"json: cannot unmarshal {found} into Go struct field DeleteOptions.{field} of type {go_type}")
    return value


def _from_body(body: Any) -> DeleteOptions:
    if not isinstance(body, dict):
        raise bad_request("the body of the request was in an unknown format: expected a DeleteOptions object")
    if body.get("kind") not in (None, "DeleteOptions") or body.get("apiVersion") not in _OPTION_VERSIONS:
        raise bad_request(f'{body.get("kind")} in version "{body.get("apiVersion")}" cannot be handled as a '
                          "DeleteOptions")
    preconditions = _typed(body, "preconditions", dict, "v1.Preconditions") or {}
    uid, rv = preconditions.get("uid"), preconditions.get("resourceVersion")
    if not isinstance(uid, (str, type(None))) or not isinstance(rv, (str, type(None))):
        raise bad_request("json: cannot unmarshal into Go struct field DeleteOptions.preconditions of type string")
    dry_run = _typed(body, "dryRun", list, "[]string") or []
    return DeleteOptions(grace_period_seconds=_typed(body, "gracePeriodSeconds", int, "int64"),
                         propagation_policy=_typed(body, "propagationPolicy", str, "v1.DeletionPropagation"),
                         orphan_dependents=_typed(body, "orphanDependents", bool, "bool"),
                         uid=uid, resource_version=rv, dry_run="All" in dry_run)


def _validate(options: DeleteOptions) -> None:
    """apimachinery's ValidateDeleteOptions: 422 on the DeleteOptions."""
    problems = []
    policy = options.propagation_policy
    if options.orphan_dependents is not None and policy is not None:
        problems.append(("propagationPolicy", f'Invalid value: "{policy}": orphanDependents and '
                                              "deletionPropagation cannot be both set", "FieldValueInvalid"))
    if policy is not None and policy not in POLICIES:
        supported = ", ".join(f'"{p}"' for p in (*POLICIES, "nil"))
        problems.append(("propagationPolicy", f'Unsupported value: "{policy}": supported values: {supported}',
                         "FieldValueNotSupported"))
    if problems:
        texts = [f"{field}: {message}" for field, message, _ in problems]
        joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
        raise ApiError(422, "Invalid", f'DeleteOptions.meta.k8s.io "" is invalid: {joined}',
                       {"group": "meta.k8s.io", "kind": "DeleteOptions",
                        "causes": [{"reason": reason, "message": message, "field": field}
                                   for field, message, reason in problems]})
