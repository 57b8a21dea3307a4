"""A pip that starts at once, reads its command line, and waits at a gate for the locks it is to keep.

Most of a no-op ``pip install`` is pip importing itself (about 60 % here), and safe-pip's own start
(its imports, taking locks) would add to it, one after the other. So safe-pip starts the target's
Python before doing any of that, running ``pipgate_program`` (a file of this package, loaded by
path: the target's Python cannot import safe_build) with the whole command line. That program
imports pip, reads the command line, its requirement files and pip's configuration with pip's own
parsers, and sends back a description of what the command asks for (``Gate.description``); safe-pip
meanwhile starts up. When safe-pip holds its locks, it opens the gate: it sends the descriptors of
its locks (SCM_RIGHTS) and pip's arguments, and the program runs pip as ``python -m pip ARGS`` would.

The gated pip holds the lock descriptors until it exits. A flock belongs to the open file, so the
locks stay held while pip runs even if safe-pip itself is killed, and no pip ever runs unlocked. A
gate closed without being opened (safe-pip failed, was stopped or killed, or chose another
interpreter) makes the program exit without running pip. If pip's files changed while it waited
(another pip reinstalled pip), it starts a fresh ``python -m pip`` instead of mixing versions.

Descriptors that the command line names as files (``/dev/fd/63`` from ``<(…)``,
``/proc/self/fd/N``) are passed on to the program, which is where they are read.

This module is imported before anything else of safe-pip, so it imports little.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

# pip's own flag for the pip that ``--python`` starts: the target pip must not start another one
RUNNING_IN_SUBPROCESS = "_PIP_RUNNING_IN_SUBPROCESS"
# the files pipx and ``uv tool`` write into the venvs they make for a tool
TOOL_MARKERS = ("pipx_metadata.json", "uv-receipt.toml")
MAX_DESCRIPTORS = 253  # SCM_MAX_FD: the most descriptors one message carries on Linux
PROGRAM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pipgate_program.py")
# loads the program by path (its bytecode cached as any module's) and runs it, the working
# directory out of the way of its imports
_BOOT = (
    "import os, sys\n"
    "if sys.path and sys.path[0] in ('', os.getcwd()):\n"
    "    del sys.path[0]  # as pip's __main__ does: the working directory must shadow nothing\n"
    "from importlib.util import module_from_spec, spec_from_file_location\n"
    "spec = spec_from_file_location('safe_build_pipgate_program', sys.argv.pop(1))\n"
    "program = module_from_spec(spec)\n"
    "spec.loader.exec_module(program)\n"
    "program.main()\n"
)
_DESCRIPTOR_FILE = re.compile(r"/(?:dev/fd|proc/self/fd)/(\d+)")


class Gate:
    """A started pip waiting at its gate; ``description`` is its reading of its arguments, ``open``
    lets it run."""

    def __init__(self, interpreter: str, env: Mapping[str, str], arguments: Sequence[str]) -> None:
        self.interpreter = interpreter
        self.env = dict(env)
        self.arguments = list(arguments)
        self._description: dict[str, Any] | None = None
        self._described = False
        ours, theirs = socket.socketpair()
        with theirs:
            try:
                self.process = subprocess.Popen(
                    [interpreter, "-c", _BOOT, PROGRAM, str(theirs.fileno()), *self.arguments],
                    env=self.env,
                    pass_fds=[theirs.fileno(), *named_descriptors(self.arguments)],
                )
            except BaseException:
                ours.close()
                raise
        self._channel: socket.socket | None = ours

    def fits(self, interpreter: str, env: Mapping[str, str], arguments: Sequence[str]) -> bool:
        """Is this the pip that ``interpreter`` with ``env`` would be, reading ``arguments``?"""
        return self._channel is not None and (interpreter, dict(env), list(arguments)) == (
            self.interpreter,
            self.env,
            self.arguments,
        )

    def description(self) -> dict[str, Any] | None:
        """pip's reading of the arguments (see ``pipgate_program.describe``); None if the program
        ended without one (its Python could not start, or it was killed)."""
        if not self._described and self._channel is not None:
            import json  # noqa: PLC0415 (not needed to start pip early)

            self._described = True
            received = b""
            while not received.endswith(b"\n"):
                try:
                    chunk = self._channel.recv(1 << 16)
                except OSError:
                    break
                if not chunk:
                    break
                received += chunk
            try:
                found = json.loads(received.decode("utf-8"))
            except ValueError:
                found = None
            self._description = found if isinstance(found, dict) else None
        return self._description

    def open(
        self,
        arguments: Sequence[str],
        descriptors: Sequence[int],
        replacements: Sequence[tuple[str, str]] = (),
    ) -> subprocess.Popen[bytes]:
        """Let pip run ``pip ARGUMENTS``, keeping ``descriptors`` (the locks) open until it exits;
        what it prints has each text of ``replacements`` (private paths) replaced by its pair."""
        import json  # noqa: PLC0415 (not needed to start pip early)

        if len(descriptors) > MAX_DESCRIPTORS:
            raise OSError(f"cannot hand pip more than {MAX_DESCRIPTORS} locks")
        channel, self._channel = self._channel, None
        assert channel is not None, "a gate opens once"
        with channel:
            try:
                socket.send_fds(channel, [b"g"], list(descriptors))
                opened = {"arguments": list(arguments), "replace": [list(pair) for pair in replacements]}
                channel.sendall(json.dumps(opened).encode("utf-8"))
            except BrokenPipeError:
                pass  # pip ended before the gate opened (its Python could not start): its exit code says
        return self.process

    def close(self) -> None:
        """Call pip off unless it was let run, and reap it."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self.process.wait()


def named_descriptors(arguments: Sequence[str]) -> list[int]:
    """The descriptors of ours that ``arguments`` name as files (``/dev/fd/N``, ``/proc/self/fd/N``):
    the process that reads them must have them too."""
    found = set()
    for argument in arguments:
        for match in _DESCRIPTOR_FILE.finditer(argument):
            number = int(match[1])
            if number > 2:
                try:
                    os.fstat(number)
                except OSError:
                    continue
                found.add(number)
    return sorted(found)


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


def interpreter_of(named: str) -> str | None:
    """pip's reading of ``--python``: an interpreter, or a venv directory holding one."""
    if os.path.isdir(named):
        for candidate in (os.path.join(named, "bin", "python"), os.path.join(named, "Scripts", "python.exe")):
            if os.path.exists(candidate):
                return candidate
        return None
    return named if os.path.exists(named) else None


def active_python() -> str | None:
    """The Python pip runs on without ``--python``, as pip's own rule has it: ``VENV/bin/pip`` works
    on VENV, so safe-pip works on the environment of the Python that runs it (``VIRTUAL_ENV`` is not
    read: an activated venv's ``bin`` comes first on PATH, so its own ``safe-pip`` runs). Unless that
    is a tool's venv (pipx, ``uv tool``), which is no place to install into: then the active venv's
    Python (which may be missing), else ``python`` on PATH."""
    if sys.executable and not in_tool_environment():
        return sys.executable
    venv = os.environ.get("VIRTUAL_ENV")
    if venv:
        return os.path.join(venv, "bin", "python")
    import shutil  # noqa: PLC0415 (only from a tool's venv)

    return shutil.which("python") or shutil.which("python3")


def in_tool_environment() -> bool:
    """Does safe-pip run from a venv that pipx or ``uv tool`` made for it (their marker files)?"""
    return any(os.path.exists(os.path.join(sys.prefix, name)) for name in TOOL_MARKERS)


def _guess(argv: Sequence[str]) -> tuple[str, dict[str, str]] | None:
    """The interpreter and environment of the usual cases: ``--python X`` or ``PIP_PYTHON``, else
    the one ``active_python`` names; always with a pip of the target's own."""
    env = dict(os.environ)
    named = python_option(argv) or env.get("PIP_PYTHON")
    if named is not None:
        python = interpreter_of(named)
        env[RUNNING_IN_SUBPROCESS] = "1"
    else:
        python = active_python()
    if python is None or not os.path.exists(python):
        return None
    return python, env


def python_option(argv: Sequence[str]) -> str | None:
    for index, argument in enumerate(argv):
        if argument == "--python" and index + 1 < len(argv):
            return argv[index + 1]
        if argument.startswith("--python="):
            return argument.partition("=")[2]
    return None
