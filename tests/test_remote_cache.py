"""The remote cache end to end: real safe-build processes, a real S3 API server on 127.0.0.1.

Each "runner" has its own cache directory and home, as CI machines do, and some their own checkout
path. The projects' backend writes a line each time it runs (``SLOW_BACKEND_MARKER``), so that a
test counts the builds across a fleet.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import PROJECTS, run, safe_build_command, wheel_problems, write_files
from tests.s3server import ReadOnlyS3, S3Bucket, S3Server, make_bucket

PACKAGES = 10
RUNNERS = 4
SECRET = "a-fleet-secret-of-at-least-32-bytes-0123456789"


def package(root: Path, index: int) -> Path:
    """The slow project as package ``pkg<index>``, its backend's marker lines naming it."""
    files = dict(PROJECTS["slow"])
    files["pyproject.toml"] = files["pyproject.toml"].replace('name = "slow"', f'name = "pkg{index}"')
    files["slow_backend.py"] = files["slow_backend.py"].replace(
        'file.write(f"{hook} ', f'file.write(f"pkg{index} {{hook}} '
    )
    return write_files(root / f"pkg{index}", files)


def monorepo(root: Path, count: int = PACKAGES) -> Path:
    for index in range(count):
        package(root / "packages", index)
    return root


def runner_env(base: dict[str, str], bucket: S3Bucket, home: Path, **more: str) -> dict[str, str]:
    """A runner's environment: the bucket's settings, its own cache directory and home."""
    home.mkdir(parents=True, exist_ok=True)
    remote = {
        name: value for name, value in bucket.env.items() if name.startswith(("AWS_", "SAFE_BUILD_REMOTE"))
    }
    return {
        **base,
        **remote,
        "HOME": str(home),
        "SAFE_BUILD_CACHE_DIR": str(home / "cache"),
        "SOURCE_DATE_EPOCH": "1700000000",  # the reference build below is then byte for byte the same
        "SAFE_BUILD_REMOTE_CACHE_TIMEOUT": "5",
        **more,
    }


def builds(marker: Path) -> Counter[str]:
    """How many times the backend built each package's wheel."""
    lines = marker.read_text().splitlines() if marker.exists() else []
    return Counter(line.split()[0] for line in lines if line.split()[1] == "build_wheel")


def objects(bucket: S3Bucket, under: str) -> dict[str, int]:
    """The bucket's objects below ``under`` (of the prefix), with their sizes."""
    listing = bucket.client().list_objects_v2(Bucket=bucket.name, Prefix=bucket.key(under))
    return {item["Key"]: item["Size"] for item in listing.get("Contents", [])}


def build_wheel(
    project: Path, out: Path, env: dict[str, str], *more: str
) -> subprocess.CompletedProcess[str]:
    return run(safe_build_command("--wheel", "-n", "-o", out, *more, project), env, timeout=300)


def start_until_backend_runs(
    project: Path, out: Path, environment: dict[str, str], marker: Path
) -> subprocess.Popen[str]:
    """A build started in its own session, once its backend runs (it has taken the lease by then)."""
    process = subprocess.Popen(
        safe_build_command("--wheel", "-n", "-o", out, project),
        env={**environment, "SLOW_BACKEND_MARKER": str(marker)},
        start_new_session=True,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not builds(marker):
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return process


def kill_holding_a_lease(
    project: Path, bucket: S3Bucket, env: dict[str, str], tmp_path: Path, wait: str
) -> None:
    """A runner that took the lease on ``project``'s key (for ``wait`` seconds), SIGKILLed mid-build."""
    environment = runner_env(
        env,
        bucket,
        tmp_path / "holder",
        SLOW_BACKEND_GATE=str(tmp_path / "never"),
        SAFE_BUILD_REMOTE_CACHE_WAIT=wait,
    )
    holder = start_until_backend_runs(project, tmp_path / "held", environment, tmp_path / "holder-runs")
    os.killpg(holder.pid, signal.SIGKILL)
    holder.communicate()


def test_a_fleet_builds_each_package_once(env: dict[str, str], s3: S3Bucket, tmp_path: Path) -> None:
    """4 runners build a 10-package monorepo at once, twice, with empty local caches each time:
    each package's backend runs once across the fleet, and every runner gets the same wheels as a
    build here without any cache."""
    checkouts = [monorepo(tmp_path / "checkout")]
    for index in (1, 2):  # runners that check the repository out elsewhere
        checkouts.append(tmp_path / f"runner{index}" / "work" / "checkout")
        shutil.copytree(checkouts[0], checkouts[-1])
    marker = tmp_path / "backend-runs"
    for round_ in (1, 2):
        processes = []
        for runner in range(RUNNERS):
            home = tmp_path / f"round{round_}" / f"home{runner}"
            runner_environment = runner_env(env, s3, home, SLOW_BACKEND_MARKER=str(marker))
            # each runner in another order: rotated, and backwards for every other one
            order = [(index + 3 * runner) % PACKAGES for index in range(PACKAGES)][:: -1 if runner % 2 else 1]
            script = "; ".join(
                f"{sys.executable} -m safe_build --wheel -n -q -o {home / 'dist'} "
                f"{checkouts[runner % len(checkouts)] / 'packages' / f'pkg{index}'} || exit 1"
                for index in order
            )
            processes.append(
                subprocess.Popen(
                    ["bash", "-c", script], env=runner_environment, stderr=subprocess.PIPE, text=True
                )
            )
        for process in processes:
            _, errors = process.communicate(timeout=600)
            assert process.returncode == 0, errors
            assert "warning" not in errors, errors
        assert builds(marker) == Counter({f"pkg{index}": 1 for index in range(PACKAGES)}), round_
    assert len(objects(s3, "ac/")) == PACKAGES

    reference = tmp_path / "reference"
    local = {**env, "SOURCE_DATE_EPOCH": "1700000000", "SAFE_BUILD_NO_CACHE": "1"}
    for index in range(PACKAGES):
        made = build_wheel(checkouts[0] / "packages" / f"pkg{index}", reference, local)
        assert made.returncode == 0, made.stderr
    expected = {path.name: path.read_bytes() for path in reference.iterdir()}
    for round_ in (1, 2):
        for runner in range(RUNNERS):
            dist = tmp_path / f"round{round_}" / f"home{runner}" / "dist"
            assert {path.name: path.read_bytes() for path in dist.iterdir()} == expected


@pytest.fixture
def filled(env: dict[str, str], s3: S3Bucket, tmp_path: Path) -> tuple[Path, S3Bucket, str]:
    """A project whose wheel is in the bucket (built by a first runner); the manifest's object name."""
    project = package(tmp_path, 1)
    made = build_wheel(project, tmp_path / "first", runner_env(env, s3, tmp_path / "first-home"))
    assert made.returncode == 0, made.stderr
    [manifest] = objects(s3, "ac/")
    return project, s3, manifest


def hit_or_build(
    project: Path, bucket: S3Bucket, env: dict[str, str], tmp_path: Path, name: str, **more: str
) -> tuple[subprocess.CompletedProcess[str], Counter[str]]:
    """A build by a new runner (empty local cache); what it printed and the backend runs it made."""
    marker = tmp_path / f"{name}-runs"
    environment = runner_env(env, bucket, tmp_path / name, SLOW_BACKEND_MARKER=str(marker), **more)
    result = build_wheel(project, tmp_path / name / "dist", environment)
    assert result.returncode == 0, result.stderr
    [wheel] = (tmp_path / name / "dist").glob("*.whl")
    assert wheel_problems(wheel) == []
    return result, builds(marker)


def test_a_new_runner_is_served_the_fleets_entry(
    filled: tuple[Path, S3Bucket, str], env: dict[str, str], tmp_path: Path
) -> None:
    project, bucket, _ = filled
    result, runs = hit_or_build(project, bucket, env, tmp_path, "second")
    assert runs == Counter()
    assert f"from {bucket.url} (built by " in result.stderr
    assert (tmp_path / "second" / "dist").iterdir().__next__().read_bytes() == next(
        (tmp_path / "first").iterdir()
    ).read_bytes()
    # kept in the local cache as if built here: the next build is a local hit, the bucket unasked
    again = build_wheel(
        project,
        tmp_path / "again",
        runner_env(env, bucket, tmp_path / "second", SAFE_BUILD_REMOTE_CACHE_ENDPOINT="http://127.0.0.1:9"),
    )
    assert again.returncode == 0, again.stderr
    assert "Reusing cache entry" in again.stderr
    assert "warning" not in again.stderr


def _tamper(bucket: S3Bucket, manifest: str, how: str) -> None:
    client = bucket.client()
    record = json.loads(client.get_object(Bucket=bucket.name, Key=manifest)["Body"].read())
    artifact = record["artifacts"][0]
    if how == "manifest-sha256":
        artifact["sha256"] = "0" * 64
    elif how == "artifact-bytes":
        stored = client.get_object(Bucket=bucket.name, Key=bucket.key("cas", artifact["sha256"]))[
            "Body"
        ].read()
        changed = stored[:-1] + bytes([stored[-1] ^ 1])
        client.put_object(Bucket=bucket.name, Key=bucket.key("cas", artifact["sha256"]), Body=changed)
        return
    elif how == "name-escapes":
        artifact["name"] = "../../escaped-1.0-py3-none-any.whl"
    elif how == "other-key":
        record["key"] = "f" * 64
    client.put_object(Bucket=bucket.name, Key=manifest, Body=json.dumps(record).encode())


@pytest.mark.parametrize("how", ["manifest-sha256", "artifact-bytes", "name-escapes", "other-key"])
def test_a_tampered_entry_is_never_published(
    how: str, filled: tuple[Path, S3Bucket, str], env: dict[str, str], tmp_path: Path
) -> None:
    project, bucket, manifest = filled
    _tamper(bucket, manifest, how)
    result, runs = hit_or_build(project, bucket, env, tmp_path, "second")
    assert runs == Counter({"pkg1": 1}), result.stderr  # built here instead
    assert "safe-build: warning: ignored remote cache entry" in result.stderr
    assert not list(tmp_path.rglob("escaped-1.0-py3-none-any.whl"))


def test_with_a_secret_only_signed_entries_are_trusted(
    env: dict[str, str], s3: S3Bucket, tmp_path: Path
) -> None:
    project = package(tmp_path, 1)
    unsigned = build_wheel(project, tmp_path / "first", runner_env(env, s3, tmp_path / "unsigned-writer"))
    assert unsigned.returncode == 0, unsigned.stderr
    # a reader with the secret rejects the unsigned entry, builds, and (read-write) cannot replace it
    result, runs = hit_or_build(project, s3, env, tmp_path, "reader", SAFE_BUILD_REMOTE_CACHE_KEY=SECRET)
    assert runs == Counter({"pkg1": 1})
    assert "ignored remote cache entry" in result.stderr

    other = package(tmp_path / "other", 2)
    made = build_wheel(
        other,
        tmp_path / "signed",
        runner_env(env, s3, tmp_path / "signer", SAFE_BUILD_REMOTE_CACHE_KEY=SECRET),
    )
    assert made.returncode == 0, made.stderr
    trusted, runs = hit_or_build(other, s3, env, tmp_path, "trusting", SAFE_BUILD_REMOTE_CACHE_KEY=SECRET)
    assert runs == Counter()
    assert "built by" in trusted.stderr
    wrong, runs = hit_or_build(
        other, s3, env, tmp_path, "wrong-key", SAFE_BUILD_REMOTE_CACHE_KEY=SECRET[::-1]
    )
    assert runs == Counter({"pkg2": 1})
    assert "ignored remote cache entry" in wrong.stderr


def test_read_mode_writes_nothing(env: dict[str, str], s3: S3Bucket, tmp_path: Path) -> None:
    project = package(tmp_path, 1)
    made = build_wheel(
        project, tmp_path / "dist", runner_env(env, s3, tmp_path / "pr-job"), "--remote-cache-mode", "read"
    )
    assert made.returncode == 0, made.stderr
    assert objects(s3, "") == {}


def test_access_denied_on_write_is_a_warning(
    env: dict[str, str], read_only_s3: ReadOnlyS3, tmp_path: Path
) -> None:
    bucket = read_only_s3.bucket
    project = package(tmp_path, 1)
    environment = {**runner_env(env, bucket, tmp_path / "reader"), **read_only_s3.read_only}
    made = build_wheel(project, tmp_path / "dist", environment)
    assert made.returncode == 0, made.stderr
    assert made.stderr.count("safe-build: warning:") == 1, made.stderr
    assert "going on without the remote cache" in made.stderr
    assert read_only_s3.read_only["AWS_SECRET_ACCESS_KEY"] not in made.stderr
    assert objects(bucket, "") == {}


@pytest.mark.parametrize("fault", ["absent", "stopped", "no-bucket"])
def test_a_remote_cache_that_does_not_answer_costs_a_warning(
    fault: str, env: dict[str, str], tmp_path: Path, own_s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No server at the endpoint, a server that never answers (SIGSTOP), a bucket that is gone:
    the build runs here and exits 0 after one warning, within the timeout; when the remote cache
    is required, the build fails with one line instead."""
    bucket = make_bucket(own_s3_server, tmp_path, monkeypatch)
    project = package(tmp_path, 1)
    environment = runner_env(env, bucket, tmp_path / "runner", SAFE_BUILD_REMOTE_CACHE_TIMEOUT="1")
    if fault == "absent":
        environment["SAFE_BUILD_REMOTE_CACHE_ENDPOINT"] = "http://127.0.0.1:9"
    elif fault == "stopped":
        own_s3_server.stop()
    else:
        bucket.client().delete_bucket(Bucket=bucket.name)
    started = time.monotonic()
    made = build_wheel(project, tmp_path / "dist", environment)
    assert made.returncode == 0, made.stderr
    assert time.monotonic() - started < 30, made.stderr  # a few timeouts of 1 s, not a hang
    warnings = [line for line in made.stderr.splitlines() if line.startswith("safe-build: warning")]
    assert len(warnings) == 1, made.stderr
    [warning] = warnings
    assert warning.startswith("safe-build: warning: remote cache "), warning
    assert warning.endswith("; going on without the remote cache"), warning
    assert environment["AWS_SECRET_ACCESS_KEY"] not in made.stderr
    required = {
        **environment,
        "SAFE_BUILD_REMOTE_CACHE_REQUIRED": "1",
        "SAFE_BUILD_CACHE_DIR": str(tmp_path / "c"),
    }
    failed = build_wheel(project, tmp_path / "dist2", required)
    assert failed.returncode == 1, failed.stderr
    assert failed.stderr.strip().splitlines()[-1].startswith("safe-build: error: remote cache")
    assert not (tmp_path / "dist2").exists()


def safe_pip_install(venv: Path, *projects: Path) -> list[str]:
    """safe-pip installing ``projects`` into ``venv``, built with the test's own setuptools."""
    return [
        sys.executable,
        "-m",
        "safe_build",
        "pip",
        "--python",
        str(venv),
        "install",
        "--no-build-isolation",
    ] + [str(project) for project in projects]


def test_safe_pip_gets_the_fleets_build(env: dict[str, str], s3: S3Bucket, tmp_path: Path) -> None:
    """safe-pip builds local projects through safe-build, and so through the remote cache: a
    second runner installs the first one's wheel without running the backend."""
    project = package(tmp_path, 1)
    for runner in ("first", "second"):
        venv = tmp_path / runner / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        marker = tmp_path / f"{runner}-runs"
        environment = runner_env(env, s3, tmp_path / runner / "home", SLOW_BACKEND_MARKER=str(marker))
        installed = run(
            safe_pip_install(venv, project),
            environment,
            timeout=300,
        )
        assert installed.returncode == 0, installed.stderr
        assert builds(marker) == (Counter({"pkg1": 1}) if runner == "first" else Counter()), installed.stderr
        imported = run([str(venv / "bin" / "python"), "-c", "import slow; print(slow.VALUE)"], environment)
        assert imported.stdout == "5\n", imported.stderr


@pytest.mark.parametrize("fault", ["stopped", "killed"])
def test_a_server_lost_mid_upload_leaves_no_entry(
    fault: str, env: dict[str, str], own_s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server stops answering (or dies) while the build runs: the build publishes its wheel
    within the timeout, and nothing half-written is visible in the bucket afterwards."""
    bucket = make_bucket(own_s3_server, tmp_path, monkeypatch)
    project = package(tmp_path, 1)
    gate, marker = tmp_path / "gate", tmp_path / "runs"
    environment = runner_env(
        env, bucket, tmp_path / "runner", SLOW_BACKEND_GATE=str(gate), SAFE_BUILD_REMOTE_CACHE_TIMEOUT="1"
    )
    building = start_until_backend_runs(project, tmp_path / "dist", environment, marker)
    own_s3_server.stop() if fault == "stopped" else own_s3_server.kill()
    started = time.monotonic()
    gate.touch()
    _, errors = building.communicate(timeout=120)
    assert building.returncode == 0, errors
    assert errors.count("safe-build: warning:") == 1, errors
    assert time.monotonic() - started < 30, errors  # bounded: a few timeouts of 1 s, not a hang
    assert [path.name for path in (tmp_path / "dist").iterdir()] == ["pkg1-1.0-py3-none-any.whl"]
    if fault == "stopped":
        own_s3_server.resume()
        assert objects(bucket, "ac/") == {}
        for name, size in objects(bucket, "cas/").items():  # content objects are whole or absent
            body = bucket.client().get_object(Bucket=bucket.name, Key=name)["Body"].read()
            assert len(body) == size


def test_a_runner_killed_holding_a_lease_delays_the_others_at_most_the_bound(
    env: dict[str, str], s3: S3Bucket, tmp_path: Path
) -> None:
    project = package(tmp_path, 1)
    kill_holding_a_lease(project, s3, env, tmp_path, wait="600")
    bound = 3.0
    started = time.monotonic()
    result, runs = hit_or_build(project, s3, env, tmp_path, "waiter", SAFE_BUILD_REMOTE_CACHE_WAIT=str(bound))
    waited = time.monotonic() - started
    assert runs == Counter({"pkg1": 1})
    assert "(remote lease" in result.stderr
    assert "to build pkg1" in result.stderr
    assert bound <= waited < bound + 60, waited


def test_an_expired_lease_is_taken_over_by_one_of_the_waiters(
    env: dict[str, str], s3: S3Bucket, tmp_path: Path
) -> None:
    """The killed holder's lease expires after 3 s; of two runners waiting longer, one takes it
    over and builds, the other gets that build's entry."""
    project = package(tmp_path, 1)
    kill_holding_a_lease(project, s3, env, tmp_path, wait="3")
    waiters_marker = tmp_path / "waiter-runs"
    waiters = [
        subprocess.Popen(
            safe_build_command("--wheel", "-n", "-o", tmp_path / f"waiter{index}", project),
            env=runner_env(
                env,
                s3,
                tmp_path / f"waiter{index}-home",
                SLOW_BACKEND_MARKER=str(waiters_marker),
                SAFE_BUILD_REMOTE_CACHE_WAIT="120",
            ),
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(2)
    ]
    outputs = [waiter.communicate(timeout=300)[1] for waiter in waiters]
    assert [waiter.returncode for waiter in waiters] == [0, 0], outputs
    assert builds(waiters_marker) == Counter({"pkg1": 1}), outputs


# runs safe-build in this interpreter; prints, after it, which of the S3 client's modules it loaded
IMPORTS = """\
import sys
{setup}
from safe_build.cli import main
code = main(sys.argv[1:])
print(sorted(name for name in ("boto3", "botocore") if sys.modules.get(name)), file=sys.stderr)
sys.exit(code)
"""


def with_imports_shown(setup: str, *args: str | Path) -> list[str]:
    return [sys.executable, "-c", IMPORTS.format(setup=setup), "--wheel", "-n", *map(str, args)]


def test_a_local_hit_never_loads_the_s3_client(
    filled: tuple[Path, S3Bucket, str], env: dict[str, str], tmp_path: Path
) -> None:
    project, bucket, _ = filled
    environment = runner_env(env, bucket, tmp_path / "first-home")  # the first runner's own cache
    hit = run(with_imports_shown("", "-o", tmp_path / "again", project), environment)
    assert hit.returncode == 0, hit.stderr
    assert "Reusing cache entry" in hit.stderr
    assert hit.stderr.splitlines()[-1] == "[]"
    miss = run(
        with_imports_shown("", "-o", tmp_path / "other", project), runner_env(env, bucket, tmp_path / "new")
    )
    assert miss.stderr.splitlines()[-1] == "['botocore']"  # what the check would see


def test_without_boto3_the_remote_cache_is_one_warning(
    env: dict[str, str], s3: S3Bucket, tmp_path: Path
) -> None:
    project = package(tmp_path, 1)
    no_boto3 = "sys.modules['botocore'] = None  # as if safe-build[s3] were not installed"
    made = run(
        with_imports_shown(no_boto3, "-o", tmp_path / "dist", project), runner_env(env, s3, tmp_path / "r")
    )
    assert made.returncode == 0, made.stderr
    warnings = [line for line in made.stderr.splitlines() if line.startswith("safe-build: warning")]
    assert warnings == [
        f"safe-build: warning: remote cache {s3.url}: the remote cache needs boto3: pip install "
        '"safe-build[s3]"; going on without the remote cache'
    ]
    assert [path.name for path in (tmp_path / "dist").iterdir()] == ["pkg1-1.0-py3-none-any.whl"]


def test_safe_pip_warns_once_of_a_remote_cache_it_cannot_reach(
    env: dict[str, str], s3: S3Bucket, tmp_path: Path
) -> None:
    """safe-pip builds each local project in one process: the remote cache that failed for the
    first is not asked again, and the run warns once."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    projects = [package(tmp_path / "projects", index) for index in (1, 2)]
    environment = runner_env(
        env, s3, tmp_path / "home", SAFE_BUILD_REMOTE_CACHE_ENDPOINT="http://127.0.0.1:9"
    )
    installed = run(safe_pip_install(venv, *projects), environment, timeout=300)
    assert installed.returncode == 0, installed.stderr
    assert installed.stderr.count("going on without the remote cache") == 1, installed.stderr
