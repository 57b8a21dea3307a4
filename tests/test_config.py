"""Settings: precedence (file < environment < flag), one-line errors, and the automatic isolation mode."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import pytest

from safe_build import config, isolation, options, patterns
from safe_build.cli import main
from safe_build.project import read_pyproject
from tests.conftest import write_project


@pytest.fixture(autouse=True)
def no_settings_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SAFE_BUILD_"):
            monkeypatch.delenv(name)


TABLE = "[tool.safe-build]\n"


def write_settings(project: Path, text: str = "") -> Path:
    """A minimal project whose pyproject.toml ends with ``text``; return the pyproject.toml."""
    project.mkdir(exist_ok=True)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        f'[build-system]\nrequires = ["flit_core>=3.9"]\nbuild-backend = "flit_core.buildapi"\n\n{text}\n'
    )
    return pyproject


def load(project: Path, *flags: str) -> config.Settings:
    return config.load(options.parse([str(project), *flags]), project)


class Layers(NamedTuple):
    """How one setting is given at each layer, and what it is then."""

    attribute: str
    line: str | None  # in [tool.safe-build]; None: not a key of the file
    variable: str
    flags: list[str]
    in_file: object
    in_env: object
    by_flag: object


PRECEDENCE = {
    "isolation": Layers(
        "isolation",
        'isolation = "copy"',
        "repository",
        ["--isolation", "in-place"],
        "copy",
        "repository",
        "in-place",
    ),
    "in-place": Layers(
        "isolation", 'isolation = "copy"', "repository", ["--in-place"], "copy", "repository", "in-place"
    ),
    "lock-timeout": Layers("lock_timeout", "lock-timeout = 7", "8.5", ["--lock-timeout", "9"], 7.0, 8.5, 9.0),
    # the variable replaces the file's list, flags add to it
    "include": Layers(
        "include",
        'include = ["gen.py"]',
        f"a.c{os.pathsep}./b/**/",
        ["--include", "c", "--include=d/*.h"],
        ("gen.py",),
        ("a.c", "b/**"),
        ("a.c", "b/**", "c", "d/*.h"),
    ),
    "exclude": Layers(
        "exclude",
        'exclude = ["docs"]',
        "tests/**",
        ["--exclude", "x"],
        ("docs",),
        ("tests/**",),
        ("tests/**", "x"),
    ),
    "cache-dir": Layers(
        "cache_dir",
        None,
        "/env-cache",
        ["--cache-dir", "/flag-cache"],
        None,
        Path("/env-cache"),
        Path("/flag-cache"),
    ),
    "no-cache": Layers("no_cache", None, "no", ["--no-cache"], None, False, True),
}


@pytest.mark.parametrize("case", PRECEDENCE)
def test_file_then_environment_then_flag(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layers = PRECEDENCE[case]
    project = tmp_path / "project"
    pyproject = write_settings(project)
    assert getattr(load(project), layers.attribute).origin == "default"
    if layers.line is not None:
        write_settings(project, TABLE + layers.line)
        assert getattr(load(project), layers.attribute) == config.Setting(layers.in_file, str(pyproject))
    name = "SAFE_BUILD_" + layers.attribute.upper()
    monkeypatch.setenv(name, layers.variable)
    assert getattr(load(project), layers.attribute) == config.Setting(layers.in_env, name)
    setting = getattr(load(project, *layers.flags), layers.attribute)
    assert setting.value == layers.by_flag
    flag = layers.flags[0].partition("=")[0]
    assert setting.origin == (f"{name} and {flag}" if isinstance(setting.value, tuple) else flag)


def test_empty_variable_counts_as_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pyproject = write_settings(tmp_path / "project", TABLE + "lock-timeout = 7")
    monkeypatch.setenv("SAFE_BUILD_LOCK_TIMEOUT", "")
    assert load(tmp_path / "project").lock_timeout == config.Setting(7.0, str(pyproject))


def test_refresh_is_a_flag_only(tmp_path: Path) -> None:
    write_settings(tmp_path / "project")
    assert load(tmp_path / "project").refresh == config.Setting(False, "default")
    assert load(tmp_path / "project", "--refresh").refresh == config.Setting(True, "--refresh")


def test_helpers_for_callers_without_a_project(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SAFE_BUILD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SAFE_BUILD_LOCK_TIMEOUT", "12")
    assert config.cache_dir() == tmp_path / "cache"
    assert config.cache_dir(str(tmp_path / "other")) == tmp_path / "other"
    assert config.lock_timeout(None) == 12.0
    assert config.lock_timeout("3") == 3.0


def only_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run safe-build, which must refuse the input (exit code 2) with one error line, and return it."""
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1, errors
    return errors[0].removeprefix("safe-build: error: ")


IN_FILE = "in [tool.safe-build] of {file}"
# each number's refusal names its own unit, with an example
SECONDS = "give a number of seconds, 0 or more, such as 600 (0 means: do not wait at all)"
DAYS = "give a number of days, 0 or more, such as 7 or 0.5 (0 means: a new build environment each time)"
# the end of pyproject.toml -> the start of the error line
FILE_ERRORS = {
    TABLE + "lock_timeout = 5": "unknown key 'lock_timeout' in [tool.safe-build] of {file}; "
    "did you mean 'lock-timeout'? valid keys: isolation, include, exclude, lock-timeout",
    TABLE + 'isolation = "fast"': f"invalid value 'fast' for isolation {IN_FILE}; use one of: auto, copy",
    TABLE + 'remote-cache = "http://b/x"': f"invalid value 'http://b/x' for remote-cache {IN_FILE}; ",
    TABLE + 'remote-cache-mode = "write"': f"invalid value 'write' for remote-cache-mode {IN_FILE}; "
    "use one of: read, read-write (read for untrusted jobs such as pull requests)",
    TABLE + "remote-cache-required = 1": f"invalid value 1 for remote-cache-required {IN_FILE}; "
    "use true or false",
    TABLE + 'lock-timeout = "5"': f"invalid value '5' for lock-timeout {IN_FILE}",
    TABLE + "lock-timeout = -1": f"invalid value -1 for lock-timeout {IN_FILE}",
    TABLE + "lock-timeout = true": f"invalid value True for lock-timeout {IN_FILE}; {SECONDS}",
    TABLE + "lock-timeout = nan": f"invalid value nan for lock-timeout {IN_FILE}; {SECONDS}",
    TABLE + "env-max-age = -3": f"invalid value -3 for env-max-age {IN_FILE}; {DAYS}",
    TABLE + 'env-max-age = "7d"': f"invalid value '7d' for env-max-age {IN_FILE}; {DAYS}",
    TABLE + 'include = "gen.py"': f"invalid value 'gen.py' for include {IN_FILE}",
    TABLE + 'exclude = ["docs", "../x"]': f"invalid value '../x' for exclude {IN_FILE}",
    TABLE + 'exclude = ["/etc"]': f"invalid value '/etc' for exclude {IN_FILE}",
    "[tool]\nsafe-build = 3": "[tool.safe-build] of {file} is not a table",
}


@pytest.mark.parametrize("text", FILE_ERRORS)
def test_bad_file_setting_is_one_line_naming_key_and_file(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Also when a variable or flag overrides the bad value: a mistake in the file is never silent."""
    pyproject = write_settings(tmp_path / "project", text)
    monkeypatch.setenv("SAFE_BUILD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SAFE_BUILD_ISOLATION", "copy")
    error = only_error([str(tmp_path / "project"), "-nw", "--lock-timeout=1"], capsys)
    assert error.startswith(FILE_ERRORS[text].format(file=pyproject))
    assert not (tmp_path / "project" / "dist").exists()


# name -> (variables, flags, the start of the error line)
OTHER_ERRORS: dict[str, tuple[dict[str, str], list[str], str]] = {
    "mode variable": ({"SAFE_BUILD_ISOLATION": "fast"}, [], "invalid value 'fast' for SAFE_BUILD_ISOLATION"),
    "yes-or-no variable": (
        {"SAFE_BUILD_NO_CACHE": "maybe"},
        [],
        "invalid value 'maybe' for SAFE_BUILD_NO_CACHE",
    ),
    "pattern variable": (
        {"SAFE_BUILD_EXCLUDE": f"docs{os.pathsep}.."},
        [],
        "invalid value '..' for SAFE_BUILD_EXCLUDE",
    ),
    "pattern flag": ({}, ["--include", "../*.py"], "invalid value '../*.py' for --include"),
    "days variable": (
        {"SAFE_BUILD_ENV_MAX_AGE": "-3"},
        [],
        f"invalid value '-3' for SAFE_BUILD_ENV_MAX_AGE; {DAYS}",
    ),
    "seconds variable": (
        {"SAFE_BUILD_LOCK_TIMEOUT": "-1"},
        [],
        f"invalid value '-1' for SAFE_BUILD_LOCK_TIMEOUT; {SECONDS}",
    ),
    "seconds flag": ({}, ["--lock-timeout", "nan"], f"invalid value 'nan' for --lock-timeout; {SECONDS}"),
    "mode flag": ({}, ["--isolation", "fast"], "argument --isolation: invalid choice: 'fast'"),
    "two modes": (
        {},
        ["--in-place", "--isolation=copy"],
        "argument --in-place: not allowed with argument --isolation copy",
    ),
}


@pytest.mark.parametrize("case", OTHER_ERRORS)
def test_bad_variable_or_flag_is_one_line_naming_it(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    variables, flags, expected = OTHER_ERRORS[case]
    write_settings(tmp_path / "project")
    for name, value in {"SAFE_BUILD_CACHE_DIR": str(tmp_path / "cache"), **variables}.items():
        monkeypatch.setenv(name, value)
    assert only_error([str(tmp_path / "project"), "-nw", *flags], capsys).startswith(expected)


def test_in_place_from_a_variable_needs_a_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sdist = tmp_path / "p-1.tar.gz"
    sdist.write_bytes(b"")
    monkeypatch.setenv("SAFE_BUILD_ISOLATION", "in-place")
    error = only_error([str(sdist), "-nw"], capsys)
    assert error == f"isolation in-place (SAFE_BUILD_ISOLATION) needs a project directory, not {sdist}"


BASE_PYPROJECT = """\
[build-system]
requires = [{requires}]
build-backend = "setuptools.build_meta"

[project]
name = "p"
version = "1"
"""
PLAIN_SETUP_PY = "from setuptools import setup\nsetup(name='p', version='1')\n"


def detect(tmp_path: Path, files: dict[str, str]) -> tuple[str, str]:
    """The detected mode and reason of a project made of ``files``; a value "-> X" is a link to X."""
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "README.md").write_text("shared\n")
    root = tmp_path / "project"
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if content.startswith("-> "):
            path.symlink_to(content.removeprefix("-> "))
        else:
            path.write_text(content)
    parsed = read_pyproject(root / "pyproject.toml") if "pyproject.toml" in files else None
    return isolation.detect(root, parsed)


@pytest.mark.parametrize(
    ("requirement", "name"),
    [
        ("setuptools_scm[toml]>=6.2", "setuptools-scm"),
        ("hatch-vcs", "hatch-vcs"),
        ("versioneer[toml]==0.29", "versioneer"),
        ("poetry-dynamic-versioning>=1,<2", "poetry-dynamic-versioning"),
        ("Flit_SCM", "flit-scm"),
        ("setuptools-git-versioning<3", "setuptools-git-versioning"),
        ("dunamai", "dunamai"),
        ("meson-python", "meson-python"),
    ],
)
def test_detection_by_build_requirement(requirement: str, name: str, tmp_path: Path) -> None:
    requires = f'"setuptools>=69", "{requirement}"'
    files = {"pyproject.toml": BASE_PYPROJECT.format(requires=requires)}
    assert detect(tmp_path, files) == ("repository", f"build-system requires {name}")


NOTHING = "nothing in the project needs version control or files outside it"


# text added to a [project] table at the end of pyproject.toml -> (mode, a part of the reason)
PYPROJECT_SIGNS = {
    "": ("copy", NOTHING),
    '[tool.pdm.version]\nsource = "scm"': (
        "repository",
        'pyproject.toml sets tool.pdm.version.source = "scm"',
    ),
    '[tool.pdm.version]\nsource = "file"\npath = "p.py"': ("copy", NOTHING),
    "[tool.setuptools_scm]": ("repository", "pyproject.toml has [tool.setuptools_scm]"),
    '[tool.hatch.version]\nsource = "vcs"': ("repository", 'tool.hatch.version.source = "vcs"'),
    '[tool.hatch.version]\npath = "src/p/__init__.py"': ("copy", NOTHING),
    'readme = "../README.md"': (
        "repository",
        "pyproject.toml project.readme reads ../README.md, outside the project",
    ),
    'readme = {file = "docs/../../R.md", content-type = "text/markdown"}': (
        "repository",
        "readme.file reads docs/../../R.md",
    ),
    'readme = "docs/README.md"': ("copy", NOTHING),
    'license = {file = "../LICENSE"}': ("repository", "project.license.file reads ../LICENSE"),
    'license-files = ["LICENSE", "../NOTICE*"]': ("repository", "project.license-files reads ../NOTICE*"),
    'dependencies = ["other @ file:../other"]': (
        "repository",
        "project.dependencies has 'other @ file:../other'",
    ),
    '[tool.setuptools_scm]\nroot = "../.."': ("repository", "tool.setuptools_scm.root reads ../.."),
    '[tool.hatch.build.targets.wheel.force-include]\n"../shared" = "p/shared"': (
        "repository",
        "reads ../shared",
    ),
}


@pytest.mark.parametrize("text", PYPROJECT_SIGNS)
def test_detection_by_pyproject(text: str, tmp_path: Path) -> None:
    files = {"pyproject.toml": BASE_PYPROJECT.format(requires='"setuptools>=69"') + text + "\n"}
    mode, reason = PYPROJECT_SIGNS[text]
    found, why = detect(tmp_path, files)
    assert found == mode, why
    assert reason in why


# name -> (files besides a plain pyproject.toml or setup.py, mode, a part of the reason)
FILE_SIGNS: dict[str, tuple[dict[str, str], str, str]] = {
    "plain setup.py": ({"setup.py": PLAIN_SETUP_PY}, "copy", NOTHING),
    "setup.py use_scm_version": (
        {"setup.py": "from setuptools import setup\nsetup(name='p', use_scm_version=True)\n"},
        "repository",
        "setup.py mentions use_scm_version",
    ),
    "setup.cfg setup_requires": (
        {"setup.cfg": "[options]\nsetup_requires =\n  setuptools_scm\n"},
        "repository",
        "setup.cfg mentions setuptools_scm",
    ),
    "versioneer.py": ({"versioneer.py": "# vendored\n"}, "repository", "versioneer.py at the project root"),
    "setup.cfg long_description": (
        {"setup.cfg": "[metadata]\nlong_description = file: README.md, ../CHANGES.md\n"},
        "repository",
        "setup.cfg [metadata] long_description reads ../CHANGES.md",
    ),
    "setup.cfg license_files": (
        {"setup.cfg": "[metadata]\nlicense_files =\n    LICENSE\n    ../NOTICE\n"},
        "repository",
        "license_files reads ../NOTICE",
    ),
    "setup.py reads above": (
        {"setup.py": PLAIN_SETUP_PY + "open('../README.md').read()\n"},
        "repository",
        "setup.py names a path above the project directory",
    ),
    "link out of the project": (
        {"README.md": "-> ../shared/README.md"},
        "repository",
        "README.md is a link to",
    ),
    "link within the project": ({"docs": "-> src", "src/x.txt": ""}, "copy", NOTHING),
    "linked virtual environment": ({".venv": "-> ../shared"}, "copy", NOTHING),
}


@pytest.mark.parametrize("case", FILE_SIGNS)
def test_detection_by_other_files(case: str, tmp_path: Path) -> None:
    files, mode, reason = FILE_SIGNS[case]
    found, why = detect(tmp_path, {"setup.py": PLAIN_SETUP_PY, **files})
    assert found == mode, why
    assert reason in why


def test_a_setting_overrides_detection(tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    tail = '[tool.safe-build]\nisolation = "copy"\n'
    (root / "pyproject.toml").write_text(BASE_PYPROJECT.format(requires='"setuptools-scm"') + tail)
    parsed = read_pyproject(root / "pyproject.toml")
    assert isolation.detect(root, parsed)[0] == "repository"
    assert isolation.choose(load(root).isolation, root, parsed) == (
        "copy",
        f"set by {root / 'pyproject.toml'}",
    )
    assert isolation.choose(load(root, "--in-place").isolation, root, parsed) == (
        "in-place",
        "set by --in-place",
    )


SELECTION = patterns.Selection(
    include=("data/keep.bin", "gen/**/*.h", "build/version.py"), exclude=("data", "**/*.log", "docs/*.md")
)


@pytest.mark.parametrize(
    ("relative", "included", "excluded"),  # by SELECTION
    [
        ("data", False, True),
        ("data/big.bin", False, True),
        ("data/keep.bin", True, False),
        ("src/p/run.log", False, True),
        ("run.log", False, True),
        ("docs/index.md", False, True),
        ("docs/api/index.md", False, False),  # * stays within one component
        ("gen/a.h", True, False),
        ("gen/x/y/a.h", True, False),
        ("gen/a.c", False, False),
        ("build/version.py", True, False),
        ("src/p/__init__.py", False, False),
    ],
)
def test_selection_patterns(relative: str, included: bool, excluded: bool) -> None:
    assert (SELECTION.included(relative), SELECTION.excluded(relative)) == (included, excluded)


def test_include_roots_are_where_to_look() -> None:
    assert SELECTION.include_roots() == ["build/version.py", "data/keep.bin", "gen"]
    assert patterns.Selection(include=("gen/a", "gen", "x/**/y")).include_roots() == ["gen", "x"]
    assert patterns.Selection(include=("*.so", "gen")).include_roots() == [""]


# name -> build requirements, flags, the line -v shows
VERBOSE = {
    "copy": ('"flit_core>=3.9"', [], "* Isolation: copy (nothing in the project needs version control"),
    "repository": (
        '"flit_core>=3.9", "setuptools-scm"',
        [],
        "* Isolation: repository (build-system requires setuptools-scm)",
    ),
    "in-place": ('"flit_core>=3.9"', ["--in-place"], "* Isolation: in-place (set by --in-place)"),
}


@pytest.mark.parametrize("case", VERBOSE)
def test_verbose_build_shows_mode_reason_and_settings(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real build (no isolated environment: fast and offline) says how it is isolated and why."""
    requires, flags, expected = VERBOSE[case]
    root = write_project(tmp_path / "flit", "flit")
    pyproject = root / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace('"flit_core>=3.9"', requires)
        + '[tool.safe-build]\nexclude = ["*.log"]\n'
    )
    monkeypatch.setenv("SAFE_BUILD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SAFE_BUILD_LOCK_TIMEOUT", "60")
    assert main([str(root), "-nwx", "-v", *flags]) == 0
    err = capsys.readouterr().err.splitlines()
    assert expected in "\n".join(err)
    assert f"* exclude = *.log (from {pyproject})" in err
    assert "* lock-timeout = 60.0 (from SAFE_BUILD_LOCK_TIMEOUT)" in err
    assert [path.name for path in (root / "dist").iterdir()] == ["demo_flit-3.0-py2.py3-none-any.whl"]
