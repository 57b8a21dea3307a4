"""The figures a benchmark script measured, as data: one record shape shared by every script.

Each script prints its own report for a reader; ``report.py`` runs them all and needs the same
figures in a form it can tabulate and chart, so each script also writes them, with ``--json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Figure:
    """One measured figure, in the terms of its goal.

    ``value`` is what the goal is about: a time ratio, a speedup, seconds or a count (``unit``
    says which). ``plain``, ``safe`` and ``uv`` are what the tools measured, in ``measured``:
    ``plain`` is the yardstick, the plain tool unless ``what`` names another (``cp -a``, say).
    """

    bench: str  # the script and its part, e.g. "bench_core single"
    what: str
    value: float
    unit: str = "x"
    goal: float | None = None  # None: a figure to know, with no goal set
    at_least: bool = False  # the goal is a floor (speedups), not a ceiling
    plain: float | None = None
    safe: float | None = None
    uv: float | None = None
    measured: str = " s"
    load: float | None = None  # cores other processes kept busy meanwhile, if known

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        return self.value >= self.goal if self.at_least else self.value <= self.goal


def counted(bench: str, what: str, plain: int, safe: int, out_of: int, *, unit: str = " failed") -> Figure:
    """A count of things that went wrong, such as failed builds: safe-build's goal is none."""
    return Figure(bench, what, safe, unit, goal=0, plain=plain, safe=safe, measured=f" of {out_of}")


def loaded(figures: Iterable[Figure], loads: Mapping[str, float], part: str) -> list[Figure]:
    """``figures`` with the load seen during ``part``: known only once the part is over."""
    return [dataclasses.replace(figure, load=loads.get(part)) for figure in figures]


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="PATH", help="also write the figures to this file, as JSON")


def write_json(path: str | None, figures: Sequence[Figure]) -> None:
    if path:
        records = [dataclasses.asdict(figure) for figure in figures]
        Path(path).write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")


def read_json(path: Path) -> list[Figure]:
    return [Figure(**record) for record in json.loads(path.read_text(encoding="utf-8"))]
