"""Whispering."""


def whisper(text: str) -> str:
    return f"{text.lower()}..."
