"""A private copy of a project's source tree, for a backend to build in and write to at will.

What is copied: inside a git work tree, what git lists (tracked files plus untracked files that
are not ignored); elsewhere, a walk. Directories that hold tools' state or build output are never
copied or even read (``EXCLUDED_ANYWHERE``, ``EXCLUDED_AT_ROOT``). Files are real copies, never
hard links (a backend writing through a hard link would change the user's file) and are made
writable by their owner. A symbolic link to something inside the project stays a link, pointing
at the same place in the copy; one pointing outside is copied as what it points to. Sockets,
fifos and devices are skipped.
"""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

EXCLUDED_ANYWHERE = frozenset({".git", ".hg", ".svn", ".tox", ".nox", ".venv", "node_modules", "__pycache__"})
EXCLUDED_AT_ROOT = frozenset(
    {"build", "dist"}
)  # setuptools' and build's output; deeper, they may be packages
EXCLUDED_SUFFIX = ".egg-info"
_COPY_THREADS = 8  # copying is system calls; threads overlap their latency


@dataclass
class Snapshot:
    """What a copy contains, for ``-v`` output and tests."""

    root: Path
    files: int = 0
    links: int = 0
    skipped: list[str] = field(default_factory=list)
    listed_by: str = "walk"


def excluded(relative: str, extra: frozenset[str] = frozenset()) -> bool:
    """True if the project-relative path ``relative`` (``/``-separated) is never copied."""
    parts = relative.split("/")
    if parts[0] in EXCLUDED_AT_ROOT or relative in extra:
        return True
    return any(part in EXCLUDED_ANYWHERE or part.endswith(EXCLUDED_SUFFIX) for part in parts)


def take(project: Path, destination: Path, *, exclude: Iterable[str] = ()) -> Snapshot:
    """Copy ``project`` (a real, absolute path) to ``destination``, which must not exist yet.

    ``exclude`` names extra project-relative paths to leave out, such as an output directory
    inside the project.
    """
    entries, listed_by = listing(project, exclude=exclude)
    snapshot = Snapshot(destination, listed_by=listed_by)
    destination.mkdir(parents=True)
    for directory in sorted({os.path.dirname(entry) for entry in entries} - {""}):
        os.makedirs(destination / directory, exist_ok=True)  # once here, not once per file in the threads
    copier = _Copier(project, destination, snapshot, expand_dirs=snapshot.listed_by == "git")
    # a few batches per thread, not one task per file: 20,000 futures cost more than the copies
    batches = [entries[start :: _COPY_THREADS * 4] for start in range(_COPY_THREADS * 4)]
    with ThreadPoolExecutor(_COPY_THREADS) as pool:
        for _ in pool.map(copier.copy_all, batches):
            pass
    return snapshot


def listing(project: Path, *, exclude: Iterable[str] = ()) -> tuple[list[str], str]:
    """The project-relative paths a snapshot of ``project`` copies, and what listed them: git or a walk.

    Files below a listed directory (a submodule, in a git listing) are not listed; they are copied
    all the same.
    """
    extra = frozenset(exclude)
    entries = _git_listing(project, extra)
    if entries is None:
        return list(_walk(project, extra)), "walk"
    return entries, "git"


def _git_listing(project: Path, extra: frozenset[str]) -> list[str] | None:
    """Project-relative paths git would put in a commit, or None if git does not manage the tree."""
    pathspecs = [f":(exclude,glob)**/{name}/**" for name in EXCLUDED_ANYWHERE]
    pathspecs += [f":(exclude){name}" for name in EXCLUDED_AT_ROOT]
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", ".", *pathspecs],
            cwd=project,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None  # no git, or not a work tree
    paths = [os.fsdecode(raw) for raw in listing.split(b"\0") if raw]
    if not {"pyproject.toml", "setup.py"} & set(paths):
        return None  # the project is ignored by the repository around it: git has no say here
    return sorted({path for path in paths if not excluded(path, extra)})


def _walk(top: Path, extra: frozenset[str]) -> Iterator[str]:
    """Project-relative paths of files, links and directories below ``top``, pruning excluded ones."""
    for current, dirs, files in os.walk(top):
        relative_dir = os.path.relpath(current, top).replace(os.sep, "/")
        base = "" if relative_dir == "." else relative_dir + "/"
        kept = []
        for name in dirs:
            relative = base + name
            if excluded(relative, extra):
                continue
            if os.path.islink(os.path.join(current, name)):
                yield relative  # copied by _Copier as a link or as what it points to; not walked here
            else:
                kept.append(name)
                yield relative
        dirs[:] = kept
        for name in files:
            relative = base + name
            if not excluded(relative, extra):
                yield relative


class _Copier:
    """Copies listed entries; ``expand_dirs``: a listed directory still needs walking (git's submodules)."""

    def __init__(self, source: Path, destination: Path, snapshot: Snapshot, *, expand_dirs: bool) -> None:
        self.source = source
        self.destination = destination
        self.snapshot = snapshot
        self.expand_dirs = expand_dirs
        self._count = threading.Lock()

    def copy_all(self, entries: list[str]) -> None:
        for relative in entries:
            self.copy_entry(
                self.source / relative, self.destination / relative, relative, expand=self.expand_dirs
            )

    def copy_entry(self, src: Path, dst: Path, relative: str, *, expand: bool = False) -> None:
        try:
            info = os.lstat(src)
        except FileNotFoundError:
            return  # deleted from the work tree but still in git's index
        if stat.S_ISLNK(info.st_mode):
            self._copy_link(src, dst, relative)
        elif stat.S_ISREG(info.st_mode):
            self._copy_file(src, dst, info)
        elif stat.S_ISDIR(info.st_mode):
            dst.mkdir(parents=True, exist_ok=True)  # also keeps empty directories of a walked tree
            if expand:
                self._copy_dir(src, dst, relative)
        else:
            with self._count:
                self.snapshot.skipped.append(relative)

    def _copy_dir(self, src: Path, dst: Path, relative: str) -> None:
        for inner in _walk(src, frozenset()):
            self.copy_entry(src / inner, dst / inner, f"{relative}/{inner}")

    def _copy_file(self, src: Path, dst: Path, info: os.stat_result) -> None:
        """A real copy in a handful of system calls: this runs once per file of large trees."""
        source = os.open(src, os.O_RDONLY)
        try:
            try:
                target = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileNotFoundError:  # below a directory reached through a link or a submodule
                dst.parent.mkdir(parents=True, exist_ok=True)
                target = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                offset = 0
                while sent := os.sendfile(target, source, offset, max(info.st_size - offset, 1 << 20)):
                    offset += sent
                os.fchmod(target, stat.S_IMODE(info.st_mode) | stat.S_IWUSR | stat.S_IRUSR)
                os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))  # sdists record file times
            finally:
                os.close(target)
        finally:
            os.close(source)
        with self._count:
            self.snapshot.files += 1

    def _copy_link(self, src: Path, dst: Path, relative: str) -> None:
        target = os.path.realpath(src)
        inside = target == str(self.source) or target.startswith(str(self.source) + os.sep)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if inside or not os.path.exists(target):
            # inside: to the same place in the copy; dangling: as it is, as a plain copy would keep it
            link = os.readlink(src)
            if inside:
                link = os.path.relpath(self.destination / os.path.relpath(target, self.source), dst.parent)
            os.symlink(link, dst)
            with self._count:
                self.snapshot.links += 1
        elif os.path.isdir(target):
            dst.mkdir(exist_ok=True)
            self._copy_dir(Path(target), dst, relative)
        else:
            self._copy_file(Path(target), dst, os.stat(target))
