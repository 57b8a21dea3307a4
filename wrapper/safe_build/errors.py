"""The few exceptions safe-build raises; the CLI turns each into one line and an exit code.

Exit codes (documented in the README):
  0  success
  1  the build itself failed (the backend or the ``build`` frontend reported an error), or a
     remote cache that the settings require failed
  2  bad input: command line, source directory, project files, output directory, settings
  3  a lock could not be taken within the lock timeout
  128+N  stopped by signal N (130 for Ctrl-C, 143 for SIGTERM)
"""

from __future__ import annotations

# typing.TYPE_CHECKING without importing typing, and pathlib for type checking only: safe-pip
# imports this before it starts pip, and each costs it milliseconds there
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

EXIT_BUILD_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_LOCK_TIMEOUT = 3


class SafeBuildError(Exception):
    """An error the user can act on: what went wrong, where, and what to do about it."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, *, hint: str = "", path: Path | str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.path = path

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class BuildFailed(SafeBuildError):
    """The build frontend or backend failed; its output has been shown."""

    exit_code = EXIT_BUILD_FAILED


class LockTimeout(SafeBuildError, TimeoutError):
    """A lock stayed busy for longer than the lock timeout."""

    exit_code = EXIT_LOCK_TIMEOUT


class Terminated(BaseException):
    """Raised in the main thread when SIGTERM or SIGHUP arrives, so cleanup runs as for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
