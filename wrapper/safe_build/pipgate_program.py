"""The program of a gated pip: it runs in the target's Python, with the target's pip (23.0 or newer).

``pipgate`` starts it as ``python -c BOOT <this file> FD ARGS…`` before safe-pip has done anything
else (BOOT takes the working directory out of ``sys.path`` first, as pip's ``__main__`` does).
It imports pip, then reads ``pip ARGS`` with pip's own parsers (``parse_command``,
``create_command``, ``Command.parse_args``, which also read pip's configuration files and ``PIP_*``
variables, and the requirement-file parser for ``-r``/``-c`` files), and sends safe-pip a small JSON
description of what the command line asks for (``describe``). Then it waits at the gate: safe-pip
sends the descriptors of the locks it took (SCM_RIGHTS) and the arguments pip is to run with, and
this program runs pip as ``python -m pip ARGS`` would, keeping the locks until it exits. A gate
closed without being opened makes it exit without running pip. With the arguments come the
private paths of safe-pip's shims and what to say in their place (the user's directories): pip's
``sys.stdout`` and ``sys.stderr`` are then streams that replace them (``Replacing``), so that pip's
output names the user's directories, with pip's colours and progress bars as they would be.

If pip's reading ends the program (a usage error, an unknown command, ``--version``, ``--help``,
a broken configuration file), what pip printed is kept and, once the gate opens, printed again
with pip's exit code: pip itself is not run, so no command can run unlocked after a failed
reading. If a private name of pip this program uses is missing (every one is guarded), the
description says ``unknown``: safe-pip then takes every lock it could need and builds nothing.

A requirement file that is not a regular file (a pipe from ``<(…)``, ``/dev/stdin``, a FIFO) is
read once, here; its content goes back to safe-pip, which hands pip a private copy.

It cannot import safe_build, and runs on every Python that pip 23.0 runs on (3.7 and newer).
"""

# ruff: noqa: PLC0415 (pip is imported in the target's Python, after the program has started)
from __future__ import annotations

import array
import base64
import contextlib
import io
import json
import os
import re
import runpy
import socket
import stat
import sys
from typing import Any

MAX_DESCRIPTORS = 253  # SCM_MAX_FD: the most descriptors one message carries on Linux
RUNNING_IN_SUBPROCESS = "_PIP_RUNNING_IN_SUBPROCESS"
SCHEME = re.compile(r"^(http|https|file):", re.IGNORECASE)  # pip's req_file.SCHEME_RE
# the options of a requirement file's line that safe-pip passes on to its builds, by pip's dest
FILE_SETTINGS = {
    "index_url": "--index-url",
    "extra_index_urls": "--extra-index-url",
    "find_links": "--find-links",
    "trusted_hosts": "--trusted-host",
    "no_index": "--no-index",
}
MAX_DEPTH = 50  # nested requirement files followed


def main() -> None:
    fd = int(sys.argv[1])
    channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=fd)
    arguments = sys.argv[2:]
    try:
        try:
            import pip
            import pip._internal.cli.main

            before: tuple[int, int, int, int] | None = _stamp(pip.__file__)
            description = describe(arguments)
        except Exception as error:
            before, description = None, {"status": "unknown", "reason": f"pip cannot be imported: {error!r}"}
        try:
            channel.sendall(json.dumps(description).encode("utf-8") + b"\n")
        except OSError:
            sys.exit(0)  # safe-pip is gone: this pip is not to run
        fds = array.array("i")
        data, ancillary, _, _ = channel.recvmsg(1, socket.CMSG_SPACE(MAX_DESCRIPTORS * fds.itemsize))
    except KeyboardInterrupt:
        sys.exit(130)
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if not data:
        sys.exit(0)  # the gate was closed: this pip is not to run
    chunks = []
    while True:
        chunk = channel.recv(1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    channel.close()
    if description.get("status") == "exited":  # pip's reading ended pip: say what it said, as it said it
        sys.stdout.write(description["stdout"])
        sys.stdout.flush()
        sys.stderr.write(description["stderr"])
        sys.stderr.flush()
        sys.exit(description["code"])
    opened = json.loads(b"".join(chunks).decode("utf-8"))
    run, replacements = opened["arguments"], [tuple(pair) for pair in opened["replace"]]
    try:
        fresh = before is None or _stamp(pip.__file__) != before
    except OSError:
        fresh = True
    if fresh:  # pip's files changed while it waited (another pip reinstalled pip): a fresh pip runs
        for descriptor in fds:
            os.set_inheritable(descriptor, True)
        os.execv(sys.executable, [sys.executable, "-m", "pip", *run])
    _run(run, replacements)


def _run(arguments: list[str], replacements: list[tuple[str, str]]) -> None:
    """Run pip as ``python -m pip ARGUMENTS`` would, its output with ``replacements`` made."""
    sys.argv[1:] = arguments
    if not replacements:
        runpy.run_module("pip", run_name="__main__", alter_sys=True)
        return
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = Replacing(sys.stdout, replacements), Replacing(sys.stderr, replacements)
    try:
        runpy.run_module("pip", run_name="__main__", alter_sys=True)
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        sys.stdout, sys.stderr = streams


class Replacing:
    """A text stream that writes to ``stream`` with each private path replaced by the user's
    (``replacements``: pairs of texts, the longest first). It is the stream in every other respect
    (``isatty``, ``fileno``, ``encoding``: pip's colours and progress bars are as they would be).
    The end of a write that may begin a private path is held until the next write or flush."""

    def __init__(self, stream: Any, replacements: list[tuple[str, str]]) -> None:
        self._stream = stream
        self._replacements = sorted(replacements, key=lambda pair: -len(pair[0]))
        self._held = ""

    def write(self, text: str) -> int:
        whole = self._held + text
        for old, new in self._replacements:
            whole = whole.replace(old, new)
        keep = self._partial(whole)
        self._held = whole[len(whole) - keep :] if keep else ""
        self._stream.write(whole[: len(whole) - keep])
        return len(text)

    def _partial(self, text: str) -> int:
        """The length of the longest end of ``text`` that begins a private path."""
        for length in range(min(len(text), max(len(old) for old, _ in self._replacements) - 1), 0, -1):
            end = text[len(text) - length :]
            if any(old.startswith(end) for old, _ in self._replacements):
                return length
        return 0

    def flush(self) -> None:
        if self._held:
            self._stream.write(self._held)
            self._held = ""
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _stamp(path: str) -> tuple[int, int, int, int]:
    info = os.stat(path)
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def describe(arguments: list[str]) -> dict[str, Any]:
    """What ``pip ARGUMENTS`` asks for, as pip reads it; what pip printed if reading it ended pip."""
    if "PIP_AUTO_COMPLETE" in os.environ:
        return {"status": "unknown", "reason": "shell completion"}
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
    try:
        try:
            return _parsed(arguments)
        except SystemExit as stop:
            code = stop.code
            stderr = sys.stderr.getvalue()
            if code is None:
                code = 0
            elif not isinstance(code, int):  # Python prints the message and exits with 1
                stderr, code = f"{stderr}{code}\n", 1
            return {"status": "exited", "stdout": sys.stdout.getvalue(), "stderr": stderr, "code": code}
        except Exception as error:  # a private name of pip's moved: safe-pip takes every lock
            return {"status": "unknown", "reason": repr(error)}
    finally:
        sys.stdout, sys.stderr = saved


def _parsed(arguments: list[str]) -> dict[str, Any]:
    from pip._internal.cli.main_parser import create_main_parser, parse_command
    from pip._internal.commands import create_command
    from pip._internal.exceptions import PipError

    python = None
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = io.StringIO()
    try:
        general, _ = create_main_parser().parse_args(list(arguments))
        python = getattr(general, "python", None)  # pip before 22.3 has no --python
    except SystemExit:
        pass  # parse_command below fails the same way, and prints what pip prints
    finally:
        sys.stdout, sys.stderr = saved
    handoff = bool(python) and RUNNING_IN_SUBPROCESS not in os.environ
    if handoff:  # pip would run the pip of another Python, which reads the same line
        from pip._internal.cli.main_parser import identify_python_interpreter

        if identify_python_interpreter(str(python)) is None:  # parse_command's error, as main() prints it
            sys.stderr.write(f"ERROR: Could not locate Python interpreter {python}")
            sys.stderr.write(os.linesep)
            sys.exit(1)
    saved_flag = os.environ.get(RUNNING_IN_SUBPROCESS)
    os.environ[RUNNING_IN_SUBPROCESS] = "1"  # read the line, never start another pip here
    try:
        try:
            name, command_arguments = parse_command(list(arguments))
        except PipError as error:  # pip's main() says it so
            sys.stderr.write(f"ERROR: {error}")
            sys.stderr.write(os.linesep)
            sys.exit(1)
        command = create_command(name, isolated=("--isolated" in command_arguments))
        seen = _watch(command.parser, len(command_arguments))
        options, positionals = command.parse_args(list(command_arguments))
    finally:
        if saved_flag is None:
            del os.environ[RUNNING_IN_SUBPROCESS]
    removed = arguments.index(name)  # pip removes the first word equal to the command's name

    def original(index: int) -> int:
        return index if index < removed else index + 1

    occurrences = []
    consumed = set()
    for option, value, index in seen:
        at = original(index)
        prefix = _prefix(arguments[at], value)
        consumed.update([index - 1, index] if value is not None and prefix == "" else [index])
        occurrences.append([option.get_opt_string(), option.dest, value, at, prefix])
    return {
        "status": "parsed",
        "command": name,
        "python": python or None,
        "handoff": handoff,
        "occurrences": occurrences,
        "positionals": _positionals(command_arguments, consumed, positionals, original),
        "files": _files(occurrences),
        "editables": list(getattr(options, "editables", None) or []),
        "target": getattr(options, "target_dir", None),
        "root": getattr(options, "root_path", None),
        "prefix": getattr(options, "prefix_path", None),
        "user": bool(getattr(options, "use_user_site", False)),
        "cache_dir": options.cache_dir or None,
        "build_isolation": bool(getattr(options, "build_isolation", True)),
        "config_settings": getattr(options, "config_settings", None) or {},
        "dry_run": bool(getattr(options, "dry_run", False)),
        "report": getattr(options, "json_report_file", None) or None,
    }


def _watch(parser: Any, count: int) -> list[tuple[Any, str | None, int]]:
    """Record each option the parser processes: the option, its value, and the index (into the
    ``count`` arguments it is given) of the argument that held its value, or the flag."""
    seen: list[tuple[Any, str | None, int]] = []
    options = list(parser.option_list)
    for group in parser.option_groups:
        options += group.option_list

    def watched(option: Any) -> None:
        process = option.process

        def recording(opt: str, value: str | None, values: Any, parser: Any) -> Any:
            seen.append((option, value, count - len(parser.rargs) - 1))
            return process(opt, value, values, parser)

        option.process = recording

    for option in options:
        watched(option)
    return seen


def _prefix(word: str, value: str | None) -> str | None:
    """What precedes ``value`` in the argument ``word`` that holds it: "" if it is the whole
    argument, "-r" or "--requirement=" if attached; None if it cannot be told."""
    if value is None or word == value:
        return ""
    return word[: len(word) - len(value)] if word.endswith(value) else None


def _positionals(
    arguments: list[str], consumed: Any, positionals: list[str], original: Any
) -> list[list[Any]]:
    """The positional arguments with their indexes: the arguments no option took, but the ``--``
    that ends the options (None for the index if the two readings disagree)."""
    left = [index for index in range(len(arguments)) if index not in consumed]
    ends = [index for index in left if arguments[index] == "--"]
    if ends:
        left.remove(ends[0])
    if [arguments[index] for index in left] != list(positionals):
        return [[None, value] for value in positionals]
    return [[original(index), arguments[index]] for index in left]


def _files(occurrences: list[list[Any]]) -> list[dict[str, Any]]:
    """The requirement and constraint files of the command line, as pip reads them."""
    found = []
    for option, dest, value, index, prefix in occurrences:
        if dest in ("requirements", "constraints") and isinstance(value, str):
            file = _read(value, dest == "constraints", top=True, reading=())
            if file is not None:
                file.update(index=index, prefix=prefix, option=option)
                found.append(file)
    return found


def _read(path: str, constraint: bool, *, top: bool, reading: tuple[str, ...]) -> dict[str, Any] | None:
    """A requirement file, its lines as pip's parser reads them and the files they nest; None if it
    is not a local file that can be read (pip then reads it, and reports what fails).

    A file that is not a regular one (a pipe, a FIFO, a terminal) is read only if the command line
    names it: its content goes back to safe-pip, which hands pip a copy; a nested one is left to pip.
    """
    if SCHEME.search(path) or len(reading) > MAX_DEPTH or os.path.abspath(path) in reading:
        return None
    try:
        regular = stat.S_ISREG(os.stat(path).st_mode)
        if not (regular or top):
            return None
        with open(path, "rb") as opened:
            content = opened.read()
    except OSError:
        return None
    file: dict[str, Any] = {
        "path": path,
        "constraint": constraint,
        "piped": not regular,
        "content": base64.b64encode(content).decode("ascii"),
        "lines": None,
    }
    # pip refuses the file, or a private name moved: pip reads the file, and builds what it names
    with contextlib.suppress(Exception):
        file["lines"] = _lines(path, content, (*reading, os.path.abspath(path)))
    return file


def _lines(path: str, content: bytes, reading: tuple[str, ...]) -> list[dict[str, Any]]:
    from pip._internal.req.req_file import get_line_parser, preprocess

    try:
        from pip._internal.req.req_file import _decode_req_file  # type: ignore[attr-defined,unused-ignore]

        text = _decode_req_file(content, path)
    except ImportError:  # pip before 25.1
        from pip._internal.utils.encoding import auto_decode  # type: ignore[import-not-found,unused-ignore]

        text = auto_decode(content)
    parse_line = get_line_parser(None)
    lines = []
    for number, line in preprocess(text):
        requirement, options = parse_line(line)
        described: dict[str, Any] = {
            "line": number,
            "requirement": requirement or None,
            "options_text": line[len(requirement) :],
            "editable": (options.editables or [None])[0],
            "settings": _settings(options),
            "nested": None,
        }
        if not requirement and not options.editables and (options.requirements or options.constraints):
            nested_constraint = not options.requirements
            named = (options.requirements or options.constraints)[0]
            if not SCHEME.search(named):
                named = os.path.abspath(os.path.join(os.path.dirname(path), named))
            inner = _read(named, nested_constraint, top=False, reading=reading)
            described["nested"] = {"constraint": nested_constraint, "path": named, "file": inner}
        lines.append(described)
    return lines


def _settings(options: Any) -> list[list[str | None]]:
    found: list[list[str | None]] = []
    for dest, option in FILE_SETTINGS.items():
        value = getattr(options, dest, None)
        if value is True:
            found.append([option, None])
        elif isinstance(value, str):
            found.append([option, value])
        elif isinstance(value, list):
            found += [[option, item] for item in value]
    return found


if __name__ == "__main__":
    main()
