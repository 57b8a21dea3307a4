"""The wall around check-manifest's functions: the check hook finds a tracked file the sdist lacks
both through them and, when one of them changed, through check-manifest's own command line.

Real git repositories, real check hook processes. A change of check-manifest is simulated by a
launcher that removes one of its functions before the hook imports anything.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import run
from tests.example_repos import commit_all
from tests.vcs_projects import write

LAUNCHER = textwrap.dedent(
    """\
    import sys
    import check_manifest

    del check_manifest.strip_sdist_extras  # as a release that renamed it would leave it
    from safe_build_hooks.check_hook import entrypoint

    entrypoint()
    """
)
PACKAGE = {
    "pyproject.toml": """\
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "notes"
version = "1.0"
description = "A package"
readme = {text = "Notes", content-type = "text/plain"}
""",
    "notes.py": "VALUE = 1\n",
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    write(root, PACKAGE)
    subprocess.run(["git", "init", "--quiet", str(root)], check=True)
    commit_all(root)
    return root


@pytest.mark.parametrize("through", ["functions", "command line"])
def test_a_tracked_file_the_sdist_lacks_is_found(repo: Path, env: dict[str, str], through: str) -> None:
    hook = (
        [sys.executable, "-c", LAUNCHER]
        if through == "command line"
        else [
            sys.executable,
            "-m",
            "safe_build_hooks.check_hook",
        ]
    )
    good = run([*hook, "pyproject.toml"], env, repo)
    assert (good.returncode, good.stdout) == (0, ".: passed\n"), good.stdout + good.stderr

    write(repo, {"docs/notes.md": "notes\n"})  # tracked, but no rule puts it in the sdist
    commit_all(repo)
    bad = run([*hook, "pyproject.toml"], env, repo)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert ".: failed" in bad.stdout.splitlines()
    warnings = [
        line for line in bad.stderr.splitlines() if line.startswith("safe-build-check-hook: warning:")
    ]
    if through == "functions":
        assert "    notes-1.0.tar.gz lacks files that git tracks" in bad.stdout
        assert warnings == []
    else:
        assert "    check-manifest:" in bad.stdout.splitlines()
        assert "      docs/notes.md" in bad.stdout.splitlines()
        assert warnings == [
            "safe-build-check-hook: warning: check-manifest "
            f"{__import__('check_manifest').__version__} is not one this hook knows "
            "(check_manifest.strip_sdist_extras is missing); running its command line, which builds "
            "an sdist of its own"
        ]
