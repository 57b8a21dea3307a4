"""A private copy of a tree, for a backend to build in and write to at will.

What the copy holds is ``traversal``'s to say; this module only writes it. Files are real copies,
never hard links (a backend writing through a hard link would change the user's file), with
their permission bits and times as in the tree (a read-only file stays read-only: sdists record
modes). Sparse files stay sparse: only their data is copied. Links keep their text. The target of
a link out of the tree is copied to where that text leads in the copy's surroundings, which
mirror the tree's (``zone``); where it leads elsewhere (an absolute link, or too many ``..``),
the link is made absolute to a copy of its target in ``spare``.

With a ``digests.Recorder``, the copy also digests what it wrote, in the same pass: the key of a
build names the bytes the backend builds from, whatever happens to the tree meanwhile.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from safe_build import digests, traversal
from safe_build.traversal import Link, Node, Plan


@dataclass
class Snapshot:
    """What a copy contains, for ``-v`` output and tests."""

    root: Path
    files: int = 0
    links: int = 0
    skipped: list[str] = field(default_factory=list)
    listed_by: str = "walk"


def take(
    plan: Plan,
    destination: Path,
    *,
    zone: Path | None = None,
    spare: Path | None = None,
    recorder: digests.Recorder | None = None,
) -> Snapshot:
    """Copy what ``plan`` lists to ``destination``, which must not exist yet.

    ``zone`` (default: ``destination`` itself) is the directory around the copy that mirrors the
    tree's surroundings, where targets of relative links out of the tree go; ``spare`` (default:
    beside ``destination``) is where other outside targets go. ``recorder`` digests the copy.
    """
    snapshot = Snapshot(destination, listed_by=plan.listed_by)
    destination.mkdir(parents=True)
    for directory in sorted({os.path.dirname(entry) for entry in plan.entries} - {""}):
        os.makedirs(destination / directory, exist_ok=True)  # once here, not once per file
    copier = _Copier(
        os.path.realpath(destination),
        os.path.realpath(zone if zone is not None else destination),
        str(spare if spare is not None else destination.with_name(destination.name + ".outside")),
        snapshot,
        recorder,
    )
    traversal.visit(plan, copier)
    copier.finish()
    return snapshot


class _Copier:
    """Writes each node it is shown, at its place in its region's copy.

    One thread and plain ``str`` paths: for a tree of small files the cost is Python's per-file
    overhead, which threads (bound by the GIL) and ``Path`` objects only add to; this way a copy
    runs about as fast as ``cp -a``.
    """

    def __init__(
        self, root: str, zone: str, spare: str, snapshot: Snapshot, recorder: digests.Recorder | None
    ) -> None:
        self.places = [root]  # each region's copy, by region number
        self.zone = zone
        self.spare = spare
        self.snapshot = snapshot
        self.recorder = recorder
        self.inside_links: list[tuple[str, tuple[int, str]]] = []

    def _path(self, node: Node) -> str:
        base = self.places[node.region]
        return f"{base}/{node.place}" if node.place else base

    def directory(self, node: Node) -> None:
        os.makedirs(self._path(node), exist_ok=True)  # also keeps empty directories of a walked tree
        if self.recorder is not None:
            self.recorder.directory(node.record)

    def special(self, node: Node) -> None:
        self.snapshot.skipped.append(node.record)

    def link(self, node: Node, link: Link) -> None:
        path = self._path(node)
        text = link.text
        if link.points_to is not None:
            self.inside_links.append((path, link.points_to))
            if os.path.isabs(text):  # it would lead back into the user's tree
                text = os.path.relpath(self._place(link.points_to), os.path.dirname(path))
        _symlink(text, path)
        self.snapshot.links += 1
        if self.recorder is not None:
            self.recorder.link(node.record, link.text, link.points_to)

    def outside(self, node: Node, link: Link) -> None:
        path = self._path(node)
        placed = None
        if not os.path.isabs(link.text):
            _symlink(link.text, path)
            leads = os.path.realpath(path)
            if leads.startswith(self.zone + "/") and not self._taken(leads):
                placed = leads
            else:
                os.unlink(path)
        if placed is None:
            placed = f"{self.spare}/{link.region}/{os.path.basename(link.target)}"
            _symlink(placed, path)
        os.makedirs(os.path.dirname(placed), exist_ok=True)
        self.places.append(placed)
        self.snapshot.links += 1
        if self.recorder is not None:
            self.recorder.outside(node.record, link.text)

    def file(self, node: Node, info: os.stat_result) -> None:
        """A real copy in a handful of system calls: this runs once per file of large trees."""
        opened = traversal.open_file(node)
        if opened is None:
            return
        source, before = opened
        try:
            path = self._path(node)
            try:
                target = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:  # below a directory reached through a link or a submodule
                os.makedirs(os.path.dirname(path), exist_ok=True)
                target = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                holes = digests.sparse(before)
                _copy_data(source, target, before.st_size, holes=holes)
                os.fchmod(target, stat.S_IMODE(before.st_mode))
                os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # sdists record file times
                if self.recorder is not None:
                    self._record(node, before, source, target, holes)
            finally:
                os.close(target)
        finally:
            os.close(source)
        self.snapshot.files += 1

    def _record(self, node: Node, before: os.stat_result, source: int, target: int, holes: bool) -> None:
        """Digest what was written: the memo's digest if the source kept its identity, else the copy."""
        assert self.recorder is not None
        stable = digests.identity(os.fstat(source)) == digests.identity(before)
        digest = self.recorder.remembered(before) if stable else None
        read = digest is None
        if digest is None:
            digest = digests.content(target, os.fstat(target).st_size, holes=holes)
        self.recorder.file(node.record, before, digest, read=read, stable=stable)

    def finish(self) -> None:
        """Links inside whose text leads elsewhere in the copy than in the tree are made to lead right."""
        for path, points_to in self.inside_links:
            wanted = self._place(points_to)
            if os.path.realpath(path) != os.path.realpath(wanted):
                os.unlink(path)
                _symlink(os.path.relpath(wanted, os.path.dirname(path)), path)

    def _place(self, points_to: tuple[int, str]) -> str:
        region, place = points_to
        return f"{self.places[region]}/{place}" if place else self.places[region]

    def _taken(self, path: str) -> bool:
        """True if ``path`` exists or overlaps a region's copy: an outside target cannot go there."""
        return os.path.lexists(path) or any(
            path == place or path.startswith(place + "/") or place.startswith(path + "/")
            for place in self.places
        )


def _symlink(text: str, path: str) -> None:
    try:
        os.symlink(text, path)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(text, path)


def _copy_data(source: int, target: int, size: int, *, holes: bool) -> None:
    """Copy the first ``size`` bytes; of a sparse file only its data, its holes left holes."""
    ranges = digests.data_ranges(source, size) if holes else [(0, size)]
    for start, end in ranges:
        if holes:
            os.lseek(target, start, os.SEEK_SET)
        offset = start
        while offset < end:
            sent = os.sendfile(target, source, offset, end - offset)
            if not sent:
                return  # the file shrank while we copied it
            offset += sent
    if holes:
        os.ftruncate(target, size)
