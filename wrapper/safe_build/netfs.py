"""Notice when a path safe-build locks lies on a network or FUSE file system, and say so once.

safe-build's exclusion rests on kernel ``flock`` locks in its cache directory, output directories
and environments. On a local disk the kernel that grants a lock is the only kernel that can touch
the file, so the lock excludes every process that could. On a network file system it may not:
NFS mounted with ``local_lock=flock``/``all``, NFSv3 without a working lockd, CIFS mounted with
``nobrl``, and FUSE file systems whose daemon implements no locking all grant the lock in the
local kernel only, and a process on another host that takes the "same" lock is not excluded.
Nothing fails; two hosts simply build into, publish to or evict from the same directory at once.

What is still safe there: everything within one host. Locks taken on one host always exclude
each other on that host, whatever the file system, so one machine running many builds against a
shared cache is fine. And many setups are fine across hosts too: Linux emulates ``flock`` on
NFS (v4, and v3 with lockd) with whole-file byte-range locks that the server arbitrates between
clients when it supports them. What breaks is only exclusion *between hosts* where locking is
local-only, and safe-build cannot tell from here which case it is in. So it warns, once per run
per mount, rather than refusing.

Detection reads the mount table, ``/proc/self/mountinfo`` (man 5 proc), and picks the mount
whose mount point is the longest component-wise prefix of the path's real location. Where
there is no mount table (not Linux, no /proc) the answer is "not known to be network", and
nothing is said.

Test/diagnostic hook: the environment variable ``SAFE_BUILD_MOUNTINFO`` names another file in
mountinfo format to read instead (read at each call), so tests can make a local directory look
like an NFS mount, and a user can check what safe-build would say about a given mount table.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

from safe_build import progress

MOUNTINFO = Path("/proc/self/mountinfo")
"""The mount table read unless ``SAFE_BUILD_MOUNTINFO`` names another (see the module docstring)."""

MOUNTINFO_VARIABLE = "SAFE_BUILD_MOUNTINFO"

# File system types whose locks may be granted by the local kernel alone, so that they need not
# exclude a process on another host (or, for virtiofs/9p, on the VM host or another guest).
_NETWORK_TYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ncpfs",
        "afs",
        "lustre",
        "gpfs",
        "ceph",
        "glusterfs",
        "beegfs",
        "orangefs",
        # 9p (QEMU virtfs, WSL's drvfs) and virtiofs share a directory of the VM host with a guest.
        # virtiofs is "local" in that no network is involved, but it has the same hazard: by
        # default virtiofsd keeps locks local (its remote locking is off unless enabled), so the
        # guest kernel grants the lock on its own, and a process on the host, or in another guest
        # sharing the directory, is not excluded. That is exactly the "other host" case, so it is
        # included.
        "9p",
        "virtiofs",
        # "fuse" (plain and fuse.<subtype>) and "fuseblk" are matched in _is_network_type: a FUSE
        # daemon that implements no locking leaves flock local, and sshfs, rclone, s3fs, davfs2 ...
        # are all remote.
    }
)

_ESCAPE = re.compile(r"\\([0-7]{3})")


class _Mount(NamedTuple):
    parts: tuple[str, ...]  # the mount point's components ("/" is ())
    mount_point: str
    fstype: str


# The parsed mount table per mountinfo file (None: unreadable), for the life of the process:
# mounts rarely change during one command, and this is asked for every lock taken.
_tables: dict[str, tuple[_Mount, ...] | None] = {}

# The mount points already warned about in this process.
_warned: set[str] = set()


def _is_network_type(fstype: str) -> bool:
    return fstype in _NETWORK_TYPES or fstype in ("fuse", "fuseblk") or fstype.startswith("fuse.")


def _parts(path: str) -> tuple[str, ...]:
    return tuple(part for part in path.split("/") if part)


def _unescape(field: str) -> str:
    """The kernel writes space, tab, newline and backslash in paths as octal escapes (``\\040``)."""
    return _ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def _parse(text: str) -> tuple[_Mount, ...]:
    """The mounts of a mountinfo table, in its order; malformed lines are skipped."""
    mounts: list[_Mount] = []
    for line in text.splitlines():
        # 36 35 98:0 /root /mount/point rw,noatime [optional fields...] - fstype source super-options
        fields = line.split(" ")
        try:
            separator = fields.index("-", 6)
        except ValueError:
            continue
        if separator + 1 >= len(fields):
            continue
        mount_point = _unescape(fields[4])
        mounts.append(_Mount(_parts(mount_point), mount_point, fields[separator + 1]))
    return tuple(mounts)


def _mount_table() -> tuple[_Mount, ...] | None:
    source = os.environ.get(MOUNTINFO_VARIABLE) or str(MOUNTINFO)
    if source not in _tables:
        try:
            # Paths in the table are the kernel's bytes; decode them the way os.path.realpath does.
            text = os.fsdecode(Path(source).read_bytes())
        except OSError:
            _tables[source] = None
        else:
            _tables[source] = _parse(text)
    return _tables[source]


def _existing_real_path(path: Path) -> str:
    """The real path of ``path`` or, if it does not exist (yet), of its nearest existing ancestor."""
    real = os.path.realpath(path)
    while not os.path.exists(real):
        parent = os.path.dirname(real)
        if parent == real:
            break
        real = parent
    return real


def _mount_of(path: Path) -> _Mount | None:
    """The mount ``path`` lies on: the one whose mount point is the longest prefix (in components)
    of its real path, the later line winning a tie since it is mounted on top of the earlier.

    Not modelled: a mount hidden because a mount over one of its ancestors came later (mount
    /a/b, then over-mount /a). That is rare, and costs at worst one wrong warning or one missed.
    """
    table = _mount_table()
    if table is None:
        return None
    parts = _parts(_existing_real_path(path))
    best: _Mount | None = None
    for mount in table:
        if parts[: len(mount.parts)] == mount.parts and (best is None or len(mount.parts) >= len(best.parts)):
            best = mount
    return best


def network_filesystem(path: Path) -> str | None:
    """The file system type ("nfs4", "cifs", "fuse.sshfs" ...) if ``path`` lies on a network or
    FUSE file system, else None (also when there is no mount table to read)."""
    mount = _mount_of(path)
    if mount is None or not _is_network_type(mount.fstype):
        return None
    return mount.fstype


def warn_if_network(path: Path, what: str) -> None:
    """Warn on stderr, once per mount per process, if ``path`` (``what``: "cache directory",
    "output directory" ...) lies on a network or FUSE file system."""
    mount = _mount_of(path)
    if mount is None or not _is_network_type(mount.fstype) or mount.mount_point in _warned:
        return
    _warned.add(mount.mount_point)
    progress.labelled(
        "warning",
        f"{what} {path} is on a network file system ({mount.fstype}): its locks may "
        "not exclude processes on other hosts; keep it on a local disk (for the cache: --cache-dir or "
        "SAFE_BUILD_CACHE_DIR), or run the builds that share it on one host",
    )
