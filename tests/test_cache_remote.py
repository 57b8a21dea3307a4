"""``safe-build cache remote ls|info|prune`` against a bucket filled by the remote store itself."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safe_build.remote import Lease, Remote, parse_url
from tests.s3server import S3Bucket
from tests.test_remote_store import artifacts

KEYS = [f"{index:x}" * 64 for index in range(1, 5)]


def cache_remote(bucket: S3Bucket, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safe_build", "cache", "remote", *args],
        env={**bucket.env, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def make_remote(bucket: S3Bucket) -> Remote:
    return Remote(parse_url(bucket.url), endpoint=bucket.server.endpoint)


def fill(bucket: S3Bucket, root: Path, keys: list[str]) -> Remote:
    """One entry of project ``demo<i>`` per key, each with its own content."""
    store = make_remote(bucket)
    for index, key in enumerate(keys):
        files, log = artifacts(root / key, key.encode())
        assert store.upload(key, files, log=log, warnings=[], project=f"demo{index}", version="1.0")
    return store


def objects(bucket: S3Bucket, area: str) -> set[str]:
    listed = bucket.client().list_objects_v2(Bucket=bucket.name, Prefix=bucket.key(area, ""))
    return {item["Key"].rsplit("/", 1)[-1] for item in listed.get("Contents", [])}


def test_ls(s3: S3Bucket, tmp_path: Path) -> None:
    assert cache_remote(s3, "ls").stdout.strip() == f"no entries in {s3.url}"
    fill(s3, tmp_path, KEYS[:2])
    s3.client().put_object(Bucket=s3.name, Key=s3.key("ac", f"{KEYS[2]}.json"), Body=b"junk")
    done = cache_remote(s3, "ls")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["KEY", "PROJECT", "VERSION", "BUILT", "BY", "AGE", "SIZE"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {key[:12] for key in KEYS[:3]}
    assert rows[KEYS[0][:12]][1:4] == ["demo0", "1.0", socket.gethostname()]
    assert "untrusted: not JSON" in " ".join(rows[KEYS[2][:12]])
    data = json.loads(cache_remote(s3, "ls", "--json").stdout)
    entries = {entry["key"]: entry for entry in data["entries"]}
    assert entries[KEYS[1]]["project"] == "demo1"
    assert (
        entries[KEYS[1]]["size"]
        == sum(item["size"] for item in entries[KEYS[1]]["artifacts"]) + (entries[KEYS[1]]["log"]["size"])
    )
    assert entries[KEYS[2]]["problem"] == "not JSON"
    # with a secret, the unsigned manifests are shown as untrusted
    signed = cache_remote(s3, "ls", "--json", SAFE_BUILD_REMOTE_CACHE_KEY="k" * 32)
    assert {entry.get("problem") for entry in json.loads(signed.stdout)["entries"]} == {
        "not signed, and a secret is set",
        "not JSON",
    }


def test_info(s3: S3Bucket, tmp_path: Path) -> None:
    store = fill(s3, tmp_path, KEYS[:2])
    lease = store.try_lease(KEYS[3], "demo3", ttl=600)
    assert isinstance(lease, Lease)
    assert isinstance(store.try_lease(KEYS[2], "demo2", ttl=0), Lease)  # expired
    data = json.loads(cache_remote(s3, "info", "--json").stdout)
    contents = {path.read_bytes() for key in KEYS[:2] for path in (tmp_path / key).iterdir()}  # one log
    assert (data["manifests"], data["content"], data["leases"]) == (2, len(contents), 2) == (2, 5, 2)
    assert data["content_size"] == sum(map(len, contents))
    assert [(found["key"], found["pid"]) for found in data["live_leases"]] == [(KEYS[3], lease_pid())]
    text = cache_remote(s3, "info").stdout
    assert f"remote cache:  {s3.url}" in text
    assert "leases:        2 in lease/, 1 live" in text
    assert f"{KEYS[3][:12]} held by {socket.gethostname()}" in text


def lease_pid() -> int:
    import os  # noqa: PLC0415

    return os.getpid()


def test_prune_keeps_young_and_leased(s3: S3Bucket, tmp_path: Path) -> None:
    store = fill(s3, tmp_path, KEYS[:3])
    assert isinstance(store.try_lease(KEYS[1], "demo1", ttl=600), Lease)  # being rebuilt: kept
    assert isinstance(store.try_lease(KEYS[3], "demo3", ttl=0), Lease)  # expired: removed
    orphan = hashlib.sha256(b"orphan").hexdigest()
    s3.client().put_object(Bucket=s3.name, Key=s3.key("cas", orphan), Body=b"orphan")
    named = {name: objects(s3, "cas") for name in ("all",)}["all"] - {orphan}
    time.sleep(1.1)  # object times are in whole seconds

    # everything is younger than the default bound (an hour): nothing goes but the expired lease
    done = cache_remote(s3, "prune", "--older-than", "0")
    assert done.returncode == 0, done.stderr
    assert "Removed 0 manifests, 0 content objects (0 B) and 1 expired lease" in done.stdout
    assert len(objects(s3, "ac")) == 3
    assert orphan in objects(s3, "cas")
    assert objects(s3, "lease") == {f"{KEYS[1]}.json"}

    # the manifest a live lease names is kept with its content; the rest goes
    entry = make_remote(s3).manifest(KEYS[1])
    assert entry is not None
    done = cache_remote(s3, "prune", "--older-than", "0", "--keep-newer-than", "0")
    assert done.returncode == 0, done.stderr
    assert f"removed {KEYS[0][:12]}  demo0 1.0" in done.stdout
    assert f"removed {KEYS[2][:12]}  demo2 1.0" in done.stdout
    assert "Removed 2 manifests, 5 content objects" in done.stdout  # two sdists, two wheels, the orphan
    assert "kept 1 old manifest a live lease names" in done.stdout
    assert objects(s3, "ac") == {f"{KEYS[1]}.json"}
    kept = {item.sha256 for item in entry.artifacts} | {entry.log.sha256 if entry.log else ""}
    assert objects(s3, "cas") == kept
    assert kept < named
    into = tmp_path / "into"
    into.mkdir()
    make_remote(s3).download(entry, into)  # still whole

    data = json.loads(
        cache_remote(s3, "prune", "--older-than", "0", "--keep-newer-than", "0", "--json").stdout
    )
    assert (data["removed"], data["content"], data["leases"], data["kept_leased"]) == ([], 0, 0, 1)


@pytest.mark.parametrize(
    ("args", "env", "message", "code"),
    [
        (["ls"], {"SAFE_BUILD_REMOTE_CACHE": ""}, "no remote cache to look into; give --remote-cache", 2),
        (
            ["ls", "--remote-cache", "http://x/y"],
            {},
            "invalid remote cache URL: 'http://x/y' is not an s3:// URL",
            2,
        ),
        (
            ["info"],
            {"SAFE_BUILD_REMOTE_CACHE_KEY": "short"},
            "SAFE_BUILD_REMOTE_CACHE_KEY is 5 bytes long",
            2,
        ),
        (["prune", "--older-than", "x"], {}, "invalid value 'x' for --older-than", 2),
        (
            ["ls"],
            {"SAFE_BUILD_REMOTE_CACHE_ENDPOINT": "http://127.0.0.1:9"},
            "cannot connect to http://127.0.0.1:9",
            1,
        ),
        (["ls", "--remote-cache", "s3://no-such-bucket-here"], {}, "NoSuchBucket (HTTP 404)", 1),
    ],
)
def test_errors_are_one_line(
    s3: S3Bucket, args: list[str], env: dict[str, str], message: str, code: int
) -> None:
    done = cache_remote(s3, *args, **env)
    assert done.returncode == code
    assert done.stdout == ""
    assert done.stderr.startswith("safe-build: error: ")
    assert message in done.stderr
    assert done.stderr.count("\n") == 1
    assert "testing" not in done.stderr  # the credentials
