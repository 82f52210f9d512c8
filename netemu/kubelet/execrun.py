"""Running an exec plan (``ExecPlan``: prefix, argv, environment, directory) to completion.

The in-process Python API (``Cluster.exec``) and the API client of scenarios
(``ApiCluster.exec``, which gets its plan from the exec operation) run a plan the same way: a
new session holding none of netemu's descriptors, input fed once, output collected, killed after
``timeout`` seconds.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Sequence

from netemu.errors import WaitTimeoutError
from netemu.spawn import spawn


@dataclass
class ExecResult:
    returncode: int
    stdout: str
    stderr: str


async def run_plan(prefix: Sequence[str], argv: Sequence[str], env: dict[str, str], cwd: str | None, *,
                   pod: str, input: bytes | None, timeout: float) -> ExecResult:
    """Run ``prefix + argv`` and collect its exit code and output (a missing program exits 127,
    as a runtime reports it)."""
    try:
        proc = await spawn(
            *prefix, *argv, env=env, cwd=cwd, start_new_session=True,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except FileNotFoundError:
        return ExecResult(127, "", f'exec: "{argv[0]}": executable file not found in $PATH\n')
    try:
        out, err = await asyncio.wait_for(proc.communicate(input), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise WaitTimeoutError(f"exec {argv[0]} in {pod} timed out after {timeout:g}s") from None
    return ExecResult(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))
