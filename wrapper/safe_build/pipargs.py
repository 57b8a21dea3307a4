"""What a pip command line asks for, as the target's own pip read it: the command, where it installs,
which cache it uses, and which of its requirements are local project directories.

The gated pip (``pipgate_program``) reads the command line, its requirement files and pip's
configuration with pip's own parsers and sends a JSON description; ``Description.from_json``
turns it into the few things safe-pip needs. The description also says where each option's value is
written on the command line (the argument and what precedes the value in it), so that safe-pip can
hand pip private copies: of requirement files that name local projects (pointing at their shims) and
of requirement files read from a pipe or a FIFO (which can be read only once).

A requirement file's lines come with their line number as pip counts it (the first physical line of
a logical one); a copy replaces those lines and keeps every other byte.
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import tempfile
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Status = Literal["parsed", "exited", "unknown"]


@dataclass(frozen=True)
class Occurrence:
    """One option given on the command line, and where its value is written."""

    option: str  # pip's name for it: its first long spelling (``--requirement`` for ``-r``)
    dest: str | None
    value: str | None  # None for a flag
    index: int  # the argument that holds the value (or the flag)
    # what precedes the value in that argument: "-r", "--requirement=" or ""; None: it cannot be told
    prefix: str | None


@dataclass(frozen=True)
class Location:
    """Where ``pip install`` writes: the interpreter's environment unless one of these says otherwise."""

    target: Path | None = None
    root: Path | None = None
    prefix: Path | None = None
    user: bool = False


@dataclass(frozen=True)
class Nested:
    """A ``-r``/``-c`` line of a requirement file: the file it names (resolved as pip resolves it)."""

    constraint: bool
    path: str
    file: RequirementFile | None  # None: not a local regular file that could be read (pip reads it)


@dataclass(frozen=True)
class Line:
    """A logical line of a requirement file, as pip's line parser read it."""

    number: int  # pip's line number: the first physical line
    requirement: str | None  # the requirement, ``${VAR}`` expanded; None on a line of options
    options_text: str  # the rest of the line: its options
    editable: str | None
    settings: tuple[tuple[str, str | None], ...]  # its index options (``--find-links``, …): name, value
    nested: Nested | None


@dataclass(frozen=True)
class RequirementFile:
    """A requirement or constraint file as pip read it; ``lines`` None if pip's parser refused it."""

    path: str  # as pip opens it
    constraint: bool
    piped: bool  # not a regular file: read once, by the gated pip; pip must be given a copy
    content: bytes
    lines: tuple[Line, ...] | None
    occurrence: Occurrence | None = None  # where the command line names it (top-level files only)
    projects: Mapping[int, LocalProject] = field(default_factory=dict)  # by line number

    @property
    def needs_copy(self) -> bool:
        return self.piped or bool(self.projects) or any(nested.needs_copy for nested in self.nested_files())

    def nested_files(self) -> Iterator[RequirementFile]:
        for line in self.lines or ():
            if line.nested is not None and line.nested.file is not None:
                yield line.nested.file

    def all_projects(self) -> Iterator[LocalProject]:
        yield from self.projects.values()
        for nested in self.nested_files():
            yield from nested.all_projects()

    def all_lines(self) -> Iterator[tuple[Path, Line]]:
        """Every line of this file and of the files it nests, with the directory of the file it is in."""
        for line in self.lines or ():
            yield Path(os.path.abspath(self.path)).parent, line
            if line.nested is not None and line.nested.file is not None:
                yield from line.nested.file.all_lines()

    def editables(self) -> Iterator[LocalProject]:
        for _, line in self.all_lines():
            project = local_project(line.editable, "editable") if line.editable else None
            if project is not None:
                yield project


@dataclass(frozen=True)
class Description:
    """pip's reading of a command line (see ``pipgate_program.describe``).

    ``status``: "parsed"; "exited" if reading it ended pip (a usage error, ``--version``: pip has
    printed what it prints, and will not run); "unknown" if it could not be read (no description,
    or a private name of pip moved): safe-pip then takes every lock and builds nothing.
    """

    status: Status
    command: str | None = None
    python: str | None = None  # pip's ``--python`` (or its ``python`` setting)
    handoff: bool = False  # pip would run ``python``'s pip in its place
    occurrences: tuple[Occurrence, ...] = ()
    positionals: tuple[tuple[int | None, str], ...] = ()  # index (None: unknown), value
    files: tuple[RequirementFile, ...] = ()
    editables: tuple[str, ...] = ()
    location: Location = Location()
    cache_dir: Path | None = None  # None: pip's cache is off
    build_isolation: bool = True
    config_settings: Mapping[str, str | list[str]] = field(default_factory=dict)
    dry_run: bool = False
    report: str | None = None  # pip's ``--report`` file, as pip opens it ("-": its output)

    @classmethod
    def from_json(cls, found: Mapping[str, Any] | None) -> Description:
        try:
            return cls._from_json(found)
        except (KeyError, TypeError, ValueError, AttributeError):  # not what the program sends
            return cls("unknown")

    @classmethod
    def _from_json(cls, found: Mapping[str, Any] | None) -> Description:
        if found is None or found.get("status") not in ("parsed", "exited"):
            return cls("unknown")
        if found["status"] == "exited":
            return cls("exited")

        def directory(key: str) -> Path | None:
            text = found.get(key)
            return Path(os.path.abspath(os.path.expanduser(text))) if text else None

        cache = found.get("cache_dir")
        return cls(
            "parsed",
            command=found["command"],
            python=found.get("python"),
            handoff=bool(found.get("handoff")),
            occurrences=tuple(Occurrence(*item) for item in found["occurrences"]),
            positionals=tuple((index, value) for index, value in found["positionals"]),
            files=tuple(_file(item) for item in found["files"]),
            editables=tuple(found["editables"]),
            location=Location(directory("target"), directory("root"), directory("prefix"), found["user"]),
            cache_dir=Path(os.path.realpath(os.path.expanduser(cache))) if cache else None,
            build_isolation=found["build_isolation"],
            config_settings=found["config_settings"],
            dry_run=found["dry_run"],
            report=found.get("report"),
        )

    def values(self, option: str) -> list[Occurrence]:
        """The command line's occurrences of ``option`` (its first long spelling)."""
        return [found for found in self.occurrences if found.option == option]


def _file(found: Mapping[str, Any], constraint_default: bool = False) -> RequirementFile:
    constraint = bool(found.get("constraint", constraint_default))
    lines = None
    if found.get("lines") is not None:
        lines = tuple(
            Line(
                line["line"],
                line["requirement"],
                line["options_text"],
                line["editable"],
                tuple((name, value) for name, value in line["settings"]),
                _nested(line["nested"]),
            )
            for line in found["lines"]
        )
    occurrence = None
    if "index" in found:
        occurrence = Occurrence(found["option"], None, found["path"], found["index"], found["prefix"])
    projects = {}
    for line in lines or ():
        if line.requirement and not line.editable:
            project = local_project(line.requirement, "constraint" if constraint else "requirement")
            if project is not None:
                projects[line.number] = project
    return RequirementFile(
        found["path"],
        constraint,
        bool(found["piped"]),
        base64.b64decode(found["content"]),
        lines,
        occurrence,
        projects,
    )


def _nested(found: Mapping[str, Any] | None) -> Nested | None:
    if found is None:
        return None
    inner = found.get("file")
    return Nested(bool(found["constraint"]), found["path"], _file(inner) if inner is not None else None)


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


# --- private copies of requirement files ---------------------------------------------------------


def write_copy(file: RequirementFile, shims: Mapping[Path, Path], directory: Path) -> Path:
    """A copy of ``file`` (0600) in ``directory`` whose local projects point to their ``shims``.

    Only the lines that must change are rewritten, each replacing the physical lines of its logical
    line: local projects; nested files (named absolutely, and copied too if they need it); and
    ``--find-links`` that pip would read relative to the file. Every other byte is kept.
    """
    physical = file.content.splitlines(keepends=True)
    base = Path(os.path.abspath(file.path)).parent
    for line in reversed(file.lines or ()):
        text = _rewritten_line(line, file, shims, directory, base)
        if text is None:
            continue
        first = line.number - 1
        last = first
        while last + 1 < len(physical) and physical[last].rstrip(b"\r\n").endswith(b"\\"):
            last += 1
        physical[first : last + 1] = [text.encode("utf-8") + b"\n"]
    fd, copy = tempfile.mkstemp(dir=directory, suffix=f"-{Path(file.path).name}")
    with os.fdopen(fd, "wb") as out:
        out.write(b"".join(physical))
    return Path(copy)


def _rewritten_line(
    line: Line, file: RequirementFile, shims: Mapping[Path, Path], directory: Path, base: Path
) -> str | None:
    project = file.projects.get(line.number)
    if project is not None and project.directory in shims:
        return project.pointing_to(shims[project.directory]) + line.options_text
    if line.nested is not None:
        named = line.nested.path
        if line.nested.file is not None and line.nested.file.needs_copy:
            named = str(write_copy(line.nested.file, shims, directory))
        return shlex.join(["-c" if line.nested.constraint else "-r", named])
    if not line.requirement and any(name == "--find-links" for name, _ in line.settings):
        return _find_links_absolute(line.options_text, base)
    return None


def _find_links_absolute(options_text: str, base: Path) -> str | None:
    """A line of options with its ``--find-links`` values made absolute where pip would read them
    relative to the file (a requirement file's line has no clusters of short options)."""
    try:
        tokens = shlex.split(options_text)
    except ValueError:
        return None
    changed = False
    index = 0
    while index < len(tokens):
        token = tokens[index]
        spelled, equals, _ = token.partition("=")
        prefix, value_index = None, None
        if token == "-f" or (token.startswith("--fi") and "--find-links".startswith(token)):
            value_index = index + 1
        elif token.startswith("-f") and not token.startswith("--"):
            prefix = "-f"
        elif equals and spelled.startswith("--fi") and "--find-links".startswith(spelled):
            prefix = spelled + "="
        if value_index is not None and value_index < len(tokens):
            if (base / tokens[value_index]).exists():
                tokens[value_index], changed = str(base / tokens[value_index]), True
            index += 1
        elif prefix is not None:
            value = token[len(prefix) :]
            if (base / value).exists():
                tokens[index], changed = prefix + str(base / value), True
        index += 1
    return shlex.join(tokens) if changed else None


# --- a command line's requirements ---------------------------------------------------------------


@dataclass(frozen=True)
class Requirements:
    """The local projects a ``pip install`` or ``pip wheel`` command line names, and its editables."""

    direct: Mapping[int, LocalProject]  # the positional arguments that name one, by index
    files: tuple[RequirementFile, ...]  # the -r and -c files of the command line that could be read
    editables: tuple[Path, ...]

    @property
    def projects(self) -> list[LocalProject]:
        found = list(self.direct.values())
        for file in self.files:
            if file.occurrence is not None and file.occurrence.prefix is not None:
                found += file.all_projects()
        return found


def requirements(description: Description) -> Requirements:
    direct = {}
    for index, value in description.positionals:
        project = local_project(value)
        if project is not None and index is not None:
            direct[index] = project
    editables = [
        project.directory
        for value in description.editables
        if (project := local_project(value, "editable")) is not None
    ]
    for file in description.files:
        editables += [project.directory for project in file.editables()]
    return Requirements(direct, description.files, tuple(editables))


def rewritten(
    argv: Sequence[str],
    requirements: Requirements | None,
    files: Sequence[RequirementFile],
    shims: Mapping[Path, Path],
    directory: Path,
) -> list[str]:
    """``argv`` with every local project pointing to its shim; requirement files that name one, or
    that were read from a pipe, replaced by copies written into ``directory``."""
    arguments = list(argv)
    for index, project in (requirements.direct if requirements else {}).items():
        arguments[index] = project.pointing_to(shims[project.directory])
    for file in files:
        found = file.occurrence
        copied = file.piped or (requirements is not None and file.needs_copy)
        if found is not None and found.prefix is not None and copied:
            arguments[found.index] = found.prefix + str(write_copy(file, shims, directory))
    return arguments
