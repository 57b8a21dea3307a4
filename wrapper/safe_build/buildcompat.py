"""The one module that uses what ``build`` does not promise to keep, behind a wall.

An isolated build with a cached environment (``envbuild``) runs build's own command-line steps
(console set-up, sdist checks and extraction, error reporting, the JSON report) and makes its
environments with build's ``DefaultIsolatedEnv``, so that it prints and does what
``python -m build`` prints and does. Those steps are private to build: ``build.__main__``'s
underscored helpers, ``build._ctx``, and ``DefaultIsolatedEnv.install(_fresh=True)``. Any build
release may rename them or change how they are called.

So nothing else imports them. At import this module checks that each name is there and accepts
the call safe-build makes (its parameters, by ``inspect.signature``). If anything is off,
:data:`PROBLEM` says what, :data:`CLI` is None, and safe-build builds as ``python -m build`` does,
in a fresh isolated environment through build's public ``main`` (correct, only slower), after
one warning naming build's version (:func:`fallback_warning`). The public names (``main``,
``main_parser``, ``ProjectBuilder``, ``DefaultIsolatedEnv`` itself) are imported where they are
used.

safe-build's own lines (a cache hit, its warnings, lock waits) take build's look through
:func:`styles` and :func:`styled`: build's colours, chosen by build's own rule (``NO_COLOR``,
``FORCE_COLOR``, whether the stream is a terminal); without build's helpers, no colours.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import build

from safe_build.apicheck import Call, unfit

if TYPE_CHECKING:
    from subprocess import CalledProcessError

    from build.env import Installer

Log = Callable[..., None]


@dataclass(frozen=True)
class Cli:
    """build's command-line helpers, as ``build.__main__.main`` uses them."""

    args_class: type  # _CliArgs: the namespace main_parser's arguments are parsed into
    setup: Callable[..., None]  # _setup_cli(*, verbosity): colours, warnings, the logger
    cprint: Callable[..., None]  # _cprint(fmt, msg, file=None): a line in build's colours
    error: Callable[..., NoReturn]  # _error(msg, code=1): "ERROR msg", then exit
    styles: Callable[[], Mapping[str, Mapping[str, str]]]  # _styles.get(): the colours per stream
    handle_build_error: Callable[..., AbstractContextManager[None]]  # build's error reporting
    resolve_config_settings: Callable[[Any], Mapping[str, object]]  # -C/--config-json as build reads them
    validate_sdist: Callable[[str], str]  # an sdist's top-level directory, or BuildException
    extract_sdist: Callable[..., AbstractContextManager[str]]  # the sdist unpacked, for the body
    write_report: Callable[[str, str, list[str]], None]  # --report's JSON
    natural_list: Callable[[list[str]], str]  # "a, b and c"
    log: Log  # _ctx.log(message, kind=...): a step, a subprocess line
    verbosity: Callable[[], int]  # _ctx.verbosity
    log_subprocess_error: Callable[[Any], None]  # a failed command and its output, in build's style
    init_colors: Callable[[], None]  # _init_colors(): build's colours for this process's streams


# How safe-build calls each private name, per module; the values are placeholders, never used.
_CALLS: dict[str, tuple[Call, ...]] = {
    "build.__main__": (
        ("_setup_cli", (), {"verbosity": 0}),
        ("_cprint", ("{}", "message"), {"file": None}),
        ("_error", ("message", 1), {}),
        ("_handle_build_error", (), {"env_dir": None, "sdist_extract_dir": None}),
        ("_resolve_config_settings", (object(),), {}),
        ("_validate_sdist_archive", ("a.tar.gz",), {}),
        ("_extract_sdist", ("a.tar.gz", "a"), {"extract_dir": None}),
        ("_write_report", ("report.json", "dist", []), {}),
        ("_natural_language_list", ([],), {}),
        ("_init_colors", (), {}),
    ),
    "build._ctx": (("log_subprocess_error", (object(),), {}),),
    # a new environment as build's command line makes one (with _fresh)
    "DefaultIsolatedEnv": (("install", (None, ["req"]), {"constraints": [], "_fresh": True}),),
}


def _problem(modules: Mapping[str, object]) -> str | None:
    """Why build's helpers in ``modules`` cannot be used as safe-build uses them, or None."""
    for where, calls in _CALLS.items():
        if (problem := unfit(modules[where], where, calls)) is not None:
            return problem
    main = modules["build.__main__"]
    if not isinstance(getattr(main, "_CliArgs", None), type):
        return "build.__main__._CliArgs is missing"
    if not callable(getattr(getattr(main, "_styles", None), "get", None)):
        return "build.__main__._styles is missing"
    for name in ("log", "verbosity"):  # served by the module's __getattr__
        try:
            getattr(modules["build._ctx"], name)
        except AttributeError:
            return f"build._ctx.{name} is missing"
    return None


def _load() -> tuple[Cli | None, str | None]:
    """build's helpers, or why they cannot be used."""
    try:
        import build.__main__ as main  # noqa: PLC0415
        from build import _ctx  # noqa: PLC0415
        from build.env import DefaultIsolatedEnv  # noqa: PLC0415
    except ImportError as error:
        return None, f"cannot import {error.name or error}"
    problem = _problem({"build.__main__": main, "build._ctx": _ctx, "DefaultIsolatedEnv": DefaultIsolatedEnv})
    if problem is not None:
        return None, problem

    def log(message: str, *, kind: tuple[str, ...] | None = None) -> None:
        _ctx.log(message, kind=kind)  # looked up at each call: _setup_cli sets the logger later

    cli = Cli(
        args_class=main._CliArgs,
        setup=main._setup_cli,
        cprint=main._cprint,
        error=main._error,
        styles=main._styles.get,
        handle_build_error=main._handle_build_error,
        resolve_config_settings=main._resolve_config_settings,
        validate_sdist=main._validate_sdist_archive,
        extract_sdist=main._extract_sdist,
        write_report=main._write_report,
        natural_list=main._natural_language_list,
        log=log,
        verbosity=lambda: int(_ctx.verbosity),
        log_subprocess_error=_ctx.log_subprocess_error,
        init_colors=main._init_colors,
    )
    return cli, None


CLI, PROBLEM = _load()


def _required() -> Cli:
    """build's helpers, for the cached environments, which are used only when they were found
    (``commands.build._env_store``, ``envbuild``)."""
    if CLI is None:
        raise RuntimeError(f"build's helpers are needed here, and {PROBLEM}")
    return CLI


def log(message: str, *, kind: tuple[str, ...] | None = None) -> None:
    """A console line through build's logger, as build's own steps print them."""
    _required().log(message, kind=kind)


NO_STYLES: Mapping[str, str] = dict.fromkeys(
    ("red", "green", "yellow", "bold", "dim", "underline", "reset"), ""
)


def styles(stream: TextIO | None = None) -> Mapping[str, str]:
    """build's colour codes for ``stream`` (stderr by default) in this process, as ``python -m build``
    chooses them: none with ``NO_COLOR``, all with ``FORCE_COLOR``, else where the stream is a
    terminal. Without build's helpers: none."""
    if CLI is None:
        return NO_STYLES
    with warnings.catch_warnings():  # "both NO_COLOR and FORCE_COLOR": build's frontend says so itself
        warnings.simplefilter("ignore")
        CLI.init_colors()
    return CLI.styles()["stdout" if stream is sys.stdout else "stderr"]


def styled(fmt: str, message: str = "", stream: TextIO | None = None) -> str:
    """``fmt`` (``{}`` for ``message``, ``{bold}``… for build's colours) as build's ``_cprint`` would
    print it to ``stream`` (stderr by default): the line, to be printed by the caller."""
    return fmt.format(message, **styles(stream or sys.stderr))


def log_subprocess_error(error: CalledProcessError) -> None:
    """A failed command and its output, as build shows them."""
    _required().log_subprocess_error(error)


def make_environment(path: str, installer: Installer, requirements: list[str], constraints: list[str]) -> str:
    """A new virtual environment at ``path`` holding ``requirements``, made by build's own
    ``DefaultIsolatedEnv`` as a fresh isolated build makes it; its interpreter.

    The environment stays: ``__exit__``, which would remove it, is never called. ``_fresh`` is
    what build's command line passes for a new environment (checked at import with the rest).
    """
    from build.env import DefaultIsolatedEnv  # noqa: PLC0415

    _required()
    isolated = DefaultIsolatedEnv(installer=installer, path=path)
    isolated.__enter__()
    isolated.install(requirements, constraints=constraints, _fresh=True)
    return isolated.python_executable


@functools.cache  # once per process, however many builds it runs (safe-pip builds several)
def fallback_warning() -> None:
    """Say that isolated builds make a fresh environment because of :data:`PROBLEM`."""
    from safe_build import progress  # noqa: PLC0415

    progress.labelled(
        "warning",
        f"build {build.__version__} is not one this safe-build knows ({PROBLEM}); "
        "isolated builds make a fresh environment each time, as python -m build does",
    )
