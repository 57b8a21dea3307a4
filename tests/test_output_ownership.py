"""Who owns a temporary in the output directory: whoever holds its flock, never a pid.

A writer publishing into the user's output directory keeps an exclusive flock on its hidden
temporary until the file is in place; ``remove_dead_temporaries`` removes only temporaries nobody
holds. A pid in the name would mean nothing to a builder in another pid namespace (a container
sharing a bind-mounted ``dist/``), which then removed the other's temporary mid-write.

Real processes: writers are ``python -c`` children using publish's own functions, told when to go
on through their stdin; nothing waits by sleeping. Each test says what it would catch.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from safe_build import publish
from tests.conftest import safe_build_command, wheel_problems, write_files

WHEEL = "x-1.0-py3-none-any.whl"
UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc"]  # a new pid namespace, its own /proc

# A writer that stops half-way: it has its temporary (written to, still locked), says "ready" and
# waits on stdin. At end of input it ends with os._exit, so no clean-up runs: its temporary stays
# behind like a killed writer's, and only the kernel lets go of its lock.
HALF_WAY_WRITER = textwrap.dedent(
    """\
    import os
    import sys
    from pathlib import Path

    from safe_build import publish

    out, writer = Path(sys.argv[1]), sys.argv[2]
    if writer == "replacing":
        held = publish.replacing(out / "x-1.0-py3-none-any.whl")
    else:
        held = publish._staged(out.parent / "x-1.0-py3-none-any.whl", out)
    with held as temporary:
        if writer == "replacing":
            temporary.write(b"partial")
            temporary.flush()
        print("ready", flush=True)
        sys.stdin.read()
        os._exit(0)
    """
)


def temporaries(directory: Path) -> list[Path]:
    return sorted(path for path in directory.iterdir() if path.name.endswith(".safe-build-tmp"))


def require_pid_namespaces() -> None:
    """Skip unless this process may start others in a new pid namespace."""
    if os.geteuid() != 0:
        pytest.skip("needs root for unshare --pid")
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    probe = subprocess.run([*UNSHARE, "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"unshare --pid does not work here: {probe.stderr.decode().strip()}")


@dataclass
class Writer:
    """A HALF_WAY_WRITER child, and its pid here (the python, not an unshare around it)."""

    process: subprocess.Popen[str]
    pid: int


@pytest.fixture
def half_way_writer() -> Iterator[Callable[[Path, str, str], Writer]]:
    """Starts HALF_WAY_WRITER children, here or in a new pid namespace; kills any a test left."""
    started: list[subprocess.Popen[str]] = []

    def start(out: Path, writer: str, where: str) -> Writer:
        command = [sys.executable, "-c", HALF_WAY_WRITER, str(out), writer]
        if where == "namespace":
            require_pid_namespaces()
            command = [*UNSHARE, "--kill-child", *command]
        child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        started.append(child)
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        if where == "here":
            return Writer(child, child.pid)
        # the python is unshare's one child, running (it said "ready"), pid 1 in its namespace
        [inner] = Path(f"/proc/{child.pid}/task/{child.pid}/children").read_text().split()
        return Writer(child, int(inner))

    yield start
    for child in started:
        if child.poll() is None:
            child.kill()
        child.wait()
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()


# --- 1. the lock decides -----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["here", "namespace"])
@pytest.mark.parametrize("ending", ["exits", "killed"])
@pytest.mark.parametrize("writer", ["replacing", "staged"])
def test_a_live_writers_temporary_survives_and_is_removed_once_the_writer_is_gone(
    writer: str,
    ending: str,
    where: str,
    half_way_writer: Callable[[Path, str, str], Writer],
    tmp_path: Path,
) -> None:
    """Catches: a live writer's temporary removed (in another pid namespace its pid means nothing
    here, or names someone else), or a gone writer's temporary left forever. Both writers:
    ``replacing`` (memos, entry.json) and ``_staged`` (the all-or-none publication of artifacts)."""
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / WHEEL).write_bytes(b"artifact" * 1000)  # what the staged writer copies
    started = half_way_writer(out, writer, where)
    child = started.process
    [temporary] = temporaries(out)
    # no pid in the name any more: it would mean nothing to a cleaner in another pid namespace
    assert re.fullmatch(rf"\.{re.escape(WHEEL)}\.[^.]+\.safe-build-tmp", temporary.name), temporary.name
    content = temporary.read_bytes()

    for _ in range(3):
        publish.remove_dead_temporaries(out)
    assert temporaries(out) == [temporary], "a live writer's temporary was removed"
    assert temporary.read_bytes() == content

    if ending == "exits":
        assert child.stdin is not None
        child.stdin.close()
        assert child.wait(timeout=30) == 0
    else:
        # the python itself; an unshare around it reaps it before it exits (of the same signal,
        # or with 1 where it fails to raise that), so once that is waited for the writer is gone
        os.kill(started.pid, signal.SIGKILL)
        status = child.wait(timeout=30)
        assert status == -signal.SIGKILL if where == "here" else status != 0
    assert temporaries(out) == [temporary], "the writer was meant to leave its temporary behind"
    publish.remove_dead_temporaries(out)
    assert sorted(os.listdir(out)) == [], "a gone writer's temporary was left"


def test_unlocked_temporaries_are_removed_and_nothing_else_is_touched(tmp_path: Path) -> None:
    """Catches: a killed writer's leftover kept (new names, and the pid names of older versions,
    whatever the pid: only the lock counts); or removing, following or opening (a FIFO would hang
    the open) anything that is not a plain file of ours."""
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "outside.whl"
    outside.write_text("not ours")
    left = [
        out / f".{WHEEL}.k2j4abcd.safe-build-tmp",
        out / f".{WHEEL}.abcdefgh.{os.getpid()}.safe-build-tmp",  # older version's name, a live pid
        out / f".{WHEEL}.hgfedcba.999999.safe-build-tmp",
    ]
    for path in left:
        path.write_bytes(b"partial")
    kept = {
        "notes.txt": "file",
        f"{WHEEL}.abcdefgh.safe-build-tmp": "file",  # not hidden: not a name of ours
        f".{WHEEL}.abcdefgh.safe-build-tmp.bak": "file",
        f".{WHEEL}.dir00000.safe-build-tmp": "dir",
        f".{WHEEL}.link0000.safe-build-tmp": "link",
        f".{WHEEL}.dangling.safe-build-tmp": "dangling",
        f".{WHEEL}.fifo0000.safe-build-tmp": "fifo",
    }
    for name, kind in kept.items():
        path = out / name
        if kind == "file":
            path.write_text("keep")
        elif kind == "dir":
            path.mkdir()
            (path / "inside").write_text("keep")
        elif kind == "link":
            path.symlink_to(outside)
        elif kind == "dangling":
            path.symlink_to(tmp_path / "nowhere")
        else:
            os.mkfifo(path)

    publish.remove_dead_temporaries(out)

    assert sorted(os.listdir(out)) == sorted(kept)
    assert outside.read_text() == "not ours"
    assert (out / f".{WHEEL}.dir00000.safe-build-tmp" / "inside").read_text() == "keep"
    assert (out / f".{WHEEL}.link0000.safe-build-tmp").readlink() == outside


def test_a_temporary_removed_before_its_writer_locked_it_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between mkstemp and flock the new file is nobody's: a cleaner may remove it right then.
    Catches: the writer locking (and writing) a file no longer at its name, so that its rename
    into place fails."""
    final = tmp_path / "entry.json"
    real_flock = fcntl.flock
    cleaned: list[list[Path]] = []

    def cleaner_first(fd: int, operation: int) -> None:
        if not cleaned and operation == fcntl.LOCK_EX:  # the writer's first lock, not the cleaner's
            cleaned.append(temporaries(tmp_path))
            publish.remove_dead_temporaries(tmp_path)
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", cleaner_first)
    publish.write_text_atomically(final, "complete\n")
    assert len(cleaned[0]) == 1, "the cleaner ran before the writer's first lock"
    assert not cleaned[0][0].exists()
    assert final.read_text() == "complete\n"
    assert sorted(os.listdir(tmp_path)) == ["entry.json"]


@pytest.mark.parametrize("writer", ["replacing", "place_files"])
def test_a_temporary_is_still_owned_when_it_is_renamed_into_place(
    writer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catches: a writer letting go of its lock after the copy but before the rename, when a
    cleaner would take the complete file away from under it."""
    out = tmp_path / "out"
    out.mkdir()
    real_replace = os.replace
    seen = []

    def cleaner_first(source: str, target: str | Path) -> None:
        seen.append(Path(source).name)
        publish.remove_dead_temporaries(out)
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", cleaner_first)
    if writer == "replacing":
        publish.write_text_atomically(out / "entry.json", "complete\n")
        expected = {"entry.json": b"complete\n"}
    else:
        sources = [tmp_path / WHEEL, tmp_path / "x-1.0.tar.gz"]
        for source in sources:
            source.write_bytes(source.name.encode() * 1000)
        publish.place_files(sources, out)
        expected = {source.name: source.read_bytes() for source in sources}
    assert len(seen) == len(expected), "the cleaner ran before every rename"
    assert all(name.endswith(".safe-build-tmp") for name in seen)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == expected


def test_publication_still_copies_modes_and_leaves_no_temporaries(tmp_path: Path) -> None:
    """Catches: the rework losing the copied mode or leaving its (locked) temporaries behind."""
    sources = [tmp_path / WHEEL, tmp_path / "x-1.0.tar.gz"]
    for mode, source in zip((0o644, 0o600), sources, strict=True):
        source.write_bytes(source.name.encode() * 100)
        source.chmod(mode)
    placed = publish.place_files(sources, tmp_path / "out")
    assert [path.name for path in placed] == [WHEEL, "x-1.0.tar.gz"]
    assert sorted(os.listdir(tmp_path / "out")) == sorted([WHEEL, "x-1.0.tar.gz"])
    for source, path in zip(sources, placed, strict=True):
        assert path.read_bytes() == source.read_bytes()
        assert path.stat().st_mode == source.stat().st_mode


# --- 2. a builder in another pid namespace, same output directory ------------------------------

ROUNDS = 10
PAYLOAD_BYTES = 50 << 20  # incompressible: the wheel is as large, so its copy and fsync take a while
GATE_TIMEOUT = 300.0  # for both builds to have their wheel, even on a loaded machine

# setuptools, except that a finished wheel is handed back only when the test opens the gate: it
# says it is there (a byte into the FIFO $BIG_READY), then waits for a shared lock on $BIG_GATE,
# which the test holds until both builds are there. Left alone, two builds finish far enough apart
# (their wheels' 50 MB deflated on a busy machine) that one has published before the other starts,
# and the old pid check passed 40 of 40 such builds here.
GATED_BACKEND = textwrap.dedent(
    """\
    import fcntl
    import os

    from setuptools import build_meta as _setuptools
    from setuptools.build_meta import *  # noqa: F403


    def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
        name = _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)
        with open(os.environ["BIG_READY"], "wb", buffering=0) as ready:
            ready.write(b".")
        gate = os.open(os.environ["BIG_GATE"], os.O_RDONLY)
        fcntl.flock(gate, fcntl.LOCK_SH)
        os.close(gate)
        return name
    """
)


@pytest.fixture(scope="session")
def payload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """50 MB of random bytes, made once per session."""
    path = tmp_path_factory.mktemp("payload") / "data.bin"
    path.write_bytes(os.urandom(PAYLOAD_BYTES))
    return path


def big_project(root: Path, payload: Path) -> Path:
    """A setuptools project whose wheel carries ``payload`` as package data (gated, see above)."""
    write_files(
        root,
        {
            "pyproject.toml": textwrap.dedent(
                """\
                [build-system]
                requires = ["setuptools>=69"]
                build-backend = "gated_backend"
                backend-path = ["."]

                [project]
                name = "big"
                version = "1.0"

                [tool.setuptools]
                packages = ["big"]

                [tool.setuptools.package-data]
                big = ["data.bin"]
                """
            ),
            "gated_backend.py": GATED_BACKEND,
            "big/__init__.py": "VALUE = 1\n",
        },
    )
    shutil.copyfile(payload, root / "big" / "data.bin")
    return root


def pid_unused_here() -> int:
    """A pid no process has here, far from the ones being handed out now."""
    limit = int(Path("/proc/sys/kernel/pid_max").read_text())
    last = int(Path("/proc/sys/kernel/ns_last_pid").read_text())
    for step in range(limit // 2, limit):
        pid = (last + step) % limit
        if pid <= 1:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            continue
    raise AssertionError("every pid is taken")


def in_new_pid_namespace(command: list[str], pid: int) -> list[str]:
    """``command`` in a new pid namespace, as its ``pid`` where the kernel lets the namespace's
    root choose (ns_last_pid), else as its pid 2. A shell forks it ("; exit"), so it is not pid 1."""
    script = 'echo $(($0 - 1)) 2>/dev/null >/proc/sys/kernel/ns_last_pid; "$@"; exit $?'
    return [*UNSHARE, "sh", "-c", script, str(pid), *command]


def run_through_gate(
    commands: list[list[str]], env: dict[str, str], gate: Path, ready: int, logs: Path
) -> list[str]:
    """Run ``commands`` at once, their backends let go together; what went wrong (exit codes)."""
    gate_fd = os.open(gate, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(gate_fd, fcntl.LOCK_EX)
    processes = []
    try:
        for number, command in enumerate(commands):
            with (logs / f"{number}.err").open("w") as err:
                processes.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err))
        # a build that ends before its backend got to the gate must not keep the test waiting
        ended = {os.pidfd_open(process.pid): process for process in processes}
        try:
            arrived = 0
            while arrived < len(commands):
                readable, _, _ = select.select([ready, *ended], [], [], GATE_TIMEOUT)
                assert readable, f"the builds did not reach the gate in {GATE_TIMEOUT:.0f} s"
                if ready not in readable:
                    break  # one ended early: its failure is counted below
                arrived += len(os.read(ready, len(commands)))
        finally:
            for pidfd in ended:
                os.close(pidfd)
    finally:
        os.close(gate_fd)  # opens the gate
        for process in processes:
            process.wait(timeout=GATE_TIMEOUT)
    return [
        f"{' '.join(command[:2])}...: exit {process.returncode}: "
        f"{(logs / f'{number}.err').read_text().strip().splitlines()[-1:]}"
        for number, (command, process) in enumerate(zip(commands, processes, strict=True))
        if process.returncode != 0
    ]


def test_a_host_build_and_a_build_in_another_pid_namespace_share_an_output_directory(
    payload: Path, tmp_path: Path
) -> None:
    """Catches: a build judging the other's temporary dead by its pid (in the other namespace the
    pid names nobody, or someone else) and removing it mid-write: the other's publication fails
    ("cannot write ...", or "No such file or directory: <its temporary>" when its rename finds the
    temporary gone), or the output directory ends up without the wheel.

    The namespace's safe-build gets a pid no process has here (as a container's builder would: its
    own pid 1 would be init's here), so that with pids each build would remove the other's
    temporary. Both builds wait at a gate with their wheel ready, so that they publish at once."""
    require_pid_namespaces()
    project = big_project(tmp_path / "big", payload)
    dist = tmp_path / "dist"
    cache = tmp_path / "cache"  # both builds' private work directories, as on one machine
    command = safe_build_command(
        project, "--wheel", "--no-isolation", "--no-cache", "--cache-dir", cache, "-o", dist
    )
    ready = tmp_path / "ready"
    os.mkfifo(ready)
    # read and write: the builders' opens for writing never block, and it never reads end of file
    ready_fd = os.open(ready, os.O_RDWR)
    env = {
        **os.environ,
        "PIP_NO_INDEX": "1",
        "SAFE_BUILD_CACHE_DIR": str(cache),
        "BIG_READY": str(ready),
        "BIG_GATE": str(tmp_path / "gate"),
    }

    failures = []
    started = time.monotonic()
    try:
        for round_number in range(ROUNDS):
            shutil.rmtree(dist, ignore_errors=True)
            logs = tmp_path / f"round{round_number}"
            logs.mkdir()
            commands = [command, in_new_pid_namespace(command, pid_unused_here())]
            ended = run_through_gate(commands, env, tmp_path / "gate", ready_fd, logs)
            failures += [f"round {round_number}: {failure}" for failure in ended]
            names = sorted(os.listdir(dist)) if dist.exists() else []
            if names != ["big-1.0-py3-none-any.whl"]:
                failures.append(f"round {round_number}: dist holds {names}")
                continue
            wheel = dist / names[0]
            assert wheel.stat().st_size > PAYLOAD_BYTES
            failures += [f"round {round_number}: {problem}" for problem in wheel_problems(wheel)]
    finally:
        os.close(ready_fd)
    took = time.monotonic() - started
    print(f"{ROUNDS} rounds of 2 builds in {took:.0f} s: {len(failures)} failures")
    assert failures == [], f"{len(failures)} failures in {ROUNDS} rounds ({took:.0f} s): {failures}"
