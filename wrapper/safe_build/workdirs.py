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
from collections.abc import Iterator
from pathlib import Path

from safe_build.fsutil import remove_tree
from safe_build.locks import try_own, unwritable_state


@contextlib.contextmanager
def private_dir(cache_dir: Path) -> Iterator[Path]:
    """A fresh directory only this process uses; removed on exit, or by a later run after a crash."""
    root = cache_dir / "tmp"
    try:
        root.mkdir(parents=True, exist_ok=True)
        sweep(root)
        while True:
            name = f"{os.getpid()}-{secrets.token_hex(6)}"
            lock_path = root / f"{name}.lock"
            owner = try_own(lock_path)  # None: a sweep removed the new file before we locked it
            if owner is not None:
                break
    except OSError as error:
        raise unwritable_state(root, error) from None
    work = root / name
    try:
        work.mkdir()
        yield work
    finally:
        remove_tree(work)
        with contextlib.suppress(OSError):
            lock_path.unlink()
        os.close(owner)


def sweep(root: Path) -> int:
    """Remove the work directories of owners that no longer run; return how many were removed."""
    removed = 0
    for lock_path in root.glob("*.lock"):
        try:
            owner = try_own(lock_path)
        except OSError:  # not ours to open, so not ours to sweep
            continue
        if owner is None:
            continue  # alive, or already swept by someone else
        try:
            work = lock_path.with_suffix("")
            if work.exists():
                remove_tree(work)
                removed += 1
            with contextlib.suppress(OSError):
                lock_path.unlink()
        finally:
            os.close(owner)
    return removed
