"""File-system helpers shared by the modules that create and remove private state."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def remove_tree(path: Path) -> None:
    """Remove a directory tree, also when it holds read-only files or directories.

    A tree that is already gone (removed by a concurrent cleaner) is not an error.
    """

    def make_writable_and_retry(func: Callable[..., Any], failed: str, error: object) -> None:
        exc = error[1] if isinstance(error, tuple) else error
        if isinstance(exc, FileNotFoundError):
            return
        if not isinstance(exc, PermissionError):
            raise exc  # type: ignore[misc]
        parent = os.path.dirname(failed)
        os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
        if func in (os.rmdir, os.unlink, os.remove):
            func(failed)
        else:  # listing a directory we could not read: make it readable and start over on it
            os.chmod(failed, os.stat(failed).st_mode | stat.S_IRWXU)
            remove_tree(Path(failed))

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=make_writable_and_retry)
    else:
        shutil.rmtree(path, onerror=make_writable_and_retry)


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# what flock fails with on a file system that has no locks (as filelock classifies them)
NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP)


def still_names(path: Path | str, fd: int) -> bool:
    """True if ``path`` (not followed) is still the file open as ``fd``: a lock taken on a file
    that was removed or replaced meanwhile protects nothing."""
    try:
        return os.path.samestat(os.fstat(fd), os.lstat(path))
    except FileNotFoundError:
        return False


def private_to_us(path: Path) -> bool:
    """Whether ``path`` (not followed if a link) is ours and nobody else can write to it: what
    safe-build made; anything else in its state is not trusted."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return info.st_uid == os.geteuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
