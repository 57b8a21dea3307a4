"""pip's configuration, read the way pip reads it, without starting pip.

safe-pip needs a few of pip's settings before pip runs: which cache directory it will use (to lock
it) and where it will install (to lock that). pip takes them from its command line, else from
``PIP_*`` environment variables, else from its configuration files, section ``[<command>]`` over
``[global]``; a later file overrides an earlier one. The files, in pip's order
(``pip/_internal/configuration.py``): the global ones (``$XDG_CONFIG_DIRS/pip/pip.conf``, then
``/etc/pip.conf``), the user's (``~/.pip/pip.conf``, then ``~/.config/pip/pip.conf``; skipped
with ``--isolated`` or when ``$PIP_CONFIG_FILE`` names an existing file), the environment's
(``<sys.prefix>/pip.conf``), then ``$PIP_CONFIG_FILE``; ``PIP_CONFIG_FILE=/dev/null`` skips them
all. ``--isolated`` also ignores the environment variables.
"""

from __future__ import annotations

import configparser
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs

CONFIG_BASENAME = "pip.conf"
IGNORED_VARIABLES = ("PIP_VERSION", "PIP_HELP")  # pip's ENV_NAMES_IGNORED
ENVIRONMENT_SECTION = ":env:"
_TRUE = ("y", "yes", "t", "true", "on", "1")
_FALSE = ("n", "no", "f", "false", "off", "0")


@dataclass(frozen=True)
class PipConfig:
    """Every ``section.key = value`` pip would read, files first, in increasing precedence."""

    sources: tuple[
        Mapping[str, Mapping[str, str]], ...
    ]  # section -> key -> value, one per file or the environment

    def value(self, command: str | None, key: str) -> str | None:
        """The value pip would take for ``key`` (a long option without ``--``) when running ``command``.

        Empty values are skipped, as pip skips them.
        """
        sections = ["global", *([command] if command else []), ENVIRONMENT_SECTION]
        found = None
        for section in sections:
            for source in self.sources:
                text = source.get(section, {}).get(key)
                if text:
                    found = text
        return found


def load(prefix: Path | None, *, isolated: bool) -> PipConfig:
    """pip's configuration for the Python whose ``sys.prefix`` is ``prefix`` (None: leave its file out)."""
    sources: list[Mapping[str, Mapping[str, str]]] = [_read(path) for path in config_files(prefix, isolated)]
    if not isolated:
        sources.append({ENVIRONMENT_SECTION: environment_values(os.environ)})
    return PipConfig(tuple(sources))


def config_files(prefix: Path | None, isolated: bool) -> list[Path]:
    """The configuration files pip reads, lowest precedence first (absent ones included)."""
    named = os.environ.get("PIP_CONFIG_FILE")
    if named == os.devnull:
        return []
    files = [Path(directory, CONFIG_BASENAME) for directory in _site_config_dirs()]
    if not isolated and not (named and os.path.exists(named)):
        files += [Path("~/.pip", CONFIG_BASENAME).expanduser(), _user_config_dir() / CONFIG_BASENAME]
    if prefix is not None:
        files.append(prefix / CONFIG_BASENAME)
    if named is not None:
        files.append(Path(named))
    return files


def environment_values(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``PIP_*`` variables as option names: ``PIP_NO_CACHE_DIR`` is ``no-cache-dir``."""
    return {
        _normalized(name[4:]): value
        for name, value in environ.items()
        if name.startswith("PIP_") and name not in IGNORED_VARIABLES
    }


def boolean(text: str) -> bool | None:
    """A configured yes/no value as pip reads it; None if pip would refuse it."""
    lowered = text.lower()
    return True if lowered in _TRUE else False if lowered in _FALSE else None


def default_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("pip", appauthor=False))


def _read(path: Path) -> dict[str, dict[str, str]]:
    """A file's sections and keys, names normalized as pip does; nothing if it is absent or unreadable.

    pip itself refuses a file it cannot parse, and says so when it runs.
    """
    parser = configparser.RawConfigParser()
    parser.optionxform = _normalized  # type: ignore[assignment,method-assign]
    try:
        with path.open(encoding="utf-8" if sys.flags.utf8_mode else None) as file:
            parser.read_file(file)
    except (OSError, UnicodeDecodeError, configparser.Error):
        return {}
    return {section: dict(parser.items(section)) for section in parser.sections()}


def _normalized(name: str) -> str:
    return name.lower().replace("_", "-").removeprefix("--")


def _site_config_dirs() -> list[str]:
    if sys.platform == "darwin":
        return platformdirs.site_data_dir("pip", appauthor=False, multipath=True).split(os.pathsep)
    return [*platformdirs.site_config_dir("pip", appauthor=False, multipath=True).split(os.pathsep), "/etc"]


def _user_config_dir() -> Path:
    if sys.platform == "darwin":
        data = Path(platformdirs.user_data_dir("pip", appauthor=False))
        return data if data.is_dir() else Path("~/.config/pip").expanduser()
    return Path(platformdirs.user_config_dir("pip", appauthor=False))
