"""The checks of a package's artifacts, each made by the tool its users already trust for it.

- ``metadata``: twine check, as the upload to PyPI will judge the metadata;
- ``sdist_holds_tracked_files``: check-manifest's file lists and ignore rules;
- ``wheel_holds_sdist_packages``: check-wheel-contents, given the sdist's package trees.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from safe_build_hooks import manifestcompat
from safe_build_hooks.packages import owner


def metadata(artifacts: Sequence[Path], *, strict: bool) -> str | None:
    """``twine check``: valid metadata, and a long description that PyPI can render."""
    options = ["--strict"] if strict else []
    command = [sys.executable, "-m", "twine", "--no-color", "check", *options, *map(str, artifacts)]
    return _failure_output("twine check", command, artifacts[0].parent, None)


def sdist_holds_tracked_files(package: Path, sdist: Path) -> str | None:
    """Every file git tracks in the package is in the sdist, unless check-manifest's rules excuse it.

    The rules are its defaults, ``[tool.check-manifest] ignore`` and what ``MANIFEST.in``
    excludes. Files of a package nested in this one are that package's business. With a
    check-manifest whose functions changed (``manifestcompat.PROBLEM``), its command line judges.
    """
    if manifestcompat.PROBLEM is not None:
        return manifestcompat.command_line_check(package, _warn)
    try:
        tracked, packed = manifestcompat.tracked_and_packed(package, sdist)
    except manifestcompat.ManifestError as error:
        return f"check-manifest: {error}"
    missing = sorted(name for name in set(tracked) - set(packed) if owner(package / name, package) == package)
    if not missing:
        return None
    listed = "\n".join(f"  {name}" for name in missing)
    return (
        f"{sdist.name} lacks files that git tracks (include them in the sdist, or list them in "
        f"[tool.check-manifest] ignore):\n{listed}"
    )


def _warn(message: str) -> None:
    print(f"safe-build-check-hook: warning: {message}", file=sys.stderr)


def wheel_holds_sdist_packages(package: Path, sdist: Path, wheel: Path, scratch: Path) -> str | None:
    """``check-wheel-contents`` with the sdist's trees of the wheel's top-level packages as ``--package``.

    So a data file that the sdist ships inside a package, and the wheel lacks, is W101. Its
    configuration is read from the package's directory, as when it runs there.
    """
    with tarfile.open(sdist) as archive:
        archive.extractall(scratch, filter="data")
    (unpacked,) = scratch.iterdir()
    trees = [tree for name in _library_top_levels(wheel) if (tree := _shallowest(unpacked, name))]
    packages = [f"--package={tree}" for tree in trees]
    command = [sys.executable, "-m", "check_wheel_contents", *packages, str(wheel)]
    return _failure_output("check-wheel-contents", command, wheel.parent, package)


def _library_top_levels(wheel: Path) -> list[str]:
    """The wheel's top-level modules and packages (not its ``.dist-info`` and ``.data``)."""
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
    return sorted(top for top in tops if not top.endswith((".dist-info", ".data")))


def _shallowest(root: Path, name: str) -> Path | None:
    """The module or package called ``name`` nearest to the sdist's top (``src/name`` or ``name``)."""
    return min(root.rglob(name), key=lambda path: len(path.parts), default=None)


def _failure_output(tool: str, command: list[str], artifacts: Path, cwd: Path | None) -> str | None:
    """``None`` if ``command`` succeeds, else what ``tool`` said, with artifacts named without their
    temporary directory, and lines unwrapped (twine's rich would wrap them at 80 columns)."""
    env = {**os.environ, "COLUMNS": "1000"}
    done = subprocess.run(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
    )
    if done.returncode == 0:
        return None
    lines = done.stdout.replace(f"{artifacts}{os.sep}", "").splitlines()
    return "\n".join([f"{tool}:", *(line.rstrip() for line in lines)])
