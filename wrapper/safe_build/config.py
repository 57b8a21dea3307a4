"""safe-build's own settings: isolation mode, what the snapshot takes, lock timeout, cache.

Each setting comes from, lowest precedence first: a default, ``[tool.safe-build]`` in the
project's ``pyproject.toml``, a ``SAFE_BUILD_*`` environment variable (empty counts as unset), a
command-line flag. The include and exclude lists are the exception on the command line: their
flags extend the list from the file or the environment, as pip's repeatable options extend its
configured ones. Every value remembers where it came from, for ``-v`` output.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from safe_build import project
from safe_build.errors import SafeBuildError
from safe_build.patterns import Selection, is_glob, levels_above

T = TypeVar("T")

Isolation = Literal["auto", "copy", "repository", "in-place"]
RemoteMode = Literal["read", "read-write"]
REMOTE_MODES: tuple[RemoteMode, ...] = ("read", "read-write")
DEFAULT_REMOTE_WAIT = 300.0  # for another runner's build of the same key: most builds take less
DEFAULT_REMOTE_TIMEOUT = 10.0  # per request: a cache that answers slower than this is not worth it
ISOLATION_MODES: tuple[Isolation, ...] = ("auto", "copy", "repository", "in-place")
DEFAULT_LOCK_TIMEOUT = 3600.0  # generous: a wait this long means something is stuck, not merely busy
DEFAULT_ENV_MAX_AGE_DAYS = 7  # unpinned build requirements are resolved again at least this often
TABLE = "[tool.safe-build]"
DEFAULT = "default"  # the origin of a value nobody set
SECONDS_HINT = "give a number of seconds, 0 or more, such as 600 (0 means: do not wait at all)"
DAYS_HINT = "give a number of days, 0 or more, such as 7 or 0.5 (0 means: a new build environment each time)"


class _Invalid(ValueError):
    """A value a setting cannot take; ``value`` is the offending part, ``hint`` what to give instead."""

    def __init__(self, value: object, hint: str) -> None:
        super().__init__(hint)
        self.value = value
        self.hint = hint


@dataclass(frozen=True)
class Setting(Generic[T]):
    value: T
    origin: str  # "default", a flag, an environment variable, or the path of a pyproject.toml


@dataclass(frozen=True)
class Settings:
    """safe-build's settings for one build, each with its origin."""

    isolation: Setting[Isolation]  # as configured; isolation.choose turns "auto" into a mode
    include: Setting[tuple[str, ...]]
    exclude: Setting[tuple[str, ...]]
    lock_timeout: Setting[float]
    cache_dir: Setting[Path]
    no_cache: Setting[bool]
    refresh: Setting[bool]
    fresh_env: Setting[bool]  # a new isolated environment per build, as python -m build makes
    env_max_age: Setting[float]  # seconds after which a reused build environment is made again
    remote_cache: Setting[str]  # s3://bucket/prefix, or "" for none
    remote_cache_mode: Setting[RemoteMode]
    remote_cache_wait: Setting[float]  # seconds to wait for another runner building the same key
    remote_cache_timeout: Setting[float]  # seconds per request to the remote cache
    remote_cache_required: Setting[bool]  # remote failures fail the build instead of a warning

    @property
    def selection(self) -> Selection:
        return Selection(self.include.value, self.exclude.value)

    def explained(self) -> list[str]:
        """For ``-v``: each value that is not the default, and where it came from.

        The isolation mode is left to ``isolation.choose``, which also gives the reason for it.
        """
        lines = []
        for field in dataclasses.fields(self):
            setting = getattr(self, field.name)
            if field.name != "isolation" and setting.origin != DEFAULT:
                name = field.name.replace("_", "-")
                lines.append(f"{name} = {_shown(setting.value)} (from {setting.origin})")
        return lines


@dataclass(frozen=True)
class _Key(Generic[T]):
    """One setting: its name in ``[tool.safe-build]`` gives its flag and its environment variable."""

    name: str
    default: Callable[[], T]
    from_text: Callable[[str], T]  # a flag's or an environment variable's value
    from_toml: Callable[[object], T] | None = None  # None: not a [tool.safe-build] key

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    @property
    def variable(self) -> str:
        return "SAFE_BUILD_" + self.name.upper().replace("-", "_")


@dataclass(frozen=True)
class _File:
    """The values set in ``[tool.safe-build]`` of one ``pyproject.toml``, checked and converted."""

    path: Path | None = None
    values: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _isolation(value: object) -> Isolation:
    if value not in ISOLATION_MODES:
        raise _Invalid(value, f"use one of: {', '.join(ISOLATION_MODES)}")
    return value


def _remote_mode(value: object) -> RemoteMode:
    if value not in REMOTE_MODES:
        raise _Invalid(
            value, f"use one of: {', '.join(REMOTE_MODES)} (read for untrusted jobs such as pull requests)"
        )
    return value


def _remote_url(value: object) -> str:
    from safe_build import remote  # noqa: PLC0415 (parsing only: boto3 is imported when it is used)

    if not isinstance(value, str):
        raise _Invalid(value, "give a URL such as s3://bucket/prefix")
    if not value:
        return ""
    try:
        return remote.parse_url(value).url
    except ValueError as error:
        raise _Invalid(value, str(error)) from None


def _seconds(value: object) -> float:
    return _amount(value, SECONDS_HINT)


def _seconds_text(text: str) -> float:
    return _amount_text(text, SECONDS_HINT)


def _amount(value: object, hint: str) -> float:
    """A number, 0 or more (infinity too: no limit); ``hint`` says in what unit."""
    number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    if math.isnan(number) or number < 0:
        raise _Invalid(value, hint)
    return float(number)


def _amount_text(text: str, hint: str) -> float:
    try:
        return _amount(float(text), hint)
    except ValueError:  # not a number, or (an _Invalid) not one of 0 or more: show the text as given
        raise _Invalid(text, hint) from None


def _patterns(value: object, *, above: bool = False) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _Invalid(value, "give a list of paths or glob patterns, such as ['src/gen.py', 'docs/**']")
    return tuple(_pattern(item, above=above) for item in value)


def _patterns_text(text: str) -> tuple[str, ...]:
    return _patterns(text.split(os.pathsep))


def _include_patterns(value: object) -> tuple[str, ...]:
    return _patterns(value, above=True)


def _include_patterns_text(text: str) -> tuple[str, ...]:
    return _include_patterns(text.split(os.pathsep))


def _pattern(text: str, *, above: bool) -> str:
    """``text`` without ``./`` or a trailing ``/``; refused if it could reach outside the project,
    except, with ``above``, by leading ``../`` components and then a fixed name (``../LICENSE``,
    ``../shared/**``): a snapshot brings that along, and walking a whole parent directory is no
    one's intent."""
    normal = posixpath.normpath(text) if text else ""
    parts, ups = normal.split("/"), levels_above(normal)
    if above and 0 < ups < len(parts) and not is_glob(parts[ups]):
        return normal
    if normal in ("", ".", "..") or normal.startswith(("/", "../")):
        example = "'docs/**' or, above the project, '../LICENSE'" if above else "'docs/**'"
        raise _Invalid(text, f"give a path or glob pattern relative to the project directory, like {example}")
    return normal


def _directory(text: str) -> Path:
    if not text:
        raise _Invalid(text, "give a directory")
    try:
        return Path(text).expanduser().absolute()
    except RuntimeError:  # ~user of a user this system does not know, or ~ without a home
        raise _Invalid(
            text, "a leading ~ must name a user with a home directory here: give another"
        ) from None


def _yes_no(text: str) -> bool:
    answers = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
    if text.lower() not in answers:
        raise _Invalid(text, "use 1, true, yes, 0, false or no")
    return answers[text.lower()]


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(value, "use true or false")
    return value


def _days(value: object) -> float:
    return _amount(value, DAYS_HINT) * 86400


def _days_text(text: str) -> float:
    return _amount_text(text, DAYS_HINT) * 86400


def _user_cache_dir() -> Path:
    import platformdirs  # noqa: PLC0415 (only here: most runs name the cache dir, or never need it)

    return platformdirs.user_cache_path("safe-build", appauthor=False)


ISOLATION = _Key[Isolation]("isolation", lambda: "auto", _isolation, _isolation)
INCLUDE = _Key[tuple[str, ...]]("include", tuple, _include_patterns_text, _include_patterns)
EXCLUDE = _Key[tuple[str, ...]]("exclude", tuple, _patterns_text, _patterns)
LOCK_TIMEOUT = _Key("lock-timeout", lambda: DEFAULT_LOCK_TIMEOUT, _seconds_text, _seconds)
CACHE_DIR = _Key("cache-dir", _user_cache_dir, _directory)
NO_CACHE = _Key("no-cache", lambda: False, _yes_no)
FRESH_ENV = _Key("fresh-env", lambda: False, _yes_no, _bool)
ENV_MAX_AGE = _Key("env-max-age", lambda: DEFAULT_ENV_MAX_AGE_DAYS * 86400.0, _days_text, _days)
REMOTE_CACHE = _Key("remote-cache", str, _remote_url, _remote_url)
REMOTE_CACHE_MODE = _Key[RemoteMode]("remote-cache-mode", lambda: "read-write", _remote_mode, _remote_mode)
REMOTE_CACHE_WAIT = _Key("remote-cache-wait", lambda: DEFAULT_REMOTE_WAIT, _seconds_text, _seconds)
REMOTE_CACHE_TIMEOUT = _Key("remote-cache-timeout", lambda: DEFAULT_REMOTE_TIMEOUT, _seconds_text, _seconds)
REMOTE_CACHE_REQUIRED = _Key("remote-cache-required", lambda: False, _yes_no, _bool)
FILE_KEYS = {
    key.name: key.from_toml
    for key in (
        ISOLATION,
        INCLUDE,
        EXCLUDE,
        LOCK_TIMEOUT,
        FRESH_ENV,
        ENV_MAX_AGE,
        REMOTE_CACHE,
        REMOTE_CACHE_MODE,
        REMOTE_CACHE_WAIT,
        REMOTE_CACHE_TIMEOUT,
        REMOTE_CACHE_REQUIRED,
    )
    if key.from_toml
}


def load(
    args: argparse.Namespace, project_dir: Path | None, pyproject: Mapping[str, Any] | None = None
) -> Settings:
    """The settings for building ``project_dir`` (None: not a project, such as an sdist) with ``args``.

    ``pyproject`` is the project's parsed ``pyproject.toml`` if the caller has it; else it is read.
    """
    file = _read_file(project_dir, pyproject)
    flags = vars(args)
    if flags.get("in_place"):  # options.parse has refused a different --isolation
        isolation = Setting[Isolation]("in-place", "--in-place")
    else:
        isolation = _value(ISOLATION, flags.get("isolation"), file)
    return Settings(
        isolation=isolation,
        include=_extended(_value(INCLUDE, None, file), INCLUDE, flags.get("include")),
        exclude=_extended(_value(EXCLUDE, None, file), EXCLUDE, flags.get("exclude")),
        lock_timeout=_value(LOCK_TIMEOUT, flags.get("lock_timeout"), file),
        cache_dir=_value(CACHE_DIR, flags.get("cache_dir"), file),
        no_cache=_value(NO_CACHE, "yes" if flags.get("no_cache") else None, file),
        refresh=Setting(True, "--refresh") if flags.get("refresh") else Setting(False, DEFAULT),
        fresh_env=_value(FRESH_ENV, "yes" if flags.get("fresh_env") else None, file),
        env_max_age=_value(ENV_MAX_AGE, None, file),
        remote_cache=_value(REMOTE_CACHE, flags.get("remote_cache"), file),
        remote_cache_mode=_value(REMOTE_CACHE_MODE, flags.get("remote_cache_mode"), file),
        remote_cache_wait=_value(REMOTE_CACHE_WAIT, None, file),
        remote_cache_timeout=_value(REMOTE_CACHE_TIMEOUT, None, file),
        remote_cache_required=_value(REMOTE_CACHE_REQUIRED, None, file),
    )


def cache_dir(flag: str | None = None) -> Path:
    """Root of safe-build's own state (locks, cache, private directories): flag, environment or default."""
    return _value(CACHE_DIR, flag, _File()).value


def lock_timeout(flag: str | None) -> float:
    """Seconds to wait for a busy lock, from flag, environment or default (no project's settings)."""
    return _value(LOCK_TIMEOUT, flag, _File()).value


def _read_file(project_dir: Path | None, pyproject: Mapping[str, Any] | None) -> _File:
    """``[tool.safe-build]`` of the project, all of it checked, even what a flag or variable overrides."""
    if project_dir is None:
        return _File()
    path = project_dir / "pyproject.toml"
    if pyproject is None:
        if not path.is_file():
            return _File()
        pyproject = project.read_pyproject(path)
    tool = pyproject.get("tool")
    table = tool.get("safe-build", {}) if isinstance(tool, dict) else {}
    if not isinstance(table, dict):
        raise SafeBuildError(
            f"{TABLE} of {path} is not a table", hint="write it as a [tool.safe-build] section", path=path
        )
    unknown = sorted(set(table) - set(FILE_KEYS))
    if unknown:
        key = unknown[0]
        import difflib  # noqa: PLC0415 (only for this error)

        close = difflib.get_close_matches(key, FILE_KEYS, n=1)
        raise SafeBuildError(
            f"unknown key {key!r} in {TABLE} of {path}",
            hint=(f"did you mean {close[0]!r}? " if close else "") + f"valid keys: {', '.join(FILE_KEYS)}",
            path=path,
        )
    values = {
        key: _parsed(FILE_KEYS[key], value, f"{key} in {TABLE} of {path}") for key, value in table.items()
    }
    return _File(path, values)


def _value(key: _Key[T], flag: str | None, file: _File) -> Setting[T]:
    """``key``'s value from the flag, else the environment, else the file, else the default."""
    if flag is not None:
        return Setting(_parsed(key.from_text, flag, key.flag), key.flag)
    text = os.environ.get(key.variable)
    if text:
        return Setting(_parsed(key.from_text, text, key.variable), key.variable)
    if key.name in file.values:
        return Setting(file.values[key.name], str(file.path))
    return Setting(key.default(), DEFAULT)


def _extended(
    setting: Setting[tuple[str, ...]], key: _Key[tuple[str, ...]], flags: Sequence[str] | None
) -> Setting[tuple[str, ...]]:
    """``setting`` with the patterns of the repeatable flag ``key.flag`` added."""
    if not flags:
        return setting
    above = key is INCLUDE  # an include may name a path above the project
    added = tuple(_parsed(lambda text: _pattern(text, above=above), flag, key.flag) for flag in flags)
    origin = key.flag if setting.origin == DEFAULT else f"{setting.origin} and {key.flag}"
    return Setting(setting.value + added, origin)


def _parsed(parse: Callable[[Any], T], raw: object, where: str) -> T:
    try:
        return parse(raw)
    except _Invalid as invalid:
        raise SafeBuildError(f"invalid value {invalid.value!r} for {where}", hint=invalid.hint) from None


def _shown(value: object) -> str:
    return ", ".join(value) if isinstance(value, tuple) else str(value)
