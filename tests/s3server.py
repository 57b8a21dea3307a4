"""A real S3 API on 127.0.0.1 for the remote cache's tests: moto's standalone server, in its own process.

``s3_server`` is one server for the session; ``s3`` gives a test a fresh bucket and the environment
that points safe-build at it (dummy credentials, no AWS configuration of the machine read);
``own_s3_server`` starts a server for one test, to stop or kill; ``read_only_s3`` is a server that
checks credentials (IAM), with a bucket, and keys that may read but not write.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT = 30.0  # seconds for the server to answer: generous, polled, not slept
_buckets = itertools.count()


@dataclass
class S3Server:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Freeze the server (SIGSTOP): connections are accepted by the kernel, never answered."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        self.process.wait(timeout=10)


@dataclass
class S3Bucket:
    """A fresh bucket on a server, and the environment that makes safe-build use it."""

    server: S3Server
    name: str
    env: dict[str, str] = field(default_factory=dict)  # the whole environment for a child process
    prefix: str = "ci"

    @property
    def url(self) -> str:
        return f"s3://{self.name}/{self.prefix}"

    def client(self, **credentials: str) -> Any:
        """A plain boto3 client on the server, for a test to look at or tamper with the bucket."""
        import boto3  # noqa: PLC0415
        from botocore.config import Config  # noqa: PLC0415

        keys = {
            "aws_access_key_id": self.env["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": self.env["AWS_SECRET_ACCESS_KEY"],
            **credentials,
        }
        return boto3.client(
            "s3",
            endpoint_url=self.server.endpoint,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
            **keys,
        )

    def key(self, *parts: str) -> str:
        return "/".join([self.prefix, *parts])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_server(log: Path, extra_env: dict[str, str] | None = None) -> S3Server:
    """moto's server on a free port, once it answers."""
    port = free_port()
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(extra_env or {})},
        )
    server = S3Server(process, port)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:  # the moto API is not an AWS action: it does not count against INITIAL_NO_AUTH_ACTION_COUNT
            with urllib.request.urlopen(f"{server.endpoint}/moto-api/data.json", timeout=1):
                return server
        except (OSError, urllib.error.URLError):
            if process.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(
                    f"moto's server did not start: {log.read_text(errors='replace')[-2000:]}"
                ) from None
            time.sleep(0.05)


def s3_env(server: S3Server, bucket: str, tmp: Path) -> dict[str, str]:
    """What a child process needs to use ``bucket`` on ``server`` and nothing of the machine's AWS set-up."""
    empty = tmp / "aws-empty"
    empty.write_text("")
    values = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(empty),
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "AWS_EC2_METADATA_DISABLED": "true",
        "SAFE_BUILD_REMOTE_CACHE": f"s3://{bucket}/ci",
        "SAFE_BUILD_REMOTE_CACHE_ENDPOINT": server.endpoint,
    }
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "SAFE_BUILD_REMOTE_CACHE", "BOTO"))
    }
    return {**env, **values}


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One moto server for the session."""
    server = start_server(tmp_path_factory.mktemp("moto") / "server.log")
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def own_s3_server(tmp_path: Path) -> Iterator[S3Server]:
    """A moto server of this test's own, to stop (SIGSTOP) or kill."""
    server = start_server(tmp_path / "own-server.log")
    try:
        yield server
    finally:
        server.kill()


def make_bucket(server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    """A fresh bucket on ``server``; the test's own process environment points at it too."""
    name = f"safe-build-test-{os.getpid()}-{next(_buckets)}"
    env = s3_env(server, name, tmp_path)
    for variable in [
        name for name in os.environ if name.startswith(("AWS_", "SAFE_BUILD_REMOTE_CACHE", "BOTO"))
    ]:
        monkeypatch.delenv(variable)
    for variable, value in env.items():
        if variable.startswith(("AWS_", "SAFE_BUILD_REMOTE_CACHE")):
            monkeypatch.setenv(variable, value)
    bucket = S3Bucket(server, name, env)
    bucket.client().create_bucket(Bucket=name)
    return bucket


@pytest.fixture
def s3(s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    """A fresh bucket on the session's server, and the environment for it (also set in this process)."""
    return make_bucket(s3_server, tmp_path, monkeypatch)


@dataclass
class ReadOnlyS3:
    bucket: S3Bucket  # its env has keys that may read and write
    read_only: dict[str, str]  # AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY that may only read


@pytest.fixture
def read_only_s3(own_s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ReadOnlyS3:
    """A server that checks credentials and policies: a bucket, a writer's keys and a reader's keys.

    moto checks nothing until told to (``/moto-api/reset-auth`` with a count of 0 unchecked
    actions): the users and the bucket are made before, with any keys.
    """
    import boto3  # noqa: PLC0415

    bucket = make_bucket(own_s3_server, tmp_path, monkeypatch)
    iam = boto3.client(
        "iam",
        endpoint_url=own_s3_server.endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    keys = {}
    for user, actions in (
        ("writer", ["s3:*"]),
        ("reader", ["s3:GetObject", "s3:ListBucket", "s3:HeadObject"]),
    ):
        iam.create_user(UserName=user)
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
        }
        iam.put_user_policy(UserName=user, PolicyName="cache", PolicyDocument=json.dumps(policy))
        created = iam.create_access_key(UserName=user)["AccessKey"]
        keys[user] = {
            "AWS_ACCESS_KEY_ID": created["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": created["SecretAccessKey"],
        }
    request = urllib.request.Request(
        f"{own_s3_server.endpoint}/moto-api/reset-auth",
        data=b"0",
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=10):
        pass
    bucket.env.update(keys["writer"])
    for variable, value in keys["writer"].items():
        monkeypatch.setenv(variable, value)
    return ReadOnlyS3(bucket, keys["reader"])
