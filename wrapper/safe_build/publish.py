"""Atomic publication of finished artifacts into the user's output directory.

An artifact is written to a hidden temporary file in the output directory, flushed to disk and
renamed over its final name, so the final name only ever shows a complete file.

A temporary belongs to whoever holds an exclusive ``flock`` on it: the writer takes it the moment
the file exists and keeps it until the file is renamed into place or removed. A writer killed
mid-copy leaves a hidden file nobody holds, which the next publication into that directory
removes. Pids would not do: a builder in another pid namespace (a container sharing a
bind-mounted ``dist/``) writes with a pid that means nothing here, and a pid may be reused.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from safe_build.errors import SafeBuildError
from safe_build.fsutil import NO_LOCKS, fsync_dir, still_names

_TEMP_SUFFIX = ".safe-build-tmp"
# ``.<name>.<random>.safe-build-tmp``; also the ``.<name>.<random>.<pid>.safe-build-tmp`` of older
# versions, which nobody holds a lock on either: only the lock decides, never the name.
_TEMP_NAME = re.compile(r"^\..+" + re.escape(_TEMP_SUFFIX) + "$")
# flock errors of a file system that has no locks (as locks.py classifies them)


def check_output_dir(outdir: Path) -> None:
    """Fail before building if ``outdir`` cannot be created or written; create nothing."""
    probe = outdir
    try:
        while not probe.exists():
            if probe.is_symlink():
                raise SafeBuildError(
                    f"output directory {outdir} is a broken symbolic link", hint="choose another with -o"
                )
            probe = probe.parent
    except OSError as error:  # a name too long, a loop of links
        raise SafeBuildError(
            f"cannot use output directory {outdir} ({error.strerror})", hint="choose another with -o"
        ) from None
    if not probe.is_dir():
        what = "output directory" if probe == outdir else f"output directory {outdir}: parent"
        raise SafeBuildError(f"{what} {probe} is not a directory", hint="choose another with -o")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise SafeBuildError(
            f"cannot write to output directory {outdir} (no write permission on {probe})",
            hint="choose another with -o",
        )


def publish_files(sources: Sequence[Path], outdir: Path) -> list[Path]:
    """Publish ``sources`` into the user's ``outdir`` (see ``place_files``); the final paths.

    A failure (a full disk) publishes nothing: it is one line naming the file and the directory,
    and the directories made for it are removed again if empty.
    """
    made = [directory for directory in (outdir, *outdir.parents) if not directory.exists()]
    try:
        return place_files(sources, outdir)
    except _NotPlaced as failure:
        for directory in made:
            with contextlib.suppress(OSError):
                directory.rmdir()
        full = failure.error.errno in (errno.ENOSPC, errno.EDQUOT)
        raise SafeBuildError(
            f"cannot write {failure.source.name} to the output directory {outdir} ({failure.error.strerror})",
            hint="make room there, or choose another with -o" if full else "choose another with -o",
            path=outdir,
        ) from None


class _NotPlaced(OSError):
    """``source`` could not be written: ``error`` says why."""

    def __init__(self, source: Path, error: OSError) -> None:
        super().__init__(error.errno, error.strerror, error.filename)
        self.source = source
        self.error = error


def place_files(sources: Sequence[Path], outdir: Path) -> list[Path]:
    """Copy ``sources`` into ``outdir`` under their own names, all or none; the final paths.

    Every file is first written whole to its hidden temporary and synced, and only then are they
    renamed into place, so a failure (an OSError) leaves nothing behind.
    """
    with contextlib.ExitStack() as staged:
        temporaries = []
        for source in sources:
            try:
                temporaries.append(staged.enter_context(_staged(source, outdir)))
            except OSError as error:
                raise _NotPlaced(source, error) from None
        placed = []
        for temporary, source in zip(temporaries, sources, strict=True):
            os.replace(temporary, outdir / source.name)
            placed.append(outdir / source.name)
    fsync_dir(outdir)
    return placed


@contextlib.contextmanager
def _staged(source: Path, outdir: Path) -> Iterator[str]:
    """``source`` copied whole and synced into a hidden temporary in ``outdir``; removed on exit
    unless it was renamed into place meanwhile. Ours (locked) until then."""
    outdir.mkdir(parents=True, exist_ok=True)
    remove_dead_temporaries(outdir)
    with _owned_temporary(outdir, source.name) as (fd, temporary):
        # closefd=False: the descriptor carries the lock, which must outlive the copy until the
        # caller has renamed the temporary into place
        with os.fdopen(fd, "wb", closefd=False) as out, source.open("rb") as data:
            shutil.copyfileobj(data, out, 1 << 20)
            os.fchmod(out.fileno(), stat.S_IMODE(os.fstat(data.fileno()).st_mode))  # mkstemp gave 0600
            out.flush()
            os.fsync(out.fileno())
        yield temporary


def write_text_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new content, never a mix."""
    with replacing(path) as out:
        out.write(text.encode("utf-8"))


@contextlib.contextmanager
def replacing(final: Path) -> Iterator[BinaryIO]:
    """Yield a hidden temporary file beside ``final``; on success it is synced and renamed over it."""
    with _owned_temporary(final.parent, final.name) as (fd, temporary):
        with os.fdopen(fd, "wb", closefd=False) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, final)  # still locked: a cleaner cannot take it before it is in place
    fsync_dir(final.parent)


@contextlib.contextmanager
def _owned_temporary(directory: Path, name: str) -> Iterator[tuple[int, str]]:
    """A new hidden temporary for ``name`` in ``directory``, locked exclusively: its descriptor and
    path. On exit it is removed unless it was renamed meanwhile, and only then unlocked."""
    while True:
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=_TEMP_SUFFIX)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as error:
            if error.errno in NO_LOCKS:
                # No locks on this file system: a cleaner cannot lock it either, so it never judges
                # the temporary dead; the cost is that a killed writer's leftover stays.
                break
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        # Between mkstemp and flock a cleaner may have found the file unlocked and removed it (it
        # holds the lock while it unlinks, so once we have the lock that has happened or never
        # will): a lock on a file no longer at its name protects nothing, so start again.
        if os.path.lexists(temporary):
            break
        os.close(fd)
    try:
        yield fd, temporary
    finally:
        # Unlink before unlocking: once the lock is gone the name may be anybody's to judge.
        with contextlib.suppress(OSError):
            if still_names(temporary, fd):
                os.unlink(temporary)
        os.close(fd)


def remove_dead_temporaries(outdir: Path) -> None:
    """Remove temporary files left in ``outdir`` by writers that were killed: those nobody holds."""
    with os.scandir(outdir) as entries:
        for entry in entries:
            # not even opened unless a plain file: opening a device or a FIFO may have effects
            if _TEMP_NAME.match(entry.name) and entry.is_file(follow_symlinks=False):
                _remove_if_unowned(entry.path)


def _remove_if_unowned(path: str) -> None:
    """Unlink ``path`` if no process holds a lock on it. Anything unexpected (it is gone, became a
    link, is not ours to read, the file system has no locks) leaves it alone: not ours to judge."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # The writer may have renamed its file into place and let go meanwhile: the lock we got is
        # then on its published artifact, and the name is not that file any more (or is another).
        if still_names(path, fd):
            os.unlink(path)
    except OSError:
        return
    finally:
        os.close(fd)
