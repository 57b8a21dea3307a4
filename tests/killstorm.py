"""Kill storm: real operations at once, real SIGKILLs at random moments, then the invariants.

Workers run a random mix of operations: builds of a setuptools, a hatchling and a flit project
into two shared output directories (cache hits, and uncached builds, isolated or not, so that
kills land mid-build), ``safe-pip install`` of each project and ``install -e`` of the flit one
into two shared venvs, ``safe-build cache clean`` and ``prune``, and ``safe-build venv``
(reusing the shared venvs, making a scratch one again with ``--clear``). Each operation leads a
process group of its own. A killer SIGKILLs random running operations: their group alone (a
forked build child then runs on as an orphan, as after ``kill -9`` of safe-build) or together
with the build sessions they started. An operation that was not killed must succeed.

Afterwards, once the orphans are done: every file in the output directories is a complete
artifact with the members of a clean build, and every cache entry verifies (checked here, not
by safe-build's own code); the source trees are unchanged (the flit project's editable install
writes nothing into its tree); a venv marked complete works; a quiet run of every operation
succeeds, after which no temporary is left in the output directories, and every venv is
complete, passes ``pip check`` and imports the projects pip lists; a final ``cache prune``
leaves no private directory and no half-stored or half-removed entry.

pip itself is not atomic: a killed pip can leave a half-installed package (or a ``~`` stash
directory) that no lock can prevent. So the packages in the venvs are checked after the quiet
run has installed every project into them once more; what the storm proves is that safe-pip's
locks and builds leave nothing that this reinstall cannot repair. One thing a killed pip leaves
stops every later pip, plain or not: a ``.dist-info`` without its ``RECORD`` (pip writes it
last) is a package pip refuses to uninstall. An install that fails on that, after a pip was
killed, is counted as pip's damage, not a violation, and before the quiet run those
``.dist-info`` directories are removed, as pip's own hint (``--ignore-installed``) would have
them replaced.

Run ``python -m tests.killstorm --operations 2000 --kills 100`` for a long storm (``--help``
lists the options); it prints operations, kills and violations, and exits 1 on any violation.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name

from tests.conftest import (
    download_wheelhouse,
    members,
    offline_env,
    run,
    run_parallel,
    safe_build_command,
    tree_state,
    wheel_problems,
    write_project,
)
from tests.test_signals_and_locks import _proc_stat, group_members
from tests.test_venv import COMPLETE, CREATING, venv_problems

PROJECTS = ("setuptools", "hatchling", "flit")  # conftest's projects, one per backend
NAMES = {"setuptools": "demo-setuptools", "hatchling": "demo-hatch", "flit": "demo_flit"}
# normalized project name -> its module
MODULES = {"demo-setuptools": "demo_setuptools", "demo-hatch": "demo_hatch", "demo-flit": "demo_flit"}
EDITABLE = "flit"  # setuptools' editable install writes egg-info into the tree; hatchling's needs `editables`
OPERATION_TIMEOUT = 600.0  # an operation running longer is stuck: a violation
ORPHAN_TIMEOUT = 180.0  # for orphaned builds to finish after the storm
KILLER_PAUSE = (0.05, 0.5)  # seconds between the killer's looks at the running operations
MID_BUILD_SHARE = 0.75  # of the kills aimed at an operation whose build session is running, if any
KILL_LEAD = 1.3  # the killer keeps this far ahead of the kills the operations so far call for
MAX_OPERATIONS_FACTOR = 3  # operations go on past the target until the kills are reached, up to this
SDIST_READ_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error)


@dataclass(frozen=True)
class Layout:
    """Where a storm's projects, output directories, venvs and caches are."""

    root: Path

    @property
    def projects(self) -> dict[str, Path]:
        return {kind: self.root / "projects" / kind for kind in PROJECTS}

    @property
    def outdirs(self) -> tuple[Path, Path]:
        return self.root / "out-a", self.root / "out-b"

    @property
    def venvs(self) -> tuple[Path, Path]:
        return self.root / "venv-0", self.root / "venv-1"

    @property
    def scratch_venv(self) -> Path:
        return self.root / "venv-scratch"

    @property
    def cache(self) -> Path:
        return self.root / "safe-build-cache"


@dataclass(frozen=True)
class Operation:
    kind: str  # what the counts are kept by
    command: tuple[str, ...]


def _build(kind: str, project: Path, outdir: Path, *flags: str) -> Operation:
    return Operation(kind, tuple(safe_build_command(project, "-o", outdir, *flags)))


def _pip(kind: str, venv: Path, *args: str | Path) -> Operation:
    return Operation(kind, tuple(safe_build_command("pip", "--python", venv, "install", "--quiet", *args)))


def _editable(venv: Path, layout: Layout) -> Operation:
    return _pip("install -e", venv, "--no-build-isolation", "-e", layout.projects[EDITABLE])


def _cache(*args: str) -> Operation:
    return Operation(f"cache {args[0]}", tuple(safe_build_command("cache", *args)))


def _venv(venv: Path, *flags: str) -> Operation:
    return Operation("venv --clear" if flags else "venv", tuple(safe_build_command("venv", venv, *flags)))


# repeats make a choice likelier; () is build's sdist-then-wheel flow
UNCACHED_FLAGS = (("--wheel", "-n"), ("--wheel", "-n"), ("--wheel",), ("--sdist", "-n"), ())
CACHE_ARGS = (  # a full clean also removes the build environments: costly, so rarer
    *[("clean", "{name}")] * 4,
    *[("prune", "--max-size", "20k")] * 2,
    *[("prune",)] * 2,
    ("clean",),
)
# kind of operation -> (weight, a random operation of that kind); the weights keep the mean
# operation near half a second of CPU (a cache hit takes 0.3 s, a pip install 2 s), so that the
# CI storm of 300 stays under two minutes on 2 cores
Choice = Callable[[Layout, random.Random], Operation]
CHOICES: dict[str, tuple[int, Choice]] = {
    "build": (10, lambda layout, rng: _build("build", *_project_and_outdir(layout, rng), "--wheel")),
    "build --no-cache": (
        3,
        lambda layout, rng: _build(
            "build --no-cache", *_project_and_outdir(layout, rng), "--no-cache", *rng.choice(UNCACHED_FLAGS)
        ),
    ),
    "install": (
        1,
        lambda layout, rng: _pip(
            "install", rng.choice(layout.venvs), rng.choice(list(layout.projects.values()))
        ),
    ),
    "install -e": (1, lambda layout, rng: _editable(rng.choice(layout.venvs), layout)),
    "cache": (
        2,
        lambda layout, rng: _cache(
            *(arg.format(name=NAMES[rng.choice(PROJECTS)]) for arg in rng.choice(CACHE_ARGS))
        ),
    ),
    "venv": (
        3,
        lambda layout, rng: rng.choice(
            [
                _venv(rng.choice(layout.venvs)),
                _venv(layout.scratch_venv),
                _venv(layout.scratch_venv, "--clear"),
            ]
        ),
    ),
}


def _project_and_outdir(layout: Layout, rng: random.Random) -> tuple[Path, Path]:
    return rng.choice(list(layout.projects.values())), rng.choice(layout.outdirs)


def random_operation(layout: Layout, rng: random.Random) -> Operation:
    [kind] = rng.choices(list(CHOICES), weights=[weight for weight, _ in CHOICES.values()])
    return CHOICES[kind][1](layout, rng)


def every_operation(layout: Layout) -> list[Operation]:
    """One of each kind on each thing it works on: the quiet run after the storm."""
    operations = []
    for project in layout.projects.values():
        operations += [
            _build("build --no-cache", project, layout.outdirs[0], "--no-cache"),
            _build("build", project, layout.outdirs[1], "--wheel"),
        ]
    operations += [_pip("install", venv, *layout.projects.values()) for venv in layout.venvs]
    operations += [_editable(venv, layout) for venv in layout.venvs]
    operations += [_cache("clean", NAMES["hatchling"]), _cache("prune", "--max-size", "20k")]
    operations += [_venv(venv) for venv in layout.venvs]
    return [*operations, _venv(layout.scratch_venv, "--clear")]


# --- the storm -----------------------------------------------------------------------------------


@dataclass
class Running:
    operation: Operation
    process: subprocess.Popen[bytes]
    started: float
    killed: str | None = None  # "group", "tree" or "timeout", once the killer has sent SIGKILL
    mid_build: bool = False  # a build session of its own was running when it was killed


@dataclass
class Result:
    seed: int
    operations: collections.Counter[str] = field(default_factory=collections.Counter)
    kills: collections.Counter[str] = field(default_factory=collections.Counter)  # by kind of operation
    kills_mid_build: int = 0
    busy: dict[str, float] = field(default_factory=lambda: collections.defaultdict(float))  # seconds
    violations: list[str] = field(default_factory=list)
    pip_damage: int = 0  # installs that failed on a package a killed pip left without its RECORD
    killed_pips: set[str] = field(default_factory=set)  # the venvs a killed install was installing into
    seconds: float = 0.0  # of the storm itself
    checking_seconds: float = 0.0  # of waiting for orphans, the quiet run and the checks

    def summary(self) -> str:
        def counts(counter: collections.Counter[str]) -> str:
            return ", ".join(f"{kind} {number}" for kind, number in sorted(counter.items()))

        lines = [
            f"kill storm (seed {self.seed}): {self.operations.total()} operations, "
            f"{self.kills.total()} kills ({self.kills_mid_build} mid-build), "
            f"{len(self.violations)} violations, "
            f"{self.pip_damage} installs stopped by what a killed pip left; "
            f"{self.seconds:.0f}s, then {self.checking_seconds:.0f}s of checks",
            f"  operations: {counts(self.operations)}",
            f"  kills: {counts(self.kills)}",
            "  mean seconds: "
            + ", ".join(
                f"{kind} {self.busy[kind] / number:.2f}" for kind, number in sorted(self.operations.items())
            ),
        ]
        return "\n".join([*lines, *(f"  VIOLATION: {violation}" for violation in self.violations)])


class Storm:
    """Workers that start operations and a killer that SIGKILLs some of them, sharing one registry."""

    def __init__(
        self, layout: Layout, env: Mapping[str, str], *, operations: int, kills: int, seed: int, every: int
    ):
        self.layout = layout
        self.every = every  # print the counts so far after every this many operations; 0: never
        self.env = dict(env)
        self.target_operations = operations
        self.target_kills = kills
        self.rng = random.Random(seed)
        self.result = Result(seed)
        self.lock = threading.Lock()
        self.running: dict[int, Running] = {}
        self.started = 0
        self.kills_sent = 0
        self.orphans: set[int] = set()  # process groups of build sessions whose safe-build was killed
        self.done = threading.Event()

    def run(self, workers: int) -> Result:
        began = time.monotonic()
        killer = threading.Thread(target=self._killer, args=(random.Random(self.rng.random()),))
        killer.start()
        try:
            with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                seeds = [self.rng.random() for _ in range(workers)]
                for future in [pool.submit(self._worker, random.Random(seed)) for seed in seeds]:
                    future.result()
        finally:
            self.done.set()
            killer.join()
        self.result.seconds = time.monotonic() - began
        return self.result

    def _worker(self, rng: random.Random) -> None:
        while self._another():
            self._run(random_operation(self.layout, rng))

    def _another(self) -> bool:
        with self.lock:
            enough = self.started >= self.target_operations and self.result.kills.total() >= self.target_kills
            if enough or self.started >= self.target_operations * MAX_OPERATIONS_FACTOR:
                return False
            self.started += 1
            return True

    def _run(self, operation: Operation) -> None:
        with tempfile.TemporaryFile() as output:
            process = subprocess.Popen(
                operation.command, env=self.env, stdout=output, stderr=output, start_new_session=True
            )
            running = Running(operation, process, time.monotonic())
            with self.lock:
                self.running[process.pid] = running
            os.waitid(
                os.P_PID, process.pid, os.WEXITED | os.WNOWAIT
            )  # exited, not reaped: the pid stays ours
            with self.lock:
                del self.running[process.pid]
            code = process.wait()
            output.seek(0)
            self._record(running, code, output.read().decode(errors="replace"))

    def _record(self, running: Running, code: int, output: str) -> None:
        operation = running.operation
        with self.lock:
            self.result.operations[operation.kind] += 1
            self.result.busy[operation.kind] += time.monotonic() - running.started
            if code == -signal.SIGKILL and running.killed in ("group", "tree"):
                self.result.kills[operation.kind] += 1
                if operation.kind.startswith("install"):
                    self.result.killed_pips.add(_venv_of(operation.command))
                self.result.kills_mid_build += running.mid_build
            elif code != 0 and _pip_damage(operation, output, self.result.killed_pips):
                self.result.pip_damage += 1
            elif code != 0:
                why = "stuck, killed" if running.killed == "timeout" else f"exit code {code}"
                tail = " | ".join(output.strip().splitlines()[-3:])
                self.result.violations.append(f"{' '.join(operation.command)}: {why}: {tail}")
            done = self.result.operations.total()
            if self.every and done % self.every == 0:
                print(
                    f"  {done} operations, {self.result.kills.total()} kills, "
                    f"{len(self.result.violations)} violations so far",
                    flush=True,
                )

    def _killer(self, rng: random.Random) -> None:
        """Now and then SIGKILL a running operation, most often one that is building right now."""
        while not self.done.wait(rng.uniform(*KILLER_PAUSE)):
            with self.lock:
                now = time.monotonic()
                for running in self.running.values():
                    if running.killed is None and now - running.started > OPERATION_TIMEOUT:
                        self._kill(running, "timeout", set())
                due = self.target_kills * KILL_LEAD * (self.started + 1) / self.target_operations
                candidates = [running for running in self.running.values() if running.killed is None]
                if not candidates or self.kills_sent >= due:
                    continue
                sessions = child_sessions()  # before the kill: then they are orphans, no longer its children
                building = [running for running in candidates if sessions.get(running.process.pid)]
                victim = rng.choice(building if building and rng.random() < MID_BUILD_SHARE else candidates)
                self._kill(victim, rng.choice(("group", "tree")), sessions.get(victim.process.pid, set()))
                self.kills_sent += 1

    def _kill(self, running: Running, how: str, sessions: set[int]) -> None:
        """SIGKILL the operation's group; with "tree", also the build ``sessions`` it started."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(running.process.pid, signal.SIGKILL)
        for pgid in sessions if how == "tree" else ():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        if how != "tree":
            self.orphans |= sessions
        running.killed = how
        running.mid_build = bool(sessions)


def child_sessions() -> dict[int, set[int]]:
    """pid -> the process groups led by its children that left its group (safe-build's build sessions)."""
    found: dict[int, set[int]] = collections.defaultdict(set)
    for entry in Path("/proc").iterdir():
        fields = _proc_stat(int(entry.name)) if entry.name.isdigit() else None
        if fields is not None and int(fields[2]) == int(entry.name) and int(fields[1]) != int(fields[2]):
            found[int(fields[1])].add(int(fields[2]))
    return found


def working_below(directory: Path) -> set[int]:
    """The pids of processes whose working directory lies below ``directory``."""
    prefix = os.path.realpath(directory) + os.sep
    found = set()
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and os.readlink(entry / "cwd").startswith(prefix):
                found.add(int(entry.name))
    return found


# --- setting up and checking ---------------------------------------------------------------------


def storm_env(base: Mapping[str, str], wheelhouse: Path, layout: Layout) -> dict[str, str]:
    """Offline pip from ``wheelhouse``, private caches; no active venv, bytecode written (else each
    venv's pip would compile itself on every run)."""
    env = {
        **base,
        **offline_env(wheelhouse, layout.cache),
        "PIP_CACHE_DIR": str(layout.root / "pip-cache"),
        "SAFE_BUILD_LOCK_TIMEOUT": str(OPERATION_TIMEOUT),
    }
    for name in ("VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE", "SAFE_BUILD_NO_CACHE"):
        env.pop(name, None)
    return env


References = dict[str, list[list[str]]]  # artifact name -> the member lists clean builds gave it


def set_up(layout: Layout, env: Mapping[str, str]) -> References:
    """The projects, the shared venvs (with flit_core, for the editable install) and reference builds.

    Each project is built both ways a storm builds it (a wheel from the tree, and the default
    sdist-then-wheel flow), since those may give a wheel different members.
    """
    for kind, project in layout.projects.items():
        write_project(project, kind)
    for command in (
        (safe_build_command("venv", venv) for venv in layout.venvs),
        (
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "flit_core>=3.9"]
            for venv in layout.venvs
        ),
    ):
        _check(run_parallel(list(command), dict(env)))
    references: References = collections.defaultdict(list)
    for number, flags in enumerate([("--wheel",), ()]):
        outdir = layout.root / "reference" / str(number)
        _check(
            run_parallel(
                [
                    safe_build_command(project, "-o", outdir, "--no-cache", *flags)
                    for project in layout.projects.values()
                ],
                dict(env),
            )
        )
        for artifact in outdir.iterdir():
            if members(artifact) not in references[artifact.name]:
                references[artifact.name].append(members(artifact))
    return dict(references)


def _check(results: Iterable[subprocess.CompletedProcess[str]]) -> None:
    for result in results:
        if result.returncode != 0:
            raise RuntimeError(f"setting up failed: {' '.join(result.args)}:\n{result.stderr}")


def artifact_problems(path: Path, references: References) -> list[str]:
    """What is wrong with a file under an artifact's name: unknown, damaged, or not a clean build's."""
    if path.name not in references:
        return [f"{path}: not an artifact of these projects"]
    problems = wheel_problems(path) if path.name.endswith(".whl") else sdist_problems(path)
    if not problems and members(path) not in references[path.name]:
        problems = [f"{path}: its members are not those of a clean build"]
    return [f"{path.parent.name}/{problem}" for problem in problems]


def sdist_problems(sdist: Path) -> list[str]:
    """Read every member to the end: a truncated gzip or tar stream shows only there."""
    try:
        with tarfile.open(sdist) as archive:
            for member in archive:
                data = archive.extractfile(member)
                if data is not None:
                    data.read()
    except SDIST_READ_ERRORS as error:
        return [f"{sdist.name}: {type(error).__name__}: {error}"]
    return []


def cache_problems(cache: Path, references: References) -> list[str]:
    """Every entry of the wheel cache: entry.json readable, each artifact of its size, sha256 and members."""
    problems = []
    for entry in sorted((cache / "wheels").glob("[0-9a-f][0-9a-f]/*")):
        try:
            record = json.loads((entry / "entry.json").read_text())
            artifacts = [(entry / item["name"], item["size"], item["sha256"]) for item in record["artifacts"]]
        except (OSError, ValueError, KeyError, TypeError) as error:
            problems.append(f"cache entry {entry.name}: no readable entry.json: {error}")
            continue
        for path, size, sha256 in artifacts:
            if not path.is_file() or path.stat().st_size != size:
                problems.append(f"cache entry {entry.name}: {path.name} missing or not of its size")
            elif hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
                problems.append(f"cache entry {entry.name}: {path.name} does not match its sha256")
            else:
                problems += artifact_problems(path, references)
    return problems


def wait_for_orphans(storm: Storm) -> list[str]:
    """Let orphaned builds finish (they hold locks and private directories); kill any that hang."""
    deadline = time.monotonic() + ORPHAN_TIMEOUT

    def left() -> set[int]:
        return {pgid for pgid in storm.orphans if group_members(pgid)} | working_below(storm.layout.cache)

    while left() and time.monotonic() < deadline:
        time.sleep(0.1)
    stuck = left()
    for pid in stuck:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return (
        [f"orphaned build processes still running after {ORPHAN_TIMEOUT:.0f}s: {sorted(stuck)}"]
        if stuck
        else []
    )


def _venv_of(command: Sequence[str]) -> str:
    return command[command.index("--python") + 1]


def _pip_damage(operation: Operation, output: str, killed_pips: set[str]) -> bool:
    """Whether an install failed only on what a killed pip left in its venv: a package without
    its RECORD."""
    return (
        operation.kind.startswith("install")
        and _venv_of(operation.command) in killed_pips
        and "uninstall-no-record-file" in output
    )


def repair_pip_damage(layout: Layout) -> None:
    """Remove the ``.dist-info`` directories that a killed pip left without their RECORD."""
    for venv in layout.venvs:
        for dist_info in venv.glob("lib/python*/site-packages/*.dist-info"):
            if not (dist_info / "RECORD").exists():
                shutil.rmtree(dist_info)


def quiet_run(layout: Layout, env: Mapping[str, str], workers: int) -> list[str]:
    """Every operation once more, with nobody killed: each must succeed."""
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda operation: run(operation.command, dict(env)), every_operation(layout)))
    return [
        f"quiet run: {' '.join(result.args)}: exit code {result.returncode}: {result.stderr.strip()[-300:]}"
        for result in results
        if result.returncode != 0
    ]


def venv_health(layout: Layout, env: Mapping[str, str], *, marked_complete: bool = False) -> list[str]:
    """Each venv complete and working; the shared ones pass pip check and import what pip lists.

    With ``marked_complete``, right after the storm: only that each venv marked complete (and not
    being made again) works, before any later creation could repair it.
    """
    venvs = [
        venv
        for venv in (*layout.venvs, layout.scratch_venv)
        if not marked_complete or ((venv / COMPLETE).is_file() and not (venv / CREATING).exists())
    ]
    with concurrent.futures.ThreadPoolExecutor(len(venvs) or 1) as pool:
        made = pool.map(
            lambda venv: [f"{venv.name}: {problem}" for problem in venv_problems(venv, dict(env))], venvs
        )
        used = pool.map(
            lambda venv: _shared_venv_problems(venv, env), () if marked_complete else layout.venvs
        )
        return [problem for problems in (*made, *used) for problem in problems]


def _shared_venv_problems(venv: Path, env: Mapping[str, str]) -> list[str]:
    python = str(venv / "bin" / "python")
    problems = []
    check = run([python, "-m", "pip", "check"], dict(env))
    if check.returncode != 0:
        problems.append(f"{venv.name}: pip check: {check.stdout.strip()} {check.stderr.strip()}")
    listed = json.loads(run([python, "-m", "pip", "list", "--format", "json"], dict(env)).stdout)
    names = [canonicalize_name(item["name"]) for item in listed]
    modules = sorted(MODULES[name] for name in names if name in MODULES)
    if len(modules) != len(PROJECTS):
        problems.append(f"{venv.name}: pip lists {modules} of the projects' modules, not all three")
    imported = run([python, "-c", f"import {', '.join(modules)}"], dict(env))
    if modules and imported.returncode != 0:
        problems.append(f"{venv.name}: import {modules}: {imported.stderr.strip().splitlines()[-1:]}")
    return problems


def leftovers(layout: Layout) -> list[str]:
    """Temporaries in the output directories; private, work and trash directories in the cache."""
    found = [
        f"temporary left in {outdir.name}: {path.name}"
        for outdir in layout.outdirs
        for path in outdir.iterdir()
        if path.name.startswith(".")
    ]
    for place in ("tmp", "wheels/.work", "wheels/.trash"):
        directory = layout.cache / place
        names = sorted(path.name for path in directory.iterdir()) if directory.is_dir() else []
        found += [f"left in the cache's {place} after the final prune: {names}"] if names else []
    return found


def storm(
    root: Path,
    wheelhouse: Path,
    base_env: Mapping[str, str],
    *,
    operations: int,
    kills: int,
    workers: int,
    seed: int,
    every: int = 0,
) -> Result:
    """Set up, storm, check every invariant; the result lists what broke (``every``: see Storm)."""
    layout = Layout(root)
    env = storm_env(base_env, wheelhouse, layout)
    references = set_up(layout, env)
    sources = {kind: tree_state(project) for kind, project in layout.projects.items()}
    running = Storm(layout, env, operations=operations, kills=kills, seed=seed, every=every)
    result = running.run(workers)
    began = time.monotonic()
    violations = result.violations
    violations += wait_for_orphans(running)
    for outdir in layout.outdirs:
        for path in sorted(outdir.iterdir()) if outdir.is_dir() else ():
            violations += [] if path.name.startswith(".") else artifact_problems(path, references)
    violations += cache_problems(layout.cache, references)
    violations += [
        f"source tree of the {kind} project changed"
        for kind, project in layout.projects.items()
        if tree_state(project) != sources[kind]
    ]
    violations += venv_health(layout, env, marked_complete=True)
    repair_pip_damage(layout)
    violations += quiet_run(layout, env, workers)
    violations += venv_health(layout, env)
    prune = run(safe_build_command("cache", "prune"), dict(env))
    if prune.returncode != 0:
        violations.append(f"final cache prune: exit code {prune.returncode}: {prune.stderr.strip()}")
    violations += leftovers(layout)
    result.checking_seconds = time.monotonic() - began
    return result


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.killstorm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--operations", type=int, default=2000, help="at least this many operations")
    parser.add_argument("--kills", type=int, default=100, help="at least this many of them killed")
    parser.add_argument("--workers", type=int, default=4, help="operations running at once")
    parser.add_argument("--every", type=int, default=100, help="print the counts after every N operations")
    parser.add_argument("--seed", type=int, help="for the same choices again (default: a random one)")
    parser.add_argument("--root", type=Path, help="where to work (default: a new temporary directory)")
    parser.add_argument("--wheelhouse", type=Path, help="build requirements' wheels (default: download them)")
    args = parser.parse_args(None if argv is None else list(argv))
    root = args.root or Path(tempfile.mkdtemp(prefix="killstorm-"))
    wheelhouse = args.wheelhouse or download_wheelhouse(root / "wheelhouse")
    seed = random.randrange(2**32) if args.seed is None else args.seed
    print(f"kill storm in {root}, seed {seed}", flush=True)
    result = storm(
        root / "storm",
        wheelhouse,
        os.environ,
        operations=args.operations,
        kills=args.kills,
        workers=args.workers,
        seed=seed,
        every=args.every,
    )
    print(result.summary())
    short = result.operations.total() < args.operations or result.kills.total() < args.kills
    return 1 if result.violations or short else 0


if __name__ == "__main__":
    sys.exit(main())
