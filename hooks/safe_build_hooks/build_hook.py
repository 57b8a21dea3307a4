"""``safe-build-hook [--sdist] [--outdir DIR] FILE…``: build the wheel of each package owning a FILE.

The artifacts go to a temporary directory that is removed afterwards, unless ``--outdir`` names
one to keep them in (safe-build publishes each artifact there atomically, so parallel chunks
can share it).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Sequence
from pathlib import Path

from safe_build_hooks import hookcli
from safe_build_hooks.building import build

PROG = "safe-build-hook"


def main(argv: Sequence[str] | None = None) -> int:
    parser = hookcli.parser(PROG, "Build the wheel of every local package that owns one of the files.")
    parser.add_argument("--sdist", action="store_true", help="build the sdist too")
    parser.add_argument("--outdir", type=Path, help="keep the artifacts here (default: build and discard)")
    options = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        if options.outdir is None:
            options.outdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="safe-build-hook-")))
        return hookcli.run(options, _build)


def _build(package: Path, options: argparse.Namespace) -> list[str]:
    distributions = ["--wheel", "--sdist"] if options.sdist else ["--wheel"]
    failure = build(package, options.outdir, distributions)
    return [] if failure is None else [failure]


def entrypoint() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    entrypoint()
