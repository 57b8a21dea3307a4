"""Private work directories: one per run, owned through a kernel lock, swept once the owner is dead.

Layout under ``<cache>/tmp/``: ``<name>/`` is the work directory and ``<name>.lock`` its owner's
lock, held for the owner's whole life. A later run that can take a ``.lock`` knows its owner is
gone (the kernel dropped the lock) and removes both. Names are never reused, so removing a dead
owner's lock file cannot let two owners share one directory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import filelock

from safe_build.fsutil import remove_tree


class _Replaced(Exception):
    """The lock file was swept away between its creation and our lock on it; take another name."""


@contextlib.contextmanager
def private_dir(cache_dir: Path) -> Iterator[Path]:
    """A fresh directory only this process uses; removed on exit, or by a later run after a crash."""
    root = cache_dir / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    sweep(root)
    while True:
        name = f"{os.getpid()}-{secrets.token_hex(6)}"
        lock_path = root / f"{name}.lock"
        lock = filelock.FileLock(lock_path, is_singleton=False, on_acquired=_same_file_as(lock_path))
        try:
            lock.acquire(blocking=False)
        except (_Replaced, filelock.Timeout):
            continue
        break
    work = root / name
    try:
        work.mkdir()
        yield work
    finally:
        remove_tree(work)
        lock.release()
        with contextlib.suppress(OSError):
            lock_path.unlink()


def sweep(root: Path) -> int:
    """Remove the work directories of owners that no longer run; return how many were removed."""
    removed = 0
    for lock_path in root.glob("*.lock"):
        lock = filelock.FileLock(lock_path, is_singleton=False)
        try:
            lock.acquire(blocking=False)
        except (filelock.Timeout, OSError):
            continue  # alive, or already swept by someone else
        try:
            work = lock_path.with_suffix("")
            if work.exists():
                remove_tree(work)
                removed += 1
            with contextlib.suppress(OSError):
                lock_path.unlink()
        finally:
            lock.release()
    return removed


def _same_file_as(path: Path) -> Callable[[int], None]:
    def check(fd: int) -> None:
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if not same:
            raise _Replaced(path)

    return check
