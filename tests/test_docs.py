"""Every command in the README and the docs, run as written, so that none can rot.

The ``console`` and ``bash`` blocks of each page run in order, in one shell (as a reader types
them into one terminal), in a directory laid out as the page assumes: for the README a copy of
this checkout with a project at ``path/to/project``; for the monorepo page the shipped example
monorepo; for the others a small project ``pkg``. pip, pipx and uv install offline from a
wheelhouse downloaded once. Blocks of other languages (``text`` synopses, ``toml``, ``yaml``,
``make``) are not commands. The README's test command is not run here (it is the suite itself):
``.ci/run`` must run it as written.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BUILD_REQUIREMENTS, run, wheel_problems, write_project
from tests.example_repos import CHECKOUT, checkout_repo, download, example_repo
from tests.s3server import S3Bucket

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PAGES = ["README.md", "docs/usage.md", "docs/safe-pip.md", "docs/cache.md", "docs/remote-cache.md"]
RUN = {"console", "bash"}
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
TIMEOUT = 900


def blocks(page: str, languages: set[str]) -> list[str]:
    text = (CHECKOUT / page).read_text(encoding="utf-8")
    return [body for language, body in BLOCK.findall(text) if language in languages]


def test_every_page_with_commands_is_run() -> None:
    pages = {
        str(path.relative_to(CHECKOUT)) for path in [CHECKOUT / "README.md", *CHECKOUT.glob("docs/*.md")]
    }
    assert {page for page in pages if blocks(page, RUN)} == set(PAGES)


def test_the_readme_test_command_is_what_ci_runs() -> None:
    [command] = [block for block in blocks("README.md", RUN) if "pytest" in block]
    ci = (CHECKOUT / ".ci" / "run").read_text(encoding="utf-8")
    for line in command.strip().split(" && "):
        assert f"\n{line}" in ci or f"\n{line} " in ci, line


@pytest.fixture(scope="session")
def doc_wheelhouse(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Path:
    """What the pages install: safe-build's requirements, its build requirements, the projects'
    build requirements, and pip/setuptools/wheel for the venvs pipx makes."""
    pyproject = tomllib.loads((CHECKOUT / "pyproject.toml").read_text(encoding="utf-8"))
    wanted = [*pyproject["build-system"]["requires"], *pyproject["project"]["dependencies"]]
    wanted += pyproject["project"]["optional-dependencies"]["s3"]
    house = download(tmp_path_factory.mktemp("doc-wheelhouse"), [*wanted, "pip", "wheel"])
    for wheel in wheelhouse.iterdir():
        target = house / wheel.name
        if not target.exists():
            os.link(wheel, target)
    return house


@pytest.fixture(scope="session")
def doc_tools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding pipx and uv, whose commands the README names; its bin directory."""
    venv = tmp_path_factory.mktemp("doc-tools") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", "pipx", "uv"], check=True)
    return venv / "bin"


def sandbox(page: str, root: Path) -> Path:
    """The directory ``page``'s commands run in, laid out as the page assumes."""
    if page in ("README.md", "docs/remote-cache.md"):
        checkout, _ = checkout_repo(root / "safe-build")
        write_project(checkout / "path" / "to" / "project", "flit")
        return checkout
    if page == "docs/usage.md":
        return example_repo("monorepo", root / "monorepo")
    work = root / "work"
    write_project(work / "pkg", "flit")
    (work / "requirements.txt").write_text("./pkg\n")
    return work


def page_env(root: Path, house: Path, tools: Path) -> dict[str, str]:
    """Offline pip, pipx and uv; a home of the page's own; safe-build's tools on PATH."""
    env = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"}
    home = root / "home"
    home.mkdir()
    here = Path(sys.executable).parent
    return {
        **env,
        "HOME": str(home),
        "PATH": os.pathsep.join([str(here), str(tools), env.get("PATH", "")]),
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(house),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIPX_HOME": str(home / "pipx"),
        "PIPX_BIN_DIR": str(home / "pipx-bin"),  # the README's three installs are alternatives:
        "UV_OFFLINE": "1",
        "UV_NO_INDEX": "1",
        "UV_FIND_LINKS": str(house),
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_CACHE_DIR": str(home / "uv-cache"),
        "UV_TOOL_DIR": str(home / "uv-tools"),
        "UV_TOOL_BIN_DIR": str(home / "uv-bin"),  # each gets a bin directory of its own
        "SAFE_BUILD_CACHE_DIR": str(root / "safe-build-cache"),
    }


@pytest.mark.parametrize("page", PAGES)
def test_the_commands_of_a_page_run_as_written(
    page: str, tmp_path: Path, doc_wheelhouse: Path, doc_tools: Path, request: pytest.FixtureRequest
) -> None:
    commands = [block for block in blocks(page, RUN) if "pytest" not in block]
    where = sandbox(page, tmp_path)
    env = page_env(tmp_path, doc_wheelhouse, doc_tools)
    if page == "docs/remote-cache.md":  # the bucket it names, on the tests' S3 server
        bucket: S3Bucket = request.getfixturevalue("s3")
        bucket.client().create_bucket(Bucket="wheels")
        env |= {
            name: value
            for name, value in bucket.env.items()
            if name.startswith(("AWS_", "SAFE_BUILD_REMOTE"))
        }
    if page == "docs/cache.md":  # its commands show a cache with an entry
        assert run([sys.executable, "-m", "safe_build", "--wheel", "pkg"], env, where).returncode == 0
    script = "set -euo pipefail\n" + "".join(
        f"echo '--- block {number}'\n{block}" for number, block in enumerate(commands, 1)
    )
    done = run(["bash", "-c", script], env, where, timeout=TIMEOUT)
    assert done.returncode == 0, f"{page}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    if page == "README.md":  # what the commands say they make
        [wheel] = (where / "path" / "to" / "project" / "dist").glob("*.whl")
        assert wheel_problems(wheel) == []
        home = Path(env["HOME"])
        for tool in (where / "tools" / "bin", home / "pipx-bin", home / "uv-bin"):
            version = run([str(tool / "safe-build"), "--version"], env)
            assert version.stdout.startswith("safe-build "), f"{tool}: {version.stdout}{version.stderr}"
    if page == "docs/usage.md":
        assert len(list((where / "dist").glob("*.whl"))) == 5
        installed = run([str(where / ".venv" / "bin" / "python"), "-m", "pip", "list"], env)
        assert installed.stdout.count("mono-") == 5, installed.stdout
    if page == "docs/remote-cache.md":  # the second build was the first one's, from the bucket
        assert "from s3://wheels/safe-build (built by " in done.stderr, done.stderr[-3000:]


assert "flit-core>=3.9" in BUILD_REQUIREMENTS  # the pages' projects are flit ones, built offline
