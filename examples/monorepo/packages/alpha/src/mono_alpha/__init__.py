"""A greeting kept in a package data file, so that a wheel without its data fails the smoke test."""

from importlib.resources import files


def greeting() -> str:
    return files(__name__).joinpath("greeting.txt").read_text(encoding="utf-8").strip()
