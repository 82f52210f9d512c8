"""Command-line flags parsed the way the emulated Go programs parse them.

Owns two parsers: ``parse_pflag`` (spf13/pflag, used by cobra programs such as agnhost:
``--name=value``, ``--name value``, bare ``--bool``) and ``parse_goflag`` (Go's standard ``flag``
package, used by http-echo and the old serve_hostname: ``-name=value``, ``--name value``, stops at
the first non-flag). Both take a mapping of flag name to default value; the default's type (bool,
int, str) is the flag's type. Errors are ``InvalidError`` carrying the real program's wording.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from netemu.errors import InvalidError

FlagValue = bool | int | str

_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
_GO_OCTAL = re.compile(r"[+-]?0[0-7_]+")


def go_parse_int(text: str) -> int:
    """strconv.ParseInt(text, 0, 64): decimal, 0x/0o/0b prefixes, leading-zero octal."""
    try:
        return int(text, 0)
    except ValueError:
        if _GO_OCTAL.fullmatch(text):
            return int(text.replace("_", ""), 8)
        raise


def go_parse_bool(text: str) -> bool:
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise ValueError(text)


def _convert(default: FlagValue, text: str) -> FlagValue:
    if isinstance(default, bool):
        return go_parse_bool(text)
    if isinstance(default, int):
        return go_parse_int(text)
    return text


def parse_pflag(args: Sequence[str], defaults: Mapping[str, FlagValue],
                ignored: Mapping[str, bool] | None = None,
                ) -> tuple[dict[str, FlagValue], list[str]]:
    """Parse like spf13/pflag. ``ignored`` maps flags that are accepted and dropped (a root
    command's persistent flags) to whether they take a value."""
    values: dict[str, FlagValue] = dict(defaults)
    ignored = ignored or {}
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            positional.extend(args[i:])
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        if not arg.startswith("--"):
            raise InvalidError(f"unknown shorthand flag: {arg[1:2]!r} in {arg}")
        name, has_value, text = arg[2:].partition("=")
        if name in ignored:
            if ignored[name] and not has_value:
                if i >= len(args):
                    raise InvalidError(f"flag needs an argument: --{name}")
                i += 1
            continue
        if name not in values:
            raise InvalidError(f"unknown flag: --{name}")
        default = defaults[name]
        if not has_value:
            if isinstance(default, bool):
                values[name] = True
                continue
            if i >= len(args):
                raise InvalidError(f"flag needs an argument: --{name}")
            text = args[i]
            i += 1
        try:
            values[name] = _convert(default, text)
        except ValueError:
            kind = "strconv.ParseBool" if isinstance(default, bool) else "strconv.ParseInt"
            raise InvalidError(f'invalid argument "{text}" for "--{name}" flag: {kind}: '
                               f'parsing "{text}": invalid syntax') from None
    return values, positional


def parse_goflag(args: Sequence[str],
                 defaults: Mapping[str, FlagValue]) -> tuple[dict[str, FlagValue], list[str]]:
    """Parse like Go's standard flag package (stops at the first non-flag argument)."""
    values: dict[str, FlagValue] = dict(defaults)
    i = 0
    while i < len(args):
        arg = args[i]
        if len(arg) < 2 or not arg.startswith("-"):
            break
        i += 1
        if arg == "--":
            break
        body = arg[2:] if arg.startswith("--") else arg[1:]
        name, has_value, text = body.partition("=")
        if not name or name.startswith("-") or name.startswith("="):
            raise InvalidError(f"bad flag syntax: {arg}")
        if name not in values:
            raise InvalidError(f"flag provided but not defined: -{name}")
        default = defaults[name]
        if isinstance(default, bool) and not has_value:
            values[name] = True
            continue
        if not has_value:
            if i >= len(args):
                raise InvalidError(f"flag needs an argument: -{name}")
            text = args[i]
            i += 1
        try:
            values[name] = _convert(default, text)
        except ValueError:
            raise InvalidError(f'invalid value "{text}" for flag -{name}: parse error') from None
    return values, list(args[i:])


__all__ = ["FlagValue", "go_parse_bool", "go_parse_int", "parse_goflag", "parse_pflag"]
