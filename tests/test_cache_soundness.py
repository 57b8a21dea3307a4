"""The cache publishes only what was built from the tree its key names, whatever happens meanwhile.

Real safe-build processes on real projects. The races are driven by events, never by timing: the
``slow`` project's backend says when it runs (``SLOW_BACKEND_MARKER``) and waits for a gate file
(``SLOW_BACKEND_GATE``); a build waiting for the project lock says so on its stderr.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import run, run_parallel, safe_build_command, wheel_problems, write_files

ROUNDS = 30


def hatch_project(root: Path, name: str, data: int) -> Path:
    """A hatchling project whose package holds ``data`` random (incompressible) bytes."""
    project = write_files(
        root,
        {
            "pyproject.toml": "[build-system]\nrequires = ['hatchling']\nbuild-backend = 'hatchling.build'\n"
            f"[project]\nname = '{name}'\nversion = '1'\n",
            f"src/{name}/__init__.py": "",
        },
    )
    (project / f"src/{name}/blob.bin").write_bytes(os.urandom(data))
    return project


def module_text(wheel: Path, member: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(member).decode()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_a_tree_edited_while_its_build_waits_is_never_stored_under_the_old_key(
    make_project: Callable[[str], Path], env: dict[str, str], tmp_path: Path
) -> None:
    """An in-place build holds the project lock; a copy build of state A looks its key up and
    waits; the tree becomes B; the copy build builds B. Its wheel must not be filed under A's key:
    after going back to A, a cached build must publish A (before, it published B)."""
    project = make_project("slow")
    marker, gate = tmp_path / "runs.log", tmp_path / "gate"
    holder = subprocess.Popen(
        safe_build_command("--wheel", "-n", "--in-place", "-o", tmp_path / "in-place", project),
        env={**env, "SLOW_BACKEND_MARKER": str(marker), "SLOW_BACKEND_GATE": str(gate)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(marker.exists, "the in-place build's backend")
        log = tmp_path / "waiter.log"
        with log.open("w") as stderr:
            waiter = subprocess.Popen(
                safe_build_command(
                    "--wheel", "-n", "-v", "--isolation", "copy", "-o", tmp_path / "b", project
                ),
                env=env,
                stdout=stderr,
                stderr=stderr,
            )
        wait_for(lambda: "waiting for the project lock" in log.read_text(), "the copy build to wait")
        (project / "slow.py").write_text("VALUE = 'B'\n")
        gate.touch()
        assert waiter.wait(timeout=120) == 0, log.read_text()
        rest = log.read_text()
        assert holder.wait(timeout=120) == 0
    finally:
        gate.touch()
        holder.kill()
    assert module_text(tmp_path / "b/slow-1.0-py3-none-any.whl", "slow.py") == "VALUE = 'B'\n"

    (project / "slow.py").write_text("VALUE = 5\n")
    again = run(
        safe_build_command("--wheel", "-n", "--isolation", "copy", "-o", tmp_path / "a", project), env
    )
    assert again.returncode == 0, again.stderr
    assert module_text(tmp_path / "a/slow-1.0-py3-none-any.whl", "slow.py") == "VALUE = 5\n"
    assert "Not stored in the cache: the tree changed" in rest


STATES = ("VALUE = 'A'\n", "VALUE = 'B'\n", "")  # "" : caught between truncating and writing


def test_a_file_flipping_between_states_during_cached_builds_never_poisons_the_cache(
    make_project: Callable[[str], Path], env: dict[str, str], tmp_path: Path
) -> None:
    """One file flips between two states, written in place as editors do, while cached builds run
    two at a time. Afterwards, a cached build of each state must publish that state: an entry that
    holds other content than its key names would be served here."""
    project = make_project("hatchling")
    module = project / "src/demo_hatch/util.py"
    stop = threading.Event()

    def flip() -> None:
        flips = 0
        while not stop.is_set():
            module.write_text(STATES[flips % 2])
            flips += 1
            time.sleep(0.002)  # pacing, so that the builds get the processor too

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        failed = []
        for round_ in range(ROUNDS // 2):
            outdirs = [tmp_path / f"storm-{round_}-{index}" for index in range(2)]
            commands = [safe_build_command("--wheel", "-n", "-o", outdir, project) for outdir in outdirs]
            for outdir, result in zip(outdirs, run_parallel(commands, env), strict=True):
                wheel = next(outdir.glob("*.whl"), outdir / "missing.whl")
                if result.returncode or wheel_problems(wheel):
                    failed.append(result.stderr)
                elif module_text(wheel, "demo_hatch/util.py") not in STATES:
                    failed.append(f"{wheel}: {module_text(wheel, 'demo_hatch/util.py')!r}")
    finally:
        stop.set()
        flipper.join()
    assert failed == []
    wrong = []
    for number, state in enumerate(STATES):
        module.write_text(state)
        outdir = tmp_path / f"after-{number}"
        result = run(safe_build_command("--wheel", "-n", "-o", outdir, project), env)
        assert result.returncode == 0, result.stderr
        published = module_text(next(outdir.glob("*.whl")), "demo_hatch/util.py")
        if published != state:
            wrong.append((state, published))
    assert wrong == []


def test_refresh_racing_hits_that_publish_large_files_fails_none(env: dict[str, str], tmp_path: Path) -> None:
    """``--refresh`` removes the entry that concurrent hits are publishing; before, hits failed
    with "cannot write ...whl" after publishing the sdist. Now every build succeeds whole."""
    project = hatch_project(tmp_path / "big", "big", 24 << 20)  # slow to publish
    first = run(safe_build_command("-n", "-o", tmp_path / "first", project), env)
    assert first.returncode == 0, first.stderr
    failed: list[object] = []
    for round_ in range(2):
        outdirs = [tmp_path / f"race-{round_}-{index}" for index in range(6)]
        commands = [
            safe_build_command("-n", *(["--refresh"] if index % 3 == 0 else []), "-o", outdir, project)
            for index, outdir in enumerate(outdirs)
        ]
        for outdir, result in zip(outdirs, run_parallel(commands, env), strict=True):
            artifacts = sorted(path.name for path in outdir.iterdir()) if outdir.exists() else []
            if result.returncode or artifacts != ["big-1-py2.py3-none-any.whl", "big-1.tar.gz"]:
                failed.append((result.returncode, artifacts, result.stderr[-300:]))
            elif wheel_problems(outdir / "big-1-py2.py3-none-any.whl"):
                failed.append(wheel_problems(outdir / "big-1-py2.py3-none-any.whl"))
    assert failed == []


@pytest.mark.parametrize("use_git", [False, True], ids=["walk", "git"])
def test_a_cache_dir_inside_the_project_is_never_copied_and_hits(
    make_project: Callable[[str], Path], env: dict[str, str], use_git: bool
) -> None:
    project = make_project("flit")
    if use_git:
        subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    inside = {**env, "SAFE_BUILD_CACHE_DIR": str(project / ".cache/safe-build")}
    results = [run(safe_build_command("--wheel", "-n", "-v", project), inside) for _ in range(2)]
    assert [result.returncode for result in results] == [0, 0], results[-1].stderr
    assert "Reusing cache entry" in results[1].stderr
    assert "Reusing cache entry" not in results[0].stderr


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_cache_disk_warns_and_still_publishes(env: dict[str, str], tmp_path: Path) -> None:
    """Room for the snapshot and the build, not for the entry: the build succeeds with one warning
    naming the cache directory, no entry is left half-stored, and with room the next build stores."""
    cache = tmp_path / "small-cache"
    cache.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=11m", "tmpfs", str(cache)], check=False
    ).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        project = hatch_project(tmp_path / "data", "data", 4 << 20)
        small = {**env, "SAFE_BUILD_CACHE_DIR": str(cache)}
        full = run(safe_build_command("--wheel", "-n", "-o", tmp_path / "out", project), small)
        assert full.returncode == 0, full.stderr
        assert (
            f"safe-build: warning: the build was not stored in the cache (No space left on device); "
            f"cache directory {cache}" in full.stderr
        )
        assert not wheel_problems(tmp_path / "out/data-1-py2.py3-none-any.whl")
        leftovers = [path for path in (cache / "wheels").rglob("*") if path.is_file()]
        assert leftovers == []
        subprocess.run(["mount", "-o", "remount,size=64m", str(cache)], check=True)
        roomy = [run(safe_build_command("--wheel", "-n", "-v", project), small) for _ in range(2)]
        assert [result.returncode for result in roomy] == [0, 0]
        assert "Reusing cache entry" in roomy[1].stderr
    finally:
        subprocess.run(["umount", "-l", str(cache)], check=False)


def test_the_memo_and_the_copy_agree_on_an_unchanged_tree_so_a_plain_rebuild_hits(
    make_project: Callable[[str], Path], env: dict[str, str]
) -> None:
    """The lookup reads the tree in place, the copy digests what it wrote: for an unchanged tree
    they must give one key, or nothing would ever be stored."""
    project = make_project("setuptools")
    results = [run(safe_build_command("--wheel", "-n", "-v", project), env) for _ in range(2)]
    assert [result.returncode for result in results] == [0, 0]
    assert "Not stored" not in results[0].stderr
    assert "Reusing cache entry" in results[1].stderr
