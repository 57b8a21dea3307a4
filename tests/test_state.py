"""safe-build's state directory is its own: marked, private, trusted only if nobody else could
have written it; its locks are ordered, and those that guard a tree or an install location are
on the thing itself, so two cache directories or an ``rm -rf`` of one cannot split them.

The second-user cases need root (``useradd``); they skip cleanly without it.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from safe_build import state
from safe_build.locks import LockOrderError, NamedLock
from tests.conftest import run, safe_build_command, tree_state, write_files
from tests.test_cache_soundness import wait_for

ARCHITECTURE = Path(__file__).parent.parent / "docs" / "architecture.md"

# what a $HOME named as --cache-dir may hold: shapes that safe-build's own sweeps used to take
FOREIGN = {
    "tmp/app.lock": "",
    "tmp/app/data.txt": "keep me",
    "envs/work/py311/bin/python": "#!/bin/sh\n",
    "wheels/3a/4b/abc-1.0-py3-none-any.whl": "not a wheel of ours",
    "notes.txt": "mine",
}


def opened_to_others(root: Path) -> list[str]:
    """What below ``root`` (``root`` too) another user could write to, links aside."""
    found = []
    for directory, dirs, files in os.walk(root):
        for path in [Path(directory), *(Path(directory, name) for name in [*dirs, *files])]:
            info = path.lstat()
            if not stat.S_ISLNK(info.st_mode) and info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                found.append(f"{path.relative_to(root)} {stat.filemode(info.st_mode)}")
    return sorted(set(found))


def with_umask(umask: int, command: list[str]) -> list[str]:
    return ["sh", "-c", f'umask {umask:03o}; exec "$@"', "sh", *command]


# --- ownership -----------------------------------------------------------------------------------


def test_a_cache_dir_full_of_foreign_files_is_refused_and_left_as_it_is(
    make_project: Callable[[str], Path], env: dict[str, str], tmp_path: Path
) -> None:
    """Catches: a build, ``cache prune`` or ``cache clean`` that sweeps what looks like its own
    (``X`` beside ``X.lock``, ``envs/*/*``, ``wheels/*/*``) in a directory that is not its own."""
    home = write_files(tmp_path / "home", FOREIGN)
    before = tree_state(home)
    project = make_project("setup-py")
    out = tmp_path / "out"
    commands = {
        "build": safe_build_command("-n", "--wheel", "--cache-dir", home, "-o", out, project),
        "prune": safe_build_command("cache", "prune", "--cache-dir", home, "--older-than", "0"),
        "clean": safe_build_command("cache", "clean", "--cache-dir", home),
        "venv": safe_build_command("venv", tmp_path / "venv", "--cache-dir", home),
    }
    for what, command in commands.items():
        result = run(command, env)
        assert result.returncode == 2, (what, result.stderr)
        assert result.stderr.splitlines() == [
            f"safe-build: error: {home} is not a safe-build cache directory: it holds other files, and no "
            f"{state.MARKER}; choose a new or empty directory with --cache-dir or SAFE_BUILD_CACHE_DIR "
            "(safe-build removes only what lies in a directory it made)"
        ], what
        assert tree_state(home) == before, f"{what} touched a directory that is not safe-build's"
    assert not out.exists()
    assert not (tmp_path / "venv").exists()


def test_a_cache_dir_left_by_a_safe_build_from_before_the_marker_is_kept(
    make_project: Callable[[str], Path], env: dict[str, str], tmp_path: Path
) -> None:
    """An upgrade keeps the user's cache: a directory with only the earlier layout's names, and
    only its lock files in locks/, is marked and used; open to others, it is used by nobody."""
    earlier = {"locks/cache.lock": "", "locks/project-demo-0123456789abcdef.lock": "", "tmp/x.lock": ""}
    kept, opened = write_files(tmp_path / "kept", earlier), write_files(tmp_path / "opened", earlier)
    os.chmod(opened, 0o777)
    project = make_project("setup-py")
    for cache in (kept, opened):
        result = run(
            safe_build_command(
                "-n", "--wheel", "--cache-dir", cache, "-o", tmp_path / f"out-{cache.name}", project
            ),
            env,
        )
        assert result.returncode == 0, result.stderr
    assert (kept / state.MARKER).is_file()
    assert len(list((kept / "wheels").glob("*/*/entry.json"))) == 1
    assert not (opened / state.MARKER).exists()
    assert sorted(path.name for path in opened.rglob("*")) == [
        "cache.lock",
        "locks",
        "project-demo-0123456789abcdef.lock",
        "tmp",
        "x.lock",
    ]


# imports, says it is ready, and opens the state once its stdin closes: all of them at once
OPEN_STATE = (
    "import sys; from pathlib import Path; from safe_build import state; "
    "print('ready', flush=True); sys.stdin.read(); state.at(Path(sys.argv[1]), lock_timeout=5)"
)


@pytest.mark.parametrize("made", ["missing", "empty"])
def test_many_first_runs_at_once_all_take_the_new_cache_dir(made: str, tmp_path: Path) -> None:
    """Catches: a run that sees another's marker, tag or layout half made and calls the
    directory foreign (the first builds of a CI job, all at once, on an empty cache)."""
    failures = []
    for round_number in range(20):
        cache = tmp_path / f"cache{round_number}"
        if made == "empty":
            cache.mkdir()
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", OPEN_STATE, str(cache)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(8)
        ]
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline() == "ready\n"
        for process in processes:
            assert process.stdin is not None
            process.stdin.close()
        for process in processes:
            assert process.stdout is not None
            assert process.stderr is not None
            with process.stdout, process.stderr:
                err = process.stderr.read()
            if process.wait() != 0:
                failures.append(err.strip().splitlines()[-1])
    assert failures == []


def test_everything_safe_build_makes_is_private_whatever_the_umask(
    make_project: Callable[[str], Path], env: dict[str, str], tmp_path: Path
) -> None:
    """Under umask 000, an isolated, cached build and a cached hit leave nothing in the state
    directory that another user could write to. An empty directory open to all, named as the cache
    directory, is adopted and closed (nobody could have put anything in it yet), then tagged."""
    cache = tmp_path / "cache"
    cache.mkdir()
    os.chmod(cache, 0o777)
    isolated, plain = make_project("flit"), make_project("setup-py")  # flit's wheel is 0600, setuptools' not
    for round_number in range(2):  # the second is a hit
        for flags, project in ((["--wheel"], isolated), (["--wheel", "-n"], plain)):
            out = tmp_path / f"out{round_number}" / project.name
            command = safe_build_command(*flags, "--cache-dir", cache, "-o", out, project)
            result = run(with_umask(0, command), env)
            assert result.returncode == 0, result.stderr
            assert len(list(out.glob("*.whl"))) == 1
    assert len(list((cache / "envs").glob("*/*/safe-build-env.json"))) == 1, "no cached build environment"
    assert len(list((cache / "wheels").glob("*/*/entry.json"))) == 2, "no cache entries"
    assert opened_to_others(cache) == []
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert (cache / state.TAG).read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55\n")
    assert json.loads((cache / state.MARKER).read_text())["layout"] == state.LAYOUT


def test_a_cache_dir_others_can_write_is_bypassed_with_one_warning(
    make_project: Callable[[str], Path], env: dict[str, str], tmp_path: Path
) -> None:
    """A marked root made writable by others later may hold anything: the build goes on without
    it, says so once, and neither reads from it nor adds to it."""
    cache = tmp_path / "cache"
    project = make_project("setup-py")
    assert run(safe_build_command("-n", "--wheel", "--cache-dir", cache, "-o", tmp_path / "a", project), env)
    os.chmod(cache, 0o777)
    before = tree_state(cache)
    result = run(
        safe_build_command("-n", "--wheel", "-v", "--cache-dir", cache, "-o", tmp_path / "b", project), env
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("safe-build: warning:")]
    assert warnings == [
        f"safe-build: warning: the cache directory {cache} is not trusted (other users can write to it); "
        "building without the cache. Choose one of your own with --cache-dir or SAFE_BUILD_CACHE_DIR"
    ]
    assert "Reusing cache entry" not in result.stderr
    assert tree_state(cache) == before
    assert len(list((tmp_path / "b").glob("*.whl"))) == 1


# --- another local user (root only) --------------------------------------------------------------


@pytest.fixture
def other_user() -> Iterator[pwd.struct_passwd]:
    """A local user made for the test and removed after it."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd to make a second local user")
    name = f"sbt{secrets.token_hex(4)}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


@pytest.fixture
def shared(other_user: pwd.struct_passwd) -> Iterator[Path]:
    """A directory both users reach, the other user's to write in (tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="safe-build-shared-"))
    os.chmod(path, 0o755)
    os.chown(path, other_user.pw_uid, other_user.pw_gid)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A directory of root's that every user may enter (tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="safe-build-open-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def as_user(user: pwd.struct_passwd, code: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """``code`` run by ``user``'s own Python process (umask 022), with ``args`` as sys.argv[1:]."""
    return subprocess.run(
        [user_python(user), "-I", "-c", code, *map(str, args)],
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        umask=0o022,
        cwd="/",
        capture_output=True,
        text=True,
        check=False,
    )


def user_python(user: pwd.struct_passwd) -> str:
    """A Python that ``user`` may run (ours may lie in a directory only root can enter)."""
    for python in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        try:
            ran = subprocess.run(
                [python, "-I", "-c", "pass"],
                check=False,
                user=user.pw_uid,
                group=user.pw_gid,
                cwd="/",
                capture_output=True,
            )
        except OSError:
            continue
        if ran.returncode == 0:
            return python
    pytest.skip(f"no Python that {user.pw_name} may run")


PLANT_ENTRY = """
import hashlib, json, pathlib, shutil, sys, zipfile
cache, name = pathlib.Path(sys.argv[1]), sys.argv[2]
[record] = cache.glob("wheels/*/*/entry.json")
entry = json.loads(record.read_text())
planted = record.parent / name
with zipfile.ZipFile(planted, "w") as wheel:
    wheel.writestr("planted.py", "PLANTED = True\\n")
data = planted.read_bytes()
entry["artifacts"] = [{"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}]
record.write_text(json.dumps(entry))
"""


def test_an_entry_in_a_cache_dir_another_user_owns_is_never_published(
    make_project: Callable[[str], Path],
    env: dict[str, str],
    tmp_path: Path,
    other_user: pwd.struct_passwd,
    shared: Path,
) -> None:
    """The other user made the cache directory (as pip's users meet it under sudo) and planted an
    entry under the very key root's build looks up; root's build warns, builds, and publishes its
    own wheel."""
    project = make_project("setup-py")
    ours = tmp_path / "cache"
    first = run(safe_build_command("-n", "--wheel", "--cache-dir", ours, "-o", tmp_path / "a", project), env)
    assert first.returncode == 0, first.stderr
    [wheel] = (tmp_path / "a").glob("*.whl")
    theirs = shared / "cache"
    shutil.copytree(ours, theirs, symlinks=True)
    for path in [theirs, *theirs.rglob("*")]:
        os.lchown(path, other_user.pw_uid, other_user.pw_gid)
        if not path.is_symlink():
            os.chmod(path, stat.S_IMODE(path.stat().st_mode) | stat.S_IRWXU)
    planted = as_user(other_user, PLANT_ENTRY, theirs, wheel.name)
    assert planted.returncode == 0, planted.stderr
    before = tree_state(theirs)

    second = run(
        safe_build_command("-n", "--wheel", "--cache-dir", theirs, "-o", tmp_path / "b", project), env
    )
    assert second.returncode == 0, second.stderr
    with zipfile.ZipFile(tmp_path / "b" / wheel.name) as published:
        assert "planted.py" not in published.namelist(), "root published the other user's wheel"
        assert published.namelist() == zipfile.ZipFile(wheel).namelist()
    assert f"the cache directory {theirs} is not trusted (it is owned by another user" in second.stderr
    assert tree_state(theirs) == before, "root changed the other user's directory"


PLANT_ENVIRONMENT = """
import pathlib, shutil, sys
cache, proof = pathlib.Path(sys.argv[1]), sys.argv[2]
[marker] = cache.glob("envs/*/*/safe-build-env.json")
env = marker.parent
copy = env.with_name(env.name + ".theirs")
shutil.copytree(env, copy, symlinks=True)
[site] = copy.glob("lib/python*/site-packages")
site.chmod(0o755)
(site / "sitecustomize.py").write_text(f"open({proof!r}, 'w').write('ran')\\n")
env.rename(env.with_name(env.name + ".roots"))
copy.rename(env)
"""


def test_a_build_environment_another_user_could_replace_never_runs(
    make_project: Callable[[str], Path],
    env: dict[str, str],
    tmp_path: Path,
    other_user: pwd.struct_passwd,
    reachable: Path,
) -> None:
    """Root's cache was opened to everyone after its first build (umask 000 used to leave it so);
    the other user swaps in a copy of the cached build environment that runs their code. Root's
    next isolated build must not run it: it warns and builds without the cache."""
    project = make_project("flit")
    cache = reachable / "cache"
    first = run(safe_build_command("--wheel", "--cache-dir", cache, "-o", tmp_path / "a", project), env)
    assert first.returncode == 0, first.stderr
    [marker] = cache.glob("envs/*/*/safe-build-env.json")
    for path in (cache, cache / "envs", marker.parent.parent):  # the way to the environment, open to all
        os.chmod(path, 0o777)
    os.chmod(marker.parent, 0o755)  # and the environment readable, as the umask used to leave it
    os.chmod(marker, 0o644)  # not secret: what it says can be written from scratch
    proof = reachable / "proof"
    planted = as_user(other_user, PLANT_ENVIRONMENT, cache, proof)
    assert planted.returncode == 0, planted.stderr

    (project / "demo_flit" / "__init__.py").write_text('"""Changed."""\n__version__ = "3.0"\n')
    second = run(safe_build_command("--wheel", "--cache-dir", cache, "-o", tmp_path / "b", project), env)
    assert second.returncode == 0, second.stderr
    assert not proof.exists(), "the other user's code ran in root's build"
    assert "is not trusted (other users can write to it)" in second.stderr


FLOCK_EVERY_FILE = """
import fcntl, os, sys
got = []
for path in sys.argv[1:]:
    try:
        fd = os.open(path, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        got.append(path)
    except OSError:
        pass
print(len(got))
"""


def test_another_user_cannot_hold_the_state_directorys_locks(
    make_project: Callable[[str], Path],
    env: dict[str, str],
    tmp_path: Path,
    other_user: pwd.struct_passwd,
    reachable: Path,
) -> None:
    """Everything in root's state directory, lock files first, is out of the other user's reach,
    where they could otherwise hold one and make root's builds wait."""
    cache = reachable / "cache"
    project = make_project("setup-py")
    built = run(safe_build_command("-n", "--wheel", "--cache-dir", cache, "-o", tmp_path / "a", project), env)
    assert built.returncode == 0, built.stderr
    files = [path for path in cache.rglob("*") if path.is_file()]
    assert any(path.name == "cache.lock" for path in files)
    held = as_user(other_user, FLOCK_EVERY_FILE, *files)
    assert held.returncode == 0, held.stderr
    assert held.stdout.strip() == "0", "the other user could lock a file of root's state"


# --- the lock order ------------------------------------------------------------------------------


def taken(lock: NamedLock) -> None:
    with lock.hold("shared"):
        pass


def test_locks_taken_out_of_order_raise_before_anything_waits(tmp_path: Path) -> None:
    own = state.at(tmp_path / "cache", lock_timeout=1)
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    with own.project_lock(first).hold("exclusive"):
        with pytest.raises(LockOrderError, match=r"the cache lock .* \(rank 30\) asked for while holding"):
            taken(own.cache_lock())
        with own.project_lock(second).hold("shared"):  # equal rank, in the order of the paths
            taken(own.build_env_lock("0" * 32, tmp_path))  # then a higher rank
    with own.project_lock(second).hold("shared"), pytest.raises(LockOrderError, match="lock order"):
        taken(own.project_lock(first))
    with own.cache_lock().hold("shared"):
        with pytest.raises(LockOrderError, match="held by this process already"):
            taken(own.cache_lock())
        taken(own.key_lock("0" * 64, "x"))
    with own.cache_lock().hold("exclusive"):
        pass  # nothing is left recorded as held after the errors


def test_an_in_place_isolated_build_takes_the_cache_before_the_project(
    make_project: Callable[[str], Path], env: dict[str, str], tmp_path: Path
) -> None:
    """Its build child uses the cached build environments (the cache lock) while the parent holds
    the project lock: the parent must take the cache first, and the child is held to the order."""
    project = make_project("flit")
    result = run(safe_build_command("--wheel", "--in-place", "-o", tmp_path / "out", project), env)
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "out").glob("*.whl"))) == 1


def test_the_architecture_notes_list_the_lock_ranks_of_the_code() -> None:
    """docs/architecture.md's lock table: one row per ``state.Rank``, in rank order."""
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \|", ARCHITECTURE.read_text(encoding="utf-8"), re.MULTILINE)
    assert [(int(rank), name) for rank, name in rows] == [(rank.value, rank.name) for rank in state.Rank]


# --- locks on the things themselves --------------------------------------------------------------


def test_a_project_lock_outlives_the_removal_of_the_state_directory(
    make_project: Callable[[str], Path], env: dict[str, str], tmp_path: Path
) -> None:
    """``rm -rf`` of the cache while a build holds a project: the next build, whose cache is made
    anew, still waits for it (a lock file there would be a new file, free to take)."""
    project = make_project("setup-py")
    cache = tmp_path / "cache"
    with state.at(cache, lock_timeout=10).project_lock(project).hold("exclusive"):
        shutil.rmtree(cache)
        result = run(
            safe_build_command(
                "-n", "--wheel", "--cache-dir", cache, "--lock-timeout", "1", "-o", tmp_path / "o", project
            ),
            env,
        )
    assert result.returncode == 3, result.stderr
    assert f"timed out after 1.0s waiting for the project lock on {project}" in result.stderr
    assert not (tmp_path / "o").exists()


def test_builds_with_two_cache_dirs_exclude_each_other_on_one_tree(
    make_project: Callable[[str], Path], env: dict[str, str], tmp_path: Path
) -> None:
    """An in-place build with one cache directory holds the tree; a copy build with another waits
    for it instead of copying a half-written tree."""
    project = make_project("slow")
    marker, gate = tmp_path / "runs.log", tmp_path / "gate"
    holder = subprocess.Popen(
        safe_build_command(
            "--wheel", "-n", "--in-place", "--cache-dir", tmp_path / "a", "-o", tmp_path / "x", project
        ),
        env={**env, "SLOW_BACKEND_MARKER": str(marker), "SLOW_BACKEND_GATE": str(gate)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(marker.exists, "the in-place build's backend")
        copy = run(
            safe_build_command(
                "--wheel",
                "-n",
                "--cache-dir",
                tmp_path / "b",
                "--lock-timeout",
                "1",
                "-o",
                tmp_path / "y",
                project,
            ),
            env,
        )
    finally:
        gate.touch()
        assert holder.wait(timeout=120) == 0
    assert copy.returncode == 3, copy.stderr
    assert f"waiting for the project lock on {project}" in copy.stderr
    assert not (tmp_path / "y").exists()


def test_target_installs_with_two_cache_dirs_take_turns(env: dict[str, str], tmp_path: Path) -> None:
    """The lock on a ``--target`` directory is on the directory: an install holding it with one
    cache directory keeps out an install with another."""
    target = tmp_path / "target"
    install = [sys.executable, "-m", "safe_build", "pip", "--python", sys.executable, "install", "--target"]
    other = state.at(tmp_path / "a", lock_timeout=10)
    target.mkdir()
    with other.environment_lock(Path(os.path.realpath(target)), inside=False).hold("exclusive"):
        waited = run(
            [*install, str(target), "flit_core"],
            {**env, "SAFE_BUILD_CACHE_DIR": str(tmp_path / "b"), "SAFE_BUILD_LOCK_TIMEOUT": "1"},
        )
    assert waited.returncode == 3, waited.stderr
    assert f"waiting for the environment lock on {os.path.realpath(target)}" in waited.stderr
    assert list(target.iterdir()) == []
    after = run(
        [*install, str(target), "--quiet", "flit_core"], {**env, "SAFE_BUILD_CACHE_DIR": str(tmp_path / "b")}
    )
    assert after.returncode == 0, after.stderr
    assert (target / "flit_core").is_dir()


# --- network file systems ------------------------------------------------------------------------


def test_a_cache_dir_on_a_network_file_system_is_said_once(
    make_project: Callable[[str], Path], env: dict[str, str], tmp_path: Path
) -> None:
    """With the mount table saying the cache and output directories lie on NFS (forced: no NFS
    mount can be made here), the build still works and says so once, for the first of the two."""
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n"
        f"90 22 0:50 / {tmp_path} rw,relatime - nfs4 server:/export rw,vers=4.2\n"
    )
    project = make_project("setup-py")
    cache = tmp_path / "cache"
    result = run(
        safe_build_command("-n", "--wheel", "--cache-dir", cache, "-o", tmp_path / "out", project),
        {**env, "SAFE_BUILD_MOUNTINFO": str(mountinfo)},
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "network file system" in line]
    assert warnings == [
        f"safe-build: warning: output directory {tmp_path / 'out'} is on a network file system (nfs4): "
        "its locks may not exclude processes on other hosts; keep it on a local disk (for the cache: "
        "--cache-dir or SAFE_BUILD_CACHE_DIR), or run the builds that share it on one host"
    ]
    assert len(list((tmp_path / "out").glob("*.whl"))) == 1
