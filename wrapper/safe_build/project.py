"""What the user asked to build: a project directory, an sdist, or (with --metadata) a wheel."""

from __future__ import annotations

import errno
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from safe_build.errors import SafeBuildError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Kind = Literal["project", "sdist", "wheel"]
PROJECT_FILES = ("pyproject.toml", "setup.py")


@dataclass(frozen=True)
class Source:
    kind: Kind
    path: Path  # absolute; for a project, the real path (symlinks resolved)
    pyproject: dict[str, Any] | None = field(default=None, compare=False)  # a project's, parsed once

    @property
    def default_outdir(self) -> Path:
        """Where ``python -m build`` puts artifacts when no ``--outdir`` is given."""
        return self.path / "dist" if self.kind == "project" else self.path.parent


def resolve(argument: str) -> Source:
    """Check ``argument`` names something buildable and say clearly what to do if not."""
    if not argument:
        raise SafeBuildError(
            "the source directory is an empty string",
            hint="pass the project directory (the one with pyproject.toml or setup.py), or . for this one",
        )
    path = Path(argument).absolute()
    try:
        path.stat()
    except OSError as error:
        raise SafeBuildError(
            _unusable(argument, path, error),
            hint="pass the project directory (the one with pyproject.toml or setup.py)",
            path=path,
        ) from None
    if path.is_file():
        name = path.name.lower()
        if name.endswith(".tar.gz"):
            return Source("sdist", path)
        if name.endswith(".whl"):
            return Source("wheel", path)
        raise SafeBuildError(
            f"{argument} is a file, not a project directory or a .tar.gz source distribution",
            hint="pass the project directory (the one with pyproject.toml or setup.py)",
            path=path,
        )
    if not path.is_dir():  # a named pipe, a socket, a device
        raise SafeBuildError(
            f"{argument} is a {kind(path)}, not a project directory or a .tar.gz source distribution",
            hint="pass the project directory (the one with pyproject.toml or setup.py)",
            path=path,
        )
    root = Path(os.path.realpath(path))
    try:
        present = [name for name in PROJECT_FILES if (root / name).is_file()]
        os.listdir(root)
    except PermissionError as error:
        raise SafeBuildError(
            f"cannot read project directory {argument}: {error.strerror}",
            hint="fix its permissions or run as a user who can read it",
            path=root,
        ) from None
    toml = root / "pyproject.toml"
    if "pyproject.toml" not in present and toml.exists():  # build would read it, and fail or hang
        what = "a directory" if toml.is_dir() else f"a {kind(toml)}"
        raise SafeBuildError(f"{toml} is {what}, not a file", hint="make it a file, or remove it", path=toml)
    if not present:
        raise SafeBuildError(
            f"{argument} is not a Python project: it has no pyproject.toml or setup.py",
            hint="pass the directory that holds one",
            path=root,
        )
    pyproject = read_pyproject(root / "pyproject.toml") if "pyproject.toml" in present else None
    return Source("project", root, pyproject)


def _unusable(argument: str, path: Path, error: OSError) -> str:
    """Why ``argument`` names nothing to build: missing, a dangling link or a loop of links, a name
    too long."""
    if error.errno == errno.ELOOP:
        return f"{argument} is a link that leads round in a loop"
    if error.errno not in (errno.ENOENT, errno.ENOTDIR):
        return f"cannot use {argument}: {error.strerror}"
    dangling = os.path.islink(path)
    return f"no such file or directory: {argument}" + (
        f", a link to {os.readlink(path)}, which does not exist" if dangling else ""
    )


def kind(path: Path) -> str:
    """What ``path`` is, for a message: a named pipe, a socket, a device."""
    mode = path.stat().st_mode
    kinds = (
        (stat.S_ISFIFO, "named pipe"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    )
    return next((kind for test, kind in kinds if test(mode)), "special file")


def read_pyproject(pyproject: Path) -> dict[str, Any]:
    """The parsed ``pyproject.toml``; fail with the file, line and column if it is not valid TOML."""
    try:
        with pyproject.open("rb") as file:
            return tomllib.load(file)
    except tomllib.TOMLDecodeError as error:
        raise SafeBuildError(
            f"invalid TOML in {pyproject}: {error}", hint="fix the file and build again", path=pyproject
        ) from None
    except UnicodeDecodeError as error:
        raise SafeBuildError(
            f"invalid TOML in {pyproject}: not UTF-8 (byte {error.object[error.start]:#04x} at offset "
            f"{error.start})",
            hint="save the file as UTF-8 and build again",
            path=pyproject,
        ) from None
    except RecursionError:  # arrays or inline tables nested thousands deep; build says only this
        raise SafeBuildError(
            f"cannot parse {pyproject}: maximum recursion depth exceeded (arrays or tables nest too deeply)",
            hint="nest them less deeply and build again",
            path=pyproject,
        ) from None
    except OSError as error:
        raise SafeBuildError(
            f"cannot read {pyproject}: {error.strerror}", hint="fix its permissions", path=pyproject
        ) from None
