"""The one module that uses check-manifest's functions, behind a wall.

check-manifest's promised interface is its command line, which builds an sdist of its own. The
check hook has built the sdist already, so it compares that one with git's file list through
check-manifest's functions (its ignore rules, ``MANIFEST.in``, its sdist listing): no second
build, and a nested package's files can be told apart. Those functions may change in any release.
So nothing else imports them; at import each is checked to be there and to accept the call made
here. If one is off, :data:`PROBLEM` says what, and the check runs check-manifest's command line
in the package instead (slower: it builds an sdist), after one warning.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import check_manifest

from safe_build.apicheck import Call, unfit

# How each function is called here; the values are placeholders, never used.
_CALLS: tuple[Call, ...] = (
    ("UI", (), {"verbosity": 0}),
    ("cd", (".",), {}),
    ("read_config", (), {}),
    ("read_manifest", (object(),), {}),
    ("get_vcs_files", (object(),), {}),
    ("strip_sdist_extras", (object(), []), {}),
    ("get_sdist_file_list", ("a.tar.gz", object()), {}),
)


class ManifestError(Exception):
    """check-manifest could not list the files (no VCS, an unreadable sdist): its own message."""


def _problem() -> str | None:
    failure = getattr(check_manifest, "Failure", None)
    if not (isinstance(failure, type) and issubclass(failure, Exception)):
        return "check_manifest.Failure is missing"
    return unfit(check_manifest, "check_manifest", _CALLS)


PROBLEM = _problem()


def tracked_and_packed(package: Path, sdist: Path) -> tuple[list[str], list[str]]:
    """The files git tracks in ``package`` and those ``sdist`` holds, each less what check-manifest's
    rules ignore (its defaults, ``[tool.check-manifest] ignore``, what ``MANIFEST.in`` excludes).
    Only while :data:`PROBLEM` is None."""
    cm: Any = check_manifest
    ui = cm.UI(verbosity=0)
    try:
        with cm.cd(package):
            ignore, _ = cm.read_config()
            ignore += cm.read_manifest(ui)
            tracked: list[str] = cm.strip_sdist_extras(ignore, cm.get_vcs_files(ui))
        packed: list[str] = cm.get_sdist_file_list(str(sdist), ignore)
    except cm.Failure as error:
        raise ManifestError(str(error)) from None
    return tracked, packed


def command_line_check(package: Path, warn: Callable[[str], None]) -> str | None:
    """check-manifest's own command line in ``package`` (it builds an sdist of its own): None if
    it is content, else what it said. ``warn`` gets the one line saying why it is used."""
    warn(
        f"check-manifest {getattr(check_manifest, '__version__', '?')} is not one this hook knows "
        f"({PROBLEM}); running its command line, which builds an sdist of its own"
    )
    command = [sys.executable, "-m", "check_manifest", str(package)]
    done = subprocess.run(
        command,
        cwd=package,
        env={**os.environ, "COLUMNS": "1000"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if done.returncode == 0:
        return None
    return "\n".join(["check-manifest:", *(line.rstrip() for line in done.stdout.splitlines())])
