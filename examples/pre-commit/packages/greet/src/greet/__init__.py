"""Greetings."""

from greet.words import HELLO


def greeting(name: str) -> str:
    return f"{HELLO}, {name}"
