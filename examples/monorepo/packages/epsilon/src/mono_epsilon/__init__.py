"""An application of mono-alpha."""

from mono_alpha import greeting


def main() -> str:
    return f"{greeting()} from epsilon"
