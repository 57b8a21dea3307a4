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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

EXCLUDED_ANYWHERE = frozenset({".git", ".hg", ".svn", ".tox", ".nox", ".venv", "node_modules", "__pycache__"})
EXCLUDED_AT_ROOT = frozenset(
    {"build", "dist"}
)  # setuptools' and build's output; deeper, they may be packages
EXCLUDED_SUFFIX = ".egg-info"


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
    if relative in extra:
        return True
    parts = relative.split("/")
    return any(_excluded_name(part, at_root=index == 0) for index, part in enumerate(parts))


def _excluded_name(name: str, *, at_root: bool) -> bool:
    return (
        name in EXCLUDED_ANYWHERE or name.endswith(EXCLUDED_SUFFIX) or (at_root and name in EXCLUDED_AT_ROOT)
    )


def take(project: Path, destination: Path, *, exclude: Iterable[str] = ()) -> Snapshot:
    """Copy ``project`` (a real, absolute path) to ``destination``, which must not exist yet.

    ``exclude`` names extra project-relative paths to leave out, such as an output directory
    inside the project.
    """
    entries, listed_by = listing(project, exclude=exclude)
    snapshot = Snapshot(destination, listed_by=listed_by)
    destination.mkdir(parents=True)
    for directory in sorted({os.path.dirname(entry) for entry in entries} - {""}):
        os.makedirs(destination / directory, exist_ok=True)  # once here, not once per file
    copier = _Copier(str(project), str(destination), snapshot, expand_dirs=listed_by == "git")
    for relative in entries:
        copier.copy_entry(relative)
    return snapshot


def listing(project: Path, *, exclude: Iterable[str] = ()) -> tuple[list[str], str]:
    """The project-relative paths a snapshot of ``project`` copies, and what listed them: git or a walk.

    Files below a listed directory (a submodule, in a git listing) are not listed; they are copied
    all the same.
    """
    extra = frozenset(exclude)
    entries = _git_listing(project, extra)
    if entries is None:
        return list(_walk(str(project), extra)), "walk"
    return entries, "git"


def _git_listing(project: Path, extra: frozenset[str]) -> list[str] | None:
    """Project-relative paths git would put in a commit, or None if git does not manage the tree."""
    if not _maybe_in_git_work_tree(project):
        return None  # spares a git process (a few milliseconds) on every build outside a repository
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


def _maybe_in_git_work_tree(project: Path) -> bool:
    """False only if git surely does not manage ``project``: no ``.git`` above it, no GIT_DIR."""
    if "GIT_DIR" in os.environ or "GIT_WORK_TREE" in os.environ:
        return True
    return any(os.path.lexists(os.path.join(directory, ".git")) for directory in (project, *project.parents))


def _walk(top: str, extra: frozenset[str]) -> Iterator[str]:
    """Project-relative paths of files, links and directories below ``top``, pruning excluded ones.

    Links to directories are listed, not followed: the copier decides what they become. Each
    directory is read once with ``scandir``, whose entry types need no further system call.
    """
    pending = [("", top)]
    while pending:
        base, directory = pending.pop()
        with os.scandir(directory) as listing:
            for entry in listing:
                relative = base + entry.name
                if _excluded_name(entry.name, at_root=not base) or relative in extra:
                    continue
                yield relative
                if entry.is_dir(follow_symlinks=False):
                    pending.append((relative + "/", entry.path))


class _Copier:
    """Copies listed entries; ``expand_dirs``: a listed directory still needs walking (git's submodules).

    One thread and plain ``str`` paths: for a tree of small files the cost is Python's per-file
    overhead, which threads (bound by the GIL) and ``Path`` objects only add to; this way a copy
    runs about as fast as ``cp -a``.
    """

    def __init__(self, source: str, destination: str, snapshot: Snapshot, *, expand_dirs: bool) -> None:
        self.source = source
        self.destination = destination
        self.snapshot = snapshot
        self.expand_dirs = expand_dirs

    def copy_entry(self, relative: str) -> None:
        self._copy(
            self.source + "/" + relative, self.destination + "/" + relative, relative, self.expand_dirs
        )

    def _copy(self, src: str, dst: str, relative: str, expand: bool) -> None:
        try:
            info = os.lstat(src)
        except FileNotFoundError:
            return  # deleted from the work tree but still in git's index
        if stat.S_ISREG(info.st_mode):
            self._copy_file(src, dst, info)
        elif stat.S_ISLNK(info.st_mode):
            self._copy_link(src, dst, relative)
        elif stat.S_ISDIR(info.st_mode):
            os.makedirs(dst, exist_ok=True)  # also keeps empty directories of a walked tree
            if expand:
                self._copy_dir(src, dst, relative)
        else:
            self.snapshot.skipped.append(relative)

    def _copy_dir(self, src: str, dst: str, relative: str) -> None:
        for inner in _walk(src, frozenset()):
            self._copy(f"{src}/{inner}", f"{dst}/{inner}", f"{relative}/{inner}", False)

    def _copy_file(self, src: str, dst: str, info: os.stat_result) -> None:
        """A real copy in a handful of system calls: this runs once per file of large trees."""
        source = os.open(src, os.O_RDONLY)
        try:
            try:
                target = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileNotFoundError:  # below a directory reached through a link or a submodule
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                target = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                offset, size = 0, info.st_size
                while offset < size:
                    sent = os.sendfile(target, source, offset, size - offset)
                    if not sent:
                        break  # the file shrank while we copied it
                    offset += sent
                os.fchmod(target, stat.S_IMODE(info.st_mode) | stat.S_IWUSR | stat.S_IRUSR)
                os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))  # sdists record file times
            finally:
                os.close(target)
        finally:
            os.close(source)
        self.snapshot.files += 1

    def _copy_link(self, src: str, dst: str, relative: str) -> None:
        target = os.path.realpath(src)
        inside = target == self.source or target.startswith(self.source + os.sep)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if inside or not os.path.exists(target):
            # inside: to the same place in the copy; dangling: as it is, as a plain copy would keep it
            link = os.readlink(src)
            if inside:
                copied = os.path.join(self.destination, os.path.relpath(target, self.source))
                link = os.path.relpath(copied, os.path.dirname(dst))
            os.symlink(link, dst)
            self.snapshot.links += 1
        elif os.path.isdir(target):
            os.makedirs(dst, exist_ok=True)
            self._copy_dir(target, dst, relative)
        else:
            self._copy_file(target, dst, os.stat(target))
