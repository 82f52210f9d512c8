"""Errors in the API server's own shape: a ``Status`` object with reason, code, details and causes.

netemu's errors already carry Kubernetes' words (``FieldProblem`` paths and messages,
``services "x" not found``); this module only sorts them into the HTTP code and ``reason`` that
kube-apiserver gives, and builds the one-line message kubectl prints
(``The Service "x" is invalid: spec.ports[0].port: Invalid value: 0: must be between 1 and 65535,
inclusive``).
"""
from __future__ import annotations

from typing import Any

from netemu.errors import (
    AlreadyExistsError, ConflictError, FieldProblem, InvalidError, ManifestErrors, NetemuError, NotFoundError,
)

# FieldProblem message prefixes → the cause types of k8s.io/apimachinery/pkg/util/validation/field.
_CAUSE_TYPES = (
    ("Invalid value", "FieldValueInvalid"), ("Required value", "FieldValueRequired"),
    ("Unsupported value", "FieldValueNotSupported"), ("Duplicate value", "FieldValueDuplicate"),
    ("Forbidden", "FieldValueForbidden"), ("Too long", "FieldValueTooLong"), ("Too many", "FieldValueTooMany"),
    ("Not found", "FieldValueNotFound"), ("unknown field", "FieldValueUnknown"),
    ("Internal error", "InternalError"),
)


class ApiError(NetemuError):
    """An error answered with a Status (the HTTP code, reason and details of kube-apiserver)."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                               "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            out["details"] = self.details
        return out


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def method_not_allowed(message: str = "the server does not allow this method on the requested resource") -> ApiError:
    return ApiError(405, "MethodNotAllowed", message)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def _cause(problem: FieldProblem) -> dict[str, str]:
    reason = next((cause for prefix, cause in _CAUSE_TYPES if problem.message.startswith(prefix)), "FieldValueInvalid")
    return {"reason": reason, "message": problem.message, "field": problem.path}


def _names(plural: str, group: str, name: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    return details


def invalid(kind: str, name: str, plural: str, group: str, problems: list[FieldProblem]) -> ApiError:
    """422: ``The Kind "name" is invalid: path: message`` (several problems in brackets)."""
    texts = [str(p) for p in problems]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    details = _names(plural, group, name) | {"kind": kind, "causes": [_cause(p) for p in problems]}
    return ApiError(422, "Invalid", f'The {kind} "{name}" is invalid: {joined}', details)


def from_error(exc: NetemuError, *, kind: str = "", name: str = "", plural: str = "", group: str = "",
               version: str = "v1") -> ApiError:
    """The Status error for a netemu error raised while serving a request about ``kind``/``name``."""
    if isinstance(exc, ApiError):
        return exc
    details = _names(plural, group, name) if name else None
    message = str(exc)
    if isinstance(exc, ManifestErrors):
        problems = [p for e in exc.errors for p in e.problems]
        fields = [p for p in problems if p.path]
        if fields and all(p.message == "unknown field" for p in fields):  # strict decoding: 400, not 422
            unknown = ", ".join(f'unknown field "{p.path}"' for p in fields)
            api_version = f"{group}/{version}" if group else version
            return ApiError(400, "BadRequest", f'{kind} in version "{api_version}" cannot be handled as a {kind}: '
                            f"strict decoding error: {unknown}", details)
        if fields or not problems:
            return invalid(kind, name, plural, group, problems)
        return _refusal(problems[0].message, details)
    if isinstance(exc, AlreadyExistsError):
        return ApiError(409, "AlreadyExists", message, details)
    if isinstance(exc, ConflictError):
        return ApiError(409, "Conflict", message, details)
    if isinstance(exc, NotFoundError):
        return ApiError(404, "NotFound", message, details)
    if isinstance(exc, InvalidError):
        return _refusal(message, details)
    return ApiError(500, "InternalError", f"Internal error occurred: {message}", details)


def _refusal(message: str, details: dict[str, Any] | None) -> ApiError:
    """An admission refusal without a field: the code its words say (not found, forbidden …)."""
    if "is forbidden" in message or message.startswith("nodes are made by the cluster"):
        return ApiError(403, "Forbidden", message, details)  # before not found: a lookup may be why
    if message.endswith("not found"):
        return ApiError(404, "NotFound", message, details)
    if message.startswith("Internal error occurred"):
        return ApiError(500, "InternalError", message, details)
    if "Request entity too large" in message:
        return ApiError(413, "RequestEntityTooLarge", message, details)
    return ApiError(400, "BadRequest", message, details)
