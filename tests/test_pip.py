"""safe-pip: the real pip under locks, local projects built through safe-build, never in their tree.

Real pip, real venvs (made with virtualenv), real concurrent processes. Each load of the issue runs
at least two rounds, with no failure allowed and the environments checked afterwards: ``pip
check`` passes, every package imports, every console script runs, no ``~``-stash directory is
left in site-packages. The ``demo`` tests run the same load with plain pip; it fails there, but
not every time, so they are expected failures that may pass.

Builds run without build isolation where the load allows (``--no-build-isolation``: the venvs
have setuptools, and flit_core where needed), to keep the suite quick; the collisions are the
same.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from safe_build import pipargs, pipgate, state
from tests.conftest import run, run_parallel, safe_build_command, tree_state, write_project

ROUNDS = 2
LOOP = (  # python -c LOOP N COMMAND…: run COMMAND N times, one after the other; exit with the worst code
    "import subprocess, sys\n"
    "codes = [subprocess.run(sys.argv[2:]).returncode for _ in range(int(sys.argv[1]))]\n"
    "print(codes)\n"
    "sys.exit(max(codes))\n"
)

# the project: setup.py only, now with a console script
TOOL = {
    "setup.py": textwrap.dedent(
        """\
        import setuptools
        setuptools.setup(
            name="t", version="4", py_modules=["t"], entry_points={"console_scripts": ["t-cli = t:main"]}
        )
        """
    ),
    "t.py": "VALUE = 4\n\n\ndef main():\n    print('t', VALUE)\n",
}


# a pyproject.toml for TOOL: pip before 23.1 would prepare a project without one through setup.py
# (and say so), where it prepares safe-pip's shim through its pyproject.toml
SETUPTOOLS_BUILD_SYSTEM = (
    '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
)


def flit_project(name: str, value: int, dependencies: Sequence[str] = ()) -> dict[str, str]:
    module = name.replace("-", "_")
    return {
        "pyproject.toml": textwrap.dedent(
            f"""\
            [build-system]
            requires = ["flit_core>=3.9"]
            build-backend = "flit_core.buildapi"

            [project]
            name = "{name}"
            version = "1.0"
            description = "{name}"
            dependencies = {json.dumps(list(dependencies))}

            [project.scripts]
            {name} = "{module}:main"
            """
        ),
        f"{module}/__init__.py": (
            f'"""{name}."""\nVALUE = {value}\n\n\ndef main():\n    print("{name}", VALUE)\n'
        ),
    }


def write(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def safe_pip(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "safe_build", "pip", *map(str, args)]


def plain_pip(venv: Path, *args: str | Path) -> list[str]:
    return [str(venv / "bin" / "python"), "-m", "pip", *map(str, args)]


@pytest.fixture
def pip_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """``env`` with a private pip cache, without an active venv, and writing bytecode (else the pip
    of a fresh venv compiles itself on every run, which would double the suite's time)."""
    values = {**env, "PIP_CACHE_DIR": str(tmp_path / "pip-cache"), "SAFE_BUILD_LOCK_TIMEOUT": "120"}
    for name in ("VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE"):
        values.pop(name, None)
    return values


MakeVenvs = Callable[..., list[Path]]


# The pip of the venvs safe-pip works on: a requirement such as ``pip==23.2.1`` (CI's compatibility
# job runs the ``compat`` tests with ensurepip's pip, the oldest supported and the newest); unset,
# the venvs keep the pip virtualenv gives them.
TEST_PIP = os.environ.get("SAFE_BUILD_TEST_PIP") or None
ENSUREPIP_WHEELS = Path(sys.base_prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"


def ensurepip_wheel() -> Path | None:
    """The pip wheel bundled with this Python's ensurepip (no network needed), if there is one."""
    found = sorted((ENSUREPIP_WHEELS / "ensurepip" / "_bundled").glob("pip-*.whl"))
    return found[-1] if found else None


@pytest.fixture(scope="session")
def pip_wheelhouse(wheelhouse: Path) -> Path:
    """The session wheelhouse, with ensurepip's pip wheel and the one SAFE_BUILD_TEST_PIP names."""
    bundled = ensurepip_wheel()
    if bundled is not None and not (wheelhouse / bundled.name).exists():
        shutil.copy(bundled, wheelhouse)
    if TEST_PIP is not None:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--dest",
                str(wheelhouse),
                TEST_PIP,
            ],
            check=True,
        )
    return wheelhouse


@pytest.fixture
def make_venvs(pip_env: dict[str, str], tmp_path: Path, pip_wheelhouse: Path) -> MakeVenvs:
    """``count`` new venvs (pip and setuptools in them), made at once; ``extra`` installed into each,
    and the pip SAFE_BUILD_TEST_PIP names (or ``pip``, a requirement) first."""

    def make(
        count: int, name: str = "venv", extra: Sequence[str] = (), pip: str | None = TEST_PIP
    ) -> list[Path]:
        venvs = [tmp_path / f"{name}{number}" for number in range(count)]
        made = run_parallel(
            [[sys.executable, "-m", "virtualenv", "--quiet", str(venv)] for venv in venvs], pip_env
        )
        assert [result.returncode for result in made] == [0] * count, [result.stderr for result in made]
        if pip is not None:
            installed = run_parallel([plain_pip(venv, "install", "--quiet", pip) for venv in venvs], pip_env)
            assert [result.returncode for result in installed] == [0] * count, [r.stderr for r in installed]
        if extra:
            installed = run_parallel(
                [plain_pip(venv, "install", "--quiet", *extra) for venv in venvs], pip_env
            )
            assert [result.returncode for result in installed] == [0] * count, [r.stderr for r in installed]
        return venvs

    return make


def site_packages(venv: Path) -> Path:
    [found] = venv.glob("lib/python*/site-packages")
    return found


def environment_problems(
    venvs: Sequence[Path], env: dict[str, str], modules: Sequence[str], scripts: Sequence[str]
) -> list[str]:
    """What is wrong with ``venvs`` after the rounds: pip check, imports, console scripts, stash dirs.

    The checks of all venvs run at once.
    """
    checks = []
    for venv in venvs:
        checks += [
            (f"{venv.name}: pip check", plain_pip(venv, "check")),
            (f"{venv.name}: import", [str(venv / "bin" / "python"), "-c", f"import {', '.join(modules)}"]),
            *[(f"{venv.name}: console script {script}", [str(venv / "bin" / script)]) for script in scripts],
        ]
    results = run_parallel([command for _, command in checks], env)
    problems = [
        f"{what}: {(result.stdout + result.stderr).strip().splitlines()[-1:]}"
        for (what, _), result in zip(checks, results, strict=True)
        if result.returncode != 0
    ]
    for venv in venvs:
        stashes = [path.name for path in site_packages(venv).iterdir() if path.name.startswith("~")]
        problems += [f"{venv.name}: stash directories left: {stashes}"] if stashes else []
    return problems


def direct_url(venv: Path, dist_info: str) -> object:
    return json.loads((site_packages(venv) / dist_info / "direct_url.json").read_text())


def failures(results: Sequence[subprocess.CompletedProcess[str]]) -> list[str]:
    """The exit code and the error line (or the last line) of each process that failed."""
    found = []
    for result in results:
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines() or [""]
            errors = [line for line in lines if "Error" in line or "error:" in line]
            found.append(f"exit {result.returncode}: {(errors or lines)[-1].strip()}")
    return found


# --- 1. one local tree into eight venvs at once -------------------------------------------------


@pytest.mark.compat  # the concurrency this project is for, with every pip CI runs
def test_concurrent_installs_of_one_tree_into_eight_venvs(
    make_venvs: MakeVenvs, pip_env: dict[str, str], tmp_path: Path
) -> None:
    """The issue's load: 8 ``pip install ./t`` into 8 venvs at once (12 of 24 failed plainly)."""
    project = write(tmp_path / "t", TOOL)
    before = tree_state(project)
    venvs = make_venvs(8)
    for round_number in range(ROUNDS):
        commands = [safe_pip("--python", venv, "install", "--no-build-isolation", "./t") for venv in venvs]
        assert failures(run_parallel(commands, pip_env, cwd=tmp_path)) == [], f"round {round_number}"
        assert tree_state(project) == before, "the source tree changed"
    assert environment_problems(venvs, pip_env, ["t"], ["t-cli"]) == []
    for venv in venvs:
        assert direct_url(venv, "t-4.dist-info") == {"dir_info": {}, "url": project.as_uri()}


@pytest.mark.demo
@pytest.mark.xfail(reason="plain pip builds a local directory inside it", strict=False)
def test_demo_plain_pip_fails_installing_one_tree_into_eight_venvs(
    make_venvs: MakeVenvs, pip_env: dict[str, str], tmp_path: Path
) -> None:
    write(tmp_path / "t", TOOL)
    venvs = make_venvs(8)
    found = []
    for _ in range(ROUNDS):
        commands = [plain_pip(venv, "install", "--no-build-isolation", "./t") for venv in venvs]
        found += failures(run_parallel(commands, pip_env, cwd=tmp_path))
    assert found == [], f"{len(found)} of {ROUNDS * len(venvs)} plain installs failed: {found[:2]}"


# --- 2. editable installs into one venv ---------------------------------------------------------

EDITABLE_PROCESSES = 6


@pytest.mark.compat  # the concurrency this project is for, with every pip CI runs
def test_concurrent_editable_installs_into_one_venv(
    make_venvs: MakeVenvs, pip_env: dict[str, str], tmp_path: Path
) -> None:
    """The issue's second load: 6 ``pip install -e ./X -e ./<deps>`` into ONE venv at once."""
    write(tmp_path / "rcc-a", flit_project("rcc-a", 1, ["rcc-b"]))
    write(tmp_path / "rcc-b", flit_project("rcc-b", 2))
    [venv] = make_venvs(1, extra=["flit_core"])
    command = safe_pip("--python", venv, "install", "--no-build-isolation", "-e", "./rcc-a", "-e", "./rcc-b")
    for round_number in range(ROUNDS):
        results = run_parallel([command] * EDITABLE_PROCESSES, pip_env, cwd=tmp_path)
        assert failures(results) == [], f"round {round_number}"
    assert environment_problems([venv], pip_env, ["rcc_a", "rcc_b"], ["rcc-a", "rcc-b"]) == []
    url = (tmp_path / "rcc-a").as_uri()
    assert direct_url(venv, "rcc_a-1.0.dist-info") == {"dir_info": {"editable": True}, "url": url}


@pytest.mark.demo
@pytest.mark.xfail(reason="plain pip installs into one venv without a lock", strict=False)
def test_demo_plain_editable_installs_into_one_venv(
    make_venvs: MakeVenvs, pip_env: dict[str, str], tmp_path: Path
) -> None:
    write(tmp_path / "rcc-a", flit_project("rcc-a", 1, ["rcc-b"]))
    write(tmp_path / "rcc-b", flit_project("rcc-b", 2))
    [venv] = make_venvs(1, extra=["flit_core"])
    command = plain_pip(venv, "install", "--no-build-isolation", "-e", "./rcc-a", "-e", "./rcc-b")
    found = []
    for _ in range(ROUNDS):
        found += failures(run_parallel([command] * EDITABLE_PROCESSES, pip_env, cwd=tmp_path))
    found += environment_problems([venv], pip_env, ["rcc_a", "rcc_b"], ["rcc-a", "rcc-b"])
    assert found == [], f"{len(found)} failures: {found[:2]}"


# --- 3. pip cache purge while installs use the cache ---------------------------------------------

INSTALL_LOOPS = 3
INSTALLS_PER_LOOP = 3
PURGES = 12  # half purges, half removes: cheap, and each one a chance to hit an install


def cached_package_sdist(tmp_path: Path, env: dict[str, str]) -> Path:
    """An sdist: pip builds its wheel, stores it in its wheel cache and installs from there."""
    project = write(
        tmp_path / "cached-pkg",
        {
            "setup.py": (
                "import setuptools\n"
                "setuptools.setup(name='cached-pkg', version='1.0', py_modules=['cached_pkg'])\n"
            ),
            "cached_pkg.py": "VALUE = 1\n",
        },
    )
    out = tmp_path / "sdist"
    built = run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "-o", str(out), str(project)], env
    )
    assert built.returncode == 0, built.stderr
    [sdist] = out.glob("*.tar.gz")
    return sdist


def purge_load(
    pip: Callable[..., list[str]], venvs: Sequence[Path], sdist: Path, env: dict[str, str]
) -> list[subprocess.CompletedProcess[str]]:
    """Install loops, one per venv, and a loop that purges pip's cache and removes from it, at once."""
    loops = [
        [
            sys.executable,
            "-c",
            LOOP,
            str(INSTALLS_PER_LOOP),
            *pip(venv, "install", "--no-build-isolation", sdist),
        ]
        for venv in venvs
    ]
    purges = [sys.executable, "-c", LOOP, str(PURGES // 2), *pip(venvs[0], "cache", "purge")]
    removes = [sys.executable, "-c", LOOP, str(PURGES // 2), *pip(venvs[0], "cache", "remove", "cached_pkg")]
    return run_parallel([*loops, purges, removes], env)


def test_cache_purge_while_installs_use_the_cache(
    make_venvs: MakeVenvs, pip_env: dict[str, str], tmp_path: Path
) -> None:
    """Installs hold the pip cache lock shared, purge and remove exclusive: nobody fails."""
    sdist = cached_package_sdist(tmp_path, pip_env)
    venvs = make_venvs(INSTALL_LOOPS)
    for round_number in range(ROUNDS):
        results = purge_load(lambda venv, *args: safe_pip("--python", venv, *args), venvs, sdist, pip_env)
        assert failures(results) == [], f"round {round_number}"
    assert environment_problems(venvs, pip_env, ["cached_pkg"], []) == []


@pytest.mark.demo
@pytest.mark.xfail(reason="pip takes no lock on its cache", strict=False)
def test_demo_plain_cache_purge_while_installs_use_the_cache(
    make_venvs: MakeVenvs, pip_env: dict[str, str], tmp_path: Path
) -> None:
    sdist = cached_package_sdist(tmp_path, pip_env)
    venvs = make_venvs(INSTALL_LOOPS)
    found = []
    for _ in range(ROUNDS):
        found += failures(purge_load(plain_pip, venvs, sdist, pip_env))
    assert found == [], f"{len(found)} failing loops: {found[:2]}"


# --- 4. crossing workloads finish ---------------------------------------------------------------


def test_crossing_installs_do_not_deadlock(
    make_venvs: MakeVenvs, pip_env: dict[str, str], tmp_path: Path
) -> None:
    """A then B against B then A, into one venv; editable A and B against B and A, into two venvs.

    A lock order that depended on the command line (project A, then project B) would let each
    pair wait for the other forever; the lock timeout would then fail them with exit code 3.
    """
    write(tmp_path / "proj-a", flit_project("proj-a", 1, ["proj-b"]))
    write(tmp_path / "proj-b", flit_project("proj-b", 2))
    shared, first, second = make_venvs(3, extra=["flit_core"])
    env = {**pip_env, "SAFE_BUILD_LOCK_TIMEOUT": "60"}
    flags = ["install", "--no-build-isolation"]
    for round_number in range(ROUNDS):
        commands = [
            safe_pip("--python", shared, *flags, "./proj-a", "./proj-b"),
            safe_pip("--python", shared, *flags, "./proj-b", "./proj-a"),
            safe_pip("--python", first, *flags, "-e", "./proj-a", "-e", "./proj-b"),
            safe_pip("--python", second, *flags, "-e", "./proj-b", "-e", "./proj-a"),
        ]
        assert failures(run_parallel(commands, env, cwd=tmp_path)) == [], f"round {round_number}"
    scripts = ["proj-a", "proj-b"]
    assert environment_problems([shared, first, second], pip_env, ["proj_a", "proj_b"], scripts) == []


# --- 5. what plain pip would do, and would record -----------------------------------------------


def test_reinstalling_a_changed_tree_of_the_same_version_installs_the_change(
    make_venvs: MakeVenvs, pip_env: dict[str, str], tmp_path: Path
) -> None:
    """pip reinstalls a local directory every time (it skips a wheel of the installed version)."""
    project = write(tmp_path / "t", TOOL)
    [venv] = make_venvs(1)
    for value in (4, 5):
        (project / "t.py").write_text(f"VALUE = {value}\n\n\ndef main():\n    print('t', VALUE)\n")
        installed = run(safe_pip("--python", venv, "install", "--no-build-isolation", project), pip_env)
        assert installed.returncode == 0, installed.stderr
        shown = run([str(venv / "bin" / "t-cli")], pip_env)
        assert shown.stdout.strip() == f"t {value}"


@pytest.mark.compat
def test_requirement_files_name_local_projects(
    make_venvs: MakeVenvs, pip_env: dict[str, str], tmp_path: Path
) -> None:
    """Nested -r files relative to their parent, a local project in each form, a -c file with a
    named one; the files themselves are left as they were, pip's record is plain pip's."""
    write(tmp_path / "t", TOOL)
    write(tmp_path / "proj-a", flit_project("proj-a", 1, ["proj-b"]))
    write(tmp_path / "proj-b", flit_project("proj-b", 2))
    requirements = write(
        tmp_path / "reqs",
        {
            "all.txt": "# everything\n-r nested/more.txt\n./t  # relative to the working directory\n",
            "nested/more.txt": f"proj-a @ {(tmp_path / 'proj-a').as_uri()}\n",
            "constraints.txt": f"proj-b @ {(tmp_path / 'proj-b').as_uri()}\n",
        },
    )
    before = {path: tree_state(path) for path in (requirements, tmp_path / "t")}
    [venv] = make_venvs(1, extra=["flit_core"])
    installed = run(
        safe_pip(
            "--python",
            venv,
            "install",
            "--no-build-isolation",
            "-r",
            "reqs/all.txt",
            "-c",
            "reqs/constraints.txt",
        ),
        pip_env,
        cwd=tmp_path,
    )
    assert installed.returncode == 0, installed.stderr
    assert (
        environment_problems([venv], pip_env, ["t", "proj_a", "proj_b"], ["t-cli", "proj-a", "proj-b"]) == []
    )
    for dist_info, directory in [("t-4", "t"), ("proj_a-1.0", "proj-a"), ("proj_b-1.0", "proj-b")]:
        url = (tmp_path / directory).as_uri()
        assert direct_url(venv, f"{dist_info}.dist-info") == {"dir_info": {}, "url": url}
    assert {path: tree_state(path) for path in before} == before


@pytest.mark.compat
def test_direct_url_and_record_match_plain_pip(
    make_venvs: MakeVenvs, pip_env: dict[str, str], tmp_path: Path
) -> None:
    """direct_url.json, byte for byte, and its RECORD line are what plain pip writes; and a quiet
    install is as quiet as pip's (safe-build's build says nothing unless it fails)."""
    write(tmp_path / "t", TOOL)
    plain, ours = make_venvs(2)
    outputs = []
    for command in (plain_pip(plain), safe_pip("--python", ours)):
        installed = run(
            # --use-pep517: pip before 23.1 would install a setup.py project without wheel the legacy way
            [*command, "install", "--quiet", "--no-build-isolation", "--use-pep517", "./t"],
            pip_env,
            cwd=tmp_path,
        )
        assert installed.returncode == 0, installed.stderr
        outputs.append((installed.stdout, installed.stderr))
    assert outputs[1] == outputs[0] == ("", "")
    for name in ("direct_url.json", "RECORD"):
        plain_text = (site_packages(plain) / "t-4.dist-info" / name).read_text()
        ours_text = (site_packages(ours) / "t-4.dist-info" / name).read_text()
        if name == "direct_url.json":
            assert ours_text == plain_text
        else:
            line = next(row for row in plain_text.splitlines() if "direct_url.json" in row)
            assert line in ours_text.splitlines()


LIBRARY = {  # setuptools builds in the tree: a build of it that pip ran in place would leave build/ there
    "pyproject.toml": textwrap.dedent(
        """\
        [build-system]
        requires = ["setuptools>=69"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "lib"
        version = "1.0"
        """
    ),
    "lib/__init__.py": "VALUE = 5\n",
}
APPLICATION = {  # names its sibling by path, as hatchling's monorepo users do
    "pyproject.toml": textwrap.dedent(
        """\
        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"

        [project]
        name = "app"
        version = "1.0"
        dependencies = ["lib @ {root:uri}/../lib"]

        [tool.hatch.metadata]
        allow-direct-references = true
        """
    ),
    "app/__init__.py": "from lib import VALUE\n",
}


def test_path_dependencies_are_built_through_safe_build_too(
    make_venvs: MakeVenvs, pip_env: dict[str, str], tmp_path: Path
) -> None:
    """``app`` names ``lib @ file:///…/lib`` in its metadata: pip would build lib in its tree, once
    per install. Installs of app into 4 venvs at once take lib from safe-build too, leave both trees
    as they were, and record what plain pip records."""
    write(tmp_path / "lib", LIBRARY)
    write(tmp_path / "app", APPLICATION)
    before = tree_state(tmp_path / "lib"), tree_state(tmp_path / "app")
    *venvs, plain = make_venvs(5)
    results = run_parallel(
        [safe_pip("--python", venv, "install", "--no-build-isolation", "./app") for venv in venvs],
        pip_env,
        cwd=tmp_path,
    )
    assert failures(results) == []
    assert (tree_state(tmp_path / "lib"), tree_state(tmp_path / "app")) == before
    assert environment_problems(venvs, pip_env, ["app", "lib"], []) == []
    for arguments in (["hatchling"], ["--no-build-isolation", "./app"]):
        installed = run(plain_pip(plain, "install", "--quiet", *arguments), pip_env, cwd=tmp_path)
        assert installed.returncode == 0, installed.stderr
    for dist_info, name in (("lib-1.0.dist-info", "direct_url.json"), ("app-1.0.dist-info", "METADATA")):
        expected = (site_packages(plain) / dist_info / name).read_bytes()
        record = (site_packages(plain) / dist_info / "RECORD").read_text().splitlines()
        line = next(row for row in record if row.startswith(f"{dist_info}/{name},"))
        for venv in venvs:
            assert (site_packages(venv) / dist_info / name).read_bytes() == expected, (venv, name)
            assert line in (site_packages(venv) / dist_info / "RECORD").read_text().splitlines()


def test_target_directory_install_records_the_source(
    make_venvs: MakeVenvs, pip_env: dict[str, str], tmp_path: Path
) -> None:
    """--target: locked through the cache directory (no lock file in what the user ships)."""
    project = write(tmp_path / "t", TOOL)
    [venv] = make_venvs(1)
    target = tmp_path / "target"
    installed = run(
        safe_pip("--python", venv, "install", "--no-build-isolation", "--target", target, project), pip_env
    )
    assert installed.returncode == 0, installed.stderr
    assert sorted(path.name for path in target.iterdir() if path.name != "__pycache__") == [
        "bin",
        "t-4.dist-info",
        "t.py",
    ]
    assert json.loads((target / "t-4.dist-info" / "direct_url.json").read_text())["url"] == project.as_uri()


# --- 6. waiting and bad input -------------------------------------------------------------------


def test_busy_environment_lock_is_reported_and_times_out(
    make_venvs: MakeVenvs, pip_env: dict[str, str], tmp_path: Path
) -> None:
    [venv] = make_venvs(1)
    prefix = Path(os.path.realpath(venv))
    cache = Path(pip_env["SAFE_BUILD_CACHE_DIR"])
    env = {**pip_env, "SAFE_BUILD_LOCK_TIMEOUT": "1.5"}
    with state.at(cache, lock_timeout=10).environment_lock(prefix, inside=True).hold("exclusive"):
        result = run(safe_pip("--python", venv, "install", "flit_core"), env)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith(
        f"safe-build: waiting for the environment lock on {prefix} (held by pid {os.getpid()}"
    )
    assert lines[-1].startswith(
        f"safe-build: error: timed out after 1.5s waiting for the environment lock on {prefix}"
    )
    assert not (site_packages(venv) / "flit_core").exists()


def test_a_killed_safe_pip_leaves_its_pip_holding_the_environment_lock(
    make_venvs: MakeVenvs, pip_env: dict[str, str], tmp_path: Path
) -> None:
    """safe-pip hands its lock descriptors to pip: SIGKILL safe-pip alone while pip builds an sdist,
    and the venv stays locked until that pip ends; no other install slips in beside it."""
    source = write_project(tmp_path / "slow-1.0", "slow")
    sdist = tmp_path / "slow-1.0.tar.gz"  # the whole tree, in-tree backend included: pip builds it
    with tarfile.open(sdist, "w:gz") as archive:
        archive.add(source, arcname=source.name)
    [venv] = make_venvs(1)
    marker = tmp_path / "backend-started"
    slow_env = {**pip_env, "SLOW_BACKEND_MARKER": str(marker), "SLOW_BACKEND_SECONDS": "8"}
    installing = subprocess.Popen(
        safe_pip("--python", venv, "install", "--quiet", "--no-build-isolation", sdist),
        env=slow_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (marker.exists() and "build_wheel" in marker.read_text()):
        assert installing.poll() is None, "pip ended before it built the wheel"
        assert time.monotonic() < deadline, "pip never reached build_wheel"
        time.sleep(0.05)
    os.kill(installing.pid, signal.SIGKILL)
    installing.wait()
    beside = run(
        safe_pip("--python", venv, "install", "flit_core"), {**pip_env, "SAFE_BUILD_LOCK_TIMEOUT": "1"}
    )
    assert beside.returncode == 3, beside.stdout + beside.stderr
    assert "timed out after 1.0s waiting for the environment lock" in beside.stderr
    after = run(safe_pip("--python", venv, "install", "--quiet", "flit_core"), pip_env)  # once that pip ends
    assert after.returncode == 0, after.stderr
    assert environment_problems([venv], pip_env, ["slow", "flit_core"], []) == []


def test_a_pip_reinstalled_while_safe_pip_waits_runs_afresh(
    make_venvs: MakeVenvs, pip_env: dict[str, str]
) -> None:
    """The pip that safe-pip starts early imports pip while safe-pip waits for the lock; if pip's
    files change meanwhile (another pip reinstalled pip), the new pip runs, not a mix of the two."""
    [venv] = make_venvs(1)
    prefix = Path(os.path.realpath(venv))
    cache = Path(pip_env["SAFE_BUILD_CACHE_DIR"])
    with state.at(cache, lock_timeout=10).environment_lock(prefix, inside=True).hold("exclusive"):
        installing = subprocess.Popen(
            safe_pip("--python", venv, "install", "--quiet", "flit_core"),
            env=pip_env,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert installing.stderr is not None
        waiting = installing.stderr.readline()
        assert waiting.startswith("safe-build: waiting for the environment lock"), waiting
        time.sleep(2)  # the early pip has imported pip by now
        init = site_packages(venv) / "pip" / "__init__.py"
        init.write_text(init.read_text() + "\nimport sys\nsys.stderr.write('the reinstalled pip\\n')\n")
    rest = installing.communicate()[1]
    assert installing.returncode == 0, rest
    assert "the reinstalled pip" in rest
    assert (site_packages(venv) / "flit_core").is_dir()


def test_cache_purge_waits_for_the_pip_cache_lock(make_venvs: MakeVenvs, pip_env: dict[str, str]) -> None:
    [venv] = make_venvs(1)
    pip_cache = Path(os.path.realpath(pip_env["PIP_CACHE_DIR"]))
    pip_cache.mkdir(parents=True, exist_ok=True)
    lock = state.at(Path(pip_env["SAFE_BUILD_CACHE_DIR"]), lock_timeout=10).pip_cache_lock(pip_cache)
    env = {**pip_env, "SAFE_BUILD_LOCK_TIMEOUT": "1"}
    with lock.hold("shared"):
        purge = run(safe_pip("--python", venv, "cache", "purge"), env)
        listing = run(safe_pip("--python", venv, "cache", "list"), env)  # shared, like an install
    assert purge.returncode == 3, purge.stderr
    assert f"waiting for the pip cache lock on {pip_cache}" in purge.stderr
    assert listing.returncode == 0, listing.stderr


REFUSED = [  # arguments, pip's exit code, a part of pip's message
    (["instal", "x"], 1, 'ERROR: unknown command "instal" - maybe you meant "install"'),
    (["install", "--bogus", "./t"], 2, "no such option: --bogus"),
    (["install", "--target"], 2, "--target option requires 1 argument"),
    (["install", "./empty/"], 1, "Neither 'setup.py' nor 'pyproject.toml' found"),
    (["install", "-r", "missing.txt"], 1, "Could not open requirements file"),
    (["install", "-r", "empty"], 1, "Is a directory"),
    (["install", "-r", "/dev/fd/9"], 1, "No such file or directory: '/dev/fd/9'"),  # not open here
]


@pytest.mark.compat
def test_what_pip_refuses_gets_pips_own_error_and_exit_code(
    make_venvs: MakeVenvs, pip_env: dict[str, str], tmp_path: Path
) -> None:
    """Unknown command or option, missing value, a directory that is no project, a missing file:
    pip's own output and exit code, nothing from safe-build, nothing built."""
    write(tmp_path / "t", TOOL)
    (tmp_path / "empty").mkdir()
    [venv] = make_venvs(1)
    for arguments, code, message in REFUSED:
        plain = run(plain_pip(venv, *arguments), pip_env, cwd=tmp_path)
        ours = run(safe_pip("--python", venv, *arguments), pip_env, cwd=tmp_path)
        assert (ours.returncode, plain.returncode) == (code, code), (arguments, ours.stderr)
        assert message in ours.stderr
        assert ours.stderr == plain.stderr
    assert not (tmp_path / "t" / "build").exists()


def pip_version(venv: Path) -> tuple[int, ...]:
    found = run([str(venv / "bin" / "python"), "-c", "import pip; print(pip.__version__)"], dict(os.environ))
    return tuple(int(part) for part in found.stdout.strip().split(".")[:2])


def installed(venv: Path, env: dict[str, str]) -> list[str]:
    """The distributions in ``venv``, as ``name==version``."""
    return sorted(run(plain_pip(venv, "list", "--format=freeze"), env).stdout.split())


@pytest.mark.compat
def test_requirement_files_from_pipes_and_fifos(
    make_venvs: MakeVenvs, pip_env: dict[str, str], tmp_path: Path
) -> None:
    """``-r <(…)``, ``-r /dev/stdin`` from a pipe, ``-r FIFO`` with one writer: each is read once,
    pip installs what it holds (as plain pip does), and the local project in it is built by
    safe-build (its tree stays as it was)."""
    project = write(tmp_path / "t", TOOL)
    before = tree_state(project)
    content = "./t  # a local project\nflit_core\n"
    *ours, plain = make_venvs(4)
    common = ["install", "--no-build-isolation"]
    substituted = subprocess.run(
        [
            "bash",
            "-c",
            'exec "$@" -r <(printf "%s" "$CONTENT")',
            "bash",
            *safe_pip("--python", ours[0], *common),
        ],
        env={**pip_env, "CONTENT": content},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert substituted.returncode == 0, substituted.stderr
    piped = subprocess.run(
        safe_pip("--python", ours[1], *common, "-r", "/dev/stdin"),
        input=content,
        env=pip_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert piped.returncode == 0, piped.stderr
    fifo = tmp_path / "requirements.fifo"
    os.mkfifo(fifo)
    writer = subprocess.Popen(
        ["bash", "-c", 'printf "%s" "$CONTENT" > "$1"', "bash", str(fifo)],
        env={**pip_env, "CONTENT": content},
    )
    from_fifo = run(safe_pip("--python", ours[2], *common, "-r", fifo), pip_env, cwd=tmp_path, timeout=300)
    assert writer.wait(timeout=10) == 0
    assert from_fifo.returncode == 0, from_fifo.stderr
    assert tree_state(project) == before
    for venv in ours:
        assert direct_url(venv, "t-4.dist-info") == {"dir_info": {}, "url": project.as_uri()}
    by_plain_pip = subprocess.run(
        plain_pip(plain, *common, "-r", "/dev/stdin"),
        input=content,
        env=pip_env,
        cwd=tmp_path,
        text=True,
        check=False,
    )
    assert by_plain_pip.returncode == 0
    expected = installed(plain, pip_env)
    assert "t==4" in expected
    assert [installed(venv, pip_env) for venv in ours] == [expected] * 3


def test_a_piped_requirement_file_reaches_the_pip_that_runs(
    make_venvs: MakeVenvs, pip_env: dict[str, str], tmp_path: Path
) -> None:
    """pip's configuration names another Python (pip's ``python`` setting): the pip started first,
    safe-pip's own Python's, read the pipe, and the pip that runs, the other venv's, gets what it held."""
    project = write(tmp_path / "t", TOOL)
    before = tree_state(project)
    [second] = make_venvs(1)
    (tmp_path / "pip.conf").write_text(f"[global]\npython = {second}\n")
    result = subprocess.run(
        safe_pip("install", "--no-build-isolation", "-r", "/dev/stdin"),
        input="./t\n",
        env={**pip_env, "PIP_CONFIG_FILE": str(tmp_path / "pip.conf")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert direct_url(second, "t-4.dist-info") == {"dir_info": {}, "url": project.as_uri()}
    assert not list(Path(sys.prefix).glob("lib/python*/site-packages/t-4.dist-info"))
    assert tree_state(project) == before


@pytest.mark.compat
def test_an_option_only_newer_pips_have(
    make_venvs: MakeVenvs, pip_env: dict[str, str], tmp_path: Path
) -> None:
    """``--group`` (pip 25.1): a pip that has it reads it, and the local project beside it is built by
    safe-build; an older pip refuses it, and safe-pip gives that pip's own error, building nothing."""
    bundled = ensurepip_wheel()
    if bundled is None:
        pytest.skip("this Python has no ensurepip wheel of pip")
    project = write(tmp_path / "t", TOOL)
    (tmp_path / "pyproject.toml").write_text('[dependency-groups]\ndev = ["flit_core"]\n')
    before = tree_state(project)
    [older] = make_venvs(1, name="older", pip=str(bundled))
    [newer] = make_venvs(1, name="newer")
    arguments = ["install", "--no-build-isolation", "--group", "dev", "./t"]
    cache = Path(pip_env["SAFE_BUILD_CACHE_DIR"])
    for venv in (older, newer):
        ours = run(safe_pip("--python", venv, *arguments), pip_env, cwd=tmp_path)
        if pip_version(venv) < (25, 1):
            plain = run(plain_pip(venv, *arguments), pip_env, cwd=tmp_path)
            assert (ours.returncode, ours.stderr) == (plain.returncode, plain.stderr)
            assert ours.returncode == 2
            assert "no such option: --group" in ours.stderr
            assert list(cache.rglob("*.whl")) == [], "a build ran for a command pip refuses"
        else:
            assert ours.returncode == 0, ours.stderr
            assert direct_url(venv, "t-4.dist-info") == {"dir_info": {}, "url": project.as_uri()}
            assert any(name.startswith("flit_core==") for name in installed(venv, pip_env))
            assert list(cache.rglob("t-4-*.whl")) != [], "safe-build did not build the project"
        assert tree_state(project) == before


@pytest.mark.compat
def test_a_pip_whose_private_names_moved_gets_every_lock(
    make_venvs: MakeVenvs, pip_env: dict[str, str], tmp_path: Path
) -> None:
    """A pip without the private name the gate reads the command line with (``parse_command``,
    renamed here) still runs, under every lock safe-pip could need: even ``pip list`` waits for the
    environment lock; an install works, pip building the local project itself."""
    [venv] = make_venvs(1)
    internal = site_packages(venv) / "pip" / "_internal"
    for relative in ("cli/main_parser.py", "cli/main.py"):
        path = internal / relative
        path.write_text(re.sub(r"\bparse_command\b", "parse_command_moved", path.read_text()))
    assert run(plain_pip(venv, "list"), pip_env).returncode == 0
    prefix = Path(os.path.realpath(venv))
    cache = Path(pip_env["SAFE_BUILD_CACHE_DIR"])
    env = {**pip_env, "SAFE_BUILD_LOCK_TIMEOUT": "1.5"}
    with state.at(cache, lock_timeout=10).environment_lock(prefix, inside=True).hold("exclusive"):
        listed = run(safe_pip("--python", venv, "list"), env)
    assert listed.returncode == 3, listed.stderr
    assert "waiting for the environment lock" in listed.stderr
    write(tmp_path / "t", TOOL)
    result = run(safe_pip("--python", venv, "install", "--no-build-isolation", "./t"), pip_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "t==4" in installed(venv, pip_env)


def test_unknown_python_gets_pips_own_error(pip_env: dict[str, str], tmp_path: Path) -> None:
    result = run(safe_pip("--python", tmp_path / "nothing", "install", "x"), pip_env)
    assert result.returncode == 1
    assert result.stderr.strip() == f"ERROR: Could not locate Python interpreter {tmp_path / 'nothing'}"


# --- 7. reading pip's command line and configuration --------------------------------------------


def described(
    python: str | Path, argv: Sequence[str], env: dict[str, str] | None = None
) -> pipargs.Description:
    """What the gated pip of ``python`` says ``pip ARGV`` asks for (the gate is then closed: pip does
    not run)."""
    gate = pipgate.Gate(str(python), dict(os.environ) if env is None else env, list(argv))
    try:
        return pipargs.Description.from_json(gate.description())
    finally:
        gate.close()


COMMAND_LINES: list[tuple[list[str], tuple[object, ...]]] = [  # argv; status, command, -r files, positionals
    (
        ["install", "-r", "a.txt", "--requirement=b.txt", "-qqrc.txt"],
        (
            "parsed",
            "install",
            [(2, "", "a.txt"), (3, "--requirement=", "b.txt"), (4, "-qqr", "c.txt")],
            [],
        ),
    ),
    (["-q", "install", "--targ", "t", "x"], ("parsed", "install", [], [(4, "x")])),
    (
        ["install", "--python", "/v", "x"],
        ("parsed", "install", [], [(3, "x")]),
    ),  # not pip's --python there
    (["install", "--re", "a.txt"], ("exited", None, [], [])),  # --report? --requirement?
    (["install", "--no-dep", "x"], ("exited", None, [], [])),  # --no-deps and --no-dependencies
    (["install", "--", "-r", "a.txt"], ("parsed", "install", [], [(2, "-r"), (3, "a.txt")])),
    (["-v", "--", "install", "x"], ("parsed", "install", [], [(3, "x")])),
    (["-v", "install", "-v", "install"], ("parsed", "install", [], [(3, "install")])),
    (["--bogus", "install"], ("exited", None, [], [])),
    (["-q", "--version"], ("exited", None, [], [])),
    (["instal", "x"], ("exited", None, [], [])),
]


@pytest.mark.compat
def test_command_lines_are_read_by_pip(make_venvs: MakeVenvs) -> None:
    """The target's pip reads the command line (abbreviations, clusters, ``--``, the command's name
    twice) and says where each requirement file and positional requirement is written."""
    [venv] = make_venvs(1)
    for argv, expected in COMMAND_LINES:
        found = described(venv / "bin" / "python", argv)
        files = [(item.index, item.prefix, item.value) for item in found.values("--requirement")]
        assert (found.status, found.command, files, list(found.positionals)) == expected, argv


@pytest.mark.compat
def test_python_option_is_read_by_pip(make_venvs: MakeVenvs, tmp_path: Path) -> None:
    """``--python`` before the command (or pip's ``python`` setting) names the pip that is to run;
    after the command it is not pip's; a Python that is not there is pip's own error."""
    [venv] = make_venvs(1)
    python = venv / "bin" / "python"
    found = described(python, ["--python", sys.executable, "install", "x"])
    assert (found.status, found.python, found.handoff, found.positionals) == (
        "parsed",
        sys.executable,
        True,
        ((3, "x"),),
    )
    with_setting = {**os.environ, "PIP_PYTHON": sys.executable}
    assert described(python, ["install", "x"], with_setting).python == sys.executable
    assert described(python, ["install", "--python", sys.executable, "x"]).python is None
    assert described(python, ["--python", str(tmp_path / "none"), "install", "x"]).status == "exited"


def pip_cache_dir(venv: Path, env: dict[str, str], *flags: str) -> str | None:
    """What the installed pip says its cache directory is (None: its cache is off)."""
    result = run(plain_pip(venv, *flags, "cache", "dir"), env)
    return result.stdout.strip() if result.returncode == 0 else None


@pytest.mark.compat
def test_cache_dir_is_the_one_pip_uses(
    make_venvs: MakeVenvs, pip_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Command line, variables, PIP_CONFIG_FILE, the environment's pip.conf, --isolated: the cache
    directory safe-pip locks is the one the real pip reports, in each case."""
    [venv] = make_venvs(1)
    file = tmp_path / "pip.ini"
    file.write_text(
        f"[global]\ncache-dir = {tmp_path / 'from-file'}\n[cache]\ncache-dir = {tmp_path / 'from-section'}\n"
    )
    (venv / "pip.conf").write_text(f"[global]\ncache-dir = {tmp_path / 'from-site'}\n")
    base = {key: value for key, value in pip_env.items() if key not in ("PIP_CACHE_DIR", "PIP_CONFIG_FILE")}
    cases: list[tuple[dict[str, str], list[str]]] = [
        ({}, []),
        ({"PIP_CACHE_DIR": str(tmp_path / "from-variable")}, []),
        ({"PIP_CONFIG_FILE": str(file)}, []),
        ({"PIP_CONFIG_FILE": str(file), "PIP_CACHE_DIR": str(tmp_path / "from-variable")}, []),
        ({"PIP_CACHE_DIR": str(tmp_path / "from-variable")}, ["--isolated"]),
        ({"PIP_NO_CACHE_DIR": "off"}, []),
        ({"PIP_NO_CACHE_DIR": "1"}, ["--cache-dir", str(tmp_path / "from-flag")]),
        ({}, ["--no-cache-dir"]),
        ({"PIP_CONFIG_FILE": os.devnull}, []),
    ]
    for variables, flags in cases:
        env = {**base, **variables}
        with monkeypatch.context() as patch:
            for name in set(os.environ) - set(env):
                patch.delenv(name)
            for name, value in env.items():
                patch.setenv(name, value)
            ours = described(venv / "bin" / "python", [*flags, "cache", "dir"], env).cache_dir
        theirs = pip_cache_dir(venv, env, *flags)
        assert (str(ours) if ours else None) == (os.path.realpath(theirs) if theirs else None), (
            variables,
            flags,
        )


@pytest.fixture(scope="session")
def safe_build_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of safe-build built from this checkout (offline: no build isolation)."""
    out = tmp_path_factory.mktemp("safe-build-wheel")
    env = {**os.environ, "SAFE_BUILD_CACHE_DIR": str(out / "cache"), "PIP_NO_INDEX": "1"}
    checkout = Path(__file__).resolve().parent.parent
    built = run(safe_build_command("--wheel", "--no-isolation", "--outdir", out, checkout), env)
    assert built.returncode == 0, built.stderr
    [wheel] = out.glob("safe_build-*.whl")
    return wheel


def install_safe_pip(venv: Path, wheel: Path, env: dict[str, str]) -> Path:
    """safe-build installed into ``venv`` from ``wheel``, as a user installs it (its requirements
    are this Python's: a ``.pth`` names its site-packages after the venv's own); its ``safe-pip``."""
    installed = run(plain_pip(venv, "install", "--quiet", "--no-deps", "--no-index", wheel), env)
    assert installed.returncode == 0, installed.stderr
    [ours] = (path for path in sys.path if path.endswith("site-packages") and Path(path).is_dir())
    (site_packages(venv) / "zz_safe_build_requirements.pth").write_text(ours + "\n")
    return venv / "bin" / "safe-pip"


def test_venv_safe_pip_works_on_its_own_venv(
    make_venvs: MakeVenvs, pip_env: dict[str, str], tmp_path: Path, safe_build_wheel: Path
) -> None:
    """``VENV/bin/safe-pip`` works on VENV, as ``VENV/bin/pip`` does, with no PATH and no active venv
    (pip reads no VIRTUAL_ENV: an active other venv changes nothing); from a tool's venv (pipx, uv
    tool), it works on the active venv instead."""
    write(tmp_path / "t", TOOL)
    venv, other = make_venvs(2)
    script = install_safe_pip(venv, safe_build_wheel, pip_env)
    bare = {key: value for key, value in pip_env.items() if key not in ("PATH", "VIRTUAL_ENV")}
    version = run([str(script), "--version"], bare, cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert f"from {site_packages(venv) / 'pip'} " in version.stdout
    result = run([str(script), "install", "--no-build-isolation", "./t"], bare, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (site_packages(venv) / "t-4.dist-info").is_dir()
    elsewhere = run([str(script), "--version"], {**bare, "VIRTUAL_ENV": str(other)}, cwd=tmp_path)
    assert f"from {site_packages(venv) / 'pip'} " in elsewhere.stdout
    (venv / "pipx_metadata.json").write_text("{}\n")  # safe-build installed with pipx
    as_tool = run(
        [str(script), "install", "--no-build-isolation", "./t"],
        {**bare, "VIRTUAL_ENV": str(other)},
        cwd=tmp_path,
    )
    assert as_tool.returncode == 0, as_tool.stderr
    assert (site_packages(other) / "t-4.dist-info").is_dir()


def test_help_says_what_safe_pip_adds_then_shows_pips_help(
    make_venvs: MakeVenvs, pip_env: dict[str, str]
) -> None:
    """A first paragraph of safe-pip's own, then pip's help exactly as pip prints it."""
    [venv] = make_venvs(1)
    for arguments in (["--help"], ["install", "-h"]):
        plain = run(plain_pip(venv, *arguments), pip_env)
        ours = run(safe_pip("--python", venv, *arguments), pip_env)
        assert (ours.returncode, plain.returncode) == (0, 0), ours.stderr
        first, _, rest = ours.stdout.partition("\n\n")
        assert all(word in first for word in ("locks", "safe-build", "docs/safe-pip.md")), first
        assert "\n" + rest == plain.stdout  # pip's help starts with an empty line


@pytest.mark.compat
def test_report_and_output_are_plain_pips(
    make_venvs: MakeVenvs, pip_env: dict[str, str], tmp_path: Path
) -> None:
    """What pip prints and records names the user's directory, never safe-pip's shim.

    ``install --dry-run --report``: the report is plain pip's, byte for byte (nothing must differ:
    a directory's ``download_info`` holds its URL and no hash, and the metadata pip reads from the
    shim is the wheel's, which setuptools writes as it prepares it for plain pip), and so is the
    output, whose ``Processing ./t`` line pip would write with the shim's path (relative here: the
    safe-build cache is inside the working directory). A report named by ``PIP_REPORT`` (which pip
    writes itself) and one on pip's output (``--report -``) are the same. The project has a
    pyproject.toml: without one, pip before 23.1 prepares it through setup.py and says so, where
    it prepares the shim through its pyproject.toml (the one line of the output that differs)."""
    write(tmp_path / "t", {**TOOL, "pyproject.toml": SETUPTOOLS_BUILD_SYSTEM})
    [venv] = make_venvs(1)
    assert Path(pip_env["SAFE_BUILD_CACHE_DIR"]).is_relative_to(tmp_path)
    flags = ["install", "--no-build-isolation", "--dry-run"]
    plain = run(plain_pip(venv, *flags, "--report", "plain.json", "./t"), pip_env, cwd=tmp_path)
    ours = run(safe_pip("--python", venv, *flags, "--report", "ours.json", "./t"), pip_env, cwd=tmp_path)
    assert (ours.returncode, plain.returncode) == (0, 0), ours.stderr
    assert "Processing ./t\n" in ours.stdout
    assert (ours.stdout, ours.stderr) == (plain.stdout, plain.stderr)
    expected = (tmp_path / "plain.json").read_bytes()
    assert (tmp_path / "ours.json").read_bytes() == expected
    assert (tmp_path / "ours.json").stat().st_mode == (tmp_path / "plain.json").stat().st_mode
    variable = {**pip_env, "PIP_REPORT": str(tmp_path / "variable.json")}
    assert run(safe_pip("--python", venv, *flags, "./t"), variable, cwd=tmp_path).returncode == 0
    assert (tmp_path / "variable.json").read_bytes() == expected
    printed = run(
        safe_pip("--python", venv, *flags, "--quiet", "--report", "-", "./t"), pip_env, cwd=tmp_path
    )
    assert printed.returncode == 0, printed.stderr
    assert f'"url": "{(tmp_path / "t").as_uri()}"' in printed.stdout
    assert "prebuilt" not in printed.stdout


def test_wheel_and_errors_name_the_users_directory(
    make_venvs: MakeVenvs, pip_env: dict[str, str], tmp_path: Path
) -> None:
    """``pip wheel`` of a project given as a URL, and an install that pip refuses after reading the
    project (a dependency it cannot find): the project's directory, never the shim's."""
    project = write(tmp_path / "t", TOOL)
    write(
        tmp_path / "broken",
        {
            **TOOL,
            "pyproject.toml": SETUPTOOLS_BUILD_SYSTEM,
            "setup.py": TOOL["setup.py"].replace(
                "py_modules", 'install_requires=["missing-dependency-xyz"], py_modules'
            ),
        },
    )
    [venv] = make_venvs(1)
    wheel = run(
        safe_pip(
            "--python", venv, "wheel", "--no-build-isolation", "--no-deps", "-w", "out", project.as_uri()
        ),
        pip_env,
        cwd=tmp_path,
    )
    assert wheel.returncode == 0, wheel.stderr
    assert "Processing ./t\n" in wheel.stdout
    assert list((tmp_path / "out").glob("t-4-*.whl"))
    refused = run(
        safe_pip("--python", venv, "install", "--no-build-isolation", "--no-index", "./broken"),
        pip_env,
        cwd=tmp_path,
    )
    plain = run(
        plain_pip(venv, "install", "--no-build-isolation", "--no-index", "./broken"), pip_env, cwd=tmp_path
    )
    assert refused.returncode == plain.returncode == 1
    assert (refused.stdout, refused.stderr) == (plain.stdout, plain.stderr)
    assert "prebuilt" not in wheel.stdout + wheel.stderr + refused.stdout + refused.stderr
