"""``safe-build cache info/list/clean/prune`` account for the whole cache: wheel entries and build
environments, sized as ``du`` sizes them (allocated blocks), measured here with ``du`` itself.

One cache is built once for the module by real, isolated, offline safe-build runs of two projects
with different build requirements (setuptools; flit), so it holds three entries (a setuptools
wheel, a flit wheel and sdist) and two build environments; each test works on a copy of it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from packaging.tags import parse_tag, sys_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

from safe_build import buildcompat
from tests.conftest import offline_env, run, safe_build_command, write_project

pytestmark = pytest.mark.skipif(
    buildcompat.CLI is None, reason=f"build's helpers changed: {buildcompat.PROBLEM}"
)

SETUPTOOLS_ENV = "setuptools>=69"
FLIT_ENV = "flit-core>=3.9"
# What prune's own holder record of the cache lock takes while prune measures (a block or two),
# and a directory that grew: far less than the smallest entry here (a wheel's entry: 3 blocks and
# more), so a bound with this slack removes no extra item.
SLACK = 8192
# The gap allowed between `info`'s total and `du` run right after it: none is expected (the same
# walk: allocated blocks, inodes once, links not followed, and `info` takes no lock, so it writes
# no holder record); one block of slack for a lock file or a marker's directory block appearing.
MARGIN = 4096


@pytest.fixture(scope="module")
def built(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache with three entries and two build environments, made by real isolated builds."""
    base = tmp_path_factory.mktemp("accounting")
    cache = base / "cache"
    environment = {**os.environ, **offline_env(wheelhouse, cache)}
    for kind, flags in (("setuptools", ["--wheel"]), ("flit", ["--wheel"]), ("flit", ["--sdist"])):
        project = write_project(base / kind, kind)
        result = run(safe_build_command(*flags, "-o", base / "out", project), environment)
        assert result.returncode == 0, result.stderr
    return cache


@pytest.fixture
def cache(built: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "cache"
    shutil.copytree(built, copy, symlinks=True)
    return copy


def cache_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "SAFE_BUILD_CACHE_DIR": str(root)}
    result = run(safe_build_command("cache", *args, "--cache-dir", str(root)), environment)
    assert result.returncode == 0, result.stderr
    return result


def as_json(root: Path, *args: str) -> dict[str, Any]:
    data = json.loads(cache_cli(root, *args, "--json").stdout)
    assert isinstance(data, dict)
    return data


def du(path: Path, *, apparent: bool = False) -> int:
    """``du -s`` in bytes: allocated blocks (``-B1``), or apparent sizes (``-b``)."""
    flag = "-b" if apparent else "-B1"
    return int(
        subprocess.run(
            ["du", "-s", flag, str(path)], check=True, capture_output=True, text=True
        ).stdout.split()[0]
    )


def items(root: Path) -> dict[str, Path]:
    """The entries (by project and kind) and environments (by backend) of a cache like ``built``'s."""
    found = {}
    for entry in (root / "wheels").glob("[0-9a-f]*/*"):
        record = json.loads((entry / "entry.json").read_text())
        kind = "wheel" if record["artifacts"][0]["name"].endswith(".whl") else "sdist"
        found[f"{canonicalize_name(record['project'])} {kind}"] = entry
    for environment in (root / "envs").glob("*/*"):
        requirements = json.loads((environment / "safe-build-env.json").read_text())["requirements"]
        found["setuptools env" if SETUPTOOLS_ENV in requirements else "flit env"] = environment
    assert sorted(found) == [
        "demo-flit sdist",
        "demo-flit wheel",
        "demo-setuptools wheel",
        "flit env",
        "setuptools env",
    ], found
    return found


def last_used(path: Path, seconds_ago: float) -> None:
    """Set when an entry or environment was last used: what prune goes by."""
    record = path / ("entry.json" if (path / "entry.json").exists() else "safe-build-env.json")
    when = time.time() - seconds_ago
    os.utime(record, (when, when))


def test_info_totals_the_whole_directory_as_du_counts_it(cache: Path) -> None:
    """Catches: build environments left out of the totals, apparent sizes instead of blocks."""
    info = as_json(cache, "info")
    on_disk = du(cache)
    assert isinstance(info["total_size"], int)
    assert abs(info["total_size"] - on_disk) <= MARGIN, (info, on_disk)
    found = items(cache)
    entries = sum(du(path) for name, path in found.items() if not name.endswith(" env"))
    environments = sum(du(path) for name, path in found.items() if name.endswith(" env"))
    assert (info["entries"], info["size"]) == (3, entries)
    assert (info["environments"], info["environments_size"]) == (2, environments)
    assert environments > entries, "a build environment takes more than a wheel: the test measures them"
    text = cache_cli(cache, "info").stdout
    assert "build environments:  2 (" in text, text
    assert "total:" in text


def test_list_shows_wheel_tags_interpreters_and_build_environments(cache: Path) -> None:
    """Catches: builds for different interpreters listed as identical rows; environments unlisted."""
    listing = as_json(cache, "list")
    entries, environments = listing["entries"], listing["environments"]
    assert isinstance(entries, list)
    assert isinstance(environments, list)
    interpreter = next(iter(sys_tags())).interpreter
    by_name = {
        (str(canonicalize_name(entry["project"])), bool(entry["wheel_tags"])): entry for entry in entries
    }
    for project in ("demo-flit", "demo-setuptools"):
        entry = by_name[project, True]
        [wheel] = [artifact["name"] for artifact in entry["artifacts"]]
        [tag] = entry["wheel_tags"]
        assert parse_tag(tag) == parse_wheel_filename(wheel)[3], (wheel, tag)
    assert by_name["demo-flit", False]["wheel_tags"] == []
    assert {entry["interpreter"] for entry in entries} == {interpreter}
    python = ".".join(map(str, sys.version_info[:3]))
    assert sorted((tuple(found["requirements"]), found["python"]) for found in environments) == sorted(
        [((FLIT_ENV,), python), ((SETUPTOOLS_ENV,), python)]
    )
    assert all(found["complete"] and found["size"] == du(Path(found["path"])) for found in environments)

    text = cache_cli(cache, "list").stdout
    table, environments_table = text.split("\n\n")
    assert table.splitlines()[0].split() == [
        "PROJECT", "VERSION", "TAG", "PYTHON", "KEY", "SIZE", "BUILT", "LAST", "USED",
    ]  # fmt: skip
    assert f"py3-none-any  {interpreter}  " in table
    assert environments_table.splitlines()[0].split()[:4] == ["BUILD", "ENVIRONMENT", "PYTHON", "KEY"]
    assert any(line.startswith(f"{FLIT_ENV} ") and python in line for line in environments_table.splitlines())


def test_prune_max_size_bounds_du_of_the_cache_least_recently_used_first(cache: Path) -> None:
    """Catches: a bound on wheel entries only; environments never removed; a removal order other
    than least recently used across entries and environments."""
    found = items(cache)
    order = ["flit env", "demo-setuptools wheel", "setuptools env", "demo-flit sdist", "demo-flit wheel"]
    for age, name in enumerate(reversed(order)):
        last_used(found[name], 3600 * (age + 1))
    settled = as_json(cache, "prune")  # what builds left in tmp/ and locks/ goes first: then measure
    assert (settled["removed"], settled["environments"]) == ([], 0)
    total = du(cache)
    bound = total - du(found["flit env"]) - du(found["demo-setuptools wheel"]) + SLACK
    assert bound < total - du(found["flit env"]), "the bound needs the two oldest gone"

    pruned = as_json(cache, "prune", "--max-size", str(bound))
    assert du(cache) <= bound
    assert du(cache, apparent=True) <= bound
    assert [entry["project"] for entry in pruned["removed"]] == ["demo-setuptools"]
    removed_environments = pruned["removed_environments"]
    assert isinstance(removed_environments, list)
    assert [found["requirements"] for found in removed_environments] == [[FLIT_ENV]]
    assert pruned["environments"] == 1
    assert isinstance(pruned["total_size"], int)
    assert pruned["total_size"] <= bound
    assert [name for name, path in found.items() if path.exists()] == [
        name for name in found if name not in ("flit env", "demo-setuptools wheel")
    ]

    text = cache_cli(
        cache, "prune", "--max-size", str(du(cache) - du(found["demo-flit sdist"]) + SLACK)
    ).stdout
    assert text.startswith("Removed 0 entries (0 B) and 1 build environment ("), text
    assert not found["setuptools env"].exists(), "the environment, used longest ago, goes first"
    assert found["demo-flit sdist"].exists()


HOLDER = textwrap.dedent(
    """\
    import sys
    from pathlib import Path
    from safe_build import state

    root, key, environment = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    own = state.at(root, lock_timeout=10)
    with own.key_lock(key, "the test").hold("exclusive"):
        with own.build_env_lock(environment.name, environment).hold("shared"):
            print("holding", flush=True)
            sys.stdin.read()
    """
)


@contextmanager
def holding(root: Path, entry: Path, environment: Path) -> Iterator[None]:
    """An entry's key lock and a build environment's lock held by another process, as builds hold them."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root), entry.name, str(environment)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "holding\n"
        yield
    finally:
        holder.communicate(timeout=10)


def test_prune_and_clean_never_remove_what_is_in_use(cache: Path) -> None:
    """Catches: an environment or entry removed while its lock is held (prune to nothing, clean)."""
    found = items(cache)
    with holding(cache, found["demo-flit wheel"], found["setuptools env"]):
        pruned = as_json(cache, "prune", "--max-size", "1")
        assert pruned["busy"] == 2
        assert found["setuptools env"].exists()
        assert found["demo-flit wheel"].exists()
        assert not found["flit env"].exists()
        assert not found["demo-flit sdist"].exists()
        text = cache_cli(cache, "clean").stdout
        assert text.endswith("; 2 were in use and left alone\n"), text
        assert found["setuptools env"].exists()
        assert found["demo-flit wheel"].exists()
    assert (found["setuptools env"] / "safe-build-env.json").exists(), "the held environment is intact"
    cleaned = as_json(cache, "clean")
    assert (len(cleaned["removed"]), cleaned["environments"], cleaned["busy"]) == (1, 1, 0)


def test_clean_reports_environments_and_clean_name_leaves_them(cache: Path) -> None:
    """Catches: clean silent about environments; clean NAME removing environments."""
    found = items(cache)
    by_name = as_json(cache, "clean", "demo-flit")
    assert sorted(canonicalize_name(entry["project"]) for entry in by_name["removed"]) == ["demo-flit"] * 2
    assert by_name["environments"] == 0
    assert found["flit env"].exists()
    assert found["setuptools env"].exists()

    sizes = {name: du(found[name]) for name in ("demo-setuptools wheel", "flit env", "setuptools env")}
    cleaned = as_json(cache, "clean")
    assert cleaned["environments"] == 2
    assert cleaned["environments_freed"] == sizes["flit env"] + sizes["setuptools env"]
    assert cleaned["freed"] == sizes["demo-setuptools wheel"]
    assert cleaned["remaining_environments"] == 0
    assert not any(path.exists() for path in found.values())
    assert list((cache / "envs").iterdir()) == []


def test_clean_text_names_entries_and_environments_with_their_sizes(cache: Path) -> None:
    text = cache_cli(cache, "clean").stdout
    assert text.startswith("Removed 3 entries ("), text
    assert " and 2 build environments (" in text
    assert "0 entries (0 B) and 0 build environments (0 B) remain" in text
