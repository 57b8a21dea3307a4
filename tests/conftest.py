"""Real projects, real processes: fixtures shared by the test modules.

Isolated builds install their build requirements with pip; a session-scoped wheelhouse,
downloaded once, lets them do that without the network (PIP_NO_INDEX + PIP_FIND_LINKS).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

pytest_plugins = ["tests.s3server"]  # the S3 server of the remote cache's tests
BUILD_REQUIREMENTS = [
    "setuptools>=69",
    "wheel",
    "hatchling",
    "flit-core>=3.9",
    "setuptools-scm>=8",  # the version-from-git projects of tests/vcs_projects.py
    "hatch-vcs",
    "pdm-backend",  # the five backends of tests/test_link_parity.py
    "poetry-core>=2",
]

# name -> files of a small project using that backend
PROJECTS: dict[str, dict[str, str]] = {
    # the bare setup.py project of the issue that broke plain builds (no pyproject.toml at all)
    "setup-py": {
        "setup.py": 'import setuptools\nsetuptools.setup(name="t", version="4", py_modules=["t"])\n',
        "t.py": "VALUE = 4\n",
    },
    "setuptools": {
        "pyproject.toml": textwrap.dedent(
            """\
            [build-system]
            requires = ["setuptools>=69"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "demo-setuptools"
            version = "1.0"
            """
        ),
        "src/demo_setuptools/__init__.py": "VALUE = 1\n",
        "src/demo_setuptools/core.py": "def answer():\n    return 42\n",
        "src/demo_setuptools/data.txt": "package data\n",
    },
    "hatchling": {
        "pyproject.toml": textwrap.dedent(
            """\
            [build-system]
            requires = ["hatchling"]
            build-backend = "hatchling.build"

            [project]
            name = "demo-hatch"
            version = "2.0"
            """
        ),
        "src/demo_hatch/__init__.py": "VALUE = 2\n",
        "src/demo_hatch/util.py": "X = 1\n",
    },
    "flit": {
        "pyproject.toml": textwrap.dedent(
            """\
            [build-system]
            requires = ["flit_core>=3.9"]
            build-backend = "flit_core.buildapi"

            [project]
            name = "demo_flit"
            version = "3.0"
            description = "flit demo"
            """
        ),
        "demo_flit/__init__.py": '"""flit demo."""\nVALUE = 3\n',
    },
    # an in-tree backend that says when it starts (SLOW_BACKEND_MARKER), then waits until the file
    # SLOW_BACKEND_GATE exists, if that is set, and sleeps (SLOW_BACKEND_SECONDS): for killing builds
    # mid-way and holding locks for a while, or until a test has done what it must meanwhile
    "slow": {
        "pyproject.toml": textwrap.dedent(
            """\
            [build-system]
            requires = ["setuptools>=69"]
            build-backend = "slow_backend"
            backend-path = ["."]

            [project]
            name = "slow"
            version = "1.0"

            [tool.setuptools]
            py-modules = ["slow"]
            """
        ),
        "slow.py": "VALUE = 5\n",
        "slow_backend.py": textwrap.dedent(
            """\
            import os
            import time

            from setuptools import build_meta as _setuptools
            from setuptools.build_meta import *  # noqa: F403


            def _pause(hook):
                marker = os.environ.get("SLOW_BACKEND_MARKER")
                if marker:
                    with open(marker, "a") as file:
                        file.write(f"{hook} {os.getpid()} {os.getpgid(0)}\\n")
                gate = os.environ.get("SLOW_BACKEND_GATE")
                while gate and not os.path.exists(gate):
                    time.sleep(0.02)
                time.sleep(float(os.environ.get("SLOW_BACKEND_SECONDS", "0")))


            def build_wheel(*args, **kwargs):
                _pause("build_wheel")
                return _setuptools.build_wheel(*args, **kwargs)


            def build_sdist(*args, **kwargs):
                _pause("build_sdist")
                return _setuptools.build_sdist(*args, **kwargs)
            """
        ),
    },
}


def write_project(root: Path, kind: str) -> Path:
    return write_files(root, PROJECTS[kind])


def write_files(root: Path, files: Mapping[str, str]) -> Path:
    """``files`` (relative path -> text) below ``root``."""
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels of every build requirement the fixture projects use, downloaded once per session."""
    return download_wheelhouse(tmp_path_factory.mktemp("wheelhouse"))


def offline_env(wheelhouse: Path, cache_dir: Path) -> dict[str, str]:
    """What ``env`` sets: offline pip from ``wheelhouse``; safe-build keeps its state in ``cache_dir``."""
    return {
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheelhouse),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "SAFE_BUILD_CACHE_DIR": str(cache_dir),
    }


def download_wheelhouse(house: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(house), *BUILD_REQUIREMENTS],
        check=True,
    )
    return house


@pytest.fixture
def env(
    wheelhouse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> dict[str, str]:
    """The environment for safe-build and plain build processes: offline pip, a private cache.

    Tests marked ``uncached`` are about builds that run at once: the wheel cache would turn all
    but one of them into cache hits.
    """
    values = offline_env(wheelhouse, tmp_path / "safe-build-cache")
    if request.node.get_closest_marker("uncached"):
        values["SAFE_BUILD_NO_CACHE"] = "1"
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **values}


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[[str], Path]:
    def make(kind: str, name: str | None = None) -> Path:
        return write_project(tmp_path / (name or kind), kind)

    return make


def safe_build_command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "safe_build", *map(str, args)]


def plain_build_command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "build", *map(str, args)]


def run(
    command: Sequence[str], env: dict[str, str], cwd: Path | None = None, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, check=False, timeout=timeout
    )


def run_parallel(
    commands: Sequence[Sequence[str]], env: dict[str, str], cwd: Path | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Start every command at once and wait for all of them."""
    processes = [
        subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for command in commands
    ]
    results = []
    for command, process in zip(commands, processes, strict=True):
        out, err = process.communicate()
        results.append(subprocess.CompletedProcess(command, process.returncode, out, err))
    return results


def wheel_problems(wheel: Path) -> list[str]:
    """What is wrong with a wheel: not a zip, bad CRC, RECORD missing or not matching the members."""
    try:
        archive = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as error:
        return [f"{wheel.name}: {error}"]
    with archive:
        bad = archive.testzip()
        if bad is not None:
            return [f"{wheel.name}: bad CRC in {bad}"]
        records = [name for name in archive.namelist() if name.endswith(".dist-info/RECORD")]
        if len(records) != 1:
            return [f"{wheel.name}: {len(records)} RECORD files"]
        problems = []
        listed = set()
        for row in csv.reader(io.StringIO(archive.read(records[0]).decode())):
            if not row:
                continue
            name, digest = row[0], row[1]
            listed.add(name)
            if name == records[0]:
                continue
            algorithm, _, expected = digest.partition("=")
            actual = base64.urlsafe_b64encode(hashlib.new(algorithm, archive.read(name)).digest()).rstrip(
                b"="
            )
            if actual.decode() != expected:
                problems.append(f"{wheel.name}: hash mismatch for {name}")
        unlisted = set(archive.namelist()) - listed
        if unlisted:
            problems.append(f"{wheel.name}: members not in RECORD: {sorted(unlisted)}")
        return problems


def members(archive_path: Path) -> list[str]:
    """The member names of a wheel or sdist, sorted."""
    if archive_path.name.endswith(".whl"):
        with zipfile.ZipFile(archive_path) as archive:
            return sorted(archive.namelist())
    with tarfile.open(archive_path) as archive:
        return sorted(member.name for member in archive.getmembers() if member.isfile())


Members = dict[str, tuple[str, int, bytes]]


def archive_members(artifact: Path) -> Members:
    """Every member of a wheel or sdist: kind, permission bits, content (or a link's text)."""
    found: Members = {}
    if artifact.name.endswith(".whl"):
        with zipfile.ZipFile(artifact) as archive:
            for info in archive.infolist():
                found[info.filename] = ("file", (info.external_attr >> 16) & 0o7777, archive.read(info))
        return found
    with tarfile.open(artifact) as archive:
        for member in archive.getmembers():
            name = member.name.split("/", 1)[-1]
            if member.issym():
                found[name] = ("link", member.mode, member.linkname.encode())
            elif member.isfile():
                data = archive.extractfile(member)
                assert data is not None
                found[name] = ("file", member.mode, data.read())
    return found


def tree_state(root: Path) -> dict[str, tuple[int, bytes | str]]:
    """Every entry below ``root`` with its mode and content (or link target), to prove nothing changed."""
    state: dict[str, tuple[int, bytes | str]] = {}
    for current, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(current, name)
            info = path.lstat()
            relative = str(path.relative_to(root))
            if path.is_symlink():
                state[relative] = (info.st_mode, os.readlink(path))
            elif path.is_file():
                state[relative] = (info.st_mode, path.read_bytes())
            else:
                state[relative] = (info.st_mode, "")
    return state
