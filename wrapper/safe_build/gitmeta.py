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
import re
import shutil
import subprocess
from pathlib import Path

from safe_build.errors import SafeBuildError

OUTSIDE = "not a git repository (or any of the parent directories)"  # git's words, with LC_ALL=C
UNBORN = "unknown revision"  # HEAD of a repository without a commit


class GitFailed(SafeBuildError):
    """git refused to read a repository: its own message, and what to do."""


def repository_root(project: Path) -> Path | None:
    """The top of the git work tree ``project`` lies in, or None outside git, or if git cannot tell."""
    try:
        return Path(_git(project, "rev-parse", "--show-toplevel"))
    except (OSError, GitFailed):
        return None


def check_readable(project: Path) -> None:
    """Refuse, with git's reason, a repository around ``project`` that git will not read (owned by
    another user, a broken ``.git``, a linked work tree whose git directory is gone); a build that
    needs its history would fail further on, or without it. Outside git, or without git, nothing."""
    try:
        _git(project, "rev-parse", "--show-toplevel")
    except OSError:
        return
    except GitFailed as failure:
        if OUTSIDE not in failure.message:
            raise


def give_private_metadata(real: Path, copy: Path) -> None:
    """Make ``copy`` (a snapshot of the work tree ``real``) a repository with ``real``'s history."""
    # the common directory as git gives it, relative to where it ran (--path-format needs git 2.31)
    gitdir, common_dir = _git(real, "rev-parse", "--absolute-git-dir", "--git-common-dir").split("\n")
    common = Path(os.path.abspath(real / common_dir))
    private = copy / ".git"
    (private / "objects" / "info").mkdir(parents=True)
    (private / "refs").mkdir()
    alternates = [str(common / "objects"), *_alternates(common / "objects")]
    (private / "objects" / "info" / "alternates").write_bytes(
        b"".join(os.fsencode(f"{path}\n") for path in alternates)
    )
    shutil.copyfile(Path(gitdir) / "HEAD", private / "HEAD")
    refs = sorted(
        _git_bytes(real, "for-each-ref", "--format=%(objectname) %(refname)").splitlines(),
        key=lambda line: line.split(b" ", 1)[1],
    )
    (private / "packed-refs").write_bytes(b"".join(line + b"\n" for line in refs))
    for name, source in (("config", common), ("index", Path(gitdir)), ("shallow", common)):
        if (source / name).exists():  # git does without a config, as without the others
            shutil.copyfile(source / name, private / name)
    # the real config may bind the work tree elsewhere (a submodule's does): this one is the copy
    subprocess.run(
        ["git", "config", "--file", str(private / "config"), "--unset-all", "core.worktree"],
        capture_output=True,
        check=False,
    )
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
    user's index; {} outside git or before the first commit. A repository git cannot read (a
    corrupt index or packed-refs) is refused, with git's reason.
    """
    try:
        commit, branch, shallow = _git(
            work_tree, "rev-parse", "HEAD", "--symbolic-full-name", "HEAD", "--git-path", "shallow"
        ).split("\n")
    except OSError:
        return {}
    except GitFailed as failure:
        if OUTSIDE in failure.message or UNBORN in failure.message:
            return {}
        raise
    tags = _git_bytes(work_tree, "for-each-ref", "--format=%(objectname) %(refname)", "refs/tags")
    index = _git_bytes(work_tree, "ls-files", "--stage", "-z")
    try:  # a shallow clone's history ends early: `git describe` sees fewer tags
        cut = (work_tree / shallow).read_bytes()
    except FileNotFoundError:
        cut = b""
    return {
        "head": commit,
        "branch": branch,
        "tags": hashlib.sha256(tags.strip()).hexdigest(),  # stripped, as keys made before hashed it
        "index": hashlib.sha256(index).hexdigest(),
        "shallow": hashlib.sha256(cut).hexdigest(),
    }


def _alternates(objects: Path) -> list[str]:
    """The real repository's own alternates, made absolute (they may be relative to ``objects``)."""
    try:
        lines = os.fsdecode((objects / "info" / "alternates").read_bytes()).splitlines()
    except FileNotFoundError:
        return []
    return [str((objects / line).resolve()) for line in lines if line and not line.startswith("#")]


def _populated_submodules(real: Path) -> list[str]:
    listed = os.fsdecode(_git_bytes(real, "ls-files", "--stage", "-z")).split("\0")
    gitlinks = [entry.split("\t", 1)[1] for entry in listed if entry.startswith("160000 ")]
    return [path for path in gitlinks if (real / path / ".git").exists()]


def _git(cwd: Path, *args: str) -> str:
    """git's output, stripped, its bytes that are not UTF-8 kept as os.fsdecode keeps them."""
    return os.fsdecode(_git_bytes(cwd, *args)).strip()


def _git_bytes(cwd: Path, *args: str) -> bytes:
    """git's output; a refusal is a GitFailed with git's own first line and a hint."""
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False, env=_quiet_env())
    if result.returncode == 0:
        return result.stdout
    said = os.fsdecode(result.stderr).strip()
    first = said.splitlines()[0].removeprefix("fatal: ").removeprefix("error: ") if said else ""
    reason = first or f"git {args[0]} exited with {result.returncode}"
    hint = _hint(said, reason, cwd)
    raise GitFailed(f"git cannot read the repository of {cwd}: {reason}", hint=hint, path=cwd)


def _hint(said: str, reason: str, cwd: Path) -> str:
    """What to do about a repository git refuses; building without its metadata is always one way."""
    instead = "or build without its git metadata with --isolation copy"
    if "dubious ownership" in said:
        trust = f"git config --global --add safe.directory {_top(said) or cwd}"
        return f"it belongs to another user: if you trust it, run {trust}, {instead}"
    if reason.startswith("not a git repository: "):  # a .git file naming a directory that is gone
        return f"its .git file names a git directory that is gone: repair or remove that file, {instead}"
    if "index" in reason:
        return f"make the index again (remove .git/index, then git reset), {instead}"
    return f"repair the repository, {instead}"


def _top(said: str) -> str | None:
    """The repository git names in a refusal (``… in repository at '/path'``)."""
    match = re.search(r"in repository at '([^']*)'", said)
    return match.group(1) if match else None


def _quiet_env() -> dict[str, str]:
    """Our own git calls must not refresh the user's index either; git's messages are read in English."""
    return {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
