"""``safe-build cache dir|list|info|clean|prune``: look into the wheel cache and shrink it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

from packaging.utils import canonicalize_name

from safe_build import buildenvs, config
from safe_build import state as states
from safe_build.cache import Cache, Entry, Removal
from safe_build.errors import SafeBuildError

DESCRIPTION = """\
Look into safe-build's cache (wheel entries and build environments) and shrink it.

Sizes are what du counts: blocks allocated on disk. clean and prune wait until no build is using
the cache (saying whom they wait for), so they never remove an entry or a build environment from
under a build. To build a project in a directory named "cache", name it as a path:
safe-build ./cache
"""

SIZE_HELP = "500M, 2G, 1.5GiB or plain bytes; K, M, G, T count in 1000s, Ki, Mi, Gi, Ti in 1024s"
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]i?)?b?", re.IGNORECASE)
_UNITS: dict[str, int] = (
    {"": 1}
    | {prefix: 1000**power for power, prefix in enumerate("kmgt", start=1)}
    | {f"{prefix}i": 1024**power for power, prefix in enumerate("kmgt", start=1)}
)
SECONDS_PER_DAY = 86400

Result = tuple[object, str]  # what --json prints, and what is printed without it
Handler = Callable[[Cache, argparse.Namespace], Result]


def run(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    timeout = config.lock_timeout(args.lock_timeout)
    cache = Cache(states.existing(config.cache_dir(args.cache_dir), lock_timeout=timeout))
    data, text = args.handler(cache, args)
    print(json.dumps(data, indent=2) if args.json else text)
    return 0


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="the cache to work on; default $SAFE_BUILD_CACHE_DIR or the user cache",
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    locking = argparse.ArgumentParser(add_help=False, parents=[common])
    locking.add_argument(
        "--lock-timeout",
        metavar="SECONDS",
        help="give up waiting for builds to leave the cache after SECONDS (exit code 3); "
        "default $SAFE_BUILD_LOCK_TIMEOUT or 3600",
    )
    parser = argparse.ArgumentParser(
        prog="safe-build cache", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.set_defaults(lock_timeout=None)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, handler: Handler, text: str, parent: argparse.ArgumentParser = common
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, parents=[parent], help=text, description=f"{text[0].upper()}{text[1:]}."
        )
        sub.set_defaults(handler=handler)
        return sub

    command("dir", _dir, "print the cache directory")
    command(
        "list",
        _list,
        "list the entries (project, version, wheel tag, interpreter, key, size, when built and last "
        "used), then the build environments",
    )
    command("info", _info, "where the cache is, what it holds and what that takes on disk")
    clean = command(
        "clean", _clean, "remove every entry and build environment, or the entries of project NAME", locking
    )
    clean.add_argument("name", nargs="?", metavar="NAME", help="a project name (Foo_Bar matches foo-bar)")
    prune = command(
        "prune",
        _prune,
        "remove entries and build environments unused for DAYS, then the least recently used until "
        "the cache takes at most SIZE",
        locking,
    )
    prune.add_argument(
        "--older-than",
        metavar="DAYS",
        help="remove the entries and build environments not used for more than DAYS days "
        "(build environments: default 7, when they would be made again anyway)",
    )
    prune.add_argument(
        "--max-size",
        metavar="SIZE",
        help="then remove the least recently used entries and build environments until the whole cache "
        f"directory takes at most SIZE on disk ({SIZE_HELP})",
    )
    return parser


def _dir(cache: Cache, args: argparse.Namespace) -> Result:
    return {"cache_dir": str(cache.root)}, str(cache.root)


def _list(cache: Cache, args: argparse.Namespace) -> Result:
    entries = sorted(cache.entries(), key=lambda entry: (canonicalize_name(entry.project), entry.built_at))
    environments = sorted(cache.environments(), key=lambda found: found.last_used, reverse=True)
    rows = [
        [
            entry.project,
            entry.version,
            ",".join(_wheel_tags(entry)) or "sdist",
            _interpreter(entry) or "-",
            entry.key[:12],
            _size(entry.size),
            _time(entry.built_at),
            _time(entry.last_used),
        ]
        for entry in entries
    ]
    header = ["PROJECT", "VERSION", "TAG", "PYTHON", "KEY", "SIZE", "BUILT", "LAST USED"]
    text = _table([header, *rows]) if rows else f"no entries in {cache.root}"
    env_rows = [
        [
            " ".join(found.requirements) if found.complete else "(incomplete: being made, or killed)",
            found.python or "-",
            found.key[:12],
            _size(found.size),
            "-" if found.created_at is None else _time(found.created_at),
            _time(found.last_used) if math.isfinite(found.last_used) else "-",
        ]
        for found in environments
    ]
    env_header = ["BUILD ENVIRONMENT", "PYTHON", "KEY", "SIZE", "CREATED", "LAST USED"]
    text += "\n\n" + (_table([env_header, *env_rows]) if env_rows else "no build environments")
    data = {
        "entries": [_entry_json(entry) for entry in entries],
        "environments": [_environment_json(found) for found in environments],
    }
    return data, text


def _info(cache: Cache, args: argparse.Namespace) -> Result:
    entries = cache.entries()
    environments = cache.state.envs
    count = len(buildenvs.EnvStore(cache.state).paths())
    usage = cache.usage()
    state = cache.state
    private = [path for path in state.tmp.glob("*") if path.is_dir()]
    memos = [path for path in (cache.root / "key-memos").glob("*.memo")]
    data = {
        "cache_dir": str(cache.root),
        "entries": len(entries),
        "size": usage.entries,
        "private_dirs": len(private),
        "private_dirs_in": str(state.tmp),
        "locks_dir": str(state.locks),
        "environments": count,
        "environments_size": usage.environments,
        "environments_in": str(environments),
        "private_dirs_size": usage.private,
        "memos": len(memos),
        "memos_size": usage.memos,
        "other_size": usage.other,
        "total_size": usage.total,
    }
    text = _table(
        [
            ["cache dir:", str(cache.root)],
            ["entries:", f"{len(entries)} ({_size(usage.entries)})"],
            ["build environments:", f"{count} ({_size(usage.environments)}) in {environments}"],
            ["private dirs:", f"{len(private)} ({_size(usage.private)}) in {state.tmp}"],
            ["key memos:", f"{len(memos)} ({_size(usage.memos)})"],
            ["other:", f"{_size(usage.other)} (markers, locks, directories)"],
            ["total:", f"{_size(usage.total)} on disk, as du counts it"],
            ["locks:", str(state.locks)],
        ]
    )
    return data, text


def _clean(cache: Cache, args: argparse.Namespace) -> Result:
    return _removed(cache, cache.clean(args.name))


def _prune(cache: Cache, args: argparse.Namespace) -> Result:
    older_than = None if args.older_than is None else _days(args.older_than) * SECONDS_PER_DAY
    max_size = None if args.max_size is None else _bytes(args.max_size)
    return _removed(cache, cache.prune(older_than=older_than, max_size=max_size))


def _removed(cache: Cache, removal: Removal) -> Result:
    remaining = cache.entries()
    left = sum(entry.size for entry in remaining)
    environments = cache.environments()
    environments_left = sum(found.size for found in environments)
    total = cache.usage().total
    data = {
        "removed": [_entry_json(entry) for entry in removal.entries],
        "freed": removal.freed,
        "damaged": removal.damaged,
        "leftovers": removal.leftovers,
        "environments": len(removal.environments),
        "remaining": len(remaining),
        "remaining_size": left,
        "removed_environments": [_environment_json(found) for found in removal.environments],
        "environments_freed": removal.environments_freed,
        "memos": removal.memos,
        "busy": removal.busy,
        "remaining_environments": len(environments),
        "remaining_environments_size": environments_left,
        "total_size": total,
    }
    done = [
        f"Removed {_count(len(removal.entries), 'entry', 'entries')} ({_size(removal.freed)}) and "
        f"{_count(len(removal.environments), 'build environment', 'build environments')} "
        f"({_size(removal.environments_freed)})"
    ]
    if removal.damaged:
        done.append(_count(removal.damaged, "damaged entry", "damaged entries"))
    if removal.leftovers:
        done.append(
            _count(removal.leftovers, "leftover of interrupted runs", "leftovers of interrupted runs")
        )
    if removal.memos:
        done.append(_count(removal.memos, "key memo", "key memos"))
    text = (
        f"{', '.join(done)} from {cache.root}; "
        f"{_count(len(remaining), 'entry', 'entries')} ({_size(left)}) and "
        f"{_count(len(environments), 'build environment', 'build environments')} "
        f"({_size(environments_left)}) remain, {_size(total)} in all"
    )
    if removal.busy:
        text += f"; {_count(removal.busy, 'was', 'were')} in use and left alone"
    return data, text


def _wheel_tags(entry: Entry) -> list[str]:
    """The tag of each wheel in ``entry``, as its file name spells it (``py3-none-any``)."""
    return [
        "-".join(artifact.name[: -len(".whl")].split("-")[-3:])
        for artifact in entry.artifacts
        if artifact.name.endswith(".whl")
    ]


def _interpreter(entry: Entry) -> str | None:
    """The interpreter the entry was built with, from its key's inputs (``cp312``), if recorded."""
    tag = entry.inputs.get("tag")
    return tag.split("-", 1)[0] if isinstance(tag, str) and tag else None


def _environment_json(found: buildenvs.StoredEnv) -> dict[str, object]:
    return {
        "key": found.key,
        "requirements": list(found.requirements),
        "installer": found.installer,
        "python": found.python,
        "implementation": found.implementation,
        "size": found.size,
        "complete": found.complete,
        "created_at": None if found.created_at is None else _iso(found.created_at),
        "last_used": _iso(found.last_used) if math.isfinite(found.last_used) else None,
        "path": str(found.path),
    }


def _entry_json(entry: Entry) -> dict[str, object]:
    return {
        "project": entry.project,
        "version": entry.version,
        "key": entry.key,
        "size": entry.size,
        "built_at": _iso(entry.built_at),
        "last_used": _iso(entry.last_used),
        "artifacts": [dataclasses.asdict(artifact) for artifact in entry.artifacts],
        "inputs": dict(entry.inputs),
        "path": str(entry.path),
        "wheel_tags": _wheel_tags(entry),
        "interpreter": _interpreter(entry),
    }


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = math.nan
    if not (math.isfinite(days) and days >= 0):
        raise SafeBuildError(
            f"invalid value {text!r} for --older-than",
            hint="give a number of days, 0 or more (1.5 is allowed)",
        )
    return days


def _bytes(text: str) -> int:
    match = _SIZE.fullmatch(text.strip())
    size = float(match[1]) * _UNITS[(match[2] or "").lower()] if match else math.nan
    if not math.isfinite(size):  # not a size, or more digits than a float holds
        raise SafeBuildError(f"invalid value {text!r} for --max-size", hint=f"give a size: {SIZE_HELP}")
    return round(size)


def _size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def _count(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


def _time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )
