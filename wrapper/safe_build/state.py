"""safe-build's state directory: its layout, the marker that makes it safe-build's, and every lock.

The root is ``--cache-dir``, ``SAFE_BUILD_CACHE_DIR`` or the user cache directory::

    CACHEDIR.TAG                tells backup tools to skip it (the Cache Directory Tagging Specification)
    safe-build-state.json       the marker: this directory is safe-build's, in layout LAYOUT
    tmp/                        private work directories (workdirs)
    wheels/                     cache entries (cache)
    envs/                       cached build environments (buildenvs)
    key-memos/                  content digests kept between builds (cachekey)
    locks/                      lock files; holders/: who holds the locks on directories

**Own what you touch.** Only a root with the marker is used: a new or empty directory is marked,
a non-empty one without the marker is refused with one line and left as it is, since whatever it
holds is someone else's. Every sweep, prune and removal works below a ``State``, so nothing is
removed outside a marked root.

**Private.** The root and everything in it are made 0700 (files 0600 or read-only) whatever the
umask. A root that another user owns or can write to is not trusted: they could have planted an
entry that would be published, or a build environment whose code would run. It is then left
alone, with one warning, and the run keeps its state in a fresh private directory that goes
when it ends: a build without the cache, as pip disables a cache it does not own.

**Locks** come from here, one factory per kind, each with its rank in the lock order (``Rank``;
``locks`` enforces it). A lock that must exclude across cache directories is placed by the thing
it protects: a project's is a ``flock`` on the project directory itself, an install location's on
that directory (a venv's on a lock file inside it), pip's cache's on pip's cache directory. Two
cache directories, or a lock file removed by ``rm -rf``, cannot split those, and nothing is
written into the tree. The others (the cache, a key, a build environment, a venv being created)
protect what lies in one state directory and live in its ``locks/``.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import hashlib
import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from safe_build import netfs, progress
from safe_build.errors import SafeBuildError
from safe_build.fsutil import remove_tree
from safe_build.locks import NamedLock, unwritable_state

LAYOUT = 1
MARKER = "safe-build-state.json"
TAG = "CACHEDIR.TAG"
# the specification's signature line starts the file; the rest is for whoever opens it
TAG_TEXT = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by safe-build.\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)
SUBDIRECTORIES = ("tmp", "wheels", "envs", "key-memos", "locks", "locks/keys", "locks/envs", "locks/holders")
ENVIRONMENT_LOCK_NAME = ".safe-build-env.lock"  # a venv's lock file, inside it

# what the safe-builds before the marker left: their top-level names and their lock file names
_PREVIOUS_LAYOUT = frozenset({"tmp", "wheels", "envs", "key-memos", "locks"})
_PREVIOUS_LOCK = re.compile(
    r"(cache\.lock|keys|envs|(project|environment|pip-cache|venv)-.+\.lock)(\.holders|\.creating)?"
)

_warned: set[Path] = set()


class Rank(enum.IntEnum):
    """The lock order: a process takes locks in increasing rank, never waiting for a lower one.

    docs/architecture.md's lock table lists these in this order (a test compares them).
    """

    VENV = 10  # safe-build venv: one creation of a venv
    PIP_CACHE = 20  # pip's cache: shared by pip commands that use it, exclusive for purge and remove
    CACHE = 30  # the cache: shared by every use, exclusive for clean and prune
    BUILD = 40  # one cache key: the one build of it that runs at a time
    PROJECT = 50  # a project tree: shared by snapshots, exclusive for in-place builds and editable installs
    BUILD_ENV = 60  # one cached build environment: shared by its users, exclusive while it is made
    ENVIRONMENT = 70  # an install location: exclusive for every command that changes it


@dataclass(frozen=True)
class State:
    """A marked, trusted state root (``root``); ``configured`` is the one the settings name, which
    differs when that one was not trusted and the run keeps its state privately."""

    root: Path
    configured: Path
    lock_timeout: float

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def wheels(self) -> Path:
        return self.root / "wheels"

    @property
    def envs(self) -> Path:
        return self.root / "envs"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def cache_enabled(self) -> bool:
        """False when the configured root was not trusted: what is kept here goes when the run ends."""
        return self.root == self.configured

    def memo_path(self, project: Path) -> Path:
        """Where the content digests of ``project``'s files are kept between builds."""
        return self.root / "key-memos" / f"{_keyed_name(Path(os.path.realpath(project)))}.memo"

    def cache_lock(self) -> NamedLock:
        return self._file_lock(self.locks / "cache.lock", "cache", self.root, Rank.CACHE)

    def key_lock(self, key: str, subject: Path | str) -> NamedLock:
        return self._file_lock(self.locks / "keys" / f"{key}.lock", "build", subject, Rank.BUILD)

    def build_env_lock(self, key: str, path: Path, *, timeout: float | None = None) -> NamedLock:
        lock_file = self.locks / "envs" / f"{key}.lock"
        return self._file_lock(lock_file, "build environment", path, Rank.BUILD_ENV, timeout=timeout)

    def venv_lock(self, path: Path) -> NamedLock:
        """The lock on creating the venv at the real path ``path``."""
        return self._file_lock(self.locks / f"venv-{_keyed_name(path)}.lock", "venv", path, Rank.VENV)

    def project_lock(self, project: Path) -> NamedLock:
        """The lock on the project directory ``project`` (its real path): the directory itself."""
        return self._directory_lock(project, "project", Rank.PROJECT)

    def environment_lock(self, path: Path, *, inside: bool) -> NamedLock:
        """The lock on the install location ``path`` (a real path, an existing directory).

        A venv's is a lock file inside it (``inside``), which ``safe-build venv --clear`` keeps;
        any other location is locked as a directory, since a lock file in a ``--target``,
        ``--prefix`` or ``--root`` directory would end up in what the user ships, and a system
        Python's prefix is not ours to write into.
        """
        if inside:
            return self._file_lock(path / ENVIRONMENT_LOCK_NAME, "environment", path, Rank.ENVIRONMENT)
        return self._directory_lock(path, "environment", Rank.ENVIRONMENT)

    def pip_cache_lock(self, pip_cache: Path) -> NamedLock:
        """The lock on pip's cache directory (an existing directory): pip's lock files are pip's."""
        return self._directory_lock(pip_cache, "pip cache", Rank.PIP_CACHE)

    def _file_lock(
        self, lock_file: Path, what: str, subject: Path | str, rank: Rank, *, timeout: float | None = None
    ) -> NamedLock:
        timeout = self.lock_timeout if timeout is None else timeout
        return NamedLock(lock_file, what=what, subject=subject, timeout=timeout, rank=rank)

    def _directory_lock(self, path: Path, what: str, rank: Rank) -> NamedLock:
        records = self.locks / "holders" / f"{what.replace(' ', '-')}-{_keyed_name(path)}"
        timeout = self.lock_timeout
        return NamedLock(
            path, what=what, subject=path, timeout=timeout, rank=rank, directory=True, records=records
        )


def at(root: Path, *, lock_timeout: float) -> State:
    """The state at ``root``, marked and laid out if it is new or empty.

    A non-empty directory without the marker is one line (``SafeBuildError``), untouched. A root
    that another user could have written is replaced, for this run, by a private one, with a
    warning.
    """
    root = Path(os.path.abspath(root))
    with contextlib.suppress(FileExistsError):
        _make_private(root, parents=True)
    distrust = _check(root, adopt=True)
    if distrust is not None:
        return _private_instead(root, distrust, lock_timeout)
    _lay_out(root)
    netfs.warn_if_network(root, "cache directory")
    return State(root, root, lock_timeout)


def existing(root: Path, *, lock_timeout: float) -> State:
    """The state at ``root``, for commands that only read or remove (``cache``): nothing is made.

    A ``root`` that does not exist is a state with nothing in it; one that is not safe-build's or
    not trusted is one line, and nothing there is removed.
    """
    root = Path(os.path.abspath(root))
    if not os.path.lexists(root):
        return State(root, root, lock_timeout)
    distrust = _check(root, adopt=False)
    if distrust is not None:
        raise SafeBuildError(
            f"the cache directory {root} is not trusted: {distrust}",
            hint="remove it, or choose another with --cache-dir or SAFE_BUILD_CACHE_DIR",
            path=root,
        )
    return State(root, root, lock_timeout)


def _check(root: Path, *, adopt: bool) -> str | None:
    """Why ``root`` is not to be trusted, or None; marks it when it is ours (``adopt``) and new
    to the marker: empty, or left by a safe-build from before it.

    Raises ``SafeBuildError`` for a directory that is not safe-build's.
    """
    try:
        info = os.stat(root)
    except OSError as error:
        raise unwritable_state(root, error) from None
    if not stat.S_ISDIR(info.st_mode):
        raise SafeBuildError(
            f"the cache directory {root} is not a directory",
            hint="choose another with --cache-dir or SAFE_BUILD_CACHE_DIR",
            path=root,
        )
    distrust = _others_reach(root, info)
    layout = _marked_layout(root)
    if layout is None and _empty(root):
        if distrust is None and adopt:
            _adopt(root, stat.S_IMODE(info.st_mode))
        return distrust
    if layout is None:
        layout = _marked_layout(root)  # marked meanwhile by a safe-build adopting it at the same time
    if layout is None and not _left_by_an_older_safe_build(root):
        raise SafeBuildError(
            f"{root} is not a safe-build cache directory: it holds other files, and no {MARKER}",
            hint="choose a new or empty directory with --cache-dir or SAFE_BUILD_CACHE_DIR "
            "(safe-build removes only what lies in a directory it made)",
            path=root,
        )
    if layout not in (None, LAYOUT):
        raise SafeBuildError(
            f"the cache directory {root} was made by a safe-build of another layout ({layout}, not {LAYOUT})",
            hint="use that safe-build with it, or remove it, or choose another with --cache-dir",
            path=root,
        )
    if distrust is None and stat.S_IMODE(info.st_mode) & (stat.S_IWGRP | stat.S_IWOTH):
        distrust = "other users can write to it"
    if distrust is None and layout is None and adopt:
        _mark(root)
    return distrust


def _others_reach(root: Path, info: os.stat_result) -> str | None:
    """How another user could swap ``root`` for theirs, or None."""
    if info.st_uid != os.geteuid():
        return f"it is owned by another user (uid {info.st_uid})"
    parent = os.stat(root.parent)
    if parent.st_uid not in (0, info.st_uid):
        return f"another user (uid {parent.st_uid}) can rename it: they own its parent {root.parent}"
    if parent.st_mode & stat.S_IWOTH and not parent.st_mode & stat.S_ISVTX:
        return f"anyone can rename it: its parent {root.parent} is world-writable, without the sticky bit"
    return None


def _empty(root: Path) -> bool:
    """Nothing in ``root`` but a marker and a tag, or their temporaries."""
    ours = (MARKER, TAG)
    return all(
        name in ours or name.startswith(tuple(f".{mine}." for mine in ours)) for name in _listing(root)
    )


def _listing(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError as error:
        raise unwritable_state(path, error) from None


def _left_by_an_older_safe_build(root: Path) -> bool:
    """Whether ``root`` holds the layout of the safe-builds before the marker, so that a cache
    from before an upgrade is kept: only its names at the top, and only its lock files in
    ``locks/`` (a directory every run of those made), which no other tool's directory holds."""
    names = set(_listing(root)) - {TAG}
    if not names <= _PREVIOUS_LAYOUT or "locks" not in names:
        return False
    try:
        locks = os.listdir(root / "locks")
    except OSError:
        return False
    return bool(locks) and all(_PREVIOUS_LOCK.fullmatch(name) for name in locks)


def _marked_layout(root: Path) -> object | None:
    """The layout the marker names, or None without a marker; a damaged marker is no marker."""
    try:
        fd = os.open(root / MARKER, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise unwritable_state(root, error) from None
    with os.fdopen(fd, encoding="utf-8") as marker:
        try:
            data = json.load(marker)
        except ValueError:
            return None
    return data.get("layout") if isinstance(data, dict) else None


def _adopt(root: Path, mode: int) -> None:
    """Make the empty directory ``root`` ours: closed to others first, then, if it is still
    empty (nobody else had the chance to put anything in it), marked. The owner's own rights
    stay as they were: a directory made read-only fails as read-only."""
    try:
        os.chmod(root, mode & 0o700)
        if not _empty(root) and _marked_layout(root) is None:  # marked: a safe-build adopting it too
            raise SafeBuildError(
                f"{root} was written to by someone else while safe-build took it as its cache directory",
                hint="choose a directory of your own with --cache-dir or SAFE_BUILD_CACHE_DIR",
                path=root,
            )
        _mark(root)
    except BaseException:
        with contextlib.suppress(OSError):
            os.chmod(root, mode)
        raise


def _mark(root: Path) -> None:
    """Write the marker, then the tag, each whole or not at all: racing markers agree."""
    try:
        _place_once(root / MARKER, json.dumps({"layout": LAYOUT, "tool": "safe-build"}) + "\n")
        _place_once(root / TAG, TAG_TEXT)
    except OSError as error:
        raise unwritable_state(root, error) from None


def _place_once(final: Path, text: str) -> None:
    """``final`` with ``text``, written to a temporary and linked into place unless it exists."""
    fd, temporary = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.")  # 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, final)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def _lay_out(root: Path) -> None:
    for name in SUBDIRECTORIES:
        with contextlib.suppress(FileExistsError):
            _make_private(root / name)


def _make_private(path: Path, *, parents: bool = False) -> None:
    """Make the directory ``path`` 0700 whatever the umask; its missing parents as mkdir -p would.

    FileExistsError if it exists.
    """
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except OSError as error:
        if isinstance(error, FileExistsError):
            raise
        raise unwritable_state(path, error) from None
    os.chmod(path, 0o700)  # a umask such as 0o277 would have taken our own rights away


def _private_instead(configured: Path, distrust: str, lock_timeout: float) -> State:
    """A fresh private state for this run, in place of ``configured``; removed when the run ends."""
    if configured not in _warned:
        _warned.add(configured)
        progress.labelled(
            "warning",
            f"the cache directory {configured} is not trusted ({distrust}); building without the cache. "
            "Choose one of your own with --cache-dir or SAFE_BUILD_CACHE_DIR",
        )
    root = Path(tempfile.mkdtemp(prefix="safe-build-state-"))  # 0700
    _mark(root)
    _lay_out(root)
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:  # not in a forked child
            with contextlib.suppress(OSError):
                remove_tree(root)

    atexit.register(remove)
    return State(root, configured, lock_timeout)


def _keyed_name(path: Path) -> str:
    """A file name for ``path``: its last component (for whoever reads the directory) and a digest
    of the whole path (so that two paths never share one)."""
    # the name cut short: a legal name of 255 bytes plus the digest would not fit in one
    return f"{path.name[:64]}-{hashlib.sha256(os.fsencode(path)).hexdigest()[:16]}"
