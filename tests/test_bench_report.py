"""bench/report.py's writer, on made-up figures: the table's rows and a chart that is a real image.

The benchmarks themselves take minutes and are not tests; what the report makes of their
figures is cheap to check.
"""

from __future__ import annotations

import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import report
from figures import Figure, read_json, write_json

FIGURES = [
    Figure("bench_core single", "one wheel build", 1.04, goal=1.1, plain=1.88, safe=1.95, load=0.1),
    Figure("bench_cache hit", "warm cache hit", 8.5, goal=10, at_least=True, plain=1.7, safe=0.2, load=1.2),
    Figure(
        "bench_core concurrent", "failed builds", 0, " failed", goal=0, plain=60, safe=0, measured=" of 96"
    ),
    Figure("bench_envs twenty", "20 projects", 0.32, plain=53.1, safe=16.9, uv=28.7),
]
HOST = report.Machine("2026-01-01 00:00 UTC", {"Python": "3.11.0"}, 2, quick=True)


def table_rows(text: str) -> list[list[str]]:
    """The cells of the figures table's body rows."""
    lines = text.split("## Figures", 1)[1].split("## Runs", 1)[0].splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith(("| ---", "| benchmark"))]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]


def test_table_has_one_row_per_figure_with_its_goal_and_verdict() -> None:
    runs = [report.Run("core", ["python", "bench_core.py", "--quick", "--json", "x"], 0, 61.0, FIGURES)]
    text = report.markdown(runs, HOST, "benchmarks.svg")

    assert text.startswith("# Benchmarks\n\n> **Quick smoke run**")
    assert table_rows(text) == [
        ["bench_core single", "one wheel build", "1.88 s", "1.95 s", "", "1.04x", "≤ 1.1x", "met", "0.10"],
        [
            "bench_cache hit",
            "warm cache hit",
            "1.7 s",
            "0.2 s",
            "",
            "8.5x",
            "≥ 10x",
            "**missed**",
            "1.20 (busy)",
        ],
        [
            "bench_core concurrent",
            "failed builds",
            "60 of 96",
            "0 of 96",
            "",
            "0 failed",
            "0 failed",
            "met",
            "?",
        ],
        ["bench_envs twenty", "20 projects", "53.1 s", "16.9 s", "28.7 s", "0.32x", "none", "", "?"],
    ]
    assert "![Each figure with a goal, against its goal](benchmarks.svg)" in text
    assert "| core | `python bench/bench_core.py --quick` | 0 | 1.0 |" in text


def test_figures_survive_the_json_round_trip(tmp_path: Path) -> None:
    write_json(str(tmp_path / "figures.json"), FIGURES)

    assert read_json(tmp_path / "figures.json") == FIGURES


def test_report_and_chart_are_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    runs = [report.Run("core", ["python", "bench_core.py", "--json", "x"], 0, 61.0, FIGURES)]
    report.write_report(runs, HOST, tmp_path / "docs" / "benchmarks.md")

    svg = ElementTree.parse(tmp_path / "docs" / "benchmarks.svg").getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    drawn = "".join(svg.itertext())
    assert "one wheel build" in drawn
    assert "failed builds" not in drawn  # a count with a goal of zero has no place on a log axis
    assert "(benchmarks.svg)" in (tmp_path / "docs" / "benchmarks.md").read_text(encoding="utf-8")


def test_no_chart_when_no_figure_has_a_goal_to_chart(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    runs = [report.Run("core", ["python", "bench_core.py", "--json", "x"], 1, 61.0, FIGURES[2:])]
    report.write_report(runs, HOST, tmp_path / "benchmarks.md")

    assert not (tmp_path / "benchmarks.svg").exists()
    assert "![" not in (tmp_path / "benchmarks.md").read_text(encoding="utf-8")
