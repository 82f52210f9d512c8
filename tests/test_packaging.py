"""Installing netemu never shadows dnspython's `dns`: the only top-level import name is netemu."""
from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

REPO = __import__("pathlib").Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), str(REPO)], check=True, capture_output=True, cwd=out)
    (path,) = out.glob("netemu-*.whl")
    return path


def test_wheel_has_one_top_level_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"netemu"}
    for sub in ("netemu/cni/__init__.py", "netemu/proxy/__init__.py", "netemu/dns/__init__.py"):
        assert sub in names


def test_wheel_declares_the_console_scripts(wheel):
    with zipfile.ZipFile(wheel) as z:
        entry = next(n for n in z.namelist() if n.endswith("entry_points.txt"))
        text = z.read(entry).decode()
    assert "netemu = netemu.cli:main" in text


def test_dnspython_still_imports_next_to_netemu(tmp_path):
    code = ("import dns.resolver, netemu.dns, netemu.cni, netemu.proxy; "
            "assert 'site-packages' in dns.resolver.__file__, dns.resolver.__file__; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.stdout.strip() == "ok", r.stderr
