"""Benchmark safe-build on real projects' sdists, against plain ``python -m build`` and ``uv build``.

Pinned releases from PyPI, each a different kind of build: ``requests`` (setuptools, pure
Python), ``poetry-core`` (its own in-tree backend, no build requirements), ``markupsafe``
(setuptools and a C extension, compiled) and ``pluggy`` (setuptools-scm, which reads the version
from the sdist's PKG-INFO, there being no git), beside ``tiny``, bench_core's three-module
setuptools project. The sdists are downloaded once (``pip download --no-binary :all: --no-deps``)
into a cache directory (``--cache-dir``, by default one under the system's temporary directory)
and kept there for later runs, with a wheelhouse of the build requirements each names in its
``pyproject.toml`` (and ``wheel``, which older setuptools asks for while building). Every build,
of every tool, runs offline from that wheelhouse (``PIP_NO_INDEX``, ``PIP_FIND_LINKS``; for uv
``UV_OFFLINE``, ``UV_NO_INDEX``, ``UV_FIND_LINKS``), in a fresh copy of the unpacked sdist. A
project that cannot be downloaded or built this way is dropped with a note, before any timing.

Each round, per project, the tools take turns (the order rotating round by round):

* plain isolated ``python -m build --wheel``, the yardstick;
* ``uv build --wheel``, if uv is found (on PATH, or ``--uv``), with a cache of its own kept
  from round to round, as a user's would be;
* safe-build, three builds in a row, each ``python -m safe_build --wheel`` as a user runs it:
  ``first``, with a new, empty cache directory, so that it makes its environment and the
  entry; ``reused``, the same cache directory and a new copy with one of its modules changed
  (a comment line added), so that the entry is cold but the environment, whose build
  requirements did not change, is reused (the benchmark checks that it was); ``hit``, the
  same tree again, answered from the cache (checked from its output).

Every wheel is checked: a complete zip that agrees with its RECORD, holding the project's
package (and, for markupsafe, a platform wheel: its extension compiled). Goals: a first build
at most 1.05x plain's time on each project; poetry-core's reused-environment build at most
0.8x plain's; a hit at most 0.08 s on the tiny project and 0.25 s on each real one (the goal
set for a project of pluggy's size; poetry-core's sdist has eight times its files). Ratios are
medians of per-round ratios; each project reports how many cores other processes kept busy
while it ran.

    python bench/bench_real.py                  # every project, 3 rounds: about 2 minutes
    python bench/bench_real.py --projects requests poetry-core --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench_core import (
    BUILD_REQUIREMENTS,
    PYPROJECT_PROJECT,
    Rounds,
    Timing,
    background_load,
    build_env,
    describe_load,
    last_line,
    note,
    own_cpu_seconds,
    source_revision,
    tool_version,
    verdict,
    wheel_problem,
    write_project,
)
from figures import Figure, add_json_option, loaded, write_json
from safe_build.buildenvs import MARKER
from safe_build.fsutil import remove_tree

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

PLAIN = "plain"
UV = "uv"
SAFE = "safe-build"  # its turn is three builds: FIRST, REUSED, HIT
FIRST, REUSED, HIT = "first", "reused", "hit"
LABELS = {
    PLAIN: "plain python -m build --wheel",
    UV: "uv build --wheel",
    FIRST: "safe-build, empty cache",
    REUSED: "safe-build, reused environment",
    HIT: "safe-build, warm hit",
}
GOAL_FIRST = 1.05  # first build's time / plain's, at most
GOAL_REUSED = 0.8  # poetry-core's reused-environment build's time / plain's, at most
REUSED_GOAL_PROJECT = "poetry-core"
HIT_SHOWN = "Reusing cache entry"  # what safe-build prints on a hit instead of the build's steps


@dataclass(frozen=True)
class Project:
    name: str  # what --projects takes
    pin: str | None  # the release on PyPI; None: the tiny project, written here
    about: str
    module: str  # a module its wheel must hold
    edit: str  # the module the reused-environment build changes, in the unpacked tree
    hit_goal: float  # seconds
    compiled: bool = False  # its wheel must be a platform wheel

    @property
    def label(self) -> str:
        return self.pin.replace("==", " ") if self.pin else self.name


PROJECTS = (
    Project("tiny", None, "bench_core's project", "benchpkg/__init__.py", "benchpkg/util.py", 0.08),
    Project(
        "requests",
        "requests==2.32.3",
        "setuptools, pure Python",
        "requests/__init__.py",
        "src/requests/__init__.py",
        0.25,
    ),
    Project(
        "poetry-core",
        "poetry-core==2.1.1",
        "in-tree backend, no build requirements",
        "poetry/core/__init__.py",
        "src/poetry/core/__init__.py",
        0.25,
    ),
    Project(
        "markupsafe",
        "markupsafe==3.0.2",
        "setuptools, a C extension",
        "markupsafe/__init__.py",
        "src/markupsafe/__init__.py",
        0.25,
        compiled=True,
    ),
    Project(
        "pluggy",
        "pluggy==1.5.0",
        "setuptools-scm, version from PKG-INFO",
        "pluggy/__init__.py",
        "src/pluggy/__init__.py",
        0.25,
    ),
)
BY_NAME = {project.name: project for project in PROJECTS}


@dataclass(frozen=True)
class Settings:
    work: Path
    env: dict[str, str]  # every build's, but SAFE_BUILD_CACHE_DIR, which each safe-build turn sets
    uv: str | None
    rounds: int


@dataclass
class Runs(Rounds):
    """One project's timings, round by round; every round has one of each."""

    project: Project
    tree: Path  # the unpacked sdist, never built in: each build gets a copy
    files: int
    failure: str | None = None


# --------------------------------------------------------------------------- the sdists, once


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def find_sdist(folder: Path, pin: str) -> Path | None:
    name, _, version = pin.partition("==")
    for path in sorted(folder.glob("*.tar.gz")):
        found_name, _, found_version = path.name.removesuffix(".tar.gz").rpartition("-")
        if canonical(found_name) == canonical(name) and found_version == version:
            return path
    return None


def online_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key not in ("PIP_NO_INDEX", "PIP_FIND_LINKS")}


def pip_download(arguments: Sequence[str]) -> str | None:
    """Run ``pip download`` with the index; its error's last line, or None if it worked."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", *arguments]
    done = subprocess.run(command, check=False, env=online_env(), capture_output=True, text=True)
    return last_line(done.stderr) if done.returncode else None


def fetch_sdist(cache: Path, project: Project) -> Path | None:
    """The project's sdist in the cache, downloaded the first time."""
    assert project.pin is not None
    folder = cache / "sdists"
    found = find_sdist(folder, project.pin)
    if found is None:
        note(f"downloading the sdist of {project.pin}")
        problem = pip_download(["--no-binary", ":all:", "--no-deps", "--dest", str(folder), project.pin])
        found = find_sdist(folder, project.pin)
        if found is None:
            print(f"  dropped {project.name}: no sdist of {project.pin} ({problem or 'not downloaded'})")
    return found


def unpack(sdist: Path, into: Path) -> Path:
    into.mkdir(parents=True)
    with tarfile.open(sdist) as archive:
        if hasattr(tarfile, "data_filter"):  # Python 3.10.12 and 3.11.4 on
            archive.extractall(into, filter="data")
        else:
            archive.extractall(into)
    [tree] = list(into.iterdir())
    return Path(os.path.realpath(tree))


def build_requirements(tree: Path) -> list[str]:
    """What an isolated build installs: ``[build-system] requires``, and ``wheel`` for setuptools,
    which older setuptools asks for from ``get_requires_for_build_wheel``."""
    pyproject = tree / "pyproject.toml"
    system = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("build-system", {})
    requires = list(system.get("requires", ["setuptools>=40.8.0"]))
    if system.get("build-backend", "setuptools").startswith("setuptools"):
        requires.append("wheel")
    return requires


def fill_wheelhouse(wheelhouse: Path, project: Project, requirements: Sequence[str]) -> str | None:
    """Download the build requirements once, with their dependencies; the problem, or None."""
    done = wheelhouse / f".{project.name}.json"  # what was downloaded for this project
    if not requirements or (done.exists() and json.loads(done.read_text(encoding="utf-8")) == requirements):
        return None
    note(f"downloading the build requirements of {project.name}: {', '.join(requirements)}")
    problem = pip_download(["--only-binary=:all:", "--dest", str(wheelhouse), *requirements])
    if problem:  # some requirement has no wheel: its sdist then, which the builds must build offline
        problem = pip_download(["--dest", str(wheelhouse), *requirements])
    if problem is None:
        done.write_text(json.dumps(list(requirements)), encoding="utf-8")
    return problem


def prepare(cache: Path, work: Path, projects: Sequence[Project]) -> tuple[Path, list[Runs]]:
    """The wheelhouse, and each project's unpacked tree; a project that cannot be had is dropped."""
    wheelhouse = cache / "wheelhouse"
    wheelhouse.mkdir(parents=True, exist_ok=True)
    prepared = []
    for project in projects:
        if project.pin is None:
            tree = write_project(work / "sdists" / project.name, PYPROJECT_PROJECT)
            requirements = list(BUILD_REQUIREMENTS)
        else:
            sdist = fetch_sdist(cache, project)
            if sdist is None:
                continue
            tree = unpack(sdist, work / "sdists" / project.name)
            requirements = build_requirements(tree)
        problem = fill_wheelhouse(wheelhouse, project, requirements)
        if problem:
            print(f"  dropped {project.name}: its build requirements could not be downloaded ({problem})")
            continue
        files = sum(len(names) for _, _, names in os.walk(tree))
        prepared.append(Runs(project, tree, files))
    return wheelhouse, prepared


# --------------------------------------------------------------------------- one build


def command(settings: Settings, tool: str, tree: Path, outdir: Path) -> list[str]:
    if tool == PLAIN:
        return [sys.executable, "-m", "build", "--wheel", "-o", str(outdir), str(tree)]
    if tool == UV:
        assert settings.uv is not None
        return [settings.uv, "build", "--wheel", "--python", sys.executable, "-o", str(outdir), str(tree)]
    return [sys.executable, "-m", "safe_build", "--wheel", "-o", str(outdir), str(tree)]


def timed_build(
    settings: Settings, build: str, project: Project, tree: Path, outdir: Path, *, cache: Path | None = None
) -> Timing:
    """One wheel build and its cost; raises if it failed, left a bad wheel or was not what ``build`` says."""
    env = settings.env if cache is None else settings.env | {"SAFE_BUILD_CACHE_DIR": str(cache)}
    tool = build if build in (PLAIN, UV) else SAFE
    started, cpu = time.perf_counter(), own_cpu_seconds()
    done = subprocess.run(
        command(settings, tool, tree, outdir),
        check=False,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    timing = Timing(time.perf_counter() - started, own_cpu_seconds() - cpu)
    problem = f"exit {done.returncode}: {last_line(done.stdout)}" if done.returncode else None
    problem = problem or wheel_problem(outdir, (project.module,))
    if not problem and project.compiled and any(outdir.glob("*-none-any.whl")):
        problem = "a pure-Python wheel: the C extension was not compiled"
    if not problem and tool == SAFE and (HIT_SHOWN in done.stdout) != (build == HIT):
        problem = "a cache hit" if build != HIT else "not a cache hit"
    if problem:
        raise RuntimeError(f"{LABELS[build]}: {problem}")
    return timing


def fresh_copy(runs: Runs, where: Path) -> Path:
    shutil.copytree(runs.tree, where, symlinks=True)
    return where


def environments(cache: Path) -> dict[Path, float]:
    """The complete build environments in a safe-build cache directory, with their creation times."""
    found = {}
    for marker in (cache / "envs").glob(f"*/*/{MARKER}"):
        found[marker.parent] = float(json.loads(marker.read_text(encoding="utf-8"))["created_at"])
    return found


def safe_turn(settings: Settings, runs: Runs, round_dir: Path) -> dict[str, Timing]:
    """The first build on an empty cache, a cold entry with the environment reused, then a hit."""
    project, cache = runs.project, round_dir / "safe-build-cache"
    first = fresh_copy(runs, round_dir / FIRST)
    timings = {FIRST: timed_build(settings, FIRST, project, first, round_dir / "out-first", cache=cache)}
    made = environments(cache)
    if len(made) != 1:
        raise RuntimeError(f"{LABELS[FIRST]}: made {len(made)} environments, not one")
    changed = fresh_copy(runs, round_dir / REUSED)
    if not (changed / project.edit).is_file():
        raise RuntimeError(f"{project.edit} is not in the sdist: the project's layout changed")
    with (changed / project.edit).open("a", encoding="utf-8") as module:
        module.write(f"# changed by bench_real in {round_dir.name}\n")
    timings[REUSED] = timed_build(settings, REUSED, project, changed, round_dir / "out-reused", cache=cache)
    if environments(cache) != made:
        raise RuntimeError(
            f"{LABELS[REUSED]}: did not reuse the environment of the first build "
            f"(before: {len(made)} environments, after: {environments(cache)})"
        )
    timings[HIT] = timed_build(settings, HIT, project, changed, round_dir / "out-hit", cache=cache)
    return timings


def tool_turn(settings: Settings, tool: str, runs: Runs, round_dir: Path) -> dict[str, Timing]:
    tree = fresh_copy(runs, round_dir / tool)
    return {tool: timed_build(settings, tool, runs.project, tree, round_dir / f"out-{tool}")}


def check_builds(settings: Settings, prepared: Sequence[Runs]) -> list[Runs]:
    """One untimed build of each project by each yardstick, offline: whatever fails is dropped.

    It also warms the disk's cache and uv's for the rounds that follow.
    """
    kept = []
    for runs in prepared:
        note(f"checking that {runs.project.name} builds offline")
        try:
            for tool in (PLAIN, UV) if settings.uv else (PLAIN,):
                tool_turn(settings, tool, runs, settings.work / "check" / runs.project.name)
        except RuntimeError as error:
            print(f"  dropped {runs.project.name}: it does not build offline from the wheelhouse ({error})")
            continue
        finally:
            remove_tree(settings.work / "check")
        kept.append(runs)
    return kept


def bench_project(settings: Settings, runs: Runs) -> None:
    project = runs.project
    rounds = f"{settings.rounds} round{'s' if settings.rounds != 1 else ''}"
    print(f"\n== {project.label}: {project.about}, {runs.files} files, {rounds} taking turns ==")
    turns = (PLAIN, SAFE, UV) if settings.uv else (PLAIN, SAFE)
    for number in range(settings.rounds):
        note(f"{project.name}: round {number + 1}/{settings.rounds}")
        order = turns[number % len(turns) :] + turns[: number % len(turns)]
        round_dir = settings.work / "rounds" / f"{project.name}-{number}"
        timings: dict[str, Timing] = {}
        try:
            for tool in order:
                if tool == SAFE:
                    timings |= safe_turn(settings, runs, round_dir)
                else:
                    timings |= tool_turn(settings, tool, runs, round_dir)
        except RuntimeError as error:
            runs.failure = str(error)
            print(f"  FAILED in round {number + 1}: {error}")
            return
        finally:
            remove_tree(round_dir)
        runs.rounds.append(timings)
    builds = [PLAIN, UV, FIRST, REUSED, HIT] if settings.uv else [PLAIN, FIRST, REUSED, HIT]
    for build in builds:
        print(
            f"  {LABELS[build]:<32} {runs.median(build):6.2f}s  (range {runs.spread(build)}, "
            f"CPU {runs.median(build, 'cpu'):.2f}s)"
        )
    for line in verdicts(runs):
        print(f"  {line}")


def verdicts(runs: Runs) -> list[str]:
    first, reused, hit = runs.ratio(FIRST, PLAIN), runs.ratio(REUSED, PLAIN), runs.median(HIT)
    goal = runs.project.name == REUSED_GOAL_PROJECT
    lines = [
        f"{runs.project.name}: first build {first:.2f}x plain's time (goal <= {GOAL_FIRST}: "
        f"{verdict(first, GOAL_FIRST)})",
        f"{runs.project.name}: reused environment {reused:.2f}x plain's time"
        + (f" (goal <= {GOAL_REUSED}: {verdict(reused, GOAL_REUSED)})" if goal else " (no goal)"),
        f"{runs.project.name}: hit {hit:.3f}s (goal <= {runs.project.hit_goal}s: "
        f"{verdict(hit, runs.project.hit_goal)})",
    ]
    if UV in runs.rounds[0]:
        lines.append(
            f"{runs.project.name}: vs uv build: first {runs.ratio(FIRST, UV):.2f}x, "
            f"reused environment {runs.ratio(REUSED, UV):.2f}x its time"
        )
    return lines


def figures(runs: Runs) -> list[Figure]:
    project, rounds = runs.project, len(runs.rounds)
    where = f"{project.label} ({project.about})"
    plain, uv = runs.median(PLAIN), runs.median(UV) if UV in runs.rounds[0] else None
    first = Figure(
        "bench_real first",
        f"{where}: first --wheel build, empty cache, vs plain isolated, median of {rounds}",
        runs.ratio(FIRST, PLAIN),
        goal=GOAL_FIRST,
        safe=runs.median(FIRST),
        plain=plain,
        uv=uv,
    )
    reused = Figure(
        "bench_real reused",
        f"{where}: cold cache entry, reused environment, vs plain isolated, median of {rounds}",
        runs.ratio(REUSED, PLAIN),
        goal=GOAL_REUSED if project.name == REUSED_GOAL_PROJECT else None,
        safe=runs.median(REUSED),
        plain=plain,
        uv=uv,
    )
    hit = Figure(
        "bench_real hit",
        f"{where}, {runs.files} files: a warm hit's wall time, median of {rounds}",
        runs.median(HIT),
        unit=" s",
        goal=project.hit_goal,
        safe=runs.median(HIT),
        plain=plain,
        uv=uv,
    )
    return [first, reused, hit]


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per project (default 3)")
    parser.add_argument(
        "--projects", nargs="+", choices=BY_NAME, default=list(BY_NAME), help="the projects (default: all)"
    )
    parser.add_argument(
        "--cache-dir",
        default=str(Path(tempfile.gettempdir()) / "safe-build-bench-real"),
        help="where the sdists and the wheelhouse are kept between runs (default: a temporary one)",
    )
    parser.add_argument("--uv", default=shutil.which("uv"), help="the uv executable (default: uv on PATH)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory for inspection")
    add_json_option(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(os.path.realpath(tempfile.mkdtemp(prefix="safe-build-bench-real-")))
    try:
        uv = tool_version([args.uv, "--version"]) if args.uv else "none"
        print(f"Python {sys.version.split()[0]}; safe-build source: {source_revision()}; uv: {uv}")
        cache = Path(os.path.realpath(args.cache_dir))
        wheelhouse, prepared = prepare(cache, work, [BY_NAME[name] for name in args.projects])
        env = build_env(work, wheelhouse) | {
            "SAFE_BUILD_NO_CACHE": "0",  # the cache and reused environments are what this measures
            "SAFE_BUILD_FRESH_ENV": "0",
            "UV_OFFLINE": "1",
            "UV_NO_INDEX": "1",
            "UV_FIND_LINKS": str(wheelhouse),
            "UV_CACHE_DIR": str(work / "uv-cache"),
        }
        settings = Settings(work=work, env=env, uv=args.uv, rounds=args.rounds)
        seen: dict[str, float] = {}
        found, done = [], []
        for runs in check_builds(settings, prepared):
            with background_load(runs.project.name, seen):
                bench_project(settings, runs)
            if runs.failure is None:
                found += loaded(figures(runs), seen, runs.project.name)
            done.append(runs)
        print("\n== goals ==")
        for runs in done:
            for line in verdicts(runs) if runs.failure is None else [f"{runs.project.name}: FAILED"]:
                print(f"  {line}")
        for name, cores in seen.items():
            note(f"{name}: {describe_load(cores)}")
        write_json(args.json, found)
        return 1 if any(runs.failure for runs in done) else 0
    finally:
        if args.keep:
            note(f"kept {work}")
        else:
            remove_tree(work)


if __name__ == "__main__":
    sys.exit(main())
