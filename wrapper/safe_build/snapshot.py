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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from safe_build.config import Selection

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
    """True if the project-relative path ``relative`` (``/``-separated) is never copied.

    ``extra`` holds paths left out with everything below them (an output directory in the tree).
    """
    parts = relative.split("/")
    if _below_any(relative, extra):
        return True
    return any(_excluded_name(part, at_root=index == 0) for index, part in enumerate(parts))


def _below_any(relative: str, paths: frozenset[str]) -> bool:
    """True if ``relative`` is one of ``paths`` or lies below one of them."""
    return any(relative == path or relative.startswith(path + "/") for path in paths)


def _excluded_name(name: str, *, at_root: bool) -> bool:
    return (
        name in EXCLUDED_ANYWHERE or name.endswith(EXCLUDED_SUFFIX) or (at_root and name in EXCLUDED_AT_ROOT)
    )


def take(
    project: Path,
    destination: Path,
    *,
    exclude: Iterable[str] = (),
    selection: Selection | None = None,
    project_at_root: bool = True,
) -> Snapshot:
    """Copy ``project`` (a real, absolute path) to ``destination``, which must not exist yet.

    ``exclude`` names project-relative paths to leave out with everything below them, whatever
    ``selection`` (the user's include and exclude patterns) says: an output directory in the tree.
    ``project_at_root``: False when ``project`` is a repository whose project lies deeper.
    """
    entries, listed_by = listing(
        project, exclude=exclude, selection=selection, project_at_root=project_at_root
    )
    snapshot = Snapshot(destination, listed_by=listed_by)
    destination.mkdir(parents=True)
    for directory in sorted({os.path.dirname(entry) for entry in entries} - {""}):
        os.makedirs(destination / directory, exist_ok=True)  # once here, not once per file
    copier = _Copier(str(project), str(destination), snapshot, expand_dirs=listed_by == "git")
    for relative in entries:
        copier.copy_entry(relative)
    return snapshot


def listing(
    project: Path,
    *,
    exclude: Iterable[str] = (),
    selection: Selection | None = None,
    project_at_root: bool = True,
) -> tuple[list[str], str]:
    """The project-relative paths a snapshot of ``project`` copies, and what listed them: git or a walk.

    Files below a listed directory (a submodule, in a git listing) are not listed; they are copied
    all the same.
    """
    extra = frozenset(exclude)
    chosen = selection if selection is not None and (selection.include or selection.exclude) else None
    entries = _git_listing(project, extra, project_at_root=project_at_root)
    listed_by = "git"
    if entries is None:
        skip = (
            (lambda relative: relative in extra or chosen.excluded(relative))
            if chosen
            else extra.__contains__
        )
        entries, listed_by = list(_walk(str(project), skip)), "walk"
    if chosen is None:
        return entries, listed_by
    kept = {entry for entry in entries if not chosen.excluded(entry)}
    kept.update(entry for entry in _included(project, chosen) if not _below_any(entry, extra))
    return sorted(kept), listed_by


def _included(project: Path, selection: Selection) -> Iterator[str]:
    """Files and links the include patterns name, wherever they are (ignored or in excluded dirs).

    Each include root is walked on its own, without git; below it only the names that are never
    copied anywhere are skipped (a pattern that wants one names it in its fixed part).
    """
    for root in selection.include_roots():
        top = os.path.join(project, root) if root else str(project)
        if os.path.isdir(top) and not os.path.islink(top):
            base = root + "/" if root else ""
            for inner in _walk(top, lambda relative: False, root_exclusions=not root):
                if selection.included(base + inner) and not os.path.isdir(os.path.join(top, inner)):
                    yield base + inner
        elif os.path.lexists(top) and selection.included(root):
            yield root


def _git_listing(project: Path, extra: frozenset[str], *, project_at_root: bool) -> list[str] | None:
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
    if project_at_root and not {"pyproject.toml", "setup.py"} & set(paths):
        return None  # the project is ignored by the repository around it: git has no say here
    return sorted({path for path in paths if not excluded(path, extra)})


def _maybe_in_git_work_tree(project: Path) -> bool:
    """False only if git surely does not manage ``project``: no ``.git`` above it, no GIT_DIR."""
    if "GIT_DIR" in os.environ or "GIT_WORK_TREE" in os.environ:
        return True
    return any(os.path.lexists(os.path.join(directory, ".git")) for directory in (project, *project.parents))


def _walk(top: str, skip: Callable[[str], bool], *, root_exclusions: bool = True) -> Iterator[str]:
    """Paths relative to ``top`` of files, links and directories below it, pruning excluded ones.

    ``skip`` prunes further paths; ``root_exclusions``: ``top`` is a project, whose ``build`` and
    ``dist`` hold build output. Links to directories are listed, not followed: the copier decides
    what they become. Each directory is read once with ``scandir``, whose entry types need no
    further system call.
    """
    pending = [("", top)]
    while pending:
        base, directory = pending.pop()
        with os.scandir(directory) as listing:
            for entry in listing:
                relative = base + entry.name
                if _excluded_name(entry.name, at_root=root_exclusions and not base) or skip(relative):
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
        for inner in _walk(src, lambda relative: False):
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
