"""Facts about other processes, for telling the user who holds what."""

from __future__ import annotations

import os


def pid_namespace() -> int:
    """This process's pid namespace (its inode), 0 where it cannot be told: a pid means something
    only in the namespace it was read in (containers on one kernel have their own)."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists on this host (it may be a reused pid)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it belongs to someone else
    return True
