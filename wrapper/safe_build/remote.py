"""The remote cache: built artifacts shared between machines through S3-compatible object storage.

Layout under ``s3://BUCKET/PREFIX``::

    cas/<sha256>          content, filed under its digest: written once, never changed
    ac/<key>.json         a manifest: what the build of <key> made (names, sizes, digests), written last
    lease/<key>.json      who is building <key> now, until when (advisory: a build never waits on it)

A writer uploads the content first and the manifest last, with ``If-None-Match: *``: a manifest is
only ever seen complete, and names content that is already there; of two writers of one key the
first wins and the second is told so. Leases use the same conditional writes: created with
``If-None-Match: *``, taken over (once expired) with ``If-Match`` on the ETag read, released with a
conditional delete, so two runners never both believe they hold one.

**The bucket is not trusted.** Anyone who can write to it could plant a manifest, so a reader checks
every field of one (the key it is filed under, plain wheel or sdist file names, sizes and digests of
sane form) and, when a secret is set (``SAFE_BUILD_REMOTE_CACHE_KEY``), its HMAC-SHA256; content is
checked against its size and sha256 while it streams in, and a download writes only inside the
directory it is given. What fails is :class:`Untrusted`: the caller builds instead.

**The remote cache is an optimisation.** Every failure of the storage (unreachable, slow, denied,
missing credentials) is a :class:`RemoteError` with one line that names the bucket and what failed
and never a credential; each request is bounded by the timeout and retried once at most.

boto3's core, botocore, is imported only when a :class:`Remote` is made (s3transfer, for uploads,
only when one is made): a build without a remote cache never loads it, and without it installed
the remote cache is one clear error naming the extra (``safe-build[s3]``, which installs boto3).

Pruning (``safe-build cache remote prune``) removes manifests by age (object storage keeps no last
use), then content no remaining manifest names. A writer that finds its content already there
refreshes an old object's time (a copy onto itself) before filing its manifest, and prune checks an
object's time again just before deleting it, so content a new manifest is about to name is not
removed; only a writer that stalls between the two for longer than the protection bound loses.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import hmac
import json
import os
import re
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)

import safe_build
from safe_build.cache import Artifact  # name, size, sha256: as the local cache keeps them

FORMAT = 1
OUTPUT_LOG = "output.log"
MIN_SECRET = 32  # bytes: an HMAC key shorter than this is a password, not a key
MAX_MANIFEST = 1 << 20  # bytes read of a manifest or a lease at most
MAX_ARTIFACT = 64 << 30  # the largest artifact (or log) a manifest may name
MULTIPART_THRESHOLD = 64 << 20  # larger uploads go in parts, through s3transfer (boto3's)
TOUCH_AFTER = 300.0  # seconds: content found older than this is refreshed before a manifest names it
PARALLEL_REQUESTS = 8  # when listing: botocore keeps 10 connections to a host
_CHUNK = 1 << 20
_KEY = re.compile(r"[0-9a-f]{16,128}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html (dots allowed, no IPs)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP = re.compile(r"\d+\.\d+\.\d+\.\d+")
T = TypeVar("T")
R = TypeVar("R")
_URL_HINT = (
    "give s3://BUCKET or s3://BUCKET/PREFIX (a bucket name of 3-63 lowercase letters, digits, - and .)"
)


class RemoteError(Exception):
    """A remote cache failure, with a message safe to show (never credentials, never a traceback):
    what failed and where (the s3:// URL)."""


class Untrusted(RemoteError):
    """A manifest or artifact that fails verification (bad JSON, wrong key, bad or missing signature
    when a secret is set, unsafe artifact name, size or sha256 mismatch, content missing)."""


@dataclass(frozen=True)
class Location:
    bucket: str
    prefix: str  # "" or "a/b" (no leading or trailing slash)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def parse_url(text: str) -> Location:
    """``s3://BUCKET[/PREFIX]`` as a :class:`Location`; ValueError (a hint) for anything else."""
    scheme, separator, rest = text.strip().partition("://")
    if scheme.lower() != "s3" or not separator:
        raise ValueError(f"{text!r} is not an s3:// URL; {_URL_HINT}")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket or _IP.fullmatch(bucket):
        raise ValueError(f"{bucket!r} is not a valid bucket name; {_URL_HINT}")
    prefix = prefix.strip("/")
    parts = prefix.split("/") if prefix else []
    if any(part in ("", ".", "..") or not part.isprintable() for part in parts):
        raise ValueError(f"{prefix!r} is not a valid prefix (empty, . or .. parts, control characters)")
    return Location(bucket, prefix)


@dataclass(frozen=True)
class Manifest:
    key: str  # the cache key it is filed under
    project: str
    version: str
    artifacts: tuple[Artifact, ...]  # sdists first, as stored
    log: Artifact | None  # the build's output (OUTPUT_LOG), kept in cas/ like an artifact
    warnings: tuple[str, ...]
    built_by: str  # host name of the writer
    built_at: float  # unix time
    safe_build: str  # the writer's version
    signed: bool  # carried a valid HMAC (only ever True when the reader has the secret)

    @property
    def size(self) -> int:
        """What the content it names takes, the log included."""
        return sum(item.size for item in self.artifacts) + (self.log.size if self.log else 0)


@dataclass(frozen=True)
class Holder:
    """A live lease someone else holds."""

    host: str
    pid: int
    started: float
    expires: float


@dataclass(frozen=True)
class RemoteEntry:
    """A manifest as listed: when it was written, and what it says (or why it could not be read)."""

    key: str
    modified: float  # the object's last-modified time (unix)
    manifest: Manifest | None
    problem: str | None = None  # why the manifest is not usable, if it is not

    @property
    def size(self) -> int:
        return 0 if self.manifest is None else self.manifest.size


@dataclass(frozen=True)
class LeaseInfo:
    """A lease object as listed: whose, until when (None when unreadable)."""

    key: str
    modified: float
    holder: Holder | None
    etag: str  # of the object as listed

    def live(self, now: float) -> bool:
        return self.holder is not None and self.holder.expires > now


@dataclass(frozen=True)
class Usage:
    """What the remote cache holds: (objects, bytes) per area."""

    manifests: tuple[int, int]
    content: tuple[int, int]
    leases: tuple[int, int]
    other: tuple[int, int]  # anything else under the prefix
    live_leases: tuple[LeaseInfo, ...]


@dataclass(frozen=True)
class PruneResult:
    manifests: tuple[RemoteEntry, ...] = ()  # removed
    content: int = 0  # cas objects removed
    content_bytes: int = 0
    leases: int = 0  # expired (or unreadable) leases removed
    kept_leased: int = 0  # old manifests kept because a live lease names their key
    kept_young: int = 0  # unnamed content kept because it is younger than the protection bound


@dataclass(frozen=True)
class _Listed:
    name: str  # the object name below the prefix ("cas/…")
    size: int
    modified: float
    etag: str


class Lease:
    """A lease we hold on a key, until ``expires`` (unix time), or until released."""

    def __init__(self, remote: Remote, key: str, etag: str, started: float, expires: float) -> None:
        self._remote = remote
        self.key = key
        self.etag = etag
        self.started = started
        self.expires = expires

    def release(self) -> None:
        """Delete the lease if it is still ours (``If-Match`` our ETag). Never raises: a lease that
        cannot be deleted expires anyway."""
        with contextlib.suppress(Exception):
            self._remote._client.delete_object(
                Bucket=self._remote.location.bucket,
                Key=self._remote._object("lease", f"{self.key}.json"),
                IfMatch=self.etag,
            )


class Remote:
    """The remote cache at ``location``."""

    def __init__(
        self,
        location: Location,
        *,
        endpoint: str | None = None,
        secret: bytes | None = None,
        timeout: float = 10.0,
    ) -> None:
        """``endpoint``: an S3-compatible server's URL (MinIO and the like; addressed path-style then);
        region and credentials the way boto3 finds them (environment, config files, instance roles).
        ``timeout`` bounds connecting and each read of every request; a failed request is retried
        once, so an unreachable endpoint costs about twice the timeout."""
        if secret is not None and len(secret) < MIN_SECRET:
            raise ValueError(f"the remote cache's secret must be at least {MIN_SECRET} bytes")
        self.location = location
        self.secret = secret
        self.timeout = timeout
        try:
            # botocore's own session, not boto3's: boto3 adds its resources and, at each S3 client it
            # makes, s3transfer (0.2 s together), which only an upload needs (see _put_content)
            import botocore.session  # noqa: PLC0415  (only a build with a remote cache pays for it)
            from botocore.config import Config  # noqa: PLC0415
        except ImportError:
            raise RemoteError(
                f'remote cache {location.url}: the remote cache needs boto3: pip install "safe-build[s3]"'
            ) from None
        options: dict[str, Any] = {
            "connect_timeout": timeout,
            "read_timeout": timeout,
            "retries": {"max_attempts": 2, "mode": "standard"},
            "s3": {"addressing_style": "path"} if endpoint else {},
            "user_agent_extra": f"safe-build/{safe_build.__version__}",
        }
        try:  # checksums only where S3 requires them: we check sha256 ourselves, and some servers
            # compatible with S3 refuse the newer default ones
            config = Config(
                **options,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
        except TypeError:  # a botocore before 1.36 knows neither, and sends none by default
            config = Config(**options)
        self.endpoint = endpoint
        with self._mapped("setting up the client"):
            try:
                self._client = botocore.session.get_session().create_client(
                    "s3", endpoint_url=endpoint or None, config=config
                )
            except ValueError:  # botocore's word for an endpoint that is not a URL
                raise RemoteError(
                    f"remote cache {location.url}: the endpoint {endpoint!r} is not a URL such as "
                    "http://127.0.0.1:9000"
                ) from None
            self.endpoint = _without_userinfo(self._client.meta.endpoint_url)

    # -- reading ---------------------------------------------------------------------------------

    def manifest(self, key: str) -> Manifest | None:
        """The manifest of ``key``; None if there is none; Untrusted if it does not verify."""
        _check_key(key)
        name = self._object("ac", f"{key}.json")
        data = self._read_small(name)
        if data is None:
            return None
        return self._verified(key, data)

    def download(self, manifest: Manifest, into: Path) -> tuple[list[Path], Path | None]:
        """Each artifact of ``manifest`` into ``into``/<name> (0600), and its log into ``into``/output.log:
        (the artifacts' paths in the manifest's order, the log's path or None). Each is checked against
        its size and sha256 as it streams in; a mismatch is Untrusted, and nothing written is left."""
        items = [*manifest.artifacts, *([manifest.log] if manifest.log else [])]
        for item in items:  # a Manifest may have been made by hand: never write outside ``into``
            _check_name(item.name, log=item is manifest.log)
        if len({item.name for item in items}) != len(items):
            raise ValueError(f"two artifacts have one name: {[item.name for item in items]}")
        written: list[Path] = []
        try:
            for item in items:
                target = into / item.name
                self._fetch(item, target, written)
        except BaseException:
            for path in written:
                with contextlib.suppress(OSError):
                    path.unlink()
            raise
        paths = written[: len(manifest.artifacts)]
        return paths, (written[-1] if manifest.log else None)

    # -- writing ---------------------------------------------------------------------------------

    def upload(
        self,
        key: str,
        artifacts: Sequence[Path],
        *,
        log: Path | None,
        warnings: Sequence[str],
        project: str,
        version: str,
    ) -> bool:
        """File ``artifacts`` (and the build's ``log``) under ``key``: the content first, each file in
        cas/<sha256> unless it is there already, then the manifest, only if none is there yet (signed
        when a secret is set). True if our manifest was filed, False if another writer's was first."""
        _check_key(key)
        names = [path.name for path in artifacts]
        try:  # what a reader would refuse is not sent: a warning, not a failure of the build
            if not names or len(set(names)) != len(names):
                raise ValueError(f"artifacts need unique names: {names}")
            for name in names:
                _check_name(name)
        except ValueError as error:
            raise RemoteError(f"remote cache {self.location.url}: cannot file {key[:12]}: {error}") from None
        stored = [self._put_content(path, path.name) for path in artifacts]
        stored_log = None if log is None else self._put_content(log, OUTPUT_LOG)
        record: dict[str, object] = {
            "format": FORMAT,
            "key": key,
            "project": project,
            "version": version,
            "artifacts": [_artifact_json(item) for item in stored],
            "log": None if stored_log is None else _artifact_json(stored_log),
            "warnings": list(warnings),
            "built_by": socket.gethostname(),
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "safe_build": safe_build.__version__,
        }
        record["signature"] = None if self.secret is None else _sign(self.secret, record)
        body = (json.dumps(record, indent=1) + "\n").encode("utf-8")
        name = self._object("ac", f"{key}.json")
        try:
            with self._mapped(f"writing {self._display(name)}", conflicts=True):
                self._client.put_object(
                    Bucket=self.location.bucket,
                    Key=name,
                    Body=body,
                    IfNoneMatch="*",
                    ContentType="application/json",
                )
        except _Conflict:
            return False
        return True

    def try_lease(self, key: str, project: str, *, ttl: float) -> Lease | Holder:
        """Take the lease of ``key`` for ``ttl`` seconds, or learn who holds it.

        A lease that has expired (or cannot be read) is taken over with ``If-Match`` on the ETag we
        read; if that fails, another runner took it first, and its lease is what is returned."""
        _check_key(key)
        name = self._object("lease", f"{key}.json")
        seen: Holder | None = None
        for _ in range(5):
            started = time.time()
            body = json.dumps(
                {
                    "format": FORMAT,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "project": project,
                    "started": started,
                    "expires": started + ttl,
                }
            ).encode("utf-8")
            etag = self._conditional_put(name, body, IfNoneMatch="*")
            if etag is not None:
                return Lease(self, key, etag, started, started + ttl)
            found = self._read_small(name, with_etag=True, oversized=b"")
            if found is None:
                continue  # released meanwhile: try again
            data, current = found
            seen = _holder(data)
            if seen is not None and seen.expires > time.time():
                return seen
            etag = self._conditional_put(name, body, IfMatch=current)
            if etag is not None:
                return Lease(self, key, etag, started, started + ttl)
            # another runner took it over first: the next round reads its lease
        if seen is not None:
            return seen
        raise RemoteError(f"remote cache {self.location.url}: the lease of {key[:12]} keeps changing hands")

    def holder(self, key: str) -> Holder | None:
        """Who holds the lease of ``key`` now, without taking it (a reader that may not write):
        None if nobody does (no lease, an expired or an unreadable one)."""
        _check_key(key)
        data = self._read_small(self._object("lease", f"{key}.json"), oversized=b"")
        found = None if data is None else _holder(data)
        return found if found is not None and found.expires > time.time() else None

    # -- looking after the bucket ----------------------------------------------------------------

    def entries(self) -> list[RemoteEntry]:
        """Every manifest (ac/), read and checked, with its last-modified time."""

        def entry(listed: _Listed) -> RemoteEntry:
            return self._entry(listed.name[len("ac/") :].removesuffix(".json"), listed)

        return _in_parallel(entry, list(self._list("ac/")))

    def leases(self) -> list[LeaseInfo]:
        """Every lease object, with its holder if it can be read."""

        def lease(listed: _Listed) -> LeaseInfo:
            data = self._read_small(self._object(listed.name), oversized=b"")
            return LeaseInfo(
                listed.name[len("lease/") :].removesuffix(".json"),
                listed.modified,
                None if data is None else _holder(data),
                listed.etag,
            )

        return _in_parallel(lease, list(self._list("lease/")))

    def usage(self) -> Usage:
        """How many objects, and bytes, each area holds; the live leases."""
        areas: dict[str, list[int]] = {"ac": [0, 0], "cas": [0, 0], "lease": [0, 0], "": [0, 0]}
        for listed in self._list(""):
            area = listed.name.split("/", 1)[0] if "/" in listed.name else ""
            counts = areas[area if area in areas else ""]
            counts[0] += 1
            counts[1] += listed.size
        now = time.time()
        live = tuple(info for info in self.leases() if info.live(now))

        def pair(area: str) -> tuple[int, int]:
            return (areas[area][0], areas[area][1])

        return Usage(pair("ac"), pair("cas"), pair("lease"), pair(""), live)

    def prune(self, *, older_than: float, protect_younger_than: float = 3600.0) -> PruneResult:
        """Remove manifests written more than ``older_than`` seconds ago, then the content no remaining
        manifest names, then expired leases. Nothing younger than ``protect_younger_than`` seconds is
        removed, nor the manifest of a key a live lease names. A manifest that cannot be read
        (damaged, or not signed with our secret) still protects the content it seems to name."""
        now = time.time()
        leases = self.leases()
        leased = {info.key for info in leases if info.live(now)}
        bound = now - protect_younger_than
        removed: list[RemoteEntry] = []
        kept_leased = 0
        names: set[str] = set()
        for listed in self._list("ac/"):
            key = listed.name[len("ac/") :].removesuffix(".json")
            if listed.modified < min(now - older_than, bound):
                if key in leased:
                    kept_leased += 1
                else:
                    entry = self._entry(key, listed)
                    self._delete(listed.name)
                    removed.append(entry)
                    continue
                # read before any content is deleted: a fault stops the prune (one too large names nothing)
                names |= _named_content(self._read_small(self._object(listed.name), oversized=b""))
        content = content_bytes = young = 0
        for listed in self._list("cas/"):
            digest = listed.name[len("cas/") :]
            if digest in names:
                continue
            if listed.modified >= bound or self._modified(listed.name) >= bound:  # refreshed meanwhile?
                young += 1
                continue
            self._delete(listed.name)
            content += 1
            content_bytes += listed.size
        expired = 0
        for info in leases:
            if info.live(now) or (info.holder is None and info.modified >= bound):
                continue
            # only the lease we judged: one taken over meanwhile has another ETag
            with contextlib.suppress(_Conflict), self._mapped("removing a lease", conflicts=True):
                self._client.delete_object(
                    Bucket=self.location.bucket,
                    Key=self._object("lease", f"{info.key}.json"),
                    IfMatch=info.etag,
                )
                expired += 1
        return PruneResult(tuple(removed), content, content_bytes, expired, kept_leased, young)

    # -- helpers ---------------------------------------------------------------------------------

    def _object(self, *parts: str) -> str:
        return "/".join(part for part in (self.location.prefix, *parts) if part)

    def _display(self, name: str) -> str:
        """An object's name as shown in messages: below the URL."""
        prefix = f"{self.location.prefix}/" if self.location.prefix else ""
        return name[len(prefix) :] if name.startswith(prefix) else name

    def _entry(self, key: str, listed: _Listed) -> RemoteEntry:
        try:
            _check_key(key)
            data = self._read_small(self._object(listed.name))
            if data is None:
                return RemoteEntry(key, listed.modified, None, "removed meanwhile")
            return RemoteEntry(key, listed.modified, _parse_manifest(key, data, self.secret))
        except (ValueError, KeyError, TypeError) as error:
            return RemoteEntry(key, listed.modified, None, _reason(error))
        except Untrusted as error:  # too large to read
            return RemoteEntry(key, listed.modified, None, str(error).rsplit(": ", 1)[-1])

    def _verified(self, key: str, data: bytes) -> Manifest:
        try:
            return _parse_manifest(key, data, self.secret)
        except (ValueError, KeyError, TypeError) as error:
            raise Untrusted(
                f"remote cache {self.location.url}: manifest ac/{key}.json: {_reason(error)}"
            ) from None

    def _read_small(self, name: str, *, with_etag: bool = False, oversized: bytes | None = None) -> Any:
        """An object's bytes (at most MAX_MANIFEST), with its ETag if asked; None if there is none.
        A larger object is Untrusted, or read as ``oversized`` if that is given (a lease that large
        is garbage: as good as expired)."""
        what = f"reading {self._display(name)}"
        with self._mapped(what):
            try:
                response = self._client.get_object(Bucket=self.location.bucket, Key=name)
            except self._client.exceptions.NoSuchKey:
                return None
            with contextlib.closing(response["Body"]) as body:
                announced = int(response.get("ContentLength", 0))
                data = b"" if announced > MAX_MANIFEST else body.read(MAX_MANIFEST + 1)
        if max(announced, len(data)) > MAX_MANIFEST:
            if oversized is None:
                raise Untrusted(f"remote cache {self.location.url}: {self._display(name)} is too large")
            data = oversized
        return (data, response["ETag"]) if with_etag else data

    def _fetch(self, item: Artifact, target: Path, written: list[Path]) -> None:
        """``item`` from cas/ into ``target``, checked as it streams."""
        name = self._object("cas", item.sha256)
        where = f"remote cache {self.location.url}: {item.name} (cas/{item.sha256[:12]}…)"
        with self._mapped(f"downloading {item.name} from cas/{item.sha256[:12]}…"):
            try:
                response = self._client.get_object(Bucket=self.location.bucket, Key=name)
            except self._client.exceptions.NoSuchKey:
                raise Untrusted(f"{where}: the content is missing") from None
            with contextlib.closing(response["Body"]) as body:
                announced = response.get("ContentLength")
                if announced is not None and int(announced) != item.size:
                    raise Untrusted(f"{where}: {announced} bytes, not the {item.size} the manifest says")
                with contextlib.suppress(FileNotFoundError):
                    target.unlink()  # a leftover in the caller's directory: never written through
                fd = os.open(
                    target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
                )
                written.append(target)
                digest = hashlib.sha256()
                size = 0
                with os.fdopen(fd, "wb") as out:
                    os.fchmod(out.fileno(), 0o600)  # whatever the umask
                    while size <= item.size:  # one byte past the size is enough to know it is wrong
                        chunk = body.read(min(_CHUNK, item.size - size + 1))
                        if not chunk:
                            break
                        size += len(chunk)
                        if size > item.size:
                            break
                        digest.update(chunk)
                        out.write(chunk)
        if size != item.size:
            raise Untrusted(f"{where}: {'more' if size > item.size else size} bytes, not {item.size}")
        if not hmac.compare_digest(digest.hexdigest(), item.sha256):
            raise Untrusted(f"{where}: the content does not match its sha256")

    def _put_content(self, path: Path, name: str) -> Artifact:
        """``path`` into cas/<its sha256> unless there already (then refreshed if old)."""
        size, sha256 = _digest(path)
        if size > MAX_ARTIFACT:
            raise RemoteError(
                f"remote cache {self.location.url}: {path.name} is larger than the remote cache takes "
                f"({size} bytes, at most {MAX_ARTIFACT})"
            )
        target = self._object("cas", sha256)
        shown = f"cas/{sha256[:12]}…"
        with self._mapped(f"looking for {shown}"):
            try:
                head = self._client.head_object(Bucket=self.location.bucket, Key=target)
            except self._client.exceptions.ClientError as error:
                if _status(error) != 404:
                    raise
                head = None
        if head is not None and int(head.get("ContentLength", -1)) == size:
            if time.time() - head["LastModified"].timestamp() > TOUCH_AFTER:
                with self._mapped(f"refreshing {shown}"):  # a prune running now must see it as young
                    self._client.copy_object(
                        Bucket=self.location.bucket,
                        Key=target,
                        CopySource={"Bucket": self.location.bucket, "Key": target},
                        MetadataDirective="REPLACE",
                    )
            return Artifact(name, size, sha256)
        from s3transfer.futures import NonThreadedExecutor  # noqa: PLC0415 (only uploads need them)
        from s3transfer.manager import TransferConfig, TransferManager  # noqa: PLC0415

        transfer = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD
        )
        with (
            self._mapped(f"uploading {path.name} to {shown}"),
            TransferManager(self._client, transfer, executor_cls=NonThreadedExecutor) as manager,
        ):
            manager.upload(str(path), self.location.bucket, target).result()
        return Artifact(name, size, sha256)

    def _conditional_put(self, name: str, body: bytes, **condition: str) -> str | None:
        """Write ``name`` if ``condition`` holds: its new ETag, or None if it did not hold."""
        try:
            with self._mapped(f"writing {self._display(name)}", conflicts=True):
                response = self._client.put_object(
                    Bucket=self.location.bucket,
                    Key=name,
                    Body=body,
                    ContentType="application/json",
                    **condition,
                )
        except _Conflict:
            return None
        etag: str = response["ETag"]
        return etag

    def _list(self, area: str) -> Iterator[_Listed]:
        """Every object below the prefix whose name starts with ``area`` (``ac/``, or "" for all)."""
        base = f"{self.location.prefix}/" if self.location.prefix else ""
        with self._mapped(f"listing {area or 'the objects'}"):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.location.bucket, Prefix=base + area
            )
            objects = [item for page in pages for item in page.get("Contents", [])]
        for item in objects:
            yield _Listed(
                item["Key"][len(base) :],
                int(item["Size"]),
                item["LastModified"].timestamp(),
                item.get("ETag", ""),
            )

    def _modified(self, name: str) -> float:
        """The last-modified time of ``name`` (below the prefix) now; +inf if it is gone."""
        with self._mapped(f"looking at {name}"):
            try:
                head = self._client.head_object(Bucket=self.location.bucket, Key=self._object(name))
            except self._client.exceptions.ClientError as error:
                if _status(error) != 404:
                    raise
                return float("inf")
        modified: float = head["LastModified"].timestamp()
        return modified

    def _delete(self, name: str) -> None:
        with self._mapped(f"removing {name}"):
            self._client.delete_object(Bucket=self.location.bucket, Key=self._object(name))

    @contextlib.contextmanager
    def _mapped(self, what: str, *, conflicts: bool = False) -> Iterator[None]:
        """Turn boto3's and botocore's exceptions into one safe line (a RemoteError); with
        ``conflicts``, a failed precondition (412, 409) into _Conflict."""
        try:
            yield
        except (RemoteError, _Conflict):
            raise
        except Exception as error:
            if conflicts and _is_conflict(error):
                raise _Conflict from None
            if not _is_boto(error):
                raise
            self._fail(what, error)

    def _fail(self, what: str, error: BaseException) -> NoReturn:
        raise RemoteError(
            f"remote cache {self.location.url}: {_describe(error, what, self.endpoint, self.timeout)}"
        ) from None


def _without_userinfo(url: str) -> str:
    """``url`` as shown in messages: without a user name or password someone wrote into it."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _in_parallel(function: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``function`` of each item, in order, a few requests at a time: a bucket may hold thousands
    of manifests, and each is a request. The first failure is raised."""
    if len(items) < 2:
        return [function(item) for item in items]
    with concurrent.futures.ThreadPoolExecutor(max_workers=PARALLEL_REQUESTS) as pool:
        return list(pool.map(function, items))


class _Conflict(Exception):
    """A conditional write or delete whose condition did not hold (412), or raced another (409)."""


def _is_boto(error: BaseException) -> bool:
    module = type(error).__module__
    return module.startswith(("botocore", "boto3", "s3transfer", "urllib3"))


def _is_conflict(error: BaseException) -> bool:
    cause = _client_error(error)
    return cause is not None and (_status(cause) in (409, 412) or _code(cause) in ("PreconditionFailed",))


def _client_error(error: BaseException | None) -> Any:
    """The ClientError behind ``error`` (boto3's transfer wraps it), if there is one."""
    seen = 0
    while error is not None and seen < 5:
        if hasattr(error, "response") and isinstance(getattr(error, "response", None), Mapping):
            return error
        error = error.__cause__ or error.__context__
        seen += 1
    return None


def _status(error: Any) -> int | None:
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status if isinstance(status, int) else None


def _code(error: Any) -> str:
    code = error.response.get("Error", {}).get("Code", "")
    return code if isinstance(code, str) else ""


def _describe(error: BaseException, what: str, endpoint: str | None, timeout: float) -> str:  # noqa: PLR0911
    """One line for ``error`` built from its class, code and status only: botocore's own messages
    may carry more than is safe to show."""
    name = type(error).__name__
    where = endpoint or "the S3 endpoint"
    if name == "ConnectTimeoutError":
        return f"cannot connect to {where} (timed out after {timeout:g}s) while {what}"
    if name == "ReadTimeoutError":
        return f"{where} did not answer in time (timed out after {timeout:g}s) while {what}"
    if name in ("EndpointConnectionError", "ConnectionError", "HTTPClientError"):
        return f"cannot connect to {where} ({name}) while {what}"
    if name in ("ConnectionClosedError", "ResponseStreamingError", "IncompleteReadError"):
        return f"the connection to {where} broke ({name}) while {what}"
    if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
        return (
            f"no usable credentials ({name}) while {what}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "or AWS_PROFILE"
        )
    if name == "NoRegionError":
        return f"no region ({name}) while {what}: set AWS_DEFAULT_REGION"
    cause = _client_error(error)
    if cause is not None:
        code, status = _code(cause), _status(cause)
        advice = {
            "AccessDenied": ": the credentials may not do this here",
            "NoSuchBucket": ": the bucket does not exist",
            "InvalidAccessKeyId": ": the access key is not known there",
            "SignatureDoesNotMatch": ": check the secret access key",
            "SlowDown": ": the server asks to slow down; try again later",
        }.get(code, "")
        return f"{what} failed: {code or type(cause).__name__} (HTTP {status}){advice}"
    return f"{what} failed: {name}"


def _reason(error: Exception) -> str:
    """Why a manifest was refused, in words (a KeyError's text is only the key)."""
    return f"no {error.args[0]!r} field" if isinstance(error, KeyError) else str(error)


def _check_key(key: str) -> None:
    if not _KEY.fullmatch(key):
        raise ValueError(f"not a cache key: {key!r}")


def _check_name(name: str, *, log: bool = False) -> None:
    """A plain file name that is a wheel's or an sdist's (or output.log, for a log): ValueError if not."""
    if log:
        if name != OUTPUT_LOG:
            raise ValueError(f"the log is named {name!r}, not {OUTPUT_LOG}")
        return
    if (
        not name
        or len(name.encode("utf-8", "surrogateescape")) > 255
        or name.startswith(".")
        or any(char in name for char in "/\\\0")
        or not name.isprintable()
        or name == OUTPUT_LOG
    ):
        raise ValueError(f"{name!r} is not a safe file name")
    try:
        if name.endswith(".whl"):
            parse_wheel_filename(name)
        else:
            parse_sdist_filename(name)
    except (InvalidWheelFilename, InvalidSdistFilename):
        raise ValueError(f"{name!r} is not the name of a wheel or an sdist") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("a field appears twice")
    return result


def _canonical(record: Mapping[str, object]) -> bytes:
    """What the signature covers: every field but the signature, as sorted compact JSON."""
    fields = {name: value for name, value in record.items() if name != "signature"}
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _sign(secret: bytes, record: Mapping[str, object]) -> str:
    return hmac.new(secret, _canonical(record), hashlib.sha256).hexdigest()


def _parse_manifest(key: str, data: bytes, secret: bytes | None) -> Manifest:
    """The manifest in ``data``, filed under ``key``: every field checked (ValueError, KeyError,
    TypeError otherwise)."""
    try:
        record = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ValueError("not JSON") from None
    record = _typed(record, dict)
    if record.get("format") != FORMAT or isinstance(record.get("format"), bool):
        raise ValueError(f"format {record.get('format')!r}, not {FORMAT}")
    signature = record.get("signature")
    signed = False
    if secret is not None:
        if not isinstance(signature, str):
            raise ValueError("not signed, and a secret is set")
        if not hmac.compare_digest(
            signature.encode("ascii", "replace"), _sign(secret, record).encode("ascii")
        ):
            raise ValueError("the signature does not match")
        signed = True
    elif signature is not None and not isinstance(signature, str):
        raise TypeError("the signature is not text")
    if record["key"] != key:
        raise ValueError(f"filed under {key[:12]}… but made for {str(record['key'])[:12]!r}")
    artifacts = tuple(_artifact(item) for item in _typed(record["artifacts"], list))
    if not artifacts:
        raise ValueError("it names no artifacts")
    names = [item.name for item in artifacts]
    if len(set(names)) != len(names):
        raise ValueError("two artifacts have one name")
    log = None if record["log"] is None else _artifact(record["log"], log=True)
    warnings = tuple(_warning(text) for text in _typed(record["warnings"], list))
    built_at = datetime.fromisoformat(_typed(record["built_at"], str))
    if built_at.tzinfo is None:
        built_at = built_at.replace(tzinfo=timezone.utc)
    return Manifest(
        key=key,
        project=_text(record["project"]),
        version=_text(record["version"]),
        artifacts=artifacts,
        log=log,
        warnings=warnings,
        built_by=_text(record["built_by"]),
        built_at=built_at.timestamp(),
        safe_build=_text(record["safe_build"]),
        signed=signed,
    )


def _artifact(item: object, *, log: bool = False) -> Artifact:
    fields = _typed(item, dict)
    name = _typed(fields["name"], str)
    _check_name(name, log=log)
    size = fields["size"]
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_ARTIFACT:
        raise ValueError(f"{name}: {size!r} is not a size")
    sha256 = fields["sha256"]
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise ValueError(f"{name}: {sha256!r} is not a sha256")
    return Artifact(name, size, sha256)


def _artifact_json(item: Artifact) -> dict[str, object]:
    return {"name": item.name, "size": item.size, "sha256": item.sha256}


def _text(value: object) -> str:
    text: str = _typed(value, str)
    if not text or len(text) > 1000 or not text.isprintable():
        raise ValueError(f"{text[:40]!r} is not a plain line of text")
    return text


def _warning(value: object) -> str:
    """A warning as build showed it: shown again on a hit, so no control characters (a terminal's
    escape sequences) from whoever wrote the bucket."""
    text: str = _typed(value, str)
    if not text.replace("\t", " ").isprintable():
        raise ValueError(f"a warning holds control characters: {text[:40]!r}")
    return text


def _typed(value: Any, kind: type[Any]) -> Any:
    if not isinstance(value, kind):
        raise TypeError(f"expected {kind.__name__}, found {type(value).__name__}")
    return value


def _holder(data: bytes) -> Holder | None:
    """The holder a lease object names; None if it is not a lease (garbage is as good as expired)."""
    try:
        record = _typed(json.loads(data.decode("utf-8")), dict)
        pid = record["pid"]
        started, expires = float(record["started"]), float(record["expires"])
        if not isinstance(pid, int) or isinstance(pid, bool):
            return None
        return Holder(_text(record["host"]), pid, started, expires)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
        return None


def _named_content(data: bytes | None) -> set[str]:
    """The sha256 of everything a manifest seems to name, read leniently: a manifest we cannot
    verify still keeps its content from being pruned."""
    if data is None:
        return set()
    try:
        record = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return set()
    if not isinstance(record, dict):
        return set()
    items = record.get("artifacts")
    items = [*items] if isinstance(items, list) else []
    items.append(record.get("log"))
    return {
        item["sha256"]
        for item in items
        if isinstance(item, dict)
        and isinstance(item.get("sha256"), str)
        and _SHA256.fullmatch(item["sha256"])
    }


def _digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as data:
        while chunk := data.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()
