"""The CNI plugin skeleton: one dispatch path shared by executables and in-process callers.

Owns the spec I/O (CNI_* environment, config on stdin, result or error JSON on stdout, exit
status), the checks every plugin shares (required variables, container ID, interface name,
network name, version compatibility, CHECK/GC/STATUS version gates) and the dispatch to a
plugin's ``add``/``check``/``delete`` functions. ``invoke`` runs the same checks and functions
without environment or stdio and raises ``CNIError``; ``run``/``plugin_main`` are the executable
form. Modelled on libcni's ``pkg/skel`` (messages and codes match it).
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Mapping, NoReturn, TextIO

from netemu.errors import CNIError

from .types import ErrorCode, NetConf, Result, parse_cni_args, parse_version

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
COMMANDS = ("ADD", "CHECK", "DEL", "GC", "STATUS", "VERSION")

# Which environment variables each command needs (libcni skel's table).
_REQUIRED_ENV: dict[str, tuple[str, ...]] = {
    "CNI_CONTAINERID": ("ADD", "CHECK", "DEL"),
    "CNI_NETNS": ("ADD", "CHECK"),
    "CNI_IFNAME": ("ADD", "CHECK", "DEL"),
    "CNI_ARGS": (),
    "CNI_PATH": ("ADD", "CHECK", "DEL", "GC"),
}
_MAX_IFNAME = 15


@dataclass(frozen=True)
class CmdArgs:
    """Everything a plugin function gets for one call."""

    container_id: str
    netns: str
    ifname: str
    args: Mapping[str, str]  # CNI_ARGS, parsed
    path: tuple[str, ...]  # CNI_PATH, split
    netconf: NetConf
    config: Mapping[str, Any] = field(default_factory=dict)  # the config JSON as given
    in_process: bool = False  # called through ``invoke`` (no executable, no CNI_PATH lookup of its own)


AddFunc = Callable[[CmdArgs], Result]
CheckFunc = Callable[[CmdArgs], None]


@dataclass(frozen=True)
class Plugin:
    """A plugin's functions and the spec versions it speaks; ``gc``/``status`` are optional
    (without them GC and STATUS succeed doing nothing, as libcni's skel does)."""

    add: AddFunc
    check: CheckFunc
    delete: CheckFunc
    versions: tuple[str, ...] = SUPPORTED_VERSIONS
    about: str = ""
    gc: CheckFunc | None = None
    status: CheckFunc | None = None


def newest_version(plugin: Plugin) -> str:
    return max(plugin.versions, key=parse_version)


def version_info(plugin: Plugin, cni_version: str = "") -> dict[str, Any]:
    """The VERSION output: the request's ``cniVersion`` (the spec: "the value of cniVersion
    specified on input"; the newest supported one when the request named none) and every
    supported version."""
    return {"cniVersion": cni_version or newest_version(plugin), "supportedVersions": list(plugin.versions)}


# ---------------------------------------------------------------- shared validation

def _is_valid_name(text: str) -> bool:
    """libcni's ``^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$`` for container IDs and network names."""
    if not text or not (text[0].isascii() and text[0].isalnum()):
        return False
    return all(c.isascii() and (c.isalnum() or c in "_.-") for c in text)


def validate_container_id(container_id: str) -> None:
    if not container_id:
        raise CNIError(ErrorCode.UNKNOWN_CONTAINER, "missing containerID")
    if not _is_valid_name(container_id):
        raise CNIError(ErrorCode.INVALID_ENVIRONMENT, "invalid characters in containerID", container_id)


def validate_ifname(ifname: str) -> None:
    if not ifname:
        raise CNIError(ErrorCode.INVALID_ENVIRONMENT, "interface name is empty")
    if len(ifname.encode()) > _MAX_IFNAME:
        raise CNIError(ErrorCode.INVALID_ENVIRONMENT, "interface name is too long",
                       f"interface name should be less than {_MAX_IFNAME + 1} characters")
    if ifname in (".", ".."):
        raise CNIError(ErrorCode.INVALID_ENVIRONMENT, "interface name is . or ..")
    if any(c in "/:" or c.isspace() for c in ifname):
        raise CNIError(ErrorCode.INVALID_ENVIRONMENT, "interface name contains / or : or whitespace characters")


def validate_network_name(config: Mapping[str, Any]) -> None:
    name = config.get("name")
    if name is not None and not isinstance(name, str):
        raise CNIError(ErrorCode.DECODING_FAILURE,
                       f"error unmarshall network config: name: expected string, got {type(name).__name__}")
    if not name:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "missing network name")
    if not _is_valid_name(name):
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "invalid characters found in network name", name)


def _check_version(plugin: Plugin, command: str, config_version: str) -> None:
    gates = {"CHECK": (0, 4, 0), "GC": (1, 1, 0), "STATUS": (1, 1, 0)}
    if command in gates and parse_version(config_version) < gates[command]:
        raise CNIError(ErrorCode.INCOMPATIBLE_VERSION, f"config version does not allow {command}")
    if config_version not in plugin.versions:
        supported = " ".join(f'"{v}"' for v in plugin.versions)
        raise CNIError(ErrorCode.INCOMPATIBLE_VERSION, "incompatible CNI versions",
                       f'config is "{config_version}", plugin supports [{supported}]')


# ---------------------------------------------------------------- dispatch

def _dispatch(plugin: Plugin, command: str, config: Mapping[str, Any], container_id: str, netns: str,
              ifname: str, args: Mapping[str, str], path: tuple[str, ...], *, in_process: bool) -> Result | None:
    if command not in COMMANDS or command == "VERSION":
        raise CNIError(ErrorCode.INVALID_ENVIRONMENT, f"unknown CNI_COMMAND: {command}")
    validate_network_name(config)
    if command in ("ADD", "CHECK", "DEL"):
        validate_container_id(container_id)
        validate_ifname(ifname)
    netconf = NetConf.from_json(dict(config))
    _check_version(plugin, command, netconf.cni_version)
    cmd_args = CmdArgs(container_id, netns, ifname, dict(args), path, netconf, config, in_process)
    handler = {"ADD": plugin.add, "CHECK": plugin.check, "DEL": plugin.delete,
               "GC": plugin.gc, "STATUS": plugin.status}[command]
    if handler is None:
        return None
    try:
        result = handler(cmd_args)
    except CNIError:
        raise
    except Exception as exc:  # a plugin bug or a foreign error: libcni reports it as "internal"
        raise CNIError(ErrorCode.INTERNAL, str(exc) or type(exc).__name__) from exc
    if command != "ADD":
        return None
    if result is None:
        raise CNIError(ErrorCode.INTERNAL, "plugin returned no result for ADD")
    return Result(netconf.cni_version, result.interfaces, result.ips, result.routes, result.dns)


def invoke(plugin: Plugin, command: str, config: Mapping[str, Any], container_id: str = "",
           netns: str = "", ifname: str = "", args: Mapping[str, str] | None = None,
           path: tuple[str, ...] = ()) -> Result | None:
    """Runs ``command`` (ADD, CHECK, DEL, GC, STATUS) in-process with the same checks and
    functions as the executable, except that ``netns`` and ``path`` may be empty (they are
    required only as environment variables; the loopback backend has no namespace). Returns the
    ADD result (in the config's cniVersion), None otherwise; raises ``CNIError`` with the spec
    code on failure. Blocking: it takes the network's file lock."""
    return _dispatch(plugin, command.upper(), config, container_id, netns, ifname, args or {}, tuple(path),
                     in_process=True)


def _error_json(error: CNIError, cni_version: str) -> dict[str, Any]:
    return {"cniVersion": cni_version, "code": int(error.code), "msg": error.msg, "details": error.details}


def _request_version(config: Any) -> str:
    """The ``cniVersion`` the request named, when it named a well-formed one ("" otherwise):
    every answer, error or VERSION, speaks the request's version."""
    version = config.get("cniVersion") if isinstance(config, dict) else None
    if not isinstance(version, str):
        return ""
    try:
        parse_version(version)
    except CNIError:
        return ""
    return version


def _is_terminal(stream: BinaryIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (OSError, ValueError):
        return False


def _read_stdin(stdin: BinaryIO | None) -> bytes:
    """All of stdin; a closed or unreadable one is an I/O failure (code 5), worded as libcni's."""
    if stdin is None:  # the process was started with descriptor 0 closed
        raise CNIError(ErrorCode.IO_FAILURE, "error reading from stdin: read /dev/stdin: bad file descriptor")
    try:
        return stdin.read()
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CNIError(ErrorCode.IO_FAILURE, f"error reading from stdin: read /dev/stdin: {reason.lower()}") from exc


def _decode_config(data: bytes) -> dict[str, Any]:
    try:
        config = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CNIError(ErrorCode.DECODING_FAILURE, f"error unmarshall network config: {exc}") from exc
    if not isinstance(config, dict):
        raise CNIError(ErrorCode.DECODING_FAILURE,
                       f"error unmarshall network config: expected an object, got {type(config).__name__}")
    return config


def _missing_env(environ: Mapping[str, str], command: str) -> list[str]:
    missing = [] if command else ["CNI_COMMAND"]
    return missing + [name for name, commands in _REQUIRED_ENV.items() if command in commands and not environ.get(name)]


def run(plugin: Plugin, environ: Mapping[str, str], stdin: BinaryIO | None, stdout: TextIO, stderr: TextIO) -> int:
    """The executable: reads the environment and stdin, writes the result or the error JSON to
    stdout, returns the exit status (0 success, 1 error).

    Started with no CNI variable at all (a person typing its name), it prints what it is to
    stderr and exits 0, as libcni's skel does. A runtime's call without CNI_COMMAND (other CNI_*
    variables set) is an error (code 4): exiting 0 with no result would pass for success.
    Answers carry the request's ``cniVersion``."""
    command = environ.get("CNI_COMMAND", "")
    if not command and plugin.about and not any(name.startswith("CNI_") for name in environ):
        print(plugin.about, file=stderr)
        print(f"CNI protocol versions supported: {', '.join(plugin.versions)}", file=stderr)
        return 0
    config: Any = None
    try:
        missing = _missing_env(environ, command)
        read_error: CNIError | None = None
        data = b""
        if not ((command == "VERSION" or missing) and _is_terminal(stdin)):  # never wait on a person
            try:
                data = _read_stdin(stdin)
            except CNIError as error:
                read_error = error
        decode_error: CNIError | None = None
        try:
            config = _decode_config(data) if data.strip() or command != "VERSION" else {}
        except CNIError as error:
            decode_error = error
        if missing:
            raise CNIError(ErrorCode.INVALID_ENVIRONMENT, f"required env variables [{','.join(missing)}] missing")
        if read_error is not None:
            raise read_error
        if command == "VERSION":
            print(json.dumps(version_info(plugin, _request_version(config))), file=stdout)
            return 0
        if decode_error is not None:
            raise decode_error
        path = tuple(p for p in environ.get("CNI_PATH", "").split(os.pathsep) if p)
        result = _dispatch(plugin, command, config, environ.get("CNI_CONTAINERID", ""),
                           environ.get("CNI_NETNS", ""), environ.get("CNI_IFNAME", ""),
                           parse_cni_args(environ.get("CNI_ARGS", "")), path, in_process=False)
        if result is not None:
            print(json.dumps(result.to_json(), indent=4), file=stdout)
        return 0
    except CNIError as error:
        version = _request_version(config) or newest_version(plugin)
        print(json.dumps(_error_json(error, version), indent=4), file=stdout)
        return 1
    except Exception as exc:  # never a traceback instead of the spec's error JSON
        error = CNIError(ErrorCode.INTERNAL, str(exc) or type(exc).__name__)
        version = _request_version(config) or newest_version(plugin)
        print(json.dumps(_error_json(error, version), indent=4), file=stdout)
        return 1


def plugin_main(add: AddFunc, check: CheckFunc, delete: CheckFunc, versions: tuple[str, ...] = SUPPORTED_VERSIONS,
                about: str = "", *, gc: CheckFunc | None = None, status: CheckFunc | None = None) -> NoReturn:
    """The whole ``main`` of a plugin executable."""
    plugin = Plugin(add, check, delete, tuple(versions), about, gc, status)
    stdin = sys.stdin.buffer if sys.stdin is not None else None  # None: started with descriptor 0 closed
    sys.exit(run(plugin, os.environ, stdin, sys.stdout, sys.stderr))
