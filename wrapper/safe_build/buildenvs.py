"""Cached isolated build environments, one per set of build requirements, reused read-only.

``python -m build`` makes a new virtual environment and installs the build requirements into it for
every build: most of the time a small project takes to build. The store keeps one environment per
distinct (normalized requirements, constraints, installer, interpreter), at
``<cache>/envs/<key[:2]>/<key>/``, and hands it to any number of builds at once.

- **Made as build makes it.** build's own ``DefaultIsolatedEnv`` creates the venv and installs the
  requirements, so the environment holds what a fresh isolated build would get. With
  ``installer="uv"`` (``--installer uv``, as in build; uv found as build finds it: the ``uv`` package,
  ``$UV`` or ``uv`` on PATH) that is about a third faster than with pip. An environment is made at its
  final path, because a venv is not relocatable (its scripts name its interpreter), under the key's
  lock held exclusive.
- **Complete or absent.** The completion marker (requirements, resolved distributions, creation time,
  interpreter) is written last, atomically. A directory without it is a killed creation: the next
  creator removes it and starts again.
- **Read-only once made.** Bytecode is compiled, then every file and directory below the root loses
  its write permission, so a backend cannot change what the next build gets (a root user is not
  stopped; nothing we know of writes into its build environment, and an import that cannot cache
  bytecode only gets slower). Builds hold the key's lock shared while they use it.
- **Replaced, never changed.** An environment older than ``max_age`` (requirements without pins
  resolve again then), one not created during this run when ``refresh`` is set, or one that no longer
  works is removed and made anew once its users are done. Requirements the backend asks for at
  build time never go into a shared environment: they select another one, keyed on the union.
- **Ours alone.** An environment's root is 0700; one that another user owns or could write to is
  treated as absent and made anew, so that nobody else's code runs in our builds.
- **Inside the cache's lock.** Every use runs inside ``using()`` (the cache-wide lock held shared);
  :meth:`EnvStore.prune`, :meth:`EnvStore.clean` and :meth:`EnvStore.remove` are meant for the holder
  of that lock held exclusive, and leave alone any environment whose own lock is busy all the same.
  :meth:`EnvStore.stored` lists them (requirements, interpreter, creation, last use: the marker's
  modification time) for the cache's accounting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from build import BuildException, FailedProcessError
from build.env import Installer
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from safe_build import buildcompat
from safe_build.errors import LockTimeout
from safe_build.fsutil import private_to_us, remove_tree
from safe_build.publish import write_text_atomically
from safe_build.state import State

DEFAULT_MAX_AGE = 7 * 24 * 3600.0
MARKER = "safe-build-env.json"
_FORMAT = 1  # part of every key: a change of layout or marker starts a new set of environments

# Run by the new environment's own interpreter: compile its bytecode, then list what got installed.
_SEAL = """\
import compileall, importlib.metadata, json, sys, sysconfig
paths = sysconfig.get_paths()
for lib in sorted({paths["purelib"], paths["platlib"]}):
    compileall.compile_dir(lib, quiet=2, workers=0)
json.dump({d.metadata["Name"]: d.version for d in importlib.metadata.distributions()}, sys.stdout)
"""


@dataclass(frozen=True)
class BuildEnv:
    """A complete cached environment; an ``IsolatedEnv`` for ``ProjectBuilder.from_isolated_env``."""

    path: Path
    python_executable: str
    requirements: frozenset[str]  # normalized, as installed
    resolved: Mapping[str, str]  # canonical name -> version of everything installed
    created_at: float

    def make_extra_environ(self) -> dict[str, str]:
        """What build's own isolated environment sets for the backend: its scripts first, no PYTHONPATH."""
        scripts = os.path.dirname(self.python_executable)
        path = os.environ.get("PATH")
        return {"PATH": scripts if path is None else os.pathsep.join([scripts, path]), "PYTHONPATH": ""}

    def satisfies(self, requirement: str) -> bool:
        """True if installing ``requirement`` here would change nothing.

        A distribution pip installed came with its own dependencies, but those of an extra only if
        that extra was asked for, and a URL only matches itself: those need the very requirement.
        """
        if normalized(requirement) in self.requirements:
            return True
        try:
            parsed = Requirement(requirement)
        except InvalidRequirement:
            return False
        if parsed.marker is not None and not parsed.marker.evaluate():
            return True
        if parsed.extras or parsed.url:
            return False
        version = self.resolved.get(canonicalize_name(parsed.name))
        return version is not None and parsed.specifier.contains(version, prereleases=True)

    def installed_versions(self, requirements: Collection[str]) -> dict[str, str]:
        """The installed version of each requirement, by canonical name, as build reports them."""
        names = set()
        for requirement in requirements:
            with contextlib.suppress(InvalidRequirement):
                names.add(canonicalize_name(Requirement(requirement).name))
        return {name: version for name, version in self.resolved.items() if name in names}


def normalized(requirement: str) -> str:
    """One spelling per requirement (``Setuptools >= 61`` is ``setuptools>=61``), for keys and checks."""
    try:
        parsed = Requirement(requirement)
    except InvalidRequirement:
        return requirement.strip()  # not PEP 508 (a path, say): pip gets it as written
    parsed.name = canonicalize_name(parsed.name)
    return str(parsed)


class EnvStore:
    """The cached environments in ``state``; see the module docstring for the rules."""

    def __init__(
        self,
        state: State,
        *,
        max_age: float = DEFAULT_MAX_AGE,
        refresh: bool = False,
        using: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> None:
        self.state = state
        self.root = state.envs
        self.max_age = max_age
        self._using = using
        self._not_before = time.time() if refresh else -math.inf

    @contextlib.contextmanager
    def env(
        self, requirements: Collection[str], *, installer: Installer = "pip", constraints: str = ""
    ) -> Iterator[BuildEnv]:
        """An environment holding exactly ``requirements`` (made now if needed), kept for the body.

        ``constraints`` is the text of a constraints file, applied when the environment is made.
        """
        wanted = frozenset(map(normalized, requirements))
        key = _key(wanted, installer, constraints)
        path = self.root / key[:2] / key
        lock = self.state.build_env_lock(key, path)
        oldest = max(time.time() - self.max_age, self._not_before)
        made = False
        with self._using():
            while True:  # a second round only if it was replaced again between our two holds
                with lock.hold("shared"):
                    found = _read(path, key)
                    if found is not None and found.created_at >= oldest:
                        os.utime(path / MARKER)  # the last use, which prune goes by
                        if not made:
                            buildcompat.log(f"Using cached isolated environment: {path}", kind=("step",))
                        yield found
                        return
                with lock.hold("exclusive"):
                    found = _read(path, key)
                    if found is None or found.created_at < oldest:
                        _create(path, key, wanted, installer, constraints)
                        if _read(path, key) is None:  # else each round would make it again, forever
                            raise BuildException(f"the build environment just made at {path} is not usable")
                        made = True

    def prune(self, older_than: float) -> list[Path]:
        """Remove the environments unused for ``older_than`` seconds and killed creations."""
        cutoff = time.time() - older_than
        return [found.path for found in self.remove(lambda found: found.last_used < cutoff)]

    def clean(self) -> list[Path]:
        """Remove every environment not in use."""
        return [found.path for found in self.remove(lambda found: True)]

    def stored(self) -> list[StoredEnv]:
        """Every environment directory, complete or not, as its marker describes it. Needs no lock:
        for a listing only (one being made or removed meanwhile may be described as it was)."""
        return [_stored(path) for path in self.paths()]

    def remove(
        self, doomed: Callable[[StoredEnv], bool], *, measure: Callable[[Path], int] | None = None
    ) -> list[StoredEnv]:
        """Remove the environments not in use that ``doomed`` picks; what was removed, each with its
        ``size`` as ``measure`` found it just before."""
        removed = []
        for path in self.paths():
            found = self.remove_idle(path, doomed, measure=measure)
            if found is not None:
                removed.append(found)
        return removed

    def remove_idle(
        self,
        path: Path,
        doomed: Callable[[StoredEnv], bool] = lambda found: True,
        *,
        measure: Callable[[Path], int] | None = None,
    ) -> StoredEnv | None:
        """Remove the environment at ``path`` if nobody uses or makes it (its lock, not waited for)
        and ``doomed`` picks it as it is under that lock; what was removed, or None."""
        try:
            with self.state.build_env_lock(path.name, path, timeout=0).hold("exclusive"):
                found = _stored(path)
                if not (os.path.isdir(path) and doomed(found)):
                    return None
                if measure is not None:
                    found = dataclasses.replace(found, size=measure(path))
                _discard(path)
                return found
        except LockTimeout:
            return None  # in use or being made: its owner holds its lock

    def paths(self) -> list[Path]:
        """Every environment directory, complete or not."""
        return sorted(path for path in self.root.glob("*/*") if path.is_dir())


@dataclass(frozen=True)
class StoredEnv:
    """An environment directory as the store keeps it: what its marker says, if it has one."""

    path: Path
    last_used: float  # the marker's modification time; -inf without one (a killed or running creation)
    created_at: float | None = None  # None: no readable marker
    requirements: tuple[str, ...] = ()
    installer: str = ""
    python: str = ""  # the interpreter's version (``3.12.3``), as the marker records it
    implementation: str = ""
    size: int = 0  # bytes on disk, when the caller measured them

    @property
    def key(self) -> str:
        return self.path.name

    @property
    def complete(self) -> bool:
        return self.created_at is not None


def _stored(path: Path) -> StoredEnv:
    last_used = _last_used(path)
    try:
        marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
        python = marker["python"]
        return StoredEnv(
            path=path,
            last_used=last_used,
            created_at=float(marker["created_at"]),
            requirements=tuple(str(requirement) for requirement in marker["requirements"]),
            installer=str(marker.get("installer", "")),
            python=str(python["version"]).split(" ", 1)[0],
            implementation=str(python["implementation"]),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return StoredEnv(path=path, last_used=last_used)


def _key(requirements: frozenset[str], installer: Installer, constraints: str) -> str:
    identity = {
        "format": _FORMAT,
        "requirements": sorted(requirements),
        "constraints": constraints,
        "installer": installer,
        "python": _interpreter(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def _interpreter() -> dict[str, str]:
    """The base interpreter a new venv is made from: a different one needs other environments."""
    return {
        "implementation": sys.implementation.name,
        "version": sys.version,
        "base_prefix": os.path.realpath(sys.base_prefix),
    }


def _read(path: Path, key: str) -> BuildEnv | None:
    """The complete, working environment at ``path``, or None (absent, killed creation, broken,
    or open to another user)."""
    if not (private_to_us(path) and private_to_us(path / MARKER)):
        return None
    try:
        marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
        found = BuildEnv(
            path=path,
            python_executable=marker["python"]["executable"],
            requirements=frozenset(marker["requirements"]),
            resolved=marker["resolved"],
            created_at=float(marker["created_at"]),
        )
        usable = marker["key"] == key and os.path.exists(found.python_executable)  # its base Python is gone?
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return found if usable else None


def _last_used(path: Path) -> float:
    try:
        return (path / MARKER).stat().st_mtime
    except OSError:
        return -math.inf  # no marker: a killed creation


def _create(
    path: Path, key: str, requirements: frozenset[str], installer: Installer, constraints: str
) -> None:
    """Make the environment at ``path`` from nothing; on failure leave nothing."""
    _discard(path)  # a killed creation, or an environment being replaced
    with contextlib.suppress(FileExistsError):
        os.mkdir(path.parent, 0o700)
    os.mkdir(path, 0o700)  # build's own would be made by the umask's leave: others could plant code
    try:
        python = buildcompat.make_environment(
            os.fspath(path), installer, sorted(requirements), [constraints] if constraints else []
        )
        resolved = _seal(python)
        _make_read_only(path)
        os.chmod(path, 0o700)  # whatever the umask made it: ours alone, and removable by us
        marker = {
            "key": key,
            "requirements": sorted(requirements),
            "constraints": constraints,
            "installer": installer,
            "resolved": resolved,
            "created_at": time.time(),
            "python": {**_interpreter(), "executable": python},
        }
        write_text_atomically(path / MARKER, json.dumps(marker, indent=2, sort_keys=True) + "\n")
    except BaseException:
        with contextlib.suppress(OSError):
            _discard(path)
        raise


def _discard(path: Path) -> None:
    """Remove an environment, its marker first: one removed only in part is a killed creation."""
    with contextlib.suppress(FileNotFoundError):
        (path / MARKER).unlink()
    if os.path.lexists(path):
        remove_tree(path)


def _seal(python: str) -> dict[str, str]:
    """Compile the environment's bytecode now (it will be read-only); return what is installed."""
    try:
        listed = subprocess.run(
            [python, "-I", "-c", _SEAL], check=True, capture_output=True, text=True
        ).stdout
    except subprocess.CalledProcessError as error:
        buildcompat.log_subprocess_error(error)
        raise FailedProcessError(error, "Failed to compile the build environment's bytecode") from None
    return {canonicalize_name(name): version for name, version in json.loads(listed).items()}


def _make_read_only(root: Path) -> None:
    for current, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            entry = os.path.join(current, name)
            info = os.lstat(entry)
            if not stat.S_ISLNK(info.st_mode):  # a link's mode is its target's: the base interpreter
                os.chmod(entry, stat.S_IMODE(info.st_mode) & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
