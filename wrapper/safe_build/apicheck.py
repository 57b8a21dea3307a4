"""Does a library still have the private names an adapter uses, callable the way it calls them?

Shared by the adapters that wall off what other projects do not promise to keep
(``buildcompat`` for build, ``safe_build_hooks.manifestcompat`` for check-manifest).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

# One call an adapter makes: the attribute's name, then placeholder positional and keyword
# arguments of the shape it passes (never used, only bound to the signature).
Call = tuple[str, tuple[object, ...], dict[str, object]]


def unfit(owner: object, where: str, calls: Sequence[Call]) -> str | None:
    """Why one of ``calls`` cannot be made on ``owner`` (named ``where``), or None."""
    for name, args, kwargs in calls:
        found = getattr(owner, name, None)
        if not callable(found):
            return f"{where}.{name} is missing"
        try:
            inspect.signature(found).bind(*args, **kwargs)
        except TypeError as error:
            return f"{where}.{name} takes other arguments ({error})"
        except ValueError:  # no signature to read (a builtin): trust the name
            continue
    return None
