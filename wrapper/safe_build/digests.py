"""Digests of a tree's content, shared by the copy (which digests what it wrote) and the cache key
(which digests the tree in place), so that both describe one tree with the same records.

**Content digests.** A file of at most ``BLOCK`` bytes is the sha256 of its bytes. A larger one
is the sha256 of its blocks' sha256s, a block being ``BLOCK`` bytes: a block that lies wholly in
a hole of a sparse file has the digest of ``BLOCK`` zero bytes without being read
(``SEEK_DATA``), so a 2 GB sparse file costs what its data costs. The digest depends on the
content only, never on where the file system keeps holes.

**The memo** keeps content digests between builds, by a file's identity (device, inode, size,
modification and change times, to the nanosecond). A digest is trusted for a file whose
identity is unchanged. What it cannot see: a write that changes no time stamp. Every
``write``, ``truncate`` or ``utime`` sets the change time, which no user can set back; writes
through a shared ``mmap`` update the times only when the kernel notices the dirty page (at the
latest on ``msync`` or unmap), so such a write may be missed until then. A digest is kept only
for a file whose times are at least ``SETTLE_NS`` old when it is read and unchanged after the
read: git's racy-clean rule, with a window of two seconds, which covers file systems that keep
times to the second or two (FAT, some network file systems).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import struct
import time
from collections.abc import Mapping
from pathlib import Path

BLOCK = 1 << 20
SETTLE_NS = 2_000_000_000  # files changed this recently are not memorized: coarse and 2 s clocks
NO_CONTENT = bytes(32)
_ZERO_BLOCK = hashlib.sha256(bytes(BLOCK)).digest()
_IDENTITY = struct.Struct("<QQQqq")  # device, inode, size, mtime_ns, ctime_ns
_MEMO_MAGIC = b"safe-build key memo 2\n"
_MEMO_ENTRY = _IDENTITY.size + 32


def identity(info: os.stat_result) -> bytes:
    """What changes whenever a file's content may have: its memo key."""
    return _IDENTITY.pack(info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def sparse(info: os.stat_result) -> bool:
    """True if the file has holes worth skipping: fewer blocks allocated than its size needs."""
    return info.st_size > BLOCK and info.st_blocks * 512 < info.st_size


def content(fd: int, size: int, *, holes: bool) -> bytes:
    """The content digest of the first ``size`` bytes of the open file ``fd`` (see the module's notes).

    ``holes``: look for holes (``sparse``); reads use ``pread``, so the file offset is left alone.
    """
    if size <= BLOCK:
        return hashlib.sha256(os.pread(fd, size, 0) if size else b"").digest()
    data = data_ranges(fd, size) if holes else [(0, size)]
    blocks = []
    for start in range(0, size, BLOCK):
        end = min(start + BLOCK, size)
        if end - start == BLOCK and not any(low < end and high > start for low, high in data):
            blocks.append(_ZERO_BLOCK)
            continue
        digest = hashlib.sha256()
        at = start
        while at < end and (chunk := os.pread(fd, end - at, at)):
            digest.update(chunk)
            at += len(chunk)
        blocks.append(digest.digest())
    return hashlib.sha256(b"blocks\0" + b"".join(blocks)).digest()


def data_ranges(fd: int, size: int) -> list[tuple[int, int]]:
    """The ``(start, end)`` ranges of ``fd``'s first ``size`` bytes that hold data, holes left out;
    the whole file where the file system cannot say."""
    ranges = []
    at = 0
    try:
        while at < size:
            try:
                start = os.lseek(fd, at, os.SEEK_DATA)
            except OSError as error:
                if error.errno == errno.ENXIO:
                    break  # only a hole from here on
                raise
            if start >= size:
                break
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            ranges.append((start, end))
            at = end
    except OSError:
        return [(0, size)]  # SEEK_DATA not supported here: all of it is data
    return ranges


def record(path: str, kind: bytes, digest: bytes) -> bytes:
    """One node of a tree: path, kind (a file's with its mode), digest of its content.

    Paths hold no NUL and digests have one length, so the concatenated records are unambiguous.
    """
    return b"%s\0%s\0%s" % (path.encode("utf-8", "surrogateescape"), kind, digest)


def of_records(records: list[bytes]) -> str:
    """The digest of a tree from its nodes' records, in any order."""
    return hashlib.sha256(b"".join(sorted(records))).hexdigest()


def link_digest(text: str, points_to: tuple[int, str] | None) -> bytes:
    """A link by its text and, for one that resolves inside the snapshot, where it leads; an
    absolute link inside is made relative by the copy, so only where it leads counts."""
    resolved = "" if points_to is None else f"{points_to[0]}:{points_to[1]}"
    if points_to is not None and os.path.isabs(text):
        text = ""
    return hashlib.sha256(os.fsencode(text) + b"\0" + os.fsencode(resolved)).digest()


class Recorder:
    """The records of a tree's nodes, as they are visited; the memo's digests used and kept up to date.

    ``known`` holds the memorized digests (identity -> digest); digests of settled files are
    added to ``settled``, which the caller saves as the new memo.
    """

    def __init__(self, known: Mapping[bytes, bytes], *, remember: bool) -> None:
        self.known = known
        self.remember = remember
        self.settled_before = time.time_ns() - SETTLE_NS
        self.records: list[bytes] = []
        self.settled: dict[bytes, bytes] = {}
        self.files = self.links = self.size = self.read = 0

    def remembered(self, info: os.stat_result) -> bytes | None:
        """The memorized digest of a file whose identity is ``info``'s, if there is one."""
        return self.known.get(identity(info)) if self.remember else None

    def file(self, path: str, info: os.stat_result, digest: bytes, *, read: bool, stable: bool) -> None:
        """A file of ``info``'s identity and mode whose bytes have ``digest``; ``read``: not from
        the memo; ``stable``: its identity was the same after its bytes were taken."""
        if self.remember and stable and max(info.st_mtime_ns, info.st_ctime_ns) < self.settled_before:
            self.settled[identity(info)] = digest
        self.records.append(record(path, b"f%o" % stat.S_IMODE(info.st_mode), digest))
        self.files += 1
        self.size += info.st_size
        self.read += read

    def directory(self, path: str) -> None:
        self.records.append(record(path, b"d", NO_CONTENT))

    def link(self, path: str, text: str, points_to: tuple[int, str] | None) -> None:
        self.records.append(record(path, b"l", link_digest(text, points_to)))
        self.links += 1

    def outside(self, path: str, text: str) -> None:
        """A link out of the tree; its target's nodes are recorded below ``path``."""
        self.records.append(record(path, b"o", link_digest(text, None)))

    def digest(self) -> str:
        return of_records(self.records)


def load_memo(memo: Path) -> dict[bytes, bytes]:
    """The memorized digests by file identity; empty if the memo is missing, torn or foreign."""
    try:
        data = memo.read_bytes()
    except OSError:
        return {}
    body, check = data[len(_MEMO_MAGIC) : -32], data[-32:]
    if (
        not data.startswith(_MEMO_MAGIC)
        or len(body) % _MEMO_ENTRY
        or hashlib.sha256(data[:-32]).digest() != check
    ):
        return {}
    width = _IDENTITY.size
    return {
        body[at : at + width]: body[at + width : at + _MEMO_ENTRY] for at in range(0, len(body), _MEMO_ENTRY)
    }


def memo_bytes(settled: Mapping[bytes, bytes]) -> bytes:
    """What a memo file holds for ``settled`` (identity -> digest), its own checksum last."""
    data = _MEMO_MAGIC + b"".join(key + digest for key, digest in settled.items())
    return data + hashlib.sha256(data).digest()
