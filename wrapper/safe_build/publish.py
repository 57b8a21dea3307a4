"""Atomic publication of finished artifacts into the user's output directory.

An artifact is written to a hidden temporary file in the output directory, flushed to disk and
renamed over its final name, so the final name only ever shows a complete file. The temporary
name carries the writer's pid: a writer killed mid-copy leaves a hidden file that the next
publication into that directory removes.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from safe_build.errors import SafeBuildError
from safe_build.fsutil import fsync_dir
from safe_build.processes import pid_alive

_TEMP_SUFFIX = ".safe-build-tmp"
_TEMP_NAME = re.compile(r"^\..*\.(?P<pid>\d+)" + re.escape(_TEMP_SUFFIX) + "$")


def check_output_dir(outdir: Path) -> None:
    """Fail before building if ``outdir`` cannot be created or written; create nothing."""
    probe = outdir
    while not probe.exists():
        if probe.is_symlink():
            raise SafeBuildError(
                f"output directory {outdir} is a broken symbolic link", hint="choose another with -o"
            )
        probe = probe.parent
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
        raise SafeBuildError(
            f"cannot write {failure.source.name} to the output directory {outdir} ({failure.error.strerror})",
            hint="make room there, or choose another with -o",
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
    unless it was renamed into place meanwhile."""
    outdir.mkdir(parents=True, exist_ok=True)
    remove_dead_temporaries(outdir)
    fd, temporary = tempfile.mkstemp(
        dir=outdir, prefix=f".{source.name}.", suffix=f".{os.getpid()}{_TEMP_SUFFIX}"
    )
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as data:
            shutil.copyfileobj(data, out, 1 << 20)
            os.fchmod(out.fileno(), stat.S_IMODE(os.fstat(data.fileno()).st_mode))  # mkstemp gave 0600
            out.flush()
            os.fsync(out.fileno())
        yield temporary
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def write_text_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new content, never a mix."""
    with replacing(path) as out:
        out.write(text.encode("utf-8"))


@contextlib.contextmanager
def replacing(final: Path) -> Iterator[BinaryIO]:
    """Yield a hidden temporary file beside ``final``; on success it is synced and renamed over it."""
    fd, temporary = tempfile.mkstemp(
        dir=final.parent, prefix=f".{final.name}.", suffix=f".{os.getpid()}{_TEMP_SUFFIX}"
    )
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    fsync_dir(final.parent)


def remove_dead_temporaries(outdir: Path) -> None:
    """Remove temporary files left in ``outdir`` by writers that were killed."""
    for entry in os.scandir(outdir):
        match = _TEMP_NAME.match(entry.name)
        if match and not pid_alive(int(match["pid"])):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
