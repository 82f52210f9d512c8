"""The one error hierarchy of netemu.

Every error a user can cause is a NetemuError; the CLI prints its message on one line and exits
non-zero. Foreign exceptions (OSError, yaml errors, netlink errors) are translated at module
boundaries with ``raise ... from exc``.
"""
from __future__ import annotations

from typing import NamedTuple

# Named tuples rather than dataclasses: every netemu process imports this module, the fork server
# among them (netemu.forkserverd), and dataclasses brings in inspect and ast.


class NetemuError(Exception):
    """Root of every error netemu raises on purpose."""


class FieldProblem(NamedTuple):
    """One problem with one field, in Kubernetes' words (``spec.ports[1].name: Required value``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ObjectRef(NamedTuple):
    """Where an object came from: file, document index (1-based), kind, namespace/name."""

    source: str = ""
    doc: int = 0
    kind: str = ""
    namespace: str = ""
    name: str = ""

    def __str__(self) -> str:
        where = self.source or "<input>"
        if self.doc:
            where += f"[doc {self.doc}]"
        what = self.kind or "object"
        ident = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{where} {what} {ident}".rstrip() if ident else f"{where} {what}"


class ManifestError(NetemuError):
    """A manifest is malformed or invalid; lists every problem found, with field paths."""

    def __init__(self, ref: ObjectRef, problems: list[FieldProblem] | list[str]):
        self.ref = ref
        self.problems = [p if isinstance(p, FieldProblem) else FieldProblem("", p) for p in problems]
        lines = [f"{ref}: {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class ManifestErrors(NetemuError):
    """Several manifests had problems; nothing was applied."""

    def __init__(self, errors: list[ManifestError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class ConflictError(NetemuError):
    """The object or resource (port, address, name) is already taken."""


class NotFoundError(NetemuError):
    """The named object does not exist."""


class AlreadyExistsError(ConflictError):
    """An object of that kind, namespace and name exists already."""


class InvalidError(NetemuError):
    """A request is invalid for the current state (Kubernetes' 422 family outside decoding)."""


class BackendError(NetemuError):
    """The network backend (fabric) failed to create or remove something."""


class FabricError(BackendError):
    pass


class CNIError(NetemuError):
    """A CNI plugin failed; carries the spec error code (1-11, 100+)."""

    def __init__(self, code: int, msg: str, details: str = ""):
        self.code = code
        self.msg = msg
        self.details = details
        super().__init__(f"CNI error {code}: {msg}" + (f" ({details})" if details else ""))


class ClusterError(NetemuError):
    """The cluster cannot start, is not running, or refused a request."""


class BackendUnavailableError(ClusterError):
    """The chosen network backend cannot run here (missing privilege, kernel feature or isolation)."""


class UnsafeStateError(ClusterError):
    """A state directory, state file or control socket is not safely ours (another owner, a
    symbolic link, writable by others); nothing in it is used."""


class RangeConflictError(ClusterError):
    """Another running cluster already uses an address range this one asks for."""


class WaitTimeoutError(NetemuError):
    """A wait for a condition ran out of time."""


class PodsStuckError(WaitTimeoutError):
    """A wait for pods to be ready ended early: some failed in a way a restart repeats."""


class ProxyError(NetemuError):
    pass


class DNSError(NetemuError):
    pass


class ScenarioError(NetemuError):
    """A scenario file is invalid (names file, step and field)."""


class AssertionFailed(NetemuError):
    """A scenario expectation did not hold."""


__all__ = [name for name in dir() if name.endswith(("Error", "Errors", "Problem", "Failed")) or name == "ObjectRef"]
