"""``safe-build [SRCDIR] [build options]``: python -m build on a private snapshot, published atomically.

What the user sees is what ``python -m build`` shows at the same verbosity (default, ``-q``,
``-qq``, ``-v``): the build child runs build's own command line and its output is relayed as it
comes (``runner.Relay``), the private directory's paths replaced by the user's (the snapshot by
the source tree, the private output by the output directory, the private temporary directory by
the system's). safe-build adds only its own lines, in build's style and colours: ``-v``'s
``* `` steps (isolation, settings, the snapshot), lock waits (not with ``-qq``), warnings, and on
a cache hit, instead of the build's steps, ``* Reusing cache entry …``, the warnings the build
showed, each marked ``(from cache, built <time>)``, and ``Successfully built …``. On a terminal,
a status line says what is running (``progress``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import posixpath
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from build.__main__ import main as build_main
from packaging.utils import parse_sdist_filename, parse_wheel_filename

from safe_build import (
    buildcompat,
    config,
    coremetadata,
    gitmeta,
    isolation,
    locks,
    netfs,
    options,
    patterns,
    progress,
    project,
    publish,
    remotebuild,
    runner,
    snapshot,
    traversal,
    workdirs,
)
from safe_build import state as states
from safe_build.errors import EXIT_BAD_INPUT, EXIT_LOCK_TIMEOUT, BuildFailed, LockTimeout, SafeBuildError
from safe_build.locks import NamedLock

# The cache, its key and cached build environments are imported where they are used: a build
# that needs none of them (--no-cache --no-isolation) then starts ~20 ms sooner.
if TYPE_CHECKING:
    from safe_build import cache, cachekey
    from safe_build.buildenvs import EnvStore

MIRRORED_LEVELS = 2  # of the real tree's path, below the snapshot directory (see _Tree.copy_name)


@dataclass(frozen=True)
class _Request:
    """One build as the user asked for it, and the private directory it runs in."""

    args: argparse.Namespace
    source: project.Source
    settings: config.Settings
    mode: isolation.Mode | None  # None for an sdist or wheel source, which build extracts privately
    outdir: Path
    report: Path | None
    work: Path
    lock: NamedLock
    tree: _Tree  # what a snapshot of the project copies
    state: states.State
    store: cache.Cache | None  # held in use for the whole build; None: neither entries nor environments
    shown: bool = True  # False: the build's output only if it fails (see run)


def run(argv: Sequence[str], *, shown: bool = True) -> int:
    """Build as ``argv`` says; the exit code. ``shown`` False: what the build shows (and a cache hit's
    warnings) only if it fails, replayed then, as pip shows a build it runs (for safe-pip)."""
    args = options.parse(argv)
    quiet, locks.quiet = locks.quiet, args.verbosity < -1
    try:
        with progress.configured(args.verbosity if shown else -1):
            return _run(args, shown=shown)
    finally:
        locks.quiet = quiet


def _run(args: argparse.Namespace, *, shown: bool) -> int:
    source = project.resolve(args.srcdir)
    settings = config.load(args, source.path if source.kind == "project" else None, source.pyproject)
    mode: isolation.Mode | None = None
    if source.kind == "project":
        mode, why = isolation.choose(settings.isolation, source.path, source.pyproject)
        if args.verbosity > 0:
            for line in [f"Isolation: {mode} ({why})", *settings.explained()]:
                _step(line)
    elif settings.isolation.value == "in-place":
        where = settings.isolation.origin
        raise SafeBuildError(f"isolation in-place ({where}) needs a project directory, not {args.srcdir}")
    # as in build, -o "" is the working directory
    outdir = Path(args.outdir).absolute() if args.outdir is not None else source.default_outdir
    report = Path(args.report).absolute() if getattr(args, "report", None) else None
    if not args.metadata:
        publish.check_output_dir(outdir)
        netfs.warn_if_network(outdir, "output directory")
    if report is not None:
        publish.check_output_dir(report.parent)
        if report.is_dir():  # refused now: build would fail only after the artifacts were published
            raise SafeBuildError(
                f"--report {report} is a directory", hint="name a file for the report, such as report.json"
            )
    state = states.at(settings.cache_dir.value, lock_timeout=settings.lock_timeout.value)
    lock = state.project_lock(source.path)
    slot = hashlib.sha256(os.fsencode(source.path)).hexdigest()[:8]  # short: it lengthens every path
    cacheable = _cacheable(args, settings, mode, report) and state.cache_enabled
    with contextlib.ExitStack() as held:
        store = None
        if cacheable or not (args.no_isolation or settings.fresh_env.value):
            from safe_build import cache  # noqa: PLC0415

            store = cache.Cache(state)
            # before the project lock, which ranks above it: an in-place build holds that while its
            # build child uses the cached environments
            held.enter_context(store.using())
        work = held.enter_context(workdirs.private_dir(state, slot))
        tree = _Tree.of(source.path, _selection(settings, source, mode), in_repository=mode == "repository")
        request = _Request(
            args, source, settings, mode, outdir, report, work, lock, tree, state, store, shown
        )
        if cacheable:
            _through_cache(request)
        else:
            _build_and_publish(request)
    return 0


def _step(text: str) -> None:
    """One of safe-build's own steps, as build shows its ``* `` steps (bold)."""
    progress.line(buildcompat.styled("{bold}* {}{reset}", text))


def _summary(names: Sequence[str]) -> None:
    """``Successfully built …`` on stdout, as build prints it (for a build that its child did not print)."""
    styles = buildcompat.styles(sys.stdout)
    artifacts = _natural_list(["{underline}{}{reset}{bold}{green}".format(name, **styles) for name in names])
    line = buildcompat.styled("{bold}{green}Successfully built {}{reset}", artifacts, sys.stdout)
    progress.line(line, sys.stdout)


def _cacheable(
    args: argparse.Namespace, settings: config.Settings, mode: isolation.Mode | None, report: Path | None
) -> bool:
    """Whether the wheel cache may serve this build.

    Not with --no-cache; not for --metadata or --report, whose output is build's own rather than
    artifacts; not for an sdist or wheel given as the source; not in place, where the tree's
    leftover build state, which the key leaves out, takes part in the build.
    """
    return not (settings.no_cache.value or args.metadata or report is not None or mode in (None, "in-place"))


def _through_cache(request: _Request) -> list[Path]:
    """Publish the cached artifacts of this build's key, building them first if nobody has.

    The key of the tree read in place finds an entry; a miss is built from a snapshot whose own
    pass digests what it copied, and stored only under that key: the tree may change between
    the two, and an entry must hold what was built from the content its key names. Identical
    builds that run at once take turns on the key's lock: the first builds and stores, the others
    find its entry. A hit is published under that lock, so ``--refresh`` cannot take the entry
    away half-way.
    """
    settings, source, tree, store = request.settings, request.source, request.tree, request.store
    from safe_build import cachekey  # noqa: PLC0415

    assert store is not None
    with store.using():
        memo = cachekey.Memo(request.state.memo_path(tree.root))
        keying = _Keying(_key_context(request), memo)
        with _readable(tree.root):
            key = cachekey.lookup(_plan(request), keying.context, memo)
        # artifacts that name the tree's place are filed under a key of that place too (_Built.local)
        local = cachekey.local_to(key.digest, tree.root)
        with store.single_flight(key.digest, source.path, covering=(local,)):
            entry = None
            if settings.refresh.value:
                store.discard(key.digest)
                store.discard(local)
            else:
                entry = store.lookup(key.digest) or store.lookup(local)
            if entry is not None:
                return _publish_hit(entry.files, _Hit.of(entry), memo, request)
            shared = remotebuild.Shared.of(settings)
            claim = remotebuild.Claim()
            if shared is not None and not settings.refresh.value:
                found = shared.look_up((key.digest, local), _project_name(request), request.work / "remote")
                if isinstance(found, remotebuild.Fetched):
                    return _publish_remote_hit(found, key, memo, request, shared)
                claim = found
            try:
                return _build_through_cache(request, keying, key, local, shared)
            finally:
                claim.release()


def _build_through_cache(
    request: _Request, keying: _Keying, key: cachekey.Key, local: str, shared: remotebuild.Shared | None
) -> list[Path]:
    """A miss: build, store under the key of what the snapshot copied if it is the key looked up,
    also in the remote cache, and publish."""
    store, memo = request.store, keying.memo
    assert store is not None
    built = _build(request, keying)
    copied = built.copied
    assert copied is not None
    if copied.digest == key.digest:
        digest = local if built.local else key.digest
        entry = _store(store, digest, copied, built, request)
        if shared is not None:
            files, log = (
                (entry.files, entry.output_log) if entry is not None else (built.artifacts, built.shown.log)
            )
            name, version = _name_and_version(built.artifacts[0])
            shared.store(digest, files, log=log, warnings=built.shown.warnings, project=name, version=version)
    elif request.args.verbosity > 0:
        _step(
            f"Not stored in the cache: the tree changed between its lookup ({key.digest[:12]}) "
            f"and its snapshot ({copied.digest[:12]})"
        )
    _save_memo(memo, request)
    return publish.publish_files(built.artifacts, request.outdir)


def _publish_hit(files: Sequence[Path], hit: _Hit, memo: cachekey.Memo, request: _Request) -> list[Path]:
    _save_memo(memo, request)
    published = publish.publish_files(files, request.outdir)
    if request.shown:
        _show_hit(hit, request.args.verbosity)
    return published


def _publish_remote_hit(
    fetched: remotebuild.Fetched,
    key: cachekey.Key,
    memo: cachekey.Memo,
    request: _Request,
    shared: remotebuild.Shared,
) -> list[Path]:
    """Keep a verified remote entry in the local cache, as if built here, and publish it from there
    (or, if the local cache cannot take it, from where it was downloaded)."""
    from safe_build import cache  # noqa: PLC0415

    store = request.store
    assert store is not None
    manifest = fetched.manifest
    where = f" from {shared.url} (built by {manifest.built_by})"
    output = cache.Output(fetched.log, manifest.warnings)
    try:
        entry = store.store(
            fetched.key,
            fetched.artifacts,
            project=manifest.project,
            version=manifest.version,
            inputs=key.describe(),
            output=output,
        )
    except OSError as error:
        _cache_warning(request, f"the remote cache's entry was not stored in the cache ({error.strerror})")
        names = [path.name for path in fetched.artifacts]
        hit = _Hit(fetched.key, manifest.built_at, manifest.warnings, names, where)
        return _publish_hit(fetched.artifacts, hit, memo, request)
    return _publish_hit(entry.files, _Hit.of(entry, where), memo, request)


def _project_name(request: _Request) -> str:
    return request.source.path.name


@dataclass(frozen=True)
class _Hit:
    """What a cache hit shows: the entry's key, when it was built, its warnings, its artifacts'
    names, and whence a remote entry came (and who built it)."""

    key: str
    built_at: float
    warnings: Sequence[str]
    names: list[str]
    where: str = ""

    @staticmethod
    def of(entry: cache.Entry, where: str = "") -> _Hit:
        return _Hit(entry.key, entry.built_at, entry.warnings, [path.name for path in entry.files], where)


def _show_hit(hit: _Hit, verbosity: int) -> None:
    """What a cache hit shows instead of the build's output: a step, the warnings the build showed
    (at every verbosity, as build shows warnings), each marked as coming from the cache, and the
    summary."""
    built_at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(hit.built_at))
    if verbosity >= -1:
        _step(f"Reusing cache entry {hit.key[:12]}{hit.where}, built {built_at}")
    for warning in hit.warnings:
        first, newline, rest = warning.partition("\n")
        marked = f"{first} (from cache, built {built_at}){newline}{rest}"
        progress.line(buildcompat.styled("{yellow}WARNING{reset} {}", marked))
    if verbosity >= -1:
        _summary(hit.names)


@dataclass(frozen=True)
class _Shown:
    """What a build showed: its output (a file) and the warnings among it (``cache.Output``)."""

    log: Path
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class _Built:
    """What a build made: its artifacts (sdists first), the key of what its snapshot copied (when
    keyed), what it showed, and whether the artifacts name the tree's place (``local``)."""

    artifacts: list[Path]
    copied: cachekey.Key | None
    shown: _Shown
    local: bool  # the metadata named the snapshot's path, now the tree's: a copy elsewhere differs


@dataclass(frozen=True)
class _Keying:
    """What a snapshot needs to digest what it copies into a key."""

    context: cachekey.Context
    memo: cachekey.Memo


def _store(
    store: cache.Cache, digest: str, key: cachekey.Key, built: _Built, request: _Request
) -> cache.Entry | None:
    """Store what was built under ``digest`` (``key``'s, or the key local to the tree's place), with
    what the build showed; a cache that cannot take them (a full or read-only disk) is one warning,
    and the build goes on to publish them."""
    from safe_build import cache  # noqa: PLC0415

    if built.local and request.args.verbosity > 0:
        _step(
            f"Stored under a key local to {request.tree.root}: the artifacts' metadata names it "
            "(a path dependency), so a copy of the tree elsewhere builds its own"
        )
    name, version = _name_and_version(built.artifacts[0])
    output = cache.Output(built.shown.log, built.shown.warnings)
    try:
        return store.store(
            digest, built.artifacts, project=name, version=version, inputs=key.describe(), output=output
        )
    except OSError as error:
        _cache_warning(request, f"the build was not stored in the cache ({error.strerror})")
        return None


def _save_memo(memo: cachekey.Memo, request: _Request) -> None:
    try:
        memo.save()
    except OSError as error:
        _cache_warning(request, f"the cache key memo {memo.path} was not saved ({error.strerror})")


def _cache_warning(request: _Request, what: str) -> None:
    text = f"{what}; cache directory {request.settings.cache_dir.value}"
    progress.labelled("warning", text)


def _key_context(request: _Request) -> cachekey.Context:
    """The key's context, the git state read from the real repository (see _prepared_source for
    the snapshot's)."""
    from safe_build import cachekey  # noqa: PLC0415

    inputs = _key_inputs(request)
    tree = request.tree
    if request.mode == "repository":
        inputs |= {"project": tree.inner, "git": gitmeta.state(tree.root)}
    return cachekey.context(tree.root, inputs, no_isolation=request.args.no_isolation, inner=tree.inner)


def _plan(request: _Request) -> traversal.Plan:
    tree = request.tree
    return traversal.plan(
        tree.root,
        exclude=tree.exclude(request.outdir, request.settings.cache_dir.value),
        selection=tree.selection,
        project_at_root=not tree.inner,
    )


def _key_inputs(request: _Request) -> dict[str, object]:
    """What, besides the source and the environment, decides this build's artifacts."""
    args = request.args
    return {
        "distributions": list(dict.fromkeys(args.distributions or ())),
        "config_settings": list(getattr(args, "config_settings", None) or ()),
        "config_json": getattr(args, "config_json", None),
        "isolation": request.mode,
        "no_isolation": args.no_isolation,
        "skip_dependency_check": args.skip_dependency_check,
        "installer": getattr(args, "installer", None),
        "constraints": options.constraints_text(args),
        # not where the tree lies, so that checkouts at other paths (other CI runners) share
        # entries: artifacts whose metadata names the place go under a key of it (_Built.local).
        # Its own name is kept, which a backend may read (setuptools-scm's parentdir_prefix_version);
        # the directories above it in the snapshot's path are no more keyed than its random parts
        "tree": request.tree.root.name,
    }


def _name_and_version(artifact: Path) -> tuple[str, str]:
    if artifact.name.endswith(".whl"):
        name, version, *_ = parse_wheel_filename(artifact.name)
    else:
        name, version = parse_sdist_filename(artifact.name)
    return name, str(version)


def _build_and_publish(request: _Request) -> list[Path]:
    built = publish.publish_files(_build(request, None).artifacts, request.outdir)
    if request.report is not None:
        _publish_report(request.work / "report.json", request.report, request.outdir)
    return built


def _selection(
    settings: config.Settings, source: project.Source, mode: isolation.Mode | None
) -> patterns.Selection:
    """The user's include and exclude patterns, and the paths above the project that its settings
    name (``readme = "../README.md"``) or that a backend reads as they lie (the ignore files up to
    the repository's root): a snapshot brings those along beside the project's copy."""
    chosen = settings.selection
    if mode not in ("copy", "repository"):
        return chosen
    above = isolation.outside_paths(source.path, source.pyproject)
    if mode == "copy":
        above += isolation.ignore_files_above(source.path)
    above = [path for path in dict.fromkeys(above) if path not in chosen.include]
    return patterns.Selection((*chosen.include, *above), chosen.exclude)


def _build(request: _Request, keying: _Keying | None) -> _Built:
    """Build into the private output directory: what was built (with ``keying``, and the key of what
    the snapshot copied)."""
    args, work = request.args, request.work
    changes = []
    if request.mode in ("copy", "repository"):
        tree = request.tree
        changes = _real_paths(_snapshot_root(request), tree.root, len(tree.copy_name.parts))
    # where the user looks for what build shows: the output directory, the system's temporary one
    shown_as = [*changes, (os.fsencode(work / "out"), os.fsencode(request.outdir))]
    shown_as.append((os.fsencode(work / "tmp"), os.fsencode(tempfile.gettempdir())))
    with _prepared_source(request, keying) as (src, copied):
        try:
            envs = _env_store(request)
            shown = _run_build(
                args, src, work, request.report is not None, envs, shown_as=shown_as, show=request.shown
            )
        except BuildFailed as failure:
            raise _with_outside_hint(failure, request) from None
    artifacts = _artifacts(work / "out")
    rewritten = [coremetadata.rewrite(artifact, changes) for artifact in (artifacts if changes else ())]
    return _Built(artifacts, copied, shown, local=any(rewritten))


def _with_outside_hint(failure: BuildFailed, request: _Request) -> BuildFailed:
    """``failure``, saying so if the project may need what a snapshot lacks: a file above it, or
    the git repository it lies in."""
    hints = []
    if request.mode in ("copy", "repository") and not request.tree.git:
        reason = isolation.unnamed_outside_reason(request.source.path, request.source.pyproject)
        if reason is not None:
            hints.append(
                f"{reason}, and a snapshot has only the paths above the project that its settings or an "
                "include name: add it with --include ../PATH, or build with --isolation in-place"
            )
    if request.mode == "copy" and gitmeta.repository_root(request.source.path) is not None:
        hints.append(
            "the project lies in a git work tree, which a copy of the project lacks: if its backend "
            "needs git, build with --isolation repository"
        )
    if not hints:
        return failure
    return BuildFailed(failure.message, hint="; ".join(hints), path=failure.path)


def _env_store(request: _Request) -> EnvStore | None:
    """The cached build environments an isolated build reuses; None: build makes a fresh one."""
    settings, store = request.settings, request.store
    if request.args.no_isolation or settings.fresh_env.value or store is None:
        return None
    from safe_build import buildcompat, buildenvs  # noqa: PLC0415

    if buildcompat.CLI is None:  # build's own steps cannot be reused: build's main makes a fresh one
        buildcompat.fallback_warning()
        return None

    return buildenvs.EnvStore(
        request.state, max_age=settings.env_max_age.value, refresh=settings.refresh.value, using=store.using
    )


@dataclass(frozen=True)
class _Tree:
    """What a snapshot copies: the project itself, or in "repository" mode the repository around it."""

    root: Path
    inner: str  # the project's path below root, "/"-separated; "" when root is the project
    selection: patterns.Selection  # the user's patterns, relative to root
    git: bool  # root is a git work tree whose metadata the copy gets

    @staticmethod
    def of(project_dir: Path, selection: patterns.Selection, *, in_repository: bool) -> _Tree:
        """Asks git where the repository is only in repository mode, and only once per build."""
        top = gitmeta.repository_root(project_dir) if in_repository else None
        if top is None or top == project_dir:
            return _Tree(project_dir, "", selection, git=top is not None)
        inner = os.path.relpath(project_dir, top).replace(os.sep, "/")
        return _Tree(
            top,
            inner,
            patterns.Selection(
                tuple(posixpath.normpath(f"{inner}/{pattern}") for pattern in selection.include),
                tuple(f"{inner}/{pattern}" for pattern in selection.exclude),
            ),
            git=True,
        )

    @property
    def copy_name(self) -> Path:
        """Where below the snapshot directory the copy of ``root`` goes: deep enough that the paths
        above it that an include names (``../LICENSE``) land beside it, as they lie beside ``root``."""
        ups = max((patterns.levels_above(pattern) for pattern in self.selection.include), default=0)
        # at least two levels, so that the targets of links out of the tree such as ../../README.md
        # land where the link's text leads (see snapshot); never the anchor, which would make it absolute
        levels = max(ups + 1, MIRRORED_LEVELS)
        return Path(*self.root.parts[1:][-levels:])

    def exclude(self, outdir: Path, state: Path) -> list[str]:
        """What a snapshot leaves out below ``root``: the output directory and safe-build's own
        state directory (``state``), wherever they lie, by real path."""
        return [*traversal.inside(outdir, self.root), *traversal.inside(state, self.root)]


@contextlib.contextmanager
def _prepared_source(request: _Request, keying: _Keying | None) -> Iterator[tuple[Path, cachekey.Key | None]]:
    """The path to hand to ``build``, held ready (and locked where needed) for the build's
    duration; with ``keying``, also the key of what the snapshot copied.

    A snapshot is taken under the project lock held shared, so that it never sees the tree
    half-way through an in-place build, which holds the lock exclusive for its whole run. Its key
    is computed in the same pass, from the bytes it wrote.
    """
    source, lock = request.source, request.lock
    if source.kind != "project":
        yield source.path, None  # an sdist or wheel is only read; build extracts it privately
        return
    if request.mode == "in-place":
        with lock.hold("exclusive"):
            yield source.path, None
        return
    started = time.monotonic()
    tree = request.tree
    recorder = keying.memo.recorder() if keying is not None else None
    copied = None
    with lock.hold("shared"), _readable(tree.root):
        plan = _plan(request)
        copy = snapshot.take(
            plan,
            _snapshot_root(request),
            zone=request.work / "src",
            spare=request.work / "outside",
            recorder=recorder,
        )
        if tree.git:
            gitmeta.give_private_metadata(tree.root, copy.root)
        # the top of the snapshot's surroundings stops a backend's upward search for a file (hatchling
        # looks for .gitignore up to a directory holding .git), so that nothing above it is found
        (request.work / "src" / ".git").mkdir(exist_ok=True)
        if keying is not None and recorder is not None:
            from safe_build import cachekey  # noqa: PLC0415

            keying.memo.learn(recorder)
            # in repository mode the backend sees the snapshot's git metadata: that is what is keyed
            context = keying.context
            if tree.git:
                context = context.with_inputs({"git": gitmeta.state(copy.root)})
            copied = cachekey.of_copy(recorder, plan, context)
    if request.args.verbosity > 0:
        what = f"the repository at {tree.root}" if tree.inner else "the project"
        _step(
            f"Copied {what}: {copy.files} files and {copy.links} links (listed by {copy.listed_by}) "
            f"to a private snapshot in {time.monotonic() - started:.2f}s"
        )
    yield (copy.root / tree.inner if tree.inner else copy.root), copied


@contextlib.contextmanager
def _readable(root: Path) -> Iterator[None]:
    """A file below ``root`` that the key or the snapshot cannot read is one line naming it."""
    try:
        yield
    except PermissionError as error:
        if not str(error.filename).startswith(str(root) + os.sep):
            raise
        raise SafeBuildError(
            f"cannot read {error.filename} ({error.strerror})",
            hint="fix its permissions, or leave it out of the snapshot with --exclude",
            path=error.filename,
        ) from None


def _real_paths(snapshot: Path, real: Path, levels: int) -> list[tuple[bytes, bytes]]:
    """What the artifacts' metadata gets instead of the snapshot's paths, which a backend writes
    there for a path dependency: ``snapshot`` (the copy of ``real``), then ``levels`` of the
    directories above it, up to the snapshot directory (a sibling named from the parent, as
    hatchling's ``{root:parent:uri}/lib``; the paths above the project that it brought along),
    deepest first; each as a ``file:`` URI before its plain path, so that a URI gets the real
    path's URI quoting. The snapshot mirrors the real tree, so a prefix maps a path below it to
    its place."""
    found = []
    above = zip(snapshot.parents[:levels], real.parents[:levels], strict=True)
    for ours, theirs in [(snapshot, real), *above]:
        found += [
            (ours.as_uri().encode(), theirs.as_uri().encode()),
            (os.fsencode(ours), os.fsencode(theirs)),
        ]
    return found


def _snapshot_root(request: _Request) -> Path:
    """Where the snapshot's copy of the tree's root lies."""
    return request.work / "src" / request.tree.copy_name


def _run_build(
    args: argparse.Namespace,
    src: Path,
    work: Path,
    report: bool,
    envs: EnvStore | None,
    *,
    shown_as: Sequence[tuple[bytes, bytes]],
    show: bool = True,
) -> _Shown:
    """Run ``python -m build`` on ``src`` into ``work/out``, its output shown as it comes (private
    paths replaced as ``shown_as`` says); what it showed; raise if it fails.

    With ``envs``, isolated builds take their environment from there instead of making one.
    """
    arguments = options.forwarded(args)
    constraints = options.constraints_text(args)
    if constraints is not None:  # the text parse read and the key names, whatever the file holds now
        (work / "constraints.txt").write_text(constraints, encoding="utf-8")
        arguments.append(f"--dependency-constraints-txt={work / 'constraints.txt'}")
    if not args.metadata:
        arguments.append(f"--outdir={work / 'out'}")
    if report:
        arguments.append(f"--report={work / 'report.json'}")
    arguments.append(str(src))
    (work / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(work / "tmp")}  # build's fresh environments die with work
    if src.is_relative_to(work):  # a snapshot: git never looks for a repository above it
        env["GIT_CEILING_DIRECTORIES"] = os.pathsep.join(
            filter(None, [str(work), os.environ.get("GIT_CEILING_DIRECTORIES")])
        )
    what = f"safe-build: building {Path(args.srcdir).name or args.srcdir}"

    def step_seen(line: str) -> None:  # build's "* Building wheel..." names what runs now
        if line.startswith("* "):
            progress.update(f"{what}: {line[2:].rstrip(':')}")

    output = runner.Relay(work / "output.log", work / "warnings.jsonl", shown_as, step_seen, show=show)
    if envs is None:
        main = partial(build_main, arguments, "python -m build")
    else:
        from safe_build import envbuild  # noqa: PLC0415
        from safe_build.buildcompat import CLI  # noqa: PLC0415

        assert CLI is not None, "_env_store hands out a store only with build's helpers"
        main = partial(envbuild.main, arguments, envs, CLI, "python -m build")
    with progress.status(what):
        code = runner.run(main, cwd=work, env=env, output=output)
    if code == 0:
        return _Shown(output.log, tuple(output.shown_warnings()))
    if not show:
        runner.replay(output.log)
    error = _last_error_line(runner.last_lines(output.log))
    failure = {EXIT_BAD_INPUT: SafeBuildError, EXIT_LOCK_TIMEOUT: LockTimeout}.get(code, BuildFailed)
    raise failure(
        f"building {args.srcdir} failed: {error}"
        if error
        else f"building {args.srcdir} failed (exit code {code})",
        hint="see the build output above; nothing was written to the output directory",
        path=src,
    )


def _last_error_line(lines: Sequence[str]) -> str:
    """The frontend's own one-line summary of what went wrong, if it printed one."""
    found = ""
    for line in lines:
        if line.startswith("ERROR "):
            found = line.removeprefix("ERROR ").strip()
        elif ": error: " in line:
            found = line.split(": error: ", 1)[1].strip()
    return found.rstrip(".")  # it goes on after a semicolon


def _artifacts(private_out: Path) -> list[Path]:
    """What build produced, sdists first (the order build reports them in)."""
    if not private_out.is_dir():
        return []
    files = [path for path in private_out.iterdir() if path.is_file() and not path.name.startswith(".")]
    return sorted(files, key=lambda path: (not path.name.endswith(".tar.gz"), path.name))


def _publish_report(private_report: Path, report: Path, outdir: Path) -> None:
    """Write build's JSON report where the user asked, pointing at the published artifacts."""
    data = json.loads(private_report.read_text(encoding="utf-8"))
    for artifact in data.get("artifacts", []):
        artifact["path"] = str(outdir / artifact["name"])
    publish.write_text_atomically(report, json.dumps(data, indent=2) + "\n")


def _natural_list(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
