"""The wheel cache: built artifacts kept under a key, so that a build with the same inputs is found again.

Layout under the cache root::

    wheels/<key[:2]>/<key>/            an entry: its artifacts, the build's output, entry.json written last
    wheels/.work/<key>-<hex>/          an entry being stored
    wheels/.trash/<key>-<hex>/         an entry being removed
    locks/cache.lock                   shared by every use of entries, exclusive for clean and prune
    locks/keys/<key>.lock              single flight: one build of a key at a time

(``state`` owns the layout and makes the locks.) An entry's artifacts are kept without group or
other write permission, and an entry that is not ours alone (``fsutil.private_to_us``) is treated
as damaged.

An entry also keeps what its build showed (:class:`Output`): the frontend's and backend's output
(``output.log``, 0600, its size and sha256 in entry.json and verified with the artifacts) and the
warnings among it, which a cache hit shows again. Entries stored before it have neither.

An entry appears by one ``rename`` of a complete directory and disappears by one ``rename`` into the
trash, so nobody sees half of one. Every use of entries holds the cache lock shared, so clean and prune,
which hold it exclusive, never pull an entry from under a build; and when they hold it, nothing in
``.work``, ``.trash`` or ``locks/keys`` can belong to a live process. A store runs under its key's
lock, so any other work directory of that key belongs to a dead writer: the key lock owns the work
directories, with no pid to trust (pids are reused) and no lock file of their own. A forked build child
shares both locks' open files, so an orphaned build keeps them until it ends.

flock favours readers: clean and prune get in only at a moment when no build uses the cache, so on a
machine whose builds overlap without a break they wait until the lock timeout.

**Accounting covers the whole directory.** Sizes are what ``du`` counts (:func:`disk_usage`:
allocated blocks, each inode once, links not followed), for entries, for the build environments kept
beside them (``buildenvs``) and for the whole state directory (:meth:`Cache.usage`). ``prune`` with a
size removes, after what is old, the least recently used entry or build environment, whichever was
used longest ago, until the whole directory fits, and key memos only when nothing else is left to
remove. Under the exclusive lock nothing should be in use; each entry is removed under its key's
lock and each environment under its own, neither waited for, so one in use all the same is left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

from packaging.utils import canonicalize_name

from safe_build import buildenvs, publish, workdirs
from safe_build.errors import LockTimeout
from safe_build.fsutil import fsync_dir, private_to_us, remove_tree
from safe_build.locks import NamedLock
from safe_build.state import State

ENTRY_FILE = "entry.json"
OUTPUT_LOG = "output.log"
FORMAT = 1  # of entry.json; an entry in another format is treated as damaged and rebuilt
WORK = ".work"
TRASH = ".trash"
MEMOS = "key-memos"  # state.State.memo_path
_KEY = re.compile(r"[0-9a-f]{16,128}")
_CHUNK = 1 << 20

T = TypeVar("T")


@dataclass(frozen=True)
class Artifact:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Output:
    """What a build showed: its output as the user saw it (a file), and the warnings among it."""

    log: Path | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Entry:
    """A complete entry as recorded in its entry.json, with where it is, its size and its last use."""

    key: str
    project: str
    version: str
    artifacts: tuple[Artifact, ...]
    built_at: float
    inputs: Mapping[str, object]
    path: Path
    size: int  # bytes on disk as du counts them (allocated blocks), entry.json and the directory included
    last_used: float
    warnings: tuple[str, ...] = ()  # what the build warned of, as build showed it (without "WARNING ")
    log: Artifact | None = None  # the build's output, in OUTPUT_LOG

    @property
    def output_log(self) -> Path | None:
        """The build's output as it was shown, if the entry kept it."""
        return None if self.log is None else self.path / OUTPUT_LOG

    @property
    def files(self) -> list[Path]:
        """The artifacts' paths, in the order they were stored (sdists first, as build lists them)."""
        return [self.path / artifact.name for artifact in self.artifacts]


@dataclass(frozen=True)
class Removal:
    """What clean or prune removed."""

    entries: tuple[Entry, ...] = ()
    damaged: int = 0  # entries whose entry.json could not be read
    leftovers: int = 0  # work, trash and private directories of processes that died
    environments: tuple[buildenvs.StoredEnv, ...] = ()  # cached build environments, with their sizes
    memos: int = 0  # key memos (content digests kept between builds), removed to meet a size
    busy: int = 0  # entries and environments in use, left alone

    @property
    def freed(self) -> int:
        """What the removed entries took on disk."""
        return sum(entry.size for entry in self.entries)

    @property
    def environments_freed(self) -> int:
        return sum(environment.size for environment in self.environments)


@dataclass(frozen=True)
class Usage:
    """The cache directory's size on disk as ``du`` counts it (allocated blocks, each inode once,
    links not followed), and its parts; ``other`` is the rest: markers, locks, work and trash
    directories, the directories that hold the parts."""

    total: int
    entries: int
    environments: int
    private: int  # tmp/: private directories of running (or dead) builds
    memos: int  # key-memos/
    other: int


class Cache:
    """The cache in the state directory ``state``."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.root = state.root
        self.wheels = state.wheels
        self._lock = state.cache_lock()
        self._using = 0
        self._flights: set[str] = set()

    @contextlib.contextmanager
    def using(self) -> Iterator[None]:
        """Hold the cache shared: entries can be looked up, stored and read; clean and prune wait.

        Within a hold (also in a forked child, which shares the parent's descriptor), a nested
        ``using()`` is already covered and takes nothing.
        """
        if self._using:
            self._using += 1
            try:
                yield
            finally:
                self._using -= 1
            return
        with self._lock.hold("shared"):
            self._using += 1
            try:
                yield
            finally:
                self._using -= 1

    @contextlib.contextmanager
    def single_flight(self, key: str, subject: Path | str, *, covering: Sequence[str] = ()) -> Iterator[None]:
        """Hold ``key`` exclusively, so one process builds it while the others wait for its entry.

        ``covering``: keys derived from ``key`` alone (``cachekey.local_to``), whose entries only a
        holder of ``key`` writes, so that its lock covers them too.

        Taken inside ``using()`` (lock order: cache, key, project, environment): that is what lets
        clean and prune delete key lock files, since nobody can hold one while they run.
        """
        for each in (key, *covering):
            _check_key(each)
        if not self._using:
            raise RuntimeError("Cache.single_flight() must be called inside Cache.using()")
        with self.state.key_lock(key, subject).hold("exclusive"):
            self._flights.update((key, *covering))
            try:
                yield
            finally:
                self._flights.difference_update((key, *covering))

    def lookup(self, key: str) -> Entry | None:
        """The entry of ``key``, its artifacts verified; None if there is none or it was damaged.

        A damaged entry (unreadable entry.json, an artifact missing or not matching its size and
        sha256) is removed, so that the caller rebuilds it.
        """
        self._require_flight(key)
        path = self._entry_dir(key)
        if not path.is_dir():
            return None
        entry = _verified(path)
        if entry is None:
            self._remove(path)
            return None
        now = time.time()
        with contextlib.suppress(PermissionError):  # last use is for pruning only: not worth failing over
            os.utime(path / ENTRY_FILE, (now, now))
            entry = dataclasses.replace(entry, last_used=now)
        return entry

    def discard(self, key: str) -> None:
        """Remove the entry of ``key``, if there is one, so that it is built afresh (``--refresh``)."""
        self._require_flight(key)
        path = self._entry_dir(key)
        if path.is_dir():
            self._remove(path)

    def store(
        self,
        key: str,
        artifacts: Sequence[Path],
        *,
        project: str,
        version: str,
        inputs: Mapping[str, object],
        output: Output | None = None,
    ) -> Entry:
        """Copy ``artifacts`` into the entry of ``key`` and return it; ``inputs`` (JSON) is for display;
        ``output``: what the build showed, kept beside them.

        The entry is assembled in a work directory, every file synced, entry.json last, and renamed
        into place in one step. An entry already there (only possible if someone bypassed the key
        lock) is kept if it is intact.
        """
        self._require_flight(key)
        names = [path.name for path in artifacts]
        if not names or len(set(names)) != len(names) or {ENTRY_FILE, OUTPUT_LOG} & set(names):
            raise ValueError(f"artifacts need unique names, not {ENTRY_FILE} or {OUTPUT_LOG}: {names}")
        work_root = self.wheels / WORK
        work_root.mkdir(mode=0o700, exist_ok=True)
        for dead in work_root.glob(f"{key}-*"):  # we hold the key: these writers are gone
            remove_tree(dead)
        work = work_root / f"{key}-{secrets.token_hex(6)}"
        work.mkdir(mode=0o700)
        try:
            placed = publish.place_files(artifacts, work)
            for path in placed:  # only we may change what later builds are given
                os.chmod(path, stat.S_IMODE(os.stat(path).st_mode) & ~(stat.S_IWGRP | stat.S_IWOTH))
            stored = [_digest(path) for path in placed]
            output = output or Output()
            log = None
            if output.log is not None:
                with publish.replacing(work / OUTPUT_LOG) as copy, output.log.open("rb") as original:
                    while chunk := original.read(_CHUNK):
                        copy.write(chunk)
                os.chmod(work / OUTPUT_LOG, 0o600)
                log = _digest(work / OUTPUT_LOG)
            record = {
                "format": FORMAT,
                "key": key,
                "project": project,
                "version": version,
                "artifacts": [dataclasses.asdict(artifact) for artifact in stored],
                "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "inputs": dict(inputs),
                "warnings": list(output.warnings),
                "log": None if log is None else dataclasses.asdict(log),
            }
            publish.write_text_atomically(work / ENTRY_FILE, json.dumps(record, indent=2) + "\n")
            return self._move_into_place(work, key)
        finally:
            if work.exists():
                remove_tree(work)

    def entries(self) -> list[Entry]:
        """Every readable entry, unverified. Needs no lock: entries appear and vanish by rename."""
        return self._scan()[0]

    def environments(self) -> list[buildenvs.StoredEnv]:
        """Every build environment directory with its size on disk. Needs no lock (a listing)."""
        return [
            dataclasses.replace(found, size=disk_usage(found.path)) for found in self._environments().stored()
        ]

    def usage(self) -> Usage:
        """What the whole cache directory takes on disk, as ``du`` counts it, and its parts."""
        seen: set[tuple[int, int]] = set()
        entries = sum(disk_usage(path, seen) for path in _entry_dirs(self.wheels))
        environments = sum(disk_usage(path, seen) for path in self._environments().paths())
        private = disk_usage(self.state.tmp, seen)
        memos = disk_usage(self.root / MEMOS, seen)
        other = disk_usage(self.root, seen)  # what is left: the counted directories are not entered again
        total = entries + environments + private + memos + other
        return Usage(total, entries, environments, private, memos, other)

    def clean(self, project: str | None = None) -> Removal:
        """Remove every entry, or those of ``project`` (compared as normalized names), and leftovers;
        with no ``project``, every build environment too. What is in use is left alone."""
        if not self.root.is_dir():
            return Removal()
        with self._lock.hold("exclusive"):
            entries, damaged = self._scan()
            if project is not None:
                wanted = canonicalize_name(project)
                entries = [entry for entry in entries if canonicalize_name(entry.project) == wanted]
                return self._remove_all(entries, [])
            removal = self._remove_all(entries, damaged)
            environments = self._environments().remove(lambda found: True, measure=disk_usage)
            busy = len(self._environments().paths())
            self._remove_empty_shards()
            return dataclasses.replace(removal, environments=tuple(environments), busy=removal.busy + busy)

    def prune(self, *, older_than: float | None = None, max_size: int | None = None) -> Removal:
        """Remove entries unused for more than ``older_than`` seconds, damaged entries, leftovers, and
        build environments unused for ``older_than`` (default: as long as they may be reused at all);
        then, while the whole directory takes more than ``max_size`` bytes on disk (as ``du`` counts
        it), the least recently used entry or build environment, whichever was used longest ago, and
        as a last resort key memos. Nothing in use is removed (their locks are not waited for)."""
        if not self.root.is_dir():
            return Removal()
        with self._lock.hold("exclusive"):
            entries, damaged = self._scan()
            old: list[Entry] = []
            if older_than is not None:
                cutoff = time.time() - older_than
                old = [entry for entry in entries if entry.last_used < cutoff]
            removal = self._remove_all(old, damaged)
            env_cutoff = time.time() - (buildenvs.DEFAULT_MAX_AGE if older_than is None else older_than)
            environments = self._environments().remove(
                lambda found: found.last_used < env_cutoff, measure=disk_usage
            )
            removal = dataclasses.replace(removal, environments=tuple(environments))
            if max_size is not None:
                removal = self._shrink(max_size, removal)
            self._remove_empty_shards()
            return removal

    def _shrink(self, max_size: int, removal: Removal) -> Removal:
        """Remove the least recently used entries and environments, then key memos, until the whole
        directory takes at most ``max_size`` bytes; under the exclusive lock."""
        total = self.usage().total
        queue: list[Entry | buildenvs.StoredEnv] = sorted(
            [*self._scan()[0], *self.environments()], key=lambda item: item.last_used
        )
        entries, environments, busy = list(removal.entries), list(removal.environments), removal.busy
        while total > max_size and queue:
            item = queue.pop(0)
            if isinstance(item, Entry):
                removed = self._remove_idle(item)
                if removed:
                    entries.append(item)
            else:
                gone = self._environments().remove_idle(item.path, measure=disk_usage)
                removed = gone is not None
                if gone is not None:
                    environments.append(gone)
            if removed:
                total -= item.size
            else:
                busy += 1
            if total <= max_size or not queue:
                total = self.usage().total  # measured again: the estimate may be off
        memos = 0
        if total > max_size:
            for memo in sorted(_children(self.root / MEMOS), key=_modified):
                if total <= max_size:
                    break
                size = disk_usage(memo)
                with contextlib.suppress(FileNotFoundError):
                    memo.unlink()
                    memos += 1
                    total -= size
        return dataclasses.replace(
            removal, entries=tuple(entries), environments=tuple(environments), memos=memos, busy=busy
        )

    def _environments(self) -> buildenvs.EnvStore:
        """The build environments kept beside the entries; removed only under the exclusive lock."""
        return buildenvs.EnvStore(self.state)

    def _remove_empty_shards(self) -> None:
        """Remove empty shard directories (``wheels/ab/``, ``envs/ab/``); under the exclusive lock,
        so no store or creation is about to fill one."""
        for parent in (self.wheels, self.state.envs):
            for shard in _children(parent):
                if not shard.name.startswith("."):
                    with contextlib.suppress(OSError):  # not empty, or gone
                        shard.rmdir()

    def _entry_dir(self, key: str) -> Path:
        return self.wheels / key[:2] / key

    def _require_flight(self, key: str) -> None:
        if key not in self._flights:
            raise RuntimeError(f"Cache.single_flight({key!r}) must be held to look up or store it")

    def _move_into_place(self, work: Path, key: str) -> Entry:
        final = self._entry_dir(key)
        final.parent.mkdir(mode=0o700, exist_ok=True)
        while True:
            try:
                os.rename(work, final)
            except OSError:
                if not final.is_dir():
                    raise
                existing = self.lookup(key)  # removes the one there if it is damaged: then retry
                if existing is not None:
                    return existing
            else:
                fsync_dir(final.parent)
                return _read_entry(final)

    def _scan(self) -> tuple[list[Entry], list[Path]]:
        """Readable entries, and the directories in entry places that hold none."""
        entries, damaged = [], []
        for path in _entry_dirs(self.wheels):
            try:
                entries.append(_read_entry(path))
            except FileNotFoundError:
                if path.is_dir():  # else: removed while we looked
                    damaged.append(path)
            except (OSError, ValueError, KeyError, TypeError):
                damaged.append(path)
        return entries, damaged

    def _remove_all(self, entries: Sequence[Entry], damaged: Sequence[Path]) -> Removal:
        """Remove ``entries`` (least recently used first) and ``damaged``, then what dead processes left.

        Runs under the exclusive cache lock: no work or trash directory, no key lock is in use. An
        entry whose key lock is held all the same is left, and so is that lock.
        """
        removed = [
            entry for entry in sorted(entries, key=lambda entry: entry.last_used) if self._remove_idle(entry)
        ]
        for path in damaged:
            self._remove(path)
        leftovers = workdirs.sweep(self.state.tmp)
        for hidden in (self.wheels / WORK, self.wheels / TRASH):
            for path in _children(hidden):
                remove_tree(path)
                leftovers += 1
        self._remove_key_locks()
        return Removal(tuple(removed), len(damaged), leftovers, busy=len(entries) - len(removed))

    def _remove_idle(self, entry: Entry) -> bool:
        """Remove ``entry`` under its key's lock, unless someone holds that lock (not waited for)."""
        try:
            with self._idle_key_lock(entry.key, entry.path).hold("exclusive"):
                self._remove(entry.path)
                self._unlink_key_lock(entry.key)
        except LockTimeout:
            return False
        self._remove_holders_dir(entry.key)
        return True

    def _remove_key_locks(self) -> None:
        """Remove the key lock files nobody holds. Under the exclusive lock nobody should; each is
        taken (not waited for) and unlinked while held all the same, so a lock someone holds stays,
        and a process that opened the file meanwhile sees it gone and takes the lock again."""
        for path in _children(self.state.locks / "keys"):
            key = path.name.removesuffix(".lock")
            if path.name == f"{key}.lock" and _KEY.fullmatch(key):
                try:
                    with self._idle_key_lock(key, key).hold("exclusive"):
                        self._unlink_key_lock(key)
                except LockTimeout:
                    continue
                self._remove_holders_dir(key)

    def _idle_key_lock(self, key: str, subject: Path | str) -> NamedLock:
        return dataclasses.replace(self.state, lock_timeout=0).key_lock(key, subject)

    def _unlink_key_lock(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.state.locks / "keys" / f"{key}.lock").unlink()

    def _remove_holders_dir(self, key: str) -> None:
        with contextlib.suppress(OSError):  # not there, or a record of a holder that came meanwhile
            (self.state.locks / "keys" / f"{key}.lock.holders").rmdir()

    def _remove(self, path: Path) -> None:
        """Move ``path`` into the trash with one rename, so nobody sees it half removed, then delete it."""
        trash = self.wheels / TRASH
        trash.mkdir(mode=0o700, exist_ok=True)
        doomed = trash / f"{path.name}-{secrets.token_hex(6)}"
        try:
            os.rename(path, doomed)
        except FileNotFoundError:
            return
        except PermissionError:  # moving a directory rewrites its "..": it must be writable
            os.chmod(path, stat.S_IMODE(path.lstat().st_mode) | stat.S_IWUSR)
            os.rename(path, doomed)
        remove_tree(doomed)


def _check_key(key: str) -> None:
    if not _KEY.fullmatch(key):
        raise ValueError(f"a cache key is 16 to 128 lowercase hex digits, not {key!r}")


def _entry_dirs(wheels: Path) -> Iterator[Path]:
    for shard in _children(wheels):
        if not shard.name.startswith("."):
            yield from _children(shard)


def _children(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _read_entry(path: Path) -> Entry:
    """The entry in directory ``path``; ValueError (or KeyError, TypeError, OSError) if damaged."""
    record = path / ENTRY_FILE
    data = _typed(json.loads(record.read_text(encoding="utf-8")), dict)
    key = path.name
    if data["format"] != FORMAT or data["key"] != key or path.parent.name != key[:2]:
        raise ValueError(f"{record} is not an entry of this format, or not in its place")
    return Entry(
        key=key,
        project=_typed(data["project"], str),
        version=_typed(data["version"], str),
        artifacts=tuple(map(_artifact, _typed(data["artifacts"], list))),
        built_at=datetime.fromisoformat(_typed(data["built_at"], str)).timestamp(),
        inputs=_typed(data["inputs"], dict),
        path=path,
        size=disk_usage(path),
        last_used=record.stat().st_mtime,
        warnings=tuple(_typed(text, str) for text in _typed(data.get("warnings", []), list)),
        log=None if data.get("log") is None else _artifact(data["log"], OUTPUT_LOG),
    )


def _artifact(item: object, expected: str | None = None) -> Artifact:
    fields = _typed(item, dict)
    name = _typed(fields["name"], str)
    if expected is not None and name != expected:
        raise ValueError(f"{name!r} is not {expected!r}")
    reserved = (ENTRY_FILE,) if expected is not None else (ENTRY_FILE, OUTPUT_LOG)
    if Path(name).name != name or name in ("", ".", "..", *reserved):
        raise ValueError(f"{name!r} is not the name of a file in the entry")
    return Artifact(name, _typed(fields["size"], int), _typed(fields["sha256"], str))


def _verified(path: Path) -> Entry | None:
    """The entry in ``path`` if entry.json is readable and every artifact matches its size and sha256."""
    if not (private_to_us(path) and private_to_us(path / ENTRY_FILE)):
        return None  # another user could have written it: not to be published
    try:
        entry = _read_entry(path)
        kept = list(zip(entry.files, entry.artifacts, strict=True))
        if entry.log is not None:
            kept.append((path / OUTPUT_LOG, entry.log))
        intact = all(private_to_us(file) and _digest(file) == artifact for file, artifact in kept)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return entry if intact else None


def _typed(value: object, kind: type[T]) -> T:
    if not isinstance(value, kind):
        raise TypeError(f"expected {kind.__name__}, found {value!r}")
    return value


def _digest(path: Path) -> Artifact:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as data:
        while chunk := data.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return Artifact(path.name, size, digest.hexdigest())


def disk_usage(path: Path, seen: set[tuple[int, int]] | None = None) -> int:
    """What ``path`` and everything below it take on disk, as ``du`` counts it: allocated blocks,
    each inode once (in ``seen``, shared between calls to count a hard link once), links not
    followed. A directory already in ``seen`` is not entered again."""
    seen = set() if seen is None else seen
    try:
        info = os.lstat(path)
    except OSError:
        return 0
    identity = (info.st_dev, info.st_ino)
    if identity in seen:
        return 0
    seen.add(identity)
    total = info.st_blocks * 512
    if stat.S_ISDIR(info.st_mode):
        try:
            with os.scandir(path) as listing:
                children = [Path(child.path) for child in listing]
        except OSError:
            return total
        total += sum(disk_usage(child, seen) for child in children)
    return total


def _modified(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return 0.0
