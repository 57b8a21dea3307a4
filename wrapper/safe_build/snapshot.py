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
    real_zone = os.path.realpath(zone if zone is not None else destination)
    spare = spare if spare is not None else destination.with_name(destination.name + ".outside")
    zone_fd = os.open(real_zone, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        copier = _Copier(
            _Zone(zone_fd, real_zone),
            os.path.relpath(os.path.realpath(destination), real_zone),
            os.path.relpath(os.path.realpath(spare.parent), real_zone) + "/" + spare.name,
            snapshot,
            recorder,
        )
        for directory in sorted({os.path.dirname(entry) for entry in plan.entries} - {""}):
            copier.zone.makedirs(f"{copier.places[0]}/{directory}")  # once here, not once per file
        traversal.visit(plan, copier)
        copier.finish()
    finally:
        os.close(zone_fd)
    return snapshot


@dataclass(frozen=True)
class _Zone:
    """The directory every path of the copy is relative to, written through its descriptor.

    A snapshot's root is longer than the tree's leading part it replaces, so a path that fits in
    the tree (as a backend reaches it, from the project directory) could pass PATH_MAX as an
    absolute path in the copy; relative to this descriptor it is never longer than the tree's.
    """

    fd: int
    path: str  # its real path, for what only an absolute path can answer (where a link leads)

    def makedirs(self, relative: str) -> None:
        try:
            os.mkdir(relative, 0o777, dir_fd=self.fd)
        except FileExistsError:
            pass
        except FileNotFoundError:
            self.makedirs(os.path.dirname(relative))
            os.mkdir(relative, 0o777, dir_fd=self.fd)

    def symlink(self, text: str, relative: str) -> None:
        try:
            os.symlink(text, relative, dir_fd=self.fd)
        except FileNotFoundError:
            self.makedirs(os.path.dirname(relative))
            os.symlink(text, relative, dir_fd=self.fd)

    def create(self, relative: str) -> int:
        """A new file, open for writing and reading back."""
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            return os.open(relative, flags, 0o600, dir_fd=self.fd)
        except FileNotFoundError:  # below a directory reached through a link or a submodule
            self.makedirs(os.path.dirname(relative))
            return os.open(relative, flags, 0o600, dir_fd=self.fd)

    def exists(self, relative: str) -> bool:
        try:
            os.lstat(relative, dir_fd=self.fd)
        except FileNotFoundError:
            return False
        return True

    def unlink(self, relative: str) -> None:
        os.unlink(relative, dir_fd=self.fd)

    def real(self, relative: str) -> str:
        """Where ``relative`` leads, relative to the zone if it stays inside it, else absolute."""
        leads = os.path.realpath(f"{self.path}/{relative}")
        return leads[len(self.path) + 1 :] if leads.startswith(self.path + "/") else leads


class _Copier:
    """Writes each node it is shown, at its place in its region's copy.

    One thread and plain ``str`` paths: for a tree of small files the cost is Python's per-file
    overhead, which threads (bound by the GIL) and ``Path`` objects only add to; this way a copy
    runs about as fast as ``cp -a``.
    """

    def __init__(
        self, zone: _Zone, root: str, spare: str, snapshot: Snapshot, recorder: digests.Recorder | None
    ) -> None:
        self.zone = zone
        self.places = [root]  # each region's copy, by region number, relative to the zone
        self.spare = spare
        self.snapshot = snapshot
        self.recorder = recorder
        self.inside_links: list[tuple[str, tuple[int, str]]] = []

    def _path(self, node: Node) -> str:
        base = self.places[node.region]
        return f"{base}/{node.place}" if node.place else base

    def directory(self, node: Node) -> None:
        self.zone.makedirs(self._path(node))  # also keeps empty directories of a walked tree
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
        self.zone.symlink(text, path)
        self.snapshot.links += 1
        if self.recorder is not None:
            self.recorder.link(node.record, link.text, link.points_to)

    def outside(self, node: Node, link: Link) -> None:
        path = self._path(node)
        placed = None
        if not os.path.isabs(link.text):
            self.zone.symlink(link.text, path)
            leads = self.zone.real(path)
            if not os.path.isabs(leads) and not leads.startswith("../") and not self._taken(leads):
                placed = leads
            else:
                self.zone.unlink(path)
        if placed is None:
            placed = f"{self.spare}/{link.region}/{os.path.basename(link.target)}"
            self.zone.symlink(os.path.normpath(f"{self.zone.path}/{placed}"), path)
        self.zone.makedirs(os.path.dirname(placed))
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
            target = self.zone.create(self._path(node))
            try:
                holes = digests.sparse(before)
                copied = _copy_data(source, target, before.st_size, holes=holes)
                os.fchmod(target, stat.S_IMODE(before.st_mode))
                os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # sdists record file times
                if self.recorder is not None:
                    self._record(node, before, source, (target, copied), holes)
            finally:
                os.close(target)
        finally:
            os.close(source)
        self.snapshot.files += 1

    def _record(
        self, node: Node, before: os.stat_result, source: int, written: tuple[int, int], holes: bool
    ) -> None:
        """Digest what was written (``written``: the copy's descriptor and size): the memo's digest
        if the source kept its identity, else the copy's bytes read back."""
        recorder = self.recorder
        assert recorder is not None
        # only the memo needs to know that the source did not change while it was copied
        stable = recorder.remember and digests.identity(os.fstat(source)) == digests.identity(before)
        digest = recorder.remembered(before) if stable else None
        read = digest is None
        if digest is None:
            digest = digests.content(written[0], written[1], holes=holes)
        recorder.file(node.record, before, digest, read=read, stable=stable)

    def finish(self) -> None:
        """Links inside whose text leads elsewhere in the copy than in the tree are made to lead right."""
        for path, points_to in self.inside_links:
            wanted = self._place(points_to)
            if self.zone.real(path) != self.zone.real(wanted):
                self.zone.unlink(path)
                self.zone.symlink(os.path.relpath(wanted, os.path.dirname(path)), path)

    def _place(self, points_to: tuple[int, str]) -> str:
        region, place = points_to
        return f"{self.places[region]}/{place}" if place else self.places[region]

    def _taken(self, path: str) -> bool:
        """True if ``path`` exists or overlaps a region's copy: an outside target cannot go there."""
        return self.zone.exists(path) or any(
            path == place or path.startswith(place + "/") or place.startswith(path + "/")
            for place in self.places
        )


def _copy_data(source: int, target: int, size: int, *, holes: bool) -> int:
    """Copy the first ``size`` bytes; of a sparse file only its data, its holes left holes.
    The size of the copy: less than ``size`` if the file shrank meanwhile."""
    ranges = digests.data_ranges(source, size) if holes else [(0, size)]
    for start, end in ranges:
        if holes:
            os.lseek(target, start, os.SEEK_SET)
        offset = start
        while offset < end:
            sent = os.sendfile(target, source, offset, end - offset)
            if not sent:
                return offset  # the file shrank while we copied it
            offset += sent
    if holes:
        os.ftruncate(target, size)
    return size
