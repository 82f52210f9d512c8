"""Kubernetes' name and label syntax, and label-selector matching.

The ``is_*`` checks mirror apimachinery's ``pkg/util/validation`` (and ``api/validate/content``):
each returns the list of Kubernetes' own messages (empty when the value is valid), so
``validation.py`` can wrap them into field problems with the exact wording kubectl shows.

Selector matching follows ``metav1.LabelSelectorAsSelector``: a missing selector matches
nothing, an empty one matches everything; ``In``/``NotIn``/``Exists``/``DoesNotExist`` as in
``labels.Requirement.Matches``. Service selectors (a plain map) follow the EndpointSlice
controller: a service without a selector (or with an empty one) selects no pods.
"""
from __future__ import annotations

import re
from typing import Mapping

from .objects import LabelSelector, LabelSelectorRequirement

# --------------------------------------------------------------------------- message helpers


def max_len_error(length: int) -> str:
    return f"must be no more than {length} characters"


def regex_error(msg: str, fmt: str, *examples: str) -> str:
    """apimachinery's RegexError, including its double space before ``or``."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    msg += " (e.g. "
    for i, example in enumerate(examples):
        if i > 0:
            msg += " or "
        msg += f"'{example}', "
    return msg + f"regex used for validation is '{fmt}')"


def inclusive_range_error(lo: int, hi: int) -> str:
    return f"must be between {lo} and {hi}, inclusive"


EMPTY_ERROR = "must be non-empty"

# --------------------------------------------------------------------------- DNS names

_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
                      "or '-', and must start and end with an alphanumeric character")
_DNS1123_SUBDOMAIN_FMT = _DNS1123_LABEL_FMT + "(\\." + _DNS1123_LABEL_FMT + ")*"
_DNS1123_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                          "characters, '-' or '.', and must start and end with an alphanumeric character")
_DNS1123_LABEL_US_FMT = "_?[a-z0-9]([-_a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_US_FMT = _DNS1123_LABEL_US_FMT + "(\\." + _DNS1123_LABEL_US_FMT + ")*"
_DNS1123_SUBDOMAIN_US_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                             "characters, '_', '-' or '.', and must start and end with an alphanumeric "
                             "character")
_DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_DNS1035_LABEL_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
                      "start with an alphabetic character, and end with an alphanumeric character")

_dns1123_label = re.compile(f"^{_DNS1123_LABEL_FMT}$")
_dns1123_subdomain = re.compile(f"^{_DNS1123_SUBDOMAIN_FMT}$")
_dns1123_subdomain_us = re.compile(f"^{_DNS1123_SUBDOMAIN_US_FMT}$")
_dns1035_label = re.compile(f"^{_DNS1035_LABEL_FMT}$")

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253


def is_dns1123_label(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_LABEL_MAX:
        errs.append(max_len_error(DNS1123_LABEL_MAX))
    if not _dns1123_label.fullmatch(value):
        if _dns1123_subdomain.fullmatch(value):
            errs.append("must not contain dots")
        else:
            errs.append(regex_error(_DNS1123_LABEL_MSG, _DNS1123_LABEL_FMT, "my-name", "123-abc"))
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(max_len_error(DNS1123_SUBDOMAIN_MAX))
    if not _dns1123_subdomain.fullmatch(value):
        errs.append(regex_error(_DNS1123_SUBDOMAIN_MSG, _DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def is_dns1123_subdomain_with_underscore(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(max_len_error(DNS1123_SUBDOMAIN_MAX))
    if not _dns1123_subdomain_us.fullmatch(value):
        errs.append(regex_error(_DNS1123_SUBDOMAIN_US_MSG, _DNS1123_SUBDOMAIN_US_FMT, "example.com"))
    return errs


def is_dns1035_label(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_LABEL_MAX:
        errs.append(max_len_error(DNS1123_LABEL_MAX))
    if not _dns1035_label.fullmatch(value):
        errs.append(regex_error(_DNS1035_LABEL_MSG, _DNS1035_LABEL_FMT, "my-name", "abc-123"))
    return errs


def _mask_trailing_dash(name: str) -> str:
    """A generateName prefix may end in '-': validate it as if it ended in a letter."""
    return name[:-2] + "a" if len(name) > 1 and name.endswith("-") else name


def name_is_dns_subdomain(name: str, prefix: bool = False) -> list[str]:
    return is_dns1123_subdomain(_mask_trailing_dash(name) if prefix else name)


def name_is_dns_label(name: str, prefix: bool = False) -> list[str]:
    return is_dns1123_label(_mask_trailing_dash(name) if prefix else name)


def name_is_dns1035_label(name: str, prefix: bool = False) -> list[str]:
    return is_dns1035_label(_mask_trailing_dash(name) if prefix else name)


# --------------------------------------------------------------------------- label keys and values

_LABEL_KEY_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_KEY_MSG = ("must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                  "with an alphanumeric character")
_LABEL_VALUE_FMT = f"({_LABEL_KEY_FMT})?"
_LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, "
                    "'-', '_' or '.', and must start and end with an alphanumeric character")
_label_key = re.compile(f"^{_LABEL_KEY_FMT}$")
_label_value = re.compile(f"^{_LABEL_VALUE_FMT}$")
LABEL_MAX = 63


def is_qualified_name(value: str) -> list[str]:
    """A label key / qualified name: ``[prefix/]name``, prefix a DNS subdomain, name ≤ 63."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part " + EMPTY_ERROR)
        else:
            errs.extend("prefix part " + m for m in is_dns1123_subdomain(prefix))
    else:
        return ["a valid label key " + regex_error(_LABEL_KEY_MSG, _LABEL_KEY_FMT, "MyName", "my.name", "123-abc")
                + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    if not name:
        errs.append("name part " + EMPTY_ERROR)
    elif len(name) > LABEL_MAX:
        errs.append("name part " + max_len_error(LABEL_MAX))
    if not _label_key.fullmatch(name):
        errs.append("name part " + regex_error(_LABEL_KEY_MSG, _LABEL_KEY_FMT, "MyName", "my.name", "123-abc"))
    return errs


def is_label_value(value: str) -> list[str]:
    errs = []
    if len(value) > LABEL_MAX:
        errs.append(max_len_error(LABEL_MAX))
    if not _label_value.fullmatch(value):
        errs.append(regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errs


# --------------------------------------------------------------------------- ports, env, misc

_port_name_charset = re.compile("^[-a-z0-9]+$")
_one_letter = re.compile("[a-z]")


def is_valid_port_num(port: int) -> list[str]:
    return [] if 1 <= port <= 65535 else [inclusive_range_error(1, 65535)]


def is_valid_port_name(port: str) -> list[str]:
    """IANA_SVC_NAME: ≤ 15 chars of [-a-z0-9], at least one letter, no leading/trailing/double '-'."""
    errs = []
    if len(port) > 15:
        errs.append(max_len_error(15))
    if not _port_name_charset.fullmatch(port):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not _one_letter.search(port):
        errs.append("must contain at least one letter (a-z)")
    if "--" in port:
        errs.append("must not contain consecutive hyphens")
    if port and (port[0] == "-" or port[-1] == "-"):
        errs.append("must not begin or end with a hyphen")
    return errs


_CONFIG_MAP_KEY_FMT = "[-._a-zA-Z0-9]+"
_config_map_key = re.compile(_CONFIG_MAP_KEY_FMT)
_ENV_VAR_NAME_FMT = "[-._a-zA-Z][-._a-zA-Z0-9]*"
_env_var_name = re.compile(_ENV_VAR_NAME_FMT)


def _has_chdir_prefix(value: str) -> list[str]:
    if value == ".":
        return ["must not be '.'"]
    if value == "..":
        return ["must not be '..'"]
    if value.startswith(".."):
        return ["must not start with '..'"]
    return []


def is_config_map_key(value: str) -> list[str]:
    """IsConfigMapKey: the keys of a ConfigMap's or Secret's data (they become file names)."""
    errs = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(max_len_error(DNS1123_SUBDOMAIN_MAX))
    if not _config_map_key.fullmatch(value):
        errs.append(regex_error("a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                                _CONFIG_MAP_KEY_FMT, "key.name", "KEY_NAME", "key-name"))
    return errs + _has_chdir_prefix(value)


def is_env_var_name(value: str) -> list[str]:
    """IsEnvVarName, the strict environment variable name (what the kubelet's envFrom keeps)."""
    errs = []
    if not _env_var_name.fullmatch(value):
        errs.append(regex_error("a valid environment variable name must consist of alphabetic characters, "
                                "digits, '_', '-', or '.', and must not start with a digit",
                                _ENV_VAR_NAME_FMT, "my.env-name", "MY_ENV.NAME", "MyEnvName1"))
    return errs + _has_chdir_prefix(value)


def is_relaxed_env_var_name(value: str) -> list[str]:
    """RelaxedEnvironmentVariableValidation (on by default since 1.32): printable ASCII but '='."""
    errs = []
    if not value:
        errs.append("environment variable name " + EMPTY_ERROR)
    if any(ord(c) > 127 or not c.isprintable() or c == "=" for c in value):
        errs.append("a valid environment variable name must consist only of printable ASCII "
                    "characters other than '='")
    return errs


_PERCENT_FMT = "[0-9]+%"
_percent = re.compile(f"^{_PERCENT_FMT}$")


def is_valid_percent(value: str) -> list[str]:
    if _percent.fullmatch(value):
        return []
    return [regex_error("a valid percent string must be a numeric string followed by an ending '%'",
                        _PERCENT_FMT, "1%", "93%")]


_HTTP_HEADER_FMT = "[-A-Za-z0-9]+"
_http_header = re.compile(f"^{_HTTP_HEADER_FMT}$")


def is_http_header_name(value: str) -> list[str]:
    if _http_header.fullmatch(value):
        return []
    return [regex_error("a valid HTTP header must consist of alphanumeric characters or '-'",
                        _HTTP_HEADER_FMT, "X-Header-Name")]


# --------------------------------------------------------------------------- selectors

SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def selector_matches(selector: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """True when ``labels`` satisfy ``selector`` (nil matches nothing, empty matches everything).

    A selector with an unknown operator matches nothing (Kubernetes refuses to build it).
    """
    if selector is None:
        return False
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    for req in selector.match_expressions:
        present = req.key in labels
        if req.operator == "In":
            if not present or labels[req.key] not in req.values:
                return False
        elif req.operator == "NotIn":
            if present and labels[req.key] in req.values:
                return False
        elif req.operator == "Exists":
            if not present:
                return False
        elif req.operator == "DoesNotExist":
            if present:
                return False
        else:
            return False
    return True


def service_selector_matches(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    """Whether a Service's ``spec.selector`` picks a pod with ``labels``.

    A service without a selector, or with an empty one, selects nothing: its endpoints are managed
    by hand (the API server drops an empty map, so both look the same to the controller).
    """
    if not selector:
        return False
    return all(labels.get(k) == v for k, v in selector.items())


_SET_OPERATOR = re.compile(r"^\s*(!?[^\s!=(),]+)\s+(in|notin)\s+\(([^()]*)\)\s*$")


def _split_requirements(text: str) -> list[str]:
    """Commas separate requirements, except inside the parentheses of a set."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts]


def parse_selector(text: str) -> LabelSelector:
    """kubectl's ``-l`` syntax: ``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``, ``a in (x,y)``,
    ``a notin (x,y)``, joined by commas (all must hold). InvalidError for anything else."""
    from netemu.errors import InvalidError
    labels: dict[str, str] = {}
    requirements: list[LabelSelectorRequirement] = []
    for part in _split_requirements(text):
        if not part:
            raise InvalidError(f'unable to parse requirement: found "," in selector "{text}" where a key was expected')
        match = _SET_OPERATOR.match(part)
        if match:
            key, operator, values = match.group(1), match.group(2), match.group(3)
            items = tuple(v.strip() for v in values.split(",") if v.strip())
            requirements.append(LabelSelectorRequirement(key=key, operator="In" if operator == "in" else "NotIn",
                                                         values=items))
        elif "!=" in part:
            key, value = (x.strip() for x in part.split("!=", 1))
            requirements.append(LabelSelectorRequirement(key=key, operator="NotIn", values=(value,)))
        elif "=" in part:
            key, value = (x.strip() for x in part.replace("==", "=", 1).split("=", 1))
            labels[key] = value
        elif part.startswith("!"):
            key = part[1:].strip()
            requirements.append(LabelSelectorRequirement(key=key, operator="DoesNotExist"))
        else:
            key = part
            requirements.append(LabelSelectorRequirement(key=key, operator="Exists"))
        if any(c in key for c in " ()=!"):
            raise InvalidError(f'unable to parse requirement: cannot read "{part}"')
        problems = is_qualified_name(key)
        if problems:
            raise InvalidError(f'unable to parse requirement: invalid label key "{key}": {"; ".join(problems)}')
        for value in (*(labels.values()), *(v for r in requirements for v in r.values)):
            if is_label_value(value):
                raise InvalidError(f'unable to parse requirement: invalid label value "{value}": '
                                   f'{"; ".join(is_label_value(value))}')
    return LabelSelector(match_labels=labels, match_expressions=tuple(requirements))
