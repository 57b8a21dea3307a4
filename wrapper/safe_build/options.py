"""The command line: every option of ``python -m build``, with its own parser, plus safe-build's.

Using ``build``'s own parser means each build flag is accepted, spelled and checked exactly as
the installed ``build`` does. The parsed options are then forwarded to the ``build`` subprocess,
except the ones safe-build takes over: the source, the output directory and the report, which
point at private places until the artifacts are published.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import build
from build.__main__ import main_parser

import safe_build
from safe_build.config import ISOLATION_MODES, REMOTE_MODES
from safe_build.errors import SafeBuildError

DESCRIPTION = """\
Build Python packages like `python -m build`, safely when many builds run at once.

Takes every option of `python -m build`, with the same meaning. The project is copied
to a private snapshot and built there; the artifacts are then published into the
output directory atomically. The source tree is never written to (except with
--in-place), and no partial artifact is ever visible in the output directory.
"""

COMMANDS = """\
other commands:
  safe-build cache {dir,list,info,clean,prune}  the build cache (safe-build cache --help)
  safe-build cache remote {ls,info,prune}      the remote cache shared by a CI fleet
  safe-build venv PATH [virtualenv options]    a venv, made once however many ask at once
  safe-build pip ARGS, or safe-pip ARGS        the target environment's pip, under locks

A project directory named cache, venv or pip is built as ./cache, ./venv or ./pip.
"""

# Options that safe-build handles itself; everything else of build's is forwarded.
TAKEN_OVER = frozenset({"srcdir", "outdir", "report"})
# Forwarded path options are made absolute: build runs in a private working directory.
PATH_OPTIONS = {
    "sdist_extract_dir": "--sdist-extract-dir",
    "env_dir": "--env-dir",
}
# The constraints file is read once, by parse (a pipe can be read only once, and the key must name
# the very text the build uses): build gets a private copy of that text, see constraints_text.
CONSTRAINTS = "dependency_constraints_txt"
FLAG_OPTIONS = {
    "metadata": "--metadata",
    "no_isolation": "--no-isolation",
    "skip_dependency_check": "--skip-dependency-check",
}
OWN_OPTIONS = frozenset(
    {
        "isolation",
        "in_place",
        "include",
        "exclude",
        "lock_timeout",
        "cache_dir",
        "no_cache",
        "remote_cache",
        "remote_cache_mode",
        "refresh",
        "fresh_env",
    }
)


def parser() -> argparse.ArgumentParser:
    """``build``'s parser, renamed, with safe-build's version and options added."""
    parser = main_parser()
    parser.prog = "safe-build"
    parser.description = DESCRIPTION
    parser.epilog = COMMANDS
    for action in parser._actions:  # build's --version: keep the option, say whose version it is
        if "--version" in action.option_strings:
            action.version = f"safe-build {safe_build.__version__} (build {_build_version()})"  # type: ignore[attr-defined]
            action.help = "show safe-build's and build's versions and exit"
    own = parser.add_argument_group(
        "safe-build options",
        "also set by [tool.safe-build] in pyproject.toml and SAFE_BUILD_* variables; "
        "a flag wins (--include and --exclude add to the configured lists)",
    )
    own.add_argument(
        "--isolation",
        choices=ISOLATION_MODES,
        help="how the build is kept apart from the source tree: a private copy of the project (copy), "
        "of the git repository it lies in (repository: for versions and files from git or from "
        "above the project), or none (in-place); default auto: repository where the project's "
        "files show a need, else copy",
    )
    own.add_argument(
        "--in-place",
        action="store_true",
        help="same as --isolation in-place: build in the source tree itself, for projects that cannot "
        "be built from a copy; builds of one project then take turns (an exclusive project lock)",
    )
    own.add_argument(
        "--include",
        action="append",
        metavar="PATTERN",
        help="also copy the project-relative paths matching PATTERN into the snapshot, although git "
        "ignores them (e.g. generated files); repeatable, adds to the configured list",
    )
    own.add_argument(
        "--exclude",
        action="append",
        metavar="PATTERN",
        help="leave the project-relative paths matching PATTERN out of the snapshot; "
        "repeatable, adds to the configured list",
    )
    own.add_argument(
        "--lock-timeout",
        metavar="SECONDS",
        help="give up waiting for a busy lock after SECONDS (exit code 3); default 3600",
    )
    own.add_argument(
        "--cache-dir", metavar="DIR", help="where safe-build keeps its locks, cache and private directories"
    )
    own.add_argument("--no-cache", action="store_true", help="neither use nor fill the build cache")
    own.add_argument(
        "--refresh",
        action="store_true",
        help="build even if the cache has the artifacts, and replace them; also make the build "
        "environment again",
    )
    own.add_argument(
        "--fresh-env",
        action="store_true",
        help="install the build requirements into a new environment for this build, as python -m build "
        "does, instead of reusing a cached one",
    )
    own.add_argument(
        "--remote-cache",
        metavar="URL",
        help="also look builds up in, and store them to, a cache shared by several machines on "
        "S3-compatible object storage: s3://BUCKET/PREFIX (needs safe-build[s3]; see docs/remote-cache.md)",
    )
    own.add_argument(
        "--remote-cache-mode",
        choices=REMOTE_MODES,
        help="read-write (default) stores what is built here; read only looks up, for untrusted jobs "
        "such as pull requests",
    )
    return parser


def forwarded(args: argparse.Namespace) -> list[str]:
    """The ``python -m build`` options that reproduce ``args``, minus those safe-build takes over."""
    forward: list[str] = []
    if args.verbosity:
        forward += ["--verbose" if args.verbosity > 0 else "--quiet"] * abs(args.verbosity)
    for distribution in dict.fromkeys(args.distributions or ()):
        forward.append(f"--{distribution}")
    for dest, flag in FLAG_OPTIONS.items():
        if getattr(args, dest, False):
            forward.append(flag)
    for setting in getattr(args, "config_settings", None) or ():
        forward.append(f"--config-setting={setting}")  # '=' keeps settings that start with '-' intact
    if getattr(args, "config_json", None) is not None:
        forward.append(f"--config-json={args.config_json}")
    if getattr(args, "installer", None) not in (None, "pip"):
        forward.append(f"--installer={args.installer}")
    for dest, flag in PATH_OPTIONS.items():
        value = getattr(args, dest, None)
        if value is not None:
            forward.append(f"{flag}={os.path.abspath(value)}")
    return forward


def _refuse_unknown(args: argparse.Namespace, command_line: argparse.ArgumentParser) -> None:
    """A newer ``build`` may have options safe-build does not know: refuse rather than drop them."""
    known = TAKEN_OVER | OWN_OPTIONS | PATH_OPTIONS.keys() | FLAG_OPTIONS.keys() | {CONSTRAINTS}
    known |= {"verbosity", "distributions", "config_settings", "config_json", "installer"}
    for dest, value in vars(args).items():
        if dest not in known and value != command_line.get_default(dest):
            raise SafeBuildError(
                f"option {dest.replace('_', '-')!r} of this build version is not supported by safe-build "
                f"{safe_build.__version__}",
                hint="upgrade safe-build, or run python -m build for this one",
            )


def _check_installer(args: argparse.Namespace) -> None:
    """``--installer uv`` with no uv to be found: build would fail with a traceback once the snapshot
    was taken. uv is looked for where build's ``_UvBackend`` looks (not importable from build
    without reaching into its private module): the ``uv`` package, else ``$UV`` or ``uv`` on PATH."""
    if getattr(args, "installer", None) != "uv" or args.no_isolation:
        return
    try:
        import uv  # type: ignore[import-not-found]  # noqa: PLC0415 (an optional package)

        uv.find_uv_bin()
    except (ModuleNotFoundError, FileNotFoundError):
        if shutil.which(os.environ.get("UV") or "uv") is None:
            raise SafeBuildError(
                "--installer uv: no uv executable found (the uv package, $UV, or uv on PATH)",
                hint="install uv (pip install uv), or leave out --installer uv",
            ) from None


def constraints_text(args: argparse.Namespace) -> str | None:
    """The text of ``--dependency-constraints-txt`` as :func:`parse` read it, or None."""
    text: str | None = getattr(args, "constraints_text", None)
    return text


def _read_constraints(args: argparse.Namespace) -> None:
    """Read ``--dependency-constraints-txt`` once, now; one that cannot be read is bad input, said
    before any work."""
    path = getattr(args, CONSTRAINTS, None)
    if path is None:
        return
    try:
        args.constraints_text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise SafeBuildError(
            f"cannot read the constraints file {path} (--dependency-constraints-txt): {reason}",
            hint="name a readable pip constraints file",
        ) from None


def _build_version() -> str:
    return build.__version__  # not importlib.metadata: reading the distribution costs every run ~4 ms


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv``; refuse here what build would refuse only after the snapshot was taken."""
    command_line = parser()
    args = command_line.parse_args(list(argv))
    if args.in_place and args.isolation not in (None, "in-place"):
        command_line.error(f"argument --in-place: not allowed with argument --isolation {args.isolation}")
    _refuse_unknown(args, command_line)
    _check_installer(args)
    _read_constraints(args)
    if getattr(args, "config_json", None) is not None:
        try:
            settings = json.loads(args.config_json)
        except (json.JSONDecodeError, RecursionError) as error:  # nested too deeply: the latter
            raise SafeBuildError(
                f"Invalid JSON in --config-json: {error}", hint="pass a JSON object"
            ) from None
        if not isinstance(settings, dict):
            raise SafeBuildError(
                "--config-json must contain a JSON object", hint='pass e.g. {"key": "value"}'
            )
    return args
