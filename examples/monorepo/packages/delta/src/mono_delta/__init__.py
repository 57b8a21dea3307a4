"""Its version comes from git, through setuptools-scm."""

from importlib.metadata import version


def release() -> str:
    return version("mono-delta")
