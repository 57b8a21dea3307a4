"""Benchmark the remote cache: hits from a bucket and a CI fleet, against plain ``python -m build``.

Three parts, side by side in one run, against a real S3 API on 127.0.0.1 (moto's standalone
server, started here in its own process on a free port and polled until it answers; needs the
``s3`` extra and ``moto[server]``):

1. ``hit``: a remote hit, a ``safe-build --wheel`` of a small project (isolated, the default)
   with an empty local cache while the bucket holds its entry, against plain isolated
   ``python -m build --wheel`` of the same project, taking turns. Every round of safe-build
   gets a new, empty cache directory; the bucket keeps the entry. Goal: at least 5x as fast.
2. ``fleet``: 4 runners (separate processes, each with its own cache directory and home) build
   a generated 20-package monorepo, every runner all 20, in its own order, with
   ``--no-isolation`` (so that 80 builds fit in a minute on 2 cores; isolation would make each
   build slower, not change the counts). Three set-ups, each from empty local caches:
   (a) remote cold, an empty bucket; (b) remote warm, the bucket (a) filled; (c) no remote
   cache, the yardstick. The packages' in-tree backend (setuptools underneath) writes a line
   each time it builds a wheel, so the backend runs across the fleet are counted, and sleeps
   ``--build-seconds`` (default 1) first, standing in for the compiling a real package does:
   a trivial pure-Python package builds without isolation in about the time a remote hit
   takes (boto3's import, the requests), so without it the wall times would only compare the
   two overheads. Goals: 20 runs cold (each package once), 0 warm, where (c) makes 80; the
   slowest runner's wall time is shown for each. The runners share this machine's cores and
   one server, where a real fleet's have a machine each: the remote hits' CPU time (boto3's
   import and client, the server's side) competes with the builds, so the wall times here
   understate what a fleet gains.
3. ``import``: what importing the S3 client costs a fresh interpreter (``import
   botocore.session``, what a remote lookup imports, less an empty interpreter's start, taking
   turns, median), and proof that a local hit does not pay it:
   a local-hit ``safe-build --wheel`` with the remote cache set, run under ``-X importtime``,
   imports no module of boto3, botocore or s3transfer (goal 0). A remote hit, run the same
   way, shows the check would see them.

All builds, plain and safe-build alike, get the same environment: no package index, only a
wheelhouse downloaded once at the start, so the network neither slows nor breaks either side.
Wall times are only as good as the machine is quiet: each part reports how many cores other
processes kept busy meanwhile.

    python bench/bench_remote.py                # all three parts, about 3 minutes
    python bench/bench_remote.py --rounds 3 --fleet-rounds 2 --build-seconds 0
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import itertools
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench_core import (
    EXPECTED_MODULES,
    PYPROJECT_PROJECT,
    build_env,
    busy_cpu_seconds,
    describe_load,
    last_line,
    median,
    note,
    own_cpu_seconds,
    prepare_wheelhouse,
    remove_build_state,
    source_revision,
    verdict,
    wheel_problem,
    write_project,
)
from figures import Figure, add_json_option, loaded, write_json
from safe_build.fsutil import remove_tree

GOAL_HIT_SPEEDUP = 5.0  # plain isolated build time / remote hit time, at least
RUNNERS = 4
PACKAGES = 20
START_TIMEOUT = 30.0  # seconds for moto's server to answer: polled, never slept
CLIENT_MODULES = ("boto3", "botocore", "s3transfer")
CLIENT_IMPORT = "botocore.session"  # what remote.Remote imports (s3transfer only to upload)
MARKER = "BENCH_BACKEND_MARKER"
SECONDS = "BENCH_BACKEND_SECONDS"
_buckets = itertools.count()

# A package of the monorepo: setuptools behind an in-tree backend that says when it builds a wheel.
PACKAGE_FILES = {
    "pyproject.toml": textwrap.dedent(
        """\
        [build-system]
        requires = ["setuptools>=69"]
        build-backend = "counting_backend"
        backend-path = ["."]

        [project]
        name = "NAME"
        version = "1.0"

        [tool.setuptools]
        py-modules = ["NAME"]
        """
    ),
    "NAME.py": "VALUE = INDEX\n",
    "counting_backend.py": textwrap.dedent(
        """\
        import os
        import time

        from setuptools import build_meta as _setuptools
        from setuptools.build_meta import *  # noqa: F403


        def build_wheel(*args, **kwargs):
            marker = os.environ.get("BENCH_BACKEND_MARKER")
            if marker:
                with open(marker, "a") as file:
                    file.write("NAME\\n")
            time.sleep(float(os.environ.get("BENCH_BACKEND_SECONDS", "0")))
            return _setuptools.build_wheel(*args, **kwargs)
        """
    ),
}


# --------------------------------------------------------------------------- the S3 server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=1):
            return True
    except OSError:  # refused, or not yet listening (URLError is an OSError)
        return False


@contextlib.contextmanager
def s3_server(work: Path) -> Iterator[tuple[str, int]]:
    """moto's server on a free port of 127.0.0.1, once it answers: its endpoint and process id."""
    log = work / "moto.log"
    port = free_port()
    with log.open("wb") as output:
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not answers(endpoint):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"moto's server did not start: {last_line(log.read_text(errors='replace'))}")
            time.sleep(0.05)
        yield endpoint, process.pid
    finally:
        process.kill()
        process.wait(timeout=10)


def new_bucket(endpoint: str, work: Path) -> dict[str, str]:
    """A new, empty bucket; the settings that point safe-build at it, and at nothing of the machine's AWS."""
    name = f"safe-build-bench-{next(_buckets)}"
    with urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{name}", method="PUT"), timeout=10):
        pass  # moto's server takes an unsigned request
    empty = work / "aws-empty"
    empty.write_text("")
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(empty),
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "AWS_EC2_METADATA_DISABLED": "true",
        "SAFE_BUILD_REMOTE_CACHE": f"s3://{name}/ci",
        "SAFE_BUILD_REMOTE_CACHE_ENDPOINT": endpoint,
    }


def without_remote(env: dict[str, str]) -> dict[str, str]:
    """``env`` without any AWS or remote cache setting of the machine's."""
    return {
        name: value
        for name, value in env.items()
        if not name.startswith(("AWS_", "SAFE_BUILD_REMOTE_CACHE", "BOTO"))
    }


def server_cpu_seconds(pid: int) -> float:
    """CPU time the server has used (Linux), 0 if unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


@contextlib.contextmanager
def background_load(part: str, seen: dict[str, float], server: int) -> Iterator[None]:
    """bench_core's ``background_load``, the server's CPU time counted as this benchmark's own:
    it is the other half of every remote lookup, not another job's load."""
    wall, busy = time.perf_counter(), busy_cpu_seconds()
    own = own_cpu_seconds() + server_cpu_seconds(server)
    yield
    busy_after = busy_cpu_seconds()
    if busy is not None and busy_after is not None:
        others = (busy_after - busy) - (own_cpu_seconds() + server_cpu_seconds(server) - own)
        seen[part] = max(0.0, others / (time.perf_counter() - wall))
        print(f"  {describe_load(seen[part])}")


# --------------------------------------------------------------------------- running


def run(command: Sequence[str], env: dict[str, str]) -> tuple[float, str]:
    """Run ``command``: its wall time and its output. Raises if it failed."""
    started = time.perf_counter()
    done = subprocess.run(
        command, check=False, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{' '.join(command[1:3])}: exit {done.returncode}: {last_line(done.stdout)}")
    return seconds, done.stdout


def wheel_command(module: str, project: Path, outdir: Path, *flags: str) -> list[str]:
    return [sys.executable, *flags, "-m", module, "--wheel", "-o", str(outdir), str(project)]


def cache(root: Path) -> dict[str, str]:
    return {"SAFE_BUILD_CACHE_DIR": str(root)}


def remote_hit(output: str, remote: dict[str, str]) -> bool:
    return f"from {remote['SAFE_BUILD_REMOTE_CACHE']}" in output


def check_wheel(outdir: Path) -> None:
    problem = wheel_problem(outdir, EXPECTED_MODULES["pyproject"])
    if problem:
        raise RuntimeError(problem)


# --------------------------------------------------------------------------- 1. a remote hit


def bench_hit(
    work: Path, env: dict[str, str], remote: dict[str, str], project: Path, rounds: int
) -> list[Figure]:
    print(f"\n== 1. remote hit (empty local cache) vs plain isolated build, median of {rounds} ==")
    outdir = work / "out-hit"
    run(wheel_command("safe_build", project, outdir), env | remote | cache(work / "hit-fill"))  # not timed
    plain, hits = [], []
    for number in range(rounds):
        note(f"hit: round {number + 1}/{rounds}")
        remove_build_state(project)
        plain.append(run(wheel_command("build", project, work / "out-plain"), env)[0])
        seconds, output = run(
            wheel_command("safe_build", project, outdir), env | remote | cache(work / f"hit-{number}")
        )
        if not remote_hit(output, remote):
            raise RuntimeError(f"round {number + 1} was not a remote hit: {last_line(output)}")
        hits.append(seconds)
    check_wheel(work / "out-plain")
    check_wheel(outdir)
    speedup = median(plain) / median(hits)
    print(f"  plain python -m build --wheel          {median(plain):6.2f}s")
    print(f"  safe-build --wheel, remote hit         {median(hits):6.2f}s")
    met = "met" if speedup >= GOAL_HIT_SPEEDUP else f"MISSED ({speedup:.1f} < {GOAL_HIT_SPEEDUP:.0f})"
    print(f"  speedup {speedup:.1f}x (goal >= {GOAL_HIT_SPEEDUP:.0f}x: {met})")
    what = f"remote hit --wheel, empty local cache, vs plain isolated --wheel, median of {rounds}"
    hit = Figure("bench_remote hit", what, speedup, goal=GOAL_HIT_SPEEDUP, at_least=True)
    hit = dataclasses.replace(hit, plain=median(plain), safe=median(hits))
    wall = dataclasses.replace(hit, what="the same: a remote hit's wall time", value=median(hits), unit=" s")
    return [hit, dataclasses.replace(wall, goal=None, at_least=False)]


# --------------------------------------------------------------------------- 2. a fleet


@dataclass(frozen=True)
class Fleet:
    """One round of the fleet in one set-up."""

    runs: int  # the backend's wheel builds, across the fleet
    wall: float  # until the last runner was done: the slowest runner's wall time


def monorepo(root: Path) -> list[Path]:
    packages = []
    for index in range(PACKAGES):
        name = f"pkg{index:02d}"
        files = {
            path.replace("NAME", name): text.replace("NAME", name).replace("INDEX", str(index))
            for path, text in PACKAGE_FILES.items()
        }
        packages.append(write_project(root / "packages" / name, files))
    return packages


def runner_script(packages: Sequence[Path], runner: int, dist: Path) -> str:
    """The packages one after the other, each runner in its own order (rotated, every other backwards)."""
    order = [packages[(index + 5 * runner) % len(packages)] for index in range(len(packages))]
    commands = [
        " ".join(shlex.quote(part) for part in wheel_command("safe_build", package, dist))
        + " -n -q || exit 1"
        for package in order[:: -1 if runner % 2 else 1]
    ]
    return "\n".join(commands)


def fleet_round(
    work: Path, env: dict[str, str], remote: dict[str, str], packages: Sequence[Path], name: str
) -> Fleet:
    """The runners started at once, each with an empty cache directory and home of its own."""
    marker = work / f"{name}-runs"
    processes = []
    started = time.perf_counter()
    for runner in range(RUNNERS):
        home = work / name / f"home{runner}"
        home.mkdir(parents=True)
        own = {"HOME": str(home), MARKER: str(marker)} | cache(home / "cache")
        script = runner_script(packages, runner, home / "dist")
        processes.append(
            subprocess.Popen(
                ["bash", "-c", script],
                env=env | remote | own,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [process.communicate()[0] for process in processes]
    wall = time.perf_counter() - started
    for runner, (process, output) in enumerate(zip(processes, outputs, strict=True)):
        if process.returncode:
            raise RuntimeError(f"runner {runner}: exit {process.returncode}: {last_line(output)}")
        if "warning" in output:
            note(f"{name}, runner {runner}: {last_line(output)}")
        wheels = len(list((work / name / f"home{runner}" / "dist").glob("*.whl")))
        if wheels != len(packages):
            raise RuntimeError(f"runner {runner} has {wheels} wheels of {len(packages)}")
    runs = len(marker.read_text().splitlines()) if marker.exists() else 0
    return Fleet(runs, wall)


def bench_fleet(work: Path, env: dict[str, str], endpoint: str, rounds: int, seconds: float) -> list[Figure]:
    print(
        f"\n== 2. {RUNNERS} runners x {PACKAGES} packages ({seconds:g}s builds), --no-isolation, "
        f"empty local caches, {rounds} round(s) =="
    )
    packages = monorepo(work / "monorepo")
    env = env | {SECONDS: str(seconds)}
    found: dict[str, list[Fleet]] = {"none": [], "cold": [], "warm": []}
    for number in range(rounds):
        note(f"fleet: round {number + 1}/{rounds}")
        found["none"].append(fleet_round(work, env, {}, packages, f"fleet-none-{number}"))
        remote = new_bucket(endpoint, work)
        found["cold"].append(fleet_round(work, env, remote, packages, f"fleet-cold-{number}"))
        found["warm"].append(fleet_round(work, env, remote, packages, f"fleet-warm-{number}"))
    runs = {setup: max(fleet.runs for fleet in fleets) for setup, fleets in found.items()}
    walls = {setup: median([fleet.wall for fleet in fleets]) for setup, fleets in found.items()}
    goals = {"none": RUNNERS * PACKAGES, "cold": PACKAGES, "warm": 0}
    for setup, label in (("none", "no remote cache"), ("cold", "remote cold"), ("warm", "remote warm")):
        print(
            f"  {label:16} backend runs {runs[setup]:3} (goal {goals[setup]}: "
            f"{'met' if runs[setup] <= goals[setup] else 'MISSED'}), slowest runner {walls[setup]:6.2f}s"
        )
    what = (
        f"{RUNNERS} runners x {PACKAGES} packages ({seconds:g} s builds), --no-isolation, empty local caches"
    )
    most, middle = ("", "") if rounds == 1 else (f", the most in {rounds} rounds", f", median of {rounds}")
    figures = []
    for setup, label in (("cold", "remote cold (empty bucket)"), ("warm", "remote warm (bucket filled)")):
        counted = Figure(
            "bench_remote fleet",
            f"{what}, {label}: backend runs{most}, vs no remote cache (the yardstick)",
            runs[setup],
            " runs",
            goal=goals[setup],
            plain=runs["none"],
            safe=runs[setup],
            measured=" runs",
        )
        ratio = walls[setup] / walls["none"]
        timed = Figure(
            "bench_remote fleet",
            f"the same, {label}: the slowest runner's wall time vs no remote cache{middle}",
            ratio,
            plain=walls["none"],
            safe=walls[setup],
        )
        figures += [counted, timed]
    return figures


# --------------------------------------------------------------------------- 3. the S3 client's import


def client_modules(output: str) -> list[str]:
    """The modules of the S3 client that ``-X importtime`` says were imported."""
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)", output, re.MULTILINE)
    return [name for name in names if name.split(".")[0] in CLIENT_MODULES]


def bench_import(
    work: Path, env: dict[str, str], remote: dict[str, str], project: Path, rounds: int
) -> list[Figure]:
    repeats = 2 * rounds
    print(
        f"\n== 3. what importing the S3 client costs, median of {repeats}, and whether a local hit pays it =="
    )
    bare, boto = [], []
    for number in range(repeats):
        note(f"import: round {number + 1}/{repeats}")
        bare.append(run([sys.executable, "-c", "pass"], env)[0])
        boto.append(run([sys.executable, "-c", f"import {CLIENT_IMPORT}"], env)[0])
    cost = median(boto) - median(bare)
    # the cache of part 1's first hit holds the entry: a local hit, with the remote cache set
    local_env = env | remote | cache(work / "hit-0")
    _, output = run(wheel_command("safe_build", project, work / "out-local", "-X", "importtime"), local_env)
    if remote_hit(output, remote):
        raise RuntimeError("the local hit went to the bucket")
    local = client_modules(output)
    check_wheel(work / "out-local")
    fresh = env | remote | cache(work / "import-remote-hit")
    _, output = run(wheel_command("safe_build", project, work / "out-remote", "-X", "importtime"), fresh)
    if not remote_hit(output, remote):
        raise RuntimeError(f"not a remote hit: {last_line(output)}")
    far = client_modules(output)
    print(f"  python -c pass                          {median(bare):6.3f}s")
    print(f"  python -c 'import {CLIENT_IMPORT}'     {median(boto):6.3f}s")
    print(f"  the S3 client's import                  {cost:6.3f}s")
    print(f"  S3 client modules a remote hit imports  {len(far):6}")
    print(f"  S3 client modules a local hit imports   {len(local):6} (goal 0: {verdict(len(local), 0)})")
    if local:
        print(f"    first: {local[0]}")
    what = f"import {CLIENT_IMPORT} (what a remote lookup imports) vs a bare interpreter, median of {repeats}"
    imported = Figure("bench_remote import", what, cost, " s", plain=median(bare), safe=median(boto))
    shown = ", ".join(CLIENT_MODULES)
    proof = Figure(
        "bench_remote import",
        f"modules of {shown} a local hit imports, remote cache set (-X importtime); yardstick: a remote hit",
        len(local),
        " modules",
        goal=0,
        plain=len(far),
        safe=len(local),
        measured=" modules",
    )
    return [imported, proof]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of parts 1 and 3 (default 5)")
    parser.add_argument("--fleet-rounds", type=int, default=1, help="rounds of part 2 (default 1)")
    parser.add_argument(
        "--build-seconds", type=float, default=1.0, help="part 2: what a package's build sleeps (default 1)"
    )
    parser.add_argument("--wheelhouse", help="a directory of setuptools and wheel wheels; skips the download")
    add_json_option(parser)
    args = parser.parse_args(argv)
    missing = [name for name in ("boto3", "moto") if importlib.util.find_spec(name) is None]
    if missing:  # say so now, not after part 1's minutes
        raise SystemExit(f"this needs {' and '.join(missing)}: pip install 'safe-build[s3]' 'moto[server]'")
    work = Path(os.path.realpath(tempfile.mkdtemp(prefix="safe-build-bench-remote-")))
    try:
        note("downloading the build requirements into a wheelhouse")
        wheelhouse = prepare_wheelhouse(work, args.wheelhouse)
        # the caches are what this measures; build environments are reused as a user's would be
        env = without_remote(build_env(work, wheelhouse)) | {
            "SAFE_BUILD_NO_CACHE": "0",
            "SAFE_BUILD_FRESH_ENV": "0",
        }
        project = write_project(work / "project", PYPROJECT_PROJECT)
        print(f"Python {sys.version.split()[0]}; safe-build source: {source_revision()}")
        seen: dict[str, float] = {}
        found = []
        with s3_server(work) as (endpoint, server):
            remote = new_bucket(endpoint, work)
            with background_load("hit", seen, server):
                measured = bench_hit(work, env, remote, project, args.rounds)
            found += loaded(measured, seen, "hit")
            with background_load("fleet", seen, server):
                measured = bench_fleet(work, env, endpoint, args.fleet_rounds, args.build_seconds)
            found += loaded(measured, seen, "fleet")
            with background_load("import", seen, server):
                measured = bench_import(work, env, remote, project, args.rounds)
            found += loaded(measured, seen, "import")
        write_json(args.json, found)
        return 0
    finally:
        remove_tree(work)


if __name__ == "__main__":
    sys.exit(main())
