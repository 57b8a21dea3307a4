"""Benchmark cached build environments: safe-build against plain ``python -m build`` and ``uv build``.

Two parts, the tools side by side in one run, taking turns round by round:

1. ``single``: cold wheel builds of one small project (its source changes every round, so that no
   wheel cache can answer), safe-build reusing its cached environment. Goals: at least 3x as fast as
   plain isolated ``python -m build --wheel``; at most 0.8x the time of ``uv build --wheel``.
2. ``twenty``: twenty different small projects built one after another, starting from an empty
   environment store (so safe-build's total includes making the one environment they share).

safe-build runs as a user runs it, ``python -m safe_build --wheel``; the benchmark checks that it
did reuse one environment and stops if it did not. uv is used if found (on PATH, or ``--uv``); it
reads the same wheelhouse as pip, offline. Medians of ``--rounds`` (default 5) runs.

    python bench/bench_envs.py                 # both parts, about 10 minutes
    python bench/bench_envs.py --only single --rounds 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench_core import (
    PYPROJECT_PROJECT,
    Rounds,
    Timing,
    background_load,
    build_env,
    describe_load,
    note,
    prepare_wheelhouse,
    remove_build_state,
    source_revision,
    timed_wheel_build,
    tool_version,
    verdict,
    write_project,
)
from figures import Figure, add_json_option, loaded, write_json
from safe_build import state
from safe_build.buildenvs import MARKER, EnvStore
from safe_build.fsutil import remove_tree

PARTS = ("single", "twenty")
PLAIN = "python -m build"
SAFE = "safe-build"
UV = "uv build"
GOAL_SPEEDUP = 3.0  # plain time / safe-build time, at least
GOAL_UV = 0.8  # safe-build time / uv time, at most
PROJECTS = 20


@dataclass(frozen=True)
class Settings:
    work: Path
    env: dict[str, str]
    cache: Path  # safe-build's cache directory, where the environments are
    tools: tuple[str, ...]
    uv: str | None
    rounds: int


def command(settings: Settings, tool: str, project: Path, outdir: Path) -> list[str]:
    if tool == PLAIN:
        return [sys.executable, "-m", "build", "--wheel", "-o", str(outdir), str(project)]
    if tool == SAFE:
        return [sys.executable, "-m", "safe_build", "--wheel", "-o", str(outdir), str(project)]
    assert settings.uv is not None
    return [settings.uv, "build", "--wheel", "--python", sys.executable, "-o", str(outdir), str(project)]


def timed_build(settings: Settings, tool: str, project: Path, outdir: Path) -> Timing:
    """One wheel build and its cost; raises if it failed, since a failed run's time means nothing."""
    remove_build_state(project)  # untimed: what plain build and uv leave in the tree
    return timed_wheel_build(tool, command(settings, tool, project, outdir), settings.env, outdir)


def change_source(project: Path, stamp: str) -> None:
    """A new source for every build, so that no wheel cache can hand out an earlier wheel."""
    (project / "benchpkg" / "stamp.py").write_text(f"STAMP = {stamp!r}\n", encoding="utf-8")


def environments(settings: Settings) -> dict[Path, float]:
    """The complete environments in safe-build's store, with their creation times."""
    found = {}
    for marker in (settings.cache / "envs").glob(f"*/*/{MARKER}"):
        found[marker.parent] = float(json.loads(marker.read_text(encoding="utf-8"))["created_at"])
    return found


def empty_store(settings: Settings) -> None:
    EnvStore(state.at(settings.cache, lock_timeout=60)).clean()


def check_reused(settings: Settings, before: dict[Path, float]) -> None:
    """Stop if safe-build did not take its environment from the store: its times would mean nothing."""
    after = environments(settings)
    if len(after) != 1 or (before and after != before):
        raise SystemExit(
            f"safe-build did not reuse one cached environment (before: {before}, after: {after}): "
            "is envbuild wired into commands/build.py?"
        )


# --------------------------------------------------------------------------- part 1


def bench_single(settings: Settings) -> Rounds:
    print(f"\n== 1. one small project, cold wheel builds, {settings.rounds} rounds taking turns ==")
    project = write_project(settings.work / "single" / "benchpkg", PYPROJECT_PROJECT)
    empty_store(settings)
    change_source(project, "first")
    first = timed_build(settings, SAFE, project, settings.work / "single-out" / "first")
    check_reused(settings, {})
    print(f"  first safe-build, making the environment: {first.seconds:.2f}s")
    made = environments(settings)
    runs = Rounds()
    for number in range(settings.rounds):
        change_source(project, f"round {number}")
        order = (
            settings.tools[number % len(settings.tools) :] + settings.tools[: number % len(settings.tools)]
        )
        outdirs = {tool: settings.work / "single-out" / f"{number}-{tool.split()[0]}" for tool in order}
        runs.rounds.append({tool: timed_build(settings, tool, project, outdirs[tool]) for tool in order})
    check_reused(settings, made)
    for tool in settings.tools:
        print(
            f"  {tool + ' --wheel':<24} {runs.median(tool):6.2f}s  (range {runs.spread(tool)}, "
            f"CPU {runs.median(tool, 'cpu'):.2f}s)"
        )
    speedup = 1 / runs.ratio(SAFE, PLAIN)
    print(f"  safe-build vs plain: {speedup:.2f}x as fast (goal >= {GOAL_SPEEDUP:.1f}x: {_met(speedup)})")
    if UV in settings.tools:
        ratio = runs.ratio(SAFE, UV)
        print(f"  safe-build vs uv: {ratio:.2f}x its time (goal <= {GOAL_UV:.1f}: {verdict(ratio, GOAL_UV)})")
    return runs


def _met(speedup: float) -> str:
    return "met" if speedup >= GOAL_SPEEDUP else f"MISSED ({speedup / GOAL_SPEEDUP * 100:.0f}% of it)"


# --------------------------------------------------------------------------- part 2


def bench_twenty(settings: Settings) -> Rounds:
    print(f"\n== 2. {PROJECTS} small projects one after another, empty store, {settings.rounds} rounds ==")
    projects = []
    for number in range(PROJECTS):
        files = dict(PYPROJECT_PROJECT)
        files["pyproject.toml"] = files["pyproject.toml"].replace('"benchpkg"', f'"benchpkg{number}"', 1)
        projects.append(write_project(settings.work / "twenty" / f"benchpkg{number}", files))
    runs = Rounds()
    for number in range(settings.rounds):
        totals = {}
        for offset in range(len(settings.tools)):
            tool = settings.tools[(number + offset) % len(settings.tools)]
            if tool == SAFE:
                empty_store(settings)
            outroot = settings.work / "twenty-out" / f"{number}-{tool.split()[0]}"
            timings = []
            for project in projects:
                change_source(project, f"round {number}")
                timings.append(timed_build(settings, tool, project, outroot / project.name))
            totals[tool] = Timing(sum(t.seconds for t in timings), sum(t.cpu for t in timings))
            if tool == SAFE:
                check_reused(settings, {})
        runs.rounds.append(totals)
        note(f"part 2: round {number + 1} of {settings.rounds}")
    for tool in settings.tools:
        ratio = "" if tool == PLAIN else f"  {runs.ratio(tool, PLAIN):.2f}x plain's time"
        print(f"  {tool:<16} total {runs.median(tool):6.2f}s  (range {runs.spread(tool)}){ratio}")
    return runs


def figures(part: str, runs: Rounds, rounds: int) -> list[Figure]:
    """A part's ratios in the terms of their goals, with uv's time beside them when it ran."""
    bench = f"bench_envs {part}"
    if part == "single":
        what = f"cold --wheel build with a reused environment vs plain isolated, median of {rounds}"
        found = [Figure(bench, what, 1 / runs.ratio(SAFE, PLAIN), goal=GOAL_SPEEDUP, at_least=True)]
    else:
        what = f"{PROJECTS} small projects one after another, empty store, median of {rounds}"
        found = [Figure(bench, what, runs.ratio(SAFE, PLAIN))]
    if UV in runs.rounds[0]:
        goal = GOAL_UV if part == "single" else None
        found.append(Figure(bench, "the same vs uv build", runs.ratio(SAFE, UV), goal=goal))
    times = {tool: runs.median(tool) for tool in runs.rounds[0]}
    return [
        dataclasses.replace(figure, plain=times[PLAIN], safe=times[SAFE], uv=times.get(UV))
        for figure in found
    ]


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per part (default 5)")
    parser.add_argument("--only", choices=PARTS, help="run only this part")
    parser.add_argument("--uv", default=shutil.which("uv"), help="the uv executable (default: uv on PATH)")
    parser.add_argument("--wheelhouse", help="a directory of setuptools and wheel wheels; skips the download")
    parser.add_argument("--keep", action="store_true", help="keep the work directory for inspection")
    add_json_option(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(os.path.realpath(tempfile.mkdtemp(prefix="safe-build-bench-envs-")))
    try:
        note("downloading the build requirements into a wheelhouse")
        wheelhouse = prepare_wheelhouse(work, args.wheelhouse)
        env = build_env(work, wheelhouse) | {
            "UV_NO_INDEX": "1",
            "UV_FIND_LINKS": str(wheelhouse),
            "SAFE_BUILD_FRESH_ENV": "0",  # reused environments are what this measures
        }
        settings = Settings(
            work=work,
            env=env,
            cache=Path(env["SAFE_BUILD_CACHE_DIR"]),
            tools=(PLAIN, SAFE, UV) if args.uv else (PLAIN, SAFE),
            uv=args.uv,
            rounds=args.rounds,
        )
        uv = tool_version([args.uv, "--version"]) if args.uv else "none"
        print(f"Python {sys.version.split()[0]}; safe-build source: {source_revision()}; uv: {uv}")
        seen: dict[str, float] = {}
        found = []
        for part, bench in (("single", bench_single), ("twenty", bench_twenty)):
            if args.only in (None, part):
                with background_load(part, seen):
                    runs = bench(settings)
                found += loaded(figures(part, runs, settings.rounds), seen, part)
        for part, cores in seen.items():
            note(f"{part}: {describe_load(cores)}")
        write_json(args.json, found)
        return 0
    finally:
        if args.keep:
            note(f"kept {work}")
        else:
            remove_tree(work)


if __name__ == "__main__":
    sys.exit(main())
