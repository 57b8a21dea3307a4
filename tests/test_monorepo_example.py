"""examples/monorepo: ``make -j8``, run twice, with safe-build and safe-pip on PATH.

The Makefile builds the wheel and the sdist of five packages (setuptools, hatchling, flit-core,
setuptools-scm, and one that requires another, installed by path), while other recipes create
venvs and install the packages into them, several into one venv, two editable: the builds and
installs of one package run at the same time. Then each venv's smoke test imports them. The
second run finds the venvs made and the artifacts in safe-build's cache.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.conftest import run, tree_state, wheel_problems
from tests.example_repos import download, example_repo

PACKAGES = ("mono_alpha", "mono_beta", "mono_gamma", "mono_delta", "mono_epsilon")


@pytest.fixture(scope="session")
def editables_wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """hatchling's editable builds require ``editables``."""
    return download(tmp_path_factory.mktemp("editables-wheelhouse"), ["editables"])


def test_make_j8_builds_installs_and_imports_every_package_repeatedly(
    env: dict[str, str], editables_wheelhouse: Path, tmp_path: Path
) -> None:
    repo = example_repo("monorepo", tmp_path / "monorepo")
    sources = tree_state(repo / "packages")
    tools = {
        **env,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",  # safe-build, safe-pip
        "PIP_FIND_LINKS": f"{env['PIP_FIND_LINKS']} {editables_wheelhouse}",
    }
    for attempt in ("first", "second"):
        done = run(["make", "-j8"], tools, repo)
        assert done.returncode == 0, f"{attempt} run:\n{done.stdout}{done.stderr}"
        for venv in ("shared", "dev", "app"):
            assert f"smoke test of venvs/{venv}: passed" in done.stdout, f"{attempt} run"
    artifacts = sorted(path.name for path in (repo / "dist").iterdir())
    assert [name.split("-")[0] for name in artifacts] == sorted(PACKAGES * 2), artifacts
    assert [problem for wheel in (repo / "dist").glob("*.whl") for problem in wheel_problems(wheel)] == []
    # plain python -m build and pip build in the package directories: build/, *.egg-info
    assert tree_state(repo / "packages") == sources
