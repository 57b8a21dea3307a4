"""Real git repositories whose version and file list come from git, and a way to compare their builds.

setuptools-scm and hatch-vcs ask git for the version and the dirty flag (``git describe
--dirty``) and, with setuptools, for the files of the sdist (``git ls-files``). Only a
real repository with real tags, commits and uncommitted changes reproduces what they see, so
each fixture here is one: made once as an *origin*, then checked out (``git clone``) as often
as a test needs identical, independent copies of it, for instance one to build in place with
plain ``python -m build`` and one to build with safe-build.

Kinds (``KINDS``):

- ``scm-root``: setuptools + setuptools-scm at the repository root. A tracked data file that
  only git's file finder puts into the sdist (and so, through ``include-package-data``, into
  the wheel); a tracked file ``MANIFEST.in`` excludes; an sdist-only ``CHANGES.txt``.
- ``scm-monorepo``: the same in a subdirectory, ``[tool.setuptools_scm] root = ".."``, with
  ``LICENSE`` a link to the repository's ``../LICENSE`` and a sibling project beside it.
- ``hatch-vcs``: hatchling + hatch-vcs, with the ``vcs`` build hook writing a (git-ignored)
  version file, as hatch-vcs projects usually do.
- ``symlink-up``: plain setuptools, static version, in a subdirectory; ``README.md`` and
  ``LICENSE`` link up to the repository's own. Nothing comes from git: copying alone must work.
- ``no-git``: setuptools-scm with a ``fallback_version`` in a tree no repository manages.
- ``submodule``: setuptools-scm at the root with package data in a git submodule.

States (``STATES``): ``tag`` (HEAD is the release tag ``v1.2.0``), ``past-tag`` (one commit
after it) and ``dirty`` (at the tag, with a modified tracked module, a staged new module, an
untracked module and an untracked data file; in a monorepo also a modified file outside the
project, in the submodule kind a modified file inside the submodule). A ``no-git`` tree has
only ``tag``: a plain tree has no history.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import textwrap
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from pathlib import Path

KINDS = ("scm-root", "scm-monorepo", "hatch-vcs", "symlink-up", "no-git", "submodule")
STATES = ("tag", "past-tag", "dirty")
TAG = "v1.2.0"

# fixed identities and dates: the same fixture gets the same commit hashes every time it is made
GIT_CONFIG = (
    "-c",
    "user.name=Fixture",
    "-c",
    "user.email=fixture@example.invalid",
    "-c",
    "commit.gpgSign=false",
    "-c",
    "tag.gpgSign=false",
    "-c",
    "init.defaultBranch=main",
    "-c",
    "protocol.file.allow=always",  # submodules from a local path (git >= 2.38.1 refuses them otherwise)
    "-c",
    "core.autocrlf=false",
)
GIT_DATES = {
    "GIT_AUTHOR_DATE": "2024-01-02T03:04:05+00:00",
    "GIT_COMMITTER_DATE": "2024-01-02T03:04:05+00:00",
}
# setuptools-scm dates a dirty version (``+g<node>.d<YYYYMMDD>``) by SOURCE_DATE_EPOCH, else by
# the clock: builds to compare set this, so that two builds of one dirty tree agree on either
# side of midnight
SOURCE_DATE_EPOCH = "1704330245"  # 2024-01-04T01:04:05Z, a day after the commits


@dataclass(frozen=True)
class Link:
    """A symbolic link to ``target`` (relative to the link's directory), as a value in a file map."""

    target: str


Files = Mapping[str, "str | Link"]


@dataclass(frozen=True)
class Fixture:
    """A project made once (the origin), to check out as many times as needed.

    ``subdir``: where the project lies in its repository ("" at the root). ``uncommitted``:
    what the ``dirty`` state changes in every checkout: path -> new text, with ``staged``
    naming those added to git's index.
    """

    kind: str
    state: str
    origin: Path
    subdir: str
    uncommitted: Files
    staged: frozenset[str]

    @property
    def in_git(self) -> bool:
        return self.kind != "no-git"


@dataclass(frozen=True)
class Checkout:
    """One independent copy of a fixture: the repository's work tree and the project in it."""

    fixture: Fixture
    root: Path

    @property
    def project(self) -> Path:
        return self.root / self.fixture.subdir if self.fixture.subdir else self.root


def states(kind: str) -> tuple[str, ...]:
    """The states a kind comes in: all of them for a repository, one for a plain tree."""
    return ("tag",) if kind == "no-git" else STATES


def git(repo: Path, *args: str | Path) -> str:
    """Run git in ``repo`` with the fixtures' identity and dates; its stdout."""
    result = subprocess.run(
        ["git", *GIT_CONFIG, *map(str, args)],
        cwd=repo,
        env={**os.environ, **GIT_DATES},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(map(str, args))} in {repo} failed: {result.stderr.strip()}")
    return result.stdout


def write(root: Path, files: Files) -> None:
    """Create (or replace) files and links below ``root``."""
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Link):
            if path.is_symlink() or path.exists():
                path.unlink()
            path.symlink_to(content.target)
        else:
            path.write_text(content)


def _commit(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


# ---------------------------------------------------------------------------------------------
# what each kind is made of

# the import package of each kind, where the later states add and change modules
_PACKAGES = {
    "scm-root": "scm_root",
    "scm-monorepo": "scm_mono",
    "hatch-vcs": "vcs_hatch",
    "symlink-up": "linked",
    "no-git": "no_git",
    "submodule": "with_sub",
}
_GITIGNORE = "build/\ndist/\n*.egg-info/\n__pycache__/\n"


def _setuptools_pyproject(name: str, *, scm: str | None, static_version: str | None = None) -> str:
    """pyproject.toml of a setuptools project; ``scm``: the ``[tool.setuptools_scm]`` body, or None."""
    requires = '"setuptools>=69"' + (', "setuptools-scm>=8"' if scm is not None else "")
    version = f'version = "{static_version}"' if static_version else 'dynamic = ["version"]'
    text = textwrap.dedent(
        f"""\
        [build-system]
        requires = [{requires}]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{name}"
        {version}
        description = "A fixture project named {name}"
        readme = "README.md"
        requires-python = ">=3.8"
        """
    )
    if scm is not None:
        text += f"\n[tool.setuptools_scm]\n{scm}"
    return text


def _scm_package(package: str) -> dict[str, str | Link]:
    """The package part of the setuptools-scm kinds, relative to the project directory."""
    return {
        f"src/{package}/__init__.py": f'"""The {package} fixture."""\n\nVALUE = 1\n',
        # package data no package-data setting names: only git's file finder brings it into the sdist
        f"src/{package}/data/table.csv": "a,b\n1,2\n",
        "docs/guide.txt": "in the sdist only, through git's file list\n",
        "docs/internal.txt": "tracked, but MANIFEST.in excludes it\n",
        "CHANGES.txt": "1.2.0: first release\n",
        "MANIFEST.in": "include CHANGES.txt\nexclude docs/internal.txt\n",
        "tests/test_it.py": "def test_it():\n    assert True\n",
    }


def _files(kind: str) -> tuple[str, dict[str, str | Link]]:
    """The project's subdirectory and the files of the first commit, relative to the repository root."""
    if kind == "scm-root":
        return "", {
            ".gitignore": _GITIGNORE,
            "pyproject.toml": _setuptools_pyproject("scm-root", scm=""),
            "README.md": "# scm-root\n",
            **_scm_package("scm_root"),
        }
    if kind == "scm-monorepo":
        project = {
            "pyproject.toml": _setuptools_pyproject("scm-mono", scm='root = ".."\n'),
            "README.md": "# scm-mono\n",
            "LICENSE": Link("../LICENSE"),
            **_scm_package("scm_mono"),
        }
        return "scm-mono", {
            ".gitignore": _GITIGNORE,
            "LICENSE": "MIT License\n\nCopyright (c) the fixture\n",
            "README.md": "# the monorepo\n",
            "other/README.md": "# a sibling project\n",
            **{f"scm-mono/{path}": content for path, content in project.items()},
        }
    if kind == "hatch-vcs":
        pyproject = textwrap.dedent(
            """\
            [build-system]
            requires = ["hatchling", "hatch-vcs"]
            build-backend = "hatchling.build"

            [project]
            name = "vcs-hatch"
            dynamic = ["version"]
            description = "A fixture project named vcs-hatch"
            readme = "README.md"

            [tool.hatch.version]
            source = "vcs"

            [tool.hatch.build.hooks.vcs]
            version-file = "src/vcs_hatch/_version.py"
            """
        )
        return "", {
            ".gitignore": _GITIGNORE + "src/vcs_hatch/_version.py\n",
            "pyproject.toml": pyproject,
            "README.md": "# vcs-hatch\n",
            "src/vcs_hatch/__init__.py": '"""The vcs-hatch fixture."""\n\nVALUE = 1\n',
            "src/vcs_hatch/data/table.csv": "a,b\n1,2\n",
            "tests/test_it.py": "def test_it():\n    assert True\n",
        }
    if kind == "symlink-up":
        return "packages/linked", {
            ".gitignore": _GITIGNORE,
            "LICENSE": "MIT License\n\nCopyright (c) the fixture\n",
            "README.md": "# linked\n\nThe README of the whole repository.\n",
            "packages/linked/pyproject.toml": _setuptools_pyproject(
                "linked", scm=None, static_version="1.2.0"
            ),
            "packages/linked/README.md": Link("../../README.md"),
            "packages/linked/LICENSE": Link("../../LICENSE"),
            "packages/linked/src/linked/__init__.py": '"""The linked fixture."""\n',
        }
    if kind == "no-git":
        return "", {
            "pyproject.toml": _setuptools_pyproject("no-git", scm='fallback_version = "0.0.1"\n'),
            "README.md": "# no-git\n",
            "src/no_git/__init__.py": '"""The no-git fixture."""\n',
            "src/no_git/data/table.csv": "a,b\n1,2\n",
        }
    if kind == "submodule":
        return "", {
            ".gitignore": _GITIGNORE,
            "pyproject.toml": _setuptools_pyproject("with-sub", scm=""),
            "README.md": "# with-sub\n",
            "src/with_sub/__init__.py": '"""The with-sub fixture."""\n',
        }
    raise ValueError(f"unknown fixture kind {kind!r}")


def _past_tag_change(kind: str, subdir: str) -> dict[str, str | Link]:
    """What the commit after the tag changes: a new module, and a file outside the project if any."""
    prefix = f"{subdir}/" if subdir else ""
    change: dict[str, str | Link] = {f"{prefix}src/{_PACKAGES[kind]}/added.py": "ADDED = True\n"}
    if subdir:
        change["other/README.md"] = "# a sibling project, changed after the tag\n"
    return change


def _uncommitted(kind: str, subdir: str) -> tuple[dict[str, str | Link], frozenset[str]]:
    """The ``dirty`` state's changes: a modified tracked module, a staged and two untracked files."""
    package = _PACKAGES[kind]
    prefix = f"{subdir}/" if subdir else ""
    changes: dict[str, str | Link] = {
        f"{prefix}src/{package}/__init__.py": '"""Changed, not committed."""\n\nVALUE = 2\n',
        f"{prefix}src/{package}/staged.py": "STAGED = True\n",
        f"{prefix}src/{package}/untracked.py": "UNTRACKED = True\n",
        f"{prefix}src/{package}/data/untracked.csv": "c,d\n3,4\n",
    }
    if subdir:
        changes["other/README.md"] = "# a sibling project, changed and not committed\n"
    if kind == "submodule":
        changes["src/with_sub/vendored/blob.dat"] = "changed in the submodule, not committed\n"
    return changes, frozenset({f"{prefix}src/{package}/staged.py"})


def _make_submodule_origin(where: Path) -> Path:
    """The repository the ``submodule`` kind vendors: a subpackage with a data file."""
    origin = where / "vendored-origin"
    origin.mkdir(parents=True)
    git(origin, "init", "-q")
    write(origin, {"__init__.py": '"""Vendored through a git submodule."""\n', "blob.dat": "vendored data\n"})
    _commit(origin, "vendored: first commit")
    return origin


# ---------------------------------------------------------------------------------------------
# making and checking out fixtures


def make(kind: str, state: str, where: Path) -> Fixture:
    """Make the origin of a fixture below ``where`` (which must not hold one yet)."""
    if state not in states(kind):
        raise ValueError(f"a {kind} fixture has no state {state!r}")
    subdir, files = _files(kind)
    origin = where / f"{kind}-origin"
    origin.mkdir(parents=True)
    write(origin, files)
    uncommitted, staged = _uncommitted(kind, subdir) if state == "dirty" else ({}, frozenset())
    fixture = Fixture(kind, state, origin, subdir, uncommitted, staged)
    if kind == "no-git":
        return fixture
    git(origin, "init", "-q")
    if kind == "submodule":
        vendored = _make_submodule_origin(where)
        git(origin, "submodule", "add", "-q", vendored, "src/with_sub/vendored")
    _commit(origin, "first commit")
    git(origin, "tag", "-a", TAG, "-m", f"release {TAG}")
    if state == "past-tag":
        write(origin, _past_tag_change(kind, subdir))
        _commit(origin, "one commit after the tag")
    return fixture


def checkout(fixture: Fixture, destination: Path) -> Checkout:
    """A fresh clone of the fixture at ``destination``, in the fixture's state.

    The clone has the origin's commits, tags and submodules; the ``dirty`` state's uncommitted
    changes are made again in it (a clone does not carry them). A ``no-git`` tree is copied.
    """
    if not fixture.in_git:
        shutil.copytree(fixture.origin, destination, symlinks=True)
        return Checkout(fixture, destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    git(destination.parent, "clone", "-q", "--recurse-submodules", fixture.origin, destination)
    write(destination, fixture.uncommitted)
    if fixture.staged:
        git(destination, "add", "--", *sorted(fixture.staged))
    return Checkout(fixture, destination)


def tree_status(root: Path) -> str:
    """``git status --ignored --porcelain`` of a work tree and, below it, of each submodule's.

    Untracked and ignored directories are listed file by file (``-uall``), so that a new file
    in an already untracked directory shows too. The optional index refresh is skipped, so
    asking does not itself write to the repository.
    """
    command = ["--no-optional-locks", "status", "--ignored", "--porcelain", "--untracked-files=all"]
    status = git(root, *command)
    nested = git(root, "submodule", "foreach", "--quiet", "--recursive", "git " + " ".join(command))
    return status + nested


# ---------------------------------------------------------------------------------------------
# comparing two builds


@dataclass(frozen=True)
class Artifact:
    """What is compared of one built file: its name, its members' names and bytes, its metadata."""

    name: str
    members: dict[str, bytes]
    metadata: list[tuple[str, str]]


def read_artifact(path: Path) -> Artifact:
    """Read a wheel (``*.dist-info/METADATA``) or an sdist (``<name>-<version>/PKG-INFO``)."""
    contents: dict[str, bytes] = {}
    if path.name.endswith(".whl"):
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if not name.endswith("/"):
                    contents[name] = archive.read(name)
        metadata_names = [name for name in contents if _top_level(name, ".dist-info/METADATA")]
    else:
        with tarfile.open(path) as archive:
            for member in archive.getmembers():
                if member.isfile():
                    extracted = archive.extractfile(member)
                    contents[member.name] = extracted.read() if extracted else b""
        metadata_names = [name for name in contents if _top_level(name, "/PKG-INFO")]
    if len(metadata_names) != 1:
        raise ValueError(f"{path.name}: {len(metadata_names)} core metadata files")
    message = BytesHeaderParser().parse(io.BytesIO(contents[metadata_names[0]]))
    metadata = [(key, str(value)) for key, value in message.items()]
    body = message.get_payload()
    if isinstance(body, str) and body.strip():
        metadata.append(("(description body)", body))
    return Artifact(path.name, contents, metadata)


def _top_level(name: str, suffix: str) -> bool:
    """True for a member one directory deep ending in ``suffix``: the core metadata, not a vendored copy."""
    return name.count("/") == 1 and name.endswith(suffix)


def artifacts_in(directory: Path) -> list[Path]:
    """The sdists and wheels in ``directory``, by name."""
    return sorted(
        path for path in directory.iterdir() if path.name.endswith((".whl", ".tar.gz")) and path.is_file()
    )


# RECORD lists every member with its hash: it differs exactly when a member's bytes do, which
# the member comparison reports by name already
_DERIVED = (".dist-info/RECORD",)


def differences(expected: Sequence[Path], actual: Sequence[Path]) -> list[str]:
    """How two sets of artifacts differ: file names, member lists, member bytes, core metadata.

    Empty when they agree. Nothing is left out of the comparison but archive timestamps and
    modes, which a build of another checkout made at another time may legitimately change.
    """
    found: list[str] = []
    expected_names = sorted(path.name for path in expected)
    actual_names = sorted(path.name for path in actual)
    if expected_names != actual_names:
        return [f"artifact names: expected {expected_names}, got {actual_names}"]
    by_name = sorted(expected, key=lambda path: path.name), sorted(actual, key=lambda path: path.name)
    for want_path, got_path in zip(*by_name, strict=True):
        want, got = read_artifact(want_path), read_artifact(got_path)
        missing = sorted(set(want.members) - set(got.members))
        extra = sorted(set(got.members) - set(want.members))
        if missing:
            found.append(f"{want.name}: members missing: {missing}")
        if extra:
            found.append(f"{want.name}: members not expected: {extra}")
        changed = sorted(
            name
            for name in set(want.members) & set(got.members)
            if want.members[name] != got.members[name] and not name.endswith(_DERIVED)
        )
        if changed:
            found.append(f"{want.name}: members with other contents: {changed}")
        if want.metadata != got.metadata:
            lost = [field for field in want.metadata if field not in got.metadata]
            gained = [field for field in got.metadata if field not in want.metadata]
            found.append(f"{want.name}: metadata differs: expected also {lost}, got also {gained}")
    return found
