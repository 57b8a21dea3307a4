"""Benchmark safe-build against plain ``python -m build``, side by side in one run.

Three parts, each answering a question a user weighing safe-build would ask:

1. ``single``: what do the private snapshot and the atomic publication cost on one ordinary
   wheel build, with and without build isolation? Goal: safe-build <= 1.10x plain.
2. ``snapshot``: is copying a large tree as fast as ``cp -a``, both when the files are listed
   by a walk and by git? Goal: <= 1.30x cp. And is an ignored ``node_modules/`` really never
   read? Goal: no open, listing or other file system call below it.
3. ``concurrent``: do 8 simultaneous builds of one project each produce a valid wheel, into
   their own ``-o`` directories and into one shared ``dist/``? Plain ``build`` is expected to
   fail; safe-build must not.

Run it with the interpreter that has safe-build and build installed::

    python bench/bench_core.py                  # everything, about 10 minutes
    python bench/bench_core.py --quick          # smoke run: fewer rounds, a 2,000-file tree
    python bench/bench_core.py --only snapshot  # one part
    python bench/bench_core.py --only snapshot --tree-dir /dev/shm  # copy cost without the disk's

Wall times on a shared machine are only as good as the machine is quiet: each part reports how
many cores other processes kept busy meanwhile, and CPU times are shown next to wall times.

All builds, plain and safe-build alike, get the same environment: no package index, only a
wheelhouse downloaded once at the start, so the network neither slows nor breaks either side.

This is a report, not a test: the exit code is 0 unless safe-build failed in part 3 (a build
failed or left a broken wheel).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import hashlib
import importlib.metadata
import io
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from figures import Figure, add_json_option, counted, loaded, write_json
from safe_build import digests, snapshot, traversal

PARTS = ("single", "snapshot", "concurrent")
PLAIN = "plain"
SAFE = "safe-build"
TOOLS = (PLAIN, SAFE)
GOAL_SINGLE = 1.10
GOAL_SNAPSHOT = 1.30
# Runs of one side further apart than this mean something else was going on: another job, a cold
# cache, or a file system slowed by earlier deletions (ext4 then spends much CPU time per create).
UNSTEADY = 1.5
IGNORED = "node_modules"
BUILD_REQUIREMENTS = ("setuptools>=69", "wheel")

PYPROJECT_PROJECT = {
    "pyproject.toml": textwrap.dedent(
        """\
        [build-system]
        requires = ["setuptools>=69", "wheel"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "benchpkg"
        version = "1.0"
        requires-python = ">=3.10"

        [tool.setuptools]
        packages = ["benchpkg"]
        """
    ),
    "benchpkg/__init__.py": '"""A small package to build."""\n\nfrom benchpkg.core import answer\n',
    "benchpkg/core.py": "from benchpkg.util import double\n\n\ndef answer() -> int:\n    return double(21)\n",
    "benchpkg/util.py": "def double(value: int) -> int:\n    return 2 * value\n",
}
# The project of the bug report that broke concurrent plain builds: no pyproject.toml at all.
SETUP_PY_PROJECT = {
    "setup.py": 'import setuptools\nsetuptools.setup(name="t", version="4", py_modules=["t"])\n',
    "t.py": "VALUE = 4\n",
}
PROJECTS = {"setup.py only": SETUP_PY_PROJECT, "pyproject": PYPROJECT_PROJECT}
EXPECTED_MODULES = {  # what a wheel built from each project must contain
    "setup.py only": ("t.py",),
    "pyproject": ("benchpkg/__init__.py", "benchpkg/core.py", "benchpkg/util.py"),
}


@dataclass(frozen=True)
class Settings:
    """What one run measures and where it works."""

    work: Path  # everything the benchmark creates lives below this temporary directory
    env: dict[str, str]  # the environment of every build, plain and safe-build alike
    rounds: int  # part 1: alternating rounds per mode
    tree_root: Path  # part 2: where the large tree and its copies go (under work unless --tree-dir)
    tree_dirs: int  # part 2: directories of the generated tree (and of its node_modules/)
    files_per_dir: int
    copy_repeats: int  # part 2: alternating copies per side
    jobs: int  # part 3: simultaneous builds
    concurrent_rounds: int


# --------------------------------------------------------------------------- helpers


def note(message: str) -> None:
    """Progress goes to stderr, so that stdout holds only the report."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def verdict(ratio: float, goal: float) -> str:
    """'met' or how far the goal was missed, so a reader need not do the arithmetic."""
    if ratio <= goal:
        return "met"
    return f"MISSED by {ratio - goal:.3f} ({(ratio / goal - 1) * 100:.1f}% over)"


def write_project(root: Path, files: dict[str, str]) -> Path:
    """Create a fresh project directory holding ``files``; return its real path."""
    if root.exists():
        shutil.rmtree(root)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return Path(os.path.realpath(root))


def remove_build_state(project: Path, *, dist: bool = False) -> None:
    """Remove what setuptools leaves in a source tree, so that no build starts with stale state."""
    doomed = [project / "build", *project.glob("*.egg-info")]
    if dist:
        doomed.append(project / "dist")
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)


def build_command(tool: str, project: Path, flags: Sequence[str]) -> list[str]:
    """The same arguments for both tools; only the module differs, as for a drop-in."""
    module = "build" if tool == PLAIN else "safe_build"
    return [sys.executable, "-m", module, *flags, str(project)]


def last_line(output: str) -> str:
    """The last non-empty line of a build's output: usually its error message."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1][:160] if lines else "(no output)"


def count_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def busy_cpu_seconds() -> float | None:
    """CPU time every process on the machine has used since boot (Linux), or None if unknown."""
    try:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU time of this process and of every child it has waited for, grandchildren included."""
    usages = (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    return sum(usage.ru_utime + usage.ru_stime for usage in usages)


@contextlib.contextmanager
def background_load(part: str, seen: dict[str, float]) -> Iterator[None]:
    """Record in ``seen[part]`` how many cores other processes kept busy while ``part`` ran.

    On a shared machine another job's load slows whichever side it happens to overlap, so a
    ratio measured next to one is noise; this says whether that happened.
    """
    wall, busy, own = time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds()
    yield
    busy_after = busy_cpu_seconds()
    if busy is not None and busy_after is not None:
        others = (busy_after - busy) - (own_cpu_seconds() - own)
        seen[part] = max(0.0, others / (time.perf_counter() - wall))
        print(f"  {describe_load(seen[part])}")


def describe_load(cores: float) -> str:
    cpus = os.cpu_count() or 1
    judgement = "timings unreliable" if cores > 0.25 * cpus else "fine"
    return f"other processes kept {cores:.2f} of {cpus} cores busy meanwhile ({judgement})"


# --------------------------------------------------------------------------- wheel checks


def wheel_problem(outdir: Path, expected: Sequence[str]) -> str | None:
    """Why the one wheel in ``outdir`` is unusable, or None if it is a complete, consistent wheel.

    A wheel counts as broken if it is missing, not a readable zip, disagrees with its RECORD
    (hashes, sizes, files listed or not) or lacks one of the project's modules: a build racing
    another can produce any of these while still exiting 0.
    """
    wheels = sorted(outdir.glob("*.whl"))
    if len(wheels) != 1:
        return f"{len(wheels)} wheels in {outdir.name}/"
    try:
        with zipfile.ZipFile(wheels[0]) as archive:
            return _archive_problem(archive, expected)
    except Exception as error:  # any failure to read it is exactly what this check looks for
        return f"unreadable wheel: {type(error).__name__}: {error}"


def _archive_problem(archive: zipfile.ZipFile, expected: Sequence[str]) -> str | None:
    names = [name for name in archive.namelist() if not name.endswith("/")]
    records = [name for name in names if re.fullmatch(r"[^/]+\.dist-info/RECORD", name)]
    if len(records) != 1:
        return "no RECORD"
    recorded = _read_record(archive, records[0])
    unlisted = sorted(set(names) - set(recorded) - {records[0]})
    if unlisted:
        return f"not in RECORD: {unlisted[0]}"
    for name, (digest, size) in recorded.items():
        if name == records[0]:
            continue
        if name not in names:
            return f"in RECORD but missing: {name}"
        problem = _entry_problem(archive.read(name), digest, size)
        if problem:
            return f"{name}: {problem}"
    missing = [name for name in expected if name not in names]
    return f"module missing: {missing[0]}" if missing else None


def _read_record(archive: zipfile.ZipFile, record: str) -> dict[str, tuple[str, str]]:
    text = archive.read(record).decode("utf-8")
    return {row[0]: (row[1], row[2]) for row in csv.reader(io.StringIO(text)) if row}


def _entry_problem(data: bytes, digest: str, size: str) -> str | None:
    algorithm, _, expected = digest.partition("=")
    if not expected:
        return "no hash in RECORD"
    actual = base64.urlsafe_b64encode(hashlib.new(algorithm, data).digest()).rstrip(b"=").decode()
    if actual != expected:
        return "hash differs from RECORD"
    if size and int(size) != len(data):
        return "size differs from RECORD"
    return None


# --------------------------------------------------------------------------- setup


def prepare_wheelhouse(
    work: Path, given: str | None, requirements: Sequence[str] = BUILD_REQUIREMENTS
) -> Path:
    """Download the build requirements once, so that isolated builds never need the network."""
    if given:
        return Path(given).absolute()
    wheelhouse = work / "wheelhouse"
    env = {key: value for key, value in os.environ.items() if key != "PIP_NO_INDEX"}
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:"]
    done = subprocess.run(
        [*command, "--dest", str(wheelhouse), *requirements],
        check=False,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"pip download of {', '.join(requirements)} failed:\n{done.stderr}")
    return wheelhouse


def build_env(work: Path, wheelhouse: Path) -> dict[str, str]:
    """One environment for every build: offline pip and a private safe-build state directory.

    Without the wheel cache and with build's own fresh environments, safe-build does the same
    work as plain build plus its own: this measures that cost (the snapshot, the locks, the
    atomic publication). What the cache and reused environments save is measured by
    bench_cache.py and bench_envs.py.
    """
    return {
        **os.environ,
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheelhouse),
        "SAFE_BUILD_CACHE_DIR": str(work / "safe-build-cache"),
        "SAFE_BUILD_NO_CACHE": "1",
        "SAFE_BUILD_FRESH_ENV": "1",
    }


def tool_version(command: Sequence[str]) -> str:
    try:
        return subprocess.run(command, check=False, capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        return "not available"


def source_revision() -> str:
    """The commit of the safe-build being measured, since its code may change between two reports."""
    package = Path(snapshot.__file__).parent
    git = ["git", "-C", str(package)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True)
    if head.returncode != 0:
        return "not in a git checkout"
    status = [*git, "status", "--porcelain", "--", "."]
    edited = subprocess.run(status, check=False, capture_output=True, text=True).stdout.strip()
    return head.stdout.strip() + (" plus uncommitted changes" if edited else "")


def print_header(settings: Settings) -> None:
    """What the numbers depend on, so that two reports can be compared sensibly."""
    versions = ", ".join(
        f"{name} {importlib.metadata.version(name)}" for name in ("safe-build", "build", "setuptools")
    )
    print(f"Python {sys.version.split()[0]} ({sys.executable}); {versions} (source: {source_revision()})")
    tools = f"{tool_version(['cp', '--version'])}; {tool_version(['git', '--version'])}"
    print(f"{os.cpu_count()} cores; {tools}")
    print(f"work directory: {settings.work}; large tree (part 2) under: {settings.tree_root}")


# --------------------------------------------------------------------------- part 1: one build


@dataclass(frozen=True)
class Timing:
    """One build: wall time, and CPU time of all its processes (less sensitive to other load)."""

    seconds: float
    cpu: float


@dataclass
class Rounds:
    """Timings of each build, round by round; every round has one of each. A field only by keyword,
    so that a subclass may add fields without defaults."""

    rounds: list[dict[str, Timing]] = field(default_factory=list, kw_only=True)

    def median(self, build: str, what: str = "seconds") -> float:
        return median([getattr(timings[build], what) for timings in self.rounds])

    def ratio(self, build: str, other: str) -> float:
        """Median of per-round ratios: a round slowed by something else slows both, and cancels out."""
        return median([timings[build].seconds / timings[other].seconds for timings in self.rounds])

    def spread(self, build: str) -> str:
        seconds = [timings[build].seconds for timings in self.rounds]
        return f"{min(seconds):.2f}-{max(seconds):.2f}s"


@dataclass
class Comparison:
    """Rounds in which both tools built the same project, one after the other."""

    label: str
    rounds: list[dict[str, Timing]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def median(self, tool: str, what: str = "seconds") -> float:
        return median([getattr(timings[tool], what) for timings in self.rounds])

    def ratio(self, what: str = "seconds") -> float:
        """Median of per-round ratios: a round slowed by something else slows both, and cancels out."""
        return median([getattr(t[SAFE], what) / getattr(t[PLAIN], what) for t in self.rounds])


def timed_build(
    settings: Settings, tool: str, project: Path, flags: Sequence[str], outdir: Path, *, cached: bool = False
) -> Timing:
    """One build and its cost; raises if it failed, since a failed run's time means nothing.

    ``cached``: safe-build runs with its wheel cache and ``--refresh``, so that every build is a
    miss that pays for the lookup, the snapshot that digests what it copies, and the store."""
    if tool == PLAIN:
        remove_build_state(project)  # untimed: plain build must neither profit from nor trip on it
    env = settings.env
    if cached and tool == SAFE:
        flags = [*flags, "--refresh"]
        env = {name: value for name, value in env.items() if name != "SAFE_BUILD_NO_CACHE"}
    command = build_command(tool, project, [*flags, "-o", str(outdir)])
    return timed_wheel_build(tool, command, env, outdir)


def timed_wheel_build(tool: str, command: Sequence[str], env: dict[str, str], outdir: Path) -> Timing:
    """Run ``command`` and time it; raises unless it left a valid wheel of the project in ``outdir``."""
    started, cpu = time.perf_counter(), own_cpu_seconds()
    done = subprocess.run(
        command,
        check=False,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    timing = Timing(time.perf_counter() - started, own_cpu_seconds() - cpu)
    problem = f"exit {done.returncode}: {last_line(done.stdout)}" if done.returncode else None
    problem = problem or wheel_problem(outdir, EXPECTED_MODULES["pyproject"])
    if problem:
        raise RuntimeError(f"{tool}: {problem}")
    return timing


def compare_single(settings: Settings, project: Path, *, isolated: bool, cached: bool = False) -> Comparison:
    """Plain and safe-build alternately (A B A B ...), after one untimed warm-up round of each."""
    flags = ["--wheel"] if isolated else ["--wheel", "--no-isolation"]
    label = "wheel, isolated" if isolated else "wheel, --no-isolation"
    comparison = Comparison(label + (", cache miss" if cached else ""))
    where = ("isolated" if isolated else "no-isolation") + ("-cached" if cached else "")
    outroot = settings.work / "single-out" / where
    for number in range(settings.rounds + 1):
        try:
            timings = {
                tool: timed_build(settings, tool, project, flags, outroot / f"{tool}-{number}", cached=cached)
                for tool in TOOLS
            }
        except RuntimeError as error:
            comparison.failures.append(str(error))
            continue
        if number > 0:
            comparison.rounds.append(timings)
    return comparison


def print_single(comparison: Comparison) -> None:
    ratio = comparison.ratio()
    print(
        f"  {comparison.label:<24} plain {comparison.median(PLAIN):6.2f}s   "
        f"safe-build {comparison.median(SAFE):6.2f}s   ratio {ratio:5.2f} "
        f"(goal <= {GOAL_SINGLE:.2f}: {verdict(ratio, GOAL_SINGLE)})"
    )
    if comparison.rounds:
        spread = {
            tool: f"{min(t[tool].seconds for t in comparison.rounds):.2f}-"
            f"{max(t[tool].seconds for t in comparison.rounds):.2f}s"
            for tool in TOOLS
        }
        print(
            f"  {'':<24} range: plain {spread[PLAIN]}, safe-build {spread[SAFE]}; n={len(comparison.rounds)}"
        )
        cpu = (
            f"plain {comparison.median(PLAIN, 'cpu'):.2f}s, safe-build {comparison.median(SAFE, 'cpu'):.2f}s"
        )
        print(f"  {'':<24} CPU time: {cpu}, ratio {comparison.ratio('cpu'):.2f}")
    for failure in comparison.failures:
        print(f"  {'':<24} FAILED: {failure}")


def bench_single(settings: Settings) -> list[Comparison]:
    print(f"\n== 1. one wheel build, {settings.rounds} alternating rounds (median wall time) ==")
    project = write_project(settings.work / "single" / "benchpkg", PYPROJECT_PROJECT)
    results = []
    for isolated, cached in ((False, False), (True, False), (False, True)):
        note(f"part 1: {'isolated' if isolated else '--no-isolation'} builds{', cache misses' * cached}")
        results.append(compare_single(settings, project, isolated=isolated, cached=cached))
        print_single(results[-1])
    return results


# --------------------------------------------------------------------------- part 2: snapshot


@dataclass
class CopyComparison:
    """``cp -a`` against ``snapshot.take`` on the same tree, alternating."""

    mode: str
    cp: list[Copied] = field(default_factory=list)
    take: list[Copied] = field(default_factory=list)

    def median(self, side: str, what: str = "seconds") -> float:
        return median([getattr(copy, what) for copy in (self.cp if side == "cp" else self.take)])

    @property
    def ratio(self) -> float:
        return self.median("take") / self.median("cp")


@dataclass
class ReadCheck:
    """Which observed file system accesses named a path at or below the ignored directory."""

    method: str
    mode: str
    observed: int = 0
    touching: list[str] = field(default_factory=list)
    listed_by: str = ""
    error: str = ""  # the check could not be made (strace refused to trace, say)


@dataclass
class SnapshotReport:
    copies: list[CopyComparison]
    checks: list[ReadCheck]
    strace_missing: bool
    tree_files: int
    cp_drift: float  # slowest over fastest median cp of the same files across modes: the disk's own drift


def make_big_tree(root: Path, dirs: int, files_per_dir: int) -> int:
    """A project of ``dirs`` x ``files_per_dir`` files of 5-15 KiB, plus a node_modules/ as big.

    Contents are slices of one random pool: incompressible like real data, cheap to write.
    Returns the size of the project's files, node_modules/ not counted.
    """
    rng = random.Random(20240601)
    pool = rng.randbytes(1 << 16)
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "big"\nversion = "1"\n', encoding="utf-8")
    total = 0
    for top, prefix in ((root / "data", "d"), (root / IGNORED, "pkg")):
        for number in range(dirs):
            directory = top / f"g{number // 100:02d}" / f"{prefix}{number:04d}"
            directory.mkdir(parents=True)
            for index in range(files_per_dir):
                size = rng.randint(5 << 10, 15 << 10)
                start = rng.randrange(len(pool) - size)
                (directory / f"f{index}.dat").write_bytes(pool[start : start + size])
                total += size if top.name != IGNORED else 0
    return total


def make_git_repo(root: Path) -> None:
    """Turn the tree into a committed repository that ignores node_modules/, as real ones do."""
    (root / ".gitignore").write_text(f"{IGNORED}/\n", encoding="utf-8")
    identity = ["-c", "user.name=x", "-c", "user.email=x@x", "-c", "commit.gpgsign=false"]
    for command in (["init", "-q"], ["add", "-A"], [*identity, "commit", "-q", "-m", "benchmark tree"]):
        subprocess.run(["git", *command], cwd=root, check=True, capture_output=True)


def fresh_copy_target(settings: Settings, name: str) -> Path:
    """A path that does not exist yet, with earlier copies' dirty pages already on disk.

    Syncing first means neither side pays for the other's writeback.
    """
    target = settings.tree_root / "copies" / name
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.sync()
    return target


def remove_copies(settings: Settings) -> None:
    """Delete the timed copies, only once all timings are done.

    Deleting many files makes the next file creations slow on some file systems (ext4 skips
    recently freed inodes): a copy timed after a deletion would pay for the previous one.
    """
    shutil.rmtree(settings.tree_root / "copies", ignore_errors=True)


@dataclass(frozen=True)
class Copied:
    """One timed copy: wall time, CPU time of all its threads and processes, files it made."""

    seconds: float
    cpu: float
    files: int
    listed_by: str = ""


def time_cp(settings: Settings, tree: Path, name: str) -> Copied:
    """One ``cp -a`` of every top-level entry except node_modules/ and .git, in a single call."""
    target = fresh_copy_target(settings, name)
    target.mkdir()
    entries = sorted(str(path) for path in tree.iterdir() if path.name not in (IGNORED, ".git"))
    started, cpu = time.perf_counter(), own_cpu_seconds()
    subprocess.run(["cp", "-a", *entries, str(target)], check=True)
    seconds, cpu = time.perf_counter() - started, own_cpu_seconds() - cpu
    return Copied(seconds, cpu, count_files(target))


def time_take(settings: Settings, tree: Path, name: str) -> Copied:
    """One in-process ``snapshot.take``, as safe-build calls it for a cached build: the copy digests
    what it writes (no memo: every file is read)."""
    target = fresh_copy_target(settings, name)
    started, cpu = time.perf_counter(), own_cpu_seconds()
    copy = snapshot.take(traversal.plan(tree), target, recorder=digests.Recorder({}, remember=False))
    seconds, cpu = time.perf_counter() - started, own_cpu_seconds() - cpu
    return Copied(seconds, cpu, count_files(target), copy.listed_by)


def compare_copy(settings: Settings, tree: Path, mode: str) -> CopyComparison:
    """cp and take alternately, each on a warm page cache (dropping caches needs privileges)."""
    result = CopyComparison(mode)
    for number in range(settings.copy_repeats):
        note(f"part 2: {mode}, copy {number + 1}/{settings.copy_repeats}")
        result.cp.append(time_cp(settings, tree, f"cp-{mode}-{number}"))
        result.take.append(time_take(settings, tree, f"take-{mode}-{number}"))
    return result


@contextlib.contextmanager
def git_hidden(mode: str) -> Iterator[None]:
    """For ``walk``, make git report 'not a repository', so take() walks the now-git tree."""
    if mode != "walk":
        yield
        return
    os.environ["GIT_DIR"] = os.devnull
    try:
        yield
    finally:
        del os.environ["GIT_DIR"]


class AuditRecorder:
    """Paths opened or listed by this process while recording, threads included.

    An audit hook cannot be removed once added, so one recorder is installed only after all
    timed copies, and stays inert outside ``recording()``.
    """

    EVENTS = frozenset({"open", "os.listdir", "os.scandir"})

    def __init__(self) -> None:
        self.active = False
        self.paths: list[str] = []
        sys.addaudithook(self.hook)

    def hook(self, event: str, args: tuple[object, ...]) -> None:
        if not self.active or event not in self.EVENTS:
            return
        path = args[0] if args else None
        if isinstance(path, str | bytes | os.PathLike):
            self.paths.append(os.fsdecode(path))
        else:
            self.paths.append(f"<{event} of {path!r}>")  # a file descriptor, or the working directory

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[str]]:
        self.paths = []
        self.active = True
        try:
            yield self.paths
        finally:
            self.active = False


def touches_ignored(path: str) -> bool:
    return IGNORED in Path(path).parts


def audit_take(settings: Settings, recorder: AuditRecorder, tree: Path, mode: str) -> ReadCheck:
    """Every open and directory listing Python makes during ``take``, checked for node_modules."""
    target = fresh_copy_target(settings, f"audit-{mode}")
    with git_hidden(mode), recorder.recording() as paths:
        copy = snapshot.take(traversal.plan(tree), target)
    shutil.rmtree(target)
    touching = [path for path in paths if touches_ignored(path)]
    return ReadCheck("audit hook", mode, len(paths), touching, copy.listed_by)


STRACE_PATH = re.compile(rf'(?:"|<)(?:[^"<>]*/)?{IGNORED}(?:/[^"<>]*)?(?:"|>)')
TAKE_SNIPPET = (
    "import sys; from pathlib import Path; from safe_build import snapshot, traversal; "
    "print(snapshot.take(traversal.plan(Path(sys.argv[1])), Path(sys.argv[2])).listed_by)"
)


def strace_take(settings: Settings, tree: Path, mode: str) -> ReadCheck:
    """Every path-taking system call and directory read of a whole ``take`` process, git included.

    This sees what the audit hook cannot: git's own reads when it lists the files.
    """
    target = fresh_copy_target(settings, f"strace-{mode}")
    trace = settings.work / f"strace-{mode}.txt"
    env = {**settings.env, "GIT_DIR": os.devnull} if mode == "walk" else settings.env
    command = ["strace", "-f", "-qq", "-y", "-e", "trace=%file,getdents64", "-o", str(trace)]
    command += [sys.executable, "-c", TAKE_SNIPPET, str(tree), str(target)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    shutil.rmtree(target, ignore_errors=True)
    check = ReadCheck("strace -f", mode, listed_by=done.stdout.strip())
    if done.returncode != 0:
        check.error = f"strace exited {done.returncode}: {last_line(done.stderr)}"
        return check
    with trace.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if " execve(" in line or "(" not in line:
                continue  # git's command line names node_modules in its pathspecs; that is no access
            check.observed += 1
            if STRACE_PATH.search(line):
                check.touching.append(line.strip())
    trace.unlink()
    return check


def unsteady_warning(side: str, seconds: Sequence[float]) -> str | None:
    """Say so when one side's runs differ too much for their median to mean anything."""
    fastest, slowest = min(seconds), max(seconds)
    if slowest <= UNSTEADY * fastest:
        return None
    spread = f"{slowest / fastest:.1f}x ({fastest:.2f}-{slowest:.2f}s)"
    return f"{side} runs vary {spread}: not a steady state, trust this ratio less"


def print_copy(copy: CopyComparison, files: int, megabytes: float) -> None:
    label = f"snapshot, {copy.mode} ({files:,} files, {megabytes:.0f} MB)"
    print(
        f"  {label:<40} cp -a {copy.median('cp'):6.2f}s   snapshot.take {copy.median('take'):6.2f}s   "
        f"ratio {copy.ratio:5.2f} (goal <= {GOAL_SNAPSHOT:.2f}: {verdict(copy.ratio, GOAL_SNAPSHOT)})"
    )
    runs = ", ".join(f"{a.seconds:.2f}/{b.seconds:.2f}" for a, b in zip(copy.cp, copy.take, strict=False))
    best = min(taken.seconds for taken in copy.take) / min(done.seconds for done in copy.cp)
    print(f"  {'':<40} runs cp/take: {runs}; best-of ratio {best:.2f}")
    cpu = f"cp {copy.median('cp', 'cpu'):.2f}s, take {copy.median('take', 'cpu'):.2f}s"
    print(f"  {'':<40} median CPU time (all threads and children): {cpu}")
    for side, runs_of_side in (("cp", copy.cp), ("take", copy.take)):
        warning = unsteady_warning(side, [run.seconds for run in runs_of_side])
        if warning:
            print(f"  {'':<40} WARNING: {warning}")
    counts = f"cp {copy.cp[-1].files:,}, take {copy.take[-1].files:,}"
    listed = {taken.listed_by for taken in copy.take}
    print(f"  {'':<40} files copied: {counts}; take listed files by {', '.join(sorted(listed))}")
    if listed != {copy.mode}:
        print(f"  {'':<40} WARNING: take did not list files by {copy.mode}")


def print_check(check: ReadCheck) -> None:
    label = f"{IGNORED}/ reads, {check.method}, {check.mode}"
    if check.error:
        print(f"  {label:<40} not checked: {check.error}")
        return
    listed = "" if check.listed_by == check.mode else f"  WARNING: listed by {check.listed_by}"
    print(f"  {label:<40} {len(check.touching)} of {check.observed:,} observed accesses{listed}")
    for line in check.touching[:5]:
        print(f"  {'':<40}   {line[:150]}")


def bench_snapshot(settings: Settings) -> SnapshotReport:
    files = settings.tree_dirs * settings.files_per_dir
    print(f"\n== 2. snapshot of a large tree, {settings.copy_repeats} alternating copies (median) ==")
    tree = settings.tree_root / "project"
    note(f"part 2: writing {files:,} files plus a node_modules/ as big")
    size = make_big_tree(tree, settings.tree_dirs, settings.files_per_dir)
    copies = [compare_copy(settings, tree, "walk")]
    note("part 2: committing the tree to git")
    make_git_repo(tree)
    copies.append(compare_copy(settings, tree, "git"))
    remove_copies(settings)
    for copy in copies:
        print_copy(copy, files, size / 1e6)
    cp_drift = max(copy.median("cp") for copy in copies) / min(copy.median("cp") for copy in copies)
    if cp_drift > UNSTEADY:
        print(
            f"  WARNING: the same cp -a took {cp_drift:.1f}x longer in one mode than in the other: the file "
            "system's speed drifted meanwhile (ext4 slows down after many deletions, for one), so compare "
            "the two ratios with care, or rerun with --tree-dir on a tmpfs"
        )
    note("part 2: checking that node_modules/ is never read")
    recorder = AuditRecorder()
    checks = [audit_take(settings, recorder, tree, mode) for mode in ("walk", "git")]
    strace_missing = shutil.which("strace") is None
    if not strace_missing:
        checks += [strace_take(settings, tree, mode) for mode in ("walk", "git")]
    for check in checks:
        print_check(check)
    if strace_missing:
        print("  strace is not installed: only Python's own accesses were checked, not git's")
    return SnapshotReport(copies, checks, strace_missing, files, cp_drift)


# --------------------------------------------------------------------------- part 3: concurrent builds


@dataclass
class ConcurrentComparison:
    """Rounds of simultaneous builds by each tool: wall time per round and every build's problem."""

    label: str
    builds: int = 0
    shared: bool = False
    seconds: dict[str, list[float]] = field(default_factory=lambda: {tool: [] for tool in TOOLS})
    problems: dict[str, list[str]] = field(default_factory=lambda: {tool: [] for tool in TOOLS})
    # shared dist/ only: what was wrong with the wheel left there once a round was over
    broken_finals: dict[str, list[str]] = field(default_factory=lambda: {tool: [] for tool in TOOLS})

    def failures(self, tool: str) -> int:
        """Builds that failed or whose wheel was broken when they exited: at most ``builds``."""
        return len(self.problems[tool])

    def rounds(self) -> int:
        return len(self.seconds[PLAIN])


@dataclass
class Job:
    process: subprocess.Popen[bytes]
    outdir: Path
    log: Path


def start_jobs(settings: Settings, tool: str, project: Path, outdirs: Sequence[Path]) -> list[Job]:
    """Start all builds back to back, so that they overlap as much as two cores allow."""
    shared = project / "dist"
    logs = settings.work / "concurrent-logs"
    logs.mkdir(exist_ok=True)
    jobs = []
    for number, outdir in enumerate(outdirs):
        flags = ["--wheel", "--no-isolation"] + ([] if outdir == shared else ["-o", str(outdir)])
        log = logs / f"{tool}-{number}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                build_command(tool, project, flags), env=settings.env, stdout=output, stderr=subprocess.STDOUT
            )
        jobs.append(Job(process, outdir, log))
    return jobs


def watch_jobs(jobs: Sequence[Job], expected: Sequence[str]) -> list[str]:
    """Check each build's wheel the moment the build exits, as a user's next command would."""
    pending = list(jobs)
    problems = []
    while pending:
        for job in [job for job in pending if job.process.poll() is not None]:
            pending.remove(job)
            if job.process.returncode:
                output = job.log.read_text(encoding="utf-8", errors="replace")
                problems.append(f"exit {job.process.returncode}: {last_line(output)}")
            elif problem := wheel_problem(job.outdir, expected):
                problems.append(f"exit 0 but {problem}")
        time.sleep(0.005)
    return problems


def concurrent_round(
    settings: Settings, tool: str, project: Path, expected: Sequence[str], *, shared: bool
) -> tuple[float, list[str], str | None]:
    """One round of ``settings.jobs`` simultaneous builds from a clean tree.

    Returns the wall time, each failed build's problem, and, for a shared dist/, what is wrong
    with the wheel left there at the end (None if it is fine).
    """
    outroot = settings.work / "concurrent-out"
    shutil.rmtree(outroot, ignore_errors=True)
    remove_build_state(project, dist=True)
    outdirs = [project / "dist" if shared else outroot / f"out{number}" for number in range(settings.jobs)]
    started = time.perf_counter()
    problems = watch_jobs(start_jobs(settings, tool, project, outdirs), expected)
    seconds = time.perf_counter() - started
    final = wheel_problem(project / "dist", expected) if shared else None
    return seconds, problems, final


def compare_concurrent(settings: Settings, kind: str, *, shared: bool) -> ConcurrentComparison:
    """Rounds alternate between the tools, on a project of their own that nothing else builds."""
    project = write_project(settings.work / "concurrent" / kind.replace(" ", "-"), PROJECTS[kind])
    where = "one shared dist/" if shared else "own -o outN"
    builds = settings.jobs * settings.concurrent_rounds
    comparison = ConcurrentComparison(f"{kind}, {where}", builds=builds, shared=shared)
    for number in range(settings.concurrent_rounds):
        for tool in TOOLS:
            note(f"part 3: {comparison.label}, {tool}, round {number + 1}/{settings.concurrent_rounds}")
            expected = EXPECTED_MODULES[kind]
            seconds, problems, final = concurrent_round(settings, tool, project, expected, shared=shared)
            comparison.seconds[tool].append(seconds)
            comparison.problems[tool].extend(problems)
            if final:
                comparison.broken_finals[tool].append(f"dist/ after the round: {final}")
    return comparison


def print_concurrent(comparison: ConcurrentComparison) -> None:
    cells = [
        f"{tool} {comparison.failures(tool):2d}/{comparison.builds} failed, "
        f"{median(comparison.seconds[tool]):5.2f}s/round"
        for tool in TOOLS
    ]
    ratio = median(comparison.seconds[SAFE]) / median(comparison.seconds[PLAIN])
    print(f"  {comparison.label:<32} {cells[0]}   {cells[1]}   time ratio {ratio:4.2f}")
    if comparison.shared:
        finals = ", ".join(
            f"{tool} {len(comparison.broken_finals[tool])}/{comparison.rounds()}" for tool in TOOLS
        )
        print(f"  {'':<32}   rounds that left a broken wheel in dist/: {finals}")
    for tool in TOOLS:
        reasons: dict[str, int] = {}
        for problem in comparison.problems[tool] + comparison.broken_finals[tool]:
            reasons[problem] = reasons.get(problem, 0) + 1
        for reason, count in sorted(reasons.items(), key=lambda item: -item[1])[:3]:
            print(f"  {'':<32}   {tool} {count}x: {reason[:140]}")


def bench_concurrent(settings: Settings) -> list[ConcurrentComparison]:
    rounds = settings.concurrent_rounds
    per_tool = f"{rounds} round{'s' if rounds != 1 else ''} per tool"
    print(f"\n== 3. {settings.jobs} concurrent builds (--wheel --no-isolation), {per_tool} ==")
    results = []
    for kind in PROJECTS:
        for shared in (False, True):
            results.append(compare_concurrent(settings, kind, shared=shared))
            print_concurrent(results[-1])
    return results


# --------------------------------------------------------------------------- summary and main


@dataclass
class Results:
    single: list[Comparison] = field(default_factory=list)
    snapshot: SnapshotReport | None = None
    concurrent: list[ConcurrentComparison] = field(default_factory=list)
    background: dict[str, float] = field(default_factory=dict)  # part -> cores busy with other work

    def safe_failed(self) -> bool:
        return any(c.failures(SAFE) or c.broken_finals[SAFE] for c in self.concurrent)


def print_summary(results: Results) -> None:
    print("\n== summary ==")
    for comparison in results.single:
        goal = f"goal <= {GOAL_SINGLE}: {verdict(comparison.ratio(), GOAL_SINGLE)}"
        cpu = f"(CPU time ratio {comparison.ratio('cpu'):.2f})"
        print(f"  single {comparison.label:<26} safe/plain {comparison.ratio():5.2f}   {goal} {cpu}")
    if results.snapshot:
        for copy in results.snapshot.copies:
            goal = f"goal <= {GOAL_SNAPSHOT}: {verdict(copy.ratio, GOAL_SNAPSHOT)}"
            cpu = f"(CPU time ratio {copy.median('take', 'cpu') / copy.median('cp', 'cpu'):.2f})"
            label = f"{copy.mode} ({results.snapshot.tree_files:,} files)"
            unsteady = any(
                unsteady_warning(side, [run.seconds for run in runs])
                for side, runs in (("cp", copy.cp), ("take", copy.take))
            )
            unsteady = unsteady or results.snapshot.cp_drift > UNSTEADY
            cpu += " [UNSTEADY, see above]" if unsteady else ""
            print(f"  snapshot {label:<24} take/cp    {copy.ratio:5.2f}   {goal} {cpu}")
        reads = ", ".join(
            f"{c.method} {c.mode}: {'not checked' if c.error else len(c.touching)}"
            for c in results.snapshot.checks
        )
        reads += " (strace not installed)" if results.snapshot.strace_missing else ""
        print(f"  {IGNORED}/ accesses             {reads}")
    if results.concurrent:
        totals = {tool: sum(c.failures(tool) for c in results.concurrent) for tool in TOOLS}
        builds = sum(c.builds for c in results.concurrent)
        counts = f"plain {totals[PLAIN]}/{builds}, safe-build {totals[SAFE]}/{builds}"
        print(f"  concurrent failed builds    {counts}")
        shared = [c for c in results.concurrent if c.shared]
        if shared:
            rounds = sum(c.rounds() for c in shared)
            broken = {tool: sum(len(c.broken_finals[tool]) for c in shared) for tool in TOOLS}
            finals = f"plain {broken[PLAIN]}/{rounds}, safe-build {broken[SAFE]}/{rounds}"
            print(f"  shared dist/ left broken    {finals} rounds")
    for part, cores in results.background.items():
        print(f"  background during {part:<10} {describe_load(cores)}")


def figures(results: Results) -> list[Figure]:
    """The summary's figures as data, each with the load seen during its part."""
    single = [
        Figure(
            "bench_core single",
            f"one build: {comparison.label}{'' if 'cache' in comparison.label else ', no cache'}, "
            f"median of {len(comparison.rounds)}",
            comparison.ratio(),
            goal=GOAL_SINGLE,
            plain=comparison.median(PLAIN),
            safe=comparison.median(SAFE),
        )
        for comparison in results.single
        if comparison.rounds
    ]
    found = loaded(single, results.background, "single")
    if results.snapshot:
        found += loaded(snapshot_figures(results.snapshot), results.background, "snapshot")
    if results.concurrent:
        found += loaded(concurrent_figures(results.concurrent), results.background, "concurrent")
    return found


def snapshot_figures(report: SnapshotReport) -> list[Figure]:
    copies = [
        Figure(
            "bench_core snapshot",
            f"snapshot of {report.tree_files:,} files vs cp -a, {copy.mode}, median of {len(copy.take)}",
            copy.ratio,
            goal=GOAL_SNAPSHOT,
            plain=copy.median("cp"),
            safe=copy.median("take"),
        )
        for copy in report.copies
    ]
    checked = [check for check in report.checks if not check.error]
    methods = ", ".join(sorted({check.method for check in checked}))
    touching = sum(len(check.touching) for check in checked)
    what = f"accesses below an ignored {IGNORED}/ ({methods or 'not checked'})"
    return [*copies, Figure("bench_core snapshot", what, touching, " accesses", goal=0)]


def concurrent_figures(comparisons: Sequence[ConcurrentComparison]) -> list[Figure]:
    jobs = f"{comparisons[0].builds // comparisons[0].rounds()} concurrent builds"
    builds = sum(comparison.builds for comparison in comparisons)
    failed = {tool: sum(comparison.failures(tool) for comparison in comparisons) for tool in TOOLS}
    shared = [comparison for comparison in comparisons if comparison.shared]
    rounds = sum(comparison.rounds() for comparison in shared)
    broken = {tool: sum(len(comparison.broken_finals[tool]) for comparison in shared) for tool in TOOLS}
    walls = {tool: sum(median(comparison.seconds[tool]) for comparison in comparisons) for tool in TOOLS}
    bench = "bench_core concurrent"
    return [
        counted(
            bench,
            f"{jobs} of one project, {len(comparisons)} set-ups: failed builds",
            failed[PLAIN],
            failed[SAFE],
            builds,
        ),
        counted(
            bench,
            f"{jobs} into one shared dist/: rounds that left a broken wheel there",
            broken[PLAIN],
            broken[SAFE],
            rounds,
            unit=" rounds",
        ),
        Figure(
            bench,
            f"{jobs}: wall time of a round, summed over the set-ups",
            walls[SAFE] / walls[PLAIN],
            plain=walls[PLAIN],
            safe=walls[SAFE],
        ),
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, help="part 1 rounds per mode (default 7, --quick 3)")
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer rounds, a 2,000-file tree")
    parser.add_argument("--only", choices=PARTS, help="run only this part")
    parser.add_argument(
        "--copies", type=int, default=3, help="part 2 alternating copies per side (default 3)"
    )
    parser.add_argument("--jobs", type=int, default=8, help="simultaneous builds in part 3 (default 8)")
    parser.add_argument("--wheelhouse", help="a directory of setuptools and wheel wheels; skips the download")
    parser.add_argument("--keep", action="store_true", help="keep the work directory for inspection")
    parser.add_argument(
        "--tree-dir", help="put part 2's tree and copies in a new directory under this one (e.g. a tmpfs)"
    )
    add_json_option(parser)
    return parser.parse_args(argv)


def make_settings(args: argparse.Namespace, work: Path, tree_root: Path) -> Settings:
    wheelhouse = work / "no-wheelhouse"
    if args.only in (None, "single"):
        note("downloading the build requirements into a wheelhouse")
        wheelhouse = prepare_wheelhouse(work, args.wheelhouse)
    return Settings(
        work=work,
        env=build_env(work, wheelhouse),
        tree_root=tree_root,
        rounds=args.rounds or (3 if args.quick else 7),
        tree_dirs=200 if args.quick else 2000,
        files_per_dir=10,
        copy_repeats=args.copies,
        jobs=args.jobs,
        concurrent_rounds=1 if args.quick else 3,
    )


def run_parts(settings: Settings, parts: Sequence[str]) -> Results:
    results = Results()
    if "single" in parts:
        with background_load("single", results.background):
            results.single = bench_single(settings)
    if "snapshot" in parts:
        with background_load("snapshot", results.background):
            results.snapshot = bench_snapshot(settings)
    if "concurrent" in parts:
        with background_load("concurrent", results.background):
            results.concurrent = bench_concurrent(settings)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(os.path.realpath(tempfile.mkdtemp(prefix="safe-build-bench-")))
    tree_root = work / "tree"
    if args.tree_dir:
        tree_root = Path(
            os.path.realpath(tempfile.mkdtemp(prefix="safe-build-bench-tree-", dir=args.tree_dir))
        )
    try:
        settings = make_settings(args, work, tree_root)
        print_header(settings)
        results = run_parts(settings, [args.only] if args.only else PARTS)
        print_summary(results)
        write_json(args.json, figures(results))
        return 1 if results.safe_failed() else 0
    finally:
        for directory in [work, tree_root] if args.tree_dir else [work]:
            if args.keep:
                note(f"kept {directory}")
            else:
                shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
