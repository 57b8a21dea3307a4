"""What a pip command line asks for, read without starting pip: the command, where it installs,
which cache it uses, and which of its requirements are local project directories.

The command line is read as pip's own optparse parsers read it (long options may be abbreviated,
short ones clustered, ``--`` ends the options), from a table of pip 26.3's options that a test
compares with the installed pip. Whatever is not understood (an option of a newer pip, a
requirement file that cannot be read) is left to pip as it is: pip then reports its own error, or
does what it would have done without safe-build.

Requirement files are read as ``pip/_internal/req/req_file.py`` reads them: continuation lines
joined, comments dropped, ``${VAR}`` expanded, nested ``-r``/``-c`` files relative to the file
that names them, requirements and editables relative to the working directory.
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from safe_build import pipconfig


@dataclass(frozen=True)
class _Option:
    name: str  # pip's name for it: the first long spelling
    takes_value: bool


def _options(values: str, flags: str = "") -> dict[str, _Option]:
    """A parser's options from ``-r/--requirement``-style groups of spellings of one option."""
    table = {}
    for takes_value, groups in ((True, values), (False, flags)):
        for group in groups.split():
            spellings = group.split("/")
            name = next(spelling for spelling in spellings if spelling.startswith("--"))
            table.update({spelling: _Option(name, takes_value) for spelling in spellings})
    return table


# pip 26.3's options, per parser (tests/test_pip.py compares them with the installed pip's parsers)
GENERAL = _options(
    "--cache-dir --cert --client-cert --exists-action --keyring-provider --log/--log-file/--local-log "
    "--proxy --python --resume-retries --retries --timeout/--default-timeout --trusted-host "
    "--use-deprecated --use-feature",
    "--debug --disable-pip-version-check --isolated --no-cache-dir --no-color --no-input --no-proxy-env "
    "--no-python-version-warning --require-virtualenv/--require-venv -V/--version -h/--help -q/--quiet "
    "-v/--verbose",
)
_IN_COMMANDS = {spelling: option for spelling, option in GENERAL.items() if option.name != "--version"}
_RESOLVE = (
    "--all-releases --build-constraint --extra-index-url --group --no-binary --only-binary --only-final "
    "--progress-bar --refresh-package --requirements-from-script "
    "--src/--source/--source-dir/--source-directory --uploaded-prior-to -c/--constraint -f/--find-links "
    "-i/--index-url/--pypi-url -r/--requirement",
    "--check-build-dependencies --ignore-requires-python --no-build-isolation --no-clean "
    "--no-deps/--no-dependencies --no-index --no-require-hashes --only-deps/--only-dependencies --pre "
    "--prefer-binary --require-hashes --use-pep517",
)
_SELECT = "--abi --implementation --platform --python-version"
_INDEX = "--all-releases --extra-index-url --no-binary --only-binary --only-final --refresh-package "
_INDEX += "--uploaded-prior-to -f/--find-links -i/--index-url/--pypi-url"
COMMANDS: dict[str, dict[str, _Option]] = {
    name: {**_IN_COMMANDS, **table}
    for name, table in {
        "install": _options(
            f"{_RESOLVE[0]} {_SELECT} --prefix --report --root --root-user-action --upgrade-strategy "
            "-C/--config-settings -e/--editable -t/--target",
            f"{_RESOLVE[1]} --break-system-packages --compile --dry-run --force-reinstall --no-compile "
            "--no-user --no-warn-conflicts --no-warn-script-location --user -I/--ignore-installed "
            "-U/--upgrade",
        ),
        "lock": _options(f"{_RESOLVE[0]} -C/--config-settings -e/--editable -o/--output", _RESOLVE[1]),
        "download": _options(
            f"{_RESOLVE[0]} {_SELECT} -d/--dest/--destination-dir/--destination-directory", _RESOLVE[1]
        ),
        "wheel": _options(
            f"{_RESOLVE[0]} -C/--config-settings -e/--editable -w/--wheel-dir", f"{_RESOLVE[1]} --no-verify"
        ),
        "uninstall": _options("--root-user-action -r/--requirement", "--break-system-packages -y/--yes"),
        "freeze": _options("--exclude --path -r/--requirement", "--all --exclude-editable --user -l/--local"),
        "inspect": _options("--path", "--local --user"),
        "list": _options(
            f"{_INDEX} --exclude --format --path",
            "--exclude-editable --include-editable --no-index --not-required --pre --prefer-binary --user "
            "-e/--editable -l/--local -o/--outdated -u/--uptodate",
        ),
        "show": _options("", "-f/--files"),
        "check": _options(""),
        "config": _options("--editor", "--global --site --user"),
        "search": _options("-i/--index"),
        "cache": _options("--format"),
        "index": _options(
            f"{_INDEX} {_SELECT}", "--ignore-requires-python --json --no-index --pre --prefer-binary"
        ),
        "hash": _options("-a/--algorithm"),
        "completion": _options("", "-b/--bash -f/--fish -p/--powershell -z/--zsh"),
        "debug": _options(_SELECT),
        "help": _options(""),
    }.items()
}
# the options a requirement file's line may carry (pip's SUPPORTED_OPTIONS and SUPPORTED_OPTIONS_REQ)
FILE_LINE = _options(
    "--extra-index-url --no-binary --only-binary --all-releases --only-final --trusted-host --use-feature "
    "--hash -i/--index-url/--pypi-url -c/--constraint -r/--requirement -e/--editable -f/--find-links "
    "-C/--config-settings",
    "--no-index --prefer-binary --require-hashes --no-require-hashes --pre",
)

POSITIONAL = ""  # the option name of an argument that is not an option


@dataclass(frozen=True)
class Occurrence:
    """One option or positional argument on a command line, and where its value is written."""

    option: str  # pip's name for the option (``--requirement`` for ``-r``), or POSITIONAL
    value: str | None  # None for a flag
    index: int  # the argument that holds the value (or the flag)
    prefix: str = ""  # what precedes the value in that argument: "-r", "--requirement=" or ""


@dataclass(frozen=True)
class PipArgs:
    """A pip command line, parsed; ``understood`` is False if it holds something we cannot read."""

    argv: tuple[str, ...]
    command: str | None  # None: no command (``pip --version``), or not a known one
    general: tuple[Occurrence, ...]  # the options before the command, where --python counts
    occurrences: tuple[Occurrence, ...]  # everything pip's command parser sees, in order
    understood: bool

    def values(self, option: str) -> list[Occurrence]:
        return [found for found in self.occurrences if found.option == option]

    def last(self, *options: str) -> Occurrence | None:
        """The last of ``options`` given: for options sharing one setting, the one pip keeps."""
        found = [occurrence for occurrence in self.occurrences if occurrence.option in options]
        return found[-1] if found else None

    @property
    def positionals(self) -> list[Occurrence]:
        return self.values(POSITIONAL)

    @property
    def python(self) -> str | None:
        """pip's ``--python`` (an interpreter or a venv directory): only before the command does it count."""
        given = [found.value for found in self.general if found.option == "--python"]
        return given[-1] if given else None

    @property
    def isolated(self) -> bool:
        """``--isolated`` as pip's configuration sees it: spelled out, anywhere."""
        return "--isolated" in self.argv


def parse(argv: Sequence[str]) -> PipArgs:
    arguments = list(enumerate(argv))
    general, rest, understood = _scan(arguments, GENERAL, interspersed=False)
    if not understood or not rest or rest[0][1] not in COMMANDS:
        return PipArgs(tuple(argv), None, tuple(general), (), understood)
    command_index, command = rest[0]
    without_command = [argument for argument in arguments if argument[0] != command_index]
    occurrences, _, understood = _scan(without_command, COMMANDS[command], interspersed=True)
    return PipArgs(tuple(argv), command, tuple(general), tuple(occurrences), understood)


class _Refused(Exception):
    """An option pip's parser refuses: unknown, ambiguous, given a value it takes none of, or missing one."""


def _scan(
    arguments: list[tuple[int, str]], table: Mapping[str, _Option], *, interspersed: bool
) -> tuple[list[Occurrence], list[tuple[int, str]], bool]:
    """optparse's reading of ``arguments`` (index, text): the occurrences, the arguments left where it
    stopped (at the first positional one unless ``interspersed``), and whether it read them all."""
    found: list[Occurrence] = []
    rest = list(arguments)
    try:
        while rest:
            index, argument = rest[0]
            if argument == "--":
                if not interspersed:
                    return found, rest[1:], True
                found += [Occurrence(POSITIONAL, text, position) for position, text in rest[1:]]
                return found, [], True
            if not argument.startswith("-") or argument == "-":
                if not interspersed:
                    return found, rest, True
                found.append(Occurrence(POSITIONAL, argument, index))
                rest.pop(0)
                continue
            rest.pop(0)
            reader = _long_option if argument.startswith("--") else _short_options
            found += reader(argument, index, rest, table)
    except _Refused:
        return found, rest, False
    return found, rest, True


def _long_option(
    argument: str, index: int, rest: list[tuple[int, str]], table: Mapping[str, _Option]
) -> list[Occurrence]:
    spelled, equals, attached = argument.partition("=")
    names = [name for name in table if name.startswith("--")]
    matches = [spelled] if spelled in table else [name for name in names if name.startswith(spelled)]
    if len(matches) != 1:
        raise _Refused
    option = table[matches[0]]
    if not option.takes_value:
        if equals:
            raise _Refused
        return [Occurrence(option.name, None, index)]
    if equals:
        return [Occurrence(option.name, attached, index, spelled + "=")]
    return [_next_value(option, rest)]


def _short_options(
    argument: str, index: int, rest: list[tuple[int, str]], table: Mapping[str, _Option]
) -> list[Occurrence]:
    """A cluster such as ``-qUr`` (flags, then one option whose value is the rest or the next argument)."""
    found = []
    for position in range(1, len(argument)):
        option = table.get("-" + argument[position])
        if option is None:
            raise _Refused
        if not option.takes_value:
            found.append(Occurrence(option.name, None, index))
            continue
        attached = argument[position + 1 :]
        if attached:
            found.append(Occurrence(option.name, attached, index, argument[: position + 1]))
        else:
            found.append(_next_value(option, rest))
        break
    return found


def _next_value(option: _Option, rest: list[tuple[int, str]]) -> Occurrence:
    if not rest:
        raise _Refused
    index, value = rest.pop(0)
    return Occurrence(option.name, value, index)


# --- settings: the command line, else pip's configuration ----------------------------------------


@dataclass(frozen=True)
class Location:
    """Where ``pip install`` writes: the interpreter's environment unless one of these says otherwise."""

    target: Path | None = None
    root: Path | None = None
    prefix: Path | None = None
    user: bool = False


def install_location(args: PipArgs, config: pipconfig.PipConfig) -> Location:
    def directory(option: str) -> Path | None:
        given = args.last(f"--{option}")
        text = given.value if given is not None else config.value(args.command, option)
        return Path(os.path.abspath(text)) if text else None

    user = args.last("--user", "--no-user")
    if user is not None:
        by_user = user.option == "--user"
    else:
        by_user = pipconfig.boolean(config.value(args.command, "user") or "") is True
    return Location(directory("target"), directory("root"), directory("prefix"), by_user)


def cache_dir(args: PipArgs, config: pipconfig.PipConfig) -> Path | None:
    """The real path of the cache directory pip will use, or None if its cache is off.

    ``no-cache-dir`` in the configuration turns the cache off whatever its value (pip keeps that
    quirk for compatibility), unless the command line names a cache directory.
    """
    given = args.last("--cache-dir", "--no-cache-dir")
    if given is not None:
        text = given.value
    elif config.value(args.command, "no-cache-dir") is not None:
        text = None
    else:
        text = config.value(args.command, "cache-dir") or str(pipconfig.default_cache_dir())
    return Path(os.path.realpath(os.path.expanduser(text))) if text else None


# --- local project directories -------------------------------------------------------------------

Kind = Literal["requirement", "constraint", "editable"]
_DIRECT_REFERENCE = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*\s*(?:\[[^\]]*\])?\s*@\s*)(?P<url>\S+)")
_EXTRAS = re.compile(r"(?P<path>.+)(?P<extras>\[[^\]]+\])")
_SUBDIRECTORY = re.compile(r"[#&]subdirectory=([^&]*)")
_PROJECT_FILES = ("pyproject.toml", "setup.py")


@dataclass(frozen=True)
class LocalProject:
    """A requirement that names a local project directory, which pip would build where it lies."""

    directory: Path  # absolute and normalized, as pip takes it (links not resolved)
    url: str  # what pip records as its origin in direct_url.json
    subdirectory: str | None
    before: str  # the requirement's text around the location: a name and ``@``, extras, markers
    after: str
    as_url: bool  # the location is written as a file: URL

    def pointing_to(self, directory: Path) -> str:
        """The requirement with ``directory`` in place of the project's."""
        location = path_to_url(directory) if self.as_url else str(directory)
        return f"{self.before}{location}{self.after}"

    def direct_url(self) -> dict[str, object]:
        """The content of direct_url.json when pip installs this project (not editable)."""
        recorded: dict[str, object] = {"dir_info": {}, "url": self.url}
        if self.subdirectory:
            recorded["subdirectory"] = self.subdirectory
        return recorded


def local_project(text: str, kind: Kind = "requirement") -> LocalProject | None:
    """The local project directory that the requirement ``text`` names, if it names one.

    As pip reads requirements: ``name[extras] @ file:///dir ; markers``, ``file:///dir`` (only
    named requirements may be constraints), and paths relative to the working directory that
    look like paths (``./dir``, ``dir/``; any directory for an editable).
    """
    stripped = text.strip()
    is_url = urllib.parse.urlsplit(stripped).scheme.lower() == "file"
    head, separator, markers = (
        (stripped, "", "") if kind == "editable" else stripped.partition("; " if is_url else ";")
    )
    head, after = head.strip(), separator + markers
    if is_url:
        return None if kind == "constraint" else _from_url(head, "", after)
    reference = _DIRECT_REFERENCE.fullmatch(head)
    if reference is not None:
        return _from_url(reference["url"], reference["name"], " " + after if after else "")
    if kind == "constraint" or (kind == "requirement" and not _looks_like_path(head)):
        return None
    extras = _EXTRAS.fullmatch(head)
    path, suffix = (extras["path"], extras["extras"]) if extras else (head, "")
    directory = Path(os.path.normpath(os.path.abspath(path)))
    if not _installable(directory):
        return None
    return LocalProject(directory, path_to_url(directory), None, "", suffix + after, as_url=False)


def path_to_url(path: Path) -> str:
    """pip's ``path_to_url``: how it writes a local path as a URL."""
    return urllib.parse.urljoin("file:", urllib.parse.quote(os.path.normpath(os.path.abspath(path))))


def _from_url(url: str, before: str, after: str) -> LocalProject | None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "file" or parts.netloc not in ("", "localhost"):
        return None
    path = urllib.parse.unquote(parts.path)
    subdirectory_match = _SUBDIRECTORY.search(url)
    subdirectory = subdirectory_match[1] if subdirectory_match else None
    directory = Path(os.path.normpath(os.path.join(path, subdirectory or "")))
    if not os.path.isabs(path) or not _installable(directory):
        return None
    recorded = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, ""))
    return LocalProject(directory, recorded, subdirectory, before, after, as_url=True)


def _looks_like_path(text: str) -> bool:
    return os.sep in text or bool(os.altsep and os.altsep in text) or text.startswith(".")


def _installable(directory: Path) -> bool:
    return directory.is_dir() and any((directory / name).is_file() for name in _PROJECT_FILES)


# --- requirement files ---------------------------------------------------------------------------

_COMMENT = re.compile(r"(^|\s+)#.*$")
_VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)\}")
_URL_SCHEME = re.compile(r"^(http|https|file):", re.IGNORECASE)


@dataclass(frozen=True)
class Line:
    """A logical line of a requirement file: continuation lines joined, its comment dropped."""

    text: str  # as written (``${VAR}`` not expanded)
    requirement: str  # expanded; "" on a line of options only
    tokens: tuple[str, ...]  # its options, expanded and split as a shell would
    options: tuple[Occurrence, ...]  # indexes point into ``tokens``

    def first(self, option: str) -> Occurrence | None:
        return next((found for found in self.options if found.option == option), None)


@dataclass(frozen=True)
class RequirementFile:
    """A requirement or constraint file, with the local projects it names, directly or in nested files."""

    path: Path  # absolute
    constraint: bool
    lines: tuple[Line, ...]
    projects: Mapping[int, LocalProject]  # by line number
    references: Mapping[int, tuple[str, str]]  # the -r/-c lines: the option and the file, resolved
    nested: Mapping[int, RequirementFile]  # the files that could be read, by line number
    editables: tuple[Path, ...]  # here and in nested files

    @property
    def needs_copy(self) -> bool:
        return bool(self.projects) or any(nested.needs_copy for nested in self.nested.values())

    def all_projects(self) -> Iterator[LocalProject]:
        yield from self.projects.values()
        for nested in self.nested.values():
            yield from nested.all_projects()

    def all_lines(self) -> Iterator[tuple[Path, Line]]:
        """Every line of this file and of the files it nests, with the file it is in."""
        for number, line in enumerate(self.lines):
            yield self.path, line
            if number in self.nested:
                yield from self.nested[number].all_lines()


def read_requirement_file(
    path: Path, *, constraint: bool, reading: tuple[Path, ...] = ()
) -> RequirementFile | None:
    """``path`` read as pip reads it; None if it cannot be read or holds what pip would refuse."""
    if path in reading:
        return None  # pip refuses a file that includes itself
    try:
        content = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return None
    lines = []
    for text in _logical_lines(content):
        expanded = _VARIABLE.sub(lambda match: os.environ.get(match[1]) or match[0], text)
        requirement, options_text = _split_line(expanded)
        try:
            tokens = shlex.split(options_text)
        except ValueError:
            return None
        options, _, understood = _scan(list(enumerate(tokens)), FILE_LINE, interspersed=True)
        if not understood:
            return None
        named = tuple(option for option in options if option.option != POSITIONAL)
        lines.append(Line(text, requirement, tuple(tokens), named))
    projects: dict[int, LocalProject] = {}
    references: dict[int, tuple[str, str]] = {}
    nested: dict[int, RequirementFile] = {}
    editables: list[Path] = []
    for number, line in enumerate(lines):
        editable = line.first("--editable")
        nesting = line.first("--requirement") or line.first("--constraint")
        if editable is not None and editable.value is not None:
            project = local_project(editable.value, "editable")
            editables += [project.directory] if project else []
        elif line.requirement:
            project = local_project(line.requirement, "constraint" if constraint else "requirement")
            if project is not None:
                projects[number] = project
        elif nesting is not None and nesting.value is not None:
            is_constraint = nesting.option == "--constraint"
            named_file = nesting.value
            if not _URL_SCHEME.match(named_file):
                named_file = os.path.abspath(os.path.join(path.parent, named_file))
                inner = read_requirement_file(
                    Path(named_file), constraint=is_constraint, reading=(*reading, path)
                )
                if inner is not None:
                    nested[number] = inner
                    editables += inner.editables
            references[number] = ("-c" if is_constraint else "-r", named_file)
    return RequirementFile(path, constraint, tuple(lines), projects, references, nested, tuple(editables))


def write_copy(file: RequirementFile, shims: Mapping[Path, Path], directory: Path) -> Path:
    """A copy of ``file`` in ``directory`` whose local projects point to their ``shims``.

    Every file name in the copy is made absolute (pip reads nested files and ``--find-links``
    relative to the file that names them), and nested files that name local projects are copied
    too. Lines that change are written with their ``${VAR}``s expanded; the others as they were.
    """
    written = []
    for number, line in enumerate(file.lines):
        if number in file.projects:
            project = file.projects[number]
            written.append(
                " ".join([project.pointing_to(shims[project.directory]), *map(shlex.quote, line.tokens)])
            )
        elif number in file.references:
            option, named = file.references[number]
            nested = file.nested.get(number)
            if nested is not None and nested.needs_copy:
                named = str(write_copy(nested, shims, directory))
            written.append(shlex.join([option, named]))
        else:
            written.append(_find_links_absolute(line, file.path.parent))
    fd, copy = tempfile.mkstemp(dir=directory, suffix=f"-{file.path.name}")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("\n".join(written) + "\n")
    return Path(copy)


def _logical_lines(content: str) -> Iterator[str]:
    """pip's ``join_lines`` and ``ignore_comments``: a trailing backslash continues a line."""
    joined: list[str] = []
    for physical in content.splitlines():
        if physical.endswith("\\") and not _COMMENT.match(physical):
            joined.append(physical.strip("\\"))
            continue
        line = "".join([*joined, " " + physical if _COMMENT.match(physical) else physical])
        joined = []
        stripped = _COMMENT.sub("", line).strip()
        if stripped:
            yield stripped
    last = _COMMENT.sub("", "".join(joined)).strip()
    if last:
        yield last


def _split_line(line: str) -> tuple[str, str]:
    """pip's ``break_args_options``: the requirement is what comes before the first option."""
    tokens = line.split(" ")
    first_option = next((index for index, token in enumerate(tokens) if token.startswith("-")), len(tokens))
    return " ".join(tokens[:first_option]), " ".join(tokens[first_option:])


def _find_links_absolute(line: Line, base: Path) -> str:
    """``line`` with its ``--find-links`` made absolute if pip would read it relative to the file."""
    found = line.first("--find-links")
    if line.requirement or found is None or found.value is None or not (base / found.value).exists():
        return line.text
    tokens = list(line.tokens)
    tokens[found.index] = found.prefix + str(base / found.value)
    return shlex.join(tokens)


# --- a command line's requirements ---------------------------------------------------------------


@dataclass(frozen=True)
class Requirements:
    """The local projects a ``pip install`` or ``pip wheel`` command line names, and its editables."""

    direct: Mapping[int, LocalProject]  # the positional arguments that name one, by index
    files: tuple[tuple[Occurrence, RequirementFile], ...]  # the -r and -c files that could be read
    editables: tuple[Path, ...]

    @property
    def projects(self) -> list[LocalProject]:
        found = list(self.direct.values())
        for _, file in self.files:
            found += file.all_projects()
        return found

    def rewritten(self, argv: Sequence[str], shims: Mapping[Path, Path], directory: Path) -> list[str]:
        """``argv`` with every local project pointing to its shim; requirement files that name one
        are replaced by copies written into ``directory``."""
        rewritten = list(argv)
        for index, project in self.direct.items():
            rewritten[index] = project.pointing_to(shims[project.directory])
        for found, file in self.files:
            if file.needs_copy:
                rewritten[found.index] = found.prefix + str(write_copy(file, shims, directory))
        return rewritten


def requirements(args: PipArgs) -> Requirements:
    direct = {}
    for found in args.positionals:
        project = local_project(found.value or "")
        if project is not None:
            direct[found.index] = project
    files = []
    for found in args.values("--requirement") + args.values("--constraint"):
        path = Path(os.path.abspath(found.value or ""))
        file = read_requirement_file(path, constraint=found.option == "--constraint")
        if file is not None:
            files.append((found, file))
    editables = [
        project.directory
        for found in args.values("--editable")
        if (project := local_project(found.value or "", "editable")) is not None
    ]
    editables += [directory for _, file in files for directory in file.editables]
    return Requirements(direct, tuple(files), tuple(editables))
