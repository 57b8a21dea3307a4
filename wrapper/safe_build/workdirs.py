"""Private work directories: one per run, owned through a kernel lock, swept once the owner is dead.

Layout under the state directory's ``tmp/`` (see ``state``): ``<name>/`` is the work directory
and ``<name>.lock`` its owner's lock, held for the owner's whole life. A later run that can take
a ``.lock`` knows its owner is gone (the kernel dropped the lock) and removes both. A lock file is
removed only by whoever holds it, and ``try_own`` checks after locking that the path still names
the file it locked, so even a name taken again can never have two owners.

A build asks for one of a few numbered *slots* of its tree (``<slot>-0`` to ``<slot>-3``), the
lowest free one: builds of one tree one after another run at the same path, so that what records
its build directory (debug information of compiled extensions) comes out the same each time, as
it does for plain builds in one place; builds at once still each get their own. When every slot is
busy, the name is a fresh random one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from safe_build.fsutil import remove_tree
from safe_build.locks import try_own, unwritable_state
from safe_build.state import State

SLOTS = 4


@contextlib.contextmanager
def private_dir(state: State, slot: str | None = None) -> Iterator[Path]:
    """A fresh directory only this process uses; removed on exit, or by a later run after a crash.

    ``slot`` names the tree it is for: the directory is then the lowest free slot of that name.
    """
    root = state.tmp
    names = [f"{slot}-{number}" for number in range(SLOTS)] if slot else []
    try:
        root.mkdir(mode=0o700, exist_ok=True)
        sweep(root)
        while True:
            name = names.pop(0) if names else secrets.token_hex(8)
            lock_path = root / f"{name}.lock"
            owner = try_own(lock_path)  # None: busy, or a sweep removed the new file before we locked it
            if owner is not None:
                break
    except OSError as error:
        raise unwritable_state(root, error) from None
    work = root / name
    try:
        if work.exists():  # a killed owner's, not swept yet: ours now that we hold its lock
            remove_tree(work)
        work.mkdir(mode=0o700)  # whatever the umask: another user can neither read nor plant a snapshot
        yield work
    finally:
        remove_tree(work)
        with contextlib.suppress(OSError):
            lock_path.unlink()
        os.close(owner)


def sweep(root: Path) -> int:
    """Remove the work directories of owners that no longer run; return how many were removed.

    ``root`` is a state directory's ``tmp/``: nowhere else is a ``X`` beside an unlocked ``X.lock``
    known to be a dead owner's.
    """
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
