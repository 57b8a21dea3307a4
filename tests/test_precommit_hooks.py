"""The pre-commit hooks, run by real pre-commit on real git repositories.

``pre-commit try-repo`` and ``pre-commit run`` install the hooks from a repository made of this
checkout as it is; either installs them with pip into an environment of its own, offline:
the wheels of safe-build's requirements, its ``hooks`` extra and setuptools are downloaded once
per session. pre-commit splits the files among parallel processes (one per CPU), each of which
builds every package its files belong to, so those processes build the same packages at once.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from safe_build_hooks.packages import owning_packages
from tests.conftest import run, tree_state, wheel_problems
from tests.example_repos import CHECKOUT, checkout_repo, commit_all, download, example_repo
from tests.vcs_projects import write

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

GOOD = ("packages/greet", "packages/greet-cli")
ARTIFACTS = ("-py3-none-any.whl", ".tar.gz")
BROKEN_PYPROJECT = '[build-system]\nrequires = ["setuptools>=69"\nbuild-backend = "setuptools.build_meta"\n'
BAD_DEPENDENCY = """\
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "bad-dependency"
version = "1.0"
dependencies = ["not a requirement!!"]
"""
# tracked docs the sdist leaves out, package data the sdist has and the wheel lacks, bad reST
LEAKY = {
    "pyproject.toml": """\
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "leaky"
version = "1.0"
readme = {text = "Leaky\\n=====\\n\\n`unclosed", content-type = "text/x-rst"}

[tool.setuptools]
include-package-data = false
""",
    "MANIFEST.in": "graft src\n",
    "src/leaky/__init__.py": "",
    "src/leaky/data.txt": "data\n",
    "docs/notes.md": "notes\n",
}


@pytest.fixture(scope="session")
def hook_wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels of what pip installs into the hooks' environment, besides safe-build itself."""
    pyproject = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())
    project = pyproject["project"]
    wanted = [*pyproject["build-system"]["requires"], *project["dependencies"]]
    wanted += project["optional-dependencies"]["hooks"]
    return download(tmp_path_factory.mktemp("hook-wheelhouse"), wanted)


@pytest.fixture(scope="session")
def hook_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """This checkout as a repository of its own, with what is not committed yet (new files too,
    which try-repo on the checkout would leave out); and its commit."""
    return checkout_repo(tmp_path_factory.mktemp("hooks"))


@pytest.fixture(scope="session")
def pre_commit_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pre-commit's store, so that ``pre-commit run`` installs the hooks once (try-repo makes its own)."""
    return tmp_path_factory.mktemp("pre-commit-home")


@pytest.fixture
def hook_env(
    env: dict[str, str], wheelhouse: Path, hook_wheelhouse: Path, pre_commit_home: Path
) -> dict[str, str]:
    """Offline installs of the hooks; no byte-compiling of all of twine's requirements at install:
    the hooks compile what they import."""
    links = f"{wheelhouse} {hook_wheelhouse}"
    return {**env, "PIP_FIND_LINKS": links, "PIP_NO_COMPILE": "1", "PRE_COMMIT_HOME": str(pre_commit_home)}


def pre_commit(*args: str) -> list[str]:
    return [sys.executable, "-m", "pre_commit", *args, "--all-files", "--color", "never", "--verbose"]


def reports(output: str) -> dict[str, list[str]]:
    """Each hook's output (of all its processes), by hook id."""
    parts = re.split(r"^- hook id: (\S+)$", output, flags=re.MULTILINE)
    return {hook: body.splitlines() for hook, body in zip(parts[1::2], parts[2::2], strict=True)}


def without_git(state: dict[str, tuple[int, bytes | str]]) -> dict[str, tuple[int, bytes | str]]:
    return {path: entry for path, entry in state.items() if path != ".git" and not path.startswith(".git/")}


def processes() -> int:
    """How many processes pre-commit runs a hook in: one per CPU it may use."""
    return len(os.sched_getaffinity(0))


def test_try_repo_builds_and_checks_a_good_repository_in_parallel_chunks(
    hook_env: dict[str, str], hook_repo: tuple[Path, str], tmp_path: Path
) -> None:
    """Every chunk builds both packages at once with the others; all pass; the tree is untouched."""
    repo = example_repo("pre-commit", tmp_path / "repo")
    before = without_git(tree_state(repo))
    done = run(pre_commit("try-repo", str(hook_repo[0])), hook_env, repo)
    assert done.returncode == 0, done.stdout + done.stderr
    by_hook = reports(done.stdout)
    assert sorted(by_hook) == ["safe-build", "safe-build-check"]
    for hook, lines in by_hook.items():
        for package in GOOD:
            passed = lines.count(f"{package}: passed")
            assert passed >= min(2, processes()), f"{hook}: {package} in {passed} processes\n{done.stdout}"
        assert not [line for line in lines if line.endswith(": failed")], done.stdout
    # in-place builds would have left build/ and *.egg-info in packages/greet
    assert without_git(tree_state(repo)) == before


def test_run_reports_each_package_with_what_is_wrong_with_it(
    hook_env: dict[str, str], hook_repo: tuple[Path, str], tmp_path: Path
) -> None:
    """A broken pyproject.toml fails both hooks with safe-build's line naming the file, a backend's
    refusal with the backend's error; a package whose artifacts lack files fails the check hook
    with each tool's finding. The others pass, and the build hook's processes all publish their
    artifacts into one ``--outdir``."""
    hooks, rev = hook_repo
    repo = tmp_path / "repo"
    example_repo("pre-commit", repo)
    config = (repo / ".pre-commit-config.yaml").read_text()
    config = re.sub(r"repo: \S+", f"repo: {hooks}", re.sub(r"rev: \S+", f"rev: {rev}", config))
    keep = "- id: safe-build\n        args: [--sdist, --outdir, dist]\n"
    config = config.replace("- id: safe-build\n", keep)
    write(
        repo,
        {
            ".pre-commit-config.yaml": config,
            "packages/broken/pyproject.toml": BROKEN_PYPROJECT,
            "packages/bad-dependency/pyproject.toml": BAD_DEPENDENCY,
        },
    )
    write(repo / "packages" / "leaky", LEAKY)
    commit_all(repo)

    done = run(pre_commit("run"), hook_env, repo)
    assert done.returncode == 1, done.stdout + done.stderr
    by_hook = reports(done.stdout)
    broken_line = (
        f"    safe-build: error: invalid TOML in {repo}/packages/broken/pyproject.toml: "
        "Unclosed array (at line 3, column 1); fix the file and build again"
    )
    for hook, lines in by_hook.items():
        for package in (*GOOD, *(["packages/leaky"] if hook == "safe-build" else [])):
            assert f"{package}: passed" in lines, f"{hook}: {package}\n{done.stdout}"
        failed = lines.index("packages/broken: failed")
        assert lines[failed + 1] == broken_line, done.stdout
        failed = lines.index("packages/bad-dependency: failed")
        backend_error = "    configuration error: `project.dependencies[0]` must be pep508"
        assert backend_error in lines[failed:], done.stdout
    check = by_hook["safe-build-check"]
    leaky = "\n".join(check[check.index("packages/leaky: failed") :])
    for finding in [
        "    twine check:",
        "`long_description` has syntax errors in markup",
        "    leaky-1.0.tar.gz lacks files that git tracks",
        "      docs/notes.md",
        "    check-wheel-contents:",
        "    leaky-1.0-py3-none-any.whl: W101: Wheel library is missing files in package tree:",
        "      leaky/data.txt",
    ]:
        assert finding in leaky, done.stdout
    # every process published the same artifacts into dist/, each whole
    built = sorted(path.name for path in (repo / "dist").iterdir())
    assert built == [f"{name}-1.0{end}" for name in ("greet", "greet_cli", "leaky") for end in ARTIFACTS]
    assert [problem for wheel in (repo / "dist").glob("*.whl") for problem in wheel_problems(wheel)] == []


def test_hooks_refuse_unknown_options_in_one_line(env: dict[str, str], tmp_path: Path) -> None:
    for hook in ("build_hook", "check_hook"):
        done = run([sys.executable, "-m", f"safe_build_hooks.{hook}", "--sdsit", "a.py"], env, tmp_path)
        assert done.returncode == 2
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert "unrecognized arguments: --sdsit, in the hook's args; see" in done.stderr


def test_files_outside_packages_are_nobodys(tmp_path: Path) -> None:
    """A pyproject.toml with only tool settings is no package; a nested package owns its files."""
    write(
        tmp_path,
        {
            "pyproject.toml": "[tool.ruff]\nline-length = 100\n",
            "notes.md": "",
            "libs/inner/setup.py": "import setuptools\nsetuptools.setup(name='inner', version='1')\n",
            "libs/inner/inner.py": "",
            "libs/inner/deeper/module.py": "",
            "libs/broken/pyproject.toml": "[project\n",
            "libs/broken/x.py": "",
        },
    )
    files = ["notes.md", "pyproject.toml", "libs/inner/deeper/module.py", "libs/inner/inner.py"]
    files += ["libs/broken/x.py"]
    assert owning_packages(files, tmp_path) == [tmp_path / "libs/broken", tmp_path / "libs/inner"]
