"""``safe-build [SRCDIR] [build options]``: python -m build on a private snapshot, published atomically."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

from build.__main__ import main as build_main

from safe_build import config, isolation, options, project, publish, runner, snapshot, workdirs
from safe_build.errors import EXIT_BAD_INPUT, BuildFailed, SafeBuildError
from safe_build.locks import NamedLock


def run(argv: Sequence[str]) -> int:
    args = options.parse(argv)
    source = project.resolve(args.srcdir)
    settings = config.load(args, source.path if source.kind == "project" else None, source.pyproject)
    mode: isolation.Mode | None = None  # an sdist or wheel is extracted by build, privately
    if source.kind == "project":
        mode, why = isolation.choose(settings.isolation, source.path, source.pyproject)
        if args.verbosity > 0:
            for line in [f"Isolation: {mode} ({why})", *settings.explained()]:
                print(f"* {line}", file=sys.stderr)
    elif settings.isolation.value == "in-place":
        where = settings.isolation.origin
        raise SafeBuildError(f"isolation in-place ({where}) needs a project directory, not {args.srcdir}")
    outdir = Path(args.outdir).absolute() if args.outdir else source.default_outdir
    report = Path(args.report).absolute() if getattr(args, "report", None) else None
    if not args.metadata:
        publish.check_output_dir(outdir)
    if report is not None:
        publish.check_output_dir(report.parent)
    cache = settings.cache_dir.value
    lock = _project_lock(cache, source, settings.lock_timeout.value)
    with workdirs.private_dir(cache) as work:
        prepared = _prepared_source(
            args, source, outdir, work, lock, in_place=mode == "in-place", selection=settings.selection
        )
        with prepared as src:
            _run_build(args, src, work, report is not None)
        built = [publish.publish_file(artifact, outdir) for artifact in _artifacts(work / "out")]
        if report is not None:
            _publish_report(work / "report.json", report, outdir)
    if args.verbosity >= -1 and built:
        print(f"Successfully built {_natural_list([path.name for path in built])}")
    return 0


def _project_lock(cache: Path, source: project.Source, timeout: float) -> NamedLock:
    digest = hashlib.sha256(os.fsencode(source.path)).hexdigest()[:16]
    return NamedLock(
        cache / "locks" / f"project-{source.path.name}-{digest}.lock",
        what="project",
        subject=source.path,
        timeout=timeout,
    )


@contextlib.contextmanager
def _prepared_source(
    args: argparse.Namespace,
    source: project.Source,
    outdir: Path,
    work: Path,
    lock: NamedLock,
    *,
    in_place: bool,
    selection: config.Selection,
) -> Iterator[Path]:
    """The path to hand to ``build``, held ready (and locked where needed) for the build's duration.

    A snapshot is taken under the project lock held shared, so that it never sees the tree
    half-way through an in-place build, which holds the lock exclusive for its whole run.
    """
    if source.kind != "project":
        yield source.path  # an sdist or wheel is only read; build extracts it privately
    elif in_place:
        with lock.hold("exclusive"):
            yield source.path
    else:
        started = time.monotonic()
        with lock.hold("shared"):
            copy = snapshot.take(
                source.path,
                work / "src" / source.path.name,
                exclude=_inside(outdir, source.path),
                selection=selection,
            )
        if args.verbosity > 0:
            print(
                f"* Copied {copy.files} files and {copy.links} links (listed by {copy.listed_by}) "
                f"to a private snapshot in {time.monotonic() - started:.2f}s",
                file=sys.stderr,
            )
        yield copy.root


def _inside(path: Path, root: Path) -> list[str]:
    """``path`` relative to ``root`` as a one-item list if it lies inside ``root``, else empty."""
    real = os.path.realpath(path)
    if real.startswith(str(root) + os.sep):
        return [os.path.relpath(real, root).replace(os.sep, "/")]
    return []


def _run_build(args: argparse.Namespace, src: Path, work: Path, report: bool) -> None:
    """Run ``python -m build`` on ``src`` into ``work/out``; raise with its output shown if it fails."""
    arguments = options.forwarded(args)
    if not args.metadata:
        arguments.append(f"--outdir={work / 'out'}")
    if report:
        arguments.append(f"--report={work / 'report.json'}")
    arguments.append(str(src))
    (work / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(work / "tmp")}  # build's isolated environments die with work
    if args.verbosity > 0:
        output = runner.Output()
    elif args.metadata:
        output = runner.Output(stdout=work / "stdout.log", stderr=work / "stderr.log")
    else:
        output = runner.Output(stdout=work / "build.log")
    code = runner.run(partial(build_main, arguments, "python -m build"), cwd=work, env=env, output=output)
    if code == 0:
        if args.metadata and output.stdout is not None:
            runner.replay(output.stdout, sys.stdout)
        return
    captured = [path for path in (output.stderr, output.stdout) if path is not None]
    for path in captured:
        runner.replay(path)
    error = _last_error_line(captured)
    failure = BuildFailed if code != EXIT_BAD_INPUT else SafeBuildError
    raise failure(
        f"building {args.srcdir} failed: {error}"
        if error
        else f"building {args.srcdir} failed (exit code {code})",
        hint="see the build output above; nothing was written to the output directory",
        path=src,
    )


def _last_error_line(logs: Sequence[Path]) -> str:
    """The frontend's own one-line summary of what went wrong, if it printed one."""
    found = ""
    for log in logs:
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("ERROR "):
                found = line.removeprefix("ERROR ").strip()
            elif ": error: " in line:
                found = line.split(": error: ", 1)[1].strip()
    return found


def _artifacts(private_out: Path) -> list[Path]:
    """What build produced, sdists first (the order build reports them in)."""
    if not private_out.is_dir():
        return []
    files = [path for path in private_out.iterdir() if path.is_file() and not path.name.startswith(".")]
    return sorted(files, key=lambda path: (not path.name.endswith(".tar.gz"), path.name))


def _publish_report(private_report: Path, report: Path, outdir: Path) -> None:
    """Write build's JSON report where the user asked, pointing at the published artifacts."""
    data = json.loads(private_report.read_text(encoding="utf-8"))
    for artifact in data.get("artifacts", []):
        artifact["path"] = str(outdir / artifact["name"])
    publish.write_text_atomically(report, json.dumps(data, indent=2) + "\n")


def _natural_list(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
