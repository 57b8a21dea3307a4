"""Building a package with safe-build, into a directory of the hook's choosing."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def build(package: Path, outdir: Path, distributions: Sequence[str]) -> str | None:
    """Build ``package`` into ``outdir``; ``None`` if that worked, else what safe-build printed.

    safe-build runs as a process of its own, as on a command line: it prints the frontend's and
    the backend's output only when the build fails, and ends with its one-line error.
    """
    command = [sys.executable, "-m", "safe_build", *distributions, "--outdir", str(outdir), str(package)]
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    return None if done.returncode == 0 else done.stdout
