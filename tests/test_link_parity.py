"""A link out of the project gives the artifacts plain ``python -m build`` gives, for each backend.

Each backend treats such a link its own way (setuptools follows it, flit refuses it, hatchling
archives the link itself): safe-build must neither hide the link nor hand the backend something
else. Each project is built twice from identical trees side by side, with plain build and with
safe-build, and the outcomes compared member by member: names, kinds, modes and bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import Members, archive_members, plain_build_command, run, safe_build_command, write_files

STATIC = 'name = "pkg"\nversion = "1.0"\ndescription = "links"\n'
BACKENDS = {  # requirement, backend
    "setuptools": ("setuptools>=69", "setuptools.build_meta"),
    "hatchling": ("hatchling", "hatchling.build"),
    "flit-core": ("flit_core>=3.9", "flit_core.buildapi"),
    "pdm-backend": ("pdm-backend", "pdm.backend"),
    "poetry-core": ("poetry-core>=2", "poetry.core.masonry.api"),
}


def outcome(returncode: int, outdir: Path) -> tuple[str, dict[str, Members]]:
    if returncode:
        return "refused", {}
    return "built", {artifact.name: archive_members(artifact) for artifact in sorted(outdir.iterdir())}


def side(root: Path, backend: str) -> Path:
    """A project whose module ``pkg/extra.py`` is a relative link to a private file outside it."""
    project = write_files(
        root / "project",
        {
            "pyproject.toml": '[build-system]\nrequires = ["{}"]\nbuild-backend = "{}"\n'.format(
                *BACKENDS[backend]
            )
            + "\n[project]\n"
            + STATIC,
            "pkg/__init__.py": '"""links."""\n',
            "README.md": "readme\n",
        },
    )
    secret = write_files(root / "outside", {"extra.py": "SECRET = 'outside the project'\n"}) / "extra.py"
    secret.chmod(0o600)
    (project / "pkg/extra.py").symlink_to("../../outside/extra.py")
    return project


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_link_to_a_file_outside_the_project_builds_as_plain_build_does(
    backend: str, env: dict[str, str], tmp_path: Path
) -> None:
    reproducible = {**env, "SOURCE_DATE_EPOCH": "1700000000"}
    plain_project, ours_project = side(tmp_path / "plain", backend), side(tmp_path / "ours", backend)
    for tree in (tmp_path / "plain", tmp_path / "ours"):
        for path in tree.rglob("*"):
            os.utime(path, (1_700_000_000, 1_700_000_000), follow_symlinks=False)
    plain = run(plain_build_command("-o", tmp_path / "plain-out", plain_project), reproducible)
    ours = run(safe_build_command("-o", tmp_path / "ours-out", ours_project), reproducible)
    expected = outcome(plain.returncode, tmp_path / "plain-out")
    assert outcome(ours.returncode, tmp_path / "ours-out") == expected, (plain.stdout[-2000:], ours.stderr)
