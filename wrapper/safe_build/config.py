"""Settings that are not build flags: where safe-build keeps its state, and how long it waits for locks.

Precedence: command-line flag > environment variable > default.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import platformdirs

from safe_build.errors import SafeBuildError

CACHE_DIR_ENV = "SAFE_BUILD_CACHE_DIR"
LOCK_TIMEOUT_ENV = "SAFE_BUILD_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 3600.0  # generous: a wait this long means something is stuck, not merely busy


def cache_dir() -> Path:
    """Root of safe-build's own state: lock files and private build directories."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured).expanduser().absolute()
    return platformdirs.user_cache_path("safe-build", appauthor=False)


def lock_timeout(flag: str | None) -> float:
    """Seconds to wait for a busy lock before giving up."""
    if flag is not None:
        return parse_seconds(flag, "--lock-timeout")
    configured = os.environ.get(LOCK_TIMEOUT_ENV)
    if configured is not None:
        return parse_seconds(configured, LOCK_TIMEOUT_ENV)
    return DEFAULT_LOCK_TIMEOUT


def parse_seconds(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value) or value < 0:
        raise SafeBuildError(
            f"invalid value {text!r} for {where}",
            hint="give a number of seconds, 0 or more (0 means: do not wait at all)",
        )
    return value
