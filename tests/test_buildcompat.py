"""The wall around build's private names: checked at import, and a build that still succeeds when
they change (through build's own ``main``, in a fresh environment, after one warning).

A change of build is simulated in a real safe-build process: a small launcher removes or replaces a
private name of ``build.__main__`` that build's own ``main`` does not need for a wheel built from a
project directory (so only safe-build's use of it breaks, as a new build release would), then
runs safe-build's entry point.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import build
import pytest
from packaging.requirements import Requirement

from safe_build import buildcompat
from tests.conftest import run, safe_build_command

MakeProject = Callable[..., Path]
pytestmark = pytest.mark.compat  # a smoke test of the build side for .ci/compat
LAUNCHER = textwrap.dedent(
    """\
    import sys
    import build.__main__

    exec(sys.argv.pop(1))  # the change of build, made before safe-build imports anything of it
    from safe_build.cli import entrypoint

    sys.argv[0] = "safe-build"
    entrypoint()
    """
)
WARNING = (
    f"safe-build: warning: build {build.__version__} is not one this safe-build knows "
    "(build.__main__._extract_sdist is missing); isolated builds make a fresh environment each time, "
    "as python -m build does"
)


def changed_build(change: str, *args: str | Path) -> list[str]:
    return [sys.executable, "-c", LAUNCHER, change, *map(str, args)]


def declared_build_range() -> Requirement:
    [found] = [
        requirement
        for line in importlib.metadata.requires("safe-build") or []
        if (requirement := Requirement(line)).name == "build"
    ]
    return found


@pytest.fixture(autouse=True)
def in_declared_range() -> None:
    """The cases below are written for the private names of the builds in the tested range."""
    declared = declared_build_range()
    if not declared.specifier.contains(build.__version__, prereleases=True):
        pytest.skip(f"build {build.__version__} is outside the tested range {declared.specifier}")


def test_the_installed_build_fits() -> None:
    assert buildcompat.PROBLEM is None
    assert buildcompat.CLI is not None


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ("del build.__main__._write_report", "build.__main__._write_report is missing"),
        (
            "build.__main__._write_report = lambda path, artifacts: None",
            "build.__main__._write_report takes other arguments (too many positional arguments)",
        ),
        (
            "import build.env\n"
            "build.env.DefaultIsolatedEnv.install = lambda self, requirements, constraints=(): 0",
            "DefaultIsolatedEnv.install takes other arguments (got an unexpected keyword argument '_fresh')",
        ),
        ("build.__main__._styles = None", "build.__main__._styles is missing"),
    ],
)
def test_a_changed_private_name_is_found_at_import(change: str, problem: str) -> None:
    program = f"import build.__main__\n{change}\nfrom safe_build import buildcompat\n"
    program += "print(buildcompat.PROBLEM)"
    found = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == problem
    assert (found.stderr, buildcompat.PROBLEM) == ("", None)  # this process's build is untouched


def test_an_isolated_build_succeeds_through_build_itself_when_a_private_name_is_gone(
    make_project: MakeProject, env: dict[str, str], tmp_path: Path
) -> None:
    project = make_project("setuptools")
    cache = Path(env["SAFE_BUILD_CACHE_DIR"])
    result = run(changed_build("del build.__main__._extract_sdist", project, "--wheel"), env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines().count(WARNING) == 1
    assert result.stdout.strip().endswith("Successfully built demo_setuptools-1.0-py3-none-any.whl")
    assert [path.name for path in (project / "dist").iterdir()] == ["demo_setuptools-1.0-py3-none-any.whl"]
    # build made its own environment and removed it: nothing in the store of reused ones
    assert not any((cache / "envs").glob("*/*/safe-build-env.json"))
    # with the name back, the next build reuses an environment as usual, and warns of nothing
    again = run(safe_build_command(project, "--wheel", "--refresh"), env)
    assert again.returncode == 0, again.stderr
    assert "safe-build: warning" not in again.stderr
    assert len(list((cache / "envs").glob("*/*/safe-build-env.json"))) == 1


def test_constraints_from_a_pipe_are_read_once_and_applied(
    make_project: MakeProject, env: dict[str, str], tmp_path: Path
) -> None:
    """A constraints file that can be read only once (a FIFO with one writer) builds, and what it
    holds applies: an impossible constraint fails the environment's install, as in plain build."""
    project = make_project("flit")
    fifo = tmp_path / "constraints.fifo"
    for constraint, succeeds in (("flit-core>=3.9", True), ("flit-core<0.1", False)):
        os.mkfifo(fifo)
        writer = subprocess.Popen(
            [sys.executable, "-c", f"open({str(fifo)!r}, 'w').write({constraint + chr(10)!r})"]
        )
        command = safe_build_command(project, "--wheel", "--dependency-constraints-txt", fifo)
        result = run(command, env, timeout=300)
        writer.wait(timeout=10)
        fifo.unlink()
        assert (result.returncode == 0) is succeeds, result.stderr
        if not succeeds:
            assert "flit-core<0.1" in result.stderr or "flit_core<0.1" in result.stderr
