"""The examples users copy from stay runnable."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_python_api_walkthrough_example(tmp_path):
    env = {**os.environ, "NETEMU_STATE_DIR": str(tmp_path / "state")}
    r = subprocess.run([sys.executable, str(EXAMPLES / "walkthrough.py")], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all checks passed" in r.stdout
    assert not (tmp_path / "state" / "walkthrough").exists()
