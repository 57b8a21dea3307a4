"""Import what the Makefile installed into a venv, and check that it works: ``python smoke.py VENV``."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def shared() -> None:
    import mono_alpha, mono_beta, mono_delta, mono_gamma  # noqa: E401, PLC0415

    assert mono_alpha.greeting() == "Hello", "mono-alpha's package data is missing"
    assert mono_beta.shout("hi") == "HI!"
    assert mono_gamma.whisper("HI") == "hi..."
    assert mono_delta.release(), "mono-delta has no version"


def dev() -> None:
    import mono_beta, mono_gamma  # noqa: E401, PLC0415

    for module, source in [(mono_beta, "packages/beta/src"), (mono_gamma, "packages/gamma")]:
        assert Path(module.__file__).is_relative_to(HERE / source), f"{module.__name__} is not editable"


def app() -> None:
    import mono_epsilon  # noqa: PLC0415

    assert mono_epsilon.main() == "Hello from epsilon"


if __name__ == "__main__":
    {"shared": shared, "dev": dev, "app": app}[sys.argv[1]]()
    print(f"smoke test of venvs/{sys.argv[1]}: passed")
