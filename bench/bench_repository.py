"""Benchmark the repository isolation mode against plain in-tree ``python -m build``, side by side.

A setuptools-scm project in a monorepo subdirectory, one commit past a tag, with uncommitted
changes (``tests/vcs_projects.py``'s ``scm-monorepo`` fixture), built with the default flow
(sdist, then the wheel from it). safe-build runs without its wheel cache and with build's own
fresh environment (``--no-cache --fresh-env``), so both sides do the same build work and the
ratio is the mode's own cost: copying the repository and giving it private git metadata.
Goal: at most 1.15x. Medians of ``--rounds`` runs, the tools taking turns.

    python bench/bench_repository.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench_core import background_load, build_env, last_line, median, note, prepare_wheelhouse, verdict
from figures import Figure, add_json_option, loaded, write_json
from safe_build.fsutil import remove_tree

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the fixtures of the tests
from tests import vcs_projects

GOAL = 1.15
REQUIREMENTS = ("setuptools>=69", "wheel", "setuptools-scm>=8")


def timed(command: Sequence[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        command, check=False, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if done.returncode:
        raise RuntimeError(f"{command[2]}: exit {done.returncode}: {last_line(done.stdout)}")
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    add_json_option(parser)
    args = parser.parse_args(argv)
    work = Path(os.path.realpath(tempfile.mkdtemp(prefix="safe-build-bench-repository-")))
    try:
        note("downloading the build requirements into a wheelhouse")
        wheelhouse = prepare_wheelhouse(work, None, REQUIREMENTS)
        env = build_env(work, wheelhouse) | {"SOURCE_DATE_EPOCH": vcs_projects.SOURCE_DATE_EPOCH}
        fixture = vcs_projects.make("scm-monorepo", "dirty", work / "origin")
        plain_project = vcs_projects.checkout(fixture, work / "plain").project
        safe_project = vcs_projects.checkout(fixture, work / "safe").project
        plain, safe = [], []
        seen: dict[str, float] = {}
        with background_load("repository", seen):
            for number in range(args.rounds):
                note(f"round {number + 1}/{args.rounds}")
                out = work / f"out-{number}"
                plain.append(
                    timed([sys.executable, "-m", "build", "-o", f"{out}-plain", str(plain_project)], env)
                )
                for leftover in [plain_project / "build", *plain_project.glob("src/*.egg-info")]:
                    remove_tree(leftover)  # untimed: plain build's state would speed up its next run
                safe.append(
                    timed([sys.executable, "-m", "safe_build", "-o", f"{out}-safe", str(safe_project)], env)
                )
        ratio = median(safe) / median(plain)
        print(f"plain python -m build (in the tree)          {median(plain):6.2f}s")
        print(f"safe-build, repository mode, --fresh-env      {median(safe):6.2f}s")
        print(f"ratio {ratio:.2f} (goal <= {GOAL}: {verdict(ratio, GOAL)})")
        what = f"repository mode, setuptools-scm monorepo project, sdist and wheel, median of {args.rounds}"
        figure = Figure("bench_repository", what, ratio, goal=GOAL, plain=median(plain), safe=median(safe))
        write_json(args.json, loaded([figure], seen, "repository"))
        return 0
    finally:
        remove_tree(work)


if __name__ == "__main__":
    sys.exit(main())
