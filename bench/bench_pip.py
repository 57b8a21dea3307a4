"""Benchmark safe-pip against plain pip, side by side in one run.

Two parts, each answering a question a user weighing safe-pip would ask:

1. ``noop``: what do safe-pip's locks and its reading of the command line cost on a command
   that has nothing to do (``pip install setuptools`` where it is installed)? Median of 40 runs
   (5 with ``--quick``), the two alternating: single runs vary by +-15 % here, so fewer rounds
   move the median by several percent. Goal: safe-pip <= 1.10x plain. ``uv pip`` takes its turn too, as a
   reference, if uv is found (on PATH, or ``--uv``).
2. ``parallel``: installing one local project into 8 venvs. Plain pip builds a local project
   inside its tree, so to be safe it must install into one venv after the other; safe-pip builds
   through safe-build and may install into all 8 at once. Wall time of 8 safe-pips at once
   (safe-build's wheel cache off, then on) against 8 plain pips one after the other; 8 plain
   pips at once are shown too, with their failures.

Run it with the interpreter that has safe-build installed::

    python bench/bench_pip.py                # both parts, about 5 minutes
    python bench/bench_pip.py --quick        # smoke run: fewer rounds
    python bench/bench_pip.py --only noop    # one part

Every pip, plain and safe alike, gets the same environment: no package index, a wheelhouse
downloaded once at the start (for isolated builds), a private pip cache. This is a report, not a
test: the exit code is 0 unless a safe-pip failed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench_core import background_load, median, note, remove_build_state, verdict, write_project
from figures import Figure, add_json_option, counted, loaded, write_json

GOAL_NOOP = 1.10
PLAIN = "plain pip"
NO_CACHE = "safe-pip, all at once, no wheel cache"
UV = "uv pip"
PROJECT = {
    "pyproject.toml": (
        '[build-system]\nrequires = ["setuptools>=69"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "benchpip"\nversion = "1.0"\n\n[project.scripts]\nbenchpip = "benchpip:main"\n'
    ),
    "benchpip/__init__.py": "def main() -> None:\n    print('benchpip')\n",
}


@dataclass(frozen=True)
class Settings:
    work: Path
    env: dict[str, str]
    noop_rounds: int
    parallel_rounds: int
    jobs: int
    uv: str | None  # uv's executable, for a reference, if it is installed


@dataclass
class Runs:
    """Wall times of one way of doing a part's work, and what failed."""

    seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def safe_pip() -> list[str]:
    """The installed ``safe-pip`` script, as users run it."""
    script = Path(sys.executable).parent / "safe-pip"
    return [str(script)] if script.exists() else [sys.executable, "-m", "safe_build", "pip"]


def plain_pip(venv: Path) -> list[str]:
    return [str(venv / "bin" / "python"), "-m", "pip"]


def make_venvs(settings: Settings, name: str, count: int) -> list[Path]:
    venvs = [settings.work / f"{name}{number}" for number in range(count)]
    for venv in venvs:
        subprocess.run(
            [sys.executable, "-m", "virtualenv", "--quiet", str(venv)], env=settings.env, check=True
        )
    return venvs


def timed(
    commands: Sequence[Sequence[str]], env: dict[str, str], *, at_once: bool
) -> tuple[float, list[str]]:
    """Run ``commands`` all at once or one after the other: the wall time, and each failure's last line."""
    started = time.perf_counter()
    if at_once:
        processes = [
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for command in commands
        ]
        outputs = [(process.communicate()[0], process.returncode) for process in processes]
    else:
        done = [
            subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            for command in commands
        ]
        outputs = [(result.stdout + result.stderr, result.returncode) for result in done]
    seconds = time.perf_counter() - started
    return seconds, [error_line(output) for output, code in outputs if code != 0]


def error_line(output: str) -> str:
    """The last line that names an error (pip's last line is often a decoration), else the last."""
    lines = [line.strip() for line in output.splitlines() if line.strip()] or ["(no output)"]
    errors = [line for line in lines if "Error" in line or "error:" in line]
    return (errors or lines)[-1][:160]


# --------------------------------------------------------------------------- part 1: no-op


def bench_noop(settings: Settings, load: dict[str, float]) -> list[Figure]:
    """Each ``install setuptools`` into a venv that has it, taking turns: plain, safe-pip, uv pip if found."""
    [venv] = make_venvs(settings, "noop", 1)
    arguments = ["install", "--quiet", "setuptools"]
    sides = {
        PLAIN: [*plain_pip(venv), *arguments],
        "safe-pip": [*safe_pip(), "--python", str(venv), *arguments],
    }
    if settings.uv:
        sides[UV] = [settings.uv, "pip", *arguments, "--python", str(venv / "bin" / "python")]
    runs = {side: Runs() for side in sides}
    with background_load("noop", load):
        for command in sides.values():  # warm both: the first run pays for cold caches
            subprocess.run(command, env=settings.env, check=True)
        for number in range(settings.noop_rounds):
            note(f"part 1: round {number + 1}/{settings.noop_rounds}")
            for side, command in sides.items():
                seconds, failed = timed([command], settings.env, at_once=False)
                runs[side].seconds.append(seconds)
                runs[side].failures += failed
    plain, ours = median(runs[PLAIN].seconds), median(runs["safe-pip"].seconds)
    uv = median(runs[UV].seconds) if UV in runs else None
    ratio = ours / plain
    print(f"\n1. no-op `pip install setuptools` (installed already), median of {settings.noop_rounds}")
    print(f"  {PLAIN:<34} {plain:7.3f} s")
    print(f"  {'safe-pip':<34} {ours:7.3f} s   {(ours - plain) * 1000:+.0f} ms")
    if uv is not None:
        print(f"  {UV + ' (a reference)':<34} {uv:7.3f} s")
    print(f"  ratio {ratio:.3f} (goal <= {GOAL_NOOP:.2f}: {verdict(ratio, GOAL_NOOP)})")
    what = f"no-op pip install setuptools (installed already), median of {settings.noop_rounds}"
    figure = Figure("bench_pip noop", what, ratio, goal=GOAL_NOOP, plain=plain, safe=ours, uv=uv)
    return loaded([figure], load, "noop")


# --------------------------------------------------------------------------- part 2: parallel


def bench_parallel(settings: Settings, load: dict[str, float]) -> tuple[bool, list[Figure]]:
    """One local project into ``jobs`` venvs: plain one by one, plain all at once, safe-pip all at once."""
    project = write_project(settings.work / "benchpip", PROJECT)
    plain_venvs = make_venvs(settings, "plain", settings.jobs)
    safe_venvs = make_venvs(settings, "safe", settings.jobs)
    plain = [[*plain_pip(venv), "install", str(project)] for venv in plain_venvs]
    ours = [[*safe_pip(), "--python", str(venv), "install", str(project)] for venv in safe_venvs]
    no_cache = {**settings.env, "SAFE_BUILD_NO_CACHE": "1"}
    ways = {  # name: (all at once?, environment, commands)
        f"{PLAIN}, one after the other": (False, settings.env, plain),
        f"{PLAIN}, all at once": (True, settings.env, plain),
        NO_CACHE: (True, no_cache, ours),
        "safe-pip, all at once, wheel cache": (True, settings.env, ours),
    }
    runs = {way: Runs() for way in ways}
    with background_load("parallel", load):
        for number in range(settings.parallel_rounds):
            for way, (at_once, env, commands) in ways.items():
                note(f"part 2: round {number + 1}/{settings.parallel_rounds}: {way}")
                remove_build_state(project)  # what plain pip left in the tree must not fail the next way
                seconds, failed = timed(commands, env, at_once=at_once)
                runs[way].seconds.append(seconds)
                runs[way].failures += failed
    baseline = median(runs[f"{PLAIN}, one after the other"].seconds)
    total = settings.jobs * settings.parallel_rounds
    rounds = settings.parallel_rounds
    print(f"\n2. one local project into {settings.jobs} venvs (isolated builds), median of {rounds}")
    print(f"  {'':<40} {'wall':>8}  {'vs plain one by one':>19}  failed")
    for way, result in runs.items():
        wall = median(result.seconds)
        print(f"  {way:<40} {wall:7.2f}s  {wall / baseline:18.2f}x  {len(result.failures)}/{total}")
    for way, result in runs.items():
        if result.failures:
            print(f"  {way} failed with, e.g.: {result.failures[0]}")
    ok = not any(result.failures for way, result in runs.items() if way.startswith("safe-pip"))
    return ok, loaded(parallel_figures(settings, runs), load, "parallel")


def parallel_figures(settings: Settings, runs: dict[str, Runs]) -> list[Figure]:
    """safe-pip's wall times against plain pip's one venv after the other, and the failures at once."""
    baseline = median(runs[f"{PLAIN}, one after the other"].seconds)
    bench = "bench_pip parallel"
    what = f"one local project into {settings.jobs} venvs vs plain pip one after the other"
    ours = {way: result for way, result in runs.items() if way.startswith("safe-pip")}
    found = [
        Figure(
            bench,
            f"{what}: {way}",
            median(result.seconds) / baseline,
            plain=baseline,
            safe=median(result.seconds),
        )
        for way, result in ours.items()
    ]
    failed = {way: len(runs[way].failures) for way in (f"{PLAIN}, all at once", NO_CACHE)}
    what = "the same, all at once, no wheel cache: failed installs"
    installs = settings.jobs * settings.parallel_rounds
    found.append(counted(bench, what, failed[f"{PLAIN}, all at once"], failed[NO_CACHE], installs))
    return found


# --------------------------------------------------------------------------- running it


def prepare_env(work: Path) -> dict[str, str]:
    """No index, a wheelhouse of the build requirements, a private pip cache and safe-build cache."""
    wheelhouse = work / "wheelhouse"
    note("downloading the build requirements into a wheelhouse")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--dest",
            str(wheelhouse),
            "setuptools>=69",
            "wheel",
        ],
        check=True,
    )
    env = {
        **os.environ,
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheelhouse),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_CACHE_DIR": str(work / "pip-cache"),
        "UV_NO_INDEX": "1",
        "UV_CACHE_DIR": str(work / "uv-cache"),
        "SAFE_BUILD_CACHE_DIR": str(work / "safe-build-cache"),
    }
    for name in (
        "VIRTUAL_ENV",
        "PYTHONDONTWRITEBYTECODE",
    ):  # a fresh venv's pip would compile itself every run
        env.pop(name, None)
    return env


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke run")
    parser.add_argument("--only", choices=("noop", "parallel"), help="run one part")
    parser.add_argument("--jobs", type=int, default=8, help="venvs installed into at once (default 8)")
    parser.add_argument("--uv", default=shutil.which("uv"), help="the uv executable (default: uv on PATH)")
    add_json_option(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="safe-pip-bench-") as directory:
        work = Path(directory)
        settings = Settings(
            work, prepare_env(work), 5 if args.quick else 40, 1 if args.quick else 3, args.jobs, args.uv
        )
        versions = ", ".join(
            f"{name} {importlib.metadata.version(name)}" for name in ("safe-build", "pip", "virtualenv")
        )
        print(f"safe-pip benchmark: {versions}, Python {sys.version.split()[0]}, {os.cpu_count()} cores")
        load: dict[str, float] = {}
        ok, found = True, []
        if args.only in (None, "noop"):
            found += bench_noop(settings, load)
        if args.only in (None, "parallel"):
            ok, parallel = bench_parallel(settings, load)
            found += parallel
    write_json(args.json, found)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
