"""The wheel cache seen from the build command: identical builds run the backend once, ever.

Most builds here use ``-n``: the cache works the same with isolation, and these tests are about
the cache, not about installing build requirements.

The ``slow`` project's backend appends a line to ``SLOW_BACKEND_MARKER`` every time it runs, so
the tests count backend runs instead of guessing them from timings.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import run, run_parallel, safe_build_command, wheel_problems

CONCURRENT = 8


def backend_runs(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def slow_env(env: dict[str, str], marker: Path, seconds: float = 0.0) -> dict[str, str]:
    return {**env, "SLOW_BACKEND_MARKER": str(marker), "SLOW_BACKEND_SECONDS": str(seconds)}


def entry_dirs(cache_root: Path) -> list[Path]:
    wheels = cache_root / "wheels"
    if not wheels.is_dir():
        return []
    return [
        entry for shard in wheels.iterdir() if not shard.name.startswith(".") for entry in shard.iterdir()
    ]


def test_concurrent_identical_builds_run_the_backend_once(
    make_project: Callable[[str], Path], env: dict[str, str], tmp_path: Path
) -> None:
    project = make_project("slow")
    marker = tmp_path / "runs.log"
    outdirs = [tmp_path / f"out{number}" for number in range(CONCURRENT)]
    commands = [safe_build_command("--wheel", "-n", "-o", outdir, project) for outdir in outdirs]
    results = run_parallel(commands, slow_env(env, marker, seconds=1.0))
    assert [result.returncode for result in results] == [0] * CONCURRENT, [r.stderr for r in results]
    assert backend_runs(marker) == 1
    wheels = [outdir / "slow-1.0-py3-none-any.whl" for outdir in outdirs]
    assert not wheel_problems(wheels[0])
    assert len({wheel.read_bytes() for wheel in wheels}) == 1
    waited = [result for result in results if "waiting for the build lock on" in result.stderr]
    assert waited, "the builds that found the key busy say so"


def test_later_identical_build_is_a_hit_and_changes_are_misses(
    make_project: Callable[[str], Path], env: dict[str, str], tmp_path: Path
) -> None:
    project = make_project("slow")
    marker = tmp_path / "runs.log"
    environment = slow_env(env, marker)

    def build(*flags: str) -> subprocess.CompletedProcess[str]:
        result = run(safe_build_command("--wheel", "-n", "-v", *flags, project), environment)
        assert result.returncode == 0, result.stderr
        return result

    build()
    assert backend_runs(marker) == 1
    hit = build()
    assert backend_runs(marker) == 1
    assert "Reusing cache entry" in hit.stderr
    os.utime(project / "slow.py")  # touched, same content: still a hit
    build()
    assert backend_runs(marker) == 1
    (project / "slow.py").write_text("VALUE = 6\n")
    build()
    assert backend_runs(marker) == 2
    build("-Cquiet=1")
    assert backend_runs(marker) == 3
    build("--refresh")
    assert backend_runs(marker) == 4
    build("--no-cache")
    assert backend_runs(marker) == 5
    assert len(entry_dirs(Path(env["SAFE_BUILD_CACHE_DIR"]))) == 3  # three keys; --no-cache stored none


def test_a_damaged_entry_is_rebuilt_never_published(
    make_project: Callable[[str], Path], env: dict[str, str], tmp_path: Path
) -> None:
    project = make_project("slow")
    marker = tmp_path / "runs.log"
    environment = slow_env(env, marker)
    assert run(safe_build_command("--wheel", "-n", project), environment).returncode == 0
    (entry,) = entry_dirs(Path(env["SAFE_BUILD_CACHE_DIR"]))
    cached = entry / "slow-1.0-py3-none-any.whl"
    cached.chmod(0o644)
    cached.write_bytes(cached.read_bytes()[:100])  # truncated
    result = run(safe_build_command("--wheel", "-n", "-o", tmp_path / "out", project), environment)
    assert result.returncode == 0, result.stderr
    assert backend_runs(marker) == 2
    assert not wheel_problems(tmp_path / "out/slow-1.0-py3-none-any.whl")


def test_a_build_killed_before_storing_leaves_no_entry(
    make_project: Callable[[str], Path], env: dict[str, str], tmp_path: Path
) -> None:
    project = make_project("slow")
    marker = tmp_path / "runs.log"
    process = subprocess.Popen(
        safe_build_command("--wheel", "-n", project),
        env=slow_env(env, marker, seconds=30),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while backend_runs(marker) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.kill()
    process.wait()
    # the orphaned build group keeps the key lock until it ends: stop it, as a user would
    for line in marker.read_text().splitlines():
        os.killpg(int(line.split()[2]), signal.SIGKILL)
    assert entry_dirs(Path(env["SAFE_BUILD_CACHE_DIR"])) == []
    result = run(safe_build_command("--wheel", "-n", project), slow_env(env, marker))
    assert result.returncode == 0, result.stderr
    assert backend_runs(marker) == 2
    assert len(entry_dirs(Path(env["SAFE_BUILD_CACHE_DIR"]))) == 1


def test_cache_clean_in_a_loop_never_breaks_builds(
    make_project: Callable[[str], Path], env: dict[str, str], tmp_path: Path
) -> None:
    """Two loops build (hits and misses) while a third cleans the cache as fast as it can."""
    projects = [make_project("setuptools"), make_project("flit")]
    stop = time.monotonic() + 20
    failures: list[str] = []
    builds = [0, 0]

    def build_loop(index: int) -> None:
        outdir = tmp_path / f"loop{index}"
        while time.monotonic() < stop:
            result = run(safe_build_command("--wheel", "-n", "-o", outdir, projects[index]), env)
            builds[index] += 1
            if result.returncode != 0:
                failures.append(result.stderr)
            for wheel in outdir.glob("*.whl"):
                failures.extend(wheel_problems(wheel))

    threads = [threading.Thread(target=build_loop, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    cleans = 0
    while time.monotonic() < stop:
        result = run(safe_build_command("cache", "clean"), env)
        assert result.returncode == 0, result.stderr
        cleans += 1
    for thread in threads:
        thread.join()
    assert failures == []
    assert min(builds) >= 3, builds
    assert cleans >= 3, cleans
