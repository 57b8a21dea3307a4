"""How one run of safe-build uses the remote cache: look up, wait for another runner, store.

The local cache is asked first; only when it misses does a build reach this module, which then
imports the S3 client (``remote``). In order, for the key of what is about to be built:

1. **Look up**: the remote manifest of the key (or of the key local to the tree's place); its
   artifacts are downloaded into the build's private directory and verified (size, sha256, and
   the signature when a secret is set) before the caller stores them in the local cache and
   publishes them, as if they had been built here.
2. **Single flight across the fleet**: a runner about to build claims a lease on the key
   (``lease/<key>.json``, created only if absent). Another runner that finds a live lease waits,
   polling for the manifest, at most ``remote-cache-wait`` seconds and never past the lease's
   expiry, then builds itself. ``read`` mode never writes, so it claims nothing; it still waits.
3. **Store**: after a build whose key is sound (the snapshot's own key), its artifacts and output
   go up content first, the manifest last and only if absent.

The remote cache is an optimisation: a failure of it (unreachable, slow, denied, a vanished
bucket) is one warning for the whole run, after which the run goes on without it, unless
``remote-cache-required`` makes it fatal. An entry that fails verification is ignored with a
warning and built locally. No message names a credential.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from safe_build import locks, progress
from safe_build.errors import BuildFailed, SafeBuildError

if TYPE_CHECKING:
    from safe_build import remote
    from safe_build.config import Settings

ENDPOINT_VARIABLE = "SAFE_BUILD_REMOTE_CACHE_ENDPOINT"
SECRET_VARIABLE = "SAFE_BUILD_REMOTE_CACHE_KEY"
MIN_SECRET_BYTES = 32
# between looks for the manifest another runner is building: soon at first (most builds a runner
# waits for are short, and each second of delay is paid by every waiter), then less often
FIRST_POLL_SECONDS = 0.1
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Fetched:
    """A remote entry, downloaded and verified into a private directory."""

    key: str
    manifest: remote.Manifest
    artifacts: list[Path]
    log: Path | None


@dataclass(frozen=True)
class _Wanted:
    """What a build looks for: its keys (the first is leased), its project's name, where to download."""

    keys: Sequence[str]
    project: str
    into: Path


class Claim:
    """What a runner holds while it builds a key the remote lacks: a lease, or nothing."""

    def __init__(self, lease: remote.Lease | None = None) -> None:
        self._lease = lease

    def release(self) -> None:
        if self._lease is not None:
            self._lease.release()
            self._lease = None


class Shared:
    """The remote cache for one run: made when a setting names one, connected on first use."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.remote_cache.value
        self.writes = settings.remote_cache_mode.value == "read-write"
        self.wait = settings.remote_cache_wait.value
        self.timeout = settings.remote_cache_timeout.value
        self.required = settings.remote_cache_required.value
        self.secret = _secret()
        self._client: remote.Remote | None = None
        self._broken = False  # a failure was reported: the rest of the run goes without
        self._ignored: set[str] = set()  # keys whose remote entry failed verification

    @staticmethod
    def of(settings: Settings) -> Shared | None:
        """The remote cache the settings name, or None; a bad secret is refused now (exit 2).

        One per process and set of settings: safe-pip runs several builds in one process, and a
        remote cache that failed for one is not asked again (nor warned of) for the next."""
        if not settings.remote_cache.value:
            return None
        which = (
            settings.remote_cache.value,
            settings.remote_cache_mode.value,
            settings.remote_cache_wait.value,
            settings.remote_cache_timeout.value,
            settings.remote_cache_required.value,
        )
        if which not in _made:
            _made[which] = Shared(settings)
        return _made[which]

    def look_up(self, keys: Sequence[str], project: str, into: Path) -> Fetched | Claim:
        """The entry of the first of ``keys`` the remote has (downloaded and verified into ``into``);
        else, before ``project`` is built here, a lease on ``keys[0]`` (read-write), or, while
        another runner holds one, its entry once it appears, or nothing after the wait."""
        return self._fetch(keys, into) or self._claim(_Wanted(keys, project, into))

    def _fetch(self, keys: Sequence[str], into: Path) -> Fetched | None:
        """The first of ``keys`` the remote has, downloaded and verified into ``into``; else None."""
        from safe_build import remote  # noqa: PLC0415

        client = self._connected()
        for key in keys:
            if client is None:
                return None
            if key in self._ignored:
                continue
            try:
                manifest = client.manifest(key)
                if manifest is None:
                    continue
                into.mkdir(mode=0o700, exist_ok=True)
                with progress.status(f"safe-build: downloading {manifest.project} from {self.url}"):
                    artifacts, log = client.download(manifest, into)
                return Fetched(key, manifest, artifacts, log)
            except remote.Untrusted as error:
                self._ignored.add(key)
                progress.labelled("warning", f"ignored remote cache entry {key[:12]}: {error}; building here")
            except remote.RemoteError as error:
                self._failed(error)
                client = None
        return None

    def _claim(self, wanted: _Wanted) -> Claim | Fetched:
        from safe_build import remote  # noqa: PLC0415

        client = self._connected()
        if client is None:
            return Claim()
        deadline = time.monotonic() + self.wait
        try:
            holder = self._lease_or_holder(client, wanted)
            if not isinstance(holder, remote.Holder):
                return self._checked(Claim(holder), wanted)
            return self._wait_for(client, holder, deadline, wanted)
        except remote.RemoteError as error:
            self._failed(error)
            return Claim()

    def _wait_for(
        self,
        client: remote.Remote,
        holder: remote.Holder,
        deadline: float,
        wanted: _Wanted,
    ) -> Claim | Fetched:
        """Poll for the entry ``holder`` is building until it appears, the lease ends (then take
        it), the lease expires or ``deadline`` (monotonic) passes (then build without one)."""
        from safe_build import remote  # noqa: PLC0415

        text = f"waiting for {holder.host} (pid {holder.pid}) to build {wanted.project} (remote lease"
        announce = time.monotonic() + locks.GRACE_SECONDS  # as a busy lock is: after a second
        poll = FIRST_POLL_SECONDS
        with progress.status(f"safe-build: {text})"):
            while True:
                now = time.monotonic()
                until = min(deadline, now + holder.expires - time.time())
                if now >= until:
                    return Claim()  # the bound, or the lease's expiry: build here, without a lease
                if now >= announce and not locks.quiet:
                    locks.notice(f"{text}, at most {until - now:.0f}s more)")
                    announce = math.inf
                time.sleep(min(poll, until - time.monotonic()))
                poll = min(poll * 1.5, POLL_SECONDS)
                fetched = self._fetch(wanted.keys, wanted.into)
                if fetched is not None or self._broken:
                    return fetched or Claim()
                found = self._lease_or_holder(client, wanted)
                if not isinstance(found, remote.Holder):  # the holder is done or gone
                    return self._checked(Claim(found), wanted)
                holder = found

    def _checked(self, claim: Claim, wanted: _Wanted) -> Claim | Fetched:
        """Look again once the lease is ours: a runner may have filed the entry and let go of its
        lease between our first look and our lease, and then nobody needs to build."""
        fetched = self._fetch(wanted.keys, wanted.into)
        if fetched is None:
            return claim
        claim.release()
        return fetched

    def store(
        self,
        key: str,
        artifacts: Sequence[Path],
        *,
        log: Path | None,
        warnings: Sequence[str],
        project: str,
        version: str,
    ) -> None:
        """Send a build's artifacts and output up under ``key`` (read-write mode only)."""
        from safe_build import remote  # noqa: PLC0415

        client = self._connected() if self.writes else None
        if client is None:
            return
        try:
            with progress.status(f"safe-build: sending {project} to {self.url}"):
                client.upload(key, artifacts, log=log, warnings=warnings, project=project, version=version)
        except remote.RemoteError as error:
            self._failed(error)

    def _lease_or_holder(self, client: remote.Remote, wanted: _Wanted) -> remote.Lease | remote.Holder | None:
        """A lease on the key (read-write), the live holder of one, or None (read mode, no holder)."""
        if self.writes:
            return client.try_lease(wanted.keys[0], wanted.project, ttl=self.wait)
        return client.holder(wanted.keys[0])

    def _connected(self) -> remote.Remote | None:
        if self._broken:
            return None
        if self._client is None:
            from safe_build import remote  # noqa: PLC0415 (boto3 only when a build needs the remote)

            try:
                self._client = remote.Remote(
                    remote.parse_url(self.url),
                    endpoint=os.environ.get(ENDPOINT_VARIABLE) or None,
                    secret=self.secret,
                    timeout=self.timeout,
                )
            except remote.RemoteError as error:
                self._failed(error)
                return None
        return self._client

    def _failed(self, error: Exception) -> None:
        """One warning for the run (or the end of it, when the remote cache is required)."""
        if self.required:
            raise BuildFailed(
                str(error),
                hint="the remote cache is required (remote-cache-required); unset it to build without",
            )
        if not self._broken:
            progress.labelled("warning", f"{error}; going on without the remote cache")
        self._broken = True


_made: dict[tuple[object, ...], Shared] = {}  # Shared.of's, by the settings' values


def _secret() -> bytes | None:
    text = os.environ.get(SECRET_VARIABLE)
    if not text:
        return None
    secret = text.encode("utf-8")
    if len(secret) < MIN_SECRET_BYTES:
        raise SafeBuildError(
            f"{SECRET_VARIABLE} is {len(secret)} bytes long",
            hint=f"give a random secret of at least {MIN_SECRET_BYTES} bytes, such as the output of "
            "python -c 'import secrets; print(secrets.token_hex(32))'",
        )
    return secret
