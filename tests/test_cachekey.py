"""The cache key: it changes with everything that changes a build's artifacts, and with nothing else."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from safe_build import cachekey, digests, snapshot, state, traversal
from safe_build.patterns import Selection

INPUTS: dict[str, object] = {"distributions": ["wheel"], "config_settings": [], "isolation": "isolated"}
PYPROJECT = textwrap.dedent(
    """\
    [build-system]
    requires = ["setuptools>=69"]
    build-backend = "setuptools.build_meta"

    [project]
    name = "p"
    version = "1"
    """
)


def write(path: Path, text: str = "x\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def git(project: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "protocol.file.allow=always", *args],
        cwd=project,
        check=True,
        capture_output=True,
    )


def key(
    project: Path,
    inputs: dict[str, object] = INPUTS,
    *,
    exclude: tuple[str, ...] = (),
    selection: Selection | None = None,
    no_isolation: bool = False,
) -> str:
    return cachekey.compute(
        project, inputs, exclude=exclude, selection=selection, no_isolation=no_isolation
    ).digest


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    write(root / "pyproject.toml", PYPROJECT)
    write(root / "src/p/__init__.py", "VALUE = 1\n")
    write(root / "src/p/core.py", "def f():\n    return 2\n")
    write(root / "README.md", "readme\n")
    return root


@pytest.fixture
def repo(project: Path) -> Path:
    """The project as a git work tree, committed, with an ignore file."""
    write(project / ".gitignore", "*.log\n")
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "init")
    return project


def test_same_tree_same_key_also_elsewhere_and_after_touch(project: Path, tmp_path: Path) -> None:
    (project / "alias.py").symlink_to(project / "src/p/core.py")  # absolute, inside: made relative
    first = cachekey.compute(project, INPUTS)
    assert cachekey.compute(project, INPUTS) == first
    assert len(first.digest) == 64
    assert (first.files, first.links, first.listed_by) == (4, 1, "walk")
    files = [path for path in project.rglob("*") if path.is_file() and not path.is_symlink()]
    assert first.bytes == sum(path.stat().st_size for path in files)

    elsewhere = tmp_path / "elsewhere" / "project"
    shutil.copytree(project, elsewhere, symlinks=True)
    os.unlink(elsewhere / "alias.py")
    (elsewhere / "alias.py").symlink_to(elsewhere / "src/p/core.py")
    assert key(elsewhere) == first.digest

    os.utime(project / "src/p/core.py", ns=(10**18, 10**18))
    assert key(project) == first.digest


CHANGES: dict[str, Callable[[Path], object]] = {
    "content": lambda root: write(root / "src/p/core.py", "def f():\n    return 3\n"),
    "added file": lambda root: write(root / "src/p/new.py"),
    "removed file": lambda root: (root / "README.md").unlink(),
    "renamed file": lambda root: (root / "README.md").rename(root / "README.rst"),
    "chmod +x": lambda root: (root / "src/p/core.py").chmod(0o755),
    "empty dir (walk)": lambda root: (root / "empty").mkdir(),
    "backend requirement": lambda root: write(
        root / "pyproject.toml", PYPROJECT.replace("setuptools>=69", "setuptools>=70")
    ),
}


@pytest.mark.parametrize("change", CHANGES)
def test_each_change_to_the_source_changes_the_key(project: Path, change: str) -> None:
    before = key(project)
    CHANGES[change](project)
    assert key(project) != before


def test_changed_symlink_target_changes_the_key(project: Path) -> None:
    link = project / "alias.py"
    link.symlink_to("src/p/core.py")
    before = key(project)
    link.unlink()
    link.symlink_to("src/p/__init__.py")
    assert key(project) != before


@pytest.mark.parametrize(
    "inputs",
    [
        {**INPUTS, "config_settings": ["--build-option=--plat-name=x"]},
        {**INPUTS, "distributions": ["sdist", "wheel"]},
        {**INPUTS, "isolation": "none"},
        {**INPUTS, "installer": "uv"},
    ],
)
def test_each_build_input_changes_the_key(project: Path, inputs: dict[str, object]) -> None:
    assert key(project, inputs) != key(project)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CFLAGS", "-O3"),
        ("SOURCE_DATE_EPOCH", "1700000000"),
        ("SETUPTOOLS_SCM_PRETEND_VERSION", "2.0"),
        ("HATCH_BUILD_HOOKS_ENABLE", "true"),
        ("PIP_INDEX_URL", "https://user:secret@mirror.example/simple"),
    ],
)
def test_environment_that_affects_builds_changes_the_key(
    project: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.delenv(name, raising=False)
    before = key(project)
    monkeypatch.setenv(name, value)
    changed = cachekey.compute(project, INPUTS)
    assert changed.digest != before
    assert name in changed.environment
    assert value not in str(changed.describe())  # values may hold credentials: names only


def test_other_environment_variables_do_not_change_the_key(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = key(project)
    monkeypatch.setenv("SAFE_BUILD_TEST_UNRELATED", "1")
    monkeypatch.setenv("LANG", "C.UTF-8" if os.environ.get("LANG") != "C.UTF-8" else "en_US.UTF-8")
    monkeypatch.setenv("PATH", os.environ.get("PATH", "") + os.pathsep + "/nowhere")
    assert key(project) == before


def test_content_of_a_named_config_file_is_in_the_key(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = write(tmp_path / "extra.cfg", "[build_ext]\nparallel = 1\n")
    monkeypatch.setenv("DIST_EXTRA_CONFIG", str(extra))
    before = key(project)
    write(extra, "[build_ext]\nparallel = 2\n")
    assert key(project) != before


@pytest.mark.parametrize(
    "relative",
    [
        ".git/config",
        "build/lib/p/__init__.py",
        "dist/p-1.tar.gz",
        "node_modules/a/index.js",
        "web/node_modules/b/index.js",
        "src/p/__pycache__/core.cpython-311.pyc",
        "src/p.egg-info/PKG-INFO",
        ".tox/py/x",
        "wheels/p-1-py3-none-any.whl",  # the exclude below: an output directory inside the tree
    ],
)
def test_changes_in_excluded_places_keep_the_key(project: Path, relative: str) -> None:
    (project / "web").mkdir()  # a walk keeps directories, even empty ones: this one is not excluded
    before = key(project, exclude=("wheels",))
    write(project / relative)
    assert key(project, exclude=("wheels",)) == before


def test_git_listing_takes_untracked_files_but_not_ignored_ones(repo: Path) -> None:
    before = cachekey.compute(repo, INPUTS)
    assert before.listed_by == "git"
    write(repo / "debug.log")
    assert key(repo) == before.digest
    write(repo / "untracked.py")
    assert key(repo) != before.digest


def test_git_and_walk_cover_the_same_work_tree_content(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(repo / "untracked.py", "A = 1\n")
    by_git = key(repo)
    write(repo / "untracked.py", "A = 2\n")
    assert key(repo) != by_git
    monkeypatch.setattr(traversal, "_git_listing", lambda project, extra, **_: None)
    walked = cachekey.compute(repo, INPUTS)
    assert walked.listed_by == "walk"
    write(repo / "untracked.py", "A = 3\n")
    assert key(repo) != walked.digest


def test_submodule_content_is_covered(repo: Path, tmp_path: Path) -> None:
    library = tmp_path / "library"
    write(library / "lib.py", "L = 1\n")
    git(library, "init", "-q")
    git(library, "add", "-A")
    git(library, "commit", "-qm", "lib")
    git(repo, "submodule", "add", "-q", str(library), "vendor/library")
    git(repo, "commit", "-qm", "with submodule")
    before = key(repo)
    write(repo / "vendor/library/lib.py", "L = 2\n")  # a change inside the submodule's work tree
    assert key(repo) != before


def test_outside_symlinks_count_as_what_they_point_to(project: Path, tmp_path: Path) -> None:
    license_file = write(tmp_path / "shared/LICENSE", "MIT\n")
    write(tmp_path / "shared/data/table.csv", "a,b\n")
    (project / "LICENSE").symlink_to(license_file)
    (project / "data").symlink_to(tmp_path / "shared/data")
    before = cachekey.compute(project, INPUTS)
    assert before.files == 6
    write(license_file, "Apache-2.0\n")
    after_license = key(project)
    assert after_license != before.digest
    write(tmp_path / "shared/data/table.csv", "a,c\n")
    assert key(project) != after_license


def copy_key(project: Path, destination: Path) -> cachekey.Key:
    """The key the snapshot's own pass computes from what it wrote."""
    plan = traversal.plan(project)
    recorder = digests.Recorder({}, remember=False)
    snapshot.take(plan, destination, recorder=recorder)
    return cachekey.of_copy(recorder, plan, cachekey.context(project, INPUTS))


def test_key_of_a_snapshot_equals_key_of_its_source(project: Path, tmp_path: Path) -> None:
    """The copy digests what it wrote: for a tree nobody changes, that is the key read in place."""
    write(tmp_path / "shared/LICENSE", "MIT\n")
    write(tmp_path / "shared/data/table.csv", "a,b\n")
    (project / "LICENSE").symlink_to(tmp_path / "shared/LICENSE")
    (project / "data").symlink_to(tmp_path / "shared/data")
    (project / "alias.py").symlink_to(project / "src/p/core.py")
    (project / "dangling").symlink_to("nowhere")
    (project / "empty").mkdir()
    (project / "run.sh").touch(mode=0o755)
    (project / "ro.txt").touch(mode=0o444)
    os.mkfifo(project / "pipe")  # skipped by both, never opened
    copied = copy_key(project, tmp_path / "copy")
    assert copied == cachekey.compute(project, INPUTS)
    assert (copied.files, copied.links) == (8, 2)  # the targets of LICENSE and data; alias, dangling


def test_key_of_a_snapshot_names_what_it_copied_not_what_was_looked_up(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file changed after the lookup: the copy's key is that of the new content."""
    looked_up = cachekey.compute(project, INPUTS)
    write(project / "src/p/core.py", "def f():\n    return 3\n")
    copied = copy_key(project, tmp_path / "copy")
    assert copied != looked_up
    assert copied == cachekey.compute(project, INPUTS)


def test_files_gone_since_listing_are_skipped(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = key(project)
    plan = traversal.plan

    def with_ghost(*args: object, **kwargs: object) -> traversal.Plan:
        listed = plan(*args, **kwargs)  # type: ignore[arg-type]
        return dataclasses.replace(listed, entries=(*listed.entries, "src/p/deleted.py"))

    monkeypatch.setattr(traversal, "plan", with_ghost)
    assert key(project) == before


def test_selection_patterns_choose_what_is_keyed(repo: Path) -> None:
    write(repo / "generated.log", "1\n")  # ignored by git; included by a pattern
    write(repo / "docs/index.md")
    selection = Selection(include=("generated.log",), exclude=("docs",))
    before = key(repo, selection=selection)
    write(repo / "docs/index.md", "changed\n")
    assert key(repo, selection=selection) == before
    write(repo / "generated.log", "2\n")
    assert key(repo, selection=selection) != before


def test_no_isolation_keys_installed_build_requirements(project: Path) -> None:
    assert key(project, no_isolation=True) != key(project)
    versions = cachekey._installed(["Packaging>=20", "surely-not-installed-dist>1", "not a requirement!"])
    assert versions["packaging"] not in ("missing", "invalid")
    assert versions["surely-not-installed-dist"] == "missing"
    assert versions["not a requirement!"] == "invalid"


def test_setup_py_project_gets_the_legacy_backend(tmp_path: Path) -> None:
    project = tmp_path / "legacy"
    write(project / "setup.py", "from setuptools import setup\nsetup()\n")
    described = cachekey.compute(project, INPUTS).describe()
    assert described["build_backend"] == cachekey.LEGACY_BACKEND
    assert described["requires"] == list(cachekey.LEGACY_REQUIRES)


def test_inputs_must_be_plain_json(project: Path) -> None:
    with pytest.raises(TypeError):
        cachekey.compute(project, {"constraints": Path("c.txt")})


def test_memo_gives_the_same_key_and_spares_reads(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(digests, "SETTLE_NS", 0)  # every file counts as settled at once
    memo = state.at(tmp_path / "cache", lock_timeout=5).memo_path(project)
    plain = cachekey.compute(project, INPUTS)
    cold = cachekey.compute(project, INPUTS, memo=memo)
    warm = cachekey.compute(project, INPUTS, memo=memo)
    assert plain.digest == cold.digest == warm.digest
    assert (cold.read, warm.read) == (4, 0)

    write(project / "src/p/core.py", "def f():\n    return 3\n")
    changed = cachekey.compute(project, INPUTS, memo=memo)
    assert changed.read == 1
    assert changed.digest == key(project) != plain.digest

    memo.write_bytes(memo.read_bytes()[:-1] + b"?")  # torn or damaged: ignored, not trusted
    damaged = cachekey.compute(project, INPUTS, memo=memo)
    assert (damaged.digest, damaged.read) == (changed.digest, 4)


def test_memo_never_trusts_recently_changed_files(project: Path, tmp_path: Path) -> None:
    """Files changed in the last seconds are read on every run: a rewrite within the same clock
    tick could leave their size and times as the memo knows them."""
    memo = tmp_path / "memo"
    target = project / "src/p/core.py"
    cachekey.compute(project, INPUTS, memo=memo)
    times = target.stat()
    target.write_text(target.read_text().replace("2", "3"))
    os.utime(target, ns=(times.st_atime_ns, times.st_mtime_ns))
    again = cachekey.compute(project, INPUTS, memo=memo)
    assert again.read == again.files
    assert again.digest == key(project)


def test_the_key_is_the_same_from_interpreters_homes_and_caches_elsewhere(
    project: Path, tmp_path: Path
) -> None:
    """CI runners install Python at different places, with different homes and cache directories:
    a key computed from two venvs of one Python, each with its own home and cache, is the same."""
    parent = [path for path in sys.path if path.endswith("site-packages")]
    digests = []
    for place in ("runner-a/tools/venv", "elsewhere/b"):
        venv = tmp_path / place
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        [site] = (venv / "lib").glob("python*/site-packages")
        # safe-build and its dependencies, as installed here (an editable install's own .pth included)
        (site / "parent.pth").write_text(
            "".join(f"import site; site.addsitedir({path!r})\n" for path in parent)
        )
        home = tmp_path / place / "home"
        home.mkdir()
        environment = {**os.environ, "HOME": str(home), "SAFE_BUILD_CACHE_DIR": str(home / "cache")}
        script = (
            f"from safe_build import cachekey; print(cachekey.compute({str(project)!r}, {INPUTS!r}).digest)"
        )
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-c", script],
            env=environment,
            capture_output=True,
            text=True,
            check=True,
        )
        digests.append(done.stdout.strip())
    assert digests[0] == digests[1] == key(project)
