"""The report's chart: each figure that has a goal, as a bar against its goal's marker.

Figures differ in kind (time ratios near 1, speedups near 10, seconds), so the axis is
logarithmic, and each bar carries its own goal rather than sharing one line. Failure counts,
whose goal is zero, cannot stand on a logarithmic axis: the table has them.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

from matplotlib import rc_context
from matplotlib.figure import Figure as Canvas
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from figures import Figure

MET, MISSED, GOAL = "#2e7d32", "#c62828", "#212121"


def charted(figures: Sequence[Figure]) -> list[Figure]:
    """The figures the chart can show: those with a goal above zero, and a value above zero."""
    return [figure for figure in figures if figure.goal and figure.value > 0]


def label(figure: Figure) -> str:
    return textwrap.fill(f"{figure.bench}: {figure.what}", 60, max_lines=2, placeholder=" …")


def draw(figures: Sequence[Figure], path: Path, title: str) -> None:
    """Write the chart to ``path``: SVG or PNG, by its suffix. Uses no pyplot, so no GUI backend."""
    shown = charted(figures)[::-1]  # barh draws from the bottom up; the table reads top down
    canvas = Canvas(figsize=(11, 1.2 + 0.55 * len(shown)), layout="constrained")
    axes = canvas.subplots()
    rows = range(len(shown))
    axes.barh(rows, [f.value for f in shown], color=[MET if f.met else MISSED for f in shown], height=0.6)
    for row, figure in zip(rows, shown, strict=True):
        assert figure.goal is not None
        axes.vlines(figure.goal, row - 0.42, row + 0.42, colors=GOAL, linewidth=2.5)
        bound = "≥" if figure.at_least else "≤"
        text = f" {figure.value:.3g}{figure.unit} (goal {bound} {figure.goal:g}{figure.unit})"
        axes.text(max(figure.value, figure.goal), row, text, va="center", fontsize=8)
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 0.5, not 5e-1
    axes.set_yticks(list(rows), [label(figure) for figure in shown], fontsize=8)
    axes.set_xlabel("safe-build's figure (ratio to the yardstick, speedup, or seconds), log scale")
    axes.margins(x=0.35)
    axes.set_title(title, fontsize=10)
    legend = [Patch(color=MET, label="goal met"), Patch(color=MISSED, label="goal missed")]
    legend.append(Patch(color=GOAL, label="goal"))
    canvas.legend(handles=legend, loc="outside lower center", ncols=3, fontsize=8)
    with rc_context({"svg.fonttype": "none"}):  # text stays text: searchable, and a smaller file
        canvas.savefig(path, metadata={"Date": None} if path.suffix == ".svg" else None)
