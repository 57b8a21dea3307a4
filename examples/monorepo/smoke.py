"""Import what the Makefile installed into a venv and use it: ``venvs/NAME/bin/python smoke.py NAME``.

Each venv holds other packages, so the imports are in the function for that venv.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def shared() -> None:
    import mono_alpha
    import mono_beta
    import mono_delta
    import mono_gamma

    assert mono_alpha.greeting() == "Hello", "mono-alpha's package data is missing"
    assert mono_beta.shout("hi") == "HI!"
    assert mono_gamma.whisper("HI") == "hi..."
    assert mono_delta.release(), "mono-delta has no version"


def dev() -> None:
    import mono_beta
    import mono_gamma

    for module, source in [(mono_beta, "packages/beta/src"), (mono_gamma, "packages/gamma")]:
        assert Path(module.__file__).is_relative_to(HERE / source), f"{module.__name__} is not editable"


def app() -> None:
    import mono_epsilon

    assert mono_epsilon.main() == "Hello from epsilon"


if __name__ == "__main__":
    {"shared": shared, "dev": dev, "app": app}[sys.argv[1]]()
    print(f"smoke test of venvs/{sys.argv[1]}: passed")
