"""``safe-build-check-hook [--strict] FILE…``: build each package owning a FILE and check the result.

Each package is built as ``python -m build`` would (the sdist, then the wheel from the sdist)
into a temporary directory, and then checked as its users would find it: see ``checks``.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

from safe_build_hooks import checks, hookcli
from safe_build_hooks.building import build

PROG = "safe-build-check-hook"


def main(argv: Sequence[str] | None = None) -> int:
    parser = hookcli.parser(
        PROG,
        "Build every local package that owns one of the files and check its metadata, that its sdist "
        "holds what git tracks and that its wheel holds the sdist's package files.",
    )
    parser.add_argument("--strict", action="store_true", help="fail on twine check's warnings too")
    return hookcli.run(parser.parse_args(argv), _check)


def _check(package: Path, options: argparse.Namespace) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="safe-build-check-") as scratch:
        outdir = Path(scratch, "dist")
        failure = build(package, outdir, [])
        if failure is not None:
            return [failure]
        (sdist,) = outdir.glob("*.tar.gz")
        (wheel,) = outdir.glob("*.whl")
        found = [
            checks.metadata([sdist, wheel], strict=options.strict),
            checks.sdist_holds_tracked_files(package, sdist),
            checks.wheel_holds_sdist_packages(package, sdist, wheel, Path(scratch, "sdist")),
        ]
        return [problem for problem in found if problem is not None]


def entrypoint() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    entrypoint()
