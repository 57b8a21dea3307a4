"""Signals and locks: a stopped or killed build leaves nothing behind, in-place builds take turns.

Real safe-build processes, real signals, real locks. The "slow" project of conftest holds a build
mid-way: its backend writes ``<hook> <pid> <pgid>`` to $SLOW_BACKEND_MARKER when it starts, then
sleeps $SLOW_BACKEND_SECONDS. Each test says what it would catch if the protection were missing.

Process checks read /proc where there is one: an orphan's exit is only reaped when init gets to
it (seconds later in some containers), and ``kill(pid, 0)`` still succeeds on a zombie.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from safe_build import locks
from safe_build.errors import LockTimeout, SafeBuildError
from safe_build.locks import NamedLock
from tests.conftest import members, run, safe_build_command, wheel_problems

pytestmark = pytest.mark.uncached

POLL_SECONDS = 0.02
START_TIMEOUT = 60.0  # for a safe-build process to get its backend going, even on a loaded machine
HAVE_PROC = Path("/proc/self/stat").exists()
SLOW_WHEEL = "slow-1.0-py3-none-any.whl"


# --- processes --------------------------------------------------------------------------------


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, pgrp, ...), if it exists."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone (FileNotFoundError, or ProcessLookupError while it vanishes)
        return None
    return text[text.rindex(")") + 2 :].split()


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs; a zombie (exited, not yet reaped) does not."""
    if not HAVE_PROC:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = _proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X", "x")


def group_members(pgid: int) -> list[int]:
    """The running processes of process group ``pgid``."""
    if not HAVE_PROC:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _proc_stat(int(entry.name))
            if fields is not None and fields[0] not in ("Z", "X", "x") and int(fields[2]) == pgid:
                found.append(int(entry.name))
    return found


def groups_working_in(directory: Path) -> set[int]:
    """The process groups of the running processes whose working directory is ``directory``."""
    real = os.path.realpath(directory)
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        fields = _proc_stat(int(entry.name)) if cwd == real else None
        if fields is not None and fields[0] not in ("Z", "X", "x"):
            found.add(int(fields[2]))
    return found


class Processes:
    """The processes a test starts; whatever is left of them and of their builds dies at teardown."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[str]] = []
        self.markers: list[Path] = []

    def start(
        self, command: Sequence[str], env: dict[str, str], stderr: Path | None = None
    ) -> subprocess.Popen[str]:
        """Start ``command``; its stderr goes to a pipe, or to the file ``stderr`` to read as it runs."""
        if stderr is None:
            process = subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        else:
            with stderr.open("w") as file:
                process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=file, text=True)
        self.started.append(process)
        return process

    def watch(self, marker: Path) -> Path:
        """Kill the process groups of every backend that ``marker`` records, at teardown."""
        self.markers.append(marker)
        return marker

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.terminate()  # safe-build stops its build's group on SIGTERM
                try:
                    process.communicate(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
            process.communicate()
        for marker in self.markers:
            for start in starts(marker):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if start.pgid in (0, 1, os.getpgrp()):  # a broken build shares our group: not that
                        if alive(start.pid):
                            os.kill(start.pid, signal.SIGKILL)
                    elif group_members(start.pgid):
                        os.killpg(start.pgid, signal.SIGKILL)


@pytest.fixture
def processes() -> Iterator[Processes]:
    started = Processes()
    try:
        yield started
    finally:
        started.stop_all()


# --- the slow backend's marker ----------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """One line of the marker file: a backend hook started in process ``pid`` of group ``pgid``."""

    hook: str
    pid: int
    pgid: int


def starts(marker: Path) -> list[Start]:
    try:
        text = marker.read_text()
    except FileNotFoundError:
        return []
    lines = [line.split() for line in text.splitlines(keepends=True) if line.endswith("\n")]
    return [Start(hook, int(pid), int(pgid)) for hook, pid, pgid in lines]


def slow_env(env: dict[str, str], marker: Path, seconds: float) -> dict[str, str]:
    return {**env, "SLOW_BACKEND_MARKER": str(marker), "SLOW_BACKEND_SECONDS": str(seconds)}


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:.0f}s in vain until {what}")
        time.sleep(POLL_SECONDS)


def wait_for_starts(marker: Path, count: int, running: Sequence[subprocess.Popen[str]]) -> list[Start]:
    """The first ``count`` backend starts, once they happened; fail early if a process exits first."""

    def done() -> bool:
        return len(starts(marker)) >= count or any(process.poll() is not None for process in running)

    wait_until(done, START_TIMEOUT, f"{count} backend start(s) recorded in {marker}")
    exited = [process for process in running if process.poll() is not None]
    if exited:
        _, stderr = exited[0].communicate()
        pytest.fail(f"safe-build exited ({exited[0].returncode}) before the backend started:\n{stderr}")
    return starts(marker)[:count]


@contextlib.contextmanager
def paused(*backends: Start) -> Iterator[None]:
    """Keep the builds of ``backends`` stopped (SIGSTOP) for the body, so that they hold what they
    hold (a lock, a place in a race) for as long as the test needs, however slow the machine."""
    groups = [backend.pgid for backend in backends]
    assert not set(groups) & {0, 1, os.getpgrp()}, "a build must run in a process group of its own"
    try:
        for pgid in groups:
            os.killpg(pgid, signal.SIGSTOP)
        yield
    finally:
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGCONT)


def entries(directory: Path) -> list[str]:
    """The names in ``directory`` (hidden ones too), or none if it does not exist."""
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


def only_wheel(outdir: Path) -> Path:
    """The one entry of ``outdir``, which must be a valid wheel."""
    assert len(entries(outdir)) == 1, entries(outdir)
    wheel = next(outdir.iterdir())
    assert wheel.name.endswith(".whl"), wheel
    assert wheel_problems(wheel) == []
    return wheel


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("safe-build: error:")]


# --- 1. SIGKILL -------------------------------------------------------------------------------


def test_sigkill_mid_build_publishes_nothing_and_next_run_sweeps_the_private_dir(
    make_project: Callable[..., Path], env: dict[str, str], tmp_path: Path, processes: Processes
) -> None:
    """The orphaned build finishes its wheel, but only in the private dir; the next run removes it.

    Catches: a build that writes into the outdir itself, publication by anyone but safe-build, a
    private dir (or its .lock) that outlives its dead owner and the orphan (no sweep).
    """
    project = make_project("slow")
    marker = processes.watch(tmp_path / "marker")
    out = tmp_path / "out"
    tmp_root = Path(env["SAFE_BUILD_CACHE_DIR"]) / "tmp"
    killed = processes.start(
        safe_build_command(project, "-n", "--wheel", "-o", out), slow_env(env, marker, 3)
    )
    [backend] = wait_for_starts(marker, 1, [killed])
    assert backend.pgid not in (killed.pid, os.getpgrp()), "the build must run in a process group of its own"

    killed.kill()  # SIGKILL, to the safe-build process only
    killed.wait()
    wait_until(lambda: not group_members(backend.pgid), 60, "the orphaned build finished")

    assert entries(out) == [], "a killed safe-build must never leave anything in the output directory"
    private = entries(tmp_root)
    assert len(private) == 2, private  # the tree's first slot: <slot>-0/ and <slot>-0.lock
    work = tmp_root / next(name for name in private if not name.endswith(".lock"))
    assert entries(work / "out") == [SLOW_WHEEL], "the orphan was expected to finish its build privately"

    again = run(safe_build_command(project, "-n", "--wheel", "-o", out), slow_env(env, marker, 0))
    assert again.returncode == 0, again.stderr
    assert entries(out) == [SLOW_WHEEL]
    assert wheel_problems(out / SLOW_WHEEL) == []
    assert entries(tmp_root) == [], "the dead run's private dir (or the new run's) was left behind"


# --- 2. SIGTERM, SIGHUP, SIGINT ---------------------------------------------------------------


def with_signal(command: Sequence[str], signum: int, disposition: signal.Handlers) -> list[str]:
    """``command`` (a safe-build command) started with ``signum`` set to ``disposition``.

    An ignored signal stays ignored across exec: a shell starts background jobs with SIGINT
    ignored, ``nohup`` ignores SIGHUP. Setting it in a small Python that then execs the command
    keeps the pid, so the test signals safe-build itself.
    """
    assert command[0] == sys.executable, command
    code = (
        f"import os, signal, sys; signal.signal({int(signum)}, signal.{disposition.name}); "
        "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
    )
    return [sys.executable, "-c", code, *command[1:]]


STOP_MESSAGES = {
    signal.SIGTERM: "stopped by SIGTERM",
    signal.SIGINT: "interrupted",
    signal.SIGHUP: "stopped by SIGHUP",
}


@pytest.mark.parametrize("signum", list(STOP_MESSAGES), ids=lambda signum: signum.name)
def test_stop_signal_mid_build_stops_the_build_group_and_cleans_up(
    signum: signal.Signals,
    make_project: Callable[..., Path],
    env: dict[str, str],
    tmp_path: Path,
    processes: Processes,
) -> None:
    """The backend sleeps for minutes: only safe-build stopping its whole group ends it in time.

    Catches: no handler (no message, wrong code), stopping the frontend only (the backend lives
    on), cleanup skipped on a signal (private dir left), anything published.
    """
    project = make_project("slow")
    marker = processes.watch(tmp_path / "marker")
    out = tmp_path / "out"
    tmp_root = Path(env["SAFE_BUILD_CACHE_DIR"]) / "tmp"
    command = safe_build_command(project, "-n", "--wheel", "-o", out)
    build = processes.start(with_signal(command, signum, signal.SIG_DFL), slow_env(env, marker, 300))
    [backend] = wait_for_starts(marker, 1, [build])
    message = STOP_MESSAGES[signum]

    build.send_signal(signum)
    try:
        _, stderr = build.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"safe-build still runs 15s after {signum.name}")

    assert build.returncode == 128 + signum, stderr
    assert stderr.splitlines()[-1:] == [f"safe-build: error: {message}"], stderr
    assert error_lines(stderr) == [f"safe-build: error: {message}"], stderr
    assert "Traceback" not in stderr
    wait_until(lambda: not alive(backend.pid), 5, f"the backend (pid {backend.pid}) stopped")
    assert group_members(backend.pgid) == [], "part of the build's process group is still running"
    assert entries(tmp_root) == [], "the private dir was not removed"
    assert entries(out) == []


def test_sighup_ignored_at_start_as_under_nohup_stays_ignored(
    make_project: Callable[..., Path], env: dict[str, str], tmp_path: Path, processes: Processes
) -> None:
    """``nohup safe-build ...``: a hangup mid-build must not stop it (exit 129), it must finish."""
    project = make_project("slow")
    marker = processes.watch(tmp_path / "marker")
    out = tmp_path / "out"
    command = safe_build_command(project, "-n", "--wheel", "-o", out)
    build = processes.start(with_signal(command, signal.SIGHUP, signal.SIG_IGN), slow_env(env, marker, 2))
    wait_for_starts(marker, 1, [build])
    build.send_signal(signal.SIGHUP)
    _, stderr = build.communicate(timeout=60)
    assert build.returncode == 0, stderr
    only_wheel(out)


# --- 3. waiting for the project lock ----------------------------------------------------------


def test_in_place_build_waits_for_the_project_lock_and_names_its_holder(
    make_project: Callable[..., Path], env: dict[str, str], tmp_path: Path, processes: Processes
) -> None:
    """B's backend may only start once A's has finished, and B says whom it waits for.

    A's build is paused (SIGSTOP) until B says it waits, then resumes and finishes.
    Catches: in-place builds that do not lock (B's backend starts while A's sleeps), a silent
    wait, a message that does not name the holder.
    """
    project = make_project("slow")
    real_project = Path(os.path.realpath(project))
    marker = processes.watch(tmp_path / "marker")
    out_a, out_b = tmp_path / "out-a", tmp_path / "out-b"
    b_stderr = tmp_path / "b.stderr"
    first = processes.start(
        safe_build_command(project, "--in-place", "-n", "--wheel", "-o", out_a), slow_env(env, marker, 3)
    )
    [a_backend] = wait_for_starts(marker, 1, [first])
    with paused(a_backend):
        second = processes.start(
            safe_build_command(project, "--in-place", "-n", "--wheel", "-o", out_b),
            slow_env(env, marker, 0),
            stderr=b_stderr,
        )

        def b_waits_or_goes_on() -> bool:
            waits = "waiting for the project lock" in b_stderr.read_text()
            return waits or len(starts(marker)) > 1 or second.poll() is not None

        wait_until(b_waits_or_goes_on, START_TIMEOUT, "B waits for the lock (or, wrongly, goes on)")

    ended: dict[str, float] = {}
    overlap: list[Start] = []
    deadline = time.monotonic() + 120
    while len(ended) < 2 and time.monotonic() < deadline:
        seen = starts(marker)
        if len(seen) > 1 and alive(a_backend.pid) and not overlap:
            overlap = seen
        for name, process in (("A", first), ("B", second)):
            if name not in ended and process.poll() is not None:
                ended[name] = time.monotonic()
        time.sleep(POLL_SECONDS)
    _, a_stderr = first.communicate(timeout=30)
    second.communicate(timeout=30)
    b_stderr_text = b_stderr.read_text()

    assert first.returncode == 0, a_stderr
    assert second.returncode == 0, b_stderr_text
    seen = starts(marker)
    assert [start.hook for start in seen] == ["build_wheel", "build_wheel"]
    assert seen[0] == a_backend
    assert overlap == [], "B's backend started while A's was still running"
    assert ended["A"] <= ended["B"], "B finished before A"
    waiting = re.compile(
        rf"safe-build: waiting for the project lock on {re.escape(str(real_project))} "
        rf"\(held by pid {first.pid}: .+, exclusive, for [0-9.]+s\)"
    )
    assert any(waiting.fullmatch(line) for line in b_stderr_text.splitlines()), b_stderr_text
    assert "waiting" not in a_stderr
    only_wheel(out_a)
    only_wheel(out_b)


def test_in_place_build_after_sigkill_waits_for_the_orphaned_build(
    make_project: Callable[..., Path], env: dict[str, str], tmp_path: Path, processes: Processes
) -> None:
    """An in-place build still runs in the tree after its safe-build is SIGKILLed: B must wait for it.

    The orphan sleeps for minutes, so this does not depend on timing: either B starts its backend
    next to the orphan's (the bug) or B says it waits, upon which the test kills the orphan.
    """
    project = make_project("slow")
    marker = processes.watch(tmp_path / "marker")
    first = processes.start(
        safe_build_command(project, "--in-place", "-n", "--wheel", "-o", tmp_path / "out-a"),
        slow_env(env, marker, 300),
    )
    [orphan] = wait_for_starts(marker, 1, [first])
    assert orphan.pgid not in (first.pid, os.getpgrp()), "the build must run in a process group of its own"
    first.kill()
    first.wait()
    b_stderr = tmp_path / "b.stderr"
    second = processes.start(
        safe_build_command(project, "--in-place", "-n", "--wheel", "-o", tmp_path / "out-b"),
        slow_env(env, marker, 0),
        stderr=b_stderr,
    )
    overlap: list[Start] = []
    deadline = time.monotonic() + 120
    while second.poll() is None and time.monotonic() < deadline:
        seen = starts(marker)
        if len(seen) > 1 and alive(orphan.pid):
            overlap = seen
            break
        if "waiting for the project lock" in b_stderr.read_text() and group_members(orphan.pgid):
            os.killpg(orphan.pgid, signal.SIGKILL)  # B waits for the orphan: proven, end the orphan
        time.sleep(POLL_SECONDS)
    assert overlap == [], "B's in-place backend ran in the tree next to the orphaned build of A"
    second.communicate(timeout=60)
    assert second.returncode == 0, b_stderr.read_text()


# --- 4. lock timeout --------------------------------------------------------------------------


def test_lock_timeout_gives_up_with_exit_code_3_and_names_the_holder(
    make_project: Callable[..., Path], env: dict[str, str], tmp_path: Path, processes: Processes
) -> None:
    """--lock-timeout 1 and SAFE_BUILD_LOCK_TIMEOUT=1 both give up while A holds the lock.

    A's build is paused (SIGSTOP) until both have given up, then resumes and finishes.
    Catches: a timeout that is ignored (B waits for A and then succeeds), an environment variable
    that is ignored, a wrong exit code, extra error lines, anything built or published by B.
    """
    project = make_project("slow")
    real_project = Path(os.path.realpath(project))
    marker = processes.watch(tmp_path / "marker")
    tmp_root = Path(env["SAFE_BUILD_CACHE_DIR"]) / "tmp"
    out_a, out_flag, out_env = tmp_path / "out-a", tmp_path / "out-flag", tmp_path / "out-env"
    first = processes.start(
        safe_build_command(project, "--in-place", "-n", "--wheel", "-o", out_a), slow_env(env, marker, 3)
    )
    [a_backend] = wait_for_starts(marker, 1, [first])
    with paused(a_backend):
        by_flag = processes.start(
            safe_build_command(project, "--in-place", "-n", "--wheel", "-o", out_flag, "--lock-timeout", "1"),
            slow_env(env, marker, 0),
        )
        by_env = processes.start(
            safe_build_command(project, "--in-place", "-n", "--wheel", "-o", out_env),
            {**slow_env(env, marker, 0), "SAFE_BUILD_LOCK_TIMEOUT": "1"},
        )
        results = [
            (waiter, outdir, waiter.communicate(timeout=60)[1])
            for waiter, outdir in ((by_flag, out_flag), (by_env, out_env))
        ]

    prefix = f"the project lock on {real_project} (held by pid {first.pid}: "
    for waiter, outdir, stderr in results:
        assert waiter.returncode == 3, stderr
        lines = stderr.splitlines()
        assert error_lines(stderr) == lines[-1:], stderr
        assert lines[-1].startswith(f"safe-build: error: timed out after 1.0s waiting for {prefix}"), stderr
        assert all(line.startswith(f"safe-build: waiting for {prefix}") for line in lines[:-1]), stderr
        assert entries(outdir) == []
    assert starts(marker) == [a_backend], "a build that timed out on the lock ran its backend"

    _, a_stderr = first.communicate(timeout=60)
    assert first.returncode == 0, a_stderr
    only_wheel(out_a)
    assert entries(tmp_root) == []


@pytest.mark.parametrize(
    ("flag", "variable", "shown"),
    [
        (["--lock-timeout", "abc"], None, "'abc' for --lock-timeout"),
        (["--lock-timeout=-1"], None, "'-1' for --lock-timeout"),
        (["--lock-timeout", "nan"], None, "'nan' for --lock-timeout"),
        ([], "-1", "'-1' for SAFE_BUILD_LOCK_TIMEOUT"),
        ([], "soon", "'soon' for SAFE_BUILD_LOCK_TIMEOUT"),
    ],
    ids=["flag-abc", "flag-negative", "flag-nan", "env-negative", "env-word"],
)
def test_invalid_lock_timeout_is_bad_input(
    flag: list[str],
    variable: str | None,
    shown: str,
    make_project: Callable[..., Path],
    env: dict[str, str],
) -> None:
    """Catches: a bad value accepted (the build would run and succeed) or reported as a traceback."""
    project = make_project("setup-py")
    out = project.parent / "out"
    environment = {**env, "SAFE_BUILD_LOCK_TIMEOUT": variable} if variable is not None else env
    result = run(safe_build_command(project, "-n", "--wheel", "-o", out, *flag), environment)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"safe-build: error: invalid value {shown}"), result.stderr
    assert entries(out) == []


# --- 5. concurrent in-place builds ------------------------------------------------------------


@pytest.mark.skipif(not HAVE_PROC, reason="watches the backends through /proc")
def test_concurrent_in_place_builds_take_turns_and_all_succeed(
    make_project: Callable[..., Path], env: dict[str, str], tmp_path: Path, processes: Processes
) -> None:
    """Four in-place setuptools builds of one tree at once (they share build/ and *.egg-info).

    A backend runs in the project directory, so the processes whose working directory it is show
    which builds are inside the tree at a time: never two. Catches: in-place builds that do not
    take turns (setuptools itself often survives that, so the outcome alone would not show it),
    and lock holder records that are not removed on release.
    """
    project = make_project("setuptools")
    outdirs = [tmp_path / f"out{i}" for i in range(4)]
    builds = [
        processes.start(safe_build_command(project, "--in-place", "-n", "--wheel", "-o", outdir), env)
        for outdir in outdirs
    ]
    seen: set[int] = set()
    most_at_once = 0
    deadline = time.monotonic() + 120
    while any(build.poll() is None for build in builds) and time.monotonic() < deadline:
        inside = groups_working_in(project)
        seen |= inside
        most_at_once = max(most_at_once, len(inside))
        time.sleep(POLL_SECONDS)
    for build in builds:
        _, stderr = build.communicate(timeout=60)
        assert build.returncode == 0, stderr

    assert len(seen) >= 2, f"saw {len(seen)} builds in the tree: the watch is broken"
    assert most_at_once == 1, f"{most_at_once} in-place builds ran in the tree at once"
    contents = []
    for outdir in outdirs:
        wheel = only_wheel(outdir)
        names = members(wheel)
        assert {"demo_setuptools/__init__.py", "demo_setuptools/core.py"} <= set(names), names
        contents.append(names)
    assert all(names == contents[0] for names in contents), contents
    locks = Path(env["SAFE_BUILD_CACHE_DIR"]) / "locks"
    assert [path.name for path in locks.glob("*.holders/*")] == [], "holder records left behind"


# --- 6. copy-mode builds run at the same time -------------------------------------------------


def test_copy_mode_builds_of_one_project_do_not_wait_for_each_other(
    make_project: Callable[..., Path], env: dict[str, str], tmp_path: Path, processes: Processes
) -> None:
    """Each backend is paused (SIGSTOP) as soon as it starts: all four still get to start.

    So all four builds were in their backends at the same time and nobody waited for anybody.
    Catches: copy-mode builds that hold the project lock exclusive, or for the whole build (the
    others would then wait for the paused one: only one backend would ever start).
    """
    project = make_project("slow")
    marker = processes.watch(tmp_path / "marker")
    outdirs = [tmp_path / f"out{i}" for i in range(4)]
    builds = [
        processes.start(safe_build_command(project, "-n", "--wheel", "-o", outdir), slow_env(env, marker, 3))
        for outdir in outdirs
    ]
    with contextlib.ExitStack() as pauses:
        seen: list[Start] = []
        deadline = time.monotonic() + START_TIMEOUT
        while len(seen) < 4 and time.monotonic() < deadline:
            for start in starts(marker)[len(seen) :]:
                pauses.enter_context(paused(start))
                seen.append(start)
            if any(build.poll() is not None for build in builds):
                break
            time.sleep(POLL_SECONDS)
        assert len(seen) == 4, f"only {len(seen)} of 4 backends started while the others were paused"
        assert [alive(start.pid) for start in seen] == [True] * 4
        assert len({start.pgid for start in seen}) == 4

    for build, outdir in zip(builds, outdirs, strict=True):
        _, stderr = build.communicate(timeout=60)
        assert build.returncode == 0, stderr
        only_wheel(outdir)


# --- 7. temporaries of dead writers -----------------------------------------------------------


def test_lock_files_are_the_owners_alone_and_a_link_in_their_place_is_not_followed(tmp_path: Path) -> None:
    """Under umask 000 a lock file is still 0600: another user who could open it could hold it and
    make every build wait. A link planted at a lock file's path is refused, never followed."""
    old = os.umask(0)
    try:
        own = NamedLock(tmp_path / "locks/own.lock", what="test", subject="x", timeout=1, rank=1)
        with own.hold("exclusive"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "locks/own.lock").stat().st_mode) == 0o600
    victim = tmp_path / "victim"
    victim.write_text("not a lock file\n")
    (tmp_path / "locks/planted.lock").symlink_to(victim)
    with (
        pytest.raises(SafeBuildError, match="Too many levels of symbolic links"),
        NamedLock(tmp_path / "locks/planted.lock", what="test", subject="x", timeout=1, rank=1).hold(
            "shared"
        ),
    ):
        pass
    assert victim.read_text() == "not a lock file\n"


def test_a_lock_file_replaced_while_a_process_waits_for_it_is_taken_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The waiter opened the old file; the holder's file was removed and a new one made before the
    waiter got its lock. A lock on the removed file would protect nothing: the waiter must lock
    the file the path names now, which a third process holds."""
    lock_file = tmp_path / "project.lock"
    lock = NamedLock(lock_file, what="project", subject="p", timeout=0.5, rank=1)
    third = None
    real_try_lock = locks._try_lock

    def replaced_first(fd: int, operation: int, path: Path) -> bool:
        nonlocal third
        if third is None:  # between the waiter's open and its lock: replace the file, hold the new one
            lock_file.unlink()
            third = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(third, fcntl.LOCK_EX)
        return real_try_lock(fd, operation, path)

    monkeypatch.setattr(locks, "_try_lock", replaced_first)
    with pytest.raises(LockTimeout), lock.hold("exclusive"):
        pass
    assert third is not None
    os.close(third)
