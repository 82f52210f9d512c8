"""Removing a directory tree fast: a cluster's state directory holds about ten entries per pod
(its files, service-account volume, log and address record), 100,000 for 10,000 pods, and
``shutil.rmtree`` spends more time in Python per entry than the kernel spends unlinking it. The
system's ``rm -rf`` removes the same tree about a third faster; ``shutil.rmtree`` is the fallback
where there is no ``rm`` or it left something behind. Neither follows symbolic links,
and ``rm`` does not descend into other filesystems mounted inside the tree."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def remove_tree(directory: Path) -> None:
    """Remove ``directory`` and everything in it; nothing happens when it does not exist."""
    if not directory.exists() and not directory.is_symlink():
        return
    rm = shutil.which("rm")
    if rm is not None:
        subprocess.run([rm, "-rf", "--one-file-system", "--", str(directory)], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    if directory.exists():
        shutil.rmtree(directory, ignore_errors=True)
