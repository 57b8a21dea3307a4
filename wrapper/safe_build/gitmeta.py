"""Private git metadata for a snapshot of a repository, so that version-from-git tools work in it.

setuptools-scm, hatch-vcs and their kind ask git for the version (``git describe --dirty``) and the
file list (``git ls-files``). A snapshot has no ``.git``, and pointing git at the real one is no
answer: ``git describe --dirty`` refreshes and rewrites the real index (it takes ``index.lock``
even with ``GIT_OPTIONAL_LOCKS=0``), and those tools drop ``GIT_DIR``-style variables anyway.

So the snapshot gets a ``.git`` of its own: its objects are the real repository's, reached
through ``objects/info/alternates`` (read-only, shared, nothing copied); HEAD, the refs, the
config and a copy of the index are private. Whatever git writes while the backend runs (an index
refresh) lands in the private copy, never in the user's repository. Populated submodules get the
same treatment, recursively.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path


def repository_root(project: Path) -> Path | None:
    """The top of the git work tree ``project`` lies in, or None outside git."""
    try:
        return Path(_git(project, "rev-parse", "--show-toplevel"))
    except (OSError, subprocess.CalledProcessError):
        return None


def give_private_metadata(real: Path, copy: Path) -> None:
    """Make ``copy`` (a snapshot of the work tree ``real``) a repository with ``real``'s history."""
    gitdir = Path(_git(real, "rev-parse", "--absolute-git-dir"))
    common = Path(_git(real, "rev-parse", "--path-format=absolute", "--git-common-dir"))
    private = copy / ".git"
    (private / "objects" / "info").mkdir(parents=True)
    (private / "refs").mkdir()
    (private / "objects" / "info" / "alternates").write_text(
        "\n".join([str(common / "objects"), *_alternates(common / "objects")]) + "\n", encoding="utf-8"
    )
    shutil.copyfile(gitdir / "HEAD", private / "HEAD")
    refs = sorted(
        _git(real, "for-each-ref", "--format=%(objectname) %(refname)").splitlines(),
        key=lambda line: line.split(" ", 1)[1],
    )
    (private / "packed-refs").write_text("".join(f"{line}\n" for line in refs), encoding="utf-8")
    shutil.copyfile(common / "config", private / "config")
    # the real config may bind the work tree elsewhere (a submodule's does): this one is the copy
    subprocess.run(
        ["git", "config", "--file", str(private / "config"), "--unset-all", "core.worktree"],
        capture_output=True,
        check=False,
    )
    for name, source in (("index", gitdir), ("shallow", common)):
        if (source / name).exists():
            shutil.copyfile(source / name, private / name)
    for submodule in _populated_submodules(real):
        if (copy / submodule).is_dir():
            give_private_metadata(real / submodule, copy / submodule)


def state(work_tree: Path) -> dict[str, str]:
    """What a version from git can depend on besides the files: the commit and the branch checked
    out (``release-branch-semver`` reads the branch), the tags, where a shallow clone's history
    ends, and the index (setuptools-scm's
    file list and ``git describe --dirty`` see a staged file): its modes, blob ids and paths, not
    its stat data, which ``git status`` rewrites without changing anything a build sees.

    Read from the real work tree for a lookup and from a snapshot's private metadata for the key
    its build is stored under. Never through ``git describe --dirty``, which would rewrite the
    user's index; {} outside git or before the first commit.
    """
    try:
        commit, branch, shallow = _git(
            work_tree, "rev-parse", "HEAD", "--symbolic-full-name", "HEAD", "--git-path", "shallow"
        ).split("\n")
        tags = _git(work_tree, "for-each-ref", "--format=%(objectname) %(refname)", "refs/tags")
        index = subprocess.run(
            ["git", "ls-files", "--stage", "-z"],
            cwd=work_tree,
            capture_output=True,
            check=True,
            env=_quiet_env(),
        ).stdout
    except (OSError, ValueError, subprocess.CalledProcessError):
        return {}
    try:  # a shallow clone's history ends early: `git describe` sees fewer tags
        cut = (work_tree / shallow).read_bytes()
    except FileNotFoundError:
        cut = b""
    return {
        "head": commit,
        "branch": branch,
        "tags": hashlib.sha256(tags.encode()).hexdigest(),
        "index": hashlib.sha256(index).hexdigest(),
        "shallow": hashlib.sha256(cut).hexdigest(),
    }


def _alternates(objects: Path) -> list[str]:
    """The real repository's own alternates, made absolute (they may be relative to ``objects``)."""
    try:
        lines = (objects / "info" / "alternates").read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    return [str((objects / line).resolve()) for line in lines if line and not line.startswith("#")]


def _populated_submodules(real: Path) -> list[str]:
    listed = _git(real, "ls-files", "--stage", "-z").split("\0")
    gitlinks = [entry.split("\t", 1)[1] for entry in listed if entry.startswith("160000 ")]
    return [path for path in gitlinks if (real / path / ".git").exists()]


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, env=_quiet_env()
    ).stdout.strip()


def _quiet_env() -> dict[str, str]:
    """Our own git calls must not refresh the user's index either."""
    return {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
