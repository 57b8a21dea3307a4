"""The cache key of a build: one sha256 digest of everything that can change the artifacts it makes.

Two builds with the same key may share artifacts, so the key must change whenever the artifacts
could. It covers:

- **The source, exactly as a snapshot would copy it** (``snapshot.listing``, with the user's
  include and exclude patterns, and the rules of the snapshot's copier), read in place, never
  copied: for each copied entry its path, its kind and, for a file, its permission bits (as
  the copy sets them; sdists and setuptools' wheels record them, so not only the executable
  bit) and its content, as many bytes as the copy takes. A link into the project counts as the
  relative link the copy makes of it, so identical trees at different paths have one key; a
  link out of the project counts as what it points to (a file's content, a directory walked);
  a dangling link counts as its text. A listed directory (a git submodule, or any
  directory of a walked tree) counts as a directory, and a submodule by everything the copy
  takes from it. Sockets, fifos and devices, which the copy skips, and files deleted between
  listing and reading, are left out.
- **The build inputs** the caller passes (distributions, config settings, isolation, installer,
  ...), as canonical JSON.
- **The build system**: ``[build-system]`` requires, build-backend and backend-path, with
  ``build``'s own default (setuptools' legacy backend) when the table or the file is absent.
- **The interpreter and platform**: implementation and version, ABI flags, the most specific
  wheel tag of this interpreter, the locale's encoding, the ``build`` and safe-build versions;
  for ``--no-isolation`` builds the installed versions of the build requirements ("missing" if
  not installed).
- **The environment variables known to change a build** (``ENVIRONMENT_NAMES`` and
  ``ENVIRONMENT_PREFIXES``), and the content of configuration files outside the project that
  a backend or installer reads (``CONFIG_FILE_VARIABLES``, ``USER_CONFIG_FILES``).

What the key deliberately leaves out, and why:

- **File modification times.** Sdists record them, so an sdist built after ``touch`` differs in
  its timestamps, but not in any content a user or installer relies on; keying on times would
  make every checkout, ``git stash`` or editor save-without-change a miss.
- **What a snapshot never copies**: ``.git``, ``build/``, ``dist/``, ``*.egg-info``,
  ``__pycache__``, ``node_modules``, ..., an ``exclude``d output directory and, in a git work
  tree, ignored files. A backend building from the snapshot cannot see them either.
- **The versions that isolated build requirements resolve to.** ``requires = ["setuptools"]``
  installs whatever the index serves today; asking the index on every build would cost a
  network round trip per build and still not be reproducible. Projects that need a fresh
  resolution pin their requirements (the pins are in the key) or clear the cache. For the same
  reason the versions of pip and uv, and pip's own configuration files, are not in the key; the
  ``PIP_*``/``UV_*`` variables that choose indexes and constraints are.
- **Requirements a backend adds at run time** (``get_requires_for_build_*``): knowing them means
  running the backend.
- **Compilers and other tools found on ``PATH``**, and ``PATH`` itself: activating a virtual
  environment changes ``PATH`` without changing any build; the variables that name compilers
  and their flags are in the key.
- **Variables a project's own configuration names** (hatch's ``{env:NAME}`` and ``env`` version
  source, a ``setup.py`` reading ``os.environ``): they cannot be known without running the
  project's code.
- **Directory permissions and the umask**: the copy creates directories with default modes.

Speed: the source is read once, in place, in one thread (see ``_Hasher``), each file with
``open``, one ``read`` of its size (the ``lstat`` that decides what the copy does gives it),
``close``: about 25 microseconds a file, a third of it the sha256. With a ``memo`` file, a
file's content digest is reused while its identity (device, inode, size, modification and
change times) is unchanged, so an unchanged tree costs one ``lstat`` per file. Like git with
its "racily clean" index entries, the memo never holds a file changed less than ``SETTLE_NS``
before the run started: a second write within the same clock tick as the one the memo saw
would leave the file's times as they were. Any later write gets a later change time, which no
memorized entry has. (This assumes the file system's clock is within ``SETTLE_NS`` of this
machine's, as it is for local file systems.) The memo only spares reads; the key is the same
with or without it.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import importlib.metadata
import json
import locale
import os
import stat
import struct
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TypedDict

import build
from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import sys_tags
from packaging.utils import canonicalize_name

import safe_build
from safe_build import publish, snapshot
from safe_build.config import Selection

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

KEY_FORMAT = 1  # bump when what goes into the key, or how, changes

# Environment variables that change what a backend builds or which build requirements get installed.
ENVIRONMENT_NAMES: tuple[str, ...] = (
    # reproducible-build time stamp: flit, hatchling, setuptools' sdists, wheel
    "SOURCE_DATE_EPOCH",
    # compilers and flags: setuptools' distutils (compilers/C/unix.py) and CPython's _osx_support
    "CC",
    "CXX",
    "CPP",
    "CFLAGS",
    "CXXFLAGS",
    "CPPFLAGS",
    "LDFLAGS",
    "LDSHARED",
    "LDCXXSHARED",
    "AR",
    "ARFLAGS",
    "RANLIB",
    "ARCHFLAGS",
    "MACOSX_DEPLOYMENT_TARGET",
    "DISTUTILS_USE_SDK",
    "VSCMD_ARG_TGT_ARCH",
    # target platform and configuration of the interpreter: sysconfig, distutils
    "_PYTHON_HOST_PLATFORM",
    "_PYTHON_SYSCONFIGDATA_NAME",
    "_PYTHON_PROJECT_BASE",
    # an extra setuptools configuration file (its content is in the key too)
    "DIST_EXTRA_CONFIG",
    # flit accepts otherwise invalid metadata
    "FLIT_ALLOW_INVALID",
    # what the backend imports, and the order of its sets (the locale is keyed as the encoding it
    # gives files a setup.py opens without one: LANG=C.UTF-8 and LANG=en_US.UTF-8 build alike)
    "PYTHONPATH",
    "PYTHONNOUSERSITE",
    "PYTHONHASHSEED",
    # pip, installing isolated build requirements: where from, which versions
    "PIP_INDEX_URL",
    "PIP_PYPI_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_NO_INDEX",
    "PIP_FIND_LINKS",
    "PIP_CONSTRAINT",
    "PIP_BUILD_CONSTRAINT",
    "PIP_PRE",
    "PIP_ONLY_BINARY",
    "PIP_NO_BINARY",
    "PIP_PREFER_BINARY",
    "PIP_UPLOADED_PRIOR_TO",
    "PIP_ALL_RELEASES",
    "PIP_ONLY_FINAL",
    "PIP_IGNORE_REQUIRES_PYTHON",
    "PIP_NO_DEPS",
    "PIP_USE_FEATURE",
    "PIP_USE_DEPRECATED",
    "PIP_CONFIG_FILE",
    "PIP_ISOLATED",
    # uv, when build's installer is uv ("UV" names the uv executable build runs)
    "UV",
    "UV_INDEX",
    "UV_DEFAULT_INDEX",
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "UV_FIND_LINKS",
    "UV_NO_INDEX",
    "UV_INDEX_STRATEGY",
    "UV_CONSTRAINT",
    "UV_BUILD_CONSTRAINT",
    "UV_OVERRIDE",
    "UV_PRERELEASE",
    "UV_RESOLUTION",
    "UV_EXCLUDE_NEWER",
    "UV_NO_BINARY",
    "UV_NO_BUILD",
    "UV_CONFIG_FILE",
    "UV_NO_CONFIG",
    # Rust extensions (maturin, setuptools-rust)
    "RUSTFLAGS",
)
ENVIRONMENT_PREFIXES: tuple[str, ...] = (
    "SETUPTOOLS_",  # setuptools (SETUPTOOLS_USE_DISTUTILS, _EXT_SUFFIX, ...), setuptools-scm, hatch-vcs
    "HATCH_BUILD_",  # hatchling's build hooks and build location
    "PDM_BUILD_",  # pdm-backend (PDM_BUILD_SCM_VERSION)
    "SKBUILD_",  # scikit-build-core
    "CMAKE_",  # CMake-driven backends (CMAKE_ARGS, CMAKE_GENERATOR, ...)
    "MATURIN_",
    "CARGO_",
    "PYO3_",
)
# Variables naming files whose content matters too; pip and uv take space-separated lists.
CONFIG_FILE_VARIABLES: tuple[str, ...] = (
    "DIST_EXTRA_CONFIG",
    "PIP_CONFIG_FILE",
    "PIP_CONSTRAINT",
    "PIP_BUILD_CONSTRAINT",
    "UV_CONFIG_FILE",
    "UV_CONSTRAINT",
    "UV_BUILD_CONSTRAINT",
)
USER_CONFIG_FILES: tuple[str, ...] = ("~/.pydistutils.cfg",)  # setuptools reads it for every build

# build's default when pyproject.toml has no [build-system] (build._builder._DEFAULT_BACKEND)
LEGACY_BACKEND = "setuptools.build_meta:__legacy__"
LEGACY_REQUIRES = ("setuptools >= 40.8.0",)

SETTLE_NS = 2_000_000_000  # files changed this recently are not memorized: coarse and 2 s clocks
_CHUNK = 1 << 20
_NO_CONTENT = bytes(32)
_IDENTITY = struct.Struct("<QQQqq")  # device, inode, size, mtime_ns, ctime_ns
_MEMO_MAGIC = b"safe-build key memo 1\n"
_MEMO_ENTRY = _IDENTITY.size + 32


@dataclass(frozen=True)
class Key:
    """A build's cache key, with what went into it for display."""

    digest: str
    files: int  # regular files in the snapshot, links out of the project included
    bytes: int
    listed_by: str  # "git" or "walk"
    links: int  # links kept as links: into the project, or dangling
    read: int  # files whose content was read; the others' digests came from the memo
    build_backend: str
    requires: tuple[str, ...]
    tag: str  # the most specific wheel tag of this interpreter
    environment: tuple[str, ...]  # names only: values may hold credentials (index URLs)

    def describe(self) -> dict[str, object]:
        return {
            "digest": self.digest,
            "files": self.files,
            "links": self.links,
            "bytes": self.bytes,
            "read": self.read,
            "listed_by": self.listed_by,
            "build_backend": self.build_backend,
            "requires": list(self.requires),
            "tag": self.tag,
            "environment": list(self.environment),
        }


def compute(
    project: Path,
    inputs: Mapping[str, object],
    *,
    exclude: Iterable[str] = (),
    selection: Selection | None = None,
    no_isolation: bool = False,
    memo: Path | None = None,
    inner: str = "",
) -> Key:
    """The cache key of building ``project`` (a real, absolute path) with ``inputs``.

    ``exclude`` and ``selection`` choose the files as they do for ``snapshot.take``; ``inner``
    is the project's path below ``project`` when ``project`` is the repository around it.
    ``inputs`` holds plain JSON values (a ``TypeError`` says otherwise). An input that names a
    file, such as a constraints file, belongs in it by its content, not its path. ``memo`` is a
    file where content digests are kept between calls (see ``memo_path``); it is created if
    missing and ignored if unreadable.
    """
    root = os.path.realpath(project)
    entries, listed_by = snapshot.listing(
        Path(root), exclude=exclude, selection=selection, project_at_root=not inner
    )
    source = _hash_source(root, entries, expand_dirs=listed_by == "git", memo=memo)
    build_system = _build_system(os.path.join(root, inner) if inner else root)
    environment = {name: value for name, value in os.environ.items() if _affects_build(name)}
    interpreter = _interpreter()
    parts = {
        "format": KEY_FORMAT,
        "source": source.digest,
        "inputs": inputs,
        "build-system": build_system,
        "interpreter": interpreter,
        "installed": _installed(build_system["requires"]) if no_isolation else None,
        "environment": environment,
        "config-files": _config_files(),
    }
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return Key(
        digest=hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        files=source.files,
        bytes=source.size,
        listed_by=listed_by,
        links=source.links,
        read=source.read,
        build_backend=build_system["build_backend"],
        requires=tuple(build_system["requires"]),
        tag=interpreter["tag"],
        environment=tuple(sorted(environment)),
    )


def memo_path(cache_dir: Path, project: Path) -> Path:
    """Where the content digests of ``project``'s files are kept between builds: one file per project."""
    real = os.path.realpath(project)
    digest = hashlib.sha256(os.fsencode(real)).hexdigest()[:16]
    return cache_dir / "key-memos" / f"{os.path.basename(real)}-{digest}.memo"


# --------------------------------------------------------------------------- the source


@dataclass(frozen=True)
class _Source:
    digest: str
    files: int
    links: int
    size: int
    read: int


def _hash_source(root: str, entries: list[str], *, expand_dirs: bool, memo: Path | None) -> _Source:
    """Digest of what a snapshot would copy; the memo, if any, is used and brought up to date."""
    known = _load_memo(memo) if memo is not None else {}
    hasher = _Hasher(root, known=known, remember=memo is not None, settled_before=time.time_ns() - SETTLE_NS)
    for relative in entries:
        hasher.entry(root + "/" + relative, relative, expand_dirs)
    if memo is not None and hasher.settled != known:
        _save_memo(memo, hasher.settled)
    return _Source(
        hashlib.sha256(b"".join(sorted(hasher.records))).hexdigest(),
        files=hasher.files,
        links=hasher.links,
        size=hasher.size,
        read=hasher.read,
    )


class _Hasher:
    """Finds what ``snapshot._Copier`` would copy for each entry, and digests it.

    It follows the copier's rules one for one (the same ``lstat`` decisions, the same link
    rewriting, the same walk of submodules and of directories linked from outside), so that the
    key covers exactly what a build would see.

    One thread, like the copier: per file, the system calls and Python's own work cost about as
    much as the digest, and threads, handing the GIL over at each system call, made trees of
    small files slower to hash on a busy two-core machine (0.66 s against 0.51 s for 20,000
    files); only large files gained a little (15 %).
    """

    def __init__(
        self, root: str, *, known: Mapping[bytes, bytes], remember: bool, settled_before: int
    ) -> None:
        self.root = root
        self.known = known
        self.remember = remember  # keep the digests of settled files, for the memo
        self.settled_before = settled_before
        self.records: list[bytes] = []  # see _add
        self.settled: dict[bytes, bytes] = {}  # identity -> digest, for the memo
        self.files = self.links = self.size = self.read = 0

    def entry(self, path: str, relative: str, expand: bool) -> None:
        """One listed entry; ``expand``: a directory's content is copied too (a submodule's)."""
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return  # deleted from the work tree but still in git's index: the copy skips it too
        if stat.S_ISREG(info.st_mode):
            self._file(path, relative, info)
        elif stat.S_ISLNK(info.st_mode):
            self._link(path, relative)
        elif stat.S_ISDIR(info.st_mode):
            self._add(relative, b"d", _NO_CONTENT)
            if expand:
                self._directory(path, relative)

    def _add(self, relative: str, kind: bytes, content: bytes) -> None:
        """One entry of the copy: path, kind (and a file's mode), digest of its content.

        Paths hold no NUL and digests have one length, so the concatenated records are
        unambiguous, and sorting them sorts by path.
        """
        self.records.append(b"%s\0%s\0%s" % (relative.encode("utf-8", "surrogateescape"), kind, content))

    def _directory(self, path: str, relative: str) -> None:
        # the copier's own walk, so that exclusions inside submodules and linked directories match
        for inner in snapshot._walk(path, lambda inner: False):
            self.entry(f"{path}/{inner}", f"{relative}/{inner}", False)

    def _link(self, path: str, relative: str) -> None:
        target = os.path.realpath(path)
        inside = target == self.root or target.startswith(self.root + os.sep)
        if inside or not os.path.exists(target):
            # inside: the relative link the copy makes, from the entry's place (not the link's, which
            # differs below a directory linked from outside); dangling: the link as it is
            place = os.path.dirname(f"{self.root}/{relative}")
            link = os.path.relpath(target, place) if inside else os.readlink(path)
            self._add(relative, b"l", hashlib.sha256(os.fsencode(link)).digest())
            self.links += 1
        elif os.path.isdir(target):
            self._add(relative, b"d", _NO_CONTENT)
            self._directory(target, relative)
        else:
            with contextlib.suppress(FileNotFoundError):
                info = os.stat(target)
                if stat.S_ISREG(info.st_mode):  # the copier would block on a fifo; skip it here
                    self._file(target, relative, info)

    def _file(self, path: str, relative: str, info: os.stat_result) -> None:
        identity = _identity(info) if self.remember else None
        content = self.known.get(identity) if identity is not None else None
        unchanged = content is not None
        if content is None:
            read = _read_digest(path, info.st_size, identity)
            if read is None:
                return  # deleted since it was listed
            content, unchanged = read
            self.read += 1
        if (
            identity is not None
            and unchanged
            and max(info.st_mtime_ns, info.st_ctime_ns) < self.settled_before
        ):
            self.settled[identity] = content
        mode = stat.S_IMODE(info.st_mode) | stat.S_IWUSR | stat.S_IRUSR  # as the copy sets it
        self._add(relative, b"f%o" % mode, content)
        self.files += 1
        self.size += info.st_size


def _identity(info: os.stat_result) -> bytes:
    """What changes whenever a file's content may have: its memo key."""
    return _IDENTITY.pack(info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _read_digest(path: str, size: int, identity: bytes | None) -> tuple[bytes, bool] | None:
    """The sha256 of a file's first ``size`` bytes (as many as the copy takes); is it still ``identity``?

    ``identity`` is checked only when the digest may be memorized: a file written while it was
    read must not have its new content remembered under its old identity. Reading exactly
    ``size`` bytes also spares the read that would find the end of the file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        digest = hashlib.sha256()
        left = size
        while left > 0 and (chunk := os.read(fd, min(left, _CHUNK))):
            digest.update(chunk)
            left -= len(chunk)
        return digest.digest(), identity is not None and identity == _identity(os.fstat(fd))
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- the memo


def _load_memo(memo: Path) -> dict[bytes, bytes]:
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


def _save_memo(memo: Path, settled: Mapping[bytes, bytes]) -> None:
    """Replace the memo atomically; concurrent builds may each write theirs, the last one stays."""
    data = _MEMO_MAGIC + b"".join(identity + content for identity, content in settled.items())
    memo.parent.mkdir(parents=True, exist_ok=True)
    publish.remove_dead_temporaries(memo.parent)
    with publish.replacing(memo) as out:
        out.write(data + hashlib.sha256(data).digest())


# --------------------------------------------------------------------------- the rest of the key


class _BuildSystem(TypedDict):
    requires: list[str]
    build_backend: str
    backend_path: list[str] | None


def _build_system(root: str) -> _BuildSystem:
    """``[build-system]`` as ``build`` reads it, its default included; shaped for JSON whatever the TOML.

    The file's text is in the key already; this part is for ``--no-isolation`` and for display.
    """
    try:
        with open(os.path.join(root, "pyproject.toml"), "rb") as file:
            table = tomllib.load(file).get("build-system")
    except FileNotFoundError:
        table = None  # a setup.py project
    except tomllib.TOMLDecodeError:
        return {"requires": [], "build_backend": "", "backend_path": None}  # the build will say why
    if not isinstance(table, dict):
        return {"requires": list(LEGACY_REQUIRES), "build_backend": LEGACY_BACKEND, "backend_path": None}
    backend_path = table.get("backend-path")
    return {
        "requires": _strings(table.get("requires", [])),
        "build_backend": str(table.get("build-backend", LEGACY_BACKEND)),
        "backend_path": None if backend_path is None else _strings(backend_path),
    }


def _strings(value: object) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else [str(value)]


@cache
def _interpreter() -> dict[str, str]:
    implementation = sys.implementation
    return {
        "implementation": implementation.name,
        "version": ".".join(map(str, implementation.version)),
        "abiflags": getattr(sys, "abiflags", ""),
        "encoding": codecs.lookup(locale.getpreferredencoding(False)).name,
        "tag": str(next(iter(sys_tags()))),
        "build": build.__version__,  # as options.py reports it, without reading metadata
        "safe-build": safe_build.__version__,
    }


def _installed(requires: Iterable[str]) -> dict[str, str]:
    """For ``--no-isolation``: the installed version of each build requirement, or "missing"."""
    versions = {}
    for text in requires:
        try:
            name = canonicalize_name(Requirement(text).name)
        except InvalidRequirement:
            versions[text] = "invalid"
            continue
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def _affects_build(name: str) -> bool:
    return name in ENVIRONMENT_NAMES or name.startswith(ENVIRONMENT_PREFIXES)


def _config_files() -> dict[str, str]:
    """Content digests of configuration files outside the project that a build reads."""
    files = {path: _file_state(os.path.expanduser(path)) for path in USER_CONFIG_FILES}
    for name in CONFIG_FILE_VARIABLES:
        for path in os.environ.get(name, "").split():
            files[f"${name}:{path}"] = _file_state(path)
    return files


def _file_state(path: str) -> str:
    try:
        with open(path, "rb") as file:
            return hashlib.sha256(file.read()).hexdigest()
    except OSError:
        return "unreadable"  # absent, or a URL (pip's constraints may be one): its name is keyed
