"""Isolated builds in cached environments: build's own steps, with the environment taken from a store.

The forked build child calls :func:`main` where it would call build's ``main``: the same arguments,
steps, console messages and artifacts. Only the environment is not made afresh: the backend runs with
a cached environment's interpreter, as build runs it in its own isolated environment
(``ProjectBuilder.from_isolated_env``), so it sees exactly the build requirements. Requirements the
backend asks for at build time that the environment lacks select another cached environment, keyed on
the union, as build would have installed them into its fresh one.

build's command-line helpers (console set-up, sdist checks and extraction, error reporting, report)
are used as they are, so that nothing here drifts from what ``python -m build`` prints and does.
They are private to build, so they come through :mod:`safe_build.buildcompat`, and this module is
used only when that found them all (``buildcompat.CLI``); else builds go to build's own ``main``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import cast

import pyproject_hooks
from build import ConfigSettingsType, DistributionType, ProjectBuilder, RunnerType
from build.__main__ import main as build_main
from build.__main__ import main_parser
from build.env import Installer

from safe_build.buildcompat import Cli
from safe_build.buildenvs import EnvStore
from safe_build.errors import LockTimeout


def main(arguments: Sequence[str], envs: EnvStore, cli: Cli, prog: str | None = None) -> None:
    """``python -m build`` with ``arguments``, isolated builds taking their environments from ``envs``;
    ``cli``: build's command-line helpers (``buildcompat.CLI``).

    What needs no cached environment, or a private one, is build's own ``main`` unchanged:
    ``--no-isolation``, ``--env-dir``, ``--metadata``, a wheel as the source, and the refusal to
    build an sdist from an sdist. Exits as build's ``main`` does (SystemExit with its messages),
    but with the exit code of :class:`LockTimeout` when an environment's lock stayed busy.
    """
    parser = main_parser()
    if prog:
        parser.prog = prog
    args = parser.parse_args(arguments, cli.args_class())
    is_file = os.path.isfile(args.srcdir)
    sdist_input = is_file and args.srcdir.lower().endswith(".tar.gz")
    if (
        args.no_isolation
        or args.env_dir is not None
        or args.metadata
        or (is_file and args.srcdir.lower().endswith(".whl"))
        or (sdist_input and "sdist" in (args.distributions or ()))
    ):
        build_main(arguments, prog)
        return
    cli.setup(verbosity=args.verbosity)
    if args.outdir is not None:
        outdir = args.outdir
    elif sdist_input:
        outdir = os.path.dirname(os.path.abspath(args.srcdir))
    else:
        outdir = os.path.join(args.srcdir, "dist")
    # JSON settings pass through to the backend as they do in build
    config_settings = cast(ConfigSettingsType, cli.resolve_config_settings(args))
    with cli.handle_build_error(env_dir=None, sdist_extract_dir=args.sdist_extract_dir):
        constraints = ""
        if args.dependency_constraints_txt:
            constraints = Path(args.dependency_constraints_txt).read_text(encoding="utf-8").strip()
        try:
            built = build(
                Path(args.srcdir),
                Path(outdir),
                args.distributions,
                config_settings,
                envs,
                cli=cli,
                installer=args.installer,
                constraints=constraints,
                sdist_extract_dir=None if args.sdist_extract_dir is None else Path(args.sdist_extract_dir),
            )
        except LockTimeout as timeout:  # not a failed build: the exit code says so
            cli.error(str(timeout), timeout.exit_code)
        names = [path.name for path in built]
        if args.report is not None:
            cli.write_report(args.report, outdir, names)
        if cli.verbosity() >= -1 and built:
            styles = cli.styles()["stdout"]
            artifacts = cli.natural_list(
                ["{underline}{}{reset}{bold}{green}".format(name, **styles) for name in names]
            )
            cli.cprint("{bold}{green}Successfully built {}{reset}", artifacts)


def build(
    srcdir: Path,
    outdir: Path,
    distributions: Sequence[DistributionType] | None,
    config_settings: ConfigSettingsType | None,
    envs: EnvStore,
    *,
    cli: Cli,
    installer: Installer = "pip",
    constraints: str = "",
    sdist_extract_dir: Path | None = None,
) -> list[Path]:
    """Build ``distributions`` of ``srcdir`` (a project or an sdist) into ``outdir``; return the artifacts.

    ``distributions`` None is build's default: an sdist, then a wheel from that sdist (from an sdist:
    a wheel). Raises what build raises (``BuildException``, ``BuildBackendException``,
    ``FailedProcessError``), and ``LockTimeout`` when an environment's lock stays busy. Console
    messages go through build's logger, as :func:`main` sets it up.
    """
    step = partial(
        _build_one,
        outdir=outdir,
        config_settings=config_settings,
        envs=envs,
        cli=cli,
        installer=installer,
        constraints=constraints,
    )
    extracted = partial(_extracted, cli)
    if srcdir.is_file() and srcdir.name.lower().endswith(".tar.gz"):
        with extracted(srcdir, sdist_extract_dir) as tree:
            return [step(tree, distribution) for distribution in distributions or ["wheel"]]
    if distributions:
        return [step(srcdir, distribution) for distribution in distributions]
    sdist = step(srcdir, "sdist")
    with extracted(sdist, sdist_extract_dir) as tree:
        cli.log("Building wheel from sdist", kind=("step",))
        return [sdist, step(tree, "wheel")]


@contextlib.contextmanager
def _extracted(cli: Cli, sdist: Path, extract_dir: Path | None) -> Iterator[Path]:
    with cli.extract_sdist(sdist, cli.validate_sdist(str(sdist)), extract_dir=extract_dir) as tree:
        yield Path(tree)


def _build_one(
    srcdir: Path,
    distribution: DistributionType,
    *,
    outdir: Path,
    config_settings: ConfigSettingsType | None,
    envs: EnvStore,
    cli: Cli,
    installer: Installer,
    constraints: str,
) -> Path:
    """build's ``_build`` for one distribution, in the cached environment its requirements select."""
    runner: RunnerType = (
        pyproject_hooks.quiet_subprocess_runner
        if cli.verbosity() < 0
        else pyproject_hooks.default_subprocess_runner
    )
    requirements = ProjectBuilder(srcdir).build_system_requires  # reads pyproject.toml, runs nothing
    environment = partial(envs.env, installer=installer, constraints=constraints)
    with contextlib.ExitStack() as held:
        env = held.enter_context(environment(requirements))
        builder = ProjectBuilder.from_isolated_env(env, srcdir, runner)
        extra = builder.get_requires_for_build(distribution, config_settings)
        if not all(env.satisfies(requirement) for requirement in extra):
            held.close()  # one environment at a time; the shared one gets nothing installed
            env = held.enter_context(environment(requirements | extra))
            builder = ProjectBuilder.from_isolated_env(env, srcdir, runner)
        if versions := env.installed_versions(requirements | extra):
            cli.log(
                "Installed build dependency versions:\n"
                + "\n".join(f"- {name}=={version}" for name, version in sorted(versions.items())),
                kind=("step",),
            )
        return Path(builder.build(distribution, outdir, config_settings))
