"""Projects that read files above their directory, outside any repository: the snapshot brings along
what their settings name, an include brings the rest, and what neither names fails in one line that
says so and what to do. And projects that name a dependency by its path: their metadata names the
real place, as a build in place would, never the snapshot's.

The reference is plain ``python -m build --wheel`` in another copy of the same tree, where ``../``
leads where the project expects. (setuptools and hatchling refuse a readme above the project even
in place, so these projects read other files there: hatchling's version file and force-include,
and a ``setup.py`` that opens ``../VERSION``.)
"""

from __future__ import annotations

import shutil
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.conftest import (
    PROJECTS,
    members,
    plain_build_command,
    run,
    safe_build_command,
    tree_state,
    wheel_problems,
    write_files,
)

HATCH = {
    "pyproject.toml": textwrap.dedent(
        """\
        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"

        [project]
        name = "above-hatch"
        dynamic = ["version"]

        [tool.hatch.version]
        path = "../version.py"

        [tool.hatch.build.targets.wheel]
        packages = ["above_hatch"]

        [tool.hatch.build.targets.wheel.force-include]
        "../shared" = "above_hatch/shared"
        """
    ),
    "above_hatch/__init__.py": "VALUE = 1\n",
}
SETUP_PY = {
    "setup.py": (
        "import setuptools\n"
        'setuptools.setup(name="above-setup", version=open("../VERSION").read().strip(), py_modules=["m"])\n'
    ),
    "m.py": "VALUE = 2\n",
}


PATH_DEPENDENCY = {  # hatchling's way of naming a sibling in a monorepo
    "pyproject.toml": textwrap.dedent(
        """\
        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"

        [project]
        name = "above-app"
        version = "1.0"
        dependencies = ["above-hatch @ {root:uri}/../hatch", "above-setup @ {root:parent:uri}/setup-py"]

        [tool.hatch.metadata]
        allow-direct-references = true
        """
    ),
    "above_app/__init__.py": "VALUE = 3\n",
}


def make_tree(root: Path, version: str = "3.1") -> Path:
    """A monorepo-like tree, not under git: two projects and the files above them they read."""
    files = {
        "version.py": f'__version__ = "{version}"\n',
        "VERSION": f"{version}\n",
        "shared/data.txt": "shared data\n",
        "shared/deeper/more.txt": "more\n",
        **{f"hatch/{name}": text for name, text in HATCH.items()},
        **{f"setup-py/{name}": text for name, text in SETUP_PY.items()},
        **{f"app/{name}": text for name, text in PATH_DEPENDENCY.items()},
    }
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return root


def metadata(artifact: Path) -> str:
    """A wheel's METADATA or an sdist's PKG-INFO."""
    if artifact.name.endswith(".tar.gz"):
        with tarfile.open(artifact) as archive:
            extracted = archive.extractfile(f"{artifact.name.removesuffix('.tar.gz')}/PKG-INFO")
            assert extracted is not None
            return extracted.read().decode()
    with zipfile.ZipFile(artifact) as archive:
        [name] = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
        return archive.read(name).decode()


def assert_same_wheel(ours_dir: Path, plain_dir: Path) -> Path:
    [ours], [plain] = ours_dir.glob("*.whl"), plain_dir.glob("*.whl")
    assert ours.name == plain.name
    assert members(ours) == members(plain)
    assert metadata(ours) == metadata(plain)
    return ours


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    """The tree safe-build builds, and a copy for the plain in-place reference build."""
    ours = make_tree(tmp_path / "ours")
    plain = tmp_path / "plain"
    shutil.copytree(ours, plain)
    return ours, plain


def test_paths_that_settings_name_above_the_project_come_along(
    trees: tuple[Path, Path], env: dict[str, str], tmp_path: Path
) -> None:
    ours, plain = trees
    before = tree_state(ours)
    reference = run(plain_build_command("--wheel", "-n", "-o", tmp_path / "plain-out", plain / "hatch"), env)
    assert reference.returncode == 0, reference.stderr
    result = run(safe_build_command("--wheel", "-n", "-v", "-o", tmp_path / "out", ours / "hatch"), env)
    assert result.returncode == 0, result.stderr
    assert (
        "Isolation: repository (pyproject.toml tool.hatch.version.path reads ../version.py" in result.stderr
    )
    wheel = assert_same_wheel(tmp_path / "out", tmp_path / "plain-out")
    assert wheel.name == "above_hatch-3.1-py2.py3-none-any.whl"
    assert {"above_hatch/shared/data.txt", "above_hatch/shared/deeper/more.txt"} <= set(members(wheel))
    assert tree_state(ours) == before

    # the files above the project are part of the cache key: a new version there is a new build
    (ours / "version.py").write_text('__version__ = "3.2"\n')
    again = run(safe_build_command("--wheel", "-n", "-o", tmp_path / "out", ours / "hatch"), env)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "out" / "above_hatch-3.2-py2.py3-none-any.whl").is_file()


def test_a_file_above_that_no_setting_names_fails_in_one_line_until_included(
    trees: tuple[Path, Path], env: dict[str, str], tmp_path: Path
) -> None:
    ours, plain = trees
    before = tree_state(ours)
    failed = run(safe_build_command("--wheel", "-n", "-o", tmp_path / "out", ours / "setup-py"), env)
    assert failed.returncode == 1
    [last] = failed.stderr.strip().splitlines()[-1:]
    assert last.startswith(f"safe-build: error: building {ours / 'setup-py'} failed")
    assert last.endswith(
        "setup.py names a path above the project directory, and a snapshot has only the paths above "
        "the project that its settings or an include name: add it with --include ../PATH, or build "
        "with --isolation in-place"
    )
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())

    reference = run(
        plain_build_command("--wheel", "-n", "-o", tmp_path / "plain-out", plain / "setup-py"), env
    )
    assert reference.returncode == 0, reference.stderr
    flag = run(
        safe_build_command(
            "--wheel", "-n", "--include", "../VERSION", "-o", tmp_path / "out", ours / "setup-py"
        ),
        env,
    )
    assert flag.returncode == 0, flag.stderr
    assert (
        assert_same_wheel(tmp_path / "out", tmp_path / "plain-out").name == "above_setup-3.1-py3-none-any.whl"
    )
    assert tree_state(ours) == before

    # the same include as a setting of the project's (in a copy, so the tree above stays as it was)
    configured = tmp_path / "configured"
    shutil.copytree(ours, configured)
    (configured / "setup-py" / "pyproject.toml").write_text('[tool.safe-build]\ninclude = ["../VERSION"]\n')
    setting = run(safe_build_command("--wheel", "-n", "-o", tmp_path / "out2", configured / "setup-py"), env)
    assert setting.returncode == 0, setting.stderr


@pytest.mark.parametrize("pattern", ["../*", "..", "../../**", "/etc/passwd"])
def test_an_include_above_the_project_needs_a_fixed_name(
    pattern: str, trees: tuple[Path, Path], env: dict[str, str], tmp_path: Path
) -> None:
    """Walking a whole parent directory is no one's intent: ``../*`` is refused, ``../VERSION`` is not."""
    ours, _ = trees
    result = run(safe_build_command("--wheel", "-n", "--include", pattern, ours / "setup-py"), env)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"safe-build: error: invalid value {pattern!r} for --include; give a path or glob pattern relative "
        "to the project directory, like 'docs/**' or, above the project, '../LICENSE'"
    )


def test_a_dependency_named_by_path_names_the_real_place(
    trees: tuple[Path, Path], env: dict[str, str], tmp_path: Path
) -> None:
    """hatchling writes ``{root:uri}`` as the directory it builds in: the snapshot's, which is gone
    after the build. The artifacts name the project's real directory, as a build in place does."""
    ours, plain = trees
    for kind in ("--wheel", "--sdist"):
        made = run(plain_build_command(kind, "-n", "-o", tmp_path / "plain-out", plain / "app"), env)
        assert made.returncode == 0, made.stderr
        made = run(safe_build_command(kind, "-n", "-o", tmp_path / "out", ours / "app"), env)
        assert made.returncode == 0, made.stderr
    for pattern in ("*.whl", "*.tar.gz"):
        [artifact] = (tmp_path / "out").glob(pattern)
        expected = metadata(next((tmp_path / "plain-out").glob(pattern)))
        assert metadata(artifact) == expected.replace(plain.as_uri(), ours.as_uri())
        assert f"Requires-Dist: above-hatch @ {(ours / 'app').as_uri()}/../hatch" in metadata(artifact)
        assert f"Requires-Dist: above-setup @ {ours.as_uri()}/setup-py" in metadata(artifact)
    assert wheel_problems(next((tmp_path / "out").glob("*.whl"))) == []

    # the same files elsewhere: a new build that names that place, not the first one's artifacts
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(ours, elsewhere)
    moved = run(safe_build_command("--wheel", "-n", "-o", tmp_path / "moved", elsewhere / "app"), env)
    assert moved.returncode == 0, moved.stderr
    assert f"{(elsewhere / 'app').as_uri()}/../hatch" in metadata(next((tmp_path / "moved").glob("*.whl")))

    # a checkout whose last directories have the same names (another CI runner's): the key's
    # portable part is the same, but the artifacts name their place, so they are built again
    runner = tmp_path / "runner" / ours.name
    shutil.copytree(ours, runner)
    again = run(safe_build_command("--wheel", "-n", "-v", "-o", tmp_path / "runner-out", runner / "app"), env)
    assert again.returncode == 0, again.stderr
    assert "Reusing cache entry" not in again.stderr
    assert f"Stored under a key local to {runner}" in again.stderr
    assert f"{(runner / 'app').as_uri()}/../hatch" in metadata(next((tmp_path / "runner-out").glob("*.whl")))


def test_a_copy_of_a_tree_at_another_path_reuses_its_entry(env: dict[str, str], tmp_path: Path) -> None:
    """Nothing in these artifacts names where the tree lies: a checkout of it at another path (a CI
    runner's ``/builds/…`` against ``/home/runner/work/…``) is served the first build's entry."""
    first = write_files(tmp_path / "one" / "checkout", PROJECTS["flit"])
    second = tmp_path / "two" / "checkout"
    shutil.copytree(first, second)
    made = run(safe_build_command("--wheel", "-n", "-o", tmp_path / "out1", first), env)
    assert made.returncode == 0, made.stderr
    reused = run(safe_build_command("--wheel", "-n", "-o", tmp_path / "out2", second), env)
    assert reused.returncode == 0, reused.stderr
    assert "Reusing cache entry" in reused.stderr
    [one], [two] = (tmp_path / "out1").glob("*.whl"), (tmp_path / "out2").glob("*.whl")
    assert one.read_bytes() == two.read_bytes()
