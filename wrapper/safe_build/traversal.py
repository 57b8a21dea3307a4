"""What a snapshot of a tree holds: the one place where those rules live.

The copy (``snapshot``) and the cache key (``cachekey``) both walk a tree through ``visit``, so
that the key can only describe what a copy takes. The rules:

- **Listing.** Inside a git work tree, what git would put in a commit (tracked files, and
  untracked ones that are not ignored); elsewhere, a walk. Directories that hold tools' state or
  build output are never listed or even read (``EXCLUDED_ANYWHERE``, ``EXCLUDED_AT_ROOT``), nor
  are an output directory and safe-build's own state directory when they lie in the tree. The
  user's include and exclude patterns shape the rest.
- **Directories** that a listing names without their content (git's submodules) are walked.
- **Links inside** the tree (or inside a directory brought along, below) stay links.
- **Links out of the tree** stay links too, with the same text, and what they point to is brought
  along as a frozen copy (a file, or a directory walked by these same rules), so that a backend
  sees what it would see in the real tree, read at the moment of the copy. Each such target is a
  *region* of its own; a link from inside a region to a place inside any region is a link inside.
  Since a region is only made for a target that lies in no region yet, a loop of links is walked
  once and then kept as links, as it is in the real tree.
- **Dangling links** (loops that never resolve included) stay as they are.
- **Fifos, sockets and devices**, and links to them, are never opened: they are skipped.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from safe_build.patterns import Selection

EXCLUDED_ANYWHERE = frozenset({".git", ".hg", ".svn", ".tox", ".nox", ".venv", "node_modules", "__pycache__"})
EXCLUDED_AT_ROOT = frozenset(
    {"build", "dist"}
)  # setuptools' and build's output; deeper, they may be packages
EXCLUDED_SUFFIX = ".egg-info"
TARGET = "//"  # joins an outside link's record path to its target's: no listed path holds two slashes


@dataclass(frozen=True)
class Plan:
    """What to visit: the listed entries of the tree at ``root`` (a real, absolute path)."""

    root: str
    entries: tuple[str, ...]
    listed_by: str  # "git" or "walk"

    @property
    def expand_dirs(self) -> bool:
        """A listed directory still needs walking: git lists a submodule without its files."""
        return self.listed_by == "git"


@dataclass(frozen=True)
class Node:
    """One thing a snapshot holds."""

    record: str  # its path in the key: the listed path, or ``<link>//<inner>`` below an outside link
    region: int  # 0: the tree; n > 0: the n-th target of a link out of the tree
    place: str  # its path below its region's root; "" for the root of a region itself
    source: str  # the absolute path it is read from


@dataclass(frozen=True)
class Link:
    text: str  # as the link holds it
    points_to: tuple[int, str] | None  # (region, place) of what it resolves to; None: dangling or outside
    target: str = ""  # an outside link's real target
    region: int = 0  # an outside link's target's region


class Visitor(Protocol):
    def directory(self, node: Node) -> None: ...
    def file(self, node: Node, info: os.stat_result) -> None: ...
    def link(self, node: Node, link: Link) -> None: ...
    def outside(self, node: Node, link: Link) -> None:
        """A link out of the tree; the nodes of its target's region follow."""

    def special(self, node: Node) -> None: ...


def excluded(relative: str, extra: frozenset[str] = frozenset()) -> bool:
    """True if the project-relative path ``relative`` (``/``-separated) is never copied.

    ``extra`` holds paths left out with everything below them (an output directory in the tree).
    """
    if _below_any(relative, extra):
        return True
    return any(_excluded_name(part, at_root=index == 0) for index, part in enumerate(relative.split("/")))


def plan(
    root: Path,
    *,
    exclude: Iterable[str] = (),
    selection: Selection | None = None,
    project_at_root: bool = True,
) -> Plan:
    """What a snapshot of ``root`` (a real, absolute path) holds.

    ``exclude`` names root-relative paths to leave out with everything below them, whatever
    ``selection`` (the user's include and exclude patterns) says: an output directory or
    safe-build's own state in the tree. ``project_at_root``: False when ``root`` is a repository
    whose project lies deeper.
    """
    extra = frozenset(exclude)
    chosen = selection if selection is not None and (selection.include or selection.exclude) else None
    entries = _git_listing(root, extra, project_at_root=project_at_root)
    listed_by = "git"
    if entries is None:
        # the walk prunes a skipped directory, so what lies below one is never asked about
        skip = (
            (lambda relative: relative in extra or chosen.excluded(relative))
            if chosen
            else extra.__contains__
        )
        entries, listed_by = list(_walk(str(root), skip)), "walk"
    if chosen is not None:
        kept = {entry for entry in entries if not chosen.excluded(entry)}
        kept.update(entry for entry in _included(root, chosen) if not _below_any(entry, extra))
        entries = sorted(kept)
    return Plan(str(root), tuple(entries), listed_by)


def inside(path: Path, root: Path) -> list[str]:
    """``path`` relative to ``root`` as a one-item list if its real path lies inside ``root``, else empty."""
    real = os.path.realpath(path)
    if real.startswith(str(root) + os.sep):
        return [os.path.relpath(real, root).replace(os.sep, "/")]
    return []


def visit(plan: Plan, visitor: Visitor) -> None:
    """Call ``visitor`` for every node of ``plan``, in a fixed order: a directory before what it
    holds, an outside link before its target's nodes."""
    _Walker(plan, visitor).run()


class _Walker:
    def __init__(self, plan: Plan, visitor: Visitor) -> None:
        self.plan = plan
        self.visitor = visitor
        self.regions = [plan.root]  # real paths of the regions' roots
        # a stack of node sources, so that a deep chain of links out of the tree needs no recursion
        self.pending: list[Iterator[tuple[Node, bool]]] = []

    def run(self) -> None:
        root, expand = self.plan.root, self.plan.expand_dirs
        self.pending.append((Node(entry, 0, entry, f"{root}/{entry}"), expand) for entry in self.plan.entries)
        while self.pending:
            item = next(self.pending[-1], None)
            if item is None:
                self.pending.pop()
            else:
                self._node(*item)

    def _node(self, node: Node, expand: bool) -> None:
        try:
            info = os.lstat(node.source)
        except FileNotFoundError:
            return  # deleted from the work tree but still in git's index, or since it was listed
        if stat.S_ISREG(info.st_mode):
            self.visitor.file(node, info)
        elif stat.S_ISDIR(info.st_mode):
            self.visitor.directory(node)
            if expand:
                self._below(node)
        elif stat.S_ISLNK(info.st_mode):
            self._link(node)
        else:
            self.visitor.special(node)

    def _below(self, node: Node) -> None:
        """What a directory holds, walked with the listing's own exclusions."""
        prefix = node.record if node.record.endswith(TARGET) else node.record + "/"
        place = node.place + "/" if node.place else ""
        self.pending.append(
            (Node(prefix + inner, node.region, place + inner, f"{node.source}/{inner}"), False)
            for inner in _walk(node.source, lambda relative: False)
        )

    def _link(self, node: Node) -> None:
        text = os.readlink(node.source)
        target = os.path.realpath(node.source)
        if not os.path.exists(target):
            self.visitor.link(node, Link(text, None))  # dangling, or a loop that never resolves
            return
        for region, top in enumerate(self.regions):
            if target == top or target.startswith(top + "/"):
                place = target[len(top) + 1 :]
                self.visitor.link(node, Link(text, (region, place)))
                return
        info = os.stat(target)
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
            self.visitor.special(node)  # never opened: a fifo would block, a device never end
            return
        region = len(self.regions)
        self.regions.append(target)
        self.visitor.outside(node, Link(text, None, target, region))
        self.pending.append(iter([(Node(node.record + TARGET, region, "", target), True)]))


def open_file(node: Node) -> tuple[int, os.stat_result] | None:
    """``node``'s file opened for reading, and its identity; None if it is gone, or is no longer a
    regular file, since it was listed (it is then in neither the copy nor the key). A fifo put in
    its place is not waited for, a link is not followed; a file that cannot be read is an OSError."""
    try:
        fd = os.open(node.source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno == errno.ELOOP:
            return None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return None
    return fd, info


def _below_any(relative: str, paths: frozenset[str]) -> bool:
    """True if ``relative`` is one of ``paths`` or lies below one of them."""
    return any(relative == path or relative.startswith(path + "/") for path in paths)


def _excluded_name(name: str, *, at_root: bool) -> bool:
    return (
        name in EXCLUDED_ANYWHERE or name.endswith(EXCLUDED_SUFFIX) or (at_root and name in EXCLUDED_AT_ROOT)
    )


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
    ``dist`` hold build output. Links to directories are listed, not followed: ``visit`` decides
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
