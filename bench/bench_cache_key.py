"""How long computing a build's cache key takes, next to ``cp -a`` of the same tree.

The key reads every file a snapshot would copy, so its natural yardstick is the copy it lets a
cached build skip. For each size, a tree of files of 5-15 KiB (about 10 KiB each, like
``bench_core.py``'s) is made, then, alternately for ``--rounds`` rounds:

- ``cp -a`` of the tree (the target removed untimed afterwards);
- ``cachekey.compute`` without a memo: every file is read;
- with a memo, cold (the memo removed first: every file read, the memo written) and warm (the
  memo of the previous call in place: one ``lstat`` per unchanged file).

Medians are printed with the ratio to ``cp -a``. Everything runs on a warm page cache (dropping
caches needs privileges): the numbers compare the work done, not the disk. Use ``--tree-dir``
on a tmpfs (``/dev/shm``) to keep the disk out of ``cp -a`` too. Timing starts once the newest
file is ``digests.SETTLE_NS`` old, so that a warm memo can hold all of them, as it would for a
tree not edited in the last seconds. The load average is printed before and after, and how
many cores other processes kept busy during each size: on a busy machine, compare the ratios,
not the seconds.

    python bench/bench_cache_key.py                              # 2,000, 20,000 and 200,000 files
    python bench/bench_cache_key.py --sizes 20000 --tree-dir /dev/shm --rounds 7
    python bench/bench_cache_key.py --git                        # listed by git instead of a walk
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench_core import background_load
from figures import Figure, add_json_option, loaded, write_json
from safe_build import cachekey, digests

FILES_PER_DIR = 10
INPUTS: dict[str, object] = {"distributions": ["wheel"], "isolation": "isolated"}


@dataclass
class Timings:
    """Seconds of each side, one value per round."""

    files: int
    megabytes: float
    listed_by: str = ""
    sides: dict[str, list[float]] = field(default_factory=dict)

    def add(self, side: str, seconds: float) -> None:
        self.sides.setdefault(side, []).append(seconds)

    def median(self, side: str) -> float:
        return statistics.median(self.sides[side])


def note(message: str) -> None:
    """Progress goes to stderr, so that stdout holds only the report."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def make_tree(root: Path, files: int) -> int:
    """A project of ``files`` files of 5-15 KiB, ten to a directory; returns their total size.

    Contents are slices of one random pool: incompressible like real data, cheap to write.
    """
    rng = random.Random(20240601)
    pool = rng.randbytes(1 << 16)
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "big"\nversion = "1"\n', encoding="utf-8")
    total = 0
    for number in range(files // FILES_PER_DIR):
        directory = root / "data" / f"g{number // 100:03d}" / f"d{number:05d}"
        directory.mkdir(parents=True)
        for index in range(FILES_PER_DIR):
            size = rng.randint(5 << 10, 15 << 10)
            start = rng.randrange(len(pool) - size)
            (directory / f"f{index}.dat").write_bytes(pool[start : start + size])
            total += size
    return total


def make_git_repo(root: Path) -> None:
    identity = ["-c", "user.name=x", "-c", "user.email=x@x", "-c", "commit.gpgsign=false"]
    for command in (["init", "-q"], ["add", "-A"], [*identity, "commit", "-q", "-m", "benchmark tree"]):
        subprocess.run(["git", *command], cwd=root, check=True, capture_output=True)


def timed_copy(tree: Path, target: Path) -> float:
    """One ``cp -a`` of the tree's top-level entries but ``.git`` (a snapshot leaves it out too)."""
    target.mkdir()
    entries = sorted(str(path) for path in tree.iterdir() if path.name != ".git")
    started = time.perf_counter()
    subprocess.run(["cp", "-a", *entries, str(target)], check=True)
    return time.perf_counter() - started


def timed_key(tree: Path, memo: Path | None) -> tuple[float, cachekey.Key]:
    """One ``cachekey.compute``, as safe-build calls it."""
    started = time.perf_counter()
    key = cachekey.compute(tree, INPUTS, memo=memo)
    return time.perf_counter() - started, key


def measure(tree: Path, work: Path, rounds: int, result: Timings) -> None:
    """The four sides alternately, each round in the same order; the digests must all agree."""
    memo = work / "key.memo"
    digests: set[str] = set()
    for number in range(rounds):
        note(f"{result.files} files: round {number + 1}/{rounds}")
        result.add("cp -a", timed_copy(tree, work / "copy"))
        shutil.rmtree(work / "copy")
        keys = []
        for side, memo_file in (("key, no memo", None), ("key, cold memo", memo), ("key, warm memo", memo)):
            if side == "key, cold memo":
                memo.unlink(missing_ok=True)
            seconds, key = timed_key(tree, memo_file)
            result.add(side, seconds)
            keys.append(key)
        digests.update(key.digest for key in keys)
        result.listed_by = keys[-1].listed_by
        if keys[-1].read:
            note(f"warm memo still read {keys[-1].read} files: were they changed in the last seconds?")
    if len(digests) != 1:
        raise SystemExit(f"the key changed between calls on an unchanged tree: {sorted(digests)}")


def settle(tree: Path) -> None:
    """Wait until the newest file is older than the memo's settling time."""
    newest = max(
        os.lstat(os.path.join(current, name)).st_ctime_ns
        for current, _, names in os.walk(tree)
        for name in names
    )
    wait = (newest + digests.SETTLE_NS - time.time_ns()) / 1e9
    if wait > 0:
        note(f"waiting {wait:.1f}s for the files to settle")
        time.sleep(wait + 0.1)


def bench_size(files: int, tree_root: Path, rounds: int, *, git: bool) -> Timings:
    work = Path(tempfile.mkdtemp(prefix=f"key-{files}-", dir=tree_root))
    try:
        tree = work / "project"
        note(f"making a tree of {files} files in {tree}")
        size = make_tree(tree, files)
        if git:
            note("committing it to git")
            make_git_repo(tree)
        settle(tree)
        result = Timings(files, size / 1e6)
        measure(tree, work, rounds, result)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_report(results: Sequence[Timings], rounds: int) -> None:
    print(f"\ncache key vs cp -a, median of {rounds} rounds")
    sides = ["cp -a", "key, no memo", "key, cold memo", "key, warm memo"]
    print(f"{'files':>8} {'MB':>7} {'listed':>6} " + " ".join(f"{side:>22}" for side in sides))
    for result in results:
        cp = result.median("cp -a")
        cells = [f"{cp:8.3f}s".rjust(22)]
        cells += [
            f"{result.median(side):8.3f}s ({result.median(side) / cp:.2f}x)".rjust(22) for side in sides[1:]
        ]
        print(f"{result.files:>8} {result.megabytes:7.0f} {result.listed_by:>6} " + " ".join(cells))


def figures(result: Timings, rounds: int) -> list[Figure]:
    """The key without a memo and with a warm one, each against ``cp -a`` of the same tree."""
    cp = result.median("cp -a")
    tree = f"{result.files:,} files ({result.megabytes:.0f} MB), listed by {result.listed_by}"
    return [
        Figure(
            "bench_cache_key",
            f"cache key of {tree}, {side.removeprefix('key, ')}, vs cp -a, median of {rounds}",
            result.median(side) / cp,
            plain=cp,
            safe=result.median(side),
        )
        for side in ("key, no memo", "key, warm memo")
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="2000,20000,200000", help="comma-separated file counts")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per size (median)")
    parser.add_argument("--tree-dir", help="where to make the trees and copies (default: the temp dir)")
    parser.add_argument("--git", action="store_true", help="commit each tree to git, so git lists it")
    add_json_option(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    tree_root = Path(os.path.realpath(args.tree_dir or tempfile.gettempdir()))
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, trees under {tree_root}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    results, found = [], []
    seen: dict[str, float] = {}
    for files in sizes:
        with background_load(f"{files} files", seen):
            results.append(bench_size(files, tree_root, args.rounds, git=args.git))
        found += loaded(figures(results[-1], args.rounds), seen, f"{files} files")
    print_report(results, args.rounds)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    write_json(args.json, found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
