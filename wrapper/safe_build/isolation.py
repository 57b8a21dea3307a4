"""The isolation mode of a build, and how the "auto" setting chooses it from the project's files.

A private copy of the project ("copy") builds most projects. It cannot build those that take
their version or file list from version control (a copy has no ``.git``) or read files outside
the project directory (``../`` from a copy leads elsewhere): those need "repository", a private
copy of the whole repository the project lies in, with private git metadata that shares only the
real repository's objects. Detection only reads files, never runs the project's code, and it
errs towards "repository", which builds every project a copy builds. A setting always wins.
"""

from __future__ import annotations

import configparser
import glob
import json
import os
import posixpath
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from safe_build import gitmeta, traversal
from safe_build.config import Isolation, Setting
from safe_build.patterns import levels_above

Mode = Literal["copy", "repository", "in-place"]
Check = Callable[[Path, Mapping[str, Any]], str | None]

# Build requirements (canonical names) that take the version or the file list from version control.
VCS_REQUIREMENTS = frozenset(
    {
        "dunamai",
        "flit-scm",
        "hatch-vcs",
        "meson-python",  # its sdist is `meson dist`, an export of the git or hg repository
        "pbr",
        "poetry-dynamic-versioning",
        "setuptools-git",
        "setuptools-git-versioning",
        "setuptools-scm",
        "setuptools-scm-git-archive",
        "uv-dynamic-versioning",
        "vcs-versioning",
        "versioneer",
        "versioningit",
    }
)
# Backends (build-backend values) that need the repository, and why.
REPOSITORY_BACKENDS = {"mesonpy": "makes its sdist with `meson dist`, an export of the git repository"}
# pyproject.toml settings that do the same: dotted key, and the value it must have (None: any).
VCS_SETTINGS: tuple[tuple[str, object], ...] = (
    ("tool.setuptools_scm", None),
    ("tool.hatch.version.source", "vcs"),
    ("tool.pdm.version.source", "scm"),
    ("tool.poetry-dynamic-versioning.enable", True),
    ("tool.setuptools-git-versioning.enabled", True),
    ("tool.versioningit", None),
)
# pyproject.toml values that are paths a backend reads; "*" is every key. Of a table, its keys
# are the paths (hatch's force-include maps source paths to places in the wheel).
PATH_SETTINGS = (
    "project.readme",
    "project.readme.file",
    "project.license.file",
    "project.license-files",
    "tool.setuptools.dynamic.*.file",
    "tool.setuptools_scm.root",
    "tool.hatch.version.path",
    "tool.hatch.build.force-include",
    "tool.hatch.build.targets.*.force-include",
    "tool.poetry.readme",
    "tool.poetry.dependencies.*.path",
)
# Requirement lists in which a relative file: URL points at a project next to this one.
REQUIREMENT_LISTS = ("build-system.requires", "project.dependencies", "project.optional-dependencies.*")
RELATIVE_FILE_URL = re.compile(r"\bfile:\S*\.\./")
# Text in setup.py or setup.cfg that means version control, or a path above the project.
VCS_WORDS = re.compile(r"\b(use_scm_version|setuptools[_-]scm|versioneer|pbr)\b")
PARENT_PATH = re.compile(r"""["']\.\.(?:/|["'])""")
OUTSIDE_SIGNS = (("setup.py", PARENT_PATH, "setup.py names a path above the project directory"),)
VCS_SIGNS = (
    ("setup.py", VCS_WORDS, "setup.py mentions {}"),
    ("setup.cfg", VCS_WORDS, "setup.cfg mentions {}"),
)
SETUP_CFG_PATH_KEYS = frozenset({"license_file", "license_files"})  # and every "file:" value


def choose(
    setting: Setting[Isolation], project_dir: Path, pyproject: Mapping[str, Any] | None
) -> tuple[Mode, str]:
    """The mode to build ``project_dir`` in, and why: the setting's, or if it is "auto", the detected one.

    "repository" needs a repository git will read (or none: then it is "copy"); one git refuses is
    refused here, with git's reason, before anything is built.
    """
    if setting.value == "auto":
        mode, why = detect(project_dir, pyproject)
    else:
        mode, why = setting.value, f"set by {setting.origin}"
    if mode == "repository":
        gitmeta.check_readable(project_dir)
    return mode, why


def detect(project_dir: Path, pyproject: Mapping[str, Any] | None) -> tuple[Mode, str]:
    """The mode "auto" stands for: "repository" if the project needs version control or files outside it."""
    for check in CHECKS:
        reason = check(project_dir, pyproject or {})
        if reason:
            return "repository", reason
    return "copy", "nothing in the project needs version control or files outside it"


def _outside_links(project_dir: Path, pyproject: Mapping[str, Any]) -> str | None:
    """A top-level link out of the project (a README shared across a monorepo, say)."""
    with os.scandir(project_dir) as entries:
        for entry in sorted(entries, key=lambda entry: entry.name):
            if entry.is_symlink() and not traversal.excluded(entry.name):
                target = os.path.realpath(entry.path)
                if _outside(os.path.relpath(target, project_dir)) and os.path.exists(target):
                    return f"{entry.name} is a link to {target}, outside the project"
    return None


def outside_paths(project_dir: Path, pyproject: Mapping[str, Any] | None) -> list[str]:
    """The paths above the project that its settings name (``../README.md``), wildcards expanded,
    for a snapshot to bring along beside the project's copy; each as a pattern that names it alone."""
    named = [*_setting_paths(pyproject or {}), *_setup_cfg_paths(project_dir)]
    found: set[str] = set()
    for _, path in named:
        if _outside(path):
            matches = glob.glob(path, root_dir=project_dir) if glob.has_magic(path) else [path]
            found.update(glob.escape(posixpath.normpath(match)) for match in matches)
    # not a directory the project lies in (setuptools-scm's root = ".."): that is the repository's;
    # not an absolute path, which reads the same from a snapshot
    return sorted(path for path in found if 0 < levels_above(path) < len(path.split("/")))


def ignore_files_above(project_dir: Path) -> list[str]:
    """The ``.gitignore`` files above the project, up to the root of the git work tree it lies in
    (or the file system's), as patterns such as ``../../.gitignore``: backends read them as they
    lie (hatchling takes the nearest one up to a directory with ``.git``), so a copy of the
    project brings them along to the same places. Nothing is read above a ``.git``."""
    found: list[str] = []
    if os.path.lexists(project_dir / ".git"):
        return found
    for level, directory in enumerate(project_dir.parents, start=1):
        if (directory / ".gitignore").is_file():
            found.append("../" * level + ".gitignore")
        if os.path.lexists(directory / ".git"):
            break
    return found


def unnamed_outside_reason(project_dir: Path, pyproject: Mapping[str, Any] | None) -> str | None:
    """Why the project may read files above its directory that ``outside_paths`` cannot name."""
    return next(
        (reason for check in UNNAMED_OUTSIDE_CHECKS if (reason := check(project_dir, pyproject or {}))), None
    )


def _setting_paths(pyproject: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for dotted in PATH_SETTINGS:
        for node in _lookup(pyproject, dotted):
            for path in _paths(node):
                yield f"pyproject.toml {dotted}", path


def _outside_path_settings(project_dir: Path, pyproject: Mapping[str, Any]) -> str | None:
    for where, path in _setting_paths(pyproject):
        if _outside(path):
            return f"{where} reads {path}, outside the project"
    return None


def _outside_requirements(project_dir: Path, pyproject: Mapping[str, Any]) -> str | None:
    for dotted in REQUIREMENT_LISTS:
        for node in _lookup(pyproject, dotted):
            for requirement in _paths(node):
                if RELATIVE_FILE_URL.search(requirement):
                    return f"pyproject.toml {dotted} has {requirement!r}, outside the project"
    return None


def _setup_cfg_paths(project_dir: Path) -> Iterator[tuple[str, str]]:
    """``license_files = ../LICENSE``, ``long_description = file: ../README.md`` and the like."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    if not (project_dir / "setup.cfg").is_file():  # reading a named pipe would wait forever
        return
    try:
        parser.read(project_dir / "setup.cfg", encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError):
        return  # the backend will say what is wrong with it
    for section in parser.sections():
        for key, value in parser.items(section):
            text = value.strip()
            if text.startswith("file:"):
                text = text.removeprefix("file:")
            elif key.replace("-", "_") not in SETUP_CFG_PATH_KEYS:
                continue
            for path in re.split(r"[,\s]+", text):
                if path:
                    yield f"setup.cfg [{section}] {key}", path


def _outside_setup_cfg_paths(project_dir: Path, pyproject: Mapping[str, Any]) -> str | None:
    for where, path in _setup_cfg_paths(project_dir):
        if _outside(path):
            return f"{where} reads {path}, outside the project"
    return None


def _vcs_requirements(project_dir: Path, pyproject: Mapping[str, Any]) -> str | None:
    for node in _lookup(pyproject, "build-system.requires"):
        for text in _paths(node):
            try:
                name = canonicalize_name(Requirement(text).name)
            except InvalidRequirement:
                continue  # build will refuse it
            if name in VCS_REQUIREMENTS:
                return f"build-system requires {name}"
    return None


def _vcs_settings(project_dir: Path, pyproject: Mapping[str, Any]) -> str | None:
    for dotted, wanted in VCS_SETTINGS:
        for value in _lookup(pyproject, dotted):
            if wanted is None:
                return f"pyproject.toml has [{dotted}]"
            if value == wanted:
                return f"pyproject.toml sets {dotted} = {json.dumps(wanted)}"
    return None


def _signs_in_files(signs: tuple[tuple[str, re.Pattern[str], str], ...]) -> Check:
    """A check for text in setup files: (file, pattern, reason with ``{}`` for what matched)."""

    def check(project_dir: Path, pyproject: Mapping[str, Any]) -> str | None:
        for name, pattern, reason in signs:
            if not (project_dir / name).is_file():  # reading a named pipe would wait forever
                continue
            try:
                text = (project_dir / name).read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            found = pattern.search(text)
            if found:
                return reason.format(found.group(0))
        return None

    return check


def _repository_backends(project_dir: Path, pyproject: Mapping[str, Any]) -> str | None:
    """A backend that exports its sdist from the repository, even when it builds itself
    (``backend-path``, so that no requirement names it)."""
    for backend in _lookup(pyproject, "build-system.build-backend"):
        if backend in REPOSITORY_BACKENDS:
            return f"build-backend {backend} {REPOSITORY_BACKENDS[backend]}"
    return None


def _versioneer_script(project_dir: Path, pyproject: Mapping[str, Any]) -> str | None:
    return "versioneer.py at the project root" if (project_dir / "versioneer.py").is_file() else None


_setup_py_parent_path = _signs_in_files(OUTSIDE_SIGNS)
UNNAMED_OUTSIDE_CHECKS: tuple[Check, ...] = (_outside_requirements, _setup_py_parent_path)
# The order only decides which reason is given when several apply: the most particular first.
CHECKS: tuple[Check, ...] = (
    _outside_links,
    _outside_path_settings,
    _outside_requirements,
    _outside_setup_cfg_paths,
    _setup_py_parent_path,
    _signs_in_files(VCS_SIGNS),
    _vcs_requirements,
    _repository_backends,
    _vcs_settings,
    _versioneer_script,
)


def _lookup(table: object, dotted: str) -> list[object]:
    """The values at the dotted key ``dotted`` of nested tables; ``*`` stands for every key."""
    nodes = [table]
    for part in dotted.split("."):
        nodes = [
            child
            for node in nodes
            if isinstance(node, dict)
            for child in (node.values() if part == "*" else [node[part]] if part in node else [])
        ]
    return nodes


def _paths(node: object) -> list[str]:
    """The strings of a setting: itself, the items of a list, or the keys of a table."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, (list, dict)):
        return [item for item in node if isinstance(item, str)]
    return []


def _outside(path: str) -> bool:
    """True if the path, relative to the project directory, leads out of it."""
    normal = posixpath.normpath(path)
    return normal == ".." or normal.startswith(("../", "/"))
