"""The cache key of a build: one sha256 digest of everything that can change the artifacts it makes.

Two builds with the same key may share artifacts, so the key must change whenever the artifacts
could. It covers:

- **The source, exactly as the snapshot copied it**: the records of ``digests.Recorder``, one
  per node ``traversal`` visits: path, kind, a file's permission bits (sdists and setuptools'
  wheels record them) and content digest, a link's text and where it leads in the snapshot, and
  the content of what a link out of the tree points to. The key a build is stored under is the
  one the snapshot's own pass computed from the bytes it wrote (``of_copy``); the key of the tree
  read in place (``compute``) only looks an entry up.
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

- **Where the tree lies, where the interpreter is installed, the user's home and cache
  directory.** CI runners check one repository out at different paths: a key that named the path
  would make a shared (remote) cache useless. The names of the directories a snapshot mirrors
  (which a backend can see) are in the key, and artifacts whose metadata names the tree's place
  (a path dependency written by the backend, which safe-build rewrites from the snapshot's path)
  are filed under :func:`local_to`, a key of that place too.

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

Speed: ``compute`` reads the tree in place, in one thread, each file with ``open``, ``pread``
of its size, ``close``. With a memo (see ``digests``), an unchanged tree costs one ``lstat`` per
file. The memo only spares reads; the key is the same with or without it.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import hashlib
import importlib.metadata
import json
import locale
import os
import sys
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
from safe_build import digests, publish, traversal
from safe_build.patterns import Selection
from safe_build.traversal import Link, Node, Plan

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

KEY_FORMAT = 2  # bump when what goes into the key, or how, changes

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


@dataclass(frozen=True)
class Context:
    """Everything in a key but the source: the same for the lookup and for the snapshot's pass."""

    parts: Mapping[str, object]
    build_system: _BuildSystem
    environment: tuple[str, ...]

    def with_inputs(self, changed: Mapping[str, object]) -> Context:
        """This context with some inputs changed: the git state a snapshot's own metadata shows."""
        inputs = self.parts["inputs"]
        assert isinstance(inputs, Mapping)
        return dataclasses.replace(self, parts={**self.parts, "inputs": {**inputs, **changed}})


def context(
    project: Path, inputs: Mapping[str, object], *, no_isolation: bool = False, inner: str = ""
) -> Context:
    """What, besides the source, the key of building ``project`` (a real, absolute path) with
    ``inputs`` holds. ``inner`` is the project's path below ``project`` when ``project`` is the
    repository around it. ``inputs`` holds plain JSON values (a ``TypeError`` says otherwise); an
    input that names a file, such as a constraints file, belongs in it by its content."""
    root = os.fspath(project)
    build_system = _build_system(os.path.join(root, inner) if inner else root)
    environment = {name: value for name, value in os.environ.items() if _affects_build(name)}
    parts = {
        "format": KEY_FORMAT,
        "inputs": inputs,
        "build-system": build_system,
        "interpreter": _interpreter(),
        "installed": _installed(build_system["requires"]) if no_isolation else None,
        "environment": environment,
        "config-files": _config_files(),
    }
    json.dumps(parts, allow_nan=False)  # a TypeError now, not after a whole build
    return Context(parts, build_system, tuple(sorted(environment)))


class Memo:
    """The content digests of one tree's files, kept between builds in one file (see ``digests``).

    Loaded once per build and shared by the lookup and the snapshot's pass; saved if it changed.
    An unreadable memo is an empty one; one that cannot be written is left as it was.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.known: dict[bytes, bytes] = digests.load_memo(path) if path is not None else {}
        self._loaded = dict(self.known)

    def recorder(self) -> digests.Recorder:
        return digests.Recorder(self.known, remember=self.path is not None)

    def learn(self, recorder: digests.Recorder) -> None:
        """Keep what ``recorder`` found settled: the digests a next pass may trust."""
        if self.path is not None:
            self.known = dict(recorder.settled)

    def save(self) -> None:
        """Write the memo if it changed; OSError if it cannot be (a full or read-only disk)."""
        if self.path is None or self.known == self._loaded:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        publish.remove_dead_temporaries(self.path.parent)
        with publish.replacing(self.path) as out:
            out.write(digests.memo_bytes(self.known))
        self._loaded = dict(self.known)


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
    """The key of building ``project`` with ``inputs``, its tree read in place (see ``lookup``).

    ``exclude`` and ``selection`` choose the files as they do for ``traversal.plan``; ``memo`` is
    a file where content digests are kept between calls (``state.State.memo_path``).
    """
    root = Path(os.path.realpath(project))
    plan = traversal.plan(root, exclude=exclude, selection=selection, project_at_root=not inner)
    kept = Memo(memo)
    key = lookup(plan, context(root, inputs, no_isolation=no_isolation, inner=inner), kept)
    with contextlib.suppress(OSError):
        kept.save()
    return key


def lookup(plan: Plan, context: Context, memo: Memo) -> Key:
    """The key of ``plan``'s tree read in place: it finds an entry, but never files one, since the
    tree may change before a snapshot copies it. ``memo`` learns the settled digests."""
    recorder = memo.recorder()
    traversal.visit(plan, _InPlace(recorder))
    memo.learn(recorder)
    return of_copy(recorder, plan, context)


def local_to(digest: str, place: Path) -> str:
    """The key of the artifacts of key ``digest`` built from a tree at ``place``, for artifacts whose
    metadata names it (a path dependency): a copy of the same tree elsewhere must not get them."""
    return hashlib.sha256(b"local\0" + digest.encode() + b"\0" + os.fsencode(place)).hexdigest()


def of_copy(recorder: digests.Recorder, plan: Plan, context: Context) -> Key:
    """The key of the tree whose nodes ``recorder`` recorded (by ``snapshot.take``, or ``lookup``)."""
    parts = {**context.parts, "source": recorder.digest()}
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), allow_nan=False)
    build_system = context.build_system
    return Key(
        digest=hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        files=recorder.files,
        bytes=recorder.size,
        listed_by=plan.listed_by,
        links=recorder.links,
        read=recorder.read,
        build_backend=build_system["build_backend"],
        requires=tuple(build_system["requires"]),
        tag=_interpreter()["tag"],
        environment=context.environment,
    )


class _InPlace:
    """Records each node as the snapshot would copy it, reading the tree where it lies.

    One thread, like the copier: per file, the system calls and Python's own work cost about as
    much as the digest, and threads, handing the GIL over at each system call, made trees of
    small files slower to hash on a busy two-core machine.
    """

    def __init__(self, recorder: digests.Recorder) -> None:
        self.recorder = recorder

    def directory(self, node: Node) -> None:
        self.recorder.directory(node.record)

    def link(self, node: Node, link: Link) -> None:
        self.recorder.link(node.record, link.text, link.points_to)

    def outside(self, node: Node, link: Link) -> None:
        self.recorder.outside(node.record, link.text)

    def special(self, node: Node) -> None:
        pass  # the copy skips it too

    def file(self, node: Node, info: os.stat_result) -> None:
        digest = self.recorder.remembered(info)
        if digest is not None:
            self.recorder.file(node.record, info, digest, read=False, stable=True)
            return
        opened = traversal.open_file(node)
        if opened is None:
            return
        fd, before = opened
        try:
            digest = digests.content(fd, before.st_size, holes=digests.sparse(before))
            stable = digests.identity(os.fstat(fd)) == digests.identity(before)
            self.recorder.file(node.record, before, digest, read=True, stable=stable)
        finally:
            os.close(fd)


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
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError):  # changed since it was checked
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
