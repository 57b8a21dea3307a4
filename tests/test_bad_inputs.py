"""Bad input, case by case: the one error line, the exit code, and nothing written.

Real safe-build, safe-pip and pip processes on real files. Every case runs against one prepared
world: a flit project, an output directory holding its wheel, a cache holding that wheel's entry
and the build environment it was built in, and a venv. A snapshot of the world and of the
case's own directory, taken once the case has set up its bad input and again after the command,
must be equal: refusing an input writes nothing. Only safe-build's bookkeeping may appear in the
cache and the venv, since lock files are never deleted and the key's stat memo is kept for the
next build.

Unreadable and unwritable places are made with chmod; as root, the command then runs without the
capabilities that let root ignore permissions (setpriv drops them from its bounding set). A full
disk is a small tmpfs, mounted only as root.

A damaged cache entry is not refused: it is rebuilt, and never published; its cases are below.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from safe_build import gitmeta, state
from safe_build.state import ENVIRONMENT_LOCK_NAME
from tests.conftest import (
    PROJECTS,
    members,
    offline_env,
    run,
    safe_build_command,
    tree_state,
    wheel_problems,
    write_files,
    write_project,
)

WHEEL = "demo_flit-3.0-py2.py3-none-any.whl"
FLIT_TOML = PROJECTS["flit"]["pyproject.toml"]
# what a refused command may add: lock files and their holders' records, the key's stat memo
BUILD_FAILED = "see the build output above; nothing was written to the output directory"
STATE_HINT = (
    "where safe-build keeps its locks and private files; "
    "make room or fix its permissions, or choose another cache directory with --cache-dir or "
    "SAFE_BUILD_CACHE_DIR"
)
SECONDS_HINT = "give a number of seconds, 0 or more, such as 600 (0 means: do not wait at all)"
DAYS_HINT = "give a number of days, 0 or more, such as 7 or 0.5 (0 means: a new build environment each time)"
ENVIRONMENT_LOCK_FILES = (ENVIRONMENT_LOCK_NAME, f"{ENVIRONMENT_LOCK_NAME}.holders")  # in a venv
UNPRIVILEGED = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")
TIMEOUT = 120  # a refusal is quick: a command still running after this hangs


@dataclass(frozen=True)
class World:
    """What every case runs against, and must leave as it was."""

    root: Path
    env: dict[str, str]
    project: Path
    outdir: Path
    cache: Path
    venv: Path
    file: Path  # a plain file, for where a directory is expected

    @classmethod
    def at(cls, root: Path, wheelhouse: Path) -> World:
        env = {**os.environ, **offline_env(wheelhouse, root / "cache")}
        names = ("project", "out", "cache", "venv", "file.txt")
        return cls(root, env, *(root / name for name in names))


@pytest.fixture(scope="module")
def world(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> World:
    """Built once: an isolated --wheel build fills the output directory and the cache."""
    world = World.at(tmp_path_factory.mktemp("world"), wheelhouse)
    write_project(world.project, "flit")
    built = run(safe_build_command(world.project, "--wheel", "-o", world.outdir), world.env)
    assert built.returncode == 0, built.stderr
    made = run([sys.executable, "-m", "venv", "--without-pip", str(world.venv)], world.env)
    assert made.returncode == 0, made.stderr
    world.file.write_text("not a directory\n")
    return world


Fields = dict[str, str]  # {name} in a case's command, variables and line -> its path


def fields(world: World, case_dir: Path) -> Fields:
    return {
        "project": str(world.project),
        "out": str(world.outdir),
        "cache": str(world.cache),
        "venv": str(world.venv),
        "file": str(world.file),
        "bad": str(case_dir / "bad"),
        "missing": str(case_dir / "missing"),
        "full": str(case_dir / "full"),
        "pid": str(os.getpid()),
    }


def fill(text: str, values: Fields, escape: Callable[[str], str] = str) -> str:
    for name, value in values.items():
        text = text.replace("{" + name + "}", escape(value))
    return text


# --- what a case sets up before its command, and undoes after it ---------------------------------

Setting = Callable[[Fields], contextlib.AbstractContextManager[None]]


def chmod(field_name: str, relative: str, mode: int) -> Setting:
    """``{field_name}/relative`` (made as a directory if missing) with ``mode`` for the command."""

    @contextlib.contextmanager
    def setting(values: Fields) -> Iterator[None]:
        path = Path(values[field_name], relative)
        if not path.exists():
            path.mkdir(parents=True)
        before = path.stat().st_mode
        path.chmod(mode)
        try:
            yield
        finally:
            path.chmod(before)

    return setting


@contextlib.contextmanager
def full_disk(values: Fields) -> Iterator[None]:
    """``{full}``: a 64 KiB tmpfs with no space left, and an empty directory ``cache`` on it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = Path(values["full"])
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=False)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (mount / "cache").mkdir()
        with contextlib.suppress(OSError), (mount / "filler").open("wb") as filler:
            while True:
                filler.write(b"\0" * 4096)
                filler.flush()
        yield
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def made(make: Callable[[Path], object], relative: str = "") -> Setting:
    """``{bad}/relative`` made by ``make`` (a named pipe, a socket, a link, bytes a text cannot hold)."""

    @contextlib.contextmanager
    def setting(values: Fields) -> Iterator[None]:
        make(Path(values["bad"], relative))
        yield

    return setting


def socket_file(path: Path) -> None:
    os.mknod(path, 0o600 | stat.S_IFSOCK)


def link_to_missing(path: Path) -> None:
    path.symlink_to(path.with_name("missing"))


NOT_UTF8 = b'\n[tool.demo]\nname = "caf\xe9"\n'  # Latin-1


def link_to_itself(path: Path) -> None:
    path.symlink_to(path.name)


LONG_NAME = "a" * 300  # longer than a file name may be (NAME_MAX is 255 on Linux)


def not_utf8(path: Path) -> None:
    path.write_bytes(path.read_bytes() + NOT_UTF8)


GIT_ENV = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}  # no safe.directory from the machine


def git(path: Path, *args: str) -> None:
    done = run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], {**os.environ, **GIT_ENV}, cwd=path
    )
    assert done.returncode == 0, done.stderr


def repository(damage: Callable[[Path], object] | None = None) -> Setting:
    """``{bad}`` (written from the case's files) committed to a git repository, then ``damage``d."""

    def make(path: Path) -> None:
        committed(path)
        if damage is not None:
            damage(path)

    return made(make)


def committed(path: Path) -> Path:
    """``path`` made a git repository with all its files in one commit, tagged v1."""
    for args in (("init", "-q"), ("add", "."), ("commit", "-q", "-m", "one"), ("tag", "v1")):
        git(path, *args)
    return path


def owned_by_another_user(path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a repository to another user needs root")
    for current, dirs, files in os.walk(path):
        for name in [".", *dirs, *files]:
            os.lchown(os.path.join(current, name), 4321, 4321)


def garbage(relative: str, text: str = "garbage\n") -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        (path / relative).write_text(text)

    return damage


@contextlib.contextmanager
def project_locked(values: Fields) -> Iterator[None]:
    """The project lock held exclusive by this test process, as an in-place build would hold it."""
    own = state.at(Path(values["cache"]), lock_timeout=60)
    with own.project_lock(Path(values["project"])).hold("exclusive"):
        yield


# --- the cases -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A command (after ``python -m safe_build``) that must fail with ``code`` and end with ``line``.

    ``{name}`` stands for a path of ``fields`` in the command, the variables and the line; a
    ``pattern`` line is a regular expression (the paths in it are taken literally).
    """

    command: tuple[str, ...]
    code: int
    line: str
    files: Mapping[str, str] = field(default_factory=dict)  # written below {bad}
    env: Mapping[str, str] = field(default_factory=dict)
    setting: Setting | None = None
    unprivileged: bool = False  # run as a user whom permissions stop, even as root
    pattern: bool = False


def backend(name: str, **files: str) -> dict[str, str]:
    """A project whose in-tree backend is the module ``name`` (``files`` are its other files)."""
    toml = f"[build-system]\nrequires = []\nbuild-backend = {name!r}\nbackend-path = ['.']\n"
    return {"pyproject.toml": toml, **{f"{module}.py": text for module, text in files.items()}}


def flit(toml: str = FLIT_TOML) -> dict[str, str]:
    return {**PROJECTS["flit"], "pyproject.toml": toml}


def build_failed(what: str) -> str:
    return f"safe-build: error: building {{bad}} failed: {what}; {BUILD_FAILED}"


BAD = ("{bad}", "-nw", "-o", "{out}")
GOOD = ("{project}", "-nw", "-o", "{out}")
REPOSITORY = (*BAD, "--isolation", "repository")


def unwritable_cache(relative: str) -> Case:
    """The cache directory {bad} (empty, or marked as safe-build's with ``relative`` in it), with
    ``relative`` in it read-only."""
    where = f"{{bad}}/{relative}" if relative else "{bad}"
    return Case(
        GOOD,
        2,
        f"safe-build: error: cannot write to {where} (Permission denied), {STATE_HINT}",
        files={state.MARKER: json.dumps({"layout": state.LAYOUT})} if relative else {},
        env={"SAFE_BUILD_CACHE_DIR": "{bad}"},
        setting=chmod("bad", relative, 0o555),
        unprivileged=True,
    )


CASES: dict[str, Case] = {
    "broken-toml": Case(
        BAD,
        2,
        "safe-build: error: invalid TOML in {bad}/pyproject.toml: Expected ']' at the end of a table "
        "declaration (at line 1, column 9); fix the file and build again",
        files={"pyproject.toml": "[project\nname = 'x'\n"},
    ),
    "pyproject-nested-too-deeply": Case(
        BAD,
        2,
        "safe-build: error: cannot parse {bad}/pyproject.toml: maximum recursion depth exceeded (arrays or "
        "tables nest too deeply); nest them less deeply and build again",
        files=flit(FLIT_TOML + "x = " + "[" * 5000 + "]" * 5000 + "\n"),
    ),
    "pyproject-inline-tables-nested-too-deeply": Case(
        BAD,
        2,
        "safe-build: error: cannot parse {bad}/pyproject.toml: maximum recursion depth exceeded (arrays or "
        "tables nest too deeply); nest them less deeply and build again",
        files=flit(FLIT_TOML + "x = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n"),
    ),
    "pyproject-not-utf-8": Case(
        BAD,
        2,
        f"safe-build: error: invalid TOML in {{bad}}/pyproject.toml: not UTF-8 (byte 0xe9 at offset "
        f"{len(FLIT_TOML) + NOT_UTF8.index(0xE9)}); save the file as UTF-8 and build again",
        files=flit(),
        setting=made(not_utf8, "pyproject.toml"),
    ),
    "pyproject-is-a-directory": Case(
        BAD,
        2,
        "safe-build: error: {bad}/pyproject.toml is a directory, not a file; make it a file, or remove it",
        files={"pyproject.toml/README": "", "setup.py": "import setuptools\nsetuptools.setup()\n"},
    ),
    "build-system-without-requires": Case(
        BAD,
        1,
        build_failed(
            "Failed to validate `build-system` in pyproject.toml: `requires` is a required property"
        ),
        files=flit(FLIT_TOML.replace('requires = ["flit_core>=3.9"]\n', "")),
    ),
    # build's fallback, setuptools' legacy backend, is not among the requirements
    "build-system-without-backend": Case(
        ("{bad}", "--wheel", "-o", "{out}"),
        1,
        build_failed("Backend 'setuptools.build_meta:__legacy__' is not available"),
        files=flit(FLIT_TOML.replace('build-backend = "flit_core.buildapi"\n', "")),
    ),
    "backend-not-found": Case(
        BAD, 1, build_failed("Backend 'no_such_backend' is not available"), files=backend("no_such_backend")
    ),
    "backend-import-error": Case(
        BAD,
        1,
        build_failed("Backend 'broken' is not available"),
        files=backend("broken", broken="import no_such_module\n"),
    ),
    "backend-raises": Case(
        BAD,
        1,
        build_failed("Backend subprocess exited when trying to invoke build_wheel"),
        files=backend(
            "broken", broken="def build_wheel(*args, **kwargs):\n    raise RuntimeError('exploded')\n"
        ),
    ),
    "config-setting-without-value": Case(
        (*GOOD, "-C"), 2, "safe-build: error: argument --config-setting/-C: expected one argument"
    ),
    "config-setting-the-backend-refuses": Case(
        (*BAD, "-C--build-option=--bogus"),
        1,
        build_failed("Backend subprocess exited when trying to invoke build_wheel"),
        files=PROJECTS["setuptools"],
    ),
    "config-json-not-an-object": Case(
        (*GOOD, "--config-json=[1]"),
        2,
        'safe-build: error: --config-json must contain a JSON object; pass e.g. {"key": "value"}',
    ),
    # was a RecursionError traceback
    "config-json-nested-too-deeply": Case(
        (*GOOD, "--config-json=" + "[" * 30000 + "]" * 30000),
        2,
        "safe-build: error: Invalid JSON in --config-json: maximum recursion depth exceeded while "
        "decoding a JSON array from a unicode string; pass a JSON object",
    ),
    # were tracebacks from the build child, after the snapshot was taken
    "installer-uv-without-uv": Case(
        ("{project}", "--wheel", "-o", "{out}", "--installer", "uv"),
        2,
        "safe-build: error: --installer uv: no uv executable found (the uv package, $UV, or uv on PATH); "
        "install uv (pip install uv), or leave out --installer uv",
        env={"PATH": "/usr/bin:/bin", "UV": ""},
    ),
    "constraints-file-missing": Case(
        (*GOOD, "--dependency-constraints-txt", "{missing}"),
        2,
        "safe-build: error: cannot read the constraints file {missing} (--dependency-constraints-txt): "
        "No such file or directory; name a readable pip constraints file",
    ),
    "constraints-file-is-a-directory": Case(
        (*GOOD, "--dependency-constraints-txt", "{out}"),
        2,
        "safe-build: error: cannot read the constraints file {out} (--dependency-constraints-txt): "
        "Is a directory; name a readable pip constraints file",
    ),
    "unknown-tool-key": Case(
        BAD,
        2,
        "safe-build: error: unknown key 'isolaton' in [tool.safe-build] of {bad}/pyproject.toml; did you "
        "mean 'isolation'? valid keys: isolation, include, exclude, lock-timeout, fresh-env, env-max-age, "
        "remote-cache, remote-cache-mode, remote-cache-wait, remote-cache-timeout, remote-cache-required",
        files=flit(FLIT_TOML + '\n[tool.safe-build]\nisolaton = "copy"\n'),
    ),
    "bad-tool-value": Case(
        BAD,
        2,
        f"safe-build: error: invalid value 'soon' for lock-timeout in [tool.safe-build] of "
        f"{{bad}}/pyproject.toml; {SECONDS_HINT}",
        files=flit(FLIT_TOML + '\n[tool.safe-build]\nlock-timeout = "soon"\n'),
    ),
    "bad-variable": Case(
        GOOD,
        2,
        f"safe-build: error: invalid value 'soon' for SAFE_BUILD_LOCK_TIMEOUT; {SECONDS_HINT}",
        env={"SAFE_BUILD_LOCK_TIMEOUT": "soon"},
    ),
    "bad-days-variable": Case(
        GOOD,
        2,
        f"safe-build: error: invalid value '-3' for SAFE_BUILD_ENV_MAX_AGE; {DAYS_HINT}",
        env={"SAFE_BUILD_ENV_MAX_AGE": "-3"},
    ),
    "bad-days-tool-value": Case(
        BAD,
        2,
        f"safe-build: error: invalid value 'a week' for env-max-age in [tool.safe-build] of "
        f"{{bad}}/pyproject.toml; {DAYS_HINT}",
        files=flit(FLIT_TOML + '\n[tool.safe-build]\nenv-max-age = "a week"\n'),
    ),
    "missing-srcdir": Case(
        ("{missing}", "-nw", "-o", "{out}"),
        2,
        "safe-build: error: no such file or directory: {missing}; "
        "pass the project directory (the one with pyproject.toml or setup.py)",
    ),
    "srcdir-is-a-named-pipe": Case(
        BAD,
        2,
        "safe-build: error: {bad} is a named pipe, not a project directory or a .tar.gz source distribution; "
        "pass the project directory (the one with pyproject.toml or setup.py)",
        setting=made(os.mkfifo),
    ),
    "srcdir-is-a-socket": Case(
        BAD,
        2,
        "safe-build: error: {bad} is a socket, not a project directory or a .tar.gz source distribution; "
        "pass the project directory (the one with pyproject.toml or setup.py)",
        setting=made(socket_file),
    ),
    "srcdir-is-a-device": Case(
        ("/dev/null", "-nw", "-o", "{out}"),
        2,
        "safe-build: error: /dev/null is a character device, not a project directory or a .tar.gz source "
        "distribution; pass the project directory (the one with pyproject.toml or setup.py)",
    ),
    "srcdir-is-a-dangling-link": Case(
        BAD,
        2,
        "safe-build: error: no such file or directory: {bad}, a link to {missing}, which does not exist; "
        "pass the project directory (the one with pyproject.toml or setup.py)",
        setting=made(link_to_missing),
    ),
    "srcdir-is-a-link-loop": Case(
        BAD,
        2,
        "safe-build: error: {bad} is a link that leads round in a loop; "
        "pass the project directory (the one with pyproject.toml or setup.py)",
        setting=made(link_to_itself),
    ),
    # was exit code 1, a bare "File name too long"
    "srcdir-name-too-long": Case(
        (f"{{out}}/{LONG_NAME}", "-nw", "-o", "{out}"),
        2,
        f"safe-build: error: cannot use {{out}}/{LONG_NAME}: File name too long; "
        "pass the project directory (the one with pyproject.toml or setup.py)",
    ),
    "srcdir-is-empty": Case(
        ("", "-nw", "-o", "{out}"),
        2,
        "safe-build: error: the source directory is an empty string; "
        "pass the project directory (the one with pyproject.toml or setup.py), or . for this one",
    ),
    # the one line stays one line, whatever the path holds
    "srcdir-with-a-newline": Case(
        ("{missing}\nx", "-nw", "-o", "{out}"),
        2,
        "safe-build: error: no such file or directory: {missing}\\nx; "
        "pass the project directory (the one with pyproject.toml or setup.py)",
    ),
    "srcdir-not-utf-8": Case(
        ("{missing}\udcff", "-nw", "-o", "{out}"),
        2,
        "safe-build: error: no such file or directory: {missing}\\xff; "
        "pass the project directory (the one with pyproject.toml or setup.py)",
    ),
    "repository-owned-by-another-user": Case(
        REPOSITORY,
        2,
        "safe-build: error: git cannot read the repository of {bad}: detected dubious ownership in "
        "repository at '{bad}'; it belongs to another user: if you trust it, run git config --global --add "
        "safe.directory {bad}, or build without its git metadata with --isolation copy",
        files=flit(),
        env=GIT_ENV,
        setting=repository(owned_by_another_user),
    ),
    "repository-git-dir-gone": Case(
        REPOSITORY,
        2,
        "safe-build: error: git cannot read the repository of {bad}: not a git repository: {missing}; its "
        ".git file names a git directory that is gone: repair or remove that file, or build without its "
        "git metadata with --isolation copy",
        files={**flit(), ".git": "gitdir: {missing}\n"},  # a linked work tree whose repository is gone
    ),
    "repository-bad-config": Case(
        REPOSITORY,
        2,
        "safe-build: error: git cannot read the repository of {bad}: bad config line 1 in file .git/config; "
        "repair the repository, or build without its git metadata with --isolation copy",
        files=flit(),
        setting=repository(garbage(".git/config", "[[[\n")),
    ),
    # read for the cache key, before anything is built
    "repository-corrupt-index": Case(
        REPOSITORY,
        2,
        "safe-build: error: git cannot read the repository of {bad}: .git/index: index file smaller than "
        "expected; make the index again (remove .git/index, then git reset), or build without its git "
        "metadata with --isolation copy",
        files=flit(),
        setting=repository(garbage(".git/index")),
    ),
    # read for the snapshot's private metadata
    "repository-corrupt-packed-refs": Case(
        (*REPOSITORY, "--no-cache"),
        2,
        "safe-build: error: git cannot read the repository of {bad}: unexpected line in .git/packed-refs: "
        "garbage; repair the repository, or build without its git metadata with --isolation copy",
        files=flit(),
        setting=repository(garbage(".git/packed-refs")),
    ),
    "unreadable-srcdir": Case(
        BAD,
        2,
        "safe-build: error: cannot read project directory {bad}: Permission denied; "
        "fix its permissions or run as a user who can read it",
        files=flit(),
        setting=chmod("bad", "", 0o000),
        unprivileged=True,
    ),
    "unreadable-pyproject": Case(
        BAD,
        2,
        "safe-build: error: cannot read {bad}/pyproject.toml: Permission denied; fix its permissions",
        files=flit(),
        setting=chmod("bad", "pyproject.toml", 0o000),
        unprivileged=True,
    ),
    "unreadable-source-file": Case(
        BAD,
        2,
        "safe-build: error: cannot read {bad}/demo_flit/__init__.py (Permission denied); "
        "fix its permissions, or leave it out of the snapshot with --exclude",
        files=flit(),
        setting=chmod("bad", "demo_flit/__init__.py", 0o000),
        unprivileged=True,
    ),
    "unwritable-outdir": Case(
        GOOD,
        2,
        "safe-build: error: cannot write to output directory {out} (no write permission on {out}); "
        "choose another with -o",
        setting=chmod("out", "", 0o555),
        unprivileged=True,
    ),
    # was exit code 1, a bare "File name too long"
    "outdir-name-too-long": Case(
        ("{project}", "-nw", "-o", f"{{out}}/{LONG_NAME}"),
        2,
        f"safe-build: error: cannot use output directory {{out}}/{LONG_NAME} (File name too long); "
        "choose another with -o",
    ),
    # the wheel was published, then exit code 1 "Is a directory"
    "report-is-a-directory": Case(
        (*GOOD, "--report", "{out}"),
        2,
        "safe-build: error: --report {out} is a directory; name a file for the report, such as report.json",
    ),
    "outdir-is-a-file": Case(
        ("{project}", "-nw", "-o", "{file}"),
        2,
        "safe-build: error: output directory {file} is not a directory; choose another with -o",
    ),
    # a cache hit (the world's own build), so that only publishing is left to fail
    "outdir-on-a-full-disk": Case(
        ("{project}", "--wheel", "-o", "{full}/out"),
        2,
        f"safe-build: error: cannot write {WHEEL} to the output directory {{full}}/out "
        "(No space left on device); make room there, or choose another with -o",
        setting=full_disk,
    ),
    "cache-dir-on-a-full-disk": Case(
        GOOD,
        2,
        f"safe-build: error: cannot write to {{full}}/cache (No space left on device), {STATE_HINT}",
        env={"SAFE_BUILD_CACHE_DIR": "{full}/cache"},
        setting=full_disk,
    ),
    "unwritable-cache-dir": unwritable_cache(""),
    # once, safe-build waited forever for a lock file it could not create
    "unwritable-private-dirs": unwritable_cache("tmp"),
    # was a RuntimeError traceback ("Could not determine home directory")
    "cache-dir-of-an-unknown-user": Case(
        (*GOOD, "--cache-dir", "~no-such-user-here/cache"),
        2,
        "safe-build: error: invalid value '~no-such-user-here/cache' for --cache-dir; a leading ~ must name "
        "a user with a home directory here: give another",
    ),
    "cache-dir-is-a-file": Case(
        GOOD,
        2,
        "safe-build: error: the cache directory {file} is not a directory; choose another with --cache-dir "
        "or SAFE_BUILD_CACHE_DIR",
        env={"SAFE_BUILD_CACHE_DIR": "{file}"},
    ),
    # these two were right already; an adversary's first tries, kept so
    "cache-dir-is-a-named-pipe": Case(
        GOOD,
        2,
        "safe-build: error: the cache directory {bad} is not a directory; choose another with --cache-dir "
        "or SAFE_BUILD_CACHE_DIR",
        env={"SAFE_BUILD_CACHE_DIR": "{bad}"},
        setting=made(os.mkfifo),
    ),
    "outdir-is-a-device": Case(
        ("{project}", "-nw", "-o", "/dev/null"),
        2,
        "safe-build: error: output directory /dev/null is not a directory; choose another with -o",
    ),
    "lock-timeout": Case(
        (*GOOD, "--no-cache", "--lock-timeout", "0.5"),
        3,
        r"safe-build: error: timed out after 0\.5s waiting for the project lock on {project} \(held by "
        r"pid {pid}: safe-build[^,]*, exclusive, for [\d.]+s\); "
        r"wait for that process to finish or stop it, or raise --lock-timeout",
        setting=project_locked,
        pattern=True,
    ),
    "cache-prune-bad-size": Case(
        ("cache", "prune", "--max-size", "lots"),
        2,
        "safe-build: error: invalid value 'lots' for --max-size; give a size: 500M, 2G, 1.5GiB or plain "
        "bytes; K, M, G, T count in 1000s, Ki, Mi, Gi, Ti in 1024s",
    ),
    # more digits than a float holds: was an OverflowError traceback
    "cache-prune-size-beyond-a-float": Case(
        ("cache", "prune", "--max-size", "9" * 400),
        2,
        f"safe-build: error: invalid value '{'9' * 400}' for --max-size; give a size: 500M, 2G, 1.5GiB or "
        "plain bytes; K, M, G, T count in 1000s, Ki, Mi, Gi, Ti in 1024s",
    ),
    "venv-path-is-a-file": Case(
        ("venv", "{file}"),
        2,
        "safe-build: error: {file} is a file, not a virtual environment; choose another venv path",
    ),
    "venv-path-is-empty": Case(
        ("venv", ""),
        2,
        "safe-build: error: the venv path is an empty string; use: safe-build venv PATH [--clear] "
        "[--lock-timeout SECONDS] [--cache-dir DIR] [virtualenv options]",
    ),
    "venv-path-is-a-named-pipe": Case(
        ("venv", "{bad}"),
        2,
        "safe-build: error: {bad} is a named pipe, not a virtual environment; choose another venv path",
        setting=made(os.mkfifo),
    ),
    # a place where no directory can be made: was exit code 1, "No such file or directory"
    "venv-path-name-too-long": Case(
        ("venv", f"{{out}}/{LONG_NAME}"),
        2,
        f"safe-build: error: cannot use {{out}}/{LONG_NAME} as the venv path (File name too long); "
        "choose another venv path",
    ),
    "venv-path-in-proc": Case(
        ("venv", "/proc/no-venv-here"),
        2,
        "safe-build: error: cannot create the virtual environment at /proc/no-venv-here (No such file or "
        "directory); choose another venv path",
    ),
    "venv-path-is-a-project": Case(
        ("venv", "{project}"),
        2,
        "safe-build: error: {project} is a directory that is not empty and not a virtual environment; "
        "choose another venv path; nothing was changed",
    ),
    # what pip refuses, pip reports: its own last line and exit code
    "pip-unknown-option": Case(
        ("pip", "--python", "{venv}", "install", "--bogus", "{project}"), 2, "no such option: --bogus"
    ),
    "pip-bad-requirement-file-line": Case(
        ("pip", "--python", "{venv}", "install", "-r", "{bad}/requirements.txt"),
        1,
        "__main__.py: error: no such option: --bogus",
        files={"requirements.txt": "--bogus\n"},
    ),
    "pip-python-is-a-file": Case(
        ("pip", "--python", "{file}", "install", "{project}"),
        1,
        "ERROR: Failed to run pip under {file}: [Errno 13] Permission denied: '{file}'",
    ),
}


def snapshot(world: World, case_dir: Path) -> dict[str, tuple[int, bytes | str]]:
    """The world and the case's directory, but for safe-build's bookkeeping."""
    found = {f"world/{name}": value for name, value in tree_state(world.root).items()}
    found |= {f"case/{name}": value for name, value in tree_state(case_dir).items()}
    return {name: value for name, value in found.items() if not bookkeeping(name)}


def bookkeeping(name: str) -> bool:
    """What a refused command may add: lock files and their holders' records (never deleted), the
    key's stat memos (kept for the next build), the state directory's marker, tag and empty layout."""
    parts = name.split("/")
    return (
        "locks" in parts
        or "key-memos" in parts
        or parts[-1] in ENVIRONMENT_LOCK_FILES
        or parts[-1] in ("tmp", "wheels", "envs", state.MARKER, state.TAG)
    )


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_writes_nothing(name: str, world: World, tmp_path: Path) -> None:
    case = CASES[name]
    values = fields(world, tmp_path)
    write_files(tmp_path / "bad", {name: fill(text, values) for name, text in case.files.items()})
    prefix: tuple[str, ...] = ()
    if case.unprivileged and os.geteuid() == 0:
        if shutil.which(UNPRIVILEGED[0]) is None:
            pytest.skip("as root, permissions are only tested through setpriv")
        prefix = UNPRIVILEGED
    command = [*prefix, *safe_build_command(*(fill(arg, values) for arg in case.command))]
    env = {**world.env, **{key: fill(value, values) for key, value in case.env.items()}}
    with case.setting(values) if case.setting else contextlib.nullcontext():
        before = snapshot(world, tmp_path)
        result = run(command, env, timeout=TIMEOUT)
        after = snapshot(world, tmp_path)
    lines = result.stderr.strip().splitlines() or [""]
    expected = fill(case.line, values, re.escape if case.pattern else str)
    assert result.returncode == case.code, result.stderr
    matches = re.fullmatch(expected, lines[-1]) is not None if case.pattern else lines[-1] == expected
    assert matches, f"expected {expected!r}, got {lines[-1]!r}"
    ours = [line for line in lines if line.startswith("safe-build: error:")]
    assert len(ours) == (0 if case.command[0] == "pip" else 1), result.stderr  # pip's refusals are pip's
    assert "Successfully built" not in result.stdout
    assert sorted(set(before) ^ set(after)) == [], "bad input must write nothing"
    assert [key for key in before if before[key] != after[key]] == [], "bad input must change nothing"
    assert sorted(os.listdir(world.cache / "tmp")) == [], "a private directory was left behind"


# --- a damaged cache entry: rebuilt, never published ---------------------------------------------


def truncate(wheel: Path) -> None:
    wheel.write_bytes(wheel.read_bytes()[:100])


def flip_a_byte(wheel: Path) -> None:
    """Same size, other bytes: the size check passes, the sha256 does not."""
    data = bytearray(wheel.read_bytes())
    data[40] ^= 0xFF
    wheel.write_bytes(bytes(data))


def garble_entry_json(wheel: Path) -> None:
    wheel.with_name("entry.json").write_text("garbage")


DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated-artifact": truncate,
    "same-size-other-bytes": flip_a_byte,
    "artifact-missing": Path.unlink,
    "entry-json-garbage": garble_entry_json,
}


def entry_of(world: World) -> Path:
    [entry] = [path.parent for path in (world.cache / "wheels").glob(f"*/*/{WHEEL}")]
    return entry


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_cache_entry_is_rebuilt_and_never_published(
    damage: str, world: World, tmp_path: Path
) -> None:
    entry = entry_of(world)
    good = members(world.outdir / WHEEL)
    DAMAGE[damage](entry / WHEEL)
    outdir = tmp_path / "out"
    result = run(safe_build_command(world.project, "--wheel", "-o", outdir), world.env, timeout=TIMEOUT)
    assert (result.returncode, result.stdout.strip().splitlines()[-1]) == (0, f"Successfully built {WHEEL}")
    assert "* Building wheel..." in result.stderr  # built again, not served from the entry
    assert not [
        line for line in result.stderr.splitlines() if "Reusing cache entry" in line or "safe-build" in line
    ]
    assert os.listdir(outdir) == [WHEEL]
    assert wheel_problems(outdir / WHEEL) == []
    assert members(outdir / WHEEL) == good
    [artifact] = json.loads((entry_of(world) / "entry.json").read_text())["artifacts"]
    assert artifact["sha256"] == hashlib.sha256((entry_of(world) / WHEEL).read_bytes()).hexdigest()


# --- repositories git reads, however old the git or odd the names -------------------------------

OLD_GIT = """#!/bin/sh
# git before 2.31, which has no --path-format: rev-parse passes the unknown option through to its output
for arg do
    case "$arg" in --path-format=*) echo "$arg"; shift; continue ;; esac
    set -- "$@" "$arg"
    shift
done
exec {git} "$@"
"""


def test_git_before_2_31_gives_a_snapshot_its_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The common git directory is found without --path-format, in a linked work tree too."""
    real_git = shutil.which("git")
    assert real_git is not None
    fake = tmp_path / "bin" / "git"
    fake.parent.mkdir()
    fake.write_text(OLD_GIT.format(git=real_git))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    for name, value in GIT_ENV.items():
        monkeypatch.setenv(name, value)
    main = committed(write_files(tmp_path / "main", flit()))
    git(main, "worktree", "add", "-q", str(tmp_path / "linked"))
    old = run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"], dict(os.environ), cwd=main)
    assert old.stdout.splitlines() == ["--path-format=absolute", ".git"]  # what git 2.30 answers
    for work_tree in (main, tmp_path / "linked"):
        copy = tmp_path / "copies" / work_tree.name
        shutil.copytree(work_tree, copy, ignore=shutil.ignore_patterns(".git"))
        gitmeta.give_private_metadata(work_tree, copy)
        described = run(["git", "describe", "--tags"], dict(os.environ), cwd=copy)
        assert (described.returncode, described.stdout.strip()) == (0, "v1"), described.stderr


def test_names_that_are_not_utf8_in_a_repository_build(world: World, tmp_path: Path) -> None:
    """A repository, a file and a branch named in Latin-1: git's output is bytes, not text to decode,
    and the private metadata names the repository in bytes."""
    project = write_files(tmp_path / os.fsdecode(b"caf\xe9"), flit())
    (project / os.fsdecode(b"caf\xe9.txt")).write_text("")
    committed(project)
    git(project, "branch", os.fsdecode(b"caf\xe9"))
    outdir = tmp_path / "out"
    command = safe_build_command(project, "-nw", "--isolation", "repository", "-o", outdir)
    result = run(command, {**world.env, **GIT_ENV}, timeout=TIMEOUT)
    assert (result.returncode, result.stdout.strip()) == (0, f"Successfully built {WHEEL}"), result.stderr


def test_a_repository_without_a_config_builds(world: World, tmp_path: Path) -> None:
    """git reads a repository without .git/config; its private metadata was a copy of that file."""
    project = committed(write_files(tmp_path / "project", flit()))
    (project / ".git" / "config").unlink()
    command = safe_build_command(
        project, "-nw", "--isolation", "repository", "--no-cache", "-o", tmp_path / "out"
    )
    result = run(command, {**world.env, **GIT_ENV}, timeout=TIMEOUT)
    assert (result.returncode, result.stdout.strip()) == (0, f"Successfully built {WHEEL}"), result.stderr


# --- special files in a project: never opened while choosing the isolation mode -------------------


@pytest.mark.parametrize("name", ["setup.cfg", "setup.py"])
def test_a_named_pipe_in_the_project_is_not_read(name: str, world: World, tmp_path: Path) -> None:
    """Reading a named pipe waits for a writer that never comes: ``auto`` looked in both files."""
    project = write_files(tmp_path / "project", flit())
    os.mkfifo(project / name)
    command = safe_build_command(project, "-nw", "-o", tmp_path / "out")
    result = run(command, world.env, timeout=TIMEOUT)
    assert (result.returncode, result.stdout.strip()) == (0, f"Successfully built {WHEEL}"), result.stderr
