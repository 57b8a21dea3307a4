"""``safe-build cache dir|list|info|clean|prune``: look into the wheel cache and shrink it;
``safe-build cache remote ls|info|prune``: the same for the remote cache on S3."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from packaging.utils import canonicalize_name

from safe_build import buildenvs, config
from safe_build import state as states
from safe_build.cache import Cache, Entry, Removal
from safe_build.errors import EXIT_BUILD_FAILED, SafeBuildError

if TYPE_CHECKING:
    from safe_build import remote

DESCRIPTION = """\
Look into safe-build's cache (wheel entries and build environments) and shrink it.

Sizes are what du counts: blocks allocated on disk. clean and prune wait until no build is using
the cache (saying whom they wait for), so they never remove an entry or a build environment from
under a build. To build a project in a directory named "cache", name it as a path:
safe-build ./cache

safe-build cache remote ls|info|prune looks into the remote cache (--remote-cache URL or
$SAFE_BUILD_REMOTE_CACHE; $SAFE_BUILD_REMOTE_CACHE_ENDPOINT for a server other than AWS S3).
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
RemoteHandler = Callable[["remote.Remote", argparse.Namespace], Result]
URL_VARIABLE = "SAFE_BUILD_REMOTE_CACHE"
ENDPOINT_VARIABLE = "SAFE_BUILD_REMOTE_CACHE_ENDPOINT"
SECRET_VARIABLE = "SAFE_BUILD_REMOTE_CACHE_KEY"
MIN_SECRET_BYTES = 32
SECONDS_PER_MINUTE = 60


def run(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    if args.command == "remote":
        data, text = _run_remote(args)
        print(json.dumps(data, indent=2) if args.json else text)
        return 0
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
    _remote_parser(commands)
    return parser


class RemoteFailed(SafeBuildError):
    """The remote cache could not be reached or refused (its message says which)."""

    exit_code = EXIT_BUILD_FAILED


def _remote_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--remote-cache",
        metavar="URL",
        help=f"the remote cache, s3://BUCKET[/PREFIX]; default ${URL_VARIABLE}",
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    text = "look into the remote cache (S3) and shrink it"
    parser = commands.add_parser(
        "remote",
        help=text,
        description=f"{text[0].upper()}{text[1:]}. The endpoint of a server other than AWS S3 is "
        f"${ENDPOINT_VARIABLE}; with ${SECRET_VARIABLE} set, manifests not signed with it are shown "
        "as untrusted; credentials and region are found as the AWS tools find them.",
    )
    remote_commands = parser.add_subparsers(dest="remote_command", required=True, metavar="COMMAND")

    def command(name: str, handler: RemoteHandler, text: str) -> argparse.ArgumentParser:
        sub = remote_commands.add_parser(
            name, parents=[common], help=text, description=f"{text[0].upper()}{text[1:]}."
        )
        sub.set_defaults(remote_handler=handler)
        return sub

    command(
        "ls",
        _remote_ls,
        "list the manifests (key, project, version, who built it, its age, the size of what it names)",
    )
    command(
        "info", _remote_info, "what the remote cache holds (manifests, content, leases) and the live leases"
    )
    prune = command(
        "prune",
        _remote_prune,
        "remove manifests older than DAYS, then the content no manifest names, then expired leases",
    )
    prune.add_argument(
        "--older-than",
        metavar="DAYS",
        required=True,
        help="remove the manifests written more than DAYS days ago",
    )
    prune.add_argument(
        "--keep-newer-than",
        metavar="MINUTES",
        default="60",
        help="never remove what was written in the last MINUTES minutes, a build may be filing it "
        "(default 60)",
    )


def _run_remote(args: argparse.Namespace) -> Result:
    from safe_build import remote  # noqa: PLC0415 (boto3 only for the remote commands)

    url = args.remote_cache or os.environ.get(URL_VARIABLE) or ""
    if not url:
        raise SafeBuildError(
            "no remote cache to look into",
            hint=f"give --remote-cache s3://BUCKET/PREFIX or set {URL_VARIABLE}",
        )
    try:
        location = remote.parse_url(url)
    except ValueError as error:
        raise SafeBuildError(f"invalid remote cache URL: {error}") from None
    secret_text = os.environ.get(SECRET_VARIABLE)
    secret = secret_text.encode("utf-8") if secret_text else None
    if secret is not None and len(secret) < MIN_SECRET_BYTES:
        raise SafeBuildError(
            f"{SECRET_VARIABLE} is {len(secret)} bytes long",
            hint=f"give a random secret of at least {MIN_SECRET_BYTES} bytes",
        )
    try:
        store = remote.Remote(
            location,
            endpoint=os.environ.get(ENDPOINT_VARIABLE) or None,
            secret=secret,
            timeout=config.DEFAULT_REMOTE_TIMEOUT,
        )
        handler: RemoteHandler = args.remote_handler
        return handler(store, args)
    except remote.RemoteError as error:
        raise RemoteFailed(str(error)) from None


def _remote_ls(store: remote.Remote, args: argparse.Namespace) -> Result:
    entries = sorted(store.entries(), key=lambda entry: entry.modified, reverse=True)
    now = time.time()
    rows = []
    for entry in entries:
        manifest = entry.manifest
        if manifest is None:
            rows.append(
                [entry.key[:12], "?", "?", "?", _age(now - entry.modified), f"untrusted: {entry.problem}"]
            )
        else:
            rows.append(
                [
                    entry.key[:12],
                    manifest.project,
                    manifest.version,
                    manifest.built_by,
                    _age(now - entry.modified),
                    _size(entry.size),
                ]
            )
    header = ["KEY", "PROJECT", "VERSION", "BUILT BY", "AGE", "SIZE"]
    text = _table([header, *rows]) if rows else f"no entries in {store.location.url}"
    return {
        "remote_cache": store.location.url,
        "entries": [_remote_entry_json(entry) for entry in entries],
    }, text


def _remote_info(store: remote.Remote, args: argparse.Namespace) -> Result:
    usage = store.usage()
    now = time.time()
    live = [
        {
            "key": info.key,
            "host": info.holder.host,
            "pid": info.holder.pid,
            "started": _iso(info.holder.started),
            "expires": _iso(info.holder.expires),
        }
        for info in usage.live_leases
        if info.holder is not None
    ]
    data = {
        "remote_cache": store.location.url,
        "endpoint": store.endpoint,
        "manifests": usage.manifests[0],
        "manifests_size": usage.manifests[1],
        "content": usage.content[0],
        "content_size": usage.content[1],
        "leases": usage.leases[0],
        "live_leases": live,
        "other": usage.other[0],
        "other_size": usage.other[1],
    }
    rows = [
        ["remote cache:", store.location.url],
        ["endpoint:", str(store.endpoint)],
        ["manifests:", f"{usage.manifests[0]} ({_size(usage.manifests[1])}) in ac/"],
        ["content:", f"{usage.content[0]} ({_size(usage.content[1])}) in cas/"],
        ["leases:", f"{usage.leases[0]} in lease/, {len(live)} live"],
    ]
    if usage.other[0]:
        rows.append(["other objects:", f"{usage.other[0]} ({_size(usage.other[1])})"])
    text = _table(rows)
    for info in usage.live_leases:
        if info.holder is not None:
            text += (
                f"\n  {info.key[:12]} held by {info.holder.host} (pid {info.holder.pid}), "
                f"expires in {_age(info.holder.expires - now)}"
            )
    return data, text


def _remote_prune(store: remote.Remote, args: argparse.Namespace) -> Result:
    older_than = _days(args.older_than) * SECONDS_PER_DAY
    keep = _minutes(args.keep_newer_than) * SECONDS_PER_MINUTE
    result = store.prune(older_than=older_than, protect_younger_than=keep)
    data = {
        "remote_cache": store.location.url,
        "removed": [_remote_entry_json(entry) for entry in result.manifests],
        "content": result.content,
        "content_size": result.content_bytes,
        "leases": result.leases,
        "kept_leased": result.kept_leased,
        "kept_young": result.kept_young,
    }
    lines = [
        f"{entry.key[:12]}  {entry.manifest.project} {entry.manifest.version}"
        if entry.manifest
        else f"{entry.key[:12]}  (untrusted: {entry.problem})"
        for entry in result.manifests
    ]
    text = "".join(f"removed {line}\n" for line in lines) + (
        f"Removed {_count(len(result.manifests), 'manifest', 'manifests')}, "
        f"{_count(result.content, 'content object', 'content objects')} ({_size(result.content_bytes)}) and "
        f"{_count(result.leases, 'expired lease', 'expired leases')} from {store.location.url}"
    )
    if result.kept_leased:
        text += f"; kept {_count(result.kept_leased, 'old manifest', 'old manifests')} a live lease names"
    if result.kept_young:
        young = _count(result.kept_young, "unnamed content object", "unnamed content objects")
        text += f"; kept {young} newer than {args.keep_newer_than} minutes"
    return data, text


def _remote_entry_json(entry: remote.RemoteEntry) -> dict[str, object]:
    manifest = entry.manifest
    data: dict[str, object] = {"key": entry.key, "modified": _iso(entry.modified), "size": entry.size}
    if manifest is None:
        return {**data, "problem": entry.problem}
    return {
        **data,
        "project": manifest.project,
        "version": manifest.version,
        "built_by": manifest.built_by,
        "built_at": _iso(manifest.built_at),
        "safe_build": manifest.safe_build,
        "signed": manifest.signed,
        "artifacts": [dataclasses.asdict(artifact) for artifact in manifest.artifacts],
        "log": None if manifest.log is None else dataclasses.asdict(manifest.log),
        "warnings": list(manifest.warnings),
    }


def _minutes(text: str) -> float:
    try:
        minutes = float(text)
    except ValueError:
        minutes = math.nan
    if not (math.isfinite(minutes) and minutes >= 0):
        raise SafeBuildError(
            f"invalid value {text!r} for --keep-newer-than", hint="give a number of minutes, 0 or more"
        )
    return minutes


def _age(seconds: float) -> str:
    seconds = max(seconds, 0)
    for unit, size in (("d", SECONDS_PER_DAY), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


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
