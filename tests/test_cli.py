"""The command line: build's flags with build's meaning, safe-build's own, and one line per bad input."""

from __future__ import annotations

import json
import os
import shutil
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from safe_build.cli import main
from tests.conftest import members, plain_build_command, run, safe_build_command, tree_state

MakeProject = Callable[..., Path]
pytestmark = pytest.mark.compat  # a smoke test of the build side for .ci/compat


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("safe-build: error:")]


def private_leftovers(env: dict[str, str]) -> list[str]:
    tmp = Path(env["SAFE_BUILD_CACHE_DIR"]) / "tmp"
    return sorted(path.name for path in tmp.iterdir()) if tmp.exists() else []


def test_help_lists_the_other_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in ("safe-build cache {dir,list,info,clean,prune}", "safe-build venv PATH", "safe-pip ARGS"):
        assert command in text
    assert "built as ./cache, ./venv or ./pip" in text
    assert "sdist made from" not in text  # no such isolation mode


@pytest.mark.parametrize("name", ["pip", "venv", "cache"])
def test_a_project_named_like_a_command_is_built_as_a_path(
    name: str, make_project: MakeProject, env: dict[str, str], tmp_path: Path
) -> None:
    make_project("flit", name)
    done = run(safe_build_command(f"./{name}", "--wheel", "-n"), env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    built = [path.name for path in (tmp_path / name / "dist").iterdir()]
    assert built == ["demo_flit-3.0-py2.py3-none-any.whl"]


def test_version_names_both_tools(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("safe-build 0.")


def test_help_lists_builds_flags_and_its_own(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for flag in [
        "--sdist",
        "--wheel",
        "--outdir",
        "--config-setting",
        "--no-isolation",
        "--in-place",
        "--lock-timeout",
    ]:
        assert flag in text


def test_default_flow_matches_plain_build(
    make_project: MakeProject, env: dict[str, str], tmp_path: Path
) -> None:
    """No flags: an sdist, then a wheel from it; same names and members as python -m build."""
    project = make_project("setuptools")
    plain_copy = shutil.copytree(project, tmp_path / "plain-copy")
    plain = run(plain_build_command(plain_copy), env)
    assert plain.returncode == 0, plain.stderr
    assert main([str(project), "-q"]) == 0
    ours = sorted((project / "dist").iterdir())
    theirs = sorted((plain_copy / "dist").iterdir())
    assert [path.name for path in ours] == [path.name for path in theirs]
    for mine, plains in zip(ours, theirs, strict=True):
        assert members(mine) == members(plains)
    assert sorted(os.listdir(project)) == ["dist", "pyproject.toml", "src"]  # no build/, no egg-info


def test_deleted_module_is_gone_from_the_next_wheel(make_project: MakeProject, env: dict[str, str]) -> None:
    project = make_project("setuptools")
    assert main([str(project), "-nw", "-q"]) == 0
    assert "demo_setuptools/core.py" in members(next((project / "dist").glob("*.whl")))
    (project / "src/demo_setuptools/core.py").unlink()
    assert main([str(project), "-nw", "-q"]) == 0
    assert "demo_setuptools/core.py" not in members(next((project / "dist").glob("*.whl")))


RECORDING_BACKEND = """\
import json
import os

from flit_core import buildapi as _flit
from flit_core.buildapi import *  # noqa: F403


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    with open(os.environ["RECORD_CONFIG_SETTINGS"], "w") as file:
        json.dump(config_settings, file)
    return _flit.build_wheel(wheel_directory, config_settings, metadata_directory)
"""


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (
            ["-C--build-option=--x", "-Ckey=a", "--config-setting=key=b"],
            {"--build-option": "--x", "key": ["a", "b"]},
        ),
        (['--config-json={"nested": {"a": [1, 2]}}'], {"nested": {"a": [1, 2]}}),
    ],
    ids=["config-setting", "config-json"],
)
def test_config_settings_reach_the_backend(
    flags: list[str],
    expected: dict[str, object],
    make_project: MakeProject,
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    """Settings arrive as build would pass them, also those starting with '-' (the KEY=VALUE form)."""
    project = make_project("flit")
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            'build-backend = "flit_core.buildapi"', 'build-backend = "recording"\nbackend-path = ["."]'
        )
    )
    (project / "recording.py").write_text(RECORDING_BACKEND)
    recorded = tmp_path / "settings.json"
    env["RECORD_CONFIG_SETTINGS"] = str(recorded)
    result = run([sys.executable, "-m", "safe_build", str(project), "-nw", *flags], env)
    assert result.returncode == 0, result.stderr
    assert json.loads(recorded.read_text()) == expected


def test_sdist_input_builds_a_wheel_next_to_it(
    make_project: MakeProject, env: dict[str, str], tmp_path: Path
) -> None:
    project = make_project("flit")
    assert main([str(project), "--sdist", "-n", "-o", str(tmp_path / "sdists"), "-q"]) == 0
    (sdist,) = (tmp_path / "sdists").glob("*.tar.gz")
    assert main([str(sdist), "-n", "-q"]) == 0
    assert [path.name for path in sorted((tmp_path / "sdists").iterdir())] == [
        "demo_flit-3.0-py2.py3-none-any.whl",
        "demo_flit-3.0.tar.gz",
    ]


def test_metadata_prints_json(
    make_project: MakeProject, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    project = make_project("hatchling")
    before = tree_state(project)
    assert main([str(project), "--metadata", "-n"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "demo-hatch"
    assert tree_state(project) == before


def test_report_points_at_published_artifacts(
    make_project: MakeProject, env: dict[str, str], tmp_path: Path
) -> None:
    project = make_project("hatchling")
    report = tmp_path / "report.json"
    assert main([str(project), "-nw", "-q", "-o", str(tmp_path / "out"), "--report", str(report)]) == 0
    (artifact,) = json.loads(report.read_text())["artifacts"]
    assert Path(artifact["path"]) == tmp_path / "out" / artifact["name"]
    assert Path(artifact["path"]).stat().st_size == artifact["size"]


def test_relative_srcdir_and_outdir_are_taken_from_the_working_directory(
    make_project: MakeProject, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_project("flit")
    monkeypatch.chdir(tmp_path)
    assert main(["flit/", "-nw", "-q", "-o", "wheels"]) == 0
    assert [path.name for path in (tmp_path / "wheels").iterdir()] == ["demo_flit-3.0-py2.py3-none-any.whl"]


def test_odd_tree_through_a_link_with_spaces_non_ascii_names_and_read_only_files(
    make_project: MakeProject, env: dict[str, str], tmp_path: Path
) -> None:
    """A project reached through a symlink with a trailing slash, in a directory whose name has a
    space and non-ASCII letters, holding a read-only package and a data file of such a name."""
    project = make_project("setuptools", "mon projet ü")
    data = project / "src/demo_setuptools/données à lire.txt"
    data.write_text("données\n", encoding="utf-8")
    (project / "pyproject.toml").write_text(
        (project / "pyproject.toml").read_text() + '\n[tool.setuptools.package-data]\n"*" = ["*.txt"]\n'
    )
    for path in (data, project / "src/demo_setuptools/__init__.py"):
        path.chmod(0o444)
    link = tmp_path / "lien vers le projet"
    link.symlink_to(project)
    before = tree_state(project)
    assert main([f"{link}/", "-nw", "-q", "-o", str(tmp_path / "out")]) == 0
    (wheel,) = (tmp_path / "out").glob("*.whl")
    assert "demo_setuptools/données à lire.txt" in members(wheel)
    assert tree_state(project) == before


def test_published_wheel_keeps_normal_permissions(make_project: MakeProject, env: dict[str, str]) -> None:
    project = make_project("flit")
    assert main([str(project), "-nw", "-q"]) == 0
    (wheel,) = (project / "dist").glob("*.whl")
    assert wheel.stat().st_mode & 0o044 == 0o044  # readable by others, as plain build leaves it
    with zipfile.ZipFile(wheel) as archive:
        assert archive.testzip() is None


BROKEN_BACKEND = "[build-system]\nrequires = []\nbuild-backend = 'broken'\nbackend-path = ['.']\n"


def bad_inputs(tmp_path: Path, project: Path) -> dict[str, tuple[list[str], int, str]]:
    """name -> (arguments, exit code, text the one error line must contain)."""
    not_a_project = tmp_path / "empty"
    not_a_project.mkdir()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    bad_toml = tmp_path / "bad-toml"
    bad_toml.mkdir()
    (bad_toml / "pyproject.toml").write_text("[project\nname = 'x'\n")
    raising = tmp_path / "raising"
    raising.mkdir()
    (raising / "pyproject.toml").write_text(BROKEN_BACKEND)
    (raising / "broken.py").write_text(
        "def build_wheel(*args, **kwargs):\n    raise RuntimeError('backend exploded')\n"
    )
    missing_backend = tmp_path / "missing-backend"
    missing_backend.mkdir()
    (missing_backend / "pyproject.toml").write_text(BROKEN_BACKEND.replace("'broken'", "'no_such_backend'"))
    return {
        "missing srcdir": ([str(tmp_path / "nope")], 2, "no such file or directory"),
        "not a project": ([str(not_a_project)], 2, "is not a Python project"),
        "srcdir is a plain file": ([str(a_file)], 2, "is a file, not a project directory"),
        "invalid pyproject.toml": ([str(bad_toml)], 2, "invalid TOML in"),
        "backend raises": ([str(raising), "-nw"], 1, "failed: Backend"),
        "backend not importable": ([str(missing_backend), "-nw"], 1, "failed: Backend 'no_such_backend'"),
        "outdir is a file": ([str(project), "-nw", "-o", str(a_file)], 2, "is not a directory"),
        "outdir below a file": ([str(project), "-nw", "-o", str(a_file / "sub")], 2, "is not a directory"),
        "bad lock timeout": (
            [str(project), "--lock-timeout", "soon"],
            2,
            "invalid value 'soon' for --lock-timeout",
        ),
        "in-place on an sdist": ([str(tmp_path / "x-1.tar.gz"), "--in-place"], 2, "no such file"),
        "unknown flag": ([str(project), "--frobnicate"], 2, "unrecognized arguments: --frobnicate"),
        "bad --config-json": ([str(project), "-nw", "--config-json", "{not json"], 2, "Invalid JSON"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing srcdir",
        "not a project",
        "srcdir is a plain file",
        "invalid pyproject.toml",
        "backend raises",
        "backend not importable",
        "outdir is a file",
        "outdir below a file",
        "bad lock timeout",
        "in-place on an sdist",
        "unknown flag",
        "bad --config-json",
    ],
)
def test_bad_input_gives_one_line_and_writes_nothing(
    case: str, make_project: MakeProject, env: dict[str, str], tmp_path: Path
) -> None:
    project = make_project("flit")
    cases = bad_inputs(tmp_path, project)
    arguments, code, text = cases[case]
    before = tree_state(tmp_path)
    result = run([sys.executable, "-m", "safe_build", *arguments], env)
    assert result.returncode == code, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("safe-build: error:"), last
    assert len(error_lines(result.stderr)) <= 1
    assert text in last, last
    if code == 2:  # refused before anything ran: no replayed build output, no traceback of ours
        assert "Traceback" not in result.stderr
    after = tree_state(tmp_path)
    created = sorted(
        set(after) - set(before) - {name for name in after if name.startswith("safe-build-cache")}
    )
    assert created == [], "bad input must write nothing"
    assert private_leftovers(env) == []


def test_failing_backend_output_is_replayed(tmp_path: Path, env: dict[str, str]) -> None:
    project = tmp_path / "raising"
    project.mkdir()
    (project / "pyproject.toml").write_text(BROKEN_BACKEND)
    (project / "broken.py").write_text(
        "def build_wheel(*args, **kwargs):\n    raise RuntimeError('backend exploded')\n"
    )
    result = run([sys.executable, "-m", "safe_build", str(project), "-nw"], env)
    assert result.returncode == 1
    assert "RuntimeError: backend exploded" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("safe-build: error: building")


def test_success_prints_what_plain_build_prints(
    make_project: MakeProject, env: dict[str, str], tmp_path: Path
) -> None:
    """build's steps on stderr, the summary on stdout, nothing of safe-build's own (tests/test_output.py
    compares each verbosity, and cache hits)."""
    project = make_project("flit")
    result = run([sys.executable, "-m", "safe_build", str(project), "-nw"], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Successfully built demo_flit-3.0-py2.py3-none-any.whl"
    plain = run([sys.executable, "-m", "build", str(project), "-nw", "-o", str(tmp_path / "plain")], env)
    assert (plain.returncode, plain.stdout) == (0, result.stdout)
    assert result.stderr == plain.stderr == "* Getting build dependencies for wheel...\n* Building wheel...\n"


def test_an_empty_outdir_is_the_working_directory_as_in_build(
    make_project: MakeProject, env: dict[str, str], tmp_path: Path
) -> None:
    project = make_project("flit")
    here = tmp_path / "here"
    here.mkdir()
    done = run(safe_build_command(project, "--wheel", "-n", "-o", ""), env, cwd=here)
    assert done.returncode == 0, done.stderr
    assert [path.name for path in here.iterdir()] == ["demo_flit-3.0-py2.py3-none-any.whl"]
    assert not (project / "dist").exists()


def test_the_error_line_is_coloured_as_build_colours_its_own(env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    forced = run(safe_build_command(missing), {**env, "FORCE_COLOR": "1"})
    assert forced.stderr.splitlines()[-1].startswith("\x1b[91msafe-build: error:\x1b[0m no such file")
    plain = run(safe_build_command(missing), {**env, "NO_COLOR": "1"})
    assert plain.stderr.splitlines()[-1].startswith("safe-build: error: no such file")
