"""Network file system detection: the mount table is read right, and the warning is said once per mount."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from safe_build import netfs

WARNING = "safe-build: warning: "


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No mount table cached and no warning said by an earlier test, and no hook from outside."""
    monkeypatch.delenv(netfs.MOUNTINFO_VARIABLE, raising=False)
    netfs._tables.clear()
    netfs._warned.clear()
    yield
    netfs._tables.clear()
    netfs._warned.clear()


def _escape(path: Path) -> str:
    """A path as the kernel writes it in mountinfo."""
    text = str(path).replace("\\", "\\134")
    return text.replace(" ", "\\040").replace("\t", "\\011").replace("\n", "\\012")


class Mounts:
    """A crafted mount table over directories in a tmp_path, and the paths on it."""

    def __init__(self, root: Path) -> None:
        base = root.resolve()
        self.nfs = base / "nfs"  # nfs4
        self.nested = self.nfs / "local"  # ext4 inside the nfs4 mount
        self.spaced = base / "with space"  # cifs, written \040 in the table
        self.a_b = base / "a" / "b"  # fuse.sshfs: /a/bc is not under it
        self.a_bc = base / "a" / "bc"
        self.shadowed = base / "shadowed"  # ext4 first, then nfs mounted on top of it
        for directory in (self.nested, self.spaced, self.a_b, self.a_bc, self.shadowed):
            directory.mkdir(parents=True)
        self.file = base / "mountinfo"
        lines = [
            "22 27 0:21 / /proc rw,relatime - proc proc rw",
            "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw",
            f"40 27 0:50 / {_escape(self.nfs)} rw,relatime shared:7 - nfs4 server:/export rw,vers=4.2",
            f"41 40 254:1 / {_escape(self.nested)} rw,relatime - ext4 /dev/vdb rw",
            f"42 27 0:51 / {_escape(self.spaced)} rw,relatime - cifs //server/share rw,nobrl",
            f"43 27 0:52 / {_escape(self.a_b)} rw,nosuid,nodev - fuse.sshfs me@host:/ rw,user_id=0",
            f"44 27 254:2 / {_escape(self.shadowed)} rw,relatime - ext4 /dev/vdc rw",
            f"45 27 0:53 / {_escape(self.shadowed)} rw,relatime - nfs server:/other rw,vers=3",
            "this line is malformed",
        ]
        self.file.write_text("\n".join(lines) + "\n")

    def use(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(netfs.MOUNTINFO_VARIABLE, str(self.file))


@pytest.fixture
def mounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Mounts:
    crafted = Mounts(tmp_path)
    crafted.use(monkeypatch)
    return crafted


def test_longest_prefix_wins(mounts: Mounts) -> None:
    assert netfs.network_filesystem(mounts.nfs) == "nfs4"
    assert netfs.network_filesystem(mounts.nfs / "local-ish") == "nfs4"  # not existing, not under local
    assert netfs.network_filesystem(mounts.nested) is None  # the ext4 mount inside the nfs4 one
    assert netfs.network_filesystem(mounts.nested / "deeper") is None
    assert netfs.network_filesystem(mounts.nfs.parent) is None  # the root ext4 mount
    assert netfs.network_filesystem(Path("/")) is None


def test_mount_point_escapes(mounts: Mounts) -> None:
    assert netfs.network_filesystem(mounts.spaced) == "cifs"
    assert netfs.network_filesystem(mounts.spaced / "cache") == "cifs"


def test_components_not_string_prefixes(mounts: Mounts) -> None:
    assert netfs.network_filesystem(mounts.a_b) == "fuse.sshfs"
    assert netfs.network_filesystem(mounts.a_b / "x") == "fuse.sshfs"
    assert netfs.network_filesystem(mounts.a_bc) is None  # "/a/bc" starts with "/a/b", but is not in it


def test_later_mount_on_the_same_point_wins(mounts: Mounts) -> None:
    assert netfs.network_filesystem(mounts.shadowed) == "nfs"


def test_path_not_existing_yet(mounts: Mounts) -> None:
    missing = mounts.nfs / "not" / "yet" / "there"
    assert not missing.exists()
    assert netfs.network_filesystem(missing) == "nfs4"
    assert netfs.network_filesystem(mounts.nested / "not" / "yet") is None


def test_symlinks_are_resolved(mounts: Mounts) -> None:
    outside = mounts.file.parent / "link-to-nfs"
    outside.symlink_to(mounts.nfs, target_is_directory=True)
    assert netfs.network_filesystem(outside / "cache") == "nfs4"
    inside = mounts.nfs / "link-to-local"
    inside.symlink_to(mounts.file.parent, target_is_directory=True)
    assert netfs.network_filesystem(inside) is None
    dangling = mounts.file.parent / "dangling"
    dangling.symlink_to(mounts.nfs / "created-later")
    assert netfs.network_filesystem(dangling) == "nfs4"


def test_relative_path(mounts: Mounts, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(mounts.nfs)
    assert netfs.network_filesystem(Path("cache")) == "nfs4"
    assert netfs.network_filesystem(Path("local")) is None


@pytest.mark.parametrize(
    ("fstype", "network"),
    [
        ("nfs", True),
        ("cifs", True),
        ("smb3", True),
        ("9p", True),
        ("virtiofs", True),
        ("fuse", True),
        ("fuseblk", True),
        ("fuse.rclone", True),
        ("ext4", False),
        ("xfs", False),
        ("btrfs", False),
        ("tmpfs", False),
        ("overlay", False),
        ("fusectl", False),  # the FUSE control file system, not a FUSE mount
    ],
)
def test_types(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fstype: str, network: bool) -> None:
    table = tmp_path / "mountinfo"
    table.write_text(f"1 0 0:1 / / rw - {fstype} source rw\n")
    monkeypatch.setenv(netfs.MOUNTINFO_VARIABLE, str(table))
    assert netfs.network_filesystem(tmp_path) == (fstype if network else None)


def test_no_mount_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(netfs.MOUNTINFO_VARIABLE, str(tmp_path / "no-such-mountinfo"))
    assert netfs.network_filesystem(tmp_path) is None
    netfs.warn_if_network(tmp_path, "cache directory")  # and says nothing, fails nothing


def test_table_is_read_once_per_file(mounts: Mounts) -> None:
    assert netfs.network_filesystem(mounts.nfs) == "nfs4"
    mounts.file.write_text("1 0 0:1 / / rw - ext4 /dev/vda rw\n")
    assert netfs.network_filesystem(mounts.nfs) == "nfs4"  # the cached table
    netfs._tables.clear()
    assert netfs.network_filesystem(mounts.nfs) is None


def test_real_mount_table(tmp_path: Path) -> None:
    findmnt = shutil.which("findmnt")
    if findmnt is None or not netfs.MOUNTINFO.is_file():
        pytest.skip("needs findmnt and /proc/self/mountinfo")
    found = subprocess.run(
        [findmnt, "-no", "FSTYPE", "--target", str(tmp_path)], capture_output=True, text=True, check=False
    )
    fstype = found.stdout.strip()
    if found.returncode != 0 or not fstype:
        pytest.skip(f"findmnt could not tell tmp_path's file system: {found.stderr.strip()}")
    expected = fstype if netfs._is_network_type(fstype) else None
    assert netfs.network_filesystem(tmp_path) == expected
    assert netfs.network_filesystem(tmp_path / "not-yet") == expected


def test_warns_once_per_mount(mounts: Mounts, capsys: pytest.CaptureFixture[str]) -> None:
    netfs.warn_if_network(mounts.nfs / "cache", "cache directory")
    netfs.warn_if_network(mounts.nfs / "dist", "output directory")
    netfs.warn_if_network(mounts.nested, "output directory")  # local: nothing
    netfs.warn_if_network(mounts.a_bc, "environment")  # local: nothing
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"safe-build: warning: cache directory {mounts.nfs / 'cache'} is on a network file system (nfs4): "
        "its locks may not exclude processes on other hosts; keep it on a local disk (for the cache: "
        "--cache-dir or SAFE_BUILD_CACHE_DIR), or run the builds that share it on one host"
    ]
    netfs.warn_if_network(mounts.spaced, "environment")  # another mount: its own warning
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{WARNING}environment {mounts.spaced} is on a network file system (cifs): ")


def test_local_path_says_nothing(mounts: Mounts, capsys: pytest.CaptureFixture[str]) -> None:
    netfs.warn_if_network(mounts.file.parent, "cache directory")
    assert capsys.readouterr().err == ""


def _run(mounts: Mounts, *calls: tuple[Path, str]) -> subprocess.CompletedProcess[str]:
    code = "\n".join(
        [
            "import sys",
            "from pathlib import Path",
            "from safe_build import netfs",
            "args = sys.argv[1:]",
            "for path, what in zip(args[::2], args[1::2]):",
            "    netfs.warn_if_network(Path(path), what)",
        ]
    )
    arguments = [item for path, what in calls for item in (str(path), what)]
    env = {**os.environ, netfs.MOUNTINFO_VARIABLE: str(mounts.file)}
    return subprocess.run(
        [sys.executable, "-c", code, *arguments], env=env, capture_output=True, text=True, check=True
    )


def test_warns_once_per_mount_in_a_process(mounts: Mounts) -> None:
    done = _run(mounts, (mounts.nfs / "cache", "cache directory"), (mounts.nfs / "dist", "output directory"))
    warnings = [line for line in done.stderr.splitlines() if line.startswith(WARNING)]
    assert len(warnings) == 1, done.stderr
    expected = f"{WARNING}cache directory {mounts.nfs / 'cache'} is on a network file system (nfs4): "
    assert warnings[0].startswith(expected)
    assert done.stdout == ""

    done = _run(
        mounts,
        (mounts.nfs / "cache", "cache directory"),
        (mounts.nested / "dist", "output directory"),
        (mounts.spaced / "env", "environment"),
        (mounts.spaced / "env2", "environment"),
    )
    warnings = [line for line in done.stderr.splitlines() if line.startswith(WARNING)]
    assert len(warnings) == 2, done.stderr
    assert "(nfs4)" in warnings[0]
    assert "(cifs)" in warnings[1]


def test_local_path_says_nothing_in_a_process(mounts: Mounts) -> None:
    done = _run(mounts, (mounts.nested, "output directory"), (mounts.a_bc, "cache directory"))
    assert done.stderr == ""
