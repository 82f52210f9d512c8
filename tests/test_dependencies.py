"""Declared dependencies are what the code imports: ``project.dependencies`` in pyproject.toml are
exactly the third-party distributions netemu's own packages import (its pytest plugin aside: it
runs only under pytest), and the ``test`` extra holds what the tests and that plugin import
besides those, plus what the packaging tests need without importing it."""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("netemu", "proxy", "dns", "cni")     # the packages the wheel installs
PYTEST_PLUGIN = "netemu/pytest_plugin.py"        # loaded by pytest only (a pytest11 entry point)
# what the packaging tests need without importing it here: the build backend, and dnspython (imported
# in a subprocess, to show that netemu's dns package never shadows it)
NEEDED_NOT_IMPORTED = {"setuptools", "dnspython"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return canonical(re.split(r"[<>=!~\[;\s]", requirement, maxsplit=1)[0])


def imported_distributions(*paths: str, skip: str = "") -> set[str]:
    """The third-party distributions whose modules the Python files at or under ``paths`` import."""
    modules: set[str] = set()
    for top in paths:
        files = [ROOT / top] if top.endswith(".py") else sorted((ROOT / top).rglob("*.py"))
        for path in files:
            if skip and path == ROOT / skip:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                if isinstance(node, ast.Import):
                    modules |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module.split(".")[0])
    owners = packages_distributions()
    return {canonical(dist) for module in modules - set(sys.stdlib_module_names)
            for dist in owners.get(module, ())} - {"netemu"}


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_runtime_dependencies_are_exactly_what_netemu_imports():
    declared = {requirement_name(r) for r in project()["dependencies"]}
    assert imported_distributions(*SOURCES, skip=PYTEST_PLUGIN) == declared


def test_the_test_extra_holds_what_only_the_tests_import():
    runtime = {requirement_name(r) for r in project()["dependencies"]}
    extra = {requirement_name(r) for r in project()["optional-dependencies"]["test"]}
    imported = imported_distributions("tests", PYTEST_PLUGIN) - runtime
    assert imported | (extra & NEEDED_NOT_IMPORTED) == extra
