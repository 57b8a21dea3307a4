"""The include and exclude patterns of a snapshot, matched against ``/``-separated relative paths.

Kept apart from the settings so that the traversal of a tree (``traversal``) needs nothing of
how settings are read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase


@dataclass(frozen=True)
class Selection:
    """The snapshot's extra ``include`` and ``exclude`` patterns, matched against project-relative paths.

    Patterns are ``/``-separated and anchored at the project directory: ``*``, ``?`` and ``[…]``
    match within one path component, a ``**`` component matches any number of them. A path
    matches if it, or a directory above it, matches: ``docs`` and ``docs/**`` both stand for the
    whole directory. An include wins over an exclude, so a file can be taken back from an
    excluded directory.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def included(self, relative: str) -> bool:
        """Copy ``relative`` although git ignores it or it lies in an always-excluded directory."""
        return _matches_any(self.include, relative)

    def excluded(self, relative: str) -> bool:
        """Leave ``relative`` out, although it would be copied."""
        return _matches_any(self.exclude, relative) and not self.included(relative)

    def include_roots(self) -> list[str]:
        """Where included paths can be: the leading components of each include without wildcards.

        ``""`` is the project directory; a root may be a file or may not exist. No root lies
        below another, so walking each finds every included path once.
        """
        roots = set()
        for pattern in self.include:
            parts = pattern.split("/")
            fixed = next((index for index, part in enumerate(parts) if is_glob(part)), len(parts))
            roots.add("/".join(parts[:fixed]))
        return sorted(
            root for root in roots if not any(_below(root, other) for other in roots if other != root)
        )


def levels_above(pattern: str) -> int:
    """How many directories above the project a normalized pattern starts: its leading ``..``."""
    parts = pattern.split("/")
    return next((index for index, part in enumerate(parts) if part != ".."), len(parts))


def is_glob(part: str) -> bool:
    return any(char in part for char in "*?[")


def _below(path: str, directory: str) -> bool:
    return directory == "" or path.startswith(directory + "/")


def _matches_any(patterns: Sequence[str], relative: str) -> bool:
    parts = relative.split("/")
    return any(_matches(pattern.split("/"), parts) for pattern in patterns)


def _matches(pattern: Sequence[str], parts: Sequence[str]) -> bool:
    """True if ``parts`` begin with components that ``pattern`` matches (the path or a directory above it)."""
    if not pattern:
        return True
    if pattern[0] == "**":
        return any(_matches(pattern[1:], parts[start:]) for start in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], pattern[0]) and _matches(pattern[1:], parts[1:])
