"""Named shared/exclusive locks that say who holds them, wait visibly and give up after a timeout.

The lock is a kernel ``flock`` (shared or exclusive) on a lock file outside any source tree, or on
a directory itself (the project, an install location: see ``state``). It is
written here rather than taken from filelock because filelock offers exclusive flock only, and its
reader-writer lock rests on SQLite's fcntl locks, which a forked child does not inherit. A flock
belongs to the open file, which the forked build child shares: an ``--in-place`` build whose
safe-build was killed keeps the project locked until the orphaned build itself ends, and the
kernel still drops the lock the moment the last holder dies, so no lock is ever stale. Lock files
are never deleted: removing one would let a second holder in on a new file while the first still
holds the old one.

Who holds a lock is recorded beside it, one small JSON file per holder in ``<lock>.holders/`` (for
a directory's lock, in safe-build's state directory), written after acquiring and removed on
release. The records are informational only: the kernel lock is the truth, and records of
processes that no longer exist are ignored and removed.

Every lock has a rank (``state.Rank``): a process never waits for a lock ranked below, or equal
to, one it holds, except for locks of equal rank taken in the order of their paths (the projects
of one safe-pip command). The locks held are listed per process; a forked build child inherits
the list along with the descriptors, so it is held to the same order. A breach is a bug in
safe-build: ``LockOrderError`` says which two locks, before anything waits.

A wait longer than a second is one line (then one every 30 s) naming the lock and its holder, its
``safe-build:`` in build's warning colour (``buildcompat.styles``), none with ``-qq`` (:data:`quiet`);
on a terminal the status line (``progress``) says meanwhile who holds it and for how long.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

from safe_build import progress
from safe_build.errors import LockTimeout, SafeBuildError
from safe_build.fsutil import NO_LOCKS, still_names
from safe_build.processes import pid_alive, pid_namespace

Mode = Literal["shared", "exclusive"]

# Where waiting messages go; None: stderr.
notices: TextIO | None = None
# No waiting messages (build's -qq: nothing but warnings and errors); a timeout is still an error.
quiet = False

GRACE_SECONDS = 1.0  # a wait shorter than this is not worth a message
UPDATE_EVERY_SECONDS = 30.0
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Holder:
    pid: int
    command: str
    host: str
    since: float
    mode: str
    pid_namespace: int = 0  # where ``pid`` means something (records of older versions lack it)

    def describe(self, now: float) -> str:
        if self.host != socket.gethostname():
            where = f" on {self.host}"
        else:
            where = "" if self.ours() else " in another pid namespace"
        return f"pid {self.pid}{where}: {self.command}, {self.mode}, for {_seconds(now - self.since)}"

    def ours(self) -> bool:
        """Whether ``pid`` can be looked up here: the same host and pid namespace."""
        return self.host == socket.gethostname() and self.pid_namespace == pid_namespace()


class LockOrderError(RuntimeError):
    """A lock was asked for out of order: a deadlock waiting to happen, and a bug in safe-build."""


@dataclass(frozen=True)
class _Held:
    rank: int
    lock_file: Path
    what: str


# The locks this process holds, in the order it took them; a forked child inherits the list.
_held: list[_Held] = []


class NamedLock:
    """A lock on ``subject`` (a path the user knows), kept in ``lock_file`` outside any source tree.

    With ``directory``, ``lock_file`` is an existing directory that is locked itself (nothing is
    written there; holder records go to ``records``). ``rank`` places the lock in the lock order.
    """

    def __init__(
        self,
        lock_file: Path,
        *,
        what: str,
        subject: Path | str,
        timeout: float,
        rank: int,
        directory: bool = False,
        records: Path | None = None,
    ) -> None:
        self.lock_file = lock_file
        self.what = what
        self.subject = subject
        self.timeout = timeout
        self.rank = rank
        self.directory = directory
        self._holders_dir = records or lock_file.with_name(lock_file.name + ".holders")

    @contextlib.contextmanager
    def hold(self, mode: Mode) -> Iterator[int]:
        """Hold the lock in ``mode`` for the body of the ``with`` statement; its descriptor.

        Release is closing our descriptor, not unlocking it: a child that shares the open file
        (forked, or handed the descriptor) keeps the lock until it is done too.
        """
        self._check_order()
        fd = self._locked(fcntl.LOCK_SH if mode == "shared" else fcntl.LOCK_EX)
        held = _Held(self.rank, self.lock_file, self.what)
        _held.append(held)
        try:
            record = self._write_record(mode)
            try:
                yield fd
            finally:
                with contextlib.suppress(OSError):
                    record.unlink()
        finally:
            _held.remove(held)
            os.close(fd)

    def _check_order(self) -> None:
        """Raise if taking this lock could deadlock with a process taking locks in the order."""
        for held in _held:
            if held.lock_file == self.lock_file:
                raise LockOrderError(
                    f"the {self.what} lock on {self.subject} is held by this process already"
                )
            if held.rank > self.rank or (held.rank == self.rank and held.lock_file > self.lock_file):
                raise LockOrderError(
                    f"lock order: the {self.what} lock on {self.subject} (rank {self.rank}) asked for while "
                    f"holding the {held.what} lock {held.lock_file} (rank {held.rank})"
                )

    def _locked(self, operation: int) -> int:
        """A descriptor of the lock file, locked; taken again if the path no longer names the file
        we locked (someone removed or replaced it meanwhile: that lock would protect nothing)."""
        while True:
            fd = self._open()
            try:
                self._acquire(fd, operation)
                if still_names(self.lock_file, fd):
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)

    def _open(self) -> int:
        if self.directory:
            try:  # read-only, and never through a link: the directory itself is what is locked
                return os.open(self.lock_file, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            except OSError as error:
                raise SafeBuildError(
                    f"cannot lock {self.lock_file} ({error.strerror})",
                    hint="check that it is a directory you can read",
                    path=self.lock_file,
                ) from None
        try:
            self.lock_file.parent.mkdir(mode=0o700, exist_ok=True)  # its parent is the state's to make
            return _open_lock(self.lock_file)
        except OSError as error:
            raise unwritable_state(self.lock_file.parent, error) from None

    def holders(self) -> list[Holder]:
        """The live holders recorded for this lock; records of dead processes are removed."""
        found = []
        try:
            entries = list(self._holders_dir.iterdir())
        except FileNotFoundError:
            return []
        for entry in entries:
            try:
                holder = Holder(**json.loads(entry.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError):
                continue  # being written or removed right now
            if holder.ours() and not pid_alive(holder.pid):
                with contextlib.suppress(OSError):
                    entry.unlink()
                continue
            found.append(holder)
        return sorted(found, key=lambda holder: holder.since)

    def describe_holders(self) -> str:
        holders = self.holders()
        if not holders:
            return "held by a process that left no record: an orphaned build, or one just starting"
        now = time.time()
        more = f", and {len(holders) - 1} more" if len(holders) > 1 else ""
        return f"held by {holders[0].describe(now)}{more}"

    def _waiting_status(self) -> str:
        """What the status line says while we wait: the holder first, as a narrow terminal cuts the end."""
        holders = self.holders()
        if not holders:
            return f"safe-build: waiting for the {self.what} lock on {self.subject}"
        more = f" and {len(holders) - 1} more" if len(holders) > 1 else ""
        who = f"pid {holders[0].pid} ({holders[0].command}){more}"
        return f"safe-build: waiting for {who} to release the {self.what} lock on {self.subject}"

    def _acquire(self, fd: int, operation: int) -> None:
        if _try_lock(fd, operation, self.lock_file):
            return
        with progress.status(f"safe-build: waiting for the {self.what} lock on {self.subject}"):
            self._wait(fd, operation)

    def _wait(self, fd: int, operation: int) -> None:
        started = time.monotonic()
        next_message = started + GRACE_SECONDS
        announced = False
        while not _try_lock(fd, operation, self.lock_file):
            now = time.monotonic()
            if now - started >= self.timeout:
                raise LockTimeout(
                    f"timed out after {_seconds(self.timeout)} waiting for the {self.what} lock on "
                    f"{self.subject} ({self.describe_holders()})",
                    hint="wait for that process to finish or stop it, or raise --lock-timeout",
                    path=self.lock_file,
                )
            if now >= next_message:
                holders = self.describe_holders()
                progress.update(self._waiting_status())
                prefix = "still waiting" if announced else "waiting"
                waited = f", waited {_seconds(now - started)}" if announced else ""
                if not quiet:
                    notice(f"{prefix} for the {self.what} lock on {self.subject} ({holders}{waited})")
                announced = True
                next_message = now + UPDATE_EVERY_SECONDS
            time.sleep(min(POLL_SECONDS, max(0.0, started + self.timeout - now)))

    def _write_record(self, mode: Mode) -> Path:
        """The holder record; writing it is the first write that needs disk space (a full disk)."""
        record = self._holders_dir / f"{os.getpid()}-{secrets.token_hex(4)}.json"
        holder = Holder(
            os.getpid(), _command_line(), socket.gethostname(), time.time(), mode, pid_namespace()
        )
        temporary = record.with_suffix(".tmp")
        try:
            self._holders_dir.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(json.dumps(holder.__dict__))
        except OSError as error:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise unwritable_state(self._holders_dir, error) from None
        os.replace(temporary, record)  # a reader sees the whole record or none
        return record


def try_own(lock_file: Path) -> int | None:
    """Take ``lock_file`` exclusively without waiting: its descriptor (close it to release), or None.

    None also when the path no longer names the file we locked: someone removed it meanwhile, so
    the lock would protect nothing. Owners of private directories use this; their lock files may
    be removed by whoever holds them, and since a name taken again is a new file, two owners
    never share one. OSError: the file cannot be opened or created.
    """
    fd = _open_lock(lock_file)
    try:
        if _try_lock(fd, fcntl.LOCK_EX, lock_file) and still_names(lock_file, fd):
            return fd
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return None


def unwritable_state(directory: Path, error: OSError) -> SafeBuildError:
    """The error for a directory where safe-build cannot keep its lock files or private directories."""
    return SafeBuildError(
        f"cannot write to {directory} ({error.strerror}), where safe-build keeps its locks and private files",
        hint="make room or fix its permissions, or choose another cache directory with --cache-dir or "
        "SAFE_BUILD_CACHE_DIR",
        path=directory,
    )


def _open_lock(lock_file: Path) -> int:
    """The lock file, created if need be: only its owner may open it (another user who could
    would hold it and make our builds wait), and a link planted in its place is not followed."""
    return os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)


def _try_lock(fd: int, operation: int, lock_file: Path) -> bool:
    """Lock without waiting: False if it is busy. A file system without flock is one clear line,
    as filelock classifies these errors."""
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as error:
        if error.errno == errno.EACCES:  # busy, as some systems say it (filelock counts it so too)
            return False
        if error.errno in NO_LOCKS:
            raise SafeBuildError(
                f"cannot lock {lock_file}: its file system does not support locks ({error.strerror})",
                hint="choose a cache directory on a local file system (--cache-dir, SAFE_BUILD_CACHE_DIR)",
                path=lock_file,
            ) from None
        raise
    return True


def notice(text: str) -> None:
    """A waiting message, ``safe-build:`` in build's warning colour where build would colour."""
    stream = notices or sys.stderr
    from safe_build import buildcompat  # noqa: PLC0415 (only when a wait is long: it imports build)

    progress.line(buildcompat.styled("{yellow}safe-build:{reset} {}", text, stream), stream)


def _command_line() -> str:
    return " ".join(["safe-build", *sys.argv[1:]])


def _seconds(value: float) -> str:
    return f"{value:.0f}s" if value >= 10 else f"{value:.1f}s"
