"""Which local package owns a file: the nearest directory above it that is a project."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def is_project(directory: Path) -> bool:
    """A ``setup.py``, or a ``pyproject.toml`` with ``[build-system]`` or ``[project]``.

    A ``pyproject.toml`` that holds only tool settings (a monorepo root's ruff or mypy
    configuration) does not make a package; one that cannot be read does, so that the build
    reports it instead of the hook passing over it.
    """
    if (directory / "setup.py").is_file():
        return True
    pyproject = directory / "pyproject.toml"
    if not pyproject.is_file():
        return False
    try:
        table = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return True
    return "build-system" in table or "project" in table


def owner(path: Path, root: Path) -> Path | None:
    """The nearest project directory at or above ``path``'s directory, not above ``root``."""
    for directory in path.parents:
        if is_project(directory):
            return directory
        if directory == root:
            return None
    return None


def owning_packages(filenames: Iterable[str], root: Path) -> list[Path]:
    """The projects that own ``filenames`` (relative to ``root``, as pre-commit passes them), sorted.

    Sorted, so that parallel chunks build shared packages in the same order and meet in
    safe-build's locks rather than in each other's build directories.
    """
    found = {owner(root / name, root) for name in filenames}
    return sorted(package for package in found if package is not None)
