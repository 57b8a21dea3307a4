"""Run every benchmark of this folder and write one report: a Markdown table and a chart.

Each script runs safe-build and its yardstick (plain ``python -m build``, pip, ``cp -a``; and
``uv build``, ``uv pip`` where uv is installed) side by side and prints its own report; this
runs them one after the other, collects their figures through ``--json`` and writes
``docs/benchmarks.md`` with the chart beside it (``docs/benchmarks.svg``). Needs the ``bench``
extra (matplotlib)::

    python bench/report.py                      # everything: about 45 minutes on 2 quiet cores
    python bench/report.py --quick              # smoke run: few rounds, small trees, so labelled
    python bench/report.py --only cache --only repository
    python bench/report.py --tree-dir /dev/shm  # large trees on a tmpfs, keeping the disk out

Timings are only as good as the machine is quiet: the report shows, for every figure, how many
cores other processes kept busy while it was measured. A script that fails is reported as such
and the others still run; the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench_core import note, source_revision, tool_version
from figures import Figure, read_json

HERE = Path(__file__).resolve().parent
# name: (script, arguments of a smoke run); a full run uses each script's own defaults
BENCHES = {
    "core": ("bench_core.py", ["--quick"]),
    "cache": ("bench_cache.py", ["--rounds", "2"]),
    "cache_key": ("bench_cache_key.py", ["--sizes", "2000", "--rounds", "2"]),
    "envs": ("bench_envs.py", ["--rounds", "1"]),
    "pip": ("bench_pip.py", ["--quick"]),
    "repository": ("bench_repository.py", ["--rounds", "2"]),
    "remote": ("bench_remote.py", ["--rounds", "2"]),
    "real": ("bench_real.py", ["--rounds", "1"]),
}
TAKES_TREE_DIR = ("core", "cache_key")
VERSIONS = ("safe-build", "build", "pip", "setuptools", "virtualenv")


@dataclass
class Run:
    """One script's run: how it went, and what it measured."""

    name: str
    command: list[str]
    returncode: int = 0
    seconds: float = 0.0
    figures: list[Figure] = field(default_factory=list)


@dataclass(frozen=True)
class Machine:
    """What the numbers depend on, so that two reports can be compared sensibly."""

    date: str
    facts: dict[str, str]
    cores: int
    quick: bool


def find_uv() -> str | None:
    """uv on PATH, or installed beside this interpreter (``pip install uv`` into its venv).

    The scripts look for uv on PATH, so one found beside the interpreter is put on it.
    """
    beside = Path(sys.executable).parent
    if not shutil.which("uv") and (beside / "uv").exists():
        os.environ["PATH"] = os.pathsep.join([str(beside), os.environ.get("PATH", "")])
    return shutil.which("uv")


def command(name: str, args: argparse.Namespace, output: Path) -> list[str]:
    script, quick = BENCHES[name]
    arguments = list(quick) if args.quick else []
    if args.tree_dir and name in TAKES_TREE_DIR:
        arguments += ["--tree-dir", args.tree_dir]
    return [sys.executable, str(HERE / script), *arguments, "--json", str(output)]


def run(name: str, args: argparse.Namespace, scratch: Path) -> Run:
    """The script's own report goes to this terminal as it runs; its figures come back as JSON."""
    output = scratch / f"{name}.json"
    done = Run(name, command(name, args, output))
    note(f"running {name}: {' '.join(done.command[1:])}")
    started = time.perf_counter()
    done.returncode = subprocess.run(done.command, check=False).returncode
    done.seconds = time.perf_counter() - started
    if output.exists():
        done.figures = read_json(output)
    return done


def machine(uv: str | None, *, quick: bool, loads: tuple[float, float]) -> Machine:
    facts = {
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "Python": platform.python_version(),
    }
    facts |= {name: importlib.metadata.version(name) for name in VERSIONS}
    facts["safe-build"] += f" (source: {source_revision()})"
    facts["uv"] = tool_version([uv, "--version"]) if uv else "not installed"
    facts["load average (1 min)"] = f"{loads[0]:.2f} before, {loads[1]:.2f} after"
    now = datetime.datetime.now(datetime.timezone.utc)
    return Machine(now.strftime("%Y-%m-%d %H:%M UTC"), facts, os.cpu_count() or 1, quick)


# --------------------------------------------------------------------------- the report


def number(value: float | None, unit: str = "") -> str:
    return "" if value is None else f"{value:.3g}{unit}"


def goal_text(figure: Figure) -> str:
    if figure.goal is None:
        return "none"
    bound = "" if figure.goal == 0 else "≥ " if figure.at_least else "≤ "  # a count's goal is just 0
    return f"{bound}{figure.goal:g}{figure.unit}"


def met_text(figure: Figure) -> str:
    return {None: "", True: "met", False: "**missed**"}[figure.met]


def load_text(load: float | None, cores: int) -> str:
    """Other processes' cores, flagged past a quarter of the machine as bench_core judges it."""
    if load is None:
        return "?"
    return f"{load:.2f}" + (" (busy)" if load > 0.25 * cores else "")


def figure_row(figure: Figure, cores: int) -> str:
    cells = [
        figure.bench,
        figure.what.replace("|", "\\|"),
        number(figure.plain, figure.measured),
        number(figure.safe, figure.measured),
        number(figure.uv, figure.measured),
        number(figure.value, figure.unit),
        goal_text(figure),
        met_text(figure),
        load_text(figure.load, cores),
    ]
    return "| " + " | ".join(cells) + " |"


def markdown(runs: Sequence[Run], host: Machine, chart: str | None) -> str:
    lines = ["# Benchmarks", ""]
    if host.quick:
        lines += [
            "> **Quick smoke run** (`python bench/report.py --quick`): a few rounds and small trees,",
            "> to check that every script and the report work. These are not the project's figures:",
            "> run `python bench/report.py` on a quiet machine for those.",
            "",
        ]
    minutes = sum(done.seconds for done in runs) / 60
    lines += [f"Made by `python bench/report.py` on {host.date}, in {minutes:.0f} minutes.", ""]
    lines += ["## Machine", "", "| | |", "| --- | --- |", f"| cores | {host.cores} |"]
    lines += [f"| {name} | {value} |" for name, value in host.facts.items()]
    lines += [
        "",
        "## Figures",
        "",
        "Each script under `bench/` runs safe-build and its yardstick side by side, taking turns; its",
        "docstring explains the method. *yardstick* is plain `python -m build` or pip unless the row",
        "names another; *figure* is what the goal is about: safe-build's time over the yardstick's",
        "(lower is better), a speedup (x, higher is better), seconds or a count. *busy* is how many",
        f"of the {host.cores} cores other processes kept busy while the figure was measured: past a",
        "quarter of them, its timings say more about the machine than about safe-build.",
        "",
        "| benchmark | what | yardstick | safe-build | uv | figure | goal | met? | busy |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [figure_row(figure, host.cores) for done in runs for figure in done.figures]
    if chart:
        lines += ["", f"![Each figure with a goal, against its goal]({chart})"]
    lines += ["", "## Runs", "", "| benchmark | command | exit code | minutes |", "| --- | --- | --- | --- |"]
    for done in runs:
        shown = " ".join(["python", f"bench/{Path(done.command[1]).name}", *done.command[2:-2]])
        lines.append(f"| {done.name} | `{shown}` | {done.returncode} | {done.seconds / 60:.1f} |")
    return "\n".join(lines) + "\n"


def write_report(runs: Sequence[Run], host: Machine, out: Path) -> None:
    """The Markdown report and, beside it, its chart (an SVG of the same name) if it has any bars."""
    from chart import charted, draw  # noqa: PLC0415  # matplotlib only here: the table needs none of it

    out.parent.mkdir(parents=True, exist_ok=True)
    figures = [figure for done in runs for figure in done.figures]
    chart = out.with_suffix(".svg") if charted(figures) else None
    if chart:
        title = "Quick smoke run: not the project's figures" if host.quick else f"safe-build, {host.date}"
        draw(figures, chart, title)
    out.write_text(markdown(runs, host, chart.name if chart else None), encoding="utf-8")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke run: few rounds, small trees")
    parser.add_argument("--only", action="append", choices=BENCHES, help="run this benchmark (repeatable)")
    parser.add_argument("--out", default=str(HERE.parent / "docs" / "benchmarks.md"), help="the report")
    parser.add_argument("--tree-dir", help="where bench_core and bench_cache_key make their large trees")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if importlib.util.find_spec("matplotlib") is None:  # say so now, not after the benchmarks' minutes
        raise SystemExit("the report needs matplotlib: pip install 'safe-build[bench]'")
    uv = find_uv()
    before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="safe-build-report-") as scratch:
        runs = [run(name, args, Path(scratch)) for name in args.only or BENCHES]
    host = machine(uv, quick=args.quick, loads=(before, os.getloadavg()[0]))
    write_report(runs, host, Path(args.out))
    note(f"wrote {args.out} and its chart")
    return 1 if any(done.returncode for done in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
