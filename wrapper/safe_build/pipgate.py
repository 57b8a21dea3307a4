"""A pip that starts at once and waits at a gate for its arguments and the locks it is to keep.

Most of a no-op ``pip install`` is pip importing itself (about 60 % here), and safe-pip's own start
(its imports, reading pip's command line and configuration, taking locks) would add to it, one after
the other. So safe-pip starts the target's Python before doing any of that, with a tiny program
that imports pip's command line module and then blocks on a socket; that overlaps the two. When
safe-pip holds its locks, it opens the gate: it sends the descriptors of its locks (SCM_RIGHTS) and
pip's arguments, and the program runs pip as ``python -m pip ARGS`` would.

The gated pip holds the lock descriptors until it exits. A flock belongs to the open file, so the
locks stay held while pip runs even if safe-pip itself is killed, and no pip ever runs unlocked. A
gate closed without being opened (safe-pip failed, was stopped or killed, or chose another
interpreter) makes the program exit without running pip. If pip's files changed while it waited
(another pip reinstalled pip), it starts a fresh ``python -m pip`` instead of mixing versions.

This module is imported before anything else of safe-pip, so it imports little.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

# pip's own flag for the pip that ``--python`` starts: the target pip must not start another one
RUNNING_IN_SUBPROCESS = "_PIP_RUNNING_IN_SUBPROCESS"
MAX_DESCRIPTORS = 253  # SCM_MAX_FD: the most descriptors one message carries on Linux

# Runs in the target's Python, which may be older than ours and cannot import safe_build.
_GATE = f"""\
import array, json, os, runpy, socket, sys
channel = socket.fromfd(int(sys.argv.pop(1)), socket.AF_UNIX, socket.SOCK_STREAM)
candidates = sys.argv[1:]  # words of the command line that may name pip's command
if sys.path and sys.path[0] in ("", os.getcwd()):
    sys.path.pop(0)  # as pip's __main__ does: the working directory must not shadow pip
def stamp():
    info = os.stat(pip.__file__)
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
try:
    try:
        import pip
        import pip._internal.cli.main
        before = stamp()
    except Exception:
        before = None  # a fresh pip reports it
    try:  # the command's own module is most of what pip imports (install: 0.3 s of 0.45 s)
        from pip._internal.commands import commands_dict
        command = next((word for word in candidates if word in commands_dict), None)
        if command is not None:
            __import__(commands_dict[command].module_path)
    except Exception:
        pass  # an older or newer pip: it imports the command itself
    fds = array.array("i")
    data, ancillary, _, _ = channel.recvmsg(1, socket.CMSG_SPACE({MAX_DESCRIPTORS} * fds.itemsize))
except KeyboardInterrupt:
    sys.exit(130)
for level, kind, payload in ancillary:
    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
        fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
if not data:
    sys.exit(0)  # the gate was closed: this pip is not to run
chunks = []
while True:
    chunk = channel.recv(1 << 16)
    if not chunk:
        break
    chunks.append(chunk)
channel.close()
arguments = json.loads(b"".join(chunks).decode("utf-8"))
try:
    fresh = before is None or stamp() != before
except OSError:
    fresh = True
if fresh:
    for fd in fds:
        os.set_inheritable(fd, True)
    os.execv(sys.executable, [sys.executable, "-m", "pip", *arguments])
sys.argv[1:] = arguments
runpy.run_module("pip", run_name="__main__", alter_sys=True)
"""


class Gate:
    """A started pip waiting at its gate; ``open`` lets it run."""

    def __init__(self, interpreter: str, env: Mapping[str, str], arguments: Sequence[str] = ()) -> None:
        self.interpreter = interpreter
        self.env = dict(env)
        ours, theirs = socket.socketpair()
        with theirs:
            try:
                self.process = subprocess.Popen(
                    [interpreter, "-c", _GATE, str(theirs.fileno()), *_command_candidates(arguments)],
                    env=self.env,
                    pass_fds=[theirs.fileno()],
                )
            except BaseException:
                ours.close()
                raise
        self._channel: socket.socket | None = ours

    def fits(self, interpreter: str, env: Mapping[str, str]) -> bool:
        """Is this the pip that ``interpreter`` with ``env`` would be?"""
        return self._channel is not None and (interpreter, dict(env)) == (self.interpreter, self.env)

    def open(self, arguments: Sequence[str], descriptors: Sequence[int]) -> subprocess.Popen[bytes]:
        """Let pip run ``pip ARGUMENTS``, keeping ``descriptors`` (the locks) open until it exits."""
        import json  # noqa: PLC0415 (not needed to start pip early)

        if len(descriptors) > MAX_DESCRIPTORS:
            raise OSError(f"cannot hand pip more than {MAX_DESCRIPTORS} locks")
        channel, self._channel = self._channel, None
        assert channel is not None, "a gate opens once"
        with channel:
            try:
                socket.send_fds(channel, [b"g"], list(descriptors))
                channel.sendall(json.dumps(list(arguments)).encode("utf-8"))
            except BrokenPipeError:
                pass  # pip ended before the gate opened (its Python could not start): its exit code says
        return self.process

    def close(self) -> None:
        """Call pip off unless it was let run, and reap it."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self.process.wait()


@contextmanager
def started(argv: Sequence[str]) -> Iterator[Gate | None]:
    """The pip that ``safe-pip ARGV`` will most likely run, started and waiting; None if that cannot
    be told cheaply. A wrong guess costs only the time it would have saved: safe-pip checks the
    guess against its real choice (``Gate.fits``) and starts the right pip if it differs."""
    gate = None
    guess = _guess(argv)
    if guess is not None:
        try:
            gate = Gate(*guess, argv)
        except OSError:
            gate = None
    try:
        yield gate
    finally:
        if gate is not None:
            gate.close()


def _command_candidates(arguments: Sequence[str]) -> list[str]:
    """The first few words of pip's command line that could be its command (not options or paths),
    for the waiting pip to import that command's module ahead; a few short words, whatever the
    length of the command line."""
    words = (word for word in arguments if word.isalpha() and word.islower() and len(word) <= 16)
    return list(itertools.islice(words, 8))


def interpreter_of(named: str) -> str | None:
    """pip's reading of ``--python``: an interpreter, or a venv directory holding one."""
    if os.path.isdir(named):
        for candidate in (os.path.join(named, "bin", "python"), os.path.join(named, "Scripts", "python.exe")):
            if os.path.exists(candidate):
                return candidate
        return None
    return named if os.path.exists(named) else None


def active_python() -> str | None:
    """The Python pip runs on without ``--python``: the active venv's (which may be missing), else
    ``python`` on PATH."""
    venv = os.environ.get("VIRTUAL_ENV")
    if venv:
        return os.path.join(venv, "bin", "python")
    import shutil  # noqa: PLC0415 (only without a venv)

    return shutil.which("python") or shutil.which("python3")


def _guess(argv: Sequence[str]) -> tuple[str, dict[str, str]] | None:
    """The interpreter and environment of the usual cases: ``--python X`` or ``PIP_PYTHON``, else
    the active venv's Python, else ``python`` on PATH; always with a pip of the target's own."""
    env = dict(os.environ)
    named = _python_option(argv) or env.get("PIP_PYTHON")
    if named is not None:
        python = interpreter_of(named)
        env[RUNNING_IN_SUBPROCESS] = "1"
    else:
        python = active_python()
    if python is None or not os.path.exists(python):
        return None
    return python, env


def _python_option(argv: Sequence[str]) -> str | None:
    for index, argument in enumerate(argv):
        if argument == "--python" and index + 1 < len(argv):
            return argv[index + 1]
        if argument.startswith("--python="):
            return argument.partition("=")[2]
    return None
