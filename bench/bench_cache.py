"""Benchmark the wheel cache: warm hits and concurrent identical builds, against plain ``python -m build``.

Two parts, side by side in one run:

1. ``hit``: a warm-cache ``safe-build --wheel`` of a small project (nothing changed since the
   last build) against plain isolated ``python -m build --wheel`` of the same project, taking
   turns. Goals: at least 10x as fast, and at most 0.3 s wall.
2. ``concurrent``: 8 identical ``safe-build --wheel -o outN`` started at once on an empty
   cache, against one cold ``safe-build --wheel`` on an empty cache. Goal: the 8 take at most
   1.3x the wall time of the one (one of them builds, the others wait and publish its wheel).

The key's cost on large trees is measured by bench_cache_key.py.

    python bench/bench_cache.py                # both parts, a few minutes
    python bench/bench_cache.py --rounds 3
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench_core import (
    EXPECTED_MODULES,
    PYPROJECT_PROJECT,
    background_load,
    build_env,
    last_line,
    median,
    note,
    prepare_wheelhouse,
    remove_build_state,
    source_revision,
    verdict,
    wheel_problem,
    write_project,
)
from figures import Figure, add_json_option, loaded, write_json
from safe_build.fsutil import remove_tree

GOAL_HIT_SPEEDUP = 10.0  # plain time / warm hit time, at least
GOAL_HIT_SECONDS = 0.3
GOAL_CONCURRENT = 1.3  # wall of 8 identical builds at once / wall of one cold build, at most
JOBS = 8


def timed(commands: Sequence[Sequence[str]], env: dict[str, str]) -> float:
    """Start ``commands`` at once; the wall time until the last ends. Raises if any failed."""
    started = time.perf_counter()
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for command in commands
    ]
    outputs = [process.communicate()[0] for process in processes]
    seconds = time.perf_counter() - started
    for process, output in zip(processes, outputs, strict=True):
        if process.returncode:
            raise RuntimeError(f"exit {process.returncode}: {last_line(output)}")
    return seconds


def wheel_command(module: str, project: Path, outdir: Path) -> list[str]:
    return [sys.executable, "-m", module, "--wheel", "-o", str(outdir), str(project)]


def check_wheels(outdirs: Sequence[Path]) -> None:
    for outdir in outdirs:
        problem = wheel_problem(outdir, EXPECTED_MODULES["pyproject"])
        if problem:
            raise RuntimeError(problem)


def bench_hit(work: Path, env: dict[str, str], project: Path, rounds: int) -> list[Figure]:
    print(f"\n== 1. warm cache hit vs plain isolated build, median of {rounds} ==")
    outdir = work / "out-hit"
    timed([wheel_command("safe_build", project, outdir)], env)  # fills the cache: not timed
    plain, hits = [], []
    for number in range(rounds):
        note(f"hit: round {number + 1}/{rounds}")
        remove_build_state(project)
        plain.append(timed([wheel_command("build", project, work / "out-plain")], env))
        hits.append(timed([wheel_command("safe_build", project, outdir)], env))
    check_wheels([work / "out-plain", outdir])
    speedup = median(plain) / median(hits)
    print(f"  plain python -m build --wheel   {median(plain):6.2f}s")
    print(f"  safe-build --wheel, cache hit   {median(hits):6.2f}s")
    print(
        f"  speedup {speedup:.1f}x (goal >= {GOAL_HIT_SPEEDUP:.0f}x: {_at_least(speedup, GOAL_HIT_SPEEDUP)})"
    )
    wall = median(hits)
    print(f"  hit wall {wall:.2f}s (goal <= {GOAL_HIT_SECONDS}s: {verdict(wall, GOAL_HIT_SECONDS)})")
    what = f"warm cache hit --wheel vs plain isolated --wheel, median of {rounds}"
    hit = Figure("bench_cache hit", what, speedup, goal=GOAL_HIT_SPEEDUP, at_least=True)
    hit = dataclasses.replace(hit, plain=median(plain), safe=wall)
    walls = dataclasses.replace(hit, what="the same: a hit's wall time", value=wall, unit=" s")
    return [hit, dataclasses.replace(walls, goal=GOAL_HIT_SECONDS, at_least=False)]


def bench_concurrent(work: Path, env: dict[str, str], project: Path, rounds: int) -> list[Figure]:
    print(f"\n== 2. {JOBS} identical builds at once vs one, each on an empty cache, median of {rounds} ==")
    ones, alls = [], []
    for number in range(rounds):
        note(f"concurrent: round {number + 1}/{rounds}")
        cache = work / f"cache-{number}"
        one = work / f"one-{number}"
        ones.append(timed([wheel_command("safe_build", project, one)], env | _cache(cache / "one")))
        outdirs = [work / f"all-{number}-{job}" for job in range(JOBS)]
        commands = [wheel_command("safe_build", project, outdir) for outdir in outdirs]
        alls.append(timed(commands, env | _cache(cache / "all")))
        check_wheels([one, *outdirs])
        if len({(outdir / os.listdir(outdir)[0]).read_bytes() for outdir in outdirs}) != 1:
            raise RuntimeError("the concurrent builds published different wheels")
    ratio = median(alls) / median(ones)
    print(f"  one cold safe-build --wheel            {median(ones):6.2f}s")
    print(f"  {JOBS} identical safe-build --wheel at once {median(alls):6.2f}s")
    print(f"  ratio {ratio:.2f} (goal <= {GOAL_CONCURRENT}: {verdict(ratio, GOAL_CONCURRENT)})")
    what = f"{JOBS} identical builds at once vs one (the yardstick), each on an empty cache"
    figure = Figure("bench_cache concurrent", what, ratio, goal=GOAL_CONCURRENT)
    return [dataclasses.replace(figure, plain=median(ones), safe=median(alls))]


def _cache(root: Path) -> dict[str, str]:
    return {"SAFE_BUILD_CACHE_DIR": str(root)}


def _at_least(value: float, goal: float) -> str:
    return "met" if value >= goal else f"MISSED ({value:.1f} < {goal:.0f})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per part (default 5)")
    parser.add_argument("--wheelhouse", help="a directory of setuptools and wheel wheels; skips the download")
    add_json_option(parser)
    args = parser.parse_args(argv)
    work = Path(os.path.realpath(tempfile.mkdtemp(prefix="safe-build-bench-cache-")))
    try:
        note("downloading the build requirements into a wheelhouse")
        wheelhouse = prepare_wheelhouse(work, args.wheelhouse)
        # the cache is what this measures; build environments are reused as a user's would be
        env = build_env(work, wheelhouse) | {"SAFE_BUILD_NO_CACHE": "0", "SAFE_BUILD_FRESH_ENV": "0"}
        project = write_project(work / "project", PYPROJECT_PROJECT)
        print(f"Python {sys.version.split()[0]}; safe-build source: {source_revision()}")
        seen: dict[str, float] = {}
        found = []
        for part, bench in (("hit", bench_hit), ("concurrent", bench_concurrent)):
            with background_load(part, seen):
                measured = bench(work, env, project, args.rounds)
            found += loaded(measured, seen, part)
        write_json(args.json, found)
        return 0
    finally:
        remove_tree(work)


if __name__ == "__main__":
    sys.exit(main())
