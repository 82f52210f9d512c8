"""Label selectors (matchLabels, matchExpressions, Service selectors) and name/label syntax checks."""
from __future__ import annotations

from typing import Any

import pytest

from netemu import api
from netemu.api import labels

LABELS = {"app": "web", "tier": "frontend"}


def sel(match_labels: dict[str, str] | None = None, *exprs: tuple[str, str, tuple[str, ...]]) -> api.LabelSelector:
    return api.LabelSelector(match_labels=match_labels or {}, match_expressions=tuple(
        api.LabelSelectorRequirement(key=k, operator=op, values=v) for k, op, v in exprs))


SELECTORS: list[tuple[str, Any, bool]] = [
    ("nil-matches-nothing", None, False),
    ("empty-matches-everything", sel(), True),
    ("equal", sel({"app": "web"}), True),
    ("equal-all", sel({"app": "web", "tier": "frontend"}), True),
    ("equal-other-value", sel({"app": "api"}), False),
    ("equal-missing-key", sel({"zone": "a"}), False),
    ("in", sel(None, ("tier", "In", ("frontend", "edge"))), True),
    ("in-other", sel(None, ("tier", "In", ("backend",))), False),
    ("in-missing-key", sel(None, ("zone", "In", ("a",))), False),
    ("not-in", sel(None, ("tier", "NotIn", ("backend",))), True),
    ("not-in-hit", sel(None, ("tier", "NotIn", ("frontend",))), False),
    ("not-in-missing-key", sel(None, ("zone", "NotIn", ("a",))), True),
    ("exists", sel(None, ("app", "Exists", ())), True),
    ("exists-missing", sel(None, ("zone", "Exists", ())), False),
    ("does-not-exist", sel(None, ("zone", "DoesNotExist", ())), True),
    ("does-not-exist-present", sel(None, ("app", "DoesNotExist", ())), False),
    ("labels-and-expressions", sel({"app": "web"}, ("tier", "In", ("frontend",)), ("canary", "DoesNotExist", ())), True),
    ("labels-and-failing-expression", sel({"app": "web"}, ("tier", "In", ("edge",))), False),
    ("unknown-operator", sel(None, ("app", "Equals", ("web",))), False),
]


@pytest.mark.parametrize("selector,expected", [c[1:] for c in SELECTORS], ids=[c[0] for c in SELECTORS])
def test_selector_matches(selector: Any, expected: bool) -> None:
    assert api.selector_matches(selector, LABELS) is expected


SERVICE_SELECTORS: list[tuple[str, Any, bool]] = [
    ("none-selects-nothing", None, False),
    ("empty-selects-nothing", {}, False),
    ("subset", {"app": "web"}, True),
    ("all", {"app": "web", "tier": "frontend"}, True),
    ("other-value", {"app": "api"}, False),
    ("missing-key", {"app": "web", "zone": "a"}, False),
]


@pytest.mark.parametrize("selector,expected", [c[1:] for c in SERVICE_SELECTORS],
                         ids=[c[0] for c in SERVICE_SELECTORS])
def test_service_selector_matches(selector: Any, expected: bool) -> None:
    assert api.service_selector_matches(selector, LABELS) is expected


CHECKS: list[tuple[str, Any, str, bool]] = [
    ("label-1", labels.is_dns1123_label, "my-name", True),
    ("label-2", labels.is_dns1123_label, "123-abc", True),
    ("label-trailing-hyphen", labels.is_dns1123_label, "abc-", False),
    ("label-64", labels.is_dns1123_label, "a" * 64, False),
    ("subdomain", labels.is_dns1123_subdomain, "a.b-c.d", True),
    ("subdomain-empty-label", labels.is_dns1123_subdomain, "a..b", False),
    ("subdomain-254", labels.is_dns1123_subdomain, ("a" * 63 + ".") * 3 + "a" * 62, False),
    ("dns1035", labels.is_dns1035_label, "abc-123", True),
    ("dns1035-digit-first", labels.is_dns1035_label, "1abc", False),
    ("port-name", labels.is_valid_port_name, "http-alt", True),
    ("port-name-15", labels.is_valid_port_name, "a" * 15, True),
    ("port-name-16", labels.is_valid_port_name, "a" * 16, False),
    ("port-name-digits", labels.is_valid_port_name, "8080", False),
    ("qualified", labels.is_qualified_name, "example.com/My_Name.1", True),
    ("qualified-empty-prefix", labels.is_qualified_name, "/name", False),
    ("qualified-empty", labels.is_qualified_name, "", False),
    ("label-value-empty", labels.is_label_value, "", True),
    ("label-value", labels.is_label_value, "My_value-1.2", True),
    ("label-value-space", labels.is_label_value, "a b", False),
    ("env-name", labels.is_relaxed_env_var_name, "1 weird.name!", True),
    ("env-name-equals", labels.is_relaxed_env_var_name, "A=B", False),
    ("env-name-non-ascii", labels.is_relaxed_env_var_name, "ÄPFEL", False),
    ("percent", labels.is_valid_percent, "25%", True),
    ("percent-fraction", labels.is_valid_percent, "2.5%", False),
]


@pytest.mark.parametrize("check,value,valid", [c[1:] for c in CHECKS], ids=[c[0] for c in CHECKS])
def test_syntax_checks(check: Any, value: str, valid: bool) -> None:
    assert (check(value) == []) is valid


def test_generate_name_prefix_may_end_with_a_hyphen() -> None:
    assert labels.name_is_dns_subdomain("web-", prefix=True) == []
    assert labels.name_is_dns_subdomain("web-", prefix=False) != []


# ---------------------------------------------------------------- kubectl -l selectors

@pytest.mark.parametrize(("text", "pod_labels", "matches"), [
    ("app=web", {"app": "web"}, True),
    ("app==web", {"app": "web"}, True),
    ("app=web", {"app": "db"}, False),
    ("tier!=db", {}, True),  # != also matches objects without the label, as kubectl's
    ("tier!=db", {"tier": "db"}, False),
    ("release", {"release": ""}, True),
    ("!legacy", {"legacy": "1"}, False),
    ("env in (prod, staging)", {"env": "staging"}, True),
    ("env notin (prod,staging)", {"env": "prod"}, False),
    ("app=web,env in (prod),!legacy", {"app": "web", "env": "prod"}, True),
], ids=["equals", "double-equals", "equals-other", "not-equals-absent", "not-equals", "exists", "does-not-exist",
        "in", "notin", "combined"])
def test_parse_selector_matches_as_kubectl(text: str, pod_labels: dict[str, str], matches: bool) -> None:
    assert labels.selector_matches(labels.parse_selector(text), pod_labels) is matches


@pytest.mark.parametrize("text", ["a=b,,c", "-bad=x"], ids=["empty-requirement", "bad-key"])
def test_parse_selector_refuses_what_kubectl_refuses(text: str) -> None:
    from netemu.api.labels import parse_selector
    from netemu.errors import InvalidError
    with pytest.raises(InvalidError, match="unable to parse requirement"):
        parse_selector(text)
