"""States of real projects in which a snapshot could see other inputs than plain build sees.

Each case is built by plain ``python -m build`` in one clone and by safe-build in another clone of
the same commit, put in the same state, and the artifacts compared member by member. Where the
cache is involved, safe-build first builds the earlier state, so that a key blind to the change
would serve that state's entry.
"""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import pytest

from tests.conftest import archive_members, plain_build_command, run, safe_build_command, write_files
from tests.vcs_projects import SOURCE_DATE_EPOCH, artifacts_in, checkout, differences, git, make


@pytest.fixture
def build_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}


def pyproject(name: str, requirement: str = "setuptools>=69", backend: str = "setuptools.build_meta") -> str:
    """A ``pyproject.toml`` with a static name and version."""
    return (
        f'[build-system]\nrequires = ["{requirement}"]\nbuild-backend = "{backend}"\n'
        f'[project]\nname = "{name}"\nversion = "1"\n'
    )


def built(command: list[str], env: dict[str, str]) -> None:
    result = run(command, env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def compare(plain_out: Path, ours_out: Path) -> list[str]:
    return differences(artifacts_in(plain_out), artifacts_in(ours_out))


def clones(origin: Path, where: Path) -> tuple[Path, Path]:
    """Two clones of ``origin``: one for plain build, one for safe-build."""
    plain, ours = where / "plain" / origin.name, where / "ours" / origin.name
    for clone in (plain, ours):
        clone.parent.mkdir(parents=True)
        git(clone.parent, "clone", "-q", origin, clone)
    return plain, ours


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def test_a_staged_new_file_is_a_new_key_as_setuptools_scm_sees_it(
    build_env: dict[str, str], tmp_path: Path
) -> None:
    """After ``git add`` of an untracked file, setuptools-scm lists it and calls the tree dirty;
    before, safe-build served the entry of the untracked state: the clean version, without it."""
    fixture = make("scm-root", "tag", tmp_path / "origin")
    plain, ours = checkout(fixture, tmp_path / "plain"), checkout(fixture, tmp_path / "ours")
    for tree in (plain, ours):
        (tree.project / "src/scm_root/new-data.txt").write_text("new\n")
    built(safe_build_command("--sdist", "-o", tmp_path / "untracked", ours.project), build_env)
    for tree in (plain, ours):
        git(tree.root, "add", "src/scm_root/new-data.txt")
    built(plain_build_command("--sdist", "-o", tmp_path / "plain-out", plain.project), build_env)
    built(safe_build_command("--sdist", "-o", tmp_path / "ours-out", ours.project), build_env)
    assert compare(tmp_path / "plain-out", tmp_path / "ours-out") == []
    assert compare(tmp_path / "untracked", tmp_path / "ours-out") != []  # the state did change


RELEASE_BRANCH = {
    "pyproject.toml": textwrap.dedent(
        """\
        [build-system]
        requires = ["setuptools>=69", "setuptools-scm>=8"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "branchy"
        dynamic = ["version"]

        [tool.setuptools_scm]
        version_scheme = "release-branch-semver"
        """
    ),
    "branchy/__init__.py": "",
    ".gitignore": "build/\ndist/\n*.egg-info/\n",
}


def test_a_new_branch_at_the_same_commit_is_a_new_key_for_release_branch_semver(
    build_env: dict[str, str], tmp_path: Path
) -> None:
    """``release-branch-semver`` reads the branch's name: on ``v0.5.x`` the next version is 0.5.1,
    on main 0.6.0, at one commit. Before, safe-build served main's sdist on the new branch."""
    origin = write_files(tmp_path / "origin" / "branchy", RELEASE_BRANCH)
    git(origin, "init", "-q")
    commit_all(origin, "first")
    git(origin, "tag", "-a", "v0.5.0", "-m", "release")
    (origin / "branchy/__init__.py").write_text("VALUE = 1\n")
    commit_all(origin, "after the release")
    plain, ours = clones(origin, tmp_path)
    built(safe_build_command("--sdist", "-o", tmp_path / "on-main", ours), build_env)
    for clone in (plain, ours):
        git(clone, "switch", "-q", "-c", "v0.5.x")
    built(plain_build_command("--sdist", "-o", tmp_path / "plain-out", plain), build_env)
    built(safe_build_command("--sdist", "-o", tmp_path / "ours-out", ours), build_env)
    assert compare(tmp_path / "plain-out", tmp_path / "ours-out") == []
    assert [path.name for path in artifacts_in(tmp_path / "ours-out")] != [
        path.name for path in artifacts_in(tmp_path / "on-main")
    ]


SELF_HOSTED = {
    # meson-python's own repository: the backend builds itself, so no requirement names it
    "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "mesonpy"\nbackend-path = ["."]\n',
    "PKG-INFO": "Metadata-Version: 2.1\nName: fakemeson\nVersion: 1.0\n",
    "fakemeson.py": "VALUE = 1\n",
    "mesonpy.py": textwrap.dedent(
        """\
        import subprocess


        def build_sdist(sdist_directory, config_settings=None):
            # as `meson dist` does: an export of the repository's HEAD
            name = "fakemeson-1.0"
            subprocess.run(
                ["git", "archive", "--format=tar.gz", f"--prefix={name}/", "-o",
                 f"{sdist_directory}/{name}.tar.gz", "HEAD"],
                check=True,
            )
            return name + ".tar.gz"
        """
    ),
}


def test_a_self_hosted_backend_that_exports_the_repository_builds_as_plain_build_does(
    build_env: dict[str, str], tmp_path: Path
) -> None:
    origin = write_files(tmp_path / "origin" / "fakemeson", SELF_HOSTED)
    git(origin, "init", "-q")
    commit_all(origin, "first")
    plain, ours = clones(origin, tmp_path)
    built(plain_build_command("--sdist", "-o", tmp_path / "plain-out", plain), build_env)
    built(safe_build_command("--sdist", "-o", tmp_path / "ours-out", ours), build_env)
    assert compare(tmp_path / "plain-out", tmp_path / "ours-out") == []

    copied = run(
        safe_build_command("--sdist", "--isolation", "copy", "-o", tmp_path / "copy", ours), build_env
    )
    assert copied.returncode == 1
    last = copied.stderr.strip().splitlines()[-1]
    assert last.startswith("safe-build: error: "), last
    assert "--isolation repository" in last, last


@pytest.mark.parametrize("repository_ignores", [True, False], ids=["repository-gitignore", "none"])
def test_a_hatchling_project_below_a_repository_root_reads_the_repository_gitignore_only(
    build_env: dict[str, str], tmp_path: Path, repository_ignores: bool
) -> None:
    """hatchling takes the nearest ``.gitignore`` up to the directory holding ``.git``. The
    project has none of its own; the repository's, if any, ignores ``*.log``; one above the cache
    directory (as ``~/.gitignore`` lies above ``~/.cache``) ignores ``tests/`` and must never count."""
    files = {
        **({".gitignore": "*.log\n"} if repository_ignores else {}),
        "packages/hat/pyproject.toml": pyproject("hat", "hatchling", "hatchling.build"),
        "packages/hat/hat/__init__.py": "",
        "packages/hat/tests/test_hat.py": "def test(): pass\n",
        "packages/hat/notes.log": "tracked although ignored\n",
    }
    origin = write_files(tmp_path / "origin" / "repo", files)
    git(origin, "init", "-q")
    git(origin, "add", "-A", "-f")
    git(origin, "commit", "-q", "-m", "first")
    plain, ours = clones(origin, tmp_path)
    home = write_files(tmp_path / "home", {".gitignore": "tests/\n"})
    ours_env = {**build_env, "SAFE_BUILD_CACHE_DIR": str(home / ".cache/safe-build")}
    built(plain_build_command("-o", tmp_path / "plain-out", plain / "packages/hat"), build_env)
    built(safe_build_command("-o", tmp_path / "ours-out", ours / "packages/hat"), ours_env)
    assert compare(tmp_path / "plain-out", tmp_path / "ours-out") == []


def test_a_read_only_source_file_stays_read_only_in_the_sdist(env: dict[str, str], tmp_path: Path) -> None:
    def project(where: Path) -> Path:
        root = write_files(
            where / "ro",
            {
                "pyproject.toml": pyproject("ro"),
                "ro/__init__.py": "",
                "ro/frozen.py": "VALUE = 1\n",
            },
        )
        (root / "ro/frozen.py").chmod(0o444)
        return root

    built(plain_build_command("--sdist", "-o", tmp_path / "plain-out", project(tmp_path / "a")), env)
    built(safe_build_command("--sdist", "-o", tmp_path / "ours-out", project(tmp_path / "b")), env)
    plain_members = archive_members(tmp_path / "plain-out/ro-1.tar.gz")
    ours_members = archive_members(tmp_path / "ours-out/ro-1.tar.gz")
    assert ours_members["ro/frozen.py"][1] == 0o444
    assert {name: mode for name, (_, mode, _) in ours_members.items()} == {
        name: mode for name, (_, mode, _) in plain_members.items()
    }


EXTENSION = {
    "pyproject.toml": pyproject("cext"),
    "setup.py": "from setuptools import Extension, setup\n"
    'setup(ext_modules=[Extension("cext", ["cext.c"])])\n',
    "cext.c": textwrap.dedent(
        """\
        #include <Python.h>
        static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "cext", NULL, -1, NULL};
        PyMODINIT_FUNC PyInit_cext(void) { return PyModule_Create(&module); }
        """
    ),
}


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_two_uncached_builds_of_a_c_extension_give_the_same_bytes(
    env: dict[str, str], tmp_path: Path
) -> None:
    """The debug information of a compiled extension records the directory it was built in: two
    builds of one tree one after another must build at one path, as plain builds in one place do."""
    project = write_files(tmp_path / "cext", EXTENSION)
    debug = {**env, "CFLAGS": "-g", "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
    wheels = []
    for number in range(2):
        outdir = tmp_path / f"out-{number}"
        built(safe_build_command("--wheel", "-n", "--no-cache", "-o", outdir, project), debug)
        (wheel,) = outdir.glob("*.whl")
        wheels.append(wheel.read_bytes())
    assert wheels[0] == wheels[1]
    assert sorted(os.listdir(project)) == sorted(EXTENSION)  # nothing built in the tree


@pytest.mark.parametrize("deep", ["project", "files"])
def test_paths_near_the_system_limit_build_as_plain_build_does(
    env: dict[str, str], tmp_path: Path, deep: str
) -> None:
    """Paths within a hundred characters of PATH_MAX (4,096 on Linux): a project that lies deep, or
    files that lie deep in a project at a short path. A snapshot's root is longer than the leading
    part of the tree's path it replaces; before, such files were "File name too long" in the copy."""
    room = 4_080 - len(f"{tmp_path}/b/deep/deep/.py")  # the longest path: 4,080 characters
    levels = ["d" * 200] * ((room - 1) // 201)
    module = "/".join(
        ["deep", *(levels if deep == "files" else []), "m" * (room - 201 * len(levels)) + ".py"]
    )
    files = {
        "pyproject.toml": pyproject("deep", "flit_core>=3.9", "flit_core.buildapi").replace(
            'version = "1"', 'version = "1"\ndescription = "deep"'
        ),
        "deep/__init__.py": "",
        module: "VALUE = 1\n",
    }
    above = tmp_path.joinpath(*levels) if deep == "project" else tmp_path
    plain, ours = write_files(above / "a" / "deep", files), write_files(above / "b" / "deep", files)
    assert len(str(ours / module)) == 4_080
    built(plain_build_command("--wheel", "-n", "-o", tmp_path / "plain-out", plain), env)
    built(safe_build_command("--wheel", "-n", "-o", tmp_path / "ours-out", ours), env)
    assert compare(tmp_path / "plain-out", tmp_path / "ours-out") == []
