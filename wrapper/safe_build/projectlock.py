"""The locks on things a user names by path: a project tree and a Python environment.

Every command that reads or writes a project tree takes the same project lock: a build's
snapshot holds it shared; an in-place build and an editable install hold it exclusive, because
they write into the tree. Every command that changes an environment holds its environment lock
exclusive. Lock files are named after the path's last component (for whoever reads the
directory) and a digest of the whole path (so that two paths never share one).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from safe_build.locks import NamedLock

ENVIRONMENT_LOCK_NAME = ".safe-build-env.lock"


def keyed_lock_file(cache: Path, kind: str, path: Path) -> Path:
    """The lock file for ``path`` (a real path) under the cache directory ``cache``."""
    digest = hashlib.sha256(os.fsencode(path)).hexdigest()[:16]
    return cache / "locks" / f"{kind}-{path.name}-{digest}.lock"


def project_lock(cache: Path, project: Path, timeout: float) -> NamedLock:
    """The lock on the project directory ``project`` (its real path)."""
    return NamedLock(
        keyed_lock_file(cache, "project", project), what="project", subject=project, timeout=timeout
    )


def environment_lock(cache: Path, path: Path, timeout: float, *, inside: bool) -> NamedLock:
    """The lock on the install location ``path`` (a real path).

    A venv's lock file lives inside it (``inside``): it goes when the venv is deleted, and it is
    the same file whatever safe-build's cache directory. Other install locations are locked
    through the cache directory: a system Python's prefix is not ours to write into, and a lock
    file in a ``--target``, ``--prefix`` or ``--root`` directory would end up in what the user
    ships.
    """
    lock_file = path / ENVIRONMENT_LOCK_NAME if inside else keyed_lock_file(cache, "environment", path)
    return NamedLock(lock_file, what="environment", subject=path, timeout=timeout)
