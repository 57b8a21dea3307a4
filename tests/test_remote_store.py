"""The remote cache's storage layer against a real S3 API (moto's server in its own process).

What the bucket holds is not trusted: tampered manifests and content are refused, and a download
writes nowhere but the directory it is given. Leases are taken by exactly one runner. A server that
stops answering or is gone is one RemoteError within the timeout's bound.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from safe_build import remote
from safe_build.cache import Artifact
from safe_build.remote import Holder, Lease, Location, Remote, RemoteError, Untrusted, parse_url
from tests.s3server import ReadOnlyS3, S3Bucket, S3Server, make_bucket

KEY = "a" * 64
OTHER = "b" * 64
SECRET = b"s" * 32
WHEEL = "demo-1.0-py3-none-any.whl"
SDIST = "demo-1.0.tar.gz"


def artifacts(root: Path, tag: bytes = b"") -> tuple[list[Path], Path]:
    """An sdist, a wheel (arbitrary bytes: the store does not open them) and a build log."""
    root.mkdir(parents=True, exist_ok=True)
    sdist, wheel, log = root / SDIST, root / WHEEL, root / "build.log"
    sdist.write_bytes(b"sdist " + tag + os.urandom(3000))
    wheel.write_bytes(b"wheel " + tag + os.urandom(70_000))
    log.write_text("* Building wheel...\nWARNING careful\n")
    return [sdist, wheel], log


def make_remote(bucket: S3Bucket, *, secret: bytes | None = None, timeout: float = 10.0) -> Remote:
    return Remote(parse_url(bucket.url), endpoint=bucket.server.endpoint, secret=secret, timeout=timeout)


def upload(store: Remote, root: Path, key: str = KEY, tag: bytes = b"") -> list[Path]:
    files, log = artifacts(root, tag)
    assert store.upload(key, files, log=log, warnings=["careful"], project="demo", version="1.0")
    return files


def listing(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def put_manifest(bucket: S3Bucket, key: str, record: object) -> None:
    body = record if isinstance(record, bytes) else json.dumps(record).encode()
    bucket.client().put_object(Bucket=bucket.name, Key=bucket.key("ac", f"{key}.json"), Body=body)


def get_manifest(bucket: S3Bucket, key: str = KEY) -> dict[str, object]:
    response = bucket.client().get_object(Bucket=bucket.name, Key=bucket.key("ac", f"{key}.json"))
    record: dict[str, object] = json.loads(response["Body"].read())
    return record


def test_round_trip(s3: S3Bucket, tmp_path: Path) -> None:
    store = make_remote(s3)
    files = upload(store, tmp_path / "built")
    manifest = store.manifest(KEY)
    assert manifest is not None
    assert (manifest.key, manifest.project, manifest.version) == (KEY, "demo", "1.0")
    assert [item.name for item in manifest.artifacts] == [SDIST, WHEEL]
    assert manifest.warnings == ("careful",)
    assert manifest.log is not None
    assert manifest.log.name == "output.log"
    assert not manifest.signed
    assert abs(manifest.built_at - time.time()) < 60
    into = tmp_path / "into"
    into.mkdir(mode=0o700)
    paths, log = store.download(manifest, into)
    assert paths == [into / SDIST, into / WHEEL]
    for original, copy in zip(files, paths, strict=True):
        assert copy.read_bytes() == original.read_bytes()
        assert copy.stat().st_mode & 0o777 == 0o600
    assert log == into / "output.log"
    assert log.read_text() == (tmp_path / "built" / "build.log").read_text()
    assert store.manifest(OTHER) is None


def test_content_is_stored_once_and_the_first_manifest_stays(s3: S3Bucket, tmp_path: Path) -> None:
    store = make_remote(s3)
    upload(store, tmp_path / "first")
    first = get_manifest(s3)
    files, log = artifacts(tmp_path / "second", b"other")
    assert not store.upload(KEY, files, log=log, warnings=[], project="demo", version="1.0")
    assert get_manifest(s3) == first
    # the same files under another key: no new content
    before = s3.client().list_objects_v2(Bucket=s3.name, Prefix=s3.key("cas/"))["KeyCount"]
    files, log = [tmp_path / "first" / SDIST, tmp_path / "first" / WHEEL], tmp_path / "first" / "build.log"
    assert store.upload(OTHER, files, log=log, warnings=[], project="demo", version="1.0")
    assert s3.client().list_objects_v2(Bucket=s3.name, Prefix=s3.key("cas/"))["KeyCount"] == before


def test_signed_manifests(s3: S3Bucket, tmp_path: Path) -> None:
    signer = make_remote(s3, secret=SECRET)
    upload(signer, tmp_path / "built")
    manifest = signer.manifest(KEY)
    assert manifest is not None
    assert manifest.signed
    plain = make_remote(s3).manifest(KEY)  # without the secret: read, not checked
    assert plain is not None
    assert not plain.signed
    with pytest.raises(Untrusted, match="signature does not match"):
        make_remote(s3, secret=b"t" * 32).manifest(KEY)
    with pytest.raises(ValueError, match="at least 32 bytes"):
        make_remote(s3, secret=b"short")


# what a writer of the bucket might change in a manifest: name -> (record, its first artifact) -> None
TAMPERINGS: dict[str, Callable[[dict[str, Any], dict[str, Any]], None]] = {
    "name": lambda record, first: first.update(name="../x.whl"),
    "dotted": lambda record, first: first.update(name=".hidden-1.0.tar.gz"),
    "not-a-wheel": lambda record, first: first.update(name="setup.py"),
    "log-name": lambda record, first: record["artifacts"].append({**first, "name": "output.log"}),
    "duplicate": lambda record, first: record["artifacts"].append(dict(first)),
    "size": lambda record, first: first.update(size=-1),
    "huge": lambda record, first: first.update(size=1 << 62),
    "bool-size": lambda record, first: first.update(size=True),
    "sha256": lambda record, first: first.update(sha256=first["sha256"].upper()),
    "key": lambda record, first: record.update(key=OTHER),
    "format": lambda record, first: record.update(format=2),
    "no-artifacts": lambda record, first: record.update(artifacts=[]),
    "log": lambda record, first: record.update(log={**first, "name": "../../etc/passwd"}),
    "warning": lambda record, first: record.update(warnings=["\x1b]0;owned\x07"]),
    "project": lambda record, first: record.update(project="demo\nsafe-build: all good"),
    "missing": lambda record, first: record.pop("version"),
}


@pytest.mark.parametrize("change", sorted(TAMPERINGS))
def test_tampered_manifest_is_untrusted(s3: S3Bucket, tmp_path: Path, change: str) -> None:
    store = make_remote(s3)
    upload(store, tmp_path / "built")
    record: dict[str, Any] = get_manifest(s3)
    TAMPERINGS[change](record, record["artifacts"][0])
    put_manifest(s3, KEY, record)
    with pytest.raises(Untrusted, match=r"^remote cache s3://.*: manifest ac/a+\.json: "):
        store.manifest(KEY)


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"format": 1, "format": 1}', b" " * (2 << 20)])
def test_garbage_manifest_is_untrusted(s3: S3Bucket, body: bytes) -> None:
    put_manifest(s3, KEY, body)
    with pytest.raises(Untrusted):
        make_remote(s3).manifest(KEY)


def test_manifest_filed_under_another_key_is_untrusted(s3: S3Bucket, tmp_path: Path) -> None:
    store = make_remote(s3, secret=SECRET)
    upload(store, tmp_path / "built")
    put_manifest(s3, OTHER, get_manifest(s3))  # signed, but for KEY
    with pytest.raises(Untrusted, match="made for"):
        store.manifest(OTHER)


@pytest.mark.parametrize("change", ["unsigned", "field", "resigned"])
def test_with_a_secret_unsigned_or_altered_manifests_are_untrusted(
    s3: S3Bucket, tmp_path: Path, change: str
) -> None:
    store = make_remote(s3, secret=SECRET)
    upload(store, tmp_path / "built")
    record = get_manifest(s3)
    if change == "unsigned":
        record["signature"] = None
    elif change == "field":
        record["version"] = "2.0"
    else:  # a valid signature, by another secret
        record["project"] = "evil"
        record["signature"] = remote._sign(b"x" * 32, record)
    put_manifest(s3, KEY, record)
    with pytest.raises(Untrusted, match=r"signed|signature"):
        store.manifest(KEY)


@pytest.mark.parametrize("change", ["bytes", "longer", "shorter", "missing", "manifest-sha256"])
def test_tampered_content_is_untrusted_and_nothing_is_left(s3: S3Bucket, tmp_path: Path, change: str) -> None:
    store = make_remote(s3)
    files = upload(store, tmp_path / "built")
    manifest = store.manifest(KEY)
    assert manifest is not None
    wheel = manifest.artifacts[1]
    client = s3.client()
    name = s3.key("cas", wheel.sha256)
    data = files[1].read_bytes()
    if change == "bytes":
        client.put_object(Bucket=s3.name, Key=name, Body=b"X" + data[1:])
    elif change == "longer":
        client.put_object(Bucket=s3.name, Key=name, Body=data + b"more")
    elif change == "shorter":
        client.put_object(Bucket=s3.name, Key=name, Body=data[:-1])
    elif change == "missing":
        client.delete_object(Bucket=s3.name, Key=name)
    else:  # a manifest that names other content of the same size: its sha256 is not the file's
        record = get_manifest(s3)
        other = hashlib.sha256(b"other").hexdigest()
        client.put_object(Bucket=s3.name, Key=s3.key("cas", other), Body=b"Y" * wheel.size)
        record["artifacts"][1]["sha256"] = other  # type: ignore[index]
        put_manifest(s3, KEY, record)
        manifest = store.manifest(KEY)
        assert manifest is not None
    into = tmp_path / "into"
    into.mkdir(mode=0o700)
    before = listing(tmp_path)
    with pytest.raises(Untrusted, match=WHEEL):
        store.download(manifest, into)
    assert listing(into) == set()  # the sdist that came first is removed too
    assert listing(tmp_path) == before


def test_download_never_writes_outside_its_directory(s3: S3Bucket, tmp_path: Path) -> None:
    """A Manifest made by hand (not read from the bucket) is checked all the same."""
    store = make_remote(s3)
    upload(store, tmp_path / "built")
    manifest = store.manifest(KEY)
    assert manifest is not None
    evil = remote.Manifest(
        **{**manifest.__dict__, "artifacts": (Artifact("../evil-1.0.tar.gz", 1, "0" * 64),)}
    )
    into = tmp_path / "into"
    into.mkdir()
    before = listing(tmp_path)
    with pytest.raises(ValueError, match="not a safe file name"):
        store.download(evil, into)
    assert listing(tmp_path) == before


def test_old_content_is_refreshed_when_named_again(
    s3: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So that a prune running meanwhile sees it as young and leaves it to the new manifest."""
    store = make_remote(s3)
    files = upload(store, tmp_path / "built")
    name = s3.key("cas", hashlib.sha256(files[0].read_bytes()).hexdigest())
    before = s3.client().head_object(Bucket=s3.name, Key=name)["LastModified"]
    time.sleep(1.1)  # object times are in whole seconds
    monkeypatch.setattr(remote, "TOUCH_AFTER", 0.5)
    log = tmp_path / "built" / "build.log"
    assert store.upload(OTHER, files, log=log, warnings=[], project="demo", version="1.0")
    assert s3.client().head_object(Bucket=s3.name, Key=name)["LastModified"] > before


def test_upload_refuses_what_readers_would_refuse(s3: S3Bucket, tmp_path: Path) -> None:
    bad = tmp_path / "setup.py"
    bad.write_text("")
    store = make_remote(s3)
    with pytest.raises(
        RemoteError, match=r"cannot file a{12}: 'setup.py' is not the name of a wheel or an sdist"
    ):
        store.upload(KEY, [bad], log=None, warnings=[], project="demo", version="1.0")
    with pytest.raises(ValueError, match="cache key"):
        store.manifest("../x")


def test_no_password_in_an_endpoint_is_shown(s3: S3Bucket) -> None:
    store = Remote(Location("bkt", ""), endpoint="http://user:hunter2@127.0.0.1:9", timeout=0.5)
    with pytest.raises(RemoteError, match=r"cannot connect to http://127\.0\.0\.1:9 ") as failure:
        store.manifest(KEY)
    assert "hunter2" not in str(failure.value)


def test_endpoint_that_is_not_a_url() -> None:
    with pytest.raises(RemoteError, match=r"s3://bkt: the endpoint '127.0.0.1:9000' is not a URL"):
        Remote(Location("bkt", ""), endpoint="127.0.0.1:9000")


# -- leases ----------------------------------------------------------------------------------------


def test_lease_taken_held_released(s3: S3Bucket) -> None:
    store = make_remote(s3)
    lease = store.try_lease(KEY, "demo", ttl=60)
    assert isinstance(lease, Lease)
    held = store.try_lease(KEY, "demo", ttl=60)
    assert isinstance(held, Holder)
    assert store.holder(KEY) == held
    assert store.holder(OTHER) is None
    assert held.pid == os.getpid()
    assert held.expires == pytest.approx(held.started + 60)
    assert isinstance(store.try_lease(OTHER, "demo", ttl=60), Lease)
    lease.release()
    again = store.try_lease(KEY, "demo", ttl=60)
    assert isinstance(again, Lease)
    lease.release()  # no longer ours (another ETag): nothing happens
    assert isinstance(store.try_lease(KEY, "demo", ttl=60), Holder)


@pytest.mark.parametrize(
    "body",
    [None, b"garbage", b'{"host": "h"}', b" " * (2 << 20)],
    ids=["expired", "garbage", "partial", "huge"],
)
def test_expired_or_unreadable_lease_is_taken_over(s3: S3Bucket, body: bytes | None) -> None:
    store = make_remote(s3)
    if body is None:
        assert isinstance(store.try_lease(KEY, "demo", ttl=0), Lease)  # expires at once
    else:
        s3.client().put_object(Bucket=s3.name, Key=s3.key("lease", f"{KEY}.json"), Body=body)
    assert store.holder(KEY) is None
    lease = store.try_lease(KEY, "demo", ttl=60)
    assert isinstance(lease, Lease)
    assert isinstance(store.try_lease(KEY, "demo", ttl=60), Holder)


RACER = textwrap.dedent(
    """\
    import os, sys, time
    from pathlib import Path
    from safe_build.remote import Lease, Remote, parse_url

    barrier, index, count, keys = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    store = Remote(parse_url(os.environ["SAFE_BUILD_REMOTE_CACHE"]),
                   endpoint=os.environ["SAFE_BUILD_REMOTE_CACHE_ENDPOINT"], timeout=10)
    for round, key in enumerate(keys):
        (barrier / f"{round}-{index}").touch()
        while len(list(barrier.glob(f"{round}-*"))) < count:
            time.sleep(0.001)
        result = store.try_lease(key, "demo", ttl=60)
        print(key, "won" if isinstance(result, Lease) else "lost", flush=True)
    """
)


def race(
    program: str, arguments: list[list[str]], keys: list[str], s3: S3Bucket, tmp_path: Path
) -> list[tuple[str, str]]:
    """Run ``program`` once per entry of ``arguments``, all at once, each given a file barrier, its
    index, the count, its arguments and ``keys``; their (stdout, stderr), once all succeeded."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", program, str(barrier), str(index), str(len(arguments)), *more, *keys],
            env=s3.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index, more in enumerate(arguments)
    ]
    results = [process.communicate(timeout=60) for process in processes]
    assert all(process.returncode == 0 for process in processes), results
    return results


@pytest.mark.parametrize("expired", [False, True], ids=["new", "takeover"])
def test_lease_race_has_one_winner(s3: S3Bucket, tmp_path: Path, expired: bool) -> None:
    """Runners that try at the same moment (a file barrier before each round): one wins each key."""
    keys = [f"{index:064x}" for index in range(6)]
    if expired:
        store = make_remote(s3)
        for key in keys:
            assert isinstance(store.try_lease(key, "demo", ttl=0), Lease)
    runners = 4
    results = race(RACER, [[] for _ in range(runners)], keys, s3, tmp_path)
    lines = [line.split() for out, _ in results for line in out.splitlines()]
    for key in keys:
        outcomes = sorted(outcome for name, outcome in lines if name == key)
        assert outcomes == ["lost"] * (runners - 1) + ["won"], (key, outcomes)


UPLOADER = textwrap.dedent(
    """\
    import os, sys, time
    from pathlib import Path
    from safe_build.remote import Remote, parse_url

    barrier, index, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    root, keys = Path(sys.argv[4]), sys.argv[5:]
    store = Remote(parse_url(os.environ["SAFE_BUILD_REMOTE_CACHE"]),
                   endpoint=os.environ["SAFE_BUILD_REMOTE_CACHE_ENDPOINT"], timeout=10)
    files = [root / "demo-1.0.tar.gz", root / "demo-1.0-py3-none-any.whl"]
    for round, key in enumerate(keys):
        (barrier / f"{round}-{index}").touch()
        while len(list(barrier.glob(f"{round}-*"))) < count:
            time.sleep(0.001)
        filed = store.upload(key, files, log=None, warnings=[], project="demo", version="1.0")
        print(key, "filed" if filed else "found", flush=True)
    """
)


def test_upload_race_files_one_manifest(s3: S3Bucket, tmp_path: Path) -> None:
    """Writers of one key at the same moment, each with its own bytes: one manifest is filed, and
    it is whole (its content is the winner's)."""
    keys = [f"{index:064x}" for index in range(3)]
    runners = 3
    roots = [tmp_path / f"runner{index}" for index in range(runners)]
    for index, root in enumerate(roots):
        artifacts(root, str(index).encode())
    results = race(UPLOADER, [[str(root)] for root in roots], keys, s3, tmp_path)
    store = make_remote(s3)
    for key in keys:
        winners = [index for index, (out, _) in enumerate(results) if f"{key} filed" in out.splitlines()]
        assert len(winners) == 1, (key, results)
        manifest = store.manifest(key)
        assert manifest is not None
        into = tmp_path / "into" / key
        into.mkdir(parents=True)
        paths, _ = store.download(manifest, into)
        assert [path.read_bytes() for path in paths] == [
            (roots[winners[0]] / path.name).read_bytes() for path in paths
        ]


def test_large_files_go_in_parts(s3: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote, "MULTIPART_THRESHOLD", 5 << 20)  # S3's smallest part
    store = make_remote(s3)
    files, log = artifacts(tmp_path / "built")
    files[1].write_bytes(os.urandom(11 << 20))
    assert store.upload(KEY, files, log=log, warnings=[], project="demo", version="1.0")
    name = s3.key("cas", hashlib.sha256(files[1].read_bytes()).hexdigest())
    assert s3.client().head_object(Bucket=s3.name, Key=name)["ETag"].endswith('-3"')  # three parts
    manifest = store.manifest(KEY)
    assert manifest is not None
    into = tmp_path / "into"
    into.mkdir()
    paths, _ = store.download(manifest, into)
    assert paths[1].read_bytes() == files[1].read_bytes()


# -- failures --------------------------------------------------------------------------------------


def test_stopped_server_fails_within_the_bound(own_s3_server: S3Server, tmp_path: Path, monkeypatch) -> None:
    bucket = make_bucket(own_s3_server, tmp_path, monkeypatch)
    store = make_remote(bucket, timeout=1.0)
    assert store.manifest(KEY) is None
    own_s3_server.stop()
    try:
        started = time.monotonic()
        with pytest.raises(RemoteError, match=r"did not answer in time \(timed out after 1s\)") as failure:
            store.manifest(KEY)
        elapsed = time.monotonic() - started
    finally:
        own_s3_server.resume()
    assert elapsed < 2 * 1.0 + 3.0  # two attempts of one timeout each, a retry's backoff (< 1 s), slack
    assert str(failure.value).startswith(f"remote cache {bucket.url}: ")
    assert own_s3_server.endpoint in str(failure.value)


def test_killed_server_fails(own_s3_server: S3Server, tmp_path: Path, monkeypatch) -> None:
    bucket = make_bucket(own_s3_server, tmp_path, monkeypatch)
    store = make_remote(bucket, timeout=1.0)
    own_s3_server.kill()
    files, log = artifacts(tmp_path / "built")
    started = time.monotonic()
    with pytest.raises(
        RemoteError, match=r"cannot connect to http://127\.0\.0\.1:\d+ \(EndpointConnectionError\)"
    ):
        store.upload(KEY, files, log=log, warnings=[], project="demo", version="1.0")
    with pytest.raises(RemoteError, match="cannot connect"):
        store.try_lease(KEY, "demo", ttl=60)
    assert time.monotonic() - started < 10


def test_missing_bucket_and_credentials(s3: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = Remote(Location("no-such-bucket-here", "x"), endpoint=s3.server.endpoint)
    with pytest.raises(
        RemoteError,
        match=r"s3://no-such-bucket-here/x: reading ac/a+\.json failed: NoSuchBucket \(HTTP 404\)",
    ):
        missing.manifest(KEY)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(RemoteError, match="no usable credentials"):
        make_remote(s3).manifest(KEY)


def test_read_only_credentials_are_denied_writes(
    read_only_s3: ReadOnlyS3, tmp_path: Path, monkeypatch
) -> None:
    bucket = read_only_s3.bucket
    upload(make_remote(bucket), tmp_path / "built")  # the writer's keys
    for variable, value in read_only_s3.read_only.items():
        monkeypatch.setenv(variable, value)
    reader = make_remote(bucket)
    manifest = reader.manifest(KEY)
    assert manifest is not None
    into = tmp_path / "into"
    into.mkdir()
    reader.download(manifest, into)
    files, log = artifacts(tmp_path / "again", b"again")
    with pytest.raises(RemoteError, match=r"failed: AccessDenied \(HTTP 403\)") as failure:
        reader.upload(OTHER, files, log=log, warnings=[], project="demo", version="1.0")
    with pytest.raises(RemoteError, match="AccessDenied"):
        reader.try_lease(KEY, "demo", ttl=60)
    for secret in read_only_s3.read_only.values():
        assert secret not in str(failure.value)
    assert "\n" not in str(failure.value)


def test_importing_the_module_does_not_import_boto3() -> None:
    code = (
        "import sys, safe_build.remote\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 's3transfer')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_without_boto3_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "botocore"  # boto3's core, which is what safe-build imports
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('blocked for the test')\n")
    code = (
        "from safe_build.remote import Remote, RemoteError, parse_url\n"
        "try:\n    Remote(parse_url('s3://bucket/p'))\nexcept RemoteError as error:\n    print(error)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    assert (
        out.strip()
        == 'remote cache s3://bucket/p: the remote cache needs boto3: pip install "safe-build[s3]"'
    )


@pytest.mark.parametrize(
    ("text", "bucket", "prefix"),
    [("s3://bkt", "bkt", ""), ("s3://bkt/", "bkt", ""), ("s3://my.bucket-1/a/b/", "my.bucket-1", "a/b")],
)
def test_parse_url(text: str, bucket: str, prefix: str) -> None:
    location = parse_url(text)
    assert location == Location(bucket, prefix)
    assert parse_url(location.url) == location


@pytest.mark.parametrize(
    "text",
    [
        "bkt",
        "http://bkt/x",
        "s3://",
        "s3://B",
        "s3://Bucket/x",
        "s3://ab",
        "s3://1.2.3.4",
        "s3://bkt/a//b",
        "s3://bkt/../x",
    ],
)
def test_parse_url_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"s3://|prefix"):
        parse_url(text)
