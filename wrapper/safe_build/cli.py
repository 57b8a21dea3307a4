"""The ``safe-build`` command: ``main(argv) -> int`` and the one place errors become messages."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType

from safe_build.errors import EXIT_BUILD_FAILED, SafeBuildError, Terminated

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def main(argv: Sequence[str] | None = None) -> int:
    """Run safe-build with ``argv`` (default: the process's arguments) and return its exit code."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    try:
        with _stop_signals_raise():
            return _command(arguments)
    except SafeBuildError as error:
        return _fail(str(error), error.exit_code)
    except OSError as error:  # the system refused something mid-way (disk full, permissions changed)
        where = f": {error.filename}" if error.filename else ""
        return _fail(f"{error.strerror or error}{where}", EXIT_BUILD_FAILED)
    except KeyboardInterrupt:
        return _fail("interrupted", 128 + signal.SIGINT)
    except Terminated as stop:
        return _fail(f"stopped by {signal.Signals(stop.signum).name}", 128 + stop.signum)
    except SystemExit as done:  # argparse: --help, --version and usage errors (exit code 2)
        return done.code if isinstance(done.code, int) else (0 if done.code is None else EXIT_BUILD_FAILED)


def _command(arguments: list[str]) -> int:
    """``safe-build cache|pip|venv …`` are those commands; anything else is a build (of ``./cache`` too).

    A command's module is imported when it runs: safe-pip's overhead must not include build's imports.
    """
    if arguments[:1] == ["cache"]:
        from safe_build.commands import cache  # noqa: PLC0415

        return cache.run(arguments[1:])
    if arguments[:1] == ["pip"]:
        from safe_build import pipgate  # noqa: PLC0415

        with pipgate.started(arguments[1:]) as gate:  # pip starts while safe-pip decides its locks
            from safe_build.commands import pip  # noqa: PLC0415

            return pip.run(arguments[1:], gate)
    if arguments[:1] == ["venv"]:
        from safe_build.commands import venv  # noqa: PLC0415

        return venv.run(arguments[1:])
    from safe_build.commands import build  # noqa: PLC0415

    return build.run(arguments)


def entrypoint() -> None:
    _exit(main())


def pip_entrypoint() -> None:
    """``safe-pip ARGS`` is ``safe-build pip ARGS``, and lock holder records say so."""
    sys.argv[1:1] = ["pip"]
    _exit(main())


def _exit(code: int) -> None:
    """Exit with ``code`` once the output is flushed, without tearing down the interpreter.

    ``main`` has released every lock and removed every private directory by now, and nothing
    registers exit handlers; the teardown of all the modules loaded would only keep the caller
    (pip's, a build's) waiting 15-20 ms more.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):  # a reader that went away (| head) has all it wanted
            stream.flush()
    os._exit(code)


def _fail(message: str, code: int) -> int:
    from safe_build import progress  # noqa: PLC0415

    progress.labelled("error", _one_line(message))
    return code


def _one_line(message: str) -> str:
    """``message`` on one line whatever the paths in it hold: a control character (a newline in a
    file name) as its escape, a byte that is not UTF-8 (a surrogate from the file system) as ``\\xNN``."""
    if message.isprintable():
        return message
    return "".join(_escaped(char) if not char.isprintable() else char for char in message)


def _escaped(char: str) -> str:
    if "\udc80" <= char <= "\udcff":  # os.fsdecode's stand-in for an undecodable byte
        return f"\\x{ord(char) - 0xDC00:02x}"
    return repr(char)[1:-1]


@contextlib.contextmanager
def _stop_signals_raise() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into an exception, so cleanup runs as it does for Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        raise Terminated(signum)

    # a signal ignored at start stays ignored: nohup safe-build … must survive a hangup
    wanted = [sig for sig in STOP_SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN]
    previous = {sig: signal.signal(sig, stop) for sig in wanted}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
