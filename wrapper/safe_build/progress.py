"""One live status line on a terminal's stderr while something slow runs, and the lines written around it.

While a build child runs (or safe-build waits for a lock) for longer than :data:`DELAY_SECONDS`, a
small thread redraws one line on stderr: what is going on and the seconds elapsed
(``\\r…\\x1b[K``). Every other line safe-build writes while it may be shown goes through
:func:`write` or :func:`line`, which erase it first, so output never lands in the middle of it;
the thread draws it again at its next tick. It is shown only where it can be erased: stderr a
terminal (not ``TERM=dumb``) and a verbosity of 0 or more (:func:`configure`); off a terminal or
with ``-q`` nothing extra is written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

DELAY_SECONDS = 1.0  # a step shorter than this is not worth a status line
TICK_SECONDS = 0.25
ERASE = "\r\x1b[K"

_lock = threading.RLock()  # held while anything is written to the terminal
_enabled = False
_shown = False  # a status line is on the screen now
_drawn = ""  # the text it shows


@dataclass
class _Status:
    text: str
    started: float


_texts: list[_Status] = []  # what is going on, innermost last


@contextlib.contextmanager
def configured(verbosity: int) -> Iterator[None]:
    """Show status lines in the body if stderr is a terminal and ``verbosity`` is 0 or more."""
    global _enabled  # noqa: PLW0603
    before, _enabled = _enabled, verbosity >= 0 and terminal(sys.stderr)
    try:
        yield
    finally:
        _enabled = before


def enabled() -> bool:
    return _enabled


@contextlib.contextmanager
def status(text: str) -> Iterator[None]:
    """Show ``text`` and the seconds since now on the status line while the body runs (if enabled)."""
    if not _enabled:
        yield
        return
    entry = _Status(text, time.monotonic())
    with _lock:
        _texts.append(entry)
        first = len(_texts) == 1
    stop = threading.Event()
    ticker = threading.Thread(target=_tick, args=(stop,), daemon=True) if first else None
    if ticker is not None:
        ticker.start()
    try:
        yield
    finally:
        stop.set()
        if ticker is not None:
            ticker.join()
        with _lock:
            _texts[:] = [other for other in _texts if other is not entry]
            _erase()


def update(text: str) -> None:
    """Replace the text of the innermost status (its clock keeps running)."""
    with _lock:
        if _texts:
            _texts[-1].text = text


def write(stream: TextIO, text: str) -> None:
    """Write ``text`` to ``stream``, the status line erased first."""
    with _lock:
        _erase()
        stream.write(text)
        stream.flush()


def line(text: str, stream: TextIO | None = None) -> None:
    """Print one line to ``stream`` (stderr by default), the status line erased first."""
    target = stream or sys.stderr
    with _lock:
        if _shown:
            target.flush()
            _erase()
        print(text, file=target, flush=True)


def labelled(label: str, text: str) -> None:
    """One of safe-build's own lines on stderr, ``safe-build: <label>: text``, its label in build's
    colours (yellow for a warning, red for an error) where build would colour it."""
    from safe_build import buildcompat  # noqa: PLC0415 (it imports build: only when there is news)

    colour = "{red}" if label == "error" else "{yellow}"
    line(buildcompat.styled(colour + "safe-build: " + label + ":{reset} {}", text))


def _tick(stop: threading.Event) -> None:
    while not stop.wait(TICK_SECONDS):
        with _lock:
            if not _texts:
                continue
            current = _texts[-1]
            elapsed = time.monotonic() - current.started
            text = f"{current.text} ({elapsed:.0f}s)"
            if elapsed >= DELAY_SECONDS and not (_shown and text == _drawn):
                _draw(text)


def _draw(text: str) -> None:
    global _shown, _drawn  # noqa: PLW0603
    _drawn = text
    width = shutil.get_terminal_size().columns - 1  # never wrap: \r could not erase a wrapped line
    if len(text) > width > 3:
        text = text[: width - 3] + "..."
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"\r{text}\x1b[K")
        sys.stderr.flush()
        _shown = True


def _erase() -> None:
    global _shown  # noqa: PLW0603
    if _shown:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(ERASE)
            sys.stderr.flush()
        _shown = False


def _forget() -> None:
    """In a forked child: no status line, and a lock no thread of ours holds."""
    global _lock, _enabled, _shown  # noqa: PLW0603
    _lock = threading.RLock()
    _enabled = _shown = False
    _texts.clear()


os.register_at_fork(after_in_child=_forget)


def terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal a line can be erased on."""
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (OSError, ValueError):
        return False
