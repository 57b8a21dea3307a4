"""safe-build venv: one creation per path however many ask at once; a killed one is redone.

Real virtualenv, real processes, real SIGKILL. The ``demo`` test runs the same load with plain
virtualenv, which breaks the venv (an expected failure that may pass).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safe_build import state
from safe_build.state import ENVIRONMENT_LOCK_NAME
from tests.conftest import run, run_parallel, tree_state

CREATIONS = 8
COMPLETE = ".safe-build-venv-complete"
CREATING = ".safe-build-venv-creating"


def safe_venv(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "safe_build", "venv", *map(str, args)]


def venv_problems(venv: Path, env: dict[str, str]) -> list[str]:
    """What keeps ``venv`` from being a working venv made by safe-build."""
    problems = []
    pip = run([str(venv / "bin" / "python"), "-m", "pip", "--version"], env)
    if pip.returncode != 0:
        problems.append(f"its pip does not run: {pip.stderr.strip().splitlines()[-1:]}")
    if not (venv / COMPLETE).is_file():
        problems.append("no completion marker")
    elif json.loads((venv / COMPLETE).read_text())["python"] != ".".join(map(str, sys.version_info[:3])):
        problems.append(f"marker names another Python: {(venv / COMPLETE).read_text()}")
    if (venv / CREATING).exists():
        problems.append("still marked as being created")
    return problems


def test_concurrent_creations_of_one_path_make_one_venv(env: dict[str, str], tmp_path: Path) -> None:
    """Eight at once: one creates, seven wait and reuse it; then eight --clear take turns."""
    venv = tmp_path / "venv"
    results = run_parallel([safe_venv(venv)] * CREATIONS, env)
    assert [result.returncode for result in results] == [0] * CREATIONS, [r.stderr for r in results]
    said = sorted(result.stdout.split(" the virtual environment")[0] for result in results)
    assert said == ["Created"] + ["Reusing"] * (CREATIONS - 1)
    assert venv_problems(venv, env) == []
    lock = (venv / ENVIRONMENT_LOCK_NAME).stat()

    results = run_parallel([safe_venv(venv, "--clear")] * CREATIONS, env)
    assert [result.returncode for result in results] == [0] * CREATIONS, [r.stderr for r in results]
    assert all(result.stdout.startswith("Created") for result in results)
    assert venv_problems(venv, env) == []
    assert (venv / ENVIRONMENT_LOCK_NAME).stat().st_ino == lock.st_ino, (
        "the environment lock file was replaced"
    )


@pytest.mark.demo
@pytest.mark.xfail(reason="plain virtualenv creations of one path collide", strict=False)
def test_demo_plain_virtualenv_fails_creating_one_path_at_once(env: dict[str, str], tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    results = run_parallel([[sys.executable, "-m", "virtualenv", "--quiet", str(venv)]] * CREATIONS, env)
    failed = [result.stderr.strip().splitlines()[-1:] for result in results if result.returncode != 0]
    pip = run([str(venv / "bin" / "python"), "-m", "pip", "--version"], env)
    assert (failed, pip.returncode) == ([], 0), f"{len(failed)} of {CREATIONS} failed: {failed[:2]}"


def test_killed_creation_is_removed_and_redone(env: dict[str, str], tmp_path: Path) -> None:
    """SIGKILL mid-creation leaves a marked, incomplete venv; the next run starts it again."""
    venv = tmp_path / "venv"
    killed = subprocess.Popen(safe_venv(venv), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (venv / "pyvenv.cfg").exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    killed.kill()
    killed.wait()
    assert (venv / CREATING).exists(), "not killed mid-creation"
    assert not (venv / COMPLETE).exists(), "not killed mid-creation"

    again = run(safe_venv(venv), env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("Created the virtual environment")
    assert venv_problems(venv, env) == []


def test_other_venvs_are_reused_and_anything_else_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    """A venv another tool made is used as it is; a file, or a directory with other things in it,
    is refused with exit code 2 and left as it was, before any lock is taken."""
    other = tmp_path / "other"
    made = run([sys.executable, "-m", "venv", "--without-pip", str(other)], env)
    assert made.returncode == 0, made.stderr
    before = tree_state(other)
    reused = run(safe_venv(other), env)
    assert (reused.returncode, reused.stdout.strip()) == (
        0,
        f"Reusing the virtual environment at {other} (not made by safe-build; --clear recreates it)",
    )
    assert tree_state(other) == before

    (tmp_path / "file").write_text("data")
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "setup.py").write_text("data")
    before = tree_state(tmp_path)
    for path, what in [("file", "is a file"), ("project", "is a directory that is not empty")]:
        refused = run(safe_venv(tmp_path / path, "--clear"), env)
        assert refused.returncode == 2
        assert refused.stderr.startswith(f"safe-build: error: {tmp_path / path} {what}")
        assert len(refused.stderr.splitlines()) == 1, refused.stderr
    assert tree_state(tmp_path) == before
    locks = Path(env["SAFE_BUILD_CACHE_DIR"]) / "locks"
    taken = [path.name for path in locks.glob("*.lock") if not path.name.startswith("venv-other-")]
    assert taken == [], "a refused path's lock was taken"


def test_bad_virtualenv_option_is_virtualenvs_error_and_makes_nothing(
    env: dict[str, str], tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    result = run(safe_venv(venv, "--no-such-option"), env)
    assert result.returncode == 2
    assert "virtualenv: error: unrecognized arguments: --no-such-option" in result.stderr
    assert not venv.exists()
    first = run(safe_venv("--prompt", "x", venv), env)
    assert first.returncode == 2
    assert first.stderr.startswith("safe-build: error: the venv path must come first, not --prompt")


def test_clear_waits_for_whoever_holds_the_environment(env: dict[str, str], tmp_path: Path) -> None:
    """--clear takes the environment lock that safe-pip's installs hold, and touches nothing until
    it has it: here it gives up (exit code 3) while the test holds the lock, and the venv stays."""
    venv = tmp_path / "venv"
    assert run(safe_venv(venv), env).returncode == 0
    before = tree_state(venv)
    own = state.at(Path(env["SAFE_BUILD_CACHE_DIR"]), lock_timeout=10)
    lock = own.environment_lock(Path(os.path.realpath(venv)), inside=True)
    with lock.hold("exclusive"):
        cleared = run(safe_venv(venv, "--clear"), {**env, "SAFE_BUILD_LOCK_TIMEOUT": "1.5"})
    assert cleared.returncode == 3, cleared.stderr
    assert (
        f"waiting for the environment lock on {os.path.realpath(venv)} (held by pid {os.getpid()}"
        in cleared.stderr
    )
    assert tree_state(venv) == before


def test_a_creation_marker_that_is_not_safe_builds_never_causes_a_deletion(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A ``.safe-build-venv-creating`` that no creation by safe-build recorded (copied along with
    a directory, planted): before, the directory's other files were deleted without --clear."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "setup.py").write_text("data")
    (project / CREATING).write_text("")
    other = tmp_path / "other"
    made = run([sys.executable, "-m", "venv", "--without-pip", str(other)], env)
    assert made.returncode == 0, made.stderr
    (other / CREATING).write_text("a token nobody recorded")
    before = [tree_state(project), tree_state(other)]

    refused = run(safe_venv(project), env)
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"safe-build: error: {project} is a directory that is not empty")
    reused = run(safe_venv(other), env)
    assert reused.returncode == 0, reused.stderr
    assert reused.stdout.startswith("Reusing the virtual environment")
    assert [tree_state(project), tree_state(other)] == before


def another_python() -> str | None:
    """An interpreter of another version than this one, if the machine has one."""
    for name in ("python3.12", "python3.13", "python3.10", "/usr/bin/python3"):
        found = shutil.which(name)
        if found is None:
            continue
        version = subprocess.run(
            [found, "-c", "import sys; print(sys.version.split()[0])"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if version and version != sys.version.split()[0]:
            return found
    return None


@pytest.mark.skipif(another_python() is None, reason="no interpreter of another version here")
def test_a_venv_of_another_python_than_asked_for_is_refused_unless_cleared(
    env: dict[str, str], tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    made = run(safe_venv(venv), env)
    assert made.returncode == 0, made.stderr
    before = tree_state(venv)
    other = another_python()
    assert other is not None
    refused = run(safe_venv(venv, "--python", other), env)
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"safe-build: error: the virtual environment at {venv} has CPython ")
    assert len(refused.stderr.splitlines()) == 1, refused.stderr
    assert tree_state(venv) == before
    cleared = run(safe_venv(venv, "--clear", "--python", other), env)
    assert cleared.returncode == 0, cleared.stderr
    assert run(safe_venv(venv, "--python", other), env).returncode == 0


def test_a_venv_whose_name_is_as_long_as_a_name_may_be_is_made(env: dict[str, str], tmp_path: Path) -> None:
    """The lock of a venv path is named after it: a 240-character name (legal) must still fit."""
    venv = tmp_path / ("v" * 240)
    done = run(safe_venv(venv), env)
    assert done.returncode == 0, done.stderr
    assert venv_problems(venv, env) == []
