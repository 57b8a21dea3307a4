"""What a user sees: python -m build's output at each verbosity, a cache hit's warnings, the status line.

Real safe-build and ``python -m build`` processes on a setuptools project that setuptools warns
about (``project.license`` as a TOML table, a license classifier). Each level's safe-build stderr
must equal plain build's line for line, after :func:`normalised` has made equal what must differ:
the output directories, the random names of temporary files and build environments. safe-build's
own ``-v`` lines are expected on top. The status line is looked at under a real pseudo-terminal.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from safe_build import state as states
from tests.conftest import PROJECTS, plain_build_command, run, safe_build_command, write_files

WARNED = {
    "pyproject.toml": textwrap.dedent(
        """\
        [build-system]
        requires = ["setuptools>=77"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "demo-warned"
        version = "1.0"
        license = {text = "MIT"}
        classifiers = ["License :: OSI Approved :: MIT License"]
        """
    ),
    "src/demo_warned/__init__.py": "VALUE = 1\n",
}
WHEEL = "demo_warned-1.0-py3-none-any.whl"
LEVELS = {"default": [], "-q": ["-q"], "-qq": ["-qq"], "-v": ["-v"]}
# what safe-build says at -v about itself, before the build's own steps
OWN_VERBOSE = ("* Isolation: ", "* cache-dir = ", "* Copied the project: ")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
MARKER = re.compile(r" \(from cache, built \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\)$")
STATUS = re.compile(rb"\rsafe-build: [^\r\n]*?\x1b\[K")


def normalised(text: str, outdir: Path) -> list[str]:
    """``text``'s lines, with what must differ between two builds made equal: the output
    directory, random temporary names, where a build environment lies."""
    text = ANSI.sub("", text).replace(str(outdir), "OUTDIR")
    for random_name in (r"\.tmp-", r"build-env-", r"build-requirements-", r"build-via-sdist-"):
        text = re.sub(rf"{random_name}[A-Za-z0-9_]+", f"{random_name}X", text)
    text = re.sub(r"--python \S+/bin/python", "--python ENV/bin/python", text)
    return text.splitlines()


def warning_blocks(lines: list[str]) -> list[str]:
    """Each ``WARNING …`` line with the lines after it up to the next step, warning or ``Successfully``."""
    blocks: list[list[str]] = []
    for line in lines:
        if line.startswith("WARNING "):
            blocks.append([line])
        elif line.startswith(("* ", "Successfully built")):
            blocks.append([])
        elif blocks and blocks[-1]:
            blocks[-1].append(line)
    return ["\n".join(block) for block in blocks if block]


@pytest.fixture
def output_env(env: dict[str, str]) -> dict[str, str]:
    # one line per message: build's logger wraps at the terminal's width
    return {**env, "COLUMNS": "1000", "NO_COLOR": "1"}


@pytest.mark.parametrize("level", list(LEVELS))
def test_each_verbosity_shows_what_plain_build_shows_and_a_hit_its_warnings(
    level: str, tmp_path: Path, output_env: dict[str, str]
) -> None:
    flags = LEVELS[level]
    project = write_files(tmp_path / "project", WARNED)
    ours_out, plain_out = tmp_path / "ours", tmp_path / "plain"
    ours = run(safe_build_command(project, "--wheel", "-o", ours_out, *flags), output_env, cwd=tmp_path)
    assert ours.returncode == 0, ours.stderr
    hit = run(
        safe_build_command(project, "--wheel", "-o", tmp_path / "again", *flags), output_env, cwd=tmp_path
    )
    assert hit.returncode == 0, hit.stderr
    # plain build last: it writes its egg-info and build/ into the project
    plain = run(plain_build_command(project, "--wheel", "-o", plain_out, *flags), output_env, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr

    theirs = normalised(plain.stderr, plain_out)
    assert any(line.startswith("WARNING `project.license` as a TOML table") for line in theirs), theirs
    first = normalised(ours.stderr, ours_out)
    if level == "-v":
        own = [line for line in first if line.startswith(OWN_VERBOSE)]
        assert [line.startswith(prefix) for line, prefix in zip(own, OWN_VERBOSE, strict=True)] == [True] * 3
        first = [line for line in first if line not in own]
    assert first == theirs
    assert normalised(ours.stdout, ours_out) == normalised(plain.stdout, plain_out)
    assert not [line for line in first if line.startswith("safe-build:")]
    private = Path(output_env["SAFE_BUILD_CACHE_DIR"]) / "tmp"  # the snapshot, the private output
    assert str(private) not in ours.stderr + ours.stdout

    # the hit: no build steps, the distinct warnings the build showed, each marked, then the summary
    again = normalised(hit.stderr, tmp_path / "again")
    if level == "-v":
        assert [line for line in again if line.startswith(OWN_VERBOSE)] == again[:2]
        again = again[2:]
    if level != "-qq":
        assert re.fullmatch(
            r"\* Reusing cache entry [0-9a-f]{12}, built \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", again[0]
        )
        again = again[1:]
    replayed = warning_blocks(again)
    assert "\n".join(replayed) == "\n".join(again)  # nothing but the warnings
    assert all(MARKER.search(block.splitlines()[0]) for block in replayed), replayed
    unmarked = [
        MARKER.sub("", block.splitlines()[0]) + block[len(block.splitlines()[0]) :] for block in replayed
    ]
    assert unmarked == list(dict.fromkeys(warning_blocks(theirs)))
    assert hit.stdout.strip() == ("" if level == "-qq" else f"Successfully built {WHEEL}")
    assert ours.stdout.strip().splitlines()[-1:] == (
        [] if level == "-qq" else [f"Successfully built {WHEEL}"]
    )


def test_the_default_build_differs_from_plain_build_only_where_it_reuses_an_environment(
    tmp_path: Path, output_env: dict[str, str]
) -> None:
    """sdist, then a wheel from it: the wheel's environment is the sdist's, reused, not made again."""
    project = write_files(tmp_path / "project", WARNED)
    ours = run(safe_build_command(project, "-o", tmp_path / "ours"), output_env, cwd=tmp_path)
    plain = run(plain_build_command(project, "-o", tmp_path / "plain"), output_env, cwd=tmp_path)
    assert (ours.returncode, plain.returncode) == (0, 0), ours.stderr + plain.stderr
    theirs = normalised(plain.stderr, tmp_path / "plain")
    first = normalised(ours.stderr, tmp_path / "ours")
    second_env = [i for i, line in enumerate(theirs) if line.startswith("* Creating isolated environment")][1]
    [reused] = [i for i, line in enumerate(first) if line.startswith("* Using cached isolated environment: ")]
    assert first[:reused] == theirs[:second_env]
    assert first[reused + 1 :] == theirs[second_env + 3 :]  # "Installing packages…" and its one requirement
    assert normalised(ours.stdout, tmp_path / "ours") == normalised(plain.stdout, tmp_path / "plain")


def test_a_cache_entry_keeps_the_output_private_and_verified(
    tmp_path: Path, output_env: dict[str, str]
) -> None:
    project = write_files(tmp_path / "project", WARNED)
    assert run(safe_build_command(project, "--wheel", "-q"), output_env).returncode == 0
    cache = Path(output_env["SAFE_BUILD_CACHE_DIR"])
    [entry] = [path.parent for path in (cache / "wheels").glob(f"*/*/{WHEEL}")]
    record = json.loads((entry / "entry.json").read_text())
    assert any(text.startswith("`project.license` as a TOML table") for text in record["warnings"])
    log = entry / "output.log"
    assert (log.stat().st_mode & 0o777, record["log"]["size"]) == (0o600, log.stat().st_size)
    assert "Building wheel..." in log.read_text()
    log.chmod(0o600)
    log.write_text(log.read_text().replace("deprecated", "fine"))  # a changed log: the entry is damaged
    again = run(safe_build_command(project, "--wheel", "-q"), output_env)
    assert again.returncode == 0, again.stderr
    assert "Reusing cache entry" not in again.stderr
    assert "from cache" not in again.stderr


@pytest.mark.parametrize(("flags", "shown"), [([], True), (["-qq"], False)])
def test_lock_waits_are_shown_except_with_qq(
    flags: list[str], shown: bool, tmp_path: Path, output_env: dict[str, str]
) -> None:
    project = write_files(tmp_path / "project", PROJECTS["flit"])
    state = states.at(Path(output_env["SAFE_BUILD_CACHE_DIR"]), lock_timeout=10)
    with state.project_lock(project.resolve()).hold("exclusive"):
        result = run(
            safe_build_command(project, "--wheel", "-n", "--lock-timeout", "1.5", *flags), output_env
        )
    assert result.returncode == 3, result.stderr
    waiting = [line for line in result.stderr.splitlines() if line.startswith("safe-build: waiting for")]
    assert len(waiting) == (1 if shown else 0), result.stderr
    assert result.stderr.splitlines()[-1].startswith("safe-build: error: timed out")


# --- the status line ---------------------------------------------------------------------------


def under_terminal(command: list[str], env: dict[str, str], cwd: Path) -> tuple[int, bytes]:
    """Run ``command`` with stdout and stderr a pseudo-terminal; its exit code and all it wrote."""
    leader, follower = os.openpty()
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=env, cwd=cwd
    )
    os.close(follower)
    written = b""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: every writer is gone
                break
            if not chunk:
                break
            written += chunk
        elif process.poll() is not None:
            break
    os.close(leader)
    return process.wait(timeout=60), written


@pytest.fixture
def slow_env(env: dict[str, str]) -> dict[str, str]:
    environment = {**env, "SLOW_BACKEND_SECONDS": "2.5", "TERM": "xterm"}
    environment.pop("NO_COLOR", None)
    return environment


def test_a_slow_build_on_a_terminal_shows_a_status_line_and_erases_it(
    tmp_path: Path, slow_env: dict[str, str]
) -> None:
    project = write_files(tmp_path / "slow", PROJECTS["slow"])
    code, written = under_terminal(safe_build_command(project, "--wheel"), slow_env, tmp_path)
    assert code == 0, written.decode(errors="replace")
    draws = list(STATUS.finditer(written))
    assert draws, written.decode(errors="replace")
    shown = [draw.group().decode() for draw in draws]
    assert any(
        re.search(r"safe-build: building slow: Building wheel\.\.\. \(\d+s\)", text) for text in shown
    ), shown
    # every status line is erased (or redrawn) before anything else is written after it
    for draw in draws:
        assert written[draw.end() :].startswith(b"\r"), written[draw.end() : draw.end() + 80]
    # the ticker may draw once more after the child's last line, before the child exits: what stays
    # on the screen once the drawn and erased status lines are taken out ends with build's last line
    on_screen = STATUS.sub(b"", written).replace(b"\r\x1b[K", b"")
    assert on_screen.rstrip().endswith(
        b"Successfully built \x1b[4mslow-1.0-py3-none-any.whl\x1b[0m\x1b[1m\x1b[92m\x1b[0m"
    ), on_screen[-300:]


@pytest.mark.parametrize("flags", [["-q"], ["-qq"]])
def test_quiet_on_a_terminal_has_no_status_line(
    flags: list[str], tmp_path: Path, slow_env: dict[str, str]
) -> None:
    project = write_files(tmp_path / "slow", PROJECTS["slow"])
    code, written = under_terminal(safe_build_command(project, "--wheel", *flags), slow_env, tmp_path)
    assert code == 0, written.decode(errors="replace")
    assert b"safe-build: building" not in written
    assert b"\x1b[K" not in written


def test_off_a_terminal_there_is_no_status_line(tmp_path: Path, slow_env: dict[str, str]) -> None:
    project = write_files(tmp_path / "slow", PROJECTS["slow"])
    result = run(safe_build_command(project, "--wheel"), slow_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "safe-build" not in result.stderr
    assert "\r" not in result.stderr + result.stdout
    assert "\x1b" not in result.stderr + result.stdout  # nor colours: as build, off a terminal


def test_colours_follow_no_color_and_force_color_as_in_build(
    tmp_path: Path, output_env: dict[str, str]
) -> None:
    """Off a terminal, FORCE_COLOR colours build's lines and safe-build's own alike."""
    project = write_files(tmp_path / "project", WARNED)
    coloured = {**output_env, "FORCE_COLOR": "1"}
    coloured.pop("NO_COLOR")
    first = run(safe_build_command(project, "--wheel", "-q"), coloured)
    hit = run(safe_build_command(project, "--wheel", "-q"), coloured)
    assert "\x1b[93mWARNING\x1b[0m `project.license`" in first.stderr
    assert "\x1b[93mWARNING\x1b[0m `project.license`" in hit.stderr
    assert "\x1b[1m* Reusing cache entry" in hit.stderr
    assert hit.stdout.startswith("\x1b[1m\x1b[92mSuccessfully built \x1b[4m")
    plain = run(safe_build_command(project, "--wheel", "-q"), output_env)  # NO_COLOR
    assert "\x1b" not in plain.stderr + plain.stdout


def test_a_lock_wait_on_a_terminal_shows_who_holds_the_lock(tmp_path: Path, slow_env: dict[str, str]) -> None:
    project = write_files(tmp_path / "project", PROJECTS["flit"])
    state = states.at(Path(slow_env["SAFE_BUILD_CACHE_DIR"]), lock_timeout=10)
    command = safe_build_command(project, "--wheel", "-n", "--lock-timeout", "2.5")
    with state.project_lock(project.resolve()).hold("exclusive"):
        code, written = under_terminal(command, {**slow_env, "COLUMNS": "400"}, tmp_path)
    assert code == 3, written.decode(errors="replace")
    shown = [draw.group().decode() for draw in STATUS.finditer(written)]
    held = f"\rsafe-build: waiting for pid {os.getpid()} ("
    released = f") to release the project lock on {project.resolve()} ("
    assert any(text.startswith(held) and released in text and text.endswith("s)\x1b[K") for text in shown), (
        shown
    )
    for draw in STATUS.finditer(written):
        assert written[draw.end() :].startswith(b"\r"), written[draw.end() : draw.end() + 80]
