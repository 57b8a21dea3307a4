"""The wheel cache store and ``safe-build cache``: real files, real processes, real kernel locks.

The store is driven through its API in this process where one process is the point, and through
``python -c`` scripts and the ``safe-build cache`` command where processes must race, wait or die.
A store is held mid-copy without any hook in the product: one of its artifacts is a fifo that
the test feeds, and stops feeding.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from safe_build import state, workdirs
from safe_build.cache import Cache, Entry
from safe_build.fsutil import remove_tree
from tests.conftest import run, safe_build_command, write_project

DAY = 86400.0
NOBODY = 65534


def key_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


KEY = key_of("demo")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def cache_env(tmp_path: Path) -> dict[str, str]:
    """Our environment with the default cache somewhere harmless (each command names its own)."""
    return {**os.environ, "SAFE_BUILD_CACHE_DIR": str(tmp_path / "default-cache")}


def artifacts(directory: Path, name: str = "demo_pkg", size: int = 50_000) -> list[Path]:
    """An sdist and a wheel of random bytes (the store does not look inside them)."""
    directory.mkdir(parents=True, exist_ok=True)
    sdist = directory / f"{name}-1.0.tar.gz"
    wheel = directory / f"{name}-1.0-py3-none-any.whl"
    sdist.write_bytes(os.urandom(size // 10))
    wheel.write_bytes(os.urandom(size))
    return [sdist, wheel]


def store(cache: Cache, key: str, files: list[Path], project: str = "Demo_Pkg") -> Entry:
    with cache.using(), cache.single_flight(key, "the test"):
        return cache.store(key, files, project=project, version="1.0", inputs={"python": "3.11"})


def lookup(cache: Cache, key: str) -> Entry | None:
    with cache.using(), cache.single_flight(key, "the test"):
        return cache.lookup(key)


def cache_cli(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return run(safe_build_command("cache", *args), env)


def as_json(result: subprocess.CompletedProcess[str]) -> object:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def hidden(root: Path, name: str) -> list[Path]:
    """What is in ``wheels/.work`` or ``wheels/.trash``."""
    directory = root / "wheels" / name
    return sorted(directory.iterdir()) if directory.exists() else []


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:.0f}s in vain until {what}")
        time.sleep(0.02)


# --- store and lookup --------------------------------------------------------------------------


def test_stored_artifacts_come_back_byte_identical_and_each_hit_is_recorded(
    tmp_path: Path, root: Path
) -> None:
    files = artifacts(tmp_path / "built")
    cache = Cache(state.at(root, lock_timeout=5))
    with cache.using(), cache.single_flight(KEY, "the test"):
        assert cache.lookup(KEY) is None
        stored = cache.store(KEY, files, project="Demo_Pkg", version="1.0", inputs={"python": "3.11"})

    hit = lookup(cache, KEY)
    assert hit is not None
    assert [path.name for path in hit.files] == [path.name for path in files]  # sdist first, as given
    assert [path.read_bytes() for path in hit.files] == [path.read_bytes() for path in files]
    assert hit.path == stored.path == root / "wheels" / KEY[:2] / KEY
    assert (hit.project, hit.version, hit.inputs) == ("Demo_Pkg", "1.0", {"python": "3.11"})
    record = json.loads((hit.path / "entry.json").read_text())
    assert record["key"] == KEY
    assert record["artifacts"] == [
        {
            "name": path.name,
            "size": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
        for path in files
    ]
    assert abs(hit.built_at - time.time()) < 60
    assert hidden(root, ".work") == [], "the work directory was renamed into place"

    os.utime(hit.path / "entry.json", (1_000_000, 1_000_000))
    again = lookup(cache, KEY)
    assert again is not None
    assert time.time() - (again.path / "entry.json").stat().st_mtime < 60, "a hit records its use"


def test_entries_are_only_touched_under_the_locks(tmp_path: Path, root: Path) -> None:
    cache = Cache(state.at(root, lock_timeout=5))
    with pytest.raises(RuntimeError, match=r"inside Cache\.using"), cache.single_flight(KEY, "x"):
        pass
    with cache.using():
        with pytest.raises(RuntimeError, match="single_flight"):
            cache.lookup(KEY)
        with pytest.raises(RuntimeError, match="single_flight"):
            cache.store(KEY, artifacts(tmp_path / "built"), project="p", version="1", inputs={})


def truncate(entry: Entry) -> None:
    wheel = entry.files[-1]
    wheel.write_bytes(wheel.read_bytes()[: wheel.stat().st_size // 2])


def flip_a_byte(entry: Entry) -> None:
    wheel = entry.files[-1]
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0xFF
    wheel.write_bytes(bytes(data))


def rewrite_record(entry: Entry, change: Callable[[str], str]) -> None:
    record = entry.path / "entry.json"
    record.write_text(change(record.read_text()))


DAMAGE: dict[str, Callable[[Entry], None]] = {
    "truncated wheel": truncate,
    "flipped byte": flip_a_byte,
    "artifact deleted": lambda entry: entry.files[0].unlink(),
    "entry.json deleted": lambda entry: (entry.path / "entry.json").unlink(),
    "entry.json cut short": lambda entry: rewrite_record(entry, lambda text: text[: len(text) // 2]),
    "entry.json of another key": lambda entry: rewrite_record(
        entry, lambda text: text.replace(entry.key, key_of("other"))
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_entry_is_discarded_and_can_be_stored_again(
    damage: str, tmp_path: Path, root: Path
) -> None:
    files = artifacts(tmp_path / "built")
    cache = Cache(state.at(root, lock_timeout=5))
    DAMAGE[damage](store(cache, KEY, files))

    assert lookup(cache, KEY) is None
    assert not (root / "wheels" / KEY[:2] / KEY).exists()
    assert hidden(root, ".trash") == []

    store(cache, KEY, files)
    hit = lookup(cache, KEY)
    assert hit is not None
    assert [path.read_bytes() for path in hit.files] == [path.read_bytes() for path in files]


# --- single flight ------------------------------------------------------------------------------

FLIGHT_SCRIPT = """
import sys
from pathlib import Path
from safe_build import state
from safe_build.cache import Cache

root, key, source = sys.argv[1:]
cache = Cache(state.at(Path(root), lock_timeout=30))
with cache.using(), cache.single_flight(key, "/src/demo"):
    if cache.lookup(key) is None:
        print("building", flush=True)
        sys.stdin.readline()  # the build takes until the test says the other process waits
        cache.store(key, [Path(source)], project="demo", version="1.0", inputs={})
        print("stored")
    else:
        print("hit")
"""


def test_one_process_builds_a_key_while_the_other_waits_for_its_entry(
    tmp_path: Path, root: Path, cache_env: dict[str, str]
) -> None:
    """Catches: two builds of one key at once, a silent wait, a waiter that rebuilds instead of
    looking again once it holds the key."""
    command = [sys.executable, "-c", FLIGHT_SCRIPT, str(root), KEY, str(artifacts(tmp_path / "built")[1])]
    first = subprocess.Popen(command, env=cache_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert first.stdout is not None
    assert first.stdout.readline() == "building\n"
    waiting_log = tmp_path / "second.stderr"
    with waiting_log.open("w") as log:
        second = subprocess.Popen(command, env=cache_env, stdout=subprocess.PIPE, stderr=log, text=True)
    wait_until(lambda: "waiting" in waiting_log.read_text() or second.poll() is not None, "the second waits")
    first_out, _ = first.communicate("go\n", timeout=30)
    second_out, _ = second.communicate(timeout=30)
    assert (first.returncode, first_out) == (0, "stored\n")
    assert (second.returncode, second_out) == (0, "hit\n")
    assert waiting_log.read_text().startswith(
        f"safe-build: waiting for the build lock on /src/demo (held by pid {first.pid}: "
    ), waiting_log.read_text()


# --- a store killed mid-way ---------------------------------------------------------------------

STORE_SCRIPT = """
import sys
from pathlib import Path
from safe_build import state
from safe_build.cache import Cache

root, key, *files = sys.argv[1:]
cache = Cache(state.at(Path(root), lock_timeout=30))
with cache.using(), cache.single_flight(key, "a store to kill"):
    cache.store(key, [Path(file) for file in files], project="demo", version="1.0", inputs={})
"""

MIB = 1 << 20


def kill_mid_store(root: Path, directory: Path, env: dict[str, str]) -> int:
    """Start a store whose wheel is a fifo; SIGKILL it once 1 MiB of the wheel is in its work dir.

    Returns the dead writer's pid.
    """
    sdist = artifacts(directory)[0]
    fifo = directory / "demo_pkg-1.0-py3-none-any.whl"
    fifo.unlink()
    os.mkfifo(fifo)
    writer = subprocess.Popen(
        [sys.executable, "-c", STORE_SCRIPT, str(root), KEY, str(sdist), str(fifo)], env=env
    )
    try:
        fd = -1

        def reader_opened() -> bool:
            nonlocal fd
            assert writer.poll() is None, "the store ended before it read the fifo"
            with contextlib.suppress(OSError):  # ENXIO: no reader yet
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            return fd >= 0

        wait_until(reader_opened, "the store opened the fifo")
        os.set_blocking(fd, True)
        data = memoryview(os.urandom(MIB + MIB // 2))
        while data:  # the store copies it in 1 MiB reads: it holds 1 MiB and waits for more
            data = data[os.write(fd, data) :]

        def copied() -> list[Path]:
            return [path for path in (root / "wheels" / ".work").rglob(".*") if path.stat().st_size >= MIB]

        wait_until(lambda: bool(copied()), "1 MiB of the wheel was copied")
        writer.send_signal(signal.SIGKILL)
        assert writer.wait(timeout=10) == -signal.SIGKILL
        os.close(fd)
        return writer.pid
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()


def test_a_store_killed_mid_copy_leaves_no_entry_and_its_work_dir_is_wiped(
    tmp_path: Path, root: Path, cache_env: dict[str, str]
) -> None:
    """Catches: an entry visible before it is complete, a work dir nobody removes, a key lock or an
    unfinished entry that keeps the next store from working."""
    cache = Cache(state.at(root, lock_timeout=5))
    kill_mid_store(root, tmp_path / "first", cache_env)
    assert cache.entries() == []
    assert not (root / "wheels" / KEY[:2] / KEY).exists()
    [work] = hidden(root, ".work")
    assert work.name.startswith(f"{KEY}-")

    pruned = as_json(cache_cli(cache_env, "prune", "--cache-dir", root, "--json"))
    assert isinstance(pruned, dict)
    assert (pruned["removed"], pruned["leftovers"]) == ([], 1)
    assert hidden(root, ".work") == []

    kill_mid_store(root, tmp_path / "second", cache_env)
    assert len(hidden(root, ".work")) == 1
    files = artifacts(tmp_path / "built")
    with cache.using(), cache.single_flight(KEY, "the test"):
        assert cache.lookup(KEY) is None
        cache.store(KEY, files, project="demo", version="1.0", inputs={})
    assert hidden(root, ".work") == [], "a store under the key lock wipes its key's dead work dirs"
    hit = lookup(cache, KEY)
    assert hit is not None
    assert [path.read_bytes() for path in hit.files] == [path.read_bytes() for path in files]


# --- clean while builds use the cache ------------------------------------------------------------

READER_SCRIPT = """
import hashlib, json, sys, time
from pathlib import Path
from safe_build import state
from safe_build.cache import Cache

root, seconds, *sources = sys.argv[1:]
cache = Cache(state.at(Path(root), lock_timeout=60))
counts = {"iterations": 0, "hits": 0, "stores": 0, "failures": 0, "errors": []}
deadline = time.monotonic() + float(seconds)
while time.monotonic() < deadline:
    time.sleep(0.005)  # builds do not follow each other within microseconds (see the test)
    source = Path(sources[counts["iterations"] % len(sources)])
    counts["iterations"] += 1
    key = hashlib.sha256(source.name.encode()).hexdigest()
    try:
        with cache.using():
            with cache.single_flight(key, source):
                entry = cache.lookup(key)
                if entry is None:
                    entry = cache.store(key, [source], project=source.stem, version="1", inputs={})
                    counts["stores"] += 1
                else:
                    counts["hits"] += 1
            # published outside the key lock, as a build does: only the shared lock protects it
            if [path.read_bytes() for path in entry.files] != [source.read_bytes()]:
                raise AssertionError(f"{entry.files} differ from {source}")
    except Exception as error:
        counts["failures"] += 1
        counts["errors"].append(repr(error))
print(json.dumps(counts))
"""

RACE_SECONDS = 4.0


def test_clean_in_a_loop_never_breaks_builds_using_the_cache(
    tmp_path: Path, root: Path, cache_env: dict[str, str]
) -> None:
    """Two processes look up, store and read entries of three keys, 5 ms apart, while this one cleans
    the cache as fast as it can.

    Catches: a clean that removes an entry, a work dir or a key lock in use: a reader then fails to
    store or to read its artifacts (readers that skip the shared lock fail in nearly every round).
    The pause matters: a flock reader-writer lock prefers readers, and back-to-back readers leave
    the cleaner, which polls for its exclusive lock, no moment to get in.
    """
    sources = [path for index in range(3) for path in artifacts(tmp_path / "src", f"p{index}", 100_000)[1:]]
    command = [sys.executable, "-c", READER_SCRIPT, str(root), str(RACE_SECONDS), *map(str, sources)]
    readers = [
        subprocess.Popen(command, env=cache_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    cache = Cache(state.at(root, lock_timeout=30))
    removed = 0
    while any(reader.poll() is None for reader in readers):
        removed += len(cache.clean().entries)
    results = []
    for reader in readers:
        out, err = reader.communicate()
        assert reader.returncode == 0, err
        results.append(json.loads(out))

    assert [result["failures"] for result in results] == [0, 0], results
    assert removed >= 5, f"the race was not run: the cleans removed only {removed} entries"
    for result in results:
        assert result["hits"] >= 5, results
        assert result["stores"] >= 2, results


# --- waiting for the exclusive lock --------------------------------------------------------------

HOLD_SCRIPT = """
import sys
from pathlib import Path
from safe_build import state
from safe_build.cache import Cache

with Cache(state.at(Path(sys.argv[1]), lock_timeout=30)).using():
    print("holding", flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def holding_the_cache(root: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """A process that uses the cache (holds it shared) until the body ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SCRIPT, str(root)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "holding\n"
        yield holder
    finally:
        holder.communicate(timeout=10)


def test_clean_waits_for_a_build_using_the_cache_and_names_it(
    tmp_path: Path, root: Path, cache_env: dict[str, str]
) -> None:
    """Catches: a silent wait, a clean that does not wait (the entry vanishes while the holder holds
    the cache), a timeout that is not exit 3 with the holder named."""
    cache = Cache(state.at(root, lock_timeout=5))
    store(cache, KEY, artifacts(tmp_path / "built"))
    waiting_log = tmp_path / "clean.stderr"
    with holding_the_cache(root, cache_env) as holder:
        impatient = cache_cli(cache_env, "clean", "--cache-dir", root, "--lock-timeout", "0")
        assert impatient.returncode == 3, impatient.stderr
        [line] = impatient.stderr.splitlines()
        assert line.startswith(
            f"safe-build: error: timed out after 0.0s waiting for the cache lock on {root} "
        )
        assert f"held by pid {holder.pid}: " in line

        with waiting_log.open("w") as log:
            clean = subprocess.Popen(
                safe_build_command("cache", "clean", "--cache-dir", root, "--lock-timeout", "60"),
                env=cache_env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        wait_until(lambda: "waiting" in waiting_log.read_text() or clean.poll() is not None, "clean waits")
        assert clean.poll() is None, "clean went ahead while a build used the cache"
        assert len(cache.entries()) == 1
    out, _ = clean.communicate(timeout=30)
    [line] = waiting_log.read_text().splitlines()
    assert line.startswith(f"safe-build: waiting for the cache lock on {root} (held by pid {holder.pid}: "), (
        line
    )
    assert ", shared, for " in line
    assert clean.returncode == 0
    assert out.startswith("Removed 1 entry ")
    assert cache.entries() == []


# --- read-only entries ---------------------------------------------------------------------------

READ_ONLY_SCRIPT = f"""
import os, stat, sys
from pathlib import Path
from safe_build import cli
from safe_build import state
from safe_build.cache import Cache
import safe_build.commands.cache  # imported now: nobody cannot read this interpreter's library

base, damaged_key, intact_key = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
if os.geteuid() == 0:  # root may delete anything: become nobody, so that permissions count
    os.setegid({NOBODY})
    os.seteuid({NOBODY})
cache = Cache(state.at(base / "cache", lock_timeout=10))
source = base / "demo-1.0-py3-none-any.whl"
source.write_bytes(os.urandom(10_000))

def read_only(entry):
    sub = entry.path / "sub"
    sub.mkdir()
    (sub / "notes.txt").write_text("x")
    for path in (sub / "notes.txt", sub, *entry.files, entry.path / "entry.json", entry.path):
        os.chmod(path, stat.S_IMODE(os.stat(path).st_mode) & ~0o222)
    assert not any(os.access(path, os.W_OK, effective_ids=True) for path in (entry.path, sub))

with cache.using():
    for key in (damaged_key, intact_key):
        with cache.single_flight(key, "read-only"):
            entry = cache.store(key, [source], project="demo", version="1.0", inputs={{}})
            if key == damaged_key:
                os.truncate(entry.files[0], 100)
            read_only(entry)
    with cache.single_flight(damaged_key, "read-only"):
        assert cache.lookup(damaged_key) is None, "a damaged read-only entry is discarded"
sys.exit(cli.main(["cache", "clean", "--cache-dir", str(cache.root)]))
"""


@pytest.fixture
def unprivileged_base(tmp_path: Path) -> Iterator[Path]:
    """A directory the script can own: as root, one in the temp dir that nobody owns."""
    if os.geteuid() != 0:
        yield tmp_path
        return
    base = Path(tempfile.mkdtemp(prefix="safe-build-read-only-"))
    try:
        os.chown(base, NOBODY, NOBODY)
        yield base
    finally:
        remove_tree(base)


def test_read_only_files_and_directories_in_entries_are_removed(
    unprivileged_base: Path, cache_env: dict[str, str]
) -> None:
    """Entries whose files and directories (the entry's own included) were made read-only are
    discarded by a lookup and removed by clean. Run as nobody when the tests run as root."""
    damaged, intact = key_of("damaged"), key_of("intact")
    result = run([sys.executable, "-c", READ_ONLY_SCRIPT, str(unprivileged_base), damaged, intact], cache_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Removed 1 entry "), result.stdout
    wheels = unprivileged_base / "cache" / "wheels"
    assert {path.name for path in wheels.rglob("*")} == {".trash", ".work"}, (
        "entries, their trash, their work dirs or their emptied shard directories were left"
    )


# --- prune ------------------------------------------------------------------------------------------


def listed(env: dict[str, str], root: Path) -> list[dict[str, object]]:
    listing = as_json(cache_cli(env, "list", "--cache-dir", root, "--json"))
    assert isinstance(listing, dict)
    entries = listing["entries"]
    assert isinstance(entries, list)
    return entries


def total_size(env: dict[str, str], root: Path) -> int:
    info = as_json(cache_cli(env, "info", "--cache-dir", root, "--json"))
    assert isinstance(info, dict)
    total = info["total_size"]
    assert isinstance(total, int)
    return total


# What the holder record of prune's own lock takes while prune measures (one block), and a
# directory's growth: less than the smallest entry in the prune test, so no extra entry goes.
SLACK = 16384


def test_prune_by_age_then_by_size_and_sweeps_what_dead_processes_left(
    tmp_path: Path, root: Path, cache_env: dict[str, str]
) -> None:
    cache = Cache(state.at(root, lock_timeout=5))
    ages = {"ten-days": 10, "five-days": 5, "two-days": 2, "today": 0}
    for name, days in ages.items():
        entry = store(cache, key_of(name), artifacts(tmp_path / name, size=20_000), project=name)
        used = time.time() - days * DAY - 60
        os.utime(entry.path / "entry.json", (used, used))
    (root / "wheels" / ".trash" / "half-removed" / "sub").mkdir(parents=True)
    with workdirs.private_dir(state.at(root, lock_timeout=5)) as live:
        dead = root / "tmp" / "999999999-deadbeef"
        dead.mkdir()
        (root / "tmp" / f"{dead.name}.lock").touch()  # its owner's flock went with its owner

        by_age = as_json(cache_cli(cache_env, "prune", "--cache-dir", root, "--older-than", "7", "--json"))
        assert isinstance(by_age, dict)
        assert [entry["project"] for entry in by_age["removed"]] == ["ten-days"]
        assert by_age["leftovers"] == 2
        assert live.is_dir(), "a live build's private directory was swept"
        assert not dead.exists()
        assert hidden(root, ".trash") == []

    sizes = {str(entry["project"]): entry["size"] for entry in listed(cache_env, root)}
    assert all(isinstance(size, int) and size > SLACK for size in sizes.values()), sizes
    five_days, two_days, today = (int(str(sizes[name])) for name in ("five-days", "two-days", "today"))
    roomy = as_json(cache_cli(cache_env, "prune", "--cache-dir", root, "--max-size", "1.5GiB", "--json"))
    assert isinstance(roomy, dict)
    assert (roomy["removed"], roomy["remaining"]) == ([], 3)

    total = total_size(cache_env, root)
    bound = total - five_days + SLACK  # the whole directory, without the oldest entry
    by_size = as_json(cache_cli(cache_env, "prune", "--cache-dir", root, "--max-size", str(bound), "--json"))
    assert isinstance(by_size, dict)
    assert [entry["project"] for entry in by_size["removed"]] == ["five-days"]
    assert by_size["remaining_size"] == today + two_days
    assert isinstance(by_size["total_size"], int)
    assert by_size["total_size"] <= bound
    assert sorted(str(entry["project"]) for entry in listed(cache_env, root)) == ["today", "two-days"]

    total = total_size(cache_env, root)
    just_today = f"{(total - two_days + SLACK) / 1000}k"  # sizes with a unit
    text = cache_cli(cache_env, "prune", "--cache-dir", root, "--max-size", just_today)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith(
        f"Removed 1 entry ({two_days / 1000:.1f} kB) and 0 build environments (0 B) from {root}; "
    ), text.stdout
    assert [entry["project"] for entry in listed(cache_env, root)] == ["today"]


# --- list, info, dir, clean NAME -------------------------------------------------------------------


def test_list_info_dir_and_clean_by_normalized_name(
    tmp_path: Path, root: Path, cache_env: dict[str, str]
) -> None:
    cache = Cache(state.at(root, lock_timeout=5))
    demo = store(cache, KEY, artifacts(tmp_path / "demo"), project="Demo_Pkg")
    other = store(cache, key_of("other"), artifacts(tmp_path / "other", "other"), project="other")

    entries = listed(cache_env, root)
    assert [entry["project"] for entry in entries] == ["Demo_Pkg", "other"]
    first = entries[0]
    assert first == {
        "project": "Demo_Pkg",
        "version": "1.0",
        "key": KEY,
        "size": demo.size,
        "built_at": first["built_at"],
        "last_used": first["last_used"],
        "artifacts": [
            {
                "name": path.name,
                "size": path.stat().st_size,
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            }
            for path in demo.files
        ],
        "inputs": {"python": "3.11"},
        "path": str(demo.path),
        "wheel_tags": ["py3-none-any"],
        "interpreter": None,
    }
    assert str(first["built_at"]).endswith("+00:00")

    text = cache_cli(cache_env, "list", "--cache-dir", root).stdout.splitlines()
    assert text[0].split() == ["PROJECT", "VERSION", "TAG", "PYTHON", "KEY", "SIZE", "BUILT", "LAST", "USED"]
    assert text[1].split()[:5] == ["Demo_Pkg", "1.0", "py3-none-any", "-", KEY[:12]]
    assert text[-1] == "no build environments"

    info = as_json(cache_cli(cache_env, "info", "--cache-dir", root, "--json"))
    assert isinstance(info, dict)
    assert {key: info[key] for key in ("entries", "size", "environments", "environments_size")} == {
        "entries": 2,
        "size": demo.size + other.size,
        "environments": 0,
        "environments_size": 0,
    }
    assert {key: info[key] for key in ("cache_dir", "private_dirs", "private_dirs_in", "locks_dir")} == {
        "cache_dir": str(root),
        "private_dirs": 0,
        "private_dirs_in": str(root / "tmp"),
        "locks_dir": str(root / "locks"),
    }
    assert info["total_size"] == sum(
        int(info[part])
        for part in ("size", "environments_size", "private_dirs_size", "memos_size", "other_size")
    )
    assert cache_cli(cache_env, "dir").stdout == f"{cache_env['SAFE_BUILD_CACHE_DIR']}\n"
    assert cache_cli(cache_env, "dir", "--cache-dir", root).stdout == f"{root}\n"

    cleaned = as_json(cache_cli(cache_env, "clean", "demo.pkg", "--cache-dir", root, "--json"))
    assert isinstance(cleaned, dict)
    assert [entry["key"] for entry in cleaned["removed"]] == [KEY]
    assert [entry["project"] for entry in listed(cache_env, root)] == ["other"]


BAD_VALUES = {
    "size unit": (["prune", "--max-size", "12X"], "--max-size"),
    "negative size": (["prune", "--max-size=-1G"], "--max-size"),
    "days not a number": (["prune", "--older-than", "soon"], "--older-than"),
    "negative days": (["prune", "--older-than", "-2"], "--older-than"),
    "days not finite": (["prune", "--older-than", "inf"], "--older-than"),
    "lock timeout": (["clean", "--lock-timeout", "a while"], "--lock-timeout"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_values_are_refused_in_one_line_before_anything_is_done(
    case: str, root: Path, cache_env: dict[str, str]
) -> None:
    arguments, option = BAD_VALUES[case]
    result = cache_cli(cache_env, *arguments, "--cache-dir", root)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("safe-build: error: invalid value "), line
    assert f" for {option}; " in line
    assert not root.exists()


def test_cache_is_a_command_and_a_project_named_cache_is_built_as_a_path(
    tmp_path: Path, cache_env: dict[str, str]
) -> None:
    usage = cache_cli(cache_env)
    assert usage.returncode == 2
    assert "safe-build cache: error: the following arguments are required: COMMAND" in usage.stderr

    write_project(tmp_path / "cache", "flit")
    built = run(safe_build_command("./cache", "-n", "--wheel", "-o", "out"), cache_env, cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "out").iterdir()
    assert wheel.name.startswith("demo_flit-3.0-"), wheel


def test_entry_directories_are_private_to_the_cache(tmp_path: Path, root: Path) -> None:
    """What a caller publishes from must be the entry's own copy, not the file it handed in."""
    files = artifacts(tmp_path / "built")
    entry = store(Cache(state.at(root, lock_timeout=5)), KEY, files)
    for source, copy in zip(files, entry.files, strict=True):
        assert not os.path.samestat(source.stat(), copy.stat())
        assert stat.S_IMODE(copy.stat().st_mode) == stat.S_IMODE(source.stat().st_mode)
    files[1].write_bytes(b"changed after the store")
    assert entry.files[1].read_bytes() != b"changed after the store"


def test_prune_removes_key_memos_only_when_nothing_else_is_left_to_remove(
    tmp_path: Path, root: Path, cache_env: dict[str, str]
) -> None:
    """Catches: a size bound that key memos keep out of reach; memos removed before entries."""
    cache = Cache(state.at(root, lock_timeout=5))
    store(cache, KEY, artifacts(tmp_path / "built", size=40_000))
    memo = root / "key-memos" / "demo-0123456789abcdef.memo"
    memo.parent.mkdir(exist_ok=True)
    memo.write_bytes(os.urandom(40_000))
    as_json(cache_cli(cache_env, "prune", "--cache-dir", root, "--json"))  # settles what stores left
    total = total_size(cache_env, root)
    [entry] = listed(cache_env, root)
    first = as_json(
        cache_cli(
            cache_env,
            "prune",
            "--cache-dir",
            root,
            "--max-size",
            str(total - int(str(entry["size"])) + SLACK),
            "--json",
        )
    )
    assert isinstance(first, dict)
    assert (len(first["removed"]), first["memos"]) == (1, 0)
    assert memo.exists()
    second = as_json(cache_cli(cache_env, "prune", "--cache-dir", root, "--max-size", "1", "--json"))
    assert isinstance(second, dict)
    assert second["memos"] == 1
    assert not memo.exists()
