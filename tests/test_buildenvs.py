"""Cached build environments: shared by concurrent builds, made once, replaced when stale or killed.

Real builds in real processes. Each build runs ``envbuild.main`` (what the forked build child runs
in place of build's ``main``) in a process of its own, with the environment store holding the
cache-wide lock shared, as a safe-build build does. Artifacts are compared with those of plain,
freshly isolated ``python -m build`` runs of the same sources.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from safe_build import buildcompat, state
from safe_build.buildenvs import MARKER, EnvStore
from safe_build.errors import EXIT_LOCK_TIMEOUT
from tests.conftest import (
    members,
    plain_build_command,
    run,
    run_parallel,
    tree_state,
    wheel_problems,
    write_project,
)

pytestmark = [
    pytest.mark.compat,  # a smoke test of the build side for .ci/compat
    # reused environments need build's own helpers; without them builds go through build's main
    pytest.mark.skipif(buildcompat.CLI is None, reason=f"build's helpers changed: {buildcompat.PROBLEM}"),
]

DRIVER = textwrap.dedent(
    """\
    import sys
    from pathlib import Path

    from safe_build import state
    from safe_build.buildcompat import CLI
    from safe_build.buildenvs import EnvStore
    from safe_build.envbuild import main

    cache, max_age, refresh, timeout, *arguments = sys.argv[1:]
    own = state.at(Path(cache), lock_timeout=float(timeout))
    lock = own.cache_lock()
    envs = EnvStore(
        own,
        max_age=float(max_age),
        refresh=refresh == "refresh",
        using=lambda: lock.hold("shared"),
    )
    assert CLI is not None
    main(arguments, envs, CLI, "python -m build")
    """
)
WEEK = 7 * 24 * 3600.0
# the same requirements, spelled three ways: one environment
SHARED_REQUIRES = (
    'requires = ["setuptools>=69", "hatchling", "flit_core>=3.9"]',
    'requires = ["Hatchling", "flit-core >= 3.9", "setuptools >= 69"]',
    'requires = ["FLIT.core>=3.9", "setuptools>=69", "hatchling", "hatchling"]',
)
# an in-tree backend that asks for `wheel` at build time and cannot build a wheel without it
DYNAMIC_BACKEND = textwrap.dedent(
    """\
    from setuptools import build_meta as _setuptools
    from setuptools.build_meta import *  # noqa: F403


    def get_requires_for_build_wheel(config_settings=None):
        return [*_setuptools.get_requires_for_build_wheel(config_settings), "wheel"]


    def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
        import wheel  # noqa: F401  (only in the derived environment)

        return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)
    """
)


def envbuild_command(
    cache: Path, *args: str | Path, max_age: float = WEEK, refresh: bool = False, lock_timeout: float = 120
) -> list[str]:
    flag = "refresh" if refresh else "-"
    return [sys.executable, "-c", DRIVER, str(cache), str(max_age), flag, str(lock_timeout), *map(str, args)]


def cache_dir(env: dict[str, str]) -> Path:
    return Path(env["SAFE_BUILD_CACHE_DIR"])


def markers(cache: Path) -> dict[Path, dict[str, object]]:
    """Every complete environment in the store, by directory, with its completion marker."""
    return {path.parent: json.loads(path.read_text()) for path in cache.glob(f"envs/*/*/{MARKER}")}


def only_env(cache: Path) -> tuple[Path, dict[str, object]]:
    found = markers(cache)
    assert len(found) == 1, found
    return next(iter(found.items()))


def metadata(artifact: Path) -> bytes:
    if artifact.name.endswith(".whl"):
        with zipfile.ZipFile(artifact) as archive:
            return archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA")))
    with tarfile.open(artifact) as archive:
        top = archive.getnames()[0].split("/")[0]
        extracted = archive.extractfile(f"{top}/PKG-INFO")
        assert extracted is not None
        return extracted.read()


def differences(ours: Path, plain: Path) -> list[str]:
    """How the artifacts in ``ours`` differ from plain build's in ``plain``: names, members, metadata."""
    names = sorted(path.name for path in ours.iterdir())
    if names != sorted(path.name for path in plain.iterdir()):
        return [f"{ours}: {names} vs {sorted(path.name for path in plain.iterdir())}"]
    found = []
    for name in names:
        if members(ours / name) != members(plain / name):
            found.append(f"{name}: other members")
        if metadata(ours / name) != metadata(plain / name):
            found.append(f"{name}: other metadata")
        if name.endswith(".whl"):
            found += wheel_problems(ours / name)
    return found


def assert_succeeded(results: Sequence[subprocess.CompletedProcess[str]]) -> None:
    failed = [result.stderr[-2000:] for result in results if result.returncode != 0]
    assert failed == [], failed


def test_concurrent_builds_of_different_projects_share_one_env_and_match_plain_build(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Nine projects (three per backend) requiring the same (spelled differently), built at once with
    a cold store: one environment, made by one of them while the others wait; plain build's artifacts.

    The projects of one backend differ in a module's content only, so that one plain build per
    backend is their reference: plain builds make two environments each, and cost the most here.
    """
    reference_of = {}  # project -> the project of its backend that plain build builds
    for kind in ("setuptools", "hatchling", "flit"):
        for variant in range(3):
            project = write_project(tmp_path / "src" / f"{kind}-{variant}", kind)
            pyproject = project / "pyproject.toml"
            pyproject.write_text(
                re.sub(r"requires = \[.*\]", SHARED_REQUIRES[variant], pyproject.read_text())
            )
            module = next(project.glob("**/__init__.py"))
            module.write_text(f"{module.read_text()}VARIANT = {variant}\n")
            reference_of[project] = project.with_name(f"{kind}-0")
    projects = list(reference_of)
    cache = cache_dir(env)
    ours = run_parallel([envbuild_command(cache, p, "-o", tmp_path / "ours" / p.name) for p in projects], env)
    assert_succeeded(ours)
    assert sum("Creating isolated environment" in result.stderr for result in ours) == 1
    _, marker = only_env(cache)
    assert marker["requirements"] == ["flit-core>=3.9", "hatchling", "setuptools>=69"]

    references = sorted(set(reference_of.values()))
    plain = run_parallel([plain_build_command(p, "-o", tmp_path / "plain" / p.name) for p in references], env)
    assert_succeeded(plain)
    for project, reference in reference_of.items():
        assert differences(tmp_path / "ours" / project.name, tmp_path / "plain" / reference.name) == []


def test_a_killed_env_creation_is_redone(env: dict[str, str], tmp_path: Path) -> None:
    """SIGKILL while the environment is being made leaves a directory without marker: never used,
    removed and made again by the next build."""
    project = write_project(tmp_path / "flit", "flit")
    cache = cache_dir(env)
    command = envbuild_command(cache, project, "--wheel", "-o", tmp_path / "first")
    victim = subprocess.Popen(command, env=env, start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(cache.glob("envs/*/*/bin/python")) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    [leftover] = cache.glob("envs/*/*")
    assert not (leftover / MARKER).exists(), "killed after the environment was complete: kill sooner"
    (leftover / "sentinel").write_text("from the killed creation")

    again = run(envbuild_command(cache, project, "--wheel", "-o", tmp_path / "again"), env)
    assert again.returncode == 0, again.stderr
    path, _ = only_env(cache)
    assert path == leftover
    assert not (path / "sentinel").exists()
    assert wheel_problems(next((tmp_path / "again").glob("*.whl"))) == []


def test_a_dynamic_requirement_gets_a_derived_env_and_the_base_env_is_untouched(
    env: dict[str, str], tmp_path: Path
) -> None:
    cache = cache_dir(env)
    first = run(
        envbuild_command(cache, write_project(tmp_path / "plain-setuptools", "setuptools"), "--wheel"), env
    )
    assert first.returncode == 0, first.stderr
    base, base_marker = only_env(cache)
    before = tree_state(base)
    module = next(base.glob("lib/python*/site-packages/setuptools/__init__.py"))
    assert module.stat().st_mode & 0o222 == 0, "a shared environment is read-only"

    project = write_project(tmp_path / "dynamic", "setuptools")
    (project / "dynamic_backend.py").write_text(DYNAMIC_BACKEND)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            'build-backend = "setuptools.build_meta"',
            'build-backend = "dynamic_backend"\nbackend-path = ["."]',
        )
    )
    for attempt in ("first", "again"):  # the second build finds the derived environment made
        result = run(envbuild_command(cache, project, "--wheel", "-o", tmp_path / attempt), env)
        assert result.returncode == 0, result.stderr
        found = markers(cache)
        assert len(found) == 2, found
        assert tree_state(base) == before
        assert found[base] == base_marker
        [derived] = [marker for path, marker in found.items() if path != base]
        assert derived["requirements"] == ["setuptools>=69", "wheel"]
        assert "wheel" in derived["resolved"]  # type: ignore[operator]
        assert "wheel" not in base_marker["resolved"]  # type: ignore[operator]

    plain = run(plain_build_command(project, "--wheel", "-o", tmp_path / "plain"), env)
    assert plain.returncode == 0, plain.stderr
    assert differences(tmp_path / "again", tmp_path / "plain") == []


def test_an_old_env_is_replaced_refresh_replaces_it_and_prune_removes_unused_ones(
    env: dict[str, str], tmp_path: Path
) -> None:
    cache = cache_dir(env)
    project = write_project(tmp_path / "flit", "flit")

    def build(*, refresh: bool = False) -> tuple[Path, float]:
        result = run(
            envbuild_command(cache, project, "--wheel", "-o", tmp_path / "out", refresh=refresh), env
        )
        assert result.returncode == 0, result.stderr
        path, marker = only_env(cache)
        return path, float(marker["created_at"])  # type: ignore[arg-type]

    path, created = build()
    marker_file = path / MARKER
    aged = json.loads(marker_file.read_text()) | {"created_at": created - 8 * 24 * 3600}
    marker_file.write_text(json.dumps(aged))
    (path / "sentinel").write_text("from the old environment")
    _, renewed = build()
    assert renewed > created, "an environment older than a week is made again"
    assert not (path / "sentinel").exists()
    assert build() == (path, renewed), "a fresh one is reused"
    _, refreshed = build(refresh=True)
    assert refreshed > renewed

    killed = cache / "envs" / "00" / ("0" * 32)  # what a killed creation leaves: no marker
    killed.mkdir(parents=True)
    store = EnvStore(state.at(cache, lock_timeout=10))
    assert store.prune(older_than=3600) == [killed]
    assert list(markers(cache)) == [path]
    os.utime(marker_file, (time.time() - 7200, time.time() - 7200))  # last used two hours ago
    assert store.prune(older_than=3600) == [path]
    assert markers(cache) == {}


def test_clean_during_builds_breaks_nothing(env: dict[str, str], tmp_path: Path) -> None:
    """clean, under the cache lock held exclusive, runs between builds' uses of environments
    (also between an sdist and the wheel built from it); every build still succeeds."""
    cache = cache_dir(env)
    projects = [write_project(tmp_path / kind, kind) for kind in ("flit", "hatchling")]
    results: list[subprocess.CompletedProcess[str]] = []

    def lane(project: Path) -> None:
        for round_number in range(3):
            outdir = tmp_path / "out" / f"{project.name}-{round_number}"
            results.append(run(envbuild_command(cache, project, "-o", outdir), env))

    lanes = [threading.Thread(target=lane, args=(project,)) for project in projects]
    for thread in lanes:
        thread.start()
    lock = state.at(cache, lock_timeout=120).cache_lock()
    store = EnvStore(state.at(cache, lock_timeout=10))
    removed = []
    while any(thread.is_alive() for thread in lanes):
        with lock.hold("exclusive"):
            removed += store.clean()
        time.sleep(0.3)
    for thread in lanes:
        thread.join()
    assert_succeeded(results)
    assert removed, "clean never found an environment to remove: the test proved nothing"
    for outdir in (tmp_path / "out").iterdir():
        assert len(list(outdir.glob("*.tar.gz"))) == 1, outdir
        [wheel] = outdir.glob("*.whl")
        assert wheel_problems(wheel) == []


def test_a_lock_that_stays_busy_ends_the_build_with_the_lock_timeout_exit_code(
    env: dict[str, str], tmp_path: Path
) -> None:
    cache = cache_dir(env)
    project = write_project(tmp_path / "flit", "flit")
    lock = state.at(cache, lock_timeout=10).cache_lock()
    with lock.hold("exclusive"):  # as clean does
        result = run(envbuild_command(cache, project, "--wheel", lock_timeout=0.5), env)
    assert result.returncode == EXIT_LOCK_TIMEOUT, result.stderr
    assert "ERROR timed out after 0.5s waiting for the cache lock" in result.stderr
    assert not (project / "dist").exists()
