"""``safe-pip ARGS`` (also ``safe-build pip ARGS``): the target environment's own pip, run under locks.

pip takes no locks: two pips installing into one environment, or one installing while another
purges the cache, break each other, and pip builds a local project directory inside it. safe-pip
runs the real pip with the arguments unchanged, and around it:

- holds pip's cache lock, shared, for every command that uses the cache, and exclusive for
  ``pip cache purge|remove``;
- builds each local project directory that an install or wheel command names through safe-build
  (a private snapshot), and hands pip that wheel in a tiny private project (see ``_shim``);
- holds the project lock of every editable project, exclusive: pip builds those in place;
- holds the environment lock, exclusive, for every command that changes an environment;
- makes what pip prints and records name the user's directories, never the shims: pip's output
  goes through streams that replace the shims' paths and URLs (in the gated pip, so it stays on the
  terminal), and pip writes its ``--report`` privately, from which safe-pip writes the user's file
  with the shims' URLs replaced (rewritten in place if a variable or configuration names it).

pip itself is started first (``pipgate``): it reads the command line, its requirement files and
its configuration with its own parsers and tells safe-pip what they ask for, then waits at a gate
until the locks are held; it keeps them until it exits. If pip's reading ended pip (a usage error,
``--version``), pip's output is printed and pip does not run; if it could not be had, every lock
is taken and nothing is built by safe-build. Requirement files from pipes and FIFOs, read once by
that pip, reach it again as private copies.

Locks are taken in the one order of ``state.Rank``: pip's cache, then what the builds take
(safe-build's cache, a key, a project), then the editable projects, then the environment; the
builds happen before any project lock is held. So no two safe-pips wait for each other in a
circle. Each lock is on the thing itself (pip's cache directory, the project, the install
location), so commands with different safe-build cache directories still take turns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safe_build import config, coremetadata, netfs, pipargs, pipgate, publish, runner, workdirs
from safe_build import state as states
from safe_build.errors import SafeBuildError, Terminated
from safe_build.locks import Mode, NamedLock
from safe_build.pipargs import Description

CHANGING = frozenset({"install", "uninstall"})  # commands that change an environment
USING_CACHE = frozenset({"install", "download", "wheel", "lock", "index", "list", "cache"})
CLEARING_CACHE = frozenset({"purge", "remove"})  # ``pip cache`` subcommands that delete entries
BUILDING = frozenset({"install", "wheel"})  # commands whose local projects safe-build builds
# the settings of pip's command line that pip passes on to the builds it runs, as variables
BUILD_VARIABLES = {
    "--index-url": "PIP_INDEX_URL",
    "--extra-index-url": "PIP_EXTRA_INDEX_URL",
    "--find-links": "PIP_FIND_LINKS",
    "--trusted-host": "PIP_TRUSTED_HOST",
    "--no-index": "PIP_NO_INDEX",
    "--cache-dir": "PIP_CACHE_DIR",
    "--no-cache-dir": "PIP_NO_CACHE_DIR",
}
LISTS = ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_TRUSTED_HOST")  # pip adds these to the variable's
# what ``safe-pip --help`` says before pip's own help
HELP = """\
safe-pip ARGS runs the target environment's own pip with ARGS, unchanged (its options, output and
exit code), and adds safe-build's locks and builds around it: it holds the environment's lock for
install and uninstall, pip's cache lock, and the project lock of each editable project, so pips on
one environment, cache or project take turns; and it builds each local project directory it is given
(./pkg, file:///.../pkg, name @ file:///..., in -r and -c files too) through safe-build, from a
private snapshot, never in its tree. The target is the environment of the Python that runs safe-pip,
as VENV/bin/pip works on VENV, or --python. See docs/safe-pip.md in safe-build's source.
pip's own help follows.
"""
_ENVIRONMENT_QUESTION = (
    "import importlib.util, json, sys; print(json.dumps([sys.prefix, bool(importlib.util.find_spec('pip'))]))"
)
_SCHEME_QUESTION = """\
import json, os, sys, sysconfig
kind, base = sys.argv[1:]
if kind == "user":
    preferred = getattr(sysconfig, "get_preferred_scheme", None)
    paths = sysconfig.get_paths(preferred("user") if preferred else os.name + "_user")
elif kind == "prefix":
    paths = sysconfig.get_paths(vars={"base": base, "platbase": base})
else:
    paths = sysconfig.get_paths()
print(json.dumps(sorted({paths["purelib"], paths["platlib"]})))
"""
_SHIM_BACKEND = '''\
"""Hands over the wheel that safe-build built from a private snapshot of the project."""
import os
import shutil
import zipfile

WHEEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), {wheel!r})


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    with zipfile.ZipFile(WHEEL) as wheel:
        names = [name for name in wheel.namelist() if name.split("/")[0].endswith(".dist-info")]
        wheel.extractall(metadata_directory, names)
    return names[0].split("/")[0]


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    shutil.copy(WHEEL, wheel_directory)
    return os.path.basename(WHEEL)
'''
_SHIM_PYPROJECT = """\
[build-system]
requires = []
build-backend = "_safe_build_prebuilt"
backend-path = ["."]
"""


@dataclass(frozen=True)
class Target:
    """The Python whose environment pip works on, and the pip that does the work."""

    interpreter: str  # the Python that runs pip: the target's, or ours when the target has no pip
    leading: tuple[str, ...]  # pip arguments before the user's: ("--python", target) when ours runs
    env: Mapping[str, str]
    python: str  # the target
    prefix: Path | None  # its real ``sys.prefix``; None if there is no such Python (pip says so)


@dataclass(frozen=True)
class Shim:
    """A local project built by safe-build, and the private project that hands pip its wheel."""

    project: pipargs.LocalProject
    directory: Path
    dist_info: str  # the name of the wheel's .dist-info directory
    # the wheel's Requires-Dist lines that name a local project by path, each with that project
    dependencies: tuple[tuple[bytes, pipargs.LocalProject], ...] = ()
    # those lines as the wheel has them now, naming the dependencies' shims: (shim's, original)
    repointed: tuple[tuple[bytes, bytes], ...] = ()


def run(argv: Sequence[str], gate: pipgate.Gate | None = None) -> int:
    """Run pip with ``argv`` under the locks it needs; ``gate``: a pip started early, if it fits.

    The pip that runs is the one that read the command line: if the early pip turns out to be
    another one (pip's ``python`` setting names another interpreter; the target has no pip of its
    own), the right one is started and asked.
    """
    # what needs no answer from pip is done while pip imports itself: the usual target, our state
    named = _python_named(argv)
    try:
        target: Target | None = _find_target(named)
    except SafeBuildError:
        target = None  # pip's ``python`` setting may name one: it says below
    state = _early_state(argv)
    guessed = Description.from_json(gate.description()) if gate is not None else Description("unknown")
    if guessed.status == "parsed" and guessed.python != named:
        named, target = guessed.python, None
    if target is None:
        target = _find_target(named)
    arguments = [*target.leading, *argv]
    with contextlib.ExitStack() as started:
        if gate is None or not gate.fits(target.interpreter, target.env, arguments):
            if gate is not None:
                gate.close()  # the wrong pip: called off now, not kept waiting while the right one runs
            if any(file.piped for file in guessed.files):  # read by the wrong pip: the right one gets copies
                state = state or states.at(config.cache_dir(), lock_timeout=config.lock_timeout(None))
                copies = started.enter_context(workdirs.private_dir(state))
                piped = [file for file in guessed.files if file.piped]
                rewritten = pipargs.rewritten(argv, None, piped, {}, copies)
                arguments = [*target.leading, *rewritten]
            gate = pipgate.Gate(target.interpreter, target.env, arguments)
            started.callback(gate.close)
            described = Description.from_json(gate.description())
        else:
            described = guessed
        if described.status == "exited" or target.prefix is None:
            if _is_help(gate.description()):
                sys.stdout.write(HELP)
            return _run_pip(gate, arguments, [])  # pip prints its error, or --version, --help…
        return _run_locked(described, arguments, target, target.prefix, gate, state=state)


def _is_help(found: Mapping[str, Any] | None) -> bool:
    """Did pip's reading end in its help (``--help``, ``-h``, of pip or of a command)?"""
    if found is None or found.get("status") != "exited" or found.get("code") != 0:
        return False
    printed = found.get("stdout")
    return isinstance(printed, str) and printed.lstrip().startswith("Usage:")


def _early_state(argv: Sequence[str]) -> states.State | None:
    """safe-build's state, if the command line looks like one that takes locks (a guess: the state is
    made later if need be); None on any problem, which is then reported when the state is needed."""
    if not any(word in CHANGING or word in USING_CACHE for word in argv):
        return None
    try:
        return states.at(config.cache_dir(), lock_timeout=config.lock_timeout(None))
    except SafeBuildError:
        return None


def _python_named(argv: Sequence[str]) -> str | None:
    """``--python`` or ``PIP_PYTHON``, when pip could not say (a guess: pip reads it if it runs)."""
    return pipgate.python_option(argv) or os.environ.get("PIP_PYTHON")


def _run_locked(
    described: Description,
    arguments: Sequence[str],
    target: Target,
    prefix: Path,
    gate: pipgate.Gate,
    *,
    state: states.State | None = None,
) -> int:
    """pip under the locks the command needs, its local projects built first.

    If pip's reading of the command line is unknown, every lock it could need is taken: pip's cache
    (exclusive) and the environment; nothing is built through safe-build.
    """
    if state is None:
        state = states.at(config.cache_dir(), lock_timeout=config.lock_timeout(None))
    unknown = described.status != "parsed"
    command = described.command
    location = described.location if command == "install" else pipargs.Location()
    descriptors: list[int] = []  # of the locks held, for pip to keep
    with contextlib.ExitStack() as held:
        pip_cache = _fallback_cache_dir() if unknown else described.cache_dir
        if (unknown or command in USING_CACHE) and pip_cache is not None:
            lock = _pip_cache_lock(state, pip_cache)
            mode: Mode = "exclusive" if unknown else _cache_mode(described)
            descriptors.append(held.enter_context(lock.hold(mode)))
        requirements = pipargs.requirements(described) if command in BUILDING else None
        shims: list[Shim] = []
        work: Path | None = None
        if requirements is not None and requirements.projects:
            work = held.enter_context(workdirs.private_dir(state))
            shims = _build(requirements, described, work)
        if any(file.piped for file in described.files) or shims:
            work = work or held.enter_context(workdirs.private_dir(state))
            copies = work / "requirements"
            copies.mkdir(mode=0o700)
            directories = {shim.project.directory: shim.directory for shim in shims}
            arguments = pipargs.rewritten(arguments, requirements, described.files, directories, copies)
        editables = sorted(
            {Path(os.path.realpath(path)) for path in requirements.editables} if requirements else ()
        )
        for project in editables:  # sorted: two commands naming the same projects lock them in one order
            descriptors.append(held.enter_context(state.project_lock(project).hold("exclusive")))
        if unknown or command in CHANGING:
            lock = _install_lock(state, target.python, prefix, location)
            descriptors.append(held.enter_context(lock.hold("exclusive")))
        report = _report(described) if shims else None
        private_report = None
        if report is not None and work is not None:
            private_report, arguments = _private_report(described, report, arguments, work)
        code = _run_pip(gate, arguments, descriptors, _shown(shims))
        if code == 0 and shims and command == "install" and not described.dry_run:
            _record_origins(shims, _install_dirs(target.python, location))
        if report is not None:
            _write_report(private_report or report, report, shims)
        return code


def _fallback_cache_dir() -> Path | None:
    """pip's cache directory when pip could not say: its variables, else its default place."""
    if os.environ.get("PIP_NO_CACHE_DIR"):
        return None
    named = os.environ.get("PIP_CACHE_DIR")
    if named:
        return Path(os.path.realpath(os.path.expanduser(named)))
    import platformdirs  # noqa: PLC0415 (only when pip could not say)

    return Path(os.path.realpath(platformdirs.user_cache_dir("pip", appauthor=False)))


def _find_target(named: str | None) -> Target:
    """The target interpreter, as pip would choose it, and the pip to run on it.

    ``named``: pip's ``--python`` (or its ``python`` setting), else the Python that runs safe-pip,
    as ``VENV/bin/pip`` works on VENV (from a tool's venv: the active virtual environment, else
    ``python`` on PATH; see ``pipgate.active_python``). Its own pip runs; if it has none, our pip
    does, through ``--python``.
    """
    env = dict(os.environ)
    if named is not None:
        python = pipgate.interpreter_of(named)
        if python is None:  # our pip says so, in pip's words
            _check_own_pip(f"there is no Python interpreter at {named} (--python)", "name one, or a venv")
            return Target(sys.executable, (), env, named, None)
        env[pipgate.RUNNING_IN_SUBPROCESS] = "1"
    else:
        python = _default_python()
    try:
        prefix, has_pip = _environment(python)
    except OSError as error:  # no interpreter at all
        if named is None:
            raise SafeBuildError(
                f"cannot run {python} to install with: {error.strerror}",
                hint="activate a venv, or name one with --python",
            ) from None
        env.pop(pipgate.RUNNING_IN_SUBPROCESS, None)  # our pip says so, in pip's words
        _check_own_pip(f"{named} (--python) is not a Python interpreter", "name one, or a venv")
        return Target(sys.executable, (), env, named, None)
    if has_pip:
        return Target(python, (), env, python, prefix)
    env.pop(pipgate.RUNNING_IN_SUBPROCESS, None)  # our pip is to start the target's Python itself
    no_pip = f"{python} has no pip, and neither has safe-build's own Python ({sys.executable})"
    _check_own_pip(no_pip, f"install pip into it: {python} -m ensurepip")
    return Target(sys.executable, () if named is not None else ("--python", python), env, python, prefix)


def _default_python() -> str:
    found = pipgate.active_python()
    venv = os.environ.get("VIRTUAL_ENV") if pipgate.in_tool_environment() else None
    if venv and not (found and os.path.exists(found)):
        raise SafeBuildError(
            f"the active virtual environment {venv} (VIRTUAL_ENV) has no bin/python",
            hint="activate an existing one, or name one with --python",
        )
    if found is None:
        raise SafeBuildError(
            "no Python to run pip with: no virtual environment is active and there is no python on PATH",
            hint="activate one, or name one with --python",
        )
    return found


def _check_own_pip(problem: str, hint: str) -> None:
    """Fail with ``problem`` unless safe-build's own Python has pip."""
    if importlib.util.find_spec("pip") is None:
        raise SafeBuildError(problem, hint=hint)


def _environment(python: str) -> tuple[Path, bool]:
    """The real ``sys.prefix`` of ``python`` and whether it has pip.

    A venv's interpreter is told by the pyvenv.cfg beside it or one level up, as Python itself
    finds it: that costs no process (pip is looked for in its site-packages). Any other
    interpreter is asked.
    """
    executable = Path(python).absolute()
    for directory in (executable.parent, executable.parent.parent):
        if (directory / "pyvenv.cfg").is_file():
            prefix = Path(os.path.realpath(directory))
            return prefix, any(prefix.glob("lib/*/site-packages/pip/__init__.py"))
    prefix, has_pip = _ask(python, _ENVIRONMENT_QUESTION)
    return Path(os.path.realpath(prefix)), bool(has_pip)


def _ask(python: str, code: str, *arguments: str) -> Any:
    """What the small program ``code`` prints as JSON when ``python`` runs it."""
    answer = subprocess.run([python, "-c", code, *arguments], capture_output=True, text=True, check=False)
    try:
        return json.loads(answer.stdout)
    except ValueError:
        last = (answer.stderr.strip().splitlines() or [f"exit code {answer.returncode}"])[-1]
        raise SafeBuildError(
            f"cannot ask {python} where it installs: {last}", hint="check that this Python runs"
        ) from None


# --- locks ---------------------------------------------------------------------------------------


def _pip_cache_lock(state: states.State, pip_cache: Path) -> NamedLock:
    """The lock on pip's cache directory, made first if need be, as pip would make it."""
    _make_directory(pip_cache)
    return state.pip_cache_lock(Path(os.path.realpath(pip_cache)))


def _cache_mode(described: Description) -> Mode:
    subcommand = described.positionals[0][1] if described.positionals else None
    return "exclusive" if described.command == "cache" and subcommand in CLEARING_CACHE else "shared"


def _install_lock(state: states.State, python: str, prefix: Path, location: pipargs.Location) -> NamedLock:
    """The lock on where pip writes: ``--target``, ``--root``, ``--prefix``, user site, environment.

    Each is locked as the directory itself (made first, as pip makes it), so that two commands
    with different cache directories still take turns; a venv, on a lock file inside it.
    """
    chosen = location.target or location.root or location.prefix
    if chosen is None and location.user:
        [chosen, *_] = _install_dirs(python, location)
    if chosen is not None:
        _make_directory(Path(chosen))
        prefix, is_venv = Path(os.path.realpath(chosen)), False
    else:
        is_venv = (prefix / "pyvenv.cfg").is_file() and os.access(prefix, os.W_OK)
    netfs.warn_if_network(prefix, "install location")
    return state.environment_lock(prefix, inside=is_venv)


def _make_directory(path: Path) -> None:
    """Make ``path`` as pip would before writing there; a failure is one line, as pip's would be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SafeBuildError(
            f"cannot create {path} ({error.strerror})",
            hint="fix its permissions, or choose another",
            path=path,
        ) from None


# --- local projects ------------------------------------------------------------------------------


def _build(requirements: pipargs.Requirements, described: Description, work: Path) -> list[Shim]:
    """Build each local project once through safe-build and wrap its wheel in a shim; so too each
    local project that their metadata names by path (``lib @ file:///…/lib``, found recursively),
    which pip would otherwise build where it lies. Each shim's wheel then names the shims of its
    path dependencies, so that pip takes those too."""
    from safe_build.commands import build  # noqa: PLC0415 (building is rare; importing build is not cheap)

    flags = _build_flags(described)
    projects: dict[Path, pipargs.LocalProject] = {}
    for project in requirements.projects:
        projects.setdefault(project.directory, project)  # named twice, built once: the first naming counts
    pending, shims = list(projects.values()), list[Shim]()
    with _variables(_build_variables(described, requirements)):
        while pending:
            project, number = pending.pop(0), len(shims)
            out = work / "wheels" / str(number)
            # quiet: pip reports what it installs; a failed build still shows its output and error
            quiet = ["--quiet", "--quiet"]
            build.run(["--wheel", "--outdir", str(out), *quiet, *flags, str(project.directory)], shown=False)
            [wheel] = out.glob("*.whl")
            shim = _shim(project, wheel, work / "prebuilt" / str(number) / project.directory.name)
            shims.append(shim)
            for _, dependency in shim.dependencies:
                if dependency.directory not in projects:
                    projects[dependency.directory] = dependency
                    pending.append(dependency)
    by_directory = {shim.project.directory: shim.directory for shim in shims}
    return [_repointed(shim, by_directory) for shim in shims]


def _repointed(shim: Shim, shims: Mapping[Path, Path]) -> Shim:
    """``shim`` with its wheel's path dependencies pointing at their shims (``shims``)."""
    changes = tuple(
        (line, b"Requires-Dist: " + dependency.pointing_to(shims[dependency.directory]).encode())
        for line, dependency in shim.dependencies
    )
    if not changes:
        return shim
    [wheel] = shim.directory.glob("*.whl")
    coremetadata.rewrite(wheel, changes)
    return dataclasses.replace(shim, repointed=tuple((new, old) for old, new in changes))


def _build_flags(described: Description) -> list[str]:
    """The options of pip's that change a build: build isolation and config settings, as pip read
    them (its command line, variables and configuration files)."""
    flags = [] if described.build_isolation else ["--no-isolation"]
    for key, values in described.config_settings.items():
        for value in [values] if isinstance(values, str) else values:
            flags += ["--config-setting", f"{key}={value}"]
    return flags


def _build_variables(described: Description, requirements: pipargs.Requirements) -> dict[str, str]:
    """pip's index and cache settings on its command line and in its requirement files, as the
    variables that the pip in safe-build's build environments reads; that pip runs elsewhere, so
    paths are made absolute."""
    found = [(Path.cwd(), occurrence.option, occurrence.value) for occurrence in described.occurrences]
    for file in requirements.files:
        found += [(base, name, value) for base, line in file.all_lines() for name, value in line.settings]
    values: dict[str, str] = {}
    for base, option, given in found:
        variable = BUILD_VARIABLES.get(option)
        if variable is None:
            continue
        value = "1" if given is None else given
        if option == "--cache-dir" or (option == "--find-links" and (base / value).exists()):
            value = os.path.abspath(base / os.path.expanduser(value))
        earlier = values.get(variable, os.environ.get(variable, "")) if variable in LISTS else ""
        values[variable] = f"{earlier} {value}".strip()
    return values


@contextlib.contextmanager
def _variables(values: Mapping[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _shim(project: pipargs.LocalProject, wheel: Path, directory: Path) -> Shim:
    """A private project whose build backend hands over ``wheel``: pip treats it as the local
    directory it stands for (it always reinstalls it, as it would a directory, where it would skip a
    wheel of an installed version), and never builds in the user's tree."""
    directory.mkdir(parents=True)
    shutil.move(wheel, directory / wheel.name)
    (directory / "pyproject.toml").write_text(_SHIM_PYPROJECT, encoding="utf-8")
    (directory / "_safe_build_prebuilt.py").write_text(
        _SHIM_BACKEND.format(wheel=wheel.name), encoding="utf-8"
    )
    with zipfile.ZipFile(directory / wheel.name) as archive:
        dist_info = next(
            name.split("/")[0] for name in archive.namelist() if name.split("/")[0].endswith(".dist-info")
        )
        metadata = archive.read(f"{dist_info}/METADATA")
    return Shim(project, directory, dist_info, _path_dependencies(metadata))


def _path_dependencies(metadata: bytes) -> tuple[tuple[bytes, pipargs.LocalProject], ...]:
    """The ``Requires-Dist`` lines of core metadata that name a local project directory."""
    found = []
    for line in metadata.splitlines():
        if line.startswith(b"Requires-Dist:"):
            dependency = pipargs.local_project(line.removeprefix(b"Requires-Dist:").decode("utf-8").strip())
            if dependency is not None:
                found.append((line, dependency))
    return tuple(found)


# --- after the install ---------------------------------------------------------------------------


def _install_dirs(python: str, location: pipargs.Location) -> list[Path]:
    """Where ``pip install`` puts distributions for ``location``."""
    if location.target is not None:
        return [location.target]
    kind = "prefix" if location.prefix else "user" if location.user else "environment"
    paths = [Path(path) for path in _ask(python, _SCHEME_QUESTION, kind, str(location.prefix or ""))]
    if location.root is not None:
        return [location.root / path.relative_to(path.anchor) for path in paths]
    return paths


def _record_origins(shims: Sequence[Shim], install_dirs: Sequence[Path]) -> None:
    """Make each installed distribution say it came from the user's directory, as pip would have
    written it, instead of from its shim, and name its path dependencies as the project does
    (fixing the RECORD lines of those files)."""
    for shim in shims:
        for directory in install_dirs:
            dist_info = directory / shim.dist_info
            try:
                recorded = json.loads((dist_info / "direct_url.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(recorded, dict) and recorded.get("url") == pipargs.path_to_url(shim.directory):
                files = {"direct_url.json": json.dumps(shim.project.direct_url(), sort_keys=True).encode()}
                if shim.repointed:
                    metadata = (dist_info / "METADATA").read_bytes()
                    files["METADATA"] = coremetadata.replaced(metadata, shim.repointed)
                _rewrite_installed(dist_info, files)


def _rewrite_installed(dist_info: Path, files: Mapping[str, bytes]) -> None:
    """Give the files of an installed ``.dist-info`` new contents (name: content), RECORD too."""
    for name, content in files.items():
        _replace(dist_info / name, content)
    record = dist_info / "RECORD"
    rewritten = {f"{dist_info.name}/{name}": content for name, content in files.items()}
    _replace(record, coremetadata.updated_record(record.read_bytes(), rewritten))


def _replace(path: Path, content: bytes) -> None:
    """Replace ``path`` atomically, keeping its permissions."""
    mode = stat.S_IMODE(path.stat().st_mode)
    with publish.replacing(path) as out:
        out.write(content)
        os.fchmod(out.fileno(), mode)


# --- what pip prints and records -----------------------------------------------------------------


def _shown(shims: Sequence[Shim]) -> list[tuple[str, str]]:
    """What pip's output is to say in place of each shim: the project's directory (as pip shows a
    directory: relative to the working directory if it is inside it), its URL for the shim's."""
    pairs = []
    for shim in shims:
        shown = _display_path(shim.project.directory)
        for directory in dict.fromkeys([str(shim.directory), os.path.realpath(shim.directory)]):
            pairs.append((pipargs.path_to_url(Path(directory)), shim.project.url))
            pairs.append((directory, shown))
            if _display_path(Path(directory)) != directory:  # pip shows it relative: ./.cache/…
                pairs.append((_display_path(Path(directory)), shown))
    return pairs


def _display_path(path: Path) -> str:
    """pip's ``display_path``: ``path`` relative to the working directory, if it is inside it."""
    try:
        return os.path.join(".", path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _report(described: Description) -> Path | None:
    """pip's ``--report`` file, when it is a file (not ``-``, pip's output)."""
    if described.command != "install" or described.report in (None, "-"):
        return None
    return Path(os.path.abspath(os.path.expanduser(described.report or "")))


def _private_report(
    described: Description, report: Path, arguments: Sequence[str], work: Path
) -> tuple[Path | None, list[str]]:
    """The command line with pip writing its report privately (safe-pip writes the user's from it),
    when the report is named on the command line and could be written there; the private path."""
    named = described.values("--report")
    if not named or named[-1].prefix is None or not report.parent.is_dir():
        return None, list(arguments)  # from pip's variables or configuration: rewritten in place
    private = work / "report.json"
    changed = list(arguments)
    changed[named[-1].index] = named[-1].prefix + str(private)
    return private, changed


def _write_report(written: Path, report: Path, shims: Sequence[Shim]) -> None:
    """The user's ``report``, from what pip wrote to ``written``, each shim's URL replaced by the
    project's, as pip writes it into JSON (nothing is written if pip wrote no report)."""
    try:
        content = written.read_bytes()
    except FileNotFoundError:
        return
    original = content
    for shim in shims:
        for directory in dict.fromkeys([str(shim.directory), os.path.realpath(shim.directory)]):
            old = json.dumps(pipargs.path_to_url(Path(directory)), ensure_ascii=False)[1:-1]
            content = content.replace(
                old.encode(), json.dumps(shim.project.url, ensure_ascii=False)[1:-1].encode()
            )
    if written == report and content == original:
        return
    final = Path(os.path.realpath(report))  # a link is written through, as pip's open() does
    try:
        mode = stat.S_IMODE(final.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask  # as pip's open() makes it
    with publish.replacing(final) as out:
        out.write(content)
        os.fchmod(out.fileno(), mode)


# --- running pip ---------------------------------------------------------------------------------


def _run_pip(
    gate: pipgate.Gate,
    arguments: Sequence[str],
    descriptors: Sequence[int],
    replacements: Sequence[tuple[str, str]] = (),
) -> int:
    """Run pip in our process group (it may ask questions on the terminal), keeping the locks
    of ``descriptors``, its output naming the user's directories (``replacements``); its exit code.

    An interruption is passed on to pip, which gets a moment to stop before it is killed.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    process = gate.open(arguments, descriptors, replacements)
    try:
        code = process.wait()
    except BaseException as stop:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(stop.signum if isinstance(stop, Terminated) else signal.SIGINT)
        try:
            process.wait(timeout=runner.STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise
    return 128 - code if code < 0 else code
