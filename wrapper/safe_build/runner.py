"""Running the build frontend as a child process group that never outlives an interruption.

The child is forked from safe-build, so it starts with ``build`` already imported (a second
interpreter would cost more than safe-build's own work), and it leads a session of its own:
a terminal's Ctrl-C reaches safe-build only, and safe-build stops the child's whole group
(frontend, backend, compilers) before it cleans up. If safe-build itself is killed with
SIGKILL, the group lives on but can only write into the private directory it was given.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from safe_build import locks

STOP_GRACE_SECONDS = 5.0
CHILD_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True)
class Output:
    """Where a child's output goes: ``None`` streams it to ours, a path captures it there."""

    stdout: Path | None = None
    stderr: Path | None = None  # None with a stdout path: both go to the stdout file, interleaved


def run(main: Callable[[], object], *, cwd: Path, env: Mapping[str, str], output: Output) -> int:
    """Call ``main()`` in a forked child leading its own session; return its exit code.

    ``main`` may return (exit code 0) or raise ``SystemExit`` as a command-line ``main`` does.
    If we are interrupted while it runs, the child's whole process group is stopped.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    with _capture_files(output) as (out, err):
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child leaves through os._exit; its effects are tested)
            _child(main, cwd, env, out, err)
        try:
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        except BaseException:
            stop_group(pid)
            raise


def stop_group(pid: int) -> None:
    """Ask the child's process group to stop, give it a moment, then kill whatever is left of it."""
    with _signals_ignored():  # a second Ctrl-C must not cut the stopping short
        _stop_group(pid)


def _stop_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0):
        time.sleep(0.05)
    # a reaped leader's pid stays reserved while its group has members, so this cannot hit a stranger
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def replay(path: Path, stream: IO[str] | None = None) -> None:
    """Copy captured output to ``stream`` (stderr by default)."""
    target = stream or sys.stderr
    target.write(path.read_text(encoding="utf-8", errors="replace"))
    target.flush()


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in CHILD_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _capture_files(output: Output) -> Iterator[tuple[IO[bytes] | None, IO[bytes] | None]]:
    with contextlib.ExitStack() as files:
        out = files.enter_context(output.stdout.open("wb")) if output.stdout else None
        err = files.enter_context(output.stderr.open("wb")) if output.stderr else out
        yield out, err


def _child(
    main: Callable[[], object],
    cwd: Path,
    env: Mapping[str, str],
    out: IO[bytes] | None,
    err: IO[bytes] | None,
) -> None:  # pragma: no cover (runs in the forked child)
    code = 1
    try:
        os.setsid()
        for sig in CHILD_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        if out is not None and err is not None:
            # waiting for a lock is news for the user, not build output to hold back until a failure
            locks.notices = open(os.dup(2), "w", encoding="utf-8", errors="replace")  # noqa: SIM115
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
        # Python-level streams may be replaced (by a test harness, say): point them at fds 1 and 2
        sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        tempfile.tempdir = None  # forget a temp dir chosen before TMPDIR changed
        main()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
