"""Running the build frontend as a child process group that never outlives an interruption.

The child is forked from safe-build, so it starts with ``build`` already imported (a second
interpreter would cost more than safe-build's own work), and it leads a session of its own:
a terminal's Ctrl-C reaches safe-build only, and safe-build stops the child's whole group
(frontend, backend, compilers) before it cleans up. If safe-build itself is killed with
SIGKILL, the group lives on but can only write into the private directory it was given.

The child's stdout and stderr are relayed (:class:`Relay`): it writes into a pseudo-terminal
where ours is a terminal (so it colours and buffers as ``python -m build`` would there) or into
a pipe where ours is not, and a thread of ours passes every line on to our own stream as it
comes, the private directory's paths replaced by the ones the user knows, erasing the status
line (``progress``) first, and records both streams in a log. The child's frontend also records
each warning it shows (build's ``WARNING …`` lines), which a cache entry keeps and a cache hit
shows again.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import io
import json
import os
import re
import selectors
import signal
import struct
import sys
import tempfile
import termios
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TextIO

from safe_build import progress

STOP_GRACE_SECONDS = 5.0
DRAIN_SECONDS = 1.0  # after the child exits, for what a process it left behind still writes
CHILD_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
WARNING_PREFIX = "WARNING "  # how build shows a warning (build.__main__._showwarning)


@dataclass(frozen=True)
class Relay:
    """Where a child's output goes: on to ours, line by line, and into ``log``.

    ``replace``: (private, public) byte strings, replaced in that order in every line; ``warnings``:
    where the child records the warnings its frontend shows, one JSON string a line;
    ``on_stderr``: called with each stderr line, colours removed (the status line's step); ``show``
    False: into the log only (to be replayed if the build fails).
    """

    log: Path
    warnings: Path
    replace: Sequence[tuple[bytes, bytes]] = ()
    on_stderr: Callable[[str], None] | None = field(default=None, compare=False)
    show: bool = True

    def shown_warnings(self) -> list[str]:
        """The distinct warnings the child showed, in order, the private paths replaced."""
        try:
            lines = self.warnings.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        found = []
        for text in lines:
            with contextlib.suppress(ValueError):
                found.append(_replaced(str(json.loads(text)).encode(), self.replace).decode())
        return list(dict.fromkeys(found))


def run(main: Callable[[], object], *, cwd: Path, env: Mapping[str, str], output: Relay) -> int:
    """Call ``main()`` in a forked child leading its own session; return its exit code.

    ``main`` may return (exit code 0) or raise ``SystemExit`` as a command-line ``main`` does.
    If we are interrupted while it runs, the child's whole process group is stopped.
    """
    targets = (sys.stdout, sys.stderr)
    for target in targets:
        target.flush()
    with contextlib.ExitStack() as opened:
        ends = [_channel(target, opened) for target in targets]
        log = opened.enter_context(output.log.open("ab"))
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child leaves through os._exit; its effects are tested)
            _child(main, cwd, env, [write for _, write in ends], output.warnings)
        for _, write in ends:
            os.close(write)
        pump = _Pump({read: target for (read, _), target in zip(ends, targets, strict=True)}, output, log)
        pump.start()
        try:
            code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        except BaseException:
            stop_group(pid)
            pump.finish()
            raise
        pump.finish()
        return code


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


def replay(path: Path, stream: TextIO | None = None) -> None:
    """Copy a relay's log to ``stream`` (stderr by default)."""
    target = stream or sys.stderr
    with contextlib.suppress(FileNotFoundError):
        progress.write(target, path.read_text(encoding="utf-8", errors="replace"))


def last_lines(path: Path) -> list[str]:
    """The lines of a relay's log, colours removed."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return ANSI.sub("", text).splitlines()


def _channel(ours: TextIO, opened: contextlib.ExitStack) -> tuple[int, int]:
    """A (read, write) pair for the child's stream relayed to ``ours``: a pseudo-terminal of our
    terminal's size if ``ours`` is a terminal, else a pipe. Both ends are closed when ``opened`` closes."""
    try:
        terminal = ours.isatty()
    except (OSError, ValueError):
        terminal = False
    if terminal:
        read, write = os.openpty()
        with contextlib.suppress(termios.error, OSError):
            attributes = termios.tcgetattr(write)
            attributes[1] &= ~termios.OPOST  # "\n" stays "\n", as on the terminal it is relayed to
            attributes[3] &= ~termios.ECHO
            termios.tcsetattr(write, termios.TCSANOW, attributes)
            size = fcntl.ioctl(ours.fileno(), termios.TIOCGWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
            fcntl.ioctl(write, termios.TIOCSWINSZ, size)
    else:
        read, write = os.pipe()
    opened.callback(_close_quietly, read)
    opened.callback(_close_quietly, write)
    return read, write


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _replaced(data: bytes, replace: Sequence[tuple[bytes, bytes]]) -> bytes:
    for private, public in replace:
        data = data.replace(private, public)
    return data


class _Pump(threading.Thread):
    """Passes the child's output on to our streams, line by line, until both reach their end."""

    def __init__(self, sources: Mapping[int, TextIO], relay: Relay, log: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self.sources = dict(sources)  # read end -> our stream
        self.decoders = {fd: codecs.getincrementaldecoder("utf-8")("replace") for fd in sources}
        self.relay = relay
        self.log = log
        self._until: float | None = None
        self._done = threading.Event()

    def finish(self) -> None:
        """The child is gone: pass on what is left, and give up on what a leftover process holds open."""
        self._until = time.monotonic() + DRAIN_SECONDS
        self.join()

    def run(self) -> None:
        pending = dict.fromkeys(self.sources, b"")
        with selectors.DefaultSelector() as selector:
            for fd in self.sources:
                selector.register(fd, selectors.EVENT_READ)
            while pending:
                events = selector.select(timeout=0.1)
                if not events:
                    for fd in pending:  # a line without its end yet (a prompt, a progress bar)
                        self._emit(fd, pending[fd])
                        pending[fd] = b""
                    if self._until is not None and time.monotonic() >= self._until:
                        break
                    continue
                if self._until is not None and time.monotonic() >= self._until + DRAIN_SECONDS:
                    break
                for key, _ in events:
                    fd = int(key.fd)
                    try:
                        data = os.read(fd, 65536)
                    except OSError:  # EIO: a pseudo-terminal whose other end is closed
                        data = b""
                    if not data:
                        selector.unregister(fd)
                        self._emit(fd, pending.pop(fd))
                        continue
                    buffered = pending[fd] + data
                    cut = buffered.rfind(b"\n") + 1
                    self._emit(fd, buffered[:cut])
                    pending[fd] = buffered[cut:]
        for fd, rest in pending.items():
            self._emit(fd, rest)
        self.log.flush()

    def _emit(self, fd: int, data: bytes) -> None:
        if not data:
            return
        data = _replaced(data, self.relay.replace)
        text = self.decoders[fd].decode(data)
        target = self.sources[fd]
        if self.relay.show:
            with contextlib.suppress(OSError, ValueError):
                progress.write(target, text)
        with contextlib.suppress(OSError):
            self.log.write(data)
        if target is sys.stderr and self.relay.on_stderr is not None:
            for line in text.splitlines():
                self.relay.on_stderr(ANSI.sub("", line))


class _RecordingStderr(io.TextIOWrapper):
    """The child's ``sys.stderr``: fd 2, recording each warning the frontend shows in ``record``.

    build prints a warning with one ``print`` (``_showwarning``), so one write holds all of it.
    """

    def __init__(self, record: Path) -> None:
        super().__init__(
            io.BufferedWriter(io.FileIO(2, "w", closefd=False)),
            encoding="utf-8",
            errors="replace",
            line_buffering=True,
        )
        self._record = record

    def write(self, text: str) -> int:
        plain = ANSI.sub("", text)
        if plain.startswith(WARNING_PREFIX):
            with contextlib.suppress(OSError), self._record.open("a", encoding="utf-8") as record:
                record.write(json.dumps(plain.removeprefix(WARNING_PREFIX)) + "\n")
        return super().write(text)


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


def _child(
    main: Callable[[], object],
    cwd: Path,
    env: Mapping[str, str],
    ends: Sequence[int],
    warnings: Path,
) -> None:  # pragma: no cover (runs in the forked child)
    code = 1
    try:
        os.setsid()
        for sig in CHILD_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        for fd, end in zip((1, 2), ends, strict=True):
            os.dup2(end, fd)
        # Python-level streams may be replaced (by a test harness, say): point them at fds 1 and 2;
        # buffered as a new interpreter's would be
        sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
        sys.stderr = _RecordingStderr(warnings)
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
