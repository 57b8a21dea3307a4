"""Running a tool (``python -m build``) as a child process group that never outlives an interruption.

The child gets a session of its own, so a terminal's Ctrl-C reaches safe-build only, and
safe-build stops the child's whole group (frontend, backend, compilers) before it cleans up.
If safe-build itself is killed with SIGKILL, the group lives on but can only write into the
private directory it was given: nothing it does becomes visible to the user.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

STOP_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class Output:
    """Where a child's output goes: ``None`` streams it to ours, a path captures it there."""

    stdout: Path | None = None
    stderr: Path | None = None  # None with a stdout path: both go to the stdout file, interleaved


def run(command: Sequence[str], *, cwd: Path, env: Mapping[str, str], output: Output) -> int:
    """Run ``command`` to completion and return its exit code; stop its group if we are interrupted."""
    with contextlib.ExitStack() as files:
        out = files.enter_context(output.stdout.open("wb")) if output.stdout else None
        err: IO[bytes] | int | None = None
        if output.stderr:
            err = files.enter_context(output.stderr.open("wb"))
        elif out is not None:
            err = subprocess.STDOUT
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            return process.wait()
        except BaseException:
            stop_group(process)
            raise


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Ask the child's process group to stop, give it a moment, then kill whatever is left of it."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(STOP_GRACE_SECONDS)
    # a reaped leader's pid stays reserved while its group has members, so this cannot hit a stranger
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def replay(path: Path, stream: IO[str] | None = None) -> None:
    """Copy captured output to ``stream`` (stderr by default)."""
    target = stream or sys.stderr
    target.write(path.read_text(encoding="utf-8", errors="replace"))
    target.flush()
