"""``safe-build venv PATH [virtualenv options]``: create a venv once, however many ask at once.

Two creations of one path at the same time break each other, and one that was killed leaves a
venv that looks usable and is not. A venv cannot be made elsewhere and moved into place (its
scripts name its path), so it is made at PATH itself by virtualenv, under a lock on PATH kept in
safe-build's state directory, and marked complete last: ``PATH/.safe-build-venv-complete`` holds
its Python version. Until then ``PATH/.safe-build-venv-creating`` says a creation is under way;
found under the lock, it means that creation died, and its remains are removed before starting
again, but only if it is safe-build's own: it holds a random token that the same creation wrote
first beside the lock file, in safe-build's cache directory, where nobody else writes. A marker
without that record (copied along, planted, or left by a run with another cache directory)
never causes a deletion. A complete venv is reused, as is a venv made by another tool (``--clear``
recreates either), unless ``--python`` names an interpreter other than the venv's; anything
else at PATH is refused and left alone.

Making and clearing a venv also hold its environment lock, so that no safe-pip installs into it
meanwhile; the environment lock file inside it is kept when it is cleared, so that it is never
deleted while someone may wait on it.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from safe_build import config, project, publish
from safe_build import state as states
from safe_build.errors import SafeBuildError
from safe_build.fsutil import remove_tree
from safe_build.state import ENVIRONMENT_LOCK_NAME

if TYPE_CHECKING:
    from virtualenv.run.session import Session

COMPLETE = ".safe-build-venv-complete"
CREATING = ".safe-build-venv-creating"
LOCK_FILES = (ENVIRONMENT_LOCK_NAME, f"{ENVIRONMENT_LOCK_NAME}.holders")
USAGE = "safe-build venv PATH [--clear] [--lock-timeout SECONDS] [--cache-dir DIR] [virtualenv options]"

State = Literal["missing", "complete", "unfinished", "other venv"]


def run(argv: Sequence[str]) -> int:
    path_text, options, virtualenv_options = _parse(argv)
    path = Path(path_text).absolute()
    timeout = config.lock_timeout(options.lock_timeout)
    own = states.at(config.cache_dir(options.cache_dir), lock_timeout=timeout)
    real = Path(os.path.realpath(path))
    lock = own.venv_lock(real)
    record = lock.lock_file.with_name(lock.lock_file.name + ".creating")  # where only safe-build writes
    try:
        _state(path, record)  # refuse what is not ours to touch before waiting for anything
    except OSError as error:  # a name too long, a directory that cannot be read
        raise SafeBuildError(
            f"cannot use {path} as the venv path ({error.strerror})", hint="choose another venv path"
        ) from None
    with lock.hold("exclusive"):
        state = _state(path, record)  # again: another creation may have finished, or died, meanwhile
        if state in ("complete", "other venv") and not options.clear:
            if _names_python(virtualenv_options):
                _check_python(path, state, _session([*virtualenv_options, str(path)]))
            print(f"Reusing the virtual environment at {path} ({_describe(path, state)})")
            return 0
        session = _session([*virtualenv_options, str(path)])  # checks the options before anything is made
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # a read-only or virtual file system (/proc), a parent that is a file
            raise SafeBuildError(
                f"cannot create the virtual environment at {path} ({error.strerror})",
                hint="choose another venv path",
                path=path,
            ) from None
        with own.environment_lock(real, inside=True).hold("exclusive"):
            token = secrets.token_hex(16)
            publish.write_text_atomically(record, token)  # first: the marker is ours only with it
            publish.write_text_atomically(path / CREATING, token)
            _clear(path)
            session.run()
            marker = {
                "python": session.interpreter.version_str,
                "implementation": session.interpreter.implementation,
            }
            publish.write_text_atomically(path / COMPLETE, json.dumps(marker) + "\n")
            (path / CREATING).unlink()
            record.unlink()
    print(f"Created the virtual environment at {path} ({_describe(path, 'complete')})")
    return 0


def _parse(argv: Sequence[str]) -> tuple[str, argparse.Namespace, list[str]]:
    """PATH, safe-build's own options, and the rest for virtualenv (which checks them itself)."""
    parser = argparse.ArgumentParser(
        prog="safe-build venv",
        usage=USAGE,
        description="Create a virtual environment with virtualenv at PATH, or reuse the one there: "
        "at the same time, one creates it and the others wait for it.",
        epilog="Any other option goes to virtualenv: see virtualenv --help.",
        allow_abbrev=False,  # an abbreviation may be virtualenv's
    )
    parser.add_argument("--clear", action="store_true", help="recreate the venv even if it is complete")
    parser.add_argument(
        "--lock-timeout", metavar="SECONDS", help="give up waiting after SECONDS (exit code 3)"
    )
    parser.add_argument("--cache-dir", metavar="DIR", help="where safe-build keeps its lock files")
    if not argv or argv[0].startswith("-"):
        if argv[:1] in (["-h"], ["--help"]):
            parser.parse_args(["--help"])
        first = f", not {argv[0]}" if argv else ""
        raise SafeBuildError(f"the venv path must come first{first}", hint=f"use: {USAGE}")
    if not argv[0]:
        raise SafeBuildError("the venv path is an empty string", hint=f"use: {USAGE}")
    options, rest = parser.parse_known_args(argv[1:])
    return argv[0], options, rest


def _session(arguments: list[str]) -> Session:
    """virtualenv's plan for the venv: its options checked and its interpreter found, nothing made."""
    import virtualenv  # noqa: PLC0415 (heavy: only the venv command needs it)

    try:
        return virtualenv.session_via_cli(arguments)
    except RuntimeError as error:  # no interpreter matches --python
        raise SafeBuildError(
            f"virtualenv: {error}", hint="name an interpreter that exists with --python"
        ) from None


def _state(path: Path, record: Path) -> State:
    """What is at ``path``; refused if it is neither a venv nor nothing. ``record``: where the
    creation that a marker at ``path`` names has left its token, if it was safe-build's."""
    if path.is_symlink() and not path.exists():
        raise SafeBuildError(
            f"{path} is a broken symbolic link", hint="remove it or choose another venv path"
        )
    if not path.exists():
        return "missing"
    if not path.is_dir():
        what = "a file" if path.is_file() else f"a {project.kind(path)}"
        raise SafeBuildError(f"{path} is {what}, not a virtual environment", hint="choose another venv path")
    entries = set(os.listdir(path)) - set(LOCK_FILES)
    if COMPLETE in entries:
        return "complete"
    if CREATING in entries and (_ours(path / CREATING, record) or entries == {CREATING}):
        return "unfinished"
    entries.discard(CREATING)  # not ours: it says nothing of what else is there
    if not entries:
        return "missing"
    if "pyvenv.cfg" in entries:
        return "other venv"
    raise SafeBuildError(
        f"{path} is a directory that is not empty and not a virtual environment",
        hint="choose another venv path; nothing was changed",
    )


def _ours(marker: Path, record: Path) -> bool:
    """True if ``marker`` holds the token that a creation by safe-build wrote first to ``record``."""
    try:
        token = record.read_text(encoding="utf-8")
        return bool(token) and marker.read_text(encoding="utf-8") == token
    except (OSError, UnicodeDecodeError):
        return False


def _names_python(virtualenv_options: Sequence[str]) -> bool:
    return any(
        option in ("-p", "--python") or option.startswith(("-p", "--python="))
        for option in virtualenv_options
    )


def _check_python(path: Path, state: State, session: Session) -> None:
    """Refuse to reuse a venv whose Python is not the one ``--python`` names."""
    interpreter = session.interpreter
    have: str | None
    if state == "complete":  # safe-build's marker names the implementation too
        have, wanted = _describe(path, state), f"{interpreter.implementation} {interpreter.version_str}"
    else:
        have, wanted = _pyvenv_version(path), interpreter.version_str
    if have is not None and have != wanted:
        raise SafeBuildError(
            f"the virtual environment at {path} has {have}, not the {wanted} that --python names",
            hint="recreate it with --clear, or choose another venv path; nothing was changed",
        )


def _pyvenv_version(path: Path) -> str | None:
    """The Python version another tool's venv records (``version`` or ``version_info``)."""
    try:
        lines = (path / "pyvenv.cfg").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    found = dict(line.split("=", 1) for line in lines if "=" in line)
    values = {key.strip(): value.strip() for key, value in found.items()}
    version = values.get("version") or values.get("version_info")
    return ".".join(version.split(".")[:3]) if version else None


def _describe(path: Path, state: State) -> str:
    if state == "other venv":
        return "not made by safe-build; --clear recreates it"
    marker = json.loads((path / COMPLETE).read_text(encoding="utf-8"))
    return f"{marker['implementation']} {marker['python']}"


def _clear(path: Path) -> None:
    """Remove everything in ``path`` but the lock files and the mark of a creation under way."""
    for entry in os.scandir(path):
        if entry.name in (*LOCK_FILES, CREATING):
            continue
        if entry.is_dir(follow_symlinks=False):
            remove_tree(Path(entry.path))
        else:
            os.unlink(entry.path)
