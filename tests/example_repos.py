"""Copies of the project's examples and of the project itself as fresh git repositories."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.vcs_projects import git

CHECKOUT = Path(__file__).resolve().parents[1]
EXAMPLES = CHECKOUT / "examples"


def download(destination: Path, requirements: Sequence[str]) -> Path:
    """Wheels of ``requirements`` and of what they require, for offline installs from ``destination``."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(destination), *requirements]
    subprocess.run(command, check=True)
    return destination


def commit_all(repo: Path, message: str = "fixture") -> str:
    """Commit everything in ``repo`` (made a repository if it is not one); the commit's hash."""
    if not (repo / ".git").exists():
        git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def example_repo(name: str, destination: Path) -> Path:
    """``examples/<name>`` copied to ``destination`` (without what earlier runs left) and committed."""
    shutil.copytree(EXAMPLES / name, destination, ignore=shutil.ignore_patterns("dist", "venvs", "build"))
    commit_all(destination)
    return destination


def checkout_repo(destination: Path) -> tuple[Path, str]:
    """The project's working tree as it is now (what git would commit), as a repository; and its commit.

    pre-commit installs hooks from a repository and a revision: this one has uncommitted work too.
    """
    listed = git(CHECKOUT, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for relative in filter(None, listed.split("\0")):
        source = CHECKOUT / relative
        if source.is_file():
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination, commit_all(destination, "the working tree")
