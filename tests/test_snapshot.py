"""The private copy of a source tree: what it holds, what it leaves out, and what it never reads."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from safe_build import snapshot, state, traversal, workdirs
from safe_build.patterns import Selection


def take(tree: Path, destination: Path, **plan: object) -> snapshot.Snapshot:
    """A snapshot of ``tree`` as safe-build takes one: its plan, then the copy."""
    return snapshot.take(traversal.plan(tree, **plan), destination)  # type: ignore[arg-type]


def write(path: Path, text: str = "x\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def listing(root: Path) -> set[str]:
    found = set()
    for current, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(current, name)
            if not path.is_dir() or path.is_symlink():
                found.add(path.relative_to(root).as_posix())
    return found


def git(project: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=project,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A project with the state directories a developer's tree accumulates."""
    project = tmp_path / "project"
    write(project / "pyproject.toml", "[project]\nname = 'p'\nversion = '1'\n")
    write(project / "src/p/__init__.py")
    write(project / "src/p/build/__init__.py")  # a subpackage named build: only the root's build/ is output
    for excluded in [
        "build/lib/p/__init__.py",
        "dist/p-1.tar.gz",
        "src/p.egg-info/PKG-INFO",
        "src/p/__pycache__/x.pyc",
        ".tox/py/x",
        ".venv/bin/python",
        "node_modules/a/index.js",
        "web/node_modules/b/index.js",
        ".nox/x",
    ]:
        write(project / excluded)
    return project


@pytest.fixture
def reads() -> Iterator[list[str]]:
    """Paths the current process opens or lists while the fixture is active."""
    seen: list[str] = []
    active = [True]

    def hook(event: str, args: tuple[object, ...]) -> None:
        if active[0] and event in {"open", "os.listdir", "os.scandir"} and args and args[0] is not None:
            seen.append(os.fsdecode(args[0]) if isinstance(args[0], (str, bytes, os.PathLike)) else "")

    sys.addaudithook(hook)
    yield seen
    active[0] = False  # audit hooks cannot be removed; switch this one off


EXPECTED_WALK = {"pyproject.toml", "src/p/__init__.py", "src/p/build/__init__.py"}


def test_walk_copies_sources_and_never_reads_excluded_dirs(
    tree: Path, tmp_path: Path, reads: list[str]
) -> None:
    copy = take(tree, tmp_path / "copy")
    assert copy.listed_by == "walk"
    assert listing(tmp_path / "copy") == EXPECTED_WALK
    touched = [path for path in reads if "node_modules" in path or ".tox" in path or ".venv" in path]
    assert touched == []


def test_git_listing_takes_tracked_and_untracked_but_not_ignored(tree: Path, tmp_path: Path) -> None:
    write(tree / ".gitignore", "*.log\n")
    write(tree / "debug.log")
    write(tree / "untracked.txt")
    git(tree, "init", "-q")
    git(tree, "add", "pyproject.toml", "src/p/__init__.py", ".gitignore")
    git(tree, "commit", "-qm", "init")
    write(tree / "src/p/__init__.py", "changed = True\n")  # uncommitted change: the work tree counts
    (tree / "src/p/build/__init__.py").unlink()  # never added; gone
    copy = take(tree, tmp_path / "copy")
    assert copy.listed_by == "git"
    assert listing(tmp_path / "copy") == {
        "pyproject.toml",
        ".gitignore",
        "src/p/__init__.py",
        "untracked.txt",
    }
    assert (tmp_path / "copy/src/p/__init__.py").read_text() == "changed = True\n"


def test_project_inside_an_ignored_dir_of_a_repository_is_walked(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write(repo / ".gitignore", "vendor/\n")
    git(repo, "init", "-q")
    project = repo / "vendor" / "p"
    write(project / "pyproject.toml")
    write(project / "p.py")
    copy = take(project, tmp_path / "copy")
    assert copy.listed_by == "walk"
    assert listing(tmp_path / "copy") == {"pyproject.toml", "p.py"}


def test_output_dir_inside_the_project_is_left_out(tree: Path, tmp_path: Path) -> None:
    write(tree / "wheels/p-1-py3-none-any.whl")
    take(tree, tmp_path / "copy", exclude=["wheels"])
    assert not (tmp_path / "copy/wheels").exists()


def test_output_dir_inside_a_repository_is_left_out_with_its_contents(tree: Path, tmp_path: Path) -> None:
    git(tree, "init", "-q")
    write(tree / "wheels/p-1-py3-none-any.whl")  # untracked, not ignored: git lists it
    take(tree, tmp_path / "copy", exclude=["wheels"])
    assert not (tmp_path / "copy/wheels").exists()


@pytest.mark.parametrize("use_git", [False, True], ids=["walk", "git"])
def test_include_and_exclude_patterns_shape_the_copy(tree: Path, tmp_path: Path, use_git: bool) -> None:
    write(tree / ".gitignore", "src/p/_generated.py\n")
    write(tree / "src/p/_generated.py")  # ignored by git, yet needed
    write(tree / "docs/index.md")
    write(tree / "docs/keep.txt")
    write(tree / "src/p/debug.log")
    write(tree / "wheels/p-1-py3-none-any.whl")
    if use_git:
        git(tree, "init", "-q")
    selection = Selection(
        include=("src/p/_generated.py", "docs/keep.txt", "node_modules/a/*.js", "wheels/*"),
        exclude=("docs", "**/*.log"),
    )
    copy = take(tree, tmp_path / "copy", exclude=["wheels"], selection=selection)
    assert copy.listed_by == ("git" if use_git else "walk")
    included = {"src/p/_generated.py", "docs/keep.txt", "node_modules/a/index.js", ".gitignore"}
    assert listing(tmp_path / "copy") == EXPECTED_WALK | included


def test_links_keep_their_text_and_outside_targets_come_along_frozen(tree: Path, tmp_path: Path) -> None:
    outside = write(tmp_path / "shared/LICENSE", "license text\n")
    write(tmp_path / "shared/dir/data.txt", "data\n")
    (tree / "LICENSE").symlink_to("../shared/LICENSE")  # relative, out of the project
    (tree / "shared-dir").symlink_to(tmp_path / "shared/dir")  # absolute, out of the project
    (tree / "alias.py").symlink_to(tree / "src/p/__init__.py")  # absolute, but inside
    (tree / "sibling.py").symlink_to("src/p/__init__.py")  # relative, inside
    (tree / "dangling").symlink_to("does-not-exist")
    zone = tmp_path / "zone"
    copy_root = zone / "project"
    snapshot.take(traversal.plan(tree), copy_root, zone=zone, spare=tmp_path / "spare")
    outside.write_text("changed after the copy\n")

    license_copy = copy_root / "LICENSE"
    assert os.readlink(license_copy) == "../shared/LICENSE"  # what a backend archives, as in the tree
    assert license_copy.read_text() == "license text\n"  # read when the copy was taken
    assert license_copy.resolve() == (zone / "shared/LICENSE").resolve()
    shared = copy_root / "shared-dir"
    assert (shared / "data.txt").read_text() == "data\n"
    assert shared.resolve().is_relative_to((tmp_path / "spare").resolve())  # not the real directory
    alias = copy_root / "alias.py"
    assert not os.path.isabs(os.readlink(alias))  # never leads back into the user's tree
    assert alias.resolve() == (copy_root / "src/p/__init__.py").resolve()
    assert os.readlink(copy_root / "sibling.py") == "src/p/__init__.py"
    assert os.readlink(copy_root / "dangling") == "does-not-exist"


def test_link_loops_and_links_to_fifos_and_devices_end_and_nothing_is_opened(
    tree: Path, tmp_path: Path
) -> None:
    """A directory out of the project that links back to itself, a pair of directories linking to
    each other, links to a fifo and to a device: plain build succeeds on all of them, so the copy
    must end, in a process of its own with a timeout."""
    write(tmp_path / "out/loop/file.txt")
    (tmp_path / "out/loop/self").symlink_to(".")
    write(tmp_path / "out/a/a.txt")
    write(tmp_path / "out/b/b.txt")
    (tmp_path / "out/a/to-b").symlink_to("../b")
    (tmp_path / "out/b/to-a").symlink_to("../a")
    os.mkfifo(tmp_path / "out/pipe")
    (tree / "zeros").symlink_to("/dev/zero")  # a device: reading it would never end
    (tree / "loop").symlink_to(tmp_path / "out/loop")
    (tree / "a").symlink_to(tmp_path / "out/a")
    (tree / "pipe").symlink_to(tmp_path / "out/pipe")
    copy_root = tmp_path / "copy"
    copy = subprocess_take(tree, copy_root)

    assert (copy_root / "loop/self/self/file.txt").read_text() == "x\n"  # the loop is still a loop
    assert os.readlink(copy_root / "loop/self") == "."
    assert (copy_root / "a/to-b/b.txt").is_file()
    assert (copy_root / "a/to-b/to-a/a.txt").is_file()
    assert not (copy_root / "pipe").exists()
    assert not (copy_root / "zeros").exists()
    assert "pipe" in copy
    assert "zeros" in copy
    assert "OPENED" not in copy


# records every path the copy opens that is no regular file, directory or link: it must open none
AUDITED_TAKE = """
import os, stat, sys
from pathlib import Path
from safe_build import snapshot, traversal, workdirs

def audit(event, args):
    if event == "open" and isinstance(args[0], (str, bytes)):
        try:
            mode = os.stat(args[0]).st_mode
        except OSError:
            return
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            print("OPENED", args[0])

sys.addaudithook(audit)
print(snapshot.take(traversal.plan(Path(sys.argv[1])), Path(sys.argv[2])).skipped)
"""


def subprocess_take(tree: Path, destination: Path) -> str:
    """``take`` in a process of its own with a timeout (a copy that reads a fifo never ends),
    saying which special files it opened."""
    program = AUDITED_TAKE
    done = subprocess.run(
        [sys.executable, "-c", program, str(tree), str(destination)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_copies_are_real_copies_with_modes_and_times_kept(tree: Path, tmp_path: Path) -> None:
    source = tree / "src/p/__init__.py"
    os.utime(source, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    source.chmod(0o444)
    (tree / "run.sh").touch(mode=0o750)
    take(tree, tmp_path / "copy")
    copied = tmp_path / "copy/src/p/__init__.py"
    assert copied.stat().st_ino != source.stat().st_ino
    assert copied.stat().st_nlink == 1
    assert stat.S_IMODE(copied.stat().st_mode) == 0o444  # read-only stays read-only, as sdists record it
    assert stat.S_IMODE((tmp_path / "copy/run.sh").stat().st_mode) == 0o750
    assert copied.stat().st_mtime_ns == 1_000_000_000_000_000_000
    source.chmod(0o644)
    copied.chmod(0o644)
    copied.write_text("backend wrote here\n")
    assert source.read_text() == "x\n"


def test_sparse_files_stay_sparse(tree: Path, tmp_path: Path) -> None:
    sparse = tree / "sparse.img"
    with sparse.open("wb") as file:
        file.truncate(1 << 30)
        file.seek(1 << 29)
        file.write(b"data in the middle")
    if sparse.stat().st_blocks * 512 >= 1 << 20:
        pytest.skip("this file system does not keep holes")
    take(tree, tmp_path / "copy")
    copied = tmp_path / "copy/sparse.img"
    assert copied.stat().st_size == 1 << 30
    assert copied.stat().st_blocks * 512 <= sparse.stat().st_blocks * 512 + (1 << 20)
    with copied.open("rb") as file:
        file.seek(1 << 29)
        assert file.read(18) == b"data in the middle"


def test_fifos_and_sockets_are_skipped(tree: Path, tmp_path: Path) -> None:
    os.mkfifo(tree / "pipe")
    copy = take(tree, tmp_path / "copy")  # would hang reading the fifo if it tried
    assert copy.skipped == ["pipe"]
    assert not (tmp_path / "copy/pipe").exists()


def test_submodule_contents_are_copied(tmp_path: Path) -> None:
    library = tmp_path / "library"
    write(library / "lib.py")
    git(library, "init", "-q")
    git(library, "add", "-A")
    git(library, "commit", "-qm", "lib")
    project = tmp_path / "project"
    write(project / "pyproject.toml")
    git(project, "init", "-q")
    git(project, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(library), "vendor/library")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "with submodule")
    take(project, tmp_path / "copy")
    assert (tmp_path / "copy/vendor/library/lib.py").is_file()
    assert not (tmp_path / "copy/vendor/library/.git").exists()


def test_a_private_dir_is_the_users_alone_whatever_the_umask(tmp_path: Path) -> None:
    """A snapshot lies below its private dir: under umask 000 another user could otherwise plant
    files in the tree a backend builds from."""
    old = os.umask(0)
    try:
        with workdirs.private_dir(state.at(tmp_path / "cache", lock_timeout=5), "tree") as work:
            assert stat.S_IMODE(work.stat().st_mode) == 0o700
    finally:
        os.umask(old)
