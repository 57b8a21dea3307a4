"""Projects that take their version and file list from git: safe-build gives what an in-place build gives.

The reference is plain ``python -m build`` run in the source tree itself, where setuptools-scm
and hatch-vcs see the real repository. safe-build builds another checkout of the same
fixture (same commits, same uncommitted changes) and must produce artifacts with the same
names (so the same version), the same members with the same contents and the same core
metadata, while leaving its checkout exactly as it found it: ``git status --ignored`` before
and after agree, so no egg-info, release tree, version file or other trace is left behind.

Both write outside both checkouts, so whatever changes in a checkout is the build's doing.
Both builds of a case run at once, in separate checkouts, which halves the wall time and is
harmless: they share nothing but the read-only wheelhouse.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import plain_build_command, run_parallel, safe_build_command, tree_state, wheel_problems
from tests.vcs_projects import (
    SOURCE_DATE_EPOCH,
    Checkout,
    artifacts_in,
    checkout,
    differences,
    make,
    states,
    tree_status,
)

# Every state of the kinds whose version comes from git; the others in the one state that
# matters to them: a static version does not move with commits, but uncommitted files still
# have to reach the artifacts. A submodule's own tag is no different from the root's.
CASES = [
    *[
        pytest.param(kind, state, id=f"{kind}-{state}")
        for kind in ("scm-root", "scm-monorepo", "hatch-vcs")
        for state in states(kind)
    ],
    pytest.param("symlink-up", "dirty", id="symlink-up-dirty"),
    pytest.param("no-git", "tag", id="no-git"),
    pytest.param("submodule", "past-tag", id="submodule-past-tag"),
    pytest.param("submodule", "dirty", id="submodule-dirty"),
]

# the concurrent runs: the two backends, each in the state that asks git the most (a dirty tree),
# the setuptools one in a monorepo subdirectory, where the repository lies outside the project
CONCURRENT_CASES = [pytest.param("scm-monorepo", "dirty"), pytest.param("hatch-vcs", "dirty")]
CONCURRENT_BUILDS = 8


@pytest.fixture
def build_env(env: dict[str, str]) -> dict[str, str]:
    """The tests' build environment with a fixed build date, the one thing that dates a dirty version."""
    return {**env, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}


def tree_fingerprint(tree: Checkout) -> str | dict[str, tuple[int, bytes | str]]:
    """What must not change: git's view of the work tree, or every entry of a tree outside git."""
    return tree_status(tree.root) if tree.fixture.in_git else tree_state(tree.root)


def outcome(result: subprocess.CompletedProcess[str], outdir: Path) -> list[str]:
    """Problems with one build: its exit code (with the end of its output), invalid wheels."""
    if result.returncode != 0:
        tail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-15:]
        return [f"exit {result.returncode}: " + "\n".join(tail)]
    return [problem for wheel in outdir.glob("*.whl") for problem in wheel_problems(wheel)]


@pytest.mark.parametrize(("kind", "state"), CASES)
def test_safe_build_gives_what_an_in_place_build_gives(
    kind: str, state: str, build_env: dict[str, str], tmp_path: Path
) -> None:
    """The default flow (an sdist, then a wheel from it), in place and with safe-build: the same artifacts."""
    fixture = make(kind, state, tmp_path / "origin")
    in_place, safe = checkout(fixture, tmp_path / "a"), checkout(fixture, tmp_path / "b")
    before = tree_fingerprint(safe)

    reference, built = run_parallel(
        [
            plain_build_command(in_place.project, "--outdir", tmp_path / "out-plain"),
            safe_build_command(safe.project, "--outdir", tmp_path / "out-safe"),
        ],
        build_env,
    )

    failed = outcome(reference, tmp_path / "out-plain")
    assert not failed, "the in-place reference build failed: " + "\n".join(failed)
    failed = outcome(built, tmp_path / "out-safe")
    assert not failed, "\n".join(failed)
    found = differences(artifacts_in(tmp_path / "out-plain"), artifacts_in(tmp_path / "out-safe"))
    assert not found, "\n".join(found)
    assert tree_fingerprint(safe) == before, "safe-build changed the checkout it built"


@pytest.mark.parametrize(("kind", "state"), CONCURRENT_CASES)
def test_concurrent_builds_of_one_checkout_all_agree(
    kind: str, state: str, build_env: dict[str, str], tmp_path: Path
) -> None:
    """Eight safe-builds of one checkout at once, each into its own directory, the reference beside them."""
    fixture = make(kind, state, tmp_path / "origin")
    in_place, safe = checkout(fixture, tmp_path / "a"), checkout(fixture, tmp_path / "b")
    before = tree_fingerprint(safe)
    outdirs = [tmp_path / f"out{index}" for index in range(CONCURRENT_BUILDS)]

    results = run_parallel(
        [plain_build_command(in_place.project, "--outdir", tmp_path / "out-plain")]
        + [safe_build_command(safe.project, "--outdir", outdir) for outdir in outdirs],
        build_env,
    )

    failed = outcome(results[0], tmp_path / "out-plain")
    assert not failed, "the in-place reference build failed: " + "\n".join(failed)
    failures = {
        outdir.name: problems
        for result, outdir in zip(results[1:], outdirs, strict=True)
        if (problems := outcome(result, outdir))
    }
    assert not failures, f"{len(failures)} of {CONCURRENT_BUILDS} concurrent builds failed; the first: " + (
        "\n".join(next(iter(failures.values()), []))
    )
    expected = artifacts_in(tmp_path / "out-plain")
    disagreeing = {
        outdir.name: found for outdir in outdirs if (found := differences(expected, artifacts_in(outdir)))
    }
    assert not disagreeing, f"{len(disagreeing)} builds differ from the reference; the first: " + (
        "\n".join(next(iter(disagreeing.values()), []))
    )
    assert tree_fingerprint(safe) == before, "concurrent safe-builds changed the checkout they built"
