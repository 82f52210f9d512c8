"""The repository's own rules. Under `make test` — root inside scripts/isolated — a skipped test
is reported as a failure naming the skip's reason, elsewhere a skip stays a skip (tests/conftest.py;
each case runs a small suite with that conftest.py in a pytest subprocess). No file of the
repository names a machine's absolute path.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).parent / "conftest.py"

SKIPPING = """
import pytest


@pytest.mark.skipif(True, reason="needs ping (iputils-ping)")
def test_marked_skipif():
    pass


def test_skips_itself():
    pytest.skip("port 53 is not available")


@pytest.fixture
def namespaces():
    pytest.skip("ip netns does not work here")


def test_a_fixture_skips(namespaces):
    pass


@pytest.mark.xfail(reason="a known bug", strict=True)
def test_expected_failure():
    assert False
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_skipping=SKIPPING)
    return pytester


def test_outside_make_test_a_skip_stays_a_skip(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NETEMU_ISOLATED", raising=False)
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(skipped=3, xfailed=1)


def test_under_make_test_every_skip_fails_with_its_reason(suite: pytest.Pytester,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETEMU_ISOLATED", "1")
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    if os.geteuid() != 0:  # not `make test`: an unprivileged isolated run may lack what root has
        result.assert_outcomes(skipped=3, xfailed=1)
        return
    # a skip in setup (a skipif mark, a fixture) reports as an error, in the test as a failure
    result.assert_outcomes(failed=1, errors=2, xfailed=1)
    result.stdout.fnmatch_lines_random([
        "*test_marked_skipif: skipped under `make test` (root, scripts/isolated), where every test must run: "
        "needs ping (iputils-ping)",
        "*test_skips_itself: skipped under `make test`*: port 53 is not available",
        "*test_a_fixture_skips: skipped under `make test`*: ip netns does not work here",
    ])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


# ---------------------------------------------------------------------------- machine paths

CHECKOUT = Path(__file__).resolve().parents[1]
NOT_THE_REPOSITORYS = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", ".mypy_cache"}
MACHINE_PATH = re.compile(r"/(home|Users|work|root)/[A-Za-z0-9_.-]+")  # a user's or a workspace's directory


def repository_files() -> list[tuple[Path, str]]:
    """The checkout's own text files: what is tracked, not a venv, build output or caches."""
    files = []
    for path in CHECKOUT.rglob("*"):
        parts = path.relative_to(CHECKOUT).parts
        if any(part in NOT_THE_REPOSITORYS or part.endswith(".egg-info") for part in parts) or not path.is_file():
            continue
        try:
            files.append((path, path.read_text()))
        except (UnicodeDecodeError, OSError):
            continue  # not text
    return files


def test_no_file_names_a_machines_absolute_path() -> None:
    """Code, messages and docs speak of the checkout (``cd`` to it, paths relative to it), never of
    where it happens to be on one machine."""
    found = [f"{path.relative_to(CHECKOUT)}:{number}: {line.strip()}"
             for path, text in repository_files() for number, line in enumerate(text.splitlines(), 1)
             if str(CHECKOUT) in line or MACHINE_PATH.search(line)]
    assert found == []
